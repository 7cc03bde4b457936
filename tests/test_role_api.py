"""The role's public API: defaults, argument specs and OS data agree with each other."""

from __future__ import annotations

import yaml
from conftest import ROLE, ROOT


def load(path):
    return yaml.safe_load((ROLE / path).read_text())


def test_every_default_is_prefixed_typed_and_matches_its_spec():
    defaults = load("defaults/main.yml")
    options = load("meta/argument_specs.yml")["argument_specs"]["main"]["options"]
    assert set(defaults) == set(options)
    for name, value in defaults.items():
        assert name.startswith("ecs_imds_block_"), name
        assert options[name]["default"] == value, name
        assert options[name]["description"], name


def test_internal_vars_use_the_double_underscore_prefix():
    for path in sorted((ROLE / "vars").glob("*.yml")):
        for name in yaml.safe_load(path.read_text()):
            assert name.startswith("ecs_imds_block__"), f"{path.name}: {name}"


def test_each_supported_platform_has_its_vars_file_with_both_families():
    platforms = load("vars/main.yml")["ecs_imds_block__platforms"]
    assert set(platforms) == {"Amazon-2023", "Amazon-2", "Debian-12", "Debian-13"}
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


def test_key_list_is_a_copy_of_the_shared_reference():
    copy = (ROLE / "files" / "ecs-agent-config-keys.txt").read_text()
    reference = ROOT.parent / "shared" / "reference" / "ecs-agent-config-keys.txt"
    if reference.exists():  # beside the checkout on developer and CI machines, not in a user's clone
        assert copy == reference.read_text()
    assert "ECS_AWSVPC_BLOCK_IMDS" in copy.split()
