# Copyright: the ecs-imds-golden authors
# Apache License 2.0
"""golden-ami publish and find, against moto."""

from __future__ import annotations

import json

import boto3
import pytest
from moto import mock_aws
from support.aws import REGIONS, fake_credentials, golden_ami, set_image, write_manifest

from golden_ami import cli

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
        tmp_path / "m.json", {"al2023-x86_64": {REGIONS[0]: ok, REGIONS[1]: "ami-0deadbeef00000000"}}
    )
    assert publish(manifest) == 1
    out = capsys.readouterr().out
    assert "not available: us-east-1 ami-0deadbeef00000000: missing" in out
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


# --- malformed manifests (issue 12): refused before any AWS call, in one line ----------------

GOOD_AMI = "ami-0123456789abcdef0"


def manifest_with(tmp_path, change=None, *, text=None):
    """A one-build Packer manifest, with ``change(data)`` applied (or ``text`` as the file)."""
    entry = {"name": "al2023-x86_64", "builder_type": "amazon-ebs", "build_time": 1795905441,
             "files": None, "artifact_id": f"eu-west-1:{GOOD_AMI}", "packer_run_uuid": "run",
             "custom_data": {"os": "al2023", "architecture": "x86_64"}}  # fmt: skip
    data = {"builds": [entry], "last_run_uuid": "run"}
    if change:
        change(data)
    path = tmp_path / "manifest.json"
    path.write_text(text if text is not None else json.dumps(data))
    return path


def build_field(name, value):
    def change(data):
        if value is KeyError:
            del data["builds"][0][name]
        else:
            data["builds"][0][name] = value

    return change


def custom_field(name, value):
    return lambda data: data["builds"][0]["custom_data"].__setitem__(name, value)


def second_build(data):
    data["builds"].append({**data["builds"][0], "name": "again", "artifact_id": f"us-east-1:{GOOD_AMI}"})


