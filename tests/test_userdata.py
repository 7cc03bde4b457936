# Copyright: the ecs-imds-golden authors
# Apache License 2.0
"""`golden-ami user-data`: the parts, the role's own files inside the boothook, refusals,
the CLI, and cloud-init's own parser reading the result.

The cloud-init test needs Debian's `cloud-init` package, unpacked (never installed) from
`apt-get download cloud-init` into the pytest cache, and the Python packages requests and
PyYAML in the interpreter that runs pytest. Without them it fails, it never skips.
"""

from __future__ import annotations

import ast
import base64
import gzip
import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from imds_rules import imds_rules
from support.cloud_init import parse as cloud_init_parse
from support.role import rendered_files
from support.user_data import boothook_script, heredocs, kinds, leaves

from golden_ami import boothook, cli
from golden_ami.aws import UsageError
from golden_ami.userdata import build_user_data

ROLE = Path(__file__).resolve().parents[1] / "roles" / "ecs_imds_block"
BOOTHOOK = ("application/gzip", "ecs-imds-block-boothook.sh")  # cloud-init gunzips, then sees #cloud-boothook
ECS_CONFIG = ("text/x-shellscript", "ecs-imds-block-ecs-config.sh")
SCRIPT = b"#!/bin/bash\nset -e\necho 'hello from the old user data' >/tmp/old\n"
CLOUD_CONFIG = b"#cloud-config\npackages:\n  - jq\nruncmd:\n  - [touch, /tmp/cloud-config-ran]\n"
MIME_SCRIPT = "#!/bin/bash\necho 'h\u00e9llo' >/tmp/mime\n".encode()  # not ASCII: base64 in the archive
MIME_CLOUD_CONFIG = b"#cloud-config\ncloud_final_modules:\n- [scripts-user, always]\n"
# The style AWS documents for MIME user data: one cloud-config part, one base64 script part.
MIME = (
    'Content-Type: multipart/mixed; boundary="//"\n'
    "MIME-Version: 1.0\n"
    "\n"
    "--//\n"
    'Content-Type: text/cloud-config; charset="us-ascii"\n'
    "MIME-Version: 1.0\n"
    "Content-Transfer-Encoding: 7bit\n"
    'Content-Disposition: attachment; filename="cloud-config.txt"\n'
    "Merge-Type: list(append)+dict(recurse_array)+str()\n"
    "\n" + MIME_CLOUD_CONFIG.decode() + "\n"
    "--//\n"
    'Content-Type: text/x-shellscript; charset="utf-8"\n'
    "MIME-Version: 1.0\n"
    "Content-Transfer-Encoding: base64\n"
    'Content-Disposition: attachment; filename="userdata.txt"\n'
    "\n" + base64.encodebytes(MIME_SCRIPT).decode() + "--//--\n"
).encode()


# --- the parts ------------------------------------------------------------------------------


def test_without_existing_user_data_two_parts():
    data = build_user_data("prod", None)
    assert kinds(data) == [BOOTHOOK, ECS_CONFIG]
    assert data.startswith(b'Content-Type: multipart/mixed; boundary="==ecs-imds-block-user-data=="\n')
    assert data.isascii()
    assert build_user_data("prod", None) == data, "the same input gives the same bytes"


@pytest.mark.parametrize(
    ("existing", "content_type"),
    [
        (SCRIPT, "text/x-shellscript"),
        (CLOUD_CONFIG, "text/cloud-config"),
        (b"#cloud-boothook\n#!/bin/sh\necho early\n", "text/cloud-boothook"),
        (b"#include\nhttps://example.com/user-data\n", "text/x-include-url"),
        (b"  #Cloud-Config\nruncmd: []\n", "text/cloud-config"),  # cloud-init lowercases and lstrips
        (b"#!/bin/sh\r\necho 'windows line ends, kept'\r\n", "text/x-shellscript"),
    ],
)
def test_existing_single_part_sits_between_ours_byte_for_byte(existing, content_type):
    data = build_user_data("prod", existing)
    assert kinds(data) == [BOOTHOOK, (content_type, "existing-user-data"), ECS_CONFIG]
    assert leaves(data)[1].get_payload(decode=True) == existing


