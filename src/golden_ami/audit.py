# Copyright: the ecs-imds-golden authors
# Apache License 2.0
"""Audit ECS container instances, their launch templates and the account's IMDS defaults.

Walks the ECS clusters of one region (those named with --cluster, or all of them), finds the
EC2 instance behind each container instance and reports, per instance, whether its AMI is one
that `publish` wrote under the SSM prefix and how its instance metadata options are set. It
also reports the account's IMDS defaults (what a launch gets when nothing else sets an
option) and the MetadataOptions of the launch template versions the clusters' Auto Scaling
groups launch: the groups of the container instances and of the clusters' capacity providers.

Findings, as the threat model sets them (docs/threat-model.md):
  - not on a published golden AMI;
  - IMDSv1 allowed (HttpTokens optional);
  - hop limit above 2;
  - hop limit 2 without a published golden AMI, so without the host block behind it;
  - for a launch template not on a golden AMI: HttpTokens or the hop limit not set at all
    (left to the AMI, which may allow IMDSv1 and set 2).
Hop limit 2 on a golden AMI is fine: AWS's own default for Amazon Linux 2023 and for
imds_support v2.0 AMIs, and what the allowlisted bridge daemons need. Hop limit 1 is fine
too, with a note: at 1, with IMDSv1 off, the allowlisted bridge daemons get no IMDSv2 token.

With --accounts FILE and --role-name NAME it assumes arn:<partition>:iam::<account>:role/NAME
in every listed account and walks them in parallel. The published AMIs are always read from
the caller's own account (where `publish` writes them and shares the AMIs from).

API calls per account, for C clusters, P capacity providers (other than FARGATE and
FARGATE_SPOT), G Auto Scaling groups, T launch templates and, in a cluster, n container instances:
ceil(C/100) DescribeClusters; ceil(n/100) ListContainerInstances and ceil(n/100)
DescribeContainerInstances per cluster; ceil(N/1000) DescribeInstances for the N EC2
instances of all the clusters together; ceil(P/10) DescribeCapacityProviders; ceil(G/100)
DescribeAutoScalingGroups; T DescribeLaunchTemplateVersions (the API takes one launch
template a call, all its versions at once); 1 GetInstanceMetadataDefaults. Plus one
ListClusters page per 100 clusters when no --cluster is given, and one GetParametersByPath
page per 10 parameters, once. With --verify-hosts, the SSM calls of golden_ami.verify_hosts
for the account's running instances.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import botocore.exceptions

from golden_ami import layout, verify_hosts
from golden_ami.aws import LOG, Aws, GoldenAmiError, NotFoundError, UsageError, batches, translate
from golden_ami.files import read_at_most
from golden_ami.output import Result, table

# API maxima. ListClusters and ListContainerInstances: maxResults 1-100.
# DescribeContainerInstances and DescribeClusters: "a list of up to 100" (botocore's docs).
# DescribeCapacityProviders: up to 100 names a call, at most 10 results a page (maxResults 1-10).
# DescribeAutoScalingGroups: MaxRecords at most 100, and as many names.
# DescribeLaunchTemplateVersions: MaxResults 1-200, one launch template a call.
# GetParametersByPath: MaxResults 1-10 (botocore's model).
# DescribeInstances: botocore's model gives no maximum for InstanceIds (MaxResults, 5-1000, cannot
# be combined with InstanceIds); 1000 is the limit EC2 documents for explicit instance IDs
# (TerminateInstances, DescribeInstanceCreditSpecifications) and is used here.
LIST_PAGE = 100
ECS_BATCH = 100
EC2_BATCH = 1000
SSM_PAGE = 10
CAPACITY_PROVIDER_BATCH = 100
CAPACITY_PROVIDER_PAGE = 10
ASG_BATCH = 100
LAUNCH_TEMPLATE_PAGE = 200
MAX_WORKERS = 8  # accounts walked at once
MAX_ACCOUNTS_FILE = 1024 * 1024  # bytes; 12 digits and a newline a line: some 80,000 accounts

FARGATE = frozenset({"FARGATE", "FARGATE_SPOT"})  # capacity providers without instances
ASG_TAG = "aws:autoscaling:groupName"
TEMPLATE_ID_TAG = "aws:ec2launchtemplate:id"
TEMPLATE_VERSION_TAG = "aws:ec2launchtemplate:version"

# Finding keys: stable, in --json and in the summary's counts.
NOT_PUBLISHED = "not_published"
IMDSV1_ALLOWED = "imdsv1_allowed"
HTTP_TOKENS_UNSET = "http_tokens_unset"
HOP_LIMIT_OVER_2 = "hop_limit_over_2"
HOP_LIMIT_2_WITHOUT_BLOCK = "hop_limit_2_without_block"
HOP_LIMIT_UNSET_WITHOUT_BLOCK = "hop_limit_unset_without_block"
BLOCK_NOT_LIVE = "block_not_live"  # --verify-hosts: the host's check failed
HOST_NOT_VERIFIED = "host_not_verified"  # --verify-hosts: not managed by SSM, or no answer
FINDING_KEYS = (
    NOT_PUBLISHED,
    IMDSV1_ALLOWED,
    HTTP_TOKENS_UNSET,
    HOP_LIMIT_OVER_2,
    HOP_LIMIT_2_WITHOUT_BLOCK,
    HOP_LIMIT_UNSET_WITHOUT_BLOCK,
    BLOCK_NOT_LIVE,
    HOST_NOT_VERIFIED,
)
# Note keys: fine, but worth knowing.
HOP_LIMIT_1 = "hop_limit_1"
ATTRIBUTE_MISSING = "attribute_missing"  # tasks that require the attribute are not placed there
NOTE_KEYS = (HOP_LIMIT_1, ATTRIBUTE_MISSING)

UNPUBLISHED = "not on a published golden AMI"
IMDSV1 = "IMDSv1 allowed (HttpTokens optional)"
HOP_1_NOTE = "hop limit 1: allowlisted bridge daemons get no IMDSv2 token (they need 2)"

TOKENS = "HttpTokens"
HOPS = "HttpPutResponseHopLimit"

HEADER = (
    "CLUSTER",
    "CONTAINER INSTANCE",
    "EC2 INSTANCE",
    "AMI",
    "PUBLISHED",
    "IMDSV2",
    "HOP LIMIT",
    "FINDINGS",
)
TEMPLATE_HEADER = (
    "LAUNCH TEMPLATE",
    "VERSION",
    "AUTO SCALING GROUPS",
    "IMAGE",
    "PUBLISHED",
    "IMDSV2",
    "HOP LIMIT",
    "FINDINGS",
)

ACCOUNT_ID = re.compile(r"[0-9]{12}")
ROLE_NAME = re.compile(r"[A-Za-z0-9_+=,.@/-]{1,512}")
AMI_ID = re.compile(r"ami-[0-9a-f]{8,17}")
INSTANCE_ID = re.compile(r"\bi-[0-9a-f]{8,17}\b")


@dataclasses.dataclass
class Published:
    """What `publish` wrote under the prefix: the AMI IDs and the parameters that hold them."""

    amis: set[str] = dataclasses.field(default_factory=set)
    parameters: set[str] = dataclasses.field(default_factory=set)

    def __len__(self) -> int:
        return len(self.amis)

    def __contains__(self, ami: object) -> bool:
        return ami in self.amis


@dataclasses.dataclass
class Instance:
    """One container instance and the EC2 instance behind it."""

    account: str
    cluster: str
    container_instance: str  # the short ID; the ARN is below
    container_instance_arn: str
    ec2_instance_id: str
    image_id: str | None = None
    published: bool = False
    imdsv2_required: bool | None = None
    hop_limit: int | None = None
    imds_endpoint: str | None = None
    state: str | None = None
    auto_scaling_group: str | None = None
    launch_template: dict | None = None  # {"id", "name", "version"}: where its settings live
    host_check: dict | None = None  # --verify-hosts: {"status", "detail", "command_id"}
    block_attribute: str | None = None  # the container instance's ecs-imds-block attribute
    findings: list[dict] = dataclasses.field(default_factory=list)
    notes: list[dict] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Template:
    """One launch template version that an audited cluster's Auto Scaling groups launch."""

    account: str
    launch_template_id: str | None
    launch_template_name: str | None
    version: int | None  # the number; None when the template or the version is gone
    referenced_as: list[str] = dataclasses.field(default_factory=list)  # $Latest, $Default, 3
    auto_scaling_groups: list[str] = dataclasses.field(default_factory=list)
    capacity_providers: list[str] = dataclasses.field(default_factory=list)
    clusters: list[str] = dataclasses.field(default_factory=list)
    image_id: str | None = None
    published: bool = False
    http_tokens: str | None = None  # as the version sets them; None: not set
    hop_limit: int | None = None
    http_endpoint: str | None = None
    effective_http_tokens: str | None = None  # what a launch gets; None: up to the AMI
    effective_hop_limit: int | None = None
    effective_from: dict = dataclasses.field(default_factory=dict)  # option -> where it comes from
    error: str | None = None
    findings: list[dict] = dataclasses.field(default_factory=list)
    notes: list[dict] = dataclasses.field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.launch_template_name or '?'} ({self.launch_template_id or '?'})"


