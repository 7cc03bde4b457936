# Copyright: the ecs-imds-golden authors
# Apache License 2.0
"""Measurement 6: the heal, as users feel it: how long a fault leaves the block down, how many
of a container's requests reach IMDS meanwhile, and what healing costs.

One golden-image host with the EC2 network fixture (its IMDS in the `imds` namespace). A
bridge container runs clients/prober.py: it connects to IMDS over IPv4 and IPv6 in turn,
without pause (a few ms an attempt), stamping each attempt with the host's uptime.

Faults, each SAMPLES times, at a random spacing (clients/faults.py, in the host): `iptables -F`,
`nft flush ruleset`, and an `iptables-restore` of a file without the block. Two heals, side by
side in one run:
- the watcher (ecs-imds-block-watch.service: the kernel's nftables events), as the role runs it;
- the timer alone, the watcher stopped and the timer at the role's short interval (as on the
  legacy iptables backend, which announces nothing).
For each sample: block_ms, from the end of the fault's command to the journal's stamp of the heal
line naming our nftables table (the block back: that table alone refuses the bridge), 0 where the
fault left the table standing; back_ms, to the stamp of the last heal line it caused (every layer
back, iptables' chains too, as the program reports it); and the prober's attempts that reached
IMDS between the fault's start and that moment.

CPU: the watcher's own CPU time over a quiet window (idle: it waits on its socket); and the
host container's whole CPU time (its cgroup's) with the heal on (the watcher and its backstop
timer) and off, in ABBA pairs so drift cancels: the median of the per-pair differences, as a
share of one core.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from local_image.host import LocalHost

from benchmarks import fixture, stats
from benchmarks.progress import log
from golden_ami import boothook

FAULTS = ("iptables -F", "nft flush ruleset", "iptables-restore without the block")
TARGET_MS = 50  # p99 of the watcher's block back, each fault (issue 29)
IDLE_TARGET = 0.001  # of one core, the watcher waiting
CPU_TARGET = 0.01  # of one core, the heal on minus off
PROBER = "prober"
# The timer at the short interval, for the timer alone: a runtime drop-in, gone at the next boot.
SHORT_TIMER = "/run/systemd/system/{timer}.d/50-bench-short.conf"


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


def _watcher_idle(host: LocalHost, unit: str, seconds: float) -> float:
    """The watcher's own CPU (utime + stime of its process) over a quiet window, as a share."""
    pid = host.run("systemctl", "show", "-p", "MainPID", "--value", unit).stdout.strip()
    script = (
        "import os,sys; f=open('/proc/%s/stat' % sys.argv[1]).read().split(); print(int(f[13]) + int(f[14]))"
    )
    ticks = int(host.run("getconf", "CLK_TCK").stdout)

    def used() -> int:
        return int(host.run("python3", "-c", script, pid).stdout)

    before, start = used(), time.monotonic()
    time.sleep(seconds)
    return (used() - before) / ticks / (time.monotonic() - start)


def _attempts(host: LocalHost) -> list[tuple[float, str, str]]:
    logs = host.run("docker", "logs", f"{fixture.PREFIX}-{PROBER}").stdout
    return [
        (float(u), a, o) for u, a, o in (line.split() for line in logs.splitlines() if line.count(" ") == 2)
    ]


def _faults(host: LocalHost, fault: str, samples: int, timeout: float, units: list[str]) -> list[dict]:
    out = host.run("python3", f"{fixture.REMOTE}/faults.py", fault, str(samples), str(timeout), *units).stdout
    found = [json.loads(line) for line in out.splitlines()]
    missing = [s for s in found if s["back_ms"] is None]
    if missing:
        raise RuntimeError(f"{fault}: {len(missing)} of {samples} faults were not healed within {timeout} s")
    return found


def _spread(values: list[float]) -> dict:
    p99 = round(stats.percentile(values, 99), 1)
    return {**stats.summary(values, digits=1), "p99": p99, "max": max(values)}


def _summary(samples: list[dict], attempts: list[tuple[float, str, str]]) -> dict:
    reached = []
    for sample in samples:
        until = sample["end"] + sample["back_ms"] / 1000 + 0.01  # uptime's 10 ms steps
        reached.append(sum(1 for t, _, o in attempts if sample["start"] <= t <= until and o == "answered"))
    return {
        "block_ms": _spread([s["block_ms"] for s in samples]),
        "back_ms": _spread([s["back_ms"] for s in samples]),
        "reached_imds": sum(reached),
        "faults_with_reached": sum(1 for n in reached if n),
        "samples": len(samples),
    }


