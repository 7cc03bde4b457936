# Copyright: the ecs-imds-golden authors
# Apache License 2.0
# Inputs of the golden-AMI build. release.auto.pkrvars.hcl pins the release values;
# `make ami` adds git_commit (and CI may add sharing or encryption settings) with -var.
# Validation error messages must be constant full sentences: Packer rejects anything else.

variable "region" {
  type        = string
  description = "Region the build instances run in and the AMIs are registered in first. Also where the ECS-optimized source AMI IDs are read from SSM."

  validation {
    condition     = can(regex("^[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-[0-9]{1,2}$", var.region))
    error_message = "The region must be an AWS region name such as eu-west-1, us-gov-west-1 or cn-north-1."
  }
}

variable "ami_regions" {
  type        = list(string)
  description = "Regions the finished AMIs are copied to, tags and launch permissions included. Empty: the build region only. Listing the build region is harmless (no copy is made)."
  default     = []

  validation {
    condition     = length([for r in var.ami_regions : r if can(regex("^[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-[0-9]{1,2}$", r))]) == length(var.ami_regions)
    error_message = "Every entry of ami_regions must be an AWS region name such as eu-west-1."
  }
}

variable "instance_types" {
  type        = map(string)
  description = "Build instance type per architecture, keyed x86_64 and/or arm64. The type must match the architecture (Graviton types for arm64). A missing key only breaks the builds of that architecture, so `-only` builds of the other one still work."
  default = {
    x86_64 = "m7i.large"
    arm64  = "m7g.large"
  }

  validation {
    condition     = length([for arch in keys(var.instance_types) : arch if contains(["x86_64", "arm64"], arch)]) == length(var.instance_types)
    error_message = "The keys of instance_types must be x86_64 and/or arm64."
  }

  validation {
    condition     = length([for t in values(var.instance_types) : t if can(regex("^[a-z][a-z0-9-]*\\.[a-z0-9]+$", t))]) == length(var.instance_types)
    error_message = "Every instance_types value must be an EC2 instance type such as m7i.large or c7g.xlarge."
  }
}

variable "ami_name_prefix" {
  type        = string
  description = "First part of every AMI name: <prefix>-<os>-<arch>-<UTC build stamp>. Letters, digits and ( ) . / @ _ - only, at most 64 characters, so the full name stays within the 128 AWS allows."

  validation {
    condition     = can(regex("^[A-Za-z0-9][A-Za-z0-9()./@_-]{0,63}$", var.ami_name_prefix))
    error_message = "The ami_name_prefix must be 1 to 64 characters: a letter or digit first, then letters, digits or ( ) . / @ _ -."
  }
}

variable "ami_users" {
  type        = list(string)
  description = "AWS account IDs allowed to launch the AMIs. Sharing needs a customer-managed key: set kms_key_id (and region_kms_key_ids when copying), because an AMI encrypted with the AWS-managed EBS key cannot be used by other accounts."
  default     = []

  validation {
    condition     = length([for id in var.ami_users : id if can(regex("^[0-9]{12}$", id))]) == length(var.ami_users)
    error_message = "Every entry of ami_users must be a 12-digit AWS account ID."
  }
}

variable "ami_org_arns" {
  type        = list(string)
  description = "ARNs of AWS Organizations whose accounts may launch the AMIs (arn:aws:organizations::<management account>:organization/o-...). Needs a customer-managed key, as for ami_users."
  default     = []

  validation {
    condition     = length([for arn in var.ami_org_arns : arn if can(regex("^arn:aws[a-z-]*:organizations::[0-9]{12}:organization/o-[a-z0-9]{10,32}$", arn))]) == length(var.ami_org_arns)
    error_message = "Every entry of ami_org_arns must be an organization ARN: arn:aws:organizations::123456789012:organization/o-exampleorgid."
  }
}

variable "ami_ou_arns" {
  type        = list(string)
  description = "ARNs of organizational units whose accounts may launch the AMIs (arn:aws:organizations::<management account>:ou/o-.../ou-...). Needs a customer-managed key, as for ami_users."
  default     = []

  validation {
    condition     = length([for arn in var.ami_ou_arns : arn if can(regex("^arn:aws[a-z-]*:organizations::[0-9]{12}:ou/o-[a-z0-9]{10,32}/ou-[a-z0-9]{4,32}-[a-z0-9]{8,32}$", arn))]) == length(var.ami_ou_arns)
    error_message = "Every entry of ami_ou_arns must be an OU ARN: arn:aws:organizations::123456789012:ou/o-exampleorgid/ou-examplerootid-exampleouid."
  }
}

