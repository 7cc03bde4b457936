# Copyright: the ecs-imds-golden authors
# Apache License 2.0
# The README's two commands, `make test` and `make image`, and `make ami` for a real AMI.
SHELL := /bin/bash
VENV := .venv
OS ?= al2023
ARCH ?= x86_64
PACKER_VARS = -var git_commit=$$(git rev-parse HEAD)

.PHONY: test image ami bench lint unit molecule clean

# Every target that runs stages calls the one stage runner, scripts/make-test, which sets up
# what each stage needs (the system tools, .venv, Docker, the images) and times the stages; the
# Makefile never runs make again.

## test: check and install the system tools, set up .venv, then lint, unit tests, Molecule on
##       Debian 12, 13 and sid, and make image; prints each stage's time (needs Docker; root installs)
test:
	scripts/make-test

## image: apply playbooks/golden-ami.yml to a local host image and verify it (Docker; root installs)
## lint, unit, molecule: one stage of `make test`, after the set-up it needs (lint: no Docker)
image lint unit molecule:
	scripts/make-test $@

## bench: IMDS time-to-fail, role cost, data-path overhead, audit scaling, heal (Docker, root; about 26 min);
##        BENCH_ARGS go to python -m benchmarks
bench:
	scripts/make-test bench -- $(BENCH_ARGS)

# .venv alone, with the pinned tools of pyproject.toml's dev extra (the tools stage): for Molecule
# run by hand (.venv/bin/molecule) and CI's Molecule job.
$(VENV)/.ready: pyproject.toml
	scripts/make-test tools

## ami: a real AMI with Packer (OS=al2023|al2, ARCH=x86_64|arm64); needs AWS credentials
##      Packer's ansible provisioner runs .venv's ansible-playbook by path (from a plain shell
##      .venv/bin is not on PATH), or yours: AL2 needs ansible-core 2.16, so
##      make ami OS=al2 ANSIBLE_PLAYBOOK=/opt/ansible-core-2.16/bin/ansible-playbook
ami: ANSIBLE_PLAYBOOK ?= $(or $(PKR_VAR_ansible_playbook_command),$(abspath $(VENV))/bin/ansible-playbook)
ami:
	scripts/make-test tools
	PYTHONPATH=scripts $(VENV)/bin/python -m ami_preflight --os "$(OS)" --arch "$(ARCH)" \
		--ansible-playbook "$(ANSIBLE_PLAYBOOK)"
	packer init packer/
	packer validate $(PACKER_VARS) -var ansible_playbook_command="$(ANSIBLE_PLAYBOOK)" packer/
	packer build -only="amazon-ebs.$(OS)-$(ARCH)" $(PACKER_VARS) \
		-var ansible_playbook_command="$(ANSIBLE_PLAYBOOK)" packer/

clean:
	rm -rf $(VENV) .tox
