# Copyright: the ecs-imds-golden authors
# Apache License 2.0
"""The ecs.config merge: the settings checked on the controller, then merged as the host merges
them (module_utils/ecs_imds_block_merge.py): existing content survives byte for byte."""

from __future__ import annotations

import pytest
from ecs_config import AnsibleFilterError, FilterModule, ecs_config_settings
from ecs_imds_block_merge import merge_ecs_config

OURS = {"ECS_AWSVPC_BLOCK_IMDS": True}


def merge(text, settings=None, known=(), allow_unknown=False):
    """What the role does: check and render on the controller, merge on the host."""
    rendered = ecs_config_settings(OURS if settings is None else settings, known, allow_unknown)
    pairs = [(key.encode(), value.encode()) for key, value in rendered.items()]
    return merge_ecs_config(text.encode(), pairs).decode()


def test_empty_config_gets_our_keys(known_keys):
    assert merge("", known=known_keys) == "ECS_AWSVPC_BLOCK_IMDS=true\n"


def test_comments_order_and_other_lines_are_kept_byte_for_byte(known_keys):
    text = "# cluster set by the platform team\nECS_CLUSTER=prod\n\n  # indented comment\nECS_LOGLEVEL=info\n"
    assert merge(text, known=known_keys) == text + "ECS_AWSVPC_BLOCK_IMDS=true\n"


def test_existing_assignments_are_replaced_in_place_including_export_lines(known_keys):
    text = (
        "ECS_CLUSTER=prod\r\n"
        "export ECS_AWSVPC_BLOCK_IMDS=false\r\n"
        "# ECS_AWSVPC_BLOCK_IMDS=false stays a comment\n"
        "export ECS_LOGLEVEL=debug\n"
    )
    assert merge(text, known=known_keys) == (
        "ECS_CLUSTER=prod\r\n"
        "ECS_AWSVPC_BLOCK_IMDS=true\r\n"
        "# ECS_AWSVPC_BLOCK_IMDS=false stays a comment\n"
        "export ECS_LOGLEVEL=debug\n"
    )


def test_every_assignment_of_a_key_is_set_so_no_later_line_overrides_it(known_keys):
    text = "ECS_AWSVPC_BLOCK_IMDS=true\nECS_CLUSTER=a\nECS_AWSVPC_BLOCK_IMDS=false\n"
    assert (
        merge(text, known=known_keys)
        == "ECS_AWSVPC_BLOCK_IMDS=true\nECS_CLUSTER=a\nECS_AWSVPC_BLOCK_IMDS=true\n"
    )


def test_merge_is_idempotent(known_keys):
    once = merge("ECS_CLUSTER=prod\n", {"ECS_DISABLE_PRIVILEGED": True, **OURS}, known_keys)
    assert merge(once, {"ECS_DISABLE_PRIVILEGED": True, **OURS}, known_keys) == once


def test_missing_final_newline_is_added_so_a_later_echo_append_works(known_keys):
    merged = merge("ECS_CLUSTER=prod", known=known_keys)
    appended = merged + "ECS_CLUSTER=from-user-data\n"  # what `echo ... >>` does
    assert appended.splitlines() == [
        "ECS_CLUSTER=prod",
        "ECS_AWSVPC_BLOCK_IMDS=true",
        "ECS_CLUSTER=from-user-data",
    ]


def test_value_types_are_rendered_as_the_agent_reads_them(known_keys):
    rendered = ecs_config_settings(
        {
            "ECS_AWSVPC_BLOCK_IMDS": False,
            "ECS_CONTAINER_STOP_TIMEOUT": "2m",
            "ECS_TASK_PIDS_LIMIT": 100,
            "ECS_INSTANCE_ATTRIBUTES": {"team": "payments", "env": "prod"},
            "ECS_RESERVED_PORTS": [22, 2375],
        },
        known_keys,
    )
    assert rendered == {
        "ECS_AWSVPC_BLOCK_IMDS": "false",
        "ECS_CONTAINER_STOP_TIMEOUT": "2m",
        "ECS_TASK_PIDS_LIMIT": "100",
        "ECS_INSTANCE_ATTRIBUTES": '{"env":"prod","team":"payments"}',
        "ECS_RESERVED_PORTS": "[22,2375]",
    }