@dataclasses.dataclass
class Walk:
    """What one account's walk found."""

    clusters: int = 0
    instances: list[Instance] = dataclasses.field(default_factory=list)
    templates: list[Template] = dataclasses.field(default_factory=list)
    defaults: dict = dataclasses.field(default_factory=dict)
    launch_configurations: list[dict] = dataclasses.field(default_factory=list)
    skipped: list[dict] = dataclasses.field(default_factory=list)

    def skip(self, account: str | None, cluster: str, arn: str, reason: str) -> None:
        """A container instance that cannot be audited: gone since it was listed, or its EC2 instance."""
        LOG.warning(
            "%scluster %s: skipped %s: %s", f"account {account}: " if account else "", cluster, arn, reason
        )
        self.skipped.append({"account": account, "cluster": cluster, "arn": arn, "reason": reason})


def add_arguments(parser) -> None:
    parser.add_argument(
        "--cluster",
        action="append",
        dest="clusters",
        metavar="C",
        help="an ECS cluster name or ARN to audit (repeatable; default: every cluster of the region)",
    )
    layout.add_prefix_argument(parser)
    parser.add_argument(
        "--fail-on-findings",
        action="store_true",
        help="exit 1 when any instance, launch template or account default has a finding",
    )
    parser.add_argument(
        "--accounts",
        type=Path,
        metavar="FILE",
        help="audit these accounts instead: one 12-digit account ID per line, # comments allowed",
    )
    parser.add_argument(
        "--role-name", metavar="NAME", help="the role to assume in each account of --accounts"
    )
    parser.add_argument(
        "--verify-hosts",
        action="store_true",
        help="also run `ecs-imds-block check` on each running instance through SSM Run Command: "
        "verified, drifted, not managed by SSM or timed out; drift is a finding",
    )
    low, high = verify_hosts.TIMEOUT_RANGE
    parser.add_argument(
        "--verify-timeout",
        type=int,
        metavar="SECONDS",
        help=f"how long --verify-hosts waits for the hosts' answers ({low}-{high}; "
        f"default {verify_hosts.DEFAULT_TIMEOUT})",
    )


def _shown(text: str, limit: int = 40) -> str:
    """A value for a one-line message: quoted, escaped, and cut short when long."""
    return repr(text) if len(text) <= limit else f"{text[:limit]!r}... ({len(text)} characters)"


def read_accounts(path: Path) -> list[str]:
    """The account IDs of an accounts file, in order, without duplicates."""
    data = read_at_most(path, MAX_ACCOUNTS_FILE, "accounts file")
    if len(data) > MAX_ACCOUNTS_FILE:
        raise UsageError(f"accounts file {path} is larger than {MAX_ACCOUNTS_FILE // 1024} KiB")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"accounts file {path} is not UTF-8 text (byte {exc.start})") from exc
    accounts: list[str] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if not ACCOUNT_ID.fullmatch(line):
            raise UsageError(f"{path}:{number}: {_shown(raw.strip())} is not a 12-digit AWS account ID")
        if line in accounts:
            LOG.warning("%s:%d: account %s is listed twice; auditing it once", path, number, line)
            continue
        accounts.append(line)
    if not accounts:
        raise UsageError(f"{path} lists no account IDs")
    return accounts


