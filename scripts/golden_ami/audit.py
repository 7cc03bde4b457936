"""Audit ECS container instances: on a published golden AMI, IMDSv2 required, hop limit 1?

Walks the ECS clusters of one region (those named with --cluster, or all of them), finds the
EC2 instance behind each container instance and reports, per instance, whether its AMI is one
that `publish` wrote under the SSM prefix and how its instance metadata options are set.

With --accounts FILE and --role-name NAME it assumes arn:<partition>:iam::<account>:role/NAME
in every listed account and walks them in parallel. The published AMIs are always read from
the caller's own account (where `publish` writes them and shares the AMIs from).

API calls, n container instances in a cluster: ceil(n/100) ListContainerInstances,
ceil(n/100) DescribeContainerInstances, and ceil(N/1000) DescribeInstances for the N EC2
instances of all the clusters of an account together; one ListClusters page per 100
clusters when no --cluster is given, and one GetParametersByPath page per 10 parameters.
"""

from __future__ import annotations

import dataclasses
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import botocore.exceptions

from golden_ami.aws import LOG, Aws, GoldenAmiError, NotFoundError, UsageError, translate
from golden_ami.output import Result, table

DEFAULT_PREFIX = "/golden-ami/ecs"  # the SSM tree `publish` writes (cli.DEFAULT_PREFIX)

# API maxima. ListClusters and ListContainerInstances: maxResults 1-100.
# DescribeContainerInstances and DescribeClusters: "a list of up to 100" (botocore's docs).
# GetParametersByPath: MaxResults 1-10 (botocore's model).
# DescribeInstances: botocore's model gives no maximum for InstanceIds (MaxResults, 5-1000, cannot
# be combined with InstanceIds); 1000 is the limit EC2 documents for explicit instance IDs
# (TerminateInstances, DescribeInstanceCreditSpecifications) and is used here.
LIST_PAGE = 100
ECS_BATCH = 100
EC2_BATCH = 1000
SSM_PAGE = 10
MAX_WORKERS = 8  # accounts walked at once

UNPUBLISHED = "not on a published golden AMI"
IMDSV1 = "IMDSv1 allowed (HttpTokens optional)"

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

