# Copyright: the ecs-imds-golden authors
# Apache License 2.0
"""What a GitHub Actions job would do with its steps, worked out without GitHub.

- `evaluate(value, context)`: a workflow value with its `${{ ... }}` expressions evaluated as
  the runner does, for the constructs the workflows use: contexts (github, inputs, matrix,
  vars, env, steps, needs, runner), literals, ! == != < > <= >= && || (which return an
  operand, as in GitHub), parentheses, and the functions fromJSON, toJSON, format, contains,
  startsWith, always and success. A value that is one expression keeps its type (a matrix
  from fromJSON is a list); one with text around is a string. Anything else raises
  Unsupported, so the tests fail loudly instead of misreading a workflow.
- `commands(script)`: the simple commands of a `run:` script, each with whether it runs
  through sudo and the variables it is given (VAR=x before it, or through env), to find a
  step by what it runs.
- `Sandbox`: runs a step's script with bash as the runner does (`bash --noprofile --norc -eo
  pipefail`), in a workspace folder, with a PATH of stubs (which record their calls) and of a
  few harmless tools only: any other program is not found, so a step can never reach the real
  make, molecule, pip or sudo. The sudo stub behaves as sudo does with a secure_path: PATH
  becomes a folder that holds env alone, and the environment is kept only with
  --preserve-env.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any


class Unsupported(Exception):
    """An expression construct these helpers do not evaluate."""


TOKEN = re.compile(
    r"""\s*(?:
    (?P<number>\d+(?:\.\d+)?)
    |(?P<string>'(?:[^']|'')*')
    |(?P<op>==|!=|<=|>=|&&|\|\||[!<>()\[\],.*])
    |(?P<name>[A-Za-z_][A-Za-z0-9_-]*)
    )""",
    re.VERBOSE,
)
EXPRESSION = re.compile(r"\$\{\{(.*?)\}\}", re.DOTALL)


def tokens(text: str) -> list[tuple[str, str]]:
    found, index = [], 0
    while index < len(text):
        if text[index:].strip() == "":
            break
        match = TOKEN.match(text, index)
        if not match or match.end() == index:
            raise Unsupported(f"cannot read {text[index:]!r} in {text!r}")
        kind = match.lastgroup
        found.append((kind, match.group(kind)))
        index = match.end()
    return found


def truthy(value: Any) -> bool:
    return value not in (None, False, 0, "") and value == value  # NaN is falsy too


def text(value: Any) -> str:
    """A value as it is interpolated into a string."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def equal(left: Any, right: Any) -> bool:
    if isinstance(left, str) and isinstance(right, str):
        return left.lower() == right.lower()  # GitHub compares strings ignoring case
    return left == right


def format_string(template: str, *args: Any) -> str:
    out = template.replace("{{", "\0").replace("}}", "\1")
    out = re.sub(r"\{(\d+)\}", lambda m: text(args[int(m.group(1))]), out)
    return out.replace("\0", "{").replace("\1", "}")


FUNCTIONS = {
    "fromjson": lambda value: json.loads(value),
    "tojson": lambda value: json.dumps(value, indent=2),
    "format": format_string,
    "contains": lambda haystack, needle: (
        any(equal(item, needle) for item in haystack)
        if isinstance(haystack, list)
        else text(needle).lower() in text(haystack).lower()
    ),
    "startswith": lambda value, prefix: text(value).lower().startswith(text(prefix).lower()),
}


