# Copyright: the ecs-imds-golden authors
# Apache License 2.0
"""The host program (roles/ecs_imds_block/files/ecs-imds-block) itself.

Its pure functions first, imported: how our part goes into a rules file the host shares with its
own firewall, and how a save of the live rules is read back. Then the program as a process
against the real kernel, in throwaway network namespaces, on both iptables backends (nf_tables
as on AL2023 and Debian 12 and 13, legacy as on Amazon Linux 2): every rendered variant, check,
apply, heal and load, and what each keeps of Docker's, ecs-init's and the host's own rules. Last,
the same scenario on every Python the program must run on (2.7, 3.9, 3.11, 3.13).

No packet is sent anywhere: the namespaces hold rules only.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from support.program import PROGRAM, config, load, render

P = load()
BACKENDS = ("nft", "legacy")
IPT = {4: "iptables", 6: "ip6tables"}
IMDS = {4: "169.254.169.254/32", 6: "fd00:ec2::254/128"}
UNREACHABLE = {4: "icmp-port-unreachable", 6: "icmp6-port-unreachable"}
ALLOW = {4: ["172.31.250.0/24", "10.0.0.7/32"], 6: ["fd00:1::/64"]}
JUMP_TO_USER, JUMP_TO_CHAIN = "-A FORWARD -j DOCKER-USER", "-A DOCKER-USER -j ECS-IMDS-BLOCK"
NFT_MISSING = "the nftables table inet ecs-imds-block is missing"


def block(family: int, action: str = "reject", allowed: list[str] = (), bridge: bool = True) -> list[str]:
    """ECS-IMDS-BLOCK's rules as `iptables -S ECS-IMDS-BLOCK` prints them: allowlist, then the block."""
    imds = IMDS[family]
    rules = [f"-A ECS-IMDS-BLOCK -s {cidr} -d {imds} -j RETURN" for cidr in allowed]
    if action == "drop":
        rules.append(f"-A ECS-IMDS-BLOCK -d {imds} -j DROP")
    else:
        rules += [
            f"-A ECS-IMDS-BLOCK -d {imds} -p tcp -j REJECT --reject-with tcp-reset",
            f"-A ECS-IMDS-BLOCK -d {imds} -j REJECT --reject-with {UNREACHABLE[family]}",
        ]
    return rules if bridge else []


# The host's own firewall, in its rules files: a comment in UTF-8 (its \xc3\x85 holds the byte
# 0x85, a line break to str.splitlines once read as latin-1), a comment line ending in CRLF, a chain
# of the team's, a rule with a comment in a built-in chain and a nat rule.
TEAM = {
    4: (
        "# \u00c5sa's team firewall: the Docker API stays closed.\r\n"
        "*filter\n"
        ":INPUT ACCEPT [0:0]\n"
        ":TEAM-INPUT - [0:0]\n"
        "-A INPUT -j TEAM-INPUT\n"
        '-A INPUT -p tcp --dport 2376 -m comment --comment "\u00c5sa: TLS API" -j DROP\n'
        "-A TEAM-INPUT -p tcp --dport 2375 -j DROP\n"
        "COMMIT\n"
        "*nat\n"
        ":PREROUTING ACCEPT [0:0]\n"
        "-A PREROUTING -p tcp --dport 8080 -j REDIRECT --to-ports 80\n"
        "COMMIT\n"
    ).encode(),
    6: b"*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -p tcp --dport 2375 -j DROP\nCOMMIT\n",
}
# The same rules as the kernel prints them: each must be live exactly once.
TEAM_LIVE = {
    4: [
        "-A INPUT -j TEAM-INPUT",
        '-A INPUT -p tcp -m tcp --dport 2376 -m comment --comment "\u00c5sa: TLS API" -j DROP',
        "-A TEAM-INPUT -p tcp -m tcp --dport 2375 -j DROP",
        "-A PREROUTING -p tcp -m tcp --dport 8080 -j REDIRECT --to-ports 80",
    ],
    6: ["-A INPUT -p tcp -m tcp --dport 2375 -j DROP"],
}
# What Docker 20.10 leaves in FORWARD, below the jump to DOCKER-USER; and ecs-init's DNAT.
DOCKER_FORWARD = ["-A FORWARD -o docker0 -j DOCKER", "-A FORWARD -i docker0 ! -o docker0 -j ACCEPT"]
ECS_INIT = (
    "-A PREROUTING -d 169.254.170.2/32 -p tcp -m tcp --dport 80 -j DNAT --to-destination 127.0.0.1:51679"
)


def text(data: bytes) -> str:
    """A file's bytes as the program reads them."""
    return data.decode("latin-1")


def program_config(tmp_path: Path, **settings) -> dict:
    return config(render(tmp_path / "cfg", **settings))


def entry(cfg: dict, family: int) -> dict:
    (found,) = [e for e in cfg["families"] if e["family"] == family]
    return found


def our_part(family: int, declare_user: bool, **kwargs) -> list[str]:
    """Our part of a rules file for the role's defaults, as it must read."""
    return [
        "# BEGIN ecs_imds_block: written by ecs-imds-block from /etc/ecs-imds-block/config.json; "
        "the rest is yours.",
        ":ECS-IMDS-BLOCK - [0:0]",
        *([":DOCKER-USER - [0:0]"] if declare_user else []),
        *block(family, **kwargs),
        "-I DOCKER-USER 1 -j ECS-IMDS-BLOCK",
        "-I FORWARD 1 -j DOCKER-USER",
        "# END ecs_imds_block",
    ]


def without_our_part(merged: str) -> str:
    begin = merged.index("# BEGIN ecs_imds_block")
    end = merged.index("# END ecs_imds_block\n") + len("# END ecs_imds_block\n")
    return merged[:begin] + merged[end:]


# --- our part of a rules file, the pure functions --------------------------------------------


def test_without_docker_user_in_the_hosts_lines_our_part_comes_first_in_the_filter_table(tmp_path):
    """Our part declares DOCKER-USER and stands first in the filter table, so that the stock
    persistence service can load the file too; every other byte is the host's, CRLF and UTF-8 (whose
    0x85 byte is a line break to Python's str.splitlines) included."""
    cfg = program_config(tmp_path)
    merged = P.merge(cfg, entry(cfg, 4), text(TEAM[4]))
    head = "# \u00c5sa's team firewall: the Docker API stays closed.\r\n*filter\n".encode().decode("latin-1")
    assert merged == head + "\n".join(our_part(4, True)) + "\n" + text(TEAM[4])[len(head) :]
    assert without_our_part(merged) == text(TEAM[4])  # every other byte, CRLF and 0x85 too


