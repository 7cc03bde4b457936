# Copyright: the ecs-imds-golden authors
# Apache License 2.0
"""Helpers the tests share that are too large to sit at the top of a test module."""
