# Copyright: the ecs-imds-golden authors
# Apache License 2.0
"""Audit ECS container instances, their launch templates and the account's IMDS defaults.

Walks the ECS clusters of one region (those named with --cluster, or all of them), finds the
EC2 instance behind each container instance and reports, per instance, whether its AMI is one
that `publish` wrote under the SSM prefix and how its instance metadata options are set. It
also reports the account's IMDS defaults (what a launch gets when nothing else sets an
option) and the MetadataOptions of the launch template versions the clusters' Auto Scaling
groups launch: the groups of the container instances and of the clusters' capacity providers.

The modules: command (the arguments and the run), model (the records), fetch (the AWS reads
and their call counts), launch_templates (versions and $Latest/$Default), findings (the
threat model's policy, without AWS) and report (the text and the --json data).
"""

from golden_ami.audit.command import add_arguments, run
from golden_ami.audit.findings import BLOCK_NOT_LIVE, FINDING_KEYS, HOST_NOT_VERIFIED

__all__ = ["BLOCK_NOT_LIVE", "FINDING_KEYS", "HOST_NOT_VERIFIED", "add_arguments", "run"]
