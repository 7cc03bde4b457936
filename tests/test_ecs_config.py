# Copyright: the ecs-imds-golden authors
# Apache License 2.0
"""ecs.config: the ECS settings checked and rendered on the controller (the role's filter
ecs_config_settings), then merged as the host program merges them (merge_ecs_config, its
`ecs-config` verb): every byte of the team's file survives but the assignments of our keys."""

from __future__ import annotations

import stat
import subprocess

import pytest
from ecs_imds_block.filter_plugins.ecs_imds_block import AnsibleFilterError, ecs_config_settings
from support.program import PROGRAM, load, render

P = load()
OURS = {"ECS_AWSVPC_BLOCK_IMDS": True}
ATTRIBUTE = "ecs-imds-block=enforced"


def merge(text: str, settings: dict | None = None, known=(), allow_unknown=False, attribute=None) -> str:
    """What the role and the program do: render on the controller, check and merge on the host."""
    rendered = ecs_config_settings(OURS if settings is None else settings, known, allow_unknown)
    return P.merge_ecs_config(text, P.settings(rendered, (), attribute), attribute)


# --- the merge ---------------------------------------------------------------------------------


def test_an_empty_config_gets_our_keys(known_keys):
    assert merge("", known=known_keys) == "ECS_AWSVPC_BLOCK_IMDS=true\n"


def test_comments_order_and_other_lines_are_kept_byte_for_byte(known_keys):
    text = (
        "# cluster set by the platform team\nECS_CLUSTER=prod\n\n  # indented comment\n"
        "ECS_LOGLEVEL=info\r\n# \xc3\x85sa\x85\x0c\x0b\x1c\n"  # UTF-8 and bytes str.splitlines would break at
    )
    assert merge(text, known=known_keys) == text + "ECS_AWSVPC_BLOCK_IMDS=true\n"


def test_existing_assignments_are_replaced_in_place_including_export_lines_and_crlf(known_keys):
    text = (
        "ECS_CLUSTER=prod\r\n"
        "export ECS_AWSVPC_BLOCK_IMDS=false\r\n"
        "# ECS_AWSVPC_BLOCK_IMDS=false stays a comment\n"
        "\t ECS_AWSVPC_BLOCK_IMDS = false\n"
        "export ECS_LOGLEVEL=debug\n"
    )
    assert merge(text, known=known_keys) == (
        "ECS_CLUSTER=prod\r\n"
        "ECS_AWSVPC_BLOCK_IMDS=true\r\n"
        "# ECS_AWSVPC_BLOCK_IMDS=false stays a comment\n"
        "ECS_AWSVPC_BLOCK_IMDS=true\n"
        "export ECS_LOGLEVEL=debug\n"
    )


def test_every_assignment_of_a_key_is_set_so_no_later_line_overrides_it(known_keys):
    text = "ECS_AWSVPC_BLOCK_IMDS=true\nECS_CLUSTER=a\nECS_AWSVPC_BLOCK_IMDS=false\n"
    assert (
        merge(text, known=known_keys)
        == "ECS_AWSVPC_BLOCK_IMDS=true\nECS_CLUSTER=a\nECS_AWSVPC_BLOCK_IMDS=true\n"
    )


def test_the_merge_is_idempotent(known_keys):
    settings = {"ECS_DISABLE_PRIVILEGED": True, **OURS}
    once = merge(
        'ECS_CLUSTER=prod\nECS_INSTANCE_ATTRIBUTES={"o":"\xc3\x85sa"}',
        settings,
        known_keys,
        attribute=ATTRIBUTE,
    )
    assert merge(once, settings, known_keys, attribute=ATTRIBUTE) == once


def test_a_missing_final_newline_is_added_so_a_later_echo_append_works(known_keys):
    merged = merge("ECS_CLUSTER=prod", known=known_keys)
    appended = merged + "ECS_CLUSTER=from-user-data\n"  # what `echo ... >>` does
    assert appended.split("\n") == [
        "ECS_CLUSTER=prod",
        "ECS_AWSVPC_BLOCK_IMDS=true",
        "ECS_CLUSTER=from-user-data",
        "",
    ]
    assert P.effective(appended)["ECS_CLUSTER"] == "from-user-data"