class Parser:
    def __init__(self, source: str, context: dict):
        self.items, self.at, self.context, self.source = tokens(source), 0, context, source

    def peek(self) -> tuple[str, str] | None:
        return self.items[self.at] if self.at < len(self.items) else None

    def take(self, value: str | None = None) -> tuple[str, str]:
        item = self.peek()
        if item is None or (value is not None and item[1] != value):
            raise Unsupported(f"expected {value or 'more'} in {self.source!r}")
        self.at += 1
        return item

    def parse(self) -> Any:
        value = self.either()
        if self.peek() is not None:
            raise Unsupported(f"cannot read {self.peek()} in {self.source!r}")
        return value

    def either(self) -> Any:  # a || b: a if truthy, else b
        return self.chain("||", self.both, lambda value, other: value if truthy(value) else other)

    def both(self) -> Any:  # a && b: b if a is truthy, else a
        return self.chain("&&", self.compare, lambda value, other: other if truthy(value) else value)

    def chain(self, op: str, operand, pick) -> Any:
        """Operands of one precedence level joined by ``op``, left to right, each read whole."""
        value = operand()
        while self.peek() == ("op", op):
            self.take()
            value = pick(value, operand())
        return value

    def compare(self) -> Any:
        value = self.unary()
        item = self.peek()
        if item and item[0] == "op" and item[1] in ("==", "!=", "<", ">", "<=", ">="):
            self.take()
            other = self.unary()
            return {
                "==": lambda: equal(value, other),
                "!=": lambda: not equal(value, other),
                "<": lambda: value < other,
                ">": lambda: value > other,
                "<=": lambda: value <= other,
                ">=": lambda: value >= other,
            }[item[1]]()
        return value

    def unary(self) -> Any:
        if self.peek() == ("op", "!"):
            self.take()
            return not truthy(self.unary())
        return self.postfix()

    def postfix(self) -> Any:
        value = self.primary()
        while self.peek() in (("op", "."), ("op", "[")):
            if self.take()[1] == ".":
                key = self.take()[1]
            else:
                key = self.either()
                self.take("]")
            if key == "*":
                raise Unsupported(f"object filters in {self.source!r}")
            value = value.get(key) if isinstance(value, dict) else None
        return value

    def primary(self) -> Any:
        kind, value = self.take()
        if kind == "number":
            return float(value) if "." in value else int(value)
        if kind == "string":
            return value[1:-1].replace("''", "'")
        if kind == "op" and value == "(":
            inner = self.either()
            self.take(")")
            return inner
        if kind == "name":
            if value in ("true", "false"):
                return value == "true"
            if value == "null":
                return None
            if self.peek() == ("op", "("):
                self.take()
                args = []
                while self.peek() != ("op", ")"):
                    args.append(self.either())
                    if self.peek() == ("op", ","):
                        self.take()
                self.take(")")
                return self.call(value, args)
            return self.context.get(value)
        raise Unsupported(f"cannot read {value!r} in {self.source!r}")

    def call(self, name: str, args: list) -> Any:
        status = self.context.get("job_status", "success")  # how the job's steps went so far
        checks = {"always": True, "success": status == "success", "failure": status == "failure"}
        if name.lower() in checks:
            return checks[name.lower()]
        if name.lower() not in FUNCTIONS:
            raise Unsupported(f"function {name} in {self.source!r}")
        return FUNCTIONS[name.lower()](*args)


def expression(source: str, context: dict) -> Any:
    """One expression, without ${{ }} (as in `if:`)."""
    return Parser(source, context).parse()


def evaluate(value: Any, context: dict) -> Any:
    """A workflow value with its ${{ }} expressions evaluated; mappings and lists throughout."""
    if isinstance(value, dict):
        return {key: evaluate(item, context) for key, item in value.items()}
    if isinstance(value, list):
        return [evaluate(item, context) for item in value]
    if not isinstance(value, str):
        return value
    whole = EXPRESSION.fullmatch(value.strip())
    if whole and value.strip().count("${{") == 1:
        return expression(whole.group(1), context)
    return EXPRESSION.sub(lambda m: text(expression(m.group(1), context)), value)


def condition(step_or_job: dict, context: dict) -> bool:
    """Whether `if:` lets a step or job run (success() when it has none)."""
    source = step_or_job.get("if", "success()")
    if isinstance(source, bool):
        return source
    source = source.strip()
    whole = EXPRESSION.fullmatch(source)
    return truthy(expression(whole.group(1) if whole else source, context))


