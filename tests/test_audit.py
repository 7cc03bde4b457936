# Copyright: the ecs-imds-golden authors
# Apache License 2.0
"""golden-ami audit against moto: findings, exact API call counts, exit codes, JSON, accounts,
and the reads it could not make.

The findings follow the threat model's table; each of its rows has a test here for running
instances, for launch template versions and, where it applies, for the account's IMDS
defaults. moto 5.2.5 lacks GetInstanceMetadataDefaults: botocore's Stubber answers it
(scripts/moto_aws.py's imds_defaults_stubbed), everything else goes to moto. A denied or
throttled read is AWS's error answer over HTTP, ahead of both (moto_aws.failing).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import boto3
import pytest
from moto_aws import (
    PASSES,
    capacity_providers_paged_like_aws,
    failing,
    paging_like_aws,
    retrying_at_once,
    run_command_stubbed,
)
from support.audit import (
    BASE_AMI,
    CALLER,
    LATEST,
    ON_GOLDEN,
    PREFIX,
    REGION,
    assumed,
    auto_scaling_group,
    by_instance,
    by_template,
    capacity_providers,
    container_instance_arn,
    data,
    fleet,
    golden_image,
    keys,
    launch_template,
    notes,
    publish,
    run,
    unknown,
)

from golden_ami import audit, cli, verify_hosts
from golden_ami.audit import fetch
from golden_ami.aws import NotFoundError, UsageError


@pytest.fixture
def aws_paging():
    """Make moto page and refuse the way AWS does, so that call counts mean something."""
    with paging_like_aws(), capacity_providers_paged_like_aws():
        yield


# --- the threat model's table, for running instances ----------------------------------------

GOLDEN = "golden"  # stands for the published golden AMI in the cases below

INSTANCE_CASES = {
    # case: (AMI, HttpTokens, hop limit, finding keys, note keys)
    "imdsv1-allowed-is-a-finding": (GOLDEN, "optional", 2, ["imdsv1_allowed"], []),
    "hop-limit-above-2-is-a-finding": (GOLDEN, "required", 3, ["hop_limit_over_2"], []),
    "hop-limit-2-without-the-golden-ami-is-a-finding": (
        BASE_AMI,
        "required",
        2,
        ["not_published", "hop_limit_2_without_block"],
        ["attribute_missing"],  # not a golden host: no agent registered the attribute
    ),
    "hop-limit-2-on-the-golden-ami-is-fine": (GOLDEN, "required", 2, [], []),
    "hop-limit-1-is-fine-with-a-note": (GOLDEN, "required", 1, [], ["hop_limit_1"]),
}


@pytest.mark.parametrize("case", INSTANCE_CASES)
def test_instance_findings_follow_the_threat_model(mocked, case):
    image, tokens, hops, expected, expected_notes = INSTANCE_CASES[case]
    golden = golden_image()
    publish(golden)
    (instance_id,) = fleet("prod", [(golden if image == GOLDEN else image, tokens, hops, 1)])

    result, _ = run("--cluster", "prod")

    (instance,) = result.data["instances"]
    assert instance["ec2_instance_id"] == instance_id
    assert keys(instance) == expected
    assert notes(instance) == expected_notes
    for finding in instance["findings"]:
        if finding["key"] == "not_published":
            assert finding["setting"] == "ImageId"
            assert finding["value"] == f"resolve:ssm:{PREFIX}/<os>/<arch>/latest"
            assert "golden-ami user-data" in finding["remediation"]
            continue
        # the exact setting and value, for the launch template and for the running instance
        option = {"imdsv1_allowed": "HttpTokens"}.get(finding["key"], "HttpPutResponseHopLimit")
        flag = {"HttpTokens": "--http-tokens"}.get(option, "--http-put-response-hop-limit")
        assert finding["setting"] == f"MetadataOptions.{option}"
        assert f"MetadataOptions.{option}={finding['value']} in " in finding["remediation"]
        if option == "HttpPutResponseHopLimit" and finding["value"] == 1:
            assert "allowlisted bridge daemons get no IMDSv2 token (they need 2)" in finding["remediation"]
        assert (
            f"aws ec2 modify-instance-metadata-options --instance-id {instance_id} {flag} {finding['value']}"
            in finding["remediation"]
        )
    summary = result.data["summary"]
    assert summary["with_findings"] == (1 if expected else 0)
    assert summary["hop_limit_1"] == (1 if "hop_limit_1" in expected_notes else 0)
    for key in audit.FINDING_KEYS:
        assert summary["findings_by_key"][key] == expected.count(key)
    line = next(line for line in result.lines if instance_id in line)
    assert line.endswith("-" if not expected else instance["findings"][-1]["message"])


def test_the_values_the_remediations_ask_for(mocked):
    golden = golden_image()
    publish(golden)
    on_golden, off_golden = fleet("prod", [(golden, "required", 5, 1), (BASE_AMI, "required", 5, 1)])
    found = by_instance(run("--cluster", "prod")[0])
    # above 2: back to 2 where the host block stands behind it, to 1 where it does not
    assert [(f["key"], f["value"]) for f in found[on_golden]["findings"]] == [("hop_limit_over_2", 2)]
    assert [(f["key"], f["value"]) for f in found[off_golden]["findings"]] == [
        ("not_published", f"resolve:ssm:{PREFIX}/<os>/<arch>/latest"),
        ("hop_limit_over_2", 1),
    ]
    assert found[on_golden]["findings"][0]["message"] == "hop limit 5 > 2"


def test_findings_per_instance(mocked):
    golden = golden_image()
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
    assert [f["message"] for f in found[v1]["findings"]] == ["IMDSv1 allowed (HttpTokens optional)"]
    assert found[v1]["imdsv2_required"] is False
    assert keys(found[hop]) == ["not_published", "hop_limit_2_without_block"]
    assert found[hop]["published"] is False
    assert found[hop]["image_id"] == BASE_AMI
    assert [f["message"] for f in found[worst]["findings"]] == [
        "not on a published golden AMI",
        "IMDSv1 allowed (HttpTokens optional)",
        "hop limit 3 > 2",
    ]
    for instance in found.values():
        assert instance["cluster"] == "prod"
        assert instance["account"] == CALLER
        assert instance["container_instance_arn"].endswith("/" + instance["container_instance"])
        assert instance["auto_scaling_group"] is None
    summary = result.data["summary"]
    assert summary["instances"] == 4
    assert summary["published"] == 2
    assert summary["not_published"] == 2
    assert summary["imdsv1_allowed"] == 2
    assert summary["hop_limit_over_2"] == 1
    assert summary["hop_limit_2_without_block"] == 1
    assert summary["hop_limit_1"] == 2
    assert summary["with_findings"] == 3
    assert summary["published_amis"] == 1  # the notes parameter is not an AMI
    assert result.code == 0  # findings, but no --fail-on-findings
    header = "CLUSTER  CONTAINER INSTANCE  EC2 INSTANCE  AMI  PUBLISHED  IMDSV2  HOP LIMIT  FINDINGS"
    assert result.lines[0].split() == header.split()
    assert any(worst in line and "hop limit 3 > 2" in line for line in result.lines)
    assert "instances with findings: 3 (6 findings)" in result.lines
    assert "IMDSv1 allowed: 2; hop limit > 2: 1; hop limit 2 without the host block: 1" in result.lines
    assert any(
        line.startswith("hop limit 1: 2 (fine, but allowlisted bridge daemons need 2")
        for line in result.lines
    )


def test_published_means_under_the_prefix(mocked):
    golden, other = golden_image(), golden_image()
    publish(golden)
    publish(other, prefix="/someone-else/ecs")
    ours, theirs = fleet("prod", [(golden, "required", 1, 1), (other, "required", 1, 1)])
    found = by_instance(run("--cluster", "prod", "--prefix", PREFIX + "/")[0])
    assert found[ours]["published"] is True
    assert keys(found[theirs]) == ["not_published"]


# --- launch templates -------------------------------------------------------------------------

TEMPLATE_CASES = {
    # case: (LaunchTemplateData on ImageId ON_GOLDEN or BASE_AMI, finding keys, note keys)
    "imdsv1-allowed-is-a-finding": (data(ON_GOLDEN, HttpTokens="optional"), ["imdsv1_allowed"], []),
    "hop-limit-above-2-is-a-finding": (
        data(ON_GOLDEN, HttpTokens="required", HttpPutResponseHopLimit=3),
        ["hop_limit_over_2"],
        [],
    ),
    "hop-limit-2-without-the-golden-ami-is-a-finding": (
        data(BASE_AMI, HttpTokens="required", HttpPutResponseHopLimit=2),
        ["not_published", "hop_limit_2_without_block"],
        [],
    ),
    "hop-limit-2-on-the-golden-ami-is-fine": (
        data(ON_GOLDEN, HttpTokens="required", HttpPutResponseHopLimit=2),
        [],
        [],
    ),
    "hop-limit-1-is-fine-with-a-note": (
        data(ON_GOLDEN, HttpTokens="required", HttpPutResponseHopLimit=1),
        [],
        ["hop_limit_1"],
    ),
    "nothing-set-on-the-golden-ami-is-fine": (data(ON_GOLDEN), [], []),
    "nothing-set-without-the-golden-ami-is-a-finding": (
        data(BASE_AMI),
        ["not_published", "http_tokens_unset", "hop_limit_unset_without_block"],
        [],
    ),
}


@pytest.mark.parametrize("case", TEMPLATE_CASES)
def test_launch_template_findings_follow_the_threat_model(mocked, case):
    template_data, expected, expected_notes = TEMPLATE_CASES[case]
    publish(golden_image())
    template_id = launch_template("web", data(BASE_AMI), template_data)  # version 2 is $Latest
    fleet("prod", [])
    capacity_providers("prod", {"web-cp": auto_scaling_group("web-asg", template_id, "$Latest")})

    result, _ = run("--cluster", "prod")

    (template,) = result.data["launch_templates"]
    assert template["launch_template_id"] == template_id
    assert template["launch_template_name"] == "web"
    assert template["version"] == 2
    assert template["referenced_as"] == ["$Latest"]
    assert template["auto_scaling_groups"] == ["web-asg"]
    assert template["capacity_providers"] == ["web-cp"]
    assert template["clusters"] == ["prod"]
    assert keys(template) == expected
    assert notes(template) == expected_notes
    for finding in template["findings"]:
        # names the template, the version to start from, the group, and the exact setting
        assert f"launch template web ({template_id}) made from version 2" in finding["remediation"]
        assert "Auto Scaling group web-asg launch $Latest" in finding["remediation"]
        assert f"{finding['setting']}={finding['value']} in " in finding["remediation"]
    assert result.data["summary"]["launch_templates_with_findings"] == (1 if expected else 0)


def test_launch_template_settings_come_from_the_template_the_account_or_the_golden_image(
    mocked, account_defaults
):
    account_defaults[CALLER] = {"HttpPutResponseHopLimit": 1}
    publish(golden_image())
    template_id = launch_template("web", data(ON_GOLDEN, HttpTokens="required"))
    capacity_providers("prod", {"web-cp": auto_scaling_group("web-asg", template_id)})

    (template,) = run("--cluster", "prod")[0].data["launch_templates"]

    assert (template["http_tokens"], template["hop_limit"]) == ("required", None)
    assert (template["effective_http_tokens"], template["effective_hop_limit"]) == ("required", 1)
    assert template["effective_from"] == {"http_tokens": "launch template", "hop_limit": "account default"}
    assert notes(template) == ["hop_limit_1"]


def test_launch_template_versions_as_the_groups_name_them(mocked):
    """$Latest is the highest version, $Default the default one, a number itself; one call
    describes them all, and each remediation says how its groups take the new version."""
    publish(golden_image())
    template_id = launch_template(
        "web",
        data(ON_GOLDEN, HttpTokens="optional"),  # 1: the default
        data(ON_GOLDEN, HttpTokens="required", HttpPutResponseHopLimit=4),  # 2
        data(ON_GOLDEN, HttpTokens="required", HttpPutResponseHopLimit=2),  # 3: $Latest
    )
    groups = {
        "latest-cp": auto_scaling_group("on-latest", template_id, "$Latest"),
        "default-cp": auto_scaling_group("on-default", template_id, None),  # no version: $Default
        "pinned-cp": auto_scaling_group("on-2", template_id, "2"),
        "also-3-cp": auto_scaling_group("on-3", template_id, "3"),
    }
    capacity_providers("prod", groups)

    result, aws = run("--cluster", "prod")

    found = by_template(result)
    assert sorted(found) == [("web", 1), ("web", 2), ("web", 3)]
    assert found["web", 1]["referenced_as"] == ["$Default"]
    assert found["web", 1]["auto_scaling_groups"] == ["on-default"]
    assert keys(found["web", 1]) == ["imdsv1_allowed"]
    assert (
        "then make it the default version (Auto Scaling group on-default launch $Default)"
        in (found["web", 1]["findings"][0]["remediation"])
    )
    assert found["web", 2]["referenced_as"] == ["2"]
    assert keys(found["web", 2]) == ["hop_limit_over_2"]
    assert (
        "then point Auto Scaling group on-2 at it (now on version 2)"
        in (found["web", 2]["findings"][0]["remediation"])
    )
    assert found["web", 3]["referenced_as"] == ["$Latest", "3"]
    assert found["web", 3]["auto_scaling_groups"] == ["on-3", "on-latest"]
    assert found["web", 3]["findings"] == []
    assert aws.calls["ec2:DescribeLaunchTemplateVersions"] == 1
    assert aws.calls["autoscaling:DescribeAutoScalingGroups"] == 1


def test_instances_name_the_launch_template_version_to_change(mocked):
    golden = golden_image()
    publish(golden)
    template_id = launch_template("web", data(ON_GOLDEN, HttpTokens="optional"))
    auto_scaling_group("web-asg", template_id, "$Latest")
    (instance_id,) = fleet("prod", [(golden, "optional", 2, 1)], group="web-asg")

    result, _ = run("--cluster", "prod")

    (instance,) = result.data["instances"]
    assert instance["auto_scaling_group"] == "web-asg"
    assert instance["launch_template"] == {"id": template_id, "name": "web", "version": 1}
    (finding,) = instance["findings"]
    assert finding["remediation"] == (
        f"set MetadataOptions.HttpTokens=required in a new version of launch template web ({template_id}) "
        "made from version 1; then Auto Scaling group web-asg launch $Latest and take it at once. "
        f"On the running instance now: aws ec2 modify-instance-metadata-options --instance-id {instance_id} "
        "--http-tokens required"
    )
    (template,) = result.data["launch_templates"]
    assert template["clusters"] == ["prod"]  # found through the instance's group: no capacity provider
    assert template["capacity_providers"] == []


def test_groups_on_launch_configurations_and_missing_templates_are_reported(mocked, caplog):
    publish(golden_image())
    autoscaling = boto3.client("autoscaling", region_name=REGION)
    autoscaling.create_launch_configuration(
        LaunchConfigurationName="old-lc", ImageId=BASE_AMI, InstanceType="t3.micro"
    )
    autoscaling.create_auto_scaling_group(
        AutoScalingGroupName="old",
        LaunchConfigurationName="old-lc",
        MinSize=0,
        MaxSize=1,
        DesiredCapacity=0,
        AvailabilityZones=[f"{REGION}a"],
    )
    template_id = launch_template("gone", data(ON_GOLDEN))
    groups = {
        "old-cp": autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=["old"])[
            "AutoScalingGroups"
        ][0]["AutoScalingGroupARN"],
        "gone-cp": auto_scaling_group("orphan", template_id),
    }
    capacity_providers("prod", groups)
    boto3.client("ec2", region_name=REGION).delete_launch_template(LaunchTemplateId=template_id)

    result, _ = run("--cluster", "prod")

    assert result.data["launch_configurations"] == [
        {
            "account": CALLER,
            "auto_scaling_group": "old",
            "launch_configuration": "old-lc",
            "clusters": ["prod"],
        }
    ]
    (template,) = result.data["launch_templates"]
    assert template["launch_template_id"] == template_id
    assert template["version"] is None
    assert template["error"].startswith("InvalidLaunchTemplateId.NotFound")
    assert template["findings"] == []
    assert any("launches from launch configuration old-lc: its metadata options are not audited" in line
               for line in result.lines)  # fmt: skip
    assert f"launch template gone ({template_id}): InvalidLaunchTemplateId.NotFound" in caplog.text


# --- the account's IMDS defaults ----------------------------------------------------------------

DEFAULTS_CASES = {
    # case: (AccountLevel, finding keys, note keys)
    "no-preference-is-fine": ({}, [], []),
    "imdsv1-allowed-is-a-finding": ({"HttpTokens": "optional"}, ["imdsv1_allowed"], []),
    "hop-limit-above-2-is-a-finding": ({"HttpPutResponseHopLimit": 3}, ["hop_limit_over_2"], []),
    "hop-limit-2-is-fine": ({"HttpTokens": "required", "HttpPutResponseHopLimit": 2}, [], []),
    "hop-limit-1-is-fine-with-a-note": ({"HttpPutResponseHopLimit": 1}, [], ["hop_limit_1"]),
}


@pytest.mark.parametrize("case", DEFAULTS_CASES)
def test_account_defaults_follow_the_threat_model(mocked, account_defaults, case):
    level, expected, expected_notes = DEFAULTS_CASES[case]
    account_defaults[CALLER] = {**level, "HttpEndpoint": "enabled", "ManagedBy": "account"}
    publish(golden_image())
    fleet("prod", [])

    result, aws = run("--cluster", "prod", "--fail-on-findings")

    (defaults,) = result.data["account_defaults"]
    assert defaults["account"] == CALLER
    assert defaults["region"] == REGION
    assert defaults["http_tokens"] == level.get("HttpTokens")
    assert defaults["hop_limit"] == level.get("HttpPutResponseHopLimit")
    assert defaults["managed_by"] == "account"
    assert keys(defaults) == expected
    assert notes(defaults) == expected_notes
    for finding in defaults["findings"]:
        flag = "--http-tokens" if finding["key"] == "imdsv1_allowed" else "--http-put-response-hop-limit"
        assert finding["setting"].startswith("account default ")
        assert finding["remediation"] == (
            f"aws ec2 modify-instance-metadata-defaults --region {REGION} {flag} {finding['value']}"
        )
    assert result.data["summary"]["account_defaults_with_findings"] == (1 if expected else 0)
    assert result.code == (1 if expected else 0)  # no instance at all: the defaults alone decide
    assert aws.calls["ec2:GetInstanceMetadataDefaults"] == 1
    assert any(line.startswith(f"IMDS defaults ({REGION}): HttpTokens ") for line in result.lines)


def test_account_default_optional_reaches_the_templates_that_set_nothing(mocked, account_defaults):
    account_defaults[CALLER] = {"HttpTokens": "optional"}
    publish(golden_image())
    template_id = launch_template("web", data(ON_GOLDEN))
    capacity_providers("prod", {"web-cp": auto_scaling_group("web-asg", template_id)})

    result, _ = run("--cluster", "prod")

    (template,) = result.data["launch_templates"]
    assert template["effective_http_tokens"] == "optional"
    assert template["effective_from"]["http_tokens"] == "account default"
    assert keys(template) == ["imdsv1_allowed"]
    assert keys(result.data["account_defaults"][0]) == ["imdsv1_allowed"]
    assert result.data["summary"]["findings_by_key"]["imdsv1_allowed"] == 2


# --- API calls: the batching minimum --------------------------------------------------------------


@pytest.mark.parametrize("count", [100, 250, 1000])
def test_minimal_calls_for_a_named_cluster(mocked, aws_paging, count):
    golden = golden_image()
    publish(golden)
    template_id = launch_template("big", data(ON_GOLDEN, HttpTokens="required", HttpPutResponseHopLimit=2))
    capacity_providers("big", {"big-cp": auto_scaling_group("big-asg", template_id)})
    ids = fleet("big", [(golden, "required", 1, count)], group="big-asg")
    result, aws = run("--cluster", "big")

    assert result.data["summary"]["instances"] == count
    assert result.data["summary"]["with_findings"] == 0
    assert result.data["summary"]["launch_templates"] == 1
    assert sorted(by_instance(result)) == sorted(ids)
    pages = math.ceil(count / 100)
    assert dict(aws.calls) == {
        "ssm:GetParametersByPath": 1,
        "ecs:DescribeClusters": 1,
        "ecs:ListContainerInstances": pages,
        "ecs:DescribeContainerInstances": pages,
        "ec2:DescribeInstances": math.ceil(count / 1000),
        "ecs:DescribeCapacityProviders": 1,
        "autoscaling:DescribeAutoScalingGroups": 1,
        "ec2:DescribeLaunchTemplateVersions": 1,
        "ec2:GetInstanceMetadataDefaults": 1,
    }


def test_minimal_calls_for_every_cluster_batches_ec2_across_clusters(mocked, aws_paging):
    golden = golden_image()
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
        "ecs:DescribeClusters": 1,
        "ecs:ListContainerInstances": 2 + 1,
        "ecs:DescribeContainerInstances": 2 + 1,
        "ec2:DescribeInstances": 1,  # both clusters in one call
        "ec2:GetInstanceMetadataDefaults": 1,
    }


def test_minimal_calls_for_capacity_providers_groups_and_launch_templates(mocked, aws_paging):
    """6 clusters of 20 capacity providers (ECS's quota per cluster), each with its group:
    DescribeCapacityProviders by 10 (100 names a call), DescribeAutoScalingGroups by 100, and
    one DescribeLaunchTemplateVersions per launch template, whatever versions its groups use."""
    publish(golden_image())
    templates = [
        launch_template(f"t{n}", data(ON_GOLDEN), data(ON_GOLDEN, HttpPutResponseHopLimit=2))
        for n in range(3)
    ]
    versions = ["$Latest", "$Default", "1", "2"]
    for c in range(6):
        groups = {
            f"cp-{c}-{g}": auto_scaling_group(f"asg-{c}-{g}", templates[g % 3], versions[g % 4])
            for g in range(20)
        }
        capacity_providers(f"cluster-{c}", groups)

    result, aws = run()

    assert result.data["summary"]["clusters"] == 6
    assert result.data["summary"]["launch_templates"] == 3 * 2  # versions 1 and 2 of each
    assert sum(len(t["auto_scaling_groups"]) for t in result.data["launch_templates"]) == 120
    assert dict(aws.calls) == {
        "ssm:GetParametersByPath": 1,
        "ecs:ListClusters": 1,
        "ecs:DescribeClusters": 1,
        "ecs:ListContainerInstances": 6,
        "ecs:DescribeCapacityProviders": 10 + 2,  # 120 providers: 100 and 20 names, 10 a page
        "autoscaling:DescribeAutoScalingGroups": 2,  # 120 groups, 100 a call
        "ec2:DescribeLaunchTemplateVersions": 3,
        "ec2:GetInstanceMetadataDefaults": 1,
    }


# --- exit codes and JSON --------------------------------------------------------------------------


def test_fail_on_findings_exit_code(mocked, capsys):
    golden = golden_image()
    publish(golden)
    fleet("clean", [(golden, "required", 1, 1), (golden, "required", 2, 1)])
    fleet("dirty", [(golden, "required", 1, 1), (golden, "required", 3, 1)])

    assert cli.main(["audit", "--cluster", "clean", "--fail-on-findings"]) == 0
    assert cli.main(["audit", "--cluster", "dirty"]) == 0
    assert cli.main(["audit", "--cluster", "dirty", "--fail-on-findings"]) == 1
    assert cli.main(["audit", "--fail-on-findings"]) == 1
    assert "hop limit 3 > 2" in capsys.readouterr().out


FINDING = {"key", "message", "setting", "value", "remediation"}


def test_json_shape(mocked, capsys):
    golden = golden_image()
    publish(golden)
    template_id = launch_template("web", data(BASE_AMI, HttpTokens="optional", HttpPutResponseHopLimit=2))
    auto_scaling_group("web-asg", template_id)
    (instance_id,) = fleet("prod", [(BASE_AMI, "optional", 2, 1)], group="web-asg")

    assert cli.main(["audit", "--json", "--cluster", "prod"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {
        "instances",
        "launch_templates",
        "launch_configurations",
        "account_defaults",
        "summary",
        "skipped",
        "errors",
        "unread",
    }
    (instance,) = out["instances"]
    findings = instance.pop("findings")
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
        "auto_scaling_group": "web-asg",
        "launch_template": {"id": template_id, "name": "web", "version": 1},
        "host_check": None,  # --verify-hosts only
        "block_attribute": None,  # not a golden host
        "imds_iam_roles": False,
        "unknown": [],
        "notes": [
            {
                "key": "attribute_missing",
                "message": "no ecs-imds-block=enforced attribute: its agent did not find the block live at "
                "its start, or the host predates the attribute or is not on the golden AMI",
            }
        ],
    }
    assert [f["key"] for f in findings] == ["not_published", "imdsv1_allowed", "hop_limit_2_without_block"]
    assert [f["message"] for f in findings] == [
        "not on a published golden AMI",
        "IMDSv1 allowed (HttpTokens optional)",
        "hop limit 2 without the host block (not on a published golden AMI)",
    ]
    assert [(f["setting"], f["value"]) for f in findings] == [
        ("ImageId", f"resolve:ssm:{PREFIX}/<os>/<arch>/latest"),
        ("MetadataOptions.HttpTokens", "required"),
        ("MetadataOptions.HttpPutResponseHopLimit", 1),
    ]
    assert all(set(f) == FINDING for f in findings)
    assert instance["container_instance_arn"].startswith(f"arn:aws:ecs:{REGION}:{CALLER}:container-instance/")

    (template,) = out["launch_templates"]
    assert set(template) == {
        "account",
        "launch_template_id",
        "launch_template_name",
        "version",
        "referenced_as",
        "auto_scaling_groups",
        "capacity_providers",
        "clusters",
        "image_id",
        "published",
        "http_tokens",
        "hop_limit",
        "http_endpoint",
        "effective_http_tokens",
        "effective_hop_limit",
        "effective_from",
        "error",
        "findings",
        "notes",
        "unknown",
    }
    assert [f["key"] for f in template["findings"]] == [
        "not_published",
        "imdsv1_allowed",
        "hop_limit_2_without_block",
    ]
    assert all(set(f) == FINDING for f in template["findings"])
    (defaults,) = out["account_defaults"]
    assert set(defaults) == {
        "account",
        "region",
        "http_tokens",
        "hop_limit",
        "http_endpoint",
        "instance_metadata_tags",
        "http_tokens_enforced",
        "managed_by",
        "findings",
        "notes",
        "unknown",
    }
    summary = out["summary"]
    assert summary["instances"] == 1
    assert summary["with_findings"] == 1
    assert summary["findings"] == 3
    assert summary["launch_templates"] == 1
    assert summary["launch_template_findings"] == 3
    assert summary["findings_by_key"] == {
        "not_published": 2,
        "imdsv1_allowed": 2,
        "http_tokens_unset": 0,
        "hop_limit_over_2": 0,
        "hop_limit_2_without_block": 2,
        "hop_limit_unset_without_block": 0,
        "block_not_live": 0,  # --verify-hosts only
        "host_not_verified": 0,
    }
    assert summary["verify_hosts"] is None
    assert summary["region"] == REGION
    assert out["skipped"] == [] and out["errors"] == [] and out["unread"] == []
    assert summary["incomplete"] is False


# --- reads the audit could not make --------------------------------------------------------------

# A denial, and a throttle that outlasts botocore's retries, as each service answers them.
DENIED = {
    "ec2": "UnauthorizedOperation",
    "autoscaling": "AccessDenied",
    "ecs": "AccessDeniedException",
    "ssm": "AccessDeniedException",
}
THROTTLED = {
    "ec2": ("RequestLimitExceeded", 503),
    "autoscaling": ("Throttling", 400),
    "ecs": ("ThrottlingException", 400),
    "ssm": ("ThrottlingException", 400),
}
FOUND = {"clean": ([], []), "dirty": (["not_published", "imdsv1_allowed", "hop_limit_2_without_block"], [])}
TEMPLATE_FOUND = (["not_published", "http_tokens_unset", "hop_limit_unset_without_block"], [])
HOSTS_UNCHECKED = {name: (found, ["host_check"]) for name, (found, _) in FOUND.items()}

UNREAD_CASES = {
    # read: (the instances listed: {name: (finding keys, unknown keys)}; the launch template's
    # (finding keys, unknown keys), None when it is not reached; the Unread's resources)
    "GetParametersByPath": (
        {"clean": ([], ["published"]), "dirty": (["imdsv1_allowed"], ["published"])},
        ([], ["published"]),  # on any AMI, hop limit 2 and unset options are not findings
        [],
    ),
    "ListClusters": ({}, None, []),
    "DescribeClusters": (FOUND, TEMPLATE_FOUND, []),  # the template through the instances' group
    "ListContainerInstances": ({}, TEMPLATE_FOUND, ["prod"]),  # through the capacity provider
    "DescribeContainerInstances": ({}, TEMPLATE_FOUND, ["prod"]),
    "DescribeInstances": (
        {"clean": ([], ["metadata_options"]), "dirty": ([], ["metadata_options"])},
        TEMPLATE_FOUND,
        [],
    ),
    "DescribeCapacityProviders": (FOUND, TEMPLATE_FOUND, []),
    "DescribeAutoScalingGroups": (FOUND, None, []),
    "DescribeLaunchTemplateVersions": (FOUND, ([], ["metadata_options"]), ["web"]),
    "GetInstanceMetadataDefaults": (FOUND, (["not_published"], ["http_tokens", "hop_limit"]), []),
    "DescribeInstanceInformation": (HOSTS_UNCHECKED, TEMPLATE_FOUND, []),
    "ListCommandInvocations": (HOSTS_UNCHECKED, TEMPLATE_FOUND, []),
}


@pytest.mark.parametrize("read", UNREAD_CASES)
def test_a_read_that_fails_is_reported_and_the_rest_of_the_audit_stands(mocked, monkeypatch, read):
    """Each read denied, then throttled past botocore's retries: the audit lists what it could
    read with its findings, leaves unjudged what the read would have told, names the read up
    front and in the JSON, and exits 5 (incomplete), over the 1 of --fail-on-findings."""
    monkeypatch.setattr(verify_hosts, "_sleep", lambda seconds: None)
    golden = golden_image()
    publish(golden)
    template_id = launch_template("web", data(BASE_AMI))  # sets nothing: findings, or unknown
    capacity_providers("prod", {"web-cp": auto_scaling_group("web-asg", template_id)})
    specs = [(golden, "required", 2, 1), (BASE_AMI, "optional", 2, 1)]
    ids = dict(zip(("clean", "dirty"), fleet("prod", specs, group="web-asg"), strict=True))
    hosts = dict.fromkeys(ids.values(), PASSES)
    service, leaves = fetch.READS[read]
    instances, template, resources = UNREAD_CASES[read]

    for failure, (code, status) in (("denied", (DENIED[service], 400)), ("throttled", THROTTLED[service])):
        with run_command_stubbed(hosts), retrying_at_once() as tries, failing(read, code, status) as attempts:
            result, _ = run("--verify-hosts", "--fail-on-findings")

        assert len(attempts) == (1 if failure == "denied" else tries), failure  # only a throttle is retried
        assert result.code == 5, failure
        out = json.loads(json.dumps(result.data))
        assert out["unread"] == [
            {
                "account": None if read in ("GetParametersByPath", "ListClusters") else CALLER,
                "call": f"{service}:{read}",
                "code": code,
                "message": f"{read} refused by the test",
                "unknown": leaves,
                "resources": resources,
            }
        ]
        assert out["summary"]["incomplete"] is True
        assert result.lines[0].startswith("INCOMPLETE: 1 read could not be made")
        for_ = f" for {', '.join(resources)}" if resources else ""
        assert result.lines[1] == f"unread: {service}:{read} ({code}){for_}: {leaves}"

        listed = {i["ec2_instance_id"]: i for i in out["instances"]}
        assert {name for name, i in ids.items() if i in listed} == set(instances), failure
        for name, (finding_keys, unknown_keys) in instances.items():
            record = listed[ids[name]]
            assert (keys(record), unknown(record)) == (finding_keys, unknown_keys), (failure, name)
            line = next(line for line in result.lines if ids[name] in line)
            for message in [f["message"] for f in record["findings"]] + [
                u["message"] for u in record["unknown"]
            ]:
                assert message in line
        if template is None:
            assert out["launch_templates"] == [], failure
        else:
            (record,) = out["launch_templates"]
            assert record["launch_template_id"] == template_id
            assert (keys(record), unknown(record)) == template, failure
        (defaults,) = out["account_defaults"]
        assert unknown(defaults) == (["account_defaults"] if read == "GetInstanceMetadataDefaults" else [])


def test_iam_readme_names_the_action_of_every_read():
    """iam/README.md's table of what the audit reads has a row for each read the audit makes."""
    readme = (Path(__file__).resolve().parents[1] / "iam" / "README.md").read_text()
    section = readme.split("\n## What the audit reads\n", 1)[1].split("\n## ", 1)[0]
    actions = set(re.findall(r"^\| [^|]+ \| `([a-z0-9]+:[A-Za-z]+)` \|", section, re.MULTILINE))
    assert actions - {"sts:AssumeRole"} == {f"{service}:{read}" for read, (service, _) in fetch.READS.items()}


# --- clusters ---------------------------------------------------------------------------------------


def test_missing_cluster_from_describe_clusters_failures(mocked, capsys):
    """Plain moto lists no container instances for a missing cluster: DescribeClusters says MISSING."""
    publish(golden_image())
    fleet("prod", [(BASE_AMI, "required", 1, 1)])
    with pytest.raises(NotFoundError, match=f"no ECS cluster 'nope' in {REGION}"):
        run("--cluster", "prod", "--cluster", "nope")
    assert cli.main(["audit", "--cluster", "nope"]) == 4
    assert f"golden-ami: no ECS cluster 'nope' in {REGION}" in capsys.readouterr().err


def test_missing_cluster_from_cluster_not_found(mocked, aws_paging):
    """AWS raises ClusterNotFoundException from ListContainerInstances."""
    publish(golden_image())
    with pytest.raises(NotFoundError, match=f"no ECS cluster 'nope' in {REGION}"):
        run("--cluster", "nope")


def test_an_empty_cluster_is_not_missing(mocked):
    publish(golden_image())
    boto3.client("ecs", region_name=REGION).create_cluster(clusterName="empty")
    result, aws = run("--cluster", "empty")
    assert result.data["instances"] == []
    assert result.lines[0] == "no container instances found"
    assert aws.calls["ecs:DescribeClusters"] == 1
    assert result.data["account_defaults"][0]["account"] == CALLER  # from the cluster's ARN


def test_container_instance_gone_before_describe_is_skipped(mocked, aws_paging, monkeypatch, caplog):
    from moto.ecs.models import EC2ContainerServiceBackend

    publish(golden_image())
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


def test_container_instance_whose_ec2_instance_is_gone_is_skipped(mocked):
    """One unknown instance ID fails the whole DescribeInstances: the audit retries without it."""
    from moto.ec2.models import ec2_backends

    publish(golden_image())
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


# --- accounts ---------------------------------------------------------------------------------------


def write_accounts(tmp_path, text: str | bytes):
    path = tmp_path / "accounts.txt"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return str(path)


def test_multi_account(mocked, tmp_path, account_defaults):
    golden = golden_image()
    publish(golden)  # in the caller's account only
    prod, dev = "111111111111", "222222222222"
    account_defaults[dev] = {"HttpTokens": "optional", "HttpPutResponseHopLimit": 2}
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
    assert keys(found[dev_id]) == ["not_published", "imdsv1_allowed", "hop_limit_2_without_block"]
    defaults = {d["account"]: d for d in result.data["account_defaults"]}
    assert set(defaults) == {prod, dev}
    assert keys(defaults[prod]) == [] and defaults[prod]["http_tokens"] is None
    assert keys(defaults[dev]) == ["imdsv1_allowed"]
    assert result.data["summary"]["accounts"] == 2
    assert result.data["summary"]["clusters"] == 2
    assert result.data["summary"]["account_defaults_with_findings"] == 1
    assert result.code == 1
    assert result.lines[0].split()[0] == "ACCOUNT"
    assert any(line.startswith(dev) and dev_id in line for line in result.lines)
    assert (
        f"account {dev} IMDS defaults ({REGION}): HttpTokens optional, hop limit 2, endpoint no preference; "
        "IMDSv1 allowed (HttpTokens optional)"
    ) in result.lines
    assert aws.calls["sts:AssumeRole"] == 2
    assert aws.calls["ec2:DescribeInstances"] == 2  # one per account
    assert aws.calls["ec2:GetInstanceMetadataDefaults"] == 2  # one per account
    assert aws.calls["ssm:GetParametersByPath"] == 1  # once, in the caller's account


def test_multi_account_one_failing_account(mocked, tmp_path):
    """An account that could not be audited outweighs another's unread read: exit 4, not 5."""
    publish(golden_image())
    prod, dev = "111111111111", "222222222222"
    (prod_id,) = fleet("web", [(BASE_AMI, "required", 1, 1)], session=assumed(prod))
    accounts = write_accounts(tmp_path, f"{prod}\n{dev}\n")

    with failing("GetInstanceMetadataDefaults", "UnauthorizedOperation"):
        result, _ = run("--accounts", accounts, "--role-name", "audit", "--cluster", "web")

    assert list(by_instance(result)) == [prod_id]
    (error,) = result.data["errors"]
    assert error["account"] == dev
    assert "no ECS cluster 'web'" in error["error"]
    assert [(u["account"], u["call"]) for u in result.data["unread"]] == [
        (prod, "ec2:GetInstanceMetadataDefaults")
    ]
    assert result.code == 4
    assert result.lines[1].startswith(f"unread: account {prod}: ec2:GetInstanceMetadataDefaults")
    assert f"account {dev} not audited: " in result.text


def test_multi_account_resolve_ssm_resolves_in_the_member_account(mocked, tmp_path):
    """A member's launch template naming the caller's parameter by name resolves it in the
    member's own account: not the golden AMI. By the parameter's ARN it is."""
    publish(golden_image())
    member = "111111111111"
    session = assumed(member)
    by_name = launch_template("by-name", data(ON_GOLDEN), session=session)
    by_arn = launch_template(
        "by-arn", data(f"resolve:ssm:arn:aws:ssm:{REGION}:{CALLER}:parameter{LATEST}"), session=session
    )
    providers = {
        "name-cp": auto_scaling_group("name-asg", by_name, session=session),
        "arn-cp": auto_scaling_group("arn-asg", by_arn, session=session),
    }
    capacity_providers("web", providers, session=session)

    result, _ = run("--accounts", write_accounts(tmp_path, member), "--role-name", "audit")

    found = by_template(result)
    assert found["by-name", 1]["published"] is False
    assert found["by-arn", 1]["published"] is True
    assert {t["account"] for t in result.data["launch_templates"]} == {member}


ACCOUNTS_FILES = {
    # case: (file content, exact message after "golden-ami: "; {path} is the file)
    "arabic-indic-digits": (
        "\u0661" * 12 + "\n",
        "{path}:1: '" + "\u0661" * 12 + "' is not a 12-digit AWS account ID",
    ),
    "fullwidth-digits": (
        "\uff11" * 12 + "\n",
        "{path}:1: '" + "\uff11" * 12 + "' is not a 12-digit AWS account ID",
    ),
    "thirteen-digits": ("1234567890123\n", "{path}:1: '1234567890123' is not a 12-digit AWS account ID"),
    "a-typo": (
        "111111111111\n# fine\n22222222222x  # typo\n",
        "{path}:3: '22222222222x  # typo' is not a 12-digit AWS account ID",
    ),
    "an-absurd-line": (
        "9" * 100_000 + "\n",
        "{path}:1: '" + "9" * 40 + "'... (100000 characters) is not a 12-digit AWS account ID",
    ),
    "control-characters": (
        "1111\x1b[2J11111111\n",
        "{path}:1: '1111\\x1b[2J11111111' is not a 12-digit AWS account ID",
    ),
    "not-utf-8": (b"\xff\xfe1\x002\x00", "accounts file {path} is not UTF-8 text (byte 0)"),
    "binary": (bytes(range(256)), "accounts file {path} is not UTF-8 text (byte 128)"),
    "too-large": ("111111111111\n" * 90_000, "accounts file {path} is larger than 1024 KiB"),
    "empty": ("# nobody\n\n", "{path} lists no account IDs"),
}


@pytest.mark.parametrize("case", ACCOUNTS_FILES)
def test_bad_accounts_files_give_one_line_and_exit_2(mocked, tmp_path, capsys, case):
    content, message = ACCOUNTS_FILES[case]
    path = write_accounts(tmp_path, content)

    code = cli.main(["audit", "--accounts", path, "--role-name", "audit"])

    assert code == 2
    captured = capsys.readouterr()
    assert captured.err == f"golden-ami: {message.format(path=path)}\n"
    assert captured.out == ""


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--accounts", "{tmp}"], "cannot read accounts file {tmp}: Is a directory"),
        (
            ["--accounts", "{tmp}/missing.txt"],
            "cannot read accounts file {tmp}/missing.txt: No such file or directory",
        ),
        (["--role-name", "r\u00f4le"], "--role-name 'r\u00f4le' is not an IAM role name"),
        (
            ["--role-name", "x" * 600],
            "--role-name '" + "x" * 40 + "'... (600 characters) is not an IAM role name",
        ),
        (["--prefix", "golden-ami"], "--prefix 'golden-ami' must be an SSM path starting with /"),
    ],
    ids=["a-directory", "a-missing-file", "a-unicode-role-name", "an-absurd-role-name", "a-relative-prefix"],
)
def test_bad_arguments_give_one_line_and_exit_2(mocked, tmp_path, capsys, argv, message):
    accounts = write_accounts(tmp_path, "111111111111\n")
    argv = [a.format(tmp=tmp_path) for a in argv]
    if "--accounts" not in argv:
        argv += ["--accounts", accounts]
    if "--role-name" not in argv:
        argv += ["--role-name", "audit"]

    assert cli.main(["audit", *argv]) == 2
    captured = capsys.readouterr()
    assert captured.err == f"golden-ami: {message.format(tmp=tmp_path)}\n"


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


