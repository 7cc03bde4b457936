# Copyright: the ecs-imds-golden authors
# Apache License 2.0
"""The audit's policy: from the records of golden_ami.audit.model to findings and notes, each
with the setting to change, the value to give it and where. No AWS call is made here.

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

What an unread read leaves unknown (a record's `unknown` entries, golden_ami.audit.model) is
not judged, neither as a finding nor as fine: with the published AMIs unread, nothing is
judged on being on the golden AMI; with the account defaults unread, a launch template option
left to them is unknown; with an EC2 instance or a launch template version unread, its
metadata options are. What was read is judged as always.
"""

from __future__ import annotations

import dataclasses

from golden_ami import layout, verify_hosts
from golden_ami.audit.model import (
    UNKNOWN_DEFAULTS,
    UNKNOWN_HOP_LIMIT,
    UNKNOWN_HOST_CHECK,
    UNKNOWN_HTTP_TOKENS,
    UNKNOWN_METADATA,
    AccountDefaults,
    Instance,
    Template,
    Unread,
    Walk,
    block_attribute,
    unknown_entry,
    unknown_keys,
)

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
IMDS_TASK_CREDENTIALS = "imds_task_credentials"  # its agent serves task credentials through IMDS
NOTE_KEYS = (HOP_LIMIT_1, ATTRIBUTE_MISSING, IMDS_TASK_CREDENTIALS)

UNPUBLISHED = "not on a published golden AMI"
IMDSV1 = "IMDSv1 allowed (HttpTokens optional)"
HOP_1_NOTE = "hop limit 1: allowlisted bridge daemons get no IMDSv2 token (they need 2)"

TOKENS = "HttpTokens"
HOPS = "HttpPutResponseHopLimit"
_CLI_FLAGS = {TOKENS: "--http-tokens", HOPS: "--http-put-response-hop-limit"}


def _finding(key: str, message: str, setting: str, value, remediation: str) -> dict:
    return {"key": key, "message": message, "setting": setting, "value": value, "remediation": remediation}


def _note(key: str, message: str) -> dict:
    return {"key": key, "message": message}


