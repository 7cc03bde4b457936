# Copyright: the ecs-imds-golden authors
# Apache License 2.0
"""Measurement 4: API calls and wall time of `golden-ami audit` as one cluster grows.

Against moto in this process, with moto made to page and refuse as AWS does
(scripts/moto_aws.py), one cluster of n container instances on a published golden AMI.
The audit runs as the CLI runs it (its own parser, audit.run, an Aws that counts calls);
only the audit is timed, not building the fleet. The count checked, for one named cluster:

    calls = ceil(n/100) [ListContainerInstances] + ceil(n/100) [DescribeContainerInstances]
          + ceil(n/1000) [DescribeInstances] + 1 [DescribeClusters]
          + 1 [GetInstanceMetadataDefaults] + 1 [GetParametersByPath]

that is, ceil(n/100) plus ceil(n/1000) per kind of call, not n. The fleet has no Auto Scaling
group, so no DescribeCapacityProviders, DescribeAutoScalingGroups or
DescribeLaunchTemplateVersions (tests/test_audit.py counts those).

The same fleet is then audited with --verify-hosts, every host's check passing at the first
poll (scripts/moto_aws.py's run_command_stubbed: botocore's Stubber answers SSM Run Command,
which moto lacks; the polls run on a clock of their own, so nothing sleeps). Its calls on top:

    verify = ceil(n/50) [DescribeInstanceInformation] + ceil(n/50) [SendCommand]
           + ceil(n/50) [ListCommandInvocations, one page a command]

moto 5.2.5 has no GetInstanceMetadataDefaults: scripts/moto_aws.py's imds_defaults_stubbed()
answers it with botocore's Stubber, here and in tests/test_audit.py.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Iterator

import boto3
from moto_aws import PASSES, imds_defaults_stubbed, paging_like_aws, run_command_stubbed

from benchmarks.progress import log
from golden_ami import audit, cli, layout, verify_hosts
from golden_ami.aws import Aws
from golden_ami.boothook import names

REGION = "eu-west-1"
CLUSTER = "bench"
BASE_AMI = "ami-12c6146b"  # one of moto's stock AMIs
FORMULA = (
    "calls = ceil(n/100) [list] + ceil(n/100) [describe] + ceil(n/1000) [ec2] + 1 [clusters]"
    " + 1 [imds defaults] + 1 [ssm]  (ceil(n/100) plus ceil(n/1000), not n)"
)
FAKE_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
}
VERIFY_FORMULA = (
    "verify = 3 x ceil(n/50) more [DescribeInstanceInformation, SendCommand, ListCommandInvocations]"
)
CLEARED_ENV = ("AWS_PROFILE", "AWS_REGION", "AWS_ENDPOINT_URL", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE")


def expected_calls(n: int) -> dict[str, int]:
    pages = math.ceil(n / 100)
    return {
        "ecs:DescribeClusters": 1,
        "ecs:ListContainerInstances": pages,
        "ecs:DescribeContainerInstances": pages,
        "ec2:DescribeInstances": math.ceil(n / 1000),
        "ec2:GetInstanceMetadataDefaults": 1,
        "ssm:GetParametersByPath": 1,
    }


def expected_verify_calls(n: int) -> dict[str, int]:
    batches = math.ceil(n / verify_hosts.SEND_BATCH)
    return {
        "ssm:DescribeInstanceInformation": batches,
        "ssm:SendCommand": batches,
        "ssm:ListCommandInvocations": batches,
    }


@contextlib.contextmanager
def _no_waiting() -> Iterator[None]:
    """verify_hosts' polls on a clock that moves only when they sleep."""
    now = [0.0]
    saved = verify_hosts._clock, verify_hosts._sleep
    verify_hosts._clock = lambda: now[0]
    verify_hosts._sleep = lambda seconds: now.__setitem__(0, now[0] + seconds)
    try:
        yield
    finally:
        verify_hosts._clock, verify_hosts._sleep = saved