variable "kms_key_id" {
  type        = string
  description = "KMS key (ID, ARN or alias/...) that encrypts the AMI snapshots in the build region. Empty: the AWS-managed aws/ebs key, which is fine for private AMIs but cannot be shared. Copies in other ami_regions use region_kms_key_ids."
  default     = ""

  validation {
    condition     = var.kms_key_id == "" || can(regex("^((arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:key/)?(mrk-)?[a-f0-9][a-f0-9-]+|(arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:)?alias/[A-Za-z0-9:/_-]+)$", var.kms_key_id))
    error_message = "The kms_key_id must be empty or a KMS key ID, key ARN, alias/<name> or alias ARN."
  }
}

variable "region_kms_key_ids" {
  type        = map(string)
  description = "KMS key per region for the encrypted copies. Empty: copies use each region's AWS-managed aws/ebs key. When set, Packer wants exactly one entry per ami_regions entry (build region included); it overrides kms_key_id in the build region."
  default     = {}

  validation {
    condition     = length([for r in keys(var.region_kms_key_ids) : r if can(regex("^[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-[0-9]{1,2}$", r))]) == length(var.region_kms_key_ids)
    error_message = "The keys of region_kms_key_ids must be AWS region names such as eu-west-1."
  }
}

variable "deprecate_after_days" {
  type        = number
  description = "Days after the build at which the AMIs are marked deprecated (EC2 DeprecationTime): they stay launchable, but drop out of default listings."
  default     = 90

  validation {
    condition     = var.deprecate_after_days > 0 && var.deprecate_after_days <= 3650 && floor(var.deprecate_after_days) == var.deprecate_after_days
    error_message = "The deprecate_after_days must be a whole number of days from 1 to 3650 (the EC2 limit is ten years)."
  }
}

variable "role_version" {
  type        = string
  description = "Version of roles/ecs_imds_block baked into the AMIs, recorded in the RoleVersion tag and the manifest."

  validation {
    condition     = can(regex("^[0-9]+\\.[0-9]+\\.[0-9]+([-+][0-9A-Za-z.-]+)?$", var.role_version))
    error_message = "The role_version must be a semantic version such as 0.1.0."
  }
}

variable "git_commit" {
  type        = string
  description = "Commit of this repository the AMIs are built from, recorded in the GitCommit tag and the manifest. `make ami` passes the real one; builds by hand record unknown."
  default     = "unknown"

  validation {
    condition     = can(regex("^(unknown|[0-9a-f]{7,40}(-dirty)?)$", var.git_commit))
    error_message = "The git_commit must be unknown or a 7 to 40 digit lowercase hex commit ID, optionally suffixed -dirty."
  }
}

variable "subnet_id" {
  type        = string
  description = "Subnet the build instances are launched in. Empty: a subnet of the default VPC. The subnet must let Packer reach the instance over SSH (port 22)."
  default     = ""

  validation {
    condition     = var.subnet_id == "" || can(regex("^subnet-([0-9a-f]{8}|[0-9a-f]{17})$", var.subnet_id))
    error_message = "The subnet_id must be empty or a subnet ID such as subnet-0123456789abcdef0."
  }
}

variable "ansible_playbook_command" {
  type        = string
  description = "ansible-playbook executable that provisions the build instances. AL2 ships Python 3.7, which the ansible-core this repository pins no longer supports on targets: AL2 builds need an ansible-core 2.16 controller (which also handles AL2023), so point this at such a venv, e.g. -var ansible_playbook_command=/opt/ansible-core-2.16/bin/ansible-playbook."
  default     = "ansible-playbook"

  validation {
    condition     = length(var.ansible_playbook_command) > 0
    error_message = "The ansible_playbook_command must name an executable."
  }
}

variable "verify_probe_image" {
  type        = string
  description = "Image the build's verify runs its container probes in, pulled by the build instance from the registry the reference names, never Docker Hub; the probe needs sh, nc, awk and cut as busybox has them (public.ecr.aws/docker/library/busybox:1.36). Empty: verify builds one on the instance from the instance's own programs, and nothing is downloaded. Either way verify removes it before build hygiene."
  default     = ""

  validation {
    condition     = var.verify_probe_image == "" || (can(regex("^(localhost|[a-z0-9-]+(\\.[a-z0-9-]+)+|[a-z0-9-]+:[0-9]+)(:[0-9]+)?/[a-z0-9]+([._/-][a-z0-9]+)*(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[a-f0-9]{64})?$", var.verify_probe_image)) && can(regex("^((index|registry-1|registry\\.hub)\\.)?docker\\.(io|com)[:/]", var.verify_probe_image)) == false)
    error_message = "The verify_probe_image must be empty or an image reference that starts with its registry host, such as public.ecr.aws/docker/library/busybox:1.36; Docker Hub is refused."
  }
}
