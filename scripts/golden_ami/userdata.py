"""Write MIME user data that gives an ECS host not on the golden AMI the role's IMDS block.

The output has three parts, in this order:

1. a ``text/cloud-boothook`` that installs the persistence package and writes what the
   ecs_imds_block role writes on Amazon Linux 2023 / 2 (the loader, the rules files, the
   systemd drop-ins), then loads the rules. cloud-init runs boothooks early on every boot,
   before docker.service, so the script is idempotent.
2. the user's own user data (``--existing``), kept byte for byte; a MIME archive is merged
   part by part.
3. a ``text/x-shellscript`` that appends ``ECS_CLUSTER`` and ``ECS_AWSVPC_BLOCK_IMDS=true`` to
   ``/etc/ecs/ecs.config``. It comes last, so its lines win over the user's.

Nothing is copied from the role: the rules come from its filter plugin, the loader from its
``files/``, the drop-ins from its templates, the paths and services from its ``vars/``.
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
        try:
            existing = Path(args.existing).read_bytes()
        except OSError as exc:
            raise UsageError(f"cannot read --existing {args.existing}: {exc.strerror}") from exc
    data = build_user_data(
        args.cluster, existing, args.action, args.ipv6, args.allow, args.allow_v6, source=args.existing
    )
    summary = {"bytes": len(data), "parts": describe(data)}
    if not args.output:
        return Result(summary, data.decode("ascii").removesuffix("\n").split("\n"))
    try:
        Path(args.output).write_bytes(data)
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
    parts = [_part("text/cloud-boothook", boothook(rules, ipv6).encode(), BOOTHOOK_NAME)]
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
    """The variables the role's templates and tasks use on Amazon Linux, as the role computes them."""
    data = yaml.safe_load((ROLE / "vars" / "main.yml").read_text())
    data.update(yaml.safe_load((ROLE / "vars" / PLATFORM_VARS).read_text()))
    # vars/main.yml computes these two with Jinja; the same, in Python:
    wanted = (4, 6) if ipv6 else (4,)
    families = [rules for rules in data["ecs_imds_block__persistence"] if rules["family"] in wanted]
    data["ecs_imds_block__families"] = families
    data["ecs_imds_block__services"] = list(dict.fromkeys(rules["service"] for rules in families))
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
    dropin = data["ecs_imds_block__dropin"]
    files = {}
    for service in data["ecs_imds_block__services"]:
        content = env.get_template("persistence.conf.j2").render(data, item=service)
        files[f"/etc/systemd/system/{service}.d/{dropin}"] = content
    docker = data["ecs_imds_block__docker_service"]
    files[f"/etc/systemd/system/{docker}.d/{dropin}"] = env.get_template("docker.conf.j2").render(data)
    return files


def _heredoc(path: str, mode: str, content: str) -> str:
    if not content.endswith("\n"):
        raise UsageError(f"cannot embed {path}: its content does not end with a newline")
    if HEREDOC in content.splitlines():
        raise UsageError(f"cannot embed {path}: its content holds the heredoc delimiter {HEREDOC}")
    return f"put {shlex.quote(path)} {mode} <<'{HEREDOC}'\n{content}{HEREDOC}\n"


def boothook(rules: dict[int, str], ipv6: bool) -> str:
    """The boothook script: the role's tasks on Amazon Linux, as idempotent shell."""
    data = role_data(ipv6)
    helper = data["ecs_imds_block__helper"]
    families = data["ecs_imds_block__families"]
    packages = " ".join(shlex.quote(name) for name in data["ecs_imds_block__packages"])
    dropins = render_dropins(ipv6)
    lines = [
        "#cloud-boothook",
        "#!/bin/sh",
        "# Written by `golden-ami user-data`: the ecs_imds_block role's IMDS block for an ECS host",
        "# that is not on the golden AMI. cloud-init runs boothooks on every boot, before",
        "# docker.service; each step leaves the same result when run again.",
        "set -eu",
        "umask 077",
        "",
        "put() {  # put PATH MODE: standard input to PATH, with MODE, replaced in one rename",
        '    cat >"$1.ecs-imds-block.tmp"',
        '    chmod "$2" "$1.ecs-imds-block.tmp"',
        '    mv -f "$1.ecs-imds-block.tmp" "$1"',
        "}",
        "",
        f"if ! rpm -q --quiet --whatprovides {packages}; then",
        "    if command -v dnf >/dev/null 2>&1; then",
        f"        dnf install -y {packages}",
        "    else",
        f"        yum install -y {packages}",
        "    fi",
        "fi",
        "",
        "",
    ]
    script = "\n".join(lines)
    script += _heredoc(helper, "0755", (ROLE / "files" / "ecs-imds-block").read_bytes().decode())
    for rules_file in families:
        script += _heredoc(rules_file["path"], "0600", rules[rules_file["family"]])
    for path, content in dropins.items():
        script += f"install -d -m 0755 {shlex.quote(str(Path(path).parent))}\n"
        script += _heredoc(path, "0644", content)
    services = " ".join(shlex.quote(service) for service in data["ecs_imds_block__services"])
    script += f"\nsystemctl daemon-reload\nsystemctl enable {services}\n"
    for rules_file in families:
        script += f"{helper} apply {rules_file['family']} {shlex.quote(rules_file['path'])}\n"
    return script


def ecs_config_script(cluster: str) -> str:
    """Appends the cluster and the awsvpc block to ecs.config; a new file is 0600, as the role's."""
    return (
        "#!/bin/sh\n"
        "# Written by `golden-ami user-data`: join the cluster, and have the ECS agent block IMDS\n"
        "# for awsvpc tasks. Last part, so these lines win over earlier ones.\n"
        "set -eu\n"
        "mkdir -p /etc/ecs\n"
        "umask 077\n"
        f'if [ -s {ECS_CONFIG} ] && [ -n "$(tail -c 1 {ECS_CONFIG})" ]; then echo >>{ECS_CONFIG}; fi\n'
        f"cat >>{ECS_CONFIG} <<'{HEREDOC}'\n"
        f"ECS_CLUSTER={cluster}\n"
        "ECS_AWSVPC_BLOCK_IMDS=true\n"
        f"{HEREDOC}\n"
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
    """The user's user data as parts, payloads unchanged; UsageError naming ``source`` if unusable."""
    if data[:2] == b"\x1f\x8b":  # cloud-init decompresses gzipped user data
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise UsageError(f"{source}: looks gzipped but does not decompress: {exc}") from exc
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
    leaves = [part for part in email.message_from_string(text).walk() if not part.is_multipart()]
    for index, original in enumerate(leaves, start=1):
        payload = original.get_payload(decode=True)
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
    if not parts:
        raise UsageError(f"{source}: a MIME archive with no parts")
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
