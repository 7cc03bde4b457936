"""The order in which cloud-init runs the parts of `golden-ami user-data`, with cloud-init's own code.

cloud-init stores each shell-script part under its file name in the instance's scripts directory
and runs that directory sorted by name, not in the order of the parts. So our
`ecs-imds-block-ecs-config.sh` runs before the team's `existing-user-data`, and a team script
that rewrites ecs.config removes our line; ecs.service's drop-in (its ExecStartPre) puts it back
just before the agent starts.

Each case boots the user data through Debian's cloud-init package (unpacked by the `cloud_init`
fixture of test_userdata.py) in a throwaway container of the offline base image, with no
network: the real Init stage (DataSourceNone serves the user data; UserDataProcessor and the
default part handlers place the parts), then the package's own module sections, cut down to
write-files (init stage) and scripts-user (final stage, `subp.runparts`). Then the exact
ExecStartPre line of the role's rendered ecs.service drop-in runs, and ecs.config is read as
the ECS agent reads it (`effective_ecs_config`).
"""

from __future__ import annotations

import email
import gzip
import json
import shlex
import subprocess
import textwrap
import uuid
from pathlib import Path

import pytest
import yaml
from ecs_imds_block_merge import effective_ecs_config
from test_userdata import cloud_init  # noqa: F401 - the session fixture, registered by this import

from golden_ami import boothook, userdata
from golden_ami.userdata import build_user_data

pytestmark = pytest.mark.docker

ROLE = Path(__file__).resolve().parents[1] / "roles" / "ecs_imds_block"
ECS_DROPIN = "/etc/systemd/system/ecs.service.d/50-ecs-imds-block.conf"
LOADER = "/usr/local/sbin/ecs-imds-block"
OURS = userdata.ECS_CONFIG_NAME
THEIRS = userdata.EXISTING_NAME
BOOTHOOK = userdata.BOOTHOOK_NAME

OVERWRITE = b"#!/bin/sh\necho ECS_CLUSTER=team > /etc/ecs/ecs.config\n"
APPEND = b"#!/bin/sh\necho ECS_ENABLE_TASK_IAM_ROLE=true >> /etc/ecs/ecs.config\n"
WRITE_FILES = (
    b"#cloud-config\n"
    b"write_files:\n"
    b"  - path: /etc/ecs/ecs.config\n"
    b"    content: |\n"
    b"      ECS_CLUSTER=team\n"
    b"      ECS_LOGLEVEL=debug\n"
)

