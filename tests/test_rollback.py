# Copyright: the ecs-imds-golden authors
# Apache License 2.0
"""golden-ami rollback, against moto: latest moves back in every region, or in none."""

from __future__ import annotations

import json

import boto3
import pytest
from moto import mock_aws
from support.aws import REGIONS, fake_credentials, golden_ami, write_manifest

from golden_ami import cli

LATEST = "/golden-ami/ecs/al2023/x86_64/latest"
HOUR = 3600


@pytest.fixture
def published(monkeypatch, tmp_path):
    """Three builds published in both regions, an hour apart; latest is the third."""
    fake_credentials(monkeypatch)
    with mock_aws():
        builds = []
        for number in range(3):
            amis = {region: golden_ami(region) for region in REGIONS}
            manifest = write_manifest(tmp_path / f"{number}.json", {"al2023-x86_64": amis},
                                      build_time=1795905441 + number * HOUR)  # fmt: skip
            assert cli.main(["publish", "--manifest", str(manifest), "--poll", "1"]) == 0
            builds.append(amis)
        yield builds


def latest(region: str) -> str:
    return boto3.client("ssm", region_name=region).get_parameter(Name=LATEST)["Parameter"]["Value"]


def rollback(*argv: str) -> int:
    return cli.main(["rollback", "--os", "al2023", "--arch", "x86_64", "--regions", *REGIONS, *argv])


def test_rollback_to_the_previous_build_in_every_region(published, capsys):
    capsys.readouterr()
    assert rollback("--json") == 0
    moves = json.loads(capsys.readouterr().out)["moves"]
    assert {m["build"] for m in moves} == {"20261128T233721Z"}
    assert all(latest(region) == published[1][region] for region in REGIONS)
    assert rollback() == 0  # and once more, to the first build
    assert all(latest(region) == published[0][region] for region in REGIONS)


def test_rollback_to_a_named_build_and_the_dry_run(published, capsys):
    assert rollback("--to", "20261128T223721Z", "--dry-run") == 0
    assert "dry run: would move latest" in capsys.readouterr().out
    assert latest(REGIONS[0]) == published[2][REGIONS[0]]
    assert rollback("--to", "20261128T223721Z") == 0
    assert all(latest(region) == published[0][region] for region in REGIONS)


def test_no_region_moves_when_the_target_is_gone_in_one(published, capsys):
    boto3.client("ec2", region_name=REGIONS[1]).deregister_image(ImageId=published[1][REGIONS[1]])
    assert rollback() == 4
    assert f"us-east-1: build 20261128T233721Z is {published[1][REGIONS[1]]}, which is deregistered" in (
        capsys.readouterr().err
    )
    assert all(latest(region) == published[2][region] for region in REGIONS)


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["--to", "yesterday"], 2, "--to 'yesterday' is not a build ID"),
        (["--to", "20200101T000000Z"], 4, "no build '20200101T000000Z'"),
    ],
)
def test_bad_targets_are_named(published, capsys, argv, code, message):
    assert rollback(*argv) == code
    assert message in capsys.readouterr().err
