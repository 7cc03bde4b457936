# Copyright: the ecs-imds-golden authors
# Apache License 2.0
"""Deregister old golden AMIs and delete their snapshots; a dry run unless --apply.

Per region, and per OS and architecture, it keeps the newest N AMIs this project built (tag
Project=ecs-imds-golden) and never touches one that is:
  - published: named by a `latest` parameter, or by any other parameter under the prefix
    (a team's pin); the build-history entries {prefix}/{os}/{arch}/{build} are not
    publications, and are deleted with their AMI;
  - used by an instance that is not terminated (running or stopped);
  - the image of a launch template's default or latest version, or of any version an Auto
    Scaling group names, mixed-instances policies and their overrides included
    (resolve:ssm: included);
  - the image of a launch configuration;
  - younger than --min-age-days.

It refuses a --prefix that holds no parameter at all in a region: a mistyped prefix would
silently drop the "published" protection. A reference that leads nowhere (a resolve:ssm:
parameter or a launch template version that no longer exists) is reported, and the run goes
on. Every region is planned before anything is deleted.
"""

from __future__ import annotations

import datetime
from collections import defaultdict

import botocore.exceptions

from golden_ami import layout
from golden_ami.aws import LOG, UsageError, batches
from golden_ami.output import Result, table

PROJECT_TAG = {"Name": "tag:Project", "Values": ["ecs-imds-golden"]}
LIVE_STATES = ["pending", "running", "shutting-down", "stopping", "stopped"]
MAX_AGE_DAYS = 36500
# Errors that mean "this reference leads nowhere", not "you may not look".
_DANGLING = {
    "ParameterNotFound",
    "ParameterVersionNotFound",
    "ValidationException",
    "InvalidLaunchTemplateId.NotFound",
    "InvalidLaunchTemplateId.Malformed",
    "InvalidLaunchTemplateId.VersionNotFound",
    "InvalidLaunchTemplateName.NotFoundException",
    "InvalidLaunchTemplateName.MalformedException",
}


def add_arguments(parser) -> None:
    parser.add_argument("--keep", type=int, required=True, help="newest AMIs to keep per OS and architecture")
    parser.add_argument(
        "--min-age-days",
        type=int,
        default=7,
        help=f"never remove a younger AMI (default 7, at most {MAX_AGE_DAYS})",
    )
    parser.add_argument(
        "--apply", action="store_true", help="really deregister and delete (default: dry run)"
    )
    parser.add_argument("--regions", nargs="+", metavar="REGION", help="regions to clean (default: --region)")
    layout.add_prefix_argument(parser)


def our_images(ec2) -> list[dict]:
    pages = ec2.get_paginator("describe_images").paginate(Owners=["self"], Filters=[PROJECT_TAG])
    return [image for page in pages for image in page["Images"]]


def ssm_references(ssm, prefix: str) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """AMI -> names of the parameters publishing it, and AMI -> its build-history entries."""
    published, history = defaultdict(list), defaultdict(list)
    for page in ssm.get_paginator("get_parameters_by_path").paginate(Path=prefix, Recursive=True):
        for parameter in page["Parameters"]:
            target = history if layout.is_build_entry(prefix, parameter["Name"]) else published
            target[parameter["Value"]].append(parameter["Name"])
    return published, history


def _dangling(error: botocore.exceptions.ClientError) -> bool:
    return error.response.get("Error", {}).get("Code", "") in _DANGLING


class _Templates:
    """Launch template versions and the AMIs they launch, resolve:ssm: followed; references
    that lead nowhere are collected in ``dangling`` instead of stopping the run."""

    def __init__(self, ec2, ssm):
        self.ec2, self.ssm = ec2, ssm
        self.dangling: list[str] = []

    def versions(self, template: dict, versions: list[str], what: str, label: str = "") -> list[dict]:
        """``template``: {LaunchTemplateId or LaunchTemplateName}; [] if it or the version is gone."""
        try:
            return self.ec2.describe_launch_template_versions(**template, Versions=versions)[
                "LaunchTemplateVersions"
            ]
        except botocore.exceptions.ClientError as exc:
            if not _dangling(exc):
                raise
            code = exc.response["Error"].get("Code")
            named = f"launch template {label or next(iter(template.values()))} version {', '.join(versions)}"
            self.dangling.append(f"{what}: {named} leads nowhere ({code})")
            return []

    def image(self, version: dict, what: str) -> str | None:
        image = version.get("LaunchTemplateData", {}).get("ImageId", "")
        if not image.startswith("resolve:ssm:"):
            return image or None
        try:
            return self.ssm.get_parameter(Name=image.removeprefix("resolve:ssm:"))["Parameter"]["Value"]
        except botocore.exceptions.ClientError as exc:
            if not _dangling(exc):
                raise
            self.dangling.append(f"{what}: {image} leads nowhere ({exc.response['Error'].get('Code')})")
            return None


