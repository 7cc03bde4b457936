"""Write MIME user data that gives an ECS host not on the golden AMI the role's IMDS block.

The output has three parts, in this order:

1. a ``text/cloud-boothook`` that writes what the ecs_imds_block role writes on Amazon Linux
   2023 / 2 (the loader and its merge, the systemd drop-ins), merges the block into the rules
   files (every other line of them stays), loads it, and only then installs the persistence
   package, the one step that needs the network. cloud-init runs boothooks early on every boot,
   before docker.service, so the script is idempotent; it fails closed (see ``boothook``).
2. the user's own user data (``--existing``), kept byte for byte; a MIME archive is merged
   part by part.
3. a ``text/x-shellscript`` that sets ``ECS_CLUSTER`` and ``ECS_AWSVPC_BLOCK_IMDS=true`` in
   ``/etc/ecs/ecs.config``, merged as the role merges it. cloud-init runs scripts in the order
   of their names, not of the parts, so a script of the user's may still rewrite the file after
   it: ``ecs.service``'s drop-in sets the block again just before the agent starts.

Nothing is copied from the role: the rules come from its filter plugin, the loader and the
merge from its ``files/`` and ``module_utils/``, the drop-ins from its templates, the paths,
services and loader arguments from its ``vars/`` and its imds_layout filter.
"""

from __future__ import annotations

import base64
import email
import email.message
import gzip
import logging
import re
import shlex
import zlib
from collections.abc import Sequence
from email.mime.multipart import MIMEMultipart
from pathlib import Path

import jinja2
import yaml
from ecs_imds_block.filter_plugins import imds_rules as imds_rules_module
from ecs_imds_block.filter_plugins.imds_layout import imds_layout
from ecs_imds_block.filter_plugins.imds_rules import ACTIONS, imds_rules, normalize_cidrs

from golden_ami.aws import UsageError
from golden_ami.output import Result

LOG = logging.getLogger("golden_ami")

ROLE = Path(imds_rules_module.__file__).resolve().parents[1]
PLATFORM_VARS = "Amazon-2023.yml"  # Amazon-2.yml holds the same data
MAX_BYTES = 16384  # EC2's limit on user data, before base64
CLUSTER_NAME = re.compile(r"[A-Za-z0-9_-]{1,255}")
BOUNDARY = "==ecs-imds-block-user-data=="
BOOTHOOK_NAME = "ecs-imds-block-boothook.sh"
ECS_CONFIG_NAME = "ecs-imds-block-ecs-config.sh"
EXISTING_NAME = "existing-user-data"
HEREDOC = "ECS_IMDS_BLOCK_EOF"
ECS_CONFIG = "/etc/ecs/ecs.config"
INSTALL_LOG = "/var/log/ecs-imds-block-install.log"

# cloud-init's first-line prefixes (cloudinit.handlers.INCLUSION_TYPES_MAP): it lowercases
# and left-strips the payload, then takes the longest prefix that matches.
STARTS_WITH = {
    "#include": "text/x-include-url",
    "#include-once": "text/x-include-once-url",
    "#!": "text/x-shellscript",
    "#cloud-config": "text/cloud-config",
    "#part-handler": "text/part-handler",
    "#cloud-boothook": "text/cloud-boothook",
    "#cloud-config-archive": "text/cloud-config-archive",
    "#cloud-config-jsonp": "text/cloud-config-jsonp",
    "## template: jinja": "text/jinja2",
}


def add_arguments(parser) -> None:
    parser.add_argument("--cluster", required=True, help="the ECS cluster the host joins")
    parser.add_argument(
        "--existing",
        metavar="FILE",
        help="user data the host already has (script, cloud-config, MIME archive; may be gzipped)",
    )
    parser.add_argument("--action", choices=ACTIONS, default="reject", help="reject (default) or drop")
    parser.add_argument("--no-ipv6", dest="ipv6", action="store_false", help="leave IPv6 unmanaged")
    parser.add_argument(
        "--allow",
        nargs="+",
        action="extend",
        default=[],
        metavar="CIDR",
        help="IPv4 sources that may reach IMDS",
    )
    parser.add_argument(
        "--allow-v6",
        nargs="+",
        action="extend",
        default=[],
        metavar="CIDR",
        help="IPv6 sources that may reach IMDS",
    )
    parser.add_argument("--output", metavar="FILE", help="write the user data here (required with --json)")