def _check_args(args) -> list[str] | None:
    if bool(args.accounts) != bool(args.role_name):
        raise UsageError("--accounts and --role-name go together: give both or neither")
    if not args.prefix.startswith("/"):
        raise UsageError(f"--prefix {_shown(args.prefix)} must be an SSM path starting with /")
    if args.role_name and not ROLE_NAME.fullmatch(args.role_name):
        raise UsageError(f"--role-name {_shown(args.role_name)} is not an IAM role name")
    if args.verify_timeout is not None:
        low, high = verify_hosts.TIMEOUT_RANGE
        if not args.verify_hosts:
            raise UsageError("--verify-timeout goes with --verify-hosts")
        if not low <= args.verify_timeout <= high:
            shown = args.verify_timeout
            raise UsageError(f"--verify-timeout {shown} is not between {low} and {high} seconds")
    return read_accounts(args.accounts) if args.accounts else None


def published_amis(aws: Aws, prefix: str) -> Published:
    """The AMI IDs held by the SSM parameters under prefix (the caller's account), and those parameters."""
    path = prefix.rstrip("/") or "/"
    pages = aws.client("ssm").get_paginator("get_parameters_by_path")
    published = Published()
    for page in pages.paginate(Path=path, Recursive=True, PaginationConfig={"PageSize": SSM_PAGE}):
        for parameter in page["Parameters"]:
            if AMI_ID.fullmatch(parameter.get("Value", "")):
                published.amis.add(parameter["Value"])
                published.parameters.add(parameter["Name"])
            else:
                LOG.debug("SSM %s holds no AMI ID; ignored", parameter["Name"])
    if published.amis:
        LOG.info("%d published AMIs under %s in %s", len(published.amis), path, aws.region)
    else:
        LOG.warning("no AMI IDs under %s in %s: every instance counts as not published", path, aws.region)
    return published


def _code(error: botocore.exceptions.ClientError) -> str:
    return error.response.get("Error", {}).get("Code", "")


def _cluster_name(cluster: str) -> str:
    return cluster.rsplit("/", 1)[-1]


def _list_clusters(ecs) -> list[str]:
    pages = ecs.get_paginator("list_clusters").paginate(PaginationConfig={"PageSize": LIST_PAGE})
    return [arn for page in pages for arn in page["clusterArns"]]


def _list_container_instances(ecs, cluster: str, where: str) -> list[str]:
    pages = ecs.get_paginator("list_container_instances")
    try:
        return [
            arn
            for page in pages.paginate(cluster=cluster, PaginationConfig={"PageSize": LIST_PAGE})
            for arn in page["containerInstanceArns"]
        ]
    except botocore.exceptions.ClientError as exc:
        if _code(exc) == "ClusterNotFoundException":
            raise NotFoundError(f"no ECS cluster {_cluster_name(cluster)!r} in {where}") from exc
        raise


def _describe_clusters(
    ecs, clusters: list[str], named: bool, where: str
) -> tuple[dict[str, list[str]], str | None]:
    """The capacity providers of each cluster, by name, and the clusters' account. Named
    clusters must exist and be active."""
    providers: dict[str, list[str]] = {}
    missing: list[str] = []
    account = None
    for batch in batches(clusters, ECS_BATCH):
        response = ecs.describe_clusters(clusters=batch)
        missing += [_cluster_name(f.get("arn", "?")) for f in response.get("failures", [])]
        for cluster in response.get("clusters", []):
            if cluster.get("status") == "INACTIVE":
                missing.append(cluster["clusterName"])
                continue
            providers[cluster["clusterName"]] = cluster.get("capacityProviders", [])
            if cluster.get("clusterArn", "").count(":") >= 5:
                account = account or cluster["clusterArn"].split(":")[4]
    if missing and named:
        raise NotFoundError(f"no ECS cluster {', '.join(map(repr, missing))} in {where}")
    return providers, account


def _describe_ec2(ec2, ids: list[str], tag: str) -> tuple[dict[str, dict], set[str]]:
    """EC2 instances by ID, in batches of EC2_BATCH, and the IDs EC2 no longer knows."""
    pages = ec2.get_paginator("describe_instances")
    found: dict[str, dict] = {}
    gone: set[str] = set()
    for batch in batches(ids, EC2_BATCH):
        LOG.debug("%sDescribeInstances for %d instances", tag, len(batch))
        while batch:
            try:
                for page in pages.paginate(InstanceIds=batch):
                    for reservation in page["Reservations"]:
                        for instance in reservation["Instances"]:
                            found[instance["InstanceId"]] = instance
                break
            except botocore.exceptions.ClientError as exc:
                # A container instance can outlive its EC2 instance; one unknown ID fails the
                # whole call, and the message names the unknown ones: retry without them.
                missing = set(INSTANCE_ID.findall(str(exc))) & set(batch)
                if _code(exc) != "InvalidInstanceID.NotFound" or not missing:
                    raise
                gone |= missing
                batch = [i for i in batch if i not in missing]
    gone |= set(ids) - set(found)  # instances of other accounts are left out without an error
    return found, gone


def _capacity_provider_groups(ecs, names: list[str], tag: str) -> dict[str, str]:
    """The Auto Scaling group of each capacity provider that has one: {provider: group name}."""
    groups: dict[str, str] = {}
    for batch in batches(names, CAPACITY_PROVIDER_BATCH):
        token = None
        while True:  # no botocore paginator for DescribeCapacityProviders
            page = ecs.describe_capacity_providers(
                capacityProviders=batch,
                maxResults=CAPACITY_PROVIDER_PAGE,
                **({"nextToken": token} if token else {}),
            )
            for provider in page.get("capacityProviders", []):
                arn = provider.get("autoScalingGroupProvider", {}).get("autoScalingGroupArn", "")
                if "autoScalingGroupName/" in arn:
                    groups[provider["name"]] = arn.split("autoScalingGroupName/", 1)[1]
            for failure in page.get("failures", []):
                LOG.warning("%scapacity provider %s: %s", tag, failure.get("arn", "?"), failure.get("reason"))
            token = page.get("nextToken")
            if not token:
                break
    return groups


def _describe_groups(autoscaling, names: list[str]) -> dict[str, dict]:
    pages = autoscaling.get_paginator("describe_auto_scaling_groups")
    found: dict[str, dict] = {}
    for batch in batches(names, ASG_BATCH):
        config = {"PageSize": ASG_BATCH}
        for page in pages.paginate(
            AutoScalingGroupNames=batch, IncludeInstances=False, PaginationConfig=config
        ):
            for group in page["AutoScalingGroups"]:
                found[group["AutoScalingGroupName"]] = group
    return found


