# Copyright: the ecs-imds-golden authors
# Apache License 2.0
"""The audit's AWS reads, each in as few calls as the APIs allow: the published AMIs, the ECS
clusters and their container instances, the EC2 instances behind them, the clusters' capacity
providers and Auto Scaling groups, and the account's IMDS defaults.

API calls per account, for C clusters, P capacity providers (other than FARGATE and
FARGATE_SPOT), G Auto Scaling groups, T launch templates and, in a cluster, n container instances:
ceil(C/100) DescribeClusters; ceil(n/100) ListContainerInstances and ceil(n/100)
DescribeContainerInstances per cluster; ceil(N/1000) DescribeInstances for the N EC2
instances of all the clusters together; ceil(P/10) DescribeCapacityProviders; ceil(G/100)
DescribeAutoScalingGroups; T DescribeLaunchTemplateVersions (the API takes one launch
template a call, all its versions at once: golden_ami.audit.launch_templates); 1
GetInstanceMetadataDefaults. Plus one ListClusters page per 100 clusters when no --cluster is
given, and one GetParametersByPath page per 10 parameters, once. With --verify-hosts, the SSM
calls of golden_ami.verify_hosts for the account's running instances.
"""

from __future__ import annotations

import re

import botocore.exceptions

from golden_ami.audit.model import AccountDefaults, Instance, Published, Walk, block_attribute
from golden_ami.aws import LOG, Aws, NotFoundError, batches

# API maxima. ListClusters and ListContainerInstances: maxResults 1-100.
# DescribeContainerInstances and DescribeClusters: "a list of up to 100" (botocore's docs).
# DescribeCapacityProviders: up to 100 names a call, at most 10 results a page (maxResults 1-10).
# DescribeAutoScalingGroups: MaxRecords at most 100, and as many names.
# GetParametersByPath: MaxResults 1-10 (botocore's model).
# DescribeInstances: botocore's model gives no maximum for InstanceIds (MaxResults, 5-1000, cannot
# be combined with InstanceIds); 1000 is the limit EC2 documents for explicit instance IDs
# (TerminateInstances, DescribeInstanceCreditSpecifications) and is used here.
LIST_PAGE = 100
ECS_BATCH = 100
EC2_BATCH = 1000
SSM_PAGE = 10
CAPACITY_PROVIDER_BATCH = 100
CAPACITY_PROVIDER_PAGE = 10
ASG_BATCH = 100

ASG_TAG = "aws:autoscaling:groupName"
TEMPLATE_ID_TAG = "aws:ec2launchtemplate:id"
TEMPLATE_VERSION_TAG = "aws:ec2launchtemplate:version"

AMI_ID = re.compile(r"ami-[0-9a-f]{8,17}")
INSTANCE_ID = re.compile(r"\bi-[0-9a-f]{8,17}\b")


def error_code(error: botocore.exceptions.ClientError) -> str:
    return error.response.get("Error", {}).get("Code", "")


def cluster_name(cluster: str) -> str:
    return cluster.rsplit("/", 1)[-1]


def published_amis(aws: Aws, prefix: str) -> Published:
    """The AMI IDs held by the SSM parameters under prefix (the caller's account), and those parameters."""
    path = prefix.rstrip("/") or "/"
    pages = aws.client("ssm").get_paginator("get_parameters_by_path")
    published = Published()
    for page in pages.paginate(Path=path, Recursive=True, PaginationConfig={"PageSize": SSM_PAGE}):
        for parameter in page["Parameters"]:
            if AMI_ID.fullmatch(parameter.get("Value", "")):
                published.amis.add(parameter["Value"])
                published.parameters.add(parameter["Name"])
            else:
                LOG.debug("SSM %s holds no AMI ID; ignored", parameter["Name"])
    if published.amis:
        LOG.info("%d published AMIs under %s in %s", len(published.amis), path, aws.region)
    else:
        LOG.warning("no AMI IDs under %s in %s: every instance counts as not published", path, aws.region)
    return published


def cluster_arns(ecs) -> list[str]:
    """Every ECS cluster of the account and region."""
    pages = ecs.get_paginator("list_clusters").paginate(PaginationConfig={"PageSize": LIST_PAGE})
    return [arn for page in pages for arn in page["clusterArns"]]


