# Copyright: the ecs-imds-golden authors
# Apache License 2.0
"""Issue 29's acceptance on a real host: the block heals on the kernel's own firewall events.

One host container at a time, of each of IMAGES (Debian 12, 13 and sid: Docker 20.10, 26.1 and
28.5, firewalld 1.3 and 2; every test runs on each): systemd, Docker, the
EC2 network fixture of molecule/fixture/prepare.yml (its IMDS answers on both families in the
`imds` netns, ecs-init's rules, the host's own firewall with a rule of the team's in DOCKER-USER
in both rules files), Debian's firewalld installed but not running, and the role applied by
playbooks/golden-ami.yml with its defaults: ecs-imds-block-watch.service heals on the kernel's
nftables events, the heal timer is its backstop every 60 s, and the block is in iptables
(ECS-IMDS-BLOCK) and in an nftables table of its own (inet ecs-imds-block).

For each fault (FAULTS) a container on the default bridge asks the fixture's IMDS over IPv4 and
IPv6, each every 2 ms, timing each request on the host's clock (tests/support/prober.py), and the
fault runs on the host while a listener of the kernel's nftables events notes when the fault
reached the kernel (its first transaction, named by the process that made it). No request may
reach IMDS more than WINDOW (50 ms) after that moment; the watcher's journal names each repair,
one line per family or table it repaired; the host's own rules are live exactly once in both
families; the program's check passes. Between faults the host is put back as it was (Docker's
and ecs-init's rules by restarting them; what the fault itself added, removed), and the next
prober first sees every request refused: our reject.

Then: systemd starts the watcher again when it is killed; with the watcher stopped the backstop
timer heals a flush within its period; with the heal off (the control) the same flush lets
requests through, so the window check can fail; the agent starts only with the block live; the
bridge block turned off withdraws the agent's attribute.

The measurements (each fault's transactions, the requests that reached IMDS and when) are
printed by each test and summed up at the module's end: run with -rA to see them.
"""

from __future__ import annotations

import collections
import json
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from local_image.host import LocalHost, systemd_container
from local_image.make_image import FIXTURE, FIXTURE_VARS, PLAYBOOK, playbook
from support.prober import (
    IMDS,
    REACHED,
    Fault,
    Probe,
    Prober,
    assert_routed_to_the_fixture,
    largest_gap,
    run_fault,
    uptime,
)
from test_boothook_host import INSTANCE_ID, probe, wait_for

# One host for the module: `make test` runs the unit tests with --dist loadfile.
pytestmark = [pytest.mark.docker, pytest.mark.xdist_group("heal-host")]

PROGRAM = "/usr/local/sbin/ecs-imds-block"
WATCH = "ecs-imds-block-watch.service"
TIMER = "ecs-imds-block-heal.timer"
HEAL = "ecs-imds-block-heal.service"
WINDOW = 0.050  # s from the fault reaching the kernel to the last request that may reach IMDS
SETTLE = 3  # s the prober and the event listener go on after a fault's command ends
BACKSTOP = 10  # s: the shortest backstop the role takes
FILES = {4: "/etc/iptables/rules.v4", 6: "/etc/iptables/rules.v6"}  # Debian's
TOOLS = {4: "iptables", 6: "ip6tables"}
# The host's own firewall as the kernel prints it (the fixture's files/host-firewall-rules.v4, .v6).
HOST_FIREWALL_RULES = yaml.safe_load(FIXTURE_VARS.read_text())["fixture_host_firewall_rules"]
# Docker's NAT for the default bridge (its subnet is Docker's choice: 172.17.0.0/16 unless that
# is taken, as in a host container) and ecs-init's DNAT to the agent: what a flush takes that is
# neither the block's nor the host's file's, put back between faults by restarting their units.
NAT = (
    "-A POSTROUTING -s {bridge} ! -o docker0 -j MASQUERADE",
    "-A PREROUTING -d 169.254.170.2/32 -p tcp -m tcp --dport 80 -j DNAT --to-destination 127.0.0.1:51679",
)
# A CIS-style hardening: nftables.service with a configuration that starts with flush ruleset.
FLUSH_RULESET = (
    "flush ruleset\ntable inet filter {\n  chain forward { type filter hook forward priority 0; }\n}\n"
)
NFTABLES_CONF = "/etc/nftables.conf"

