# Copyright: the ecs-imds-golden authors
# Apache License 2.0

"""Render the iptables-restore files that keep Docker bridge containers away from IMDS.

Plain Python on purpose: the user-data generator imports this module instead of
carrying a second copy of the rules, so a host on the golden AMI and a host
protected by user data load byte-identical files.
"""

from __future__ import annotations

import ipaddress

try:
    from ansible.errors import AnsibleFilterError
except ImportError:  # imported outside Ansible, by the user-data generator

    class AnsibleFilterError(ValueError):  # type: ignore[no-redef]
        """Stand-in with the same name, so callers catch one exception type."""


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
      description: Source networks of this family that may still reach IMDS.
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

CHAIN = "DOCKER-USER"
IMDS = {4: "169.254.169.254/32", 6: "fd00:ec2::254/128"}
_UNREACHABLE = {4: "icmp-port-unreachable", 6: "icmp6-port-unreachable"}
ACTIONS = ("reject", "drop")
HEADER = (
    "# Managed by the ecs_imds_block role; changes here are overwritten.\n"
    "# Holds only the DOCKER-USER chain and the FORWARD jump to it: ecs-imds-block loads it\n"
    "# with --noflush, so Docker's and ecs-init's own rules are never flushed.\n"
)


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
    networks = []
    for cidr in cidrs:
        if not isinstance(cidr, str):
            raise AnsibleFilterError(f"imds_rules: CIDR must be a string, got {cidr!r}")
        try:
            network = ipaddress.ip_network(cidr.strip(), strict=True)
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
        if str(network) not in networks:
            networks.append(str(network))
    return networks


def imds_rules(family, action="reject", allowed_cidrs=(), enabled=True):
    """Return the iptables-restore file for ``family`` (4 or 6)."""
    family = _family(family)
    if action not in ACTIONS:
        raise AnsibleFilterError(f"imds_rules: action must be one of {ACTIONS}, got {action!r}")
    if not isinstance(enabled, bool):
        raise AnsibleFilterError(f"imds_rules: enabled must be a boolean, got {enabled!r}")
    allowed = normalize_cidrs(list(allowed_cidrs), family)

    imds = IMDS[family]
    rules = [f"-I FORWARD 1 -j {CHAIN}"]
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
    return HEADER + "*filter\n" + f":{CHAIN} - [0:0]\n" + "".join(r + "\n" for r in rules) + "COMMIT\n"


class FilterModule:
    """The ecs_imds_block rule filters."""

    def filters(self):
        return {"imds_rules": imds_rules, "imds_cidrs": normalize_cidrs}