def _template_specs(group: dict) -> list[dict]:
    """The launch template specifications a group launches from: its own, or its mixed
    instances policy's and that policy's per-instance-type overrides."""
    if group.get("LaunchTemplate"):
        return [group["LaunchTemplate"]]
    policy = group.get("MixedInstancesPolicy", {}).get("LaunchTemplate", {})
    specs = [policy["LaunchTemplateSpecification"]] if policy.get("LaunchTemplateSpecification") else []
    specs += [
        o["LaunchTemplateSpecification"]
        for o in policy.get("Overrides", [])
        if o.get("LaunchTemplateSpecification")
    ]
    return specs


def _template_versions(ec2, key: tuple[str, str], references: list[str]) -> tuple[list[dict], str | None]:
    """The versions of one launch template that references name ($Latest, $Default, numbers),
    and an error when the template or a version is gone."""
    by, value = key
    pages = ec2.get_paginator("describe_launch_template_versions")
    parameters = {"LaunchTemplateId" if by == "id" else "LaunchTemplateName": value}
    config = {"PageSize": LAUNCH_TEMPLATE_PAGE}
    try:
        return [
            version
            for page in pages.paginate(**parameters, Versions=references, PaginationConfig=config)
            for version in page["LaunchTemplateVersions"]
        ], None
    except botocore.exceptions.ClientError as exc:
        if "NotFound" not in _code(exc):
            raise
        return [], f"{_code(exc)}: {exc.response.get('Error', {}).get('Message', '')}".rstrip(": ")


def _resolve(references: list[str], versions: list[dict]) -> dict[str, dict]:
    """Which version each reference names: $Default the default one, $Latest the highest."""
    if not versions:
        return {}
    by_number = {v["VersionNumber"]: v for v in versions}
    resolved = {}
    for reference in references:
        if reference == "$Latest":
            resolved[reference] = by_number[max(by_number)]
        elif reference == "$Default":
            default = [v for v in versions if v.get("DefaultVersion")]
            if default:
                resolved[reference] = default[0]
        elif reference.isdigit() and int(reference) in by_number:
            resolved[reference] = by_number[int(reference)]
    return resolved


def _golden_image(image_id: str | None, published: Published, own_account: bool) -> bool:
    """A launch template's ImageId names a published AMI: the AMI ID, or resolve:ssm: of one
    of the published parameters (by name only in the caller's own account, where the name
    resolves; by ARN anywhere)."""
    if not image_id:
        return False
    if image_id in published:
        return True
    if not image_id.startswith("resolve:ssm:"):
        return False
    name = image_id.removeprefix("resolve:ssm:")
    if name.startswith("arn:"):
        name = "/" + name.split(":parameter/", 1)[-1] if ":parameter/" in name else ""
    elif not own_account:
        return False
    name = re.sub(r":[0-9]+$", "", name)  # resolve:ssm:NAME:VERSION
    return name in published.parameters


# --- findings -------------------------------------------------------------------------------


def _finding(key: str, message: str, setting: str, value, remediation: str) -> dict:
    return {"key": key, "message": message, "setting": setting, "value": value, "remediation": remediation}


def _note(key: str, message: str) -> dict:
    return {"key": key, "message": message}


def imds_findings(tokens, hops, endpoint, golden: bool | None, fix, setting) -> tuple[list[dict], list[dict]]:
    """Findings and notes for one set of metadata options, by the threat model's table.

    tokens, hops, endpoint: the values in force; None where nothing sets them (a launch
    template that leaves them to the AMI, an account default of no preference). golden:
    whether a published golden AMI, and so the host block, stands behind them; None for the
    account defaults, which apply to every AMI. fix(option, value): the remediation;
    setting(option): the name of the setting to change.
    """
    findings: list[dict] = []
    notes: list[dict] = []

    def found(key: str, message: str, option: str, value) -> None:
        remediation = fix(option, value)
        if option == HOPS and value == 1:  # the guidance names what 1 costs, wherever it gives 1
            remediation += f" ({HOP_1_NOTE}; on the golden AMI, 2 is fine)"
        findings.append(_finding(key, message, setting(option), value, remediation))

    if endpoint == "disabled":
        return findings, notes  # no IMDS at all: nothing to reach
    if tokens == "optional":
        found(IMDSV1_ALLOWED, IMDSV1, TOKENS, "required")
    elif tokens is None and golden is False:
        message = "HttpTokens not set: left to the AMI (IMDSv1 allowed unless it is imds_support v2.0)"
        found(HTTP_TOKENS_UNSET, message, TOKENS, "required")
    if hops is not None and hops > 2:
        found(HOP_LIMIT_OVER_2, f"hop limit {hops} > 2", HOPS, 1 if golden is False else 2)
    elif hops == 2 and golden is False:
        message = "hop limit 2 without the host block (not on a published golden AMI)"
        found(HOP_LIMIT_2_WITHOUT_BLOCK, message, HOPS, 1)
    elif hops is None and golden is False:
        message = "hop limit not set, without the host block: 2 if the AMI is imds_support v2.0"
        found(HOP_LIMIT_UNSET_WITHOUT_BLOCK, message, HOPS, 1)
    elif hops == 1:
        notes.append(_note(HOP_LIMIT_1, HOP_1_NOTE))
    return findings, notes


_CLI_FLAGS = {TOKENS: "--http-tokens", HOPS: "--http-put-response-hop-limit"}


def _metadata_option(option: str) -> str:
    return f"MetadataOptions.{option}"


def _golden_image_id(prefix: str) -> str:
    return f"resolve:ssm:{layout.parameter(prefix.rstrip('/'), '<os>', '<arch>')}"


def _not_published(prefix: str, where: str, then: str = "") -> dict:
    image = _golden_image_id(prefix)
    remediation = (
        f"set ImageId={image} in {where}{then}. Or, to keep the AMI, "
        "give its instances the user data of `golden-ami user-data`"
    )
    return _finding(NOT_PUBLISHED, UNPUBLISHED, "ImageId", image, remediation)