@pytest.mark.parametrize(
    ("text", "settings", "attributes"),
    [
        ("", {}, '{"ecs-imds-block":"enforced"}'),
        (
            'ECS_INSTANCE_ATTRIBUTES={"team":"payments"}\n',
            {},
            '{"team":"payments","ecs-imds-block":"enforced"}',
        ),
        (
            'ECS_INSTANCE_ATTRIBUTES={"ecs-imds-block":"off","team":"payments"}\n',
            {},
            '{"ecs-imds-block":"enforced","team":"payments"}',
        ),
        (  # the agent reads the last assignment: that one's attributes are kept, and both lines set
            'ECS_INSTANCE_ATTRIBUTES={"old":"x"}\nECS_INSTANCE_ATTRIBUTES={"team":"payments"}\n',
            {},
            '{"team":"payments","ecs-imds-block":"enforced"}',
        ),
        (  # the role's own setting of the key wins over the file's, and keeps its attributes
            'ECS_INSTANCE_ATTRIBUTES={"team":"payments"}\n',
            {"ECS_INSTANCE_ATTRIBUTES": {"env": "prod"}},
            '{"env":"prod","ecs-imds-block":"enforced"}',
        ),
        (
            'ECS_INSTANCE_ATTRIBUTES={"team":"\xc3\x85sa"}\n',
            {},
            '{"team":"\xc3\x85sa","ecs-imds-block":"enforced"}',
        ),
    ],
    ids=["none", "the-teams", "ours-updated", "last-wins", "role-setting", "utf-8"],
)
def test_the_attribute_is_merged_into_ecs_instance_attributes_keeping_the_teams(
    known_keys, text, settings, attributes
):
    merged = merge(text, settings, known_keys, attribute=ATTRIBUTE)
    assert P.effective(merged)["ECS_INSTANCE_ATTRIBUTES"] == attributes
    assert [line for line in merged.split("\n") if line.startswith("ECS_INSTANCE_ATTRIBUTES=")] == [
        f"ECS_INSTANCE_ATTRIBUTES={attributes}"
    ] * max(1, text.count("ECS_INSTANCE_ATTRIBUTES="))


# --- the filter: keys and how values are written ----------------------------------------------


def test_value_types_are_rendered_as_the_agent_reads_them(known_keys):
    rendered = ecs_config_settings(
        {
            "ECS_AWSVPC_BLOCK_IMDS": False,
            "ECS_CONTAINER_STOP_TIMEOUT": "2m",
            "ECS_TASK_PIDS_LIMIT": 100,
            "ECS_IMAGE_PULL_INACTIVITY_TIMEOUT": 1.5,
            "ECS_INSTANCE_ATTRIBUTES": {"team": "payments", "env": "prod"},
            "ECS_RESERVED_PORTS": [22, 2375],
        },
        known_keys,
    )
    assert rendered == {
        "ECS_AWSVPC_BLOCK_IMDS": "false",
        "ECS_CONTAINER_STOP_TIMEOUT": "2m",
        "ECS_TASK_PIDS_LIMIT": "100",
        "ECS_IMAGE_PULL_INACTIVITY_TIMEOUT": "1.5",
        "ECS_INSTANCE_ATTRIBUTES": '{"env":"prod","team":"payments"}',
        "ECS_RESERVED_PORTS": "[22,2375]",
    }


def test_an_unknown_key_fails_with_the_closest_known_key(known_keys):
    with pytest.raises(AnsibleFilterError) as error:
        ecs_config_settings({"ECS_AWSVPC_BLOCK_IMSD": True}, known_keys)
    assert str(error.value) == (
        "ecs_config: unknown ECS agent setting 'ECS_AWSVPC_BLOCK_IMSD'; did you mean "
        "'ECS_AWSVPC_BLOCK_IMDS'? (set ecs_imds_block_allow_unknown_ecs_keys: true to write it anyway)"
    )


