# Copyright: the ecs-imds-golden authors
# Apache License 2.0
"""Shared fixtures. Tests that need Docker or root fail loudly without them: never skip."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ROLE = ROOT / "roles" / "ecs_imds_block"
sys.path.insert(0, str(ROOT / "src"))  # golden_ami, also when not installed
sys.path.insert(0, str(ROOT / "scripts"))  # the checkout tools: local_image, ami_preflight, moto_aws

# The role is the package ecs_imds_block (pyproject.toml), and golden_ami imports its filters as
# ecs_imds_block.filter_plugins.ecs_imds_block: its filter_plugins folder on sys.path would make
# `ecs_imds_block` the filter module instead, and golden_ami.userdata would not import. A test that
# imports a filter by its bare name (`from ecs_imds_block import ecs_imds_block_config`) gets the
# package's own function.
import ecs_imds_block.filter_plugins.ecs_imds_block as _role_filters  # noqa: E402

for _name in ("ecs_imds_block_config", "ecs_imds_block_program", "ecs_config_settings", "normalize_cidrs"):
    setattr(sys.modules["ecs_imds_block"], _name, getattr(_role_filters, _name))

BASE_IMAGE = os.environ.get("BASE_IMAGE", "ecs-imds-debian12:latest")


@pytest.fixture(scope="session")
def known_keys() -> list[str]:
    return (ROLE / "files" / "ecs-agent-config-keys.txt").read_text().split()


@pytest.fixture(scope="session")
def ansible_playbook() -> str:
    """The ansible-playbook of the environment running pytest (tox's), else the one on PATH."""
    found = Path(sys.executable).with_name("ansible-playbook")
    path = str(found) if found.exists() else shutil.which("ansible-playbook")
    if not path:
        pytest.fail("ansible-playbook is needed (pip install -e '.[dev]')")
    return path


@pytest.fixture(scope="session")
def netadmin() -> None:
    """iptables-restore --test needs root and the real binaries."""
    missing = [b for b in ("iptables-restore", "ip6tables-restore", "ip") if not shutil.which(b)]
    if missing or os.geteuid() != 0:
        pytest.fail(f"needs root and {missing or 'iptables'}: run through `make test` or .ci/run")


@pytest.fixture(scope="session")
def cloud_init(request, tmp_path_factory) -> Path:
    """cloud-init's Python package: Debian's `cloud-init` .deb unpacked into the pytest cache, or,
    with the cache off (-p no:cacheprovider), into this session's temporary folder."""
    from support.cloud_init import unpack

    cache = getattr(request.config, "cache", None)
    return unpack(Path(cache.mkdir("cloud-init")) if cache else tmp_path_factory.mktemp("cloud-init"))


@pytest.fixture(scope="session")
def docker_image() -> str:
    """The offline base image, built by scripts/build-base-images."""
    try:
        subprocess.run(["docker", "image", "inspect", BASE_IMAGE], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.fail(f"Docker with {BASE_IMAGE} is required (scripts/build-base-images): {exc}")
    return BASE_IMAGE


# Where a user might run the CLI from: its stderr must be its own in each (issue 19). Ansible
# warns about an ansible.cfg in a world-writable folder and fails on a broken one, if the CLI
# ever lets Ansible read its configuration.
FOLDERS = {
    "plain": (0o755, None),
    "world-writable with an ansible.cfg": (0o777, "[defaults]\nnocows = 1\n"),
    "a broken ansible.cfg": (0o755, "[defaults\nnot = an ini file\n"),
}


@pytest.fixture(params=list(FOLDERS))
def user_folder(request, tmp_path_factory) -> Path:
    """The current folder of a CLI run, as one of FOLDERS describes."""
    mode, config = FOLDERS[request.param]
    folder = tmp_path_factory.mktemp("cwd")
    if config is not None:
        (folder / "ansible.cfg").write_text(config)
    folder.chmod(mode)
    return folder


# --- the audit against moto (tests/test_audit.py, tests/test_verify_hosts.py) -------------


@pytest.fixture
def account_defaults():
    """The account-level IMDS defaults GetInstanceMetadataDefaults answers, by account: fill
    it before the audit runs. An account left out has no preference."""
    from moto_aws import imds_defaults_stubbed

    with imds_defaults_stubbed() as defaults:
        yield defaults


@pytest.fixture
def mocked(monkeypatch, tmp_path, account_defaults):
    """Fake credentials and region, no local AWS configuration, no instance metadata, every
    call to moto (and GetInstanceMetadataDefaults to botocore's Stubber)."""
    from moto import mock_aws
    from support.audit import CLIENTS, REGION

    for name in (
        "AWS_PROFILE",
        "AWS_REGION",
        "AWS_ENDPOINT_URL",
        "AWS_ROLE_ARN",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))

    with mock_aws():
        yield
    CLIENTS.clear()
