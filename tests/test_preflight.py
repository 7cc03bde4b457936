# Copyright: the ecs-imds-golden authors
# Apache License 2.0
"""`make ami`'s preflight: clear, early failures before anything reaches AWS."""

from __future__ import annotations

import os
import subprocess

import ami_preflight as preflight
import pytest
from conftest import ROOT


@pytest.fixture
def no_credentials(monkeypatch, tmp_path):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def test_no_credentials_fails_with_a_message_not_a_trace(no_credentials, capsys):
    assert preflight.main([]) == 3
    assert "make ami: no AWS credentials found" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [(["--os", "ubuntu"], "OS='ubuntu' is not one of al2023, al2"), (["--arch", "i386"], "ARCH='i386'")],
)
def test_bad_variant_is_named(argv, message, capsys):
    assert preflight.main(argv) == 2
    assert message in capsys.readouterr().err


def test_old_packer_is_refused_after_credentials(no_credentials, monkeypatch, capsys):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAFAKE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "fake")
    monkeypatch.setattr(preflight, "packer_version", lambda: (1, 6, 6))
    assert preflight.main([]) == 4
    assert "packer 1.6.6 found; the templates need Packer >= 1.10.0" in capsys.readouterr().err


def test_ready_with_credentials_and_current_packer(no_credentials, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAFAKE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "fake")
    monkeypatch.setattr(preflight, "packer_version", lambda: (1, 14, 2))
    assert preflight.main(["--os", "al2", "--arch", "arm64"]) == 0


def test_make_ami_sets_up_venv_with_the_stage_runner_then_runs_this_preflight_first():
    """make -n: the tools stage of scripts/make-test (not make again), then this preflight with
    .venv's python by path, before any packer command."""
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root")}
    made = subprocess.run(["make", "-n", "ami", "OS=al2", "ARCH=arm64"], cwd=ROOT, env=env,
                          capture_output=True, text=True)  # fmt: skip
    assert made.returncode == 0, made.stderr
    commands = made.stdout.replace("\\\n", " ").splitlines()
    assert commands[0] == "scripts/make-test tools"
    assert commands[1].split()[:4] == ["PYTHONPATH=scripts", ".venv/bin/python", "-m", "ami_preflight"]
    assert commands[1].split()[4:8] == ["--os", '"al2"', "--arch", '"arm64"']
    assert [command.split()[:2] for command in commands[2:]] == [["packer", "init"], ["packer", "validate"],
                                                                 ["packer", "build"]]  # fmt: skip
