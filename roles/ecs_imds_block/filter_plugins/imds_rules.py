# Copyright: the ecs-imds-golden authors
# Apache License 2.0

"""Render the iptables-restore files that keep Docker bridge containers away from IMDS.

Plain Python on purpose: the user-data generator imports this module instead of
carrying a second copy of the rules, so a host on the golden AMI and a host
protected by user data load byte-identical files.
"""

from __future__ import annotations

import ipaddress
import re
import sys
from pathlib import Path

DOCUMENTATION = r"""
  name: imds_rules
  short_description: Render the iptables-restore file that blocks IMDS for Docker bridge containers
  description:
    - Renders an iptables-save format file for one address family holding only what the
      ecs_imds_block role owns, the C(DOCKER-USER) chain and the C(FORWARD) jump to it.
    - Allowlisted source networks come first (C(RETURN)), then the block, then C(RETURN).
    - The jump is inserted at the top of C(FORWARD) so that, loaded with C(--noflush),
      the chain and the jump change in one atomic commit and Docker's rules stay.
  positional: _input
  options:
    _input:
      description: Address family, C(4) or C(6).
      type: int
      required: true
    action:
      description:
        - C(reject) answers TCP with a reset and anything else with port-unreachable, so a
          blocked client fails at once. C(drop) makes clients wait for their own timeout.
      type: str
      default: reject
      choices: [reject, drop]
    allowed_cidrs:
      description:
        - Source networks of this family that may still reach IMDS, each an address with an
          optional prefix length (C(10.0.0.7), C(172.31.250.0/24), C(fd00:1::/64)) and nothing
          else. Only ASCII digits, hex letters, C(.), C(:) and C(/) are accepted, so no scope id
          (C(fe80::1%eth0)), whitespace or newline can reach the rendered file.
        - Refused, naming the value, are host bits set, a network of the other family, a list
          whose union covers every address of the family (C(0.0.0.0/0), or C(0.0.0.0/1) with
          C(128.0.0.0/1)), and any source overlapping IMDS's own link-local network
          (IPv4 C(169.254.0.0/16); IPv6 C(fe80::/10) and C(fd00:ec2::/32), the network of the
          IPv6 endpoint): no container holds such an address legitimately, and allowing one
          would let a spoofed link-local source through.
      type: list
      elements: str
      default: []
    enabled:
      description: When false the chain is rendered empty, which removes the block.
      type: bool
      default: true
"""

EXAMPLES = r"""
- name: Render the IPv4 file with the X-Ray daemon network allowlisted
  ansible.builtin.copy:
    content: "{{ 4 | imds_rules(action='reject', allowed_cidrs=['172.31.250.0/24']) }}"
    dest: /etc/sysconfig/iptables
    mode: "0600"
"""

RETURN = r"""
  _value:
    description: The file, in iptables-save format, ending with a newline.
    type: str
"""

# The role's module_utils/ecs_imds_block_merge.py is the one home of what the filters, the
# module, the boothook and the loader share. A role's module_utils are on no import path of
# the controller, so its folder goes on one, by name: the filters then share one module object
# under Ansible, in the golden-ami package and in tests.
_MODULE_UTILS = str(Path(__file__).resolve().parents[1] / "module_utils")
sys.path.extend({_MODULE_UTILS} - set(sys.path))
import ecs_imds_block_merge as merge  # noqa: E402

AnsibleFilterError = merge.filter_error()  # Ansible's, when Ansible loaded the filter


CHAIN = merge.CHAIN.decode()
IMDS = {family: f"{address}/{32 if family == 4 else 128}" for family, address in merge.IMDS.items()}
# Sources never allowlisted: IMDS's own link-local network (and, for IPv6, the network of its
# IPv6 endpoint).
LINK_LOCAL = {
    4: (ipaddress.ip_network("169.254.0.0/16"),),
    6: (ipaddress.ip_network("fe80::/10"), ipaddress.ip_network("fd00:ec2::/32")),
}
EVERYTHING = {4: ipaddress.ip_network("0.0.0.0/0"), 6: ipaddress.ip_network("::/0")}
# An address and an optional prefix length, in ASCII: no scope id, no whitespace, no newline.
_CIDR = re.compile(r"[0-9A-Fa-f.:]+(?:/[0-9]{1,3})?\Z")
_JUMP = f"-I FORWARD 1 -j {CHAIN}"
_UNREACHABLE = {4: "icmp-port-unreachable", 6: "icmp6-port-unreachable"}
ACTIONS = ("reject", "drop")


def _family(value):
    if isinstance(value, bool) or value not in IMDS:
        raise AnsibleFilterError(f"imds_rules: address family must be 4 or 6, got {value!r}")
    return value


def normalize_cidrs(cidrs, family):
    """Return the allowlist as canonical network strings of ``family``, duplicates removed."""
    family = _family(family)
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


def _render(family, action, allowed, enabled):
    """The file for already checked input: the allowlist's canonical strings, in order."""
    imds = IMDS[family]
    rules = [_JUMP]
    if enabled:
        rules += [f"-A {CHAIN} -s {cidr} -d {imds} -j RETURN" for cidr in allowed]
        if action == "reject":
            rules += [
                f"-A {CHAIN} -d {imds} -p tcp -j REJECT --reject-with tcp-reset",
                f"-A {CHAIN} -d {imds} -j REJECT --reject-with {_UNREACHABLE[family]}",
            ]
        else:
            rules.append(f"-A {CHAIN} -d {imds} -j DROP")
    # Docker appends this itself when it creates the chain; keeping it makes the file
    # describe the whole chain, so nothing is added after a load.
    rules.append(f"-A {CHAIN} -j RETURN")
    body = f":{CHAIN} - [0:0]\n" + "".join(r + "\n" for r in rules)
    return "*filter\n" + merge.BEGIN_TEXT + body + merge.END_TEXT + "COMMIT\n"


def imds_rules(family, action="reject", allowed_cidrs=(), enabled=True):
    """Return the iptables-restore file for ``family`` (4 or 6)."""
    family = _family(family)
    if action not in ACTIONS:
        raise AnsibleFilterError(f"imds_rules: action must be one of {ACTIONS}, got {action!r}")
    if not isinstance(enabled, bool):
        raise AnsibleFilterError(f"imds_rules: enabled must be a boolean, got {enabled!r}")
    try:
        if isinstance(allowed_cidrs, (str, bytes, dict)):
            raise TypeError
        allowed_cidrs = list(allowed_cidrs)
    except TypeError:
        raise AnsibleFilterError(
            f"imds_rules: the IPv{family} allowlist must be a list of CIDRs, got {allowed_cidrs!r}"
        ) from None
    allowed = normalize_cidrs(allowed_cidrs, family)
    return _render(family, action, allowed, enabled)


class FilterModule:
    """The ecs_imds_block rule filters."""

    def filters(self):
        return {"imds_rules": imds_rules}
