# Copyright: the ecs-imds-golden authors
# Apache License 2.0
"""Run the offline base image as a host: systemd as PID 1 and Docker inside, the way
Molecule's platform does (molecule/default/molecule.yml holds the same flags).

Capabilities are listed one by one, not --privileged: --privileged needs every capability,
SYS_RESOURCE among them, which a container engine may withhold.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

# On top of Docker's defaults: enough for systemd, the inner dockerd and iptables.
CAPABILITIES = ("SYS_ADMIN", "NET_ADMIN")
SYSCTLS = {
    "net.ipv6.conf.all.disable_ipv6": "0",
    "net.ipv6.conf.default.disable_ipv6": "0",
    "net.ipv6.conf.all.forwarding": "1",
}


def run_args(image: str, name: str) -> list[str]:
    """The `docker run` command line of a systemd host container."""
    args = ["docker", "run", "--detach", "--name", name, "--hostname", name, "--cgroupns=host"]
    args += ["--volume", "/sys/fs/cgroup:/sys/fs/cgroup:rw", "--tmpfs", "/run", "--tmpfs", "/run/lock"]
    # The inner Docker's state lives in a volume: it is not committed into images, and
    # dockerd cannot rename its directories across overlay layers.
    args += ["--volume", "/var/lib/docker"]
    args += ["--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined"]
    args += [f"--cap-add={cap}" for cap in CAPABILITIES]
    args += [f"--sysctl={key}={value}" for key, value in SYSCTLS.items()]
    return [*args, image]


@dataclass(frozen=True)
class LocalHost:
    """A running host container."""

    name: str

    def run(self, *argv: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run(
            ["docker", "exec", "-i", self.name, *argv], input=stdin, capture_output=True, text=True
        )
        if check and result.returncode:
            raise RuntimeError(f"{argv} exited {result.returncode}: {result.stdout}{result.stderr}")
        return result

    def wait_for_boot(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            state = self.run("systemctl", "is-system-running", check=False).stdout.strip()
            if state in ("running", "degraded"):
                return state
            time.sleep(1)
        raise RuntimeError(f"systemd in {self.name} did not finish booting: {state!r}")


@contextlib.contextmanager
def systemd_container(image: str, prefix: str = "ecs-imds", boot_timeout: float = 90) -> Iterator[LocalHost]:
    """Yield a booted host container from ``image``; remove it afterwards."""
    host = LocalHost(f"{prefix}-{uuid.uuid4().hex[:8]}")
    subprocess.run(run_args(image, host.name), check=True, capture_output=True)
    try:
        host.wait_for_boot(boot_timeout)
        yield host
    finally:
        subprocess.run(["docker", "rm", "--force", "--volumes", host.name], capture_output=True)
