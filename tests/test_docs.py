# Copyright: the ecs-imds-golden authors
# Apache License 2.0
"""The documentation says what is there.

Every command the README, docs/ and the role's README show names something that exists, as
the tool itself answers: a make target (make -n), a checkout script, a golden-ami subcommand
(its --help), a tox environment (tox config), a Molecule scenario. Every relative link leads
to a file, and to a heading of it. Every table has as many cells in each row as its header.
The role's variables table is what scripts/role-readme writes from meta/argument_specs.yml.
"""

from __future__ import annotations

import itertools
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest
import yaml
from conftest import ROLE, ROOT

README = ROOT / "README.md"
ROLE_README = ROLE / "README.md"
DOCS = [README, *sorted((ROOT / "docs").glob("*.md")), ROLE_README]
GENERATOR = ROOT / "scripts" / "role-readme"
BEGIN = "<!-- BEGIN variables (scripts/role-readme) -->"
END = "<!-- END variables (scripts/role-readme) -->"

FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", re.M | re.S)
SPAN = re.compile(r"(?<!`)`([^`]+)`(?!`)")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t#]*$", re.M)
ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")
SHELL_BLOCKS = {"sh", "shell", "bash", "console"}
PROGRAMS = {"make", "golden-ami", "tox", "molecule"}


# --- what the documents show -------------------------------------------------------------------


def without_code_blocks(text: str) -> str:
    return FENCE.sub("", text)


def shown(text: str) -> list[str]:
    """The command lines of the shell blocks (a console block's after its prompt) and every
    inline code span outside them, each on one line."""
    lines = []
    for lang, body in FENCE.findall(text):
        lang = lang.strip()
        if lang not in SHELL_BLOCKS:
            continue
        for line in body.replace("\\\n", " ").splitlines():
            line = line.strip()
            if lang == "console":
                if not line.startswith("$ "):
                    continue  # the command's output
                line = line[2:]
            lines.append(line)
    lines += [" ".join(span.split()) for span in SPAN.findall(without_code_blocks(text))]
    return lines


def command(line: str) -> tuple[dict[str, str], list[str]] | None:
    """(leading VAR=value assignments, argv) when line runs one of ours, else None. A tool's
    own message quoted in the text (`make ami: no AWS credentials …`) is no command."""
    try:
        words = shlex.split(line, comments=True)
    except ValueError:
        return None
    env = {}
    while words and ASSIGNMENT.match(words[0]):
        name, _, value = words.pop(0).partition("=")
        env[name] = value
    if not words:
        return None
    if words[0].startswith("scripts/"):
        return env, words
    if words[0] in PROGRAMS and len(words) > 1 and not words[1].endswith(":"):
        return env, words
    return None


def all_commands() -> dict[str, dict[tuple, list[str]]]:
    """program -> (env, argv) -> the documents showing it."""
    found: dict[str, dict[tuple, list[str]]] = defaultdict(lambda: defaultdict(list))
    for doc in DOCS:
        for line in shown(doc.read_text()):
            parsed = command(line)
            if parsed:
                env, argv = parsed
                program = "scripts" if argv[0].startswith("scripts/") else argv[0]
                key = (tuple(sorted(env.items())), tuple(argv))
                found[program][key].append(doc.relative_to(ROOT).as_posix())
    return found


COMMANDS = all_commands()


def test_the_readme_shows_its_two_commands_and_the_extraction_sees_them():
    readme = [command(line) for line in shown(README.read_text())]
    assert {("make", "test"), ("make", "image")} <= {tuple(found[1]) for found in readme if found}
    # A fenced block's comment, a tool's message and plain prose are no commands.
    assert command("make ami: no AWS credentials found") is None
    assert command("# make nosuch") is None
    assert command("golden-ami") is None
    distro = {"MOLECULE_DISTRO": "debian13"}
    assert command("MOLECULE_DISTRO=debian13 molecule test") == (distro, ["molecule", "test"])


# --- make: ask make itself, with a PATH that holds nothing to run --------------------------


@pytest.fixture(scope="module")
def make(tmp_path_factory):
    """make -n ARGS in the checkout, with an empty PATH and HOME: make only prints the recipes
    (a recursive $(MAKE) runs dry too), and nothing else is found to run."""
    binary = shutil.which("make")
    if binary is None:
        pytest.fail("make is needed")
    empty = tmp_path_factory.mktemp("empty-path")

    def run(args) -> subprocess.CompletedProcess:
        return subprocess.run(
            [binary, "-n", "-C", str(ROOT), *args],
            env={"PATH": str(empty), "HOME": str(empty)},
            capture_output=True,
            text=True,
            timeout=60,
        )

    return run


