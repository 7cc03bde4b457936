# Copyright: the ecs-imds-golden authors
# Apache License 2.0

"""The ecs_imds_block role's filters: they check the role's variables and render the host
program's configuration, and pack the program for a host.

Plain Python on purpose: `golden-ami user-data` imports this module, so a host on the golden AMI
and a host protected by user data get the same program and the same configuration, byte for byte.
"""

from __future__ import annotations

import ast
import difflib
import io
import ipaddress
import json
import re
import sys
import tokenize

DOCUMENTATION = r"""
  name: ecs_imds_block_config
  short_description: The configuration of the ecs-imds-block host program, as JSON text
  description:
    - Checks the role's variables and renders what the host program (files/ecs-imds-block)
      reads from /etc/ecs-imds-block/config.json, keys sorted, so that the role and
      C(golden-ami user-data) write the same bytes for the same settings.
    - Refused, naming the bad value, are an unknown action, a heal interval outside 1-60, a
      setting of the role's own ECS keys, and allowlists as O(settings.allowed_cidrs) describes.
  positional: _input, names, settings
  options:
    _input:
      description: The OS data of the host (C(ecs_imds_block__os) of vars/<platform>.yml).
      type: dict
      required: true
    names:
      description: The role's names (C(ecs_imds_block__names) of vars/main.yml).
      type: dict
      required: true
    settings:
      description:
        - C(bridge), C(awsvpc), C(ipv6), C(attribute), C(heal) (booleans), C(action)
          (C(reject) or C(drop)), C(heal_interval) and C(heal_backstop) (seconds),
          C(ecs_config_path), C(ecs_settings) (as ecs_config_settings renders them) and
          C(allowed_cidrs), C(allowed_cidrs_v6).
        - C(allowed_cidrs) and C(allowed_cidrs_v6) are source networks that may still reach IMDS,
          each an address with an optional prefix length in ASCII digits, hex letters, C(.), C(:)
          and C(/) only (no scope id, whitespace or newline). Refused, naming the value, are host
          bits set, a network of the other family, a list whose union covers every address of
          the family (C(0.0.0.0/0), or C(0.0.0.0/1) with C(128.0.0.0/1)), and any source
          overlapping IMDS's own link-local network (IPv4 C(169.254.0.0/16); IPv6 C(fe80::/10)
          and C(fd00:ec2::/32)): no container holds such an address legitimately.
      type: dict
      required: true
"""

EXAMPLES = r"""
- name: The host program's configuration for this host
  ansible.builtin.debug:
    msg: "{{ ecs_imds_block__os | ecs_imds_block_config(ecs_imds_block__names, {'bridge': true, ...}) }}"
"""

RETURN = r"""
  _value:
    description: The configuration, JSON with its keys sorted, ending with a newline.
    type: str
"""


def _error_class():
    """Ansible's AnsibleFilterError when Ansible loaded the filters, else ValueError. Importing
    ansible.errors from the golden-ami CLI would read an ansible.cfg in the user's current folder
    and print Ansible's warnings on the CLI's stderr."""
    if "ansible.plugins.loader" in sys.modules:
        from ansible.errors import AnsibleFilterError

        return AnsibleFilterError
    return ValueError


AnsibleFilterError = _error_class()

ACTIONS = ("reject", "drop")
# The role's own ECS settings, which ecs_imds_block_ecs_settings may not set.
OWNED = {"ECS_AWSVPC_BLOCK_IMDS": "ecs_imds_block_awsvpc"}
# Sources never allowlisted: IMDS's own link-local network (and, for IPv6, the network of its
# IPv6 endpoint).
LINK_LOCAL = {
    4: (ipaddress.ip_network("169.254.0.0/16"),),
    6: (ipaddress.ip_network("fe80::/10"), ipaddress.ip_network("fd00:ec2::/32")),
}
EVERYTHING = {4: ipaddress.ip_network("0.0.0.0/0"), 6: ipaddress.ip_network("::/0")}
# An address and an optional prefix length, in ASCII: no scope id, no whitespace, no newline.
_CIDR = re.compile(r"[0-9A-Fa-f.:]+(?:/[0-9]{1,3})?\Z")
SETTINGS = {
    "bridge": bool, "awsvpc": bool, "ipv6": bool, "attribute": bool, "heal": bool, "action": str,
    "heal_interval": int, "heal_backstop": int, "ecs_config_path": str, "ecs_settings": dict,
    "allowed_cidrs": list, "allowed_cidrs_v6": list,
}  # fmt: skip


