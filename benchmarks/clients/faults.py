# Copyright: the ecs-imds-golden authors
# Apache License 2.0
"""Run in a golden-image host: apply one fault SAMPLES times and time each repair. Prints one
JSON line per sample: {"fault", "start", "end", "block_ms", "back_ms", "lines"}.

start and end are the host's /proc/uptime around the fault's command (the clock the prober in
its container stamps its requests with). back_ms is from the fault's end to the journal's stamp
of the last heal line the fault caused (in the units named, the watcher's or the timer's heal
service): when the last layer it removed was back, as the program itself reports it, with no
polling in the way. block_ms is to the stamp of the line that names our nftables table, which
refuses the bridge's traffic to IMDS on its own: when the block was back; 0 where the fault left
the table standing (the heal then names no table), so the block never left. argv: fault,
samples, timeout in seconds, unit...
"""

import json
import random
import subprocess
import sys
import time

FAULTS = {
    "iptables -F": "iptables -w -F",
    "nft flush ruleset": "nft flush ruleset",
    "iptables-restore without the block": (
        "printf '*filter\\n:INPUT ACCEPT [0:0]\\n:FORWARD ACCEPT [0:0]\\n:OUTPUT ACCEPT [0:0]\\nCOMMIT\\n'"
        " | iptables-restore -w"
    ),
}


def uptime() -> float:
    with open("/proc/uptime") as handle:
        return float(handle.read().split()[0])


def healed(units: list[str], since: float) -> list[tuple[float, str]]:
    """(realtime, message) of each heal line logged since ``since`` (realtime seconds)."""
    argv = ["journalctl", "-o", "json", "--since", f"@{since:.6f}"] + [a for u in units for a in ("-u", u)]
    found = []
    for line in subprocess.run(argv, capture_output=True, text=True).stdout.splitlines():
        entry = json.loads(line)
        message = entry.get("MESSAGE", "")
        if isinstance(message, str) and message.startswith(
            ("ecs-imds-block heal:", "<3>ecs-imds-block heal:")
        ):
            found.append((int(entry["__REALTIME_TIMESTAMP"]) / 1e6, message))
    return found


def right() -> bool:
    return subprocess.run(["/usr/local/sbin/ecs-imds-block", "check"], capture_output=True).returncode == 0


fault, samples, timeout, units = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4:]
for _ in range(samples):
    time.sleep(random.uniform(0.2, 0.4))  # noqa: S311 - spacing, not a secret
    real, start = time.time(), uptime()
    subprocess.run(["sh", "-c", FAULTS[fault]], check=True)
    real_end, end = time.time(), uptime()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not (healed(units, real) and right()):
        time.sleep(0.05)
    lines = healed(units, real)
    back = max(0.0, (max(t for t, _ in lines) - real_end) * 1000) if lines else None
    table = [t for t, message in lines if "nftables table" in message]
    block = max(0.0, (min(table) - real_end) * 1000) if table else 0.0
    sample = {"fault": fault, "start": start, "end": end, "block_ms": block, "back_ms": back}
    print(json.dumps({**sample, "lines": len(lines)}), flush=True)
