"""Tools of the ecs-imds-golden pipeline: the local host image and, later, AWS publishing."""

from pathlib import Path

# The checkout this package runs from: the role, playbooks and Molecule files live there.
PROJECT_ROOT = Path(__file__).resolve().parents[2]
