# Copyright: the ecs-imds-golden authors
# Apache License 2.0
"""The launch template versions the audited clusters' Auto Scaling groups launch: each group's
launch template specifications (its own, or its mixed instances policy's and their overrides),
the versions they name ($Latest, $Default or a number) resolved to numbers, and one Template
record for each version, with the groups, capacity providers and clusters that launch it.

One DescribeLaunchTemplateVersions per launch template: the API takes one template a call and
all the versions the groups name at once. A template whose versions are unread is listed, one
record per version reference, with its MetadataOptions unknown.
"""

from __future__ import annotations

import re
from collections import defaultdict

import botocore.exceptions

from golden_ami.audit.fetch import Reads, error_code
from golden_ami.audit.model import UNKNOWN_METADATA, UNKNOWN_PUBLISHED, Published, Template
from golden_ami.aws import LOG

LAUNCH_TEMPLATE_PAGE = 200  # DescribeLaunchTemplateVersions: MaxResults 1-200


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
        if "NotFound" not in error_code(exc):
            raise
        return [], f"{error_code(exc)}: {exc.response.get('Error', {}).get('Message', '')}".rstrip(": ")


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


def _golden_image(image_id: str | None, published: Published, own_account: bool) -> bool | None:
    """A launch template's ImageId names a published AMI: the AMI ID, or resolve:ssm: of one
    of the published parameters (by name only in the caller's own account, where the name
    resolves; by ARN anywhere). None when the published AMIs are unread."""
    if not image_id:
        return False
    if published.unread:
        return None
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


def _template_key(spec: dict) -> tuple[str, str]:
    if spec.get("LaunchTemplateId"):
        return ("id", spec["LaunchTemplateId"])
    return ("name", spec["LaunchTemplateName"])


def _template(account, key, number, version: dict | None, names, published: Published, own: bool):
    data = (version or {}).get("LaunchTemplateData", {})
    options = data.get("MetadataOptions", {})
    record = Template(
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
    if record.published is None:
        record.unknown.append(
            published.unread.leaves(UNKNOWN_PUBLISHED, "whether it launches a published golden AMI")
        )
    return record


def templates(
    ec2, groups: dict[str, dict], links: dict, account, published: Published, own: bool, reads: Reads
):
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

    records: dict[tuple, Template] = {}
    by_reference: dict[tuple, Template] = {}
    for key in sorted(references):
        wanted = sorted(references[key])
        versions, error = [], None
        with reads.reading(names.get(key) or key[1]) as read:
            versions, error = _template_versions(ec2, key, wanted)
        resolved = _resolve(wanted, versions)
        for reference in wanted:
            version = resolved.get(reference)
            number = version["VersionNumber"] if version else None
            record = records.get((key, number, None if version else reference))
            if record is None:
                record = _template(account, key, number, version, names, published, own)
                if read.unread:
                    record.published = None  # no image read
                    record.unknown.append(
                        read.unread.leaves(UNKNOWN_METADATA, "its image and MetadataOptions")
                    )
                else:
                    record.error = None if version else error or f"version {reference} not found"
                records[(key, number, None if version else reference)] = record
            by_reference[(key, reference)] = record
            record.referenced_as = sorted({*record.referenced_as, reference})
            for group in references[key][reference]:
                record.auto_scaling_groups = sorted({*record.auto_scaling_groups, group})
                record.capacity_providers = sorted(
                    {*record.capacity_providers, *links["providers"].get(group, ())}
                )
                record.clusters = sorted({*record.clusters, *links["clusters"].get(group, ())})
    for record in records.values():
        if record.error:
            LOG.warning("launch template %s: %s", record.label, record.error)
    of_group = {group: by_reference[reference] for group, reference in first.items()}
    return list(records.values()), configurations, of_group