B0 = "builds[0] ('al2023-x86_64')"
PAIR = "is not region:ami-id (us-east-1:ami-0123456789abcdef0)"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (build_field("artifact_id", f"eu-west-1:{GOOD_AMI},eu-west-1:ami-0fedcba9876543210"),
         f"{B0}: artifact_id names region eu-west-1 twice ({GOOD_AMI} and ami-0fedcba9876543210)"),
        (build_field("build_time", KeyError), f"{B0}: build_time must be an integer, got nothing"),
        (build_field("build_time", "1795905441"),
         f"{B0}: build_time must be an integer, got str '1795905441'"),
        (build_field("build_time", 0), f"{B0}: build_time 0 is not a time (UTC seconds) from 2000 to 9999"),
        (build_field("build_time", 10**20),
         f"{B0}: build_time 100000000000000000000 is not a time (UTC seconds) from 2000 to 9999"),
        (build_field("artifact_id", "bad-region:ami-0123"),
         f"{B0}: artifact_id entry 'bad-region:ami-0123' {PAIR}"),
        (build_field("artifact_id", "ami-1"), f"{B0}: artifact_id entry 'ami-1' {PAIR}"),
        (build_field("artifact_id", "eu-west-1:ami-1"), f"{B0}: artifact_id entry 'eu-west-1:ami-1' {PAIR}"),
        (build_field("artifact_id", ""), f"{B0}: artifact_id entry '' {PAIR}"),
        (build_field("artifact_id", 5), f"{B0}: artifact_id must be a string, got int 5"),
        (build_field("artifact_id", [f"eu-west-1:{GOOD_AMI}"]),
         f"{B0}: artifact_id must be a string, got list ['eu-west-1:{GOOD_AMI}']"),
        (custom_field("os", "windows"), f"{B0}: custom_data.os must be one of al2023, al2, got 'windows'"),
        (custom_field("architecture", "riscv64"),
         f"{B0}: custom_data.architecture must be one of x86_64, arm64, got 'riscv64'"),
        (custom_field("os", 2023), f"{B0}: custom_data.os must be a string, got int 2023"),
        (build_field("custom_data", ["al2023"]), f"{B0}: custom_data must be an object, got list ['al2023']"),
        (build_field("name", 5), "builds[0]: name must be a string, got int 5"),
        (lambda data: data.__setitem__("builds", {"0": {}}), "builds must be a list, got dict {'0': {}}"),
        (lambda data: data["builds"].__setitem__(0, "al2023"),
         "builds[0] must be an object, got str 'al2023'"),
        (lambda data: data.__setitem__("last_run_uuid", 7), "last_run_uuid must be a string, got int 7"),
        (second_build, "builds 'al2023-x86_64' and 'again' of the last run are both al2023/x86_64: "
                       "which one would latest name?"),
    ],
)  # fmt: skip
def test_malformed_manifests_are_refused_in_one_line_before_any_call(aws, tmp_path, capsys, change, message):
    path = manifest_with(tmp_path, change)
    for extra in ([], ["--dry-run"]):
        assert cli.main(["publish", "--manifest", str(path), *extra]) == 2
        captured = capsys.readouterr()
        assert captured.err == f"golden-ami: {path}: {message}\n"
        assert captured.out == ""
    assert boto3.client("ssm", region_name=REGIONS[0]).describe_parameters()["Parameters"] == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[]", "{path}: the top level must be an object, got list []"),
        ("{", "{path} is not a Packer manifest: Expecting property name enclosed in double quotes: "
              "line 1 column 2 (char 1)"),
        ("\xff", "{path} is not a Packer manifest: Expecting value: line 1 column 1 (char 0)"),
        ("[" * 100000 + "]" * 100000, "{path} is not a Packer manifest: maximum recursion depth exceeded "
                                      "while decoding a JSON array from a unicode string"),
    ],
)  # fmt: skip
def test_files_that_are_no_manifest_are_refused_in_one_line(aws, tmp_path, capsys, text, message):
    path = manifest_with(tmp_path, text=text)
    assert cli.main(["publish", "--manifest", str(path)]) == 2
    assert capsys.readouterr().err == f"golden-ami: {message.format(path=path)}\n"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--poll", "0"], "--poll 0: give 1 to 3600 seconds"),
        (["--poll", "-5"], "--poll -5: give 1 to 3600 seconds"),
        (["--timeout", "-1"], "--timeout -1: give 0 to 604800 seconds (a week)"),
        (["--timeout", "99999999999999999999"],
         "--timeout 99999999999999999999: give 0 to 604800 seconds (a week)"),
    ],
)  # fmt: skip
def test_absurd_waits_are_refused(aws, tmp_path, capsys, argv, message):
    assert cli.main(["publish", "--manifest", str(manifest_with(tmp_path)), *argv]) == 2
    assert capsys.readouterr().err == f"golden-ami: {message}\n"


def test_a_well_formed_manifest_still_dry_runs(aws, tmp_path, capsys):
    assert cli.main(["publish", "--manifest", str(manifest_with(tmp_path)), "--dry-run", "--json"]) == 0
    entries = json.loads(capsys.readouterr().out)["entries"]
    assert [(e["region"], e["ami"], e["build"]) for e in entries] == [
        ("eu-west-1", GOOD_AMI, "20261128T223721Z")
    ]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--build", "../latest"], "--build '../latest'"),
        (["--build", "2026"], "--build '2026'"),
    ],
)
def test_find_refuses_a_malformed_build_in_one_line(aws, capsys, argv, message):
    assert cli.main(["find", "--os", "al2023", "--arch", "x86_64", *argv]) == 2
    expected = f"golden-ami: {message} is not a build ID like 20261128T224200Z, nor `latest`\n"
    assert capsys.readouterr().err == expected


@pytest.mark.parametrize("command", ["find", "rollback"])
def test_an_unknown_os_is_a_usage_error_in_one_line(aws, capsys, command):
    with pytest.raises(SystemExit) as exit_:
        cli.main([command, "--os", "../al2023", "--arch", "x86_64"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err == (
        f"golden-ami: argument --os: invalid choice: '../al2023' (choose from 'al2023', 'al2') "
        f"(see golden-ami {command} --help)\n"
    )
