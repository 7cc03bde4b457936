# Copyright: the ecs-imds-golden authors
# Apache License 2.0
"""What the audit hands back: the records of every walked account in a stable order, their
summary, the data of --json, and the text report (what it could not read first, when it could
not read everything; a table of container instances, one of launch template versions, the
account defaults and the summary's lines)."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from golden_ami import verify_hosts
from golden_ami.audit.findings import (
    ATTRIBUTE_MISSING,
    FINDING_KEYS,
    HOP_LIMIT_1,
    HOP_LIMIT_2_WITHOUT_BLOCK,
    HOP_LIMIT_OVER_2,
    IMDS_TASK_CREDENTIALS,
    IMDSV1_ALLOWED,
)
from golden_ami.audit.model import (
    UNKNOWN_HOP_LIMIT,
    UNKNOWN_HTTP_TOKENS,
    UNKNOWN_KEYS,
    UNKNOWN_METADATA,
    block_attribute,
    unknown_keys,
)
from golden_ami.output import table

if TYPE_CHECKING:  # annotations only
    from golden_ami.audit.model import AccountDefaults, Instance, Template, Unread, Walk

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

_SOURCES = {
    "launch template": "",
    "account default": " (account default)",
    "golden AMI (imds_support v2.0)": " (AMI)",
}


def _count(records, key: str) -> int:
    return sum(any(f["key"] == key for f in r.findings) for r in records)


def _noted(records, key: str) -> int:
    return sum(any(n["key"] == key for n in r.notes) for r in records)


def render(
    walks: dict[str | None, Walk],
    errors: list[dict],
    unread: list[Unread],
    *,
    region: str,
    prefix: str,
    published_amis: int | None,
    accounts: list[str] | None,
    verify: bool,
) -> tuple[dict, list[str]]:
    """The data of --json and the text report of the walks. unread: every read that could not
    be made, the caller's and the walks'; accounts: those of --accounts, None for the caller's
    own; verify: whether --verify-hosts ran."""
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
    defaults = sorted((walk.defaults for walk in walks.values()), key=lambda d: d.account or "")
    configurations = [c for walk in walks.values() for c in walk.launch_configurations]
    skipped = [s for walk in walks.values() for s in walk.skipped]
    unread = sorted(unread, key=lambda u: (u.account or "", u.call, u.code))
    with_findings = [i for i in instances if i.findings]
    records = [*instances, *templates, *defaults]
    summary = {
        "region": region,
        "prefix": prefix,
        "published_amis": published_amis,
        "accounts": len(accounts) if accounts else 1,
        "failed_accounts": len(errors),
        "clusters": sum(walk.clusters for walk in walks.values()),
        "instances": len(instances),
        "published": sum(i.published is True for i in instances),
        "not_published": sum(i.published is False for i in instances),
        "published_unknown": sum(i.published is None for i in instances),
        "imdsv1_allowed": _count(instances, IMDSV1_ALLOWED),
        "hop_limit_over_2": _count(instances, HOP_LIMIT_OVER_2),
        "hop_limit_2_without_block": _count(instances, HOP_LIMIT_2_WITHOUT_BLOCK),
        "hop_limit_1": _noted(instances, HOP_LIMIT_1),
        "attribute_missing": _noted(instances, ATTRIBUTE_MISSING),
        "imds_task_credentials": _noted(instances, IMDS_TASK_CREDENTIALS),
        "with_findings": len(with_findings),
        "findings": sum(len(i.findings) for i in instances),
        "launch_templates": len(templates),
        "launch_templates_with_findings": sum(bool(t.findings) for t in templates),
        "launch_template_findings": sum(len(t.findings) for t in templates),
        "launch_configurations": len(configurations),
        "account_defaults_with_findings": sum(bool(d.findings) for d in defaults),
        "findings_by_key": {
            key: sum(f["key"] == key for r in records for f in r.findings) for key in FINDING_KEYS
        },
        "skipped": len(skipped),
        "incomplete": bool(unread),
        "unread": len(unread),
        "unknown_by_key": {
            key: sum(any(u["key"] == key for u in r.unknown) for r in records) for key in UNKNOWN_KEYS
        },
        "verify_hosts": {
            status: sum((i.host_check or {}).get("status") == status for i in instances)
            for status in verify_hosts.STATUSES
        }
        if verify
        else None,
    }
    data = {
        "instances": [dataclasses.asdict(i) for i in instances],
        "launch_templates": [dataclasses.asdict(t) for t in templates],
        "launch_configurations": configurations,
        "account_defaults": [dataclasses.asdict(d) for d in defaults],
        "summary": summary,
        "skipped": skipped,
        "errors": errors,
        "unread": [dataclasses.asdict(u) for u in unread],
    }
    multi = bool(accounts)
    lines = _incomplete(unread, multi)
    lines += _tables(instances, templates, configurations, multi)
    lines += _summary(defaults, summary, multi, skipped, errors)
    return data, lines


def _incomplete(unread: list[Unread], multi: bool) -> list[str]:
    """The report's first lines when a read could not be made: that, and each such read."""
    if not unread:
        return []
    many = len(unread) > 1
    lines = [
        f"INCOMPLETE: {len(unread)} read{'s' if many else ''} could not be made; what "
        f"{'they leave' if many else 'it leaves'} unknown is not judged, the rest of the audit stands"
    ]
    for u in unread:
        where = (f"account {u.account}: " if u.account else "the caller's account: ") if multi else ""
        for_ = f" for {', '.join(u.resources)}" if u.resources else ""
        lines.append(f"unread: {where}{u.call} ({u.code}){for_}: {u.unknown}")
    return [*lines, ""]


