# Copyright: the ecs-imds-golden authors
# Apache License 2.0
"""Ansible callback for `make image`: a line of progress per task on stderr, and each assert
(with its loop item) recorded as JSON lines for the report."""

from __future__ import annotations

import json
import os
import sys

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
  name: golden_report
  type: notification
  short_description: progress and assert results for make image
  description: Set GOLDEN_REPORT_FILE; every assert result is appended to it as a JSON line.
"""

ASSERT = {"assert", "ansible.builtin.assert"}


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "notification"
    CALLBACK_NAME = "golden_report"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self):
        super().__init__()
        self._path = os.environ.get("GOLDEN_REPORT_FILE")

    def v2_playbook_on_task_start(self, task, is_conditional):
        print(f"    {task.get_name()}", file=sys.stderr, flush=True)

    def _record(self, result, ok):
        if not self._path or result._task.action not in ASSERT or "results" in result._result:
            return
        entry = {
            "check": result._task.get_name(),
            "item": result._result.get("_ansible_item_label"),
            "ok": ok,
            "msg": result._result.get("msg", ""),
        }
        with open(self._path, "a", encoding="utf-8") as report:
            report.write(json.dumps(entry) + "\n")

    def v2_runner_on_ok(self, result):
        self._record(result, True)

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._record(result, False)

    def v2_runner_item_on_ok(self, result):
        self._record(result, True)

    def v2_runner_item_on_failed(self, result):
        self._record(result, False)
