# Copyright: the ecs-imds-golden authors
# Apache License 2.0

"""Check and render the ECS agent settings the role writes to /etc/ecs/ecs.config."""

from __future__ import annotations

import difflib
import json
import sys
from pathlib import Path

DOCUMENTATION = r"""
  name: ecs_config_settings
  short_description: Check ECS agent settings and render their values for ecs.config
  description:
    - Keys are checked against the names the ECS agent reads. An unknown key fails with
      the closest known name, unless O(allow_unknown) is set.
    - Booleans become C(true)/C(false); lists and dicts become compact JSON (as
      C(ECS_INSTANCE_ATTRIBUTES) expects); a value must be one line of printable text.
    - The merge into ecs.config itself happens on the host, in the module run that reads the
      file (the role's ecs_imds_block_files module, C(merge=ecs_config)).
  positional: _input
  options:
    _input:
      description: Keys and values to set.
      type: dict
      required: true
    known_keys:
      description: The setting names the ECS agent reads.
      type: list
      elements: str
      default: []
    allow_unknown:
      description: Accept keys that are not in O(known_keys).
      type: bool
      default: false
"""

EXAMPLES = r"""
- name: Check the settings before anything is written
  ansible.builtin.set_fact:
    settings: >-
      {{ {'ECS_AWSVPC_BLOCK_IMDS': true} | ecs_config_settings(
         known_keys=lookup('ansible.builtin.file', 'ecs-agent-config-keys.txt').splitlines()) }}
"""

RETURN = r"""
  _value:
    description: The settings as C({KEY: rendered value}), in order.
    type: dict
"""

# The role's module_utils folder, on the import path by name (see imds_rules.py).
_MODULE_UTILS = str(Path(__file__).resolve().parents[1] / "module_utils")
sys.path.extend({_MODULE_UTILS} - set(sys.path))
import ecs_imds_block_merge as merge  # noqa: E402

AnsibleFilterError = merge.filter_error()  # Ansible's, when Ansible loaded the filter


def _render_value(key, value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, (list, dict)):
        return json.dumps(value, separators=(",", ":"), sort_keys=True)
    if not isinstance(value, str):
        raise AnsibleFilterError(f"ecs_config: value of {key} must be a string, got {value!r}")
    return value


def _merge_check(check, *args):
    """``check`` of the merge, its refusal as this filter's error."""
    try:
        return check(*args)
    except merge.MergeError as error:
        raise AnsibleFilterError(f"ecs_config: {error}") from None


def ecs_config_settings(settings, known_keys=(), allow_unknown=False):
    """Validate ``settings`` and return them as ``{KEY: rendered value}``, in order."""
    if not isinstance(settings, dict):
        raise AnsibleFilterError(f"ecs_config: settings must be a mapping, got {settings!r}")
    if isinstance(known_keys, str) or not isinstance(known_keys, (list, tuple, set)):
        raise AnsibleFilterError(f"ecs_config: known_keys must be a list, got {known_keys!r}")
    if not isinstance(allow_unknown, bool):
        raise AnsibleFilterError(f"ecs_config: allow_unknown must be a boolean, got {allow_unknown!r}")
    known = {str(k).strip() for k in known_keys if str(k).strip()}
    rendered = {}
    for key, value in settings.items():
        _merge_check(merge.check_key, str(key).encode() if isinstance(key, str) else repr(key).encode())
        if key not in known and not allow_unknown:
            close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise AnsibleFilterError(
                f"ecs_config: unknown ECS agent setting {key!r}{hint} "
                "(set ecs_imds_block_allow_unknown_ecs_keys: true to write it anyway)"
            )
        rendered[key] = _render_value(key, value)
        _merge_check(merge.check_value, key.encode(), rendered[key].encode())
    return rendered


class FilterModule:
    """The ecs_imds_block ecs.config filters."""

    def filters(self):
        return {"ecs_config_settings": ecs_config_settings}
