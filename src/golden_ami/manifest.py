# Copyright: the ecs-imds-golden authors
# Apache License 2.0
"""Read the manifest that `make ami` (Packer) or `make image` writes, checked against its
schema before anything calls AWS: every refusal is one UsageError naming the file and field.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from golden_ami.aws import UsageError
from golden_ami.files import read_at_most
from golden_ami.layout import ARCHES, OSES


@dataclass(frozen=True)
class Build:
    """One build of the last run: a variant and its AMI in each region."""

    name: str
    os: str
    arch: str
    build_time: int
    amis: dict[str, str] = field(default_factory=dict)  # region -> AMI ID
    local: bool = False


# A region name (us-east-1, us-gov-west-1, ap-southeast-2) and an EC2 image ID (8 or 17 hex).
REGION = re.compile(r"[a-z]{2}(?:-[a-z]+)+-[0-9]{1,2}\Z")
AMI_ID = re.compile(r"ami-(?:[0-9a-f]{8}|[0-9a-f]{17})\Z")
# Build times (UTC seconds) from 2000 to 9999, so that every build ID (layout.build_id) has
# the same shape.
BUILD_TIMES = (946684800, 253402300799)
MAX_BYTES = 16 * 1024 * 1024  # a manifest of thousands of runs is far smaller


def _field(value, kind: type, field: str, where: str):
    """``value`` if it is a ``kind`` (and not a bool posing as an int), else a UsageError."""
    names = {str: "a string", int: "an integer", list: "a list", dict: "an object"}
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        got = "nothing" if value is None else f"{type(value).__name__} {value!r}"[:80]
        raise UsageError(f"{where}: {field} must be {names[kind]}, got {got}")
    return value


def _amis(artifact_id: str, where: str) -> dict[str, str]:
    amis: dict[str, str] = {}
    for pair in artifact_id.split(","):
        region, _, ami = pair.partition(":")
        if not REGION.match(region) or not AMI_ID.match(ami):
            raise UsageError(
                f"{where}: artifact_id entry {pair!r} is not region:ami-id (us-east-1:ami-0123456789abcdef0)"
            )
        if region in amis:
            raise UsageError(f"{where}: artifact_id names region {region} twice ({amis[region]} and {ami})")
        amis[region] = ami
    return amis


def _build(entry: dict, where: str) -> Build:
    """One build of the last run, checked field by field."""
    name = _field(entry.get("name"), str, "name", where)
    where = f"{where} ({name!r})"
    custom = _field(entry.get("custom_data"), dict, "custom_data", where)
    builder = _field(entry.get("builder_type", ""), str, "builder_type", where)
    local = builder == "docker" or custom.get("local") == "true"
    os_name = _field(custom.get("os"), str, "custom_data.os", where)
    arch = _field(custom.get("architecture"), str, "custom_data.architecture", where)
    build_time = _field(entry.get("build_time"), int, "build_time", where)
    if not BUILD_TIMES[0] <= build_time <= BUILD_TIMES[1]:
        raise UsageError(f"{where}: build_time {build_time} is not a time (UTC seconds) from 2000 to 9999")
    if local:  # publish refuses it with its own message; nothing of it reaches AWS
        return Build(name=name, os=os_name, arch=arch, build_time=build_time, local=True)
    if os_name not in OSES:
        raise UsageError(f"{where}: custom_data.os must be one of {', '.join(OSES)}, got {os_name!r}")
    if arch not in ARCHES:
        raise UsageError(
            f"{where}: custom_data.architecture must be one of {', '.join(ARCHES)}, got {arch!r}"
        )
    artifact_id = _field(entry.get("artifact_id"), str, "artifact_id", where)
    amis = _amis(artifact_id, where)
    return Build(name=name, os=os_name, arch=arch, build_time=build_time, amis=amis)


def read(path: Path) -> list[Build]:
    """The builds of the manifest's last run (Packer appends every run to the same file)."""
    missing = f"no manifest at {path}: run `make ami` (or `make image`) first"
    text = read_at_most(path, MAX_BYTES, "the manifest", missing)
    if len(text) > MAX_BYTES:
        raise UsageError(f"{path} is over {MAX_BYTES} bytes: not a Packer manifest")
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise UsageError(f"{path} is not a Packer manifest: {exc}") from exc
    data = _field(data, dict, "the top level", str(path))
    last_run = _field(data.get("last_run_uuid"), str, "last_run_uuid", str(path))
    builds = _field(data.get("builds"), list, "builds", str(path))
    result = []
    for index, entry in enumerate(builds):
        entry = _field(entry, dict, f"builds[{index}]", str(path))
        if entry.get("packer_run_uuid") == last_run:
            result.append(_build(entry, f"{path}: builds[{index}]"))
    if not result:
        raise UsageError(f"{path} has no builds for its last run {last_run}")
    seen: dict[tuple[str, str], str] = {}
    for build in result:
        if not build.local and (build.os, build.arch) in seen:
            raise UsageError(
                f"{path}: builds {seen[build.os, build.arch]!r} and {build.name!r} of the last run are both "
                f"{build.os}/{build.arch}: which one would latest name?"
            )
        seen[build.os, build.arch] = build.name
    return result
