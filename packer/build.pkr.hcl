# One build per variant of local.variants: the ansible provisioner applies
# playbooks/golden-ami.yml (roles/ecs_imds_block) over SSH, then the manifest post-processor
# records each AMI for the publish tools. `packer build -only='amazon-ebs.al2023-*' packer/`
# builds a subset; `make ami OS=al2 ARCH=arm64` builds amazon-ebs.al2-arm64.

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

  provisioner "ansible" {
    playbook_file = "${path.root}/../playbooks/golden-ami.yml"
    command       = var.ansible_playbook_command
    user          = "ec2-user"
    # Straight to the instance over SSH, with the communicator's key: no local proxy adapter.
    use_proxy = false
    ansible_env_vars = [
      "ANSIBLE_CONFIG=${path.root}/../ansible.cfg",
      "ANSIBLE_ROLES_PATH=${path.root}/../roles",
    ]
  }

  post-processor "manifest" {
    output      = "${path.root}/manifest.json"
    strip_path  = true
    custom_data = local.manifest_data[source.name]
  }
}
