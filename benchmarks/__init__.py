# Copyright: the ecs-imds-golden authors
# Apache License 2.0
"""Benchmarks of the ecs-imds-golden pipeline: `python -m benchmarks` (see __main__.py)."""

import sys
from pathlib import Path

# The checkout tools the benchmarks build on (scripts/local_image, scripts/moto_aws.py) are
# not installed with the golden-ami package: they are imported from the checkout.
_SCRIPTS = str(Path(__file__).resolve().parents[1] / "scripts")
if _SCRIPTS not in sys.path:
    sys.path.insert(0, _SCRIPTS)
