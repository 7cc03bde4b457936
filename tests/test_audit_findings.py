# Copyright: the ecs-imds-golden authors
# Apache License 2.0
"""golden-ami audit's policy (golden_ami.audit.findings) against docs/threat-model.md, without
AWS or moto: the table "What the audit sees | Verdict" is read from the markdown and each of
its rows is evaluated, for running instances and launch template versions alike.

The table is the specification: INTERPRETATIONS says what records each row describes (the
AMI and the metadata options) and which finding its "finding" means; the verdict itself comes
from the markdown. A row added to the table, or reworded, fails until it is interpreted here;
an interpretation whose row is gone fails too. The account defaults have no table, only the
paragraph below it, whose cases are spelled out at the end.
"""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

import pytest

from golden_ami.audit import findings
from golden_ami.audit.model import AccountDefaults, Instance, Template

THREAT_MODEL = Path(__file__).resolve().parents[1] / "docs" / "threat-model.md"
HEADER = ("What the audit sees", "Verdict")
PREFIX = "/golden-ami/ecs"
REGION = "eu-west-1"
INSTANCE, TEMPLATE = "instance", "launch template"


def audit_table() -> dict[str, str]:
    """{what the audit sees: verdict}: the rows of the threat model's audit table."""
    lines = iter(THREAT_MODEL.read_text().splitlines())
    for line in lines:
        if tuple(cell.strip() for cell in line.strip().strip("|").split("|")) == HEADER:
            break
    else:
        raise AssertionError(f"{THREAT_MODEL.name} has no table headed {' | '.join(HEADER)}")
    assert set(next(lines).replace("|", "").strip()) <= {"-", " "}, "the header's separator row"
    rows = {}
    for line in itertools.takewhile(lambda text: text.startswith("|"), lines):
        seen, verdict = (cell.strip() for cell in line.strip().strip("|").split("|"))
        rows[seen] = verdict
    return rows


@dataclasses.dataclass(frozen=True)
class Case:
    kind: str  # INSTANCE or TEMPLATE
    golden: bool  # on a published golden AMI, so with the host block behind it
    tokens: str | None  # HttpTokens; None: not set (a launch template only)
    hops: int | None  # the hop limit; None: not set (a launch template only)
    key: str | None = None  # the finding a "finding" verdict means for this case


def cases(kinds, goldens, options, key=None) -> list[Case]:
    return [
        Case(kind, golden, tokens, hops, key)
        for kind, golden, (tokens, hops) in itertools.product(kinds, goldens, options)
    ]


BOTH = (INSTANCE, TEMPLATE)

# What each row describes. Where a row does not name an option, it is set to what is fine
# there (HttpTokens required; a hop limit the row allows), so that only the row's own subject
# can make a finding.
INTERPRETATIONS: dict[str, list[Case]] = {
    "IMDSv1 allowed (`HttpTokens` optional)": cases(
        BOTH, (True, False), (("optional", 1), ("optional", 2)), findings.IMDSV1_ALLOWED
    ),
    "Hop limit above 2": cases(
        BOTH, (True, False), (("required", 3), ("required", 64)), findings.HOP_LIMIT_OVER_2
    ),
    "Hop limit 2 on an instance or launch template not on a published golden AMI "
    "(no host block stands behind it)": cases(
        BOTH, (False,), (("required", 2),), findings.HOP_LIMIT_2_WITHOUT_BLOCK
    ),
    "Hop limit 2 on a golden AMI": cases(BOTH, (True,), (("required", 2),)),
    "Hop limit 1": cases(BOTH, (True, False), (("required", 1),)),
    "A launch template not on a golden AMI that leaves `HttpTokens` or the hop limit unset "
    "(left to the AMI, which may allow IMDSv1 and set 2)": [
        *cases((TEMPLATE,), (False,), ((None, 1), (None, 2)), findings.HTTP_TOKENS_UNSET),
        *cases((TEMPLATE,), (False,), (("required", None),), findings.HOP_LIMIT_UNSET_WITHOUT_BLOCK),
        Case(TEMPLATE, False, None, None, findings.HTTP_TOKENS_UNSET),
        Case(TEMPLATE, False, None, None, findings.HOP_LIMIT_UNSET_WITHOUT_BLOCK),
    ],
    "Not on a published golden AMI": cases(BOTH, (False,), (("required", 1),), findings.NOT_PUBLISHED),
}


