# Copyright: the ecs-imds-golden authors
# Apache License 2.0
"""The merged ecs.config as systemd itself reads it (EnvironmentFile=, as ecs.service does), and
as ecs-init reads it: for random existing files, the merge is idempotent, and either both
readers see our setting or the merge refuses the file in one line, naming why."""

from __future__ import annotations

import base64

import pytest
from ecs_imds_block_merge import MergeError, effective_ecs_config, merge_ecs_config, systemd_environment
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from local_image.host import systemd_container
from test_ecs_config import merge

pytestmark = pytest.mark.docker

USER_CONFIG = (
    "# written by the platform team\n"
    "ECS_CLUSTER=payments\n"
    "\n"
    "ECS_AWSVPC_BLOCK_IMDS=false\n"
    'ECS_INSTANCE_ATTRIBUTES={"team":"payments"}\n'
    "ECS_LOGLEVEL=info"  # no final newline
)


def test_systemd_sees_our_keys_and_the_users_keys(docker_image, known_keys):
    merged = merge(USER_CONFIG, {"ECS_AWSVPC_BLOCK_IMDS": True, "ECS_DISABLE_PRIVILEGED": True}, known_keys)
    merged += "ECS_CONTAINER_STOP_TIMEOUT=2m\n"  # a later `echo ... >> ecs.config` from user data
    with systemd_container(docker_image, prefix="ecs-imds-test") as host:
        host.run("sh", "-c", "mkdir -p /etc/ecs && cat > /etc/ecs/ecs.config", stdin=merged)
        result = host.run(
            "systemd-run", "--quiet", "--pipe", "--wait", "--collect",
            "-p", "EnvironmentFile=/etc/ecs/ecs.config", "/usr/bin/env",
        )  # fmt: skip
    env = dict(line.split("=", 1) for line in result.stdout.splitlines())
    assert env["ECS_AWSVPC_BLOCK_IMDS"] == "true"
    assert env["ECS_DISABLE_PRIVILEGED"] == "true"
    assert env["ECS_CLUSTER"] == "payments"
    assert env["ECS_LOGLEVEL"] == "info"
    assert env["ECS_CONTAINER_STOP_TIMEOUT"] == "2m"


OURS = [(b"ECS_AWSVPC_BLOCK_IMDS", b"true")]
# Lines as people and tools write them, with what makes the two readers part ways: quotes,
# backslashes, comments, carriage returns, form feeds, `export`, blanks around the `=`.
PIECES = st.sampled_from(
    [b"ECS_AWSVPC_BLOCK_IMDS", b"ECS_CLUSTER", b"export ", b"=", b" ", b"\t", b"#", b";", b"'", b'"', b"\\",
     b"\r", b"\x0c", b"\x0b", b"false", b"true", b"prod", b"{\"a\":1}", b"\xff"]
)  # fmt: skip
FILES = st.lists(st.lists(PIECES, max_size=6).map(b"".join), max_size=6).map(b"\n".join)


@pytest.fixture(scope="module")
def systemd_reads(docker_image):
    """Reads a file as systemd's EnvironmentFile= does, in one systemd host for the whole module;
    None when systemd refuses the file."""
    with systemd_container(docker_image, prefix="ecs-imds-envfile") as host:

        def read(data: bytes) -> dict[bytes, bytes] | None:
            host.run("sh", "-c", "base64 -d > /tmp/env", stdin=base64.b64encode(data).decode())
            result = host.run(
                "systemd-run", "--quiet", "--pipe", "--wait", "--collect",
                "-p", "EnvironmentFile=/tmp/env", "/usr/bin/env", "-0",
                check=False,
            )  # fmt: skip
            if result.returncode:
                return None
            pairs = [item.split("=", 1) for item in result.stdout.split("\0") if "=" in item]
            return {key.encode(): value.encode("utf-8", "surrogateescape") for key, value in pairs}

        yield read


@given(FILES)
@settings(max_examples=400)
def test_the_merge_is_idempotent_and_ecs_init_reads_our_setting_or_the_file_is_refused(existing):
    try:
        merged = merge_ecs_config(existing, OURS)
    except MergeError as error:
        assert str(error).startswith("ecs.config") and "\n" not in str(error)
        return
    assert merge_ecs_config(merged, OURS) == merged
    assert effective_ecs_config(merged)[b"ECS_AWSVPC_BLOCK_IMDS"] == b"true"
    assert systemd_environment(merged)[0][b"ECS_AWSVPC_BLOCK_IMDS"] == b"true"
    assert systemd_environment(merged)[2] is None


@given(FILES)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_systemd_reads_our_setting_as_the_merge_expects_it_to(systemd_reads, existing):
    """The model of systemd's parser that the merge relies on, against systemd itself: for the
    setting we write, on random files before and after the merge."""
    key = b"ECS_AWSVPC_BLOCK_IMDS"
    env, _, refused = systemd_environment(existing)
    seen = systemd_reads(existing)
    assert (seen is None) == bool(refused), f"systemd read {seen}, the model said line {refused} refuses"
    if seen is not None:
        assert seen.get(key) == env.get(key)
    try:
        merged = merge_ecs_config(existing, OURS)
    except MergeError:
        return
    assert systemd_reads(merged).get(key) == b"true"
