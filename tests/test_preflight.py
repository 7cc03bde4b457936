# Copyright: the ecs-imds-golden authors
# Apache License 2.0
"""`make ami`'s preflight: clear, early failures before anything reaches AWS."""

from __future__ import annotations

import ami_preflight as preflight
import pytest


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
