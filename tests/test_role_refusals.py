# Copyright: the ecs-imds-golden authors
# Apache License 2.0
"""Hostile and malformed input given to the role, on a real host (the offline base image): the
role stops with one line naming the bad value, and nothing on the host has changed."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from conftest import ROOT
from local_image.host import systemd_container

pytestmark = pytest.mark.docker

INJECTION = "fe80::%lo\n-I DOCKER-USER 1 -j ACCEPT\n#/128"
THEIRS = "*filter\n:DOCKER-USER - [0:0]\n-A DOCKER-USER -s 10.0.0.0/8 -j ACCEPT\nCOMMIT\n"
CASES = [
    pytest.param(
        {"ecs_imds_block_allowed_cidrs_v6": [INJECTION]},
        {},
        f"imds_rules: invalid CIDR {INJECTION!r}: a scope id (%) is not allowed",
        id="ipv6-scope-id-injection",
    ),
    pytest.param(
        {"ecs_imds_block_allowed_cidrs": ["0.0.0.0/1", "128.0.0.0/1"]},
        {},
        "imds_rules: the IPv4 allowlist ['0.0.0.0/1', '128.0.0.0/1'] covers every address together",
        id="allowlist-covering-everything",
    ),
    pytest.param(
        {"ecs_imds_block_allowed_cidrs": ["169.254.0.0/16"]},
        {},
        "imds_rules: '169.254.0.0/16' overlaps 169.254.0.0/16, IMDS's own link-local network",
        id="link-local-source",
    ),
    pytest.param(
        {"ecs_imds_block_ecs_settings": {"ECS_CLUSTER": "a\x0cECS_AWSVPC_BLOCK_IMDS=false"}},
        {},
        "ecs_config: the value of ECS_CLUSTER must be one line of printable text without backslashes, "
        "leading or trailing blanks or a leading quote (ecs-init and systemd read those differently): "
        "'a\\x0cECS_AWSVPC_BLOCK_IMDS=false'",
        id="form-feed-in-a-value",
    ),
    pytest.param(
        {"ecs_imds_block_ecs_settings": {"ECS_AWSVPC_BLOCK_IMSD": True}},
        {},
        "ecs_config: unknown ECS agent setting 'ECS_AWSVPC_BLOCK_IMSD'; "
        "did you mean 'ECS_AWSVPC_BLOCK_IMDS'?",
        id="misspelt-setting",
    ),
    pytest.param(
        {},
        {"/etc/iptables/rules.v4": THEIRS},
        "/etc/iptables/rules.v4 line 3: '-A DOCKER-USER -s 10.0.0.0/8 -j ACCEPT' is a rule in DOCKER-USER, "
        "which the ecs_imds_block role owns",
        id="somebody-elses-docker-user-rule",
    ),
    pytest.param(
        {},
        {"/etc/ecs/ecs.config": 'ECS_CLUSTER="prod\nECS_LOGLEVEL=info\n'},
        "ecs.config line 1: a quote or a backslash makes systemd's EnvironmentFile= read on "
        "into the next line",
        id="unterminated-quote-in-ecs-config",
    ),
]


def apply_role(host, ansible_playbook, tmp_path, role_vars) -> subprocess.CompletedProcess:
    play = [{"hosts": "all", "gather_facts": True, "roles": [{"role": "ecs_imds_block", "vars": role_vars}]}]
    (tmp_path / "play.yml").write_text(json.dumps(play))
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
        "ANSIBLE_ROLES_PATH": str(ROOT / "roles"),
        "ANSIBLE_NOCOLOR": "1",
    }
    argv = [
        ansible_playbook,
        "-i",
        f"{host.name},",
        "-c",
        "community.docker.docker",
        str(tmp_path / "play.yml"),
    ]
    return subprocess.run(argv, capture_output=True, text=True, env=env)


@pytest.fixture(scope="module")
def host(docker_image):
    with systemd_container(docker_image, prefix="ecs-imds-refusals") as host:
        yield host


@pytest.mark.parametrize(("role_vars", "existing", "message"), CASES)
def test_bad_input_stops_the_role_in_one_line_before_anything_changes(
    host, ansible_playbook, tmp_path, role_vars, existing, message
):
    for path, content in existing.items():
        host.run("sh", "-c", f"mkdir -p {os.path.dirname(path)} && cat > {path}", stdin=content)
    host.run("sh", "-c", "rm -f /root/before && touch /root/before && sleep 1")
    result = apply_role(host, ansible_playbook, tmp_path, role_vars)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output[-3000:]
    assert message in output, output[-3000:]
    changed = host.run(
        "find", "/etc", "/usr/local", "/var/lib/dpkg/status", "-newer", "/root/before", "-not", "-type", "d"
    ).stdout.split()
    assert changed == [], f"the refused run changed {changed}"
    for path, content in existing.items():
        assert host.run("cat", path).stdout == content
        host.run("rm", "-f", path)


def test_a_minimal_host_without_python3_apt_is_converged(docker_image, ansible_playbook, tmp_path):
    """The role finds the missing packages with dpkg-query, and the apt module brings the
    python3-apt it needs to install them: no "Could not detect a supported package manager"."""
    with systemd_container(docker_image, prefix="ecs-imds-minimal") as minimal:
        minimal.run("dpkg", "--purge", "python3-apt")
        result = apply_role(minimal, ansible_playbook, tmp_path, {})
        assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
        installed = minimal.run(
            "dpkg-query", "-W", "-f=${Package} ${db:Status-Status}\n", "iptables-persistent"
        )
        assert installed.stdout == "iptables-persistent installed\n"
