# Copyright: the ecs-imds-golden authors
# Apache License 2.0
"""playbooks/verify.yml's two targets: `fixture` (Molecule and `make image`, against the fake EC2
network of molecule/fixture/) and `ec2` (a Packer build instance after its reboot, against the
real IMDS).

The ec2 target never runs here: it would read the metadata endpoint of whatever machine runs the
tests. These tests follow, in the YAML, the files each target includes, and have ansible-playbook
check both targets' syntax and list their plays. The Docker Hub refusal runs for real: it is an
assert on the controller, with nothing to connect to.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import ROOT

PLAYBOOKS = ROOT / "playbooks"
VERIFY = PLAYBOOKS / "verify.yml"
CHECKS = PLAYBOOKS / "verify" / "checks"
SUITES = PLAYBOOKS / "verify" / "suites"
INCLUDES = ("ansible.builtin.include_tasks", "ansible.builtin.import_tasks")
DNAT = "-A PREROUTING -d 169.254.170.2/32 -p tcp -m tcp --dport 80 -j DNAT --to-destination 127.0.0.1:51679"


def load(path: Path):
    return yaml.safe_load(path.read_text())


def tasks_of(tasks) -> list[dict]:
    """Every task of a list, those inside block, rescue and always included."""
    found = []
    for task in tasks or []:
        found.append(task)
        for key in ("block", "rescue", "always"):
            found += tasks_of(task.get(key))
    return found


def verify_play() -> dict:
    (play,) = [play for play in load(VERIFY) if "verify_rounds" in play.get("vars", {})]
    return play


def rounds(target: str) -> list[Path]:
    """The files verify.yml's loop includes for a target: verify/<dir>/*.yml in name order."""
    (loop,) = [
        t["loop"] for t in tasks_of(verify_play()["tasks"]) if t.get("loop_control", {}).get("loop_var")
    ]
    assert "verify_rounds[verify_target]" in loop and "| sort" in loop, loop
    directory = PLAYBOOKS / "verify" / verify_play()["vars"]["verify_rounds"][target]
    return sorted(directory.glob("*.yml"))


def include_target(task: dict, base: Path) -> Path | None:
    for key in INCLUDES:
        if key in task:
            value = task[key]
            name = value["file"] if isinstance(value, dict) else value
            name = name.replace("{{ playbook_dir }}", str(PLAYBOOKS))
            assert "{{" not in name, f"cannot follow {name!r}"
            return (base / name).resolve()
    return None


def reached(target: str) -> set[Path]:
    """Every task file the target includes, from verify.yml's own tasks down."""
    todo = list(rounds(target))
    for task in tasks_of(verify_play()["tasks"]):
        condition = task.get("when")
        if condition in (None, f"verify_target == '{target}'") and "{{ verify_file }}" not in str(task):
            path = include_target(task, PLAYBOOKS)
            todo += [path] if path else []
    seen: set[Path] = set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        assert path.is_file(), f"{path} is included but missing"
        seen.add(path)
        for task in tasks_of(load(path)):
            found = include_target(task, path.parent)
            if found:
                todo.append(found)
    return seen


def names(paths, under: Path) -> set[str]:
    return {str(p.relative_to(under)) for p in paths if p.is_relative_to(under)}


# --- which files each target runs -----------------------------------------------------------------


def test_the_fixture_target_is_the_default_and_runs_its_rounds_unchanged():
    assert verify_play()["vars"]["verify_target"] == "fixture"
    assert [p.name for p in rounds("fixture")] == [
        "00-setup.yml",
        "10-ecs-config.yml",
        "20-after-converge.yml",
        "30-restart-persistence.yml",
        "35-restart-persistence-ten-times.yml",
        "40-restart-docker.yml",
        "50-docker-started-alone.yml",
        "55-reboot.yml",
        "60-rerun-role.yml",
        "70-user-data-rewrites-ecs-config.yml",
    ]
    files = reached("fixture")
    assert names(files, CHECKS) == {
        "fixture-boot.yml",
        "containers.yml",
        "fixture-host-imds.yml",
        "rules.yml",
        "fixture-host-firewall.yml",
        "ecs-config.yml",
    }
    assert names(files, SUITES) == {"fixture.yml"}
    assert names(files, PLAYBOOKS / "verify" / "probe") == set(), "prepare loads the fixture's probe image"


