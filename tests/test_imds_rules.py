# Copyright: the ecs-imds-golden authors
# Apache License 2.0
"""The rules renderer, directly: good and bad inputs."""

from __future__ import annotations

import ipaddress

import imds_rules as module
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from imds_rules import AnsibleFilterError, FilterModule, imds_rules, normalize_cidrs
from support.rules import parse_rules


def body(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def test_default_v4_rejects_tcp_with_reset_and_the_rest_with_unreachable():
    assert body(imds_rules(4)) == [
        "*filter",
        ":DOCKER-USER - [0:0]",
        "-I FORWARD 1 -j DOCKER-USER",
        "-A DOCKER-USER -d 169.254.169.254/32 -p tcp -j REJECT --reject-with tcp-reset",
        "-A DOCKER-USER -d 169.254.169.254/32 -j REJECT --reject-with icmp-port-unreachable",
        "-A DOCKER-USER -j RETURN",
        "COMMIT",
    ]


def test_v6_uses_the_v6_endpoint_and_icmp6():
    lines = body(imds_rules(6))
    assert "-A DOCKER-USER -d fd00:ec2::254/128 -p tcp -j REJECT --reject-with tcp-reset" in lines
    assert "-A DOCKER-USER -d fd00:ec2::254/128 -j REJECT --reject-with icmp6-port-unreachable" in lines


def test_drop_is_one_rule():
    assert [line for line in body(imds_rules(4, action="drop")) if "169.254.169.254" in line] == [
        "-A DOCKER-USER -d 169.254.169.254/32 -j DROP"
    ]


def test_allowlist_comes_before_the_block_normalized_and_deduplicated():
    lines = body(imds_rules(4, allowed_cidrs=["172.31.250.0/24", "10.0.0.7", "172.31.250.0/24"]))
    assert lines[3:6] == [
        "-A DOCKER-USER -s 172.31.250.0/24 -d 169.254.169.254/32 -j RETURN",
        "-A DOCKER-USER -s 10.0.0.7/32 -d 169.254.169.254/32 -j RETURN",
        "-A DOCKER-USER -d 169.254.169.254/32 -p tcp -j REJECT --reject-with tcp-reset",
    ]
    assert normalize_cidrs(["FD00:1::/64"], 6) == ["fd00:1::/64"]


def test_disabled_keeps_the_chain_and_jump_but_no_block():
    lines = body(imds_rules(4, allowed_cidrs=["10.0.0.0/8"], enabled=False))
    assert lines == [
        "*filter",
        ":DOCKER-USER - [0:0]",
        "-I FORWARD 1 -j DOCKER-USER",
        "-A DOCKER-USER -j RETURN",
        "COMMIT",
    ]


def test_output_ends_with_newline_and_is_deterministic():
    assert imds_rules(6, allowed_cidrs=["fd00:1::/64"]) == imds_rules(6, allowed_cidrs=("fd00:1::/64",))
    assert imds_rules(4).endswith("COMMIT\n")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"family": 5}, "address family must be 4 or 6, got 5"),
        ({"family": True}, "address family must be 4 or 6, got True"),
        ({"family": "4"}, "address family must be 4 or 6, got '4'"),
        ({"action": "deny"}, "action must be one of ('reject', 'drop'), got 'deny'"),
        ({"enabled": "yes"}, "enabled must be a boolean, got 'yes'"),
        ({"allowed_cidrs": ["10.0.0.300/24"]}, "invalid CIDR '10.0.0.300/24'"),
        ({"allowed_cidrs": ["10.0.0.1/24"]}, "invalid CIDR '10.0.0.1/24': 10.0.0.1/24 has host bits set"),
        ({"allowed_cidrs": [24]}, "CIDR must be a string, got 24"),
        ({"allowed_cidrs": ["0.0.0.0/0"]}, "'0.0.0.0/0' would allow every container to reach IMDS"),
        (
            {"family": 6, "allowed_cidrs": ["10.0.0.0/8"]},
            "'10.0.0.0/8' is an IPv4 network in the IPv6 allowlist",
        ),
        ({"family": 4, "allowed_cidrs": ["fd00::/8"]}, "'fd00::/8' is an IPv6 network in the IPv4 allowlist"),
    ],
)
def test_bad_input_names_the_bad_value(kwargs, message):
    family = kwargs.pop("family", 4)
    with pytest.raises(AnsibleFilterError) as err:
        imds_rules(family, **kwargs)
    assert message in str(err.value)


