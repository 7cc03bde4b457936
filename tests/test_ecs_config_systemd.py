# Copyright: the ecs-imds-golden authors
# Apache License 2.0
"""The merged ecs.config as systemd itself reads it (EnvironmentFile=, as ecs.service does), and
as ecs-init reads it: for random existing files, the host program's merge is idempotent, and either
it refuses the file in one line or both readers see our settings, in one real systemd host for the
module."""

from __future__ import annotations

import base64

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from local_image.host import systemd_container
from support.program import load
from test_ecs_config import merge

pytestmark = [pytest.mark.docker, pytest.mark.xdist_group("ecs-config-systemd")]

P = load()
ATTRIBUTE = "ecs-imds-block=enforced"
WANTED = P.settings({"ECS_AWSVPC_BLOCK_IMDS": "true"}, (), ATTRIBUTE)
OURS = ("ECS_AWSVPC_BLOCK_IMDS", "ECS_INSTANCE_ATTRIBUTES")


@pytest.fixture(scope="module")
def systemd_reads(docker_image):
    """Reads a file as systemd's EnvironmentFile= does, in one systemd host for the whole module:
    {name: value} of what a unit's process gets, or None when systemd refuses the file."""
    with systemd_container(docker_image, prefix="ecs-imds-envfile") as host:

        def read(data: bytes) -> dict[str, str] | None:
            script = (
                "base64 -d > /tmp/env && exec systemd-run --quiet --pipe --wait --collect"
                " -p EnvironmentFile=/tmp/env /usr/bin/env -0"
            )
            result = host.run("sh", "-c", script, stdin=base64.b64encode(data).decode(), check=False)
            if result.returncode:
                return None
            pairs = [item.split("=", 1) for item in result.stdout.split("\0") if "=" in item]
            return {key: value.encode("utf-8", "surrogateescape").decode("latin-1") for key, value in pairs}

        yield read


USER_CONFIG = (
    "# written by the platform team\n"
    "ECS_CLUSTER=payments\n"
    "\n"
    "ECS_AWSVPC_BLOCK_IMDS=false\n"
    'ECS_INSTANCE_ATTRIBUTES={"team":"payments"}\n'
    "ECS_LOGLEVEL=info"  # no final newline
)


def test_systemd_sees_our_keys_and_the_users_keys(systemd_reads, known_keys):
    merged = merge(
        USER_CONFIG,
        {"ECS_AWSVPC_BLOCK_IMDS": True, "ECS_DISABLE_PRIVILEGED": True},
        known_keys,
        attribute=ATTRIBUTE,
    )
    merged += "ECS_CONTAINER_STOP_TIMEOUT=2m\n"  # a later `echo ... >> ecs.config` from user data
    env = systemd_reads(merged.encode("latin-1"))
    assert env is not None
    assert env["ECS_AWSVPC_BLOCK_IMDS"] == "true"
    assert env["ECS_DISABLE_PRIVILEGED"] == "true"
    assert env["ECS_INSTANCE_ATTRIBUTES"] == '{"team":"payments","ecs-imds-block":"enforced"}'
    assert env["ECS_CLUSTER"] == "payments"
    assert env["ECS_LOGLEVEL"] == "info"
    assert env["ECS_CONTAINER_STOP_TIMEOUT"] == "2m"


# Lines as people and tools write them, with what makes the two readers part ways: quotes,
# backslashes, comments, carriage returns, form feeds, `export`, blanks around the `=`, bytes
# that are not UTF-8 and UTF-8 whose bytes Python takes for line breaks (0x85 in "Å").
PIECES = st.sampled_from(
    [b"ECS_AWSVPC_BLOCK_IMDS", b"ECS_INSTANCE_ATTRIBUTES", b"ECS_CLUSTER", b"export ", b"=", b" ", b"\t",
     b"#", b";", b"'", b'"', b"\\", b"\r", b"\x0c", b"\x0b", b"false", b"true", b"prod", b'{"a":"b"}',
     b"{", b"}", b"\xff", b"\xc3\x85"]
)  # fmt: skip
FILES = st.lists(st.lists(PIECES, max_size=6).map(b"".join), max_size=6).map(b"\n".join)


def merged_or_refused(existing: bytes) -> str | None:
    """The merge of ``existing``, or None when the program refuses it (in one line)."""
    try:
        return P.merge_ecs_config(existing.decode("latin-1"), WANTED, ATTRIBUTE)
    except P.Refused as error:
        assert str(error).startswith(("ecs.config", "ECS_INSTANCE_ATTRIBUTES")) and "\n" not in str(error)
        return None


@given(FILES)
@settings(max_examples=400, deadline=None)
def test_the_merge_is_idempotent_and_ecs_init_reads_our_settings_or_the_file_is_refused(existing):
    merged = merged_or_refused(existing)
    if merged is None:
        return
    assert P.merge_ecs_config(merged, WANTED, ATTRIBUTE) == merged
    agent = P.effective(merged)
    assert agent["ECS_AWSVPC_BLOCK_IMDS"] == "true"
    assert '"ecs-imds-block":"enforced"' in agent["ECS_INSTANCE_ATTRIBUTES"]
    # Every line of the file that is not an assignment of ours is still there, in order.
    kept = [line for line in existing.decode("latin-1").split("\n") if P.ASSIGNMENT.match(line) is None
            or P.ASSIGNMENT.match(line).group(1) not in OURS]  # fmt: skip
    rest = [line for line in merged.split("\n") if not line.startswith(tuple(f"{key}=" for key in OURS))]
    assert [line.rstrip("\r") for line in kept if line] == [line.rstrip("\r") for line in rest if line]


@given(FILES)
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_systemd_reads_our_settings_as_ecs_init_does_or_the_file_is_refused(systemd_reads, existing):
    """The real systemd, for random files: where the program merges a file, systemd reads our
    settings exactly as ecs-init does."""
    merged = merged_or_refused(existing)
    if merged is None:
        return
    env = systemd_reads(merged.encode("latin-1"))
    assert env is not None, f"systemd refused the merged file {merged!r}"
    agent = P.effective(merged)
    for key in OURS:
        assert env.get(key) == agent[key], (key, merged)


@pytest.mark.parametrize(
    "existing",
    [
        b"# \xff not UTF-8 in a comment\nECS_CLUSTER=prod\n",
        b'ECS_CLUSTER=prod\r\nECS_INSTANCE_ATTRIBUTES={"team":"\xc3\x85sa"}\r\n',
        b"export ECS_AWSVPC_BLOCK_IMDS=false\n ECS_AWSVPC_BLOCK_IMDS = false\nECS_LOGLEVEL='info'\n",
        b"; a comment systemd knows\n\x0cECS_CLUSTER=prod\x0b\nECS_AWSVPC_BLOCK_IMDS=false",
    ],
    ids=["non-utf-8-comment", "crlf-and-utf-8", "export-and-blanks", "semicolon-and-form-feeds"],
)
def test_systemd_reads_our_settings_from_these_merged_files(systemd_reads, existing):
    merged = merged_or_refused(existing)
    assert merged is not None
    env = systemd_reads(merged.encode("latin-1"))
    assert env is not None, f"systemd refused the merged file {merged!r}"
    for key in OURS:
        assert env.get(key) == P.effective(merged)[key], key
