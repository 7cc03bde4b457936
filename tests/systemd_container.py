"""Start the offline base image with systemd as PID 1, the way Molecule's platform does.

--privileged fails on these machines: the sandbox withholds SYS_RESOURCE. So capabilities
are listed explicitly, the same list as in molecule/default/molecule.yml.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
import uuid

CAPABILITIES = (
    "SYS_ADMIN", "NET_ADMIN", "NET_RAW", "SYS_PTRACE", "MKNOD",
    "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP", "SYS_CHROOT", "IPC_LOCK", "SYS_MODULE",
)  # fmt: skip
SYSCTLS = {
    "net.ipv6.conf.all.disable_ipv6": "0",
    "net.ipv6.conf.default.disable_ipv6": "0",
    "net.ipv6.conf.all.forwarding": "1",
}


def run_args(image: str, name: str) -> list[str]:
    args = ["docker", "run", "--detach", "--name", name, "--hostname", name, "--cgroupns=host"]
    args += ["--volume", "/sys/fs/cgroup:/sys/fs/cgroup:rw", "--tmpfs", "/run", "--tmpfs", "/run/lock"]
    args += ["--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined"]
    args += [f"--cap-add={cap}" for cap in CAPABILITIES]
    args += [f"--sysctl={key}={value}" for key, value in SYSCTLS.items()]
    return [*args, image]


@contextlib.contextmanager
def systemd_container(image: str, boot_timeout: float = 90):
    """Yield a function that runs a command in the booted container and returns the result."""
    name = f"ecs-imds-test-{uuid.uuid4().hex[:8]}"
    subprocess.run(run_args(image, name), check=True, capture_output=True)

    def execute(*argv: str, stdin: str | None = None, check: bool = True):
        result = subprocess.run(
            ["docker", "exec", "-i", name, *argv], input=stdin, capture_output=True, text=True
        )
        if check and result.returncode:
            raise AssertionError(f"{argv} exited {result.returncode}: {result.stdout}{result.stderr}")
        return result

    try:
        deadline = time.monotonic() + boot_timeout
        state = ""
        while time.monotonic() < deadline:
            state = execute("systemctl", "is-system-running", check=False).stdout.strip()
            if state in ("running", "degraded"):
                break
            time.sleep(1)
        else:
            raise AssertionError(f"systemd in {name} did not boot: {state!r}")
        yield execute
    finally:
        subprocess.run(["docker", "rm", "--force", "--volumes", name], capture_output=True)
