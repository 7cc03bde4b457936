# Copyright: the ecs-imds-golden authors
# Apache License 2.0
"""The user data's own parts: the boothook, which carries the role's host program and its
configuration for Amazon Linux 2023 / 2, and the script that sets the cluster in ecs.config.

It only packs. The program, its configuration and every check of the input come from the role,
which ships with this package as ``ecs_imds_block``: the program from its ``files/`` (packed by
its ``ecs_imds_block_program`` filter, as the role packs it), the configuration from its
``ecs_imds_block_config`` filter over its ``vars/`` and ``defaults/``. The role's own `install`
then does on the host what it does there. Only the package step is the boothook's own: it
needs the network, which a boothook may not have.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import yaml
from ecs_imds_block.filter_plugins import ecs_imds_block as filters

from golden_ami.aws import UsageError

ROLE = Path(filters.__file__).resolve().parents[1]
PLATFORM = "Amazon-2023"  # Amazon-2 differs in the nftables package only: without nft, no table
HEREDOC = "ECS_IMDS_BLOCK_EOF"
INSTALL_LOG = "/var/log/ecs-imds-block-install.log"


def _vars(name: str) -> dict:
    return yaml.safe_load((ROLE / name).read_text())


def names() -> dict:
    """The role's own names (vars/main.yml): the program, the units, the IMDS addresses."""
    return _vars("vars/main.yml")["ecs_imds_block__names"]


def settings(action: str = "reject", ipv6: bool = True, allow=(), allow_v6=()) -> dict:
    """The role's variables as the user data sets them: its defaults, bridge and awsvpc blocked,
    the attribute on, and the options of `golden-ami user-data`."""
    defaults = _vars("defaults/main.yml")
    return {
        "bridge": True, "awsvpc": True, "attribute": True, "ipv6": ipv6, "action": action,
        "heal": defaults["ecs_imds_block_heal"], "heal_interval": defaults["ecs_imds_block_heal_interval"],
        "heal_backstop": defaults["ecs_imds_block_heal_backstop"],
        "ecs_config_path": defaults["ecs_imds_block_ecs_config_path"], "ecs_settings": {},
        "allowed_cidrs": list(allow), "allowed_cidrs_v6": list(allow_v6),
    }  # fmt: skip


def config(settings: dict, platform: str = PLATFORM) -> str:
    """The host program's configuration, from the role's own filter, which checks the input."""
    try:
        if not settings["ipv6"] and settings["allowed_cidrs_v6"]:
            filters.normalize_cidrs(settings["allowed_cidrs_v6"], 6)
            raise UsageError("--allowed-cidr-v6 has no effect with --no-ipv6: drop one of them")
        return filters.ecs_imds_block_config(
            _vars(f"vars/{platform}.yml")["ecs_imds_block__os"], names(), settings
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from exc


def program() -> str:
    """The host program as the role installs it."""
    return filters.ecs_imds_block_program((ROLE / "files" / "ecs-imds-block").read_text())


def _heredoc(path: str, content: str) -> str:
    if HEREDOC in content.splitlines():
        raise UsageError(f"cannot embed {path}: it holds the heredoc delimiter {HEREDOC}")
    return f"cat >{path} <<'{HEREDOC}'\n{content}{HEREDOC}\n"


def script(config_text: str) -> str:
    """The boothook: the program's `install` first, which needs no network and loads the block;
    then the persistence package, the one step that does. cloud-init runs boothooks at every
    boot, before docker.service, and only logs their failures: each step leaves the same result
    when run again, and a failed package step leaves the block loaded (docker.service's drop-in
    loads it again at every start).

    It fails closed. If install refuses (it changes nothing then: a rules file the kernel
    refuses, an ecs.config that ecs-init and systemd would read differently), Docker gets a
    drop-in, at the path of the one install writes, that keeps it from starting and says why:
    no container runs unprotected. The next boot's install, once the file is fixed, replaces it."""
    os_data = _vars(f"vars/{PLATFORM}.yml")["ecs_imds_block__os"]
    packages = " ".join(shlex.quote(name) for name in os_data["packages"])
    config = json.loads(config_text)
    services = " ".join(dict.fromkeys(shlex.quote(e["service"]) for e in config["families"] if e["block"]))
    units = config["units"]
    dropin = shlex.quote(f"/etc/systemd/system/{units['docker']}.d/{units['dropin']}")
    closed = (
        "[Service]\nExecStartPre=/bin/sh -c 'echo ecs-imds-block: the boothook could not install the IMDS"
        " block, see /var/log/cloud-init-output.log >&2; exit 1'\n"
    )
    return (
        "#cloud-boothook\n#!/bin/sh\n"
        "# golden-ami user-data: the ecs_imds_block role's IMDS block, for an ECS host that is not on\n"
        "# the golden AMI. The host program's install loads the block before the package step.\n"
        "set -u\numask 077\n"
        'fail() { echo "ecs-imds-block boothook: $*" >&2; exit 1; }\n'
        "dir=$(mktemp -d) || fail 'cannot make a temporary folder'\n"
        + _heredoc('"$dir/program"', program())
        + _heredoc('"$dir/config.json"', config_text)
        + 'if ! sh "$dir/program" --config "$dir/config.json" install; then\n'
        f"    mkdir -p \"$(dirname {dropin})\" && printf '%s' {shlex.quote(closed)} >{dropin}\n"
        "    systemctl daemon-reload\n"
        "    fail 'install failed (see above); docker.service will not start'\n"
        "fi\n"
        'rm -rf "$dir"\n'
        f'missing=$(for name in {packages}; do {os_data["package_installed"]} || echo "$name"; done)\n'
        "missing=$(echo $missing)  # on one line, for the log and the message\n"
        'if [ -n "$missing" ]; then\n'
        "    install='yum install -y'\n"
        "    if command -v dnf >/dev/null 2>&1; then install='dnf install -y'; fi\n"
        f"    $install $missing >{INSTALL_LOG} 2>&1 ||\n"
        f'        fail "$install $missing failed (see {INSTALL_LOG}); the block is loaded,'
        ' and docker.service loads it at every start"\n'
        "fi\n"
        f"systemctl enable {services} || fail 'cannot enable {services}'\n"
    )


def ecs_config_script(cluster: str) -> str:
    """Sets the cluster in ecs.config, and with it the block's settings, merged by the program."""
    return (
        "#!/bin/sh\n"
        "# golden-ami user-data: join the cluster. ecs.service's drop-in sets the IMDS block's\n"
        "# settings again just before the agent starts, whatever a later script writes.\n"
        f"exec {names()['program']} ecs-config ECS_CLUSTER={cluster}\n"
    )
