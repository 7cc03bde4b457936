# Copyright: the ecs-imds-golden authors
# Apache License 2.0
"""The role's public API: defaults, argument specs, the README's table, OS data and tags agree.

meta/argument_specs.yml is the reference for the role's variables: defaults/main.yml holds the
same defaults, and the README's variable table the same names and defaults, in its order.
"""

from __future__ import annotations

import json
import re
import subprocess

import pytest
import yaml
from conftest import ROLE, ROOT

TASKS = ROLE / "tasks"
TAG = re.compile(r"ecs_imds_block_[a-z0-9_]+")


def load(path):
    return yaml.safe_load((ROLE / path).read_text())


def options() -> dict:
    return load("meta/argument_specs.yml")["argument_specs"]["main"]["options"]


def readme_variables() -> list[tuple[str, str]]:
    """(variable, default) of each row of the README's table of the role's variables."""
    section = (ROOT / "README.md").read_text().split("## The role: `roles/ecs_imds_block`", 1)[1]
    rows = re.findall(r"^\| `(ecs_imds_block_\w+)` \| `([^`]*)` \|", section.split("\n## ", 1)[0], re.M)
    assert rows, "the README's role section has no variable table"
    return rows


def as_written(value) -> str:
    """A default as YAML and the README spell it."""
    return json.dumps(value) if isinstance(value, bool | list | dict) else str(value)


def test_every_default_is_prefixed_typed_and_matches_its_spec():
    defaults = load("defaults/main.yml")
    assert set(defaults) == set(options())
    for name, value in defaults.items():
        assert name.startswith("ecs_imds_block_"), name
        assert options()[name]["default"] == value, name
        assert options()[name]["description"], name


def test_the_readme_table_lists_every_variable_with_its_default_in_the_specs_order():
    expected = [(name, as_written(spec["default"])) for name, spec in options().items()]
    assert readme_variables() == expected


def test_internal_vars_use_the_double_underscore_prefix():
    for path in sorted((ROLE / "vars").glob("*.yml")):
        for name in yaml.safe_load(path.read_text()):
            assert name.startswith("ecs_imds_block__"), f"{path.name}: {name}"


def test_each_supported_platform_has_its_vars_file_with_both_families():
    platforms = load("vars/main.yml")["ecs_imds_block__platforms"]
    assert set(platforms) == {"Amazon-2023", "Amazon-2", "Debian-12", "Debian-13", "Debian-sid"}
    for platform in platforms:
        data = load(f"vars/{platform}.yml")
        assert [p["family"] for p in data["ecs_imds_block__persistence"]] == [4, 6]
        assert data["ecs_imds_block__packages"]
    assert load("vars/Amazon-2023.yml")["ecs_imds_block__persistence"][0] == {
        "family": 4,
        "path": "/etc/sysconfig/iptables",
        "service": "iptables.service",
    }
    assert load("vars/Debian-12.yml")["ecs_imds_block__persistence"][1]["path"] == "/etc/iptables/rules.v6"


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
    assert sorted(imported) == sorted(p.name for p in TASKS.glob("*.yml") if p.name != "main.yml")
    for task in tasks:
        concern = "ecs_imds_block_" + task["ansible.builtin.import_tasks"].removesuffix(".yml")
        assert concern in task["tags"], f"{task['name']}: no tag {concern}"
        assert all(TAG.fullmatch(tag) or tag == "always" for tag in task["tags"]), task["tags"]
    validate = next(t for t in tasks if t["ansible.builtin.import_tasks"] == "validate.yml")
    assert "always" in validate["tags"], "every concern needs validate's checks and OS data"


def test_the_readme_names_every_tag():
    tags = {tag for task in imports() for tag in task["tags"] if tag != "always"}
    readme = (ROOT / "README.md").read_text()
    assert {tag for tag in tags if f"`{tag}`" not in readme} == set()


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
    return {task["name"] for task in yaml.safe_load((TASKS / path).read_text())}


@pytest.mark.parametrize("concern", ["ecs_config", "files", "packages", "services"])
def test_a_tag_runs_validation_and_its_concern_only(listed, concern):
    spec = load("meta/argument_specs.yml")["argument_specs"]["main"]["short_description"]
    want = {f"Validating arguments against arg spec 'main' - {spec}"}  # Ansible's own, always
    want |= task_names("validate.yml") | task_names(f"{concern}.yml")
    if concern in ("ecs_config", "files"):  # ecs.config is written in files.yml's module run
        want |= task_names("ecs_config.yml") | task_names("files.yml")
    assert listed(f"ecs_imds_block_{concern}") == want
