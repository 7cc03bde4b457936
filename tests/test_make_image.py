# Copyright: the ecs-imds-golden authors
# Apache License 2.0
"""`make image`'s report, manifest and base images without building, the stage runner's set-up
for it from a plain shell, and its entry point building and verifying an image from a plain
shell's PATH, which holds no Ansible."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import ROOT
from local_image import make_image
from support.stub_checkout import StubCheckout

# A plain shell's PATH, as the README's `env -i ... make image` gives it: no .venv/bin.
PLAIN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


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


@pytest.mark.parametrize(
    ("base", "distro", "image"),
    [
        ("debian12", "debian12", "ecs-imds-debian12:latest"),
        ("amazonlinux2023", "al2023", "ecs-imds-al2023:latest"),
        ("amazonlinux2", "al2", "ecs-imds-al2:latest"),
    ],
)
def test_each_base_is_the_host_image_build_base_images_builds(monkeypatch, base, distro, image):
    monkeypatch.delenv("BASE_IMAGE", raising=False)
    monkeypatch.delenv("IMAGE_PREFIX", raising=False)
    ran = []

    def run(argv):
        ran.append(argv)
        return SimpleNamespace(returncode=0)

    monkeypatch.setattr(make_image.subprocess, "run", run)
    assert make_image.base_image(base) == image
    assert ran == [[str(ROOT / "scripts" / "build-base-images"), distro]]


def test_make_image_from_a_plain_shell_sets_up_then_starts_venvs_python(tmp_path):
    """`make image` runs `scripts/make-test image` (tests/test_make_test.py): from a plain shell's
    PATH (no .venv/bin, as on a fresh machine) its preflight, .venv, Docker, then .venv's python
    by path; no images stage, make_image builds the one host image it needs."""
    run = StubCheckout(tmp_path).run("image", path=[Path(folder) for folder in PLAIN_PATH.split(":")])
    assert run.returncode == 0, run.stderr
    assert run.transcript == [
        "==> make-test: preflight",
        "RUN: preflight image",
        "==> make-test: tools",
        "==> make-test: docker",
        "RUN: ensure-docker",
        "==> make-test: image",
        "RUN: ROOT/.venv/bin/python -m local_image.make_image (PYTHONPATH=scripts)",
    ]


@pytest.mark.docker
def test_make_image_runs_ansible_from_its_own_environment_with_no_ansible_on_path(docker_image, tmp_path):
    """The image stage's command, `python -m local_image.make_image`, from a PATH without
    Ansible: it builds and verifies the image, running the ansible-playbook beside its
    interpreter."""
    assert shutil.which("ansible-playbook", path=PLAIN_PATH) is None, f"{PLAIN_PATH} must hold no Ansible"
    env = {
        name: value for name, value in os.environ.items() if name not in ("BASE", "EXTRA_VARS", "VIRTUAL_ENV")
    }
    env |= {"PATH": PLAIN_PATH, "PYTHONPATH": str(ROOT / "scripts"), "BASE_IMAGE": docker_image}
    tag = f"ecs-imds-golden:path-{uuid.uuid4().hex[:8]}"
    log = tmp_path / "make-image.log"
    command = [sys.executable, "-m", "local_image.make_image", "--tag", tag, "--log", str(log),
               "--manifest", str(tmp_path / "manifest.json")]  # fmt: skip
    try:
        result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    finally:
        subprocess.run(["docker", "rmi", "--force", tag], capture_output=True)
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}\n{log.read_text()[-3000:]}"
    assert f"make image: built and verified {tag}" in result.stdout
    assert f"\n### {Path(sys.executable).parent / 'ansible-playbook'} -i " in log.read_text()
    assert json.loads((tmp_path / "manifest.json").read_text())["builds"][0]["custom_data"]["image"] == tag
