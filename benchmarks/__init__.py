"""Benchmarks of the ecs-imds-golden pipeline: `python -m benchmarks` (see __main__.py)."""