def measure(golden: str, bench: str, log_file: Path, samples: int = 50, pairs: int = 3, window: float = 15.0):
    names, settings = boothook.names(), boothook.settings()
    timer, watcher = f"{names['units']['heal']}.timer", f"{names['units']['watch']}.service"
    heal_service = f"{names['units']['heal']}.service"
    with fixture.golden_instance(golden, bench, log_file) as host:
        for family, address in ((4, "169.254.169.254"), (6, "fd00:ec2::254")):
            route = host.run("ip", f"-{family}", "-o", "route", "get", address).stdout
            if " dev imds0 " not in route:  # only the fixture's IMDS may ever be asked
                raise RuntimeError(f"{address} is not routed to the fixture: {route!r}")
        if host.run("systemctl", "is-active", timer, watcher, check=False).stdout.split() != ["active"] * 2:
            raise RuntimeError(
                f"{golden}: {timer} and {watcher} are not active: not converged with the role?"
            )
        prober = fixture.start_client(host, bench, PROBER, "bridge")
        host.run("docker", "exec", "--detach", prober, "sh", "-c", "python3 /bench/prober.py >/proc/1/fd/1")
        results: dict = {"samples": samples, "faults": list(FAULTS), "interval_s": settings["heal_interval"]}
        for mode in ("watcher", "timer"):
            if mode == "timer":
                host.run("systemctl", "stop", watcher)
                dropin = SHORT_TIMER.format(timer=timer)
                seconds = settings["heal_interval"]
                body = "[Timer]\n" + "".join(
                    f"{key}=\n{key}={seconds}\n" for key in ("OnActiveSec", "OnUnitActiveSec")
                )
                host.run("sh", "-c", f"mkdir -p $(dirname {dropin}) && cat > {dropin}", stdin=body)
                host.run("systemctl", "daemon-reload")
                host.run("systemctl", "restart", timer)
            units = [watcher] if mode == "watcher" else [heal_service]
            timeout = 5.0 if mode == "watcher" else settings["heal_interval"] * 3 + 5
            results[mode] = {}
            for fault in FAULTS:
                found = _faults(host, fault, samples, timeout, units)
                results[mode][fault] = _summary(found, _attempts(host))
                b, every = results[mode][fault]["block_ms"], results[mode][fault]["back_ms"]
                log(
                    f"heal, {mode}, {fault}: block back p50 {b['median']:.0f} ms, p99 {b['p99']:.0f},"
                    f" max {b['max']:.0f}; every layer back p50 {every['median']:.0f} ms,"
                    f" p99 {every['p99']:.0f}, max {every['max']:.0f}"
                )
        host.run("rm", "-f", SHORT_TIMER.format(timer=timer))
        host.run("systemctl", "daemon-reload")
        host.run("systemctl", "restart", timer)
        host.run("systemctl", "start", watcher)
        time.sleep(2)
        results["watcher_idle_share"] = round(_watcher_idle(host, watcher, 60), 6)
        log(f"heal: the watcher used {results['watcher_idle_share'] * 100:.3f}% of a core, idle, over 60 s")
        on: list[float] = []
        off: list[float] = []
        try:
            for pair in range(pairs):
                for state in ("on", "off") if pair % 2 == 0 else ("off", "on"):
                    host.run("systemctl", "start" if state == "on" else "stop", timer, watcher)
                    (on if state == "on" else off).append(_window(host, window))
                shares = f"on {on[-1] * 100:.2f}%, off {off[-1] * 100:.2f}%"
                log(f"heal CPU pair {pair + 1}/{pairs}: {shares} of a core")
        finally:
            host.run("systemctl", "start", timer, watcher)
        attempts = _attempts(host)
        results["probe_attempts"] = len(attempts)
        results["probe_attempts_per_s"] = round(
            len(attempts) / max(1e-9, attempts[-1][0] - attempts[0][0]), 1
        )
    results["cpu_share"] = round(stats.median([a - b for a, b in zip(on, off, strict=True)]), 5)
    results["cpu_on"] = [round(v, 5) for v in on]
    results["cpu_off"] = [round(v, 5) for v in off]
    results["window_s"] = window
    return results