def test_with_docker_user_in_the_hosts_lines_our_part_comes_before_the_filter_commit(tmp_path):
    """Where the host's lines declare DOCKER-USER (a save of the live rules, or a team's own rules
    there), declaring it again would empty it: our part comes last in the table, before its COMMIT,
    and its jump is inserted above the host's rules."""
    cfg = program_config(tmp_path)
    theirs = (
        "# the team's rules in DOCKER-USER\n*nat\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n"
        "*filter\n:DOCKER-USER - [0:0]\n-A DOCKER-USER -s 10.3.0.0/16 -j ACCEPT\n  COMMIT  \n"
    )
    merged = P.merge(cfg, entry(cfg, 4), theirs)
    at = theirs.rindex("  COMMIT")
    assert merged == theirs[:at] + "\n".join(our_part(4, False)) + "\n" + theirs[at:]


@pytest.mark.parametrize("existing", ["", "\n", "# only a comment\n", "# one\n\n# two"])
def test_a_file_without_rules_becomes_our_part_after_its_comments(tmp_path, existing):
    """A missing, empty or comments-only file gets a filter table of ours; its lines stay."""
    cfg = program_config(tmp_path)
    body = existing if existing.endswith("\n") or not existing else existing + "\n"
    assert (
        P.merge(cfg, entry(cfg, 6), existing)
        == body + "\n".join(["*filter", *our_part(6, True), "COMMIT"]) + "\n"
    )


def test_a_file_without_a_filter_table_gets_one_at_its_end(tmp_path):
    cfg = program_config(tmp_path)
    nat = "*nat\n:PREROUTING ACCEPT [0:0]\nCOMMIT"  # no final newline either
    assert (
        P.merge(cfg, entry(cfg, 4), nat)
        == nat + "\n" + "\n".join(["*filter", *our_part(4, True), "COMMIT"]) + "\n"
    )


def test_merging_again_or_with_other_settings_replaces_only_our_part(tmp_path):
    """Our part is rendered from the configuration every time, never read back: a merge of a merged
    file is the same file, and other settings change our part alone."""
    cfg = program_config(tmp_path)
    drop = program_config(tmp_path / "drop", action="drop", allowed_cidrs=ALLOW[4])
    once = P.merge(cfg, entry(cfg, 4), text(TEAM[4]))
    assert P.merge(cfg, entry(cfg, 4), once) == once
    dropped = P.merge(drop, entry(drop, 4), once)
    assert without_our_part(dropped) == text(TEAM[4])
    assert "\n".join(our_part(4, True, action="drop", allowed=ALLOW[4])) in dropped
    assert P.merge(cfg, entry(cfg, 4), dropped) == once


def test_a_begin_without_its_end_is_refused_in_one_line(tmp_path):
    cfg = program_config(tmp_path)
    with pytest.raises(P.Refused) as error:
        P.merge(cfg, entry(cfg, 4), "*filter\n# BEGIN ecs_imds_block\n:DOCKER-USER - [0:0]\nCOMMIT\n")
    assert str(error.value) == f"{tmp_path}/cfg/rules.v4 has a BEGIN ecs_imds_block line but no END line"


# A save of the live rules after a load (iptables-save, netfilter-persistent save, service
# iptables save): Docker's chains, ecs-init's DNAT, the block's lines without their markers, a
# team's rule in DOCKER-USER, a team's own jump to DOCKER-USER and the host's own rules.
SAVED = """# Generated by iptables-save v1.8.9 (nf_tables) on Sun Dec  6 10:00:00 2026
*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
:DOCKER - [0:0]
:DOCKER-USER - [0:0]
:ECS-IMDS-BLOCK - [0:0]
:ECS-IMDS-BLOCK-TEAM - [0:0]
:TEAM-INPUT - [0:0]
-A INPUT -j TEAM-INPUT
-A FORWARD -j DOCKER-USER
-A FORWARD -i eth1 -j DOCKER-USER
-A FORWARD -o docker0 -j DOCKER
-A FORWARD -i docker0 ! -o docker0 -j ACCEPT
-A DOCKER-USER -j ECS-IMDS-BLOCK
-A DOCKER-USER -s 10.3.0.0/16 -j ACCEPT
-A DOCKER-USER -j ECS-IMDS-BLOCK-TEAM
-A DOCKER-USER -j RETURN
-A ECS-IMDS-BLOCK -s 172.31.250.0/24 -d 169.254.169.254/32 -j RETURN
-A ECS-IMDS-BLOCK -d 169.254.169.254/32 -p tcp -j REJECT --reject-with tcp-reset
-A ECS-IMDS-BLOCK -d 169.254.169.254/32 -j REJECT --reject-with icmp-port-unreachable
-A ECS-IMDS-BLOCK-TEAM -s 10.4.0.0/16 -j RETURN
-A TEAM-INPUT -p tcp -m tcp --dport 2375 -j DROP
COMMIT
# Completed on Sun Dec  6 10:00:00 2026
# Generated by iptables-save v1.8.9 (nf_tables) on Sun Dec  6 10:00:00 2026
*nat
:PREROUTING ACCEPT [0:0]
:ECS-IMDS-BLOCK - [0:0]
-A PREROUTING -d 169.254.170.2/32 -p tcp -m tcp --dport 80 -j DNAT --to-destination 127.0.0.1:51679
-A PREROUTING -j ECS-IMDS-BLOCK
-A ECS-IMDS-BLOCK -j RETURN
COMMIT
# Completed on Sun Dec  6 10:00:00 2026
"""
# Ours, all in the filter table; Docker's own jump to DOCKER-USER counts: we put it first.
OUR_SAVED_LINES = [
    ":ECS-IMDS-BLOCK - [0:0]",
    "-A FORWARD -j DOCKER-USER",
    "-A DOCKER-USER -j ECS-IMDS-BLOCK",
    "-A ECS-IMDS-BLOCK -s 172.31.250.0/24 -d 169.254.169.254/32 -j RETURN",
    "-A ECS-IMDS-BLOCK -d 169.254.169.254/32 -p tcp -j REJECT --reject-with tcp-reset",
    "-A ECS-IMDS-BLOCK -d 169.254.169.254/32 -j REJECT --reject-with icmp-port-unreachable",
]


def test_a_save_of_the_live_rules_is_the_hosts_own_without_our_lines():
    """Our lines are known by their chain, in the filter table only: a chain of the nat table
    with our chain's name, a team's chain whose name starts with it and a team's own jump to
    DOCKER-USER are somebody else's, as are the team's DOCKER-USER rule, Docker's and ecs-init's."""
    host, old = P.split(SAVED, "rules.v4")
    lines = SAVED.splitlines()
    commit = lines.index("COMMIT")
    assert [line for line in lines[:commit] if line in OUR_SAVED_LINES] == OUR_SAVED_LINES
    assert host == [
        line for number, line in enumerate(lines) if number > commit or line not in OUR_SAVED_LINES
    ]
    assert old == []


