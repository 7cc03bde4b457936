# Copyright: the ecs-imds-golden authors
# Apache License 2.0
"""The verify step can fail: converge without the bridge block, and verify must say so where it
probes, from a bridge container.

`molecule verify` takes no variables of its own, so both converge and verify are given
ecs_imds_block_bridge=false through the inventory: a base configuration (`molecule
--base-config`) links a host_vars folder of the test's into the scenario's inventory, beside its
group_vars. verify then renders the host program's configuration as converge did (no attribute
registered, so its ecs.config check passes) and its probes, which always demand the block, fail.
"""

from __future__ import annotations

import os
import subprocess

import pytest
import yaml
from conftest import ROOT

pytestmark = pytest.mark.molecule


def instance() -> str:
    """The scenario's instance name, as molecule/default/molecule.yml names it."""
    return f"{os.environ.get('IMAGE_PREFIX') or 'ecs-imds'}-{os.environ.get('MOLECULE_DISTRO') or 'debian12'}"


@pytest.fixture
def bridge_off(tmp_path) -> str:
    """A Molecule base configuration that sets ecs_imds_block_bridge=false for the instance."""
    host_vars = tmp_path / "host_vars"
    host_vars.mkdir()
    (host_vars / f"{instance()}.yml").write_text(yaml.safe_dump({"ecs_imds_block_bridge": False}))
    base = tmp_path / "base.yml"
    base.write_text(yaml.safe_dump({"provisioner": {"inventory": {"links": {"host_vars": str(host_vars)}}}}))
    return str(base)


def molecule(base: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PY_COLORS": "0", "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0"}
    return subprocess.run(
        ["molecule", "--base-config", base, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


def test_verify_fails_when_bridge_blocking_is_off(docker_image, bridge_off):
    """On the instance `molecule test --destroy=never` left (create and prepare are then no-ops),
    or on a new one; destroyed at the end either way."""
    try:
        for step in ("create", "prepare"):
            done = molecule(bridge_off, step, "-s", "default")
            assert done.returncode == 0, (step, (done.stdout + done.stderr)[-3000:])
        converge = molecule(bridge_off, "converge", "-s", "default")
        assert converge.returncode == 0, converge.stdout[-3000:]
        verify = molecule(bridge_off, "verify", "-s", "default")
        output = verify.stdout + verify.stderr
        assert verify.returncode != 0, output[-3000:]
        assert "ecs.config lacks" not in output, output[-3000:]
        assert (
            "After converge: bridge container -> IMDS over IPv4 is blocked was not blocked fast" in output
        ), output[-3000:]
    finally:
        molecule(bridge_off, "destroy", "-s", "default")
