# Copyright: the ecs-imds-golden authors
# Apache License 2.0
"""Reading generated user data back: its parts, the boothook, and what the boothook writes."""

from __future__ import annotations

import email
import email.message
import gzip
import re

from golden_ami.userdata import BOOTHOOK_NAME


def leaves(data: bytes) -> list[email.message.Message]:
    """The parts of a MIME archive, in order."""
    return [leaf for leaf in email.message_from_bytes(data).walk() if not leaf.is_multipart()]


def kinds(data: bytes) -> list[tuple[str, str | None]]:
    """Content type and file name of each part."""
    return [(leaf.get_content_type(), leaf.get_filename()) for leaf in leaves(data)]


def payload(data: bytes, name: str) -> bytes:
    """The decoded payload of the one part named ``name``."""
    [leaf] = [leaf for leaf in leaves(data) if leaf.get_filename() == name]
    return leaf.get_payload(decode=True)


def boothook_script(data: bytes) -> str:
    """The boothook, gunzipped as cloud-init gunzips it."""
    return gzip.decompress(payload(data, BOOTHOOK_NAME)).decode()


HEREDOC = re.compile(
    r"^(put (\S+) (0\d{3})|\S+ merge [46] (\S+)|code=\$\(cat)"
    r" <<'ECS_IMDS_BLOCK_EOF'.*?\n(.*?)^ECS_IMDS_BLOCK_EOF\n",
    re.M | re.S,
)
# The merge writes itself: its code, read into $code, is both what Python runs and its input.
MERGE_PUT = re.compile(r"""^printf '%s\\n' "\$code" \| "\$py" -E -s -c "\$code" put (\S+) (0\d{3}) """, re.M)


def heredocs(data: bytes) -> dict[str, tuple[str, str]]:
    """What the boothook writes: path -> (mode, content), read from its quoted heredocs; a rules
    file, merged into what the host has, shows as ("merge", the rendered rules)."""
    script = boothook_script(data)
    found = {}
    for command, put_path, mode, merge_path, content in HEREDOC.findall(script):
        if command == "code=$(cat":
            ((put_path, mode),) = MERGE_PUT.findall(script)
        found[put_path or merge_path] = (mode or "merge", content)
    ours = script.count("<<'ECS_IMDS_BLOCK_EOF'")  # the loader's own heredocs are content, not ours
    assert len(found) == ours, "every heredoc is a `put PATH MODE`, a `merge FAMILY PATH` or the merge's code"
    return found
