# Copyright: the ecs-imds-golden authors
# Apache License 2.0
"""The order in which cloud-init runs the parts of `golden-ami user-data`, with cloud-init's own code.

cloud-init stores each shell-script part under its file name in the instance's scripts directory
and runs that directory sorted by name, not in the order of the parts. So our
`ecs-imds-block-ecs-config.sh` runs before the team's `existing-user-data`, and a team script
that rewrites ecs.config removes our line; ecs.service's drop-in (its ExecStartPre) puts it back
just before the agent starts.

Each case boots the user data through Debian's cloud-init package (unpacked by the `cloud_init`
fixture of conftest.py) in a throwaway container of the offline base image, with no
network: the real Init stage (DataSourceNone serves the user data; UserDataProcessor and the
default part handlers place the parts), then the package's own module sections, cut down to
write-files (init stage) and scripts-user (final stage, `subp.runparts`). The host program is
installed with the configuration the user data carries; the boothook is placed, not run (real
boots run it: tests/test_boothook_host.py), so ecs.config is not there before the scripts. Then
the `ecs-config` ExecStartPre line of the program's own ecs.service drop-in runs, and
ecs.config is read as the ECS agent reads it (the program's `effective`, which
tests/test_ecs_config*.py hold to ecs-init's reading).
"""

from __future__ import annotations

import json
import shlex

import pytest
from support.cloud_init import boot
from support.user_data import boothook_script, host_program, leaves, payload

from golden_ami import boothook, userdata
from golden_ami.userdata import build_user_data

pytestmark = pytest.mark.docker

ECS_DROPIN = "/etc/systemd/system/ecs.service.d/50-ecs-imds-block.conf"
PROGRAM = "/usr/local/sbin/ecs-imds-block"
CONFIG = boothook.config(boothook.settings())
OURS = userdata.ECS_CONFIG_NAME
THEIRS = userdata.EXISTING_NAME
BOOTHOOK = userdata.BOOTHOOK_NAME

OVERWRITE = b"#!/bin/sh\necho ECS_CLUSTER=team > /etc/ecs/ecs.config\n"
APPEND = b"#!/bin/sh\necho ECS_ENABLE_TASK_IAM_ROLE=true >> /etc/ecs/ecs.config\n"
WRITE_FILES = (
    b"#cloud-config\n"
    b"write_files:\n"
    b"  - path: /etc/ecs/ecs.config\n"
    b"    content: |\n"
    b"      ECS_CLUSTER=team\n"
    b"      ECS_LOGLEVEL=debug\n"
)


def exec_start_pre() -> list[str]:
    """The argv of the ecs-config ExecStartPre line of the program's ecs.service drop-in. The
    line before it, the check of the live block, is shown on real hosts
    (tests/test_boothook_host.py): this container has no firewall to check."""
    dropin = host_program().units(json.loads(CONFIG))[ECS_DROPIN]
    lines = [line for line in dropin.splitlines() if line.startswith("ExecStartPre=")]
    assert lines == [f"ExecStartPre={PROGRAM} check", f"ExecStartPre={PROGRAM} ecs-config"], dropin
    return shlex.split(lines[1].removeprefix("ExecStartPre="))


@pytest.fixture(scope="module")
def booted(cloud_init, docker_image, tmp_path_factory):
    """case -> report, each case booted once."""
    done: dict[str, dict] = {}

    def run(case: str) -> dict:
        if case not in done:
            data = build_user_data("prod", CASES[case][0])
            work = tmp_path_factory.mktemp(case)
            done[case] = boot(cloud_init, docker_image, work, data, exec_start_pre(), CONFIG)
        return done[case]

    return run