def imds_findings(
    tokens, hops, endpoint, golden: bool | None, fix, setting, unknown=()
) -> tuple[list[dict], list[dict]]:
    """Findings and notes for one set of metadata options, by the threat model's table.

    tokens, hops, endpoint: the values in force; None where nothing sets them (a launch
    template that leaves them to the AMI, an account default of no preference). golden:
    whether a published golden AMI, and so the host block, stands behind them; None for the
    account defaults, which apply to every AMI, and where the published AMIs are unread: then
    only what is a finding on any AMI is one. unknown: the options (TOKENS, HOPS) whose value
    is not known, left unjudged. fix(option, value): the remediation; setting(option): the
    name of the setting to change.
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
    if TOKENS not in unknown:  # an unknown option is neither a finding nor fine
        if tokens == "optional":
            found(IMDSV1_ALLOWED, IMDSV1, TOKENS, "required")
        elif tokens is None and golden is False:
            message = "HttpTokens not set: left to the AMI (IMDSv1 allowed unless it is imds_support v2.0)"
            found(HTTP_TOKENS_UNSET, message, TOKENS, "required")
    if HOPS not in unknown:
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


def evaluate_defaults(defaults: AccountDefaults) -> None:
    """The account's IMDS defaults: an option left at no preference is no finding; unread
    defaults are not judged."""

    region = defaults.region
    if UNKNOWN_DEFAULTS in unknown_keys(defaults):
        return

    def fix(option, value):
        return f"aws ec2 modify-instance-metadata-defaults --region {region} {_CLI_FLAGS[option]} {value}"

    defaults.findings, defaults.notes = imds_findings(
        defaults.http_tokens,
        defaults.hop_limit,
        defaults.http_endpoint,
        None,
        fix,
        lambda option: f"account default {option}",
    )


def template_where(template: Template) -> str:
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


def evaluate_template(template: Template, defaults: AccountDefaults, prefix: str) -> None:
    """A launch template version: its own MetadataOptions, else the account default, else the
    AMI's (a golden AMI is imds_support v2.0: tokens required, hop limit 2). An option left to
    unread account defaults is unknown, and not judged."""
    if template.error or UNKNOWN_METADATA in unknown_keys(template):
        return
    unread = next((u for u in defaults.unknown if u["key"] == UNKNOWN_DEFAULTS), None)
    unjudged = set()
    for option, own, default, golden_value, key, name in (
        ("http_tokens", template.http_tokens, defaults.http_tokens, "required", UNKNOWN_HTTP_TOKENS, TOKENS),
        ("hop_limit", template.hop_limit, defaults.hop_limit, 2, UNKNOWN_HOP_LIMIT, HOPS),
    ):
        if own is not None:
            value, source = own, "launch template"
        elif unread:
            value, source = None, "account default (unread)"
            unjudged.add(name)
            what = f"{name}, left to the account default"
            template.unknown.append(unknown_entry(key, what, unread["call"], unread["code"]))
        elif default is not None:
            value, source = default, "account default"
        elif template.published:
            value, source = golden_value, "golden AMI (imds_support v2.0)"
        else:
            value, source = None, "the AMI"
        setattr(template, f"effective_{option}", value)
        template.effective_from[option] = source
    endpoint = template.http_endpoint or defaults.http_endpoint
    where = template_where(template)

    def fix(option, value):
        return f"set {_metadata_option(option)}={value} in {where}"

    template.findings, template.notes = imds_findings(
        template.effective_http_tokens,
        template.effective_hop_limit,
        endpoint,
        template.published,
        fix,
        _metadata_option,
        unjudged,
    )
    if template.published is False:
        template.findings.insert(0, _not_published(prefix, where))


def instance_where(instance: Instance, of_group: dict[str, Template]) -> str | None:
    """Where an instance's settings are changed for good: its group's launch template version
    (recorded on the instance), else the one EC2 tagged it with."""
    record = of_group.get(instance.auto_scaling_group or "")
    if record and record.version is not None:
        instance.launch_template = {
            "id": record.launch_template_id,
            "name": record.launch_template_name,
            "version": record.version,
        }
        return template_where(record)
    if instance.launch_template:
        template = instance.launch_template
        return f"a new version of launch template {template['id']} made from version {template['version']}"
    return None


def evaluate_instance(instance: Instance, prefix: str, where: str | None) -> None:
    """One running instance: its own metadata options, with where to change them for good
    (where: its launch template version, when known) and how to change them now. Not judged
    when its EC2 instance is unread; not on being published when the published AMIs are."""
    if UNKNOWN_METADATA in unknown_keys(instance):
        return
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
    if instance.published is False:
        instance.findings.insert(0, _not_published(prefix, where, ", then replace the instance"))


def evaluate_attribute(instance: Instance) -> None:
    """A note for a container instance without the attribute: a task or service that requires
    it (attribute:ecs-imds-block == enforced) is never placed there."""
    attribute = block_attribute()
    on_ec2 = instance.ec2_instance_id.startswith("i-")  # not mi-: ECS Anywhere, no EC2 IMDS
    if on_ec2 and instance.block_attribute != attribute["value"]:
        instance.notes.append(
            _note(
                ATTRIBUTE_MISSING,
                f"no {attribute['name']}={attribute['value']} attribute: its agent did not find the block "
                "live at its start, or the host predates the attribute or is not on the golden AMI",
            )
        )


def evaluate_task_credentials(instance: Instance) -> None:
    """A note for a container instance whose agent serves task credentials through IMDS
    (ecs.capability.imds-iam-roles): whatever reaches IMDS there, an allowlisted daemon network
    included, reads every task's role on the host. The attribute the role registers says only
    that the block is enforced, not whether a network is allowlisted: the note is for every
    such host, and says what an allowlist there would mean."""
    on_ec2 = instance.ec2_instance_id.startswith("i-")
    if on_ec2 and instance.imds_iam_roles and instance.imds_endpoint != "disabled":
        instance.notes.append(
            _note(
                IMDS_TASK_CREDENTIALS,
                "its agent serves task credentials through IMDS (ecs.capability.imds-iam-roles): "
                "a daemon network allowlisted to IMDS (ecs_imds_block_allowed_cidrs) would read every "
                "task's role on this host; allowlist none here, or give those daemons task roles",
            )
        )


def evaluate_walk(walk: Walk, prefix: str, of_group: dict[str, Template]) -> None:
    """Every record of one account's walk: its defaults first, which its launch templates
    inherit; of_group: {Auto Scaling group: the Template of its own specification}."""
    evaluate_defaults(walk.defaults)
    for template in walk.templates:
        evaluate_template(template, walk.defaults, prefix)
    for instance in walk.instances:
        evaluate_instance(instance, prefix, instance_where(instance, of_group))
        evaluate_attribute(instance)
        evaluate_task_credentials(instance)


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


def host_unchecked(instance: Instance, unread: Unread) -> None:
    """--verify-hosts could not run (a read of SSM unread): the host is unknown, not a finding."""
    instance.unknown.append(unread.leaves(UNKNOWN_HOST_CHECK, "whether the IMDS block is live on the host"))
