# Copyright: the ecs-imds-golden authors
# Apache License 2.0
"""Run in a bridge container of a golden-image host: connect to IMDS's port, over IPv4 and
IPv6 in turn, without pause, and print one line an attempt: the host's uptime (the clock the
fault client stamps the faults with), the address and the outcome: refused (the block's reject),
answered (a connection: IMDS was reached), or timeout. Runs until the container stops. Only
the fixture's IMDS is reachable from the host's containers (the bench checks the routes first)."""

import socket
import time

ADDRESSES = ((socket.AF_INET, "169.254.169.254"), (socket.AF_INET6, "fd00:ec2::254"))


def uptime() -> str:
    with open("/proc/uptime") as handle:
        return handle.read().split()[0]


while True:
    for family, address in ADDRESSES:
        probe = socket.socket(family, socket.SOCK_STREAM)
        probe.settimeout(0.05)
        try:
            probe.connect((address, 80))
            outcome = "answered"
        except ConnectionRefusedError:
            outcome = "refused"
        except OSError:
            outcome = "timeout"
        finally:
            probe.close()
        print(uptime(), address, outcome, flush=True)
        time.sleep(0.002)