# The watcher's lines, by what each repaired ("nft": our nftables table; 4, 6: the family).
TABLE = "the nftables table inet ecs-imds-block is missing; loaded it"
MISSING, DIFFERS = "is missing", "differs from the configuration"
EITHER = f"(?:{MISSING}|{DIFFERS})"


def reloaded(family: int, why: str) -> str:
    return (
        f"IPv{family} ECS-IMDS-BLOCK {why}; reloaded {re.escape(FILES[family])} whole "
        r"\(the host's rules and the block\) in one commit"
    )


def jumps(family: int) -> str:
    return f"IPv{family} FORWARD does not jump to DOCKER-USER first; put the jumps back first"


@dataclass(frozen=True)
class Case:
    command: str
    repairs: dict  # what the watcher repairs -> the pattern of its line
    exact: bool = True  # one line each: each family (or the table) is hit in one transaction
    certain: bool = True  # the fault takes the block from iptables' tables on every platform
    undo: str = ""  # what the fault added that is not the block's, taken away after it


FAULTS = {
    "iptables -F": Case("iptables -F", {4: reloaded(4, DIFFERS)}),
    # Four commands, four transactions: the watcher may repair IPv4 between its -F and its -X
    # (the -X then fails: the chains are in use again), so a family's chain is either.
    "iptables -F and -X, both families": Case(
        "iptables -F; iptables -X; ip6tables -F; ip6tables -X",
        {4: reloaded(4, EITHER), 6: reloaded(6, EITHER)},
    ),
    "nft flush ruleset": Case(
        "nft flush ruleset", {"nft": TABLE, 4: reloaded(4, MISSING), 6: reloaded(6, MISSING)}
    ),
    # Its stop flushes the ruleset again (ExecStop=nft flush ruleset): the watcher repairs that
    # too, and Docker's restart after it puts back Docker's rules.
    "nftables.service with flush ruleset": Case(
        f"cp {NFTABLES_CONF} /root/nftables.conf.saved && printf '{FLUSH_RULESET}' >{NFTABLES_CONF}"
        " && systemctl restart nftables.service",
        {"nft": TABLE, 4: reloaded(4, MISSING), 6: reloaded(6, MISSING)},
        undo=f"systemctl stop nftables.service && cp /root/nftables.conf.saved {NFTABLES_CONF}",
    ),
    "iptables-restore of a file without the block": Case(
        "printf '*filter\\n:INPUT ACCEPT [0:0]\\n:FORWARD ACCEPT [0:0]\\n:OUTPUT ACCEPT [0:0]\\nCOMMIT\\n'"
        " | iptables-restore",
        {4: reloaded(4, MISSING)},
    ),
    # As Docker does on older engines (moby/libnetwork#2631): a rule inserted above the jump.
    "an ACCEPT inserted first in FORWARD, both families": Case(
        "iptables -I FORWARD 1 -j ACCEPT; ip6tables -I FORWARD 1 -j ACCEPT",
        {4: jumps(4), 6: jumps(6)},
        undo="iptables -D FORWARD -j ACCEPT && ip6tables -D FORWARD -j ACCEPT",
    ),
    # firewalld 1.3 (Debian 12; nftables backend) flushes and deletes the chains of every iptables
    # table, each family in a few transactions, and adds its own table: a family may be repaired
    # more than once. firewalld 2 (Debian 13, sid) adds its own table and leaves iptables' alone:
    # nothing to repair.
    "firewalld started": Case(
        "systemctl start firewalld.service",
        {4: reloaded(4, EITHER), 6: reloaded(6, EITHER)},
        exact=False,
        certain=False,
        # Its stop leaves its table here (seen on Debian 12), whose reject
        # would refuse what the host's own rules let through.
        undo="systemctl disable --now firewalld.service && nft delete table inet firewalld",
    ),
}

# What each test measured, for the summary at the module's end.
MEASURED: dict[str, str] = {}


