# Copyright: the ecs-imds-golden authors
# Apache License 2.0

"""Merge the ecs_imds_block role's part into files that other people write too.

One implementation, used in two places:

- by the role's ecs_imds_block_files module (``merge: rules`` and ``merge: ecs_config``),
  which reads, merges and writes each file in the same module run;
- on the host, as ``ecs-imds-block merge`` and ``ecs-imds-block ecs-config``: by the user-data
  boothook, and just before the ECS agent starts (``ecs.service``'s drop-in).

It runs under the host's own Python, which on Amazon Linux 2 may be 2.7, so it works on bytes
and keeps to Python 2.7 syntax.

Rules files (iptables-save format, as ``/etc/sysconfig/iptables`` or ``/etc/iptables/rules.v4``)
-------------------------------------------------------------------------------------------
The role owns the ``DOCKER-USER`` chain (its declaration and rules) and the ``FORWARD`` jump
to it, in the ``filter`` table; it writes them between the BEGIN and END marker lines. Every
other line of the file stays byte for byte. Lines of Docker's own making that belong to our
part (``:DOCKER-USER``, ``-A DOCKER-USER -j RETURN``, the jump), as ``iptables-save`` writes
them, are dropped; any other rule in ``DOCKER-USER`` is somebody's, and is refused rather than
lost.

ecs.config
----------
Read as ecs-init reads it: lines split on ``\\n`` only, each one trimmed, split at the first
``=``; the last assignment of a key wins. Every assignment of a key we set is rewritten in
place (so no later one overrides it), a key not yet present is appended, and every other
byte stays. The result ends with a newline, so a later ``echo KEY=v >> ecs.config`` works.

``attribute:NAME=VALUE`` sets one container-instance attribute inside ECS_INSTANCE_ATTRIBUTES,
a JSON object of strings: the one the same merge sets, else the one the agent reads from the
file, keeping every other attribute in it. A value there that is not such an object is refused.
"""

from __future__ import absolute_import, division, print_function

import json
import os
import re
import subprocess
import sys
import tempfile
from collections import OrderedDict

__metaclass__ = type

BEGIN = b"# BEGIN ecs_imds_block"
END = b"# END ecs_imds_block"
CHAIN = b"DOCKER-USER"
NEW_FILE_MODE = 0o600

# Lines that are ours wherever they stand in the filter table, as Docker's iptables-save
# writes them: removing them changes nothing, since our part declares the same.
_OURS_ANYWHERE = re.compile(
    rb"^(?::DOCKER-USER\b.*"
    rb"|-A DOCKER-USER -j RETURN"
    rb"|-[AI] FORWARD(?: 1)? -j DOCKER-USER)\s*$"
)
_IN_CHAIN = re.compile(rb"^-[AIRD] DOCKER-USER\b")
# An assignment as ecs-init (trimmed, split at the first "=") and systemd's EnvironmentFile=
# (which also accepts a leading "export") read it. \v and \f are trimmed by ecs-init too.
_ASSIGNMENT = re.compile(rb"^[ \t\v\f\r]*(?:export[ \t]+)?([A-Za-z_][A-Za-z0-9_]*)[ \t]*=")
_KEY = re.compile(rb"^[A-Z_][A-Z0-9_]*$")
# ECS attribute names and values (ECS's limits: 128 characters), without the backslash and the
# blanks ECS also allows, which ecs-init and systemd would read differently.
_ATTRIBUTE = re.compile(rb"^attribute:([A-Za-z0-9_./-]{1,128})$")
_ATTRIBUTE_VALUE = re.compile(rb"^[A-Za-z0-9_./@:-]{1,128}$")
ATTRIBUTES = b"ECS_INSTANCE_ATTRIBUTES"
_WHITESPACE = b" \t\n\r"  # systemd's


class MergeError(ValueError):
    """Input that cannot be merged without losing something; the message is one line."""


def _text(value):
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _lines(data):
    """``data`` split after each newline; the last line may lack one."""
    lines = data.split(b"\n")
    out = [line + b"\n" for line in lines[:-1]]
    if lines[-1]:
        out.append(lines[-1])
    return out