def test_every_make_command_shown_names_a_target_of_the_makefile(make):
    assert COMMANDS["make"], "no make command found in the documents"
    failed = {}
    for (_, argv), where in COMMANDS["make"].items():
        result = make(argv[1:])
        if result.returncode != 0:
            failed[" ".join(argv)] = (where, result.stderr.strip())
    assert failed == {}


def test_make_n_refuses_a_target_that_is_not_there(make):
    result = make(["no-such-target"])
    assert result.returncode != 0 and "No rule to make target" in result.stderr


# --- checkout scripts ---------------------------------------------------------------------


def test_every_script_shown_exists_and_runs():
    """A script is run by its path, so it must be executable; a Python module or package of
    scripts/ (`python -m` runs it) must exist."""
    assert COMMANDS["scripts"], "no scripts/ command found in the documents"
    failed = {}
    for (_, argv), where in COMMANDS["scripts"].items():
        path = ROOT / argv[0]
        runnable = path.is_dir() or path.suffix == ".py" or os.access(path, os.X_OK)
        if not (path.exists() and runnable):
            failed[argv[0]] = where
    assert failed == {}


# --- golden-ami: the parser answers --help for each subcommand ------------------------------


def tool(name: str, install: str) -> str:
    """The console script of the environment running pytest (tox's), else the one on PATH."""
    found = Path(sys.executable).with_name(name)
    binary = str(found) if found.exists() else shutil.which(name)
    if binary is None:
        pytest.fail(f"{name} is needed ({install})")
    return binary


@pytest.fixture(scope="module")
def golden_ami(tmp_path_factory):
    """golden-ami ARGS with fake credentials, no AWS configuration and no instance metadata."""
    binary = tool("golden-ami", "pip install -e .")
    home = tmp_path_factory.mktemp("home")
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(home),
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": str(home / "no-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(home / "no-credentials"),
    }

    def run(args) -> subprocess.CompletedProcess:
        return subprocess.run([binary, *args], env=env, cwd=home, capture_output=True, text=True, timeout=60)

    return run


def test_every_golden_ami_command_shown_is_a_subcommand_of_the_cli(golden_ami):
    subcommands = defaultdict(list)
    for (_, argv), where in COMMANDS["golden-ami"].items():
        subcommands[argv[1]] += where
    assert {"publish", "rollback", "find", "cleanup", "user-data", "audit"} <= set(subcommands)
    failed = {}
    for sub, where in sorted(subcommands.items()):
        result = golden_ami([sub, "--help"])
        if result.returncode != 0 or not result.stdout.startswith("usage: golden-ami " + sub):
            failed[sub] = (sorted(set(where)), result.stderr.strip())
    assert failed == {}


def test_the_cli_refuses_a_subcommand_that_is_not_there(golden_ami):
    result = golden_ami(["no-such-command", "--help"])
    assert result.returncode == 2 and "invalid choice" in result.stderr


# --- tox: ask tox for each environment ------------------------------------------------------


@pytest.fixture(scope="module")
def tox_config(tmp_path_factory):
    """tox config for some environments; --no-provision: tox never installs itself anew."""
    binary = tool("tox", "make .venv/.ready")
    work = tmp_path_factory.mktemp("tox")  # tox's own folder, not .tox in the checkout

    def run(envs) -> subprocess.CompletedProcess:
        argv = [binary, "--no-provision", "--workdir", str(work), "-c", str(ROOT / "tox.ini")]
        return subprocess.run(
            [*argv, "config", "-e", ",".join(envs), "-k", "env_name"],
            env={"PATH": "/usr/bin:/bin", "HOME": str(work)},
            cwd=work,
            capture_output=True,
            text=True,
            timeout=120,
        )

    return run


def tox_envs(argv) -> set[str]:
    envs = set()
    for flag, value in itertools.pairwise(argv):
        if flag == "-e":
            envs |= set(re.split(r"[|,]", value))
    return envs


def test_every_tox_environment_shown_is_one_of_tox_ini(tox_config):
    shown_envs = set().union(*(tox_envs(argv) for _, argv in COMMANDS["tox"]))
    assert {"lint", "unit", "molecule", "image"} <= shown_envs
    result = tox_config(sorted(shown_envs))
    assert result.returncode == 0, result.stdout + result.stderr
    assert set(re.findall(r"^env_name = (.+)$", result.stdout, re.M)) == shown_envs


