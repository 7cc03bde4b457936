# Copyright: the ecs-imds-golden authors
# Apache License 2.0
"""The role's filters (filter_plugins/ecs_imds_block.py), directly: the allowlists they accept and
how they spell them, the host program's configuration they render and what they refuse, and the
program as hosts get it (packed: no comments, docstrings or blank lines)."""

from __future__ import annotations

import ast
import io
import ipaddress
import json
import subprocess
import tokenize
import uuid
from pathlib import Path

import pytest
from ecs_imds_block.filter_plugins import ecs_imds_block as filters
from ecs_imds_block.filter_plugins.ecs_imds_block import (
    AnsibleFilterError,
    FilterModule,
    ecs_imds_block_config,
    ecs_imds_block_program,
    normalize_cidrs,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from support.program import DEFAULTS, PROGRAM, config_text, load, names, render
from support.rules import parse_rules

P = load()
IMDS = {4: ipaddress.ip_network("169.254.169.254/32"), 6: ipaddress.ip_network("fd00:ec2::254/128")}
OS_DATA = {
    "persistence": [
        {"family": 4, "path": "/etc/sysconfig/iptables", "service": "iptables.service"},
        {"family": 6, "path": "/etc/sysconfig/ip6tables", "service": "ip6tables.service"},
    ]
}


def rendered(**settings) -> dict:
    return json.loads(ecs_imds_block_config(OS_DATA, names(), {**DEFAULTS, **settings}))


# --- the allowlists ---------------------------------------------------------------------------


def test_the_allowlist_is_spelled_as_the_kernel_prints_it_without_duplicates():
    spelled = ["172.31.250.0/24", "10.0.0.7", "172.31.250.0/24", "10.0.0.7/32"]
    assert normalize_cidrs(spelled, 4) == ["172.31.250.0/24", "10.0.0.7/32"]
    assert normalize_cidrs(["FD00:1::/64", "fd00:1:0::/64"], 6) == ["fd00:1::/64"]
    assert normalize_cidrs([], 6) == []


def test_the_allowlist_must_be_a_list_not_a_string():
    with pytest.raises(AnsibleFilterError, match=r"IPv4 allowlist must be a list of CIDRs, got '10.0.0.0/8'"):
        normalize_cidrs("10.0.0.0/8", 4)


INJECTION = "fe80::%lo\n-I DOCKER-USER 1 -j ACCEPT\n#/128"
ONLY = "only an address and a prefix length, in ASCII digits, hex letters, '.', ':' and '/'"
EVERY = (
    "covers every address together, so it would allow every container to reach IMDS; "
    "turn bridge blocking off instead if that is what you mean"
)


def link_local(cidr: str, network: str) -> str:
    return (
        f"imds_rules: {cidr!r} overlaps {network}, IMDS's own link-local network: "
        "no container source there may be allowlisted"
    )


@pytest.mark.parametrize(
    ("family", "allowed", "message"),
    [
        (6, [INJECTION], f"imds_rules: invalid CIDR {INJECTION!r}: a scope id (%) is not allowed"),
        (6, ["fe80::1%eth0"], "imds_rules: invalid CIDR 'fe80::1%eth0': a scope id (%) is not allowed"),
        (4, ["10.0.0.0/8\n-A DOCKER-USER -j ACCEPT"],
         f"imds_rules: invalid CIDR '10.0.0.0/8\\n-A DOCKER-USER -j ACCEPT': {ONLY}"),
        (4, ["10.0.0.0/8\n"], f"imds_rules: invalid CIDR '10.0.0.0/8\\n': {ONLY}"),
        (4, [" 10.0.0.0/8"], f"imds_rules: invalid CIDR ' 10.0.0.0/8': {ONLY}"),
        (4, ["10.0.0.0/\u0668"], f"imds_rules: invalid CIDR '10.0.0.0/\u0668': {ONLY}"),
        (4, ["10.0.0.300/24"], "imds_rules: invalid CIDR '10.0.0.300/24': "
         "'10.0.0.300/24' does not appear to be an IPv4 or IPv6 network"),
        (4, ["10.0.0.1/24"], "imds_rules: invalid CIDR '10.0.0.1/24': 10.0.0.1/24 has host bits set"),
        (4, [24], "imds_rules: CIDR must be a string, got 24"),
        (4, ["0.0.0.0/0"], "imds_rules: '0.0.0.0/0' would allow every container to reach IMDS; "
         "turn bridge blocking off instead if that is what you mean"),
        (6, ["10.0.0.0/8"], "imds_rules: '10.0.0.0/8' is an IPv4 network in the IPv6 allowlist"),
        (4, ["fd00::/8"], "imds_rules: 'fd00::/8' is an IPv6 network in the IPv4 allowlist"),
        (4, ["0.0.0.0/1", "128.0.0.0/1"],
         f"imds_rules: the IPv4 allowlist ['0.0.0.0/1', '128.0.0.0/1'] {EVERY}"),
        (6, ["::/1", "8000::/1"], f"imds_rules: the IPv6 allowlist ['::/1', '8000::/1'] {EVERY}"),
        (4, ["0.0.0.0/2", "64.0.0.0/2", "128.0.0.0/1"],
         f"imds_rules: the IPv4 allowlist ['0.0.0.0/2', '64.0.0.0/2', '128.0.0.0/1'] {EVERY}"),
        (4, ["169.254.169.254"], link_local("169.254.169.254", "169.254.0.0/16")),
        (4, ["169.254.0.0/24"], link_local("169.254.0.0/24", "169.254.0.0/16")),
        (4, ["168.0.0.0/6"], link_local("168.0.0.0/6", "169.254.0.0/16")),
        (6, ["fe80::/64"], link_local("fe80::/64", "fe80::/10")),
        (6, ["fd00:ec2::254"], link_local("fd00:ec2::254", "fd00:ec2::/32")),
        (6, ["fd00::/8"], link_local("fd00::/8", "fd00:ec2::/32")),
    ],
)  # fmt: skip
def test_hostile_or_bad_allowlists_are_refused_in_one_line_naming_the_value(family, allowed, message):
    """Refused by normalize_cidrs, and so by the configuration filter, in the same words."""
    with pytest.raises(AnsibleFilterError) as error:
        normalize_cidrs(allowed, family)
    assert str(error.value) == message and "\n" not in str(error.value)
    key = "allowed_cidrs" if family == 4 else "allowed_cidrs_v6"
    with pytest.raises(AnsibleFilterError) as error:
        rendered(**{key: allowed})
    assert str(error.value) == message


# --- properties: random allowlists through the filter and the program's merge ------------------

BITS = {4: 32, 6: 128}


@st.composite
def networks(draw, family):
    prefix = draw(st.integers(min_value=1, max_value=BITS[family]))
    address = draw(st.integers(min_value=0, max_value=2 ** BITS[family] - 1))
    kind = ipaddress.IPv4Network if family == 4 else ipaddress.IPv6Network
    return kind((address, prefix), strict=False)


def allowlists(family):
    forbidden = filters.LINK_LOCAL[family]
    usable = networks(family).filter(lambda net: not any(net.overlaps(bad) for bad in forbidden))
    return st.lists(usable, max_size=8)


@st.composite
def cases(draw):
    family = draw(st.sampled_from([4, 6]))
    allowed = draw(allowlists(family))
    # Written as a person might: a bare address for a host, upper-case IPv6 sometimes.
    spelled = [
        str(net.network_address) if net.prefixlen == BITS[family] and draw(st.booleans()) else str(net)
        for net in allowed
    ]
    spelled = [text.upper() if draw(st.booleans()) else text for text in spelled]
    return family, allowed, spelled, draw(st.sampled_from(filters.ACTIONS)), draw(st.booleans())


def our_part(family: int, settings: dict) -> str:
    """The rules file the program writes where there was none, for the filter's configuration."""
    text = config_text(Path("/nowhere"), **settings)
    cfg = {**json.loads(text), "raw": text}
    (entry,) = [e for e in cfg["families"] if e["family"] == family]
    return P.merge(cfg, entry, "")


@settings(max_examples=300, deadline=None)
@given(cases())
def test_random_allowlists_parse_back_to_exactly_the_expected_rules(case):
    """An allowlist as a person spells it comes out of the filter and the program as exactly its
    networks, in order, without duplicates, each a RETURN above the block."""
    family, allowed, spelled, action, bridge = case
    key = "allowed_cidrs" if family == 4 else "allowed_cidrs_v6"
    try:
        text = our_part(family, {key: spelled, "action": action, "bridge": bridge})
    except AnsibleFilterError as error:  # only when the networks cover the family together
        assert list(ipaddress.collapse_addresses(allowed)) == [filters.EVERYTHING[family]], error
        return
    parsed = parse_rules(text)
    imds = IMDS[family]
    sources = list(dict.fromkeys(allowed))
    block = [(None, imds, "REJECT"), (None, imds, "REJECT")] if action == "reject" else [(None, imds, "DROP")]
    rules = [(rule["source"], rule["destination"], rule["target"]) for rule in parsed["rules"]]
    assert rules == ([(net, imds, "RETURN") for net in sources] + block if bridge else [])
    assert parsed["tables"] == ["filter"] and parsed["commits"] == 1
    assert parsed["chains"] == ["ECS-IMDS-BLOCK - [0:0]", "DOCKER-USER - [0:0]"]
    assert parsed["jumps"] == ["-I DOCKER-USER 1 -j ECS-IMDS-BLOCK", "-I FORWARD 1 -j DOCKER-USER"]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([4, 6]), st.lists(st.text(max_size=40), max_size=4))
