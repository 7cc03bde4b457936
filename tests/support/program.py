# Copyright: the ecs-imds-golden authors
# Apache License 2.0
"""The host program (roles/ecs_imds_block/files/ecs-imds-block) for the tests: imported as a
module, and its configuration rendered by the role's own filter, as a host gets both."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
from pathlib import Path
from types import ModuleType

import yaml

ROLE = Path(__file__).resolve().parents[2] / "roles" / "ecs_imds_block"
PROGRAM = ROLE / "files" / "ecs-imds-block"
SERVICE = "netfilter-persistent.service"

# The role's defaults (defaults/main.yml), in the filter's names.
DEFAULTS = {
    "bridge": True,
    "awsvpc": True,
    "ipv6": True,
    "attribute": True,
    "heal": True,
    "heal_interval": 3,
    "heal_backstop": 60,
    "action": "reject",
    "ecs_config_path": "/etc/ecs/ecs.config",
    "ecs_settings": {},
    "allowed_cidrs": [],
    "allowed_cidrs_v6": [],
}


def load() -> ModuleType:
    """The program as a module (its file has no .py ending, so the loader is named)."""
    loader = importlib.machinery.SourceFileLoader("ecs_imds_block_host_program", str(PROGRAM))
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(loader.name, loader))
    loader.exec_module(module)
    return module


def names() -> dict:
    """The role's names (vars/main.yml's ecs_imds_block__names)."""
    return yaml.safe_load((ROLE / "vars" / "main.yml").read_text())["ecs_imds_block__names"]


def config_text(folder: Path, **settings) -> str:
    """The configuration the role's filter ecs_imds_block_config renders for ``settings`` (the
    role's defaults otherwise), with the rules files at ``folder``/rules.v4 and rules.v6 and
    ecs.config at ``folder``/ecs.config unless ``settings`` names another."""
    from ecs_imds_block.filter_plugins.ecs_imds_block import ecs_imds_block_config

    os_data = {
        "persistence": [
            {"family": family, "path": str(folder / f"rules.v{family}"), "service": SERVICE}
            for family in (4, 6)
        ]
    }
    wanted = {**DEFAULTS, "ecs_config_path": str(folder / "ecs.config"), **settings}
    return ecs_imds_block_config(os_data, names(), wanted)


def render(folder: Path, **settings) -> Path:
    """:func:`config_text` written to ``folder``/config.json; its path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.json"
    path.write_text(config_text(folder, **settings))
    return path


def config(path: Path) -> dict:
    """A rendered configuration as the program holds it after reading it (``raw`` included)."""
    raw = path.read_text()
    return {**json.loads(raw), "raw": raw}