def run(args, aws) -> Result:
    """Needs no AWS calls: ``aws`` is not used."""
    if args.json and not args.output:
        raise UsageError("user-data --json prints a summary on stdout: pass --output FILE for the user data")
    check_cluster(args.cluster)
    existing = None
    if args.existing:
        try:  # just above EC2's limit: /dev/zero or a huge file is refused, not read whole
            with Path(args.existing).open("rb") as file:
                existing = file.read(MAX_BYTES + 1)
        except OSError as exc:
            raise UsageError(f"cannot read --existing {args.existing}: {exc.strerror}") from exc
    data = build_user_data(
        args.cluster, existing, args.action, args.ipv6, args.allow, args.allow_v6, source=args.existing
    )
    summary = {"bytes": len(data), "parts": describe(data)}
    if not args.output:
        return Result(summary, data.decode("ascii").removesuffix("\n").split("\n"))
    output = Path(args.output)
    try:  # 0600: existing user data often holds secrets
        if not output.exists():
            output.touch(mode=0o600)
        elif output.is_file():  # made private before it holds the user data
            output.chmod(0o600)
        output.write_bytes(data)
    except OSError as exc:
        raise UsageError(f"cannot write --output {args.output}: {exc.strerror}") from exc
    LOG.info("wrote %d bytes of user data (%d parts) to %s", len(data), len(summary["parts"]), args.output)
    return Result(summary)


def build_user_data(
    cluster: str,
    existing: bytes | None,
    action: str = "reject",
    ipv6: bool = True,
    allow: Sequence[str] = (),
    allow_v6: Sequence[str] = (),
    *,
    source: str | None = None,
) -> bytes:
    """The MIME multipart user data; UsageError on bad input or when over EC2's 16 KB."""
    check_cluster(cluster)
    rules = render_rules(action, ipv6, list(allow), list(allow_v6))
    source = source or "the existing user data"
    # Gzipped: it carries the loader and the merge, and EC2 allows 16 KB in all. cloud-init
    # decompresses an application/gzip part, then types it by its first line, #cloud-boothook.
    hook = gzip.compress(boothook(rules, ipv6).encode(), mtime=0)
    parts = [_part("application/gzip", hook, BOOTHOOK_NAME)]
    if existing is not None:
        parts += existing_parts(existing, source)
    parts.append(_part("text/x-shellscript", ecs_config_script(cluster).encode(), ECS_CONFIG_NAME))

    names = [part.get_filename() for part in parts[1:-1]]
    for ours in (BOOTHOOK_NAME, ECS_CONFIG_NAME):
        if ours in names:
            raise UsageError(f"{source}: a part is named {ours!r}, which the generated parts use; rename it")

    boundary = BOUNDARY
    while any(boundary in str(part.get_payload()) for part in parts):
        boundary = "=" + boundary + "="
    outer = MIMEMultipart(boundary=boundary)
    for part in parts:
        outer.attach(part)
    data = outer.as_bytes()
    if len(data) > MAX_BYTES:
        theirs = sum(len(part.as_bytes()) for part in parts[1:-1])
        raise UsageError(
            f"the user data would be {len(data)} bytes, over EC2's limit of {MAX_BYTES} bytes (before "
            f"base64): the existing user data takes {theirs} of them, the IMDS block {len(data) - theirs}; "
            "shorten the existing user data, or have it fetch the rest (#include a URL)"
        )
    return data


def check_cluster(cluster: str) -> None:
    """ECS's rule: 1 to 255 letters, digits, hyphens and underscores."""
    if not isinstance(cluster, str) or not CLUSTER_NAME.fullmatch(cluster):
        raise UsageError(
            f"invalid ECS cluster name {cluster!r}: use 1 to 255 letters, digits, hyphens and underscores"
        )