ATTRIBUTES = 'ECS_INSTANCE_ATTRIBUTES={"ecs-imds-block":"enforced"}\n'
OURS_SET = "ECS_AWSVPC_BLOCK_IMDS=true\nECS_CLUSTER=prod\n" + ATTRIBUTES
ENFORCED = {"ECS_INSTANCE_ATTRIBUTES": '{"ecs-imds-block":"enforced"}'}
OURS_READ = {"ECS_CLUSTER": "prod", "ECS_AWSVPC_BLOCK_IMDS": "true", **ENFORCED}
MERGED_INTO_THEIRS = "ECS_CLUSTER=prod\nECS_LOGLEVEL=debug\nECS_AWSVPC_BLOCK_IMDS=true\n" + ATTRIBUTES
CASES = {
    # case: (team user data, timeline, what the agent reads before ExecStartPre, and after)
    "overwrite": (
        OVERWRITE,
        [
            ["boothook (not run)", BOOTHOOK, None],
            ["part handlers", "consume_data", None],
            ["cloud_init_modules", [], None],
            ["cloud_config_modules", [], None],
            ["script", OURS, OURS_SET],
            ["script", THEIRS, "ECS_CLUSTER=team\n"],  # ours is gone
            ["cloud_final_modules", ["scripts-user"], "ECS_CLUSTER=team\n"],
            ["ExecStartPre", 0, "ECS_CLUSTER=team\nECS_AWSVPC_BLOCK_IMDS=true\n" + ATTRIBUTES],
        ],
        {"ECS_CLUSTER": "team"},
        {"ECS_CLUSTER": "team", "ECS_AWSVPC_BLOCK_IMDS": "true", **ENFORCED},
    ),
    "append": (
        APPEND,
        [
            ["boothook (not run)", BOOTHOOK, None],
            ["part handlers", "consume_data", None],
            ["cloud_init_modules", [], None],
            ["cloud_config_modules", [], None],
            ["script", OURS, OURS_SET],
            ["script", THEIRS, OURS_SET + "ECS_ENABLE_TASK_IAM_ROLE=true\n"],
            ["cloud_final_modules", ["scripts-user"], OURS_SET + "ECS_ENABLE_TASK_IAM_ROLE=true\n"],
            ["ExecStartPre", 0, OURS_SET + "ECS_ENABLE_TASK_IAM_ROLE=true\n"],
        ],
        {
            "ECS_CLUSTER": "prod",
            "ECS_AWSVPC_BLOCK_IMDS": "true",
            "ECS_ENABLE_TASK_IAM_ROLE": "true",
            **ENFORCED,
        },
        {
            "ECS_CLUSTER": "prod",
            "ECS_AWSVPC_BLOCK_IMDS": "true",
            "ECS_ENABLE_TASK_IAM_ROLE": "true",
            **ENFORCED,
        },
    ),
    "write-files": (
        WRITE_FILES,
        [
            ["boothook (not run)", BOOTHOOK, None],
            ["part handlers", "consume_data", None],
            ["cloud_init_modules", ["write-files"], "ECS_CLUSTER=team\nECS_LOGLEVEL=debug\n"],
            ["cloud_config_modules", [], "ECS_CLUSTER=team\nECS_LOGLEVEL=debug\n"],
            # Every assignment of a key we set is rewritten in place: --cluster prod wins.
            [
                "script",
                OURS,
                MERGED_INTO_THEIRS,
            ],
            [
                "cloud_final_modules",
                ["scripts-user"],
                MERGED_INTO_THEIRS,
            ],
            [
                "ExecStartPre",
                0,
                MERGED_INTO_THEIRS,
            ],
        ],
        {"ECS_CLUSTER": "prod", "ECS_LOGLEVEL": "debug", "ECS_AWSVPC_BLOCK_IMDS": "true", **ENFORCED},
        {"ECS_CLUSTER": "prod", "ECS_LOGLEVEL": "debug", "ECS_AWSVPC_BLOCK_IMDS": "true", **ENFORCED},
    ),
}


def agent_reads(ecs_config: str) -> dict[str, str]:
    return host_program().effective(ecs_config)


@pytest.mark.parametrize("case", list(CASES))
def test_cloud_init_order_then_the_agents_start(booted, case):
    """Each command cloud-init runs, in its order, with ecs.config after it; then what the agent
    reads after user data (cloud-final's end) and after ecs.service's ExecStartPre."""
    _, timeline, before, after = CASES[case]
    report = booted(case)
    assert report["failures"] == {}, report["log"][-6000:]
    assert report["problems"] == [], report["log"][-6000:]
    assert report["timeline"] == timeline, report["log"][-6000:]
    assert timeline[-2][0] == "cloud_final_modules"
    assert agent_reads(timeline[-2][2]) == before
    assert timeline[-1][:2] == ["ExecStartPre", 0]
    assert agent_reads(timeline[-1][2]) == after


@pytest.mark.parametrize("case", list(CASES))
def test_the_part_handlers_place_the_parts(booted, case):
    """The boothook in boothooks/ (its first line stripped, as cloud-init runs it), each shell
    script part under its file name in scripts/, and nothing else there."""
    team = CASES[case][0]
    data = build_user_data("prod", team)
    placed = booted(case)["placed"]
    hook = boothook_script(data)
    assert hook.startswith("#cloud-boothook\n#!/bin/sh\n")
    assert placed["boothooks"] == {BOOTHOOK: hook.removeprefix("#cloud-boothook\n")}
    scripts = {OURS: payload(data, OURS).decode()}
    if team.startswith(b"#!"):
        scripts[THEIRS] = team.decode()
    assert placed["scripts"] == scripts


def test_the_scripts_run_in_name_order_not_part_order(booted):
    """The team's script is the earlier part, and runs last: sorted() puts "ecs-" before "exi"."""
    data = build_user_data("prod", OVERWRITE)
    assert [leaf.get_filename() for leaf in leaves(data)] == [BOOTHOOK, THEIRS, OURS]
    ran = [name for kind, name, _ in booted("overwrite")["timeline"] if kind == "script"]
    assert ran == [OURS, THEIRS]
    assert sorted([THEIRS, OURS]) == ran


def test_without_the_dropin_an_overwriting_script_removes_the_block(booted):
    """In the overwrite case it is ecs.service's ExecStartPre that holds the block: when
    cloud-final ends, the agent would read no ECS_AWSVPC_BLOCK_IMDS at all."""
    timeline = booted("overwrite")["timeline"]
    assert timeline[-2][0] == "cloud_final_modules"
    assert "ECS_AWSVPC_BLOCK_IMDS" not in agent_reads(timeline[-2][2])
    assert timeline[-1][0] == "ExecStartPre"
    assert agent_reads(timeline[-1][2])["ECS_AWSVPC_BLOCK_IMDS"] == "true"
