# Copyright: the ecs-imds-golden authors
# Apache License 2.0
"""A rendered rules file read back as iptables-restore reads it, for the property tests of the
imds_rules filter: what the filter writes is checked here, not by the filter at run time."""

from __future__ import annotations

import ipaddress
import re

CHAIN = "DOCKER-USER"
JUMP = f"-I FORWARD 1 -j {CHAIN}"
# A DOCKER-USER rule of the shapes the filter writes.
RULE = re.compile(
    rf"-A {CHAIN}"
    r"(?: -s (?P<source>[0-9a-f.:]+/[0-9]{1,3}))?"
    r"(?: -d (?P<destination>[0-9a-f.:]+/[0-9]{1,3}))?"
    r"(?: -p (?P<protocol>tcp))?"
    r" -j (?P<target>RETURN|REJECT|DROP)"
    r"(?: --reject-with (?P<reject_with>[a-z0-9-]+))?\Z"
)


def parse_rules(text: str) -> dict:
    """Lines split at newlines only, blank lines and lines starting with ``#`` skipped, as
    iptables-restore reads them. Returns ``{"tables", "chains", "forward", "rules", "commits"}``;
    each ``DOCKER-USER`` rule is a dict of its source (an ip_network or None), destination,
    protocol, target and reject-with. AssertionError, quoting the line, on any other line."""
    parsed = {"tables": [], "chains": [], "forward": [], "rules": [], "commits": 0}
    for number, line in enumerate(text.split("\n"), start=1):
        if not line or line.startswith("#"):
            continue
        rule = RULE.match(line)
        if line.startswith("*"):
            parsed["tables"].append(line[1:])
        elif line.startswith(":"):
            parsed["chains"].append(line[1:])
        elif line == "COMMIT":
            parsed["commits"] += 1
        elif line == JUMP:
            parsed["forward"].append(line)
        elif rule:
            fields = rule.groupdict()
            if fields["source"] is not None:
                fields["source"] = ipaddress.ip_network(fields["source"], strict=True)
            parsed["rules"].append(fields)
        else:
            raise AssertionError(f"line {number} {line!r} is not a rule the filter writes")
    return parsed