def test_an_unknown_key_with_nothing_close_still_names_it(known_keys):
    with pytest.raises(AnsibleFilterError) as error:
        ecs_config_settings({"ZZZ_TOTALLY_NEW": "1"}, known_keys)
    assert str(error.value) == (
        "ecs_config: unknown ECS agent setting 'ZZZ_TOTALLY_NEW' "
        "(set ecs_imds_block_allow_unknown_ecs_keys: true to write it anyway)"
    )


def test_an_unknown_key_is_written_with_the_opt_out(known_keys):
    assert merge("", {"ECS_FUTURE_SETTING": "x"}, known_keys, allow_unknown=True) == "ECS_FUTURE_SETTING=x\n"


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"ECS_CLUSTER": None}, "ecs_config: value of ECS_CLUSTER must be a string, got None"),
        ({"ecs_cluster": "prod"}, "ecs_config: 'ecs_cluster' is not a valid ecs.config key"),
        ({"ECS CLUSTER": "prod"}, "ecs_config: 'ECS CLUSTER' is not a valid ecs.config key"),
        ({"ECS_CLUSTER=prod": "x"}, "ecs_config: 'ECS_CLUSTER=prod' is not a valid ecs.config key"),
        ({1: "x"}, "ecs_config: 1 is not a valid ecs.config key"),
    ],
)
def test_bad_keys_and_types_are_refused_by_the_filter_naming_them(known_keys, settings, message):
    with pytest.raises(AnsibleFilterError) as error:
        ecs_config_settings(settings, known_keys)
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((["ECS_CLUSTER=x"],), "ecs_config: settings must be a mapping, got ['ECS_CLUSTER=x']"),
        ((OURS, "ECS_CLUSTER"), "ecs_config: known_keys must be a list, got 'ECS_CLUSTER'"),
        ((OURS, [], "yes"), "ecs_config: allow_unknown must be a boolean, got 'yes'"),
    ],
)
def test_bad_arguments_name_the_bad_value(args, message):
    with pytest.raises(AnsibleFilterError) as error:
        ecs_config_settings(*args)
    assert str(error.value) == message


# --- what the program refuses, in one line naming the value --------------------------------------

VALUE = (
    "the value of ECS_CLUSTER must be one line of printable text without backslashes, "
    "leading or trailing blanks or a leading quote (ecs-init and systemd read those differently): "
)
LINE = (
    "ecs-init and systemd's EnvironmentFile= would read it differently (a quote, a backslash, a "
    "carriage return, or bytes that are not UTF-8); fix that line"
)
OBJECT = "ECS_INSTANCE_ATTRIBUTES must be a JSON object of strings, as the ECS agent reads it: "


