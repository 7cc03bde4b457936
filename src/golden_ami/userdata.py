# Copyright: the ecs-imds-golden authors
# Apache License 2.0
"""`golden-ami user-data`: gzipped MIME user data that gives an ECS host off the golden AMI the
IMDS block. cloud-init inflates gzipped user data, and EC2 counts its 16 KB limit on the bytes it
is given, so the whole archive is gzipped: the team's own parts get what the block leaves.

The archive has three parts, in this order:

1. a ``text/cloud-boothook`` that installs the role's host program with its configuration and
   runs its ``install``, as the role does, loads the block, and only then installs the
   persistence package, the one step that needs the network (boothook.py). cloud-init runs
   boothooks early on every boot, before docker.service; it fails closed.
2. the user's own user data (``--existing``), kept byte for byte; a MIME archive is merged
   part by part (mime.py).
3. a ``text/x-shellscript`` that sets ``ECS_CLUSTER`` in ``/etc/ecs/ecs.config`` with the
   program, which sets the block's settings with it. cloud-init runs scripts in the order of
   their names, not of the parts, so a script of the user's may still rewrite the file after
   it: ``ecs.service``'s drop-in sets the block again just before the agent starts.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from ecs_imds_block.filter_plugins.ecs_imds_block import ACTIONS

from golden_ami import boothook, mime
from golden_ami.aws import UsageError
from golden_ami.files import read_at_most
from golden_ami.output import Result

LOG = logging.getLogger("golden_ami")

CLUSTER_NAME = re.compile(r"[A-Za-z0-9_-]{1,255}")
BOOTHOOK_NAME = "ecs-imds-block-boothook.sh"
ECS_CONFIG_NAME = "ecs-imds-block-ecs-config.sh"
EXISTING_NAME = "existing-user-data"


def add_arguments(parser) -> None:
    parser.add_argument("--cluster", required=True, help="the ECS cluster the host joins")
    parser.add_argument(
        "--existing",
        metavar="FILE",
        help="user data the host already has (script, cloud-config, MIME archive; may be gzipped)",
    )
    parser.add_argument("--action", choices=ACTIONS, default="reject", help="reject (default) or drop")
    parser.add_argument("--no-ipv6", dest="ipv6", action="store_false", help="leave IPv6 unmanaged")
    # Named for the role's variables; the short spellings stay.
    for suffix, family in (("", "IPv4"), ("_v6", "IPv6")):
        parser.add_argument(
            f"--allowed-cidr{suffix.replace('_', '-')}",
            f"--allow{suffix.replace('_', '-')}",
            dest=f"allow{suffix}",
            nargs="+",
            action="extend",
            default=[],
            metavar="CIDR",
            help=f"{family} sources that may reach IMDS (ecs_imds_block_allowed_cidrs{suffix})",
        )
    parser.add_argument(
        "--output",
        metavar="FILE",
        help="write the user data here (required with --json, or when stdout is a terminal)",
    )


def run(args, aws) -> Result:
    """Needs no AWS calls: ``aws`` is not used."""
    if args.json and not args.output:
        raise UsageError("user-data --json prints a summary on stdout: pass --output FILE for the user data")
    if not args.output and sys.stdout.isatty():
        raise UsageError(
            "the user data is gzipped (binary): pass --output FILE, or redirect stdout to a file"
        )
    check_cluster(args.cluster)
    existing = None
    if args.existing:  # at most MAX_INFLATED: /dev/zero or a huge file is refused, not read whole
        existing = read_at_most(args.existing, mime.MAX_INFLATED, "--existing")
    data = build_user_data(
        args.cluster, existing, args.action, args.ipv6, args.allow, args.allow_v6, source=args.existing
    )
    summary = {"bytes": len(data), "parts": mime.describe(data)}
    if not args.output:
        return Result(summary, raw=data)
    output = Path(args.output)
    try:  # 0600: existing user data often holds secrets
        if not output.exists():
            output.touch(mode=0o600)
        elif output.is_file():  # made private before it holds the user data
            output.chmod(0o600)
        output.write_bytes(data)
    except OSError as exc:
        raise UsageError(f"cannot write --output {args.output}: {exc.strerror}") from exc
    LOG.info(
        "wrote %d bytes of gzipped user data (%d parts) to %s", len(data), len(summary["parts"]), args.output
    )
    return Result(summary)


def build_user_data(
    cluster: str,
    existing: bytes | None,
    action: str = "reject",
    ipv6: bool = True,
    allow: Sequence[str] = (),
    allow_v6: Sequence[str] = (),
    *,
    source: str | None = None,
) -> bytes:
    """The gzipped MIME archive; UsageError on bad input or when over EC2's 16 KB."""
    check_cluster(cluster)
    config = boothook.config(boothook.settings(action, ipv6, allow, allow_v6))
    source = source or "the existing user data"
    ours = [
        mime.part("text/cloud-boothook", boothook.script(config).encode(), BOOTHOOK_NAME),
        mime.part("text/x-shellscript", boothook.ecs_config_script(cluster).encode(), ECS_CONFIG_NAME),
    ]
    theirs = mime.existing_parts(existing, source, EXISTING_NAME) if existing is not None else []
    for part in theirs:
        if part.get_filename() in (BOOTHOOK_NAME, ECS_CONFIG_NAME):
            raise UsageError(
                f"{source}: a part is named {part.get_filename()!r}, which the generated parts use; rename it"
            )
    data = mime.gzipped(mime.archive([ours[0], *theirs, ours[1]]))
    if len(data) > mime.MAX_BYTES:
        alone = len(mime.gzipped(mime.archive(ours)))
        raise UsageError(
            f"the user data would be {len(data)} bytes gzipped, over EC2's limit of {mime.MAX_BYTES} bytes "
            f"(before base64): the IMDS block takes {alone} of them, so the existing user data may take at "
            f"most {mime.MAX_BYTES - alone} bytes gzipped, and it takes about {len(data) - alone}; shorten "
            "it, or have it fetch the rest (#include a URL)"
        )
    return data


def check_cluster(cluster: str) -> None:
    """ECS's rule: 1 to 255 letters, digits, hyphens and underscores."""
    if not isinstance(cluster, str) or not CLUSTER_NAME.fullmatch(cluster):
        raise UsageError(
            f"invalid ECS cluster name {cluster!r}: use 1 to 255 letters, digits, hyphens and underscores"
        )
