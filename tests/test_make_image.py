# Copyright: the ecs-imds-golden authors
# Apache License 2.0
"""`make image`'s report and manifest, without building (the build itself runs in CI's
molecule environment)."""

from __future__ import annotations

import json
from types import SimpleNamespace

from local_image import make_image


def test_time_to_fail_reads_only_passed_blocked_probes():
    checks = [
        {"ok": True, "msg": "bridge container -> IMDS over IPv4 is blocked: probe rc=1 ms=3"},
        {"ok": True, "msg": "bridge container -> IMDS over IPv6 is blocked: probe rc=1 ms=0"},
        {"ok": True, "msg": "allowlisted network -> IMDS works: probe rc=0 ms=1"},
        {"ok": False, "msg": "After converge: x is blocked was not blocked fast: probe rc=1 ms=5000"},
    ]
    assert make_image.time_to_fail(checks) == [3, 0]


def test_manifest_has_packers_shape_and_marks_the_build_local(tmp_path):
    args = SimpleNamespace(base="debian12", tag="ecs-imds-golden:local", manifest=tmp_path / "m.json")
    make_image.write_manifest(args, "ecs-imds-debian12:latest", "sha256:abc", 1764300000.5)
    manifest = json.loads(args.manifest.read_text())
    (build,) = manifest["builds"]
    assert set(build) == {"name", "builder_type", "build_time", "files", "artifact_id", "packer_run_uuid",
                          "custom_data"}  # fmt: skip
    assert manifest["last_run_uuid"] == build["packer_run_uuid"]
    assert build["builder_type"] == "docker" and build["artifact_id"] == "sha256:abc"
    assert build["build_time"] == 1764300000
    assert build["custom_data"]["local"] == "true"
    assert build["custom_data"]["os"] == "debian12"
    assert build["custom_data"]["role_version"]
