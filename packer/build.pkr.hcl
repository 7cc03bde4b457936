# All four variants in one build: the ansible provisioner applies playbooks/golden-ami.yml
# (roles/ecs_imds_block) over SSH, then the manifest post-processor records each AMI for
# the publish tools. `packer build -only='amazon-ebs.al2023-*' packer/` builds a subset.

build {
  sources = [
    "source.amazon-ebs.al2023-x86_64",
    "source.amazon-ebs.al2023-arm64",
    "source.amazon-ebs.al2-x86_64",
    "source.amazon-ebs.al2-arm64",
  ]

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
