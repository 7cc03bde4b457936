# Copyright: the ecs-imds-golden authors
# Apache License 2.0
"""The repository's shape: the architecture document's file table is the tree, the installable
package stands alone, and source files carry the project's licence."""

from __future__ import annotations

import ast
import re
import subprocess
import sys

from conftest import ROOT

PACKAGE = ROOT / "src" / "golden_ami"
# What the installed package may import: the standard library, its dependencies in
# pyproject.toml, the role's files it ships with, and itself.
INSTALLED = {"boto3", "botocore", "yaml", "ecs_imds_block", "golden_ami"}
LICENCE = ("Copyright: the ecs-imds-golden authors", "Apache License 2.0")
SOURCE = re.compile(r"\.(py|sh|ya?ml|j2|hcl|md)\Z")


def tracked() -> list[str]:
    return subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()


def file_table() -> set[str]:
    """The paths in the first column of docs/architecture.md's "Files" table."""
    section = (ROOT / "docs" / "architecture.md").read_text().split("\n## Files\n", 1)[1]
    return set(re.findall(r"^\| `([^`]+)` \|", section.split("\n## ", 1)[0], re.M))


def test_the_architecture_file_table_names_what_is_there():
    assert sorted(path for path in file_table() if not (ROOT / path).exists()) == []


def entry(path: str, depth: int) -> str:
    """The first ``depth`` parts of a tracked path: a directory (with its slash) or a file."""
    parts = path.split("/")
    return "/".join(parts[:depth]) + ("/" if len(parts) > depth else "")


def test_the_architecture_file_table_names_every_module_tool_and_top_level_entry():
    """Every top-level file and folder (but dotfiles), and, for src/, scripts/ and roles/, what
    is inside: the package's modules, each checkout tool, the role."""
    paths = tracked()
    wanted = {entry(p, 1) for p in paths if not p.startswith(("src/", "scripts/", "roles/"))}
    wanted = {name for name in wanted if not name.startswith(".") or name.endswith("/")}
    wanted |= {entry(p, 3) for p in paths if p.startswith("src/golden_ami/")}
    wanted |= {entry(p, 2) for p in paths if p.startswith(("scripts/", "roles/"))}
    assert sorted(wanted - file_table()) == []


def test_the_installable_package_imports_nothing_from_the_checkout():
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):  # its subpackages (golden_ami.audit) too
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".", 1)[0]
                if top not in INSTALLED and top not in sys.stdlib_module_names:
                    found.setdefault(str(path.relative_to(PACKAGE)), []).append(name)
    assert found == {}


def test_source_files_carry_the_licence():
    missing = []
    for path in tracked():
        file = ROOT / path
        head = file.read_bytes()[:400].decode("utf-8", "replace")
        if (SOURCE.search(path) or head.startswith("#!")) and not all(part in head for part in LICENCE):
            missing.append(path)
    assert missing == []
