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

import ast
import copy
import fnmatch
import functools
import json
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import botocore.session
import pytest
import yaml
from botocore import xform_name

ROOT = Path(__file__).resolve().parents[1]
IAM = ROOT / "iam"
PACKAGE = ROOT / "src" / "golden_ami"
PARLIAMENT_CONFIG = IAM / "parliament.yaml"

POLICIES = ("audit-readonly.json", "packer-build.json", "publish-cleanup.json")

# Which policy each module's AWS calls need. Every module of src/golden_ami must be listed,
# so a new one cannot escape; None means "makes no AWS call" (asserted), except aws.py, whose
# helper methods (Aws.assume) are charged to the modules that call them.
MODULE_POLICY = {
    "publish": "publish-cleanup.json",
    "rollback": "publish-cleanup.json",
    "find": "publish-cleanup.json",
    "cleanup": "publish-cleanup.json",
    "audit": "audit-readonly.json",
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
HELPER_MODULE = "aws"
CLIENT_FACTORY = ("aws", "client")  # Aws.client(service, ...): the one client(...) with a variable service

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
    "packer-build.json": {("PERMISSIONS_MANAGEMENT_ACTIONS", ("kms:creategrant",))},
    "publish-cleanup.json": set(),
}


def load_policy(name: str) -> dict:
    return json.loads((IAM / name).read_text())


def statements(policy: dict) -> list[dict]:
    found = policy["Statement"]
    return found if isinstance(found, list) else [found]


def as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def allows(policy: dict, action: str) -> bool:
    """Whether an Allow statement names the action (wildcards matched as IAM does, case-insensitive)
    and no unconditional Deny on every resource takes it back. Resources and conditions are not
    evaluated: this is action coverage."""

    def named(statement: dict) -> bool:
        return any(fnmatch.fnmatchcase(action.lower(), p.lower()) for p in as_list(statement["Action"]))

    denied = any(
        s["Effect"] == "Deny" and "Condition" not in s and "*" in as_list(s.get("Resource", [])) and named(s)
        for s in statements(policy)
    )
    return not denied and any(s["Effect"] == "Allow" and named(s) for s in statements(policy))


def granted(policy: dict) -> set[str]:
    return {a for s in statements(policy) if s["Effect"] == "Allow" for a in as_list(s["Action"])}


# --- static extraction of boto3 calls -----------------------------------------------------


class Unresolved(Exception):
    """A boto3 call the extractor cannot map to an IAM action."""


@dataclass(frozen=True)
class ApiCall:
    action: str  # IAM action, e.g. ec2:DescribeImages
    where: str  # module:line
    how: str  # the source expression


@functools.cache
def _session():
    return botocore.session.get_session()


@functools.cache
def _operations(service: str) -> dict[str, str]:
    """snake_case client method -> operation name (which is also the IAM action name)."""
    model = _session().get_service_model(service)
    return {xform_name(name): name for name in model.operation_names}


@functools.cache
def _iam_prefix(service: str) -> str:
    model = _session().get_service_model(service)
    return model.signing_name or model.endpoint_prefix


@functools.cache
def _waiters(service: str) -> dict[str, str]:
    """snake_case waiter name -> the operation it polls."""
    model = _session().get_waiter_model(service)
    return {xform_name(name): model.get_waiter(name).operation for name in model.waiter_names}


def _action(service: str, operation: str) -> str:
    return f"{_iam_prefix(service)}:{operation}"


def _const(node: ast.AST) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _modules() -> dict[str, Path]:
    return {
        ".".join(path.relative_to(PACKAGE).with_suffix("").parts): path
        for path in sorted(PACKAGE.rglob("*.py"))
        if "__pycache__" not in path.parts
    }


def _client_services(trees: dict[str, ast.Module]) -> set[str]:
    """Services the package creates clients for: client("svc") with a literal name."""
    found = set()
    for tree in trees.values():
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and _is_client_call(node) and node.args and _const(node.args[0]):
                found.add(_const(node.args[0]))
    return found


def _is_client_call(node: ast.Call) -> bool:
    func = node.func
    return (isinstance(func, ast.Attribute) and func.attr in ("client", "resource")) or (
        isinstance(func, ast.Name) and func.id in ("client", "resource")
    )


class _Scope:
    def __init__(self, parent: _Scope | None):
        self.parent = parent
        self.bindings: dict[str, set[tuple]] = {}

    def lookup(self, name: str) -> set[tuple] | None:
        scope = self
        while scope is not None:
            if name in scope.bindings:
                return scope.bindings[name]
            scope = scope.parent
        return None


