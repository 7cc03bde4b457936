"""Read the manifest that `make ami` (Packer) or `make image` writes."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from golden_ami.aws import UsageError


@dataclass(frozen=True)
class Build:
    """One build of the last run: a variant and its AMI in each region."""

    name: str
    os: str
    arch: str
    build_time: int
    amis: dict[str, str] = field(default_factory=dict)  # region -> AMI ID
    local: bool = False

    @property
    def build_id(self) -> str:
        """The immutable name of this build in SSM: its UTC build time."""
        return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(self.build_time))


def _amis(artifact_id: str, where: str) -> dict[str, str]:
    amis = {}
    for pair in filter(None, artifact_id.split(",")):
        region, _, ami = pair.partition(":")
        if not region or not ami.startswith("ami-"):
            raise UsageError(f"{where}: artifact_id entry {pair!r} is not region:ami-id")
        amis[region] = ami
    return amis


def read(path: Path) -> list[Build]:
    """The builds of the manifest's last run (Packer appends every run to the same file)."""
    try:
        data = json.loads(Path(path).read_text())
        last_run, builds = data["last_run_uuid"], data["builds"]
    except FileNotFoundError as exc:
        raise UsageError(f"no manifest at {path}: run `make ami` (or `make image`) first") from exc
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise UsageError(f"{path} is not a Packer manifest: {exc}") from exc
    result = []
    for entry in builds:
        if entry.get("packer_run_uuid") != last_run:
            continue
        custom = entry.get("custom_data") or {}
        where = f"{path}: build {entry.get('name')!r}"
        local = entry.get("builder_type") == "docker" or custom.get("local") == "true"
        if not custom.get("os") or not custom.get("architecture"):
            raise UsageError(f"{where} has no custom_data os and architecture")
        result.append(
            Build(
                name=entry["name"],
                os=custom["os"],
                arch=custom["architecture"],
                build_time=int(entry.get("build_time", 0)),
                amis={} if local else _amis(entry.get("artifact_id", ""), where),
                local=local,
            )
        )
    if not result:
        raise UsageError(f"{path} has no builds for its last run {last_run}")
    return result
