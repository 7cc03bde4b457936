# Copyright: the ecs-imds-golden authors
# Apache License 2.0
"""The moto fleet of tests/test_audit.py: golden AMIs published as `publish` writes them, ECS
clusters of container instances, launch templates, Auto Scaling groups and capacity providers;
the audit run as the CLI runs it, and its JSON read back by instance and by template.
"""

from __future__ import annotations

import json

import boto3

from golden_ami import audit, cli, layout
from golden_ami.aws import Aws
from golden_ami.boothook import names

REGION = "eu-west-1"
CALLER = "123456789012"  # moto's default account
BASE_AMI = "ami-12c6146b"  # one of moto's stock AMIs
PREFIX = layout.DEFAULT_PREFIX
LATEST = layout.parameter(PREFIX, "al2023", "x86_64")  # the parameter publish() writes first
ON_GOLDEN = f"resolve:ssm:{LATEST}"  # a launch template's ImageId on the golden AMI


CLIENTS: dict[tuple, tuple] = {}


def client(service: str, session=None):
    """One client per service and session for the test's setup: making clients is what is slow."""
    key = (service, id(session))
    if key not in CLIENTS:
        made = (session or boto3.session.Session(region_name=REGION)).client(service, region_name=REGION)
        CLIENTS[key] = (session, made)  # the session is kept, so that its id is not reused
    return CLIENTS[key][1]


def golden_image(session=None) -> str:
    """An AMI made from the base one, published under PREFIX in the caller's account."""
    ec2 = client("ec2", session)
    builder = ec2.run_instances(ImageId=BASE_AMI, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    ami = ec2.create_image(InstanceId=builder, Name="ecs-imds-golden-al2023-x86_64")["ImageId"]
    ec2.terminate_instances(InstanceIds=[builder])
    return ami


def publish(*amis: str, prefix: str = PREFIX) -> None:
    """SSM parameters as `publish` writes them: latest, then one per build; and a non-AMI one."""
    ssm = client("ssm")
    for n, ami in enumerate(amis):
        name = "latest" if n == 0 else f"20261128T2237{n:02d}Z"
        ssm.put_parameter(Name=f"{prefix}/al2023/x86_64/{name}", Value=ami, Type="String")
    ssm.put_parameter(Name=f"{prefix}/al2023/x86_64/notes", Value="not an AMI", Type="String")


def fleet(cluster: str, specs, session=None, group: str | None = None) -> list[str]:
    """Container instances in cluster, one per (ami, http_tokens, hop_limit, count) spec,
    attached to Auto Scaling group `group` when given (which tags them as AWS does).

    Each spec is one RunInstances (one reservation: moto pages DescribeInstances by 100
    reservations even when InstanceIds are given, which AWS does not), so keep specs few.
    """
    ec2, ecs = client("ec2", session), client("ecs", session)
    cluster_of(ecs, cluster)
    ids = []
    for ami, tokens, hops, count in specs:
        for start in range(0, count, 100):
            n = min(100, count - start)
            options = {"HttpTokens": tokens, "HttpPutResponseHopLimit": hops, "HttpEndpoint": "enabled"}
            reservation = ec2.run_instances(ImageId=ami, MinCount=n, MaxCount=n, MetadataOptions=options)
            ids += [i["InstanceId"] for i in reservation["Instances"]]
    if group:
        autoscaling = client("autoscaling", session)
        for start in range(0, len(ids), 20):  # AttachInstances takes at most 20
            autoscaling.attach_instances(AutoScalingGroupName=group, InstanceIds=ids[start : start + 20])
    golden = {i for (ami, *_), i in zip(_each(specs), ids, strict=True) if ami != BASE_AMI}
    attribute = names()["attribute"]
    enforced = []
    for instance_id in ids:
        document = json.dumps({"instanceId": instance_id, "region": REGION})
        arn = ecs.register_container_instance(cluster=cluster, instanceIdentityDocument=document)[
            "containerInstance"
        ]["containerInstanceArn"]
        if instance_id in golden:  # its agent found the block live and registered the attribute
            enforced.append({**attribute, "targetId": arn})  # the full ARN: no targetType needed
    for start in range(0, len(enforced), 10):  # PutAttributes takes at most 10
        ecs.put_attributes(cluster=cluster, attributes=enforced[start : start + 10])
    return ids


def container_instance_arn(cluster: str, instance_id: str) -> str:
    """The ARN of the container instance of an EC2 instance in cluster."""
    ecs = client("ecs")
    listed = ecs.list_container_instances(cluster=cluster)["containerInstanceArns"]
    described = ecs.describe_container_instances(cluster=cluster, containerInstances=listed)
    (arn,) = [
        c["containerInstanceArn"]
        for c in described["containerInstances"]
        if c["ec2InstanceId"] == instance_id
    ]
    return arn


def _each(specs):
    """One spec per instance it launches."""
    for spec in specs:
        yield from [spec] * spec[3]


def launch_template(name: str, *versions: dict, session=None) -> str:
    """A launch template with one version per LaunchTemplateData given; version 1 is the default."""
    ec2 = client("ec2", session)
    template = ec2.create_launch_template(LaunchTemplateName=name, LaunchTemplateData=versions[0])
    template_id = template["LaunchTemplate"]["LaunchTemplateId"]
    for data in versions[1:]:
        ec2.create_launch_template_version(LaunchTemplateId=template_id, LaunchTemplateData=data)
    return template_id


def data(image: str, **options) -> dict:
    """LaunchTemplateData: an image and MetadataOptions (HttpTokens=..., HttpPutResponseHopLimit=...)."""
    return {"ImageId": image, **({"MetadataOptions": options} if options else {})}


def auto_scaling_group(name: str, template_id: str, version: str | None = "$Latest", session=None) -> str:
    """An empty Auto Scaling group launching the template's version; its ARN."""
    autoscaling = client("autoscaling", session)
    spec = {"LaunchTemplateId": template_id, **({"Version": version} if version else {})}
    autoscaling.create_auto_scaling_group(
        AutoScalingGroupName=name,
        LaunchTemplate=spec,
        MinSize=0,
        MaxSize=2000,
        DesiredCapacity=0,
        AvailabilityZones=[f"{REGION}a"],
    )
    return autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[name])["AutoScalingGroups"][0][
        "AutoScalingGroupARN"
    ]


