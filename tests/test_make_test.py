# Copyright: the ecs-imds-golden authors
# Apache License 2.0
"""`make test`'s own machinery: the preflight names what is missing at once, the stages are timed
even when one fails, and the Molecule scenario builds its host image when none exists."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest
from conftest import ROOT


def test_preflight_without_root_names_the_missing_packages_and_the_command(request):
    """A user's PATH that holds python3 and bash only: everything else is missing."""
    bin_dir = Path(tempfile.mkdtemp(prefix="preflight-bin-"))  # outside tmp_path, which is root's only
    bin_dir.chmod(0o755)
    request.addfinalizer(lambda: shutil.rmtree(bin_dir))
    for tool in ("bash", "env"):
        (bin_dir / tool).symlink_to(shutil.which(tool))
    # The system's Python: make test's own preflight, run as root first, gave it python3-venv.
    (bin_dir / "python3").symlink_to("/usr/bin/python3")
    setpriv = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    result = subprocess.run(
        [
            shutil.which("setpriv"),
            *setpriv[1:],
            str(bin_dir / "bash"),
            str(ROOT / "scripts" / "preflight"),
            "test",
        ],
        env={"PATH": str(bin_dir), "HOME": "/nonexistent"},
        cwd="/",
        capture_output=True,
        text=True,
        timeout=30,
    )
    # sbin is searched too: debootstrap, iptables and ip are found there.
    assert (result.returncode, result.stdout, result.stderr) == (
        1,
        "",
        "make test: missing docker unshare packer apt-get dpkg-deb; "
        "install them with: sudo apt-get install -y docker.io util-linux packer apt dpkg\n",
    )


def test_preflight_refuses_an_unknown_target():
    result = subprocess.run([str(ROOT / "scripts" / "preflight"), "deploy"], capture_output=True, text=True)
    assert (result.returncode, result.stderr) == (2, "usage: scripts/preflight test|image|bench\n")


def test_stage_times_are_printed_for_each_stage_and_a_failed_one(tmp_path):
    ok = subprocess.run([str(ROOT / "scripts" / "make-test"), "preflight"], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "==> make test: preflight" in ok.stderr
    assert ok.stderr.split("Stage times:\n")[1].splitlines()[0].split()[::2] == ["preflight", "ok"]
    bad = subprocess.run(
        [str(ROOT / "scripts" / "make-test"), "lint", "nosuch"], capture_output=True, text=True
    )
    assert (bad.returncode, bad.stderr.splitlines()[0]) == (
        2,
        "usage: scripts/make-test [preflight tools docker images lint unit molecule image]",
    )


@pytest.mark.molecule
def test_the_scenario_builds_its_host_image_when_none_exists(docker_image, tmp_path):
    prefix = f"ecs-imds-test-{uuid.uuid4().hex[:8]}"
    image = f"{prefix}-debian12:latest"
    env = {k: v for k, v in os.environ.items() if k != "BASE_IMAGE"}
    env.update(IMAGE_PREFIX=prefix, MOLECULE_DISTRO="debian12", PY_COLORS="0", ANSIBLE_NOCOLOR="1")
    env["MOLECULE_EPHEMERAL_DIRECTORY"] = str(tmp_path / "molecule")  # apart from any instance's state
    try:
        result = subprocess.run(
            ["molecule", "dependency", "-s", "default"], cwd=ROOT, env=env, capture_output=True, text=True
        )
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
        assert f"built {image}" in result.stdout + result.stderr
        inspect = subprocess.run(["docker", "image", "inspect", image], capture_output=True)
        assert inspect.returncode == 0, f"{image} was not built"
    finally:
        subprocess.run(["docker", "rmi", "--force", image], capture_output=True)
