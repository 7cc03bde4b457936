# Copyright: the ecs-imds-golden authors
# Apache License 2.0

"""Which rules files, persistence services and loader arguments the role manages on a host.

Plain Python: vars/main.yml calls it through Ansible, and the user-data generator imports it,
so the boothook and the role agree on every path and argument.
"""

from __future__ import annotations

import sys

# Ansible's own error class only when Ansible loaded this filter: importing ansible.errors
# from the golden-ami CLI would read an ansible.cfg in the user's current folder and print
# Ansible's warnings on the CLI's stderr.
if "ansible.plugins.loader" in sys.modules:
    from ansible.errors import AnsibleFilterError
else:

    class AnsibleFilterError(ValueError):  # type: ignore[no-redef]
        """Stand-in with the same name, so callers catch one exception type."""


DOCUMENTATION = r"""
  name: imds_layout
  short_description: The rules files, services and loader arguments for the managed address families
  description:
    - Takes the OS data's list of rules files (C(family), C(path), C(service)) and keeps the
      families that are managed, IPv4 always and IPv6 when O(ipv6) is true.
  positional: _input, ipv6
  options:
    _input:
      description: The C(ecs_imds_block__persistence) list of the OS's vars file.
      type: list
      elements: dict
      required: true
    ipv6:
      description: Manage IPv6 as well.
      type: bool
      default: true
"""

EXAMPLES = r"""
- name: The loader's arguments for both families
  ansible.builtin.debug:
    msg: "{{ (ecs_imds_block__persistence | imds_layout(true)).loader_args }}"
"""

RETURN = r"""
  _value:
    description:
      - C(families), the managed entries in order; C(services), their persistence services,
        each once; C(loader_args), the loader's FAMILY FILE arguments for all of them, as
        strings; C(service_args), the same for each service.
    type: dict
"""


def imds_layout(persistence, ipv6=True):
    """See DOCUMENTATION."""
    if not isinstance(ipv6, bool):
        raise AnsibleFilterError(f"imds_layout: ipv6 must be a boolean, got {ipv6!r}")
    if not isinstance(persistence, list) or not all(
        isinstance(entry, dict) and {"family", "path", "service"} <= entry.keys() for entry in persistence
    ):
        raise AnsibleFilterError(
            f"imds_layout: expected a list of {{family, path, service}} entries, got {persistence!r}"
        )
    families = [entry for entry in persistence if entry["family"] in ((4, 6) if ipv6 else (4,))]
    services = list(dict.fromkeys(entry["service"] for entry in families))

    def args(entries):
        return [str(value) for entry in entries for value in (entry["family"], entry["path"])]

    return {
        "families": families,
        "services": services,
        "loader_args": args(families),
        "service_args": {s: args([e for e in families if e["service"] == s]) for s in services},
    }


class FilterModule:
    """The ecs_imds_block layout filter."""

    def filters(self):
        return {"imds_layout": imds_layout}
