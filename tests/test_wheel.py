# Copyright: the ecs-imds-golden authors
# Apache License 2.0
"""`pip install .` gives a working `golden-ami`, user-data included, that needs nothing from a
checkout: the wheel is built from pyproject.toml, src/ and the role alone, installed into a
fresh virtualenv and run from outside the repository.

No package index is needed: the wheel is built without build isolation (setuptools is in the
dev extras), and the virtualenv borrows the installed dependencies (boto3, PyYAML) of
the interpreter running pytest through a .pth file, which adds that directory without running
its own .pth files (so not this checkout's editable install).
"""

from __future__ import annotations

import email
import gzip
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import boto3
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
    borrowed = {str(Path(module.__file__).resolve().parents[1]) for module in (boto3, yaml)}
    (site / "dependencies-of-the-test.pth").write_text("\n".join(sorted(borrowed)) + "\n")
    return wheel, venv / "bin"


def test_the_wheel_holds_the_cli_and_the_role_files_and_no_checkout_tool(installed):
    wheel, _ = installed
    names = zipfile.ZipFile(wheel).namelist()
    packages = {name.split("/", 1)[0] for name in names if not name.startswith("ecs_imds_golden-")}
    assert packages == {"golden_ami", "ecs_imds_block"}
    # What user-data renders from: the host program, the role's filters, its names and defaults,
    # and Amazon Linux 2023's data.
    assert {
        "ecs_imds_block/files/ecs-imds-block",
        "ecs_imds_block/filter_plugins/ecs_imds_block.py",
        "ecs_imds_block/vars/main.yml",
        "ecs_imds_block/vars/Amazon-2023.yml",
        "ecs_imds_block/defaults/main.yml",
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
    archive = gzip.decompress(result.stdout)  # gzipped whole
    parts = [part for part in email.message_from_bytes(archive).walk() if not part.is_multipart()]
    assert [part.get_filename() for part in parts] == [BOOTHOOK_NAME, ECS_CONFIG_NAME]
    hook = parts[0].get_payload(decode=True).decode()
    assert hook.startswith("#cloud-boothook\n")
    assert boothook.program() in hook, "the program as the role packs it, byte for byte"
    assert boothook.config(boothook.settings()) in hook, "its configuration, byte for byte"
    assert parts[1].get_payload(decode=True).endswith(b" ecs-config ECS_CLUSTER=x\n")


COMMANDS = {"publish", "rollback", "find", "cleanup", "user-data", "audit"}
# Values to try for an option's argument that help shows by its metavar only (an int, a path or a
# name, an IPv4 CIDR, an IPv6 CIDR): the parser must accept one of them.
SAMPLES = ["1", "10.0.0.0/8", "fd00:ec2::/64"]

# Run by the installed interpreter: parses each form (a list of [option, [values to try for each
# of its arguments]]) of a command with the installed parser, trying the values until one set
# parses; prints, per form, the argv that parsed and the module whose run it dispatches to, or
# the parser's error. Nothing is run.
PARSE = """
import contextlib, io, itertools, json, sys
from golden_ami.cli import build_parser

results = []
for command, form in json.load(sys.stdin):
    choices = [[[option, *values] for values in itertools.product(*args)] for option, args in form]
    result = {"error": None}
    for picks in itertools.product(*choices):
        argv = [command, *[word for pick in picks for word in pick]]
        error = io.StringIO()
        try:
            with contextlib.redirect_stderr(error):
                args = build_parser().parse_args(argv)
        except SystemExit as exc:
            result = {"error": f"exit {exc.code}: {error.getvalue().strip()}"}
            continue
        result = {"argv": argv, "command": args.command, "run": args.run.__module__,
                  "file": sys.modules[args.run.__module__].__file__}
        break
    results.append(result)
print(json.dumps(results))
"""


def usage_elements(usage: str) -> list[tuple[bool, str]]:
    """The elements of an argparse usage (after the program's name): (required, text) each, a
    mutually exclusive group [A | B] giving one optional element per alternative."""
    elements, depth, start, index = [], 0, None, 0
    while index < len(usage):
        char = usage[index]
        if char in "[(":
            if depth == 0:
                start = index
            depth += 1
        elif char in "])":
            depth -= 1
            if depth == 0:
                inner = usage[start + 1 : index]
                required = char == ")"
                elements += [(required, part.strip()) for part in inner.split(" | ")]
        elif depth == 0 and not char.isspace():
            end = usage.find(" -", index)
            end = len(usage) if end < 0 else end
            bracket = min(
                (p for p in (usage.find("[", index), usage.find("(", index)) if p >= 0), default=len(usage)
            )
            end = min(end, bracket)
            elements.append((True, usage[index:end].strip()))
            index = end
            continue
        index += 1
    return elements


def arguments(element: str) -> tuple[str, list[list[str]]]:
    """An element's option and the values to try for each argument it takes: a {choice,...}'s
    choices, else SAMPLES; a repeat ([X ...]) adds nothing."""
    words = element.split(" [")[0].split()
    option, metavars = words[0], words[1:]
    return option, [mv.strip("{}").split(",") if mv.startswith("{") else SAMPLES for mv in metavars]


def option_specs(help_text: str) -> list[str]:
    """Each option string of a help's options section, with the arguments it shows: one per
    alias (`--allowed-cidr CIDR [CIDR ...], --allow CIDR [CIDR ...]` gives two)."""
    section = help_text.split("\noptions:\n", 1)[1]
    specs = []
    for line in section.splitlines():
        if re.match(r"^  -", line):
            specs += [spec.strip() for spec in re.split(r" {2,}", line.strip())[0].split(", ")]
    return specs


def parse_forms(bin_dir: Path, cwd: Path, forms: list) -> list[dict]:
    done = subprocess.run(
        [bin_dir / "python", "-c", PARSE], input=json.dumps(forms), capture_output=True, text=True, cwd=cwd
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_the_installed_golden_ami_has_every_command_and_accepts_each_option_its_help_shows(
    installed, tmp_path
):
    """The installed entry point's help names the commands, and refuses any other; each
    command's help shows its usage, and the installed parser accepts the options that usage
    requires, alone and with each other option string the help shows (aliases too), dispatching
    to the command's own module of the wheel. An option the help does not show is refused."""
    _, bin_dir = installed
    result = subprocess.run([bin_dir / "golden-ami", "--help"], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    listed = result.stdout.split("positional arguments:\n", 1)[1].split("\n\n", 1)[0]
    commands = [line.split()[0] for line in listed.splitlines() if re.match(r"^ {4}\S", line)]
    assert set(commands) == COMMANDS, commands
    unknown = subprocess.run(
        [bin_dir / "golden-ami", "no-such-command"], capture_output=True, text=True, cwd=tmp_path
    )
    assert unknown.returncode == 2 and unknown.stdout == ""
    assert len(unknown.stderr.splitlines()) == 1 and unknown.stderr.startswith("golden-ami: "), unknown.stderr

    for command in commands:
        shown = subprocess.run(
            [bin_dir / "golden-ami", command, "--help"], capture_output=True, text=True, cwd=tmp_path
        )
        assert shown.returncode == 0, shown.stderr
        prog = f"usage: golden-ami {command} "
        assert shown.stdout.startswith(prog), shown.stdout[:200]
        usage = " ".join(shown.stdout.split("\n\n", 1)[0][len(prog) :].split())
        elements = [(needed, arguments(text)) for needed, text in usage_elements(usage)]
        required = [element for needed, element in elements if needed]
        specs = [arguments(spec) for spec in option_specs(shown.stdout)]
        assert {option for _, (option, _) in elements} <= {option for option, _ in specs}, (command, usage)
        # Every other option string the help shows, aliases included, one at a time.
        needed_options = {option for option, _ in required}
        optional = [spec for spec in specs if spec[0] not in {"-h", "--help", *needed_options}]
        assert optional, f"{command}: no optional element in {usage!r}"
        forms = [(command, required)] + [(command, [*required, element]) for element in optional]
        accepted = parse_forms(bin_dir, tmp_path, forms)
        module = "golden_ami." + command.replace("-", "")  # user-data's is golden_ami.userdata
        for (_, form), parsed in zip(forms, accepted, strict=True):
            assert "argv" in parsed, f"golden-ami {command}: the parser refuses {form}: {parsed['error']}"
            assert parsed["command"] == command
            assert parsed["run"] == module or parsed["run"].startswith(module + "."), parsed
            assert Path(parsed["file"]).is_relative_to(bin_dir.parent), (
                "the wheel's module, not the checkout's"
            )
        # The first form as it parsed, with an option help does not show.
        words = [(word, []) for word in accepted[0]["argv"][1:]]
        (refused,) = parse_forms(bin_dir, tmp_path, [(command, [*words, ("--no-such-option", [])])])
        assert refused["error"].startswith("exit 2: golden-ami: unrecognized arguments: --no-such-option"), (
            refused
        )
