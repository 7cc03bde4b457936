"""End to end: the installed `golden-ami` executable against moto_server on 127.0.0.1,
through publish, then find, then cleanup."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import boto3
import pytest
from aws_fixtures import REGIONS, write_manifest

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
        }
        for name, value in {**settings, "AWS_DEFAULT_REGION": REGION}.items():
            monkeypatch.setenv(name, value)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=10)


def golden_ami_cli(*argv: str) -> subprocess.CompletedProcess:
    executable = shutil.which("golden-ami")
    if executable is None:
        pytest.fail("the golden-ami console script is not installed (pip install -e .)")
    return subprocess.run([executable, *argv], capture_output=True, text=True, env=os.environ, timeout=120)


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
