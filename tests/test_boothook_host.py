# Copyright: the ecs-imds-golden authors
# Apache License 2.0
"""`golden-ami user-data` on real boots: a host container of ecs-imds-debian12-cloud (Debian 12
with Debian's cloud-init 22.4, systemd as PID 1, Docker inside) and the EC2 network fixture of
molecule/fixture/prepare.yml (a fake IMDS in the `imds` namespace on both families, two user
networks, ecs-init's rules, and a stand-in ecs.service that writes what it was handed to
/run/ecs-agent.env). cloud-init reads the user data from a NoCloud seed, as it reads EC2's.

The user data is `golden-ami user-data --cluster prod --existing TEAM --allowed-cidr
172.31.250.0/24` (the fixture's allowlisted daemon network), run as a process, with TEAM a
platform team's 10 KB cloud-config: write_files of a few files, a runcmd that writes a marker,
and a runcmd that appends a setting to ecs.config.

Stood in for Amazon Linux 2023 (the boothook is made for it; tests/support/amazon-linux/):
- `rpm`: `rpm -q --quiet --whatprovides iptables-services` says installed once the package's
  units are in place;
- `dnf install -y iptables-services`: with the stand-in repository (/var/cache/ecs-imds-test/
  repo), it installs the package's files, /etc files it finds there kept (rpm's
  %config(noreplace): the package's default goes to FILE.rpmnew), and reloads systemd; without
  it, it fails as dnf does on a host that cannot reach Amazon Linux's repositories;
- the package's `iptables.service` and `ip6tables.service`, and `iptables.init` behind them
  (start: iptables-restore of /etc/sysconfig/iptables, which flushes each table it names; stop:
  every table flushed; save: iptables-save over the file). The program's drop-ins replace the
  units' start, reload and stop; the stand-in is what runs without them.
Not stood in: Debian's own iptables (nf_tables backend, as AL2023's), systemd, Docker and
cloud-init. What the fixture made for Debian is taken away before the first boot:
/etc/iptables (rules files Amazon Linux does not have) and /etc/ecs/ecs.config (a fresh
instance has none). The test host's cloud-init reads only the NoCloud seed, leaves the network
as Docker made it, and sets no locale (tests/support/cloud_init.py's HOST_CFG_TEXT).
Debian's cloud-final.service runs after multi-user.target, Amazon Linux's does not: the fixture's
ecs.service, after cloud-final.service as ecs-init's is, is wanted by cloud-init.target here, not
by multi-user.target (an ordering cycle on Debian).

Each boot is real: `docker restart` of the host container stops systemd (SIGRTMIN+3), the
network namespace and /run are new, systemd boots again and cloud-init runs its per-boot parts
(the boothook) again; its per-instance parts (write_files, runcmd, our script) ran at the first
boot only. Two hosts, one a scenario, each built, booted and removed by its one test (each test
walks its scenario's steps in order, on one host): the package step working (first boot, a
reboot, then an admin's `iptables-save` and five reboots), and failing (first boot, a reboot).
About 3 and 2 minutes on 2 cores, side by side under xdist (5 and 2 when the machine is busy).

The probes ask only the fixture's IMDS: no probe runs unless the route to the address goes to
`dev imds0`, the fixture's veth (this machine has a real metadata service).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from local_image.host import LocalHost, systemd_container
from local_image.make_image import FIXTURE, FIXTURE_VARS, playbook
from support.cloud_init import seed
from support.user_data import RUNCMD_LOG, boothook_script, ecs_config_script, team_cloud_config

from golden_ami import boothook
from golden_ami.userdata import BOOTHOOK_NAME, ECS_CONFIG_NAME

pytestmark = pytest.mark.docker

CLOUD_IMAGE = os.environ.get("CLOUD_IMAGE", "ecs-imds-debian12-cloud:latest")
PROBE_IMAGE = os.environ.get("PROBE_IMAGE", "ecs-imds-probe:latest")
INSTANCE_ID = "i-0fa4e1dc0ffee0001"  # molecule/fixture/group_vars/all/fixture.yml
ALLOWED = "172.31.250.0/24"  # the fixture's allowlisted daemon network (imds-allowed)
STANDINS = Path(__file__).resolve().parent / "support" / "amazon-linux"
REPO = "/var/cache/ecs-imds-test/repo"
PROGRAM = "/usr/local/sbin/ecs-imds-block"
FILES = {4: "/etc/sysconfig/iptables", 6: "/etc/sysconfig/ip6tables"}
TOOLS = {4: "iptables", 6: "ip6tables"}
BEGIN, END = "# BEGIN ecs_imds_block", "# END ecs_imds_block"
INSTANCE = f"/var/lib/cloud/instances/{INSTANCE_ID}"
BOOTHOOK_FAILURE = (
    "ecs-imds-block boothook: dnf install -y iptables-services failed (see "
    "/var/log/ecs-imds-block-install.log); the block is loaded, and docker.service loads it at every start"
)
BOOTHOOK_ERROR = f"util.py[WARNING]: Boothooks script {INSTANCE}/boothooks/{BOOTHOOK_NAME} execution error"


TEAM = team_cloud_config()  # 10 KB
TEAM_FILES = {entry["path"]: entry for entry in yaml.safe_load(TEAM)["write_files"]}


def user_data(work: Path) -> bytes:
    """`golden-ami user-data --cluster prod --existing TEAM --allowed-cidr 172.31.250.0/24`, run as
    a process with no AWS configuration."""
    (work / "team.yaml").write_bytes(TEAM)
    env = {"PATH": os.environ["PATH"], "HOME": str(work), "AWS_EC2_METADATA_DISABLED": "true"}
    argv = [sys.executable, "-m", "golden_ami.cli", "user-data", "--cluster", "prod"]
    argv += [
        "--existing",
        str(work / "team.yaml"),
        "--allowed-cidr",
        ALLOWED,
        "--output",
        str(work / "user-data"),
    ]
    result = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=work)
    assert result.returncode == 0, result.stderr
    return (work / "user-data").read_bytes()


# --- probes of the fixture's IMDS (tests/test_heal_host.py uses these too) -------------------


def probe(host: LocalHost, network: str, address: str) -> str:
    """An HTTP GET for the instance ID from a container on ``network``; what it printed."""
    script = (
        "printf 'GET /latest/meta-data/instance-id HTTP/1.0\\r\\nHost: probe\\r\\n\\r\\n'"
        f" | nc -w 3 {address} 80 2>&1; echo rc=$?"
    )
    argv = ["docker", "run", "--rm", f"--network={network}", PROBE_IMAGE, "sh", "-c", script]
    return host.run(*argv, check=False).stdout


def assert_routed_to_the_fixture(host: LocalHost, when: str) -> None:
    """Only the fixture's IMDS may ever be asked: its veth holds the route to both addresses."""
    for family, address in (("-4", "169.254.169.254"), ("-6", "fd00:ec2::254")):
        route = host.run("ip", family, "-o", "route", "get", address, check=False).stdout
        assert " dev imds0 " in route, f"{when}: {address} is not routed to the fixture: {route!r}"


