# Copyright: the ecs-imds-golden authors
# Apache License 2.0
"""What the audit hands back: the records of every walked account in a stable order, their
summary, the data of --json, and the text report (a table of container instances, one of
launch template versions, the account defaults and the summary's lines)."""

from __future__ import annotations

import dataclasses

from golden_ami import verify_hosts
from golden_ami.audit.findings import (
    ATTRIBUTE_MISSING,
    FINDING_KEYS,
    HOP_LIMIT_1,
    HOP_LIMIT_2_WITHOUT_BLOCK,
    HOP_LIMIT_OVER_2,
    IMDSV1_ALLOWED,
)
from golden_ami.audit.model import AccountDefaults, Instance, Template, Walk, block_attribute
from golden_ami.output import table

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


def render(
    walks: dict[str | None, Walk],
    errors: list[dict],
    *,
    region: str,
    prefix: str,
    published_amis: int,
    accounts: list[str] | None,
    verify: bool,
) -> tuple[dict, list[str]]:
    """The data of --json and the text report of the walks. accounts: those of --accounts,
    None for the caller's own; verify: whether --verify-hosts ran."""
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
        "account_defaults_with_findings": sum(bool(d.findings) for d in defaults),
        "findings_by_key": {
            key: sum(f["key"] == key for r in records for f in r.findings) for key in FINDING_KEYS
        },
        "skipped": len(skipped),
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
    }
    multi = bool(accounts)
    lines = _tables(instances, templates, configurations, multi)
    lines += _summary(defaults, summary, multi, skipped, errors)
    return data, lines


def _effective(value, source: str | None) -> str:
    """A launch template's option in force, and where it comes from when not from the template."""
    return "not set" if value is None else f"{value}{_SOURCES.get(source or '', '')}"


def _version(template: Template) -> str:
    """The version number, and how the groups name it when not by that number."""
    if template.version is None:
        return "-"
    names = [r for r in template.referenced_as if r != str(template.version)]
    return f"{template.version} ({', '.join(names)})" if names else str(template.version)


def _tables(instances: list[Instance], templates: list[Template], configurations, multi: bool) -> list[str]:
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
    return lines


def _summary(defaults: list[AccountDefaults], summary: dict, multi: bool, skipped, errors) -> list[str]:
    lines = [""]
    for d in defaults:
        shown = ", ".join(
            f"{name} {'no preference' if value is None else value}"
            for name, value in (
                ("HttpTokens", d.http_tokens),
                ("hop limit", d.hop_limit),
                ("endpoint", d.http_endpoint),
            )
        )
        account = f"account {d.account} " if multi else ""
        found = "; ".join(f["message"] for f in d.findings)
        lines.append(f"{account}IMDS defaults ({d.region}): {shown}{'; ' + found if found else ''}")
    s = summary
    accounts = f"{s['accounts']} accounts, " if multi else ""
    attribute = block_attribute()
    lines += [
        f"{s['instances']} container instances in {accounts}{s['clusters']} clusters ({s['region']}); "
        f"{s['published_amis']} published AMIs under {s['prefix']}",
        f"on a published golden AMI: {s['published']}, not: {s['not_published']}",
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
    if skipped:
        lines.append(f"skipped: {len(skipped)} (gone during the audit or no EC2 instance; see the log)")
    lines += [f"account {e['account']} not audited: {e['error']}" for e in errors]
    return lines
