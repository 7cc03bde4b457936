# Copyright: the ecs-imds-golden authors
# Apache License 2.0
"""Runs INSIDE a bench container (Debian's python3, botocore on PYTHONPATH): times N IMDS
credential fetches with two clients and prints one JSON line per request.

    python3 imds_client.py N

- boto: botocore's own InstanceMetadataProvider/InstanceMetadataFetcher, timeout=1 s (the AWS
  SDK default for IMDS) and num_attempts=1: what an SDK in a task does to find credentials.
- raw: one TCP connect + HTTP GET of the instance ID, socket timeout 1 s.

Each request is timed here, with perf_counter, so container start-up is not counted. The
clients alternate which goes first, so neither always runs on a warmer cache.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

from botocore.credentials import InstanceMetadataProvider
from botocore.utils import InstanceMetadataFetcher

IMDS = "169.254.169.254"
TIMEOUT = 1.0  # botocore's DEFAULT_METADATA_SERVICE_TIMEOUT
FIXTURE_KEY = "ASIAFAKEFIXTURE00001"  # molecule/fixture/files/fake-endpoint
FIXTURE_INSTANCE = b"i-0fa4e1dc0ffee0001"


def boto(base_url: str = f"http://{IMDS}/") -> tuple[float, bool]:
    # A fresh fetcher per request, as a new SDK process would have: no pooled connection.
    fetcher = InstanceMetadataFetcher(timeout=TIMEOUT, num_attempts=1, base_url=base_url, env={})
    provider = InstanceMetadataProvider(iam_role_fetcher=fetcher)
    start = time.perf_counter()
    credentials = provider.load()
    elapsed = time.perf_counter() - start
    return elapsed * 1000, credentials is not None and credentials.access_key == FIXTURE_KEY


def raw(address: str = IMDS, port: int = 80) -> tuple[float, bool]:
    start = time.perf_counter()
    data = b""
    try:
        with socket.create_connection((address, port), timeout=TIMEOUT) as sock:
            sock.sendall(b"GET /latest/meta-data/instance-id HTTP/1.0\r\nHost: imds\r\n\r\n")
            while chunk := sock.recv(4096):
                data += chunk
    except OSError:
        pass
    return (time.perf_counter() - start) * 1000, FIXTURE_INSTANCE in data


def gateway() -> str:
    routes = subprocess.run(["ip", "-4", "route"], capture_output=True, text=True, check=True).stdout
    return next(line.split()[2] for line in routes.splitlines() if line.startswith("default"))


def warm_up() -> None:
    """Resolve the gateway's neighbour entry (a new address waits ~1 s for it on its first
    packet) and run both clients' code once, against a closed port on the gateway: the same
    failure path, without touching the IMDS rules."""
    gw = gateway()
    subprocess.run(["ping", "-c", "1", "-W", "2", gw], capture_output=True, check=False)
    raw(gw, 9)
    boto(f"http://{gw}:9/")


def main() -> None:
    count = int(sys.argv[1])
    warm_up()
    clients = {"boto": boto, "raw": raw}
    for n in range(count):
        order = ("boto", "raw") if n % 2 == 0 else ("raw", "boto")
        for name in order:
            ms, ok = clients[name]()
            print(json.dumps({"client": name, "ms": round(ms, 3), "ok": ok}), flush=True)


if __name__ == "__main__":
    main()
