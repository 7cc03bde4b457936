# Copyright: the ecs-imds-golden authors
# Apache License 2.0
"""The role's public API: defaults, argument specs, OS data and tags agree.

meta/argument_specs.yml is the reference for the role's variables: defaults/main.yml holds the
same defaults (the role's README's table is generated from the specs: tests/test_docs.py).
"""

from __future__ import annotations

import json
import re
import subprocess

import pytest
import yaml
from conftest import ROLE
from imds_layout import imds_layout

TASKS = ROLE / "tasks"
PLATFORM = "platform.yml"
TAG = re.compile(r"ecs_imds_block_[a-z0-9_]+")


def load(path):
    return yaml.safe_load((ROLE / path).read_text())


def options() -> dict:
    return load("meta/argument_specs.yml")["argument_specs"]["main"]["options"]


def test_every_default_is_prefixed_typed_and_matches_its_spec():
    defaults = load("defaults/main.yml")
    assert set(defaults) == set(options())
    for name, value in defaults.items():
        assert name.startswith("ecs_imds_block_"), name
        assert options()[name]["default"] == value, name
        assert options()[name]["description"], name


def test_internal_vars_use_the_double_underscore_prefix():
    for path in sorted((ROLE / "vars").glob("*.yml")):
        for name in yaml.safe_load(path.read_text()):
            assert name.startswith("ecs_imds_block__"), f"{path.name}: {name}"


def test_each_supported_platform_has_its_vars_file_with_both_families():
    platforms = load("vars/main.yml")["ecs_imds_block__platforms"]
    assert set(platforms) == {"Amazon-2023", "Amazon-2", "Debian-12", "Debian-13", "Debian-sid"}
    names = load("vars/main.yml")["ecs_imds_block__names"]
    for platform in platforms:
        data = load(f"vars/{platform}.yml")["ecs_imds_block__os"]
        assert [entry["family"] for entry in imds_layout(data, names, True)["families"]] == [4, 6], platform
        assert [entry["family"] for entry in imds_layout(data, names, False)["families"]] == [4], platform
        assert data["packages"], platform
    amazon = imds_layout(load("vars/Amazon-2023.yml")["ecs_imds_block__os"], names, True)
    assert amazon["families"][0] == {
        "family": 4,
        "path": "/etc/sysconfig/iptables",
        "service": "iptables.service",
        "restore": "iptables-restore",
        "imds": "169.254.169.254",
    }
    debian = imds_layout(load("vars/Debian-12.yml")["ecs_imds_block__os"], names, True)
    assert debian["families"][1]["path"] == "/etc/iptables/rules.v6"
    assert debian["services"] == ["netfilter-persistent.service"]


def test_the_agent_key_list_is_one_sorted_key_a_line_and_holds_the_keys_we_document():
    """files/ecs-agent-config-keys.txt is the list the role checks ecs_imds_block_ecs_settings
    against, and the source of truth for it."""
    text = (ROLE / "files" / "ecs-agent-config-keys.txt").read_text()
    keys = text.splitlines()
    assert text.endswith("\n") and all(re.fullmatch(r"[A-Z][A-Z0-9_]*", key) for key in keys), keys
    assert keys == sorted(set(keys)), "sorted, each key once"
    # What the role and the user data write, and what the README tells teams to set.
    assert {"ECS_AWSVPC_BLOCK_IMDS", "ECS_CLUSTER", "ECS_DISABLE_PRIVILEGED"} <= set(keys)


# --- tags: one a concern, so a run can be limited to it ---------------------------------------


def imports() -> list[dict]:
    return yaml.safe_load((TASKS / "main.yml").read_text())


def test_main_imports_every_task_file_each_with_its_own_tag():
    tasks = imports()
    assert all(set(task) == {"name", "ansible.builtin.import_tasks", "tags"} for task in tasks), tasks
    imported = [task["ansible.builtin.import_tasks"] for task in tasks]
    # platform.yml, the OS data, is validate.yml's (and verify's, which includes it alone).
    assert sorted(imported) == sorted(
        p.name for p in TASKS.glob("*.yml") if p.name not in ("main.yml", PLATFORM)
    )
    assert {"name": "Load the data for this OS", "ansible.builtin.import_tasks": PLATFORM} in yaml.safe_load(
        (TASKS / "validate.yml").read_text()
    )
    for task in tasks:
        concern = "ecs_imds_block_" + task["ansible.builtin.import_tasks"].removesuffix(".yml")
        assert concern in task["tags"], f"{task['name']}: no tag {concern}"
        assert all(TAG.fullmatch(tag) or tag == "always" for tag in task["tags"]), task["tags"]
    validate = next(t for t in tasks if t["ansible.builtin.import_tasks"] == "validate.yml")
    assert "always" in validate["tags"], "every concern needs validate's checks and OS data"


@pytest.fixture(scope="module")
def listed(ansible_playbook, tmp_path_factory):
    """tag -> the names of the tasks `ansible-playbook --list-tasks --tags TAG` lists."""
    play = tmp_path_factory.mktemp("tags") / "play.yml"
    play.write_text(json.dumps([{"hosts": "localhost", "gather_facts": False, "roles": ["ecs_imds_block"]}]))
    env = {"ANSIBLE_ROLES_PATH": str(ROLE.parent), "ANSIBLE_NOCOLOR": "1", "PATH": "/usr/bin:/bin"}

    def run(tag: str) -> set[str]:
        result = subprocess.run(
            [ansible_playbook, "-i", "localhost,", "--list-tasks", "--tags", tag, str(play)],
            capture_output=True,
            text=True,
            env=env,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        return set(re.findall(r"^\s+ecs_imds_block : (.+?)\s+TAGS:", result.stdout, re.M))

    return run


def task_names(path: str) -> set[str]:
    """The names --list-tasks shows for a task file: an import's own tasks, not the import."""
    names = set()
    for task in yaml.safe_load((TASKS / path).read_text()):
        imported = task.get("ansible.builtin.import_tasks")
        names |= task_names(imported) if imported else {task["name"]}
    return names


@pytest.mark.parametrize("concern", ["ecs_config", "files", "packages", "services"])
def test_a_tag_runs_validation_and_its_concern_only(listed, concern):
    spec = load("meta/argument_specs.yml")["argument_specs"]["main"]["short_description"]
    want = {f"Validating arguments against arg spec 'main' - {spec}"}  # Ansible's own, always
    want |= task_names("validate.yml") | task_names(f"{concern}.yml")
    if concern in ("ecs_config", "files"):  # ecs.config is written in files.yml's module run
        want |= task_names("ecs_config.yml") | task_names("files.yml")
    assert listed(f"ecs_imds_block_{concern}") == want