@pytest.fixture(scope="module")
def log(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("heal") / "playbooks.log"


def install_firewalld(host: LocalHost, log: Path) -> None:
    """Debian's firewalld, installed but neither started nor enabled: Debian's maintainer scripts
    start a service at its install, which policy-rc.d refuses."""
    if (
        host.run("dpkg-query", "-W", "-f=${Status}", "firewalld", check=False).stdout
        == "install ok installed"
    ):
        return
    done = host.run(
        "sh",
        "-c",
        "printf '#!/bin/sh\\nexit 101\\n' >/usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d"
        " && apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q"
        " --no-install-recommends firewalld; status=$?; rm -f /usr/sbin/policy-rc.d; exit $status",
        check=False,
    )
    with log.open("a") as output:
        output.write(f"\n### apt-get install firewalld\n{done.stdout}{done.stderr}")
    if done.returncode:
        pytest.fail(
            f"apt-get could not install firewalld in the host:\n{(done.stdout + done.stderr)[-3000:]}"
        )
    host.run("systemctl", "disable", "firewalld.service")


IMAGES = ("ecs-imds-debian12:latest", "ecs-imds-debian13:latest", "ecs-imds-debian-sid:latest")


@pytest.fixture(scope="module", params=IMAGES)
def host(request, log):
    docker_image = request.param
    found = subprocess.run(["docker", "image", "inspect", docker_image], capture_output=True, check=False)
    if found.returncode:
        pytest.fail(f"Docker with {docker_image} is required (scripts/build-base-images): {found.stderr}")
    MEASURED.clear()
    with systemd_container(docker_image, prefix="ecs-imds-heal") as host:
        install_firewalld(host, log)
        if playbook(host.name, FIXTURE / "prepare.yml", [f"@{FIXTURE_VARS}"], log):
            pytest.fail(f"the fixture could not be built; see {log}:\n{log.read_text()[-3000:]}")
        converge(host, log)
        wait_for(host, "docker.service", "fixture-imds.service", WATCH, TIMER)
        assert (
            host.run("systemctl", "is-active", "firewalld.service", check=False).stdout.strip() == "inactive"
        )
        yield host
        print(f"\n=== {docker_image}: what the tests measured")
        for name, text in MEASURED.items():
            print(f"{name}: {text}")


def converge(host: LocalHost, log: Path, *extra: str) -> None:
    """playbooks/golden-ami.yml with the fixture's inputs and ``extra``."""
    if playbook(host.name, PLAYBOOK, [f"@{FIXTURE_VARS}", *extra], log):
        pytest.fail(f"the role failed with {extra or 'its defaults'}; see {log}:\n{log.read_text()[-3000:]}")


def cursor(host: LocalHost) -> str:
    """The journal's position now: what is logged after it is what a step did."""
    last = host.run("journalctl", "-n", "1", "-o", "json", "-q").stdout
    return json.loads(last)["__CURSOR"]


def logged(host: LocalHost, after: str, unit: str) -> list[dict]:
    """The program's own journal entries from ``unit`` since ``after`` (systemd's about the unit
    left out)."""
    # Not `-u`: with a match, --after-cursor skips the first matching entry after the cursor's
    # own, which (another unit's) does not match.
    shown = host.run("journalctl", f"--after-cursor={after}", "-o", "json", "-q").stdout
    entries = [json.loads(line) for line in shown.splitlines()]
    return [
        entry
        for entry in entries
        if entry.get("_SYSTEMD_UNIT") == unit and entry.get("SYSLOG_IDENTIFIER") == "ecs-imds-block"
    ]


def repaired(line: str) -> str | int | None:
    """What a heal line names: "nft" (our table), 4 or 6."""
    match = re.match(r"ecs-imds-block heal: (?:(the nftables table)|IPv([46]) )", line)
    return None if not match else "nft" if match[1] else int(match[2])


def state(host: LocalHost, *units: str) -> list[str]:
    active = host.run("systemctl", "is-active", *units, check=False).stdout.split()
    enabled = host.run("systemctl", "is-enabled", *units, check=False).stdout.split()
    return [f"{a}/{e}" for a, e in zip(active, enabled, strict=True)]


def assert_check_passes(host: LocalHost, when: str) -> None:
    check = host.run(PROGRAM, "check", check=False)
    assert check.returncode == 0, f"{when}: the program's check: {check.stdout}{check.stderr}"


def assert_host_firewall_live_once(host: LocalHost, when: str) -> None:
    for family, tool in TOOLS.items():
        live = host.run(tool, "-w", "-S").stdout.splitlines()
        saved = host.run("cat", FILES[family]).stdout.splitlines()
        for rule in HOST_FIREWALL_RULES[family]:
            assert live.count(rule) == 1, f"{when}: IPv{family} holds {rule!r} {live.count(rule)} times"
            assert rule in saved, f"{when}: {rule!r} is no longer in {FILES[family]}"


def assert_refused(host: LocalHost, when: str) -> None:
    """A container on the default bridge is refused over both families (our reject); the
    allowlisted network and the host itself still reach the fixture's IMDS."""
    assert_routed_to_the_fixture(host, when)
    for family, address in IMDS.items():
        seen = probe(host, "bridge", address)
        assert INSTANCE_ID not in seen and re.search("refused|reset", seen), f"{when}: IPv{family}: {seen}"
    seen = probe(host, "imds-allowed", IMDS[4])
    assert INSTANCE_ID in seen, f"{when}: the allowlisted network does not reach the fixture's IMDS: {seen}"
    seen = host.run("curl", "-sS", "--max-time", "5", f"http://{IMDS[4]}/latest/meta-data/instance-id")
    assert seen.stdout == INSTANCE_ID, f"{when}: the host does not reach the fixture's IMDS"


def restore(host: LocalHost, undo: str = "") -> None:
    """The host as before a fault: what the fault added taken away, and Docker's and ecs-init's
    rules put back by restarting them (a flush took those with the block's and the host's)."""
    if undo:
        host.run("sh", "-c", undo)
    # docker.service allows 3 starts a minute (StartLimitBurst): these restarts are the test's.
    host.run("systemctl", "reset-failed", "docker.service")
    host.run("systemctl", "restart", "docker.service")
    host.run("systemctl", "restart", "fixture-ecs-init.service")
    wait_for(host, "docker.service", "fixture-imds.service", "fixture-ecs-init.service", WATCH, TIMER)


def assert_clean(host: LocalHost, when: str) -> None:
    assert_check_passes(host, when)
    assert_host_firewall_live_once(host, when)
    nat = host.run("iptables", "-w", "-t", "nat", "-S").stdout.splitlines()
    bridge = host.run(
        "docker", "network", "inspect", "bridge", "-f", "{{(index .IPAM.Config 0).Subnet}}"
    ).stdout.strip()
    missing = [rule for rule in NAT if rule.format(bridge=bridge) not in nat]
    assert not missing, f"{when}: Docker's or ecs-init's NAT is missing: {missing} in {nat}"
    assert_refused(host, when)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:+.1f} ms"


