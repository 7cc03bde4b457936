# Amazon Linux 2: the ECS-optimized AMI of each architecture, and one source per architecture.
# Shared values (names, tags, deprecation) live in locals.pkr.hcl; block-type settings
# such as metadata_options cannot be shared, so each source repeats them.

# Literal names, not local.source_ami_parameters: see the note there.
data "amazon-parameterstore" "al2-x86_64" {
  name   = "/aws/service/ecs/optimized-ami/amazon-linux-2/recommended/image_id"
  region = var.region
}

data "amazon-parameterstore" "al2-arm64" {
  name   = "/aws/service/ecs/optimized-ami/amazon-linux-2/arm64/recommended/image_id"
  region = var.region
}

source "amazon-ebs" "al2-x86_64" {
  source_ami      = data.amazon-parameterstore.al2-x86_64.value
  instance_type   = var.instance_types["x86_64"]
  ami_name        = local.ami_names["al2-x86_64"]
  ami_description = "ECS-optimized Amazon Linux 2 (x86_64), containers kept away from IMDS. ecs_imds_block ${var.role_version}, commit ${var.git_commit}."
  tags            = merge(local.common_tags, local.variant_tags["al2-x86_64"])
  snapshot_tags   = merge(local.common_tags, local.variant_tags["al2-x86_64"])
  # On the build instance, its volumes, key pair and security group too: the build role's
  # IAM conditions (iam/packer-build.json) require Project on everything it touches.
  run_tags        = merge(local.common_tags, local.variant_tags["al2-x86_64"])
  run_volume_tags = local.common_tags

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

  # The build instance: IMDSv2 only, one hop, so nothing behind a bridge can use it.
  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }
}

source "amazon-ebs" "al2-arm64" {
  source_ami      = data.amazon-parameterstore.al2-arm64.value
  instance_type   = var.instance_types["arm64"]
  ami_name        = local.ami_names["al2-arm64"]
  ami_description = "ECS-optimized Amazon Linux 2 (arm64), containers kept away from IMDS. ecs_imds_block ${var.role_version}, commit ${var.git_commit}."
  tags            = merge(local.common_tags, local.variant_tags["al2-arm64"])
  snapshot_tags   = merge(local.common_tags, local.variant_tags["al2-arm64"])
  # On the build instance, its volumes, key pair and security group too: the build role's
  # IAM conditions (iam/packer-build.json) require Project on everything it touches.
  run_tags        = merge(local.common_tags, local.variant_tags["al2-arm64"])
  run_volume_tags = local.common_tags

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

  # The build instance: IMDSv2 only, one hop, so nothing behind a bridge can use it.
  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }
}
