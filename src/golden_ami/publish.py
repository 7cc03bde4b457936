# Copyright: the ecs-imds-golden authors
# Apache License 2.0
"""Publish a build's AMIs in SSM once every one of them is available.

Writes {prefix}/{os}/{arch}/{build} (immutable) and moves {prefix}/{os}/{arch}/latest, both
with data type aws:ec2:image so that launch templates can use resolve:ssm:. If any AMI in any
region fails or times out, no latest parameter moves anywhere.
"""

from __future__ import annotations

import concurrent.futures
import time
from collections import defaultdict
from pathlib import Path

import botocore.exceptions

from golden_ami import layout, manifest
from golden_ami.aws import LOG, AwsError, UsageError
from golden_ami.output import Result, table

_TERMINAL = {"failed", "invalid", "deregistered", "error", "disabled", "missing"}


def add_arguments(parser) -> None:
    parser.add_argument("--manifest", type=Path, default=Path("packer/manifest.json"), help="Packer manifest")
    layout.add_prefix_argument(parser)
    parser.add_argument("--dry-run", action="store_true", help="show what would be published, change nothing")
    parser.add_argument(
        "--timeout", type=int, default=3600, help="seconds to wait for the AMIs (default 3600)"
    )
    parser.add_argument("--poll", type=int, default=15, help="seconds between checks (default 15)")


def _states(response: dict, wanted: set[str]) -> dict[str, str]:
    states = {image["ImageId"]: image["State"] for image in response.get("Images", [])}
    return {ami: states.get(ami, "missing") for ami in wanted}


def wait_region(aws, region: str, amis: set[str], timeout: int, poll: int) -> dict[str, str]:
    """Wait with EC2's image_available waiter, one attempt at a time so progress shows."""
    waiter = aws.client("ec2", region).get_waiter("image_available")
    deadline = time.monotonic() + timeout
    while True:
        try:
            waiter.wait(ImageIds=sorted(amis), WaiterConfig={"Delay": poll, "MaxAttempts": 1})
            return dict.fromkeys(amis, "available")
        except botocore.exceptions.WaiterError as exc:
            response = exc.last_response or {}
            code = response.get("Error", {}).get("Code", "")
            if code and not code.startswith("InvalidAMIID"):
                message = response["Error"].get("Message")
                raise AwsError(f"{region}: DescribeImages failed with {code}: {message}") from exc
            states = _states(response, amis)
        if any(state in _TERMINAL for state in states.values()):
            return states
        waiting = sorted(ami for ami, state in states.items() if state != "available")
        if time.monotonic() + poll > deadline:
            return {
                ami: ("timed out, " + state if ami in waiting else state) for ami, state in states.items()
            }
        LOG.info("%s: %d of %d AMIs available, waiting for %s", region, len(amis) - len(waiting), len(amis),
                 " ".join(waiting))  # fmt: skip
        time.sleep(poll)


def run(args, aws) -> Result:
    prefix = layout.check_prefix(args.prefix)
    if not 1 <= args.poll <= 3600:
        raise UsageError(f"--poll {args.poll}: give 1 to 3600 seconds")
    if not 0 <= args.timeout <= 7 * 86400:
        raise UsageError(f"--timeout {args.timeout}: give 0 to 604800 seconds (a week)")
    builds = manifest.read(args.manifest)  # checked against its schema before any AWS call
    local = [build.name for build in builds if build.local]
    if local:
        raise UsageError(
            f"{args.manifest} describes a local `make image` build ({', '.join(local)}), not AMIs: "
            "nothing to publish to AWS. Publish the manifest of `make ami` (packer/manifest.json)."
        )
    entries = []
    for build in builds:
        build_id = layout.build_id(build.build_time)
        latest = layout.parameter(prefix, build.os, build.arch)
        immutable = layout.parameter(prefix, build.os, build.arch, build_id)
        for region, ami in sorted(build.amis.items()):
            entries.append({"region": region, "os": build.os, "arch": build.arch, "ami": ami,
                            "build": build_id, "latest": latest, "immutable": immutable})  # fmt: skip
    if not entries:
        raise UsageError(f"{args.manifest} lists no AMIs")
    rows = [[e["region"], f"{e['os']}/{e['arch']}", e["ami"], e["immutable"]] for e in entries]
    lines = table(rows, ["REGION", "VARIANT", "AMI", "BUILD PARAMETER"])
    if args.dry_run:
        return Result({"dry_run": True, "entries": entries}, ["dry run: would publish", *lines])

    by_region: dict[str, set[str]] = defaultdict(set)
    for entry in entries:
        by_region[entry["region"]].add(entry["ami"])
    LOG.info("waiting for %d AMIs in %d regions", len(entries), len(by_region))
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(8, len(by_region))) as pool:
        futures = {region: pool.submit(wait_region, aws, region, amis, args.timeout, args.poll)
                   for region, amis in by_region.items()}  # fmt: skip
        states = {region: future.result() for region, future in futures.items()}
    problems = [f"{region} {ami}: {state}" for region, amis in sorted(states.items())
                for ami, state in sorted(amis.items()) if state != "available"]  # fmt: skip
    if problems:
        lines = [f"not available: {problem}" for problem in problems]
        lines.append("no latest parameter was moved in any region")
        return Result({"published": False, "problems": problems, "entries": entries}, lines, code=1)

    # Every build entry first, in every region; latest moves only once they all exist.
    for entry in entries:
        description = f"golden ECS AMI {entry['os']}/{entry['arch']}, build {entry['build']}"
        layout.write_build(aws.client("ssm", entry["region"]), entry["immutable"], entry["ami"], description)
    for entry in entries:
        description = f"current golden ECS AMI {entry['os']}/{entry['arch']}: build {entry['build']}"
        layout.move_latest(aws.client("ssm", entry["region"]), entry["latest"], entry["ami"], description)
        LOG.info("%s: %s -> %s", entry["region"], entry["latest"], entry["ami"])
    return Result({"published": True, "entries": entries}, ["published", *lines])
