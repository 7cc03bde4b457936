# Copyright: the ecs-imds-golden authors
# Apache License 2.0
"""The ecs_imds_block role's tasks on Amazon Linux 2023 / 2, as shell: the boothook of
`golden-ami user-data`, and the script that sets the cluster in ecs.config.

Nothing is copied from the role: the rules come from its filter plugin, the loader and the
merge (which also writes every file) from its ``files/`` and ``module_utils/``, the drop-ins and
the heal timer from its templates, and every path, unit, template, package check and loader
argument from its imds_layout filter, over its ``vars/`` (and ``defaults/``, for the heal
interval). The role ships with this package as ``ecs_imds_block``.
"""

from __future__ import annotations

import ast
import shlex
from pathlib import Path

import jinja2
import yaml
from ecs_imds_block.filter_plugins import imds_rules as imds_rules_module
from ecs_imds_block.filter_plugins.imds_layout import imds_layout
from ecs_imds_block.filter_plugins.imds_rules import imds_rules, normalize_cidrs

from golden_ami.aws import UsageError

ROLE = Path(imds_rules_module.__file__).resolve().parents[1]
PLATFORM = "Amazon-2023"  # Amazon-2 has the same data
HEREDOC = "ECS_IMDS_BLOCK_EOF"
ECS_CONFIG = "/etc/ecs/ecs.config"
INSTALL_LOG = "/var/log/ecs-imds-block-install.log"


def _vars(name: str) -> dict:
    return yaml.safe_load((ROLE / name).read_text())


def names() -> dict:
    """The role's own names (vars/main.yml): its helper, units, drop-in and attribute."""
    return _vars("vars/main.yml")["ecs_imds_block__names"]


def layout(ipv6: bool, platform: str = PLATFORM) -> dict:
    """The role's derived data on ``platform`` (Amazon Linux 2023 for the boothook), from its own
    imds_layout filter over its vars."""
    return imds_layout(_vars(f"vars/{platform}.yml")["ecs_imds_block__os"], names(), ipv6)


def render_rules(action: str, ipv6: bool, allow: list[str], allow_v6: list[str]) -> dict[int, str]:
    """The rules files by family, from the role's own filter, which also checks the input."""
    try:
        rules = {4: imds_rules(4, action, allow, True)}
        if ipv6:
            rules[6] = imds_rules(6, action, allow_v6, True)
        elif allow_v6:
            normalize_cidrs(allow_v6, 6)
            raise UsageError("--allowed-cidr-v6 has no effect with --no-ipv6: drop one of them")
    except (imds_rules_module.AnsibleFilterError, ValueError) as exc:
        raise UsageError(str(exc)) from exc
    return rules


def role_data(ipv6: bool) -> dict:
    """The variables the role's templates use on Amazon Linux, as the role has them."""
    return {
        **_vars("defaults/main.yml"),
        "ecs_imds_block__layout": layout(ipv6),
        "ecs_imds_block_awsvpc": True,
        "ecs_imds_block__attribute_on": True,
        "ecs_imds_block_ecs_config_path": ECS_CONFIG,
    }


def render_dropins(ipv6: bool) -> dict[str, str]:
    """Unit file path -> content, rendered from the role's templates as its files.yml renders
    them: the drop-ins, and the heal timer and its service."""
    data = role_data(ipv6)
    env = jinja2.Environment(
        autoescape=False,  # noqa: S701 - systemd units, not HTML
        loader=jinja2.FileSystemLoader(ROLE / "templates"),
        trim_blocks=True,  # Ansible's template lookup: trim_blocks on, lstrip_blocks off,
        keep_trailing_newline=True,  # and the template's trailing newline kept
        undefined=jinja2.StrictUndefined,
    )
    env.filters["bool"] = bool  # Ansible's; the values here are booleans already
    return {
        unit["path"]: env.get_template(unit["template"]).render(data, item=unit["item"])
        for unit in data["ecs_imds_block__layout"]["units"]
    }


def loader() -> str:
    """The role's loader without its comment lines (the first, its shebang, stays): they are
    half of it, and the user data must fit EC2's 16 KB with room for the team's own. The role
    installs the commented file; the code is the same."""
    lines = (ROLE / "files" / "ecs-imds-block").read_bytes().decode().splitlines(keepends=True)
    return "".join(lines[:1] + [line for line in lines[1:] if not line.lstrip().startswith("#")])


def merge_code() -> str:
    """The role's merge without its comments and docstrings: the same statements (the same
    syntax tree), in a third less of EC2's 16 KB of user data. The role installs the file as
    it is."""
    tree = ast.parse((ROLE / "module_utils" / "ecs_imds_block_merge.py").read_text())
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef) and ast.get_docstring(
            node, clean=False
        ):
            node.body = body[1:] or [ast.Pass()]
    return ast.unparse(tree) + "\n"