@pytest.mark.parametrize(
    ("text", "settings", "attribute", "message"),
    [
        (
            "",
            {"ECS_CLUSTER": "prod\nECS_DISABLE_PRIVILEGED=false"},
            None,
            VALUE + "'prod\\nECS_DISABLE_PRIVILEGED=false'",
        ),
        ("", {"ECS_CLUSTER": "prod\r"}, None, VALUE + "'prod\\r'"),
        (
            "",
            {"ECS_CLUSTER": "a\x0cECS_AWSVPC_BLOCK_IMDS=false"},
            None,
            VALUE + "'a\\x0cECS_AWSVPC_BLOCK_IMDS=false'",
        ),
        ("", {"ECS_CLUSTER": "a\x0bb"}, None, VALUE + "'a\\x0bb'"),
        ("", {"ECS_CLUSTER": "prod\\"}, None, VALUE + "'prod\\\\'"),
        ("", {"ECS_CLUSTER": ' "prod"'}, None, VALUE + "' \"prod\"'"),
        ("", {"ECS_CLUSTER": "'prod'"}, None, VALUE + "\"'prod'\""),
        ("", {"ECS_CLUSTER": "prod "}, None, VALUE + "'prod '"),
        ("", {}, "ecs imds=on", "not an ECS attribute NAME=VALUE: 'ecs imds=on'"),
        ("", {}, "ecs-imds-block", "not an ECS attribute NAME=VALUE: 'ecs-imds-block'"),
        ("ECS_INSTANCE_ATTRIBUTES=[1,2]\n", {}, ATTRIBUTE, OBJECT + "'[1,2]'"),
        ('ECS_INSTANCE_ATTRIBUTES={"a":1}\n', {}, ATTRIBUTE, OBJECT + "'{\"a\":1}'"),
        ("ECS_INSTANCE_ATTRIBUTES=team=payments\n", {}, ATTRIBUTE, OBJECT + "'team=payments'"),
        ("", {"ECS_INSTANCE_ATTRIBUTES": ["x"]}, ATTRIBUTE, OBJECT + "'[\"x\"]'"),
        ('ECS_CLUSTER=prod\nECS_LOGLEVEL="info\n', {}, None, "ecs.config line 2: " + LINE),
        ("ECS_CLUSTER=prod\\\n", {}, None, "ecs.config line 1: " + LINE),
        ("ECS_CLUSTER=a\rb\n", {}, None, "ecs.config line 1: " + LINE),
        ("# fine\nECS_CLUSTER=\xff\n", {}, None, "ecs.config line 2: " + LINE),
    ],
)
def test_refusals_are_one_line_naming_the_value_or_the_line(known_keys, text, settings, attribute, message):
    with pytest.raises(P.Refused) as error:
        merge(text, {**OURS, **settings}, known_keys, attribute=attribute)
    assert str(error.value) == message and "\n" not in str(error.value)


def test_a_setting_given_twice_with_two_values_is_refused():
    """ecs-config's KEY=VALUE arguments beside the configuration's own settings: a second value
    of our key would override ours, so nothing is written."""
    wanted = P.settings({"ECS_AWSVPC_BLOCK_IMDS": "true"}, ["ECS_AWSVPC_BLOCK_IMDS=false"])
    with pytest.raises(P.Refused) as error:
        P.merge_ecs_config("", wanted, None)
    assert str(error.value) == (
        "ecs.config: ecs-init would not read ECS_AWSVPC_BLOCK_IMDS=true from it; "
        "fix the line that sets ECS_AWSVPC_BLOCK_IMDS"
    )


# --- the program's ecs-config verb, as ecs.service and the user data run it ---------------------


def ecs_config(config, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["sh", str(PROGRAM), "--config", str(config), "ecs-config", *args], capture_output=True
    )


def test_ecs_config_writes_the_settings_keeping_the_files_mode(tmp_path):
    config = render(tmp_path)
    path = tmp_path / "ecs.config"
    path.write_bytes(b"ECS_CLUSTER=default\r\n# \xc3\x85sa\n")
    path.chmod(0o640)
    first = ecs_config(config, "ECS_CLUSTER=prod")
    assert (first.returncode, first.stdout, first.stderr) == (
        0,
        b"",
        f"ecs-imds-block: updated {path}\n".encode(),
    )
    assert path.read_bytes() == (
        b"ECS_CLUSTER=prod\r\n# \xc3\x85sa\n"
        b'ECS_AWSVPC_BLOCK_IMDS=true\nECS_INSTANCE_ATTRIBUTES={"ecs-imds-block":"enforced"}\n'
    )
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    again = ecs_config(config, "ECS_CLUSTER=prod")
    assert (again.returncode, again.stdout, again.stderr) == (0, b"", b"")


def test_ecs_config_creates_a_missing_file_0600_in_a_new_0755_folder(tmp_path):
    config = render(tmp_path, ecs_config_path=str(tmp_path / "etc" / "ecs" / "ecs.config"))
    assert ecs_config(config).returncode == 0
    path = tmp_path / "etc" / "ecs" / "ecs.config"
    assert (
        path.read_bytes()
        == b'ECS_AWSVPC_BLOCK_IMDS=true\nECS_INSTANCE_ATTRIBUTES={"ecs-imds-block":"enforced"}\n'
    )
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert (
        stat.S_IMODE(path.parent.stat().st_mode) == stat.S_IMODE((tmp_path / "etc").stat().st_mode) == 0o755
    )


