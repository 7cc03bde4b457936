# Copyright: the ecs-imds-golden authors
# Apache License 2.0
"""End to end: the installed `golden-ami` executable against moto_server on 127.0.0.1,
through publish, then find, then cleanup; and every subcommand's error paths through the
executable, each one line and no traceback. No traffic leaves loopback: instance metadata is
off and every endpoint is 127.0.0.1."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import boto3
import pytest
from support.aws import REGIONS, write_manifest

REGION = REGIONS[0]


@pytest.fixture
def endpoint(monkeypatch):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"{url}/moto-api/", timeout=1)  # noqa: S310 (loopback)
                break
            except OSError:
                time.sleep(0.1)
        else:
            pytest.fail("moto_server did not start on 127.0.0.1")
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
            monkeypatch.delenv(name, raising=False)
        settings = {
            "AWS_ENDPOINT_URL": url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        }
        for name, value in {**settings, "AWS_DEFAULT_REGION": REGION}.items():
            monkeypatch.setenv(name, value)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=10)


def executable() -> str:
    """The golden-ami of the environment running pytest (tox's), else the one on PATH."""
    found = Path(sys.executable).with_name("golden-ami")
    path = str(found) if found.exists() else shutil.which("golden-ami")
    if path is None:
        pytest.fail("the golden-ami console script is not installed (pip install -e .)")
    return path


def golden_ami_cli(*argv: str, env=None, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [executable(), *argv], capture_output=True, text=True, env=env or os.environ, cwd=cwd, timeout=120
    )


def ami(ec2) -> str:
    base = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    instance = ec2.run_instances(ImageId=base, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    image = ec2.create_image(InstanceId=instance, Name=f"golden-{time.time_ns()}")["ImageId"]
    ec2.terminate_instances(InstanceIds=[instance])
    tags = [{"Key": "Project", "Value": "ecs-imds-golden"}, {"Key": "OS", "Value": "al2023"},
            {"Key": "Architecture", "Value": "x86_64"}]  # fmt: skip
    ec2.create_tags(Resources=[image], Tags=tags)
    time.sleep(1.1)  # distinct creation times, so "newest" is well defined
    return image


def test_publish_find_cleanup_through_the_executable(endpoint, tmp_path):
    ec2 = boto3.client("ec2", region_name=REGION)
    builds = [ami(ec2) for _ in range(3)]
    for number, image in enumerate(builds):
        manifest = write_manifest(tmp_path / f"m{number}.json", {"al2023-x86_64": {REGION: image}},
                                  build_time=1795905441 + number * 3600)  # fmt: skip
        result = golden_ami_cli("publish", "--manifest", str(manifest), "--poll", "1")
        assert result.returncode == 0, result.stderr

    found = golden_ami_cli("find", "--os", "al2023", "--arch", "x86_64")
    assert found.returncode == 0 and found.stdout.strip() == builds[-1]

    dry = golden_ami_cli("cleanup", "--keep", "1", "--min-age-days", "0")
    assert dry.returncode == 0 and "dry run: 2 AMIs would be deregistered" in dry.stdout

    applied = golden_ami_cli("cleanup", "--keep", "1", "--min-age-days", "0", "--apply", "--json", "-v")
    assert applied.returncode == 0, applied.stderr
    kept = {d["ami"] for d in json.loads(applied.stdout)["decisions"] if d["keep"]}
    assert kept == {builds[-1]}
    assert "API calls" in applied.stderr
    remaining = {image["ImageId"] for image in ec2.describe_images(Owners=["self"])["Images"]}
    assert builds[-1] in remaining and not remaining & set(builds[:2])

    again = golden_ami_cli("find", "--os", "al2023", "--arch", "x86_64", "--json")
    assert json.loads(again.stdout)["ami"] == builds[-1]


# --- the AWS configuration's error paths, in every subcommand that calls AWS --------------------

SUBCOMMANDS = [
    ["find", "--os", "al2023", "--arch", "x86_64"],
    ["cleanup", "--keep", "1"],
    ["rollback", "--os", "al2023", "--arch", "x86_64"],
    ["audit"],
]
CONFIGS = {
    "missing profile": (None, ["--profile", "nope"], 2,
                        "no AWS profile 'nope' (--profile or AWS_PROFILE) in the AWS config files"),
    "malformed config": ("[default\nregion = eu-west-1\n", [], 2,
                         "cannot parse the AWS config file {config}: fix or move it"),
    "credential_process prints no JSON": (
        "[profile p]\ncredential_process = /bin/echo not json\n", ["--profile", "p"], 3,
        "the AWS profile's credential_process printed no JSON credentials "
        "(Expecting value: line 1 column 1 (char 0))"),
    "credential_process fails": (
        "[profile p]\ncredential_process = sh -c 'echo no token >&2; exit 1'\n", ["--profile", "p"], 3,
        "could not get AWS credentials from custom-process: no token"),
    "no region name": (None, ["--region", "not a region"], 2, "'not a region' is not an AWS region name"),
}  # fmt: skip


@pytest.mark.parametrize("config_case", list(CONFIGS))
@pytest.mark.parametrize("subcommand", SUBCOMMANDS, ids=lambda argv: argv[0])
def test_aws_configuration_errors_are_one_line_in_every_subcommand(tmp_path, subcommand, config_case):
    content, extra, code, message = CONFIGS[config_case]
    config = tmp_path / "config"
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": str(config),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "credentials"),
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9",  # never reached: each case fails before a call
    }
    if content is not None:
        config.write_text(content)
    result = golden_ami_cli(*subcommand, "--region", "eu-west-1", *extra, env=env)
    assert (result.returncode, result.stderr) == (code, f"golden-ami: {message.format(config=config)}\n")
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["nope"], "argument COMMAND: invalid choice: 'nope' (choose from 'publish', 'rollback', 'find', "
                   "'cleanup', 'user-data', 'audit') (see golden-ami --help)"),
        (["cleanup"], "the following arguments are required: --keep (see golden-ami cleanup --help)"),
        (["cleanup", "--keep", "x"],
         "argument --keep: invalid int value: 'x' (see golden-ami cleanup --help)"),
        (["find", "--os", "al2023", "--arch", "sparc"],
         "argument --arch: invalid choice: 'sparc' (choose from 'x86_64', 'arm64') "
         "(see golden-ami find --help)"),
        (["user-data"], "the following arguments are required: --cluster (see golden-ami user-data --help)"),
        (["user-data", "--cluster", "c", "--action", "accept"],
         "argument --action: invalid choice: 'accept' (choose from 'reject', 'drop') "
         "(see golden-ami user-data --help)"),
    ],
)  # fmt: skip
def test_usage_errors_are_one_line(argv, message, user_folder):
    env = {"PATH": os.environ["PATH"], "AWS_EC2_METADATA_DISABLED": "true"}
    result = golden_ami_cli(*argv, env=env, cwd=user_folder)
    assert (result.returncode, result.stderr, result.stdout) == (2, f"golden-ami: {message}\n", "")


