# Copyright: the ecs-imds-golden authors
# Apache License 2.0
"""Measurement 6: the heal timer: how fast it puts the block back, and what it costs.

One golden-image host, booted for this alone (as for dockerstart: no fixture, no containers).

Heal time: the filter tables of both families are flushed (iptables -F, ip6tables -F) at a
random point of the timer's period, and clients/heal_time.py, in the host, times until
FORWARD jumps to DOCKER-USER first again in both. Target: every sample at most 5 s.

CPU: the host container's whole CPU time (its cgroup's, systemd and the inner dockerd
included) over windows of equal length, with the timer running and stopped, alternated in
ABBA pairs so drift cancels. The cost is the median of the per-pair differences, as a share
of one core, and per check (divided by the checks the window held). Target: under 1% of one
core at the role's interval.
"""

from __future__ import annotations

import json
import random
import subprocess
import time
from pathlib import Path

from local_image.host import LocalHost, systemd_container

from benchmarks import fixture, stats
from benchmarks.progress import log
from golden_ami import boothook

SCRIPT = fixture.CLIENTS / "heal_time.py"
TARGET_S = 5.0
CPU_TARGET = 0.01  # of one core


def _cpu_ns(container: str) -> int:
    """The container's cgroup CPU time, in ns (cgroup v1 cpuacct or v2 cpu.stat)."""
    cid = subprocess.run(
        ["docker", "inspect", "-f", "{{.Id}}", container], check=True, capture_output=True, text=True
    ).stdout.strip()
    base = Path("/sys/fs/cgroup")
    for v1 in ("cpuacct", "cpu,cpuacct"):
        path = base / v1 / "docker" / cid / "cpuacct.usage"
        if path.exists():
            return int(path.read_text())
    for v2 in (base / "system.slice" / f"docker-{cid}.scope", base / "docker" / cid):
        stat = v2 / "cpu.stat"
        if stat.exists():
            fields = dict(line.split() for line in stat.read_text().splitlines())
            return int(fields["usage_usec"]) * 1000
    raise RuntimeError(f"no cgroup CPU accounting found for container {container}")


def _window(host: LocalHost, seconds: float) -> float:
    before, start = _cpu_ns(host.name), time.monotonic()
    time.sleep(seconds)
    return (_cpu_ns(host.name) - before) / 1e9 / (time.monotonic() - start)  # cores


def measure(golden: str, samples: int = 10, pairs: int = 3, window: float = 15.0) -> dict:
    settings = boothook.settings()
    timer = f"{boothook.names()['units']['heal']}.timer"
    interval = float(settings["heal_interval"])
    with systemd_container(golden, prefix=f"{fixture.PREFIX}-heal") as host:
        if host.run("systemctl", "is-active", timer, check=False).stdout.strip() != "active":
            raise RuntimeError(f"{golden}: {timer} is not active: not converged with the role?")
        heal_ms = []
        for n in range(samples):
            time.sleep(random.uniform(0, interval))  # noqa: S311 - a random point of the timer's period, not a secret
            sample = json.loads(host.run("python3", "-", str(TARGET_S * 3), stdin=SCRIPT.read_text()).stdout)
            if not sample["healed"]:
                raise RuntimeError(f"the heal did not put the block back within {TARGET_S * 3} s")
            heal_ms.append(sample["heal_ms"])
            log(f"heal sample {n + 1}/{samples}: {sample['heal_ms']:.0f} ms")
        on: list[float] = []
        off: list[float] = []
        try:
            for pair in range(pairs):
                for state in ("on", "off") if pair % 2 == 0 else ("off", "on"):
                    host.run("systemctl", "start" if state == "on" else "stop", timer)
                    (on if state == "on" else off).append(_window(host, window))
                shares = f"on {on[-1] * 100:.2f}%, off {off[-1] * 100:.2f}%"
                log(f"heal CPU pair {pair + 1}/{pairs}: {shares} of a core")
        finally:
            host.run("systemctl", "start", timer)
    differences = [a - b for a, b in zip(on, off, strict=True)]
    cost = stats.median(differences)
    return {
        "interval_s": interval,
        "heal_ms": stats.summary(heal_ms, digits=1),
        "heal_max_ms": max(heal_ms),
        "heal_samples_ms": heal_ms,
        "cpu_share": round(cost, 5),
        "cpu_ms_per_check": round(cost * interval * 1000, 2),
        "cpu_on": [round(v, 5) for v in on],
        "cpu_off": [round(v, 5) for v in off],
        "window_s": window,
    }