class _Extractor:
    """Finds the boto3 calls of one module.

    A client is what client("svc", ...) returns (aws.client, self.client, session.client), a
    name bound to one, or a function parameter named after a service the package uses (def
    f(ec2, ...)). On a client: an operation method, get_paginator("op") or get_waiter("name").
    Calls of Aws helper methods (aws.assume) count as the calls those helpers make.
    """

    NON_API = frozenset({"exceptions", "meta", "can_paginate", "close"})

    def __init__(self, module: str, tree: ast.Module, services: set[str], helpers: dict[str, set[str]]):
        self.module, self.tree, self.services, self.helpers = module, tree, services, helpers
        self.api_methods = {m for s in services for m in _operations(s)}
        self.calls: list[ApiCall] = []
        self.by_function: dict[str, set[str]] = {}
        self.qualname = ""

    def where(self, node: ast.AST) -> str:
        return f"{self.module}:{node.lineno}"

    def run(self) -> list[ApiCall]:
        self._scope(self.tree, _Scope(None), qualname="")
        return self.calls

    # Scopes: the module, and every function; a name's kind comes from its own scope first.
    def _scope(self, node: ast.AST, parent: _Scope, qualname: str, args: ast.arguments | None = None):
        scope = _Scope(parent)
        self.qualname = qualname
        if args is not None:
            for arg in [*args.posonlyargs, *args.args, *args.kwonlyargs]:
                if arg.arg in self.services:
                    scope.bindings[arg.arg] = {("client", arg.arg)}
        body = list(ast.iter_child_nodes(node))
        if isinstance(node, ast.ClassDef):
            self._bind_attributes(scope, node)
        own = list(self._own_nodes(body))
        for child in own:  # bindings first, in source order, so that later uses see them
            if isinstance(child, ast.Assign | ast.AnnAssign) and child.value is not None:
                targets = child.targets if isinstance(child, ast.Assign) else [child.target]
                for target in targets:
                    self._bind(scope, target, child.value)
        for child in own:
            if isinstance(child, ast.Call):
                self._call(scope, child, qualname)
        for child in self._nested(body):
            name = f"{qualname}.{child.name}" if qualname else child.name
            if isinstance(child, ast.ClassDef):
                self._scope(child, scope, name)
            else:
                self._scope(child, scope, name, child.args)

    def _bind_attributes(self, scope: _Scope, node: ast.ClassDef) -> None:
        """self.X = <client> in any method of a class makes self.X a client in all of them
        (bound in the class's scope as "self.X")."""
        for method in node.body:
            if not isinstance(method, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            local = _Scope(scope)
            for arg in [*method.args.posonlyargs, *method.args.args, *method.args.kwonlyargs]:
                if arg.arg in self.services:
                    local.bindings[arg.arg] = {("client", arg.arg)}
            for child in self._own_nodes(method.body):
                if not isinstance(child, ast.Assign):
                    continue
                for target in child.targets:
                    pairs = [(target, child.value)]
                    if isinstance(target, ast.Tuple) and isinstance(child.value, ast.Tuple):
                        pairs = list(zip(target.elts, child.value.elts, strict=False))
                    for name, value in pairs:
                        if (
                            isinstance(name, ast.Attribute)
                            and isinstance(name.value, ast.Name)
                            and name.value.id == "self"
                        ):
                            kind = self._kind(local, value) or ("other",)
                            scope.bindings.setdefault(f"self.{name.attr}", set()).add(kind)

    @staticmethod
    def _nested(nodes):
        """The functions and classes defined directly in this scope (each is a scope of its own)."""
        for node in nodes:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                yield node
            else:
                yield from _Extractor._nested(ast.iter_child_nodes(node))

    @staticmethod
    def _own_nodes(nodes):
        """Every node of this scope, not descending into nested functions or classes."""
        for node in nodes:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                continue
            yield node
            yield from _Extractor._own_nodes(ast.iter_child_nodes(node))

    def _bind(self, scope: _Scope, target: ast.AST, value: ast.AST) -> None:
        if isinstance(target, ast.Tuple | ast.List) and isinstance(value, ast.Tuple | ast.List):
            if len(target.elts) == len(value.elts):
                for t, v in zip(target.elts, value.elts, strict=True):
                    self._bind(scope, t, v)
            return
        if isinstance(target, ast.Name):
            kind = self._kind(scope, value)
            scope.bindings.setdefault(target.id, set()).add(kind or ("other",))

    def _kind(self, scope: _Scope, node: ast.AST) -> tuple | None:
        """("client", svc), ("paginator"|"waiter", svc, name), or None for anything else."""
        if isinstance(node, ast.Name) or (
            isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self"
        ):
            name = node.id if isinstance(node, ast.Name) else f"self.{node.attr}"
            kinds = scope.lookup(name)
            if kinds and len(kinds) == 1:
                kind = next(iter(kinds))
                return None if kind == ("other",) else kind
            if kinds and any(k[0] != "other" for k in kinds):
                raise Unresolved(f"{self.where(node)}: {name} is bound to a client and to other things")
            return None
        if isinstance(node, ast.Call) and _is_client_call(node):
            service = _const(node.args[0]) if node.args else None
            if service:
                return ("client", service)
            if (self.module, self.qualname.rsplit(".", 1)[-1]) != CLIENT_FACTORY:
                raise Unresolved(f"{self.where(node)}: client service is not a literal: {ast.unparse(node)}")
            return None
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in ("get_paginator", "get_waiter")
        ):
            receiver = self._kind(scope, node.func.value)
            name = _const(node.args[0]) if node.args else None
            if receiver and receiver[0] == "client" and name:
                return ("paginator" if node.func.attr == "get_paginator" else "waiter", receiver[1], name)
        return None

    def _record(self, node: ast.AST, action: str, qualname: str) -> None:
        self.calls.append(ApiCall(action, self.where(node), ast.unparse(node)[:120]))
        self.by_function.setdefault(qualname, set()).add(action)

    def _call(self, scope: _Scope, node: ast.Call, qualname: str) -> None:
        func = node.func
        if _is_client_call(node):
            if (isinstance(func, ast.Attribute) and func.attr == "resource") or (
                isinstance(func, ast.Name) and func.id == "resource"
            ):
                raise Unresolved(
                    f"{self.where(node)}: boto3 resources are not supported: {ast.unparse(node)}"
                )
            self._kind(scope, node)  # refuses a service that is not a literal
            return
        if isinstance(func, ast.Name) and func.id == "getattr" and node.args:
            if self._kind(scope, node.args[0]):
                raise Unresolved(f"{self.where(node)}: getattr on a boto3 client: {ast.unparse(node)}")
            return
        if not isinstance(func, ast.Attribute):
            return
        method = func.attr
        receiver = self._kind(scope, func.value)
        if receiver is None:
            if method in self.helpers:
                for action in sorted(self.helpers[method]):
                    self._record(node, action, qualname)
            elif method in self.api_methods or method in ("get_paginator", "get_waiter"):
                raise Unresolved(
                    f"{self.where(node)}: {ast.unparse(func)} looks like a boto3 call on something that "
                    "is not a known client (bind it with aws.client('svc') or name the parameter after "
                    "the service)"
                )
            return
        kind, service = receiver[0], receiver[1]
        if kind != "client":
            return  # paginate()/wait() on a paginator or waiter: charged where it was made
        if method in ("get_paginator", "get_waiter"):
            name = _const(node.args[0]) if node.args else None
            table = _operations(service) if method == "get_paginator" else _waiters(service)
            if name not in table:
                raise Unresolved(
                    f"{self.where(node)}: unknown {service} {method}({name!r}): {ast.unparse(node)}"
                )
            self._record(node, _action(service, table[name]), qualname)
        elif method in _operations(service):
            self._record(node, _action(service, _operations(service)[method]), qualname)
        elif method not in self.NON_API:
            raise Unresolved(f"{self.where(node)}: {service} clients have no operation {method!r}")