def _effective(value, source: str | None, unknown: bool = False) -> str:
    """A launch template's option in force, and where it comes from when not from the template."""
    if unknown:
        return "unknown"
    return "not set" if value is None else f"{value}{_SOURCES.get(source or '', '')}"


def _judged(record) -> str:
    """The FINDINGS column: the findings' messages, then what is unknown, or -."""
    return "; ".join(
        [*(f["message"] for f in record.findings), *(f"unknown: {u['message']}" for u in record.unknown)]
    )


def _or_unknown(value) -> str:
    return "unknown" if value is None else str(value)


def _yes_no(value: bool | None) -> str:
    return {True: "yes", False: "no", None: "unknown"}[value]


def _version(template: Template) -> str:
    """The version number, and how the groups name it when not by that number."""
    if template.version is None:
        return "-"
    names = [r for r in template.referenced_as if r != str(template.version)]
    return f"{template.version} ({', '.join(names)})" if names else str(template.version)


def _tables(instances: list[Instance], templates: list[Template], configurations, multi: bool) -> list[str]:
    header = list(HEADER)
    rows = []
    for i in instances:
        unread = UNKNOWN_METADATA in unknown_keys(i)
        rows.append([
            i.cluster,
            i.container_instance,
            i.ec2_instance_id,
            "unknown" if unread else i.image_id or "-",
            _yes_no(i.published),
            "unknown" if unread else {True: "required", False: "optional", None: "-"}[i.imdsv2_required],
            "unknown" if unread else "-" if i.hop_limit is None else str(i.hop_limit),
            _judged(i) or "-",
        ])  # fmt: skip
    if multi:
        header.insert(0, "ACCOUNT")
        for row, instance in zip(rows, instances, strict=True):
            row.insert(0, instance.account)
    lines = table(rows, header) if rows else ["no container instances found"]

    if templates:
        header = list(TEMPLATE_HEADER)
        rows = []
        for t in templates:
            unknown = unknown_keys(t)
            unread = UNKNOWN_METADATA in unknown
            rows.append([
                t.label,
                _version(t),
                ", ".join(t.auto_scaling_groups),
                "unknown" if unread else t.image_id or "-",
                _yes_no(t.published),
                _effective(t.effective_http_tokens, t.effective_from.get("http_tokens"),
                           bool(unknown & {UNKNOWN_METADATA, UNKNOWN_HTTP_TOKENS})),
                _effective(t.effective_hop_limit, t.effective_from.get("hop_limit"),
                           bool(unknown & {UNKNOWN_METADATA, UNKNOWN_HOP_LIMIT})),
                t.error or _judged(t) or "-",
            ])  # fmt: skip
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
    return lines


def _summary(defaults: list[AccountDefaults], summary: dict, multi: bool, skipped, errors) -> list[str]:
    lines = [""]
    for d in defaults:
        account = f"account {d.account} " if multi else ""
        if d.unknown:
            lines.append(f"{account}IMDS defaults ({d.region}): unknown ({d.unknown[0]['call']} unread)")
            continue
        shown = ", ".join(
            f"{name} {'no preference' if value is None else value}"
            for name, value in (
                ("HttpTokens", d.http_tokens),
                ("hop limit", d.hop_limit),
                ("endpoint", d.http_endpoint),
            )
        )
        found = "; ".join(f["message"] for f in d.findings)
        lines.append(f"{account}IMDS defaults ({d.region}): {shown}{'; ' + found if found else ''}")
    s = summary
    accounts = f"{s['accounts']} accounts, " if multi else ""
    attribute = block_attribute()
    lines += [
        f"{s['instances']} container instances in {accounts}{s['clusters']} clusters ({s['region']}); "
        f"{_or_unknown(s['published_amis'])} published AMIs under {s['prefix']}",
        f"on a published golden AMI: {s['published']}, not: {s['not_published']}"
        + (f", unknown: {s['published_unknown']}" if s["published_unknown"] else ""),
        f"IMDSv1 allowed: {s['imdsv1_allowed']}; hop limit > 2: {s['hop_limit_over_2']}; "
        f"hop limit 2 without the host block: {s['hop_limit_2_without_block']}",
        f"hop limit 1: {s['hop_limit_1']} (fine, but allowlisted bridge daemons need 2 for an IMDSv2 token)",
        f"instances with findings: {s['with_findings']} ({s['findings']} findings)",
        f"without the {attribute['name']}={attribute['value']} attribute: {s['attribute_missing']}"
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
    if s["imds_task_credentials"]:
        lines.append(
            f"serving task credentials through IMDS: {s['imds_task_credentials']} (an allowlisted daemon "
            "network there would read every task's role)"
        )
    if skipped:
        lines.append(f"skipped: {len(skipped)} (gone during the audit or no EC2 instance; see the log)")
    lines += [f"account {e['account']} not audited: {e['error']}" for e in errors]
    return lines
