# Copyright: the ecs-imds-golden authors
# Apache License 2.0
"""golden-ami cleanup, against moto: what it deletes, and every case it must keep."""

from __future__ import annotations

import datetime
import json

import boto3
import pytest
from moto import mock_aws
from support.aws import REGIONS, fake_credentials, golden_ami

from golden_ami import cli

REGION = REGIONS[0]


@pytest.fixture
def aws(monkeypatch):
    fake_credentials(monkeypatch)
    with mock_aws():
        yield


def amis_in_order(count: int, os_name="al2023", arch="x86_64") -> list[str]:
    """``count`` golden AMIs, oldest first, all older than a week."""
    months = [datetime.datetime(2026, month, 1, tzinfo=datetime.UTC) for month in range(1, count + 1)]
    return [golden_ami(REGION, os_name, arch, created=when) for when in months]


def publish_latest(ami: str, variant: str = "al2023/x86_64") -> None:
    """What publish leaves: cleanup refuses a prefix that holds no parameter."""
    boto3.client("ssm", region_name=REGION).put_parameter(
        Name=f"/golden-ami/ecs/{variant}/latest", Value=ami, Type="String", DataType="aws:ec2:image",
        Overwrite=True,
    )  # fmt: skip


def existing(ami: str) -> bool:
    return bool(boto3.client("ec2", region_name=REGION).describe_images(ImageIds=[ami])["Images"])


def snapshots_of(ami: str) -> list[str]:
    image = boto3.client("ec2", region_name=REGION).describe_images(ImageIds=[ami])["Images"][0]
    return [m["Ebs"]["SnapshotId"] for m in image["BlockDeviceMappings"] if "Ebs" in m]


def cleanup(*argv: str) -> dict:
    return cli.main(["cleanup", "--json", *argv])


def decisions(capsys) -> dict[str, dict]:
    return {d["ami"]: d for d in json.loads(capsys.readouterr().out)["decisions"]}


def test_dry_run_deletes_nothing(aws, capsys):
    amis = amis_in_order(4)
    publish_latest(amis[-1])
    assert cleanup("--keep", "1") == 0
    plan = decisions(capsys)
    assert [plan[a]["keep"] for a in amis] == [False, False, False, True]
    assert all(existing(a) for a in amis)


def test_apply_deregisters_beyond_the_newest_n_per_variant_and_deletes_snapshots(aws, capsys):
    x86, arm = amis_in_order(4), amis_in_order(2, arch="arm64")
    doomed_snapshots = snapshots_of(x86[0]) + snapshots_of(x86[1])
    ssm = boto3.client("ssm", region_name=REGION)
    history = "/golden-ami/ecs/al2023/x86_64/20260101T000000Z"
    ssm.put_parameter(Name=history, Value=x86[0], Type="String", DataType="aws:ec2:image")
    assert cleanup("--keep", "2", "--min-age-days", "0", "--apply") == 0
    assert [existing(a) for a in x86] == [False, False, True, True]
    assert all(existing(a) for a in arm)
    assert doomed_snapshots
    left = {
        s["SnapshotId"]
        for s in boto3.client("ec2", region_name=REGION).describe_snapshots(OwnerIds=["self"])["Snapshots"]
    }
    assert not left & set(doomed_snapshots)
    with pytest.raises(ssm.exceptions.ParameterNotFound):
        ssm.get_parameter(Name=history)  # the build's history entry goes with its AMI