@contextlib.contextmanager
def _moto() -> Iterator[None]:
    """Fake credentials, no local AWS configuration, every call to a fresh moto."""
    from moto import mock_aws

    saved = dict(os.environ)
    for name in CLEARED_ENV:
        os.environ.pop(name, None)
    os.environ.update(FAKE_ENV)
    try:
        with mock_aws(), paging_like_aws(), imds_defaults_stubbed():
            yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _fleet(n: int) -> None:
    """A published golden AMI and n container instances on it in CLUSTER.

    Instances are launched 100 to a reservation (moto pages DescribeInstances by reservation,
    which AWS does not when InstanceIds are given); container instances are registered
    straight in moto's backend, which is setup, not measured, and 50x faster than the API.
    """
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.ecs.models import ecs_backends

    ec2, ecs, ssm = (boto3.client(s, region_name=REGION) for s in ("ec2", "ecs", "ssm"))
    builder = ec2.run_instances(ImageId=BASE_AMI, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    golden = ec2.create_image(InstanceId=builder, Name="ecs-imds-golden-al2023-x86_64")["ImageId"]
    ec2.terminate_instances(InstanceIds=[builder])
    latest = layout.parameter(layout.DEFAULT_PREFIX, "al2023", "x86_64")
    ssm.put_parameter(Name=latest, Value=golden, Type="String")
    ecs.create_cluster(clusterName=CLUSTER)
    backend = ecs_backends[DEFAULT_ACCOUNT_ID][REGION]
    attribute = names()["attribute"]
    options = {"HttpTokens": "required", "HttpPutResponseHopLimit": 1, "HttpEndpoint": "enabled"}
    for start in range(0, n, 100):
        count = min(100, n - start)
        reservation = ec2.run_instances(
            ImageId=golden, MinCount=count, MaxCount=count, MetadataOptions=options
        )
        for instance in reservation["Instances"]:
            registered = backend.register_container_instance(CLUSTER, instance["InstanceId"])
            registered.attributes[attribute["name"]] = attribute["value"]  # as a golden host's agent


def _audit(*flags: str) -> tuple[dict, dict, float]:
    args = cli.build_parser().parse_args(["audit", "--region", REGION, "--cluster", CLUSTER, *flags])
    aws = Aws(region=REGION)
    start = time.perf_counter()
    result = audit.run(args, aws)
    return result.data["summary"], dict(aws.calls), time.perf_counter() - start


def audit_once(n: int) -> dict:
    hosts: dict[str, str] = {}
    with _moto(), run_command_stubbed(hosts), _no_waiting():
        _fleet(n)
        summary, calls, seconds = _audit()
        hosts.update({i: PASSES for i in _instance_ids()})
        verified, verify_calls, verify_seconds = _audit("--verify-hosts")
    if summary["instances"] != n or summary["with_findings"]:
        raise RuntimeError(f"audit of {n} instances saw {json.dumps(summary)}")
    if verified["verify_hosts"] != {**dict.fromkeys(verify_hosts.STATUSES, 0), "verified": n}:
        raise RuntimeError(f"audit --verify-hosts of {n} instances saw {json.dumps(verified)}")
    expected = expected_calls(n)
    expected_verify = {**expected, **expected_verify_calls(n)}
    return {
        "n": n,
        "calls": sum(calls.values()),
        "expected_calls": sum(expected.values()),
        "by_call": calls,
        "formula_holds": calls == expected,
        "seconds": round(seconds, 3),
        "verify_hosts": {
            "calls": sum(verify_calls.values()),
            "expected_calls": sum(expected_verify.values()),
            "by_call": verify_calls,
            "formula_holds": verify_calls == expected_verify,
            "seconds": round(verify_seconds, 3),
        },
    }


def _instance_ids() -> list[str]:
    pages = (
        boto3.client("ec2", region_name=REGION)
        .get_paginator("describe_instances")
        .paginate(Filters=[{"Name": "instance-state-name", "Values": ["running"]}])
    )
    return [i["InstanceId"] for page in pages for r in page["Reservations"] for i in r["Instances"]]


def measure(sizes: tuple[int, ...]) -> dict:
    results = {}
    for n in sizes:
        results[str(n)] = audit_once(n)
        row = results[str(n)]
        log(f"audit n={n}: {row['calls']} calls (expected {row['expected_calls']}), {row['seconds']:.2f} s")
        verify = row["verify_hosts"]
        log(f"audit --verify-hosts n={n}: {verify['calls']} calls (expected {verify['expected_calls']})")
    return {"formula": FORMULA, "verify_formula": VERIFY_FORMULA, "sizes": results}
