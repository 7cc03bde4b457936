# Copyright: the ecs-imds-golden authors
# Apache License 2.0
"""The IAM policies of iam/: parliament-clean, no wildcard actions, and granting what the code calls.

- parliament (the version pinned in pyproject.toml), run without iam/parliament.yaml, finds
  nothing on any policy but RESOURCE_MISMATCH findings this test proves false: parliament checks
  every statement on its own, so an action split over statements by resource type (each with its
  own condition) looks incomplete to it. With iam/parliament.yaml, as `parliament --config` runs
  it, nothing at all is reported.
- No policy grants `*`, a service wildcard or any other wildcard action.
- Coverage: every boto3 call in src/golden_ami is found statically (ast), mapped to its IAM
  action through botocore's own service and waiter models, and must be allowed by the policy of
  the command that makes it. A call the extractor cannot resolve fails the test, naming it, so
  new code cannot slip past. The CLI policies grant exactly what the code calls, nothing more.
- The Packer policy grants the amazon plugin's documented minimal action list, less the actions
  the amazon-ebs builder never calls with our templates (each listed with its reason), plus the
  source AMI's SSM parameter, deprecation and EBS encryption with a customer-managed key.

parliament is required: without it these tests fail, they never skip.
"""

from __future__ import annotations

import copy
import fnmatch
import warnings
from pathlib import Path

import pytest
import yaml
from support.iam import (
    HELPER_MODULE,
    IAM,
    allows,
    as_list,
    false_positive,
    granted,
    load_policy,
    modules,
    package_calls,
    statements,
)

PARLIAMENT_CONFIG = IAM / "parliament.yaml"

POLICIES = ("audit-readonly.json", "audit-verify-hosts.json", "packer-build.json", "publish-cleanup.json")

# Which policy each module's AWS calls need. Every module of src/golden_ami must be listed,
# so a new one cannot escape; None means "makes no AWS call" (asserted), except aws.py, whose
# helper methods (Aws.assume) are charged to the modules that call them.
MODULE_POLICY = {
    "publish": "publish-cleanup.json",
    "rollback": "publish-cleanup.json",
    "find": "publish-cleanup.json",
    "cleanup": "publish-cleanup.json",
    "audit.__init__": None,
    "audit.command": "audit-readonly.json",  # sts:AssumeRole into each account
    "audit.fetch": "audit-readonly.json",
    "audit.launch_templates": "audit-readonly.json",
    "audit.findings": None,  # the policy: asserted to call no AWS
    "audit.model": None,
    "audit.report": None,
    "verify_hosts": "audit-verify-hosts.json",
    "layout": "publish-cleanup.json",
    "aws": None,
    "__init__": None,
    "boothook": None,
    "cli": None,
    "files": None,
    "manifest": None,
    "mime": None,
    "output": None,
    "userdata": None,
}

# Actions AWS checks on the caller's behalf for a call that names another one.
IMPLIED = {
    # PutParameter with DataType aws:ec2:image: SSM validates the AMI ID with the caller's
    # ec2:DescribeImages permission.
    "ssm:PutParameter": {"ec2:DescribeImages"},
}

