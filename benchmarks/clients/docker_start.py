# Copyright: the ecs-imds-golden authors
# Apache License 2.0
"""One timed start of docker.service, with or without the role's drop-in (stdlib only, root).

    python3 docker_start.py with|without DROPIN PARKED     # in the host: prints one JSON line
    python3 docker_start.py restore DROPIN PARKED          # the drop-in back, Docker running

Puts the drop-in in place (with) or moves it to PARKED (without) and reloads systemd; stops
docker.service and docker.socket; runs the drop-in's own ExecStartPre command (the loader's
`apply`), so that every start, on either side, begins with the block loaded as the
persistence service leaves it at boot; starts the socket again (untimed, so no start waits
for the socket unit); then times `systemctl start docker.service` from here, inside the
host, so no `docker exec` reaches the timer. Also read: systemd's timestamps of the start job
(leaving inactive to active, and leaving inactive to dockerd's exec: the ExecStartPre part),
and whether the block is intact once Docker is up (the loader's `check`), which is what
ExecStartPost is there for.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time

UNIT = "docker.service"
TIMESTAMPS = (
    "InactiveExitTimestampMonotonic",
    "ExecMainStartTimestampMonotonic",
    "ActiveEnterTimestampMonotonic",
)


def systemctl(*argv: str) -> str:
    return subprocess.run(["systemctl", *argv], check=True, capture_output=True, text=True).stdout


def show(*properties: str) -> dict[str, str]:
    output = systemctl("show", UNIT, *(f"--property={p}" for p in properties))
    return dict(line.split("=", 1) for line in output.splitlines() if "=" in line)


def place(state: str, dropin: str, parked: str) -> None:
    source, target = (parked, dropin) if state == "with" else (dropin, parked)
    if os.path.exists(source):
        os.replace(source, target)
    systemctl("daemon-reload")  # on both sides, whether a file moved or not


def hook(dropin: str, parked: str) -> list[str]:
    """The drop-in's ExecStartPre command, wherever the drop-in is now."""
    path = dropin if os.path.exists(dropin) else parked
    with open(path) as file:
        for line in file:
            if line.startswith("ExecStartPre="):
                return shlex.split(line.split("=", 1)[1])
    raise SystemExit(f"{path} has no ExecStartPre=")


def main(state: str, dropin: str, parked: str) -> None:
    if state == "restore":
        place("with", dropin, parked)
        systemctl("start", UNIT)
        return
    place(state, dropin, parked)
    dropins = show("DropInPaths")["DropInPaths"].split()
    if (dropin in dropins) != (state == "with"):
        raise SystemExit(f"{UNIT} drop-ins {dropins}: expected {dropin} {'in' if state == 'with' else 'out'}")
    loader = hook(dropin, parked)
    systemctl("stop", UNIT, "docker.socket")
    subprocess.run(loader, check=True, capture_output=True)  # the block loaded, as at boot
    systemctl("start", "docker.socket")
    time.sleep(0.5)  # let the stop's aftermath (dockerd's exit, containerd's clean-up) settle
    start = time.monotonic_ns()
    systemctl("start", UNIT)
    wall = time.monotonic_ns() - start
    stamps = {key: int(value) for key, value in show(*TIMESTAMPS).items()}
    inactive_exit, main_start, active_enter = (stamps[key] for key in TIMESTAMPS)  # microseconds
    check = [loader[0], "check", *loader[2:]] if loader[1:2] == ["apply"] else None
    intact = None if check is None else subprocess.run(check, capture_output=True).returncode == 0
    print(
        json.dumps(
            {
                "state": state,
                "wall_ms": wall / 1e6,
                "unit_ms": (active_enter - inactive_exit) / 1e3,
                "pre_ms": (main_start - inactive_exit) / 1e3,
                "intact_after_start": intact,
                "dropins": dropins,
            }
        )
    )


if __name__ == "__main__":
    main(*sys.argv[1:4])
