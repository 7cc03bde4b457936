# Copyright: the ecs-imds-golden authors
# Apache License 2.0
"""golden-ami: publish, roll back, find and clean up the golden ECS AMIs in SSM, write user data
for hosts that are not on them, and audit a fleet (see cli.py).

Installed by `pip install .`; it needs nothing from a checkout. The role's files it renders
user data from come with it, as the ``ecs_imds_block`` package.
"""