def test_the_saved_file_gets_our_part_back_before_the_filter_commit(tmp_path):
    """A saved file declares DOCKER-USER (with the team's rule in it): our part goes back in
    before the filter table's COMMIT, and the host's lines stay as they were saved."""
    cfg = program_config(tmp_path, allowed_cidrs=["172.31.250.0/24"])
    merged = P.merge(cfg, entry(cfg, 4), SAVED)
    host = P.split(SAVED, "f")[0]
    at = host.index("COMMIT")
    part = our_part(4, False, allowed=["172.31.250.0/24"])
    assert merged == "\n".join(host[:at] + part + host[at:]) + "\n"


# --- the old layout, as the role's imds_rules filter rendered it before the program ----------
# (git show 60cbca6:roles/ecs_imds_block/filter_plugins/imds_rules.py, merged into the team's
# file before its filter COMMIT by that commit's module_utils/ecs_imds_block_merge.py)


def old_part(family: int) -> str:
    imds = IMDS[family]
    allowed = "".join(f"-A DOCKER-USER -s {cidr} -d {imds} -j RETURN\n" for cidr in ALLOW[family])
    return (
        "# BEGIN ecs_imds_block: the DOCKER-USER chain and the FORWARD jump to it. The role replaces\n"
        "# these lines; every other line of this file is yours and is kept as it is.\n"
        ":DOCKER-USER - [0:0]\n"
        "-I FORWARD 1 -j DOCKER-USER\n"
        f"{allowed}"
        f"-A DOCKER-USER -d {imds} -p tcp -j REJECT --reject-with tcp-reset\n"
        f"-A DOCKER-USER -d {imds} -j REJECT --reject-with {UNREACHABLE[family]}\n"
        "-A DOCKER-USER -j RETURN\n"
        "# END ecs_imds_block\n"
    )


OLD_PART = {family: old_part(family) for family in (4, 6)}
OLD_LAYOUT = {
    family: text(TEAM[family])[: text(TEAM[family]).index("COMMIT\n")]
    + OLD_PART[family]
    + text(TEAM[family])[text(TEAM[family]).index("COMMIT\n") :]
    for family in (4, 6)
}


def test_the_old_layouts_part_is_read_as_its_rules():
    """The part the role wrote before the program (its rules directly in DOCKER-USER) is not the
    host's: split hands its lines over, so that a load deletes exactly those from DOCKER-USER."""
    host, old = P.split(OLD_LAYOUT[4], "rules.v4")
    assert "\n".join(host) + "\n" == text(TEAM[4])
    assert old == OLD_PART[4].splitlines()[1:-1]  # all between BEGIN and END


# --- against the kernel -----------------------------------------------------------------------


