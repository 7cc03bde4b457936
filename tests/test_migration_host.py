# Copyright: the ecs-imds-golden authors
# Apache License 2.0
"""Issue 28: a host moves from the previous release's layout (the block's rules directly in
DOCKER-USER) to the host program's (DOCKER-USER jumps to ECS-IMDS-BLOCK first) at the next
install or load, without a window.

On a real host (systemd, Docker and the EC2 network fixture of molecule/fixture/prepare.yml) the
previous release's state is put in place: its rules files, our part rendered literally as its
imds_rules filter rendered it and merged into the platform team's own firewall as its merge did
(the team's firewall without a rule in DOCKER-USER: that release refused one in the files),
loaded into the kernel in one commit as its loader loaded them, and a rule of the team's own
inserted live into DOCKER-USER, where that release made them keep it. A container on the default
bridge then asks the fixture's IMDS over IPv4 and IPv6, each a few milliseconds apart, while the
role (playbooks/golden-ami.yml) or the persistence service's restart moves the host: no request
may get through. At the end the block is taken out for a second, and the same prober sees IMDS
answer: it would have seen a window.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml
from local_image.host import LocalHost, systemd_container
from local_image.make_image import FIXTURE, FIXTURE_VARS, PLAYBOOK, playbook
from support.prober import IMDS, REACHED, Prober, uptime
from test_boothook_host import wait_for
from test_same_program import boothook

from golden_ami.userdata import BOOTHOOK_NAME, build_user_data

pytestmark = [pytest.mark.docker, pytest.mark.xdist_group("migration-host")]

PROGRAM = "/usr/local/sbin/ecs-imds-block"
TOOLS = {4: "iptables", 6: "ip6tables"}
FILES = {4: "/etc/iptables/rules.v4", 6: "/etc/iptables/rules.v6"}  # Debian's
# Amazon Linux's, which the user data's configuration names.
USER_DATA_FILES = {4: "/etc/sysconfig/iptables", 6: "/etc/sysconfig/ip6tables"}
PERSISTENCE = "netfilter-persistent.service"
ALLOWED = {4: yaml.safe_load(FIXTURE_VARS.read_text())["ecs_imds_block_allowed_cidrs"], 6: []}

# --- the previous release's layout, literally ----------------------------------------------------

# The markers of the previous release's part (module_utils/ecs_imds_block_merge.py's BEGIN_TEXT
# and END_TEXT at 60cbca6).
OLD_BEGIN = (
    "# BEGIN ecs_imds_block: the DOCKER-USER chain and the FORWARD jump to it. The role replaces\n"
    "# these lines; every other line of this file is yours and is kept as it is.\n"
)
OLD_END = "# END ecs_imds_block\n"
# The platform team's own firewall as that release's fixture held it (files/host-firewall-rules.v4
# and .v6 at 60cbca6, the same for both families).
OLD_HOST_FIREWALL = (
    "# Copyright: the ecs-imds-golden authors\n"
    "# Apache License 2.0\n"
    "# The platform team's own firewall: the Docker API stays closed to the network.\n"
    "*filter\n"
    ":INPUT ACCEPT [0:0]\n"
    ":TEAM-INPUT - [0:0]\n"
    "-A INPUT -j TEAM-INPUT\n"
    "-A TEAM-INPUT -p tcp -m tcp --dport 2375 -j DROP\n"
    "COMMIT\n"
)
# The team's rules in built-in chains, and that release's FORWARD jump, as the kernel prints them:
# its loader deleted each live copy of them in the commit that added them again.
OLD_BUILT_IN = ("-A INPUT -j TEAM-INPUT", "-A FORWARD -j DOCKER-USER")
# The team's own rule in DOCKER-USER, inserted live (Docker's documentation's `iptables -I`).
TEAM_LIVE = {
    4: "-A DOCKER-USER -s 172.17.0.0/16 -d 192.0.2.0/24 -j DROP",
    6: "-A DOCKER-USER -s fd00:d0c::/64 -d 2001:db8::/32 -j DROP",
}


def old_rules(family: int) -> list[str]:
    """The rules of the previous release's part (roles/ecs_imds_block/filter_plugins/imds_rules.py's
    _render at 60cbca6, action reject, enabled), in its order."""
    imds = f"{IMDS[family]}/{32 if family == 4 else 128}"
    unreachable = {4: "icmp-port-unreachable", 6: "icmp6-port-unreachable"}[family]
    return [
        "-I FORWARD 1 -j DOCKER-USER",
        *(f"-A DOCKER-USER -s {cidr} -d {imds} -j RETURN" for cidr in ALLOWED[family]),
        f"-A DOCKER-USER -d {imds} -p tcp -j REJECT --reject-with tcp-reset",
        f"-A DOCKER-USER -d {imds} -j REJECT --reject-with {unreachable}",
        "-A DOCKER-USER -j RETURN",
    ]


def old_file(family: int) -> str:
    """The rules file the previous release left: the team's firewall with our part (markers, the
    chain's declaration, the rules) just before the filter table's COMMIT, as its merge put it."""
    part = OLD_BEGIN + ":DOCKER-USER - [0:0]\n" + "".join(rule + "\n" for rule in old_rules(family)) + OLD_END
    head, commit = OLD_HOST_FIREWALL.rsplit("COMMIT\n", 1)
    return head + part + "COMMIT\n" + commit


def old_docker_user(family: int) -> list[str]:
    """DOCKER-USER as the previous release left it live, the team's rule inserted first."""
    return [TEAM_LIVE[family], *(rule for rule in old_rules(family) if rule.startswith("-A DOCKER-USER"))]