def describe(fault: Fault, probes: list[Probe]) -> tuple[str, list[Probe]]:
    """What a fault did and what the prober saw, and the requests that reached IMDS."""
    moment = fault.moment
    reached = sorted(p for p in probes if p.seen in REACHED)
    asked = collections.Counter(p.family for p in probes if fault.start <= p.start <= fault.end + SETTLE)
    gaps = {f: largest_gap(probes, f, fault.start, fault.end + SETTLE) for f in IMDS}
    text = (
        f"command {(fault.end - fault.start) * 1000:.0f} ms (status {fault.status}), first transaction "
        f"{ms(moment - fault.start)} after its start; transactions: {fault.transactions()}; requests "
        + ", ".join(f"IPv{f} {asked[f]} (largest gap {gaps[f] * 1000:.1f} ms)" for f in IMDS)
    )
    if not reached:
        return text + "; none reached IMDS (windowless)", reached
    late_from_start = [p for p in reached if p.start > fault.start + WINDOW]
    first, last = reached[0].start - moment, reached[-1].start - moment
    text += (
        f"; {len(reached)} reached IMDS, from {ms(first)} to {ms(last)} after the first transaction"
        f" ({len(late_from_start)} more than {WINDOW * 1000:.0f} ms after the"
        " command's start): " + ", ".join(f"IPv{p.family} {p.seen} {ms(p.start - moment)}" for p in reached)
    )
    return text, reached


