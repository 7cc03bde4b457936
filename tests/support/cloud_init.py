# Copyright: the ecs-imds-golden authors
# Apache License 2.0
"""cloud-init's own code, run on generated user data: Debian's `cloud-init` package unpacked
(never installed), its user-data parser, and its Init and final stages booted in a container
of the offline base image with no network. And, for real boots, the NoCloud seed of a host
container of ecs-imds-debian12-cloud (Debian 12 with Debian's cloud-init installed).
"""

from __future__ import annotations

import base64
import fcntl
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import textwrap
import uuid
from pathlib import Path

import pytest
import yaml

ROLE = Path(__file__).resolve().parents[2] / "roles" / "ecs_imds_block"

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


def unpack(cache: Path) -> Path:
    """cloud-init's Python package, from Debian's `cloud-init` .deb unpacked (never installed) into
    ``cache``; CLOUD_INIT_DEB may name a .deb that is already there."""
    tree = cache / "root"
    dist = tree / "usr" / "lib" / "python3" / "dist-packages"
    # Test workers run side by side: one downloads and unpacks, the others wait for it.
    with (cache / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (dist / "cloudinit" / "user_data.py").is_file():
            _unpack(cache, tree)
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


def _unpack(cache: Path, tree: Path) -> None:
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


def parse(cloud_init: Path, data: bytes, tmp_path: Path) -> list[tuple[str, str, bytes]]:
    """The parts of ``data`` as cloud-init's own UserDataProcessor makes them: type, name, payload."""
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


# Runs inside the container. The host program and its configuration come from the repository
# and golden-ami: the boothook installs these same bytes (test_userdata checks that). The boothook
# itself is placed by cloud-init's boothook handler, which then calls subp.subp on it: that one
# call is recorded, not run (what the boothook does is shown by real boots, in
# tests/test_boothook_host.py; here only its place in the order matters). Every other command
# runs.
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
    os.makedirs("/etc/ecs-imds-block")
    shutil.copy("/in/ecs-imds-block", "/usr/local/sbin/ecs-imds-block")
    os.chmod("/usr/local/sbin/ecs-imds-block", 0o755)
    shutil.copy("/in/config.json", "/etc/ecs-imds-block/config.json")

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
    # Bytes: YAML's !!binary, which cloud-init reads back as the gzipped bytes it was given.
    cfg["datasource"] = {"None": {"userdata_raw": user_data}}
    return yaml.safe_dump(cfg)


def boot(
    cloud_init_dist: Path, image: str, work: Path, user_data: bytes, exec_start_pre: list[str], config: str
) -> dict:
    """cloud-init's init and final stages on ``user_data``, then ``exec_start_pre`` (ecs.service's
    ExecStartPre), in a container with no network, the host program installed with ``config``;
    returns the driver's report."""
    inputs, stubs, out = work / "in", work / "stubs", work / "out"
    for folder in (inputs, stubs, out):
        folder.mkdir()
    (inputs / "driver.py").write_text(DRIVER)
    (inputs / "cloud.cfg").write_text(cloud_cfg(cloud_init_dist, user_data))
    (inputs / "case.json").write_text(json.dumps({"exec_start_pre": exec_start_pre}))
    (inputs / "ecs-imds-block").write_bytes((ROLE / "files" / "ecs-imds-block").read_bytes())
    (inputs / "config.json").write_text(config)
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


# --- real boots: a host container of ecs-imds-debian12-cloud --------------------------------

SEED = "var/lib/cloud/seed/nocloud"
HOST_CFG = "etc/cloud/cloud.cfg.d/90-ecs-imds-test.cfg"
# The test host's own cloud-init settings, beside Debian's packaged cloud.cfg, valid against
# cloud-init's schema: the NoCloud seed only, so that no datasource looks for a metadata service on
# the network (this machine has a real one); the network left as Docker made it (no renderer
# rewrites eth0); no locale (the image has no locales package, so cc_locale would fail). The
# image has no SSH server either: cc_ssh warns that it cannot make host keys, and goes on.
HOST_CFG_TEXT = (
    "#cloud-config\n"
    "# Written by tests/support/cloud_init.py: a test host's cloud-init settings.\n"
    "datasource_list: [ NoCloud ]\n"
    "network: {config: disabled}\n"
    'locale: "false"\n'
)


def seed(container: str, user_data: bytes, instance_id: str) -> None:
    """Make the next boot of ``container`` an instance's first boot with ``user_data``: the NoCloud
    seed (user-data as given, gzipped or not; meta-data with ``instance_id``) and HOST_CFG_TEXT
    put in place, and cloud-init's state and logs cleared (`cloud-init clean --logs`)."""
    meta_data = f"instance-id: {instance_id}\nlocal-hostname: {container}\n".encode()
    files = [(f"{SEED}/user-data", user_data, 0o600), (f"{SEED}/meta-data", meta_data, 0o644)]
    files.append((HOST_CFG, HOST_CFG_TEXT.encode(), 0o644))
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for folder in (SEED.rsplit("/", 1)[0], SEED):  # /var/lib/cloud and cloud.cfg.d are there
            info = tarfile.TarInfo(folder)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        for path, content, mode in files:
            info = tarfile.TarInfo(path)
            info.size, info.mode = len(content), mode
            tar.addfile(info, io.BytesIO(content))
    copy = subprocess.run(
        ["docker", "cp", "-", f"{container}:/"], input=buffer.getvalue(), capture_output=True
    )
    assert copy.returncode == 0, f"cannot place the NoCloud seed: {copy.stderr.decode()}"
    clean = subprocess.run(
        ["docker", "exec", container, "cloud-init", "clean", "--logs"], capture_output=True
    )
    assert clean.returncode == 0, f"cloud-init clean --logs failed: {clean.stderr.decode()}"
