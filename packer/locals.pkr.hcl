# Values shared by the four sources, and what tells them apart, keyed by source name
# (al2023-x86_64, al2023-arm64, al2-x86_64, al2-arm64).

locals {
  # One clock reading per build: AMI names, BuildTime tags and deprecation dates agree.
  build_time   = timestamp()
  build_stamp  = formatdate("YYYYMMDD'T'hhmmss'Z'", local.build_time)
  deprecate_at = timeadd(local.build_time, format("%dh", var.deprecate_after_days * 24))

  # Public SSM parameters naming the current ECS-optimized AMI. The data sources in
  # al2023.pkr.hcl and al2.pkr.hcl repeat these strings: before Packer 1.12 a data source
  # cannot read locals (hashicorp/packer#11011). tests/test_packer.py keeps them equal.
  source_ami_parameters = {
    "al2023-x86_64" = "/aws/service/ecs/optimized-ami/amazon-linux-2023/recommended/image_id"
    "al2023-arm64"  = "/aws/service/ecs/optimized-ami/amazon-linux-2023/arm64/recommended/image_id"
    "al2-x86_64"    = "/aws/service/ecs/optimized-ami/amazon-linux-2/recommended/image_id"
    "al2-arm64"     = "/aws/service/ecs/optimized-ami/amazon-linux-2/arm64/recommended/image_id"
  }

  ami_names = {
    for name in keys(local.source_ami_parameters) : name => "${var.ami_name_prefix}-${name}-${local.build_stamp}"
  }

  # Tags of every AMI and snapshot. The publish and cleanup tools find our AMIs by Project.
  common_tags = {
    Project     = "ecs-imds-golden"
    RoleVersion = var.role_version
    GitCommit   = var.git_commit
    BuildTime   = local.build_time
  }

  # Tags of one variant; each source sets merge(local.common_tags, local.variant_tags[<name>]).
  variant_tags = {
    "al2023-x86_64" = {
      Name               = local.ami_names["al2023-x86_64"]
      OS                 = "al2023"
      Architecture       = "x86_64"
      SourceAMI          = data.amazon-parameterstore.al2023-x86_64.value
      SourceAMIParameter = local.source_ami_parameters["al2023-x86_64"]
    }
    "al2023-arm64" = {
      Name               = local.ami_names["al2023-arm64"]
      OS                 = "al2023"
      Architecture       = "arm64"
      SourceAMI          = data.amazon-parameterstore.al2023-arm64.value
      SourceAMIParameter = local.source_ami_parameters["al2023-arm64"]
    }
    "al2-x86_64" = {
      Name               = local.ami_names["al2-x86_64"]
      OS                 = "al2"
      Architecture       = "x86_64"
      SourceAMI          = data.amazon-parameterstore.al2-x86_64.value
      SourceAMIParameter = local.source_ami_parameters["al2-x86_64"]
    }
    "al2-arm64" = {
      Name               = local.ami_names["al2-arm64"]
      OS                 = "al2"
      Architecture       = "arm64"
      SourceAMI          = data.amazon-parameterstore.al2-arm64.value
      SourceAMIParameter = local.source_ami_parameters["al2-arm64"]
    }
  }

  # custom_data of each build in manifest.json, looked up by source.name.
  manifest_data = {
    for name, tags in local.variant_tags : name => {
      os                   = tags.OS
      architecture         = tags.Architecture
      source_ami           = tags.SourceAMI
      source_ami_parameter = tags.SourceAMIParameter
      role_version         = var.role_version
      git_commit           = var.git_commit
    }
  }
}