# The "IAM Task or Instance Role" minimal policy of the Packer amazon plugin's documentation
# (packer-plugin-amazon, docs/builders/index.mdx; the amazon plugin 1.8.0 pinned in
# packer/plugins.pkr.hcl). Spelled as there: IAM action names are case-insensitive.
PACKER_DOCUMENTED = {
    "ec2:AttachVolume",
    "ec2:AuthorizeSecurityGroupIngress",
    "ec2:CopyImage",
    "ec2:CreateImage",
    "ec2:CreateKeypair",
    "ec2:CreateSecurityGroup",
    "ec2:CreateSnapshot",
    "ec2:CreateTags",
    "ec2:CreateVolume",
    "ec2:DeleteKeyPair",
    "ec2:DeleteSecurityGroup",
    "ec2:DeleteSnapshot",
    "ec2:DeleteVolume",
    "ec2:DeregisterImage",
    "ec2:DescribeImageAttribute",
    "ec2:DescribeImages",
    "ec2:DescribeInstances",
    "ec2:DescribeInstanceStatus",
    "ec2:DescribeRegions",
    "ec2:DescribeSecurityGroups",
    "ec2:DescribeSnapshots",
    "ec2:DescribeSubnets",
    "ec2:DescribeTags",
    "ec2:DescribeVolumes",
    "ec2:DetachVolume",
    "ec2:GetPasswordData",
    "ec2:ModifyImageAttribute",
    "ec2:ModifyInstanceAttribute",
    "ec2:ModifySnapshotAttribute",
    "ec2:RegisterImage",
    "ec2:RunInstances",
    "ec2:StopInstances",
    "ec2:TerminateInstances",
}
# Documented, but never called by the amazon-ebs builder with the settings of packer/*.pkr.hcl.
# Granting one of them again is a deliberate change to this table.
PACKER_NOT_NEEDED = {
    "ec2:AttachVolume": "chroot/ebssurrogate/ebsvolume builders; amazon-ebs volumes come from RunInstances",
    "ec2:DetachVolume": "chroot/ebssurrogate/ebsvolume builders",
    "ec2:CreateVolume": "chroot/ebssurrogate/ebsvolume builders",
    "ec2:CreateSnapshot": "chroot/ebssurrogate/ebsvolume builders; CreateImage makes the AMI's snapshots",
    "ec2:RegisterImage": "chroot/ebssurrogate/instance builders; amazon-ebs uses CreateImage and CopyImage",
    "ec2:GetPasswordData": "Windows guests only",
    "ec2:ModifyInstanceAttribute": "only with ena_support or sriov_support, which the templates do not set",
    "ec2:ModifySnapshotAttribute": "only with snapshot_users or snapshot_groups (snapshot sharing), not set",
}
PACKER_EXTRA = {
    "ssm:GetParameter",  # the amazon-parameterstore data sources: the ECS-optimized source AMIs
    "ec2:EnableImageDeprecation",  # deprecate_at
    # encrypt_boot with a customer-managed key: the "Permissions for users" of the Amazon EBS
    # encryption requirements (kms:ReEncrypt is the pair ReEncryptFrom and ReEncryptTo).
    "kms:CreateGrant",
    "kms:Decrypt",
    "kms:DescribeKey",
    "kms:GenerateDataKeyWithoutPlaintext",
    "kms:ReEncryptFrom",
    "kms:ReEncryptTo",
}

# Wildcard actions that would be acceptable, with the reason. None is used today.
JUSTIFIED_ACTION_WILDCARDS: dict[str, str] = {}

# What parliament's optional community auditors may report, and no more: AssumeRole is the
# point of multi-account audit; CreateGrant (EBS encryption) is limited to grants for AWS
# resources. A new privilege-escalation or credential action shows up here.
COMMUNITY_EXPECTED = {
    "audit-readonly.json": {("CREDENTIALS_EXPOSURE", ("sts:assumerole",))},
    "audit-verify-hosts.json": set(),  # parliament has no auditor for SendCommand: see iam/README.md
    "packer-build.json": {("PERMISSIONS_MANAGEMENT_ACTIONS", ("kms:creategrant",))},
    "publish-cleanup.json": set(),
}


@pytest.fixture(scope="module")
def parliament():
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
            import parliament as module
            import parliament.cli  # is_finding_filtered: the CLI's own filter
    except ImportError as exc:
        pytest.fail(
            "parliament is required for the IAM policy lint: pip install -e '.[dev]' "
            f"(parliament==1.6.4 imports pkg_resources, so it also needs setuptools<81): {exc}"
        )
    return module


@pytest.fixture
def parliament_with_config(parliament):
    """parliament with iam/parliament.yaml applied, as `parliament --config` applies it."""
    saved = copy.deepcopy(parliament.config)
    parliament.override_config(str(PARLIAMENT_CONFIG))
    yield parliament
    parliament.config.clear()
    parliament.config.update(saved)