def normalize_cidrs(cidrs, family):
    """The allowlist as the kernel prints its networks, duplicates removed."""
    if isinstance(cidrs, str) or not isinstance(cidrs, (list, tuple)):
        raise AnsibleFilterError(
            f"imds_rules: the IPv{family} allowlist must be a list of CIDRs, got {cidrs!r}"
        )
    parsed = []
    for cidr in cidrs:
        if not isinstance(cidr, str):
            raise AnsibleFilterError(f"imds_rules: CIDR must be a string, got {cidr!r}")
        if "%" in cidr:
            raise AnsibleFilterError(f"imds_rules: invalid CIDR {cidr!r}: a scope id (%) is not allowed")
        if not _CIDR.match(cidr):
            raise AnsibleFilterError(
                f"imds_rules: invalid CIDR {cidr!r}: only an address and a prefix length, "
                "in ASCII digits, hex letters, '.', ':' and '/'"
            )
        try:
            network = ipaddress.ip_network(cidr, strict=True)
        except ValueError as exc:
            raise AnsibleFilterError(f"imds_rules: invalid CIDR {cidr!r}: {exc}") from exc
        if network.version != family:
            raise AnsibleFilterError(
                f"imds_rules: {cidr!r} is an IPv{network.version} network in the IPv{family} allowlist"
            )
        if network.prefixlen == 0:
            raise AnsibleFilterError(
                f"imds_rules: {cidr!r} would allow every container to reach IMDS; "
                "turn bridge blocking off instead if that is what you mean"
            )
        parsed.append((cidr, network))
    if list(ipaddress.collapse_addresses(network for _, network in parsed)) == [EVERYTHING[family]]:
        raise AnsibleFilterError(
            f"imds_rules: the IPv{family} allowlist {list(cidrs)!r} covers every address together, "
            "so it would allow every container to reach IMDS; "
            "turn bridge blocking off instead if that is what you mean"
        )
    networks = []
    for cidr, network in parsed:
        for link_local in LINK_LOCAL[family]:
            if network.overlaps(link_local):
                raise AnsibleFilterError(
                    f"imds_rules: {cidr!r} overlaps {link_local}, IMDS's own link-local network: "
                    "no container source there may be allowlisted"
                )
        if str(network) not in networks:
            networks.append(str(network))
    return networks


def ecs_imds_block_config(os_data, names, settings):
    """See DOCUMENTATION."""
    missing = sorted(set(SETTINGS) - set(settings or ()))
    if not isinstance(settings, dict) or missing:
        raise AnsibleFilterError(f"ecs_imds_block_config: settings lack {missing}: {settings!r}")
    for key, kind in SETTINGS.items():
        if not isinstance(settings[key], kind) or (kind is int and isinstance(settings[key], bool)):
            raise AnsibleFilterError(f"ecs_imds_block_{key} must be a {kind.__name__}, got {settings[key]!r}")
    if settings["action"] not in ACTIONS:
        raise AnsibleFilterError(f"imds_rules: action must be one of {ACTIONS}, got {settings['action']!r}")
    if not 1 <= settings["heal_interval"] <= 60:
        raise AnsibleFilterError(
            f"ecs_imds_block_heal_interval must be 1-60 seconds, not {settings['heal_interval']}"
        )
    if not 10 <= settings["heal_backstop"] <= 3600:
        raise AnsibleFilterError(
            f"ecs_imds_block_heal_backstop must be 10-3600 seconds, not {settings['heal_backstop']}"
        )
    owned = sorted(set(settings["ecs_settings"]) & set(OWNED))
    if owned:
        raise AnsibleFilterError(
            f"ecs_imds_block_ecs_settings sets {', '.join(owned)}; use {OWNED[owned[0]]} instead"
        )
    if not settings["ecs_config_path"].startswith("/"):
        raise AnsibleFilterError(
            f"ecs_imds_block_ecs_config_path must be absolute: {settings['ecs_config_path']!r}"
        )
    allowed = {
        4: normalize_cidrs(settings["allowed_cidrs"], 4),
        6: normalize_cidrs(settings["allowed_cidrs_v6"], 6),
    }
    awsvpc = {"ECS_AWSVPC_BLOCK_IMDS": "true" if settings["awsvpc"] else "false"}
    attribute = names["attribute"]
    config = {
        "program": names["program"],
        "units": names["units"],
        "imds": {str(family): address for family, address in names["imds"].items()},
        "bridge": settings["bridge"],
        "action": settings["action"],
        # Every family the persistence services load: one the block leaves alone (IPv6 with
        # ecs_imds_block_ipv6 false) is still loaded at boot, the host's own rules alone.
        "families": [
            {
                "family": e["family"],
                "path": e["path"],
                "service": e["service"],
                "allowed": allowed[e["family"]],
                "block": e["family"] == 4 or settings["ipv6"],
            }
            for e in os_data["persistence"]
        ],
        "heal": {
            "enabled": settings["heal"],
            "interval": settings["heal_interval"],
            "backstop": settings["heal_backstop"],
        },
        "ecs_config": {
            "path": settings["ecs_config_path"],
            "settings": {**settings["ecs_settings"], **awsvpc},
            # Set again just before the agent starts: user data may rewrite the file after the image.
            "at_agent_start": awsvpc if settings["awsvpc"] else {},
            # Withdrawn when off: a task that requires it must not land on a host without the block.
            "attribute": f"{attribute['name']}={attribute['value']}",
            "attribute_on": settings["attribute"] and settings["bridge"],
        },
    }
    return json.dumps(config, indent=2, sort_keys=True) + "\n"


