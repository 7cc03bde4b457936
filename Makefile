# The README's two commands, `make test` and `make image`, and `make ami` for a real AMI.
SHELL := /bin/bash
VENV := .venv
TOX := $(VENV)/bin/tox
OS ?= al2023
ARCH ?= x86_64
PACKER_VARS = -var git_commit=$$(git rev-parse HEAD)

.PHONY: test image ami bench lint unit molecule clean

# tox runs the tests in environments of its own; boto3 here serves `make ami`'s preflight.
$(VENV)/.ready: pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip \
		"$$(grep -o 'tox==[0-9.]*' pyproject.toml)" "$$(grep -o 'boto3==[0-9.]*' pyproject.toml)"
	touch $@

## test: set up the tools, then run lint, unit tests and Molecule (needs Docker)
test: $(VENV)/.ready
	scripts/ensure-docker
	$(TOX)

## image: apply playbooks/golden-ami.yml to a local host image and verify it
image: $(VENV)/.ready
	scripts/ensure-docker
	$(TOX) -e image

## ami: a real AMI with Packer (OS=al2023|al2, ARCH=x86_64|arm64); needs AWS credentials
ami: $(VENV)/.ready
	PYTHONPATH=scripts $(VENV)/bin/python -m golden_ami.preflight --os "$(OS)" --arch "$(ARCH)"
	packer init packer/
	packer validate $(PACKER_VARS) packer/
	packer build -only="amazon-ebs.$(OS)-$(ARCH)" $(PACKER_VARS) packer/

## bench: IMDS time-to-fail, role cost, data-path overhead, audit scaling (Docker, root; 7-12 min)
bench: $(VENV)/.ready
	scripts/ensure-docker
	$(TOX) -e bench -- $(BENCH_ARGS)

lint unit molecule: $(VENV)/.ready
	$(TOX) -e $@

clean:
	rm -rf $(VENV) .tox