def test_the_policies_are_the_files_of_iam():
    assert sorted(p.name for p in IAM.glob("*.json")) == sorted(POLICIES), (
        "a new policy file needs its place in POLICIES (and MODULE_POLICY, if the CLI uses it)"
    )
    for name in POLICIES:
        policy = load_policy(name)
        assert policy["Version"] == "2012-10-17", name
        sids = [s.get("Sid") for s in statements(policy)]
        assert all(sids) and len(set(sids)) == len(sids), f"{name}: every statement needs its own Sid"


@pytest.mark.parametrize("name", POLICIES)
def test_parliament_finds_nothing_but_proven_false_positives(parliament, name):
    """parliament as shipped, without iam/parliament.yaml: every finding must be explained."""
    policy = parliament.analyze_policy_string((IAM / name).read_text(), f"iam/{name}")
    real = [parliament.enhance_finding(f) for f in policy.findings if not false_positive(parliament, name, f)]
    assert not real, f"parliament on iam/{name}:\n" + "\n".join(
        f"  {f.severity} {f.issue} {f.detail} {f.location}" for f in real
    )


def test_parliament_config_mutes_only_resource_mismatch_and_leaves_nothing(parliament_with_config):
    """iam/parliament.yaml is for `parliament --config iam/parliament.yaml --directory iam`. Its
    ignore_locations cannot name single statements in parliament 1.6.4 (is_finding_filtered
    passes the YAML values to a jsoncfg helper that turns plain strings and lists into []), so
    it mutes RESOURCE_MISMATCH as a whole; the test above checks each of those findings."""
    assert yaml.safe_load(PARLIAMENT_CONFIG.read_text()) == {"RESOURCE_MISMATCH": {"severity": "MUTE"}}
    parliament = parliament_with_config
    for name in POLICIES:
        policy = parliament.analyze_policy_string((IAM / name).read_text(), f"iam/{name}")
        shown = [
            f
            for f in map(parliament.enhance_finding, policy.findings)
            if not parliament.cli.is_finding_filtered(f, "LOW")  # the CLI's default minimum
        ]
        assert not shown, f"parliament --config on iam/{name}: {[(f.issue, f.detail) for f in shown]}"


def test_parliament_community_auditors_find_only_the_known_powers(parliament):
    from parliament.community_auditors import __file__ as auditors

    community = set(yaml.safe_load((Path(auditors).parent / "config_override.yaml").read_text())) | {
        "EXCEPTION"
    }
    for name in POLICIES:
        policy = parliament.analyze_policy_string(
            (IAM / name).read_text(), f"iam/{name}", include_community_auditors=True
        )
        found = {
            (f.issue, tuple(sorted(f.location.get("actions", []))))
            for f in policy.findings
            if f.issue in community
        }
        assert found == COMMUNITY_EXPECTED[name], f"iam/{name}: community auditors report {found}"


def test_policy_actions_are_known_to_iam(parliament):
    """Also checks the extractor's botocore -> IAM mapping against parliament's IAM definitions."""
    extracted = {c.action for found in package_calls().calls.values() for c in found}
    unknown = []
    for action in sorted(extracted | {a for n in POLICIES for a in granted(load_policy(n))}):
        try:
            parliament.expand_action(action)
        except Exception as exc:  # parliament raises its own UnknownAction/UnknownPrefix types
            unknown.append(f"  {action}: {exc}")
    assert not unknown, "not IAM actions:\n" + "\n".join(unknown)


# --- wildcards ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", POLICIES)
def test_no_wildcard_actions(name):
    for statement in statements(load_policy(name)):
        sid = statement.get("Sid")
        assert "NotAction" not in statement, f"{name} {sid}: NotAction grants everything else"
        assert "NotResource" not in statement, f"{name} {sid}: NotResource grants everything else"
        for action in as_list(statement["Action"]):
            assert action not in ("*", "*:*"), f"{name} {sid}: Action {action}"
            _service, _, operation = action.partition(":")
            assert operation and operation != "*", f"{name} {sid}: service-wide wildcard {action}"
            if "*" in action or "?" in action:
                assert action in JUSTIFIED_ACTION_WILDCARDS, f"{name} {sid}: wildcard action {action}"


# --- coverage: the code's calls -----------------------------------------------------------


