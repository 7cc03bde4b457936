# Copyright: the ecs-imds-golden authors
# Apache License 2.0
"""The programs the checkout tools start, found by path, never by a bare name on PATH.

The Python tools (ansible-playbook, molecule) come from the environment that runs the
checkout tool, beside its interpreter, whether or not that environment is activated: from a
plain shell, `.venv/bin` is not on PATH. System tools (packer) are looked up on PATH once and
started by their absolute path. A missing one raises MissingTool, whose message is one line
naming the tool and the command that installs it; callers print it and exit non-zero.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from local_image import PROJECT_ROOT

# The system tools, and the command that installs each (scripts/preflight's packages).
SYSTEM = {"packer": "sudo apt-get install -y packer"}


class MissingTool(RuntimeError):
    """A tool is not installed; the message names it and the command that installs it."""


def venv_tool(name: str) -> str:
    """The absolute path of ``name`` in this interpreter's environment (its bin/ folder)."""
    python = Path(sys.executable)  # not resolved: .venv/bin/python is a link out of .venv
    path = python.parent / name
    if path.is_file() and os.access(path, os.X_OK):
        return str(path)
    if python.parent == PROJECT_ROOT / ".venv" / "bin":
        install = "make .venv/.ready"
    else:
        install = f"{python} -m pip install -e '{PROJECT_ROOT}[dev]'"
    raise MissingTool(f"{name} is not installed beside {python}; install the tools with: {install}")


def system_tool(name: str) -> str:
    """The absolute path of the system tool ``name``, found on PATH."""
    found = shutil.which(name)
    if found:
        return str(Path(found).absolute())
    raise MissingTool(f"{name} is not installed (not on PATH); install it with: {SYSTEM[name]}")