def test_any_strings_are_refused_in_one_line_or_rendered_as_exactly_their_rules(family, allowed):
    key = "allowed_cidrs" if family == 4 else "allowed_cidrs_v6"
    try:
        text = our_part(family, {key: allowed})
    except AnsibleFilterError as error:
        assert "\n" not in str(error)
        return
    parsed = parse_rules(text)  # every line is one the program writes
    sources = [ipaddress.ip_network(source) for source in normalize_cidrs(allowed, family)]
    assert [rule["source"] for rule in parsed["rules"]] == [*sources, None, None]


# --- the configuration ------------------------------------------------------------------------


def test_the_defaults_render_the_configuration_keys_sorted():
    text = ecs_imds_block_config(OS_DATA, names(), DEFAULTS)
    expected = {
        "action": "reject",
        "bridge": True,
        "ecs_config": {
            "at_agent_start": {"ECS_AWSVPC_BLOCK_IMDS": "true"},
            "attribute": "ecs-imds-block=enforced",
            "attribute_on": True,
            "path": "/etc/ecs/ecs.config",
            "settings": {"ECS_AWSVPC_BLOCK_IMDS": "true"},
        },
        "families": [
            {
                "allowed": [],
                "block": True,
                "family": 4,
                "path": "/etc/sysconfig/iptables",
                "service": "iptables.service",
            },
            {
                "allowed": [],
                "block": True,
                "family": 6,
                "path": "/etc/sysconfig/ip6tables",
                "service": "ip6tables.service",
            },
        ],
        "heal": {"backstop": 60, "enabled": True, "interval": 3},
        "imds": {"4": "169.254.169.254", "6": "fd00:ec2::254"},
        "program": "/usr/local/sbin/ecs-imds-block",
        "units": {
            "docker": "docker.service",
            "dropin": "50-ecs-imds-block.conf",
            "ecs": "ecs.service",
            "heal": "ecs-imds-block-heal",
            "watch": "ecs-imds-block-watch",
        },
    }
    assert text == json.dumps(expected, indent=2, sort_keys=True) + "\n"


