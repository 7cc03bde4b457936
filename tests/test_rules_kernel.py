# Copyright: the ecs-imds-golden authors
# Apache License 2.0
"""Rendered rules against the real kernel: iptables-restore --test for every variant, and the
loader (files/ecs-imds-block) in throwaway network namespaces, on both iptables backends
(nf_tables as on AL2023 and Debian 12, legacy as on AL2)."""

from __future__ import annotations

import itertools
import os
import subprocess
import uuid
from pathlib import Path

import pytest
from conftest import MERGE, ROLE
from imds_rules import imds_rules

HELPER = ROLE / "files" / "ecs-imds-block"
BACKENDS = ("nft", "legacy")
ALLOW = {4: ["172.31.250.0/24", "10.0.0.7/32"], 6: ["fd00:1::/64"]}
VARIANTS = list(itertools.product((4, 6), ("reject", "drop"), (False, True), (True, False)))


def ids(variant):
    family, action, allow, enabled = variant
    return f"v{family}-{action}-{'allow' if allow else 'noallow'}-{'on' if enabled else 'off'}"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("variant", VARIANTS, ids=[ids(v) for v in VARIANTS])
def test_every_variant_passes_iptables_restore_test(netadmin, tmp_path, backend, variant):
    family, action, allow, enabled = variant
    rules = tmp_path / "rules"
    rules.write_text(imds_rules(family, action, ALLOW[family] if allow else [], enabled))
    restore = f"{'ip6tables' if family == 6 else 'iptables'}-{backend}-restore"
    result = subprocess.run([restore, "--test", str(rules)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.fixture(params=BACKENDS)
def netns(request, netadmin, tmp_path):
    """A network namespace with Docker's and ecs-init's rules, and PATH set to one backend."""
    name = f"imds-test-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    shims = tmp_path / "bin"
    shims.mkdir()
    for tool, suffix in itertools.product(("iptables", "ip6tables"), ("", "-save", "-restore")):
        (shims / f"{tool}{suffix}").symlink_to(f"/usr/sbin/{tool}-{request.param}{suffix}")
    env = {**os.environ, "PATH": f"{shims}:{os.environ['PATH']}", "ECS_IMDS_BLOCK_MERGE": str(MERGE)}

    def run(*argv, check=True):
        result = subprocess.run(["ip", "netns", "exec", name, *argv], env=env, capture_output=True, text=True)
        if check and result.returncode:
            raise AssertionError(f"{argv} failed: {result.stderr}")
        return result

    for ipt in ("iptables", "ip6tables"):
        # What Docker 20.10 leaves: its chains, ACCEPT rules and a jump below them.
        for rule in (
            "-N DOCKER",
            "-N DOCKER-USER",
            "-A DOCKER-USER -j RETURN",
            "-A FORWARD -o docker0 -j DOCKER",
            "-A FORWARD -i docker0 ! -o docker0 -j ACCEPT",
            "-A FORWARD -j DOCKER-USER",
        ):
            run(ipt, "-w", *rule.split())
    run(
        "iptables",
        "-t",
        "nat",
        "-A",
        "PREROUTING",
        "-d",
        "169.254.170.2/32",
        "-p",
        "tcp",
        "--dport",
        "80",
        "-j",
        "DNAT",
        "--to-destination",
        "127.0.0.1:51679",
    )  # ecs-init's task-credentials DNAT
    yield run
    subprocess.run(["ip", "netns", "del", name], check=True)


def write(tmp_path, family, **kwargs):
    path = tmp_path / f"rules.v{family}"
    path.write_text(imds_rules(family, **kwargs))
    return str(path)


@pytest.mark.parametrize("family", [4, 6])
def test_apply_puts_the_jump_first_without_flushing_docker_or_ecs_init(netns, tmp_path, family):
    ipt = "ip6tables" if family == 6 else "iptables"
    rules = write(tmp_path, family)
    assert netns(str(HELPER), "check", str(family), rules, check=False).returncode == 1
    netns(str(HELPER), "apply", str(family), rules)
    netns(str(HELPER), "apply", str(family), rules)  # twice: still one jump
    assert netns(ipt, "-S", "FORWARD").stdout.splitlines()[1:] == [
        "-A FORWARD -j DOCKER-USER",
        "-A FORWARD -o docker0 -j DOCKER",
        "-A FORWARD -i docker0 ! -o docker0 -j ACCEPT",
    ]
    assert "-N DOCKER" in netns(ipt, "-S").stdout.splitlines()
    if family == 4:
        assert "--to-destination 127.0.0.1:51679" in netns("iptables", "-t", "nat", "-S").stdout
    assert netns(str(HELPER), "check", str(family), rules).returncode == 0


def test_check_fails_when_docker_puts_a_rule_above_the_jump(netns, tmp_path):
    rules = write(tmp_path, 4)
    netns(str(HELPER), "apply", "4", rules)
    netns("iptables", "-I", "FORWARD", "1", "-i", "docker0", "-j", "ACCEPT")
    result = netns(str(HELPER), "check", "4", rules, check=False)
    assert result.returncode == 1
    assert "IPv4 FORWARD does not jump to DOCKER-USER first" in result.stderr
    netns(str(HELPER), "apply", "4", rules)
    assert netns("iptables", "-S", "FORWARD").stdout.splitlines()[1] == "-A FORWARD -j DOCKER-USER"


def test_check_fails_when_the_chain_differs_and_apply_replaces_it(netns, tmp_path):
    reject = write(tmp_path, 4)
    netns(str(HELPER), "apply", "4", reject)
    netns("iptables", "-I", "DOCKER-USER", "1", "-j", "RETURN")
    result = netns(str(HELPER), "check", "4", reject, check=False)
    assert result.returncode == 1 and "DOCKER-USER differs" in result.stderr
    drop = str(tmp_path / "drop")
    (tmp_path / "drop").write_text(imds_rules(4, action="drop"))
    netns(str(HELPER), "apply", "4", drop)
    assert netns("iptables", "-S", "DOCKER-USER").stdout.splitlines() == [
        "-N DOCKER-USER",
        "-A DOCKER-USER -d 169.254.169.254/32 -j DROP",
        "-A DOCKER-USER -j RETURN",
    ]


def test_bad_usage_and_missing_file_fail(netns, tmp_path):
    assert netns(str(HELPER), "apply", "5", "/dev/null", check=False).returncode == 2
    missing = netns(str(HELPER), "apply", "4", str(tmp_path / "nope"), check=False)
    assert missing.returncode == 1 and "cannot read" in missing.stderr


def test_one_check_covers_both_families_and_names_each_one_that_is_off(netns, tmp_path):
    """The role checks both families in one run and applies them in one run."""
    v4, v6 = write(tmp_path, 4), write(tmp_path, 6)
    both = ["4", v4, "6", v6]
    result = netns(str(HELPER), "check", *both, check=False)
    assert (result.returncode, result.stdout) == (1, "4\n6\n")
    netns(str(HELPER), "apply", "6", v6)
    result = netns(str(HELPER), "check", *both, check=False)
    assert (result.returncode, result.stdout) == (1, "4\n")
    netns(str(HELPER), "apply", *both)
    result = netns(str(HELPER), "check", *both)
    assert (result.returncode, result.stdout) == (0, "")
    for ipt in ("iptables", "ip6tables"):
        assert netns(ipt, "-S", "FORWARD").stdout.splitlines()[1] == "-A FORWARD -j DOCKER-USER"


def test_a_bad_second_pair_fails_before_the_first_is_loaded(netns, tmp_path):
    v4 = write(tmp_path, 4)
    missing = netns(str(HELPER), "apply", "4", v4, "6", str(tmp_path / "nope"), check=False)
    assert missing.returncode == 1 and "cannot read" in missing.stderr
    assert netns("iptables", "-S", "FORWARD").stdout.splitlines()[1] != "-A FORWARD -j DOCKER-USER"
    for argv in (["apply", "4"], ["apply", "4", v4, "6"], ["apply", "4", v4, "6", v4, "4", v4]):
        assert netns(str(HELPER), *argv, check=False).returncode == 2, argv
    assert netns(str(HELPER), "flush", "4", v4, check=False).returncode == 2


# --- files shared with the host's own firewall ------------------------------------------------

TEAM = {
    4: (
        "# The security team's firewall: the Docker API stays closed.\n"
        "*filter\n"
        ":INPUT ACCEPT [0:0]\n"
        ":TEAM-INPUT - [0:0]\n"
        "-A INPUT -j TEAM-INPUT\n"
        "-A INPUT -p tcp --dport 2376 -j DROP\n"
        "-A TEAM-INPUT -p tcp --dport 2375 -j DROP\n"
        "COMMIT\n"
        "*nat\n"
        ":PREROUTING ACCEPT [0:0]\n"
        "-A PREROUTING -p tcp --dport 8080 -j REDIRECT --to-ports 80\n"
        "COMMIT\n"
    ),
    6: "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -p tcp --dport 2375 -j DROP\nCOMMIT\n",
}


def shared_file(tmp_path, family, **kwargs):
    """The team's file with our part merged in, by the merge the role and the boothook run."""
    path = tmp_path / f"shared.v{family}"
    path.write_text(TEAM[family])
    subprocess.run(
        ["python3", str(MERGE), "merge", str(family), str(path)],
        input=imds_rules(family, **kwargs),
        text=True,
        check=True,
    )
    return str(path)


def rule_set(netns, family):
    ipt = "ip6tables" if family == 6 else "iptables"
    return [line for line in netns(f"{ipt}-save").stdout.splitlines() if not line.startswith("#")]


@pytest.mark.parametrize("family", [4, 6])
def test_load_keeps_the_hosts_rules_docker_and_ecs_init_and_ten_loads_leave_what_one_does(
    netns, tmp_path, family
):
    ipt = "ip6tables" if family == 6 else "iptables"
    path = shared_file(tmp_path, family)
    text = Path(path).read_text()
    assert text[: text.index("# BEGIN")] + text[text.index("# END ecs_imds_block\n") + 21 :] == TEAM[family]
    netns(f"{ipt}-restore", "--noflush", path)  # as at boot: the host's firewall, loaded once
    netns(str(HELPER), "load", str(family), path)
    once = rule_set(netns, family)
    for _ in range(10):  # ten restarts of the persistence service
        netns(str(HELPER), "load", str(family), path)
    assert rule_set(netns, family) == once
    team_rule = "-A INPUT -p tcp -m tcp --dport 2375 -j DROP" if family == 6 else "-A INPUT -j TEAM-INPUT"
    assert once.count(team_rule) == 1
    forward = [line for line in once if line.startswith("-A FORWARD ")]
    assert forward == [
        "-A FORWARD -j DOCKER-USER",
        "-A FORWARD -o docker0 -j DOCKER",
        "-A FORWARD -i docker0 ! -o docker0 -j ACCEPT",
    ]
    if family == 4:
        assert once.count("-A TEAM-INPUT -p tcp -m tcp --dport 2375 -j DROP") == 1
        assert once.count("-A PREROUTING -p tcp -m tcp --dport 8080 -j REDIRECT --to-ports 80") == 1
        assert "--to-destination 127.0.0.1:51679" in "\n".join(once)  # ecs-init's DNAT
    assert netns(str(HELPER), "check", str(family), path).returncode == 0


def test_load_needs_no_temporary_files(netns, tmp_path):
    """At boot the persistence service runs side by side with systemd-tmpfiles-setup, which
    empties /tmp: load must not keep anything there (a work directory that vanished mid-load
    left the host's own rules unloaded). Here every file system is read-only."""
    paths = {family: shared_file(tmp_path, family) for family in (4, 6)}
    # Every file system read-only, but a fresh /run for iptables' lock; TMPDIR unset.
    readonly = (
        "for d in / /tmp /var/tmp; do mountpoint -q $d || continue; mount -o remount,bind,ro $d || exit;"
        ' done; mount -t tmpfs tmpfs /run && exec env -u TMPDIR "$@"'
    )
    argv = ["unshare", "-m", "--propagation", "private", "sh", "-c", readonly, "sh", str(HELPER), "load"]
    netns(*argv, "4", paths[4], "6", paths[6])
    assert rule_set(netns, 4).count("-A INPUT -j TEAM-INPUT") == 1
    assert rule_set(netns, 6).count("-A INPUT -p tcp -m tcp --dport 2375 -j DROP") == 1
    assert netns(str(HELPER), "check", "4", paths[4], "6", paths[6]).returncode == 0


def test_a_file_the_kernel_refuses_still_loads_the_block_and_load_fails(netns, tmp_path):
    path = shared_file(tmp_path, 4)
    text = Path(path).read_text().replace("--dport 2376 -j DROP", "--dport 2376 -j DROP --no-such-option")
    Path(path).write_text(text)
    result = netns(str(HELPER), "load", "4", path, check=False)
    assert result.returncode == 1
    assert f"ecs-imds-block: the kernel refused {path}; loaded only its ecs_imds_block part" in result.stderr
    assert netns(str(HELPER), "check", "4", path).returncode == 0
    assert "-A INPUT -j TEAM-INPUT" not in rule_set(netns, 4)  # nothing of the refused file


def test_apply_reloads_the_whole_file_when_off_and_skips_a_family_that_is_right(netns, tmp_path):
    """What removed the block (a flush) removed the host's own rules too: apply puts both back,
    each once, and says so in one line; a family that is right it leaves alone, silently."""
    path = shared_file(tmp_path, 4)
    first = netns(str(HELPER), "apply", "4", path)
    assert rule_set(netns, 4).count("-A INPUT -j TEAM-INPUT") == 1
    assert first.stdout == (
        "ecs-imds-block apply: IPv4 FORWARD does not jump to DOCKER-USER first; "
        f"reloaded {path} whole (the host's rules and the block) in one commit\n"
    )
    netns("iptables", "-A", "INPUT", "-j", "ACCEPT")  # right: apply must leave everything alone
    before = rule_set(netns, 4)
    again = netns(str(HELPER), "apply", "4", path)
    assert rule_set(netns, 4) == before
    assert again.stdout == ""
    assert netns(str(HELPER), "check", "4", path).returncode == 0


def test_apply_loads_our_part_alone_when_the_kernel_refuses_the_file(netns, tmp_path):
    path = shared_file(tmp_path, 4)
    text = Path(path).read_text().replace("--dport 2376 -j DROP", "--dport 2376 -j DROP --no-such-option")
    Path(path).write_text(text)
    result = netns(str(HELPER), "heal", "4", path)
    assert result.stdout.endswith(f"; the kernel refused {path}; loaded only its ecs_imds_block part\n")
    assert result.stdout.startswith("ecs-imds-block heal: IPv4 ")
    assert netns(str(HELPER), "check", "4", path).returncode == 0
    assert "-A INPUT -j TEAM-INPUT" not in rule_set(netns, 4)  # nothing of the refused file


def test_a_file_without_our_part_is_refused(netns, tmp_path):
    path = tmp_path / "team-only"
    path.write_text(TEAM[4])
    result = netns(str(HELPER), "apply", "4", str(path), check=False)
    assert result.returncode == 1
    assert f"ecs-imds-block: {path} holds no ecs_imds_block part (BEGIN and END lines)" in result.stderr


DOCKER_27 = "iptables, its rules in FORWARD (Docker 27 and earlier)"


def test_check_reports_the_firewall_backend_of_each_family(netns, tmp_path):
    v4, v6 = write(tmp_path, 4), write(tmp_path, 6)
    netns(str(HELPER), "apply", "4", v4, "6", v6)
    backend = "nf_tables" if "nf_tables" in netns("iptables", "--version").stdout else "legacy"
    result = netns(str(HELPER), "check", "4", v4, "6", v6)
    assert result.stderr.splitlines() == [
        f"ecs-imds-block: IPv4: iptables on {backend}; Docker's firewall backend: {DOCKER_27}",
        f"ecs-imds-block: IPv6: ip6tables on {backend}; Docker's firewall backend: {DOCKER_27}",
    ]


def test_check_reports_docker_28s_layout(netns, tmp_path):
    """Docker 28 keeps its rules in DOCKER-FORWARD, which FORWARD jumps to after DOCKER-USER."""
    v4 = write(tmp_path, 4)
    netns("iptables", "-w", "-N", "DOCKER-FORWARD")
    netns("iptables", "-w", "-A", "FORWARD", "-j", "DOCKER-FORWARD")
    netns(str(HELPER), "apply", "4", v4)
    result = netns(str(HELPER), "check", "4", v4)
    assert result.stderr.splitlines()[-1].endswith(
        "Docker's firewall backend: iptables, its rules in DOCKER-FORWARD (Docker 28 and later)"
    )


def test_loaders_run_at_once_leave_each_rule_once(netns, tmp_path):
    """The heal timer, docker.service's hooks and the persistence service may start together:
    eight repairs of a flushed table at once still leave the host's jump and ours once each."""
    path = shared_file(tmp_path, 4)
    netns("iptables", "-F")
    netns("sh", "-c", f'for i in 1 2 3 4 5 6 7 8; do "$0" heal 4 {path} >/dev/null & done; wait', str(HELPER))
    rules = rule_set(netns, 4)
    assert rules.count("-A INPUT -j TEAM-INPUT") == 1, rules
    assert rules.count("-A FORWARD -j DOCKER-USER") == 1, rules
    assert netns(str(HELPER), "check", "4", path).returncode == 0