# Runs inside the container. The loader and its merge come from the repository: on the golden AMI
# they are installed, elsewhere the boothook writes these same bytes (test_userdata checks that).
# The boothook itself is placed by cloud-init's boothook handler, which then calls subp.subp on
# it: that one call is recorded, not run (what the boothook does is covered by test_userdata and
# the Molecule scenarios; here only its place in the order matters). Every other command runs.
DRIVER = textwrap.dedent(
    """
    # cloudinit.importer calls importlib.util.find_spec without importing importlib.util; the
    # real requests package imports it first, the stand-in below does not.
    import importlib.util  # noqa: F401
    import json
    import logging
    import os
    import shutil
    import subprocess
    import sys

    from cloudinit import log, sources, stages, subp
    from cloudinit.config.modules import Modules
    from cloudinit.settings import PER_INSTANCE

    ECS_CONFIG = "/etc/ecs/ecs.config"
    case = json.load(open("/in/case.json"))

    log.setupBasicLogging(logging.DEBUG)
    problems = []
    class Problems(logging.Handler):
        def emit(self, record):
            problems.append(self.format(record))
    handler = Problems(logging.WARNING)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)

    os.makedirs("/etc/cloud")
    shutil.copy("/in/cloud.cfg", "/etc/cloud/cloud.cfg")
    os.makedirs("/etc/ecs")  # ecs-init's directory, with no ecs.config in it yet
    os.makedirs("/usr/local/lib/ecs-imds-block")
    shutil.copy("/in/ecs-imds-block", "/usr/local/sbin/ecs-imds-block")
    os.chmod("/usr/local/sbin/ecs-imds-block", 0o755)
    shutil.copy("/in/ecs_imds_block_merge.py", "/usr/local/lib/ecs-imds-block/ecs_imds_block_merge.py")
    os.chmod("/usr/local/lib/ecs-imds-block/ecs_imds_block_merge.py", 0o644)

    def ecs_config():
        try:
            with open(ECS_CONFIG, "rb") as handle:
                return handle.read().decode()
        except FileNotFoundError:
            return None

    timeline = []
    commands = []
    real_subp = subp.subp
    instance = None

    def spy(args, *rest, **kwargs):
        path = args[0] if isinstance(args, (list, tuple)) else args
        where = os.path.relpath(os.path.realpath(path), instance) if instance else path
        if where.startswith("boothooks/"):
            timeline.append(["boothook (not run)", os.path.basename(where), ecs_config()])
            return "", ""
        result = real_subp(args, *rest, **kwargs)
        if where.startswith("scripts/"):
            timeline.append(["script", os.path.basename(where), ecs_config()])
        else:
            commands.append(args)  # cloud-init's own probes (systemd-detect-virt, ...)
        return result

    subp.subp = spy  # runparts and the boothook handler both call it through the module

    # `cloud-init init`: the Init stage, without the network and hostname steps.
    init = stages.Init(ds_deps=[sources.DEP_FILESYSTEM, sources.DEP_NETWORK])
    init.read_cfg()
    init.initialize()
    init.fetch(existing="trust")
    init.instancify()
    instance = os.path.realpath(init.paths.get_ipath_cur())  # instances/<id>, not the link
    init.update()
    init.consume_data(PER_INSTANCE)
    timeline.append(["part handlers", "consume_data", ecs_config()])
    placed = {
        kind: {
            name: open(os.path.join(instance, kind, name)).read()
            for name in sorted(os.listdir(os.path.join(instance, kind)))
        }
        for kind in ("boothooks", "scripts")
        if os.path.isdir(os.path.join(instance, kind))
    }

    # `cloud-init modules --mode config` and `--mode final` run in processes of their own, each
    # with a new Init that reads the cached datasource; one Modules object here runs all three.
    mods = Modules(init, [])
    failures = {}
    for section in ("cloud_init_modules", "cloud_config_modules", "cloud_final_modules"):
        ran, failed = mods.run_section(section)
        timeline.append([section, ran, ecs_config()])
        if failed:
            failures[section] = [[name, repr(error)] for name, error in failed]

    # The agent's unit: systemd runs ExecStartPre with its own small environment.
    pre = subprocess.run(
        case["exec_start_pre"],
        env={"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin"},
        capture_output=True,
        text=True,
    )
    timeline.append(["ExecStartPre", pre.returncode, ecs_config()])

    with open("/out/report.json", "w") as out:
        json.dump(
            {
                "timeline": timeline,
                "placed": placed,
                "failures": failures,
                "commands": commands,
                "problems": problems,
                "exec_start_pre_stderr": pre.stderr,
            },
            out,
        )
    """
)

# The base image's python3 lacks three packages that cloud-init imports at the top of modules on
# this code path but uses only elsewhere: requests (cloudinit.url_helper; used to fetch URLs, and
# this user data has no #include and the container no network), configobj (network-config
# parsers of cloudinit.distros), jsonpatch (#cloud-config-jsonp parts only). These stand-ins
# import, and fail loudly if anything calls into them.
UNUSED = textwrap.dedent(
    """
    def module(name):
        made = {}

        def attribute(attr):
            if attr.startswith("__"):
                raise AttributeError(attr)

            def __init__(self, *args, **kwargs):
                raise RuntimeError(f"{name}.{attr} is a stand-in: this code path must not use it")

            return made.setdefault(attr, type(attr, (Exception,), {"__init__": __init__}))

        return attribute
    """
)
STUBS = {
    "_unused.py": UNUSED,
    "configobj.py": "import _unused\n__getattr__ = _unused.module('configobj')\n",
    "jsonpatch.py": "import _unused\n__getattr__ = _unused.module('jsonpatch')\n",
    "requests/__init__.py": (
        "import _unused\nfrom . import exceptions\n__getattr__ = _unused.module('requests')\n"
    ),
    "requests/exceptions.py": "import _unused\n__getattr__ = _unused.module('requests.exceptions')\n",
}


