# Copyright: the ecs-imds-golden authors
# Apache License 2.0
"""The audit's AWS reads, each in as few calls as the APIs allow: the published AMIs, the ECS
clusters and their container instances, the EC2 instances behind them, the clusters' capacity
providers and Auto Scaling groups, and the account's IMDS defaults.

API calls per account, for C clusters, P capacity providers (other than FARGATE and
FARGATE_SPOT), G Auto Scaling groups, T launch templates and, in a cluster, n container instances:
ceil(C/100) DescribeClusters; ceil(n/100) ListContainerInstances and ceil(n/100)
DescribeContainerInstances per cluster; ceil(N/1000) DescribeInstances for the N EC2
instances of all the clusters together; ceil(P/10) DescribeCapacityProviders; ceil(G/100)
DescribeAutoScalingGroups; T DescribeLaunchTemplateVersions (the API takes one launch
template a call, all its versions at once: golden_ami.audit.launch_templates); 1
GetInstanceMetadataDefaults. Plus one ListClusters page per 100 clusters when no --cluster is
given, and one GetParametersByPath page per 10 parameters, once. With --verify-hosts, the SSM
calls of golden_ami.verify_hosts for the account's running instances.

Every read goes through Reads.reading(): a read that AWS denies, or that still fails after
botocore's retries, becomes an Unread entry (READS says what it leaves unknown) and the walk
goes on without what it would have read. Any other error ends the account's walk, as before.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
from collections.abc import Iterator

import botocore.exceptions

from golden_ami.audit.model import (
    UNKNOWN_METADATA,
    UNKNOWN_PUBLISHED,
    AccountDefaults,
    Instance,
    Published,
    Unread,
    Walk,
    block_attribute,
)
from golden_ami.aws import LOG, Aws, NotFoundError, batches

# API maxima. ListClusters and ListContainerInstances: maxResults 1-100.
# DescribeContainerInstances and DescribeClusters: "a list of up to 100" (botocore's docs).
# DescribeCapacityProviders: up to 100 names a call, at most 10 results a page (maxResults 1-10).
# DescribeAutoScalingGroups: MaxRecords at most 100, and as many names.
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

ASG_TAG = "aws:autoscaling:groupName"
TEMPLATE_ID_TAG = "aws:ec2launchtemplate:id"
TEMPLATE_VERSION_TAG = "aws:ec2launchtemplate:version"

AMI_ID = re.compile(r"ami-[0-9a-f]{8,17}")
INSTANCE_ID = re.compile(r"\bi-[0-9a-f]{8,17}\b")
IMDS_IAM_ROLES = "ecs.capability.imds-iam-roles"  # the agent serves task credentials through IMDS

# Each read of the audit, by operation: its IAM action's service and what the audit does not
# know without it. iam/README.md has the same table for the people who write the policies.
READS: dict[str, tuple[str, str]] = {
    "GetParametersByPath": (
        "ssm",
        "which AMIs are published: no instance or launch template is judged on being on a published "
        "golden AMI, nor on hop limit 2 or unset options, which only the golden AMI makes fine",
    ),
    "ListClusters": ("ecs", "which clusters the region has: none was audited (--cluster names them)"),
    "DescribeClusters": (
        "ecs",
        "the clusters' capacity providers: launch templates reached only through them were not audited",
    ),
    "ListContainerInstances": ("ecs", "the container instances of these clusters: none was audited"),
    "DescribeContainerInstances": (
        "ecs",
        "these clusters' container instances (their EC2 instances and attributes): they were not audited",
    ),
    "DescribeInstances": (
        "ec2",
        "the EC2 instances behind the container instances: their AMI and metadata options were not "
        "judged, and their Auto Scaling groups not followed",
    ),
    "DescribeCapacityProviders": (
        "ecs",
        "the Auto Scaling groups of the clusters' capacity providers: launch templates reached only "
        "through them were not audited",
    ),
    "DescribeAutoScalingGroups": (
        "autoscaling",
        "the Auto Scaling groups behind the clusters: no launch template was audited",
    ),
    "DescribeLaunchTemplateVersions": (
        "ec2",
        "these launch templates' versions, images and MetadataOptions: they were not judged",
    ),
    "GetInstanceMetadataDefaults": (
        "ec2",
        "the account's IMDS defaults: neither they nor the launch template options left to them were judged",
    ),
    "DescribeInstanceInformation": ("ssm", "which hosts are SSM managed nodes: --verify-hosts checked none"),
    "SendCommand": ("ssm", "the block check was not sent: --verify-hosts checked no host"),
    "ListCommandInvocations": ("ssm", "the hosts' check results: --verify-hosts checked no host"),
}

# Errors that end one read, not the audit. Denied: IAM, an SCP or a permissions boundary said
# no (EC2's code; Auto Scaling's and STS's; ECS's and SSM's).
DENIED = frozenset({"UnauthorizedOperation", "AccessDenied", "AccessDeniedException"})
# Retried by botocore (botocore.retries.standard's throttling and transient codes, the services'
# own 5xx codes, and any 429 or 5xx answer), so an error that reaches us has outlasted every
# retry of golden_ami.aws.RETRIES.
RETRIED = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottledException",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "TransactionInProgressException",
        "RequestLimitExceeded",
        "BandwidthLimitExceeded",
        "LimitExceededException",
        "RequestThrottled",
        "SlowDown",
        "PriorRequestNotComplete",
        "EC2ThrottledException",
        "RequestTimeout",
        "RequestTimeoutException",
        "InternalError",
        "InternalFailure",
        "InternalServerError",
        "ServerException",
        "ServiceUnavailable",
        "ServiceUnavailableException",
    }
)
RETRIED_STATUS = frozenset({429, 500, 502, 503, 504})


def error_code(error: botocore.exceptions.ClientError) -> str:
    return error.response.get("Error", {}).get("Code", "")


def unreadable(error: botocore.exceptions.ClientError) -> bool:
    """An error that leaves one read unmade rather than the account unaudited: a denial, or
    what botocore retries. Expired or rejected credentials, and everything else, are not."""
    status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return error_code(error) in DENIED | RETRIED or status in RETRIED_STATUS


@dataclasses.dataclass
class Read:
    """One read through Reads.reading(): unread is set when it could not be made."""

    unread: Unread | None = None


class Reads:
    """The one way the audit reads AWS: each read runs in `with reads.reading(): ...`. A read
    that AWS denies or that outlasts botocore's retries stops there, is recorded (once per call
    and error code, with the resources it was for) and the audit goes on; the block's own
    defaults stand for what it would have read. Other errors go through."""

    def __init__(self, unread: list[Unread], tag: str = ""):
        self.unread, self.tag = unread, tag

    @contextlib.contextmanager
    def reading(self, resource: str | None = None) -> Iterator[Read]:
        read = Read()
        try:
            yield read
        except botocore.exceptions.ClientError as exc:
            if not unreadable(exc):
                raise
            read.unread = self._record(exc, resource)

    def _record(self, exc: botocore.exceptions.ClientError, resource: str | None) -> Unread:
        service, unknown = READS.get(exc.operation_name, ("aws", "what it reads: not audited"))
        call, code = f"{service}:{exc.operation_name}", error_code(exc)
        entry = next((u for u in self.unread if (u.call, u.code) == (call, code)), None)
        if entry is None:
            message = exc.response.get("Error", {}).get("Message", "")
            entry = Unread(call=call, code=code, unknown=unknown, message=message)
            self.unread.append(entry)
            LOG.warning("%s%s unread (%s): %s", self.tag, call, code, unknown)
        if resource and resource not in entry.resources:
            entry.resources.append(resource)
        return entry


def cluster_name(cluster: str) -> str:
    return cluster.rsplit("/", 1)[-1]


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


def cluster_arns(ecs) -> list[str]:
    """Every ECS cluster of the account and region."""
    pages = ecs.get_paginator("list_clusters").paginate(PaginationConfig={"PageSize": LIST_PAGE})
    return [arn for page in pages for arn in page["clusterArns"]]


def _container_instance_arns(ecs, cluster: str, where: str) -> list[str]:
    pages = ecs.get_paginator("list_container_instances")
    try:
        return [
            arn
            for page in pages.paginate(cluster=cluster, PaginationConfig={"PageSize": LIST_PAGE})
            for arn in page["containerInstanceArns"]
        ]
    except botocore.exceptions.ClientError as exc:
        if error_code(exc) == "ClusterNotFoundException":
            raise NotFoundError(f"no ECS cluster {cluster_name(cluster)!r} in {where}") from exc
        raise


def cluster_providers(
    ecs, clusters: list[str], named: bool, where: str
) -> tuple[dict[str, list[str]], str | None]:
    """The capacity providers of each cluster, by name, and the clusters' account. Named
    clusters must exist and be active."""
    providers: dict[str, list[str]] = {}
    missing: list[str] = []
    account = None
    for batch in batches(clusters, ECS_BATCH):
        response = ecs.describe_clusters(clusters=batch)
        missing += [cluster_name(f.get("arn", "?")) for f in response.get("failures", [])]
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


def container_instances(ecs, clusters: list[str], walk: Walk, label: str | None, where: str, reads: Reads):
    """(cluster name, container instance) for each container instance of the clusters; those
    gone between the list and the describe are skipped on the walk, those of an unread list or
    describe are left out (the Unread names their cluster)."""
    tag = f"account {label}: " if label else ""
    members: list[tuple[str, dict]] = []
    for cluster in clusters:
        name = cluster_name(cluster)
        arns: list[str] = []
        with reads.reading(name):
            arns = _container_instance_arns(ecs, cluster, where)
            LOG.info("%scluster %s: %d container instances", tag, name, len(arns))
        for batch in batches(arns, ECS_BATCH):
            with reads.reading(name):
                response = ecs.describe_container_instances(cluster=cluster, containerInstances=batch)
                members += [(name, ci) for ci in response.get("containerInstances", [])]
                for failure in response.get("failures", []):
                    walk.skip(label, name, failure.get("arn", "?"), failure.get("reason", "?"))
    return members


def _ec2_instances(ec2, ids: list[str], tag: str, reads: Reads):
    """EC2 instances by ID, in batches of EC2_BATCH, the IDs EC2 no longer knows, and
    {ID: Unread} for those of a batch that could not be read."""
    pages = ec2.get_paginator("describe_instances")
    found: dict[str, dict] = {}
    gone: set[str] = set()
    unread: dict[str, Unread] = {}
    for batch in batches(ids, EC2_BATCH):
        LOG.debug("%sDescribeInstances for %d instances", tag, len(batch))
        with reads.reading() as read:
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
                    if error_code(exc) != "InvalidInstanceID.NotFound" or not missing:
                        raise
                    gone |= missing
                    batch = [i for i in batch if i not in missing]
        if read.unread:
            unread |= {i: read.unread for i in batch if i not in found}
    gone |= set(ids) - set(found) - set(unread)  # other accounts' instances: left out without an error
    return found, gone, unread


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
    instance.block_attribute = attributes.get(block_attribute()["name"])
    instance.imds_iam_roles = IMDS_IAM_ROLES in attributes
    if details:  # an external (ECS Anywhere) instance has no AMI and no EC2 IMDS
        options = details.get("MetadataOptions", {})
        tags = {t["Key"]: t["Value"] for t in details.get("Tags", [])}
        instance.image_id = details.get("ImageId")
        instance.published = published.judge(instance.image_id)
        if published.unread:
            instance.unknown.append(
                published.unread.leaves(UNKNOWN_PUBLISHED, "whether it runs a published golden AMI")
            )
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


def add_instances(
    ec2, members: list[tuple[str, dict]], walk: Walk, label: str | None, published: Published, reads: Reads
) -> None:
    """An Instance on the walk for each container instance, with the EC2 instance behind it;
    one whose EC2 instance is gone is skipped, one whose EC2 instance is unread is listed with
    its AMI and metadata options unknown."""
    tag = f"account {label}: " if label else ""
    ec2_ids = sorted({ci.get("ec2InstanceId", "") for _, ci in members} - {""})
    ec2_ids = [i for i in ec2_ids if i.startswith("i-")]  # not mi-: ECS Anywhere, no EC2 instance
    if ec2_ids:
        LOG.info("%sdescribing %d EC2 instances", tag, len(ec2_ids))
    described, gone, unread = _ec2_instances(ec2, ec2_ids, tag, reads) if ec2_ids else ({}, set(), {})
    for cluster, ci in members:
        ec2_id = ci.get("ec2InstanceId", "")
        if ec2_id in gone:
            reason = f"EC2 instance {ci['ec2InstanceId']} not found"
            walk.skip(label, cluster, ci["containerInstanceArn"], reason)
            continue
        instance = _instance(cluster, ci, described.get(ec2_id), label, published)
        if ec2_id in unread:
            instance.published = None
            instance.unknown.append(unread[ec2_id].leaves(UNKNOWN_METADATA, "its AMI and metadata options"))
        walk.instances.append(instance)


def provider_groups(ecs, names: list[str], tag: str) -> dict[str, str]:
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


def scaling_groups(autoscaling, names: list[str]) -> dict[str, dict]:
    """The Auto Scaling groups of those names that exist, by name."""
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


def account_defaults(ec2, account: str | None, region: str) -> AccountDefaults:
    """GetInstanceMetadataDefaults: an option left out is no preference (None here)."""
    level = ec2.get_instance_metadata_defaults().get("AccountLevel", {})
    hops = level.get("HttpPutResponseHopLimit")
    return AccountDefaults(
        account=account,
        region=region,
        http_tokens=level.get("HttpTokens"),
        hop_limit=hops if hops is None or hops >= 1 else None,  # -1: no preference
        http_endpoint=level.get("HttpEndpoint"),
        instance_metadata_tags=level.get("InstanceMetadataTags"),
        http_tokens_enforced=level.get("HttpTokensEnforced"),
        managed_by=level.get("ManagedBy"),
    )