def test_an_instance_without_the_attribute_gets_a_note_and_is_counted(mocked):
    """Tasks that require attribute:ecs-imds-block == enforced are never placed on it."""
    golden = golden_image()
    publish(golden)
    enforced, unenforced = fleet("prod", [(golden, "required", 2, 2)])
    ecs = boto3.client("ecs", region_name=REGION)
    arn = container_instance_arn("prod", unenforced)
    ecs.delete_attributes(
        cluster="prod", attributes=[{"name": "ecs-imds-block", "value": "enforced", "targetId": arn}]
    )

    result, _ = run("--cluster", "prod", "--fail-on-findings")

    found = by_instance(result)
    assert found[enforced]["block_attribute"] == "enforced" and notes(found[enforced]) == []
    assert found[unenforced]["block_attribute"] is None and notes(found[unenforced]) == ["attribute_missing"]
    assert result.data["summary"]["attribute_missing"] == 1
    assert result.code == 0  # a note, not a finding
    assert (
        "without the ecs-imds-block=enforced attribute: 1 (tasks that require it are not placed there)"
        in result.lines
    )


def test_a_host_whose_agent_serves_task_credentials_through_imds_gets_a_note(mocked):
    """ecs.capability.imds-iam-roles: whatever reaches IMDS there, an allowlisted daemon network
    included, reads every task's role. The role's attribute does not say whether a network is
    allowlisted, so every such host is noted; a note, not a finding."""
    golden = golden_image()
    publish(golden)
    serving, plain = fleet("prod", [(golden, "required", 2, 2)])
    capability = {
        "name": "ecs.capability.imds-iam-roles",
        "targetId": container_instance_arn("prod", serving),
    }
    boto3.client("ecs", region_name=REGION).put_attributes(cluster="prod", attributes=[capability])

    result, _ = run("--cluster", "prod", "--fail-on-findings")

    found = by_instance(result)
    assert (found[serving]["imds_iam_roles"], notes(found[serving])) == (True, ["imds_task_credentials"])
    assert "every task's role" in found[serving]["notes"][0]["message"]
    assert (found[plain]["imds_iam_roles"], notes(found[plain])) == (False, [])
    assert result.data["summary"]["imds_task_credentials"] == 1
    assert result.code == 0
    assert any(line.startswith("serving task credentials through IMDS: 1") for line in result.lines)
