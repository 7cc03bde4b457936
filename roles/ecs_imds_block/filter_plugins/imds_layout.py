# Copyright: the ecs-imds-golden authors
# Apache License 2.0

"""Everything the role derives from its OS data and its own names, computed once.

Plain Python: vars/main.yml calls it through Ansible, and the user-data generator and verify
use the same result, so the tasks, the boothook and the checks agree on every path, unit,
template, package check and address.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

DOCUMENTATION = r"""
  name: imds_layout
  short_description: The role's derived data for one OS, the managed families and its names
  description:
    - Takes the OS data (C(ecs_imds_block__os) of the OS's vars file) and the role's names
      (C(ecs_imds_block__names) of vars/main.yml) and keeps the families that are managed,
      IPv4 always and IPv6 when O(ipv6) is true.
  positional: _input, names, ipv6
  options:
    _input:
      description: C(packages), C(package_installed) (a shell test of C($name)), C(cache_update)
        and C(persistence), a list of C(family), C(path), C(service).
      type: dict
      required: true
    names:
      description: C(helper), C(merge_helper), C(docker_service), C(ecs_service), C(heal_unit),
        C(dropin) and C(attribute) (C(name), C(value)).
      type: dict
      required: true
    ipv6:
      description: Manage IPv6 as well.
      type: bool
      default: true
"""

EXAMPLES = r"""
- name: The loader's arguments for the managed families
  ansible.builtin.debug:
    msg: "{{ (ecs_imds_block__os | imds_layout(ecs_imds_block__names, true)).loader_args }}"
"""

RETURN = r"""
  _value:
    description:
      - The names, as given; C(families), the managed persistence entries in order, each with
        its C(restore) command and the C(imds) address it blocks; C(services), their persistence
        services, each once; C(loader_args), the loader's FAMILY FILE arguments for all of them;
        C(service_args), the same for each service; C(units), the systemd files to write
        (C(path), C(template), C(item)); C(packages), C(cache_update) and C(missing_packages),
        a shell loop printing each package that is not installed; C(imds), the addresses by
        family; C(attribute_setting), the C(attribute:NAME=VALUE) argument of the merge.
    type: dict
"""

# The role's module_utils folder, on the import path by name (see imds_rules.py).
_MODULE_UTILS = str(Path(__file__).resolve().parents[1] / "module_utils")
sys.path.extend({_MODULE_UTILS} - set(sys.path))
import ecs_imds_block_merge as merge  # noqa: E402

AnsibleFilterError = merge.filter_error()  # Ansible's, when Ansible loaded the filter


_OS_KEYS = {"packages", "package_installed", "cache_update", "persistence"}
_NAMES = {"helper", "merge_helper", "docker_service", "ecs_service", "heal_unit", "dropin", "attribute"}


def _require(value, keys, what):
    if not isinstance(value, dict) or not keys <= value.keys():
        raise AnsibleFilterError(f"imds_layout: {what} must be a mapping with {sorted(keys)}, got {value!r}")


def imds_layout(os_data, names, ipv6=True):
    """See DOCUMENTATION."""
    if not isinstance(ipv6, bool):
        raise AnsibleFilterError(f"imds_layout: ipv6 must be a boolean, got {ipv6!r}")
    _require(os_data, _OS_KEYS, "the OS data")
    _require(names, _NAMES, "the names")
    persistence = os_data["persistence"]
    if not isinstance(persistence, list) or not all(
        isinstance(entry, dict) and {"family", "path", "service"} <= entry.keys() for entry in persistence
    ):
        raise AnsibleFilterError(
            f"imds_layout: expected a list of {{family, path, service}} entries, got {persistence!r}"
        )
    families = [
        {**entry, "restore": f"{'ip6tables' if entry['family'] == 6 else 'iptables'}-restore",
         "imds": merge.IMDS[entry["family"]]}
        for entry in persistence
        if entry["family"] in ((4, 6) if ipv6 else (4,))
    ]  # fmt: skip
    services = list(dict.fromkeys(entry["service"] for entry in families))

    def args(entries):
        return [str(value) for entry in entries for value in (entry["family"], entry["path"])]

    dropins = {service: "persistence.conf.j2" for service in services}
    dropins.update({names["docker_service"]: "docker.conf.j2", names["ecs_service"]: "ecs.conf.j2"})
    units = [
        {"path": f"/etc/systemd/system/{unit}.d/{names['dropin']}", "template": template, "item": unit}
        for unit, template in dropins.items()
    ]
    units += [
        {"path": f"/etc/systemd/system/{names['heal_unit']}.{kind}", "template": f"heal.{kind}.j2",
         "item": None}
        for kind in ("service", "timer")
    ]  # fmt: skip
    packages = " ".join(shlex.quote(name) for name in os_data["packages"])
    installed = os_data["package_installed"]
    return {
        **names,
        "families": families,
        "services": services,
        "loader_args": args(families),
        "service_args": {s: args([e for e in families if e["service"] == s]) for s in services},
        "units": units,
        "packages": list(os_data["packages"]),
        "cache_update": os_data["cache_update"],
        "missing_packages": f'for name in {packages}; do {installed} || echo "$name"; done',
        "imds": dict(merge.IMDS),
        "attribute_setting": f"attribute:{names['attribute']['name']}={names['attribute']['value']}",
    }


class FilterModule:
    """The ecs_imds_block layout filter."""

    def filters(self):
        return {"imds_layout": imds_layout}