def references(value: Any) -> set[str]:
    """The context properties the expressions of a value read, as dotted names (vars.AWS_REGION)."""
    found: set[str] = set()
    if isinstance(value, dict):
        for key, item in value.items():
            found |= references(key) | references(item)
    elif isinstance(value, list):
        for item in value:
            found |= references(item)
    elif isinstance(value, str):
        for match in EXPRESSION.finditer(value):
            items = tokens(match.group(1))
            for index, (kind, name) in enumerate(items):
                starts = index == 0 or items[index - 1] != ("op", ".")
                if kind == "name" and starts and (index + 1 >= len(items) or items[index + 1] != ("op", "(")):
                    parts, at = [name], index + 1
                    while at + 1 < len(items) and items[at] == ("op", ".") and items[at + 1][0] == "name":
                        parts.append(items[at + 1][1])
                        at += 2
                    found.add(".".join(parts))
    return found


# --- run: scripts --------------------------------------------------------------------------------

RESERVED = {"if", "then", "else", "elif", "fi", "do", "done", "while", "until", "!", "{", "}"}
ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


class Command:
    """One simple command of a script: argv after sudo, env and VAR=x are taken off."""

    def __init__(self, words: list[str]):
        self.sudo = False
        self.sudo_options: list[str] = []
        self.env: dict[str, str] = {}
        words = list(words)
        while words:
            if words[0] in RESERVED:
                words.pop(0)
            elif ASSIGNMENT.match(words[0]):
                name, _, value = words.pop(0).partition("=")
                self.env[name] = value
            elif words[0] == "sudo":
                self.sudo = True
                words.pop(0)
                while words and words[0].startswith("-"):
                    self.sudo_options.append(words.pop(0))
            elif words[0] == "env":
                words.pop(0)
            else:
                break
        self.argv = words

    def __repr__(self) -> str:
        return f"Command(sudo={self.sudo}, env={self.env}, argv={self.argv})"


def commands(script: str) -> list[Command]:
    """The simple commands of a script, split at newlines, ;, &&, || and |. Loops' headers
    (for ... in ...) are skipped; a heredoc or a case statement is not read. An expression left
    in the script (${{ }}, not evaluated) is read as the word EXPRESSION."""
    script = EXPRESSION.sub("EXPRESSION", script)
    lexer = shlex.shlex(script.replace("\\\n", " "), posix=True, punctuation_chars=";&|\n")
    lexer.whitespace = " \t\r"
    lexer.whitespace_split = True
    found, words = [], []
    for word in [*lexer, ";"]:
        if word and set(word) <= set(";&|\n"):
            command = Command(words)
            if command.argv and command.argv[0] != "for":
                found.append(command)
            words = []
        else:
            words.append(word)
    return found


def runs(step: dict, *argv: str) -> Command | None:
    """The step's command whose argv starts with argv, if it runs one."""
    for command in commands(step.get("run", "")):
        if command.argv[: len(argv)] == list(argv):
            return command
    return None


# --- running a step ------------------------------------------------------------------------------

# Programs a step may run for real: they read and write only what they are given, in the
# workspace and the runner's files.
TOOLS = ("jq", "grep", "sort", "paste", "mkdir", "basename", "dirname", "tee", "cat", "env", "head", "tr")

STUB = """#!{python}
import json, os, sys
with open({log!r}, "a") as log:
    log.write(json.dumps({{"argv": sys.argv[1:], "env": dict(os.environ), "cwd": os.getcwd()}}) + "\\n")
{body}
"""

SUDO = """
args = sys.argv[1:]
preserve = False
while args and args[0].startswith("-"):
    preserve = preserve or args[0] in ("-E", "--preserve-env")
    args.pop(0)
env = dict(os.environ) if preserve else {{"HOME": "/root"}}
env["PATH"] = {secure!r}
os.execvpe(args[0], args, env)
"""


