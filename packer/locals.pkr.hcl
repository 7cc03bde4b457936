# Copyright: the ecs-imds-golden authors
# Apache License 2.0
# What the four builds share and what tells them apart. A variant is one OS family on one
# architecture; each is one build, named after it (amazon-ebs.<variant>, what `-only` selects),
# and every per-variant map below is keyed by that name.

locals {
  # One clock reading per build: AMI names, BuildTime tags and deprecation dates agree.
  build_time   = timestamp()
  build_stamp  = formatdate("YYYYMMDD'T'hhmmss'Z'", local.build_time)
  deprecate_at = timeadd(local.build_time, format("%dh", var.deprecate_after_days * 24))

  # The variants: OS family, architecture, and the public SSM parameter naming the current
  # ECS-optimized AMI the variant starts from.
  variants = {
    "al2023-x86_64" = { os = "al2023", arch = "x86_64", parameter = "/aws/service/ecs/optimized-ami/amazon-linux-2023/recommended/image_id" }
    "al2023-arm64"  = { os = "al2023", arch = "arm64", parameter = "/aws/service/ecs/optimized-ami/amazon-linux-2023/arm64/recommended/image_id" }
    "al2-x86_64"    = { os = "al2", arch = "x86_64", parameter = "/aws/service/ecs/optimized-ami/amazon-linux-2/recommended/image_id" }
    "al2-arm64"     = { os = "al2", arch = "arm64", parameter = "/aws/service/ecs/optimized-ami/amazon-linux-2/arm64/recommended/image_id" }
  }
  os_names = { al2023 = "Amazon Linux 2023", al2 = "Amazon Linux 2" }

  # The AMI ID each variant starts from, read from its parameter (sources.pkr.hcl). A data
  # source cannot be looked up by a computed name, so each one is named here.
  source_amis = {
    "al2023-x86_64" = data.amazon-parameterstore.al2023-x86_64.value
    "al2023-arm64"  = data.amazon-parameterstore.al2023-arm64.value
    "al2-x86_64"    = data.amazon-parameterstore.al2-x86_64.value
    "al2-arm64"     = data.amazon-parameterstore.al2-arm64.value
  }

  ami_names = {
    for name in keys(local.variants) : name => "${var.ami_name_prefix}-${name}-${local.build_stamp}"
  }

  ami_descriptions = {
    for name, variant in local.variants : name => "ECS-optimized ${local.os_names[variant.os]} (${variant.arch}), containers kept away from IMDS. ecs_imds_block ${var.role_version}, commit ${var.git_commit}."
  }

  # Tags of every AMI and snapshot, and of the build instance's volumes. The publish and cleanup
  # tools find our AMIs by Project; the build role's IAM conditions require it.
  common_tags = {
    Project     = "ecs-imds-golden"
    RoleVersion = var.role_version
    GitCommit   = var.git_commit
    BuildTime   = local.build_time
  }

  # Tags of each variant's AMI, snapshots and build instance.
  variant_tags = {
    for name, variant in local.variants : name => merge(local.common_tags, {
      Name               = local.ami_names[name]
      OS                 = variant.os
      Architecture       = variant.arch
      SourceAMI          = local.source_amis[name]
      SourceAMIParameter = variant.parameter
    })
  }

  # custom_data of each build in manifest.json, looked up by source.name.
  manifest_data = {
    for name, tags in local.variant_tags : name => {
      os                   = tags.OS
      architecture         = tags.Architecture
      source_ami           = tags.SourceAMI
      source_ami_parameter = tags.SourceAMIParameter
      role_version         = tags.RoleVersion
      git_commit           = tags.GitCommit
    }
  }
}
