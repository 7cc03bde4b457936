# Copyright: the ecs-imds-golden authors
# Apache License 2.0
"""Docker 29's nftables firewall backend, at the kernel. Docker 29 adds no DOCKER-USER: it
keeps its rules in tables of its own, `ip docker-bridges` and `ip6 docker-bridges`, whose
filter-FORWARD base chain accepts the bridge's outgoing traffic. The host program creates
DOCKER-USER itself, with FORWARD's jump to it and its jump to ECS-IMDS-BLOCK. In nftables an
accept ends only its own base chain, so the block's reject in the iptables FORWARD chain (the
same hook) still ends the packet. Shown here with Docker 29's tables as its documentation prints
them (moby's integration/network/bridge/nftablesdoc, "new daemon"), written by hand in a host
namespace where the program loaded the block as the persistence service does at boot, before
Docker, and a container behind a real bridge.

Only namespaces made here are ever sent a packet: the fake IMDS answers in a namespace of its
own, and the host namespace has no other route.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
import time
import uuid

import pytest
from conftest import ROOT
from support.program import PROGRAM, render

FAKE_IMDS = ROOT / "molecule" / "fixture" / "files" / "fake-endpoint"
IMDS = {4: "169.254.169.254", 6: "fd00:ec2::254"}

# Docker 29's tables for a new daemon with the default bridge, per family: the base chains
# and the default bridge's forward chains (nat chains play no part in forwarding).
DOCKER29_TABLE = """
table {family} docker-bridges {{
    map filter-forward-in-jumps {{
        type ifname : verdict
        elements = {{ "docker0" : jump filter-forward-in__docker0 }}
    }}
    map filter-forward-out-jumps {{
        type ifname : verdict
        elements = {{ "docker0" : jump filter-forward-out__docker0 }}
    }}
    chain filter-FORWARD {{
        type filter hook forward priority filter; policy accept;
        oifname vmap @filter-forward-in-jumps
        iifname vmap @filter-forward-out-jumps
    }}
    chain raw-PREROUTING {{
        type filter hook prerouting priority raw; policy accept;
    }}
    chain filter-forward-in__docker0 {{
        ct state established,related counter accept
        iifname "docker0" counter accept comment "ICC"
        counter drop comment "UNPUBLISHED PORT DROP"
    }}
    chain filter-forward-out__docker0 {{
        ct state established,related counter accept
        counter accept comment "OUTGOING"
    }}
}}
"""

# From the container: "refused", "reached" (the fake IMDS answered) or "timeout".
PROBE = """
import socket, sys
try:
    s = socket.create_connection((sys.argv[1], 80), timeout=3)
    s.sendall(b"GET /latest/meta-data/instance-id HTTP/1.0\\r\\n\\r\\n")
    reply = b"".join(iter(lambda: s.recv(4096), b""))
    print("reached" if b"i-0fa4e1dc0ffee0001" in reply else "other")
except ConnectionRefusedError:
    print("refused")
except OSError as exc:
    print("timeout" if isinstance(exc, TimeoutError) else f"error {exc}")