def capacity_providers(cluster: str, groups: dict[str, str], session=None) -> None:
    """A capacity provider per {name: group ARN}, all of them (and FARGATE) on the cluster."""
    ecs = client("ecs", session)
    for name, arn in groups.items():
        ecs.create_capacity_provider(name=name, autoScalingGroupProvider={"autoScalingGroupArn": arn})
    cluster_of(ecs, cluster)
    ecs.put_cluster_capacity_providers(
        cluster=cluster, capacityProviders=[*groups, "FARGATE"], defaultCapacityProviderStrategy=[]
    )


def cluster_of(ecs, cluster: str) -> None:
    """The cluster, made if it is not there yet (moto's CreateCluster replaces an existing one)."""
    if not ecs.describe_clusters(clusters=[cluster])["clusters"]:
        ecs.create_cluster(clusterName=cluster)


def run(*argv: str) -> tuple:
    """audit.run with arguments parsed by the real CLI parser, and an Aws of our own to count calls."""
    args = cli.build_parser().parse_args(["audit", "--region", REGION, *argv])
    aws = Aws(region=REGION)
    return audit.run(args, aws), aws


def by_instance(result) -> dict[str, dict]:
    return {i["ec2_instance_id"]: i for i in result.data["instances"]}


def by_template(result) -> dict[tuple, dict]:
    return {(t["launch_template_name"], t["version"]): t for t in result.data["launch_templates"]}


def keys(record: dict) -> list[str]:
    return [f["key"] for f in record["findings"]]


def notes(record: dict) -> list[str]:
    return [n["key"] for n in record["notes"]]


def unknown(record: dict) -> list[str]:
    """The keys of what the audit could not judge on a record (a read it needed was unread)."""
    return [u["key"] for u in record["unknown"]]


def assumed(account: str) -> boto3.session.Session:
    credentials = boto3.client("sts", region_name=REGION).assume_role(
        RoleArn=f"arn:aws:iam::{account}:role/audit", RoleSessionName="test-setup"
    )["Credentials"]
    return boto3.session.Session(
        aws_access_key_id=credentials["AccessKeyId"],
        aws_secret_access_key=credentials["SecretAccessKey"],
        aws_session_token=credentials["SessionToken"],
        region_name=REGION,
    )
