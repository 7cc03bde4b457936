# Copyright: the ecs-imds-golden authors
# Apache License 2.0
"""Checks before `make ami` spends money: the variant exists, AWS credentials are present,
and the Packer on PATH can read these templates.

Exit codes: 0 ready, 2 bad OS or ARCH, 3 no AWS credentials, 4 Packer missing or too old.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys

import botocore.session

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
    if not shutil.which("packer"):
        return None
    output = subprocess.run(["packer", "version"], capture_output=True, text=True).stdout
    match = re.search(r"(\d+)\.(\d+)\.(\d+)", output)
    return tuple(int(part) for part in match.groups()) if match else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make ami", description=__doc__.splitlines()[0])
    parser.add_argument("--os", default="al2023")
    parser.add_argument("--arch", default="x86_64")
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
    version = packer_version()
    if version is None or version < MIN_PACKER:
        found = ".".join(map(str, version)) if version else "none"
        wanted = ".".join(map(str, MIN_PACKER))
        return fail(4, f"packer {found} found; the templates need Packer >= {wanted} (required_plugins)")
    print(f"make ami: building {args.os}-{args.arch} with credentials from {source}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