def test_existing_mime_archive_is_merged_in_order_payloads_types_and_names_kept():
    data = build_user_data("prod", MIME)
    assert kinds(data) == [
        BOOTHOOK,
        ("text/cloud-config", "cloud-config.txt"),
        ("text/x-shellscript", "userdata.txt"),
        ECS_CONFIG,
    ]
    theirs = leaves(MIME)
    merged = leaves(data)[1:3]
    assert [p.get_payload(decode=True) for p in merged] == [MIME_CLOUD_CONFIG, MIME_SCRIPT]
    assert [p.get_payload(decode=True) for p in merged] == [p.get_payload(decode=True) for p in theirs]
    assert [p["Content-Type"] for p in merged] == [p["Content-Type"] for p in theirs]
    assert merged[0]["Merge-Type"] == "list(append)+dict(recurse_array)+str()"


@pytest.mark.parametrize(
    ("existing", "expected"),
    [
        (SCRIPT, [("text/x-shellscript", "existing-user-data")]),
        (MIME, [("text/cloud-config", "cloud-config.txt"), ("text/x-shellscript", "userdata.txt")]),
    ],
    ids=["script", "mime"],
)
def test_gzipped_existing_user_data_is_decompressed(existing, expected):
    data = build_user_data("prod", gzip.compress(existing))
    assert kinds(data) == [BOOTHOOK, *expected, ECS_CONFIG]
    assert data == build_user_data("prod", existing)


# --- the boothook holds the role's own files --------------------------------------------------


@pytest.mark.parametrize(
    ("action", "allow", "allow_v6"),
    [("reject", [], []), ("drop", ["172.31.250.0/24", "10.0.0.7"], ["fd00:1::/64"])],
)
def test_boothook_rules_are_the_role_filters_output(action, allow, allow_v6):
    written = heredocs(build_user_data("prod", None, action, True, allow, allow_v6))
    assert written["/etc/sysconfig/iptables"] == ("merge", imds_rules(4, action, allow, True))
    assert written["/etc/sysconfig/ip6tables"] == ("merge", imds_rules(6, action, allow_v6, True))


def without_docstrings(code: str) -> str:
    """The syntax tree of ``code`` with no docstring (comments are not in it)."""
    tree = ast.parse(code)
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef) and ast.get_docstring(node):
            node.body = node.body[1:] or [ast.Pass()]
    return ast.dump(tree)


def test_boothook_loader_and_merge_are_the_roles_files_without_their_comments():
    """The loader without its comment lines, byte for byte; the merge without its comments and
    docstrings, the same syntax tree: both to fit EC2's 16 KB."""
    written = heredocs(build_user_data("prod", None))
    assert written["/usr/local/sbin/ecs-imds-block"] == ("0755", boothook.loader())
    assert [line for line in (ROLE / "files" / "ecs-imds-block").read_text().splitlines(keepends=True)
            if not line.lstrip().startswith("#") or line.startswith("#!")] == boothook.loader().splitlines(
        keepends=True
    )  # fmt: skip
    mode, merge = written["/usr/local/lib/ecs-imds-block/ecs_imds_block_merge.py"]
    assert (mode, merge) == ("0644", boothook.merge_code())
    assert without_docstrings(merge) == without_docstrings(
        (ROLE / "module_utils" / "ecs_imds_block_merge.py").read_text()
    )
    assert '"""' not in merge and "\n#" not in merge


@pytest.fixture(scope="session")
def role_files(ansible_playbook, tmp_path_factory) -> dict[bool, dict[str, tuple[str, str]]]:
    """path -> (mode, content) of every file the role writes on Amazon Linux 2023, IPv6 on and off."""
    return rendered_files(ansible_playbook, tmp_path_factory.mktemp("role-files"))


