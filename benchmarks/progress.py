# Copyright: the ecs-imds-golden authors
# Apache License 2.0
"""Progress lines on stderr, stamped with the seconds since the run started."""

from __future__ import annotations

import sys
import time

STARTED = time.monotonic()


def log(message: str) -> None:
    print(f"bench [{time.monotonic() - STARTED:6.1f}s] {message}", file=sys.stderr, flush=True)
