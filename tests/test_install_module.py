# Copyright: the ecs-imds-golden authors
# Apache License 2.0
"""The role's module ecs_imds_block_install on a real host (a Debian 12 container with systemd),
run by ansible-playbook over `docker exec` through the role's own tasks (validate.yml, then
install.yml): check mode changes nothing and names what it would change, diff mode shows each
file before and after, a second run changes nothing, and a file the program refuses (an ecs.config
ecs-init and systemd would read differently, a rules file the kernel refuses) fails the task with
no file changed. The host's own firewall is in its rules file before the first run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from ecs_imds_block.filter_plugins.ecs_imds_block import ecs_imds_block_config, ecs_imds_block_program
from local_image.host import LocalHost, systemd_container
from support.program import DEFAULTS, PROGRAM, ROLE, load, names

pytestmark = [pytest.mark.docker, pytest.mark.xdist_group("install-module")]

ROOT = ROLE.parents[1]
P = load()
TEAM_V4 = (
    "# The team's firewall\n*filter\n:INPUT ACCEPT [0:0]\n:TEAM-INPUT - [0:0]\n-A INPUT -j TEAM-INPUT\n"
    "-A TEAM-INPUT -p tcp --dport 2375 -j DROP\nCOMMIT\n"
)
ECS_CONFIG = "ECS_CLUSTER=prod\n"
UNITS = sorted(
    f"/etc/systemd/system/{name}"
    for name in (
        "docker.service.d/50-ecs-imds-block.conf",
        "ecs.service.d/50-ecs-imds-block.conf",
        "netfilter-persistent.service.d/50-ecs-imds-block.conf",
        "ecs-imds-block-heal.service",
        "ecs-imds-block-heal.timer",
        "ecs-imds-block-watch.service",
    )
)
FILES = [
    "/usr/local/sbin/ecs-imds-block",
    "/etc/ecs-imds-block/config.json",
    "/etc/iptables/rules.v4",
    "/etc/iptables/rules.v6",
    "/etc/ecs/ecs.config",
    *UNITS,
]


def debian12_config(**settings) -> dict:
    """The configuration the role renders on Debian 12, as the program reads it."""
    os_data = yaml.safe_load((ROLE / "vars" / "Debian-12.yml").read_text())["ecs_imds_block__os"]
    text = ecs_imds_block_config(os_data, names(), {**DEFAULTS, **settings})
    return {**json.loads(text), "raw": text}


@pytest.fixture(scope="module")
def host(docker_image):
    """A booted Debian 12 host with the team's own IPv4 firewall and ecs.config, not yet set up."""
    with systemd_container(docker_image, prefix="ecs-imds-install") as host:
        host.run("sh", "-c", "mkdir -p /etc/iptables /etc/ecs && cat > /etc/iptables/rules.v4", stdin=TEAM_V4)
        host.run("chmod", "0640", "/etc/iptables/rules.v4")
        host.run("sh", "-c", "cat > /etc/ecs/ecs.config", stdin=ECS_CONFIG)
        host.run("iptables-restore", "/etc/iptables/rules.v4")  # as the host booted
        yield host


def play(host: LocalHost, tmp_path: Path, *options: str, **variables) -> dict:
    """The role's validate.yml and install.yml on ``host``; the install task's registered result."""
    tmp_path.mkdir(exist_ok=True)
    result = tmp_path / "result.json"
    tasks = [
        {"ansible.builtin.import_role": {"name": "ecs_imds_block", "tasks_from": "validate.yml"}},
        {
            "ansible.builtin.import_role": {"name": "ecs_imds_block", "tasks_from": "install.yml"},
            "ignore_errors": True,
        },
        {
            "ansible.builtin.copy": {
                "content": "{{ ecs_imds_block__installed | to_json }}",
                "dest": str(result),
            },
            "delegate_to": "localhost",
            "check_mode": False,
            "diff": False,
        },
    ]
    plays = [{"hosts": "all", "gather_facts": True, "gather_subset": ["!all", "min"], "tasks": tasks}]
    (tmp_path / "play.yml").write_text(json.dumps(plays))
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
        "ANSIBLE_ROLES_PATH": str(ROOT / "roles"),
        "ANSIBLE_LOCAL_TEMP": str(tmp_path / "tmp"),
        "ANSIBLE_NOCOLOR": "1",
    }
    argv = [str(Path(sys.executable).with_name("ansible-playbook")), "-i", f"{host.name},"]
    argv += [
        "-c",
        "community.docker.docker",
        "-e",
        json.dumps(variables),
        *options,
        str(tmp_path / "play.yml"),
    ]
    completed = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=ROOT)
    assert result.exists(), f"the play did not finish:\n{completed.stdout}\n{completed.stderr}"
    return json.loads(result.read_text())


def snapshot(host: LocalHost) -> str:
    """Every file the module may write (content and mode, or its absence), the live rules of both
    families and our nftables table, and the state of the heal timer and the watcher."""
    script = (
        'for f in "$@"; do if [ -e "$f" ]; then stat -c "%a %n" "$f"; sha256sum "$f";'
        ' else echo "no $f"; fi; done;'
        " iptables-save | grep -v '^#'; ip6tables-save | grep -v '^#';"
        " nft list table inet ecs-imds-block 2>&1;"
        " systemctl is-enabled ecs-imds-block-heal.timer ecs-imds-block-watch.service;"
        " systemctl is-active ecs-imds-block-heal.timer ecs-imds-block-watch.service; true"
    )
    return host.run("sh", "-c", script, "sh", *FILES).stdout


