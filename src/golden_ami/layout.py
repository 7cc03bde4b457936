# Copyright: the ecs-imds-golden authors
# Apache License 2.0
"""The SSM layout every command reads or writes, in one place.

    {prefix}/{os}/{arch}/latest    the current AMI of a variant; publish and rollback move it
    {prefix}/{os}/{arch}/{build}   one build, never changed once written; {build} is the
                                   build's UTC time, 20261128T223721Z

Both hold an AMI ID, with data type aws:ec2:image so that launch templates can use
resolve:ssm:. Any other parameter under the prefix that holds an AMI ID (a team's pin) is a
publication too: cleanup keeps its AMI, audit counts it as golden.
"""

from __future__ import annotations

import re
import time

from golden_ami.aws import AwsError, UsageError

DEFAULT_PREFIX = "/golden-ami/ecs"
LATEST = "latest"
# What `make ami` builds (packer/locals.pkr.hcl).
OSES = ("al2023", "al2")
ARCHES = ("x86_64", "arm64")
_BUILD = r"\d{8}T\d{6}Z"
BUILD_ID = re.compile(_BUILD + r"\Z")
_BUILD_ENTRY = re.compile(r"/[^/]+/[^/]+/" + _BUILD + r"\Z")  # below the prefix
_PREFIX = re.compile(r"(/[A-Za-z0-9_.-]+)+\Z")
DATA_TYPE = "aws:ec2:image"


def add_prefix_argument(parser) -> None:
    parser.add_argument(
        "--prefix",
        default=DEFAULT_PREFIX,
        help=f"the SSM path the golden AMIs are published under (default {DEFAULT_PREFIX})",
    )


def add_variant_arguments(parser) -> None:
    parser.add_argument("--os", required=True, choices=OSES, help=" or ".join(OSES))
    parser.add_argument("--arch", required=True, choices=ARCHES)


def check_prefix(prefix: str) -> str:
    """A prefix the commands that write or delete may use: not under AWS's own trees."""
    if not _PREFIX.match(prefix) or prefix.lower().startswith(("/aws", "/ssm")):
        raise UsageError(f"--prefix {prefix!r} must look like /golden-ami/ecs (not under /aws or /ssm)")
    return prefix


def build_id(build_time: int) -> str:
    """The name of a build in SSM: its UTC build time."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(build_time))


def variant(prefix: str, os_name: str, arch: str) -> str:
    """The path of one OS and architecture, which holds latest and the builds."""
    return f"{prefix}/{os_name}/{arch}"


def parameter(prefix: str, os_name: str, arch: str, build: str = LATEST) -> str:
    """The parameter of one build of a variant, or of its latest."""
    return f"{variant(prefix, os_name, arch)}/{build}"


def is_build_entry(prefix: str, name: str) -> bool:
    """Whether the parameter ``name`` under ``prefix`` is one build's entry, not a publication."""
    return bool(_BUILD_ENTRY.match(name[len(prefix) :]))


def builds(ssm, base: str) -> dict[str, str]:
    """Build ID -> AMI of every build entry under a variant's path ``base``."""
    entries = {}
    for page in ssm.get_paginator("get_parameters_by_path").paginate(Path=base, Recursive=False):
        for entry in page["Parameters"]:
            build = entry["Name"].rsplit("/", 1)[1]
            if BUILD_ID.match(build):
                entries[build] = entry["Value"]
    return entries


def write_build(ssm, name: str, ami: str, description: str) -> None:
    """Create a build's entry; an existing one must already hold the same AMI."""
    try:
        ssm.put_parameter(Name=name, Value=ami, Type="String", DataType=DATA_TYPE,
                          Description=description, Overwrite=False)  # fmt: skip
    except ssm.exceptions.ParameterAlreadyExists as exc:
        current = ssm.get_parameter(Name=name)["Parameter"]["Value"]
        if current != ami:
            raise AwsError(f"{name} already holds {current}, not {ami}: builds are immutable") from exc


def move_latest(ssm, name: str, ami: str, description: str) -> None:
    """Point a variant's latest at ``ami``."""
    ssm.put_parameter(
        Name=name, Value=ami, Type="String", DataType=DATA_TYPE, Description=description, Overwrite=True
    )
