#!/usr/bin/python
# Copyright: the ecs-imds-golden authors
# Apache License 2.0

# Python 2.7 compatible: an Amazon Linux 2 host may run modules with its /usr/bin/python.
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: ecs_imds_block_install
short_description: Install the ecs-imds-block host program and make the host match its configuration
description:
  - Stages O(program) and O(config) and runs the program's C(install) under the module's own
    Python. The program writes itself to its path and the configuration to
    C(/etc/ecs-imds-block/config.json), merges its part into each rules file and C(ecs.config)
    (every other line stays), writes its systemd units, enables them and loads the block.
  - Every file is checked before any is written; a rules file the kernel would refuse, or an
    C(ecs.config) that ecs-init and systemd would read differently, fails the task and changes
    nothing.
  - All of it lives in the program, which C(golden-ami user-data) installs too; this module only
    hands it over, so check mode, diff mode and C(changed) are what the program reports.
options:
  program:
    description: The program as hosts get it (the role's ecs_imds_block_program filter).
    type: str
    required: true
  config:
    description: Its configuration, JSON text (the role's ecs_imds_block_config filter).
    type: str
    required: true
  load:
    description: Load the block into the running kernel now, and start or stop the heal timer.
    type: bool
    default: true
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
author: the ecs_imds_block authors
"""

EXAMPLES = r"""
- name: Install the host program
  ecs_imds_block_install:
    program: "{{ lookup('ansible.builtin.file', 'ecs-imds-block', rstrip=false) | ecs_imds_block_program }}"
    config: "{{ ecs_imds_block__config }}"
"""

RETURN = r"""
changed_paths:
  description: The files whose content or mode changed (or would, in check mode).
  returned: always
  type: list
  elements: str
  sample: [/etc/sysconfig/iptables]
done:
  description: What changed besides files, one line each (units enabled, the block loaded).
  returned: always
  type: list
  elements: str
"""

import json
import os
import sys

from ansible.module_utils.basic import AnsibleModule


def new_module():
    """The module's arguments, checked (tests/support/role.py's stand-in takes them from here)."""
    return AnsibleModule(
        argument_spec=dict(
            program=dict(type="str", required=True),
            config=dict(type="str", required=True),
            load=dict(type="bool", default=True),
        ),
        supports_check_mode=True,
    )


def main():
    module = new_module()
    staged = {}
    for name in ("program", "config"):
        staged[name] = os.path.join(module.tmpdir, "ecs-imds-block." + name)
        with open(staged[name], "wb") as handle:
            handle.write(module.params[name].encode("utf-8"))
    argv = [sys.executable, staged["program"], "--config", staged["config"], "install", "--json"]
    argv += ["--check"] * module.check_mode + ["--diff"] * module._diff
    argv += ["--no-load"] * (not module.params["load"])
    rc, out, err = module.run_command(argv)
    if rc:  # the program's own one-line refusal, the last line it printed
        lines = err.strip().splitlines() or ["ecs-imds-block install exited %d" % rc]
        module.fail_json(msg=lines[-1], rc=rc)
    report = json.loads(out)
    module.exit_json(
        changed=bool(report["changed"] or report["done"]),
        changed_paths=report["changed"],
        done=report["done"],
        diff=report["diff"],
    )


if __name__ == "__main__":
    main()
