# Copyright: the ecs-imds-golden authors
# Apache License 2.0
"""An instance booted from the golden image, with the EC2 network fixture around it.

Built from local_image's own blocks, as `make image` verifies its image: systemd_container
boots it, molecule/fixture/prepare.yml adds the fake IMDS in the `imds` namespace, the fake
ECS agent and the Docker networks (imds-allowed among them). On top, for the benchmarks: the
bench image loaded into the inner Docker, and the client scripts and botocore under /opt/bench.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from local_image.host import LocalHost, systemd_container
from local_image.make_image import FIXTURE, playbook

from benchmarks import images
from benchmarks.progress import log

CLIENTS = Path(__file__).resolve().parent / "clients"
REMOTE = "/opt/bench"  # in the host, bind-mounted read-only into client containers as /bench
PREFIX = "ecs-imds-bench"  # every container we create, outer and inner, is named so


@contextlib.contextmanager
def _environ(**values: str) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.contextmanager
def golden_instance(golden: str, bench: str, log_file: Path) -> Iterator[LocalHost]:
    with systemd_container(golden, prefix=f"{PREFIX}-host") as host, tempfile.TemporaryDirectory() as scratch:
        log(f"booted {host.name} from {golden}; building the network fixture (prepare.yml)")
        # prepare.yml saves the probe image under MOLECULE_EPHEMERAL_DIRECTORY (default /tmp):
        # a directory of our own keeps a concurrent `make image` from sharing the file.
        with _environ(MOLECULE_EPHEMERAL_DIRECTORY=scratch):
            if playbook(host.name, FIXTURE / "prepare.yml", [], log_file):
                raise RuntimeError(f"prepare.yml failed; see {log_file}")
        log(f"loading {bench} into the inner Docker and copying the clients and botocore")
        save = subprocess.Popen(["docker", "save", bench], stdout=subprocess.PIPE)
        subprocess.run(
            ["docker", "exec", "-i", host.name, "docker", "load"],
            stdin=save.stdout,
            check=True,
            capture_output=True,
        )
        if save.wait():
            raise RuntimeError(f"docker save {bench} failed")
        staging = Path(scratch) / "bench"
        images.copy_botocore(staging / "pylib")
        for script in CLIENTS.glob("*.py"):
            (staging / script.name).write_bytes(script.read_bytes())
        host.run("mkdir", "-p", REMOTE)
        subprocess.run(
            ["docker", "cp", f"{staging}/.", f"{host.name}:{REMOTE}"], check=True, capture_output=True
        )
        yield host


def start_client(host: LocalHost, image: str, name: str, network: str) -> str:
    """A long-lived client container on ``network``; each measurement `docker exec`s into it,
    so container start-up (seconds on the inner Docker's vfs) never reaches a timer."""
    inner = f"{PREFIX}-{name}"
    host.run("docker", "rm", "--force", inner, check=False)
    host.run(
        "docker", "run", "--detach", "--name", inner, f"--network={network}",
        "--volume", f"{REMOTE}:/bench:ro", "--env", "PYTHONPATH=/bench/pylib",
        image, "sleep", "infinity",
    )  # fmt: skip
    return inner