@dataclass(frozen=True)
class Extraction:
    calls: dict[str, list[ApiCall]]  # module -> its boto3 calls
    helpers: dict[str, set[str]]  # Aws helper method -> the actions it makes
    helper_module_elsewhere: dict[str, set[str]]  # aws.py calls outside the Aws methods


def extract(sources: dict[str, str]) -> Extraction:
    trees = {module: ast.parse(text) for module, text in sources.items()}
    services = _client_services(trees) | {"sts"}
    helpers: dict[str, set[str]] = {}
    elsewhere: dict[str, set[str]] = {}
    if HELPER_MODULE in trees:
        extractor = _Extractor(HELPER_MODULE, trees[HELPER_MODULE], services, {})
        extractor.run()
        for name, actions in extractor.by_function.items():
            if name.startswith("Aws."):
                helpers[name.removeprefix("Aws.")] = actions
            else:
                elsewhere[name or "<module>"] = actions
    calls = {module: _Extractor(module, tree, services, helpers).run() for module, tree in trees.items()}
    return Extraction(calls, helpers, elsewhere)


@functools.cache
def package_calls() -> Extraction:
    return extract({module: path.read_text() for module, path in _modules().items()})


# --- parliament ---------------------------------------------------------------------------


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


def _statement_lines(text: str) -> dict[int, dict]:
    """Line of each statement's opening brace (where parliament locates its findings) -> statement."""
    import jsoncfg  # parliament's JSON parser, installed with it
    from parliament.misc import make_list

    nodes = make_list(jsoncfg.loads_config(text).Statement)
    return {
        jsoncfg.node_location(node).line: statement
        for node, statement in zip(nodes, statements(json.loads(text)), strict=True)
    }


