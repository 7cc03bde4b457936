# Copyright: the ecs-imds-golden authors
# Apache License 2.0
"""Measurement 1: how long a blocked IMDS request takes to fail, next to an allowed one.

Three cases on one golden instance, at the same time, each from its own client container:

- reject: the default bridge, behind the role's rules (TCP reset);
- drop:   a dedicated network, bench-drop, whose source subnet gets the seed's rule, a plain
          `-j DROP` for 169.254.169.254, inserted at the top of DOCKER-USER, and which the block
          allowlists (the host program's configuration, installed again): the seed's rule alone
          decides for it, and the heal, which puts only our jump above it, undoes nothing;
- floor:  imds-allowed (172.31.250.0/24, the fixture's allowlisted network): an allowed
          request to the fake IMDS, the cost of a request that succeeds.

Rounds go round-robin over the cases, the order rotating each round, so machine noise hits
all three alike. Each round `docker exec`s clients/imds_client.py once per case, which times
its own requests (boto and raw alternately) from inside the container.
"""

from __future__ import annotations

import json

from local_image.host import LocalHost

from benchmarks import fixture, stats
from benchmarks.progress import log

IMDS = "169.254.169.254/32"
CONFIG = "/etc/ecs-imds-block/config.json"
DROP_NETWORK = "bench-drop"
DROP_SUBNET = "172.31.252.0/24"  # beside the fixture's 172.31.250.0/24 and 172.31.251.0/24
CASES = {"reject": "bridge", "drop": DROP_NETWORK, "floor": "imds-allowed"}
EXPECT_OK = {"reject": False, "drop": False, "floor": True}
CLIENTS = ("boto", "raw")


def _setup(host: LocalHost, image: str) -> dict[str, str]:
    config = json.loads(host.run("cat", CONFIG).stdout)
    for entry in config["families"]:
        entry["allowed"] += [DROP_SUBNET] * (entry["family"] == 4)
    host.run("sh", "-c", "cat > /root/bench-config.json", stdin=json.dumps(config, indent=2, sort_keys=True))
    host.run(config["program"], "--config", "/root/bench-config.json", "install")
    host.run("docker", "network", "create", "--subnet", DROP_SUBNET, DROP_NETWORK)
    drop = ["DOCKER-USER", "-s", DROP_SUBNET, "-d", IMDS, "-j", "DROP"]
    host.run("iptables", "-w", "-I", drop[0], "1", *drop[1:])
    rules = host.run("iptables", "-w", "-S", "DOCKER-USER").stdout
    log("DOCKER-USER for this measurement:\n    " + rules.strip().replace("\n", "\n    "))
    return {
        case: fixture.start_client(host, image, f"imds-{case}", network) for case, network in CASES.items()
    }


def measure(host: LocalHost, image: str, rounds: int, per_round: int) -> dict:
    containers = _setup(host, image)
    samples: dict[str, dict[str, list[float]]] = {c: {client: [] for client in CLIENTS} for c in CASES}
    unexpected: dict[str, int] = dict.fromkeys(CASES, 0)
    order = list(CASES)
    for round_ in range(rounds):
        log(f"imds round {round_ + 1}/{rounds}: {' '.join(order)} ({per_round} requests per client each)")
        for case in order:
            output = host.run(
                "docker", "exec", containers[case], "python3", "/bench/imds_client.py", str(per_round)
            ).stdout
            for line in output.splitlines():
                request = json.loads(line)
                samples[case][request["client"]].append(request["ms"])
                unexpected[case] += request["ok"] != EXPECT_OK[case]
        order = order[1:] + order[:1]

    result: dict = {"clients": {}, "unexpected_outcomes": unexpected, "rounds": rounds}
    for client in CLIENTS:
        per_case = {case: stats.summary(samples[case][client]) for case in CASES}
        per_case["drop_over_reject"] = round(
            stats.ratio(per_case["drop"]["median"], per_case["reject"]["median"]), 1
        )
        per_case["reject_over_floor"] = round(
            stats.ratio(per_case["reject"]["median"], per_case["floor"]["median"]), 3
        )
        result["clients"][client] = per_case
    return result
