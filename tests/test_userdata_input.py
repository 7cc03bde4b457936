# Copyright: the ecs-imds-golden authors
# Apache License 2.0
"""`golden-ami user-data` against hostile and malformed input (issue 12): each case is refused
before anything is written, with exit 2 and one line; the output file is 0600; the gzipped
bytes go to stdout only when it is not a terminal; the command runs whatever the AWS
configuration is; a reader that goes away ends it quietly.

The subprocess cases run the installed CLI with a scrubbed environment: no AWS call is made,
and instance metadata is turned off all the same.
"""

from __future__ import annotations

import gzip
import os
import pty
import stat
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest

from golden_ami import cli
from golden_ami.mime import MAX_BYTES, MAX_INFLATED
from golden_ami.userdata import build_user_data

SCRIPT = b"#!/bin/sh\necho hello\n"
INJECTION = "fe80::%lo\n-I DOCKER-USER 1 -j ACCEPT\n#/128"
EVERY = (
    "covers every address together, so it would allow every container to reach IMDS; "
    "turn bridge blocking off instead if that is what you mean"
)


def bomb(inflated: int) -> bytes:
    """A gzip member of ``inflated`` zero bytes, compressed chunk by chunk (never held whole)."""
    deflater = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    chunk, out = b"\0" * (1 << 20), []
    for _ in range(inflated // len(chunk)):
        out.append(deflater.compress(chunk))
    out.append(deflater.compress(b"\0" * (inflated % len(chunk))))
    out.append(deflater.flush())
    return b"".join(out)


def env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """No AWS configuration but what a case sets; metadata off; any endpoint on loopback."""
    base = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": str(tmp_path / "no-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-credentials"),
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
    }
    return {**base, **extra}


def golden_ami(*argv: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "golden_ami.cli", *argv], capture_output=True, timeout=120, **kwargs
    )


# --- refusals: the input, the exit code, the exact line ---------------------------------------


@pytest.mark.parametrize(
    ("args", "files", "message"),
    [
        (["--allow-v6", INJECTION], {},
         f"imds_rules: invalid CIDR {INJECTION!r}: a scope id (%) is not allowed"),
        (["--allowed-cidr", "fe80::%lo"], {},
         "imds_rules: invalid CIDR 'fe80::%lo': a scope id (%) is not allowed"),
        (["--allow", "0.0.0.0/1", "128.0.0.0/1"], {},
         f"imds_rules: the IPv4 allowlist ['0.0.0.0/1', '128.0.0.0/1'] {EVERY}"),
        (["--allow-v6", "::/1", "8000::/1"], {},
         f"imds_rules: the IPv6 allowlist ['::/1', '8000::/1'] {EVERY}"),
        (["--allow", "169.254.0.0/16"], {},
         "imds_rules: '169.254.0.0/16' overlaps 169.254.0.0/16, IMDS's own link-local network: "
         "no container source there may be allowlisted"),
        (["--allow-v6", "fe80::1"], {},
         "imds_rules: 'fe80::1' overlaps fe80::/10, IMDS's own link-local network: "
         "no container source there may be allowlisted"),
        (["--existing", "{tmp}/bomb.gz"], {"bomb.gz": lambda: bomb(1 << 30)},
         "{tmp}/bomb.gz: over 16384 bytes gzipped, EC2's limit on the whole user data"),
        (["--existing", "{tmp}/small-bomb.gz"], {"small-bomb.gz": lambda: bomb(15 << 20)},
         "{tmp}/small-bomb.gz: inflates to over 1048576 bytes"),
        (["--existing", "/dev/zero"], {}, "/dev/zero: over 1048576 bytes"),
        (["--existing", "{tmp}/big.sh"], {"big.sh": SCRIPT + b"#" * MAX_INFLATED},
         "{tmp}/big.sh: over 1048576 bytes"),
        (["--existing", "{tmp}/cut.gz"], {"cut.gz": gzip.compress(SCRIPT, mtime=0)[:-6]},
         "{tmp}/cut.gz: looks gzipped but does not decompress: it is cut short"),
        (["--existing", "{tmp}/tail.gz"], {"tail.gz": gzip.compress(SCRIPT, mtime=0) + b"junk"},
         "{tmp}/tail.gz: looks gzipped but does not decompress: data after the gzip stream"),
        (["--existing", "{tmp}/empty.mime"],
         {"empty.mime": b'MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="x"\n\n--x--\n'},
         "{tmp}/empty.mime: a MIME archive with no parts (or only empty ones)"),
        (["--existing", "{tmp}/blank.mime"],
         {"blank.mime": b'MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="x"\n\n--x\n\n--x--\n'},
         "{tmp}/blank.mime: a MIME archive with no parts (or only empty ones)"),
        (["--existing", "{tmp}"], {}, "cannot read --existing {tmp}: Is a directory"),
        (["--output", "{tmp}/missing/user-data"], {},
         "cannot write --output {tmp}/missing/user-data: No such file or directory"),
    ],
)  # fmt: skip
def test_refused_with_exit_2_and_one_line(tmp_path, user_folder, args, files, message):
    for name, content in files.items():  # a callable is made only for its own case
        (tmp_path / name).write_bytes(content() if callable(content) else content)
    out = tmp_path / "user-data.mime"
    argv = ["user-data", "--cluster", "prod", "--output", str(out), *(a.format(tmp=tmp_path) for a in args)]
    started = time.monotonic()
    result = golden_ami(*argv, env=env(tmp_path), cwd=user_folder)
    assert time.monotonic() - started < 30
    assert (result.returncode, result.stderr.decode()) == (2, f"golden-ami: {message.format(tmp=tmp_path)}\n")
    assert result.stdout == b""
    assert not out.exists()


