# Copyright: the ecs-imds-golden authors
# Apache License 2.0
"""The heal timer on a real host: systemd, Docker, the EC2 network fixture of
molecule/fixture/prepare.yml (its IMDS answers on both families, and the host's own firewall,
a rule of the team's in DOCKER-USER among it, is in both rules files) and the role applied by
playbooks/golden-ami.yml.

Each fault takes the block out of the running kernel or puts a rule above it. Once the heal
target has passed, the host program's own check passes, no bridge container reads IMDS over IPv4
or IPv6 (the connection is refused: our reject, not a policy drop) while the allowlisted network
and the host still do, the journal names the heal, and the host's own firewall is live again,
each rule exactly once. With the timer stopped the same fault lets a probe through, so the test
can fail.
"""

from __future__ import annotations

import re
import time

import pytest
import yaml
from local_image.host import LocalHost, systemd_container
from local_image.make_image import FIXTURE, FIXTURE_VARS, PLAYBOOK, playbook
from test_boothook_host import INSTANCE_ID, probe, wait_for

# One host for the module: `make test` runs the unit tests with --dist loadfile.
pytestmark = [pytest.mark.docker, pytest.mark.xdist_group("heal-host")]

PROGRAM = "/usr/local/sbin/ecs-imds-block"
HEAL_TARGET = 5  # seconds from the fault to the block being back (issue 20)
TIMER = "ecs-imds-block-heal.timer"
FILES = {4: "/etc/iptables/rules.v4", 6: "/etc/iptables/rules.v6"}  # Debian's
TOOLS = {4: "iptables", 6: "ip6tables"}
IMDS = {4: "169.254.169.254", 6: "fd00:ec2::254"}
# The host's own firewall as the kernel prints it (the fixture's files/host-firewall-rules.v4, .v6).
HOST_FIREWALL_RULES = yaml.safe_load(FIXTURE_VARS.read_text())["fixture_host_firewall_rules"]
FLUSH_RULESET = (
    "flush ruleset\ntable inet filter {\n  chain forward { type filter hook forward priority 0; }\n}\n"
)
RELOADED = "; reloaded /etc/iptables/rules.v{family} whole (the host's rules and the block) in one commit"
JUMPS_BACK = "IPv{family} FORWARD does not jump to DOCKER-USER first; put the jumps back first"

# fault -> (the shell that makes it, the repair the heal logs for each family it hit: a reload
# of the whole file where the block's chain went, the jumps alone where only a rule went above).
FAULTS = {
    "iptables -F": ("iptables -F", {4: RELOADED}),
    "iptables -F and -X, both families": (
        "iptables -F && iptables -X && ip6tables -F && ip6tables -X",
        {4: RELOADED, 6: RELOADED},
    ),
    "nft flush ruleset": ("nft flush ruleset", {4: RELOADED, 6: RELOADED}),
    # A CIS-style hardening: nftables.service with a config that starts with flush ruleset.
    "nftables.service with flush ruleset": (
        f"printf '{FLUSH_RULESET}' >/etc/nftables.conf && systemctl restart nftables.service",
        {4: RELOADED, 6: RELOADED},
    ),
    "iptables-restore of a file without our part": (
        "printf '*filter\\n:INPUT ACCEPT [0:0]\\n:FORWARD ACCEPT [0:0]\\n:OUTPUT ACCEPT [0:0]\\nCOMMIT\\n'"
        " | iptables-restore",
        {4: RELOADED},
    ),
    # As Docker does on older engines (moby/libnetwork#2631): a rule inserted above the jump.
    "an ACCEPT inserted first in FORWARD, both families": (
        "iptables -I FORWARD 1 -j ACCEPT && ip6tables -I FORWARD 1 -j ACCEPT",
        {4: JUMPS_BACK, 6: JUMPS_BACK},
    ),
    # The heal started by hand as Docker restarts: whichever repairs first (the heal, or
    # docker.service's ExecStartPre) reloads the whole file and says so.
    "a Docker restart during a heal": (
        "iptables -F && ip6tables -F && systemctl start --no-block ecs-imds-block-heal.service"
        " && systemctl restart docker.service",
        {4: RELOADED, 6: RELOADED},
    ),
}


