# Copyright: the ecs-imds-golden authors
# Apache License 2.0
"""The files the ecs_imds_block role writes, as its own tasks render them, without a host."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROLE = Path(__file__).resolve().parents[2] / "roles" / "ecs_imds_block"


def rendered_files(ansible_playbook: str, out: Path) -> dict[bool, dict[str, tuple[str, str]]]:
    """path -> (mode, content) of every file the role writes on Amazon Linux 2023, for IPv6 on
    and off, as the role's own tasks render them: validate.yml, then files.yml in check mode,
    which writes nothing here and ends the play before the reload handler."""
    # Amazon Linux 2023's facts, in place of gathering this machine's.
    facts = {"distribution": "Amazon", "distribution_major_version": "2023", "distribution_version": "2023"}
    tasks = [{"ansible.builtin.set_fact": {**facts, "cacheable": True}}]
    for ipv6 in (True, False):
        tasks += [
            {
                "ansible.builtin.include_role": {"name": "ecs_imds_block", "tasks_from": step},
                "vars": {"ecs_imds_block_ipv6": ipv6},
            }
            for step in ("validate.yml", "ecs_config.yml", "files.yml")
        ]
        tasks.append(
            {
                "ansible.builtin.copy": {
                    "content": "{{ ecs_imds_block__files | to_json }}",
                    "dest": f"{out}/{ipv6}.json",
                },
                "check_mode": False,
            }
        )
    tasks.append({"ansible.builtin.meta": "end_play"})
    play = {"hosts": "localhost", "connection": "local", "gather_facts": False, "tasks": tasks}
    (out / "play.yml").write_text(json.dumps([play]))
    env = {
        **os.environ,
        "ANSIBLE_LOCAL_TEMP": str(out / "tmp"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_ROLES_PATH": str(ROLE.parent),
    }
    result = subprocess.run(
        [
            ansible_playbook,
            "-i",
            "localhost,",
            "--check",
            "-e",
            f"ansible_python_interpreter={sys.executable}",
            out / "play.yml",
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    assert result.returncode == 0, f"ansible-playbook failed:\n{result.stdout}\n{result.stderr}"
    rendered = {ipv6: json.loads((out / f"{ipv6}.json").read_text()) for ipv6 in (True, False)}
    # ecs.config is the user data's last part's, and ecs.service's drop-in's, not the boothook's.
    for specs in rendered.values():
        (ecs_config,) = [spec for spec in specs if spec["path"] == "/etc/ecs/ecs.config"]
        assert ecs_config["merge"] == "ecs_config" and "owner" not in ecs_config
        specs.remove(ecs_config)
    assert all(spec["owner"] == spec["group"] == "root" for specs in rendered.values() for spec in specs)
    return {
        ipv6: {
            spec["path"]: ("merge" if spec.get("merge") else spec["mode"], spec["content"]) for spec in specs
        }
        for ipv6, specs in rendered.items()
    }
