# Copyright: the ecs-imds-golden authors
# Apache License 2.0
# Where the AMIs come from: the current ECS-optimized AMI of each variant, and the one
# amazon-ebs source every variant builds from. build.pkr.hcl adds, per variant, the fields that
# differ (source AMI, instance type, name, description, tags); locals.pkr.hcl computes them.

# Data sources take neither for_each nor (before Packer 1.12) locals, so each variant has its
# own, reading the parameter that local.variants names for it (tests/test_packer.py checks
# that they agree). Every one is read at the start of every build, -only or not.
data "amazon-parameterstore" "al2023-x86_64" {
  name   = "/aws/service/ecs/optimized-ami/amazon-linux-2023/recommended/image_id"
  region = var.region
}

data "amazon-parameterstore" "al2023-arm64" {
  name   = "/aws/service/ecs/optimized-ami/amazon-linux-2023/arm64/recommended/image_id"
  region = var.region
}

data "amazon-parameterstore" "al2-x86_64" {
  name   = "/aws/service/ecs/optimized-ami/amazon-linux-2/recommended/image_id"
  region = var.region
}

data "amazon-parameterstore" "al2-arm64" {
  name   = "/aws/service/ecs/optimized-ami/amazon-linux-2/arm64/recommended/image_id"
  region = var.region
}

# What every variant shares. Packer's manifest records this source's name as each build's
# "name"; custom_data.os and custom_data.architecture tell the variants apart.
source "amazon-ebs" "ecs-imds-golden" {
  region             = var.region
  ami_regions        = var.ami_regions
  ami_users          = var.ami_users
  ami_org_arns       = var.ami_org_arns
  ami_ou_arns        = var.ami_ou_arns
  encrypt_boot       = true
  kms_key_id         = var.kms_key_id
  region_kms_key_ids = var.region_kms_key_ids
  imds_support       = "v2.0"
  deprecate_at       = local.deprecate_at
  subnet_id          = var.subnet_id
  ssh_username       = "ec2-user"
  # Project on the build instance's volumes, as run_tags (build.pkr.hcl) on the rest.
  run_volume_tags = local.common_tags

  # The build instance: IMDSv2 only, one hop, so nothing behind a bridge can use it.
  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }
}
