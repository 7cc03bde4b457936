"""Deregister old golden AMIs and delete their snapshots; a dry run unless --apply.

Per region, and per OS and architecture, it keeps the newest N AMIs this project built (tag
Project=ecs-imds-golden) and never touches one that is:
  - published: named by a `latest` parameter, or by any other parameter under the prefix
    (a team's pin); the build-history entries {prefix}/{os}/{arch}/{build} are not
    publications, and are deleted with their AMI;
  - used by an instance that is not terminated (running or stopped);
  - the image of a launch template's default or latest version (resolve:ssm: included);
  - the image of a launch configuration;
  - younger than --min-age-days.
"""

from __future__ import annotations

import datetime
import re
from collections import defaultdict

from golden_ami.aws import LOG, UsageError
from golden_ami.output import Result, table
from golden_ami.publish import add_prefix_argument, check_prefix

PROJECT_TAG = {"Name": "tag:Project", "Values": ["ecs-imds-golden"]}
_BUILD_ENTRY = re.compile(r"/[^/]+/[^/]+/\d{8}T\d{6}Z\Z")
LIVE_STATES = ["pending", "running", "shutting-down", "stopping", "stopped"]


def add_arguments(parser) -> None:
    parser.add_argument("--keep", type=int, required=True, help="newest AMIs to keep per OS and architecture")
    parser.add_argument("--min-age-days", type=int, default=7, help="never remove a younger AMI (default 7)")
    parser.add_argument(
        "--apply", action="store_true", help="really deregister and delete (default: dry run)"
    )
    parser.add_argument("--regions", nargs="+", metavar="REGION", help="regions to clean (default: --region)")
    add_prefix_argument(parser)


def _chunks(items: list[str], size: int):
    for start in range(0, len(items), size):
        yield items[start : start + size]


def our_images(ec2) -> list[dict]:
    pages = ec2.get_paginator("describe_images").paginate(Owners=["self"], Filters=[PROJECT_TAG])
    return [image for page in pages for image in page["Images"]]


def ssm_references(ssm, prefix: str) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """AMI -> names of the parameters publishing it, and AMI -> its build-history entries."""
    published, history = defaultdict(list), defaultdict(list)
    for page in ssm.get_paginator("get_parameters_by_path").paginate(Path=prefix, Recursive=True):
        for parameter in page["Parameters"]:
            relative = parameter["Name"][len(prefix) :]
            target = history if _BUILD_ENTRY.match(relative) else published
            target[parameter["Value"]].append(parameter["Name"])
    return published, history


def protections(aws, region: str, prefix: str, image_ids: list[str]) -> tuple[dict, dict]:
    """AMI -> reasons to keep it, and AMI -> build-history parameters to delete with it."""
    reasons: dict[str, list[str]] = defaultdict(list)
    ec2, ssm = aws.client("ec2", region), aws.client("ssm", region)
    published, history = ssm_references(ssm, prefix)
    for ami, names in published.items():
        reasons[ami] += [f"published in SSM {name}" for name in names]

    for chunk in _chunks(image_ids, 200):  # EC2 filters take at most 200 values
        filters = [
            {"Name": "image-id", "Values": chunk},
            {"Name": "instance-state-name", "Values": LIVE_STATES},
        ]
        for page in ec2.get_paginator("describe_instances").paginate(Filters=filters):
            for reservation in page["Reservations"]:
                for instance in reservation["Instances"]:
                    state = instance["State"]["Name"]
                    reasons[instance["ImageId"]].append(
                        f"used by instance {instance['InstanceId']} ({state})"
                    )

    for page in ec2.get_paginator("describe_launch_templates").paginate():
        for template in page["LaunchTemplates"]:
            versions = ec2.describe_launch_template_versions(
                LaunchTemplateId=template["LaunchTemplateId"], Versions=["$Default", "$Latest"]
            )["LaunchTemplateVersions"]
            for version in versions:
                image = version.get("LaunchTemplateData", {}).get("ImageId", "")
                if image.startswith("resolve:ssm:"):
                    image = ssm.get_parameter(Name=image.removeprefix("resolve:ssm:"))["Parameter"]["Value"]
                which = "default" if version.get("DefaultVersion") else "latest"
                name, number = template["LaunchTemplateName"], version["VersionNumber"]
                reasons[image].append(f"launch template {name} ({which} version {number})")

    autoscaling = aws.client("autoscaling", region)
    for page in autoscaling.get_paginator("describe_launch_configurations").paginate():
        for configuration in page["LaunchConfigurations"]:
            reasons[configuration["ImageId"]].append(
                f"launch configuration {configuration['LaunchConfigurationName']}"
            )
    return reasons, history