def our_block(rendered):
    """The lines between the markers of a rules file the role rendered, markers included."""
    lines = _lines(rendered)
    starts = [n for n, line in enumerate(lines) if line.rstrip().startswith(BEGIN)]
    ends = [n for n, line in enumerate(lines) if line.rstrip() == END]
    if len(starts) != 1 or len(ends) != 1 or ends[0] < starts[0]:
        raise MergeError("the rendered rules hold no single BEGIN/END ecs_imds_block block")
    return b"".join(lines[starts[0] : ends[0] + 1])


def merge_rules(existing, rendered, name="the rules file"):
    """``existing`` (bytes, empty when there is no file) with our part set to that of ``rendered``.

    A file that is empty or holds only comments becomes ``rendered`` itself.
    """
    block = our_block(rendered)
    lines = _lines(existing)
    if not any(line.strip() and not line.lstrip().startswith(b"#") for line in lines):
        return rendered
    kept, table, inside, filter_commit = [], None, False, None
    for number, line in enumerate(lines, start=1):
        bare = line.strip()
        if inside:
            inside = bare != END
            continue
        if bare.startswith(BEGIN):
            inside = True
            continue
        if bare.startswith(b"*"):
            table = bare[1:]
        elif bare == b"COMMIT":
            if table == b"filter" and filter_commit is None:
                filter_commit = len(kept)
            table = None
        elif table == b"filter" and _OURS_ANYWHERE.match(bare):
            continue
        elif table == b"filter" and _IN_CHAIN.match(bare):
            raise MergeError(
                "%s line %d: %r is a rule in DOCKER-USER, which the ecs_imds_block role owns; "
                "move it to a chain of your own (or the source to the role's allowlist)"
                % (name, number, _text(bare))
            )
        kept.append(line)
    if inside:
        raise MergeError("%s: the ecs_imds_block block has a BEGIN line but no END line" % name)
    if kept and not kept[-1].endswith(b"\n"):
        kept[-1] += b"\n"
    if filter_commit is None:
        return b"".join(kept) + b"*filter\n" + block + b"COMMIT\n"
    return b"".join(kept[:filter_commit]) + block + b"".join(kept[filter_commit:])


def parse_settings(assignments):
    """``[b"KEY=value", ...]`` as an ordered list of (key, value); MergeError on a bad one."""
    settings = []
    for assignment in assignments:
        key, sep, value = assignment.partition(b"=")
        if sep and _ATTRIBUTE.match(key):
            if not _ATTRIBUTE_VALUE.match(value):
                raise MergeError("not an ECS attribute value: %r" % _text(value))
            settings.append((key, value))
            continue
        if not sep or not _KEY.match(key):
            raise MergeError("not a KEY=value ecs.config setting: %r" % _text(assignment))
        if re.search(rb"[\x00-\x1f\x7f\\]", value) or value[:1] in (b"'", b'"') or value != value.strip():
            raise MergeError(
                "the value of %s must be one line of printable text without backslashes, leading or "
                "trailing blanks or a leading quote (ecs-init and systemd read those differently): %r"
                % (_text(key), _text(value))
            )
        settings.append((key, value))
    return settings


def _with_attributes(existing, settings):
    """``settings`` with each attribute:NAME=VALUE folded into ECS_INSTANCE_ATTRIBUTES."""
    plain = [(key, value) for key, value in settings if not _ATTRIBUTE.match(key)]
    attributes = [(_ATTRIBUTE.match(key).group(1), value) for key, value in settings if _ATTRIBUTE.match(key)]
    if not attributes:
        return plain
    current = dict(plain).get(ATTRIBUTES, effective_ecs_config(existing).get(ATTRIBUTES, b"{}"))
    try:
        merged = json.loads(current.decode("utf-8"), object_pairs_hook=OrderedDict)
    except ValueError:
        merged = None
    if not isinstance(merged, dict) or not all(isinstance(v, type("")) for v in merged.values()):
        raise MergeError(
            "ECS_INSTANCE_ATTRIBUTES must be a JSON object of strings, as the ECS agent reads it, not %r"
            % _text(current)
        )
    for name, value in attributes:
        merged[name.decode("utf-8")] = value.decode("utf-8")
    value = json.dumps(merged, separators=(",", ":"), ensure_ascii=False)
    value = value if isinstance(value, bytes) else value.encode("utf-8")
    return [(key, v) for key, v in plain if key != ATTRIBUTES] + [(ATTRIBUTES, value)]