class Sandbox:
    """A runner's workspace and files, with programs stubbed; see the module's docstring."""

    def __init__(self, root: Path):
        self.root = root
        self.workspace = root / "workspace"
        self.stubs, self.tools, self.secure, self.logs = (
            root / n for n in ("stubs", "tools", "secure", "logs")
        )
        for folder in (self.workspace, self.stubs, self.tools, self.secure, self.logs, root / "temp"):
            folder.mkdir(parents=True, exist_ok=True)
        for tool in TOOLS:
            found = shutil.which(tool)
            assert found, f"{tool} is needed to run the workflow steps"
            (self.tools / tool).symlink_to(found)
        (self.secure / "env").symlink_to(shutil.which("env"))
        self.files = {name: root / name.lower() for name in ("GITHUB_ENV", "GITHUB_OUTPUT", "GITHUB_PATH")}
        self.files["GITHUB_STEP_SUMMARY"] = root / "summary.md"
        for path in self.files.values():
            path.write_text("")
        self.stub("sudo", SUDO.format(secure=str(self.secure)))

    def stub(self, name: str, body: str = "", folder: Path | None = None) -> Path:
        """A program that records each call (argv, environment, folder) and then runs `body`,
        Python with sys.argv, os and json at hand."""
        path = (folder or self.stubs) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        log = self.logs / f"{name}.jsonl"
        path.write_text(STUB.format(python=sys.executable, log=str(log), body=body))
        path.chmod(0o755)
        return path

    def calls(self, name: str) -> list[dict]:
        log = self.logs / f"{name}.jsonl"
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

    def output(self, name: str) -> dict[str, str]:
        """KEY=VALUE lines a step wrote to GITHUB_ENV or GITHUB_OUTPUT."""
        lines = self.files[name].read_text().splitlines()
        return dict(line.split("=", 1) for line in lines if "=" in line)

    def context(self) -> dict[str, Any]:
        return {"github": {"workspace": str(self.workspace)}, "runner": {"temp": str(self.root / "temp")}}

    def run(self, script: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        """The script as a step runs it, with the runner's variables, those GITHUB_ENV holds so
        far (as a later step sees them) and env."""
        variables = {
            "PATH": f"{self.stubs}:{self.tools}",
            "HOME": str(self.root),
            "RUNNER_TEMP": str(self.root / "temp"),
            "GITHUB_WORKSPACE": str(self.workspace),
            **{name: str(path) for name, path in self.files.items()},
            **self.output("GITHUB_ENV"),
            **(env or {}),
        }
        bash = ["/bin/bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script]
        return subprocess.run(
            bash, cwd=self.workspace, env=variables, capture_output=True, text=True, timeout=60, check=False
        )


def step_env(workflow: dict, job: dict, step: dict, context: dict) -> dict[str, str]:
    """The environment a step's script gets from the workflow, its job and itself, evaluated."""
    env: dict[str, str] = {}
    for level in (workflow, job, step):
        for key, value in (level.get("env") or {}).items():
            env[key] = text(evaluate(value, {**context, "env": env}))
    return env


def make_dry_run(root: Path, argv: list[str], env: dict[str, str]) -> list[list[str]]:
    """`make -n ARGV` in root: the commands make would run, each split as the shell splits it
    (a command substitution, $(...), becomes the word SUBSTITUTED)."""
    result = subprocess.run(
        ["make", "-n", "--no-print-directory", *argv],
        cwd=root,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, f"make -n {' '.join(argv)}: {result.stderr}"
    lines = re.sub(r"\\\n\s*", " ", result.stdout).splitlines()  # a recipe line continued with a backslash
    return [shlex.split(re.sub(r"\$\([^)]*\)", "SUBSTITUTED", line)) for line in lines]
