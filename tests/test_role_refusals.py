# Copyright: the ecs-imds-golden authors
# Apache License 2.0
"""Hostile and malformed input given to the role, on a real host (the offline base image): the
role stops with one line naming the bad value, and nothing on the host has changed, in its files
or in its kernel.

The role's variables are refused by its filters while validate.yml renders the host program's
configuration (ecs_imds_block_config, ecs_config_settings), before any task reaches the host. What
only the host holds (its ecs.config, its rules files) and the values of the ECS settings are
refused by the program itself, inside the one module run, before it writes anything.
"""

from __future__ import annotations

import json
import os
import re
import subprocess

import pytest
from conftest import ROOT
from local_image.host import systemd_container

pytestmark = [pytest.mark.docker, pytest.mark.xdist_group("role-refusals")]

INJECTION = "fe80::%lo\n-I DOCKER-USER 1 -j ACCEPT\n#/128"
VALUE = (
    "the value of ECS_CLUSTER must be one line of printable text without backslashes, leading or "
    "trailing blanks or a leading quote (ecs-init and systemd read those differently): "
)


def named(value: str) -> re.Pattern:
    """The program's refusal of an ECS setting's value, naming it as Python's repr() spells it
    (once more in a repr, when the program reports it inside another message)."""
    return re.compile(re.escape(VALUE) + "'" + re.escape(value).replace(r"\\", r"\\+") + "'")


UNSAFE = (
    "ecs.config line 1: ecs-init and systemd's EnvironmentFile= would read it differently (a quote, "
    "a backslash, a carriage return, or bytes that are not UTF-8); fix that line"
)
CASES = [
    # Refused by the role's filters, in validate.yml.
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
        {"ecs_imds_block_ecs_settings": {"ECS_AWSVPC_BLOCK_IMSD": True}},
        {},
        "ecs_config: unknown ECS agent setting 'ECS_AWSVPC_BLOCK_IMSD';"
        " did you mean 'ECS_AWSVPC_BLOCK_IMDS'?",
        id="misspelt-setting",
    ),
    pytest.param(
        {"ecs_imds_block_ecs_settings": {"ECS_AWSVPC_BLOCK_IMDS": False}},
        {},
        "ecs_imds_block_ecs_settings sets ECS_AWSVPC_BLOCK_IMDS; use ecs_imds_block_awsvpc instead",
        id="the-roles-own-setting",
    ),
    pytest.param(
        {"ecs_imds_block_heal_interval": 0},
        {},
        "ecs_imds_block_heal_interval must be 1-60 seconds, not 0",
        id="heal-interval-out-of-range",
    ),
    # Refused by the program, in the module run.
    pytest.param(
        {"ecs_imds_block_ecs_settings": {"ECS_CLUSTER": "a\x0cECS_AWSVPC_BLOCK_IMDS=false"}},
        {},
        named("a\\x0cECS_AWSVPC_BLOCK_IMDS=false"),
        id="form-feed-in-a-value",
    ),
    pytest.param(
        {"ecs_imds_block_ecs_settings": {"ECS_CLUSTER": "prod\nECS_AWSVPC_BLOCK_IMDS=false"}},
        {},
        named("prod\\nECS_AWSVPC_BLOCK_IMDS=false"),
        id="newline-in-a-value",
    ),
    pytest.param(
        {},
        {"/etc/ecs/ecs.config": 'ECS_CLUSTER="prod\nECS_LOGLEVEL=info\n'},
        UNSAFE,
        id="unterminated-quote-in-ecs-config",
    ),
    pytest.param(
        {},
        {"/etc/iptables/rules.v4": "*filter\n# BEGIN ecs_imds_block\n-A INPUT -j ACCEPT\nCOMMIT\n"},
        "/etc/iptables/rules.v4 has a BEGIN ecs_imds_block line but no END line",
        id="rules-file-without-an-end-marker",
    ),
    pytest.param(
        {},
        {"/etc/iptables/rules.v4": "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -j NO-SUCH-CHAIN\nCOMMIT\n"},
        "iptables-restore refused the merged /etc/iptables/rules.v4, and no file was changed: ",
        id="rules-file-the-kernel-refuses",
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


def kernel(host) -> list[str]:
    """The host's filter tables, both families, as the kernel prints them."""
    return host.run("sh", "-c", "iptables -w -S && ip6tables -w -S").stdout.splitlines()


@pytest.mark.parametrize(("role_vars", "existing", "message"), CASES)
def test_bad_input_stops_the_role_in_one_line_before_anything_changes(
    host, ansible_playbook, tmp_path, role_vars, existing, message
):
    for path, content in existing.items():
        host.run("sh", "-c", f"mkdir -p {os.path.dirname(path)} && cat > {path}", stdin=content)
    host.run("sh", "-c", "rm -f /root/before && touch /root/before && sleep 1")
    live = kernel(host)
    try:
        result = apply_role(host, ansible_playbook, tmp_path, role_vars)
        output = result.stdout + result.stderr
        assert result.returncode == 2, output[-3000:]
        # A line of Ansible's output holds the whole message (Ansible repeats it where it was caused).
        found = message.search if isinstance(message, re.Pattern) else message.__contains__
        assert any(found(line) for line in output.splitlines()), output[-3000:]
        changed = host.run(
            "find",
            "/etc",
            "/usr/local",
            "/var/lib/dpkg/status",
            "-newer",
            "/root/before",
            "-not",
            "-type",
            "d",
        ).stdout.split()
        assert changed == [], f"the refused run changed {changed}"
        assert kernel(host) == live, "the refused run changed the kernel's rules"
        for path, content in existing.items():
            assert host.run("cat", path).stdout == content
    finally:
        for path in existing:
            host.run("rm", "-f", path)


def test_the_same_checks_see_what_a_run_that_is_not_refused_changes(host, ansible_playbook, tmp_path):
    """The control: the role with good input, on the same host and with the same check, writes
    a rules file that the refused runs did not (each case removes what it put there)."""
    host.run("sh", "-c", "rm -f /root/before && touch /root/before && sleep 1")
    result = apply_role(host, ansible_playbook, tmp_path, {})
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    changed = host.run(
        "find", "/etc", "/usr/local", "-newer", "/root/before", "-not", "-type", "d"
    ).stdout.split()
    assert "/etc/iptables/rules.v4" in changed, changed


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