def test_check_mode_changes_nothing_and_names_every_path_it_would_change(host, tmp_path):
    before = snapshot(host)
    result = play(host, tmp_path, "--check")
    assert not result.get("failed"), result
    assert result["changed"] is True
    assert result["changed_paths"] == FILES
    assert result["done"] == [
        "enable ecs-imds-block-heal.timer",
        "enable ecs-imds-block-watch.service",
        "the nftables table inet ecs-imds-block is missing; would load it",
        "IPv4 ECS-IMDS-BLOCK is missing; would load it",
        "IPv6 ECS-IMDS-BLOCK is missing; would load it",
        "start ecs-imds-block-heal.timer",
        "start ecs-imds-block-watch.service",
    ]
    assert snapshot(host) == before


def test_diff_mode_shows_each_file_before_and_after(host, tmp_path):
    result = play(host, tmp_path, "--check", "--diff")
    cfg = debian12_config()
    by_path = {diff["after_header"]: diff for diff in result["diff"]}
    assert list(by_path) == FILES
    assert all(diff["before_header"] == diff["after_header"] for diff in result["diff"])
    rules = by_path["/etc/iptables/rules.v4"]
    assert (rules["before"], rules["after"]) == (TEAM_V4, P.merge(cfg, cfg["families"][0], TEAM_V4))
    assert (by_path["/etc/iptables/rules.v6"]["before"], by_path["/etc/iptables/rules.v6"]["after"]) == (
        "",
        P.merge(cfg, cfg["families"][1], ""),
    )
    config = by_path["/etc/ecs-imds-block/config.json"]
    assert (config["before"], config["after"]) == ("", cfg["raw"])
    program = by_path["/usr/local/sbin/ecs-imds-block"]
    assert (program["before"], program["after"]) == ("", ecs_imds_block_program(PROGRAM.read_text()))
    ecs = by_path["/etc/ecs/ecs.config"]
    assert (ecs["before"], ecs["after"]) == (
        ECS_CONFIG,
        ECS_CONFIG + 'ECS_AWSVPC_BLOCK_IMDS=true\nECS_INSTANCE_ATTRIBUTES={"ecs-imds-block":"enforced"}\n',
    )
    assert all(by_path[unit]["before"] == "" and by_path[unit]["after"] for unit in UNITS)


def test_a_run_installs_and_loads_and_a_second_run_reports_no_change(host, tmp_path):
    first = play(host, tmp_path / "first")
    assert not first.get("failed"), first
    assert first["changed"] is True and first["changed_paths"] == FILES
    assert host.run("/usr/local/sbin/ecs-imds-block", "check", check=False).returncode == 0
    # The program 0755, its configuration and units 0644; the host's files keep their own mode
    # (rules.v4 0640, ecs.config 0644), and a new rules file is 0600.
    modes = {**dict.fromkeys(FILES, "644"), FILES[0]: "755", FILES[2]: "640", FILES[3]: "600"}
    assert host.run("stat", "-c", "%n %a", *FILES).stdout.splitlines() == [
        f"{f} {m}" for f, m in modes.items()
    ]
    live = host.run("iptables", "-S").stdout.splitlines()
    assert [
        live.count("-A INPUT -j TEAM-INPUT"),
        live.count("-A TEAM-INPUT -p tcp -m tcp --dport 2375 -j DROP"),
    ] == [1, 1]
    # The program starts the timer and the watcher without waiting for the jobs (it may run
    # inside the boot).
    healers = ("ecs-imds-block-heal.timer", "ecs-imds-block-watch.service")
    for _ in range(50):
        state = host.run("systemctl", "is-active", *healers, check=False).stdout
        if state == "active\nactive\n":
            break
        time.sleep(0.2)
    assert state == "active\nactive\n"
    again = play(host, tmp_path / "again")
    assert (again["changed"], again["changed_paths"], again["done"]) == (False, [], [])


def test_an_ecs_config_the_program_refuses_fails_the_task_and_changes_no_file(host, tmp_path):
    bad = 'ECS_CLUSTER=prod\nECS_LOGLEVEL="info\n'  # systemd would read on into the next line
    host.run("sh", "-c", "cat > /etc/ecs/ecs.config", stdin=bad)
    before = snapshot(host)
    result = play(host, tmp_path, ecs_imds_block_action="drop")  # every rules file would change
    assert result["failed"] is True
    assert result["msg"] == (
        "ecs-imds-block: ecs.config line 2: ecs-init and systemd's EnvironmentFile= would read it "
        "differently (a quote, a backslash, a carriage return, or bytes that are not UTF-8); fix that line"
    )
    assert snapshot(host) == before
    host.run("sh", "-c", "cat > /etc/ecs/ecs.config", stdin=ECS_CONFIG)


def test_a_rules_file_the_kernel_refuses_fails_the_task_and_changes_no_file(host, tmp_path):
    bad = TEAM_V4.replace("--dport 2375 -j DROP", "--dport 2375 -j DROP --no-such-option")
    host.run("sh", "-c", "cat > /etc/iptables/rules.v4", stdin=bad)
    before = snapshot(host)
    result = play(host, tmp_path, ecs_imds_block_action="drop")
    assert result["failed"] is True
    assert result["msg"].startswith(
        "ecs-imds-block: iptables-restore refused the merged /etc/iptables/rules.v4, "
        "and no file was changed: "
    )
    assert "\n" not in result["msg"]
    assert snapshot(host) == before
