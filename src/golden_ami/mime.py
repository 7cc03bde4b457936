# Copyright: the ecs-imds-golden authors
# Apache License 2.0
"""MIME multipart user data as cloud-init reads it: a part from a payload, a host's existing
user data as parts (a script, cloud-config, a MIME archive; gzipped or not), the archive of
parts, and what an archive holds.
"""

from __future__ import annotations

import base64
import email
import email.message
import gzip
import zlib
from email.mime.multipart import MIMEMultipart

from golden_ami.aws import UsageError

MAX_BYTES = 16384  # EC2's limit on user data, before base64; gzipped data counts as given
# The most a team's user data may be, as given or inflated: more than fits in 16 KB gzipped, and
# a gzip bomb is refused after this much output, not after it fills the memory.
MAX_INFLATED = 1 << 20
BOUNDARY = "==ecs-imds-block-user-data=="

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


def archive(parts: list[email.message.Message]) -> bytes:
    """The parts, in order, as one multipart/mixed archive, with a boundary no payload holds."""
    boundary = BOUNDARY
    while any(boundary in str(leaf.get_payload()) for leaf in parts):
        boundary = "=" + boundary + "="
    outer = MIMEMultipart(boundary=boundary)
    for leaf in parts:
        outer.attach(leaf)
    return outer.as_bytes()


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


def existing_parts(data: bytes, source: str, filename: str) -> list[email.message.Message]:
    """The user's user data as parts, payloads unchanged; UsageError naming ``source`` if unusable.

    The whole archive is gzipped, so what counts against EC2's limit is the team's part gzipped
    (userdata.build_user_data checks the total): plain data may be larger than 16 KB, up to
    MAX_INFLATED. Gzipped data over 16 KB cannot fit; it is inflated to MAX_INFLATED bytes at
    most: a gzip bomb is refused after MAX_INFLATED + 1 bytes of output, not after it fills the
    memory.
    """
    if data[:2] == b"\x1f\x8b" and len(data) > MAX_BYTES:
        raise UsageError(f"{source}: over {MAX_BYTES} bytes gzipped, EC2's limit on the whole user data")
    if len(data) > MAX_INFLATED:
        raise UsageError(f"{source}: over {MAX_INFLATED} bytes")
    if data[:2] == b"\x1f\x8b":  # cloud-init decompresses gzipped user data
        gzipped, data = data, b""
        while gzipped:  # one gzip member after another, as gzip.decompress reads them
            inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
            try:
                data += inflater.decompress(gzipped, MAX_INFLATED + 1 - len(data))
            except zlib.error as exc:
                raise UsageError(f"{source}: looks gzipped but does not decompress: {exc}") from exc
            if len(data) > MAX_INFLATED or inflater.unconsumed_tail:
                raise UsageError(f"{source}: inflates to over {MAX_INFLATED} bytes")
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
    return [part(content_type, data, filename)]


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
        leaf = part(None, payload, None)
        for key, value in headers:
            leaf[key] = value
        parts.append(leaf)
    if not any(leaf.get_payload() for leaf in parts):
        raise UsageError(f"{source}: a MIME archive with no parts (or only empty ones)")
    return parts


def part(content_type: str | None, payload: bytes, filename: str | None) -> email.message.Message:
    """A part whose decoded payload is ``payload``: 7bit where that is safe, else base64."""
    message = email.message.Message()
    if content_type:
        message["Content-Type"] = content_type
    message["MIME-Version"] = "1.0"
    text = payload.decode("ascii", "replace")
    if (
        payload.isascii()
        and "\r" not in text
        and "\0" not in text
        and all(len(x) <= 998 for x in text.split("\n"))
    ):
        message["Content-Transfer-Encoding"] = "7bit"
        message.set_payload(text)
    else:
        message["Content-Transfer-Encoding"] = "base64"
        message.set_payload(base64.encodebytes(payload).decode("ascii"))
    if filename:
        message.add_header("Content-Disposition", "attachment", filename=filename)
    return message


def gzipped(data: bytes) -> bytes:
    """``data`` gzipped, as cloud-init inflates it; the same bytes for the same input (no mtime)."""
    return gzip.compress(data, compresslevel=9, mtime=0)


def describe(data: bytes) -> list[dict]:
    """Content type and filename of each part of generated user data, in order."""
    message = email.message_from_bytes(gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data)
    return [
        {"content_type": part.get_content_type(), "filename": part.get_filename()}
        for part in message.walk()
        if not part.is_multipart()
    ]
