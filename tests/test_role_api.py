# Copyright: the ecs-imds-golden authors
# Apache License 2.0
"""The role's public API: defaults, argument specs, OS data and tags agree.

meta/argument_specs.yml is the reference for the role's variables: defaults/main.yml holds the
same defaults (the role's README's table is generated from the specs: tests/test_docs.py), the
role reads each of them, and the OS data of each platform renders, through the role's filter, the
host program's configuration for both families.
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import warnings

import jinja2
import jinja2.meta
import pytest
import yaml
from conftest import ROLE
from ecs_imds_block.filter_plugins.ecs_imds_block import ACTIONS, ecs_imds_block_config
from ecs_imds_block.filter_plugins.ecs_imds_block import SETTINGS as FILTER_SETTINGS

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


def test_the_argument_specs_choices_are_the_filters():
    assert options()["ecs_imds_block_action"]["choices"] == list(ACTIONS)


def templated(data) -> set[str]:
    """The variables the Jinja templates of a parsed YAML document read (conditions included:
    Ansible templates them the same way)."""
    if isinstance(data, dict):
        return set().union(set(), *(templated(value) for value in data.values()))
    if isinstance(data, list):
        return set().union(set(), *(templated(value) for value in data))
    if not isinstance(data, str):
        return set()
    with warnings.catch_warnings():  # Jinja's lexer on a regex's \\d in a string literal
        warnings.simplefilter("ignore", DeprecationWarning)
        found = jinja2.meta.find_undeclared_variables(JINJA.parse(data))
        if "{{" not in data and "{%" not in data:  # a `when:` is an expression
            with contextlib.suppress(jinja2.TemplateSyntaxError):
                found |= jinja2.meta.find_undeclared_variables(JINJA.parse(f"{{{{ {data} }}}}"))
    return found


class AnyName(dict):
    """Jinja's filters or tests, where Ansible's are names too: the analysis only needs each
    name to exist, and never calls it."""

    def __contains__(self, name) -> bool:
        return True

    def get(self, name, default=None):
        return super().get(name) or (lambda *args, **kwargs: None)


# Autoescape only changes rendering, and these templates are only parsed.
JINJA = jinja2.Environment(autoescape=True)
JINJA.filters = AnyName(JINJA.filters)
JINJA.tests = AnyName(JINJA.tests)


def test_the_role_reads_every_variable_of_its_api():
    """No variable of the argument specs is dead: vars/main.yml hands each to the filters that
    render the host program's configuration, or a task reads it."""
    read = templated(load("vars/main.yml"))
    for path in sorted(TASKS.glob("*.yml")):
        read |= templated(yaml.safe_load(path.read_text()))
    assert set(options()) <= read, sorted(set(options()) - read)


def test_each_supported_platform_has_its_vars_file_with_both_families():
    """Each platform's OS data renders, through the role's filter, a configuration with both
    families, or IPv4's alone without IPv6; and each family's file and persistence service."""
    platforms = load("vars/main.yml")["ecs_imds_block__platforms"]
    assert set(platforms) == {"Amazon-2023", "Amazon-2", "Debian-12", "Debian-13", "Debian-sid"}
    names = load("vars/main.yml")["ecs_imds_block__names"]
    defaults = load("defaults/main.yml")
    settings = {name.removeprefix("ecs_imds_block_"): value for name, value in defaults.items()}
    settings = {key: settings[key] for key in FILTER_SETTINGS}

    def families(platform, ipv6):
        data = load(f"vars/{platform}.yml")["ecs_imds_block__os"]
        return json.loads(ecs_imds_block_config(data, names, {**settings, "ipv6": ipv6}))["families"]

    for platform in platforms:
        assert [(e["family"], e["block"]) for e in families(platform, True)] == [(4, True), (6, True)], (
            platform
        )
        assert [(e["family"], e["block"]) for e in families(platform, False)] == [(4, True), (6, False)], (
            platform
        )
        assert load(f"vars/{platform}.yml")["ecs_imds_block__os"]["packages"], platform
    assert families("Amazon-2023", True) == [
        {
            "family": 4,
            "path": "/etc/sysconfig/iptables",
            "service": "iptables.service",
            "allowed": [],
            "block": True,
        },
        {
            "family": 6,
            "path": "/etc/sysconfig/ip6tables",
            "service": "ip6tables.service",
            "allowed": [],
            "block": True,
        },
    ]
    debian = families("Debian-12", True)
    assert [entry["path"] for entry in debian] == ["/etc/iptables/rules.v4", "/etc/iptables/rules.v6"]
    assert {entry["service"] for entry in debian} == {"netfilter-persistent.service"}


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


@pytest.mark.parametrize("concern", ["install", "packages", "services"])
def test_a_tag_runs_validation_and_its_concern_only(listed, concern):
    spec = load("meta/argument_specs.yml")["argument_specs"]["main"]["short_description"]
    want = {f"Validating arguments against arg spec 'main' - {spec}"}  # Ansible's own, always
    want |= task_names("validate.yml") | task_names(f"{concern}.yml")
    assert listed(f"ecs_imds_block_{concern}") == want