def _heredoc(command: str, content: str, on_error: str | None = None) -> str:
    """``command`` reading ``content`` from a quoted heredoc; ``on_error``: the line it fails with."""
    if not content.endswith("\n"):
        raise UsageError(f"cannot embed the input of {command}: it does not end with a newline")
    if HEREDOC in content.splitlines():
        raise UsageError(f"cannot embed the input of {command}: it holds the heredoc delimiter {HEREDOC}")
    otherwise = f" || fail {shlex.quote(on_error)}" if on_error else ""
    return f"{command} <<'{HEREDOC}'{otherwise}\n{content}{HEREDOC}\n"


def script(rules: dict[int, str], ipv6: bool) -> str:
    """The boothook script: the role's tasks on Amazon Linux, as idempotent shell, failing closed.

    Everything that needs no network comes first: the merge, the loader, the drop-ins, the block
    merged into the rules files and loaded. Only then the package install, which needs the
    repositories. If it fails, the block is already loaded, and docker.service's drop-in loads it
    again at every start: its ExecStartPre needs only the loader and the rules files.
    """
    data = layout(ipv6)
    helper, merge = data["helper"], shlex.quote(data["merge_helper"])
    loader_args = " ".join(shlex.quote(arg) for arg in data["loader_args"])
    services = " ".join(shlex.quote(service) for service in data["services"])
    timer = shlex.quote(f"{data['heal_unit']}.timer")
    lines = [
        "#cloud-boothook",
        "#!/bin/sh",
        "# Written by `golden-ami user-data`: the ecs_imds_block role's IMDS block for an ECS host",
        "# that is not on the golden AMI. cloud-init runs boothooks on every boot, before",
        "# docker.service; each step leaves the same result when run again. It fails closed: the",
        "# block is written and loaded before the one step that needs the network.",
        "set -u",
        "umask 077",
        "",
        "fail() {  # one line that names what failed; cloud-init only logs a boothook's exit code",
        '    echo "ecs-imds-block boothook: $*" >&2',
        "    exit 1",
        "}",
        "",
        "py=$(command -v python3 || command -v python) || fail 'needs python3 or python'",
        "",
        "put() {  # put PATH MODE: standard input to PATH, with MODE, in one rename (the role's merge)",
        f'    "$py" -E -s {merge} put "$1" "$2" || fail "cannot write $1"',
        "}",
        "",
        "# The merge first: it writes every file, itself included (its code is also its input).",
        "",
    ]
    script = "\n".join(lines)
    script += _heredoc("code=$(cat", merge_code()) + ")\n"
    script += (
        f'printf \'%s\\n\' "$code" | "$py" -E -s -c "$code" put {merge} 0644 || fail "cannot write {merge}"\n'
    )
    script += _heredoc(f"put {helper} 0755", loader())
    for path, content in render_dropins(ipv6).items():
        script += _heredoc(f"put {shlex.quote(path)} 0644", content)
    for rules_file in data["families"]:
        path = rules_file["path"]
        command = f"{helper} merge {rules_file['family']} {shlex.quote(path)}"
        script += _heredoc(command, rules[rules_file["family"]], f"cannot merge the block into {path}")
    script += (
        "systemctl daemon-reload\n"
        f"{helper} apply {loader_args} || fail 'cannot load the block into the kernel'\n"
        "# The heal timer puts the block back if something removes it later. --no-block: a\n"
        "# boothook runs inside the boot transaction, which a waiting start could hold up.\n"
        f"systemctl enable {timer} || fail 'cannot enable {timer}'\n"
        f"systemctl start --no-block {timer} || fail 'cannot start {timer}'\n"
        "\n"
        "# The only step that needs the network, and only for what is missing. The persistence\n"
        "# service then loads the rules files at boot, the host's own rules included.\n"
        f"missing=$({data['missing_packages']})\n"
        'if [ -n "$missing" ]; then\n'
        "    install='yum install -y'\n"
        "    if command -v dnf >/dev/null 2>&1; then install='dnf install -y'; fi\n"
        f"    $install $missing >{INSTALL_LOG} 2>&1 ||\n"
        f'        fail "$install $missing failed (see {INSTALL_LOG}); the block is loaded,'
        ' and docker.service loads it at every start"\n'
        "fi\n"
        f"systemctl enable {services} || fail 'cannot enable {services}'\n"
    )
    return script


def ecs_config_script(cluster: str) -> str:
    """Sets the cluster, the awsvpc block and the attribute in ecs.config, merged as the role
    merges it."""
    attribute = layout(True)["attribute_setting"]
    return (
        "#!/bin/sh\n"
        "# Written by `golden-ami user-data`: join the cluster, and have the ECS agent block IMDS\n"
        "# for awsvpc tasks, and register the attribute tasks can require. ecs.service's drop-in\n"
        "# sets both again just before the agent starts, so a later script that rewrites\n"
        "# ecs.config cannot remove them.\n"
        "set -eu\n"
        f"/usr/local/sbin/ecs-imds-block ecs-config {ECS_CONFIG}"
        f" ECS_CLUSTER={cluster} ECS_AWSVPC_BLOCK_IMDS=true {attribute}\n"
    )
