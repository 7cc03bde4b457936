# Copyright: the ecs-imds-golden authors
# Apache License 2.0
"""What `packer build` would configure, worked out from the HCL of a directory without Packer.

`Templates(directory, variables={...}, now=...)` parses every *.pkr.hcl with python-hcl2 and
evaluates expressions as Packer does, for the constructs these templates use:

- input variables: the values given, else those of *.auto.pkrvars.hcl, else the defaults;
  `validation_failures()` runs the validation blocks against them;
- locals, in any order; `timestamp()` reads `now`;
- data sources are not called: `data.amazon-parameterstore.<name>.value` evaluates to a
  Parameter naming the SSM parameter and region the build would read;
- builds: the build-level `source` blocks of each build block (`dynamic "source"` ones
  expanded) merged over the top-level source they name. A field set in both is an error, as in
  Packer, and a build-level `name` sees nothing but the dynamic iterator, since Packer decodes
  it without variables. Build names are what `packer build -only=...` matches;
- provisioners and post-processors of each build, in the order they run, with `source.name`
  and `source.type`.

Errors Packer would report (a missing map key, an undeclared variable, a field set twice) raise
EvalError. A function or construct not implemented here raises Unsupported, so the tests fail
loudly instead of misreading a template.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import hcl2
from lark import Token, Tree


class EvalError(Exception):
    """Something Packer would refuse."""


class Unsupported(Exception):
    """A construct these helpers do not evaluate."""


@dataclass(frozen=True)
class Parameter:
    """The value of an SSM parameter, read in `region` when the build starts."""

    name: str
    region: str


@dataclass(frozen=True)
class Body:
    attributes: dict[str, Tree]
    blocks: tuple[Block, ...]
    file: str
    scope: dict[str, Any] = field(default_factory=dict)  # names its expressions see (an iterator)


@dataclass(frozen=True)
class Block:
    type: str
    labels: tuple[str, ...]
    body: Body


@dataclass(frozen=True)
class Variable:
    name: str
    type: str
    description: Any
    default: Any
    validations: tuple[tuple[Tree, Tree], ...]  # (condition, error_message)
    required: bool


@dataclass
class Build:
    """One build as `packer build` runs it."""

    name: str  # what -only matches: amazon-ebs.<name>
    source: str  # the top-level source it fills in, type.name
    settings: dict[str, Any]  # the merged source's attributes, evaluated
    blocks: dict[str, list[dict[str, Any]]]  # its nested blocks (metadata_options), evaluated
    provisioners: list[tuple[str, dict[str, Any]]]
    post_processors: list[tuple[str, dict[str, Any]]]


NO_DEFAULT = object()


class Namespace:
    """`var`, `local`, `data.<type>`: attribute access computed on demand."""

    def __init__(self, name: str, get: Callable[[str], Any]) -> None:
        self.name, self.get = name, get


# --- parsing ------------------------------------------------------------------------------------


def parts(node: Tree) -> list[Tree]:
    """The sub-trees of a node, without newlines and comments."""
    return [c for c in node.children if isinstance(c, Tree) and c.data != "new_line_or_comment"]


def text(node: Tree | Token) -> str:
    """The tokens of a node run together: `var.x`, `map(string)`."""
    if isinstance(node, Token):
        return str(node)
    return "".join(str(token) for token in node.scan_values(lambda v: isinstance(v, Token)))


def parse_body(node: Tree, file: str) -> Body:
    attributes: dict[str, Tree] = {}
    blocks = []
    for child in parts(node):
        if child.data == "attribute":
            name = text(child.children[0])
            if name in attributes:
                raise EvalError(f"{file}: {name} is set twice in one block")
            attributes[name] = child.children[-1]
        elif child.data == "block":
            *head, body = parts(child)
            labels = tuple(literal_label(label, file) for label in head[1:])
            blocks.append(Block(text(head[0]), labels, parse_body(body, file)))
    return Body(attributes, tuple(blocks), file)


def literal_label(node: Tree, file: str) -> str:
    if node.data == "identifier":
        return text(node)
    chars = [p.children[0] for p in node.children if isinstance(p, Tree)]
    if not all(isinstance(c, Token) and c.type == "STRING_CHARS" for c in chars):
        raise EvalError(f"{file}: a block label must be a plain string")
    return unescape("".join(chars))


ESCAPES = {"n": "\n", "r": "\r", "t": "\t", '"': '"', "\\": "\\"}


def unescape(chars: str) -> str:
    def one(match: re.Match) -> str:
        code = match.group(1)
        return chr(int(code[1:], 16)) if code[0] in "uU" else ESCAPES[code]

    return re.sub(r'\\(u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|[nrt"\\])', one, chars)


# --- functions ----------------------------------------------------------------------------------


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: str) -> datetime:
    try:
        return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError as exc:
        raise EvalError(f"not an RFC 3339 UTC timestamp: {value!r}") from exc


DATE_TOKENS = {"YYYY": "%Y", "MM": "%m", "DD": "%d", "hh": "%H", "mm": "%M", "ss": "%S"}


def formatdate(spec: str, timestamp: str) -> str:
    moment, out = parse_time(timestamp), []
    for match in re.finditer(r"'[^']*'|([A-Za-z])\1*|[^A-Za-z']+", spec):  # YYYY, MM, 'T', -
        token = match.group(0)
        if token.startswith("'"):
            out.append(token[1:-1])
        elif token[0].isalpha():
            if token not in DATE_TOKENS:
                raise Unsupported(f"formatdate token {token!r}")
            out.append(moment.strftime(DATE_TOKENS[token]))
        else:
            out.append(token)
    return "".join(out)


DURATION_UNITS = {"h": 3600, "m": 60, "s": 1}


def timeadd(timestamp: str, duration: str) -> str:
    pieces = re.findall(r"(\d+(?:\.\d+)?)([hms])", duration)
    if not pieces or "".join(n + u for n, u in pieces) != duration.lstrip("-"):
        raise EvalError(f"timeadd: not a duration: {duration!r}")
    seconds = sum(float(n) * DURATION_UNITS[u] for n, u in pieces)
    return rfc3339(parse_time(timestamp) + timedelta(seconds=-seconds if duration[0] == "-" else seconds))


def format_(spec: str, *args: Any) -> str:
    values = iter(args)

    def one(match: re.Match) -> str:
        verb = match.group(1)
        if verb == "%":
            return "%"
        value = next(values)
        if verb == "d":
            if not isinstance(value, int | float) or value != int(value):
                raise EvalError(f"format %d: {value!r} is not a whole number")
            return str(int(value))
        return stringify(value)

    return re.sub(r"%([ds%])", one, spec)


def regex(pattern: str, value: str) -> Any:
    match = re.search(pattern, value)
    if match is None:
        raise EvalError(f"regex: {value!r} does not match {pattern!r}")
    return match.group(0)


def merge(*maps: Any) -> dict:
    merged: dict = {}
    for one in maps:
        if one is None:
            continue
        if not isinstance(one, dict):
            raise EvalError(f"merge: {one!r} is not a map")
        merged.update(one)
    return merged


def jsonencode(value: Any) -> str:
    """As Packer's jsonencode: compact, object keys sorted, <, > and & escaped as Go does."""
    if isinstance(value, Parameter):
        raise Unsupported("jsonencode of a data source's value")
    encoded = json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    for char, escape in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        encoded = encoded.replace(char, escape)
    return encoded


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "merge": merge,
    "keys": lambda m: sorted(m),
    "values": lambda m: [m[k] for k in sorted(m)],
    "length": len,
    "contains": lambda items, value: value in items,
    "floor": math.floor,
    "format": format_,
    "formatdate": formatdate,
    "timeadd": timeadd,
    "regex": regex,
    "jsonencode": jsonencode,
}