def ecs_imds_block_program(source):
    """The host program as hosts get it: its shell header, then its code without comments,
    docstrings and blank lines (the same statements), so that the user data has room for a team's
    own. Comments go by tokenize and docstrings by their lines in the syntax tree, which neither
    changes between Python versions."""
    lines = source.splitlines(keepends=True)
    code = next(n for n, line in enumerate(lines) if line.startswith('":"""')) + 1
    tree = ast.parse(source)
    drop = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            node is not tree
            and isinstance(node, ast.ClassDef | ast.FunctionDef)
            and ast.get_docstring(node, clean=False)
        ):
            drop.update(range(body[0].lineno - 1, body[0].end_lineno))
    comments = {
        token.start[0] - 1: token.start[1]
        for token in tokenize.generate_tokens(io.StringIO(source).readline)
        if token.type == tokenize.COMMENT
    }
    kept = lines[:code]
    for number in range(code, len(lines)):
        line = lines[number][: comments[number]].rstrip() if number in comments else lines[number].rstrip()
        if number not in drop and line:
            kept.append(line + "\n")
    return "".join(kept)


def _render_value(key, value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, list | dict):
        return json.dumps(value, separators=(",", ":"), sort_keys=True)
    if not isinstance(value, str):
        raise AnsibleFilterError(f"ecs_config: value of {key} must be a string, got {value!r}")
    return value


def ecs_config_settings(settings, known_keys=(), allow_unknown=False):
    """The ECS agent settings as ``{KEY: value as ecs.config holds it}``, in order; an unknown key
    is refused with the closest known one, unless ``allow_unknown``. The host program checks
    each key and value again, as ecs-init and systemd would read them, before it writes any."""
    if not isinstance(settings, dict):
        raise AnsibleFilterError(f"ecs_config: settings must be a mapping, got {settings!r}")
    if isinstance(known_keys, str) or not isinstance(known_keys, list | tuple | set):
        raise AnsibleFilterError(f"ecs_config: known_keys must be a list, got {known_keys!r}")
    if not isinstance(allow_unknown, bool):
        raise AnsibleFilterError(f"ecs_config: allow_unknown must be a boolean, got {allow_unknown!r}")
    known = {str(k).strip() for k in known_keys if str(k).strip()}
    rendered = {}
    for key, value in settings.items():
        if not isinstance(key, str) or not re.fullmatch(r"[A-Z_][A-Z0-9_]*", key):
            raise AnsibleFilterError(
                f"ecs_config: {key!r} is not a valid ecs.config key "
                "(upper-case letters, digits and underscores)"
            )
        if key not in known and not allow_unknown:
            close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise AnsibleFilterError(
                f"ecs_config: unknown ECS agent setting {key!r}{hint} "
                "(set ecs_imds_block_allow_unknown_ecs_keys: true to write it anyway)"
            )
        rendered[key] = _render_value(key, value)
    return rendered


class FilterModule:
    """The ecs_imds_block role's filters."""

    def filters(self):
        return {
            "ecs_imds_block_config": ecs_imds_block_config,
            "ecs_imds_block_program": ecs_imds_block_program,
            "ecs_config_settings": ecs_config_settings,
        }
