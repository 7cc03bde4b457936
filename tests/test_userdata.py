"""`golden-ami user-data`: the parts, the role's own files inside the boothook, refusals,
the CLI, and cloud-init's own parser reading the result.

The cloud-init test needs Debian's `cloud-init` package, unpacked (never installed) from
`apt-get download cloud-init` into the pytest cache, and the Python packages requests and
PyYAML in the interpreter that runs pytest. Without them it fails, it never skips.
"""

from __future__ import annotations

import base64
import email
import gzip
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from imds_rules import imds_rules

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


def parts(data: bytes) -> list[email.message.Message]:
    return [part for part in email.message_from_bytes(data).walk() if not part.is_multipart()]


def kinds(data: bytes) -> list[tuple[str, str | None]]:
    return [(part.get_content_type(), part.get_filename()) for part in parts(data)]


def boothook_script(data: bytes) -> str:
    return gzip.decompress(parts(data)[0].get_payload(decode=True)).decode()


HEREDOC = re.compile(
    r"^(put (\S+) (0\d{3})|\S+ merge [46] (\S+)) <<'ECS_IMDS_BLOCK_EOF'.*?\n(.*?)^ECS_IMDS_BLOCK_EOF\n",
    re.M | re.S,
)


def heredocs(data: bytes) -> dict[str, tuple[str, str]]:
    """What the boothook writes: path -> (mode, content), read from its quoted heredocs; a rules
    file, merged into what the host has, shows as ("merge", the rendered rules)."""
    script = boothook_script(data)
    found = {}
    for _, put_path, mode, merge_path, content in HEREDOC.findall(script):
        found[put_path or merge_path] = (mode or "merge", content)
    ours = script.count("<<'ECS_IMDS_BLOCK_EOF'")  # the loader's own heredocs are content, not ours
    assert len(found) == ours, "every heredoc is a `put PATH MODE` or a `merge FAMILY PATH`"
    return found


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
    assert parts(data)[1].get_payload(decode=True) == existing


def test_existing_mime_archive_is_merged_in_order_payloads_types_and_names_kept():
    data = build_user_data("prod", MIME)
    assert kinds(data) == [
        BOOTHOOK,
        ("text/cloud-config", "cloud-config.txt"),
        ("text/x-shellscript", "userdata.txt"),
        ECS_CONFIG,
    ]
    theirs = parts(MIME)
    merged = parts(data)[1:3]
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


def test_boothook_loader_and_merge_are_the_roles_files_byte_for_byte():
    written = heredocs(build_user_data("prod", None))
    assert written["/usr/local/sbin/ecs-imds-block"] == (
        "0755",
        (ROLE / "files" / "ecs-imds-block").read_text(),
    )
    assert written["/usr/local/lib/ecs-imds-block/ecs_imds_block_merge.py"] == (
        "0644",
        (ROLE / "module_utils" / "ecs_imds_block_merge.py").read_text(),
    )


