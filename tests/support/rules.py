# Copyright: the ecs-imds-golden authors
# Apache License 2.0
"""Our part of a rules file read back as iptables-restore reads it, for the property tests of the
role's filter and the host program: what they write is checked here, not by them at run time."""

from __future__ import annotations

import ipaddress
import re

CHAIN, USER = "ECS-IMDS-BLOCK", "DOCKER-USER"
JUMPS = (f"-I {USER} 1 -j {CHAIN}", f"-I FORWARD 1 -j {USER}")
# A rule of our chain, of the shapes the program writes.
RULE = re.compile(
    rf"-A {CHAIN}"
    r"(?: -s (?P<source>[0-9a-f.:]+/[0-9]{1,3}))?"
    r" -d (?P<destination>[0-9a-f.:]+/[0-9]{1,3})"
    r"(?: -p (?P<protocol>tcp))?"
    r" -j (?P<target>RETURN|REJECT|DROP)"
    r"(?: --reject-with (?P<reject_with>[a-z0-9-]+))?\Z"
)


def parse_rules(text: str) -> dict:
    """Lines split at newlines only, blank lines and lines starting with ``#`` skipped, as
    iptables-restore reads them. Returns ``{"tables", "chains", "jumps", "rules", "commits"}``;
    each rule of our chain is a dict of its source and destination (ip_network or None),
    protocol, target and reject-with. AssertionError, quoting the line, on any other line."""
    parsed = {"tables": [], "chains": [], "jumps": [], "rules": [], "commits": 0}
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
        elif line in JUMPS:
            parsed["jumps"].append(line)
        elif rule:
            fields = rule.groupdict()
            for key in ("source", "destination"):
                if fields[key] is not None:
                    fields[key] = ipaddress.ip_network(fields[key], strict=True)
            parsed["rules"].append(fields)
        else:
            raise AssertionError(f"line {number} {line!r} is not a line the program writes")
    return parsed