def exec_start_pre() -> list[str]:
    """The argv of the ExecStartPre line of the role's rendered ecs.service drop-in."""
    dropin = boothook.render_dropins(True)[ECS_DROPIN]
    lines = [line for line in dropin.splitlines() if line.startswith("ExecStartPre=")]
    assert len(lines) == 1, dropin
    argv = shlex.split(lines[0].removeprefix("ExecStartPre="))
    assert argv[0] == LOADER, f"the drop-in's ExecStartPre is not a plain run of the loader: {lines[0]}"
    return argv


def cloud_cfg(cloud_init_dist: Path, user_data: bytes) -> str:
    """Debian's packaged /etc/cloud/cloud.cfg, its module lists cut down to write-files and
    scripts-user, with DataSourceNone serving ``user_data``."""
    packaged = cloud_init_dist.parents[3] / "etc" / "cloud" / "cloud.cfg"
    cfg = yaml.safe_load(packaged.read_text())
    keep = {
        "cloud_init_modules": ["write-files"],
        "cloud_config_modules": [],
        "cloud_final_modules": ["scripts-user"],
    }
    for section, names in keep.items():
        assert set(names) <= set(cfg[section]), f"the package's {section} lacks {names}"
        cfg[section] = names
    cfg["datasource_list"] = ["None"]
    cfg["datasource"] = {"None": {"userdata_raw": user_data.decode("ascii")}}
    return yaml.safe_dump(cfg)


def boot(cloud_init_dist: Path, image: str, work: Path, user_data: bytes) -> dict:
    """cloud-init's init and final stages on ``user_data``, then ecs.service's ExecStartPre, in a
    container with no network; returns the driver's report."""
    inputs, stubs, out = work / "in", work / "stubs", work / "out"
    for folder in (inputs, stubs, out):
        folder.mkdir()
    (inputs / "driver.py").write_text(DRIVER)
    (inputs / "cloud.cfg").write_text(cloud_cfg(cloud_init_dist, user_data))
    (inputs / "case.json").write_text(json.dumps({"exec_start_pre": exec_start_pre()}))
    (inputs / "ecs-imds-block").write_bytes((ROLE / "files" / "ecs-imds-block").read_bytes())
    merge = ROLE / "module_utils" / "ecs_imds_block_merge.py"
    (inputs / "ecs_imds_block_merge.py").write_bytes(merge.read_bytes())
    for name, text in STUBS.items():
        (stubs / name).parent.mkdir(parents=True, exist_ok=True)
        (stubs / name).write_text(text)
    # The base image's python3 has no PyYAML, which cloud-init needs: the package of the
    # interpreter running pytest is lent read-only (pure Python if its C part does not load).
    pyyaml = Path(yaml.__file__).parent
    name = f"ecs-imds-test-order-{uuid.uuid4().hex[:12]}"
    command = [
        "docker", "run", "--rm", "--name", name, "--pull", "never", "--network", "none",
        "-v", f"{cloud_init_dist}:/opt/cloud-init:ro",
        "-v", f"{pyyaml}:/opt/pydeps/yaml:ro",
        "-v", f"{stubs}:/opt/stubs:ro",
        "-v", f"{inputs}:/in:ro",
        "-v", f"{out}:/out",
        "-e", "PYTHONPATH=/opt/cloud-init:/opt/pydeps:/opt/stubs",
        "--entrypoint", "python3", image, "/in/driver.py",
    ]  # fmt: skip
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)
        pytest.fail("cloud-init in the container took over 120 s")
    except OSError as exc:
        pytest.fail(f"cannot run docker: {exc}")
    if result.returncode or not (out / "report.json").exists():
        pytest.fail(f"cloud-init in the container failed ({result.returncode}):\n{result.stderr[-6000:]}")
    report = json.loads((out / "report.json").read_text())
    report["log"] = result.stderr
    return report