@pytest.mark.parametrize(
    ("settings", "changed"),
    [
        ({"ipv6": False}, {"families": lambda c: [c["families"][0], {**c["families"][1], "block": False}]}),
        ({"action": "drop"}, {"action": lambda c: "drop"}),
        ({"bridge": False}, {"bridge": lambda c: False, "ecs_config.attribute_on": lambda c: False}),
        ({"attribute": False}, {"ecs_config.attribute_on": lambda c: False}),
        (
            {"awsvpc": False},
            {
                "ecs_config.settings": lambda c: {"ECS_AWSVPC_BLOCK_IMDS": "false"},
                "ecs_config.at_agent_start": lambda c: {},
            },
        ),
        (
            {"ecs_settings": {"ECS_CLUSTER": "prod", "ECS_LOGLEVEL": "info"}},
            {
                "ecs_config.settings": lambda c: {
                    "ECS_CLUSTER": "prod",
                    "ECS_LOGLEVEL": "info",
                    "ECS_AWSVPC_BLOCK_IMDS": "true",
                }
            },
        ),
        (
            {"heal": False, "heal_interval": 60, "heal_backstop": 600},
            {"heal": lambda c: {"enabled": False, "interval": 60, "backstop": 600}},
        ),
        ({"ecs_config_path": "/srv/ecs.config"}, {"ecs_config.path": lambda c: "/srv/ecs.config"}),
        (
            {"allowed_cidrs": ["10.0.0.7", "10.0.0.7/32"], "allowed_cidrs_v6": ["FD00:1::/64"]},
            {
                "families": lambda c: [
                    {**c["families"][0], "allowed": ["10.0.0.7/32"]},
                    {**c["families"][1], "allowed": ["fd00:1::/64"]},
                ]
            },
        ),
    ],
    ids=[
        "ipv6-off",
        "drop",
        "bridge-off",
        "attribute-off",
        "awsvpc-off",
        "ecs-settings",
        "heal-off",
        "path",
        "allow",
    ],
)
def test_each_setting_changes_only_its_own_part_of_the_configuration(settings, changed):
    default = rendered()
    expected = json.loads(json.dumps(default))
    for dotted, value in changed.items():
        *parents, key = dotted.split(".")
        target = expected
        for parent in parents:
            target = target[parent]
        target[key] = value(default)
    assert rendered(**settings) == expected


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"action": "deny"}, "imds_rules: action must be one of ('reject', 'drop'), got 'deny'"),
        ({"heal_interval": 0}, "ecs_imds_block_heal_interval must be 1-60 seconds, not 0"),
        ({"heal_interval": 61}, "ecs_imds_block_heal_interval must be 1-60 seconds, not 61"),
        (
            {"ecs_settings": {"ECS_AWSVPC_BLOCK_IMDS": "false"}},
            "ecs_imds_block_ecs_settings sets ECS_AWSVPC_BLOCK_IMDS; use ecs_imds_block_awsvpc instead",
        ),
        ({"bridge": "yes"}, "ecs_imds_block_bridge must be a bool, got 'yes'"),
        ({"ipv6": 1}, "ecs_imds_block_ipv6 must be a bool, got 1"),
        ({"heal_interval": True}, "ecs_imds_block_heal_interval must be a int, got True"),
        ({"heal_interval": "3"}, "ecs_imds_block_heal_interval must be a int, got '3'"),
        ({"action": None}, "ecs_imds_block_action must be a str, got None"),
        (
            {"ecs_settings": ["ECS_CLUSTER=x"]},
            "ecs_imds_block_ecs_settings must be a dict, got ['ECS_CLUSTER=x']",
        ),
        ({"allowed_cidrs": "10.0.0.0/8"}, "ecs_imds_block_allowed_cidrs must be a list, got '10.0.0.0/8'"),
        (
            {"ecs_config_path": "etc/ecs/ecs.config"},
            "ecs_imds_block_ecs_config_path must be absolute: 'etc/ecs/ecs.config'",
        ),
    ],
    ids=lambda value: None if isinstance(value, str) else "-".join(f"{k}={v}" for k, v in value.items()),
)
def test_bad_settings_are_refused_in_one_line_naming_the_value(settings, message):
    with pytest.raises(AnsibleFilterError) as error:
        rendered(**settings)
    assert str(error.value) == message


