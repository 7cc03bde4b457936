# Copyright: the ecs-imds-golden authors
# Apache License 2.0
"""The audit's records: the published AMIs, each container instance, each launch template
version, an account's IMDS defaults, each read the audit could not make, and what one
account's walk found. The --json output is these records as dataclasses.asdict gives them."""

from __future__ import annotations

import dataclasses
import functools

from golden_ami.aws import LOG

# What a record could not be judged on, because a read it needed was not made: the keys of
# its `unknown` entries, stable as the finding keys are.
UNKNOWN_PUBLISHED = "published"  # the published AMIs unread: on a golden AMI or not
UNKNOWN_METADATA = "metadata_options"  # its EC2 instance or launch template version unread
UNKNOWN_HTTP_TOKENS = "http_tokens"  # left to the account default, which is unread
UNKNOWN_HOP_LIMIT = "hop_limit"  # the same, for the hop limit
UNKNOWN_DEFAULTS = "account_defaults"  # the account's IMDS defaults themselves
UNKNOWN_HOST_CHECK = "host_check"  # --verify-hosts could not run its check
UNKNOWN_KEYS = (
    UNKNOWN_PUBLISHED,
    UNKNOWN_METADATA,
    UNKNOWN_HTTP_TOKENS,
    UNKNOWN_HOP_LIMIT,
    UNKNOWN_DEFAULTS,
    UNKNOWN_HOST_CHECK,
)


@dataclasses.dataclass
class Unread:
    """A read the audit could not make: AWS denied it, or it still failed after botocore's
    retries. What it leaves unknown is not judged; the rest of the audit stands."""

    call: str  # the IAM action, e.g. ec2:GetInstanceMetadataDefaults
    code: str  # AWS's error code, e.g. UnauthorizedOperation
    unknown: str  # what the audit does not know without it: one sentence
    message: str = ""  # AWS's own message
    account: str | None = None  # None: the caller's own account, or not known
    resources: list[str] = dataclasses.field(default_factory=list)  # the clusters, templates it was for

    def leaves(self, key: str, what: str) -> dict:
        """A record's `unknown` entry: what this read leaves unknown about the record."""
        return unknown_entry(key, what, self.call, self.code)


def unknown_entry(key: str, what: str, call: str, code: str) -> dict:
    """{key, message, call, code}: what a record is not judged on, and the unread call why."""
    return {"key": key, "message": f"{what}: {call} unread ({code})", "call": call, "code": code}


@dataclasses.dataclass
class Published:
    """What `publish` wrote under the prefix: the AMI IDs and the parameters that hold them;
    unread when they could not be read (then no AMI is known to be published, or not)."""

    amis: set[str] = dataclasses.field(default_factory=set)
    parameters: set[str] = dataclasses.field(default_factory=set)
    unread: Unread | None = None

    def judge(self, ami: str | None) -> bool | None:
        """Whether the AMI is published; None when the published AMIs are unknown."""
        return None if self.unread else ami in self.amis

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
    published: bool | None = False  # None: unknown (the published AMIs unread)
    imdsv2_required: bool | None = None
    hop_limit: int | None = None
    imds_endpoint: str | None = None
    state: str | None = None
    auto_scaling_group: str | None = None
    launch_template: dict | None = None  # {"id", "name", "version"}: where its settings live
    host_check: dict | None = None  # --verify-hosts: {"status", "detail", "command_id"}
    block_attribute: str | None = None  # the container instance's ecs-imds-block attribute
    imds_iam_roles: bool = False  # its agent advertises ecs.capability.imds-iam-roles
    findings: list[dict] = dataclasses.field(default_factory=list)
    notes: list[dict] = dataclasses.field(default_factory=list)
    unknown: list[dict] = dataclasses.field(default_factory=list)  # what is not judged: unknown_entry


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
    published: bool | None = False  # None: unknown (the published AMIs or the version unread)
    http_tokens: str | None = None  # as the version sets them; None: not set
    hop_limit: int | None = None
    http_endpoint: str | None = None
    effective_http_tokens: str | None = None  # what a launch gets; None: up to the AMI
    effective_hop_limit: int | None = None
    effective_from: dict = dataclasses.field(default_factory=dict)  # option -> where it comes from
    error: str | None = None
    findings: list[dict] = dataclasses.field(default_factory=list)
    notes: list[dict] = dataclasses.field(default_factory=list)
    unknown: list[dict] = dataclasses.field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.launch_template_name or '?'} ({self.launch_template_id or '?'})"


@dataclasses.dataclass
class AccountDefaults:
    """An account's IMDS defaults in one region (GetInstanceMetadataDefaults): what a launch
    gets for an option that neither its launch template nor the launch sets. None is no
    preference: the AMI's own setting applies."""

    account: str | None
    region: str
    http_tokens: str | None = None
    hop_limit: int | None = None
    http_endpoint: str | None = None
    instance_metadata_tags: str | None = None
    http_tokens_enforced: str | None = None
    managed_by: str | None = None
    findings: list[dict] = dataclasses.field(default_factory=list)
    notes: list[dict] = dataclasses.field(default_factory=list)
    unknown: list[dict] = dataclasses.field(default_factory=list)  # unread: account_defaults


@dataclasses.dataclass
class Walk:
    """What one account's walk found."""

    clusters: int = 0
    instances: list[Instance] = dataclasses.field(default_factory=list)
    templates: list[Template] = dataclasses.field(default_factory=list)
    defaults: AccountDefaults | None = None  # read last, once the clusters are walked
    launch_configurations: list[dict] = dataclasses.field(default_factory=list)
    skipped: list[dict] = dataclasses.field(default_factory=list)
    unread: list[Unread] = dataclasses.field(default_factory=list)

    def skip(self, account: str | None, cluster: str, arn: str, reason: str) -> None:
        """A container instance that cannot be audited: gone since it was listed, or its EC2 instance."""
        LOG.warning(
            "%scluster %s: skipped %s: %s", f"account {account}: " if account else "", cluster, arn, reason
        )
        self.skipped.append({"account": account, "cluster": cluster, "arn": arn, "reason": reason})


@functools.cache  # read once, not once per container instance
def block_attribute() -> dict:
    """The attribute the role has the agent register: {"name", "value"}."""
    from golden_ami.boothook import names

    return names()["attribute"]


def unknown_keys(record) -> set[str]:
    """The keys of what a record could not be judged on."""
    return {entry["key"] for entry in record.unknown}