# --- each fault ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", FAULTS)
def test_no_container_reaches_imds_after(host, name):
    case = FAULTS[name]
    mark = cursor(host)
    try:
        with Prober(host) as prober:
            fault = run_fault(host, case.command, SETTLE)
            probes = prober.seen()
        text, reached = describe(fault, probes)
        MEASURED[name] = text
        print(f"{name}: {text}")

        # Before the fault: every request refused, our reject (a rare one may time out: its SYN or
        # our reset lost), none reached.
        for family in IMDS:
            before = collections.Counter(
                p.seen for p in probes if p.family == family and prober.ready <= p.start < fault.start
            )
            lost = sum(before.values()) - before["refused"]
            assert before["refused"] and set(before) <= {"refused", "timeout"} and lost <= 2, (
                f"before {name}, IPv{family}: {dict(before)}"
            )
        # The prober looked every 10 ms or faster, and never away for a window's length.
        for family in IMDS:
            asked = [p for p in probes if p.family == family and fault.start <= p.start <= fault.end + SETTLE]
            assert len(asked) >= (fault.end + SETTLE - fault.start) * 100, (
                f"IPv{family}: {len(asked)} requests"
            )
            assert largest_gap(probes, family, fault.start, fault.end + SETTLE) < WINDOW, text
        late = [p for p in reached if p.start > fault.moment + WINDOW]
        assert not late, (
            f"{len(late)} requests reached IMDS more than {WINDOW * 1000:.0f} ms after {name}: {text}"
        )

        # The watcher names each repair, one line a family (or table), and the last word on each
        # is a repair that held.
        lines = [entry["MESSAGE"] for entry in logged(host, mark, WATCH)]
        found = collections.defaultdict(list)
        for line in lines:
            found[repaired(line)].append(line)
        if case.certain or found:
            assert set(found) == set(case.repairs), f"{name}: the watcher logged {lines}"
        for what, pattern in case.repairs.items():
            assert all(re.fullmatch("ecs-imds-block heal: " + pattern, line) for line in found[what]), lines
            assert len(found[what]) == 1 or not case.exact, f"{name}: {what} repaired more than once: {lines}"
        assert not [line for line in lines if "still off" in line], lines

        assert_host_firewall_live_once(host, f"after {name}")
        assert_check_passes(host, f"after {name}")
    finally:
        restore(host, case.undo)
    assert_clean(host, f"with the host put back after {name}")


# --- the watcher and its backstop -----------------------------------------------------------------


def main_pid(host: LocalHost) -> int:
    return int(host.run("systemctl", "show", "-p", "MainPID", "--value", WATCH).stdout)


def test_systemd_starts_the_watcher_again_when_it_is_killed(host):
    """Restart=always: the watcher killed, systemd starts it again a second later (RestartSec=1),
    and the new process heals (a rule inserted above the jump, put back by the new PID)."""
    before = main_pid(host)
    killed = time.monotonic()
    host.run("systemctl", "kill", "-s", "KILL", WATCH)
    while not (main_pid(host) not in (0, before) and state(host, WATCH) == ["active/enabled"]):
        assert time.monotonic() - killed < 10, (
            f"the watcher is not back 10 s after its kill: {state(host, WATCH)}"
        )
        time.sleep(0.1)
    back, after = time.monotonic() - killed, main_pid(host)
    MEASURED["the watcher killed"] = f"PID {before} -> {after}, active again after {back:.1f} s"
    print(MEASURED["the watcher killed"])
    assert back < 5

    mark = cursor(host)
    try:
        fault = run_fault(host, "iptables -I FORWARD 1 -j ACCEPT", settle=1)
        entries = logged(host, mark, WATCH)
        assert [(e["MESSAGE"], int(e["_PID"])) for e in entries] == [
            ("ecs-imds-block heal: " + jumps(4), after)
        ], fault.transactions()
    finally:
        host.run("iptables", "-w", "-D", "FORWARD", "-j", "ACCEPT")
    assert_check_passes(host, "after the watcher's restart")


