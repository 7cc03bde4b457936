"""golden-ami audit against moto: findings, exact API call counts, exit codes, JSON, accounts."""

from __future__ import annotations

import json
import math

import boto3
import pytest
from golden_ami import audit, cli
from golden_ami.aws import Aws, NotFoundError, UsageError
from moto import mock_aws

from benchmarks.moto_paging import paging_like_aws

REGION = "eu-west-1"
CALLER = "123456789012"  # moto's default account
BASE_AMI = "ami-12c6146b"  # one of moto's stock AMIs
PREFIX = "/golden-ami/ecs"


@pytest.fixture
def mocked(monkeypatch, tmp_path):
    """Fake credentials and region, no local AWS configuration, every call to moto."""
    for name in (
        "AWS_PROFILE",
        "AWS_REGION",
        "AWS_ENDPOINT_URL",
        "AWS_ROLE_ARN",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    with mock_aws():
        yield


@pytest.fixture
def aws_paging():
    """Make moto page and refuse the way AWS does, so that call counts mean something."""
    with paging_like_aws():
        yield


def golden_ami(session=None) -> str:
    """An AMI made from the base one, published under PREFIX in the caller's account."""
    session = session or boto3.session.Session(region_name=REGION)
    ec2 = session.client("ec2")
    builder = ec2.run_instances(ImageId=BASE_AMI, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    ami = ec2.create_image(InstanceId=builder, Name="ecs-imds-golden-al2023-x86_64")["ImageId"]
    ec2.terminate_instances(InstanceIds=[builder])
    return ami


def publish(*amis: str, prefix: str = PREFIX) -> None:
    """SSM parameters as `publish` writes them: latest, then one per build; and a non-AMI one."""
    ssm = boto3.client("ssm", region_name=REGION)
    for n, ami in enumerate(amis):
        name = "latest" if n == 0 else f"20261128T2237{n:02d}Z"
        ssm.put_parameter(Name=f"{prefix}/al2023/x86_64/{name}", Value=ami, Type="String")
    ssm.put_parameter(Name=f"{prefix}/al2023/x86_64/notes", Value="not an AMI", Type="String")


def fleet(cluster: str, specs, session=None) -> list[str]:
    """Container instances in cluster, one per (ami, http_tokens, hop_limit, count) spec.

    Each spec is one RunInstances (one reservation: moto pages DescribeInstances by 100
    reservations even when InstanceIds are given, which AWS does not), so keep specs few.
    """
    session = session or boto3.session.Session(region_name=REGION)
    ec2, ecs = session.client("ec2"), session.client("ecs")
    ecs.create_cluster(clusterName=cluster)
    ids = []
    for ami, tokens, hops, count in specs:
        for start in range(0, count, 100):
            n = min(100, count - start)
            options = {"HttpTokens": tokens, "HttpPutResponseHopLimit": hops, "HttpEndpoint": "enabled"}
            reservation = ec2.run_instances(ImageId=ami, MinCount=n, MaxCount=n, MetadataOptions=options)
            ids += [i["InstanceId"] for i in reservation["Instances"]]
    for instance_id in ids:
        document = json.dumps({"instanceId": instance_id, "region": REGION})
        ecs.register_container_instance(cluster=cluster, instanceIdentityDocument=document)
    return ids


def run(*argv: str) -> tuple:
    """audit.run with arguments parsed by the real CLI parser, and an Aws of our own to count calls."""
    args = cli.build_parser().parse_args(["audit", "--region", REGION, *argv])
    aws = Aws(region=REGION)
    return audit.run(args, aws), aws


def by_instance(result) -> dict[str, dict]:
    return {i["ec2_instance_id"]: i for i in result.data["instances"]}


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


def test_findings_per_instance(mocked):
    golden = golden_ami()
    publish(golden)
    clean, v1, hop, worst = fleet(
        "prod",
        [
            (golden, "required", 1, 1),
            (golden, "optional", 1, 1),
            (BASE_AMI, "required", 2, 1),
            (BASE_AMI, "optional", 3, 1),
        ],
    )
    result, _ = run("--cluster", "prod")

    found = by_instance(result)
    assert found[clean]["findings"] == []
    assert found[clean]["published"] is True
    assert found[clean]["imdsv2_required"] is True
    assert found[clean]["hop_limit"] == 1
    assert found[v1]["findings"] == ["IMDSv1 allowed (HttpTokens optional)"]
    assert found[v1]["imdsv2_required"] is False
    assert found[hop]["findings"] == ["not on a published golden AMI", "hop limit 2 > 1"]
    assert found[hop]["published"] is False
    assert found[hop]["image_id"] == BASE_AMI
    assert found[worst]["findings"] == [
        "not on a published golden AMI",
        "IMDSv1 allowed (HttpTokens optional)",
        "hop limit 3 > 1",
    ]
    for instance in found.values():
        assert instance["cluster"] == "prod"
        assert instance["account"] == CALLER
        assert instance["container_instance_arn"].endswith("/" + instance["container_instance"])
    summary = result.data["summary"]
    assert summary["instances"] == 4
    assert summary["published"] == 2
    assert summary["not_published"] == 2
    assert summary["imdsv1_allowed"] == 2
    assert summary["hop_limit_over_1"] == 2
    assert summary["with_findings"] == 3
    assert summary["published_amis"] == 1  # the notes parameter is not an AMI
    assert result.code == 0  # findings, but no --fail-on-findings
    header = "CLUSTER  CONTAINER INSTANCE  EC2 INSTANCE  AMI  PUBLISHED  IMDSV2  HOP LIMIT  FINDINGS"
    assert result.lines[0].split() == header.split()
    assert any(worst in line and "hop limit 3 > 1" in line for line in result.lines)
    assert "instances with findings: 3 (6 findings)" in result.lines


def test_published_means_under_the_prefix(mocked):
    golden, other = golden_ami(), golden_ami()
    publish(golden)
    publish(other, prefix="/someone-else/ecs")
    ours, theirs = fleet("prod", [(golden, "required", 1, 1), (other, "required", 1, 1)])
    found = by_instance(run("--cluster", "prod", "--prefix", PREFIX + "/")[0])
    assert found[ours]["published"] is True
    assert found[theirs]["findings"] == ["not on a published golden AMI"]


@pytest.mark.parametrize("count", [100, 250, 1000])
def test_minimal_calls_for_a_named_cluster(mocked, aws_paging, count):
    golden = golden_ami()
    publish(golden)
    ids = fleet("big", [(golden, "required", 1, count)])
    result, aws = run("--cluster", "big")

    assert result.data["summary"]["instances"] == count
    assert result.data["summary"]["with_findings"] == 0
    assert sorted(by_instance(result)) == sorted(ids)
    pages = math.ceil(count / 100)
    assert dict(aws.calls) == {
        "ssm:GetParametersByPath": 1,
        "ecs:ListContainerInstances": pages,
        "ecs:DescribeContainerInstances": pages,
        "ec2:DescribeInstances": math.ceil(count / 1000),
    }


def test_minimal_calls_for_every_cluster_batches_ec2_across_clusters(mocked, aws_paging):
    golden = golden_ami()
    # 12 parameters: GetParametersByPath returns at most 10 a page
    publish(golden, *[f"ami-{n:017x}" for n in range(10)])
    fleet("web", [(golden, "required", 1, 150)])
    fleet("jobs", [(BASE_AMI, "optional", 2, 100)])
    result, aws = run()

    assert result.data["summary"]["clusters"] == 2
    assert result.data["summary"]["instances"] == 250
    assert result.data["summary"]["with_findings"] == 100
    assert dict(aws.calls) == {
        "ssm:GetParametersByPath": 2,
        "ecs:ListClusters": 1,
        "ecs:ListContainerInstances": 2 + 1,
        "ecs:DescribeContainerInstances": 2 + 1,
        "ec2:DescribeInstances": 1,  # both clusters in one call
    }


def test_fail_on_findings_exit_code(mocked, capsys):
    golden = golden_ami()
    publish(golden)
    fleet("clean", [(golden, "required", 1, 2)])
    fleet("dirty", [(golden, "required", 1, 1), (golden, "required", 2, 1)])

    assert cli.main(["audit", "--cluster", "clean", "--fail-on-findings"]) == 0
    assert cli.main(["audit", "--cluster", "dirty"]) == 0
    assert cli.main(["audit", "--cluster", "dirty", "--fail-on-findings"]) == 1
    assert cli.main(["audit", "--fail-on-findings"]) == 1
    assert "hop limit 2 > 1" in capsys.readouterr().out


def test_json_shape(mocked, capsys):
    golden = golden_ami()
    publish(golden)
    (instance_id,) = fleet("prod", [(BASE_AMI, "optional", 2, 1)])

    assert cli.main(["audit", "--json", "--cluster", "prod"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data) == {"instances", "summary", "skipped", "errors"}
    (instance,) = data["instances"]
    assert instance == {
        "account": CALLER,
        "cluster": "prod",
        "container_instance": instance["container_instance"],
        "container_instance_arn": instance["container_instance_arn"],
        "ec2_instance_id": instance_id,
        "image_id": BASE_AMI,
        "published": False,
        "imdsv2_required": False,
        "hop_limit": 2,
        "imds_endpoint": "enabled",
        "state": "running",
        "findings": [
            "not on a published golden AMI",
            "IMDSv1 allowed (HttpTokens optional)",
            "hop limit 2 > 1",
        ],
    }
    assert instance["container_instance_arn"].startswith(f"arn:aws:ecs:{REGION}:{CALLER}:container-instance/")
    assert data["summary"]["instances"] == 1
    assert data["summary"]["with_findings"] == 1
    assert data["summary"]["findings"] == 3
    assert data["summary"]["region"] == REGION
    assert data["skipped"] == [] and data["errors"] == []


def test_missing_cluster_from_describe_clusters_failures(mocked, capsys):
    """Plain moto lists no container instances for a missing cluster: DescribeClusters says MISSING."""
    publish(golden_ami())
    fleet("prod", [(BASE_AMI, "required", 1, 1)])
    with pytest.raises(NotFoundError, match=f"no ECS cluster 'nope' in {REGION}"):
        run("--cluster", "prod", "--cluster", "nope")
    assert cli.main(["audit", "--cluster", "nope"]) == 4
    assert f"golden-ami: no ECS cluster 'nope' in {REGION}" in capsys.readouterr().err


def test_missing_cluster_from_cluster_not_found(mocked, aws_paging):
    """AWS raises ClusterNotFoundException from ListContainerInstances."""
    publish(golden_ami())
    with pytest.raises(NotFoundError, match=f"no ECS cluster 'nope' in {REGION}"):
        run("--cluster", "nope")


def test_an_empty_cluster_is_not_missing(mocked):
    publish(golden_ami())
    boto3.client("ecs", region_name=REGION).create_cluster(clusterName="empty")
    result, aws = run("--cluster", "empty")
    assert result.data["instances"] == []
    assert result.lines[0] == "no container instances found"
    assert aws.calls["ecs:DescribeClusters"] == 1


def test_container_instance_gone_before_describe_is_skipped(mocked, aws_paging, monkeypatch, caplog):
    from moto.ecs.models import EC2ContainerServiceBackend

    publish(golden_ami())
    (instance_id,) = fleet("prod", [(BASE_AMI, "required", 1, 1)])
    listed = EC2ContainerServiceBackend.list_container_instances
    gone = f"arn:aws:ecs:{REGION}:{CALLER}:container-instance/prod/0123456789abcdef0123456789abcdef"
    monkeypatch.setattr(
        EC2ContainerServiceBackend,
        "list_container_instances",
        lambda self, cluster, status=None: [*listed(self, cluster, status), gone],
    )
    result, _ = run("--cluster", "prod")
    assert list(by_instance(result)) == [instance_id]
    (skipped,) = result.data["skipped"]
    assert skipped["reason"] == "MISSING"
    assert skipped["cluster"] == "prod"
    assert "skipped" in caplog.text


def write_accounts(tmp_path, text: str):
    path = tmp_path / "accounts.txt"
    path.write_text(text)
    return str(path)


def test_multi_account(mocked, tmp_path):
    golden = golden_ami()
    publish(golden)  # in the caller's account only
    prod, dev = "111111111111", "222222222222"
    (prod_id,) = fleet("web", [(golden, "required", 1, 1)], session=assumed(prod))
    (dev_id,) = fleet("web", [(BASE_AMI, "optional", 2, 1)], session=assumed(dev))
    fleet("web", [(BASE_AMI, "optional", 2, 1)])  # the caller's own: not listed, not audited
    accounts = write_accounts(tmp_path, f"# fleet\n{prod}  # prod\n\n{dev}\n{prod}\n")

    result, aws = run("--accounts", accounts, "--role-name", "audit", "--fail-on-findings")

    found = by_instance(result)
    assert set(found) == {prod_id, dev_id}
    assert found[prod_id]["account"] == prod
    assert found[prod_id]["findings"] == []
    assert found[dev_id]["account"] == dev
    assert found[dev_id]["findings"] == [
        "not on a published golden AMI",
        "IMDSv1 allowed (HttpTokens optional)",
        "hop limit 2 > 1",
    ]
    assert result.data["summary"]["accounts"] == 2
    assert result.data["summary"]["clusters"] == 2
    assert result.code == 1
    assert result.lines[0].split()[0] == "ACCOUNT"
    assert any(line.startswith(dev) and dev_id in line for line in result.lines)
    assert aws.calls["sts:AssumeRole"] == 2
    assert aws.calls["ec2:DescribeInstances"] == 2  # one per account
    assert aws.calls["ssm:GetParametersByPath"] == 1  # once, in the caller's account


def test_multi_account_one_failing_account(mocked, tmp_path):
    publish(golden_ami())
    prod, dev = "111111111111", "222222222222"
    (prod_id,) = fleet("web", [(BASE_AMI, "required", 1, 1)], session=assumed(prod))
    accounts = write_accounts(tmp_path, f"{prod}\n{dev}\n")

    result, _ = run("--accounts", accounts, "--role-name", "audit", "--cluster", "web")

    assert list(by_instance(result)) == [prod_id]
    (error,) = result.data["errors"]
    assert error["account"] == dev
    assert "no ECS cluster 'web'" in error["error"]
    assert result.code == 4
    assert f"account {dev} not audited: " in result.text


def test_accounts_file_bad_line(mocked, tmp_path):
    accounts = write_accounts(tmp_path, "111111111111\n# fine\n22222222222x  # typo\n")
    with pytest.raises(UsageError, match=r"accounts.txt:3: '22222222222x  # typo' is not a 12-digit"):
        run("--accounts", accounts, "--role-name", "audit")


def test_accounts_file_checks_before_any_call(mocked, tmp_path):
    with pytest.raises(UsageError, match="lists no account IDs"):
        run("--accounts", write_accounts(tmp_path, "# nobody\n\n"), "--role-name", "audit")
    with pytest.raises(UsageError, match="cannot read accounts file"):
        run("--accounts", str(tmp_path / "missing.txt"), "--role-name", "audit")


@pytest.mark.parametrize(
    "argv", [["--accounts", "accounts.txt"], ["--role-name", "audit"]], ids=["no-role-name", "no-accounts"]
)
def test_accounts_and_role_name_go_together(mocked, argv, capsys):
    with pytest.raises(UsageError, match="--accounts and --role-name go together"):
        run(*argv)
    assert cli.main(["audit", *argv]) == 2
    assert "--accounts and --role-name go together" in capsys.readouterr().err


def test_container_instance_whose_ec2_instance_is_gone_is_skipped(mocked):
    """One unknown instance ID fails the whole DescribeInstances: the audit retries without it."""
    from moto.ec2.models import ec2_backends

    publish(golden_ami())
    kept, lost = fleet("prod", [(BASE_AMI, "required", 1, 1), (BASE_AMI, "required", 1, 1)])
    backend = ec2_backends[CALLER][REGION]
    for reservation_id, reservation in list(backend.reservations.items()):
        if any(instance.id == lost for instance in reservation.instances):
            del backend.reservations[reservation_id]  # gone for good, not just terminated

    result, aws = run("--cluster", "prod")

    assert list(by_instance(result)) == [kept]
    (skipped,) = result.data["skipped"]
    assert skipped["reason"] == f"EC2 instance {lost} not found"
    assert aws.calls["ec2:DescribeInstances"] == 2