def test_missing_settings_are_named():
    partial = {key: value for key, value in DEFAULTS.items() if key not in ("heal", "action")}
    with pytest.raises(AnsibleFilterError) as error:
        ecs_imds_block_config(OS_DATA, names(), partial)
    assert str(error.value).startswith("ecs_imds_block_config: settings lack ['action', 'heal']: ")
    assert "\n" not in str(error.value)


def test_filter_module_exports():
    assert set(FilterModule().filters()) == {
        "ecs_imds_block_config",
        "ecs_imds_block_program",
        "ecs_config_settings",
    }


# --- the program as hosts get it --------------------------------------------------------------


def without_docstrings(tree: ast.Module) -> ast.Module:
    """``tree`` without the docstrings of its functions and classes (the module's is the sh
    header, which stays)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.ClassDef) and ast.get_docstring(node, clean=False):
            node.body = node.body[1:] or [ast.Pass()]
    return tree


def test_the_packed_program_is_the_same_code_without_comments_docstrings_or_blank_lines():
    source = PROGRAM.read_text()
    packed = ecs_imds_block_program(source)
    assert ast.dump(ast.parse(packed)) == ast.dump(without_docstrings(ast.parse(source)))
    header = source.splitlines(keepends=True)[:5]
    assert header[0] == "#!/bin/sh\n" and header[-1] == '":"""\n'
    assert packed.startswith("".join(header))
    comments = [
        (token.start[0], token.string)
        for token in tokenize.generate_tokens(io.StringIO(packed).readline)
        if token.type == tokenize.COMMENT
    ]
    assert comments == [(1, "#!/bin/sh")]
    assert "" not in [line.strip() for line in packed.splitlines()]
    assert len(packed) < len(source)  # what the user data's 16 KB gains


def test_the_packed_program_runs_under_sh(netadmin, tmp_path):
    """Packed, it still finds its Python through the sh header and does its work: in a network
    namespace of its own, check finds both families off, load puts them on, check passes."""
    packed = tmp_path / "ecs-imds-block"
    packed.write_text(ecs_imds_block_program(PROGRAM.read_text()))
    cfg = render(tmp_path / "host")
    name = f"ecs-imds-packed-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:

        def run(*args: str) -> tuple[int, str]:
            argv = ["ip", "netns", "exec", name, "sh", str(packed), "--config", str(cfg), *args]
            result = subprocess.run(argv, capture_output=True, text=True)
            return result.returncode, result.stdout

        assert run("check") == (1, "4\n6\nnft\n")
        put_back = "ecs-imds-block: put the block back between its markers in "
        assert run("load") == (
            0,
            "".join(f"{put_back}{tmp_path}/host/rules.v{family}\n" for family in (4, 6)),
        )
        assert run("check") == (0, "")
    finally:
        subprocess.run(["ip", "netns", "del", name], check=True)