def test_the_backstop_timer_heals_a_flush_while_the_watcher_is_down(host, log):
    """With the watcher stopped, `nft flush ruleset` opens the way until the heal timer runs: the
    timer (its period the backstop, here the role's shortest, 10 s) heals within its period, and
    says so in its own journal."""
    converge(host, log, f"ecs_imds_block_heal_backstop={BACKSTOP}")
    timers = host.run("systemctl", "show", "-p", "TimersMonotonic", "--value", TIMER).stdout
    assert f"OnUnitActiveUSec={BACKSTOP}s" in timers, timers
    host.run("systemctl", "stop", WATCH)
    try:
        mark = cursor(host)
        with Prober(host) as prober:
            # The listener goes on for the backstop's period and a little: the timer's repair is
            # the first transaction after the flush.
            fault = run_fault(host, "nft flush ruleset", settle=BACKSTOP + 2)
            probes = prober.seen()
        text, reached = describe(fault, probes)
        repairs = [g for g in fault.generations if g["at"] > fault.moment]
        healed = (repairs[0]["at"] - fault.moment) if repairs else float("inf")
        text = f"the timer's first repair {healed:.2f} s after the flush; {text}"
        MEASURED["the backstop with the watcher down"] = text
        print(text)
        assert healed < BACKSTOP + 1, text
        assert not [p for p in reached if p.start > fault.moment + healed + WINDOW], text
        lines = [e["MESSAGE"] for e in logged(host, mark, HEAL)]
        assert {repaired(line) for line in lines} == {"nft", 4, 6}, lines
        for line in lines:
            what = repaired(line)
            pattern = TABLE if what == "nft" else reloaded(what, MISSING)
            assert re.fullmatch("ecs-imds-block heal: " + pattern, line), lines
        assert len(lines) == 3, lines
        assert not logged(host, mark, WATCH), "the watcher logged while it was stopped"
        assert_host_firewall_live_once(host, "after the timer's heal")
        assert_check_passes(host, "after the timer's heal")
    finally:
        host.run("systemctl", "start", WATCH)
        converge(host, log)
        restore(host)
    timers = host.run("systemctl", "show", "-p", "TimersMonotonic", "--value", TIMER).stdout
    assert "OnUnitActiveUSec=1min" in timers, timers
    assert_clean(host, "with the defaults again")


# --- the control, the agent, the attribute ---------------------------------------------------------


def test_with_the_heal_off_a_flush_lets_requests_through(host, log):
    """The control: ecs_imds_block_heal=false stops and disables the watcher and the timer.
    `iptables -F` in both families then leaves our chain empty for good, yet no request reaches
    IMDS: our nftables table, which no iptables command touches, still refuses them (that fault is
    windowless with the heal off too). Nothing puts the block back after `nft flush ruleset` (it
    takes our table and iptables-nft's), and the prober's requests reach IMDS over both families:
    the window check above can fail. The role with its defaults puts the block back at once."""
    converge(host, log, "ecs_imds_block_heal=false")
    try:
        assert state(host, WATCH, TIMER) == ["inactive/disabled"] * 2
        with Prober(host) as prober:
            flushed = run_fault(host, "iptables -F; ip6tables -F", SETTLE)
            text, reached = describe(flushed, prober.seen())
            MEASURED["the control (heal off), iptables -F"] = text
            assert not reached, f"with the heal off, iptables -F opened IMDS: {text}"
            check = host.run(PROGRAM, "check", check=False)
            assert (check.returncode, check.stdout) == (1, "4\n6\n"), check.stdout + check.stderr
            fault = run_fault(host, "nft flush ruleset", settle=2)
            check = host.run(PROGRAM, "check", check=False)
            assert check.returncode == 1, check.stdout + check.stderr
            assert set(check.stdout.split()) == {"4", "6", "nft"}, check.stdout
            converge(host, log)
            converged = uptime(host)
            time.sleep(0.5)
            probes = prober.seen()
        text, reached = describe(fault, probes)
        MEASURED["the control (heal off)"] = text
        print(text)
        open_for = collections.Counter(p.family for p in reached if p.start < converged)
        assert open_for[4] > 100 and open_for[6] > 100, (
            f"with the heal off, a flush did not open IMDS: {text}"
        )
        assert not [p for p in reached if p.start > converged], "IMDS still answers after the role ran again"
        after = collections.Counter((p.family, p.seen) for p in probes if p.start > converged)
        assert after[4, "refused"] and after[6, "refused"], after
    finally:
        converge(host, log)
        restore(host)
    assert state(host, WATCH, TIMER) == ["active/enabled"] * 2
    assert_clean(host, "after the role turned the heal on again")