def render_rules(action: str, ipv6: bool, allow: list[str], allow_v6: list[str]) -> dict[int, str]:
    """The rules files by family, from the role's own filter, which also checks the input."""
    try:
        rules = {4: imds_rules(4, action, allow, True)}
        if ipv6:
            rules[6] = imds_rules(6, action, allow_v6, True)
        elif allow_v6:
            normalize_cidrs(allow_v6, 6)
            raise UsageError("--allow-v6 has no effect with --no-ipv6: drop one of them")
    except (imds_rules_module.AnsibleFilterError, ValueError) as exc:
        raise UsageError(str(exc)) from exc
    return rules


def role_data(ipv6: bool) -> dict:
    """The variables the role's templates and tasks use on Amazon Linux, as the role computes them:
    its vars files, and its imds_layout filter for the families, services and loader arguments."""
    data = yaml.safe_load((ROLE / "vars" / "main.yml").read_text())
    data.update(yaml.safe_load((ROLE / "vars" / PLATFORM_VARS).read_text()))
    layout = imds_layout(data["ecs_imds_block__persistence"], ipv6)
    data.update(
        ecs_imds_block__layout=layout,
        ecs_imds_block__families=layout["families"],
        ecs_imds_block__loader_args=layout["loader_args"],
        ecs_imds_block__services=layout["services"],
        ecs_imds_block_awsvpc=True,
        ecs_imds_block_ecs_config_path=ECS_CONFIG,
    )
    return data


def render_dropins(ipv6: bool) -> dict[str, str]:
    """Drop-in path -> content, rendered from the role's templates as its files.yml renders them."""
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
    return {
        f"/etc/systemd/system/{unit}.d/{dropin}": env.get_template(template).render(data, item=unit)
        for unit, template in templates.items()
    }


def _heredoc(command: str, content: str, on_error: str | None = None) -> str:
    """``command`` reading ``content`` from a quoted heredoc; ``on_error``: the line it fails with."""
    if not content.endswith("\n"):
        raise UsageError(f"cannot embed the input of {command}: it does not end with a newline")
    if HEREDOC in content.splitlines():
        raise UsageError(f"cannot embed the input of {command}: it holds the heredoc delimiter {HEREDOC}")
    otherwise = f" || fail {shlex.quote(on_error)}" if on_error else ""
    return f"{command} <<'{HEREDOC}'{otherwise}\n{content}{HEREDOC}\n"


def boothook(rules: dict[int, str], ipv6: bool) -> str:
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
    script += _heredoc(f"put {helper} 0755", (ROLE / "files" / "ecs-imds-block").read_bytes().decode())
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
    """Sets the cluster and the awsvpc block in ecs.config, merged as the role merges it."""
    return (
        "#!/bin/sh\n"
        "# Written by `golden-ami user-data`: join the cluster, and have the ECS agent block IMDS\n"
        "# for awsvpc tasks. ecs.service's drop-in sets the block again just before the agent\n"
        "# starts, so a later script that rewrites ecs.config cannot remove it.\n"
        "set -eu\n"
        f"/usr/local/sbin/ecs-imds-block ecs-config {ECS_CONFIG}"
        f" ECS_CLUSTER={cluster} ECS_AWSVPC_BLOCK_IMDS=true\n"
    )


def content_type_of(payload: bytes) -> str | None:
    """cloud-init's type_from_starts_with: the longest prefix of the left-stripped, lowercased text."""
    try:
        text = payload.decode("utf-8").lower().lstrip()
    except UnicodeDecodeError:
        return None
    for prefix in sorted(STARTS_WITH, key=len, reverse=True):
        if text.startswith(prefix):
            return STARTS_WITH[prefix]
    return None


