"""The rules renderer, directly: good and bad inputs."""

from __future__ import annotations

import pytest
from imds_rules import AnsibleFilterError, FilterModule, imds_rules, normalize_cidrs


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
    assert set(FilterModule().filters()) == {"imds_rules", "imds_cidrs"}
