# Copyright: the ecs-imds-golden authors
# Apache License 2.0
"""Reading generated user data back: the gzipped archive, its parts, the boothook and what its
heredocs write. Plain reading of our own output; what cloud-init makes of it is
tests/support/cloud_init.py's."""

from __future__ import annotations

import email
import email.message
import gzip
import importlib.machinery
import importlib.util
import json
import re
import types
from pathlib import Path

import yaml

from golden_ami.userdata import BOOTHOOK_NAME, ECS_CONFIG_NAME

GZIP_MAGIC = b"\x1f\x8b"


def archive(data: bytes) -> bytes:
    """The MIME archive inside generated user data, which is gzipped whole."""
    assert data[:2] == GZIP_MAGIC, "the user data is gzipped whole"
    return gzip.decompress(data)


def leaves(data: bytes) -> list[email.message.Message]:
    """The parts of user data (gzipped or not) or of a MIME archive, in order."""
    text = archive(data) if data[:2] == GZIP_MAGIC else data
    return [leaf for leaf in email.message_from_bytes(text).walk() if not leaf.is_multipart()]


def kinds(data: bytes) -> list[tuple[str, str | None]]:
    """Content type and file name of each part."""
    return [(leaf.get_content_type(), leaf.get_filename()) for leaf in leaves(data)]


def payload(data: bytes, name: str) -> bytes:
    """The decoded payload of the one part named ``name``."""
    [leaf] = [leaf for leaf in leaves(data) if leaf.get_filename() == name]
    return leaf.get_payload(decode=True)


def boothook_script(data: bytes) -> str:
    """The boothook part's text, its `#cloud-boothook` line included."""
    return payload(data, BOOTHOOK_NAME).decode()


def ecs_config_script(data: bytes) -> str:
    """The last part's text: the script that sets the cluster."""
    return payload(data, ECS_CONFIG_NAME).decode()


# `cat >TARGET <<'ECS_IMDS_BLOCK_EOF'` ... `ECS_IMDS_BLOCK_EOF`: quoted, so the shell writes the
# lines between as they are.
HEREDOC = re.compile(r"^cat >(\S+) <<'ECS_IMDS_BLOCK_EOF'\n(.*?)^ECS_IMDS_BLOCK_EOF\n", re.M | re.S)


def heredocs(script: str) -> dict[str, str]:
    """What the boothook writes with its heredocs: target (as the script spells it) -> content."""
    found = dict(HEREDOC.findall(script))
    assert len(found) == script.count("<<'ECS_IMDS_BLOCK_EOF'"), "each heredoc is a `cat >TARGET`"
    return found


RUNCMD_LOG = "/var/lib/team/runcmd.log"


def team_cloud_config() -> bytes:
    """A platform team's own user data, 10 KB of cloud-config: its CloudWatch agent's
    configuration, a health script, a message of the day (write_files); a marker and an
    ecs.config setting appended by runcmd, as AWS's examples append ECS_CLUSTER."""
    collect = []
    files = {
        "/etc/team/health": "#!/bin/sh\n# The team's health check.\nexec curl -fsS http://127.0.0.1:51678/v1/metadata\n",
        "/etc/team/motd": "Payments platform, prod. Ask #payments-oncall before changing this host.\n",
    }
    while True:
        config = json.dumps({"logs": {"logs_collected": {"files": {"collect_list": collect}}}}, indent=2)
        text = yaml.safe_dump(
            {
                "write_files": [
                    {
                        "path": "/etc/team/cloudwatch-agent.json",
                        "permissions": "0644",
                        "content": config + "\n",
                    },
                    {"path": "/etc/team/health", "permissions": "0755", "content": files["/etc/team/health"]},
                    {"path": "/etc/team/motd", "permissions": "0644", "content": files["/etc/team/motd"]},
                ],
                "runcmd": [
                    ["sh", "-c", f"mkdir -p /var/lib/team && echo ran >>{RUNCMD_LOG}"],
                    ["sh", "-c", "echo ECS_ENABLE_TASK_IAM_ROLE=true >>/etc/ecs/ecs.config"],
                ],
            },
            sort_keys=False,
            width=200,
        )
        data = ("#cloud-config\n# The payments team's own user data.\n" + text).encode()
        if len(data) >= 10 * 1024:
            return data
        n = len(collect)
        collect.append(
            {
                "file_path": f"/var/log/payments/{['api', 'worker', 'batch', 'audit'][n % 4]}-{n:03d}.log",
                "log_group_name": f"/payments/prod/{['api', 'worker', 'batch', 'audit'][n % 4]}",
                "log_stream_name": "{instance_id}-" + f"{n:03d}",
                "retention_in_days": [7, 30, 90, 365][n % 4],
            }
        )


def host_program() -> types.ModuleType:
    """The role's host program (roles/ecs_imds_block/files/ecs-imds-block) as a module."""
    path = Path(__file__).resolve().parents[2] / "roles" / "ecs_imds_block" / "files" / "ecs-imds-block"
    loader = importlib.machinery.SourceFileLoader("ecs_imds_block_program_for_user_data", str(path))
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(loader.name, loader))
    loader.exec_module(module)
    return module
