# Copyright: the ecs-imds-golden authors
# Apache License 2.0
"""`pip install .` gives a working `golden-ami`, user-data included, that needs nothing from a
checkout: the wheel is built from pyproject.toml, src/ and the role alone, installed into a
fresh virtualenv and run from outside the repository.

No package index is needed: the wheel is built without build isolation (setuptools is in the
dev extras), and the virtualenv borrows the installed dependencies (boto3, PyYAML, Jinja2) of
the interpreter running pytest through a .pth file, which adds that directory without running
its own .pth files (so not this checkout's editable install).
"""

from __future__ import annotations

import email
import gzip
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import boto3
import jinja2
import pytest
import yaml
from conftest import ROLE, ROOT

from golden_ami import boothook
from golden_ami.userdata import BOOTHOOK_NAME, ECS_CONFIG_NAME


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, Path]:
    """(the wheel, the virtualenv's bin directory) with the wheel installed."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    source.mkdir()
    shutil.copy(ROOT / "pyproject.toml", source)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    shutil.copytree(ROOT / "src", source / "src", ignore=ignore)
    shutil.copytree(ROLE, source / "roles" / ROLE.name, ignore=ignore)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    build = [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(work / "dist"), str(source)]
    built = subprocess.run(build, capture_output=True, text=True, cwd=work)
    assert built.returncode == 0, built.stderr
    (wheel,) = (work / "dist").glob("ecs_imds_golden-*.whl")

    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = "import sysconfig; print(sysconfig.get_path('purelib'))"
    site = Path(subprocess.check_output([python, "-c", purelib], text=True).strip())
    install = [*pip, "--python", str(python), "install", "--no-deps", "--no-index", str(wheel)]
    done = subprocess.run(install, capture_output=True, text=True, cwd=work)
    assert done.returncode == 0, done.stderr
    borrowed = {str(Path(module.__file__).resolve().parents[1]) for module in (boto3, jinja2, yaml)}
    (site / "dependencies-of-the-test.pth").write_text("\n".join(sorted(borrowed)) + "\n")
    return wheel, venv / "bin"


def test_the_wheel_holds_the_cli_and_the_role_files_and_no_checkout_tool(installed):
    wheel, _ = installed
    names = zipfile.ZipFile(wheel).namelist()
    packages = {name.split("/", 1)[0] for name in names if not name.startswith("ecs_imds_golden-")}
    assert packages == {"golden_ami", "ecs_imds_block"}
    assert {
        "ecs_imds_block/files/ecs-imds-block",
        "ecs_imds_block/module_utils/ecs_imds_block_merge.py",
        "ecs_imds_block/filter_plugins/imds_rules.py",
        "ecs_imds_block/templates/docker.conf.j2",
        "ecs_imds_block/vars/Amazon-2023.yml",
    } <= set(names)


def test_the_installed_golden_ami_writes_user_data_from_the_installed_role(installed, tmp_path):
    _, bin_dir = installed
    where = subprocess.run(
        [bin_dir / "python", "-c", "import golden_ami, ecs_imds_block; print(golden_ami.__file__)"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()).is_relative_to(bin_dir.parent), "the wheel's, not the checkout's"

    # user-data makes no AWS call; should one ever be made, it must not reach an instance's IMDS.
    offline = {**os.environ, "AWS_EC2_METADATA_DISABLED": "true", "AWS_ACCESS_KEY_ID": "testing",
               "AWS_SECRET_ACCESS_KEY": "testing", "AWS_CONFIG_FILE": "/dev/null"}  # fmt: skip
    argv = [bin_dir / "golden-ami", "user-data", "--cluster", "x"]
    result = subprocess.run(argv, capture_output=True, cwd=tmp_path, env=offline)
    assert result.returncode == 0, result.stderr.decode()
    parts = [part for part in email.message_from_bytes(result.stdout).walk() if not part.is_multipart()]
    assert [part.get_filename() for part in parts] == [BOOTHOOK_NAME, ECS_CONFIG_NAME]
    hook = gzip.decompress(parts[0].get_payload(decode=True)).decode()
    assert hook.startswith("#cloud-boothook\n")
    assert boothook.loader() in hook, "the loader (without its comment lines), byte for byte"
    assert b"ECS_CLUSTER=x ECS_AWSVPC_BLOCK_IMDS=true" in parts[1].get_payload(decode=True)


def test_the_installed_golden_ami_has_every_command(installed, tmp_path):
    _, bin_dir = installed
    result = subprocess.run([bin_dir / "golden-ami", "--help"], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for command in ("publish", "rollback", "find", "cleanup", "user-data", "audit"):
        assert command in result.stdout