def _container_instance_arns(ecs, cluster: str, where: str) -> list[str]:
    pages = ecs.get_paginator("list_container_instances")
    try:
        return [
            arn
            for page in pages.paginate(cluster=cluster, PaginationConfig={"PageSize": LIST_PAGE})
            for arn in page["containerInstanceArns"]
        ]
    except botocore.exceptions.ClientError as exc:
        if error_code(exc) == "ClusterNotFoundException":
            raise NotFoundError(f"no ECS cluster {cluster_name(cluster)!r} in {where}") from exc
        raise


def cluster_providers(
    ecs, clusters: list[str], named: bool, where: str
) -> tuple[dict[str, list[str]], str | None]:
    """The capacity providers of each cluster, by name, and the clusters' account. Named
    clusters must exist and be active."""
    providers: dict[str, list[str]] = {}
    missing: list[str] = []
    account = None
    for batch in batches(clusters, ECS_BATCH):
        response = ecs.describe_clusters(clusters=batch)
        missing += [cluster_name(f.get("arn", "?")) for f in response.get("failures", [])]
        for cluster in response.get("clusters", []):
            if cluster.get("status") == "INACTIVE":
                missing.append(cluster["clusterName"])
                continue
            providers[cluster["clusterName"]] = cluster.get("capacityProviders", [])
            if cluster.get("clusterArn", "").count(":") >= 5:
                account = account or cluster["clusterArn"].split(":")[4]
    if missing and named:
        raise NotFoundError(f"no ECS cluster {', '.join(map(repr, missing))} in {where}")
    return providers, account


def container_instances(ecs, clusters: list[str], walk: Walk, label: str | None, where: str):
    """(cluster name, container instance) for each container instance of the clusters; those
    gone between the list and the describe are skipped on the walk."""
    tag = f"account {label}: " if label else ""
    members: list[tuple[str, dict]] = []
    for cluster in clusters:
        name = cluster_name(cluster)
        arns = _container_instance_arns(ecs, cluster, where)
        LOG.info("%scluster %s: %d container instances", tag, name, len(arns))
        for batch in batches(arns, ECS_BATCH):
            response = ecs.describe_container_instances(cluster=cluster, containerInstances=batch)
            members += [(name, ci) for ci in response.get("containerInstances", [])]
            for failure in response.get("failures", []):
                walk.skip(label, name, failure.get("arn", "?"), failure.get("reason", "?"))
    return members


def _ec2_instances(ec2, ids: list[str], tag: str) -> tuple[dict[str, dict], set[str]]:
    """EC2 instances by ID, in batches of EC2_BATCH, and the IDs EC2 no longer knows."""
    pages = ec2.get_paginator("describe_instances")
    found: dict[str, dict] = {}
    gone: set[str] = set()
    for batch in batches(ids, EC2_BATCH):
        LOG.debug("%sDescribeInstances for %d instances", tag, len(batch))
        while batch:
            try:
                for page in pages.paginate(InstanceIds=batch):
                    for reservation in page["Reservations"]:
                        for instance in reservation["Instances"]:
                            found[instance["InstanceId"]] = instance
                break
            except botocore.exceptions.ClientError as exc:
                # A container instance can outlive its EC2 instance; one unknown ID fails the
                # whole call, and the message names the unknown ones: retry without them.
                missing = set(INSTANCE_ID.findall(str(exc))) & set(batch)
                if error_code(exc) != "InvalidInstanceID.NotFound" or not missing:
                    raise
                gone |= missing
                batch = [i for i in batch if i not in missing]
    gone |= set(ids) - set(found)  # instances of other accounts are left out without an error
    return found, gone