def test_the_ec2_target_runs_the_shared_checks_and_its_own_not_the_fixtures():
    assert [p.name for p in rounds("ec2")] == [
        "00-setup.yml",
        "10-after-reboot.yml",
        "20-restart-persistence.yml",
    ]
    files = reached("ec2")
    assert names(files, SUITES) == {"ec2.yml"}
    assert names(files, CHECKS) == {
        "host-imds-v2.yml",
        "containers.yml",
        "rules.yml",
        "task-credentials.yml",
        "ecs-config.yml",
    }
    assert names(files, PLAYBOOKS / "verify" / "probe") == {"image.yml", "remove.yml"}
    assert names(files, PLAYBOOKS / "verify" / "rounds-fixture") == set()
    for path in files:
        assert "fixture_" not in path.read_text(), f"{path} needs the fixture's variables"


def test_the_shared_checks_take_everything_target_specific_from_verify_variables():
    for name in ("containers.yml", "rules.yml", "ecs-config.yml"):
        assert "fixture_" not in (CHECKS / name).read_text(), name
    setups = {target: load(rounds(target)[0]) for target in ("fixture", "ec2")}
    for target, setup in setups.items():
        facts = {k for t in tasks_of(setup) for k in t.get("ansible.builtin.set_fact", {})}
        assert "verify_probes" in facts, target
    fixture_facts = tasks_of(setups["fixture"])[0]["ansible.builtin.set_fact"]
    assert fixture_facts["verify_probe_run_image"] == "{{ fixture_probe_image }}"
    assert fixture_facts["verify_instance_id"] == "{{ fixture_instance_id }}"


# --- what the ec2 checks do ------------------------------------------------------------------------


def test_ec2_probes_bridge_containers_over_ipv4_and_over_ipv6_only_where_there_is_a_path():
    setup = tasks_of(load(rounds("ec2")[0]))
    (define,) = [t for t in setup if "verify_probes" in t.get("ansible.builtin.set_fact", {})]
    probes = define["vars"]["probes"]
    assert [(p["network"], p["address"], p["reachable"]) for p in probes] == [
        ("bridge", "169.254.169.254", False),
        ("bridge", "fd00:ec2::254", False),
    ], "no allowlisted network exists on a build instance, and nothing reachable is probed"
    assert define["ansible.builtin.set_fact"]["verify_probes"] == "{{ probes if ipv6 else probes[:1] }}"
    ipv6 = define["vars"]["ipv6"]
    assert "verify_ipv6_route.rc == 0" in ipv6 and "EnableIPv6" in ipv6
    (route,) = [t for t in setup if t.get("register") == "verify_ipv6_route"]
    assert route["ansible.builtin.command"] == "ip -6 route get fd00:ec2::254"


def test_ec2_host_reads_imds_with_an_imdsv2_token():
    token, read, check, keep = tasks_of(load(CHECKS / "host-imds-v2.yml"))
    assert token["ansible.builtin.uri"]["method"] == "PUT"
    assert token["ansible.builtin.uri"]["url"] == "http://169.254.169.254/latest/api/token"
    assert "X-aws-ec2-metadata-token-ttl-seconds" in token["ansible.builtin.uri"]["headers"]
    assert read["ansible.builtin.uri"].get("method", "GET") == "GET"
    assert read["ansible.builtin.uri"]["headers"] == {
        "X-aws-ec2-metadata-token": "{{ verify_imds_token.content | default('') }}"
    }
    for task in (token, read):
        assert task["ansible.builtin.uri"]["use_proxy"] is False
        assert task["no_log"] is True, "the token reads the instance's credentials"
    assert "ansible.builtin.assert" in check
    assert keep["ansible.builtin.set_fact"] == {"verify_instance_id": "{{ verify_imds_read.content }}"}


def test_ec2_checks_the_task_credentials_dnat_that_ecs_init_installs():
    (block,) = load(CHECKS / "task-credentials.yml")
    assert block["vars"]["verify_task_credentials_dnat"] == DNAT
    read, check = block["block"]
    assert "iptables -w -t nat -S PREROUTING" in read["ansible.builtin.shell"]
    assert (
        check["ansible.builtin.assert"]["that"] == "verify_task_credentials_dnat in verify_nat.stdout_lines"
    )


