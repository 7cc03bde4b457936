# Copyright: the ecs-imds-golden authors
# Apache License 2.0
# The README's two commands, `make test` and `make image`, and `make ami` for a real AMI.
SHELL := /bin/bash
VENV := .venv
OS ?= al2023
ARCH ?= x86_64
PACKER_VARS = -var git_commit=$$(git rev-parse HEAD)

.PHONY: test image ami bench lint unit molecule clean

# One environment for every tool (pyproject.toml's dev extras), installed with uv: `make test`,
# `make image`, Molecule for role authors (.venv/bin/molecule) and `make ami`'s preflight use it.
# uv trusts the system's certificate store, as pip and curl do, not only its bundled roots: a
# network whose TLS goes through a proxy with its own CA then works for both.
$(VENV)/.ready: pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check "$$(grep -o 'uv==[0-9.]*' pyproject.toml)"
	$(VENV)/bin/uv pip install --quiet --system-certs --python $(VENV)/bin/python -e '.[dev]'
	touch $@

## test: check and install the system tools, set up .venv, then lint, unit tests, Molecule on
##       Debian 12, 13 and sid, and make image; prints each stage's time (needs Docker; root installs)
test:
	scripts/make-test

## image: apply playbooks/golden-ami.yml to a local host image and verify it
image:
	scripts/preflight image
	$(MAKE) --no-print-directory $(VENV)/.ready
	scripts/ensure-docker
	PYTHONPATH=scripts $(VENV)/bin/python -m local_image.make_image

## ami: a real AMI with Packer (OS=al2023|al2, ARCH=x86_64|arm64); needs AWS credentials
##      Packer's ansible provisioner runs .venv's ansible-playbook by path (from a plain shell
##      .venv/bin is not on PATH), or yours: AL2 needs ansible-core 2.16, so
##      make ami OS=al2 ANSIBLE_PLAYBOOK=/opt/ansible-core-2.16/bin/ansible-playbook
ami: ANSIBLE_PLAYBOOK ?= $(or $(PKR_VAR_ansible_playbook_command),$(abspath $(VENV))/bin/ansible-playbook)
ami: $(VENV)/.ready
	PYTHONPATH=scripts $(VENV)/bin/python -m ami_preflight --os "$(OS)" --arch "$(ARCH)" \
		--ansible-playbook "$(ANSIBLE_PLAYBOOK)"
	packer init packer/
	packer validate $(PACKER_VARS) -var ansible_playbook_command="$(ANSIBLE_PLAYBOOK)" packer/
	packer build -only="amazon-ebs.$(OS)-$(ARCH)" $(PACKER_VARS) \
		-var ansible_playbook_command="$(ANSIBLE_PLAYBOOK)" packer/

## bench: IMDS time-to-fail, role cost, data-path overhead, audit scaling (Docker, root; 7-12 min)
bench:
	scripts/preflight bench
	$(MAKE) --no-print-directory $(VENV)/.ready
	scripts/ensure-docker
	$(VENV)/bin/python -m benchmarks $(BENCH_ARGS)

# One stage of `make test`, after the set-up it needs.
lint:
	scripts/make-test preflight tools lint

unit molecule:
	scripts/make-test preflight tools docker images $@

clean:
	rm -rf $(VENV) .tox