def stringify(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(int(value)) if value == int(value) else str(value)
    if isinstance(value, str):
        return value
    raise Unsupported(f"interpolating {value!r} into a string")


# --- the templates ------------------------------------------------------------------------------


class Templates:
    def __init__(
        self,
        directory: Path,
        variables: dict[str, Any] | None = None,
        now: datetime = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC),
    ) -> None:
        self.directory, self.now = directory, now
        self.files = {
            path.name: parse_body(hcl2.parses_to_tree(path.read_text()).children[0], path.name)
            for path in sorted(directory.glob("*.pkr.hcl"))
        }
        self.blocks = [block for body in self.files.values() for block in body.blocks]
        self.variables = {b.labels[0]: self._variable(b) for b in self.of_type("variable")}
        self.auto_values: dict[str, Any] = {}
        for path in sorted(directory.glob("*.auto.pkrvars.hcl")):
            body = parse_body(hcl2.parses_to_tree(path.read_text()).children[0], path.name)
            self.auto_values.update({k: self.eval(v, body, roots=False) for k, v in body.attributes.items()})
        self.given = dict(variables or {})
        unknown = (set(self.given) | set(self.auto_values)) - set(self.variables)
        if unknown:
            raise EvalError(f"values for undeclared variables: {sorted(unknown)}")
        self.local_trees: dict[str, tuple[Tree, Body]] = {}
        for block in self.of_type("locals"):
            for name, tree in block.body.attributes.items():
                if name in self.local_trees:
                    raise EvalError(f"local.{name} is defined twice")
                self.local_trees[name] = (tree, block.body)
        self.local_values: dict[str, Any] = {}
        self.evaluating: list[str] = []
        self.data = {(b.labels[0], b.labels[1]): b for b in self.of_type("data")}
        self.sources = {f"{b.labels[0]}.{b.labels[1]}": b for b in self.of_type("source")}
        if len(self.sources) != len(self.of_type("source")):
            raise EvalError("two top-level sources share a type and name")

    def of_type(self, block_type: str) -> list[Block]:
        return [block for block in self.blocks if block.type == block_type]

    # --- variables and locals

    def _variable(self, block: Block) -> Variable:
        body = block.body
        default = (
            self.eval(body.attributes["default"], body, roots=False)
            if "default" in body.attributes
            else NO_DEFAULT
        )
        validations = tuple(
            (rule.body.attributes["condition"], rule.body.attributes["error_message"])
            for rule in body.blocks
            if rule.type == "validation"
        )
        description = body.attributes.get("description")
        if description is not None:
            description = self.eval(description, body, roots=False)
        return Variable(
            name=block.labels[0],
            type=text(body.attributes["type"]) if "type" in body.attributes else "",
            description=description,
            default=None if default is NO_DEFAULT else default,
            validations=validations,
            required=default is NO_DEFAULT,
        )

    def value(self, name: str) -> Any:
        if name not in self.variables:
            raise EvalError(f"var.{name} is not declared")
        for source in (self.given, self.auto_values):
            if name in source:
                return source[name]
        if self.variables[name].required:
            raise EvalError(f"var.{name} has no value")
        return self.variables[name].default

    def validation_failures(self) -> list[tuple[str, str]]:
        """(variable, error message) of every validation the variable values fail."""
        failures = []
        for name, variable in self.variables.items():
            for condition, message in variable.validations:
                body = Body({}, (), "variables")
                try:
                    passed = self.eval(condition, body) is True
                except EvalError:
                    passed = False
                if not passed:
                    failures.append((name, self.eval(message, body)))
        return failures

    def local(self, name: str) -> Any:
        if name in self.local_values:
            return self.local_values[name]
        if name not in self.local_trees:
            raise EvalError(f"local.{name} is not defined")
        if name in self.evaluating:
            raise EvalError(f"local.{name} refers to itself: {' -> '.join(self.evaluating)}")
        self.evaluating.append(name)
        try:
            tree, body = self.local_trees[name]
            self.local_values[name] = self.eval(tree, body)
        finally:
            self.evaluating.pop()
        return self.local_values[name]

    def data_source(self, data_type: str) -> Namespace:
        def read(name: str) -> dict[str, Any]:
            if (data_type, name) not in self.data:
                raise EvalError(f"data.{data_type}.{name} is not defined")
            if data_type != "amazon-parameterstore":
                raise Unsupported(f"data source type {data_type}")
            body = self.data[data_type, name].body
            settings = {k: self.eval(v, body) for k, v in body.attributes.items()}
            return {"value": Parameter(settings["name"], settings.get("region", ""))}

        return Namespace(f"data.{data_type}", read)

    # --- builds

    def uses(self) -> dict[str, tuple[Block, list[Body], str]]:
        """Every build by name: its build block, the bodies merged into it, its source."""
        found: dict[str, tuple[Block, list[Body], str]] = {}
        for build in self.of_type("build"):
            prefix = (
                self.eval(build.body.attributes["name"], build.body) + "."
                if "name" in build.body.attributes
                else ""
            )
            listed = self.eval(build.body.attributes.get("sources", Tree("tuple", [])), build.body)
            uses = [(reference, None) for reference in listed]
            uses += [(b.labels[0], b.body) for b in self.expand(build.body) if b.type == "source"]
            for reference, body in uses:
                ref = reference.removeprefix("source.")
                if ref not in self.sources:
                    raise EvalError(f"build: unknown source {reference!r}")
                source = self.sources[ref]
                bodies = [source.body]
                name = source.labels[1]
                if body is not None:
                    if "name" in body.attributes:
                        name = self.eval(body.attributes["name"], body, roots=False)
                    bodies.append(
                        Body(
                            {k: v for k, v in body.attributes.items() if k != "name"},
                            body.blocks,
                            body.file,
                            body.scope,
                        )
                    )
                full = f"{prefix}{source.labels[0]}.{name}"
                if full in found:
                    raise EvalError(f"two builds are named {full}")
                found[full] = (build, bodies, ref)
        return found

    def build_names(self) -> list[str]:
        return sorted(self.uses())

    def build(self, name: str) -> Build:
        build, bodies, ref = self.uses()[name]
        settings: dict[str, Any] = {}
        blocks: dict[str, list[dict[str, Any]]] = {}
        for body in bodies:
            for key, tree in body.attributes.items():
                if key in settings:
                    raise EvalError(f"{name}: {key} is set both in source {ref} and in the build")
                settings[key] = self.eval(tree, body)
            for block in self.expand(body):
                blocks.setdefault(block.type, []).append(self.evaluate_body(block.body))
        source_type, _, _ = ref.partition(".")
        scope = {"source": {"name": name.rsplit(".", 1)[-1], "type": source_type}}
        steps: dict[str, list[tuple[str, dict[str, Any]]]] = {"provisioner": [], "post-processor": []}
        for block in self.expand(build.body):
            if block.type in steps:
                body = Body(
                    block.body.attributes, block.body.blocks, block.body.file, {**block.body.scope, **scope}
                )
                if {"only", "except"} & set(body.attributes):
                    raise Unsupported(f"{block.type} only/except")
                steps[block.type].append((block.labels[0], self.evaluate_body(body)))
            elif block.type not in ("source",):
                raise Unsupported(f"build block {block.type}")
        return Build(name, ref, settings, blocks, steps["provisioner"], steps["post-processor"])

    def evaluate_body(self, body: Body) -> dict[str, Any]:
        settings = {key: self.eval(tree, body) for key, tree in body.attributes.items()}
        for block in self.expand(body):
            settings.setdefault(block.type, []).append(self.evaluate_body(block.body))
        return settings

    def expand(self, body: Body) -> Iterator[Block]:
        """The blocks of a body, each `dynamic` block replaced by the blocks it generates."""
        for block in body.blocks:
            if block.type != "dynamic":
                yield block
                continue
            (label,) = block.labels
            attributes = block.body.attributes
            iterator = text(attributes["iterator"]) if "iterator" in attributes else label
            (content,) = [b for b in block.body.blocks if b.type == "content"]
            collection = self.eval(attributes["for_each"], block.body)
            items = collection.items() if isinstance(collection, dict) else enumerate(collection)
            for key, item in sorted(items):
                scope = {**body.scope, iterator: {"key": key, "value": item}}
                inner = Body(block.body.attributes, block.body.blocks, block.body.file, scope)
                labels = tuple(self.eval(attributes["labels"], inner)) if "labels" in attributes else ()
                yield Block(
                    label,
                    labels,
                    Body(content.body.attributes, content.body.blocks, content.body.file, scope),
                )

    # --- what the templates refer to

    def references(self, root: str) -> set[str]:
        """Names used as `<root>.<name>` (var, local) outside the variable blocks."""
        found = set()
        for block in self.blocks:
            if block.type == "variable":
                continue
            for node in _trees(block.body):
                for term in node.iter_subtrees():
                    if term.data == "get_attr_expr_term":
                        base, attribute = term.children
                        if text(base) == root:
                            found.add(text(attribute).lstrip("."))
        return found

    def lone_interpolations(self) -> list[str]:
        """Strings that are one interpolation and nothing else: `"${var.x}"`."""
        found = []
        for block in self.blocks:
            for node in _trees(block.body):
                for term in node.iter_subtrees():
                    if term.data == "string":
                        pieces = [p for p in term.children if isinstance(p, Tree)]
                        if len(pieces) == 1 and isinstance(pieces[0].children[0], Tree):
                            found.append(f"{block.body.file}: {text(term)}")
        return found

    # --- expressions

    def constant(self, node: Tree) -> Any:
        """The value of an expression that may refer to nothing (a literal); else EvalError."""
        return Evaluator(self, {}, roots=False).eval(node)

    def eval(self, node: Tree, body: Body, roots: bool = True) -> Any:
        """The value of an expression of `body`; without roots, var/local/data/path are refused."""
        return Evaluator(self, body.scope, roots).eval(node)