@pytest.mark.parametrize("ipv6", [True, False], ids=["ipv6", "no-ipv6"])
def test_boothook_writes_exactly_the_files_the_role_writes(role_files, ipv6):
    """Byte for byte, but for the loader's comment lines and the merge's comments and docstrings,
    which the boothook leaves out to fit EC2's 16 KB (the rest is the role's, in order)."""
    written = heredocs(build_user_data("prod", None, ipv6=ipv6))
    expected = dict(role_files[ipv6])
    mode, text = expected["/usr/local/sbin/ecs-imds-block"]
    lines = text.splitlines(keepends=True)
    code = "".join(lines[:1] + [line for line in lines[1:] if not line.lstrip().startswith("#")])
    expected["/usr/local/sbin/ecs-imds-block"] = (mode, code)
    assert len(code) < len(text) / 1.5  # the comments are what goes
    merge = "/usr/local/lib/ecs-imds-block/ecs_imds_block_merge.py"
    merge_mode, merge_text = expected[merge]
    assert without_docstrings(merge_text) == without_docstrings(written[merge][1])
    expected[merge] = (merge_mode, written[merge][1])
    assert written == expected


@pytest.mark.parametrize("ipv6", [True, False], ids=["ipv6", "no-ipv6"])
def test_boothook_units_are_what_the_role_renders(role_files, ipv6):
    units = {path: text for path, (_, text) in role_files[ipv6].items() if path.startswith("/etc/systemd/")}
    assert len(units) == (4 if ipv6 else 3) + 2  # the drop-ins, the heal timer and its service
    assert boothook.render_dropins(ipv6) == units


def test_boothook_without_ipv6_leaves_ipv6_alone():
    data = build_user_data("prod", None, ipv6=False)
    assert sorted(heredocs(data)) == [
        "/etc/sysconfig/iptables",
        "/etc/systemd/system/docker.service.d/50-ecs-imds-block.conf",
        "/etc/systemd/system/ecs-imds-block-heal.service",
        "/etc/systemd/system/ecs-imds-block-heal.timer",
        "/etc/systemd/system/ecs.service.d/50-ecs-imds-block.conf",
        "/etc/systemd/system/iptables.service.d/50-ecs-imds-block.conf",
        "/usr/local/lib/ecs-imds-block/ecs_imds_block_merge.py",
        "/usr/local/sbin/ecs-imds-block",
    ]
    assert "/usr/local/sbin/ecs-imds-block apply 4 /etc/sysconfig/iptables ||" in boothook_script(data)
    assert "systemctl enable iptables.service ||" in boothook_script(data)
    assert "ExecStart=/usr/local/sbin/ecs-imds-block heal 4 /etc/sysconfig/iptables\n" in data_units(False)


def data_units(ipv6: bool) -> str:
    return boothook.render_dropins(ipv6)["/etc/systemd/system/ecs-imds-block-heal.service"]


def test_boothook_loads_the_block_before_the_step_that_needs_the_network_and_is_valid_shell(tmp_path):
    script = boothook_script(build_user_data("prod", None))
    head = script.split("\n", 3)
    assert head[:3] == ["#cloud-boothook", "#!/bin/sh", head[2]]
    order = [
        "code=$(cat <<'ECS_IMDS_BLOCK_EOF'",
        '"$py" -E -s -c "$code" put /usr/local/lib/ecs-imds-block/ecs_imds_block_merge.py 0644',
        "put /usr/local/sbin/ecs-imds-block 0755",
        "put /etc/systemd/system/docker.service.d/50-ecs-imds-block.conf 0644",
        "/usr/local/sbin/ecs-imds-block merge 4 /etc/sysconfig/iptables",
        "/usr/local/sbin/ecs-imds-block merge 6 /etc/sysconfig/ip6tables",
        "systemctl daemon-reload\n",
        "/usr/local/sbin/ecs-imds-block apply 4 /etc/sysconfig/iptables 6 /etc/sysconfig/ip6tables"
        " || fail 'cannot load the block into the kernel'\n",
        "systemctl enable ecs-imds-block-heal.timer ||",
        "systemctl start --no-block ecs-imds-block-heal.timer ||",
        'missing=$(for name in iptables-services; do rpm -q --quiet --whatprovides "$name" || echo "$name";'
        " done)\n",
        "install='dnf install -y'",
        'fail "$install $missing failed (see /var/log/ecs-imds-block-install.log); the block is loaded, '
        'and docker.service loads it at every start"',
        "systemctl enable iptables.service ip6tables.service ||",
    ]
    positions = [script.index(step) for step in order]
    assert positions == sorted(positions), "the network step comes last"
    preamble = script[: script.index("<<")]
    assert "\nset -u\n" in preamble and "set -e" not in preamble, "every step says what failed instead"
    (tmp_path / "boothook").write_text(script.split("\n", 1)[1])  # as cloud-init runs it
    subprocess.run(["sh", "-n", str(tmp_path / "boothook")], check=True)


