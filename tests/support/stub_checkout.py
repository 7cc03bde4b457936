# Copyright: the ecs-imds-golden authors
# Apache License 2.0
"""A checkout holding the real stage runner (scripts/make-test) and pyproject.toml, whose stages'
programs are stubs that print what they were asked to run. Running the runner there shows what
each target would run, in order, in a second, with no Docker, apt-get, network or .venv touched.

The stubs print one line to stderr, `RUN: NAME ARGS`, where the runner's own output goes, so the
transcript interleaves them with its `==> make-test: STAGE` headers. `python` prints its full
path and PYTHONPATH, so a test sees which interpreter ran; `molecule` prints MOLECULE_DISTRO.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from conftest import ROOT

STUB = '#!/bin/sh\necho "RUN: ${0##*/} $*" >&2\n'
SPECIAL = {
    "python": '#!/bin/sh\necho "RUN: $0 $* (PYTHONPATH=${PYTHONPATH-})" >&2\n',
    "molecule": '#!/bin/sh\necho "RUN: molecule $* ($MOLECULE_DISTRO)" >&2\n',
}
# .venv's programs the stages start, and the checkout's scripts the set-up stages start.
VENV_TOOLS = ("yamllint", "actionlint", "parliament", "ansible-lint", "ruff", "pytest", "molecule", "python",
              "pip", "uv")  # fmt: skip
SCRIPTS = ("preflight", "ensure-docker", "build-base-images")
# What the runner itself needs from PATH (the stubs name /bin/sh by path): no docker, dockerd,
# apt-get or python3, unless a test adds them. make is a stub: a make the runner started would
# print its line in the transcript.
SYSTEM = ("bash", "env", "dirname", "mktemp", "cat", "rm", "grep", "touch")


def stub(path: Path, name: str) -> None:
    path.write_text(SPECIAL.get(name, STUB))
    path.chmod(0o755)


@dataclass
class Run:
    returncode: int
    stderr: str

    @property
    def transcript(self) -> list[str]:
        """The stage headers and the stubs' lines, in order."""
        return [line.rstrip() for line in self.stderr.splitlines() if line.startswith(("==> ", "RUN: "))]

    @property
    def stages(self) -> list[str]:
        header = "==> make-test: "
        return [line.removeprefix(header) for line in self.transcript if line.startswith(header)]

    @property
    def times(self) -> dict[str, str]:
        """Stage times' result of each stage: ok or FAILED."""
        lines = self.stderr.split("\nStage times:\n", 1)[1].splitlines()
        return {line.split()[0]: line.split()[-1] for line in lines if line.split()[0] != "total"}


class StubCheckout:
    def __init__(self, root: Path, real_preflight: bool = False):
        self.root = root
        self.bin = root / "system-bin"
        for folder in (root / "scripts", root / ".venv" / "bin", self.bin):
            folder.mkdir(parents=True)
        shutil.copy2(ROOT / "scripts" / "make-test", root / "scripts" / "make-test")
        shutil.copy2(ROOT / "pyproject.toml", root / "pyproject.toml")
        for name in SCRIPTS:
            if name == "preflight" and real_preflight:
                shutil.copy2(ROOT / "scripts" / "preflight", root / "scripts" / name)
            else:
                stub(root / "scripts" / name, name)
        for name in VENV_TOOLS:
            stub(root / ".venv" / "bin" / name, name)
        for name in SYSTEM:
            (self.bin / name).symlink_to(shutil.which(name))
        stub(self.bin / "make", "make")
        self.fresh_venv(True)

    def fresh_venv(self, fresh: bool) -> None:
        """The stamp .venv/.ready newer than pyproject.toml, or older."""
        stamp = self.root / ".venv" / ".ready"
        stamp.touch()
        mtime = (self.root / "pyproject.toml").stat().st_mtime + (10 if fresh else -10)
        os.utime(stamp, (mtime, mtime))

    def run(self, *argv: str, path: list[Path] = (), env: dict[str, str] | None = None) -> Run:
        """scripts/make-test ARGV from a plain environment whose PATH is `path` then the system bin."""
        environment = {"PATH": os.pathsep.join(str(p) for p in [*path, self.bin]), "HOME": str(self.root)}
        result = subprocess.run(
            [str(self.bin / "bash"), str(self.root / "scripts" / "make-test"), *argv],
            env=environment | (env or {}),
            cwd="/",
            capture_output=True,
            text=True,
            timeout=60,
        )
        return Run(result.returncode, result.stderr.replace(str(self.root), "ROOT"))