@pytest.mark.parametrize(
    ("content", "args", "message"),
    [
        (b'ECS_CLUSTER="prod\n', [], "ecs.config line 1: " + LINE),
        (b"", ["ECS_CLUSTER"], "not a KEY=value ecs.config setting: 'ECS_CLUSTER'"),
        (b"", ["ECS_CLUSTER=a b "], VALUE + "'a b '"),
        (b"ECS_INSTANCE_ATTRIBUTES=[]\n", [], OBJECT + "'[]'"),
    ],
)
def test_ecs_config_refuses_in_one_line_and_writes_nothing(tmp_path, content, args, message):
    config = render(tmp_path)
    path = tmp_path / "ecs.config"
    path.write_bytes(content)
    result = ecs_config(config, *args)
    assert (result.returncode, result.stdout, result.stderr) == (
        1,
        b"",
        f"ecs-imds-block: {message}\n".encode(),
    )
    assert path.read_bytes() == content
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".ecs-imds-block")] == []


def test_a_line_appended_while_ecs_config_is_merged_is_never_lost(tmp_path):
    """User data's `echo ... >> /etc/ecs/ecs.config` may run between the merge's read and its write:
    the write refuses, the appended line stays, and the next run merges it."""
    path = tmp_path / "ecs.config"
    path.write_text("ECS_CLUSTER=prod\n")
    read = P.read(str(path))
    merged = P.merge_ecs_config(read, [("ECS_AWSVPC_BLOCK_IMDS", "true")], None)
    with path.open("a") as handle:
        handle.write("ECS_LOGLEVEL=debug\n")
    with pytest.raises(P.Refused) as error:
        P.write(str(path), merged, expected=read)
    assert str(error.value) == f"{path} changed while it was merged; run again"
    assert path.read_text() == "ECS_CLUSTER=prod\nECS_LOGLEVEL=debug\n"
    assert [p.name for p in tmp_path.iterdir()] == ["ecs.config"]  # nothing staged is left


@pytest.mark.parametrize(
    ("text", "left"),
    [
        ('ECS_INSTANCE_ATTRIBUTES={"team":"web","ecs-imds-block":"enforced"}\n', '{"team":"web"}'),
        ('ECS_INSTANCE_ATTRIBUTES={"ecs-imds-block":"enforced"}\n', "{}"),
        # Someone else's value for the name is theirs: only ours is withdrawn.
        ('ECS_INSTANCE_ATTRIBUTES={"ecs-imds-block":"theirs"}\n', '{"ecs-imds-block":"theirs"}'),
    ],
)
def test_with_the_attribute_off_ours_is_withdrawn_and_the_teams_stay(text, left):
    """With the block or the attribute off, a host must not keep telling ECS it is enforced: tasks
    placed by attribute:ecs-imds-block == enforced would land on a host without the block."""
    merged = P.merge_ecs_config(text, [("ECS_AWSVPC_BLOCK_IMDS", "true")], ATTRIBUTE, on=False)
    assert P.effective(merged)["ECS_INSTANCE_ATTRIBUTES"] == left
    assert P.merge_ecs_config(merged, [("ECS_AWSVPC_BLOCK_IMDS", "true")], ATTRIBUTE, on=False) == merged


def test_with_the_attribute_off_a_file_without_attributes_gets_none():
    merged = P.merge_ecs_config(
        "ECS_CLUSTER=prod\n", [("ECS_AWSVPC_BLOCK_IMDS", "true")], ATTRIBUTE, on=False
    )
    assert merged == "ECS_CLUSTER=prod\nECS_AWSVPC_BLOCK_IMDS=true\n"