@dataclass
class Namespace:
    """A throwaway network namespace on one iptables backend, with the program's configuration
    (the role's defaults) and its rules files under ``folder``."""

    name: str
    backend: str
    env: dict
    folder: Path
    config: Path

    def run(self, *argv: str, check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess:
        result = subprocess.run(
            ["ip", "netns", "exec", self.name, *argv],
            env=self.env,
            input=stdin,
            capture_output=True,
            text=True,
        )
        if check and result.returncode:
            raise AssertionError(f"{argv} exited {result.returncode}: {result.stdout}{result.stderr}")
        return result

    def program(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """The program as hosts run it: its sh header finds a python3."""
        return self.run("sh", str(PROGRAM), "--config", str(self.config), *args, check=check)

    def path(self, family: int) -> Path:
        return self.folder / f"rules.v{family}"

    def rules(self, family: int) -> list[str]:
        """Every table of the family as iptables-save prints it, without its comments."""
        saved = self.run(f"{IPT[family]}-save").stdout
        return [line for line in saved.splitlines() if not line.startswith("#")]

    def chain(self, family: int, chain: str, table: str = "filter") -> list[str]:
        return self.run(IPT[family], "-w", "-t", table, "-S", chain).stdout.splitlines()[1:]

    def checked(self) -> None:
        result = self.program("check", check=False)
        assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def shims(folder: Path, backend: str) -> Path:
    """iptables, ip6tables and their -save and -restore, on ``backend``, first on PATH."""
    folder.mkdir()
    for tool, suffix in itertools.product(("iptables", "ip6tables"), ("", "-save", "-restore")):
        (folder / f"{tool}{suffix}").symlink_to(f"/usr/sbin/{tool}-{backend}{suffix}")
    return folder


def docker_20_10(ns: Namespace) -> None:
    """What Docker 20.10 leaves: its chains, its ACCEPT rules and a jump below them; and ecs-init's
    task-credentials DNAT."""
    for tool in IPT.values():
        for rule in (
            "-N DOCKER",
            "-N DOCKER-USER",
            "-A DOCKER-USER -j RETURN",
            "-A FORWARD -o docker0 -j DOCKER",
            "-A FORWARD -i docker0 ! -o docker0 -j ACCEPT",
            "-A FORWARD -j DOCKER-USER",
        ):
            ns.run(tool, "-w", *rule.split())
    ns.run("iptables", "-w", "-t", "nat", *ECS_INIT.split())


@pytest.fixture(params=BACKENDS)
def netns(request, netadmin, tmp_path):
    """A namespace on one backend with Docker's and ecs-init's rules, and the configuration."""
    name = f"ecs-imds-program-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    env = {**os.environ, "PATH": f"{shims(tmp_path / 'bin', request.param)}:{os.environ['PATH']}"}
    folder = tmp_path / "host"
    ns = Namespace(name, request.param, env, folder, render(folder))
    try:
        docker_20_10(ns)
        yield ns
    finally:
        subprocess.run(["ip", "netns", "del", name], check=True)


VARIANTS = list(itertools.product((4, 6), ("reject", "drop"), (False, True), (True, False)))


def variant_id(variant) -> str:
    family, action, allow, bridge = variant
    return f"v{family}-{action}-{'allow' if allow else 'noallow'}-{'bridge' if bridge else 'nobridge'}"


@pytest.mark.parametrize("variant", VARIANTS, ids=[variant_id(v) for v in VARIANTS])
def test_every_variant_passes_iptables_restore_test_and_loads(netns, variant):
    """The merged file (the team's with our part) for every setting, through the kernel's own test,
    then loaded by the program: the chain holds exactly the variant's rules, both jumps first."""
    family, action, allow, bridge = variant
    allowed = ALLOW[family] if allow else []
    settings = {"action": action, "bridge": bridge, "allowed_cidrs": ALLOW[4] * allow}
    settings["allowed_cidrs_v6"] = ALLOW[6] * allow
    cfg = config(render(netns.folder, **settings))
    netns.path(family).write_text(P.merge(cfg, entry(cfg, family), text(TEAM[family])), encoding="latin-1")
    tested = netns.run(f"{IPT[family]}-restore", "--test", str(netns.path(family)), check=False)
    assert tested.returncode == 0, tested.stderr
    loaded = netns.program("load", str(family))
    assert (loaded.stdout, loaded.stderr) == ("", "")  # a load that succeeds says nothing
    assert netns.chain(family, "ECS-IMDS-BLOCK") == block(family, action, allowed, bridge)
    assert netns.chain(family, "FORWARD") == [JUMP_TO_USER, *DOCKER_FORWARD]
    assert netns.chain(family, "DOCKER-USER") == [JUMP_TO_CHAIN, "-A DOCKER-USER -j RETURN"]
    result = netns.program("check", check=False)
    assert (result.returncode, result.stdout) == (1, f"{10 - family}\n")  # the other family is not loaded


def test_check_names_each_family_that_is_off_and_apply_puts_the_jumps_first_keeping_docker(netns):
    """apply loads what is missing in one run, keeps Docker's and ecs-init's rules and chains, and
    says nothing the second time: the block is on."""
    result = netns.program("check", check=False)
    assert (result.returncode, result.stdout) == (1, "4\n6\nnft\n")
    assert result.stderr == (
        "ecs-imds-block: IPv4 ECS-IMDS-BLOCK is missing\necs-imds-block: IPv6 ECS-IMDS-BLOCK is missing\n"
        f"ecs-imds-block: {NFT_MISSING}\n"
    )
    first = netns.program("apply")
    assert first.stdout.splitlines() == [f"ecs-imds-block apply: {NFT_MISSING}; loaded it"] + [
        f"ecs-imds-block apply: IPv{family} ECS-IMDS-BLOCK is missing; reloaded {netns.path(family)} whole "
        "(the host's rules and the block) in one commit"
        for family in (4, 6)
    ]
    before = {family: netns.rules(family) for family in (4, 6)}
    again = netns.program("apply")
    assert (again.stdout, again.stderr) == ("", "")
    for family in (4, 6):
        assert netns.rules(family) == before[family]
        assert netns.chain(family, "FORWARD") == [JUMP_TO_USER, *DOCKER_FORWARD]
        assert netns.chain(family, "DOCKER-USER") == [JUMP_TO_CHAIN, "-A DOCKER-USER -j RETURN"]
        assert netns.chain(family, "ECS-IMDS-BLOCK") == block(family)
        assert "-N DOCKER" in netns.run(IPT[family], "-S").stdout.splitlines()
    assert netns.chain(4, "PREROUTING", "nat") == [ECS_INIT]
    netns.checked()


@pytest.mark.parametrize(
    ("chain", "rule", "problem"),
    [
        ("FORWARD", "-i docker0 -j ACCEPT", "IPv4 FORWARD does not jump to DOCKER-USER first"),
        ("DOCKER-USER", "-s 10.2.0.0/16 -j ACCEPT", "IPv4 DOCKER-USER does not jump to ECS-IMDS-BLOCK first"),
    ],
)
def test_a_rule_inserted_above_a_jump_ends_up_below_ours_and_stays(netns, chain, rule, problem):
    """Docker may insert its ACCEPT rules above a jump it did not add, and a team its own rule at
    the top of DOCKER-USER: the heal puts only the jumps back first and touches nothing else."""
    netns.path(4).write_bytes(TEAM[4])
    netns.program("load")
    netns.run("iptables", "-w", "-I", chain, "1", *rule.split())
    result = netns.program("check", check=False)
    assert (result.returncode, result.stdout, result.stderr) == (1, "4\n", f"ecs-imds-block: {problem}\n")
    moved = netns.rules(4)
    healed = netns.program("heal")
    assert healed.stdout == f"ecs-imds-block heal: {problem}; put the jumps back first\n"
    jump = JUMP_TO_USER if chain == "FORWARD" else JUMP_TO_CHAIN
    assert netns.chain(4, chain)[:2] == [jump, f"-A {chain} {rule}"]
    assert sorted(netns.rules(4)) == sorted(moved)  # the same rules: only the jump moved
    netns.checked()


def test_a_teams_runtime_rules_in_docker_user_survive_heal_and_load(netns):
    """DOCKER-USER is its users': a rule appended and one inserted at the top, at run time, are
    still there, in their order, after a heal and after loads of a file that does not declare
    DOCKER-USER."""
    for family in (4, 6):
        netns.path(family).write_bytes(TEAM[family])
    netns.program("load")
    for family in (4, 6):
        netns.run(IPT[family], "-w", "-A", "DOCKER-USER", "-p", "udp", "--dport", "53", "-j", "DROP")
        netns.run(IPT[family], "-w", "-I", "DOCKER-USER", "1", "-p", "tcp", "--dport", "25", "-j", "DROP")
    assert netns.program("heal").stdout.splitlines() == [
        f"ecs-imds-block heal: IPv{family} DOCKER-USER does not jump to ECS-IMDS-BLOCK first; "
        "put the jumps back first"
        for family in (4, 6)
    ]
    expected = [
        JUMP_TO_CHAIN,
        "-A DOCKER-USER -p tcp -m tcp --dport 25 -j DROP",
        "-A DOCKER-USER -j RETURN",
        "-A DOCKER-USER -p udp -m udp --dport 53 -j DROP",
    ]
    for verb in ("heal", "load", "load", "apply"):
        netns.program(verb)
        for family in (4, 6):
            assert netns.chain(family, "DOCKER-USER") == expected, verb
    netns.checked()


def test_a_load_keeps_what_a_team_added_to_docker_user_at_run_time(netns):
    """DOCKER-USER stays its users', live too: a load of a file that declares DOCKER-USER and holds a
    rule there does not empty the live chain (a --noflush restore empties a chain it declares), so
    a rule the team added at run time and never saved stays; the file's rule is there once, before
    Docker's RETURN, which stays last, and our jump is first."""
    theirs = "*filter\n:DOCKER-USER - [0:0]\n-A DOCKER-USER -s 10.3.0.0/16 -j ACCEPT\nCOMMIT\n"
    netns.path(4).write_text(theirs)
    netns.path(6).write_bytes(TEAM[6])
    netns.program("load")
    file_rule = "-A DOCKER-USER -s 10.3.0.0/16 -j ACCEPT"
    assert netns.chain(4, "DOCKER-USER") == [JUMP_TO_CHAIN, file_rule, "-A DOCKER-USER -j RETURN"]
    netns.run("iptables", "-w", "-I", "DOCKER-USER", "2", "-s", "10.9.0.0/16", "-j", "DROP")
    added = "-A DOCKER-USER -s 10.9.0.0/16 -j DROP"
    assert netns.program("heal").stdout == ""  # on: nothing to do
    for _ in range(3):
        netns.program("load", "4")
        assert netns.chain(4, "DOCKER-USER") == [JUMP_TO_CHAIN, added, file_rule, "-A DOCKER-USER -j RETURN"]
    netns.run("iptables", "-w", "-F", "ECS-IMDS-BLOCK")  # a heal that reloads the file whole
    assert "reloaded" in netns.program("heal").stdout
    assert netns.chain(4, "DOCKER-USER") == [JUMP_TO_CHAIN, added, file_rule, "-A DOCKER-USER -j RETURN"]
    assert netns.chain(4, "FORWARD") == [JUMP_TO_USER, *DOCKER_FORWARD]
    netns.checked()


BREAKERS = {
    "iptables -F": "iptables -w -F && ip6tables -w -F",
    "iptables -F -X": "iptables -w -F && iptables -w -X && ip6tables -w -F && ip6tables -w -X",
    "nft flush ruleset": "nft flush ruleset",
    "iptables-restore without our part": (
        "printf '*filter\\n:INPUT ACCEPT [0:0]\\n:FORWARD ACCEPT [0:0]\\nCOMMIT\\n' | iptables-restore -w"
        " && printf '*filter\\n:INPUT ACCEPT [0:0]\\nCOMMIT\\n' | ip6tables-restore -w"
    ),
}
# What each breaker leaves of the block in a family, and so what the heal says is off.
BROKEN = {
    "iptables -F": "ECS-IMDS-BLOCK differs from the configuration",
    "iptables -F -X": "ECS-IMDS-BLOCK is missing",
    "nft flush ruleset": "ECS-IMDS-BLOCK is missing",
    "iptables-restore without our part": "ECS-IMDS-BLOCK is missing",
}


@pytest.mark.parametrize("breaker", BREAKERS)
def test_heal_after_a_flush_puts_the_block_and_the_hosts_rules_back_each_once(netns, breaker):
    """What removed the block removed the host's own rules with it: the heal reloads each file
    whole, in one line each, and every rule of the host's and of the block is live once. The
    block's own nftables table is untouched by iptables' flushes; nft flush ruleset removes it
    (and leaves the legacy backend's tables alone: there the heal loads only the table)."""
    for family in (4, 6):
        netns.path(family).write_bytes(TEAM[family])
    netns.program("load")
    netns.run("sh", "-c", BREAKERS[breaker])
    healed = netns.program("heal")
    table = [f"ecs-imds-block heal: {NFT_MISSING}; loaded it"] * (breaker == "nft flush ruleset")
    if breaker == "nft flush ruleset" and netns.backend == "legacy":
        assert healed.stdout.splitlines() == table
    else:
        assert healed.stdout.splitlines() == table + [
            f"ecs-imds-block heal: IPv{family} {BROKEN[breaker]}; reloaded {netns.path(family)} whole "
            "(the host's rules and the block) in one commit"
            for family in (4, 6)
        ]
    for family in (4, 6):
        live = netns.rules(family)
        for rule in [*TEAM_LIVE[family], *block(family), JUMP_TO_USER, JUMP_TO_CHAIN]:
            assert live.count(rule) == 1, (family, rule, live)
        assert netns.chain(family, "FORWARD")[0] == JUMP_TO_USER
        assert netns.chain(family, "DOCKER-USER")[0] == JUMP_TO_CHAIN
    netns.checked()
    assert netns.program("heal").stdout == ""


def test_with_bridge_blocking_off_a_flush_still_reloads_the_hosts_rules(netns):
    """With ecs_imds_block_bridge false our chain is empty, so an empty chain after a flush matches
    the configuration: what tells a flush from a rule inserted above a jump is that the jumps are
    gone, not moved. The heal reloads the file whole, the host's own rules with it."""
    render(netns.folder, bridge=False)
    netns.path(4).write_bytes(TEAM[4])
    netns.path(6).write_bytes(TEAM[6])
    netns.program("load")
    netns.run("sh", "-c", BREAKERS["iptables -F"])
    assert netns.program("heal").stdout.splitlines() == [
        f"ecs-imds-block heal: IPv{family} FORWARD has no jump to DOCKER-USER; reloaded {netns.path(family)} "
        "whole (the host's rules and the block) in one commit"
        for family in (4, 6)
    ]
    for family in (4, 6):
        live = netns.rules(family)
        for rule in [*TEAM_LIVE[family], JUMP_TO_USER, JUMP_TO_CHAIN]:
            assert live.count(rule) == 1, (family, rule, live)
        assert netns.chain(family, "ECS-IMDS-BLOCK") == []
    netns.checked()


def test_ten_loads_leave_what_one_leaves_each_rule_once(netns):
    """The persistence service's start and reload, ten times, after the stock service loaded the
    merged files as they are (its --noflush restore appends each built-in chain's rules): every
    rule of the host's, Docker's, ecs-init's and the block's is live once."""
    cfg = config(netns.config)
    for family in (4, 6):
        merged = P.merge(cfg, entry(cfg, family), text(TEAM[family]))
        netns.path(family).write_text(merged, encoding="latin-1")
        netns.run(f"{IPT[family]}-restore", "-w", "--noflush", str(netns.path(family)))
    netns.program("load")
    once = {family: netns.rules(family) for family in (4, 6)}
    for _ in range(10):
        loaded = netns.program("load")
        assert (loaded.stdout, loaded.stderr) == ("", "")
    for family in (4, 6):
        assert netns.rules(family) == once[family]
        for rule in [*TEAM_LIVE[family], *block(family), JUMP_TO_USER, JUMP_TO_CHAIN, *DOCKER_FORWARD]:
            assert once[family].count(rule) == 1, (family, rule, once[family])
        assert netns.path(family).read_bytes().decode("latin-1") == P.merge(
            cfg, entry(cfg, family), text(TEAM[family])
        )
    assert once[4].count(ECS_INIT) == 1
    netns.checked()


def test_an_admins_save_then_load_puts_the_markers_back_and_loads_each_rule_once(netns):
    """`iptables-save > rules file` writes our lines out without their markers, with Docker's and
    ecs-init's and a team's DOCKER-USER rule: the next load takes the saved lines as the host's,
    drops ours, writes our part back in, and loads each rule once; the team's rule stays in the
    file and live."""
    for family in (4, 6):
        netns.path(family).write_bytes(TEAM[family])
    netns.program("load")
    for family in (4, 6):
        netns.run(IPT[family], "-w", "-A", "DOCKER-USER", "-s", ALLOW[family][0], "-j", "ACCEPT")
        netns.run("sh", "-c", f'{IPT[family]}-save > "$0"', str(netns.path(family)))
        assert "# BEGIN ecs_imds_block" not in netns.path(family).read_text()
    loaded = netns.program("load")
    assert loaded.stdout.splitlines() == [
        f"ecs-imds-block: put the block back between its markers in {netns.path(family)}" for family in (4, 6)
    ]
    team_rule = {family: f"-A DOCKER-USER -s {ALLOW[family][0]} -j ACCEPT" for family in (4, 6)}
    for family in (4, 6):
        content = netns.path(family).read_bytes().decode("latin-1")
        assert content.count("# BEGIN ecs_imds_block") == content.count("# END ecs_imds_block") == 1
        assert team_rule[family] in content.splitlines()
        host, _ = P.split(content, "f")
        assert not [line for line in host if "ECS-IMDS-BLOCK" in line and "*nat" not in line]
        live = netns.rules(family)
        for rule in [*TEAM_LIVE[family], *block(family), JUMP_TO_USER, JUMP_TO_CHAIN, *DOCKER_FORWARD]:
            assert live.count(rule) == 1, (family, rule, live)
        assert netns.chain(family, "DOCKER-USER") == [
            JUMP_TO_CHAIN,
            "-A DOCKER-USER -j RETURN",
            team_rule[family],
        ]
    assert netns.rules(4).count(ECS_INIT) == 1
    again = {family: netns.path(family).read_bytes() for family in (4, 6)}
    netns.program("load")
    assert {family: netns.path(family).read_bytes() for family in (4, 6)} == again
    netns.checked()


@pytest.mark.parametrize("verb", ["load", "heal"])
def test_the_old_layout_migrates_at_the_next_load_or_heal(netns, verb):
    """A host the role set up before the program: its rules directly in DOCKER-USER, loaded from
    the old part of each file, and a team's rule added to DOCKER-USER since. The next load (or
    heal) deletes exactly the old part's rules from DOCKER-USER in the commit that adds the new
    chain: Docker's RETURN and the team's rule stay. Only load rewrites the file."""
    for family in (4, 6):
        netns.path(family).write_text(OLD_LAYOUT[family], encoding="latin-1")
        netns.run(f"{IPT[family]}-restore", "-w", "--noflush", str(netns.path(family)))
        netns.run(IPT[family], "-w", "-I", "DOCKER-USER", "1", "-p", "tcp", "--dport", "25", "-j", "DROP")
        old = [line for line in OLD_PART[family].splitlines() if line.startswith("-A DOCKER-USER")]
        assert netns.chain(family, "DOCKER-USER") == ["-A DOCKER-USER -p tcp -m tcp --dport 25 -j DROP", *old]
    netns.program(verb)
    cfg = config(netns.config)
    for family in (4, 6):
        assert netns.chain(family, "DOCKER-USER") == [
            JUMP_TO_CHAIN,
            "-A DOCKER-USER -p tcp -m tcp --dport 25 -j DROP",
            "-A DOCKER-USER -j RETURN",
        ]
        assert netns.chain(family, "ECS-IMDS-BLOCK") == block(family)
        assert netns.chain(family, "FORWARD")[0] == JUMP_TO_USER
        assert netns.chain(family, "FORWARD").count(JUMP_TO_USER) == 1
        for rule in TEAM_LIVE[family]:
            assert netns.rules(family).count(rule) == 1, rule
        content = netns.path(family).read_bytes().decode("latin-1")
        if verb == "load":
            assert content == P.merge(cfg, entry(cfg, family), text(TEAM[family]))
        else:
            assert content == OLD_LAYOUT[family]
    netns.checked()


def test_docker_29_gets_docker_user_and_both_jumps(netns):
    """Docker 29's nftables backend adds no DOCKER-USER: the load creates it, with our jump, and
    FORWARD's jump to it; a heal does the same once the jumps are gone (gone, not moved: it reloads
    the file, as after a flush)."""
    for family in (4, 6):
        for rule in ("-F FORWARD", "-F DOCKER-USER", "-X DOCKER-USER", "-F DOCKER", "-X DOCKER"):
            netns.run(IPT[family], "-w", *rule.split())
        netns.path(family).write_bytes(TEAM[family])
    netns.program("load")
    for family in (4, 6):
        assert netns.chain(family, "FORWARD") == [JUMP_TO_USER]
        assert netns.chain(family, "DOCKER-USER") == [JUMP_TO_CHAIN]
    netns.checked()
    for family in (4, 6):
        for rule in ("-F FORWARD", "-F DOCKER-USER", "-X DOCKER-USER"):
            netns.run(IPT[family], "-w", *rule.split())
    assert netns.program("heal").stdout.splitlines() == [
        f"ecs-imds-block heal: IPv{family} FORWARD has no jump to DOCKER-USER; reloaded "
        f"{netns.path(family)} whole (the host's rules and the block) in one commit"
        for family in (4, 6)
    ]
    for family in (4, 6):
        assert netns.chain(family, "FORWARD") == [JUMP_TO_USER]
        assert netns.chain(family, "DOCKER-USER") == [JUMP_TO_CHAIN]
    netns.checked()


def refused_file(ns: Namespace) -> str:
    """The team's file, merged, with a line the kernel refuses."""
    cfg = config(ns.config)
    merged = P.merge(cfg, entry(cfg, 4), text(TEAM[4]))
    bad = merged.replace("--dport 2375 -j DROP", "--dport 2375 -j DROP --no-such-option")
    ns.path(4).write_text(bad, encoding="latin-1")
    return bad


def test_a_file_the_kernel_refuses_loads_the_block_alone_and_load_fails_in_one_line(netns):
    bad = refused_file(netns)
    result = netns.program("load", "4", check=False)
    assert (result.returncode, result.stderr) == (1, "")
    assert (
        result.stdout
        == f"ecs-imds-block load: IPv4; the kernel refused {netns.path(4)}; loaded only the block\n"
    )
    assert netns.path(4).read_bytes().decode("latin-1") == bad  # the host's file is the host's
    assert netns.program("check", check=False).stdout == "6\n"  # IPv4 is on
    assert "-A INPUT -j TEAM-INPUT" not in netns.rules(4)  # nothing of the refused file
    assert netns.chain(4, "FORWARD") == [JUMP_TO_USER, *DOCKER_FORWARD]


def test_heal_of_a_refused_file_loads_the_block_alone(netns):
    refused_file(netns)
    result = netns.program("heal")
    assert result.stdout.splitlines()[:2] == [
        f"ecs-imds-block heal: {NFT_MISSING}; loaded it",
        f"ecs-imds-block heal: IPv4 ECS-IMDS-BLOCK is missing; the kernel refused {netns.path(4)}; "
        "loaded only the block",
    ]
    assert netns.chain(4, "ECS-IMDS-BLOCK") == block(4)
    netns.checked()


def test_eight_heals_at_once_leave_every_rule_once(netns):
    """The heal timer, docker.service's hooks and the persistence service may start together:
    eight repairs of a flushed table at once leave each rule of the host's and ours once."""
    for family in (4, 6):
        netns.path(family).write_bytes(TEAM[family])
    netns.program("load")
    netns.run("sh", "-c", "iptables -w -F && ip6tables -w -F")
    script = 'for i in 1 2 3 4 5 6 7 8; do sh "$0" --config "$1" heal >/dev/null & done; wait'
    netns.run("sh", "-c", script, str(PROGRAM), str(netns.config))
    for family in (4, 6):
        live = netns.rules(family)
        for rule in [*TEAM_LIVE[family], *block(family), JUMP_TO_USER, JUMP_TO_CHAIN]:
            assert live.count(rule) == 1, (family, rule, live)
    netns.checked()


def test_the_watcher_heals_with_the_configuration_an_install_wrote_since_it_started(netns):
    """The watcher runs for as long as the host does; the role or the user data may install another
    configuration meanwhile (here an address allowlisted more). Its next heal uses that one: the
    new allowlist is not undone, and a flush after it (nf_tables) brings the new block back."""
    import time

    netns.program("load")
    watcher = subprocess.Popen(
        ["ip", "netns", "exec", netns.name, "sh", str(PROGRAM), "--config", str(netns.config), "watch"],
        env=netns.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(1)  # its first check, which finds the block as configured
        render(netns.folder, allowed_cidrs=ALLOW[4])
        netns.program("apply")  # what install does after writing the configuration
        time.sleep(1)
        assert netns.chain(4, "ECS-IMDS-BLOCK") == block(4, allowed=ALLOW[4])
        netns.checked()
        if netns.backend == "nft":  # legacy iptables announces nothing: there the timer heals
            netns.run("sh", "-c", "iptables -w -F ECS-IMDS-BLOCK")
            time.sleep(1)
            assert netns.chain(4, "ECS-IMDS-BLOCK") == block(4, allowed=ALLOW[4])
            netns.checked()
    finally:
        watcher.kill()
        out, err = watcher.communicate()
    assert "kept the last one" not in out + err, out + err


def test_load_needs_no_temporary_files_and_no_writable_file_system(netns):
    """At boot the persistence service runs beside systemd-tmpfiles-setup, which empties /tmp:
    load keeps nothing there. Here every file system is read-only (but a fresh /run for the
    locks), with the files already merged."""
    cfg = config(netns.config)
    for family in (4, 6):
        netns.path(family).write_text(
            P.merge(cfg, entry(cfg, family), text(TEAM[family])), encoding="latin-1"
        )
    # Each file system that holds a path load may use read-only (a write is refused: exit 9
    # otherwise), then a fresh /run for the locks; TMPDIR unset.
    readonly = (
        'for f in / /tmp /var/tmp /usr "$1" "$3"; do'
        ' mount -o remount,bind,ro "$(stat -c %m "$f")" || exit; done;'
        ' touch "$3.new" 2>/dev/null && exit 9; mount -t tmpfs tmpfs /run && exec env -u TMPDIR "$0" "$@"'
    )
    argv = ["unshare", "-m", "--propagation", "private", "sh", "-c", readonly, "sh", str(PROGRAM)]
    result = netns.run(*argv, "--config", str(netns.config), "load")
    assert (result.stdout, result.stderr) == ("", "")
    for family in (4, 6):
        for rule in TEAM_LIVE[family]:
            assert netns.rules(family).count(rule) == 1
    netns.checked()


@pytest.mark.parametrize(
    "args",
    [[], ["flush"], ["load", "5"], ["check", "4"], ["apply", "4"], ["install", "--bogus"], ["heal", "now"]],
    ids=lambda args: " ".join(args) or "nothing",
)
def test_bad_usage_exits_2_with_the_usage(tmp_path, args):
    cfg = render(tmp_path)
    result = subprocess.run(["sh", str(PROGRAM), "--config", str(cfg), *args], capture_output=True, text=True)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.startswith("usage: ecs-imds-block [--config FILE] VERB")


BAD_CONFIGS = [
    "missing",
    "not JSON",
    "not UTF-8",
    "a list",
    "action accept",
    "heal interval 0",
    "heal interval 61",
    "IPv6 alone",
    "a setting with a newline",
    "an attribute with a blank",
    "no program",
]


def bad_config(case: str, good: dict) -> bytes | None:
    ecs = good["ecs_config"]
    changed = {
        "action accept": {"action": "accept"},
        "heal interval 0": {"heal": {"enabled": True, "interval": 0}},
        "heal interval 61": {"heal": {"enabled": True, "interval": 61}},
        "IPv6 alone": {"families": good["families"][1:]},
        "a setting with a newline": {"ecs_config": {**ecs, "settings": {"ECS_CLUSTER": "a\nb"}}},
        "an attribute with a blank": {"ecs_config": {**ecs, "attribute": "ecs-imds-block=en forced"}},
        "no program": {"program": ""},
    }
    fixed = {"missing": None, "not JSON": b"{", "not UTF-8": b'{"action": "\xff"}', "a list": b"[]"}
    return fixed[case] if case in fixed else json.dumps({**good, **changed[case]}).encode()


REFUSED_VALUES = {
    "a setting with a newline": (
        "the value of ECS_CLUSTER must be one line of printable text without backslashes, leading or "
        "trailing blanks or a leading quote (ecs-init and systemd read those differently): 'a\\nb'"
    ),
    "an attribute with a blank": "not an ECS attribute NAME=VALUE: 'ecs-imds-block=en forced'",
}


@pytest.mark.parametrize("case", BAD_CONFIGS)
def test_a_missing_or_bad_config_exits_2_in_one_line_naming_the_file(tmp_path, case):
    content = bad_config(case, json.loads(render(tmp_path / "good").read_text()))
    path = tmp_path / "config.json"
    if content is not None:
        path.write_bytes(content)
    for verb in ("check", "load", "ecs-config", "install"):
        result = subprocess.run(
            ["sh", str(PROGRAM), "--config", str(path), verb], capture_output=True, text=True
        )
        assert (result.returncode, result.stdout) == (2, ""), (verb, result.stderr)
        if case in REFUSED_VALUES:  # the value's own refusal, after the file's name
            assert result.stderr == f"ecs-imds-block: {path}: {REFUSED_VALUES[case]}\n"
        else:
            assert result.stderr.startswith(
                f"ecs-imds-block: {path} is missing or not this program's configuration: "
            )
        assert result.stderr.count("\n") == 1, result.stderr


def test_a_family_the_config_does_not_hold_is_refused_as_usage(tmp_path):
    cfg = json.loads(render(tmp_path).read_text())
    cfg["families"] = cfg["families"][:1]
    (tmp_path / "v4.json").write_text(json.dumps(cfg))
    result = subprocess.run(
        ["sh", str(PROGRAM), "--config", str(tmp_path / "v4.json"), "load", "6"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and result.stderr.count("\n") == 1


def test_with_ipv6_off_the_hosts_own_ipv6_file_is_still_loaded_without_our_part(netns):
    """Debian's netfilter-persistent loads both files, and the program's drop-in replaces its start:
    with the block on IPv4 alone, load still loads the host's own rules.v6, as they are, and puts
    nothing of ours in it or in the kernel; check and heal leave IPv6 alone."""
    render(netns.folder, ipv6=False)
    for family in (4, 6):
        netns.path(family).write_bytes(TEAM[family])
    netns.program("load")
    assert netns.path(6).read_bytes() == TEAM[6]
    live = netns.rules(6)
    for rule in TEAM_LIVE[6]:
        assert live.count(rule) == 1, (rule, live)
    assert not [rule for rule in live if "ECS-IMDS-BLOCK" in rule]
    netns.program("load")
    assert netns.rules(6) == live
    netns.run("ip6tables", "-w", "-F")
    assert netns.program("heal").stdout == ""
    netns.checked()


# --- the same program on every Python it must run on -----------------------------------------

# One scenario, run by the interpreter named in $1 in a network namespace of its own on the
# backend $2, its files under $3: Docker's rules, a load, a check, a heal after a flush, an
# admin's save and a load, and ecs-config. Everything it prints is compared across interpreters.
SCENARIO = r"""
set -e
py=$1 backend=$2 root=$3
mkdir -p $root/bin
for t in iptables ip6tables; do for s in "" -save -restore; do
  ln -sf /usr/sbin/$t-$backend$s $root/bin/$t$s
done; done
export PATH=$root/bin:$PATH
prog() {
  echo "## $*"; "$py" "$root/ecs-imds-block" --config "$root/config.json" "$@" 2>&1 || echo "exit $?"
}
show() {
  for t in iptables ip6tables; do echo "## $t-save"; $t-save | grep -v '^#'; done
  for f in rules.v4 rules.v6 ecs.config; do echo "## $f"; grep -v '^# \(Generated\|Completed\)' $root/$f; done
}
for t in iptables ip6tables; do
  $t -w -N DOCKER; $t -w -N DOCKER-USER; $t -w -A DOCKER-USER -j RETURN
  $t -w -A FORWARD -o docker0 -j DOCKER; $t -w -A FORWARD -j DOCKER-USER
done
iptables -w -t nat -A PREROUTING -d 169.254.170.2/32 -p tcp --dport 80 \
  -j DNAT --to-destination 127.0.0.1:51679
prog check
prog load
prog check
show
iptables -w -F; ip6tables -w -F; ip6tables -w -X
prog check
prog heal
prog check
iptables -w -A DOCKER-USER -s 10.3.0.0/16 -j ACCEPT
iptables-save > $root/rules.v4
prog load
prog load 4
prog check
prog ecs-config ECS_CLUSTER=prod
prog ecs-config ECS_CLUSTER=prod
show
"""


def scenario_files(folder: Path) -> Path:
    """The program, its configuration (IPv4 with an allowlist), the team's files and an ecs.config
    of the team's under ``folder``."""
    folder.mkdir(parents=True)
    shutil.copy(PROGRAM, folder / "ecs-imds-block")
    render(folder, allowed_cidrs=ALLOW[4], ecs_settings={"ECS_LOGLEVEL": "info"})
    for family in (4, 6):
        (folder / f"rules.v{family}").write_bytes(TEAM[family])
    (folder / "ecs.config").write_bytes(
        b'ECS_CLUSTER=default\r\nECS_INSTANCE_ATTRIBUTES={"team":"\xc3\x85sa"}\n'
        b"export ECS_AWSVPC_BLOCK_IMDS=false"
    )
    (folder / "scenario.sh").write_text(SCENARIO)
    return folder


def scenario_here(tmp_path: Path, backend: str) -> str:
    """The scenario with this machine's Python 3.11, in a namespace of its own."""
    if sys.version_info[:2] != (3, 11):
        pytest.fail(f"the reference run needs Python 3.11 (tests run on {sys.version})")
    folder = scenario_files(tmp_path / f"here-{backend}")
    argv = ["unshare", "-n", "sh", str(folder / "scenario.sh"), sys.executable, backend, str(folder)]
    result = subprocess.run(argv, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout.replace(str(folder), "ROOT")


def scenario_in(image: str, python: str, tmp_path: Path, backend: str, entrypoint: list[str]) -> str:
    try:
        subprocess.run(["docker", "image", "inspect", image], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError):
        pytest.fail(f"the image {image} is missing: build it with `scripts/build-base-images pythons`")
    folder = scenario_files(tmp_path / f"{python}-{backend}")
    argv = ["docker", "run", "--rm", "--cap-add", "NET_ADMIN", "--cap-add", "SYS_ADMIN"]
    argv += ["--security-opt", "seccomp=unconfined", "--network", "none", "-v", f"{folder}:{folder}"]
    argv += [*entrypoint, image, "unshare", "-n", "sh", f"{folder}/scenario.sh", python, backend, str(folder)]
    result = subprocess.run(argv, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout.replace(str(folder), "ROOT")


INTERPRETERS = {
    "python2.7": ("ecs-imds-pythons", []),
    "python3.9": ("ecs-imds-pythons", []),
    "python3.13": ("ecs-imds-debian13", ["--entrypoint", "env"]),
}


@pytest.mark.docker
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("python", INTERPRETERS)
def test_every_python_does_what_python_3_11_does(netadmin, tmp_path, python, backend):
    """The program on Amazon Linux 2's Python 2.7, Debian 11's 3.9 and Debian 13's 3.13 prints,
    loads and writes exactly what it does on 3.11 here: the same output of each verb, the same
    rules live and the same files (the team's CRLF and UTF-8 bytes included)."""
    image, entrypoint = INTERPRETERS[python]
    theirs = scenario_in(image, python, tmp_path, backend, entrypoint)
    ours = scenario_here(tmp_path, backend)
    assert theirs.splitlines() == ours.splitlines()
    assert "## ecs.config\n" in ours and "reloaded ROOT/rules.v4 whole" in ours
