# Copyright: the ecs-imds-golden authors
# Apache License 2.0
"""Reading the files a command is given: never more than a bound, every failure one UsageError."""

from __future__ import annotations

from pathlib import Path

from golden_ami.aws import UsageError


def read_at_most(path: str | Path, limit: int, what: str, missing: str | None = None) -> bytes:
    """At most ``limit`` + 1 bytes of ``path``: a caller sees that a file is over ``limit``
    without reading it whole (/dev/zero included). A file that cannot be read is a UsageError
    naming ``what`` and the path; ``missing``, if given, is the message for a file not there."""
    try:
        with open(path, "rb") as file:
            return file.read(limit + 1)
    except FileNotFoundError as exc:
        if missing is None:
            raise UsageError(f"cannot read {what} {path}: {exc.strerror or exc}") from exc
        raise UsageError(missing) from exc
    except OSError as exc:
        raise UsageError(f"cannot read {what} {path}: {exc.strerror or exc}") from exc