def assert_blocked(host: LocalHost, when: str) -> None:
    """No container on the default bridge or on a user network reaches IMDS, over either family
    (refused: our reject); the allowlisted network and the host do, so the fixture answers."""
    assert_routed_to_the_fixture(host, when)
    for network, address in (
        ("bridge", "169.254.169.254"),
        ("bridge", "fd00:ec2::254"),
        ("imds-other", "169.254.169.254"),
    ):
        seen = probe(host, network, address)
        assert INSTANCE_ID not in seen and re.search("refused|reset", seen), (
            f"{when}: {network} {address}: {seen}"
        )
    seen = probe(host, "imds-allowed", "169.254.169.254")
    assert INSTANCE_ID in seen, f"{when}: the allowlisted network does not reach the fixture's IMDS: {seen}"
    for url in ("http://169.254.169.254", "http://[fd00:ec2::254]"):
        seen = host.run("curl", "-gsS", "--max-time", "5", f"{url}/latest/meta-data/instance-id", check=False)
        assert seen.stdout == INSTANCE_ID, (
            f"{when}: the host does not reach the fixture's IMDS at {url}: {seen}"
        )


def wait_for(host: LocalHost, *units: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = host.run("systemctl", "is-active", *units, check=False).stdout.split()
        if states == ["active"] * len(units):
            return
        time.sleep(1)
    status = host.run("systemctl", "status", "--no-pager", *units, check=False).stdout
    raise AssertionError(f"{units} did not start:\n{status}")


# --- the host --------------------------------------------------------------------------------


def put(container: str, files: list[tuple[str, bytes | str, int]]) -> None:
    """Copy (path, content, mode) into ``container``; content str: a symbolic link to it."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for path, content, mode in files:
            info = tarfile.TarInfo(path.lstrip("/"))
            info.mode = mode
            if isinstance(content, str):
                info.type, info.linkname = tarfile.SYMTYPE, content
                tar.addfile(info)
            else:
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
    done = subprocess.run(
        ["docker", "cp", "-", f"{container}:/"], input=buffer.getvalue(), capture_output=True
    )
    assert done.returncode == 0, done.stderr.decode()


def standins(container: str, repository: bool) -> None:
    """rpm and dnf in /usr/local/bin; with ``repository``, iptables-services in dnf's repository
    (modes as the package has them: git keeps only the executable bit)."""
    files = [(f"/usr/local/bin/{name}", (STANDINS / name).read_bytes(), 0o755) for name in ("rpm", "dnf")]
    package = STANDINS / "iptables-services"
    for path in sorted(p for p in package.rglob("*") if not p.is_dir()):
        inside = "/" + str(path.relative_to(package))
        mode = 0o755 if os.access(path, os.X_OK) else 0o600 if inside.startswith("/etc/") else 0o644
        content = os.readlink(path) if path.is_symlink() else path.read_bytes()
        files.append((f"{REPO}/iptables-services{inside}", content, mode))
    put(container, files if repository else files[:2])


def reboot(host: LocalHost) -> float:
    """A real reboot; the seconds until cloud-init, Docker, the fixture and the agent are up."""
    started = time.monotonic()
    subprocess.run(["docker", "restart", host.name], check=True, capture_output=True)
    host.wait_for_boot(180)
    status = host.run("cloud-init", "status", "--wait", check=False).stdout
    assert "status: done" in status, f"cloud-init did not finish: {status}\n{evidence(host)}"
    wait_for(host, "docker.service", "fixture-imds.service", "ecs.service")
    return time.monotonic() - started


def evidence(host: LocalHost) -> str:
    """What a failed assertion shows: this boot's journal of our units and cloud-init's logs."""
    journal = host.run("journalctl", "-b", "--no-pager", "-o", "short-monotonic", check=False).stdout
    ours = [
        line
        for line in journal.splitlines()
        if re.search("ecs-imds|cloud-init|iptables|docker|ecs.service", line)
    ]
    log = host.run(
        "sh", "-c", "grep -n -E 'WARNING|ERROR|Running command' /var/log/cloud-init.log", check=False
    )
    output = host.run("tail", "-n", "40", "/var/log/cloud-init-output.log", check=False).stdout
    failed = host.run("systemctl", "--failed", "--no-legend", check=False).stdout
    return (
        f"--- journalctl -b (ours)\n{chr(10).join(ours[-80:])}\n--- cloud-init.log\n{log.stdout[-6000:]}\n"
        f"--- cloud-init-output.log\n{output}\n--- failed units\n{failed}"
    )


@dataclass
class Booted:
    """A host booted with the user data, and what the test knows of it."""

    host: LocalHost
    data: bytes
    working: bool
    boots: int = 1


@contextlib.contextmanager
def booted_host(tmp_path: Path, repository: bool) -> Iterator[Booted]:
    """A host built as the module docstring says, booted once with the user data; removed after."""
    data = user_data(tmp_path)
    with systemd_container(CLOUD_IMAGE, prefix="ecs-imds-userdata") as host:
        log = tmp_path / "prepare.log"
        if playbook(host.name, FIXTURE / "prepare.yml", [f"@{FIXTURE_VARS}"], log):
            pytest.fail(f"the fixture could not be built; see {log}:\n{log.read_text()[-3000:]}")
        host.run("rm", "-rf", "/etc/iptables", "/etc/ecs/ecs.config")
        # Debian's cloud-final.service runs after multi-user.target (Amazon Linux's does not): the
        # agent, after cloud-final as ecs-init's unit is, would be an ordering cycle there.
        host.run("systemctl", "disable", "--quiet", "ecs.service")
        host.run("systemctl", "add-wants", "cloud-init.target", "ecs.service")
        standins(host.name, repository)
        seed(host.name, data, INSTANCE_ID)
        print(f"first boot with the user data: {reboot(host):.0f} s")
        yield Booted(host, data, repository)


@pytest.fixture(scope="session", autouse=True)
def images() -> None:
    for image in (CLOUD_IMAGE, PROBE_IMAGE):
        found = subprocess.run(["docker", "image", "inspect", image], capture_output=True)
        if found.returncode:
            pytest.fail(f"Docker with {image} is required (scripts/build-base-images debian12-cloud)")


# --- what holds at every boot ------------------------------------------------------------------


def agent_env(host: LocalHost) -> dict[str, str]:
    text = host.run("cat", "/run/ecs-agent.env").stdout
    return dict(line.split("=", 1) for line in text.splitlines())


def live(host: LocalHost, family: int) -> list[str]:
    return host.run(TOOLS[family], "-w", "-S").stdout.splitlines()


def assert_boot(booted: Booted, when: str) -> None:
    """What holds after every boot of a user-data host, with the package step working or not."""
    host, data = booted.host, booted.data
    why = evidence(host)
    # The team's parts ran, once per instance: its files are there, its runcmd ran once.
    for path, entry in TEAM_FILES.items():
        assert host.run("cat", path).stdout == entry["content"], f"{when}: {path}"
        mode = host.run("stat", "-c", "%a", path).stdout.strip()
        assert mode == entry["permissions"].lstrip("0"), f"{when}: {path} mode {mode}"
    assert host.run("cat", RUNCMD_LOG).stdout == "ran\n", f"{when}: the team's runcmd\n{why}"
    # cloud-init placed our parts, under their names, as they are in the archive.
    placed = host.run("cat", f"{INSTANCE}/boothooks/{BOOTHOOK_NAME}").stdout
    assert placed == boothook_script(data).removeprefix("#cloud-boothook\n"), (
        f"{when}: the boothook cloud-init ran"
    )
    assert host.run("cat", f"{INSTANCE}/scripts/{ECS_CONFIG_NAME}").stdout == ecs_config_script(data)
    given = host.run("sha256sum", "/var/lib/cloud/instance/user-data.txt").stdout.split()[0]
    assert given == hashlib.sha256(data).hexdigest(), "cloud-init was given the gzipped archive as it is"
    # The boothook installed the program and the configuration it carries.
    assert host.run("cat", PROGRAM).stdout == boothook.program()
    config = boothook.config(boothook.settings(allow=[ALLOWED]))
    assert host.run("cat", "/etc/ecs-imds-block/config.json").stdout == config
    # cloud-init ran the boothook at every boot.
    log = host.run("cat", "/var/log/cloud-init.log").stdout
    ran = log.count(f"Running command ['{INSTANCE}/boothooks/{BOOTHOOK_NAME}']")
    assert ran == booted.boots, f"{when}: the boothook ran {ran} times in {booted.boots} boots\n{why}"
    # Its scripts by name (runparts), ours before the team's runcmd, at the first boot only.
    scripts = re.findall(r"Running command \['/var/lib/cloud/instance/scripts/([^']+)'\]", log)
    assert scripts == [ECS_CONFIG_NAME, "runcmd"], f"{when}: {scripts}"
    # The block: the program's own check, the probes, and the agent's settings.
    check = host.run(PROGRAM, "check", check=False)
    assert check.returncode == 0, f"{when}: {check.stdout}{check.stderr}\n{why}"
    assert_blocked(host, when)
    env = agent_env(host)
    assert env["ECS_AWSVPC_BLOCK_IMDS"] == "true" and env["ECS_CLUSTER"] == "prod", f"{when}: {env}"
    assert env["ECS_ENABLE_TASK_IAM_ROLE"] == "true", f"{when}: the team's ecs.config line: {env}"
    assert json.loads(env["ECS_INSTANCE_ATTRIBUTES"]) == {"ecs-imds-block": "enforced"}, f"{when}: {env}"
    # The rules files: our part between its markers, once.
    for path in FILES.values():
        text = host.run("cat", path).stdout
        assert text.count(BEGIN) == text.count(END) == 1, f"{when}: {path}:\n{text}"
    assert host.run("systemctl", "--failed", "--no-legend").stdout == "", f"{when}\n{why}"


def assert_package_step(booted: Booted, when: str) -> None:
    """Working: no boothook failure, the package there, its services enabled, and its default
    rules beside ours (.rpmnew), not over them. Failing: the boothook's one line in cloud-init's
    log at every boot; no package. Both: nothing but the block in the rules files."""
    host = booted.host
    for path in FILES.values():
        text = host.run("cat", path).stdout
        outside = text[: text.index(BEGIN)] + text[text.index(END) :].split("\n", 1)[1]
        assert outside == "*filter\nCOMMIT\n", f"{when}: {path}:\n{text}"
    log = host.run("cat", "/var/log/cloud-init.log").stdout
    installed = (
        host.run("rpm", "-q", "--quiet", "--whatprovides", "iptables-services", check=False).returncode == 0
    )
    enabled = host.run(
        "systemctl", "is-enabled", "iptables.service", "ip6tables.service", check=False
    ).stdout.split()
    if booted.working:
        assert BOOTHOOK_ERROR not in log, f"{when}: the boothook failed:\n{evidence(host)}"
        assert installed and enabled == ["enabled", "enabled"], f"{when}: {enabled}"
        for path in FILES.values():
            assert "-A INPUT -j REJECT" in host.run("cat", f"{path}.rpmnew").stdout
            assert "-A INPUT -j REJECT" not in host.run("cat", path).stdout
    else:
        assert log.count(BOOTHOOK_ERROR) == booted.boots, f"{when}:\n{evidence(host)}"
        # The boothook's stderr, as cloud-init logs it: "Stderr: " before the first line.
        lines = [line.strip().removeprefix("Stderr: ") for line in log.splitlines()]
        assert lines.count(BOOTHOOK_FAILURE) == booted.boots, (
            f"{when}: the boothook's line:\n{evidence(host)}"
        )
        assert not installed and "enabled" not in enabled
        dnf = host.run("cat", "/var/log/ecs-imds-block-install.log").stdout
        assert "Error: Failed to download metadata for repo 'amazonlinux'" in dnf


TEAM_RULES = {
    # An admin's own firewall, live: the Docker API closed to the network (a TEAM-INPUT chain), and
    # a rule of the team's in DOCKER-USER, inserted on top as Docker's docs show it.
    4: ["-N TEAM-INPUT", "-A TEAM-INPUT -p tcp -m tcp --dport 2375 -j DROP", "-A INPUT -j TEAM-INPUT",
        "-I DOCKER-USER -s 172.17.0.0/16 -d 10.0.0.0/8 -j DROP"],
    6: ["-N TEAM-INPUT", "-A TEAM-INPUT -p tcp -m tcp --dport 2375 -j DROP", "-A INPUT -j TEAM-INPUT",
        "-I DOCKER-USER -s fd00:d0c::/64 -d fd12:3456:789a::/48 -j DROP"],
}  # fmt: skip


def team_rules_live(family: int) -> list[str]:
    """The team's rules as `iptables -S` prints them."""
    return [("-A" + rule[2:]) for rule in TEAM_RULES[family] if rule[:2] in ("-A", "-I")]


def assert_an_admins_save_survives_five_reboots(booted: Booted) -> None:
    """Amazon Linux's way to keep a firewall: rules added live, then `iptables-save >
    /etc/sysconfig/iptables` (what `service iptables save` does). The save writes our lines
    without their markers, and Docker's and ecs-init's with them. After each of five reboots:
    Docker runs, no bridge container reaches IMDS, the team's rules are live exactly once in both
    families, and the files carry the team's lines once and our part between its markers."""
    host = booted.host
    for family, rules in TEAM_RULES.items():
        for rule in rules:
            host.run(TOOLS[family], "-w", *rule.split())
    host.run("sh", "-c", "iptables-save >/etc/sysconfig/iptables && ip6tables-save >/etc/sysconfig/ip6tables")
    for family, path in FILES.items():
        saved = host.run("cat", path).stdout
        assert BEGIN not in saved and "-A ECS-IMDS-BLOCK -d " in saved, saved
        assert all(saved.count(rule + "\n") == 1 for rule in team_rules_live(family)), saved
    for n in range(1, 6):
        when = f"reboot {n} of 5 after the save"
        print(f"{when}: {reboot(host):.0f} s")
        booted.boots += 1
        wait_for(host, "iptables.service", "ip6tables.service")
        assert host.run("docker", "info", "--format", "{{.ServerVersion}}", check=False).returncode == 0, when
        for family, path in FILES.items():
            rules = live(host, family)
            for rule in team_rules_live(family):
                assert rules.count(rule) == 1, (
                    f"{when}: IPv{family} {rule!r} live {rules.count(rule)} times:\n" + "\n".join(rules)
                )
            text = host.run("cat", path).stdout
            assert text.count(BEGIN) == text.count(END) == 1, f"{when}: {path}:\n{text}"
            outside = text[: text.index(BEGIN)] + text[text.index(END) :]
            assert "ECS-IMDS-BLOCK" not in outside.replace(END, ""), (
                f"{when}: our lines outside our part:\n{text}"
            )
            assert all(text.count(rule + "\n") == 1 for rule in team_rules_live(family)), (
                f"{when}: {path}:\n{text}"
            )
        check = host.run(PROGRAM, "check", check=False)
        assert check.returncode == 0, f"{when}: {check.stdout}{check.stderr}\n{evidence(host)}"
        assert_blocked(host, when)


# --- the tests: one host each, every step of its scenario in order ----------------------------


@pytest.mark.xdist_group("userdata-boot-working")
def test_the_package_step_working_then_a_reboot_then_an_admins_save_and_five_reboots(tmp_path):
    """First boot: the package is installed after the block, its services enabled for the next
    boot, not started. A reboot: iptables.service loads the files (its drop-in runs the
    program's load) before Docker; the boothook runs again and changes nothing. Then an admin's
    save and five reboots (assert_an_admins_save_survives_five_reboots). About 3 minutes."""
    with booted_host(tmp_path, repository=True) as booted:
        assert_package_step(booted, "first boot")
        assert_boot(booted, "first boot")
        state = booted.host.run("systemctl", "is-active", "iptables.service", check=False).stdout.strip()
        assert state == "inactive"

        print(f"reboot: {reboot(booted.host):.0f} s")
        booted.boots += 1
        assert_package_step(booted, "after a reboot")
        assert_boot(booted, "after a reboot")
        wait_for(booted.host, "iptables.service", "ip6tables.service")

        assert_an_admins_save_survives_five_reboots(booted)


@pytest.mark.xdist_group("userdata-boot-failing")
def test_the_package_step_failing_fails_closed_at_the_first_boot_and_after_a_reboot(tmp_path):
    """The boothook fails closed: its one line in cloud-init's log, the block loaded before it.
    After a reboot no persistence service loads the files (there is no package): the boothook's
    apply and docker.service's ExecStartPre do, from the files the first boot wrote. About 2
    minutes."""
    with booted_host(tmp_path, repository=False) as booted:
        assert_package_step(booted, "first boot, no repository")
        assert_boot(booted, "first boot, no repository")
        # The probes can fail: with the heal stopped (the watcher and the timer), our nftables
        # table deleted and our chain emptied, a bridge container reads the fixture's IMDS; the
        # program's apply puts the block back.
        host = booted.host
        host.run("systemctl", "stop", "ecs-imds-block-watch.service", "ecs-imds-block-heal.timer")
        host.run("nft", "delete", "table", "inet", "ecs-imds-block")
        host.run("iptables", "-w", "-F", "ECS-IMDS-BLOCK")
        assert_routed_to_the_fixture(host, "with the block emptied")
        assert INSTANCE_ID in probe(host, "bridge", "169.254.169.254")
        applied = host.run(PROGRAM, "apply").stdout.splitlines()
        assert [line.split(";")[0] for line in applied] == [
            "ecs-imds-block apply: the nftables table inet ecs-imds-block is missing",
            "ecs-imds-block apply: IPv4 ECS-IMDS-BLOCK differs from the configuration",
        ], applied
        host.run("systemctl", "start", "ecs-imds-block-watch.service", "ecs-imds-block-heal.timer")
        assert_blocked(host, "after apply")

        print(f"reboot: {reboot(host):.0f} s")
        booted.boots += 1
        assert_package_step(booted, "after a reboot, no repository")
        assert_boot(booted, "after a reboot, no repository")


@pytest.mark.xdist_group("userdata-install-refused")
def test_an_install_that_refuses_keeps_docker_from_starting_until_the_next_boots_install(
    tmp_path, docker_image
):
    """Install changes nothing when it refuses (here an ecs.config line that ecs-init and systemd
    would read differently): the boothook then leaves docker.service a drop-in that keeps it from
    starting, saying why, so no container runs unprotected. Once the line is fixed, the next run
    of the boothook installs the block, whose drop-in replaces that one, and Docker starts. The
    boothook runs as cloud-init runs it (sh, as root) on a booted Debian 12 host: no cloud-init is
    needed to show this. About 40 s."""
    script = boothook_script(user_data(tmp_path))
    with systemd_container(docker_image, prefix="ecs-imds-refused") as host:
        host.run("sh", "-c", "mkdir -p /etc/ecs && printf 'ECS_CLUSTER=\"unclosed\\n' > /etc/ecs/ecs.config")
        ran = host.run("sh", "-s", stdin=script, check=False)
        assert ran.returncode == 1, ran.stdout + ran.stderr
        assert ran.stderr.splitlines()[-2:] == [
            "ecs-imds-block: ecs.config line 1: ecs-init and systemd's EnvironmentFile= would read it "
            "differently (a quote, a backslash, a carriage return, or bytes that are not UTF-8); "
            "fix that line",
            "ecs-imds-block boothook: install failed (see above); docker.service will not start",
        ]
        assert host.run("test", "-e", PROGRAM, check=False).returncode != 0, "install wrote its program"
        started = host.run("systemctl", "restart", "docker.service", check=False)
        assert started.returncode != 0, "Docker started without the block"
        logged = host.run("journalctl", "-u", "docker.service", "-o", "cat").stdout
        assert "ecs-imds-block: the boothook could not install the IMDS block" in logged, logged

        host.run("sh", "-c", "printf 'ECS_CLUSTER=prod\\n' > /etc/ecs/ecs.config")
        ran = host.run("sh", "-s", stdin=script, check=False)
        assert "install failed" not in ran.stderr, ran.stderr
        host.run("systemctl", "restart", "docker.service")
        assert host.run(PROGRAM, "check").returncode == 0
