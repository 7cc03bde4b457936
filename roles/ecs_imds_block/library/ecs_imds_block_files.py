#!/usr/bin/python
# Copyright: the ecs-imds-golden authors
# Apache License 2.0

# Python 2.7 compatible: an Amazon Linux 2 host may run modules with its /usr/bin/python.
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: ecs_imds_block_files
short_description: Write a set of small files in one module run
description:
  - Writes each file whose content, mode or ownership differs, and leaves the others alone.
  - Every new content is staged and checked by its O(files[].validate) command before any
    file changes, then moved into place atomically: a file the kernel would refuse never
    replaces a good one, and one refused file leaves all of them as they were.
  - Missing parent directories are created, mode C(0755).
  - Why not M(ansible.builtin.copy) and M(ansible.builtin.template) in a loop: each file then
    costs two module runs on the host even when nothing changes, and the role is applied to
    every AMI build. Here all of the role's files cost one.
options:
  files:
    description: The files to write.
    type: list
    elements: dict
    required: true
    suboptions:
      path:
        description: Absolute path of the file.
        type: path
        required: true
      content:
        description: The whole content of the file.
        type: str
        required: true
      mode:
        description:
          - Octal mode, as a quoted string.
          - When omitted, an existing file keeps its mode and a new one gets C(0600).
        type: str
      owner:
        description:
          - Owner of the file.
          - When omitted, an existing file keeps its owner and a new one gets the module's user.
        type: str
      group:
        description:
          - Group of the file.
          - When omitted, an existing file keeps its group and a new one gets the module's group.
        type: str
      merge:
        description:
          - How O(files[].content) combines with what the file holds, read in the same run.
          - C(rules) - O(files[].content) is a rules file rendered by the imds_rules filter;
            only its ecs_imds_block part replaces ours in the file, every other line stays.
          - C(ecs_config) - O(files[].content) holds C(KEY=value) lines; each is set in the
            file as ecs-init reads it, every other byte stays.
          - Without it the file gets O(files[].content) as it is.
        type: str
        choices: [rules, ecs_config]
      validate:
        description:
          - Command run on the new content before it replaces the file, with C(%s) for its path.
          - The file is left as it was when the command fails.
        type: str
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
author: the ecs_imds_block authors
"""

EXAMPLES = r"""
- name: Write the rules loader and the IPv4 rules
  ecs_imds_block_files:
    files:
      - path: /usr/local/sbin/ecs-imds-block
        content: "{{ lookup('ansible.builtin.file', 'ecs-imds-block', rstrip=false) }}"
        mode: "0755"
        owner: root
        group: root
      - path: /etc/sysconfig/iptables
        content: "{{ 4 | imds_rules }}"
        mode: "0600"
        validate: iptables-restore --test %s
"""

RETURN = r"""
changed_paths:
  description: The files whose content or attributes changed (or would, in check mode).
  returned: always
  type: list
  elements: str
  sample: [/etc/sysconfig/iptables]