# The host program's state, removed so that the host is as the previous release left it: that
# release's loader and units are not put back (a clone without history has no copy of them).
FORGET_THE_PROGRAM = """
systemctl disable --now ecs-imds-block-watch.service ecs-imds-block-heal.timer 2>/dev/null
rm -rf /usr/local/sbin/ecs-imds-block /etc/ecs-imds-block /etc/systemd/system/ecs-imds-block-heal.* \
    /etc/systemd/system/ecs-imds-block-watch.service \
    /etc/systemd/system/*.d/50-ecs-imds-block.conf
systemctl daemon-reload
nft delete table inet ecs-imds-block 2>/dev/null
for ipt in iptables ip6tables; do
    while $ipt -w -D DOCKER-USER -j ECS-IMDS-BLOCK 2>/dev/null; do :; done
    while $ipt -w -D DOCKER-USER -s 172.17.0.0/16 -d 192.0.2.0/24 -j DROP 2>/dev/null; do :; done
    while $ipt -w -D DOCKER-USER -s fd00:d0c::/64 -d 2001:db8::/32 -j DROP 2>/dev/null; do :; done
    $ipt -w -F ECS-IMDS-BLOCK 2>/dev/null && $ipt -w -X ECS-IMDS-BLOCK
done
exit 0
"""


def rules(host: LocalHost, family: int, chain: str | None = None) -> list[str]:
    return host.run(TOOLS[family], "-w", "-S", *([chain] if chain else [])).stdout.splitlines()


def put_the_previous_release_in_place(host: LocalHost, files: dict[int, str] = FILES) -> None:
    """The previous release's files, loaded into the kernel as its loader loaded them (one
    --noflush commit that first deletes each live copy of what it adds to built-in chains), and
    then the team's own rule inserted live into DOCKER-USER."""
    host.run("sh", "-c", FORGET_THE_PROGRAM)
    for family, tool in TOOLS.items():
        host.run(
            "sh",
            "-c",
            f"mkdir -p {Path(files[family]).parent} && cat >{files[family]}",
            stdin=old_file(family),
        )
        live = rules(host, family)
        deletes = "".join(f"-D{rule[2:]}\n" for rule in OLD_BUILT_IN for _ in range(live.count(rule)))
        host.run(
            f"{tool}-restore",
            "-w",
            "--noflush",
            stdin=old_file(family).replace("*filter\n", "*filter\n" + deletes, 1),
        )
        host.run(tool, "-w", "-I", "DOCKER-USER", "1", *TEAM_LIVE[family].split()[2:])
        assert rules(host, family, "DOCKER-USER")[1:] == old_docker_user(family), (
            f"IPv{family}: not the old layout"
        )
        forward = [rule for rule in rules(host, family, "FORWARD") if rule.startswith("-A ")]
        assert forward[0] == "-A FORWARD -j DOCKER-USER", forward
        assert not [r for r in rules(host, family) if "ECS-IMDS-BLOCK" in r]


