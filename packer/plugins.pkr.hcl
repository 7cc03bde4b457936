# Copyright: the ecs-imds-golden authors
# Apache License 2.0
# Packer core and plugin pins. Exact plugin versions: `packer init` must fetch what CI
# validated, and a plugin upgrade is a reviewed change to this file.

packer {
  required_version = ">= 1.10.0"

  required_plugins {
    amazon = {
      source  = "github.com/hashicorp/amazon"
      version = "= 1.8.0"
    }
    ansible = {
      source  = "github.com/hashicorp/ansible"
      version = "= 1.1.4"
    }
  }
}
