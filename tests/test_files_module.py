# Copyright: the ecs-imds-golden authors
# Apache License 2.0
"""The role's ecs_imds_block_files module, run by ansible-playbook on this machine's files:
changes only what differs, stages and validates everything before touching anything, keeps
an existing file's mode when told none, and refuses bad input before any change."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROLE
from imds_rules import imds_rules


@pytest.fixture
def run_module(ansible_playbook, tmp_path):
    """Runs the module once; returns its registered result, failed or not."""

    def run(files: list[dict], check: bool = False) -> dict:
        result_file = tmp_path / "result.json"
        play = {
            "hosts": "localhost",
            "connection": "local",
            "gather_facts": False,
            "tasks": [
                {
                    "ecs_imds_block_files": {"files": files},
                    "register": "written",
                    "ignore_errors": True,
                    "diff": True,
                },
                {
                    "ansible.builtin.copy": {"content": "{{ written | to_json }}", "dest": str(result_file)},
                    "check_mode": False,
                },
            ],
        }
        (tmp_path / "play.yml").write_text(json.dumps([play]))
        env = {
            **os.environ,
            "ANSIBLE_LIBRARY": str(ROLE / "library"),
            "ANSIBLE_MODULE_UTILS": str(ROLE / "module_utils"),
            "ANSIBLE_LOCAL_TEMP": str(tmp_path / "tmp"),
            "ANSIBLE_NOCOLOR": "1",
        }
        argv = [ansible_playbook, "-i", "localhost,", "-e", f"ansible_python_interpreter={sys.executable}"]
        completed = subprocess.run(
            [*argv, *(["--check"] if check else []), str(tmp_path / "play.yml")],
            capture_output=True,
            text=True,
            env=env,
        )
        assert result_file.exists(), f"the play did not finish:\n{completed.stdout}\n{completed.stderr}"
        return json.loads(result_file.read_text())

    return run


def mode_of(path: Path) -> str:
    return f"{stat.S_IMODE(path.stat().st_mode):04o}"


@pytest.fixture
def root(tmp_path):
    path = tmp_path / "root"
    path.mkdir()
    return path


def test_writes_only_what_differs_creating_parents(run_module, tmp_path, root):
    files = [
        {"path": f"{root}/sbin/loader", "content": "#!/bin/sh\n", "mode": "0755"},
        {"path": f"{root}/etc/a.service.d/50.conf", "content": "[Service]\n", "mode": "0644"},
    ]
    first = run_module(files)
    assert not first.get("failed"), first
    assert first["changed"] and first["changed_paths"] == [spec["path"] for spec in files]
    assert (root / "sbin/loader").read_text() == "#!/bin/sh\n" and mode_of(root / "sbin/loader") == "0755"
    assert mode_of(root / "etc/a.service.d/50.conf") == "0644"
    assert mode_of(root / "etc/a.service.d") == "0755"
    again = run_module(files)
    assert (again["changed"], again["changed_paths"]) == (False, [])
    (root / "sbin/loader").chmod(0o700)
    fixed = run_module(files)
    assert fixed["changed_paths"] == [files[0]["path"]] and mode_of(root / "sbin/loader") == "0755"


def test_check_mode_reports_and_diffs_but_writes_nothing(run_module, tmp_path, root):
    (root / "rules").write_text("old\n")
    files = [
        {"path": f"{root}/rules", "content": "new\n", "mode": "0600"},
        {"path": f"{root}/new.d/file", "content": "x\n", "mode": "0644"},
    ]
    result = run_module(files, check=True)
    assert result["changed_paths"] == [spec["path"] for spec in files]
    assert [(d["before"], d["after"]) for d in result["diff"]] == [("old\n", "new\n"), ("", "x\n")]
    assert (root / "rules").read_text() == "old\n"
    assert not (root / "new.d").exists()


def test_a_refused_file_leaves_every_file_as_it_was(run_module, tmp_path, root):
    (root / "first").write_text("first, old\n")
    (root / "rules").write_text("good\n")
    files = [
        {"path": f"{root}/first", "content": "first, new\n", "mode": "0644"},
        {"path": f"{root}/rules", "content": "bad\n", "mode": "0600", "validate": "grep -q good %s"},
    ]
    result = run_module(files)
    assert result["failed"]
    assert result["msg"] == f"no file was changed: 'grep -q good %s' refused the new content of {root}/rules"
    assert (root / "first").read_text() == "first, old\n"
    assert (root / "rules").read_text() == "good\n"
    files[1]["content"] = "good, new\n"
    assert run_module(files)["changed_paths"] == [files[0]["path"], files[1]["path"]]
    assert (root / "rules").read_text() == "good, new\n"


def test_without_a_mode_an_existing_file_keeps_its_own_and_a_new_one_is_0600(run_module, tmp_path, root):
    (root / "ecs.config").write_text("ECS_CLUSTER=prod\n")
    (root / "ecs.config").chmod(0o640)
    files = [
        {"path": f"{root}/ecs.config", "content": "ECS_CLUSTER=prod\nECS_AWSVPC_BLOCK_IMDS=true\n"},
        {"path": f"{root}/ecs/new.config", "content": "ECS_AWSVPC_BLOCK_IMDS=true\n"},
    ]
    result = run_module(files)
    assert result["changed_paths"] == [spec["path"] for spec in files]
    assert mode_of(root / "ecs.config") == "0640"
    assert mode_of(root / "ecs/new.config") == "0600"
    assert (root / "ecs.config").read_text() == files[0]["content"]


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"mode": "644x"}, "mode must be an octal string such as '0644': '644x'"),
        ({"owner": "no-such-user-here"}, "owner 'no-such-user-here' does not exist on this host"),
        ({"group": "no-such-group-here"}, "group 'no-such-group-here' does not exist on this host"),
        ({"validate": "iptables-restore --test"}, "validate must contain %s: 'iptables-restore --test'"),
        ({"path": "relative/file"}, "path must be absolute: 'relative/file'"),
        (
            {"path": "{root}/good/second"},
            "'{root}/good/second' cannot be written: '{root}/good' is not a directory",
        ),
        (
            {"merge": "rules", "content": "*filter\n# BEGIN ecs_imds_block\n:DOCKER-USER - [0:0]\nCOMMIT\n"},
            "no file was changed: the rendered rules hold no single BEGIN/END ecs_imds_block block",
        ),
    ],
    ids=["mode", "owner", "group", "validate", "path", "parent-is-a-file", "merge-without-our-block"],
)
def test_bad_input_is_refused_before_any_file_changes(run_module, tmp_path, root, bad, message):
    (root / "good").write_text("old\n")  # also the parent of "good/second": a regular file
    bad = {key: value.format(root=root) for key, value in bad.items()}
    files = [
        {"path": f"{root}/good", "content": "x\n", "mode": "0644"},
        {"path": f"{root}/second", "content": "y\n", "mode": "0644", **bad},
    ]
    result = run_module(files)
    assert result["failed"] and result["msg"] == message.format(root=root)
    assert sorted(path.name for path in root.iterdir()) == ["good"]
    assert (root / "good").read_text() == "old\n"


def test_somebody_elses_docker_user_rule_is_refused_and_nothing_changes(run_module, root):
    theirs = "*filter\n:DOCKER-USER - [0:0]\n-A DOCKER-USER -s 10.0.0.0/8 -j ACCEPT\nCOMMIT\n"
    (root / "rules.v4").write_text(theirs)
    ours = imds_rules(4)
    files = [
        {"path": f"{root}/loader", "content": "#!/bin/sh\n", "mode": "0755"},
        {"path": f"{root}/rules.v4", "content": ours, "merge": "rules"},
    ]
    result = run_module(files)
    assert result["failed"]
    assert result["msg"] == (
        f"no file was changed: {root}/rules.v4 line 3: '-A DOCKER-USER -s 10.0.0.0/8 -j ACCEPT' is a rule "
        "in DOCKER-USER, which the ecs_imds_block role owns; move it to a chain of your own (or the source "
        "to the role's allowlist)"
    )
    assert (root / "rules.v4").read_text() == theirs
    assert not (root / "loader").exists()


def test_a_stray_percent_in_validate_is_only_text(run_module, root):
    validate = """sh -c 'test -s "$1"' 100%d %s"""
    files = [{"path": f"{root}/f", "content": "x\n", "mode": "0644", "validate": validate}]
    assert run_module(files)["changed_paths"] == [f"{root}/f"]


def test_a_failure_after_the_first_write_reports_what_changed(run_module, root):
    (root / "locked").mkdir()
    (root / "locked" / "f").write_text("old\n")
    files = [
        {"path": f"{root}/first", "content": "x\n", "mode": "0644"},
        {"path": f"{root}/locked/f", "content": "new\n", "mode": "0644"},
    ]
    subprocess.run(["chattr", "+i", str(root / "locked")], check=True)  # not even root may write there
    try:
        result = run_module(files)
    finally:
        subprocess.run(["chattr", "-i", str(root / "locked")], check=True)
    assert result["failed"]
    assert result["msg"] == f"writing {root}/locked/f failed: Operation not permitted"
    assert (result["changed"], result["changed_paths"]) == (True, [f"{root}/first"])
    assert (root / "locked" / "f").read_text() == "old\n"


def test_a_path_listed_twice_is_refused(run_module, tmp_path, root):
    spec = {"path": f"{root}/twice", "content": "x\n", "mode": "0644"}
    result = run_module([spec, {**spec, "content": "y\n"}])
    assert result["failed"] and result["msg"] == f"files lists a path more than once: {root}/twice"
    assert not (root / "twice").exists()


def test_a_line_appended_while_ecs_config_is_merged_is_never_lost(run_module, root):
    """The validate command runs between the merge's read and its write: here it appends, as user
    data's `echo ... >> /etc/ecs/ecs.config` might at that moment."""
    config = root / "ecs.config"
    config.write_text("ECS_CLUSTER=prod\n")
    appender = f"sh -c 'echo ECS_LOGLEVEL=debug >> {config}' %s"
    files = [
        {
            "path": str(config),
            "merge": "ecs_config",
            "content": "ECS_AWSVPC_BLOCK_IMDS=true\n",
            "validate": appender,
        }
    ]
    result = run_module(files)
    assert result["failed"]
    assert result["msg"] == f"{config} changed while it was merged, and was left as it is now; run again"
    assert config.read_text() == "ECS_CLUSTER=prod\nECS_LOGLEVEL=debug\n"
    files[0].pop("validate")
    assert run_module(files)["changed_paths"] == [str(config)]
    assert config.read_text() == "ECS_CLUSTER=prod\nECS_LOGLEVEL=debug\nECS_AWSVPC_BLOCK_IMDS=true\n"
