# Copyright: the ecs-imds-golden authors
# Apache License 2.0
"""The extractor of tests/support/iam.py on code written for it: it must find every kind of
boto3 call the CLI makes, and refuse, naming it, what it cannot resolve. Without these, a
coverage test that finds nothing would pass.
"""

from __future__ import annotations

import re

import pytest
from support.iam import Unresolved, extract


def _extract_one(code: str) -> set[str]:
    return {c.action for c in extract({"m": code}).calls["m"]}


def test_extractor_resolves_clients_paginators_waiters_and_service_named_parameters():
    code = """
def f(aws, region):
    ec2, ssm = aws.client("ec2", region), aws.client("ssm", region)
    ec2.deregister_image(ImageId="ami-1")
    pages = ssm.get_paginator("get_parameters_by_path")
    for page in pages.paginate(Path="/x"):
        pass
    aws.client("ec2").get_waiter("image_available").wait(ImageIds=[])
    try:
        ssm.get_parameter(Name="/x")
    except ssm.exceptions.ParameterNotFound:
        pass

def g(ecs):
    return ecs.describe_clusters(clusters=[])

def h(aws):
    return g(aws.client("ecs"))
"""
    assert _extract_one(code) == {
        "ec2:DeregisterImage",
        "ssm:GetParametersByPath",
        "ec2:DescribeImages",
        "ssm:GetParameter",
        "ecs:DescribeClusters",
    }


def test_extractor_resolves_clients_kept_as_attributes_of_self():
    code = """
class Templates:
    def versions(self):
        return self.ec2.describe_launch_template_versions(Versions=["$Latest"])

    def __init__(self, ec2, aws):
        self.ec2, self.ssm = ec2, aws.client("ssm")
        self.seen = []

    def image(self, name):
        return self.ssm.get_parameter(Name=name)

def make(aws):
    return Templates(aws.client("ec2"), aws)
"""
    assert _extract_one(code) == {"ec2:DescribeLaunchTemplateVersions", "ssm:GetParameter"}


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("def f(aws, s):\n    aws.client(s).describe_images()\n", "not a literal"),
        ("def f(conn):\n    conn.describe_images()\n", "not a known client"),
        ('def f(aws):\n    aws.client("ec2").describe_imagez()\n', "no operation 'describe_imagez'"),
        ('def f(aws, n):\n    aws.client("ec2").get_waiter(n).wait()\n', "unknown ec2 get_waiter"),
        ('def f(aws):\n    aws.resource("s3")\n', "resources are not supported"),
        ("class C:\n    def f(self):\n        self.conn.describe_images()\n", "not a known client"),
    ],
)
def test_extractor_refuses_what_it_cannot_resolve(code, message):
    code = 'def h(aws):\n    aws.client("ec2").describe_images()\n' + code
    with pytest.raises(Unresolved, match=re.escape(message)):
        extract({"m": code})
