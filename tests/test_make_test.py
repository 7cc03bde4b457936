# Copyright: the ecs-imds-golden authors
# Apache License 2.0
"""`make test`'s own machinery: the preflight names what is missing at once; scripts/make-test is
the one stage runner, each stage after the set-up it needs, timed even when one fails; the
Makefile calls it and never make again; tox's environments each install their stage's extra;
and the Molecule scenario builds its host image when none exists."""

from __future__ import annotations

import configparser
import os
import re
import shutil
import subprocess
import tempfile
import tomllib
import uuid
from pathlib import Path

import pytest
from conftest import ROOT
from support.stub_checkout import StubCheckout, stub

STAGES = "preflight tools docker images lint unit molecule image bench"
USAGE = f"usage: scripts/make-test [{STAGES}] [-- ARGS for unit or bench]"
PLAIN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def stage(name: str, *runs: str) -> list[str]:
    """A stage's header and the lines its stubs print."""
    return [f"==> make-test: {name}", *(f"RUN: {run}" for run in runs)]


PREFLIGHT = {
    tool_set: stage("preflight", f"preflight {tool_set}") for tool_set in ("lint", "image", "bench", "test")
}
TOOLS = stage("tools")  # .venv is up to date: nothing to install
DOCKER = stage("docker", "ensure-docker")
IMAGES = stage(
    "images",
    "build-base-images debian12 debian12-cloud",
    "build-base-images --no-probe debian13 debian-sid pythons",
)
LINT = stage(
    "lint",
    "yamllint --strict .",
    "actionlint",
    "parliament --config iam/parliament.yaml --directory iam",
    "ansible-lint --profile production",
    "ruff check .",
    "ruff format --check .",
)
UNIT = stage("unit", "pytest -m not molecule --numprocesses auto --dist loadfile")
MOLECULE = [
    *stage("molecule"),
    *("==> molecule: debian12", "RUN: molecule test (debian12)"),
    *("==> molecule: debian-sid", "RUN: molecule test (debian-sid)"),
    *(
        "==> molecule: debian13",
        "RUN: molecule test --destroy=never (debian13)",
        "RUN: pytest -m molecule --numprocesses 2",
    ),
    "RUN: molecule syntax (al2023)",
]
IMAGE = stage("image", "ROOT/.venv/bin/python -m local_image.make_image (PYTHONPATH=scripts)")


def test_preflight_without_root_names_the_missing_packages_and_the_command(request):
    """A user's PATH that holds python3 and bash only: everything else is missing."""
    bin_dir = Path(tempfile.mkdtemp(prefix="preflight-bin-"))  # outside tmp_path, which is root's only
    bin_dir.chmod(0o755)
    request.addfinalizer(lambda: shutil.rmtree(bin_dir))
    for tool in ("bash", "env"):
        (bin_dir / tool).symlink_to(shutil.which(tool))
    # The system's Python: make test's own preflight, run as root first, gave it python3-venv.
    (bin_dir / "python3").symlink_to("/usr/bin/python3")
    setpriv = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    result = subprocess.run(
        [
            shutil.which("setpriv"),
            *setpriv[1:],
            str(bin_dir / "bash"),
            str(ROOT / "scripts" / "preflight"),
            "test",
        ],
        env={"PATH": str(bin_dir), "HOME": "/nonexistent"},
        cwd="/",
        capture_output=True,
        text=True,
        timeout=30,
    )
    # sbin is searched too: debootstrap, iptables and ip are found there.
    assert (result.returncode, result.stdout, result.stderr) == (
        1,
        "",
        "make test: missing docker unshare packer apt-get dpkg-deb; "
        "install them with: sudo apt-get install -y docker.io util-linux packer apt dpkg\n",
    )


def test_preflight_refuses_an_unknown_target():
    result = subprocess.run([str(ROOT / "scripts" / "preflight"), "deploy"], capture_output=True, text=True)
    assert (result.returncode, result.stderr) == (2, "usage: scripts/preflight lint|image|bench|test\n")