def test_boothook_writes_exactly_those_bytes_and_modes_through_a_real_shell(tmp_path):
    """The heredocs are quoted: the shell passes the content as it is, `$` and backslashes too.
    The merge writes itself from its own code, then every other file (put), here below a scratch
    root instead of /."""
    script = boothook_script(build_user_data("prod", None))
    merge = "/usr/local/lib/ecs-imds-block/ecs_imds_block_merge.py"
    code = re.search(
        r"^code=\$\(cat <<'ECS_IMDS_BLOCK_EOF'\n.*?^ECS_IMDS_BLOCK_EOF\n\)\n", script, re.M | re.S
    )
    writes_itself = re.search(r"^printf .* put " + re.escape(merge) + " 0644 ", script, re.M)
    blocks = re.findall(
        r"^put \S+ 0\d{3} <<'ECS_IMDS_BLOCK_EOF'.*?^ECS_IMDS_BLOCK_EOF\n", script, re.M | re.S
    )
    shell = (
        f"py={sys.executable}\n"
        + code.group(0)
        + writes_itself.group(0).replace(f" put {merge} ", f' put "$ROOT{merge}" ')
        + "\n"
        + f'put() {{ "$py" -E -s "$ROOT{merge}" put "$ROOT$1" "$2"; }}\n'
        + "".join(blocks)
    )
    root = tmp_path / "root"
    subprocess.run(["sh", "-euc", shell], check=True, env={**os.environ, "ROOT": str(root)})
    written = heredocs(build_user_data("prod", None))
    for path, (mode, content) in written.items():
        if mode != "merge":
            assert (root / path.lstrip("/")).read_text() == content, path
            assert f"{stat.S_IMODE((root / path.lstrip('/')).stat().st_mode):04o}" == mode, path
    assert len(blocks) + 1 == len([mode for mode, _ in written.values() if mode != "merge"])


def test_ecs_config_part_merges_cluster_the_awsvpc_block_and_the_attribute(tmp_path):
    script = leaves(build_user_data("prod-blue_2", None))[-1].get_payload(decode=True).decode()
    assert "set -eu\n" in script
    command = (
        "/usr/local/sbin/ecs-imds-block ecs-config /etc/ecs/ecs.config "
        "ECS_CLUSTER=prod-blue_2 ECS_AWSVPC_BLOCK_IMDS=true attribute:ecs-imds-block=enforced\n"
    )
    assert script.endswith(command)
    # Run through the role's loader and merge against a scratch ecs.config that says otherwise.
    config = tmp_path / "ecs.config"
    config.write_text(
        'ECS_LOGLEVEL=info\nECS_AWSVPC_BLOCK_IMDS=false\nECS_INSTANCE_ATTRIBUTES={"team":"web"}'
    )
    local = script.replace("/usr/local/sbin/ecs-imds-block", str(ROLE / "files" / "ecs-imds-block"))
    env = {**os.environ, "ECS_IMDS_BLOCK_MERGE": str(ROLE / "module_utils" / "ecs_imds_block_merge.py")}
    subprocess.run(["sh", "-c", local.replace("/etc/ecs/ecs.config", str(config))], check=True, env=env)
    assert config.read_text() == (
        'ECS_LOGLEVEL=info\nECS_AWSVPC_BLOCK_IMDS=true\nECS_INSTANCE_ATTRIBUTES={"team":"web","ecs-imds-block":"enforced"}\n'
        "ECS_CLUSTER=prod-blue_2\n"
    )


# --- refusals ---------------------------------------------------------------------------------


@pytest.mark.parametrize("cluster", ["prod cluster", "", "prod/1", "x" * 256, "prod\n", "pr\u00f6d"])
def test_bad_cluster_name_is_refused(cluster):
    with pytest.raises(UsageError) as error:
        build_user_data(cluster, None)
    assert str(error.value) == (
        f"invalid ECS cluster name {cluster!r}: use 1 to 255 letters, digits, hyphens and underscores"
    )