"""


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(argv, capture_output=True, text=True)
    if check and result.returncode:
        raise AssertionError(f"{argv} failed: {result.stdout}{result.stderr}")
    return result


@pytest.fixture(params=("nft", "legacy"))
def docker29_host(request, netadmin, tmp_path):
    """A host namespace where the host program loaded the block on one iptables backend (its
    configuration rendered by the role's filter, with rules files of the test's), then Docker
    29's tables; a container namespace on its docker0 bridge, and the fake IMDS in a third
    namespace."""
    if not shutil.which("nft"):
        pytest.fail("needs nft (Debian's nftables package): run through `make test` or .ci/run")
    tag = uuid.uuid4().hex[:6]
    host, container, imds = f"d29-host-{tag}", f"d29-ctr-{tag}", f"d29-imds-{tag}"
    shims = tmp_path / "bin"
    shims.mkdir()
    for tool, suffix in itertools.product(("iptables", "ip6tables"), ("", "-save", "-restore")):
        (shims / f"{tool}{suffix}").symlink_to(f"/usr/sbin/{tool}-{request.param}{suffix}")
    env = {**os.environ, "PATH": f"{shims}:{os.environ['PATH']}"}

    def in_ns(name, *argv, check=True):
        result = subprocess.run(["ip", "netns", "exec", name, *argv], env=env, capture_output=True, text=True)
        if check and result.returncode:
            raise AssertionError(f"{name}: {argv} failed: {result.stdout}{result.stderr}")
        return result

    for name in (host, container, imds):
        sh("ip", "netns", "add", name)
    server = None
    try:
        # The host: docker0 with the container behind it, and a veth to the fake hypervisor.
        for ns in (host, container, imds):
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", host, "link", "add", "docker0", "type", "bridge")
        sh(
            "ip",
            "-n",
            host,
            "link",
            "add",
            "veth-c",
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            container,
        )
        sh("ip", "-n", host, "link", "set", "veth-c", "master", "docker0")
        sh("ip", "-n", host, "link", "add", "imds0", "type", "veth", "peer", "name", "eth0", "netns", imds)
        for ns, device, v4, v6 in (
            (host, "docker0", "172.17.0.1/16", "fd00:d0c::1/64"),
            (container, "eth0", "172.17.0.2/16", "fd00:d0c::2/64"),
            (host, "imds0", "169.254.169.1/24", "fd00:ec2::1/64"),
            (imds, "eth0", "169.254.169.254/24", "fd00:ec2::254/64"),
        ):
            sh("ip", "-n", ns, "addr", "add", v4, "dev", device)
            sh("ip", "-n", ns, "-6", "addr", "add", v6, "dev", device, "nodad")
        for ns, device in (
            (host, "docker0"),
            (host, "veth-c"),
            (host, "imds0"),
            (container, "eth0"),
            (imds, "eth0"),
        ):
            sh("ip", "-n", ns, "link", "set", device, "up")
        for ns, gw4, gw6 in (
            (container, "172.17.0.1", "fd00:d0c::1"),
            (imds, "169.254.169.1", "fd00:ec2::1"),
        ):
            sh("ip", "-n", ns, "route", "add", "default", "via", gw4)
            sh("ip", "-n", ns, "-6", "route", "add", "default", "via", gw6)
        in_ns(host, "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1")
        server = subprocess.Popen(
            ["ip", "netns", "exec", imds, sys.executable, str(FAKE_IMDS), "imds", "::", "80"]
        )

        # The block, as the persistence service loads it at boot (its rules files are new here);
        # then Docker 29's tables, as the daemon writes them when it starts after that.
        config = render(tmp_path / "host")
        assert not in_ns(host, "iptables", "-w", "-S", "DOCKER-USER", check=False).stdout
        in_ns(host, str(PROGRAM), "--config", str(config), "load")
        for family in ("ip", "ip6"):
            result = subprocess.run(
                ["ip", "netns", "exec", host, "nft", "-f", "-"],
                input=DOCKER29_TABLE.format(family=family),
                capture_output=True,
                text=True,
            )
            assert result.returncode == 0, result.stderr

        # Until the fake IMDS listens: before that, its own namespace would refuse the probe.
        deadline = time.monotonic() + 10
        while in_ns(imds, sys.executable, "-c", PROBE, "::1").stdout.strip() != "reached":
            assert time.monotonic() < deadline, "the fake IMDS did not start"
            time.sleep(0.1)

        def probe(family):
            return in_ns(container, sys.executable, "-c", PROBE, IMDS[family]).stdout.strip()

        yield in_ns, host, config, probe
    finally:
        if server:
            server.kill()
            server.wait()
        for name in (host, container, imds):
            sh("ip", "netns", "del", name, check=False)


def test_docker29s_tables_accept_the_bridges_traffic_yet_the_block_refuses_it(docker29_host):
    """The bridge's request is refused over both families; DOCKER-USER is the program's own
    (Docker 29 adds none), FORWARD jumps to it and it to ECS-IMDS-BLOCK; docker.service's hook
    after Docker's start finds nothing to repair, and the program's check passes."""
    in_ns, host, config, probe = docker29_host
    for family in (4, 6):
        assert probe(family) == "refused", f"IPv{family}: a bridge container reached IMDS"
    for family, ipt in ((4, "iptables"), (6, "ip6tables")):
        rules = in_ns(host, ipt, "-w", "-S").stdout.splitlines()
        assert "-N DOCKER-USER" in rules, f"IPv{family}: the program did not create DOCKER-USER"
        assert [r for r in rules if r.startswith("-A FORWARD ")] == ["-A FORWARD -j DOCKER-USER"], rules
        assert [r for r in rules if r.startswith("-A DOCKER-USER ")] == [
            "-A DOCKER-USER -j ECS-IMDS-BLOCK"
        ], rules
    # docker.service's ExecStartPost, once Docker 29 has written its tables: nothing to repair.
    applied = in_ns(host, str(PROGRAM), "--config", str(config), "apply")
    assert applied.stdout == "", applied.stdout
    check = in_ns(host, str(PROGRAM), "--config", str(config), "check", check=False)
    assert (check.returncode, check.stdout, check.stderr) == (0, "", "")


def test_without_the_blocks_rule_docker29s_tables_let_the_container_through(docker29_host):
    """The test above can fail: with the reject rules gone from iptables, our own nftables table
    still refuses the probe; with that table gone too, the same probe reads IMDS."""
    in_ns, host, config, probe = docker29_host
    for family, ipt in ((4, "iptables"), (6, "ip6tables")):
        for rule in in_ns(host, ipt, "-w", "-S", "ECS-IMDS-BLOCK").stdout.splitlines():
            if f"-d {IMDS[family]}/" in rule and "-j REJECT" in rule:
                in_ns(host, ipt, "-w", *rule.replace("-A ", "-D ", 1).split())
        assert probe(family) == "refused", f"IPv{family}: our nftables table did not refuse the probe"
    in_ns(host, "nft", "delete", "table", "inet", "ecs-imds-block")
    for family in (4, 6):
        assert probe(family) == "reached", f"IPv{family}: Docker 29's tables did not forward the probe"
    check = in_ns(host, str(PROGRAM), "--config", str(config), "check", check=False)
    assert (check.returncode, check.stdout) == (1, "4\n6\nnft\n"), check
