"""`make image`: apply playbooks/golden-ami.yml to a local host container and save it as an image.

The local, credential-free twin of the Packer build: the same playbook, on the offline Debian
base (scripts/build-base-images) instead of an ECS-optimized AMI.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

from golden_ami import PROJECT_ROOT
from golden_ami.local_host import systemd_container

PLAYBOOK = PROJECT_ROOT / "playbooks" / "golden-ami.yml"


def log(message: str) -> None:
    print(f"make image: {message}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="make image", description=__doc__)
    parser.add_argument("--base-image", default=os.environ.get("BASE_IMAGE", "ecs-imds-debian12:latest"))
    parser.add_argument("--tag", default="ecs-imds-golden:local")
    parser.add_argument(
        "-e",
        "--extra-vars",
        action="append",
        default=[],
        help="passed to ansible-playbook, e.g. -e @vars.yml",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    extra = [*args.extra_vars, *filter(None, [os.environ.get("EXTRA_VARS")])]
    started = time.monotonic()
    log(f"booting {args.base_image} with systemd and Docker")
    with systemd_container(args.base_image, prefix="ecs-imds-image") as host:
        log(f"applying {PLAYBOOK.relative_to(PROJECT_ROOT)} to {host.name}")
        command = ["ansible-playbook", "-i", f"{host.name},", "-c", "community.docker.docker", str(PLAYBOOK)]
        for value in extra:
            command += ["-e", value]
        env = {**os.environ, "ANSIBLE_CONFIG": str(PROJECT_ROOT / "ansible.cfg")}
        if subprocess.run(command, env=env, cwd=PROJECT_ROOT).returncode:
            log("the playbook failed; no image was written")
            return 1
        log(f"saving {host.name} as {args.tag}")
        subprocess.run(
            ["docker", "commit", "--change", 'CMD ["/lib/systemd/systemd"]', host.name, args.tag],
            check=True,
            capture_output=True,
        )
    log(f"built {args.tag} in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