def test_longest_cluster_name_is_accepted():
    assert b" ECS_CLUSTER=" + b"x" * 255 + b" " in build_user_data("x" * 255, None)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"allow_v6": ["10.0.0.0/8"]}, "imds_rules: '10.0.0.0/8' is an IPv4 network in the IPv6 allowlist"),
        ({"allow": ["fd00::/8"]}, "imds_rules: 'fd00::/8' is an IPv6 network in the IPv4 allowlist"),
        ({"allow": ["10.0.0.1/8"]}, "imds_rules: invalid CIDR '10.0.0.1/8': 10.0.0.1/8 has host bits set"),
        (
            {"allow": ["0.0.0.0/0"]},
            "imds_rules: '0.0.0.0/0' would allow every container to reach IMDS; "
            "turn bridge blocking off instead if that is what you mean",
        ),
        (
            {"ipv6": False, "allow_v6": ["fd00:1::/64"]},
            "--allowed-cidr-v6 has no effect with --no-ipv6: drop one of them",
        ),
        (
            {"ipv6": False, "allow_v6": ["10.0.0.0/8"]},
            "imds_rules: '10.0.0.0/8' is an IPv4 network in the IPv6 allowlist",
        ),
        ({"action": "accept"}, "imds_rules: action must be one of ('reject', 'drop'), got 'accept'"),
    ],
)
def test_bad_rules_input_is_refused_with_the_filters_message(kwargs, message):
    with pytest.raises(UsageError) as error:
        build_user_data("prod", None, **kwargs)
    assert str(error.value) == message


@pytest.mark.parametrize(
    ("existing", "message"),
    [
        (
            b"echo no shebang\n",
            "old.txt: not user data that cloud-init recognises (it starts with b'echo no shebang'); "
            "expected a MIME archive or a first line starting with #include, #include-once, #!, "
            "#cloud-config, #part-handler, #cloud-boothook, #cloud-config-archive, #cloud-config-jsonp, "
            "## template: jinja",
        ),
        (b"\xff\xfe#!/bin/sh\n", "old.txt: not user data that cloud-init recognises"),
        (b"", "old.txt: is empty"),
        (gzip.compress(b"", mtime=0)[:-4], "old.txt: looks gzipped but does not decompress"),
        (
            b"MIME-Version: 1.0\nContent-Type: text/plain\n\n\xff\n",
            "old.txt: a MIME archive that is not UTF-8",
        ),
    ],
)
def test_unrecognised_existing_user_data_is_refused_naming_the_file(existing, message):
    with pytest.raises(UsageError) as error:
        build_user_data("prod", existing, source="old.txt")
    assert str(error.value).startswith(message)


def test_existing_part_named_like_ours_is_refused():
    archive = MIME.replace(b'filename="userdata.txt"', b'filename="ecs-imds-block-ecs-config.sh"')
    with pytest.raises(UsageError, match=r"^old.txt: a part is named 'ecs-imds-block-ecs-config.sh'"):
        build_user_data("prod", archive, source="old.txt")


def test_over_16_kb_is_refused_with_the_size():
    big = b"#!/bin/sh\n" + b"echo 'a line of an old, long user-data script'\n" * 300
    with pytest.raises(UsageError) as error:
        build_user_data("prod", big)
    match = re.fullmatch(
        r"the user data would be (\d+) bytes, over EC2's limit of 16384 bytes \(before base64\): "
        r"the existing user data takes (\d+) of them, the IMDS block (\d+); "
        r"shorten the existing user data, or have it fetch the rest \(#include a URL\)",
        str(error.value),
    )
    assert match, str(error.value)
    total, theirs, ours = map(int, match.groups())
    assert total > 16384
    assert total == theirs + ours
    assert theirs > len(big)


