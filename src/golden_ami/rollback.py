# Copyright: the ecs-imds-golden authors
# Apache License 2.0
"""Move latest back to an earlier build (the previous one by default), in every region or none.

Reads the immutable {prefix}/{os}/{arch}/{build} entries that publish wrote, checks that the
target build's AMI still exists and is available in every region, and only then moves
{prefix}/{os}/{arch}/latest to it.
"""

from __future__ import annotations

from golden_ami import layout
from golden_ami.aws import LOG, NotFoundError, UsageError
from golden_ami.output import Result, table


def add_arguments(parser) -> None:
    layout.add_variant_arguments(parser)
    parser.add_argument(
        "--to", default="previous", help="a build ID, or `previous` (default): the build before latest"
    )
    parser.add_argument(
        "--regions", nargs="+", metavar="REGION", help="regions to roll back (default: --region)"
    )
    parser.add_argument("--dry-run", action="store_true", help="show the move, change nothing")
    layout.add_prefix_argument(parser)


def target(region: str, history: dict[str, str], current: str | None, wanted: str) -> str:
    """The build to roll back to in ``region``."""
    if wanted != "previous":
        if wanted not in history:
            raise NotFoundError(
                f"{region}: no build {wanted!r}; known builds: {', '.join(sorted(history)) or 'none'}"
            )
        return wanted
    ordered = sorted(history)
    at = [build for build in ordered if history[build] == current]
    if not at:
        raise NotFoundError(
            f"{region}: latest ({current}) is not one of the published builds; pass --to BUILD"
        )
    index = ordered.index(at[-1])
    if index == 0:
        raise NotFoundError(f"{region}: latest is already the oldest published build ({at[-1]})")
    return ordered[index - 1]


def run(args, aws) -> Result:
    if args.to != "previous" and not layout.BUILD_ID.match(args.to):
        raise UsageError(f"--to {args.to!r} is not a build ID like 20261128T223721Z, nor `previous`")
    prefix = layout.check_prefix(args.prefix)
    base = layout.variant(prefix, args.os, args.arch)
    latest = layout.parameter(prefix, args.os, args.arch)
    moves = []
    for region in args.regions or [aws.region]:
        ssm = aws.client("ssm", region)
        history = layout.builds(ssm, base)
        try:
            current = ssm.get_parameter(Name=latest)["Parameter"]["Value"]
        except ssm.exceptions.ParameterNotFound:
            current = None
        build = target(region, history, current, args.to)
        ami = history[build]
        images = aws.client("ec2", region).describe_images(
            Filters=[{"Name": "image-id", "Values": [ami]}]
        )["Images"]  # fmt: skip
        if not images or images[0]["State"] != "available":
            state = images[0]["State"] if images else "deregistered"
            raise NotFoundError(f"{region}: build {build} is {ami}, which is {state}: cannot roll back to it")
        moves.append({"region": region, "parameter": latest, "from": current, "to": ami, "build": build})

    lines = table([[m["region"], m["from"] or "-", m["to"], m["build"]] for m in moves],
                  ["REGION", "FROM", "TO", "BUILD"])  # fmt: skip
    if args.dry_run:
        return Result({"dry_run": True, "moves": moves}, ["dry run: would move latest", *lines])
    for move in moves:  # every region was checked before any moves
        description = f"current golden ECS AMI {args.os}/{args.arch}: build {move['build']} (rollback)"
        layout.move_latest(aws.client("ssm", move["region"]), latest, move["to"], description)
        LOG.info("%s: %s -> %s (build %s)", move["region"], latest, move["to"], move["build"])
    return Result({"dry_run": False, "moves": moves}, ["rolled back", *lines])