def evaluate(case: Case, defaults: AccountDefaults | None = None) -> Instance | Template:
    """The record the case describes, judged by golden_ami.audit.findings as the audit judges it."""
    defaults = defaults or AccountDefaults(account="111111111111", region=REGION)
    image = "ami-0123456789abcdef0" if case.golden else "ami-0fedcba9876543210"
    if case.kind == INSTANCE:
        assert case.tokens is not None and case.hops is not None, "EC2 reports both for an instance"
        record = Instance(
            account="111111111111",
            cluster="prod",
            container_instance="0123456789abcdef0123456789abcdef",
            container_instance_arn="arn:aws:ecs:eu-west-1:111111111111:container-instance/prod/0123",
            ec2_instance_id="i-0123456789abcdef0",
            image_id=image,
            published=case.golden,
            imdsv2_required=case.tokens == "required",
            hop_limit=case.hops,
            imds_endpoint="enabled",
        )
        findings.evaluate_instance(record, PREFIX, None)
    else:
        record = Template(
            account="111111111111",
            launch_template_id="lt-0123456789abcdef0",
            launch_template_name="web",
            version=3,
            referenced_as=["$Latest"],
            auto_scaling_groups=["web-asg"],
            image_id=image,
            published=case.golden,
            http_tokens=case.tokens,
            hop_limit=case.hops,
        )
        findings.evaluate_template(record, defaults, PREFIX)
    return record


def keys(record) -> list[str]:
    return [f["key"] for f in record.findings]


def test_every_row_of_the_table_is_interpreted_and_every_interpretation_is_a_row():
    rows = audit_table()
    assert len(rows) >= 5, f"the table of {THREAT_MODEL.name} was not read: {rows}"
    assert sorted(set(rows) - set(INTERPRETATIONS)) == [], "rows without an interpretation here"
    assert sorted(set(INTERPRETATIONS) - set(rows)) == [], "interpretations of rows no longer in the table"


@pytest.mark.parametrize("seen", sorted(audit_table()))
def test_the_audit_gives_the_verdict_of_the_threat_model(seen):
    verdict = audit_table()[seen]
    assert seen in INTERPRETATIONS, f"no interpretation of the row {seen!r}"
    for case in INTERPRETATIONS[seen]:
        record = evaluate(case)
        found, noted = keys(record), [n["key"] for n in record.notes]
        # Off the golden AMI, "not on a published golden AMI" is found whatever the row is about.
        others = [k for k in found if case.golden or k != findings.NOT_PUBLISHED]
        if verdict == "finding":
            assert case.key in found, (case, record.findings)
            (finding,) = [f for f in record.findings if f["key"] == case.key]
            # a finding says what to set, to what, and where
            assert finding["setting"] and finding["value"] is not None, finding
            assert f"{finding['setting']}={finding['value']} in " in finding["remediation"], finding
        elif verdict == "fine":
            assert (others, noted) == ([], []), (case, record.findings, record.notes)
        elif verdict.startswith("fine, with a note"):
            assert others == [], (case, record.findings)
            (note,) = record.notes
            assert note["key"] == findings.HOP_LIMIT_1
            # the note says what the verdict says it says
            assert verdict.removeprefix("fine, with a note that ") == "allowlisted bridge daemons need 2"
            assert "allowlisted bridge daemons" in note["message"] and "need 2" in note["message"]
        else:
            raise AssertionError(f"verdict {verdict!r} of the row {seen!r} is neither a finding nor fine")


# --- the account defaults: the paragraph under the table --------------------------------------

DEFAULTS_CASES = {
    # case: (HttpTokens, hop limit, finding keys, note keys)
    "no-preference-is-no-finding": (None, None, [], []),
    "hop-limit-2-is-fine": ("required", 2, [], []),
    "imdsv1-allowed-is-a-finding": ("optional", None, [findings.IMDSV1_ALLOWED], []),
    "hop-limit-above-2-is-a-finding": (None, 3, [findings.HOP_LIMIT_OVER_2], []),
    "hop-limit-1-is-fine-with-a-note": (None, 1, [], [findings.HOP_LIMIT_1]),
}


@pytest.mark.parametrize("case", DEFAULTS_CASES)
def test_account_defaults_apply_to_every_ami(case):
    tokens, hops, expected, expected_notes = DEFAULTS_CASES[case]
    defaults = AccountDefaults(account="111111111111", region=REGION, http_tokens=tokens, hop_limit=hops)
    findings.evaluate_defaults(defaults)
    assert keys(defaults) == expected
    assert [n["key"] for n in defaults.notes] == expected_notes
    fix = f"aws ec2 modify-instance-metadata-defaults --region {REGION} "
    assert all(finding["remediation"].startswith(fix) for finding in defaults.findings), defaults.findings


def test_an_account_default_of_optional_reaches_a_template_that_leaves_http_tokens_unset():
    """The bullet above the table: an account default of HttpTokens=optional turns IMDSv1 back
    on for every launch template that leaves HttpTokens unset, even on the golden AMI."""
    defaults = AccountDefaults(account="111111111111", region=REGION, http_tokens="optional")
    record = evaluate(Case(TEMPLATE, True, None, 2), defaults)
    assert keys(record) == [findings.IMDSV1_ALLOWED]
    assert record.effective_http_tokens == "optional"
    assert record.effective_from["http_tokens"] == "account default"
    own = evaluate(Case(TEMPLATE, True, "required", 2), defaults)  # its own setting comes first
    assert keys(own) == []
