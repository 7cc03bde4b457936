# Copyright: the ecs-imds-golden authors
# Apache License 2.0
"""`make image` and what it is built from: the local twin of the golden AMI.

Checkout tools, not part of the installable `golden-ami` package: they run the playbooks,
the Molecule fixture and the scripts of this repository. Run from the checkout's root with
``PYTHONPATH=scripts`` (the Makefile, scripts/make-test and tox do).
"""

from pathlib import Path

# The checkout: the playbooks, the role and the Molecule fixture live there.
PROJECT_ROOT = Path(__file__).resolve().parents[2]