def plan_region(aws, region: str, args, now: datetime.datetime) -> list[dict]:
    images = our_images(aws.client("ec2", region))
    reasons, history = protections(aws, region, args.prefix, [image["ImageId"] for image in images])
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for image in images:
        tags = {tag["Key"]: tag["Value"] for tag in image.get("Tags", [])}
        groups[(tags.get("OS", "?"), tags.get("Architecture", "?"))].append(image)
    decisions = []
    for (os_name, arch), members in sorted(groups.items()):
        members.sort(key=lambda image: image["CreationDate"], reverse=True)
        for rank, image in enumerate(members):
            created = datetime.datetime.fromisoformat(image["CreationDate"].replace("Z", "+00:00"))
            why = list(reasons.get(image["ImageId"], []))
            if rank < args.keep:
                why.insert(0, f"one of the newest {args.keep}")
            if now - created < datetime.timedelta(days=args.min_age_days):
                why.append(f"younger than {args.min_age_days} days")
            snapshots = [m["Ebs"]["SnapshotId"] for m in image.get("BlockDeviceMappings", []) if "Ebs" in m]
            decisions.append({
                "region": region, "ami": image["ImageId"], "variant": f"{os_name}/{arch}",
                "created": image["CreationDate"], "keep": bool(why), "reasons": why,
                "snapshots": [s for s in snapshots if s], "parameters": history.get(image["ImageId"], []),
            })  # fmt: skip
    return decisions


def delete(aws, decision: dict) -> None:
    ec2, ssm = aws.client("ec2", decision["region"]), aws.client("ssm", decision["region"])
    ec2.deregister_image(ImageId=decision["ami"])
    for snapshot in decision["snapshots"]:
        ec2.delete_snapshot(SnapshotId=snapshot)
    for name in decision["parameters"]:
        ssm.delete_parameter(Name=name)
    LOG.info("%s: deregistered %s, deleted %s", decision["region"], decision["ami"],
             ", ".join(decision["snapshots"] + decision["parameters"]) or "nothing else")  # fmt: skip


def run(args, aws) -> Result:
    if args.keep < 1:
        raise UsageError(f"--keep {args.keep}: keep at least 1 AMI per OS and architecture")
    if args.min_age_days < 0:
        raise UsageError(f"--min-age-days {args.min_age_days} must not be negative")
    check_prefix(args.prefix)
    now = datetime.datetime.now(datetime.UTC)
    decisions = [d for region in (args.regions or [aws.region]) for d in plan_region(aws, region, args, now)]
    doomed = [d for d in decisions if not d["keep"]]
    if args.apply:
        for decision in doomed:
            delete(aws, decision)
    removed = "deleted" if args.apply else "would delete"
    rows = [[d["region"], d["variant"], d["ami"], d["created"][:10],
             "keep: " + "; ".join(d["reasons"]) if d["keep"] else removed] for d in decisions]  # fmt: skip
    lines = (
        table(rows, ["REGION", "VARIANT", "AMI", "CREATED", "DECISION"]) if rows else ["no golden AMIs found"]
    )
    if not args.apply:
        lines.append(f"dry run: {len(doomed)} AMIs would be deregistered; pass --apply to do it")
    return Result({"applied": args.apply, "decisions": decisions}, lines)
