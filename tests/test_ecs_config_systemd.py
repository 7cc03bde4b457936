"""The merged ecs.config as systemd itself reads it (EnvironmentFile=, as ecs.service does)."""

from __future__ import annotations

import pytest
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
