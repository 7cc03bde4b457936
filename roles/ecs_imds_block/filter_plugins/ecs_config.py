# Copyright: the ecs-imds-golden authors
# Apache License 2.0

"""Merge settings into /etc/ecs/ecs.config without losing a byte the user wrote."""

from __future__ import annotations

import difflib
import json
import re

try:
    from ansible.errors import AnsibleFilterError
except ImportError:  # imported outside Ansible, by the user-data generator

    class AnsibleFilterError(ValueError):  # type: ignore[no-redef]
        """Stand-in with the same name, so callers catch one exception type."""


DOCUMENTATION = r"""
  name: ecs_config_merge
  short_description: Set ECS agent settings in the text of an ecs.config file
  description:
    - Every line that assigns one of the given keys (with or without a leading C(export))
      is rewritten as C(KEY=value); keys not yet present are appended. All other lines,
      comments and blank lines included, are kept byte for byte and in order.
    - The result always ends with a newline, so a later C(echo KEY=v >> ecs.config) from
      user data starts a line of its own.
    - Keys are checked against the names the ECS agent reads. An unknown key fails with
      the closest known name, unless O(allow_unknown) is set.
  positional: _input, settings
  options:
    _input:
      description: The current file content; empty when the file does not exist.
      type: str
      required: true
    settings:
      description:
        - Keys and values to set. Booleans become C(true)/C(false); lists and dicts become
          compact JSON (as C(ECS_INSTANCE_ATTRIBUTES) expects); values must be one line.
      type: dict
      required: true
    known_keys:
      description: The setting names the ECS agent reads.
      type: list
      elements: str
      default: []
    allow_unknown:
      description: Write keys that are not in O(known_keys).
      type: bool
      default: false
"""

EXAMPLES = r"""
- name: Merge our settings into the file read earlier with slurp
  ansible.builtin.copy:
    content: >-
      {{ ecs_config_current | ecs_config_merge({'ECS_AWSVPC_BLOCK_IMDS': true},
         known_keys=lookup('ansible.builtin.file', 'ecs-agent-config-keys.txt').splitlines()) }}
    dest: /etc/ecs/ecs.config
    mode: "0600"
"""

RETURN = r"""
  _value:
    description: The merged file content.
    type: str
"""

_KEY = re.compile(r"[A-Z_][A-Z0-9_]*\Z")
# An assignment as systemd's EnvironmentFile= and Docker's --env-file read it.
_ASSIGNMENT = re.compile(r"[ \t]*(?:export[ \t]+)?(?P<key>[A-Za-z_][A-Za-z0-9_]*)[ \t]*=")


def _render_value(key, value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, (list, dict)):
        return json.dumps(value, separators=(",", ":"), sort_keys=True)
    if not isinstance(value, str):
        raise AnsibleFilterError(f"ecs_config: value of {key} must be a string, got {value!r}")
    # A final backslash makes systemd's EnvironmentFile= join the next line to this one.
    if any(c in value for c in "\n\r\0") or value.endswith("\\"):
        raise AnsibleFilterError(f"ecs_config: value of {key} must be a single line KEY=value, got {value!r}")
    return value


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
        if not isinstance(key, str) or not _KEY.match(key):
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


def ecs_config_merge(text, settings, known_keys=(), allow_unknown=False):
    """Return ``text`` with ``settings`` set; see DOCUMENTATION."""
    if not isinstance(text, str):
        raise AnsibleFilterError(f"ecs_config: file content must be a string, got {text!r}")
    wanted = ecs_config_settings(settings, known_keys, allow_unknown)
    lines = text.splitlines(keepends=True)
    found = set()
    for number, line in enumerate(lines):
        match = _ASSIGNMENT.match(line)
        if match and match["key"] in wanted:
            key = match["key"]
            ending = line[len(line.rstrip("\r\n")) :] or "\n"
            lines[number] = f"{key}={wanted[key]}{ending}"
            found.add(key)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    lines += [f"{key}={value}\n" for key, value in wanted.items() if key not in found]
    return "".join(lines)


class FilterModule:
    """The ecs_imds_block ecs.config filters."""

    def filters(self):
        return {"ecs_config_merge": ecs_config_merge, "ecs_config_settings": ecs_config_settings}