"""

import grp
import os
import pwd
import re
import shlex

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_bytes, to_native
from ansible.module_utils.ecs_imds_block_merge import (
    ChangedMeanwhile,
    MergeError,
    merge_ecs_config,
    merge_rules,
    parse_settings,
    read,
    refusal,
    replace,
)

NEW_FILE_MODE = "0600"


def _plan(module, spec):
    """What one file needs: its new content staged and validated, or None if it is unchanged."""
    path = spec["path"]
    if not os.path.isabs(path):
        module.fail_json(msg="path must be absolute: %r" % path)
    b_path = to_bytes(path, errors="surrogate_or_strict")
    if os.path.isdir(b_path):
        module.fail_json(msg="path is a directory: %r" % path)
    b_parent = os.path.dirname(b_path)
    while b_parent and not os.path.lexists(b_parent):
        b_parent = os.path.dirname(b_parent)
    if b_parent and not os.path.isdir(b_parent):
        module.fail_json(msg="%r cannot be written: %r is not a directory" % (path, to_native(b_parent)))
    if spec["mode"] is not None and not re.match(r"^0?[0-7]{3}$", spec["mode"]):
        module.fail_json(msg="mode must be an octal string such as '0644': %r" % spec["mode"], path=path)
    for kind, lookup in (("owner", pwd.getpwnam), ("group", grp.getgrnam)):
        if spec[kind] is not None and not spec[kind].isdigit():
            try:
                lookup(spec[kind])
            except KeyError:
                module.fail_json(msg="%s %r does not exist on this host" % (kind, spec[kind]), path=path)
    if spec["validate"] and "%s" not in spec["validate"]:
        module.fail_json(msg="validate must contain %%s: %r" % spec["validate"], path=path)
    b_content = to_bytes(spec["content"], errors="surrogate_or_strict")
    try:
        before = read(path)
    except MergeError as error:
        module.fail_json(msg=str(error), path=path)
    try:
        if spec["merge"] == "rules":
            b_content = merge_rules(before or b"", b_content, path)
        elif spec["merge"] == "ecs_config":
            b_content = merge_ecs_config(before or b"", parse_settings(b_content.splitlines()))
    except MergeError as error:
        module.fail_json(msg="no file was changed: %s" % error, path=path)
    if before == b_content:
        return None
    if spec["validate"] and not module.check_mode:
        refused = refusal(shlex.split(spec["validate"]), b_content, module.tmpdir)
        if refused is not None:
            module.fail_json(
                msg="no file was changed: %r refused the new content of %s" % (spec["validate"], path),
                path=path,
                stderr=refused,
            )
    return {
        "content": b_content,
        "new": before is None,
        "merged_from": (before or b"") if spec["merge"] else None,
        "diff": {
            "before_header": path,
            "after_header": path,
            "before": "" if before is None else to_native(before, errors="surrogate_or_replace"),
            "after": to_native(b_content, errors="surrogate_or_replace"),
        },
    }


def _attributes(module, spec, new):
    # Without a mode, an existing file keeps its own (and a new one gets 0600).
    mode = spec["mode"] or (NEW_FILE_MODE if new else None)
    return module.load_file_common_arguments(
        {"path": spec["path"], "mode": mode, "owner": spec["owner"], "group": spec["group"]}
    )


def main():
    module = AnsibleModule(
        argument_spec=dict(
            files=dict(
                type="list",
                elements="dict",
                required=True,
                options=dict(
                    path=dict(type="path", required=True),
                    content=dict(type="str", required=True),
                    mode=dict(type="str"),
                    owner=dict(type="str"),
                    group=dict(type="str"),
                    validate=dict(type="str"),
                    merge=dict(type="str", choices=["rules", "ecs_config"]),
                ),
            ),
        ),
        supports_check_mode=True,
    )
    paths = [spec["path"] for spec in module.params["files"]]
    duplicates = sorted({path for path in paths if paths.count(path) > 1})
    if duplicates:
        module.fail_json(msg="files lists a path more than once: %s" % ", ".join(duplicates))
    # Every new content is staged and validated before any file is touched.
    plans = [(spec, _plan(module, spec)) for spec in module.params["files"]]
    changed_paths, diffs = [], []
    for spec, plan in plans:
        try:
            if plan:
                diffs.append(plan["diff"])
                if not module.check_mode:
                    replace(spec["path"], plan["content"], expected=plan["merged_from"])
            new = bool(plan and plan["new"])
            if new and module.check_mode:
                changed_paths.append(spec["path"])  # nothing there yet to compare attributes with
            elif module.set_fs_attributes_if_different(_attributes(module, spec, new), bool(plan)):
                changed_paths.append(spec["path"])
        except ChangedMeanwhile as error:
            module.fail_json(msg=str(error), changed=bool(changed_paths), changed_paths=changed_paths)
        except (IOError, OSError) as error:
            # What was written before the failure is reported, so the play shows the change.
            module.fail_json(
                msg="writing %s failed: %s" % (spec["path"], error.strerror or error),
                changed=bool(changed_paths),
                changed_paths=changed_paths,
            )
    module.exit_json(changed=bool(changed_paths), changed_paths=changed_paths, diff=diffs)


if __name__ == "__main__":
    main()
