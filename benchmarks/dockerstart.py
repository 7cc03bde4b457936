# Copyright: the ecs-imds-golden authors
# Apache License 2.0
"""Measurement 5: what the block's drop-in costs docker.service's start.

The role's drop-in, /etc/systemd/system/docker.service.d/50-ecs-imds-block.conf, orders
Docker after the persistence service and runs the loader's `apply` before Docker starts
(ExecStartPre) and after it is up (ExecStartPost); `apply` only checks a family that is
already right. Both hooks sit on the start path of Docker, at boot and at every restart.

One golden-image host, booted for this alone (no fixture, no containers in its Docker, so
nothing but the drop-in differs between the sides). Two states, alternated in ABBA pairs so
drift cancels: "with" is the drop-in as the role installed it; "without" is the drop-in
moved out of docker.service.d, systemd reloaded. Each sample is clients/docker_start.py run
in the host: stop Docker, load the block with the drop-in's own ExecStartPre command (so both
sides start from the rules as the persistence service leaves them at boot), then time
`systemctl start docker.service` from inside the host and read systemd's timestamps of the
start job. The headline is that wall time, the same stopwatch on both sides. The drop-in is
put back at the end.

What the hooks do on each start: ExecStartPre finds both families right and only checks;
Docker then puts its own FORWARD rules above the IPv6 jump (Docker 20.10 in this image), so
ExecStartPost reloads the IPv6 part. The run also checks the block once Docker is up: intact
after every start with the drop-in, and not without it.

The persistence service is already active when Docker restarts, so Wants=/After= add no wait
here; at boot netfilter-persistent is ordered before the network anyway, and Docker after it.
"""

from __future__ import annotations

import json

from local_image.host import LocalHost, systemd_container

from benchmarks import fixture, stats
from benchmarks.progress import log
from golden_ami import boothook

SCRIPT = fixture.CLIENTS / "docker_start.py"
PARKED = "/root/ecs-imds-block-dropin.parked"  # outside docker.service.d: systemd reads none of it
STATES = ("with", "without")
MEASURES = ("wall_ms", "unit_ms", "pre_ms")
# Without the drop-in the ExecStartPre part is not a phase at all (systemd stamps the exec a
# few ms before leaving inactive, so it comes out slightly negative): no ratio for it.
RATIOS = ("wall_ms", "unit_ms")


def dropin_path() -> str:
    """Where the role puts Docker's drop-in, as its vars name it."""
    units = boothook.names()["units"]
    return f"/etc/systemd/system/{units['docker']}.d/{units['dropin']}"


def _sample(host: LocalHost, state: str, dropin: str) -> dict:
    output = host.run("python3", "-", state, dropin, PARKED, stdin=SCRIPT.read_text()).stdout
    return json.loads(output)


def _paired(with_: list[float], without: list[float], ratio: bool) -> dict:
    """The medians of the per-pair differences (and ratios): each pair ran back to back, so a
    slow patch of the machine divides out instead of landing on one side."""
    pairs = list(zip(with_, without, strict=True))
    result = {"difference": round(stats.median([w - wo for w, wo in pairs]), 1)}
    if ratio:
        result["ratio"] = round(stats.median([stats.ratio(w, wo) for w, wo in pairs]), 4)
    return result


def summarise(samples: dict[str, list[dict]], dropin: str) -> dict:
    """Per measure: each side's summary, and the paired difference and ratio. The headline is
    the wall time of `systemctl start`, the same stopwatch on both sides."""
    result: dict = {"dropin": dropin, "pairs": len(samples["with"])}
    for key in MEASURES:
        values = {state: [sample[key] for sample in samples[state]] for state in STATES}
        result[key] = {
            **{state: stats.summary(values[state], digits=1) for state in STATES},
            **_paired(values["with"], values["without"], key in RATIOS),
        }
    # What the hooks cost after dockerd's exec: ExecStartPost, and the ordering.
    result["post_ms_difference"] = round(result["unit_ms"]["difference"] - result["pre_ms"]["difference"], 1)
    result["intact_after_start"] = {
        state: sum(sample["intact_after_start"] is True for sample in samples[state]) for state in STATES
    }
    pairs = zip(samples["with"], samples["without"], strict=True)
    result["wall_ms"]["per_pair_differences"] = [round(w["wall_ms"] - wo["wall_ms"], 1) for w, wo in pairs]
    result["overhead_ms"] = result["wall_ms"]["difference"]
    result["ratio"] = result["wall_ms"]["ratio"]
    return result


def measure(golden: str, pairs: int) -> dict:
    dropin = dropin_path()
    with systemd_container(golden, prefix=f"{fixture.PREFIX}-dockerstart") as host:
        log(f"booted {host.name} from {golden}; timing docker.service starts with and without {dropin}")
        if host.run("test", "-f", dropin, check=False).returncode:
            raise RuntimeError(f"{golden} has no {dropin}: not converged with the role?")
        samples: dict[str, list[dict]] = {state: [] for state in STATES}
        try:
            for state in STATES:  # warm-up, discarded: page cache, systemd's unit cache
                _sample(host, state, dropin)
            for pair in range(pairs):
                order = STATES if pair % 2 == 0 else STATES[::-1]
                for state in order:
                    samples[state].append(_sample(host, state, dropin))
                last = {state: samples[state][-1] for state in order}
                log(
                    f"dockerstart pair {pair + 1}/{pairs}: "
                    + ", ".join(
                        f"{s} {last[s]['wall_ms']:.0f} ms (ExecStartPre {last[s]['pre_ms']:.0f})"
                        for s in order
                    )
                )
        finally:
            host.run("python3", "-", "restore", dropin, PARKED, stdin=SCRIPT.read_text())
        if host.run("systemctl", "is-active", "docker.service", check=False).stdout.strip() != "active":
            raise RuntimeError("docker.service is not active once the drop-in is back")
    return summarise(samples, dropin)
