# Copyright: the ecs-imds-golden authors
# Apache License 2.0
"""The ecs_imds_block role's tasks on Amazon Linux 2023 / 2, as shell: the boothook of
`golden-ami user-data`, and the script that sets the cluster in ecs.config.

Nothing is copied from the role: the rules come from its filter plugin, the loader and the
merge from its ``files/`` and ``module_utils/``, the drop-ins and the heal timer from its
templates, the paths, services and loader arguments from its ``vars/`` (and ``defaults/``, for
the heal interval) and its imds_layout filter. The role ships
with this package as ``ecs_imds_block``.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import jinja2
import yaml
from ecs_imds_block.filter_plugins import imds_rules as imds_rules_module
from ecs_imds_block.filter_plugins.imds_layout import imds_layout
from ecs_imds_block.filter_plugins.imds_rules import imds_rules, normalize_cidrs

from golden_ami.aws import UsageError

ROLE = Path(imds_rules_module.__file__).resolve().parents[1]
PLATFORM_VARS = "Amazon-2023.yml"  # Amazon-2.yml holds the same data
HEREDOC = "ECS_IMDS_BLOCK_EOF"
ECS_CONFIG = "/etc/ecs/ecs.config"
INSTALL_LOG = "/var/log/ecs-imds-block-install.log"


def role_vars() -> dict:
    """The role's own names (vars/main.yml): its helper, units, drop-in and attribute."""
    return yaml.safe_load((ROLE / "vars" / "main.yml").read_text())


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
    """The variables the role's templates and tasks use on Amazon Linux, as the role computes them:
    its vars files, and its imds_layout filter for the families, services and loader arguments."""
    data = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    data.update(role_vars())
    data.update(yaml.safe_load((ROLE / "vars" / PLATFORM_VARS).read_text()))
    layout = imds_layout(data["ecs_imds_block__persistence"], ipv6)
    data.update(
        ecs_imds_block__layout=layout,
        ecs_imds_block__families=layout["families"],
        ecs_imds_block__loader_args=layout["loader_args"],
        ecs_imds_block__services=layout["services"],
        ecs_imds_block_awsvpc=True,
        ecs_imds_block__attribute_on=True,
        ecs_imds_block_ecs_config_path=ECS_CONFIG,
    )
    return data


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
    templates = {service: "persistence.conf.j2" for service in data["ecs_imds_block__services"]}
    templates[data["ecs_imds_block__docker_service"]] = "docker.conf.j2"
    templates[data["ecs_imds_block__ecs_service"]] = "ecs.conf.j2"
    dropin = data["ecs_imds_block__dropin"]
    units = {
        f"/etc/systemd/system/{unit}.d/{dropin}": env.get_template(template).render(data, item=unit)
        for unit, template in templates.items()
    }
    for kind in ("service", "timer"):
        path = f"/etc/systemd/system/{data['ecs_imds_block__heal_unit']}.{kind}"
        units[path] = env.get_template(f"heal.{kind}.j2").render(data)
    return units


def loader() -> str:
    """The role's loader without its comment lines (the first, its shebang, stays): they are
    half of it, and the user data must fit EC2's 16 KB with room for the team's own. The role
    installs the commented file; the code is the same."""
    lines = (ROLE / "files" / "ecs-imds-block").read_bytes().decode().splitlines(keepends=True)
    return "".join(lines[:1] + [line for line in lines[1:] if not line.lstrip().startswith("#")])


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

    Everything that needs no network comes first: the loader and its merge, the drop-ins, the
    block merged into the rules files and loaded. Only then the package install, which needs the
    repositories. If it fails, the block is already loaded, and docker.service's drop-in loads it
    again at every start: its ExecStartPre needs only the loader and the rules files.
    """
    data = role_data(ipv6)
    helper = data["ecs_imds_block__helper"]
    loader_args = " ".join(shlex.quote(arg) for arg in data["ecs_imds_block__loader_args"])
    packages = " ".join(shlex.quote(name) for name in data["ecs_imds_block__packages"])
    services = " ".join(shlex.quote(service) for service in data["ecs_imds_block__services"])
    timer = shlex.quote(f"{data['ecs_imds_block__heal_unit']}.timer")
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
        "put() {  # put PATH MODE: standard input to PATH, with MODE, replaced in one rename",
        '    mkdir -p "$(dirname "$1")" &&',
        '        cat >"$1.ecs-imds-block.tmp" &&',
        '        chmod "$2" "$1.ecs-imds-block.tmp" &&',
        '        mv -f "$1.ecs-imds-block.tmp" "$1" ||',
        '        fail "cannot write $1"',
        "}",
        "",
        "",
    ]
    script = "\n".join(lines)
    script += _heredoc(f"put {helper} 0755", loader())
    merge = (ROLE / "module_utils" / "ecs_imds_block_merge.py").read_bytes().decode()
    script += _heredoc(f"put {shlex.quote(data['ecs_imds_block__merge_helper'])} 0644", merge)
    for path, content in render_dropins(ipv6).items():
        script += _heredoc(f"put {shlex.quote(path)} 0644", content)
    for rules_file in data["ecs_imds_block__families"]:
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
        "# The only step that needs the network. The persistence service then loads the rules\n"
        "# files at boot, the host's own rules included.\n"
        f"if ! rpm -q --quiet --whatprovides {packages}; then\n"
        f"    if command -v dnf >/dev/null 2>&1; then install='dnf install -y {packages}'; "
        f"else install='yum install -y {packages}'; fi\n"
        f"    $install >{INSTALL_LOG} 2>&1 ||\n"
        f'        fail "$install failed (see {INSTALL_LOG}); the block is loaded,'
        ' and docker.service loads it at every start"\n'
        "fi\n"
        f"systemctl enable {services} || fail 'cannot enable {services}'\n"
    )
    return script


def ecs_config_script(cluster: str) -> str:
    """Sets the cluster, the awsvpc block and the attribute in ecs.config, merged as the role
    merges it."""
    attribute = role_vars()["ecs_imds_block__attribute"]
    return (
        "#!/bin/sh\n"
        "# Written by `golden-ami user-data`: join the cluster, and have the ECS agent block IMDS\n"
        "# for awsvpc tasks, and register the attribute tasks can require. ecs.service's drop-in\n"
        "# sets both again just before the agent starts, so a later script that rewrites\n"
        "# ecs.config cannot remove them.\n"
        "set -eu\n"
        f"/usr/local/sbin/ecs-imds-block ecs-config {ECS_CONFIG}"
        f" ECS_CLUSTER={cluster} ECS_AWSVPC_BLOCK_IMDS=true"
        f" attribute:{attribute['name']}={attribute['value']}\n"
    )