def test_a_gzip_bomb_costs_neither_time_nor_memory(tmp_path):
    """15 KB that inflate to 15 MB: refused after 1 MiB of output, not after inflating it all."""
    (tmp_path / "bomb.gz").write_bytes(bomb(15 << 20))
    assert (tmp_path / "bomb.gz").stat().st_size <= MAX_BYTES
    argv = [sys.executable, "-m", "golden_ami.cli", "user-data", "--cluster", "prod"]
    started = time.monotonic()
    child = subprocess.Popen(
        [*argv, "--existing", str(tmp_path / "bomb.gz")], stdout=subprocess.DEVNULL, env=env(tmp_path)
    )
    _, status, usage = os.wait4(child.pid, 0)  # this child's own peak memory
    child.returncode = os.waitstatus_to_exitcode(status)
    assert child.returncode == 2
    assert time.monotonic() - started < 10
    # Python with boto3 imported, and 1 MiB of output at most: far from 15 MB more than that.
    baseline = subprocess.Popen([*argv, "--no-ipv6"], stdout=subprocess.DEVNULL, env=env(tmp_path))
    _, _, normal = os.wait4(baseline.pid, 0)
    baseline.returncode = 0
    assert usage.ru_maxrss - normal.ru_maxrss < 8 * 1024  # KiB


def test_gzip_members_and_zero_padding_are_read_as_gzip_reads_them():
    twice = gzip.compress(b"#!/bin/sh\necho one\n") + b"\0\0" + gzip.compress(b"echo two\n")
    assert build_user_data("prod", twice) == build_user_data("prod", b"#!/bin/sh\necho one\necho two\n")