def test_ec2_starts_ecs_service_so_that_ecs_init_installs_its_rule():
    setup = tasks_of(load(rounds("ec2")[0]))
    (start,) = [t for t in setup if "ansible.builtin.systemd_service" in t]
    assert start["ansible.builtin.systemd_service"]["state"] == "started"
    assert start["loop"] == ["docker.service", "ecs.service"]


def test_ec2_fails_when_the_reboot_did_not_happen():
    setup = tasks_of(load(rounds("ec2")[0]))
    (stat,) = [t for t in setup if "ansible.builtin.stat" in t]
    assert stat["ansible.builtin.stat"]["path"] == "{{ verify_reboot_marker }}"
    (check,) = [t for t in setup if t.get("name") == "The build instance rebooted after the role"]
    assert check["ansible.builtin.assert"]["that"] == "not verify_marker.stat.exists"


def test_ec2_removes_the_probe_image_whatever_happened():
    (run,) = [t for t in verify_play()["tasks"] if "always" in t]
    (remove,) = run["always"]
    assert remove["ansible.builtin.include_tasks"] == "verify/probe/remove.yml"
    assert remove["when"] == "verify_target == 'ec2'"
    removal = tasks_of(load(PLAYBOOKS / "verify" / "probe" / "remove.yml"))
    assert any(
        t.get("ansible.builtin.command", {}).get("argv", [])[:3] == ["docker", "image", "rm"] for t in removal
    )


def test_ec2_runs_as_root_through_sudo_and_waits_for_the_rebooted_instance():
    wait_play, play = load(VERIFY)
    assert play["become"] == "{{ verify_target == 'ec2' }}"
    (wait,) = wait_play["tasks"]
    assert wait_play["gather_facts"] is False, "facts need a connection, which the wait provides"
    assert "ansible.builtin.wait_for_connection" in wait
    assert wait["when"] == "verify_target | default('fixture') == 'ec2'"


# --- ansible-playbook's own view ------------------------------------------------------------------


def ansible_env() -> dict[str, str]:
    return {
        **os.environ,
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
        "ANSIBLE_ROLES_PATH": str(ROOT / "roles"),
        "ANSIBLE_NOCOLOR": "1",
    }


@pytest.mark.parametrize("target", [None, "fixture", "ec2"])
def test_both_targets_pass_ansible_syntax_check_and_list_their_plays(ansible_playbook, target):
    extra = ["-e", json.dumps({"verify_target": target})] if target else []
    for mode in ("--syntax-check", "--list-tasks"):
        command = [ansible_playbook, "-i", "localhost,", mode, *extra, str(VERIFY)]
        result = subprocess.run(command, env=ansible_env(), capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr
    assert "Wait until the instance answers" in result.stdout
    assert "Run the verify tasks" in result.stdout


def probe_image_guard(tmp_path: Path) -> Path:
    """probe/image.yml's Docker Hub assert, as a play on the controller with nothing else."""
    (block,) = load(PLAYBOOKS / "verify" / "probe" / "image.yml")
    refusal = block["block"][0]
    assert "ansible.builtin.assert" in refusal
    play = [
        {
            "name": "guard",
            "hosts": "localhost",
            "gather_facts": False,
            "vars": block["vars"],
            "tasks": [refusal],
        }
    ]
    path = tmp_path / "guard.yml"
    path.write_text(yaml.safe_dump(play))
    return path


@pytest.mark.parametrize(
    ("image", "allowed"),
    [
        ("", True),
        ("public.ecr.aws/docker/library/busybox:1.36", True),
        ("registry.example.com:5000/tools/busybox@sha256:" + "a" * 64, True),
        ("localhost:5000/busybox", True),
        ("busybox", False),
        ("busybox:1.36", False),
        ("library/busybox", False),
        ("docker.io/library/busybox", False),
        ("index.docker.io/library/busybox", False),
        ("registry-1.docker.io/library/busybox", False),
    ],
)
def test_the_probe_image_never_comes_from_docker_hub(ansible_playbook, tmp_path, image, allowed):
    command = [ansible_playbook, "-i", "localhost,", "-c", "local", str(probe_image_guard(tmp_path))]
    command += ["-e", json.dumps({"verify_probe_image": image})]
    result = subprocess.run(command, env=ansible_env(), capture_output=True, text=True, timeout=120)
    assert (result.returncode == 0) is allowed, result.stdout[-2000:]
    if not allowed:
        assert "is on Docker Hub" in result.stdout