def _arn_matches_with_empty_account(parliament, required: str, resources: list[str]) -> bool:
    """parliament's ARN matcher wants an account wherever the ARN format has one; AWS's public SSM
    parameters (arn:aws:ssm:REGION::parameter/aws/service/...) have none. Match with the account
    field read as "*"."""
    for resource in resources:
        parts = resource.split(":")
        if len(parts) >= 6 and parts[4] == "" and parts[2] == "ssm" and parts[5].startswith("parameter/aws/"):
            parts[4] = "*"
            if parliament.is_arn_strictly_valid("", required, ":".join(parts)):
                return True
    return False


def false_positive(parliament, name: str, finding) -> str | None:
    """Why a RESOURCE_MISMATCH is a false positive, or None when it is a real finding.

    parliament checks each statement on its own and wants every resource type an action requires
    in that statement (duo-labs/parliament#3, #48). A finding is accepted when every resource
    type it misses is granted for the same action by another Allow statement of the policy (an
    action split by resource type, each with its own condition), or is an AWS public SSM
    parameter, whose ARN has no account."""
    if finding.issue != "RESOURCE_MISMATCH":
        return None
    policy = load_policy(name)
    statement = _statement_lines((IAM / name).read_text()).get(finding.location.get("line"))
    if statement is None:
        return None
    for missing in finding.detail:
        action, required = missing["action"], missing["required_format"]
        siblings = [
            resource
            for other in statements(policy)
            if other is not statement
            and other["Effect"] == "Allow"
            and allows({"Statement": [other]}, action)
            for resource in as_list(other["Resource"])
        ]
        if not any(parliament.is_arn_strictly_valid("", required, r) for r in siblings) and not (
            _arn_matches_with_empty_account(parliament, required, as_list(statement["Resource"]))
        ):
            return None
    return f"{statement['Sid']}: its other resource types are in the other statements of the action"


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
    modules = set(_modules())
    assert modules == set(MODULE_POLICY), (
        f"modules without an entry in MODULE_POLICY: {sorted(modules - set(MODULE_POLICY))}; "
        f"entries without a module: {sorted(set(MODULE_POLICY) - modules)}"
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
    assert {"sts:AssumeRole", "ecs:DescribeContainerInstances", "ecs:ListClusters"} <= actions["audit"]


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


# --- the extractor on code written for it -------------------------------------------------


def _extract_one(code: str) -> set[str]:
    return {c.action for c in extract({"m": code}).calls["m"]}


def test_extractor_resolves_clients_paginators_waiters_and_service_named_parameters():
    code = """
def f(aws, region):
    ec2, ssm = aws.client("ec2", region), aws.client("ssm", region)
    ec2.deregister_image(ImageId="ami-1")
    pages = ssm.get_paginator("get_parameters_by_path")
    for page in pages.paginate(Path="/x"):
        pass
    aws.client("ec2").get_waiter("image_available").wait(ImageIds=[])
    try:
        ssm.get_parameter(Name="/x")
    except ssm.exceptions.ParameterNotFound:
        pass

def g(ecs):
    return ecs.describe_clusters(clusters=[])

def h(aws):
    return g(aws.client("ecs"))
"""
    assert _extract_one(code) == {
        "ec2:DeregisterImage",
        "ssm:GetParametersByPath",
        "ec2:DescribeImages",
        "ssm:GetParameter",
        "ecs:DescribeClusters",
    }


def test_extractor_resolves_clients_kept_as_attributes_of_self():
    code = """
class Templates:
    def versions(self):
        return self.ec2.describe_launch_template_versions(Versions=["$Latest"])

    def __init__(self, ec2, aws):
        self.ec2, self.ssm = ec2, aws.client("ssm")
        self.seen = []

    def image(self, name):
        return self.ssm.get_parameter(Name=name)

def make(aws):
    return Templates(aws.client("ec2"), aws)
"""
    assert _extract_one(code) == {"ec2:DescribeLaunchTemplateVersions", "ssm:GetParameter"}


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("def f(aws, s):\n    aws.client(s).describe_images()\n", "not a literal"),
        ("def f(conn):\n    conn.describe_images()\n", "not a known client"),
        ('def f(aws):\n    aws.client("ec2").describe_imagez()\n', "no operation 'describe_imagez'"),
        ('def f(aws, n):\n    aws.client("ec2").get_waiter(n).wait()\n', "unknown ec2 get_waiter"),
        ('def f(aws):\n    aws.resource("s3")\n', "resources are not supported"),
        ("class C:\n    def f(self):\n        self.conn.describe_images()\n", "not a known client"),
    ],
)
def test_extractor_refuses_what_it_cannot_resolve(code, message):
    code = 'def h(aws):\n    aws.client("ec2").describe_images()\n' + code
    with pytest.raises(Unresolved, match=re.escape(message)):
        extract({"m": code})
