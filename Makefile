# The README's two commands: `make test` and `make image`.
SHELL := /bin/bash
VENV := .venv
TOX := $(VENV)/bin/tox

.PHONY: test image lint unit molecule clean

$(VENV)/.ready: pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip "$$(grep -o 'tox==[0-9.]*' pyproject.toml)"
	touch $@

## test: set up the tools, then run lint, unit tests and Molecule (needs Docker)
test: $(VENV)/.ready
	scripts/ensure-docker
	$(TOX)

## image: apply playbooks/golden-ami.yml to a local host image and verify it
image: $(VENV)/.ready
	scripts/ensure-docker
	$(TOX) -e image

lint unit molecule: $(VENV)/.ready
	$(TOX) -e $@

clean:
	rm -rf $(VENV) .tox
