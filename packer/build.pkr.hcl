# Copyright: the ecs-imds-golden authors
# Apache License 2.0
# One build per variant of local.variants. On each build instance, in this order:
# 1. the role: playbooks/golden-ami.yml without its build-hygiene play (`make image` applies
#    both in one run; here hygiene waits for verify);
# 2. a reboot, so that verify sees what an instance launched from the AMI boots into;
# 3. verify against the real IMDS: playbooks/verify.yml with verify_target=ec2. A failed check
#    fails the build, naming the check, before any AMI exists;
# 4. build hygiene, which ends with its validate step;
# then the manifest post-processor records each AMI for the publish tools.
# `packer build -only='amazon-ebs.al2023-*' packer/` builds a subset; `make ami OS=al2
# ARCH=arm64` builds amazon-ebs.al2-arm64.

locals {
  # Every ansible step runs with the repository's configuration and roles.
  ansible_env_vars = [
    "ANSIBLE_CONFIG=${path.root}/../ansible.cfg",
    "ANSIBLE_ROLES_PATH=${path.root}/../roles",
  ]
  # Written just before the reboot, in /run (a tmpfs): verify fails while it is still there.
  reboot_marker = "/run/ecs-imds-golden.reboot-pending"
}

build {
  # The shared source of sources.pkr.hcl, once per variant, named after it. A build-level
  # source may only add fields: a field set in both places is an error.
  dynamic "source" {
    for_each = local.variants
    iterator = variant
    labels   = ["source.amazon-ebs.ecs-imds-golden"]

    content {
      name            = variant.key
      source_ami      = local.source_amis[variant.key]
      instance_type   = var.instance_types[variant.value.arch]
      ami_name        = local.ami_names[variant.key]
      ami_description = local.ami_descriptions[variant.key]
      tags            = local.variant_tags[variant.key]
      snapshot_tags   = local.variant_tags[variant.key]
      # On the build instance, its key pair and security group too: the build role's IAM
      # conditions (iam/packer-build.json) require Project on everything it touches.
      run_tags = local.variant_tags[variant.key]
    }
  }

  # 1. The role. Its playbook's build-hygiene play is tagged build_hygiene.
  provisioner "ansible" {
    playbook_file   = "${path.root}/../playbooks/golden-ami.yml"
    command         = var.ansible_playbook_command
    user            = "ec2-user"
    extra_arguments = ["--skip-tags", "build_hygiene"]
    # Straight to the instance over SSH, with the communicator's key: no local proxy adapter.
    use_proxy        = false
    ansible_env_vars = local.ansible_env_vars
  }

  # 2. The reboot. `systemctl reboot` returns at once, and the connection may drop as the
  #    instance goes down: expect_disconnect allows that.
  provisioner "shell" {
    inline            = ["sudo touch ${local.reboot_marker}", "sudo systemctl reboot"]
    expect_disconnect = true
  }

  # 3. Verify against the real IMDS. pause_before lets the reboot get under way; verify then
  #    waits until the instance answers, and fails if the mark has survived.
  provisioner "ansible" {
    pause_before  = "30s"
    playbook_file = "${path.root}/../playbooks/verify.yml"
    command       = var.ansible_playbook_command
    user          = "ec2-user"
    extra_arguments = ["--extra-vars", jsonencode({
      verify_target        = "ec2"
      verify_probe_image   = var.verify_probe_image
      verify_reboot_marker = local.reboot_marker
    })]
    use_proxy        = false
    ansible_env_vars = local.ansible_env_vars
  }

  # 4. Build hygiene and its validate step, in one run: hygiene removes authorized_keys, so
  #    nothing can log in after it.
  provisioner "ansible" {
    playbook_file    = "${path.root}/../playbooks/build-hygiene.yml"
    command          = var.ansible_playbook_command
    user             = "ec2-user"
    use_proxy        = false
    ansible_env_vars = local.ansible_env_vars
  }

  post-processor "manifest" {
    output      = "${path.root}/manifest.json"
    strip_path  = true
    custom_data = local.manifest_data[source.name]
  }
}
