# Copyright: the ecs-imds-golden authors
# Apache License 2.0
"""Build hygiene, on a scratch root: the clean step removes build-time state, and the
validate step fails the build on any leftover."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import ROOT

PLAYBOOK = ROOT / "playbooks" / "build-hygiene.yml"


@pytest.fixture
def hygiene(ansible_playbook):
    """Runs the hygiene playbook on a scratch root."""

    def run(root, *args: str) -> subprocess.CompletedProcess:
        env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"}
        command = [ansible_playbook, "-i", "localhost,", "-c", "local", str(PLAYBOOK)]
        command += ["-e", f"hygiene_root={root}", "-e", "ansible_become=false"]
        command += ["-e", f"ansible_python_interpreter={sys.executable}", *args]
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)

    return run


def write(root, path: str, content: str = "x") -> None:
    target = root / path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(content)


@pytest.fixture
def clean_root(tmp_path):
    write(tmp_path, "etc/machine-id", "")
    write(tmp_path, "etc/ecs/ecs.config", "ECS_AWSVPC_BLOCK_IMDS=true\n")
    write(tmp_path, "var/lib/ecs/data/.keep", "")
    (tmp_path / "var/lib/ecs/data/.keep").unlink()
    return tmp_path


def test_validate_passes_on_a_clean_root(hygiene, clean_root):
    result = hygiene(clean_root, "--tags", "hygiene_validate")
    assert result.returncode == 0, result.stdout[-2000:]


@pytest.mark.parametrize(
    ("path", "content", "named"),
    [
        ("var/lib/ecs/data/agent.db", "sqlite", "/var/lib/ecs/data/agent.db"),
        ("etc/ssh/ssh_host_ed25519_key", "key", "/etc/ssh/ssh_host_ed25519_key"),
        ("home/ec2-user/.ssh/authorized_keys", "ssh-ed25519 AAAA", "/home/ec2-user/.ssh/authorized_keys"),
        ("var/lib/cloud/instances/i-0abc/boot-finished", "", "/var/lib/cloud/instances/i-0abc"),
        ("root/.bash_history", "ls", "/root/.bash_history"),
        ("etc/machine-id", "0123456789abcdef0123456789abcdef", "machine-id is not empty"),
        (
            "etc/ecs/ecs.config",
            "ECS_AWSVPC_BLOCK_IMDS=true\nECS_CLUSTER=build\n",
            "ECS_CLUSTER in /etc/ecs/ecs.config",
        ),
    ],
)
def test_validate_fails_on_a_leftover_and_names_it(hygiene, clean_root, path, content, named):
    write(clean_root, path, content)
    result = hygiene(clean_root, "--tags", "hygiene_validate")
    assert result.returncode != 0
    assert "Build-time state left in the image" in result.stdout
    assert named in result.stdout


def test_clean_removes_everything_then_validates(hygiene, clean_root):
    for path in ("var/lib/ecs/data/agent.db", "etc/ssh/ssh_host_rsa_key.pub", "root/.ssh/authorized_keys"):
        write(clean_root, path)
    write(clean_root, "etc/machine-id", "0123456789abcdef0123456789abcdef\n")
    write(clean_root, "etc/ecs/ecs.config", "# ours\nECS_AWSVPC_BLOCK_IMDS=true\nECS_CLUSTER=build\n")
    result = hygiene(clean_root)
    assert result.returncode == 0, result.stdout[-2000:]
    assert not (clean_root / "var/lib/ecs/data/agent.db").exists()
    assert not (clean_root / "etc/ssh/ssh_host_rsa_key.pub").exists()
    assert (clean_root / "etc/machine-id").read_text() == ""
    assert (clean_root / "etc/ecs/ecs.config").read_text() == "# ours\nECS_AWSVPC_BLOCK_IMDS=true\n"
