# Copyright: the ecs-imds-golden authors
# Apache License 2.0

"""Merge the ecs_imds_block role's part into files that other people write too.

The one home of the rules that the role, the user-data boothook and the loader share: the
markers around our part of a rules file, the IMDS addresses, which ecs.config settings can be
written, the staged atomic file write, and what a load must delete first. Used in three places:

- by the role's ecs_imds_block_files module (``merge: rules`` and ``merge: ecs_config``),
  which reads, merges and writes each file in the same module run;
- by the role's filters (imds_rules, ecs_config_settings, imds_layout), which load this file;
- on the host, as ``ecs-imds-block merge|ecs-config|put|restore``: by the user-data boothook,
  just before the ECS agent starts (``ecs.service``'s drop-in), and by the loader's ``load``.

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

# The markers around our part of a rules file: the imds_rules filter writes them, the merge
# finds our lines by them, and so does the loader (files/ecs-imds-block matches their first
# words, "# BEGIN ecs_imds_block" and "# END ecs_imds_block": a shell script cannot import
# them, and a test runs it on files this module marks).
BEGIN_TEXT = (
    "# BEGIN ecs_imds_block: the DOCKER-USER chain and the FORWARD jump to it. The role replaces\n"
    "# these lines; every other line of this file is yours and is kept as it is.\n"
)
END_TEXT = "# END ecs_imds_block\n"
BEGIN = BEGIN_TEXT.split(":", 1)[0].encode("ascii")
END = END_TEXT.strip().encode("ascii")
CHAIN = b"DOCKER-USER"
# The instance metadata service's addresses, by family: what the block refuses and verify probes.
IMDS = {4: "169.254.169.254", 6: "fd00:ec2::254"}
NEW_FILE_MODE = 0o600
DIRECTORY_MODE = 0o755

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


class ChangedMeanwhile(MergeError):
    """A merged file changed between its read and its write; it was left as it is now."""


def filter_error():
    """The exception class the role's filters raise: Ansible's AnsibleFilterError when Ansible
    loaded them, else MergeError (a ValueError). Importing ansible.errors from the golden-ami CLI
    would read an ansible.cfg in the user's current folder and print Ansible's warnings on the
    CLI's stderr."""
    if "ansible.plugins.loader" in sys.modules:
        from ansible.errors import AnsibleFilterError

        return AnsibleFilterError
    return MergeError


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


def check_key(key):
    """``key`` (bytes) if it can name an ecs.config setting; MergeError otherwise."""
    if not _KEY.match(key):
        raise MergeError(
            "%r is not a valid ecs.config key (upper-case letters, digits and underscores)" % _text(key)
        )
    return key


def check_value(key, value):
    """``value`` (bytes) if ecs-init and systemd's EnvironmentFile= read it alike as the value of
    ``key``; MergeError otherwise. Any control character can end a line for one reader and not
    the other (ecs-init splits on \\n only, systemd on \\r too), and systemd unquotes, unescapes
    and strips what ecs-init takes as it is."""
    if re.search(rb"[\x00-\x1f\x7f\\]", value) or value[:1] in (b"'", b'"') or value != value.strip():
        raise MergeError(
            "the value of %s must be one line of printable text without backslashes, leading or "
            "trailing blanks or a leading quote (ecs-init and systemd read those differently): %r"
            % (_text(key), _text(value))
        )
    return value


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
        settings.append((key, check_value(key, value)))
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


def read(path):
    """The bytes of ``path``, None if there is no such file; MergeError if it cannot be read."""
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except (IOError, OSError) as error:
        if getattr(error, "errno", None) == 2:
            return None
        raise MergeError("cannot read %s: %s" % (path, error.strerror))


def make_parents(directory):
    """Create ``directory`` and its missing parents with mode 0755, whatever the umask."""
    missing = []
    while directory and not os.path.isdir(directory):
        missing.append(directory)
        directory = os.path.dirname(directory)
    for new in reversed(missing):
        os.mkdir(new)
        os.chmod(new, DIRECTORY_MODE)