def test_unknown_key_fails_with_the_closest_known_key(known_keys):
    with pytest.raises(AnsibleFilterError) as err:
        merge("", {"ECS_AWSVPC_BLOCK_IMSD": True}, known_keys)
    assert str(err.value) == (
        "ecs_config: unknown ECS agent setting 'ECS_AWSVPC_BLOCK_IMSD'; did you mean "
        "'ECS_AWSVPC_BLOCK_IMDS'? (set ecs_imds_block_allow_unknown_ecs_keys: true to write it anyway)"
    )


def test_unknown_key_with_nothing_close_still_names_it(known_keys):
    with pytest.raises(AnsibleFilterError, match=r"unknown ECS agent setting 'ZZZ_TOTALLY_NEW' \("):
        merge("", {"ZZZ_TOTALLY_NEW": "1"}, known_keys)


def test_unknown_key_is_written_with_the_opt_out(known_keys):
    assert merge("", {"ECS_FUTURE_SETTING": "x"}, known_keys, allow_unknown=True) == "ECS_FUTURE_SETTING=x\n"


# The merge's own words: the role and the host refuse a value with one rule.
VALUE = (
    "ecs_config: the value of ECS_CLUSTER must be one line of printable text without backslashes, "
    "leading or trailing blanks or a leading quote (ecs-init and systemd read those differently): "
)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            {"ECS_CLUSTER": "prod\nECS_DISABLE_PRIVILEGED=false"},
            VALUE + "'prod\\nECS_DISABLE_PRIVILEGED=false'",
        ),
        ({"ECS_CLUSTER": "prod\r"}, VALUE + "'prod\\r'"),
        ({"ECS_CLUSTER": "a\x0cECS_AWSVPC_BLOCK_IMDS=false"}, VALUE + "'a\\x0cECS_AWSVPC_BLOCK_IMDS=false'"),
        ({"ECS_CLUSTER": "a\x0bb"}, VALUE + "'a\\x0bb'"),
        ({"ECS_CLUSTER": "prod\\"}, VALUE + "'prod\\\\'"),
        ({"ECS_CLUSTER": ' "prod"'}, VALUE + "' \"prod\"'"),
        ({"ECS_CLUSTER": "'prod'"}, VALUE + "\"'prod'\""),
        ({"ECS_CLUSTER": None}, "value of ECS_CLUSTER must be a string, got None"),
        ({"ecs_cluster": "prod"}, "'ecs_cluster' is not a valid ecs.config key"),
        ({"ECS CLUSTER": "prod"}, "'ECS CLUSTER' is not a valid ecs.config key"),
        ({"ECS_CLUSTER=prod": "x"}, "'ECS_CLUSTER=prod' is not a valid ecs.config key"),
        ({1: "x"}, "'1' is not a valid ecs.config key"),
    ],
)
def test_bad_settings_name_the_bad_value(known_keys, settings, message):
    with pytest.raises(AnsibleFilterError) as err:
        merge("", settings, known_keys)
    assert message in str(err.value)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((["ECS_CLUSTER=x"],), "settings must be a mapping, got ['ECS_CLUSTER=x']"),
        ((OURS, "ECS_CLUSTER"), "known_keys must be a list, got 'ECS_CLUSTER'"),
        ((OURS, [], "yes"), "allow_unknown must be a boolean, got 'yes'"),
    ],
)
def test_bad_arguments_name_the_bad_value(args, message):
    with pytest.raises(AnsibleFilterError) as err:
        ecs_config_settings(*args)
    assert message in str(err.value)


def test_filter_module_exports():
    assert set(FilterModule().filters()) == {"ecs_config_settings"}
