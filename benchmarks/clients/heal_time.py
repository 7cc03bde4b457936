# Copyright: the ecs-imds-golden authors
# Apache License 2.0
"""Run in a golden-image host: flush both families' filter tables, then time until the heal
timer has the block back (FORWARD jumps to DOCKER-USER first, in both families). Prints JSON:
{"heal_ms": ..., "healed": true|false}. argv: the timeout in seconds."""

import json
import subprocess
import sys
import time

JUMP = "-A FORWARD -j DOCKER-USER"


def first_forward_rule(tool: str) -> str:
    rules = subprocess.run([tool, "-w", "-S", "FORWARD"], capture_output=True, text=True).stdout
    return next((line for line in rules.splitlines() if line.startswith("-A FORWARD ")), "")


timeout = float(sys.argv[1])
for tool in ("iptables", "ip6tables"):
    subprocess.run([tool, "-w", "-F"], check=True)
start = time.monotonic()
healed = False
while time.monotonic() - start < timeout:
    if all(first_forward_rule(tool) == JUMP for tool in ("iptables", "ip6tables")):
        healed = True
        break
    time.sleep(0.02)
print(json.dumps({"heal_ms": round((time.monotonic() - start) * 1000, 1), "healed": healed}))