@pytest.fixture(scope="module")
def booted(cloud_init, docker_image, tmp_path_factory):  # noqa: F811 - the imported fixture
    """case -> report, each case booted once."""
    done: dict[str, dict] = {}

    def run(case: str) -> dict:
        if case not in done:
            data = build_user_data("prod", CASES[case][0])
            done[case] = boot(cloud_init, docker_image, tmp_path_factory.mktemp(case), data)
        return done[case]

    return run


def leaves(data: bytes) -> list[email.message.Message]:
    return [leaf for leaf in email.message_from_bytes(data).walk() if not leaf.is_multipart()]


def payload(data: bytes, name: str) -> bytes:
    [part] = [leaf for leaf in leaves(data) if leaf.get_filename() == name]
    return part.get_payload(decode=True)


OURS_SET = "ECS_CLUSTER=prod\nECS_AWSVPC_BLOCK_IMDS=true\n"
CASES = {
    # case: (team user data, timeline, what the agent reads before ExecStartPre, and after)
    "overwrite": (
        OVERWRITE,
        [
            ["boothook (not run)", BOOTHOOK, None],
            ["part handlers", "consume_data", None],
            ["cloud_init_modules", [], None],
            ["cloud_config_modules", [], None],
            ["script", OURS, OURS_SET],
            ["script", THEIRS, "ECS_CLUSTER=team\n"],  # ours is gone
            ["cloud_final_modules", ["scripts-user"], "ECS_CLUSTER=team\n"],
            ["ExecStartPre", 0, "ECS_CLUSTER=team\nECS_AWSVPC_BLOCK_IMDS=true\n"],
        ],
        {"ECS_CLUSTER": "team"},
        {"ECS_CLUSTER": "team", "ECS_AWSVPC_BLOCK_IMDS": "true"},
    ),
    "append": (
        APPEND,
        [
            ["boothook (not run)", BOOTHOOK, None],
            ["part handlers", "consume_data", None],
            ["cloud_init_modules", [], None],
            ["cloud_config_modules", [], None],
            ["script", OURS, OURS_SET],
            ["script", THEIRS, OURS_SET + "ECS_ENABLE_TASK_IAM_ROLE=true\n"],
            ["cloud_final_modules", ["scripts-user"], OURS_SET + "ECS_ENABLE_TASK_IAM_ROLE=true\n"],
            ["ExecStartPre", 0, OURS_SET + "ECS_ENABLE_TASK_IAM_ROLE=true\n"],
        ],
        {"ECS_CLUSTER": "prod", "ECS_AWSVPC_BLOCK_IMDS": "true", "ECS_ENABLE_TASK_IAM_ROLE": "true"},
        {"ECS_CLUSTER": "prod", "ECS_AWSVPC_BLOCK_IMDS": "true", "ECS_ENABLE_TASK_IAM_ROLE": "true"},
    ),
    "write-files": (
        WRITE_FILES,
        [
            ["boothook (not run)", BOOTHOOK, None],
            ["part handlers", "consume_data", None],
            ["cloud_init_modules", ["write-files"], "ECS_CLUSTER=team\nECS_LOGLEVEL=debug\n"],
            ["cloud_config_modules", [], "ECS_CLUSTER=team\nECS_LOGLEVEL=debug\n"],
            # Every assignment of a key we set is rewritten in place: --cluster prod wins.
            ["script", OURS, "ECS_CLUSTER=prod\nECS_LOGLEVEL=debug\nECS_AWSVPC_BLOCK_IMDS=true\n"],
            [
                "cloud_final_modules",
                ["scripts-user"],
                "ECS_CLUSTER=prod\nECS_LOGLEVEL=debug\nECS_AWSVPC_BLOCK_IMDS=true\n",
            ],
            ["ExecStartPre", 0, "ECS_CLUSTER=prod\nECS_LOGLEVEL=debug\nECS_AWSVPC_BLOCK_IMDS=true\n"],
        ],
        {"ECS_CLUSTER": "prod", "ECS_LOGLEVEL": "debug", "ECS_AWSVPC_BLOCK_IMDS": "true"},
        {"ECS_CLUSTER": "prod", "ECS_LOGLEVEL": "debug", "ECS_AWSVPC_BLOCK_IMDS": "true"},
    ),
}