@pytest.fixture(scope="module")
def log(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("migration") / "playbooks.log"


@pytest.fixture(scope="module")
def host(docker_image, log):
    """The fixture around a host whose rules files are the previous release's: prepare.yml keeps
    a file that holds the team's rules (host-firewall-load). The previous release installed the
    persistence package (whose install starts its service, and with the program's drop-in that
    loads the files): the role runs once, then each test puts the previous release back."""
    with systemd_container(docker_image, prefix="ecs-imds-migration") as host:
        for family in TOOLS:
            host.run("sh", "-c", f"mkdir -p /etc/iptables && cat >{FILES[family]}", stdin=old_file(family))
        if playbook(host.name, FIXTURE / "prepare.yml", [f"@{FIXTURE_VARS}"], log):
            pytest.fail(f"the fixture could not be built; see {log}:\n{log.read_text()[-3000:]}")
        if playbook(host.name, PLAYBOOK, [f"@{FIXTURE_VARS}"], log):
            pytest.fail(f"the role could not be applied; see {log}:\n{log.read_text()[-3000:]}")
        wait_for(host, "docker.service", "fixture-imds.service")
        yield host


def assert_no_window(prober: Prober, start: float, end: float, what: str) -> None:
    """No request between two uptimes reached IMDS, and there was one every 10 ms or more. Each
    was refused, but for a rare one that timed out: that one reached nothing (its SYN, or our
    reset, was lost; about one in ten thousand over IPv6, with either layout standing still)."""
    for family, counts in prober.between(start, end).items():
        asked, refused = sum(counts.values()), counts["refused"]
        reached = sum(counts[seen] for seen in REACHED)
        assert reached == 0, f"during {what}, {reached} IPv{family} requests reached IMDS: {dict(counts)}"
        lost = {seen: count for seen, count in counts.items() if seen != "refused"}
        assert set(lost) <= {"timeout"} and asked - refused <= max(3, asked // 1000), (
            f"during {what}, IPv{family}: {dict(counts)}"
        )
        assert asked >= (end - start) * 100, (
            f"during {what} ({end - start:.1f} s) the prober asked only {asked} times over IPv{family}"
        )


def assert_the_move_is_done(host: LocalHost, files: dict[int, str] = FILES) -> None:
    """The new layout live and in the files; the team's live rule kept, where it was."""
    check = host.run(PROGRAM, "check", check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    for family in TOOLS:
        docker_user = rules(host, family, "DOCKER-USER")[1:]
        assert docker_user[0] == "-A DOCKER-USER -j ECS-IMDS-BLOCK", f"IPv{family}: {docker_user}"
        assert docker_user.count(TEAM_LIVE[family]) == 1, (
            f"IPv{family}: the team's live rule is gone: {docker_user}"
        )
        forward = [rule for rule in rules(host, family, "FORWARD") if rule.startswith("-A ")]
        assert forward[0] == "-A FORWARD -j DOCKER-USER" and forward.count(forward[0]) == 1, forward
        live = rules(host, family)
        for rule in ("-A INPUT -j TEAM-INPUT", "-A TEAM-INPUT -p tcp -m tcp --dport 2375 -j DROP"):
            assert live.count(rule) == 1, f"IPv{family}: the team's {rule!r} is live {live.count(rule)} times"
        # The files: the team's lines as they were, and the new part in place of the old.
        content = host.run("cat", files[family]).stdout
        assert OLD_BEGIN not in content and "\n-A DOCKER-USER" not in content, content
        begin, end = content.index("# BEGIN ecs_imds_block: "), content.index(OLD_END) + len(OLD_END)
        assert content[:begin] + content[end:] == OLD_HOST_FIREWALL, content
        part = content[begin:end].splitlines()
        assert [line for line in part if line.startswith("-A ECS-IMDS-BLOCK ")] == rules(
            host, family, "ECS-IMDS-BLOCK"
        )[1:]
        assert part[-3:-1] == ["-I DOCKER-USER 1 -j ECS-IMDS-BLOCK", "-I FORWARD 1 -j DOCKER-USER"], part
        # Docker 20.10 adds its own RETURN to DOCKER-USER: it stays, last.
        assert docker_user[-1] == "-A DOCKER-USER -j RETURN", docker_user


def assert_the_old_rules_are_gone(host: LocalHost) -> None:
    for family in TOOLS:
        docker_user = rules(host, family, "DOCKER-USER")[1:]
        left = [rule for rule in old_docker_user(family)[1:-1] if rule in docker_user]
        assert not left, f"IPv{family}: the previous release's rules are still in DOCKER-USER: {left}"


def test_the_role_moves_a_host_from_the_previous_layout_without_a_window(host, log):
    put_the_previous_release_in_place(host)
    with Prober(host) as prober:
        start = uptime(host)
        assert playbook(host.name, PLAYBOOK, [f"@{FIXTURE_VARS}"], log) == 0, log.read_text()[-3000:]
        end = uptime(host)
        time.sleep(0.5)  # the last requests of the run
        assert_no_window(prober, start, end, "the role's run")
        assert_the_move_is_done(host)
        assert_the_old_rules_are_gone(host)

        # The prober sees a window: with the heal stopped (the watcher and the timer), our
        # nftables table deleted and the jumps to the block taken out for a second, IMDS answers
        # both families, until the program's apply puts them back.
        host.run("systemctl", "stop", "ecs-imds-block-watch.service", "ecs-imds-block-heal.timer")
        try:
            opened = uptime(host)
            host.run("nft", "delete", "table", "inet", "ecs-imds-block")
            for tool in TOOLS.values():
                host.run(tool, "-w", "-D", "DOCKER-USER", "-j", "ECS-IMDS-BLOCK")
            time.sleep(1)
        finally:
            host.run(PROGRAM, "apply")
            host.run("systemctl", "start", "ecs-imds-block-watch.service", "ecs-imds-block-heal.timer")
        closed = uptime(host)
        time.sleep(0.5)
        for family, counts in prober.between(opened, closed).items():
            assert counts["answered"] > 0, f"IPv{family}: the prober did not see the block go: {dict(counts)}"


def test_the_persistence_services_restart_moves_a_host_whose_program_was_installed_without_a_load(host, log):
    """The role with ecs_imds_block_apply_now=false (an image build's setting) installs the program,
    its units and the new part of the files, and leaves the kernel as it is: the previous layout.
    The persistence service's restart, ecs-imds-block load, then moves the kernel."""
    put_the_previous_release_in_place(host)
    with Prober(host) as prober:
        start = uptime(host)
        no_load = [f"@{FIXTURE_VARS}", "ecs_imds_block_apply_now=false"]
        assert playbook(host.name, PLAYBOOK, no_load, log) == 0, log.read_text()[-3000:]
        for family in TOOLS:
            assert rules(host, family, "DOCKER-USER")[1:] == old_docker_user(family), "the kernel changed"
        assert "\n:ECS-IMDS-BLOCK - [0:0]\n" in host.run("cat", FILES[4]).stdout
        assert host.run("systemctl", "cat", PERSISTENCE).stdout.count(f"ExecStart={PROGRAM} load 4 6") == 1

        host.run("systemctl", "restart", PERSISTENCE)
        end = uptime(host)
        time.sleep(0.5)
        assert_no_window(prober, start, end, "the role's run and the persistence service's restart")
        assert_the_move_is_done(host)
        assert_the_old_rules_are_gone(host)


def test_the_user_datas_boothook_moves_a_host_from_the_previous_layout_without_a_window(host):
    """A host protected by the previous release's user data, whose launch template now carries
    `golden-ami user-data`'s: at the next boot the boothook (Amazon Linux's files; run here as
    cloud-init runs it, as root) installs the program and loads the block before its package
    step, which fails on this host (no dnf or yum): the block must be moved all the same."""
    put_the_previous_release_in_place(host, USER_DATA_FILES)
    allow = {"allow": ALLOWED[4]}
    script = boothook(build_user_data("prod", None, **allow))
    with Prober(host) as prober:
        start = uptime(host)
        ran = host.run("sh", "-s", stdin=script, check=False)
        end = uptime(host)
        time.sleep(0.5)
        # No rpm here: each package counts as missing, and yum is not there to install them.
        failed = "yum install -y iptables-services nftables failed"
        assert ran.returncode == 1 and failed in ran.stderr.splitlines()[-1], f"{BOOTHOOK_NAME}: {ran.stderr}"
        assert_no_window(prober, start, end, "the boothook's run")
        assert_the_move_is_done(host, USER_DATA_FILES)
        assert_the_old_rules_are_gone(host)