def test_tox_refuses_an_environment_that_is_not_there(tox_config):
    assert tox_config(["no-such-env"]).returncode != 0


# --- molecule: the scenario ---------------------------------------------------------------


def test_every_molecule_command_shown_names_a_scenario_that_exists():
    assert COMMANDS["molecule"], "no molecule command found in the documents"
    failed = {}
    for (_, argv), where in COMMANDS["molecule"].items():
        scenario = "default"
        for flag, value in itertools.pairwise(argv):
            if flag in ("-s", "--scenario-name"):
                scenario = value
        if not (ROOT / "molecule" / scenario / "molecule.yml").is_file():
            failed[" ".join(argv)] = where
    assert failed == {}


# --- links and tables -----------------------------------------------------------------------


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: the text of its links, lower case, without punctuation,
    spaces as hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = without_code_blocks(path.read_text())
    found, seen = set(), defaultdict(int)
    for _, heading in HEADING.findall(text):
        base = slug(heading)
        found.add(base if not seen[base] else f"{base}-{seen[base]}")
        seen[base] += 1
    found |= set(re.findall(r"<a\s+(?:id|name)=\"([^\"]+)\"", text))
    return found


def test_anchors_are_spelled_as_github_spells_them(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# The local image: `make image`\n## `audit-verify-hosts.json`\n## Notes\n## Notes\n")
    assert anchors(page) == {"the-local-image-make-image", "audit-verify-hostsjson", "notes", "notes-1"}


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_leads_to_a_file_and_heading_that_exist(doc):
    text = SPAN.sub("", without_code_blocks(doc.read_text()))
    broken = []
    for target in LINK.findall(text):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):
            continue  # https:, mailto:: not followed, nothing leaves the machine
        file, _, anchor = target.partition("#")
        path = (doc.parent / file).resolve() if file else doc
        if not path.exists():
            broken.append(f"{target}: no such file")
        elif anchor and (path.suffix != ".md" or anchor not in anchors(path)):
            broken.append(f"{target}: no heading #{anchor} in {path.relative_to(ROOT)}")
    assert broken == []


def cells(row: str) -> list[str]:
    """A table row's cells: split at pipes that are not escaped (code spans do not protect
    them in a table)."""
    return [cell.strip() for cell in re.split(r"(?<!\\)\|", row.strip().strip("|"))]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_table_has_as_many_cells_in_each_row_as_its_header(doc):
    uneven = []
    for table in re.findall(r"(?:^\|.*\|[ \t]*\n)+", without_code_blocks(doc.read_text()), re.M):
        rows = table.splitlines()
        width = len(cells(rows[0]))
        assert re.fullmatch(r"\|(?: *:?-+:? *\|)+", rows[1].replace(" ", "")), rows[1]
        uneven += [row for row in rows if len(cells(row)) != width]
    assert uneven == []


# --- the role's README --------------------------------------------------------------------


def options(role: Path = ROLE) -> dict:
    specs = yaml.safe_load((role / "meta" / "argument_specs.yml").read_text())
    return specs["argument_specs"]["main"]["options"]


def variables_table(readme: str) -> list[list[str]]:
    """The rows (name, type, default, description) between the generator's markers."""
    assert readme.count(BEGIN) == 1 and readme.count(END) == 1
    part = readme.split(BEGIN, 1)[1].split(END, 1)[0]
    rows = [cells(line) for line in part.splitlines() if line.startswith("|")]
    assert rows[0] == ["Variable", "Type", "Default", "Description"]
    return rows[2:]


def code_spans(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def expected_type(spec: dict) -> list[str]:
    kind = [spec.get("type", "str")]
    if spec.get("type") == "list" and "elements" in spec:
        kind.append(spec["elements"])
    return kind + [str(choice) for choice in spec.get("choices", [])]


def assert_table_holds(readme: str, specs: dict, defaults: dict) -> None:
    """Each row, read back as YAML, is the variable's spec, in the specs' order."""
    rows = variables_table(readme)
    assert [code_spans(row[0])[0] for row in rows] == list(specs)
    for (_, kind, default, description), (name, spec) in zip(rows, specs.items(), strict=True):
        assert code_spans(kind) == expected_type(spec), name
        assert yaml.safe_load(code_spans(default)[0]) == spec.get("default", defaults.get(name)), name
        text = spec["description"]
        text = " ".join(text) if isinstance(text, list) else text
        assert description.replace("\\|", "|") == " ".join(text.split()), name


def role_readme(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(GENERATOR), *args], cwd=cwd, capture_output=True, text=True, timeout=60
    )