def test_stage_times_are_printed_for_each_stage_and_a_failed_one(tmp_path):
    ok = subprocess.run([str(ROOT / "scripts" / "make-test"), "preflight"], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "==> make-test: preflight" in ok.stderr
    assert ok.stderr.split("Stage times:\n")[1].splitlines()[0].split()[::2] == ["preflight", "ok"]
    bad = subprocess.run(
        [str(ROOT / "scripts" / "make-test"), "lint", "nosuch"], capture_output=True, text=True
    )
    assert (bad.returncode, bad.stderr.splitlines()[0]) == (2, USAGE)
    checkout = StubCheckout(tmp_path)
    (checkout.root / "scripts" / "ensure-docker").write_text("#!/bin/sh\nexit 3\n")
    failed = checkout.run("unit")
    assert failed.returncode == 3
    assert failed.times == {"preflight": "ok", "tools": "ok", "docker": "FAILED"}, failed.stderr
    assert failed.stages == ["preflight", "tools", "docker"], "nothing runs after a failed stage"


def test_make_test_runs_every_stage_of_make_test_in_order(tmp_path):
    """`scripts/make-test` alone, as `make test` runs it: the set-up, then each stage."""
    run = StubCheckout(tmp_path).run()
    assert run.returncode == 0, run.stderr
    assert run.transcript == [*PREFLIGHT["test"], *TOOLS, *DOCKER, *IMAGES, *LINT, *UNIT, *MOLECULE, *IMAGE]
    assert list(run.times) == ["preflight", "tools", "docker", "images", "lint", "unit", "molecule", "image"]
    assert set(run.times.values()) == {"ok"}


@pytest.mark.parametrize(
    ("argv", "transcript"),
    [
        # lint: its own tool set, and no Docker.
        (["lint"], [*PREFLIGHT["lint"], *TOOLS, *LINT]),
        (["unit"], [*PREFLIGHT["test"], *TOOLS, *DOCKER, *IMAGES, *UNIT]),
        (["molecule"], [*PREFLIGHT["test"], *TOOLS, *DOCKER, *IMAGES, *MOLECULE]),
        (
            ["unit", "--", "-k", "rules"],
            [*PREFLIGHT["test"], *TOOLS, *DOCKER, *IMAGES, UNIT[0], f"{UNIT[1]} -k rules"],
        ),
        # make image builds the one host image it needs itself: no images stage.
        (["image"], [*PREFLIGHT["image"], *TOOLS, *DOCKER, *IMAGE]),
        (
            ["bench", "--", "--only", "role"],
            [
                *PREFLIGHT["bench"],
                *TOOLS,
                *DOCKER,
                *stage("bench", "ROOT/.venv/bin/python -m benchmarks --only role (PYTHONPATH=)"),
            ],
        ),
        # Each set-up stage once, in order, whatever the order asked; the widest tool set.
        (["image", "lint"], [*PREFLIGHT["image"], *TOOLS, *DOCKER, *LINT, *IMAGE]),
        # preflight alone checks what `make test` needs.
        (["preflight", "tools"], [*PREFLIGHT["test"], *TOOLS]),
    ],
)
def test_each_stage_runs_after_the_set_up_it_needs(tmp_path, argv, transcript):
    run = StubCheckout(tmp_path).run(*argv)
    assert run.returncode == 0, run.stderr
    assert run.transcript == transcript


@pytest.mark.parametrize(
    "argv", [["nosuch"], ["lint", "--", "-x"], ["unit", "bench", "--", "-x"], ["image", "--", "-x"]]
)
def test_stage_names_and_arguments_are_checked_before_anything_runs(tmp_path, argv):
    run = StubCheckout(tmp_path).run(*argv)
    assert (run.returncode, run.stderr.splitlines()) == (2, [USAGE])


def test_in_a_tox_environment_its_tools_are_used_not_venvs(tmp_path):
    """tox.ini's environments install their stage's extra: no tools stage, their PATH untouched."""
    checkout = StubCheckout(tmp_path)
    tox_bin = tmp_path / "tox-env" / "bin"
    tox_bin.mkdir(parents=True)
    stub(tox_bin / "python", "python")
    run = checkout.run("image", path=[tox_bin], env={"TOX_ENV_NAME": "image"})
    assert run.returncode == 0, run.stderr
    tox_image = stage("image", "ROOT/tox-env/bin/python -m local_image.make_image (PYTHONPATH=scripts)")
    assert run.transcript == [*PREFLIGHT["image"], *DOCKER, *tox_image]


def test_the_tools_stage_builds_venv_only_when_pyproject_is_newer(tmp_path):
    """The system's python3 makes .venv, the pinned uv goes in with pip, uv installs the dev extra;
    a second run, or one with a stamp newer than pyproject.toml, installs nothing."""
    checkout = StubCheckout(tmp_path)
    python3 = tmp_path / "system-python" / "python3"
    python3.parent.mkdir()
    python3.write_text('#!/bin/sh\necho "RUN: $0 $*" >&2\n')
    python3.chmod(0o755)
    uv = re.search(r'"(uv==[0-9.]+)"', (ROOT / "pyproject.toml").read_text()).group(1)
    checkout.fresh_venv(False)
    built = checkout.run("tools", path=[python3.parent])
    assert built.returncode == 0, built.stderr
    assert built.transcript == [
        "==> make-test: tools",
        "RUN: ROOT/system-python/python3 -m venv .venv",
        f"RUN: pip install --quiet --disable-pip-version-check {uv}",
        "RUN: uv pip install --quiet --system-certs --python .venv/bin/python -e .[dev]",
    ]
    stamp = (tmp_path / ".venv" / ".ready").stat().st_mtime
    assert stamp >= (tmp_path / "pyproject.toml").stat().st_mtime
    again = checkout.run("tools", path=[python3.parent])
    assert (again.returncode, again.transcript) == (0, ["==> make-test: tools"])


def test_make_lint_needs_no_docker(tmp_path):
    """`make lint`'s set-up with the real preflight, on a PATH without docker: it passes, and
    neither Docker nor the images are asked for. The same PATH fails make image's preflight."""
    checkout = StubCheckout(tmp_path, real_preflight=True)
    (checkout.bin / "python3").symlink_to("/usr/bin/python3")  # preflight's python3-venv check
    path = os.pathsep.join([str(checkout.bin), "/usr/local/sbin", "/usr/sbin", "/sbin"])
    assert shutil.which("docker", path=path) is None
    assert shutil.which("apt-get", path=path) is None, "nothing may be installed here"
    lint = checkout.run("lint")
    assert lint.returncode == 0, lint.stderr
    assert lint.transcript == [*stage("preflight"), *TOOLS, *LINT]
    image = checkout.run("image")
    assert image.returncode == 1
    assert image.stages == ["preflight"]
    assert re.search(r"^make image: missing docker\b", image.stderr, re.MULTILINE), image.stderr


# Every target of the Makefile that runs stages, and the runner's arguments it calls it with.
STAGE_TARGETS = {
    "test": "scripts/make-test",
    "image": "scripts/make-test image",
    "lint": "scripts/make-test lint",
    "unit": "scripts/make-test unit",
    "molecule": "scripts/make-test molecule",
    "bench": "scripts/make-test bench --",
    ".venv/.ready": "scripts/make-test tools",
}


def make_n(*argv: str) -> list[str]:
    """What `make -n ARGV` would run, from a plain environment (no MAKEFLAGS of a make above us)."""
    env = {"PATH": PLAIN_PATH, "HOME": os.environ.get("HOME", "/root")}
    result = subprocess.run(["make", "-n", "-B", *argv], cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return [line.strip() for line in result.stdout.splitlines()]


@pytest.mark.parametrize("target", [*STAGE_TARGETS, "ami", "clean"])
def test_the_makefile_never_runs_make_again(target):
    """make -n prints every command a target would run (and runs a $(MAKE) line, whose make
    prints its own): none is make. That the runner starts no make shows in the stub checkout's
    transcripts, where a make would print its line."""
    for line in make_n(target):
        assert not re.search(r"(^|[\s;&|/(])make(\s|$)|make\[\d+\]", line), (
            f"{target} runs make again: {line}"
        )


@pytest.mark.parametrize(("target", "command"), STAGE_TARGETS.items())
def test_every_stage_target_is_one_call_of_the_stage_runner(target, command):
    assert make_n(target) == [command]
    assert make_n("bench", "BENCH_ARGS=--only role") == ["scripts/make-test bench -- --only role"]


def test_tox_environments_install_only_their_stages_extra():
    """Each tox environment runs its stage with the extra of that stage alone; .venv's dev
    extra is their union, with the installers, so each pin is written once."""
    tox = configparser.ConfigParser(interpolation=None)
    tox.read(ROOT / "tox.ini")
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]

    def expand(extra: str) -> list[str]:
        pins = []
        for requirement in extras[extra]:
            named = re.fullmatch(r"ecs-imds-golden\[([a-z,]+)\]", requirement)
            pins += [p for e in named.group(1).split(",") for p in expand(e)] if named else [requirement]
        return pins

    environments = {name.removeprefix("testenv:"): tox[name] for name in tox.sections() if ":" in name}
    assert set(environments) == {"lint", "unit", "molecule", "image", "bench"}
    for stage, env in environments.items():
        assert env["commands"].split()[:2] == ["{tox_root}/scripts/make-test", stage]
        (extra,) = env["extras"].split()
        assert extra != "dev" and extra in extras

    def names(extra: str) -> set[str]:
        return {re.split(r"[\[=]", pin)[0] for pin in expand(extra)}

    assert not names(environments["lint"]["extras"]) & {"pytest", "molecule", "moto", "tox", "uv"}
    assert not names(environments["unit"]["extras"]) & {"molecule", "ansible-lint", "ruff", "yamllint", "tox"}
    stages = set().union(*(expand(env["extras"]) for env in environments.values()))
    assert set(expand("dev")) == stages | {p for p in extras["dev"] if p.startswith(("tox==", "uv=="))}
    written = [p for extra in extras.values() for p in extra if not p.startswith("ecs-imds-golden[")]
    assert all("==" in pin for pin in written), "every tool pinned"
    assert len(written) == len({re.split(r"[\[=]", pin)[0] for pin in written}), "each pin written once"


@pytest.mark.molecule
def test_the_scenario_builds_its_host_image_when_none_exists(docker_image, tmp_path):
    prefix = f"ecs-imds-test-{uuid.uuid4().hex[:8]}"
    image = f"{prefix}-debian12:latest"
    env = {k: v for k, v in os.environ.items() if k != "BASE_IMAGE"}
    env.update(IMAGE_PREFIX=prefix, MOLECULE_DISTRO="debian12", PY_COLORS="0", ANSIBLE_NOCOLOR="1")
    env["MOLECULE_EPHEMERAL_DIRECTORY"] = str(tmp_path / "molecule")  # apart from any instance's state
    try:
        result = subprocess.run(
            ["molecule", "dependency", "-s", "default"], cwd=ROOT, env=env, capture_output=True, text=True
        )
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
        assert f"built {image}" in result.stdout + result.stderr
        inspect = subprocess.run(["docker", "image", "inspect", image], capture_output=True)
        assert inspect.returncode == 0, f"{image} was not built"
    finally:
        subprocess.run(["docker", "rmi", "--force", image], capture_output=True)