def test_user_data_through_the_executable_is_gzipped_on_a_pipe(tmp_path):
    """The console script's stdout, a pipe: the gzipped user data, byte for byte what the
    package builds, and nothing on stderr. No AWS configuration is read or needed."""
    from golden_ami.userdata import build_user_data

    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "AWS_EC2_METADATA_DISABLED": "true"}
    result = subprocess.run([executable(), "user-data", "--cluster", "prod"], capture_output=True, env=env,
                            cwd=tmp_path, timeout=120)  # fmt: skip
    assert (result.returncode, result.stderr) == (0, b"")
    assert result.stdout[:2] == b"\x1f\x8b" and result.stdout == build_user_data("prod", None)


def test_an_unexpected_error_is_one_line_and_minus_vv_shows_the_traceback(monkeypatch, capsys):
    from golden_ami import cli, find

    def broken(args, aws):
        raise RuntimeError("a bug\nover two lines")

    monkeypatch.setattr(find, "run", broken)
    argv = ["find", "--os", "al2023", "--arch", "x86_64"]
    assert cli.main(argv) == 1
    assert capsys.readouterr().err == (
        "golden-ami: unexpected RuntimeError: a bug over two lines (-vv shows the traceback)\n"
    )
    assert cli.main([*argv, "-vv"]) == 1
    assert "Traceback" in capsys.readouterr().err
