# Copyright: the ecs-imds-golden authors
# Apache License 2.0
"""The machinery of tests/test_iam.py: IAM policies read as IAM reads their actions, a static
extractor of every boto3 call of src/golden_ami, and the proof that a parliament finding is a
false positive.
"""

from __future__ import annotations

import ast
import fnmatch
import functools
import json
from dataclasses import dataclass
from pathlib import Path

import botocore.session
from botocore import xform_name

ROOT = Path(__file__).resolve().parents[2]
IAM = ROOT / "iam"
PACKAGE = ROOT / "src" / "golden_ami"
# aws.py's Aws helper methods (Aws.assume) are charged to the modules that call them.
HELPER_MODULE = "aws"
CLIENT_FACTORY = ("aws", "client")  # Aws.client(service, ...): the one client(...) with a variable service


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


def modules() -> dict[str, Path]:
    """Module name (dotted, below the package) -> file, for every module of src/golden_ami."""
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
    return extract({module: path.read_text() for module, path in modules().items()})


# --- parliament ---------------------------------------------------------------------------


def statement_lines(text: str) -> dict[int, dict]:
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
    parameters (arn:aws:ssm:REGION::parameter/aws/service/...) and AWS's own SSM documents
    (arn:aws:ssm:REGION::document/AWS-RunShellScript) have none. Match with the account field
    read as "*"."""
    owned_by_aws = ("parameter/aws/", "document/AWS-")
    for resource in resources:
        parts = resource.split(":")
        if len(parts) >= 6 and parts[4] == "" and parts[2] == "ssm" and parts[5].startswith(owned_by_aws):
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
    statement = statement_lines((IAM / name).read_text()).get(finding.location.get("line"))
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