def agent_reads(ecs_config: str) -> dict[str, str]:
    return {key.decode(): value.decode() for key, value in effective_ecs_config(ecs_config.encode()).items()}


@pytest.mark.parametrize("case", list(CASES))
def test_cloud_init_order_then_the_agents_start(booted, case):
    """Each command cloud-init runs, in its order, with ecs.config after it; then what the agent
    reads after user data (cloud-final's end) and after ecs.service's ExecStartPre."""
    _, timeline, before, after = CASES[case]
    report = booted(case)
    assert report["failures"] == {}, report["log"][-6000:]
    assert report["problems"] == [], report["log"][-6000:]
    assert report["timeline"] == timeline, report["log"][-6000:]
    assert timeline[-2][0] == "cloud_final_modules"
    assert agent_reads(timeline[-2][2]) == before
    assert timeline[-1][:2] == ["ExecStartPre", 0]
    assert agent_reads(timeline[-1][2]) == after


@pytest.mark.parametrize("case", list(CASES))
def test_the_part_handlers_place_the_parts(booted, case):
    """The boothook in boothooks/ (its first line stripped, as cloud-init runs it), each shell
    script part under its file name in scripts/, and nothing else there."""
    team = CASES[case][0]
    data = build_user_data("prod", team)
    placed = booted(case)["placed"]
    hook = gzip.decompress(payload(data, BOOTHOOK)).decode()
    assert hook.startswith("#cloud-boothook\n#!/bin/sh\n")
    assert placed["boothooks"] == {BOOTHOOK: hook.removeprefix("#cloud-boothook\n")}
    scripts = {OURS: payload(data, OURS).decode()}
    if team.startswith(b"#!"):
        scripts[THEIRS] = team.decode()
    assert placed["scripts"] == scripts


def test_the_scripts_run_in_name_order_not_part_order(booted):
    """The team's script is the earlier part, and runs last: sorted() puts "ecs-" before "exi"."""
    data = build_user_data("prod", OVERWRITE)
    assert [leaf.get_filename() for leaf in leaves(data)] == [BOOTHOOK, THEIRS, OURS]
    ran = [name for kind, name, _ in booted("overwrite")["timeline"] if kind == "script"]
    assert ran == [OURS, THEIRS]
    assert sorted([THEIRS, OURS]) == ran


def test_without_the_dropin_an_overwriting_script_removes_the_block(booted):
    """In the overwrite case it is ecs.service's ExecStartPre that holds the block: when
    cloud-final ends, the agent would read no ECS_AWSVPC_BLOCK_IMDS at all."""
    timeline = booted("overwrite")["timeline"]
    assert timeline[-2][0] == "cloud_final_modules"
    assert "ECS_AWSVPC_BLOCK_IMDS" not in agent_reads(timeline[-2][2])
    assert timeline[-1][0] == "ExecStartPre"
    assert agent_reads(timeline[-1][2])["ECS_AWSVPC_BLOCK_IMDS"] == "true"
