# Copyright: the ecs-imds-golden authors
# Apache License 2.0
"""The checkout tools start the programs they need by path (local_image.tools): the Python
tools from beside the interpreter that runs them, activated or not, and packer from PATH. A
missing one is one line naming it and the command that installs it, never a traceback."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import ami_preflight
import pytest
from conftest import ROOT
from local_image import make_image, tools


@pytest.fixture
def bare_python(monkeypatch, tmp_path) -> Path:
    """An interpreter with no tools beside it, and a PATH that holds none."""
    python = tmp_path / "env" / "bin" / "python"
    python.parent.mkdir(parents=True)
    monkeypatch.setattr(sys, "executable", str(python))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    return python


def one_line(text: str) -> str:
    assert "Traceback" not in text
    (line,) = text.strip().splitlines()
    return line


def test_python_tools_are_found_beside_the_interpreter_not_on_path(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    found = tools.venv_tool("ansible-playbook")
    assert found == str(Path(sys.executable).parent / "ansible-playbook")
    assert Path(found).is_absolute()


def test_a_missing_python_tool_names_itself_and_its_install(bare_python):
    with pytest.raises(tools.MissingTool) as raised:
        tools.venv_tool("ansible-playbook")
    line = one_line(str(raised.value))
    assert line.startswith(f"ansible-playbook is not installed beside {bare_python};")
    assert line.endswith(f"install the tools with: {bare_python} -m pip install -e '{ROOT}[dev]'")


def test_the_checkouts_venv_is_set_up_by_make(monkeypatch):
    monkeypatch.setattr(sys, "executable", str(ROOT / ".venv" / "bin" / "python"))
    with pytest.raises(tools.MissingTool, match=r"^molecule-x is not installed beside .*; install the tools "
                       r"with: make \.venv/\.ready$"):  # fmt: skip
        tools.venv_tool("molecule-x")
    # What that command runs, even with .venv up to date (-B): the stage runner's tools stage.
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(Path.home())}  # no MAKEFLAGS of a make above
    made = subprocess.run(
        ["make", "-n", "-B", ".venv/.ready"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert (made.returncode, made.stdout) == (0, "scripts/make-test tools\n"), made.stderr


def test_a_missing_system_tool_names_its_package(bare_python):
    with pytest.raises(tools.MissingTool) as raised:
        tools.system_tool("packer")
    assert one_line(str(raised.value)) == (
        "packer is not installed (not on PATH); install it with: sudo apt-get install -y packer"
    )


def test_make_image_without_ansible_stops_at_once_in_one_line(bare_python, tmp_path, capsys):
    log = tmp_path / "make-image.log"
    assert make_image.main(["--log", str(log), "--manifest", str(tmp_path / "m.json")]) == 1
    line = one_line(capsys.readouterr().err)
    assert line.startswith(f"make image: ansible-playbook is not installed beside {bare_python};")
    assert not log.exists(), "nothing was started"


def test_make_ami_without_packer_stops_in_one_line(bare_python, monkeypatch, capsys):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAFAKE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "fake")
    assert ami_preflight.main([]) == 4
    assert one_line(capsys.readouterr().err) == (
        "make ami: packer is not installed (not on PATH); install it with: sudo apt-get install -y packer"
    )


def test_make_ami_checks_the_ansible_playbook_packer_will_run(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAFAKE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "fake")
    monkeypatch.setattr(ami_preflight, "packer_version", lambda: (1, 14, 2))
    missing = tmp_path / "ansible-playbook"
    assert ami_preflight.main(["--ansible-playbook", str(missing)]) == 5
    line = one_line(capsys.readouterr().err)
    assert line.startswith(f"make ami: ansible-playbook {missing} is not an executable; install")
    assert ami_preflight.main(["--ansible-playbook", tools.venv_tool("ansible-playbook")]) == 0


def test_make_bench_without_ansible_stops_in_one_line(bare_python, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(ROOT))
    bench = importlib.import_module("benchmarks.__main__")
    assert bench.main(["--only", "role", "--output", str(bare_python.parent / "r.json")]) == 2
    line = one_line(capsys.readouterr().err)
    assert line.startswith(f"bench: ansible-playbook is not installed beside {bare_python};")