@pytest.fixture(scope="session")
def role_files(ansible_playbook, tmp_path_factory) -> dict[bool, dict[str, tuple[str, str]]]:
    """path -> (mode, content) of every file the role writes on Amazon Linux 2023, for IPv6 on
    and off, as the role's own tasks render them: validate.yml, then files.yml in check mode,
    which writes nothing here and ends the play before the reload handler."""
    out = tmp_path_factory.mktemp("role-files")
    # Amazon Linux 2023's facts, in place of gathering this machine's.
    facts = {"distribution": "Amazon", "distribution_major_version": "2023", "distribution_version": "2023"}
    tasks = [{"ansible.builtin.set_fact": {**facts, "cacheable": True}}]
    for ipv6 in (True, False):
        tasks += [
            {
                "ansible.builtin.include_role": {"name": "ecs_imds_block", "tasks_from": step},
                "vars": {"ecs_imds_block_ipv6": ipv6},
            }
            for step in ("validate.yml", "ecs_config.yml", "files.yml")
        ]
        tasks.append(
            {
                "ansible.builtin.copy": {
                    "content": "{{ ecs_imds_block__files | to_json }}",
                    "dest": f"{out}/{ipv6}.json",
                },
                "check_mode": False,
            }
        )
    tasks.append({"ansible.builtin.meta": "end_play"})
    play = {"hosts": "localhost", "connection": "local", "gather_facts": False, "tasks": tasks}
    (out / "play.yml").write_text(json.dumps([play]))
    env = {
        **os.environ,
        "ANSIBLE_LOCAL_TEMP": str(out / "tmp"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_ROLES_PATH": str(ROLE.parent),
    }
    result = subprocess.run(
        [
            ansible_playbook,
            "-i",
            "localhost,",
            "--check",
            "-e",
            f"ansible_python_interpreter={sys.executable}",
            out / "play.yml",
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    assert result.returncode == 0, f"ansible-playbook failed:\n{result.stdout}\n{result.stderr}"
    rendered = {ipv6: json.loads((out / f"{ipv6}.json").read_text()) for ipv6 in (True, False)}
    # ecs.config is the user data's last part's, and ecs.service's drop-in's, not the boothook's.
    for specs in rendered.values():
        (ecs_config,) = [spec for spec in specs if spec["path"] == "/etc/ecs/ecs.config"]
        assert ecs_config["merge"] == "ecs_config" and "owner" not in ecs_config
        specs.remove(ecs_config)
    assert all(spec["owner"] == spec["group"] == "root" for specs in rendered.values() for spec in specs)
    return {
        ipv6: {
            spec["path"]: ("merge" if spec.get("merge") else spec["mode"], spec["content"]) for spec in specs
        }
        for ipv6, specs in rendered.items()
    }


@pytest.mark.parametrize("ipv6", [True, False], ids=["ipv6", "no-ipv6"])
def test_boothook_writes_exactly_the_files_the_role_writes(role_files, ipv6):
    written = heredocs(build_user_data("prod", None, ipv6=ipv6))
    assert written == role_files[ipv6]


@pytest.mark.parametrize("ipv6", [True, False], ids=["ipv6", "no-ipv6"])
def test_boothook_dropins_are_what_the_role_renders(role_files, ipv6):
    dropins = {path: text for path, (_, text) in role_files[ipv6].items() if path.startswith("/etc/systemd/")}
    assert len(dropins) == (4 if ipv6 else 3)
    assert boothook.render_dropins(ipv6) == dropins


def test_boothook_without_ipv6_leaves_ipv6_alone():
    data = build_user_data("prod", None, ipv6=False)
    assert sorted(heredocs(data)) == [
        "/etc/sysconfig/iptables",
        "/etc/systemd/system/docker.service.d/50-ecs-imds-block.conf",
        "/etc/systemd/system/ecs.service.d/50-ecs-imds-block.conf",
        "/etc/systemd/system/iptables.service.d/50-ecs-imds-block.conf",
        "/usr/local/lib/ecs-imds-block/ecs_imds_block_merge.py",
        "/usr/local/sbin/ecs-imds-block",
    ]
    assert "/usr/local/sbin/ecs-imds-block apply 4 /etc/sysconfig/iptables ||" in boothook_script(data)
    assert "systemctl enable iptables.service ||" in boothook_script(data)


def test_boothook_loads_the_block_before_the_step_that_needs_the_network_and_is_valid_shell(tmp_path):
    script = boothook_script(build_user_data("prod", None))
    head = script.split("\n", 3)
    assert head[:3] == ["#cloud-boothook", "#!/bin/sh", head[2]]
    order = [
        "put /usr/local/sbin/ecs-imds-block 0755",
        "put /etc/systemd/system/docker.service.d/50-ecs-imds-block.conf 0644",
        "/usr/local/sbin/ecs-imds-block merge 4 /etc/sysconfig/iptables",
        "/usr/local/sbin/ecs-imds-block merge 6 /etc/sysconfig/ip6tables",
        "systemctl daemon-reload\n",
        "/usr/local/sbin/ecs-imds-block apply 4 /etc/sysconfig/iptables 6 /etc/sysconfig/ip6tables"
        " || fail 'cannot load the block into the kernel'\n",
        "if ! rpm -q --quiet --whatprovides iptables-services; then\n",
        "install='dnf install -y iptables-services'",
        'fail "$install failed (see /var/log/ecs-imds-block-install.log); the block is loaded, '
        'and docker.service loads it at every start"',
        "systemctl enable iptables.service ip6tables.service ||",
    ]
    positions = [script.index(step) for step in order]
    assert positions == sorted(positions), "the network step comes last"
    preamble = script[: script.index("<<")]
    assert "\nset -u\n" in preamble and "set -e" not in preamble, "every step says what failed instead"
    (tmp_path / "boothook").write_text(script.split("\n", 1)[1])  # as cloud-init runs it
    subprocess.run(["sh", "-n", str(tmp_path / "boothook")], check=True)


def test_boothook_heredocs_write_exactly_those_bytes_through_a_real_shell(tmp_path):
    """The heredocs are quoted: the shell writes the content as it is, `$` and backslashes too."""
    script = boothook_script(build_user_data("prod", None))
    heredoc = r"^put \S+ 0\d{3} <<'ECS_IMDS_BLOCK_EOF'.*?^ECS_IMDS_BLOCK_EOF\n"
    blocks = re.findall(heredoc, script, re.M | re.S)
    root = tmp_path / "root"
    put = 'put() { mkdir -p "$ROOT$(dirname "$1")"; cat >"$ROOT$1"; }\n'
    subprocess.run(["sh", "-euc", put + "".join(blocks)], check=True, env={**os.environ, "ROOT": str(root)})
    for path, (mode, content) in heredocs(build_user_data("prod", None)).items():
        if mode != "merge":
            assert (root / path.lstrip("/")).read_text() == content, path


def test_ecs_config_part_merges_cluster_and_awsvpc_block(tmp_path):
    script = parts(build_user_data("prod-blue_2", None))[-1].get_payload(decode=True).decode()
    assert "set -eu\n" in script
    command = (
        "/usr/local/sbin/ecs-imds-block ecs-config /etc/ecs/ecs.config "
        "ECS_CLUSTER=prod-blue_2 ECS_AWSVPC_BLOCK_IMDS=true\n"
    )
    assert script.endswith(command)
    # Run through the role's loader and merge against a scratch ecs.config that says otherwise.
    config = tmp_path / "ecs.config"
    config.write_text("ECS_LOGLEVEL=info\nECS_AWSVPC_BLOCK_IMDS=false")
    local = script.replace("/usr/local/sbin/ecs-imds-block", str(ROLE / "files" / "ecs-imds-block"))
    env = {**os.environ, "ECS_IMDS_BLOCK_MERGE": str(ROLE / "module_utils" / "ecs_imds_block_merge.py")}
    subprocess.run(["sh", "-c", local.replace("/etc/ecs/ecs.config", str(config))], check=True, env=env)
    assert config.read_text() == "ECS_LOGLEVEL=info\nECS_AWSVPC_BLOCK_IMDS=true\nECS_CLUSTER=prod-blue_2\n"


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
            "--allow-v6 has no effect with --no-ipv6: drop one of them",
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
        (gzip.compress(b"")[:-4], "old.txt: looks gzipped but does not decompress"),
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

CLOUD_INIT_PARSE = textwrap.dedent(
    """
    import base64, json, sys, tempfile
    from cloudinit import helpers, user_data

    scratch = tempfile.mkdtemp()
    paths = helpers.Paths({"cloud_dir": scratch + "/cloud", "run_dir": scratch + "/run"})
    with open(sys.argv[1], "rb") as handle:
        message = user_data.UserDataProcessor(paths).process(handle.read())
    print(json.dumps([
        [part.get_content_type(), part.get_filename(),
         base64.b64encode(part.get_payload(decode=True)).decode()]
        for part in message.walk() if not part.is_multipart()
    ]))
    """
)


def _apt_get(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    # The download runs as root into a folder _apt may not read: keep apt from warning about it.
    return subprocess.run(
        ["apt-get", "-q", "-o", "APT::Sandbox::User=root", *args], cwd=cwd, capture_output=True, text=True
    )


@pytest.fixture(scope="session")
def cloud_init(request) -> Path:
    """cloud-init's Python package, from Debian's `cloud-init` .deb unpacked (never installed) into
    the pytest cache; CLOUD_INIT_DEB may name a .deb that is already there."""
    cache = Path(request.config.cache.mkdir("cloud-init"))
    tree = cache / "root"
    dist = tree / "usr" / "lib" / "python3" / "dist-packages"
    if not (dist / "cloudinit" / "user_data.py").is_file():
        missing = [tool for tool in ("apt-get", "dpkg-deb") if not shutil.which(tool)]
        if missing:
            pytest.fail(f"the cloud-init test needs {' and '.join(missing)} (a Debian machine)")
        debs = [Path(os.environ["CLOUD_INIT_DEB"])] if os.environ.get("CLOUD_INIT_DEB") else []
        debs = debs or sorted(cache.glob("cloud-init_*.deb"))
        if not debs:
            download = _apt_get(["download", "cloud-init"], cache)
            if download.returncode:  # a fresh machine has no package lists yet
                update = _apt_get(["update"], cache)
                download = _apt_get(["download", "cloud-init"], cache) if update.returncode == 0 else update
            if download.returncode:
                pytest.fail(
                    "cannot get Debian's cloud-init package for the cloud-init test: "
                    f"`apt-get update && apt-get download cloud-init` (as root) failed:\n{download.stderr}"
                )
            debs = sorted(cache.glob("cloud-init_*.deb"))
        staging = cache / "root.partial"
        shutil.rmtree(staging, ignore_errors=True)
        subprocess.run(["dpkg-deb", "-x", str(debs[-1]), str(staging)], check=True)
        shutil.rmtree(tree, ignore_errors=True)
        staging.rename(tree)
    probe = subprocess.run(
        [sys.executable, "-c", "import cloudinit.user_data, cloudinit.helpers"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(dist)},
    )
    if probe.returncode:
        error = (probe.stderr.strip().splitlines() or ["no message"])[-1]
        pytest.fail(
            f"cloud-init's user-data parser does not import under {sys.executable}: {error}. "
            "It needs the Python packages requests and PyYAML (both in this project's dev extras)"
        )
    return dist


def cloud_init_parts(cloud_init: Path, data: bytes, tmp_path: Path) -> list[tuple[str, str, bytes]]:
    (tmp_path / "user-data").write_bytes(data)
    (tmp_path / "parse.py").write_text(CLOUD_INIT_PARSE)
    result = subprocess.run(
        [sys.executable, str(tmp_path / "parse.py"), str(tmp_path / "user-data")],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(cloud_init)},
        cwd=tmp_path,
    )
    assert result.returncode == 0, f"cloud-init could not process the user data:\n{result.stderr}"
    return [(ctype, name, base64.b64decode(payload)) for ctype, name, payload in json.loads(result.stdout)]


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
        (gzip.compress(SCRIPT), [("text/x-shellscript", "existing-user-data", SCRIPT)]),
    ],
    ids=["none", "script", "cloud-config", "mime", "gzip"],
)
def test_cloud_init_reads_the_parts_in_order(cloud_init, tmp_path, existing, theirs):
    data = build_user_data("prod", existing)
    seen = cloud_init_parts(cloud_init, data, tmp_path)
    ours = parts(data)
    assert seen == [
        ("text/cloud-boothook", BOOTHOOK[1], gzip.decompress(ours[0].get_payload(decode=True))),
        *theirs,
        (*ECS_CONFIG, ours[-1].get_payload(decode=True)),
    ]
