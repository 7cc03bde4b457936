# Copyright: the ecs-imds-golden authors
# Apache License 2.0
"""Checks before `make ami` spends money: the variant exists, AWS credentials are present,
the Packer on PATH can read these templates, and the ansible-playbook Packer will run exists.

Exit codes: 0 ready, 2 bad OS or ARCH, 3 no AWS credentials, 4 Packer missing or too old,
5 the ansible-playbook given is not an executable.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

import botocore.session
from local_image.tools import MissingTool, system_tool

VARIANTS = {"al2023": ("x86_64", "arm64"), "al2": ("x86_64", "arm64")}
MIN_PACKER = (1, 10, 0)


def fail(code: int, message: str) -> int:
    print(f"make ami: {message}", file=sys.stderr)
    return code


def credentials_source() -> str | None:
    """Where botocore would take credentials from, or None; nothing is sent to AWS."""
    found = botocore.session.get_session().get_credentials()
    return found.method if found else None


def packer_version() -> tuple[int, ...] | None:
    """The version of the packer on PATH, None if unreadable; MissingTool without one."""
    output = subprocess.run([system_tool("packer"), "version"], capture_output=True, text=True).stdout
    match = re.search(r"(\d+)\.(\d+)\.(\d+)", output)
    return tuple(int(part) for part in match.groups()) if match else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make ami", description=__doc__.splitlines()[0])
    parser.add_argument("--os", default="al2023")
    parser.add_argument("--arch", default="x86_64")
    parser.add_argument(
        "--ansible-playbook",
        type=Path,
        help="the ansible-playbook Packer runs (its ansible_playbook_command), checked if given",
    )
    args = parser.parse_args(argv)
    if args.os not in VARIANTS:
        return fail(2, f"OS={args.os!r} is not one of {', '.join(VARIANTS)}")
    if args.arch not in VARIANTS[args.os]:
        return fail(2, f"ARCH={args.arch!r} is not one of {', '.join(VARIANTS[args.os])}")
    source = credentials_source()
    if source is None:
        return fail(
            3,
            "no AWS credentials found (environment, AWS_PROFILE, SSO, web identity or an instance "
            "role). Configure them, or run `make image` for the local build that needs none.",
        )
    try:
        version = packer_version()
    except MissingTool as exc:
        return fail(4, str(exc))
    if version is None or version < MIN_PACKER:
        found = ".".join(map(str, version)) if version else "none"
        wanted = ".".join(map(str, MIN_PACKER))
        return fail(4, f"packer {found} found; the templates need Packer >= {wanted} (required_plugins)")
    playbook = args.ansible_playbook
    if playbook is not None and not (playbook.is_file() and os.access(playbook, os.X_OK)):
        return fail(
            5,
            f"ansible-playbook {playbook} is not an executable; install the tools with: make .venv/.ready, "
            "or give another with ANSIBLE_PLAYBOOK=/path/to/ansible-playbook",
        )
    print(f"make ami: building {args.os}-{args.arch} with credentials from {source}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
