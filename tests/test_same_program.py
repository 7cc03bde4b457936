# Copyright: the ecs-imds-golden authors
# Apache License 2.0
"""Issue 28's first acceptance point: the role and `golden-ami user-data`, given the same settings
for the same platform, install the same program file and the same configuration, byte for byte.

The role's side is what its own tasks hand its module (tasks/validate.yml, then install.yml, run by
Ansible on the controller with Amazon Linux 2023's facts; support/role.py). The user data's side
is what its boothook writes: the archive gunzipped and its boothook part read as cloud-init reads
a MIME archive, then run by sh as cloud-init runs it, with a stand-in for the `sh` that would run
the program's install: it keeps the two files the heredocs wrote, and stops the boothook there.
"""

from __future__ import annotations

import email
import gzip
import itertools
import subprocess
from pathlib import Path

import pytest
from support.role import handed

from golden_ami.userdata import BOOTHOOK_NAME, build_user_data

ALLOW = {4: ["172.31.250.0/24"], 6: ["fd00:1::/64"]}
# Each case: the action, the allowlists on or off, IPv6 on or off. With IPv6 off the user data
# refuses an IPv6 allowlist, so there the allowlists are IPv4's alone.
CASES = {
    f"{action}-allow-{allow}-ipv6-{ipv6}": (action, allow, ipv6)
    for action, allow, ipv6 in itertools.product(("reject", "drop"), ("on", "off"), ("on", "off"))
}


def settings(case: str) -> dict:
    """The case's settings as user-data's arguments (action, ipv6, allow, allow_v6)."""
    action, allow, ipv6 = CASES[case]
    return {
        "action": action,
        "ipv6": ipv6 == "on",
        "allow": ALLOW[4] if allow == "on" else [],
        "allow_v6": ALLOW[6] if allow == "on" and ipv6 == "on" else [],
    }


def role_vars(case: str) -> dict:
    """The same settings as the role's variables."""
    given = settings(case)
    return {
        "ecs_imds_block_action": given["action"],
        "ecs_imds_block_ipv6": given["ipv6"],
        "ecs_imds_block_allowed_cidrs": given["allow"],
        "ecs_imds_block_allowed_cidrs_v6": given["allow_v6"],
    }


def boothook(data: bytes) -> str:
    """The boothook part of gzipped user data, as cloud-init finds it: the archive inflated, the
    part named ours decoded."""
    archive = email.message_from_bytes(gzip.decompress(data))
    (part,) = [leaf for leaf in archive.walk() if leaf.get_filename() == BOOTHOOK_NAME]
    assert part.get_content_type() == "text/cloud-boothook"
    return part.get_payload(decode=True).decode()


def written_by_the_boothook(case: str, work: Path) -> dict[str, str]:
    """program and config.json as the boothook of the case's user data writes them: its lines up to
    the install, run by a real shell with its temporary folder at ``work`` (the install itself, and
    the package step after it, would change this machine)."""
    script = boothook(build_user_data("prod", None, **settings(case)))
    work.mkdir(parents=True)
    head = script[: script.index('if ! sh "$dir/program" --config "$dir/config.json" install;')]
    subprocess.run(["/bin/sh", "-c", head.replace("dir=$(mktemp -d)", f"dir={work}")], check=True, timeout=60)
    return {"program": (work / "program").read_text(), "config": (work / "config.json").read_text()}


@pytest.fixture(scope="module")
def both(ansible_playbook, tmp_path_factory) -> dict[str, tuple[dict, dict]]:
    """case -> (what the role hands its module, what the user data's boothook writes)."""
    role = handed(
        ansible_playbook, tmp_path_factory.mktemp("role"), {case: role_vars(case) for case in CASES}
    )
    work = tmp_path_factory.mktemp("user-data")
    return {case: (role[case], written_by_the_boothook(case, work / case)) for case in CASES}


@pytest.mark.parametrize("case", CASES)
def test_the_role_and_the_user_data_install_the_same_program_and_configuration(both, case):
    role, user_data = both[case]
    assert role["program"] == user_data["program"], "the program files differ"
    assert role["config"] == user_data["config"], "the configurations differ"
    assert role["program"].startswith("#!/bin/sh\n")


def test_the_comparison_can_fail_each_setting_changes_the_configuration(both):
    """Eight settings, eight configurations: had either side ignored a setting (the action, the
    allowlists, IPv6), two cases would share a configuration, and one of the comparisons above
    would fail. The program is the same for every setting."""
    configs = {case: role["config"] for case, (role, _) in both.items()}
    assert len(set(configs.values())) == len(CASES), configs
    assert len({role["program"] for role, _ in both.values()}) == 1
    # Given different settings, the two sides differ: the role's drop is not the user data's reject.
    role_drop, _ = both["drop-allow-off-ipv6-on"]
    _, user_data_reject = both["reject-allow-off-ipv6-on"]
    assert role_drop["config"] != user_data_reject["config"]
