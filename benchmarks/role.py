# Copyright: the ecs-imds-golden authors
# Apache License 2.0
"""Measurement 2: what applying the role costs, next to the seed's shell recipe.

Each run boots fresh targets from the bench image (the Debian base with iptables-persistent
already installed and its autosave questions answered, so nothing is downloaded by either
side) and times, from this controller, excluding boot:

- first converge: playbooks/golden-ami.yml (role + build hygiene, with the inputs `make image`
  uses), through local_image.make_image.playbook, on a fresh target;
- idempotent re-run: the same playbook again on that target (its PLAY RECAP must say changed=0);
- the role alone, re-run (benchmarks/playbooks/role-only.yml): the role's share of it;
- the shell recipe on another fresh target, through one `docker exec`.

Role and shell targets alternate run by run, so drift hits both.
"""

from __future__ import annotations

import re
import tempfile
import time
from pathlib import Path

from local_image.host import LocalHost, systemd_container
from local_image.make_image import FIXTURE_VARS, PLAYBOOK, playbook

from benchmarks import stats
from benchmarks.fixture import PREFIX
from benchmarks.progress import log

ROLE_ONLY = Path(__file__).resolve().parent / "playbooks" / "role-only.yml"
# The classic recipe: install the persistence package, drop IMDS for IPv4, save everything.
SHELL_RECIPE = """\
set -e
export DEBIAN_FRONTEND=noninteractive
apt-get install -y iptables-persistent
iptables -I DOCKER-USER 1 -d 169.254.169.254/32 -j DROP
netfilter-persistent save
"""


def _wait_for_docker_chain(host: LocalHost, timeout: float = 60) -> None:
    """Boot is not timed, and the recipe needs Docker's DOCKER-USER chain to exist."""
    deadline = time.monotonic() + timeout
    while host.run("iptables", "-w", "-S", "DOCKER-USER", check=False).returncode:
        if time.monotonic() > deadline:
            raise RuntimeError(f"Docker in {host.name} created no DOCKER-USER chain")
        time.sleep(0.5)


def _timed_playbook(host: LocalHost, path: Path, log_file: Path) -> tuple[float, int]:
    """Seconds and the number of changed tasks of one ansible-playbook run."""
    with tempfile.TemporaryDirectory() as scratch:
        run_log = Path(scratch) / "run.log"
        start = time.monotonic()
        code = playbook(host.name, path, [f"@{FIXTURE_VARS}"], run_log)
        seconds = time.monotonic() - start
        text = run_log.read_text()
    with log_file.open("a") as output:
        output.write(text)
    if code:
        raise RuntimeError(f"{path.name} failed on {host.name}; see {log_file}")
    return seconds, sum(int(n) for n in re.findall(r"\bchanged=(\d+)", text))


def _shell_recipe(host: LocalHost) -> float:
    start = time.monotonic()
    host.run("sh", "-c", SHELL_RECIPE)
    seconds = time.monotonic() - start
    host.run("iptables", "-w", "-C", "DOCKER-USER", "-d", "169.254.169.254/32", "-j", "DROP")
    host.run("grep", "-q", "^-A DOCKER-USER -d 169.254.169.254/32 -j DROP", "/etc/iptables/rules.v4")
    return seconds


def measure(image: str, runs: int, log_file: Path) -> dict:
    first, again, role_only, shell, changed = [], [], [], [], []
    for run in range(runs):
        with systemd_container(image, prefix=f"{PREFIX}-role") as host:
            _wait_for_docker_chain(host)
            seconds, _ = _timed_playbook(host, PLAYBOOK, log_file)
            first.append(seconds)
            seconds, n = _timed_playbook(host, PLAYBOOK, log_file)
            again.append(seconds)
            changed.append(n)
            role_only.append(_timed_playbook(host, ROLE_ONLY, log_file)[0])
        with systemd_container(image, prefix=f"{PREFIX}-shell") as host:
            _wait_for_docker_chain(host)
            shell.append(_shell_recipe(host))
        log(
            f"role run {run + 1}/{runs}: first converge {first[-1]:.1f} s, re-run {again[-1]:.1f} s "
            f"(changed={changed[-1]}), role alone {role_only[-1]:.1f} s, shell recipe {shell[-1]:.2f} s"
        )
    return {
        "first_converge_median": round(stats.median(first), 2),
        "idempotent_median": round(stats.median(again), 2),
        "role_only_idempotent_median": round(stats.median(role_only), 2),
        "shell_recipe_median": round(stats.median(shell), 3),
        "idempotent_over_shell": round(stats.ratio(stats.median(again), stats.median(shell)), 1),
        "idempotent_changed": changed,
        "samples": {
            name: [round(v, 3) for v in values]
            for name, values in (
                ("first_converge", first),
                ("idempotent", again),
                ("role_only_idempotent", role_only),
                ("shell_recipe", shell),
            )
        },
        "playbook": "playbooks/golden-ami.yml (role ecs_imds_block + build hygiene)",
        "runs": runs,
    }