def test_every_protected_case_is_kept_and_says_why(aws, capsys):
    amis = amis_in_order(7)
    ec2 = boto3.client("ec2", region_name=REGION)
    ssm = boto3.client("ssm", region_name=REGION)
    # 0: published as latest (a rollback), 1: a team's pin under the prefix
    ssm.put_parameter(Name="/golden-ami/ecs/al2023/x86_64/latest", Value=amis[0], Type="String",
                      DataType="aws:ec2:image")  # fmt: skip
    ssm.put_parameter(
        Name="/golden-ami/ecs/pins/payments", Value=amis[1], Type="String", DataType="aws:ec2:image"
    )
    # 2: a stopped instance
    instance = ec2.run_instances(ImageId=amis[2], MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    ec2.stop_instances(InstanceIds=[instance])
    # 3: a launch template's default version, 4: its latest version (through resolve:ssm:)
    ssm.put_parameter(Name="/team/ami", Value=amis[4], Type="String", DataType="aws:ec2:image")
    template = ec2.create_launch_template(LaunchTemplateName="web", LaunchTemplateData={"ImageId": amis[3]})
    ec2.create_launch_template_version(
        LaunchTemplateId=template["LaunchTemplate"]["LaunchTemplateId"],
        LaunchTemplateData={"ImageId": "resolve:ssm:/team/ami"},
    )
    # 5: a launch configuration
    boto3.client("autoscaling", region_name=REGION).create_launch_configuration(
        LaunchConfigurationName="legacy", ImageId=amis[5], InstanceType="t3.micro"
    )
    assert cleanup("--keep", "1", "--min-age-days", "0", "--apply") == 0
    plan = decisions(capsys)
    expected = [
        "published in SSM /golden-ami/ecs/al2023/x86_64/latest",
        "published in SSM /golden-ami/ecs/pins/payments",
        f"used by instance {instance} (stopped)",
        "launch template web (default version 1)",
        "launch template web (latest version 2)",
        "launch configuration legacy",
        "one of the newest 1",
    ]
    for ami, reason in zip(amis, expected, strict=True):
        assert plan[ami]["keep"] and reason in plan[ami]["reasons"], (reason, plan[ami])
        assert existing(ami)


def test_young_amis_are_kept(aws, capsys):
    old, young, newest = amis_in_order(1)[0], golden_ami(REGION), golden_ami(REGION)
    publish_latest(newest)
    assert cleanup("--keep", "1", "--min-age-days", "7", "--apply") == 0
    plan = decisions(capsys)
    assert not plan[old]["keep"] and not existing(old)
    assert "younger than 7 days" in plan[young]["reasons"] and existing(young) and existing(newest)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--keep", "0"], "--keep 0: keep at least 1"),
        (["--keep", "1", "--min-age-days", "-1"], "--min-age-days -1: give 0 to 36500 days"),
        (["--keep", "1", "--min-age-days", "36501"], "--min-age-days 36501: give 0 to 36500 days"),
        (
            ["--keep", "1", "--min-age-days", "99999999999999999999"],
            "--min-age-days 99999999999999999999: give 0 to 36500 days",
        ),
        (
            ["--keep", "1", "--prefix", "/golden-ami/ecs-typo"],
            "--prefix /golden-ami/ecs-typo holds no SSM parameters in eu-west-1: nothing would count as "
            "published, so nothing would be protected by it; check --prefix",
        ),
        (["--keep", "1", "--prefix", "golden-ami"], "--prefix 'golden-ami' must look like /golden-ami/ecs"),
    ],
)
def test_bad_input_is_refused_in_one_line_before_any_change(aws, capsys, argv, message):
    amis = amis_in_order(3)
    publish_latest(amis[0])  # after a rollback: latest names the oldest
    assert cli.main(["cleanup", "--apply", *argv]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith(f"golden-ami: {message}") and captured.err.count("\n") == 1
    assert captured.out == ""
    assert all(existing(ami) for ami in amis)


def launch_template(ec2, name: str, images: list[str]) -> str:
    """A launch template whose versions 1, 2, ... launch ``images``; version 1 is the default."""
    template = ec2.create_launch_template(LaunchTemplateName=name, LaunchTemplateData={"ImageId": images[0]})
    template_id = template["LaunchTemplate"]["LaunchTemplateId"]
    for image in images[1:]:
        ec2.create_launch_template_version(
            LaunchTemplateId=template_id, LaunchTemplateData={"ImageId": image}
        )
    return template_id


def test_every_launch_template_version_an_auto_scaling_group_names_is_kept(aws, capsys):
    amis = amis_in_order(8)
    publish_latest(amis[-1])
    ec2 = boto3.client("ec2", region_name=REGION)
    autoscaling = boto3.client("autoscaling", region_name=REGION)
    web = launch_template(ec2, "web", amis[0:4])  # default 1, latest 4; groups pin 2 and 3
    launch_template(ec2, "batch", amis[4:7])  # default 1, latest 3; an override pins 2
    group = {"MinSize": 0, "MaxSize": 1, "AvailabilityZones": [f"{REGION}a"]}
    autoscaling.create_auto_scaling_group(
        AutoScalingGroupName="pinned", LaunchTemplate={"LaunchTemplateName": "web", "Version": "2"}, **group
    )
    autoscaling.create_auto_scaling_group(
        AutoScalingGroupName="mixed",
        MixedInstancesPolicy={
            "LaunchTemplate": {
                "LaunchTemplateSpecification": {"LaunchTemplateId": web, "Version": "3"},
                "Overrides": [
                    {"InstanceType": "t3.small",
                     "LaunchTemplateSpecification": {"LaunchTemplateName": "batch", "Version": "2"}},
                ],
            }
        },
        **group,
    )  # fmt: skip
    assert cleanup("--keep", "1", "--min-age-days", "0", "--apply") == 0
    plan = decisions(capsys)
    expected = {
        amis[0]: "launch template web (default version 1)",
        amis[1]: "launch template web (version 2, Auto Scaling group pinned)",
        amis[2]: "launch template web (version 3, Auto Scaling group mixed)",
        amis[3]: "launch template web (latest version 4)",
        amis[4]: "launch template batch (default version 1)",
        amis[5]: "launch template batch (version 2, Auto Scaling group mixed)",
        amis[6]: "launch template batch (latest version 3)",
    }
    for ami, reason in expected.items():
        assert plan[ami]["keep"] and reason in plan[ami]["reasons"], (reason, plan[ami])
        assert existing(ami)


def test_a_reference_that_leads_nowhere_is_reported_and_the_run_goes_on(aws, capsys):
    amis = amis_in_order(4)
    publish_latest(amis[-1])
    ec2 = boto3.client("ec2", region_name=REGION)
    ssm = boto3.client("ssm", region_name=REGION)
    ssm.put_parameter(Name="/team/gone", Value=amis[0], Type="String", DataType="aws:ec2:image")
    template = launch_template(ec2, "web", [amis[1]])
    ec2.create_launch_template_version(
        LaunchTemplateId=template, LaunchTemplateData={"ImageId": "resolve:ssm:/team/gone"}
    )
    ssm.delete_parameter(Name="/team/gone")
    launch_template(ec2, "old", [amis[2]])
    boto3.client("autoscaling", region_name=REGION).create_auto_scaling_group(
        AutoScalingGroupName="orphan", LaunchTemplate={"LaunchTemplateName": "old", "Version": "1"},
        MinSize=0, MaxSize=1, AvailabilityZones=[f"{REGION}a"],
    )  # fmt: skip
    ec2.delete_launch_template(LaunchTemplateName="old")
    assert cli.main(["cleanup", "--keep", "1", "--min-age-days", "0", "--apply"]) == 0
    captured = capsys.readouterr()
    warnings = [
        "eu-west-1: launch template web (latest version 2): resolve:ssm:/team/gone leads nowhere "
        "(ParameterNotFound)",
        "eu-west-1: Auto Scaling group orphan: launch template old version 1 leads nowhere "
        "(InvalidLaunchTemplateId.NotFound)",
    ]
    assert [line for line in captured.out.splitlines() if line.startswith("warning: ")] == [
        f"warning: {warning}" for warning in warnings
    ]
    assert [line for line in captured.err.splitlines() if "leads nowhere" in line] == [
        f"golden-ami: {warning}; going on" for warning in warnings
    ]
    assert [existing(ami) for ami in amis] == [False, True, False, True]