def test_the_agent_starts_only_with_the_block_live_and_then_registers_the_attribute(host):
    """ecs.service's ExecStartPre runs the program's check of the kernel: with the block gone from
    our table or from iptables (and nothing healing: the watcher and the timer stopped) the agent
    does not start, so it registers nothing; once the block is back it starts and is handed
    ecs-imds-block=enforced (the fixture's agent writes what it was handed)."""
    handed = "/run/ecs-agent.env"
    attribute = 'ECS_INSTANCE_ATTRIBUTES={"ecs-imds-block":"enforced"}'
    host.run("systemctl", "stop", WATCH, TIMER, "ecs.service")
    try:
        host.run("rm", "-f", handed)
        # The check's own lines for each part that is off, its families first: why, then which.
        table = ["ecs-imds-block: the nftables table inet ecs-imds-block is missing", "nft"]
        chain = ["ecs-imds-block: IPv4 ECS-IMDS-BLOCK differs from the configuration", "4"]
        for fault, shown in (("nft delete table inet ecs-imds-block", table), ("iptables -F", chain + table)):
            mark = cursor(host)
            host.run("sh", "-c", fault)
            started = host.run("systemctl", "start", "ecs.service", check=False)
            assert started.returncode != 0, f"the agent started after {fault}"
            assert host.run("test", "-e", handed, check=False).returncode != 0, (
                "the agent was handed its settings"
            )
            assert [e["MESSAGE"] for e in logged(host, mark, "ecs.service")] == shown
    finally:
        host.run("systemctl", "start", WATCH, TIMER)
        restore(host)
    assert_check_passes(host, "with the watcher started again")
    host.run("systemctl", "start", "ecs.service")
    # The stand-in agent writes what it was handed once it runs: `systemctl start` returns
    # when it has started (a simple service), which can be before that, on a loaded machine.
    waited = host.run(
        "sh", "-c", f"for i in $(seq 100); do [ -s {handed} ] && exit; sleep 0.1; done; exit 1", check=False
    )
    assert waited.returncode == 0, f"the agent did not write {handed} within 10 s of its start"
    assert attribute in host.run("cat", handed).stdout.splitlines()
    assert attribute in host.run("cat", "/etc/ecs/ecs.config").stdout.splitlines()


def test_turning_the_bridge_block_off_withdraws_the_attribute(host, log):
    """Tasks require ecs-imds-block=enforced as a placement constraint for a protected host. With
    ecs_imds_block_bridge=false the host no longer keeps containers from IMDS, so the agent must no
    longer be handed that attribute, though the role set it before; the role with the defaults
    hands it again."""
    handed = "/run/ecs-agent.env"
    try:
        converge(host, log, "ecs_imds_block_bridge=false")
        host.run("rm", "-f", handed)
        host.run("systemctl", "restart", "ecs.service")
        waited = host.run(
            "sh",
            "-c",
            f"for i in $(seq 100); do [ -s {handed} ] && exit; sleep 0.1; done; exit 1",
            check=False,
        )
        assert waited.returncode == 0, f"the agent did not write {handed} within 10 s of its start"
        for path in ("/etc/ecs/ecs.config", handed):
            assert '"ecs-imds-block":' not in host.run("cat", path).stdout, (
                f"{path} still registers the attribute"
            )
    finally:
        converge(host, log)
    wait_for(host, WATCH, TIMER)
    assert_clean(host, "after the role turned the bridge block on again")