def test_allowlist_must_be_a_list_not_a_string():
    with pytest.raises(AnsibleFilterError, match=r"IPv4 allowlist must be a list of CIDRs, got '10.0.0.0/8'"):
        normalize_cidrs("10.0.0.0/8", 4)


def test_filter_module_exports():
    assert set(FilterModule().filters()) == {"imds_rules"}


# --- hostile input (issue 12): each case, its exact one-line message ---------------------------

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
def test_hostile_allowlists_are_refused_with_one_line(family, allowed, message):
    with pytest.raises(AnsibleFilterError) as err:
        imds_rules(family, allowed_cidrs=allowed)
    assert str(err.value) == message
    assert "\n" not in str(err.value)


# --- properties: random allowlists round-trip through the rendered file ------------------------

BITS = {4: 32, 6: 128}


@st.composite
def networks(draw, family):
    prefix = draw(st.integers(min_value=1, max_value=BITS[family]))
    address = draw(st.integers(min_value=0, max_value=2 ** BITS[family] - 1))
    kind = ipaddress.IPv4Network if family == 4 else ipaddress.IPv6Network
    return kind((address, prefix), strict=False)


def allowlists(family):
    forbidden = module.LINK_LOCAL[family]
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
    return family, allowed, spelled, draw(st.sampled_from(module.ACTIONS)), draw(st.booleans())


@settings(max_examples=300, deadline=None)
@given(cases())
def test_random_allowlists_parse_back_to_exactly_the_expected_rules(case):
    family, allowed, spelled, action, enabled = case
    text = imds_rules(family, action, spelled, enabled)
    parsed = parse_rules(text)
    imds = module.IMDS[family]
    sources = list(dict.fromkeys(allowed))  # the allowlist, duplicates removed, in order
    rules = [(rule["source"], rule["destination"], rule["target"]) for rule in parsed["rules"]]
    block = [] if not enabled else (
        [(None, imds, "REJECT"), (None, imds, "REJECT")] if action == "reject" else [(None, imds, "DROP")]
    )  # fmt: skip
    assert rules == ([(net, imds, "RETURN") for net in sources] if enabled else []) + block + [
        (None, None, "RETURN")
    ]
    assert parsed["tables"] == ["filter"] and parsed["chains"] == ["DOCKER-USER - [0:0]"]
    assert parsed["forward"] == ["-I FORWARD 1 -j DOCKER-USER"] and parsed["commits"] == 1
    body_lines = [line for line in text.split("\n") if line and not line.startswith("#")]
    assert len(body_lines) == 4 + len(rules)  # *filter, the chain, the jump, the rules, COMMIT


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([4, 6]), st.lists(st.text(max_size=40), max_size=4))
def test_any_strings_are_refused_or_rendered_as_exactly_their_rules(family, allowed):
    try:
        text = imds_rules(family, "reject", allowed, True)
    except AnsibleFilterError as err:
        assert "\n" not in str(err).replace("\\n", "")
        return
    parse_rules(text)  # every line is one the filter writes, read as iptables-restore reads it
    lines = [line for line in text.split("\n") if line and not line.startswith("#")]
    sources = normalize_cidrs(allowed, family)
    assert lines[3 : 3 + len(sources)] == [
        f"-A DOCKER-USER -s {source} -d {module.IMDS[family]} -j RETURN" for source in sources
    ]
    assert len(lines) == 4 + len(sources) + 3