def test_just_under_16_kb_is_accepted():
    base = len(build_user_data("prod", b"#!/bin/sh\n"))
    filler = b"#" * 79 + b"\n"  # 7bit lines: each adds its own length, nothing else
    script = b"#!/bin/sh\n" + filler * ((16384 - base) // len(filler))
    assert 16384 - len(filler) < len(build_user_data("prod", script)) <= 16384


# --- the CLI ----------------------------------------------------------------------------------


def test_cli_writes_output_file(tmp_path, capsys):
    (tmp_path / "old.sh").write_bytes(SCRIPT)
    out = tmp_path / "user-data.mime"
    argv = ["user-data", "--cluster", "prod", "--existing", str(tmp_path / "old.sh"), "--output", str(out)]
    argv += ["--action", "drop", "--allow", "172.31.250.0/24", "--allow-v6", "fd00:1::/64"]
    assert cli.main(argv) == 0
    assert out.read_bytes() == build_user_data(
        "prod", SCRIPT, "drop", True, ["172.31.250.0/24"], ["fd00:1::/64"]
    )
    assert capsys.readouterr().out == ""


def test_cli_without_output_prints_the_user_data_exactly(capsys):
    assert cli.main(["user-data", "--cluster", "prod", "--no-ipv6"]) == 0
    assert capsys.readouterr().out.encode() == build_user_data("prod", None, ipv6=False)


def test_cli_json_reports_the_parts(tmp_path, capsys):
    (tmp_path / "old.mime").write_bytes(gzip.compress(MIME))
    out = tmp_path / "user-data.mime"
    argv = ["user-data", "--json", "--cluster", "prod", "--existing", str(tmp_path / "old.mime")]
    assert cli.main([*argv, "--output", str(out)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report == {
        "bytes": len(out.read_bytes()),
        "parts": [
            {"content_type": "application/gzip", "filename": "ecs-imds-block-boothook.sh"},
            {"content_type": "text/cloud-config", "filename": "cloud-config.txt"},
            {"content_type": "text/x-shellscript", "filename": "userdata.txt"},
            {"content_type": "text/x-shellscript", "filename": "ecs-imds-block-ecs-config.sh"},
        ],
    }


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--cluster", "bad name"], "invalid ECS cluster name 'bad name'"),
        (
            ["--cluster", "prod", "--allow-v6", "10.0.0.0/8"],
            "imds_rules: '10.0.0.0/8' is an IPv4 network in the",
        ),
        (
            ["--cluster", "prod", "--existing", "{tmp}/old.txt"],
            "{tmp}/old.txt: not user data that cloud-init",
        ),
        (
            ["--cluster", "prod", "--existing", "{tmp}/missing"],
            "cannot read --existing {tmp}/missing: No such file",
        ),
        (["--cluster", "prod", "--json"], "user-data --json prints a summary on stdout: pass --output FILE"),
    ],
)
def test_cli_refuses_before_writing_anything(tmp_path, capsys, args, message):
    (tmp_path / "old.txt").write_text("hello\n")
    out = tmp_path / "user-data.mime"
    argv = ["user-data", *(arg.format(tmp=tmp_path) for arg in args), "--output", str(out)]
    if "--json" in args:
        argv = argv[:-2]
    assert cli.main(argv) == 2
    captured = capsys.readouterr()
    assert f"golden-ami: {message.format(tmp=tmp_path)}" in captured.err
    assert captured.out == ""
    assert not out.exists()


# --- cloud-init's own parser ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("existing", "theirs"),
    [
        (None, []),
        (SCRIPT, [("text/x-shellscript", "existing-user-data", SCRIPT)]),
        (CLOUD_CONFIG, [("text/cloud-config", "existing-user-data", CLOUD_CONFIG)]),
        (
            MIME,
            [
                ("text/cloud-config", "cloud-config.txt", MIME_CLOUD_CONFIG),
                ("text/x-shellscript", "userdata.txt", MIME_SCRIPT),
            ],
        ),
        (gzip.compress(SCRIPT, mtime=0), [("text/x-shellscript", "existing-user-data", SCRIPT)]),
    ],
    ids=["none", "script", "cloud-config", "mime", "gzip"],
)
def test_cloud_init_reads_the_parts_in_order(cloud_init, tmp_path, existing, theirs):
    data = build_user_data("prod", existing)
    seen = cloud_init_parse(cloud_init, data, tmp_path)
    ours = leaves(data)
    assert seen == [
        ("text/cloud-boothook", BOOTHOOK[1], gzip.decompress(ours[0].get_payload(decode=True))),
        *theirs,
        (*ECS_CONFIG, ours[-1].get_payload(decode=True)),
    ]