def _trees(body: Body) -> Iterator[Tree]:
    yield from body.attributes.values()
    for block in body.blocks:
        yield from _trees(block.body)


class Evaluator:
    def __init__(self, templates: Templates, scope: dict[str, Any], roots: bool) -> None:
        self.templates, self.scope, self.roots = templates, scope, roots

    def eval(self, node: Tree) -> Any:
        kind = node.data
        if kind == "expr_term":
            (inner,) = parts(node)
            return self.eval(inner)
        method = getattr(self, f"eval_{kind}", None)
        if method is None:
            raise Unsupported(f"expression {kind}: {text(node)}")
        return method(node)

    def eval_int_lit(self, node: Tree) -> int:
        return int(text(node))

    def eval_float_lit(self, node: Tree) -> float:
        return float(text(node))

    def eval_literal_value(self, node: Tree) -> Any:
        return {"true": True, "false": False, "null": None}[text(node)]

    def eval_string(self, node: Tree) -> Any:
        pieces = [p.children[0] for p in node.children if isinstance(p, Tree)]
        if len(pieces) == 1 and isinstance(pieces[0], Tree):
            return self.eval(pieces[0].children[1])  # "${x}" is x itself
        out = []
        for piece in pieces:
            if isinstance(piece, Tree) and piece.data == "interpolation":
                out.append(stringify(self.eval(piece.children[1])))
            elif isinstance(piece, Token) and piece.type == "STRING_CHARS":
                out.append(unescape(piece))
            elif isinstance(piece, Token) and piece.type in ("ESCAPED_INTERPOLATION", "ESCAPED_DIRECTIVE"):
                out.append(piece[1:])
            else:
                raise Unsupported(f"template directive in {text(node)}")
        return "".join(out)

    def eval_tuple(self, node: Tree) -> list:
        return [self.eval(item) for item in parts(node)]

    def eval_object(self, node: Tree) -> dict:
        result = {}
        for element in parts(node):
            key_node, value = parts(element)
            (key_expr,) = parts(key_node)
            key_inner = parts(key_expr)
            if key_inner and key_inner[0].data == "identifier":
                key = text(key_inner[0])  # a bare key is its name, not a variable
            else:
                key = stringify(self.eval(key_expr))
            if key in result:
                raise EvalError(f"object key {key!r} is set twice")
            result[key] = self.eval(value)
        return result

    def eval_identifier(self, node: Tree) -> Any:
        name = text(node)
        if name in self.scope:
            return self.scope[name]
        if not self.roots:
            raise EvalError(f"{name}: variables may not be used here")
        templates = self.templates
        roots: dict[str, Callable[[], Any]] = {
            "var": lambda: Namespace("var", templates.value),
            "local": lambda: Namespace("local", templates.local),
            "data": lambda: Namespace("data", templates.data_source),
            "path": lambda: {"root": str(templates.directory)},
        }
        if name not in roots:
            raise EvalError(f"unknown name {name!r}")
        return roots[name]()

    def eval_get_attr_expr_term(self, node: Tree) -> Any:
        base, attribute = node.children
        return self.index(self.eval(base), text(attribute).lstrip("."), text(node))

    def eval_index_expr_term(self, node: Tree) -> Any:
        base, index = node.children
        if index.data != "braces_index":
            raise Unsupported(f"index {text(index)}")
        return self.index(self.eval(base), self.eval(parts(index)[0]), text(node))

    def index(self, value: Any, key: Any, where: str) -> Any:
        if isinstance(value, Namespace):
            return value.get(key)
        if isinstance(value, dict):
            if key not in value:
                raise EvalError(f"{where}: no key {key!r}")
            return value[key]
        if isinstance(value, list) and isinstance(key, int) and 0 <= key < len(value):
            return value[key]
        raise EvalError(f"{where}: cannot index {value!r} with {key!r}")

    def eval_function_call(self, node: Tree) -> Any:
        name_node, *rest = parts(node)
        name = text(name_node)
        arguments = parts(rest[0]) if rest else []
        if name == "can":
            try:
                self.eval(arguments[0])
            except EvalError:
                return False
            return True
        if name == "timestamp":
            return rfc3339(self.templates.now)
        if name not in FUNCTIONS:
            raise Unsupported(f"function {name}()")
        return FUNCTIONS[name](*(self.eval(argument) for argument in arguments))

    def eval_conditional(self, node: Tree) -> Any:
        condition, if_true, if_false = parts(node)
        return self.eval(if_true if self.eval(condition) is True else if_false)

    def eval_unary_op(self, node: Tree) -> Any:
        operator, operand = node.children
        value = self.eval(operand)
        return (not value) if str(operator) == "!" else -value

    def eval_binary_op(self, node: Tree) -> Any:
        left, term = parts(node)[:2]
        operator_node, right = parts(term)
        operator = text(operator_node)
        a, b = self.eval(left), self.eval(right)  # HCL evaluates both sides
        operations: dict[str, Callable[[Any, Any], Any]] = {
            "==": lambda x, y: x == y,
            "!=": lambda x, y: x != y,
            "<": lambda x, y: x < y,
            ">": lambda x, y: x > y,
            "<=": lambda x, y: x <= y,
            ">=": lambda x, y: x >= y,
            "+": lambda x, y: x + y,
            "-": lambda x, y: x - y,
            "*": lambda x, y: x * y,
            "/": lambda x, y: x / y,
            "%": lambda x, y: x % y,
            "&&": lambda x, y: x and y,
            "||": lambda x, y: x or y,
        }
        if operator in ("&&", "||") and not (isinstance(a, bool) and isinstance(b, bool)):
            raise EvalError(f"{text(node)}: {operator} needs two bools")
        return operations[operator](a, b)

    def for_items(self, node: Tree) -> Iterator[dict[str, Any]]:
        """The scopes of a for expression's iterations, its `if` applied."""
        intro = next(p for p in parts(node) if p.data == "for_intro")
        names = [text(n) for n in parts(intro) if n.data == "identifier"]
        collection = self.eval(parts(intro)[-1])
        items = sorted(collection.items()) if isinstance(collection, dict) else list(enumerate(collection))
        condition = next((p for p in parts(node) if p.data == "for_cond"), None)
        for key, item in items:
            bound = dict(zip(names, (key, item), strict=False)) if len(names) == 2 else {names[0]: item}
            inner = Evaluator(self.templates, {**self.scope, **bound}, self.roots)
            if condition is None or inner.eval(parts(condition)[0]) is True:
                yield inner

    def eval_for_tuple_expr(self, node: Tree) -> list:
        (value,) = [p for p in parts(node) if p.data not in ("for_intro", "for_cond")]
        return [inner.eval(value) for inner in self.for_items(node)]

    def eval_for_object_expr(self, node: Tree) -> dict:
        if any(isinstance(c, Token) and c.type == "ELLIPSIS" for c in node.children):
            raise Unsupported("grouping for expression (...)")
        key_node, value_node = [p for p in parts(node) if p.data not in ("for_intro", "for_cond")]
        result = {}
        for inner in self.for_items(node):
            key = stringify(inner.eval(key_node))
            if key in result:
                raise EvalError(f"{text(node)}: duplicate key {key!r}")
            result[key] = inner.eval(value_node)
        return result