@pytest.fixture(scope="module")
def host(docker_image, tmp_path_factory):
    log = tmp_path_factory.mktemp("heal") / "playbooks.log"
    with systemd_container(docker_image, prefix="ecs-imds-heal") as host:
        if playbook(host.name, FIXTURE / "prepare.yml", [f"@{FIXTURE_VARS}"], log):
            pytest.fail(f"the fixture could not be built; see {log}:\n{log.read_text()[-3000:]}")
        if playbook(host.name, PLAYBOOK, [f"@{FIXTURE_VARS}"], log):
            pytest.fail(f"the role could not be applied; see {log}:\n{log.read_text()[-3000:]}")
        wait_for(host, "docker.service", "fixture-imds.service", TIMER)
        yield host


def since(host: LocalHost) -> str:
    """The host's clock now, for journalctl --since."""
    return host.run("date", "+%Y-%m-%d %H:%M:%S").stdout.strip()


def assert_refused(host: LocalHost, when: str) -> None:
    for family, address in IMDS.items():
        route = host.run("ip", f"-{family}", "-o", "route", "get", address, check=False).stdout
        assert " dev imds0 " in route, f"{when}: {address} is not routed to the fixture: {route!r}"
        seen = probe(host, "bridge", address)
        assert INSTANCE_ID not in seen and re.search("refused|reset", seen), f"{when}: IPv{family}: {seen}"
    seen = probe(host, "imds-allowed", IMDS[4])
    assert INSTANCE_ID in seen, f"{when}: the allowlisted network does not reach the fixture's IMDS: {seen}"
    seen = host.run("curl", "-sS", "--max-time", "5", f"http://{IMDS[4]}/latest/meta-data/instance-id")
    assert seen.stdout == INSTANCE_ID, f"{when}: the host does not reach the fixture's IMDS"


def assert_host_firewall_live_once(host: LocalHost, when: str) -> None:
    for family, tool in TOOLS.items():
        live = host.run(tool, "-S").stdout.splitlines()
        for rule in HOST_FIREWALL_RULES[family]:
            assert live.count(rule) == 1, f"{when}: IPv{family} holds {rule!r} {live.count(rule)} times"
            assert rule in host.run("cat", FILES[family]).stdout.splitlines(), (
                f"{when}: not in {FILES[family]}"
            )


def heal_lines(host: LocalHost, start: str) -> list[str]:
    """The repairs logged since ``start`` by the heal and by docker.service's hooks."""
    units = ["-u", "ecs-imds-block-heal.service", "-u", "docker.service"]
    logged = host.run("journalctl", *units, "--since", start, "-o", "cat").stdout
    return [
        line
        for line in logged.splitlines()
        if line.startswith(("ecs-imds-block heal: ", "ecs-imds-block apply: "))
    ]


@pytest.mark.parametrize("fault", FAULTS)
def test_the_block_is_back_within_the_target_after(host, fault):
    command, repairs = FAULTS[fault]
    wait_for(host, "docker.service", TIMER)
    start = since(host)
    time.sleep(1)  # the journal's --since has a resolution of seconds
    host.run("sh", "-c", command)
    time.sleep(HEAL_TARGET)

    check = host.run(PROGRAM, "check", check=False)
    assert check.returncode == 0, f"{HEAL_TARGET} s after {fault}: {check.stdout}{check.stderr}"
    assert_refused(host, f"{HEAL_TARGET} s after {fault}")
    assert_host_firewall_live_once(host, f"{HEAL_TARGET} s after {fault}")
    lines = heal_lines(host, start)
    assert lines, f"no heal logged after {fault}"
    if fault != "a Docker restart during a heal":  # there docker.service may repair first
        assert all(line.startswith("ecs-imds-block heal: ") for line in lines), lines
    for family, repair in repairs.items():
        assert any(repair.format(family=family) in line for line in lines), (family, lines)
    assert not any(f"IPv{family} " in line for line in lines for family in {4, 6} - set(repairs)), lines
    # A reload that loses a race with Docker's own start is logged as an error ("and it is still
    # off"), and the next run repairs: the last word on each family is a repair that held.
    for family in repairs:
        last = [line for line in lines if f"IPv{family} " in line][-1]
        assert "still off" not in last, lines