def merge_ecs_config(existing, settings):
    """``existing`` ecs.config (bytes) with ``settings`` [(key, value), ...] set; see above."""
    settings = _with_attributes(existing, settings)
    wanted = dict(settings)
    lines = _lines(existing)
    found = set()
    for number, line in enumerate(lines):
        match = _ASSIGNMENT.match(line)
        if match and match.group(1) in wanted:
            key = match.group(1)
            ending = b"\r\n" if line.endswith(b"\r\n") else b"\n"  # a CRLF file stays CRLF
            lines[number] = key + b"=" + wanted[key] + ending
            found.add(key)
    if lines and not lines[-1].endswith(b"\n"):
        lines[-1] += b"\n"
    lines += [key + b"=" + value + b"\n" for key, value in settings if key not in found]
    merged = b"".join(lines)
    # The agent reads the file through ecs-init, and ecs.service through EnvironmentFile=:
    # a file on which they disagree about our settings is refused, not written.
    agent = effective_ecs_config(merged)
    systemd, runs_on, refused = systemd_environment(merged)
    if refused:
        raise MergeError(
            "ecs.config line %d is not UTF-8: systemd's EnvironmentFile= would refuse the whole file, "
            "and the ECS agent would not start; fix that line" % refused
        )
    for key, value in settings:
        if agent.get(key) == value and systemd.get(key) == value:
            continue
        if runs_on:
            raise MergeError(
                "ecs.config line %d: a quote or a backslash makes systemd's EnvironmentFile= read on "
                "into the next line, so systemd and ecs-init would read %s differently; fix that line"
                % (runs_on[0], _text(key))
            )
        raise MergeError(
            "ecs.config: systemd's EnvironmentFile= and ecs-init would read %s differently "
            "(a carriage return inside a line?); fix the file" % _text(key)
        )
    return merged


def systemd_environment(data):
    """What systemd's EnvironmentFile= reads from ``data`` (bytes): ({key: value}, the 1-based
    numbers of the lines that leave its parser inside a value or a comment, so that it reads on
    into the next line, and the line of the first assignment that is not UTF-8, for which it
    refuses the whole file, or None). A model of env-file.c's parser, which ecs.service's
    EnvironmentFile= uses: quotes and backslashes join lines, and a carriage return ends one."""
    env, runs_on, assignments = {}, [], []
    state, key, value, line, start = "pre_key", b"", b"", 1, 1
    for byte in bytearray(data):
        c = bytes(bytearray([byte]))
        if c == b"\n":
            if state not in ("pre_key", "key", "pre_value", "value", "comment"):
                runs_on.append(line)
            line += 1
        if state == "pre_key":
            if c in b"#;":
                state = "comment"
            elif c not in _WHITESPACE:
                state, key, start = "key", c, line
        elif state == "key":
            if c in b"\n\r":
                state = "pre_key"
            elif c == b"=":
                state, value = "pre_value", b""
            else:
                key += c
        elif state in ("pre_value", "value"):
            if c in b"\n\r":
                assignments.append((start, key, value.rstrip(b" \t") if state == "value" else value))
                state = "pre_key"
            elif c == b"\\":
                state = "value_escape"
            elif state == "pre_value" and c == b"'":
                state = "single_quote"
            elif state == "pre_value" and c == b'"':
                state = "double_quote"
            elif state == "value" or c not in _WHITESPACE:
                state, value = "value", value + c
        elif state == "value_escape":
            state = "value"
            if c not in b"\n\r":
                value += c
        elif state == "single_quote":
            if c == b"'":
                state = "pre_value"
            else:
                value += c
        elif state == "double_quote":
            if c == b'"':
                state = "pre_value"
            elif c == b"\\":
                state = "double_quote_escape"
            else:
                value += c
        elif state == "double_quote_escape":
            state = "double_quote"
            if c in b'"\\`$':
                value += c
            elif c != b"\n":
                value += b"\\" + c
        elif state == "comment":
            if c == b"\\":
                state = "comment_escape"
            elif c in b"\n\r":
                state = "pre_key"
        elif state == "comment_escape":
            state = "comment"
    if state not in ("pre_key", "key", "comment", "comment_escape"):
        assignments.append((start, key, value.rstrip(b" \t") if state == "value" else value))
    refused = None
    for number, key, value in assignments:
        try:
            key.decode("utf-8"), value.decode("utf-8")
        except UnicodeDecodeError:
            refused = refused or number
        env[key.rstrip(_WHITESPACE)] = value
    return env, runs_on, refused