def _instance(cluster: str, ci: dict, details: dict | None, label: str | None, published) -> Instance:
    arn = ci["containerInstanceArn"]
    instance = Instance(
        account=arn.split(":")[4] if arn.count(":") >= 5 else (label or ""),
        cluster=cluster,
        container_instance=arn.rsplit("/", 1)[-1],
        container_instance_arn=arn,
        ec2_instance_id=ci.get("ec2InstanceId", ""),
    )
    attributes = {a.get("name"): a.get("value") for a in ci.get("attributes", [])}
    instance.block_attribute = attributes.get(block_attribute()["name"])
    if details:  # an external (ECS Anywhere) instance has no AMI and no EC2 IMDS
        options = details.get("MetadataOptions", {})
        tags = {t["Key"]: t["Value"] for t in details.get("Tags", [])}
        instance.image_id = details.get("ImageId")
        instance.published = instance.image_id in published
        instance.state = details.get("State", {}).get("Name")
        instance.imds_endpoint = options.get("HttpEndpoint")
        if "HttpTokens" in options:
            instance.imdsv2_required = options["HttpTokens"] == "required"
        instance.hop_limit = options.get("HttpPutResponseHopLimit")
        instance.auto_scaling_group = tags.get(ASG_TAG)
        if tags.get(TEMPLATE_ID_TAG):  # what EC2 tags an instance launched from a template with
            version = tags.get(TEMPLATE_VERSION_TAG)
            instance.launch_template = {"id": tags[TEMPLATE_ID_TAG], "name": None, "version": version}
    return instance


def add_instances(ec2, members: list[tuple[str, dict]], walk: Walk, label: str | None, published) -> None:
    """An Instance on the walk for each container instance, with the EC2 instance behind it;
    one whose EC2 instance is gone is skipped."""
    tag = f"account {label}: " if label else ""
    ec2_ids = sorted({ci.get("ec2InstanceId", "") for _, ci in members} - {""})
    ec2_ids = [i for i in ec2_ids if i.startswith("i-")]  # not mi-: ECS Anywhere, no EC2 instance
    if ec2_ids:
        LOG.info("%sdescribing %d EC2 instances", tag, len(ec2_ids))
    described, gone = _ec2_instances(ec2, ec2_ids, tag) if ec2_ids else ({}, set())
    for cluster, ci in members:
        if ci.get("ec2InstanceId", "") in gone:
            reason = f"EC2 instance {ci['ec2InstanceId']} not found"
            walk.skip(label, cluster, ci["containerInstanceArn"], reason)
            continue
        walk.instances.append(
            _instance(cluster, ci, described.get(ci.get("ec2InstanceId", "")), label, published)
        )


def provider_groups(ecs, names: list[str], tag: str) -> dict[str, str]:
    """The Auto Scaling group of each capacity provider that has one: {provider: group name}."""
    groups: dict[str, str] = {}
    for batch in batches(names, CAPACITY_PROVIDER_BATCH):
        token = None
        while True:  # no botocore paginator for DescribeCapacityProviders
            page = ecs.describe_capacity_providers(
                capacityProviders=batch,
                maxResults=CAPACITY_PROVIDER_PAGE,
                **({"nextToken": token} if token else {}),
            )
            for provider in page.get("capacityProviders", []):
                arn = provider.get("autoScalingGroupProvider", {}).get("autoScalingGroupArn", "")
                if "autoScalingGroupName/" in arn:
                    groups[provider["name"]] = arn.split("autoScalingGroupName/", 1)[1]
            for failure in page.get("failures", []):
                LOG.warning("%scapacity provider %s: %s", tag, failure.get("arn", "?"), failure.get("reason"))
            token = page.get("nextToken")
            if not token:
                break
    return groups


def scaling_groups(autoscaling, names: list[str]) -> dict[str, dict]:
    """The Auto Scaling groups of those names that exist, by name."""
    pages = autoscaling.get_paginator("describe_auto_scaling_groups")
    found: dict[str, dict] = {}
    for batch in batches(names, ASG_BATCH):
        config = {"PageSize": ASG_BATCH}
        for page in pages.paginate(
            AutoScalingGroupNames=batch, IncludeInstances=False, PaginationConfig=config
        ):
            for group in page["AutoScalingGroups"]:
                found[group["AutoScalingGroupName"]] = group
    return found


def account_defaults(ec2, account: str | None, region: str) -> AccountDefaults:
    """GetInstanceMetadataDefaults: an option left out is no preference (None here)."""
    level = ec2.get_instance_metadata_defaults().get("AccountLevel", {})
    hops = level.get("HttpPutResponseHopLimit")
    return AccountDefaults(
        account=account,
        region=region,
        http_tokens=level.get("HttpTokens"),
        hop_limit=hops if hops is None or hops >= 1 else None,  # -1: no preference
        http_endpoint=level.get("HttpEndpoint"),
        instance_metadata_tags=level.get("InstanceMetadataTags"),
        http_tokens_enforced=level.get("HttpTokensEnforced"),
        managed_by=level.get("ManagedBy"),
    )
