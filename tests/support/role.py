# Copyright: the ecs-imds-golden authors
# Apache License 2.0
"""What the ecs_imds_block role hands its module, as its own tasks render it, without a host.

The role's whole host side is one module run (tasks/install.yml: ecs_imds_block_install), whose
arguments are the host program as hosts get it and its configuration. Here the role's own
validate.yml and install.yml run on the controller with a host's facts made up, in a copy of the
role whose every file is the real one (linked) but for the module: a stand-in with the same
arguments, which changes nothing and returns what it was handed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROLE = Path(__file__).resolve().parents[2] / "roles" / "ecs_imds_block"
MODULE = "ecs_imds_block_install"
# Amazon Linux 2023's facts, in place of gathering this machine's: the platform the user data
# is for (golden_ami.boothook.PLATFORM).
AMAZON_LINUX_2023 = {
    "distribution": "Amazon",
    "distribution_major_version": "2023",
    "distribution_version": "2023",
}

# The stand-in module: the real one's code, its arguments checked as the real one checks them,
# with a main that hands back what it was given instead of installing anything.
REAL, MAIN = (ROLE / "library" / f"{MODULE}.py").read_text(), 'if __name__ == "__main__":\n'
assert MAIN in REAL, f"{MODULE}.py has no {MAIN!r}"
STAND_IN = REAL.split(MAIN)[0] + (
    "module = new_module()\nmodule.exit_json(changed=False, handed=module.params)\n"
)


def role_with_a_stand_in_module(work: Path) -> Path:
    """A roles folder whose ecs_imds_block is the real role's files, linked, but for its module."""
    copy = work / "roles" / ROLE.name
    copy.mkdir(parents=True)
    for entry in ROLE.iterdir():
        if entry.name != "library":
            (copy / entry.name).symlink_to(entry)
    (copy / "library").mkdir()
    (copy / "library" / f"{MODULE}.py").write_text(STAND_IN)
    return copy.parent


def handed(
    ansible_playbook: str, work: Path, cases: dict[str, dict], facts: dict = AMAZON_LINUX_2023
) -> dict[str, dict]:
    """case -> the arguments (program, config, load) the role's install.yml hands its module, for
    each case's role variables, after its validate.yml, on a host with ``facts``. One
    ansible-playbook run: each case is an inventory host with the case's variables."""
    roles = role_with_a_stand_in_module(work)
    out = work / "handed"
    out.mkdir()
    tasks = [
        {"name": "Stand in for the host's facts", "ansible.builtin.set_fact": {**facts, "cacheable": True}},
        *(
            {"ansible.builtin.include_role": {"name": ROLE.name, "tasks_from": step}}
            for step in ("validate.yml", "install.yml")
        ),
        {
            "name": "Hand back what the module was handed",
            "ansible.builtin.copy": {
                "content": "{{ ecs_imds_block__installed.handed | to_json }}",
                "dest": f"{out}/{{{{ inventory_hostname }}}}.json",
                "mode": "0600",
            },
        },
    ]
    play = {"hosts": "all", "connection": "local", "gather_facts": False, "tasks": tasks}
    (work / "play.yml").write_text(json.dumps([play]))
    inventory = {"all": {"vars": {"ansible_python_interpreter": sys.executable}, "hosts": cases}}
    (work / "cases.yml").write_text(json.dumps(inventory))
    env = {
        **os.environ,
        "ANSIBLE_LOCAL_TEMP": str(work / "tmp"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_ROLES_PATH": str(roles),
    }
    result = subprocess.run(
        [ansible_playbook, "-i", str(work / "cases.yml"), str(work / "play.yml")],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert result.returncode == 0, (
        f"ansible-playbook failed:\n{result.stdout[-5000:]}\n{result.stderr[-3000:]}"
    )
    return {case: json.loads((out / f"{case}.json").read_text()) for case in cases}
