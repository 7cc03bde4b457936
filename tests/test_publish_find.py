"""golden-ami publish and find, against moto."""

from __future__ import annotations

import json

import boto3
import pytest
from aws_fixtures import REGIONS, fake_credentials, golden_ami, set_image, write_manifest
from golden_ami import cli
from moto import mock_aws

PREFIX = "/golden-ami/ecs"
LATEST = f"{PREFIX}/al2023/x86_64/latest"
BUILD = f"{PREFIX}/al2023/x86_64/20261128T223721Z"  # build_time 1795905441


@pytest.fixture
def aws(monkeypatch):
    fake_credentials(monkeypatch)
    with mock_aws():
        yield


def parameter(region: str, name: str) -> dict | None:
    ssm = boto3.client("ssm", region_name=region)
    try:
        return ssm.get_parameter(Name=name)["Parameter"]
    except ssm.exceptions.ParameterNotFound:
        return None


def publish(manifest, *extra) -> int:
    return cli.main(["publish", "--manifest", str(manifest), "--poll", "1", *extra])


def test_publish_writes_latest_and_the_build_in_every_region(aws, tmp_path, capsys):
    amis = {region: golden_ami(region) for region in REGIONS}
    manifest = write_manifest(tmp_path / "manifest.json", {"al2023-x86_64": amis})
    assert publish(manifest, "--json") == 0
    assert json.loads(capsys.readouterr().out)["published"] is True
    for region, ami in amis.items():
        latest = parameter(region, LATEST)
        assert latest["Value"] == ami and latest["DataType"] == "aws:ec2:image"
        assert parameter(region, BUILD)["Value"] == ami


def test_publish_with_an_unavailable_ami_moves_no_latest_anywhere(aws, tmp_path, capsys):
    ok = golden_ami(REGIONS[0])
    manifest = write_manifest(
        tmp_path / "m.json", {"al2023-x86_64": {REGIONS[0]: ok, REGIONS[1]: "ami-0deadbeef0000000"}}
    )
    assert publish(manifest) == 1
    out = capsys.readouterr().out
    assert "not available: us-east-1 ami-0deadbeef0000000: missing" in out
    assert "no latest parameter was moved in any region" in out
    assert parameter(REGIONS[0], LATEST) is None and parameter(REGIONS[1], LATEST) is None


def test_publish_with_a_failed_ami_moves_no_latest(aws, tmp_path, capsys):
    amis = {region: golden_ami(region) for region in REGIONS}
    set_image(REGIONS[1], amis[REGIONS[1]], state="failed")
    assert publish(write_manifest(tmp_path / "m.json", {"al2023-x86_64": amis})) == 1
    assert f"us-east-1 {amis[REGIONS[1]]}: failed" in capsys.readouterr().out
    assert all(parameter(region, LATEST) is None for region in REGIONS)


def test_publish_times_out_on_a_pending_ami_and_moves_no_latest(aws, tmp_path, capsys):
    amis = {region: golden_ami(region) for region in REGIONS}
    set_image(REGIONS[0], amis[REGIONS[0]], state="pending")
    manifest = write_manifest(tmp_path / "m.json", {"al2023-x86_64": amis})
    assert publish(manifest, "--timeout", "0") == 1
    assert f"eu-west-1 {amis[REGIONS[0]]}: timed out, pending" in capsys.readouterr().out
    assert all(parameter(region, LATEST) is None for region in REGIONS)


def test_publish_refuses_a_local_make_image_manifest(aws, tmp_path, capsys):
    manifest = write_manifest(tmp_path / "local.json", {"debian12-x86_64": {}}, local=True)
    assert publish(manifest) == 2
    assert "local `make image` build (debian12-x86_64), not AMIs" in capsys.readouterr().err


def test_dry_run_changes_nothing(aws, tmp_path, capsys):
    ami = golden_ami(REGIONS[0])
    assert (
        publish(write_manifest(tmp_path / "m.json", {"al2023-x86_64": {REGIONS[0]: ami}}), "--dry-run") == 0
    )
    assert "dry run: would publish" in capsys.readouterr().out
    assert parameter(REGIONS[0], LATEST) is None


def test_a_build_entry_is_immutable(aws, tmp_path, capsys):
    first, second = golden_ami(REGIONS[0]), golden_ami(REGIONS[0])
    assert publish(write_manifest(tmp_path / "a.json", {"al2023-x86_64": {REGIONS[0]: first}})) == 0
    assert publish(write_manifest(tmp_path / "b.json", {"al2023-x86_64": {REGIONS[0]: second}})) == 3
    assert f"{BUILD} already holds {first}, not {second}: builds are immutable" in capsys.readouterr().err
    assert parameter(REGIONS[0], LATEST)["Value"] == first


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--prefix", "golden"], "--prefix 'golden' must look like /golden-ami/ecs"),
        (["--prefix", "/aws/service/x"], "not under /aws or /ssm"),
        (["--manifest", "/nonexistent.json"], "no manifest at /nonexistent.json"),
    ],
)
def test_bad_input_is_named(aws, tmp_path, capsys, argv, message):
    manifest = write_manifest(tmp_path / "m.json", {"al2023-x86_64": {REGIONS[0]: "ami-0123456789abcdef0"}})
    assert cli.main(["publish", "--manifest", str(manifest), *argv]) == 2
    assert message in capsys.readouterr().err


def test_find_prints_the_current_ami_or_its_details(aws, tmp_path, capsys):
    ami = golden_ami(REGIONS[0])
    publish(write_manifest(tmp_path / "m.json", {"al2023-x86_64": {REGIONS[0]: ami}}))
    capsys.readouterr()
    assert cli.main(["find", "--os", "al2023", "--arch", "x86_64"]) == 0
    assert capsys.readouterr().out.strip() == ami
    assert cli.main(["find", "--os", "al2023", "--arch", "x86_64", "--json"]) == 0
    details = json.loads(capsys.readouterr().out)
    assert details["ami"] == ami and details["parameter"] == LATEST
    assert details["tags"]["Project"] == "ecs-imds-golden" and details["creation_date"]
    assert cli.main(["find", "--os", "al2023", "--arch", "x86_64", "--build", "20261128T223721Z"]) == 0
    assert capsys.readouterr().out.strip() == ami


def test_find_with_nothing_published_fails_clearly(aws, capsys):
    assert cli.main(["find", "--os", "al2023", "--arch", "arm64"]) == 4
    err = capsys.readouterr().err
    assert "no golden AMI published at /golden-ami/ecs/al2023/arm64/latest in eu-west-1" in err
    assert "Traceback" not in err