def test_the_generator_is_an_executable_script():
    assert os.access(GENERATOR, os.X_OK)
    assert GENERATOR.read_text().startswith("#!/usr/bin/env python3\n")


def test_the_role_readme_table_is_up_to_date():
    result = role_readme("--check")
    assert result.returncode == 0, result.stderr


def test_the_role_readme_table_holds_every_variable_with_its_type_default_and_description():
    defaults = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    assert_table_holds(ROLE_README.read_text(), options(), defaults)


@pytest.fixture
def role_copy(tmp_path) -> Path:
    """The files the generator reads and writes, in a role folder of their own."""
    role = tmp_path / "role"
    for part in ("README.md", "meta/argument_specs.yml", "defaults/main.yml"):
        (role / part).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROLE / part, role / part)
    return role


def edit_specs(role: Path, change) -> None:
    path = role / "meta" / "argument_specs.yml"
    specs = yaml.safe_load(path.read_text())
    change(specs["argument_specs"]["main"]["options"])
    path.write_text(yaml.safe_dump(specs, sort_keys=False))


def test_the_check_fails_when_the_specs_change_and_the_generator_brings_the_table_back(role_copy):
    before = (role_copy / "README.md").read_text()

    def change(specs):
        specs["ecs_imds_block_heal_interval"]["default"] = 5
        specs["ecs_imds_block_action"]["description"] = "How | the block answers."
        # No default in the specs: the generator reads defaults/main.yml, as Ansible does.
        specs["ecs_imds_block_extra"] = {"type": "list", "elements": "str", "description": "A new one."}

    edit_specs(role_copy, change)
    defaults = role_copy / "defaults" / "main.yml"
    defaults.write_text(defaults.read_text() + 'ecs_imds_block_extra: ["a b"]\n')

    stale = role_readme("--check", "--role", str(role_copy))
    assert stale.returncode == 1
    assert str(role_copy / "README.md") in stale.stderr and "out of date" in stale.stderr
    assert (role_copy / "README.md").read_text() == before, "--check writes nothing"

    assert role_readme("--role", str(role_copy)).returncode == 0
    assert role_readme("--check", "--role", str(role_copy)).returncode == 0
    after = (role_copy / "README.md").read_text()
    assert_table_holds(after, options(role_copy), yaml.safe_load(defaults.read_text()))
    assert after.split(BEGIN)[0] == before.split(BEGIN)[0]
    assert after.split(END)[1] == before.split(END)[1]


def test_a_variable_without_a_description_is_refused_by_name(role_copy):
    before = (role_copy / "README.md").read_text()
    edit_specs(role_copy, lambda specs: specs["ecs_imds_block_ipv6"].pop("description"))
    result = role_readme("--role", str(role_copy))
    assert result.returncode == 2 and "ecs_imds_block_ipv6 has no description" in result.stderr
    assert (role_copy / "README.md").read_text() == before


def test_a_readme_without_the_markers_is_refused(role_copy):
    readme = role_copy / "README.md"
    readme.write_text(readme.read_text().replace(END, ""))
    result = role_readme("--check", "--role", str(role_copy))
    assert result.returncode == 2 and "markers" in result.stderr


def example_playbook() -> list[dict]:
    section = ROLE_README.read_text().split("\n## Example playbook\n", 1)[1].split("\n## ", 1)[0]
    [(lang, body)] = FENCE.findall(section)
    assert lang.strip() == "yaml"
    return yaml.safe_load(body)


def test_the_example_playbook_passes_the_role_s_argument_specs_and_ansible_s_syntax_check(
    ansible_playbook, tmp_path
):
    from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

    plays = example_playbook()
    roles = [role for play in plays for role in play["roles"]]
    assert [role["role"] for role in roles] == ["ecs_imds_block"]
    validated = ArgumentSpecValidator(options()).validate(dict(roles[0]["vars"]))
    assert validated.error_messages == []

    playbook = tmp_path / "example.yml"
    playbook.write_text(yaml.safe_dump(plays))
    result = subprocess.run(
        [ansible_playbook, "-i", "localhost,", "--syntax-check", str(playbook)],
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "ANSIBLE_ROLES_PATH": str(ROLE.parent)},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_role_readme_names_every_tag():
    tasks = yaml.safe_load((ROLE / "tasks" / "main.yml").read_text())
    tags = {tag for task in tasks for tag in task["tags"] if tag != "always"}
    text = ROLE_README.read_text()
    assert tags and {tag for tag in tags if f"`{tag}`" not in text} == set()