def refusal(command, content, directory=None):
    """Run ``command`` (an argv; its "%s" is the path, else the path is added at its end) on
    ``content`` staged in a file of ``directory``: None if it accepts it, else its stderr on one
    line."""
    fd, staged = tempfile.mkstemp(dir=directory, prefix=".ecs-imds-block.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
        argv = [staged if arg == "%s" else arg for arg in command]
        check = subprocess.Popen(
            argv if "%s" in command else argv + [staged], stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        out, err = check.communicate()
    finally:
        os.unlink(staged)
    return _text(err or out).strip().replace("\n", "; ") if check.returncode else None


def replace(path, content, mode=None, expected=None):
    """Put ``content`` at ``path`` in one rename from a file staged beside it: a reader sees the
    old file or the new one, never part of one. An existing file keeps its owner, and its mode
    unless ``mode`` is given; a new one gets ``mode`` or 0600. With ``expected``, the file must
    still hold those bytes (what a merge read), else ChangedMeanwhile and nothing changes: a
    line appended meanwhile (user data's ``echo >> ecs.config``) is never lost."""
    make_parents(os.path.dirname(path))
    fd, staged = tempfile.mkstemp(dir=os.path.dirname(path) or ".", prefix=".ecs-imds-block.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
        if expected is not None and (read(path) or b"") != expected:
            raise ChangedMeanwhile(
                "%s changed while it was merged, and was left as it is now; run again" % path
            )
        if os.path.exists(path):
            info = os.stat(path)
            os.chmod(staged, info.st_mode & 0o7777 if mode is None else mode)
            os.chown(staged, info.st_uid, info.st_gid)
        else:
            os.chmod(staged, NEW_FILE_MODE if mode is None else mode)
        os.rename(staged, path)
        staged = None
    finally:
        if staged:
            os.unlink(staged)


def write_if_changed(path, content, command=None):
    """``replace`` if ``path`` does not hold ``content`` already, after ``command`` (see
    ``refusal``) accepted it; True if it changed."""
    if read(path) == content:
        return False
    refused = refusal(command, content, os.path.dirname(path) or ".") if command else None
    if refused is not None:
        raise MergeError(
            "%s refused the merged %s, which is left as it was: %s" % (" ".join(command), path, refused)
        )
    replace(path, content)
    return True


# Rules in built-in chains are appended: loading a file again would add them a second time.
_BUILT_IN = re.compile(rb"^-A (?:INPUT|OUTPUT|FORWARD|PREROUTING|POSTROUTING) ")


def _by_table(saved):
    """(table, line) for every rule in a built-in chain of an iptables-save output."""
    table, rules = None, []
    for line in saved.split(b"\n"):
        line = line.rstrip(b"\r")
        if line.startswith(b"*"):
            table = line[1:]
        elif _BUILT_IN.match(line):
            rules.append((table, line))
    return rules


def restore_input(rules, canonical, live):
    """The input of one ``iptables-restore --noflush`` that loads ``rules`` (a rules file) with
    no duplicates: after each table's header, the deletion of every live copy (in ``live``, an
    iptables-save of the kernel now) of the rules the file adds to built-in chains. Those are
    found by the kernel's own spelling of them, ``canonical``: an iptables-save of the file
    loaded alone (empty when that was not possible: then nothing is deleted)."""
    wanted = set(_by_table(canonical))
    deletes = {}
    for table, line in _by_table(live):
        if (table, line) in wanted:
            deletes.setdefault(table, []).append(b"-D" + line[2:] + b"\n")
    out = []
    for line in _lines(rules):
        out.append(line if line.endswith(b"\n") else line + b"\n")
        if line.startswith(b"*"):
            out.extend(deletes.get(line.rstrip(b"\r\n")[1:], []))
    return b"".join(out)


def restore(family, path):
    """Load the whole rules file ``path`` (``ecs-imds-block load``) in one --noflush commit that
    first deletes every live copy of what it adds, so Docker's and ecs-init's rules stay, a chain
    the file declares is replaced whole, and no reload leaves a duplicate. No temporary files:
    at boot this runs beside systemd-tmpfiles-setup, which empties /tmp."""
    ipt = "ip6tables" if family == "6" else "iptables"
    rules = read(path)
    if rules is None:
        raise MergeError("cannot read %s" % path)
    # The file loaded alone in a network namespace of its own, read back in the kernel's spelling.
    try:
        scratch = subprocess.Popen(
            ["unshare", "-n", "--", "sh", "-c", '"$1"-restore -w && "$1"-save', "sh", ipt],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        canonical, _ = scratch.communicate(rules)
        canonical = canonical if scratch.returncode == 0 else b""
    except OSError:  # no unshare: nothing is deleted, and the load still happens
        canonical = b""
    live = subprocess.Popen([ipt + "-save"], stdout=subprocess.PIPE)
    saved, _ = live.communicate()
    if live.returncode:
        raise MergeError("%s-save failed" % ipt)
    load = subprocess.Popen([ipt + "-restore", "-w", "--noflush"], stdin=subprocess.PIPE)
    load.communicate(restore_input(rules, canonical, saved))
    if load.returncode:
        raise MergeError("the kernel refused %s" % path)


USAGE = (
    "usage: ecs-imds-block merge 4|6 FILE < RENDERED\n"
    "       ecs-imds-block ecs-config FILE KEY=VALUE [KEY=VALUE ...]\n"
    "       ecs-imds-block put FILE MODE < CONTENT\n"
    "       ecs-imds-block restore 4|6 FILE"
)


def main(argv):
    """Exit 0 done, 1 refused or failed, 2 usage; one line on stderr when not 0."""
    stdin = getattr(sys.stdin, "buffer", sys.stdin)
    changed = False
    try:
        if len(argv) == 3 and argv[0] == "merge" and argv[1] in ("4", "6"):
            path = argv[2]
            merged = merge_rules(read(path) or b"", stdin.read(), path)
            restore_command = "ip6tables-restore" if argv[1] == "6" else "iptables-restore"
            changed = write_if_changed(path, merged, [restore_command, "-w", "--test"])
        elif len(argv) >= 3 and argv[0] == "ecs-config":
            path = argv[1]
            settings = parse_settings(
                [arg if isinstance(arg, bytes) else arg.encode("utf-8") for arg in argv[2:]]
            )
            changed = write_if_changed(path, merge_ecs_config(read(path) or b"", settings))
        elif len(argv) == 3 and argv[0] == "put" and re.match(r"^0[0-7]{3}$", argv[2]):
            path = argv[1]
            replace(path, stdin.read(), int(argv[2], 8))
        elif len(argv) == 3 and argv[0] == "restore" and argv[1] in ("4", "6"):
            path = argv[2]
            restore(argv[1], path)
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