def test_every_module_has_a_policy_entry():
    found = set(modules())
    assert found == set(MODULE_POLICY), (
        f"modules without an entry in MODULE_POLICY: {sorted(found - set(MODULE_POLICY))}; "
        f"entries without a module: {sorted(set(MODULE_POLICY) - found)}"
    )


def test_the_extractor_finds_the_calls_we_know_of():
    """Guards the extractor itself: a few calls of each kind, found where they are."""
    found = package_calls()
    actions = {module: {c.action for c in calls} for module, calls in found.calls.items()}
    assert found.helpers == {"assume": {"sts:AssumeRole"}}
    assert {"ec2:DescribeImages"} <= actions["publish"]  # the image_available waiter
    assert {"ssm:PutParameter", "ssm:GetParameter", "ssm:GetParametersByPath"} <= actions["layout"]
    assert {"ec2:DescribeImages", "ec2:DescribeLaunchTemplates", "autoscaling:DescribeLaunchConfigurations",
            "ec2:DeregisterImage", "ssm:DeleteParameter"} <= actions["cleanup"]  # fmt: skip
    assert {"sts:AssumeRole"} <= actions["audit.command"]
    assert {"ecs:DescribeContainerInstances", "ecs:ListClusters"} <= actions["audit.fetch"]
    assert actions["verify_hosts"] == {
        "ssm:DescribeInstanceInformation", "ssm:SendCommand", "ssm:ListCommandInvocations"
    }  # fmt: skip


@pytest.mark.parametrize("module", sorted(MODULE_POLICY))
def test_module_calls_are_allowed_by_its_policy(module):
    found = package_calls()
    calls = found.calls
    policy_name = MODULE_POLICY[module]
    if policy_name is None:
        if module == HELPER_MODULE:  # its calls are charged to the callers of the Aws methods
            outside = found.helper_module_elsewhere
            assert not outside, f"aws.py calls AWS outside the Aws helper methods: {outside}"
            return
        assert not calls[module], f"{module} calls AWS; give it a policy in MODULE_POLICY: {calls[module]}"
        return
    policy = load_policy(policy_name)
    needed = [(c.action, c) for c in calls[module]]
    needed += [(implied, c) for c in calls[module] for implied in sorted(IMPLIED.get(c.action, ()))]
    missing = [f"  {action}  ({c.where}: {c.how})" for action, c in needed if not allows(policy, action)]
    assert not missing, f"iam/{policy_name} does not allow what {module} calls:\n" + "\n".join(missing)


@pytest.mark.parametrize("policy_name", sorted({p for p in MODULE_POLICY.values() if p}))
def test_cli_policies_grant_nothing_the_code_does_not_call(policy_name):
    calls = package_calls().calls
    used = set()
    for module, name in MODULE_POLICY.items():
        if name == policy_name:
            for call in calls[module]:
                used |= {call.action, *IMPLIED.get(call.action, ())}
    extra = {
        a
        for a in granted(load_policy(policy_name))
        if not any(fnmatch.fnmatchcase(u.lower(), a.lower()) for u in used)
    }
    assert not extra, f"iam/{policy_name} grants what no command calls: {sorted(extra)}"


# --- coverage: Packer ---------------------------------------------------------------------


def test_packer_policy_is_the_documented_list_less_what_amazon_ebs_never_calls():
    policy = load_policy("packer-build.json")
    assert set(PACKER_NOT_NEEDED) <= PACKER_DOCUMENTED
    expected = {a.lower() for a in (PACKER_DOCUMENTED - set(PACKER_NOT_NEEDED)) | PACKER_EXTRA}
    missing = sorted(a for a in expected if not allows(policy, a))
    assert not missing, f"iam/packer-build.json misses {missing}"
    extra = sorted(a for a in granted(policy) if a.lower() not in expected)
    assert not extra, f"iam/packer-build.json grants {extra}, beyond the documented list (see PACKER_EXTRA)"
    regranted = sorted(a for a in PACKER_NOT_NEEDED if allows(policy, a))
    assert not regranted, f"granted although amazon-ebs never calls them: {regranted} (see PACKER_NOT_NEEDED)"
