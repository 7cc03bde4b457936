# Copyright: the ecs-imds-golden authors
# Apache License 2.0
"""Timing the block on a host container: a container on the default bridge asking the fixture's
IMDS over IPv4 and IPv6 every few milliseconds, and a fault run on the host with the moment it
reached the kernel, both on the host's clock (its uptime: CLOCK_BOOTTIME, which /proc/uptime
prints; containers share the kernel's clock).

Only the fixture's IMDS may ever be asked (this machine has a real metadata service): the prober
starts only when the host routes both addresses to `dev imds0`, the fixture's veth, and it runs in
a container of the host's own Docker, so its requests go where the host routes them.
"""

from __future__ import annotations

import collections
import itertools
import json
import os
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import NamedTuple

from local_image.host import LocalHost

PROBE_IMAGE = os.environ.get("PROBE_IMAGE", "ecs-imds-probe:latest")
INSTANCE_ID = "i-0fa4e1dc0ffee0001"  # molecule/fixture/group_vars/all/fixture.yml
IMDS = {4: "169.254.169.254", 6: "fd00:ec2::254"}
WORK = "/root/ecs-imds-test"
# What a probe that got to IMDS saw: the instance ID, or a connection IMDS accepted whose answer
# did not come (the block came back mid-request, or the fixture was slow).
REACHED = ("answered", "connected")

# The prober: one thread a family, each asking every PERIOD s and timing itself on the host's
# clock. It runs on the host's own Python (the busybox probe image has none): the container
# chroots into the host's root, mounted read-only, and keeps its own network namespace, the
# bridge's. A connect gets TIMEOUT s: our reject answers within microseconds, and a SYN that
# something dropped leaves the family's loop blind only that long (the kernel would retry it
# after a second). One line a request: start, end, family, what came back.
PROBER = r"""
import errno, socket, sys, threading, time
PERIOD, TIMEOUT, ANSWER = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3].encode()
ADDRESSES = {4: (socket.AF_INET, sys.argv[4]), 6: (socket.AF_INET6, sys.argv[5])}
REQUEST = b"GET /latest/meta-data/instance-id HTTP/1.0\r\nHost: probe\r\n\r\n"
lock = threading.Lock()
def clock():
    return time.clock_gettime(time.CLOCK_BOOTTIME)
def ask(family):
    kind, address = ADDRESSES[family]
    sock = socket.socket(kind, socket.SOCK_STREAM)
    sock.settimeout(TIMEOUT)
    try:
        try:
            sock.connect((address, 80))
        except ConnectionRefusedError:
            return "refused"
        except socket.timeout:
            return "timeout"
        except OSError as error:
            return "error:" + errno.errorcode.get(error.errno, str(error.errno))
        data = b""
        try:
            sock.settimeout(0.5)
            sock.sendall(REQUEST)
            while True:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
        except OSError:
            pass
        return "answered" if ANSWER in data else "connected"
    finally:
        sock.close()
def loop(family):
    due = clock()
    while True:
        start = clock()
        seen = ask(family)
        end = clock()
        with lock:
            sys.stdout.write("%.6f %.6f %d %s\n" % (start, end, family, seen))
            sys.stdout.flush()
        due = max(due + PERIOD, clock() - PERIOD)
        time.sleep(max(0.0, due - clock()))
for family in ADDRESSES:
    threading.Thread(target=loop, args=(family,), daemon=True).start()
threading.Event().wait()
"""


class Probe(NamedTuple):
    start: float  # the host's uptime, s
    end: float
    family: int
    seen: str  # answered, connected, refused, timeout, error:ERRNO


def assert_routed_to_the_fixture(host: LocalHost, when: str = "before probing") -> None:
    for family, address in IMDS.items():
        route = host.run("ip", f"-{family}", "-o", "route", "get", address, check=False).stdout
        assert " dev imds0 " in route, f"{when}: {address} is not routed to the fixture: {route!r}"


class Prober:
    """A container on the default bridge asking the fixture's IMDS over both families, each
    every ``period`` s, until the context ends."""

    def __init__(self, host: LocalHost, period: float = 0.002, timeout: float = 0.01):
        self.host, self.name = host, f"prober-{uuid.uuid4().hex[:6]}"
        self.period, self.timeout = period, timeout

    def __enter__(self) -> Prober:
        assert_routed_to_the_fixture(self.host)
        self.host.run("sh", "-c", f"mkdir -p {WORK} && cat >{WORK}/prober.py", stdin=PROBER)
        self.host.run(
            "docker", "run", "--detach", "--name", self.name, "--network=bridge", "--volume", "/:/host:ro",
            PROBE_IMAGE, "chroot", "/host", "python3", "-u", f"{WORK}/prober.py", str(self.period),
            str(self.timeout), INSTANCE_ID, IMDS[4], IMDS[6],
        )  # fmt: skip
        # Ready once each family got an answer of any kind: a new container's IPv6 address is
        # tentative for a second or so (duplicate address detection), its requests time out.
        deadline, first = time.monotonic() + 30, {}
        while set(first) != set(IMDS):
            if time.monotonic() > deadline:
                logs = self.host.run("docker", "logs", self.name, check=False)
                raise AssertionError(
                    f"the prober got no answer within 30 s: {logs.stdout[-2000:]}{logs.stderr}"
                )
            time.sleep(0.2)
            for probe in self.seen():
                if probe.seen != "timeout":
                    first.setdefault(probe.family, probe.start)
        self.ready = max(first.values())  # the host's uptime from which both families are answered
        return self

    def __exit__(self, *_) -> None:
        self.host.run("docker", "rm", "--force", self.name, check=False)

    def seen(self) -> list[Probe]:
        """Every request so far, in the order they ended."""
        logs = self.host.run("docker", "logs", self.name)
        assert not logs.stderr, f"the prober failed: {logs.stderr}"
        found = []
        for line in logs.stdout.splitlines():
            match = re.fullmatch(r"(\d+\.\d+) (\d+\.\d+) ([46]) (\S+)", line)
            assert match, f"the prober printed {line!r}"
            found.append(Probe(float(match[1]), float(match[2]), int(match[3]), match[4]))
        return found

    def between(self, start: float, end: float) -> dict[int, collections.Counter]:
        """family -> how many requests that started between two uptimes came back how."""
        counts = {family: collections.Counter() for family in IMDS}
        for probe in self.seen():
            if start <= probe.start <= end:
                counts[probe.family][probe.seen] += 1
        return counts


