# Copyright: the ecs-imds-golden authors
# Apache License 2.0
"""The verify step can fail: converge without the bridge rule, and verify must say so."""

from __future__ import annotations

import os
import subprocess

import pytest
from conftest import ROOT

pytestmark = pytest.mark.molecule


def molecule(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PY_COLORS": "0", "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0"}
    return subprocess.run(["molecule", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)


def test_verify_fails_when_bridge_blocking_is_off(docker_image):
    """On the instance `molecule test --destroy=never` left (create and prepare are then no-ops),
    or on a new one; destroyed at the end either way."""
    try:
        for step in ("create", "prepare"):
            assert molecule(step, "-s", "default").returncode == 0, step
        converge = molecule("converge", "-s", "default", "--", "-e", "ecs_imds_block_bridge=false")
        assert converge.returncode == 0, converge.stdout[-3000:]
        verify = molecule("verify", "-s", "default")
        output = verify.stdout + verify.stderr
        assert verify.returncode != 0, output[-3000:]
        assert "After converge: bridge container -> IMDS over IPv4 is blocked" in output, output[-3000:]
        assert "was not blocked fast" in output
    finally:
        molecule("destroy", "-s", "default")