def test_plain_user_data_over_16_kb_that_fits_gzipped_is_accepted(tmp_path):
    """The whole archive is gzipped, so a team's 40 KB of plain cloud-config, which gzips to far
    less than what the block leaves, fits; as it does when given gzipped."""
    team = b"#cloud-config\nwrite_files:\n" + b"".join(
        b"  - path: /etc/team/conf.d/%03d.conf\n    content: |\n      setting_%03d = on\n" % (n, n)
        for n in range(700)
    )
    assert len(team) > 2 * MAX_BYTES
    (tmp_path / "team.yaml").write_bytes(team)
    (tmp_path / "team.yaml.gz").write_bytes(gzip.compress(team))
    for name in ("team.yaml", "team.yaml.gz"):
        argv = [
            "user-data",
            "--cluster",
            "prod",
            "--existing",
            str(tmp_path / name),
            "--output",
            str(tmp_path / "out"),
        ]
        result = golden_ami(*argv, env=env(tmp_path))
        assert result.returncode == 0, result.stderr
        assert result.stderr.decode().startswith("golden-ami: wrote "), result.stderr
        assert (tmp_path / "out").read_bytes() == build_user_data("prod", team)
    assert len(build_user_data("prod", team)) <= MAX_BYTES


def test_binary_user_data_is_not_written_to_a_terminal(tmp_path):
    """On a terminal (a pty here) stdout gets nothing and the refusal says what to do."""
    controller, terminal = pty.openpty()
    try:
        result = subprocess.run(
            [sys.executable, "-m", "golden_ami.cli", "user-data", "--cluster", "prod"],
            stdout=terminal, stderr=subprocess.PIPE, env=env(tmp_path), timeout=120,
        )  # fmt: skip
        os.set_blocking(controller, False)
        try:
            written = os.read(controller, 65536)
        except BlockingIOError:
            written = b""
    finally:
        os.close(terminal)
        os.close(controller)
    assert (result.returncode, result.stderr.decode()) == (
        2,
        "golden-ami: the user data is gzipped (binary): pass --output FILE, or redirect stdout to a file\n",
    )
    assert written == b""


# --- the output file ---------------------------------------------------------------------------


@pytest.mark.parametrize("before", [None, 0o644, 0o666])
def test_the_output_file_is_0600(tmp_path, before, capsys):
    out = tmp_path / "user-data.mime"
    if before is not None:
        out.write_bytes(b"old")
        out.chmod(before)
    old = os.umask(0)  # even with no umask at all
    try:
        assert cli.main(["user-data", "--cluster", "prod", "--output", str(out)]) == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert out.read_bytes() == build_user_data("prod", None)


# --- whatever the AWS configuration is ---------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "extra"),
    [
        (None, ["--profile", "does-not-exist"]),
        ("[default\nregion = eu-west-1\n", []),
        ("[profile p]\ncredential_process = /bin/echo not json\n", ["--profile", "p"]),
        ("[default]\nregion = not a region\n", []),
    ],
)
def test_user_data_runs_whatever_the_aws_configuration_is(tmp_path, config, extra):
    environment = env(tmp_path, AWS_PROFILE="does-not-exist-either")
    if config is not None:
        (tmp_path / "no-config").write_text(config)
    result = golden_ami("user-data", "--cluster", "prod", "--no-ipv6", *extra, env=environment)
    assert (result.returncode, result.stderr) == (0, b"")
    assert result.stdout == build_user_data("prod", None, ipv6=False)


# --- a reader that goes away ---------------------------------------------------------------------


def test_a_closed_pipe_ends_quietly_with_141(tmp_path):
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first byte: every write fails with EPIPE
    try:
        result = subprocess.run(
            [sys.executable, "-m", "golden_ami.cli", "user-data", "--cluster", "prod"],
            stdout=write_end, stderr=subprocess.PIPE, env=env(tmp_path), timeout=120,
        )  # fmt: skip
    finally:
        os.close(write_end)
    assert (result.returncode, result.stderr) == (cli.BROKEN_PIPE, b"")


def test_piped_to_head_no_traceback(tmp_path):
    command = f"{sys.executable} -m golden_ami.cli user-data --cluster prod | head -c 2"
    result = subprocess.run(["sh", "-c", command], capture_output=True, env=env(tmp_path), timeout=120)
    assert (result.returncode, result.stdout, result.stderr) == (0, b"\x1f\x8b", b"")