def _group_templates(group: dict) -> list[dict]:
    """Every launch template specification of an Auto Scaling group, overrides included."""
    specs = [group["LaunchTemplate"]] if group.get("LaunchTemplate") else []
    mixed = group.get("MixedInstancesPolicy", {}).get("LaunchTemplate", {})
    if mixed.get("LaunchTemplateSpecification"):
        specs.append(mixed["LaunchTemplateSpecification"])
    specs += [
        o["LaunchTemplateSpecification"]
        for o in mixed.get("Overrides", [])
        if o.get("LaunchTemplateSpecification")
    ]
    return specs


def protections(aws, region: str, prefix: str, image_ids: list[str]) -> tuple[dict, dict, list[str]]:
    """AMI -> reasons to keep it, AMI -> build-history parameters to delete with it, and the
    references that lead nowhere."""
    reasons: dict[str, list[str]] = defaultdict(list)
    ec2, ssm = aws.client("ec2", region), aws.client("ssm", region)
    published, history = ssm_references(ssm, prefix)
    if not published and not history:
        raise UsageError(
            f"--prefix {prefix} holds no SSM parameters in {region}: nothing would count as published, "
            "so nothing would be protected by it; check --prefix"
        )
    for ami, names in published.items():
        reasons[ami] += [f"published in SSM {name}" for name in names]

    for chunk in batches(image_ids, 200):  # EC2 filters take at most 200 values
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

    templates = _Templates(ec2, ssm)
    for page in ec2.get_paginator("describe_launch_templates").paginate():
        for template in page["LaunchTemplates"]:
            name = template["LaunchTemplateName"]
            spec = {"LaunchTemplateId": template["LaunchTemplateId"]}
            for version in templates.versions(spec, ["$Default", "$Latest"], f"launch template {name}"):
                which = "default" if version.get("DefaultVersion") else "latest"
                where = f"launch template {name} ({which} version {version['VersionNumber']})"
                image = templates.image(version, where)
                if image:
                    reasons[image].append(where)

    autoscaling = aws.client("autoscaling", region)
    for page in autoscaling.get_paginator("describe_auto_scaling_groups").paginate():
        for group in page["AutoScalingGroups"]:
            for spec in _group_templates(group):
                wanted = spec.get("Version") or "$Default"
                key = {k: spec[k] for k in ("LaunchTemplateId",) if spec.get(k)} or {
                    "LaunchTemplateName": spec.get("LaunchTemplateName", "")
                }
                what = f"Auto Scaling group {group['AutoScalingGroupName']}"
                label = spec.get("LaunchTemplateName", "")
                for version in templates.versions(key, [wanted], what, label):
                    name = version.get("LaunchTemplateName") or next(iter(key.values()))
                    where = f"launch template {name} (version {version['VersionNumber']}, {what})"
                    image = templates.image(version, where)
                    if image:
                        reasons[image].append(where)

    for page in autoscaling.get_paginator("describe_launch_configurations").paginate():
        for configuration in page["LaunchConfigurations"]:
            reasons[configuration["ImageId"]].append(
                f"launch configuration {configuration['LaunchConfigurationName']}"
            )
    for message in templates.dangling:
        LOG.warning("%s: %s; going on", region, message)
    return reasons, history, [f"{region}: {message}" for message in templates.dangling]


def plan_region(aws, region: str, args, now: datetime.datetime) -> tuple[list[dict], list[str]]:
    images = our_images(aws.client("ec2", region))
    reasons, history, dangling = protections(aws, region, args.prefix, [image["ImageId"] for image in images])
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
    return decisions, dangling


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
    if not 0 <= args.min_age_days <= MAX_AGE_DAYS:
        raise UsageError(f"--min-age-days {args.min_age_days}: give 0 to {MAX_AGE_DAYS} days")
    layout.check_prefix(args.prefix)
    now = datetime.datetime.now(datetime.UTC)
    decisions, dangling = [], []
    for region in args.regions or [aws.region]:  # every region planned before anything is deleted
        planned, leads_nowhere = plan_region(aws, region, args, now)
        decisions += planned
        dangling += leads_nowhere
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
    lines += [f"warning: {message}" for message in dangling]
    if not args.apply:
        lines.append(f"dry run: {len(doomed)} AMIs would be deregistered; pass --apply to do it")
    return Result({"applied": args.apply, "decisions": decisions, "dangling": dangling}, lines)
