# Copyright: the ecs-imds-golden authors
# Apache License 2.0
"""Measurement 3: what the rules cost traffic that is allowed through.

Every forwarded packet walks DOCKER-USER, so the question is whether the role's rules slow
ordinary container traffic. A client container on the default bridge talks to a peer outside
the host: an extra address, PEER, in the fixture's `imds` namespace (the "hypervisor"), so
the traffic is forwarded and masqueraded by the host as it is on EC2. Not IMDS itself: that
is blocked.

- throughput: iperf3 (Debian's) from the container to an iperf3 server in the namespace;
- new connections per second: clients/connect_rate.py, N sequential connects.

Two states, alternated in ABBA order so drift cancels, each ratio the median of the per-pair
ratios: "with" is the role's block, loaded by the host program; "without" is its chain emptied,
the jumps to it left.
"""

from __future__ import annotations

import json
import subprocess

from local_image.host import LocalHost

from benchmarks import fixture, stats
from benchmarks.progress import log
from golden_ami import boothook

PEER = "169.254.169.10"  # on the imds namespace's 169.254.169.0/24, not 169.254.169.254
IPERF_PORT = 5201
CONNECT_PORT = 5202


def _role_files() -> tuple[str, list[dict]]:
    """The host program and its rules files, as the role configures them (the golden image is
    Debian 12)."""
    config = json.loads(boothook.config(boothook.settings(), "Debian-12"))
    return config["program"], config["families"]


def set_rules(host: LocalHost, loaded: bool) -> None:
    """With: the host program's block. Without: its chain emptied, the jumps to it left."""
    program, families = _role_files()
    if loaded:
        host.run(program, "apply")
        return
    for entry in families:
        host.run("iptables" if entry["family"] == 4 else "ip6tables", "-w", "-F", "ECS-IMDS-BLOCK")


def _setup(host: LocalHost, image: str) -> str:
    if host.run("sh", "-c", "command -v iperf3", check=False).returncode:
        log("installing iperf3 in the host (apt-get, Debian mirror)")
        host.run(
            "sh", "-c",
            "export DEBIAN_FRONTEND=noninteractive; apt-get update -qq"
            " && apt-get install -y -qq --no-install-recommends iperf3 >/dev/null",
        )  # fmt: skip
    host.run("ip", "-n", "imds", "addr", "replace", f"{PEER}/24", "dev", "eth0")
    host.run(
        "ip", "netns", "exec", "imds", "iperf3", "--server", "--daemon", "--bind", PEER, "-p", str(IPERF_PORT)
    )
    subprocess.run(
        ["docker", "exec", "--detach", host.name, "ip", "netns", "exec", "imds",
         "python3", f"{fixture.REMOTE}/connect_rate.py", "serve", PEER, str(CONNECT_PORT)],
        check=True,
    )  # fmt: skip
    return fixture.start_client(host, image, "datapath", "bridge")


def _chain_packets(host: LocalHost) -> int:
    """Packets that walked the whole IPv4 DOCKER-USER chain to its last rule (RETURN): proof
    that the measured traffic really was evaluated against the rules."""
    listing = host.run("iptables", "-w", "-L", "DOCKER-USER", "-n", "-v", "-x").stdout
    return int(listing.strip().splitlines()[-1].split()[0])


def _iperf(host: LocalHost, client: str, seconds: int) -> float:
    """Received bits per second; the first second (slow start) is omitted."""
    output = host.run(
        "docker", "exec", client, "iperf3", "--client", PEER, "-p", str(IPERF_PORT),
        "--time", str(seconds), "--omit", "1", "--json",
    ).stdout  # fmt: skip
    return json.loads(output)["end"]["sum_received"]["bits_per_second"]


def _connects(host: LocalHost, client: str, count: int) -> float:
    output = host.run(
        "docker", "exec", client, "python3", "/bench/connect_rate.py",
        "client", PEER, str(CONNECT_PORT), str(count),
    ).stdout  # fmt: skip
    result = json.loads(output)
    if result["failed"]:
        raise RuntimeError(f"{result['failed']} of {count} connections to {PEER} failed")
    return result["per_second"]


def _paired_ratio(samples: dict[str, list[float]]) -> float:
    """The median of the per-pair with/without ratios: each pair ran back to back, so a slow
    patch of the machine (CI on the same cores) divides out instead of landing on one side."""
    return round(stats.median([w / wo for w, wo in zip(samples["with"], samples["without"], strict=True)]), 4)


def measure(host: LocalHost, image: str, pairs: int, seconds: int, connections: int) -> dict:
    client = _setup(host, image)
    _iperf(host, client, 1)  # warm-up: neighbour entries, conntrack, page cache
    _connects(host, client, 200)
    throughput: dict[str, list[float]] = {"with": [], "without": []}
    rate: dict[str, list[float]] = {"with": [], "without": []}
    walked = 0  # packets through the loaded chain, summed over the "with" samples
    try:
        for pair in range(pairs):
            states = ("with", "without") if pair % 2 == 0 else ("without", "with")
            for state in states:
                set_rules(host, state == "with")  # a load also zeroes the chain's counters
                throughput[state].append(_iperf(host, client, seconds))
                rate[state].append(_connects(host, client, connections))
                walked += _chain_packets(host) if state == "with" else 0
            log(
                f"datapath pair {pair + 1}/{pairs}: "
                + ", ".join(
                    f"{s} rules {throughput[s][-1] / 1e9:.2f} Gbit/s {rate[s][-1]:.0f} conn/s" for s in states
                )
            )
    finally:
        set_rules(host, True)  # leave the instance protected, as it was
    return {
        "peer": PEER,
        "throughput_gbit_s": {
            s: stats.summary([v / 1e9 for v in values]) for s, values in throughput.items()
        },
        "connections_per_s": {s: stats.summary(values, digits=1) for s, values in rate.items()},
        "throughput_ratio": _paired_ratio(throughput),
        "connection_rate_ratio": _paired_ratio(rate),
        "packets_through_loaded_chain": walked,
        "pairs": pairs,
        "iperf_seconds": seconds,
        "connections_per_sample": connections,
    }