def uptime(host: LocalHost) -> float:
    """The host's clock (10 ms steps), the one the prober and the fault's runner read."""
    return float(host.run("cut", "-d", " ", "-f1", "/proc/uptime").stdout)


def largest_gap(probes: list[Probe], family: int, start: float, end: float) -> float:
    """The longest time between two requests of ``family`` that started in [start, end], the
    bounds counted as requests: how long the prober looked away at worst."""
    starts = sorted(p.start for p in probes if p.family == family and start <= p.start <= end)
    marks = [start, *starts, end]
    return max(b - a for a, b in itertools.pairwise(marks))


# The fault's runner, on the host: it listens to the kernel's nftables events (NFNLGRP_NFTABLES,
# what `nft monitor` and the watcher read; iptables-nft writes through it), waits until the
# ruleset has been still for QUIET s, runs the command and goes on listening for SETTLE s. Each
# committed transaction ends with a NEWGEN message that names the process that made it: the
# first after the command's start is the moment the fault reached the kernel.
FAULT = r"""
import json, socket, struct, subprocess, sys, threading, time
command, quiet, settle = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
def clock():
    return time.clock_gettime(time.CLOCK_BOOTTIME)
events = socket.socket(16, socket.SOCK_RAW, 12)  # AF_NETLINK, NETLINK_NETFILTER
events.bind((0, 0))
events.setsockopt(270, 1, 7)  # SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, NFNLGRP_NFTABLES
generations, lost = [], []
def attributes(message):
    found, at = {}, 20  # after nlmsghdr and nfgenmsg
    while at + 4 <= len(message):
        size, kind = struct.unpack_from("=HH", message, at)
        if size < 4:
            break
        value = message[at + 4 : at + size]
        if kind & 0x7FFF == 2:  # NFTA_GEN_PROC_PID
            found["pid"] = struct.unpack(">I", value[:4])[0]
        elif kind & 0x7FFF == 3:  # NFTA_GEN_PROC_NAME
            found["name"] = value.rstrip(b"\0").decode("latin-1")
        at += (size + 3) & ~3
    return found
def listen():
    while True:
        try:
            data = events.recv(1 << 20)
        except OSError:  # ENOBUFS: events were lost
            lost.append(clock())
            continue
        at, offset = clock(), 0
        while offset + 16 <= len(data):
            size, kind = struct.unpack_from("=IH", data, offset)
            if size < 16:
                break
            if kind == (10 << 8) | 15:  # NFNL_SUBSYS_NFTABLES, NFT_MSG_NEWGEN
                generations.append(dict(attributes(data[offset : offset + size]), at=at))
            offset += (size + 3) & ~3
threading.Thread(target=listen, daemon=True).start()
waited = clock()
while clock() - max([waited] + [g["at"] for g in generations]) < quiet and clock() - waited < 30:
    time.sleep(0.02)
start = clock()
done = subprocess.run(["sh", "-c", command], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
end = clock()
time.sleep(settle)
print(json.dumps({"start": start, "end": end, "status": done.returncode,
                  "output": done.stdout.decode("latin-1"), "generations": generations, "lost": lost}))
"""


@dataclass
class Fault:
    """A command run on the host: when it started and ended, and the kernel's nftables
    transactions from its start to ``settle`` s after its end (uptime, pid, process name)."""

    command: str
    start: float
    end: float
    status: int
    output: str
    generations: list[dict] = field(default_factory=list)
    lost: list[float] = field(default_factory=list)

    @property
    def moment(self) -> float:
        """When the fault reached the kernel: its first transaction."""
        after = [g["at"] for g in self.generations if g["at"] >= self.start]
        assert after, f"{self.command!r} changed nothing in the kernel's ruleset: {self}"
        return after[0]

    def transactions(self) -> str:
        """The transactions after the start, as `+ms name`: who changed the ruleset when."""
        return ", ".join(
            f"+{(g['at'] - self.start) * 1000:.1f} ms {g.get('name', '?')}"
            for g in self.generations
            if g["at"] >= self.start
        )


def run_fault(host: LocalHost, command: str, settle: float = 3, quiet: float = 0.5) -> Fault:
    """``command`` run by sh on the host once its ruleset has been still for ``quiet`` s (a restart
    just before may still be adding rules), timed on the host's clock."""
    host.run("sh", "-c", f"mkdir -p {WORK} && cat >{WORK}/fault.py", stdin=FAULT)
    ran = host.run("python3", f"{WORK}/fault.py", command, str(quiet), str(settle))
    return Fault(command=command, **json.loads(ran.stdout))