def effective_ecs_config(data):
    """What the ECS agent reads from ``data``: {key: value}, ecs-init's way (the last one wins)."""
    seen = {}
    for line in data.split(b"\n"):
        line = line.strip()
        if not line or line.startswith(b"#") or b"=" not in line:
            continue
        key, _, value = line.partition(b"=")
        seen[key.strip()] = value.strip()
    return seen


# --- on the host ----------------------------------------------------------------------------


def _read(path):
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except (IOError, OSError) as error:
        if getattr(error, "errno", None) == 2:
            return None
        raise MergeError("cannot read %s: %s" % (path, error.strerror))


def write_if_changed(path, content, validate=None):
    """Replace ``path`` with ``content`` in one rename, keeping an existing file's mode and owner
    (a new one gets 0600); ``validate`` is an argv run on the staged file first. True if changed."""
    before = _read(path)
    if before == content:
        return False
    directory = os.path.dirname(path) or "."
    if not os.path.isdir(directory):
        os.makedirs(directory, 0o755)
    fd, staged = tempfile.mkstemp(dir=directory, prefix=".ecs-imds-block.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
        if before is not None:
            info = os.stat(path)
            os.chmod(staged, info.st_mode & 0o7777)
            os.chown(staged, info.st_uid, info.st_gid)
        else:
            os.chmod(staged, NEW_FILE_MODE)
        if validate:
            check = subprocess.Popen(validate + [staged], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            _, err = check.communicate()
            if check.returncode:
                raise MergeError(
                    "%s refused the merged %s, which is left as it was: %s"
                    % (" ".join(validate), path, _text(err).strip().replace("\n", "; "))
                )
        os.rename(staged, path)
        staged = None
    finally:
        if staged:
            os.unlink(staged)
    return True


USAGE = (
    "usage: ecs-imds-block merge 4|6 FILE < RENDERED\n"
    "       ecs-imds-block ecs-config FILE KEY=VALUE [KEY=VALUE ...]"
)


def main(argv):
    """Exit 0 done, 1 refused or failed, 2 usage; one line on stderr when not 0."""
    stdin = getattr(sys.stdin, "buffer", sys.stdin)
    try:
        if len(argv) == 3 and argv[0] == "merge" and argv[1] in ("4", "6"):
            path = argv[2]
            merged = merge_rules(_read(path) or b"", stdin.read(), path)
            restore = "ip6tables-restore" if argv[1] == "6" else "iptables-restore"
            changed = write_if_changed(path, merged, [restore, "-w", "--test"])
        elif len(argv) >= 3 and argv[0] == "ecs-config":
            path = argv[1]
            settings = parse_settings(
                [arg if isinstance(arg, bytes) else arg.encode("utf-8") for arg in argv[2:]]
            )
            changed = write_if_changed(path, merge_ecs_config(_read(path) or b"", settings))
        else:
            sys.stderr.write(USAGE + "\n")
            return 2
    except (MergeError, EnvironmentError) as error:
        message = error.strerror if isinstance(error, EnvironmentError) and error.strerror else str(error)
        sys.stderr.write("ecs-imds-block: %s\n" % message)
        return 1
    if changed:
        sys.stderr.write("ecs-imds-block: updated %s\n" % path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