ACCOUNT_ID = re.compile(r"\d{12}")
ROLE_NAME = re.compile(r"[\w+=,.@/-]{1,512}")
AMI_ID = re.compile(r"ami-[0-9a-f]{8,17}")
INSTANCE_ID = re.compile(r"\bi-[0-9a-f]{8,17}\b")


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
    findings: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Walk:
    """What one account's walk found."""

    clusters: int = 0
    instances: list[Instance] = dataclasses.field(default_factory=list)
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
    parser.add_argument(
        "--prefix",
        default=DEFAULT_PREFIX,
        help=f"SSM parameter path the published AMI IDs live under (default: {DEFAULT_PREFIX})",
    )
    parser.add_argument(
        "--fail-on-findings", action="store_true", help="exit 1 when any instance has a finding"
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


def read_accounts(path: Path) -> list[str]:
    """The account IDs of an accounts file, in order, without duplicates."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise UsageError(f"cannot read accounts file {path}: {exc.strerror or exc}") from exc
    accounts: list[str] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if not ACCOUNT_ID.fullmatch(line):
            raise UsageError(f"{path}:{number}: {raw.strip()!r} is not a 12-digit AWS account ID")
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
        raise UsageError(f"--prefix {args.prefix!r} must be an SSM path starting with /")
    if args.role_name and not ROLE_NAME.fullmatch(args.role_name):
        raise UsageError(f"--role-name {args.role_name!r} is not an IAM role name")
    return read_accounts(args.accounts) if args.accounts else None


def published_amis(aws: Aws, prefix: str) -> set[str]:
    """The AMI IDs held by the SSM parameters under prefix (the caller's account)."""
    path = prefix.rstrip("/") or "/"
    pages = aws.client("ssm").get_paginator("get_parameters_by_path")
    amis = set()
    for page in pages.paginate(Path=path, Recursive=True, PaginationConfig={"PageSize": SSM_PAGE}):
        for parameter in page["Parameters"]:
            if AMI_ID.fullmatch(parameter.get("Value", "")):
                amis.add(parameter["Value"])
            else:
                LOG.debug("SSM %s holds no AMI ID; ignored", parameter["Name"])
    if amis:
        LOG.info("%d published AMIs under %s in %s", len(amis), path, aws.region)
    else:
        LOG.warning("no AMI IDs under %s in %s: every instance counts as not published", path, aws.region)
    return amis


def _code(error: botocore.exceptions.ClientError) -> str:
    return error.response.get("Error", {}).get("Code", "")


def _batches(items: list, size: int):
    for start in range(0, len(items), size):
        yield items[start : start + size]


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


def _check_clusters(ecs, clusters: list[str], where: str) -> None:
    """Named clusters that listed no container instances: empty, or not there at all?"""
    for batch in _batches(clusters, ECS_BATCH):
        response = ecs.describe_clusters(clusters=batch)
        missing = [_cluster_name(f.get("arn", "?")) for f in response.get("failures", [])]
        missing += [c["clusterName"] for c in response.get("clusters", []) if c.get("status") == "INACTIVE"]
        if missing:
            raise NotFoundError(f"no ECS cluster {', '.join(map(repr, missing))} in {where}")


def _describe_ec2(ec2, ids: list[str], tag: str) -> tuple[dict[str, dict], set[str]]:
    """EC2 instances by ID, in batches of EC2_BATCH, and the IDs EC2 no longer knows."""
    pages = ec2.get_paginator("describe_instances")
    found: dict[str, dict] = {}
    gone: set[str] = set()
    for batch in _batches(ids, EC2_BATCH):
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


def findings(instance: Instance) -> list[str]:
    result = []
    if not instance.published:
        result.append(UNPUBLISHED)
    if instance.imds_endpoint == "disabled":
        return result  # no IMDS at all: nothing to reach
    if instance.imdsv2_required is False:
        result.append(IMDSV1)
    if instance.hop_limit is not None and instance.hop_limit > 1:
        result.append(f"hop limit {instance.hop_limit} > 1")
    return result


def audit_account(aws: Aws, clusters: list[str] | None, amis: set[str], label: str | None = None) -> Walk:
    """Walk the clusters of one account and region."""
    tag = f"account {label}: " if label else ""
    where = f"{aws.region} (account {label})" if label else aws.region
    ecs, ec2 = aws.client("ecs"), aws.client("ec2")
    names = list(dict.fromkeys(clusters)) if clusters else _list_clusters(ecs)
    if not clusters:
        LOG.info("%s%d ECS clusters in %s", tag, len(names), aws.region)
    walk = Walk(clusters=len(names))
    members: list[tuple[str, dict]] = []  # (cluster name, container instance)
    empty: list[str] = []
    for cluster in names:
        name = _cluster_name(cluster)
        arns = _list_container_instances(ecs, cluster, where)
        LOG.info("%scluster %s: %d container instances", tag, name, len(arns))
        if not arns and clusters:
            empty.append(cluster)
        for batch in _batches(arns, ECS_BATCH):
            response = ecs.describe_container_instances(cluster=cluster, containerInstances=batch)
            members += [(name, ci) for ci in response.get("containerInstances", [])]
            for failure in response.get("failures", []):
                walk.skip(label, name, failure.get("arn", "?"), failure.get("reason", "?"))
    if empty:
        _check_clusters(ecs, empty, where)

    ec2_ids = sorted({ci.get("ec2InstanceId", "") for _, ci in members} - {""})
    ec2_ids = [i for i in ec2_ids if i.startswith("i-")]  # not mi-: ECS Anywhere, no EC2 instance
    if ec2_ids:
        LOG.info("%sdescribing %d EC2 instances", tag, len(ec2_ids))
    described, gone = _describe_ec2(ec2, ec2_ids, tag) if ec2_ids else ({}, set())

    for cluster, ci in members:
        arn = ci["containerInstanceArn"]
        ec2_id = ci.get("ec2InstanceId", "")
        if ec2_id in gone:
            walk.skip(label, cluster, arn, f"EC2 instance {ec2_id} not found")
            continue
        instance = Instance(
            account=arn.split(":")[4] if arn.count(":") >= 5 else (label or ""),
            cluster=cluster,
            container_instance=arn.rsplit("/", 1)[-1],
            container_instance_arn=arn,
            ec2_instance_id=ec2_id,
        )
        details = described.get(ec2_id)
        if details:  # an external (ECS Anywhere) instance has no AMI and no EC2 IMDS
            options = details.get("MetadataOptions", {})
            instance.image_id = details.get("ImageId")
            instance.published = instance.image_id in amis
            instance.state = details.get("State", {}).get("Name")
            instance.imds_endpoint = options.get("HttpEndpoint")
            if "HttpTokens" in options:
                instance.imdsv2_required = options["HttpTokens"] == "required"
            instance.hop_limit = options.get("HttpPutResponseHopLimit")
        instance.findings = findings(instance)
        walk.instances.append(instance)
    return walk


def _audit_accounts(aws: Aws, accounts: list[str], role_name: str, clusters, amis) -> tuple[dict, list]:
    """Walk every account in parallel: {account: Walk} and the accounts that failed."""
    partition = aws.session.get_partition_for_region(aws.region)

    def one(account: str) -> Walk:
        member = aws.assume(f"arn:{partition}:iam::{account}:role/{role_name}", label=account)
        return audit_account(member, clusters, amis, label=account)

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


def run(args, aws: Aws) -> Result:
    accounts = _check_args(args)
    region = aws.region
    amis = published_amis(aws, args.prefix)
    if accounts:
        walks, errors = _audit_accounts(aws, accounts, args.role_name, args.clusters, amis)
    else:
        walks, errors = {None: audit_account(aws, args.clusters, amis)}, []

    instances = sorted(
        (i for walk in walks.values() for i in walk.instances),
        key=lambda i: (i.account, i.cluster, i.ec2_instance_id, i.container_instance),
    )
    skipped = [s for walk in walks.values() for s in walk.skipped]
    with_findings = [i for i in instances if i.findings]
    summary = {
        "region": region,
        "prefix": args.prefix,
        "published_amis": len(amis),
        "accounts": len(accounts) if accounts else 1,
        "failed_accounts": len(errors),
        "clusters": sum(walk.clusters for walk in walks.values()),
        "instances": len(instances),
        "published": sum(i.published for i in instances),
        "not_published": sum(not i.published for i in instances),
        "imdsv1_allowed": sum(IMDSV1 in i.findings for i in instances),
        "hop_limit_over_1": sum(any(f.startswith("hop limit") for f in i.findings) for i in instances),
        "with_findings": len(with_findings),
        "findings": sum(len(i.findings) for i in instances),
        "skipped": len(skipped),
    }
    data = {
        "instances": [dataclasses.asdict(i) for i in instances],
        "summary": summary,
        "skipped": skipped,
        "errors": errors,
    }
    lines = _report(instances, summary, bool(accounts), skipped, errors)

    code = 0
    if errors:  # an account that could not be audited outweighs the findings of the others
        codes = {e["exit_code"] for e in errors}
        code = 3 if 3 in codes else max(codes)
    elif with_findings and args.fail_on_findings:
        code = 1
    return Result(data=data, lines=lines, code=code)


def _report(instances: list[Instance], summary: dict, multi: bool, skipped: list, errors: list) -> list[str]:
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
            "; ".join(i.findings) or "-",
        ]
        for i in instances
    ]
    if multi:
        header.insert(0, "ACCOUNT")
        for row, instance in zip(rows, instances, strict=True):
            row.insert(0, instance.account)
    lines = table(rows, header) if rows else ["no container instances found"]
    s = summary
    accounts = f"{s['accounts']} accounts, " if multi else ""
    lines += [
        "",
        f"{s['instances']} container instances in {accounts}{s['clusters']} clusters ({s['region']}); "
        f"{s['published_amis']} published AMIs under {s['prefix']}",
        f"on a published golden AMI: {s['published']}, not: {s['not_published']}",
        f"IMDSv1 allowed: {s['imdsv1_allowed']}; hop limit > 1: {s['hop_limit_over_1']}",
        f"instances with findings: {s['with_findings']} ({s['findings']} findings)",
    ]
    if skipped:
        lines.append(f"skipped: {len(skipped)} (gone during the audit or no EC2 instance; see the log)")
    lines += [f"account {e['account']} not audited: {e['error']}" for e in errors]
    return lines