def test_with_the_heal_off_the_same_fault_lets_a_probe_through(host, tmp_path):
    """The control: ecs_imds_block_heal=false stops and disables the timer; nothing then puts
    the block back, and the probe reads IMDS. The role with the default starts it again."""
    log = tmp_path / "playbooks.log"
    assert playbook(host.name, PLAYBOOK, [f"@{FIXTURE_VARS}", "ecs_imds_block_heal=false"], log) == 0, (
        log.read_text()
    )
    try:
        states = host.run("systemctl", "is-active", TIMER, check=False).stdout.split()
        states += host.run("systemctl", "is-enabled", TIMER, check=False).stdout.split()
        assert states == ["inactive", "disabled"]
        host.run("sh", "-c", FAULTS["nft flush ruleset"][0])
        time.sleep(HEAL_TARGET)
        assert host.run(PROGRAM, "check", check=False).returncode == 1
        seen = probe(host, "bridge", IMDS[4])
        assert INSTANCE_ID in seen, f"with the heal off, nft flush ruleset still blocks: {seen}"
    finally:
        host.run("systemctl", "restart", "docker.service")  # Docker's NAT, and the block again
        assert playbook(host.name, PLAYBOOK, [f"@{FIXTURE_VARS}"], log) == 0, log.read_text()
    wait_for(host, TIMER)
    assert host.run("systemctl", "is-enabled", TIMER).stdout.strip() == "enabled"
    assert_refused(host, "after the role turned the heal on again")


def test_the_agent_starts_only_with_the_block_live_and_then_registers_the_attribute(host):
    """ecs.service's ExecStartPre runs the program's check of the kernel: with the block gone
    (and nothing healing) the agent does not start, so it registers nothing; once the block is
    back it starts and is handed ecs-imds-block=enforced (the fixture's agent writes what it was
    handed)."""
    handed = "/run/ecs-agent.env"
    attribute = 'ECS_INSTANCE_ATTRIBUTES={"ecs-imds-block":"enforced"}'
    host.run("systemctl", "stop", TIMER, "ecs.service")
    try:
        host.run("rm", "-f", handed)
        start = since(host)
        time.sleep(1)
        host.run("iptables", "-F")
        started = host.run("systemctl", "start", "ecs.service", check=False)
        assert started.returncode != 0, "the agent started with the block gone"
        assert host.run("test", "-e", handed, check=False).returncode != 0, (
            "the agent was handed its settings"
        )
        logged = host.run("journalctl", "-u", "ecs.service", "--since", start, "-o", "cat").stdout
        # The check's own lines: why (after -F the chain is there, empty), then the family.
        assert "ecs-imds-block: IPv4 ECS-IMDS-BLOCK differs from the configuration\n4\n" in logged, logged
    finally:
        host.run("systemctl", "start", TIMER)
    time.sleep(HEAL_TARGET)
    host.run("systemctl", "start", "ecs.service")
    # The stand-in agent writes what it was handed once it runs: `systemctl start` returns
    # when it has started (a simple service), which can be before that, on a loaded machine.
    waited = host.run(
        "sh", "-c", f"for i in $(seq 100); do [ -s {handed} ] && exit; sleep 0.1; done; exit 1", check=False
    )
    assert waited.returncode == 0, f"the agent did not write {handed} within 10 s of its start"
    assert attribute in host.run("cat", handed).stdout.splitlines()
    assert attribute in host.run("cat", "/etc/ecs/ecs.config").stdout.splitlines()


def test_turning_the_bridge_block_off_withdraws_the_attribute(host, tmp_path):
    """Tasks require ecs-imds-block=enforced as a placement constraint for a protected host. With
    ecs_imds_block_bridge=false the host no longer keeps containers from IMDS, so the agent must no
    longer be handed that attribute, though the role set it before; the role with the defaults
    hands it again."""
    log = tmp_path / "playbooks.log"
    handed = "/run/ecs-agent.env"
    try:
        assert playbook(host.name, PLAYBOOK, [f"@{FIXTURE_VARS}", "ecs_imds_block_bridge=false"], log) == 0, (
            log.read_text()
        )
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
        assert playbook(host.name, PLAYBOOK, [f"@{FIXTURE_VARS}"], log) == 0, log.read_text()
    wait_for(host, TIMER)
    assert_refused(host, "after the role turned the bridge block on again")