def evaluate_defaults(defaults: dict, region: str) -> None:
    """The account's IMDS defaults: an option left at no preference is no finding."""

    def fix(option, value):
        return f"aws ec2 modify-instance-metadata-defaults --region {region} {_CLI_FLAGS[option]} {value}"

    defaults["findings"], defaults["notes"] = imds_findings(
        defaults.get("http_tokens"),
        defaults.get("hop_limit"),
        defaults.get("http_endpoint"),
        None,
        fix,
        lambda option: f"account default {option}",
    )


def _template_where(template: Template) -> str:
    """Where to change a launch template version's settings, and how its groups take the change."""
    where = f"a new version of launch template {template.label} made from version {template.version}"
    groups = f"Auto Scaling group{'s' if len(template.auto_scaling_groups) > 1 else ''} " + ", ".join(
        template.auto_scaling_groups
    )
    steps = []
    for reference in template.referenced_as:
        if reference == "$Latest":
            steps.append(f"{groups} launch $Latest and take it at once")
        elif reference == "$Default":
            steps.append(f"make it the default version ({groups} launch $Default)")
        else:
            steps.append(f"point {groups} at it (now on version {reference})")
    return f"{where}; then {'; '.join(steps)}" if steps else where


def evaluate_template(template: Template, defaults: dict, prefix: str) -> None:
    """A launch template version: its own MetadataOptions, else the account default, else the
    AMI's (a golden AMI is imds_support v2.0: tokens required, hop limit 2)."""
    if template.error:
        return
    for option, own, default, golden_value in (
        ("http_tokens", template.http_tokens, defaults.get("http_tokens"), "required"),
        ("hop_limit", template.hop_limit, defaults.get("hop_limit"), 2),
    ):
        if own is not None:
            value, source = own, "launch template"
        elif default is not None:
            value, source = default, "account default"
        elif template.published:
            value, source = golden_value, "golden AMI (imds_support v2.0)"
        else:
            value, source = None, "the AMI"
        setattr(template, f"effective_{option}", value)
        template.effective_from[option] = source
    endpoint = template.http_endpoint or defaults.get("http_endpoint")
    where = _template_where(template)

    def fix(option, value):
        return f"set {_metadata_option(option)}={value} in {where}"

    template.findings, template.notes = imds_findings(
        template.effective_http_tokens,
        template.effective_hop_limit,
        endpoint,
        template.published,
        fix,
        _metadata_option,
    )
    if not template.published:
        template.findings.insert(0, _not_published(prefix, where))


def evaluate_instance(instance: Instance, prefix: str, where: str | None) -> None:
    """One running instance: its own metadata options, with where to change them for good
    (where: its launch template version, when known) and how to change them now."""
    where = where or f"what launches instance {instance.ec2_instance_id} (its launch template)"

    def fix(option, value):
        return (
            f"set {_metadata_option(option)}={value} in {where}. On the running instance now: "
            f"aws ec2 modify-instance-metadata-options --instance-id {instance.ec2_instance_id} "
            f"{_CLI_FLAGS[option]} {value}"
        )

    tokens = {True: "required", False: "optional", None: None}[instance.imdsv2_required]
    endpoint = instance.imds_endpoint
    if instance.image_id is None:  # an external (ECS Anywhere) instance: no AMI, no EC2 IMDS
        endpoint = "disabled"
    instance.findings, instance.notes = imds_findings(
        tokens, instance.hop_limit, endpoint, instance.published, fix, _metadata_option
    )
    if not instance.published:
        instance.findings.insert(0, _not_published(prefix, where, ", then replace the instance"))


@functools.cache  # read once, not once per container instance
def _attribute() -> dict:
    """The attribute the role has the agent register: {"name", "value"}."""
    from golden_ami.boothook import role_vars

    return role_vars()["ecs_imds_block__attribute"]


def evaluate_attribute(instance: Instance) -> None:
    """A note for a container instance without the attribute: a task or service that requires
    it (attribute:ecs-imds-block == enforced) is never placed there."""
    attribute = _attribute()
    if instance.image_id is not None and instance.block_attribute != attribute["value"]:
        instance.notes.append(
            _note(
                ATTRIBUTE_MISSING,
                f"no {attribute['name']}={attribute['value']} attribute: its agent did not find the block "
                "live at its start, or the host predates the attribute or is not on the golden AMI",
            )
        )


def evaluate_host_check(instance: Instance, check: verify_hosts.HostCheck) -> None:
    """What --verify-hosts found on the host: drift is a finding, and so is a host whose block
    nobody could see (not managed by SSM, or no answer): the audit cannot vouch for it."""
    instance.host_check = dataclasses.asdict(check)
    check_line = "ecs-imds-block check"
    if check.status == verify_hosts.DRIFTED:
        instance.findings.append(
            _finding(
                BLOCK_NOT_LIVE,
                f"IMDS block not live on the host: {check.detail}",
                check_line,
                check.detail,
                "load it again on the host with what docker.service runs before it starts (its "
                "ecs-imds-block drop-in's ExecStartPre), or replace the instance; then find what "
                "removed the rules (a flush, or another tool's iptables-restore without --noflush)",
            )
        )
    elif check.status in (verify_hosts.UNMANAGED, verify_hosts.TIMED_OUT):
        fix = {
            verify_hosts.UNMANAGED: "make the instance an SSM managed node (the SSM agent running, "
            "AmazonSSMManagedInstanceCore on its instance role), then audit again",
            verify_hosts.TIMED_OUT: "audit again with a longer --verify-timeout, or look at the "
            "host's SSM agent",
        }[check.status]
        message = f"IMDS block not verified on the host: {check.detail}"
        instance.findings.append(_finding(HOST_NOT_VERIFIED, message, check_line, check.status, fix))


# --- the walk -------------------------------------------------------------------------------


def _account_defaults(ec2, account: str | None, region: str) -> dict:
    """GetInstanceMetadataDefaults: an option left out is no preference (None here)."""
    level = ec2.get_instance_metadata_defaults().get("AccountLevel", {})
    hops = level.get("HttpPutResponseHopLimit")
    return {
        "account": account,
        "region": region,
        "http_tokens": level.get("HttpTokens"),
        "hop_limit": hops if hops is None or hops >= 1 else None,  # -1: no preference
        "http_endpoint": level.get("HttpEndpoint"),
        "instance_metadata_tags": level.get("InstanceMetadataTags"),
        "http_tokens_enforced": level.get("HttpTokensEnforced"),
        "managed_by": level.get("ManagedBy"),
    }


