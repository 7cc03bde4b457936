# Copyright: the ecs-imds-golden authors
# Apache License 2.0
# Release values, loaded automatically by `packer build packer/`. A new release bumps
# role_version here; git_commit comes from `make ami` (-var git_commit=...).

role_version         = "0.1.0"
ami_name_prefix      = "ecs-imds-golden"
deprecate_after_days = 90
region               = "eu-west-1"
ami_regions          = ["eu-west-1"]