def existing_parts(data: bytes, source: str) -> list[email.message.Message]:
    """The user's user data as parts, payloads unchanged; UsageError naming ``source`` if unusable.

    Gzipped data is inflated at most to just above EC2's limit: a gzip bomb is refused after
    MAX_BYTES + 1 bytes of output, not after it fills the memory.
    """
    if len(data) > MAX_BYTES:
        raise UsageError(f"{source}: over {MAX_BYTES} bytes, EC2's limit on the whole user data")
    if data[:2] == b"\x1f\x8b":  # cloud-init decompresses gzipped user data
        gzipped, data = data, b""
        while gzipped:  # one gzip member after another, as gzip.decompress reads them
            inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
            try:
                data += inflater.decompress(gzipped, MAX_BYTES + 1 - len(data))
            except zlib.error as exc:
                raise UsageError(f"{source}: looks gzipped but does not decompress: {exc}") from exc
            if len(data) > MAX_BYTES or inflater.unconsumed_tail:
                raise UsageError(
                    f"{source}: inflates to over {MAX_BYTES} bytes, EC2's limit on the whole user data"
                )
            if not inflater.eof:
                raise UsageError(f"{source}: looks gzipped but does not decompress: it is cut short")
            gzipped = inflater.unused_data.lstrip(b"\0")  # gzip allows zero padding after a member
            if gzipped and gzipped[:2] != b"\x1f\x8b":
                raise UsageError(
                    f"{source}: looks gzipped but does not decompress: data after the gzip stream"
                )
    if not data.strip():
        raise UsageError(f"{source}: is empty")
    if b"mime-version:" in data[:4096].lower():  # cloud-init's test for a MIME archive
        return _mime_parts(data, source)
    content_type = content_type_of(data)
    if content_type is None:
        first = data.split(b"\n", 1)[0][:60]
        raise UsageError(
            f"{source}: not user data that cloud-init recognises (it starts with {first!r}); expected a "
            f"MIME archive or a first line starting with {', '.join(STARTS_WITH)}"
        )
    return [_part(content_type, data, EXISTING_NAME)]


def _mime_parts(data: bytes, source: str) -> list[email.message.Message]:
    try:
        text = data.decode("utf-8")  # cloud-init reads the archive as UTF-8 text
    except UnicodeDecodeError as exc:
        raise UsageError(f"{source}: a MIME archive that is not UTF-8, which cloud-init cannot read") from exc
    parts = []
    # A multipart container without parts is a leaf to the email package, not a part.
    leaves = [
        part
        for part in email.message_from_string(text).walk()
        if not part.is_multipart() and part.get_content_maintype() != "multipart"
    ]
    for index, original in enumerate(leaves, start=1):
        payload = original.get_payload(decode=True) or b""
        headers = [
            (k, v)
            for k, v in original.items()
            if k.lower() not in ("mime-version", "content-transfer-encoding")
        ]
        if not all(f"{k}{v}".isascii() for k, v in headers):
            raise UsageError(f"{source}: part {index} has a header that is not ASCII")
        part = _part(None, payload, None)
        for key, value in headers:
            part[key] = value
        parts.append(part)
    if not any(part.get_payload() for part in parts):
        raise UsageError(f"{source}: a MIME archive with no parts (or only empty ones)")
    return parts


def _part(content_type: str | None, payload: bytes, filename: str | None) -> email.message.Message:
    """A part whose decoded payload is ``payload``: 7bit where that is safe, else base64."""
    part = email.message.Message()
    if content_type:
        part["Content-Type"] = content_type
    part["MIME-Version"] = "1.0"
    text = payload.decode("ascii", "replace")
    if (
        payload.isascii()
        and "\r" not in text
        and "\0" not in text
        and all(len(x) <= 998 for x in text.split("\n"))
    ):
        part["Content-Transfer-Encoding"] = "7bit"
        part.set_payload(text)
    else:
        part["Content-Transfer-Encoding"] = "base64"
        part.set_payload(base64.encodebytes(payload).decode("ascii"))
    if filename:
        part.add_header("Content-Disposition", "attachment", filename=filename)
    return part


def describe(data: bytes) -> list[dict]:
    """Content type and filename of each part of generated user data, in order."""
    message = email.message_from_bytes(data)
    return [
        {"content_type": part.get_content_type(), "filename": part.get_filename()}
        for part in message.walk()
        if not part.is_multipart()
    ]