def _template_key(spec: dict) -> tuple[str, str]:
    if spec.get("LaunchTemplateId"):
        return ("id", spec["LaunchTemplateId"])
    return ("name", spec["LaunchTemplateName"])


def _template(account, key, number, version: dict | None, names, published: Published, own: bool):
    data = (version or {}).get("LaunchTemplateData", {})
    options = data.get("MetadataOptions", {})
    return Template(
        account=account,
        launch_template_id=(version or {}).get("LaunchTemplateId") or (key[1] if key[0] == "id" else None),
        launch_template_name=(version or {}).get("LaunchTemplateName") or names.get(key),
        version=number,
        image_id=data.get("ImageId"),
        published=_golden_image(data.get("ImageId"), published, own),
        http_tokens=options.get("HttpTokens"),
        hop_limit=options.get("HttpPutResponseHopLimit"),
        http_endpoint=options.get("HttpEndpoint"),
    )


def _templates(ec2, groups: dict[str, dict], links: dict, account, published: Published, own: bool):
    """The launch template versions the groups launch, one Template for each, the groups on
    launch configurations, and {group: the Template of its own (first) specification}.

    links: {"clusters": {group: clusters}, "providers": {group: capacity providers}}."""
    references: dict[tuple[str, str], dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    names: dict[tuple[str, str], str | None] = {}
    first: dict[str, tuple] = {}
    configurations = []
    for name, group in sorted(groups.items()):
        if group.get("LaunchConfigurationName"):
            configurations.append({
                "account": account,
                "auto_scaling_group": name,
                "launch_configuration": group["LaunchConfigurationName"],
                "clusters": sorted(links["clusters"].get(name, ())),
            })  # fmt: skip
            continue
        for n, spec in enumerate(_template_specs(group)):
            key, reference = _template_key(spec), spec.get("Version") or "$Default"
            names.setdefault(key, spec.get("LaunchTemplateName"))
            references[key][reference].add(name)
            if n == 0:
                first[name] = (key, reference)

    templates: dict[tuple, Template] = {}
    by_reference: dict[tuple, Template] = {}
    for key in sorted(references):
        wanted = sorted(references[key])
        versions, error = _template_versions(ec2, key, wanted)
        resolved = _resolve(wanted, versions)
        for reference in wanted:
            version = resolved.get(reference)
            number = version["VersionNumber"] if version else None
            record = templates.get((key, number, None if version else reference))
            if record is None:
                record = _template(account, key, number, version, names, published, own)
                record.error = None if version else error or f"version {reference} not found"
                templates[(key, number, None if version else reference)] = record
            by_reference[(key, reference)] = record
            record.referenced_as = sorted({*record.referenced_as, reference})
            for group in references[key][reference]:
                record.auto_scaling_groups = sorted({*record.auto_scaling_groups, group})
                record.capacity_providers = sorted(
                    {*record.capacity_providers, *links["providers"].get(group, ())}
                )
                record.clusters = sorted({*record.clusters, *links["clusters"].get(group, ())})
    for record in templates.values():
        if record.error:
            LOG.warning("launch template %s: %s", record.label, record.error)
    of_group = {group: by_reference[reference] for group, reference in first.items()}
    return list(templates.values()), configurations, of_group


def _instance(cluster: str, ci: dict, details: dict | None, label: str | None, published) -> Instance:
    arn = ci["containerInstanceArn"]
    instance = Instance(
        account=arn.split(":")[4] if arn.count(":") >= 5 else (label or ""),
        cluster=cluster,
        container_instance=arn.rsplit("/", 1)[-1],
        container_instance_arn=arn,
        ec2_instance_id=ci.get("ec2InstanceId", ""),
    )
    attributes = {a.get("name"): a.get("value") for a in ci.get("attributes", [])}
    instance.block_attribute = attributes.get(_attribute()["name"])
    if details:  # an external (ECS Anywhere) instance has no AMI and no EC2 IMDS
        options = details.get("MetadataOptions", {})
        tags = {t["Key"]: t["Value"] for t in details.get("Tags", [])}
        instance.image_id = details.get("ImageId")
        instance.published = instance.image_id in published
        instance.state = details.get("State", {}).get("Name")
        instance.imds_endpoint = options.get("HttpEndpoint")
        if "HttpTokens" in options:
            instance.imdsv2_required = options["HttpTokens"] == "required"
        instance.hop_limit = options.get("HttpPutResponseHopLimit")
        instance.auto_scaling_group = tags.get(ASG_TAG)
        if tags.get(TEMPLATE_ID_TAG):  # what EC2 tags an instance launched from a template with
            version = tags.get(TEMPLATE_VERSION_TAG)
            instance.launch_template = {"id": tags[TEMPLATE_ID_TAG], "name": None, "version": version}
    return instance


def _instance_where(instance: Instance, of_group: dict[str, Template]) -> str | None:
    """Where an instance's settings are changed for good: its group's launch template version,
    else the one EC2 tagged it with."""
    record = of_group.get(instance.auto_scaling_group or "")
    if record and record.version is not None:
        instance.launch_template = {
            "id": record.launch_template_id,
            "name": record.launch_template_name,
            "version": record.version,
        }
        return _template_where(record)
    if instance.launch_template:
        template = instance.launch_template
        return f"a new version of launch template {template['id']} made from version {template['version']}"
    return None


def audit_account(
    aws: Aws,
    clusters: list[str] | None,
    published: Published,
    label: str | None = None,
    prefix=layout.DEFAULT_PREFIX,
    verify_timeout: int | None = None,
) -> Walk:
    """Walk the clusters of one account and region, their groups' launch templates and the
    account's IMDS defaults."""
    tag = f"account {label}: " if label else ""
    where = f"{aws.region} (account {label})" if label else aws.region
    ecs, ec2 = aws.client("ecs"), aws.client("ec2")
    names = list(dict.fromkeys(clusters)) if clusters else _list_clusters(ecs)
    if not clusters:
        LOG.info("%s%d ECS clusters in %s", tag, len(names), aws.region)
    walk = Walk(clusters=len(names))
    providers, account = _describe_clusters(ecs, names, bool(clusters), where) if names else ({}, None)
    account = label or account
    members: list[tuple[str, dict]] = []  # (cluster name, container instance)
    for cluster in names:
        name = _cluster_name(cluster)
        arns = _list_container_instances(ecs, cluster, where)
        LOG.info("%scluster %s: %d container instances", tag, name, len(arns))
        for batch in batches(arns, ECS_BATCH):
            response = ecs.describe_container_instances(cluster=cluster, containerInstances=batch)
            members += [(name, ci) for ci in response.get("containerInstances", [])]
            for failure in response.get("failures", []):
                walk.skip(label, name, failure.get("arn", "?"), failure.get("reason", "?"))

    ec2_ids = sorted({ci.get("ec2InstanceId", "") for _, ci in members} - {""})
    ec2_ids = [i for i in ec2_ids if i.startswith("i-")]  # not mi-: ECS Anywhere, no EC2 instance
    if ec2_ids:
        LOG.info("%sdescribing %d EC2 instances", tag, len(ec2_ids))
    described, gone = _describe_ec2(ec2, ec2_ids, tag) if ec2_ids else ({}, set())
    for cluster, ci in members:
        if ci.get("ec2InstanceId", "") in gone:
            reason = f"EC2 instance {ci['ec2InstanceId']} not found"
            walk.skip(label, cluster, ci["containerInstanceArn"], reason)
            continue
        walk.instances.append(
            _instance(cluster, ci, described.get(ci.get("ec2InstanceId", "")), label, published)
        )

    # The Auto Scaling groups behind the clusters (those of their instances and of their
    # capacity providers) and the launch template versions those groups launch.
    links: dict[str, dict[str, set[str]]] = {"clusters": defaultdict(set), "providers": defaultdict(set)}
    for instance in walk.instances:
        if instance.auto_scaling_group:
            links["clusters"][instance.auto_scaling_group].add(instance.cluster)
    wanted = sorted({p for ps in providers.values() for p in ps} - FARGATE)
    provider_groups = _capacity_provider_groups(ecs, wanted, tag) if wanted else {}
    for cluster, ps in providers.items():
        for provider in ps:
            if provider in provider_groups:
                links["clusters"][provider_groups[provider]].add(cluster)
                links["providers"][provider_groups[provider]].add(provider)
    group_names = sorted(links["clusters"])
    groups = _describe_groups(aws.client("autoscaling"), group_names) if group_names else {}
    for name in sorted(set(group_names) - set(groups)):
        LOG.warning("%sAuto Scaling group %s not found", tag, name)
    walk.templates, walk.launch_configurations, of_group = _templates(
        ec2, groups, links, account, published, own=label is None
    )

    walk.defaults = _account_defaults(ec2, account, aws.region)
    evaluate_defaults(walk.defaults, aws.region)
    for template in walk.templates:
        evaluate_template(template, walk.defaults, prefix)
    for instance in walk.instances:
        evaluate_instance(instance, prefix, _instance_where(instance, of_group))
        evaluate_attribute(instance)
    if verify_timeout is not None:
        running = {i.ec2_instance_id: i for i in walk.instances if i.state == "running"}
        checks = verify_hosts.verify(aws.client("ssm"), sorted(running), verify_timeout)
        for instance_id, check in checks.items():
            evaluate_host_check(running[instance_id], check)
    return walk


def _audit_accounts(
    aws: Aws, accounts: list[str], role_name: str, clusters, published, prefix, verify_timeout
) -> tuple[dict, list]:
    """Walk every account in parallel: {account: Walk} and the accounts that failed."""
    partition = aws.session.get_partition_for_region(aws.region)

    def one(account: str) -> Walk:
        member = aws.assume(f"arn:{partition}:iam::{account}:role/{role_name}", label=account)
        return audit_account(member, clusters, published, account, prefix, verify_timeout)

    LOG.info("auditing %d accounts with role %s", len(accounts), role_name)
    with ThreadPoolExecutor(max_workers=min(MAX_WORKERS, len(accounts))) as pool:
        futures = {account: pool.submit(one, account) for account in accounts}
    walks, errors = {}, []
    for account, future in futures.items():
        try:
            walks[account] = future.result()
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
            error = translate(exc)
        except GoldenAmiError as exc:
            error = exc
        else:
            continue
        LOG.error("account %s: %s", account, error)
        errors.append({"account": account, "error": str(error), "exit_code": error.exit_code})
    return walks, errors


def _count(records, key: str) -> int:
    return sum(any(f["key"] == key for f in r.findings) for r in records)


def run(args, aws: Aws) -> Result:
    accounts = _check_args(args)
    region = aws.region
    published = published_amis(aws, args.prefix)
    verify_timeout = (args.verify_timeout or verify_hosts.DEFAULT_TIMEOUT) if args.verify_hosts else None
    if accounts:
        walks, errors = _audit_accounts(
            aws, accounts, args.role_name, args.clusters, published, args.prefix, verify_timeout
        )
    else:
        walk = audit_account(aws, args.clusters, published, prefix=args.prefix, verify_timeout=verify_timeout)
        walks, errors = {None: walk}, []

    instances = sorted(
        (i for walk in walks.values() for i in walk.instances),
        key=lambda i: (i.account, i.cluster, i.ec2_instance_id, i.container_instance),
    )
    templates = sorted(
        (t for walk in walks.values() for t in walk.templates),
        key=lambda t: (
            t.account or "",
            t.launch_template_name or "",
            t.launch_template_id or "",
            t.version or 0,
        ),
    )
    defaults = sorted((walk.defaults for walk in walks.values()), key=lambda d: d["account"] or "")
    configurations = [c for walk in walks.values() for c in walk.launch_configurations]
    skipped = [s for walk in walks.values() for s in walk.skipped]
    with_findings = [i for i in instances if i.findings]
    records = [*instances, *templates]
    summary = {
        "region": region,
        "prefix": args.prefix,
        "published_amis": len(published),
        "accounts": len(accounts) if accounts else 1,
        "failed_accounts": len(errors),
        "clusters": sum(walk.clusters for walk in walks.values()),
        "instances": len(instances),
        "published": sum(i.published for i in instances),
        "not_published": sum(not i.published for i in instances),
        "imdsv1_allowed": _count(instances, IMDSV1_ALLOWED),
        "hop_limit_over_2": _count(instances, HOP_LIMIT_OVER_2),
        "hop_limit_2_without_block": _count(instances, HOP_LIMIT_2_WITHOUT_BLOCK),
        "hop_limit_1": sum(any(n["key"] == HOP_LIMIT_1 for n in i.notes) for i in instances),
        "attribute_missing": sum(any(n["key"] == ATTRIBUTE_MISSING for n in i.notes) for i in instances),
        "with_findings": len(with_findings),
        "findings": sum(len(i.findings) for i in instances),
        "launch_templates": len(templates),
        "launch_templates_with_findings": sum(bool(t.findings) for t in templates),
        "launch_template_findings": sum(len(t.findings) for t in templates),
        "launch_configurations": len(configurations),
        "account_defaults_with_findings": sum(bool(d["findings"]) for d in defaults),
        "findings_by_key": {
            key: sum(f["key"] == key for r in [*records, *defaults] for f in _findings_of(r))
            for key in FINDING_KEYS
        },
        "skipped": len(skipped),
        "verify_hosts": {
            status: sum((i.host_check or {}).get("status") == status for i in instances)
            for status in verify_hosts.STATUSES
        }
        if args.verify_hosts
        else None,
    }
    data = {
        "instances": [dataclasses.asdict(i) for i in instances],
        "launch_templates": [dataclasses.asdict(t) for t in templates],
        "launch_configurations": configurations,
        "account_defaults": defaults,
        "summary": summary,
        "skipped": skipped,
        "errors": errors,
    }
    lines = _report(instances, templates, defaults, configurations, summary, bool(accounts), skipped, errors)

    code = 0
    if errors:  # an account that could not be audited outweighs the findings of the others
        codes = {e["exit_code"] for e in errors}
        code = 3 if 3 in codes else max(codes)
    elif args.fail_on_findings and any(_findings_of(r) for r in [*records, *defaults]):
        code = 1
    return Result(data=data, lines=lines, code=code)


def _findings_of(record) -> list[dict]:
    return record["findings"] if isinstance(record, dict) else record.findings


_SOURCES = {
    "launch template": "",
    "account default": " (account default)",
    "golden AMI (imds_support v2.0)": " (AMI)",
}


def _effective(value, source: str | None) -> str:
    """A launch template's option in force, and where it comes from when not from the template."""
    return "not set" if value is None else f"{value}{_SOURCES.get(source or '', '')}"


def _version(template: Template) -> str:
    """The version number, and how the groups name it when not by that number."""
    if template.version is None:
        return "-"
    names = [r for r in template.referenced_as if r != str(template.version)]
    return f"{template.version} ({', '.join(names)})" if names else str(template.version)


def _report(instances, templates, defaults, configurations, summary, multi, skipped, errors) -> list[str]:
    header = list(HEADER)
    rows = [
        [
            i.cluster,
            i.container_instance,
            i.ec2_instance_id,
            i.image_id or "-",
            "yes" if i.published else "no",
            {True: "required", False: "optional", None: "-"}[i.imdsv2_required],
            "-" if i.hop_limit is None else str(i.hop_limit),
            "; ".join(f["message"] for f in i.findings) or "-",
        ]
        for i in instances
    ]
    if multi:
        header.insert(0, "ACCOUNT")
        for row, instance in zip(rows, instances, strict=True):
            row.insert(0, instance.account)
    lines = table(rows, header) if rows else ["no container instances found"]

    if templates:
        header = list(TEMPLATE_HEADER)
        rows = [
            [
                t.label,
                _version(t),
                ", ".join(t.auto_scaling_groups),
                t.image_id or "-",
                "yes" if t.published else "no",
                _effective(t.effective_http_tokens, t.effective_from.get("http_tokens")),
                _effective(t.effective_hop_limit, t.effective_from.get("hop_limit")),
                t.error or "; ".join(f["message"] for f in t.findings) or "-",
            ]
            for t in templates
        ]
        if multi:
            header.insert(0, "ACCOUNT")
            for row, template in zip(rows, templates, strict=True):
                row.insert(0, template.account or "-")
        lines += ["", *table(rows, header)]
    for c in configurations:
        account = f"account {c['account']}: " if multi else ""
        lines.append(
            f"{account}Auto Scaling group {c['auto_scaling_group']} launches from launch configuration "
            f"{c['launch_configuration']}: its metadata options are not audited; move it to a launch template"
        )

    lines.append("")
    for d in defaults:
        shown = ", ".join(
            f"{name} {'no preference' if d[key] is None else d[key]}"
            for name, key in (
                ("HttpTokens", "http_tokens"),
                ("hop limit", "hop_limit"),
                ("endpoint", "http_endpoint"),
            )
        )
        account = f"account {d['account']} " if multi else ""
        found = "; ".join(f["message"] for f in d["findings"])
        lines.append(f"{account}IMDS defaults ({d['region']}): {shown}{'; ' + found if found else ''}")
    s = summary
    accounts = f"{s['accounts']} accounts, " if multi else ""
    lines += [
        f"{s['instances']} container instances in {accounts}{s['clusters']} clusters ({s['region']}); "
        f"{s['published_amis']} published AMIs under {s['prefix']}",
        f"on a published golden AMI: {s['published']}, not: {s['not_published']}",
        f"IMDSv1 allowed: {s['imdsv1_allowed']}; hop limit > 2: {s['hop_limit_over_2']}; "
        f"hop limit 2 without the host block: {s['hop_limit_2_without_block']}",
        f"hop limit 1: {s['hop_limit_1']} (fine, but allowlisted bridge daemons need 2 for an IMDSv2 token)",
        f"instances with findings: {s['with_findings']} ({s['findings']} findings)",
        f"without the {_attribute()['name']}={_attribute()['value']} attribute: {s['attribute_missing']}"
        " (tasks that require it are not placed there)",
        f"launch templates: {s['launch_templates']}, with findings: {s['launch_templates_with_findings']} "
        f"({s['launch_template_findings']} findings)",
    ]
    if s["verify_hosts"] is not None:
        v = s["verify_hosts"]
        lines.append(
            f"hosts (--verify-hosts): verified {v['verified']}, drifted {v['drifted']}, "
            f"not managed by SSM {v['unmanaged']}, timed out {v['timed_out']}"
        )
    if skipped:
        lines.append(f"skipped: {len(skipped)} (gone during the audit or no EC2 instance; see the log)")
    lines += [f"account {e['account']} not audited: {e['error']}" for e in errors]
    return lines
