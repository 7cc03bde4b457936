# Copyright: the ecs-imds-golden authors
# Apache License 2.0
"""`make image`: the credential-free twin of the Packer build.

Applies playbooks/golden-ami.yml to a local host container (the offline Debian base, or an
Amazon Linux one where a registry is reachable), saves it as an image, then boots that
image as a new instance, builds the EC2 network fixture around it and runs the Molecule
verify tasks: the real data-path proof. Writes a manifest in Packer's shape.

Progress goes to stderr, the report to stdout; exit 0 only when every check passed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from importlib import metadata
from pathlib import Path

from local_image import PROJECT_ROOT
from local_image.host import systemd_container
from local_image.tools import MissingTool, venv_tool

PLAYBOOK = PROJECT_ROOT / "playbooks" / "golden-ami.yml"
# The fake EC2 network around the booted image, and the checks run against it.
FIXTURE = PROJECT_ROOT / "molecule" / "fixture"
VERIFY = PROJECT_ROOT / "playbooks" / "verify.yml"
# The inputs Molecule converges with (the allowlisted daemon network among them), so that
# verify's expectations hold for the image too.
FIXTURE_VARS = FIXTURE / "group_vars" / "all" / "fixture.yml"
CALLBACKS = Path(__file__).resolve().parent / "callback_plugins"
# --base -> scripts/build-base-images' distro: debian12 offline (debootstrap), the Amazon
# Linux ones from the amazonlinux images, so only where a registry is reachable.
BASES = {"debian12": "debian12", "amazonlinux2023": "al2023", "amazonlinux2": "al2"}
STEPS = 5


class BuildError(RuntimeError):
    """A step failed; the message says which and where to look."""


def progress(step: int, text: str) -> None:
    print(f"make image [{step}/{STEPS}] {text}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="make image", description=__doc__.splitlines()[0])
    parser.add_argument("--base", default=os.environ.get("BASE") or "debian12", choices=sorted(BASES))
    parser.add_argument("--tag", default="ecs-imds-golden:local")
    parser.add_argument("--manifest", type=Path, default=PROJECT_ROOT / "build" / "manifest.json")
    parser.add_argument("--log", type=Path, default=PROJECT_ROOT / "build" / "make-image.log")
    parser.add_argument(
        "-e",
        "--extra-vars",
        action="append",
        default=[],
        help="passed to ansible-playbook, e.g. -e ecs_imds_block_bridge=false (also: EXTRA_VARS)",
    )
    args = parser.parse_args(argv)
    args.extra_vars += [os.environ["EXTRA_VARS"]] if os.environ.get("EXTRA_VARS") else []
    return args


def base_image(base: str) -> str:
    """Return the local host image (systemd and Docker) for ``base``, built by
    scripts/build-base-images if missing, named as that script names it."""
    distro = BASES[base]
    if subprocess.run([str(PROJECT_ROOT / "scripts" / "build-base-images"), distro]).returncode:
        raise BuildError(f"scripts/build-base-images {distro} failed (see its output above)")
    prefix = os.environ.get("IMAGE_PREFIX", "ecs-imds")
    if distro == "debian12":
        return os.environ.get("BASE_IMAGE", f"{prefix}-debian12:latest")
    return f"{prefix}-{distro}:latest"


def playbook(host: str, path: Path, extra_vars: list[str], log: Path, report: Path | None = None) -> int:
    """Run ``path`` against the host container; its output goes to ``log``."""
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(PROJECT_ROOT / "ansible.cfg"),
        "ANSIBLE_ROLES_PATH": str(PROJECT_ROOT / "roles"),
        "ANSIBLE_CALLBACK_PLUGINS": str(CALLBACKS),
        "ANSIBLE_CALLBACKS_ENABLED": "golden_report",
        "ANSIBLE_NOCOLOR": "1",
        "GOLDEN_REPORT_FILE": str(report or ""),
    }
    command = [venv_tool("ansible-playbook"), "-i", f"{host},", "-c", "community.docker.docker", str(path)]
    for value in extra_vars:
        command += ["-e", value]
    with log.open("a") as output:
        output.write(f"\n### {' '.join(command)}\n")
        output.flush()
        return subprocess.run(
            command, env=env, cwd=PROJECT_ROOT, stdout=output, stderr=subprocess.STDOUT
        ).returncode


def read_report(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def time_to_fail(checks: list[dict]) -> list[int]:
    """Milliseconds of each blocked probe, as the probe timed itself inside its container."""
    times = []
    for check in checks:
        match = re.search(r"is blocked: probe rc=\d+ ms=(\d+)", check["msg"] if check["ok"] else "")
        if match:
            times.append(int(match.group(1)))
    return times


def print_report(args, source: str, checks: list[dict], log: Path) -> None:
    print(f"\nmake image: {args.tag}")
    print(
        f"  applied   {PLAYBOOK.relative_to(PROJECT_ROOT)} (role ecs_imds_block, build hygiene) to {source}"
    )
    if args.extra_vars:
        print(f"  extra     {' '.join(args.extra_vars)}")
    print(f"  checks    {sum(c['ok'] for c in checks)} passed, {sum(not c['ok'] for c in checks)} failed")
    for check in checks:
        label = f"{check['check']}" + (f" [{check['item']}]" if check["item"] else "")
        print(f"    {'PASS' if check['ok'] else 'FAIL'}  {label}")
        if not check["ok"]:
            print(f"          {check['msg']}")
    times = time_to_fail(checks)
    if times:
        print(
            f"  blocked IMDS call fails in {statistics.median(times):.0f} ms (median of {len(times)} probes, "
            f"max {max(times)} ms), timed inside the container"
        )
    print(f"  log       {log}")


def write_manifest(args, source: str, artifact: str, started: float) -> None:
    """The shape of Packer's manifest post-processor, so the publish tooling reads either."""
    arch = {"aarch64": "arm64"}.get(platform.machine(), platform.machine())
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True)
    run_uuid = str(uuid.uuid4())
    manifest = {
        "builds": [
            {
                "name": f"{args.base}-{arch}",
                "builder_type": "docker",
                "build_time": int(started),
                "files": None,
                "artifact_id": artifact,
                "packer_run_uuid": run_uuid,
                "custom_data": {
                    "os": args.base,
                    "architecture": arch,
                    "image": args.tag,
                    "source_image": source,
                    "role_version": metadata.version("ecs-imds-golden"),
                    "git_commit": commit.stdout.strip() or "unknown",
                    "local": "true",
                },
            }
        ],
        "last_run_uuid": run_uuid,
    }
    args.manifest.parent.mkdir(parents=True, exist_ok=True)
    args.manifest.write_text(json.dumps(manifest, indent=2) + "\n")


def build(args, log: Path, report: Path) -> tuple[str, str, bool]:
    """Build, save and verify; return the source image, the artifact and whether all passed."""
    progress(1, f"base image: {args.base}")
    source = base_image(args.base)

    progress(2, f"applying {PLAYBOOK.relative_to(PROJECT_ROOT)} to a host booted from {source}")
    with systemd_container(source, prefix="ecs-imds-build") as host:
        if playbook(host.name, PLAYBOOK, [f"@{FIXTURE_VARS}", *args.extra_vars], log):
            raise BuildError(f"the playbook failed; see {log}")
        progress(3, f"saving the host as {args.tag}")
        subprocess.run(
            ["docker", "commit", "--change", 'CMD ["/lib/systemd/systemd"]', host.name, args.tag],
            check=True,
            capture_output=True,
        )
    artifact = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{.Id}}", args.tag],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()

    progress(4, f"booting {args.tag} as a new instance and verifying the data path")
    with systemd_container(args.tag, prefix="ecs-imds-verify") as instance:
        if playbook(instance.name, FIXTURE / "prepare.yml", args.extra_vars, log):
            raise BuildError(f"the network fixture could not be built; see {log}")
        verified = playbook(instance.name, VERIFY, [f"@{FIXTURE_VARS}", *args.extra_vars], log, report) == 0
    return source, artifact, verified


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.time()
    try:  # before anything is built: one line, not a traceback halfway through
        venv_tool("ansible-playbook")
    except MissingTool as exc:
        print(f"make image: {exc}", file=sys.stderr)
        return 1
    log = args.log
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("")
    with tempfile.TemporaryDirectory() as scratch:
        report = Path(scratch) / "checks.jsonl"
        try:
            source, artifact, verified = build(args, log, report)
        except (BuildError, subprocess.CalledProcessError, RuntimeError) as exc:
            print(f"make image: failed: {exc}", file=sys.stderr)
            return 1
        checks = read_report(report)
    verified = verified and checks != [] and all(c["ok"] for c in checks)
    print_report(args, source, checks, log)
    if not verified:
        subprocess.run(["docker", "rmi", args.tag], capture_output=True)
        failed = [c["check"] for c in checks if not c["ok"]] or ["verify did not finish"]
        print(f"make image: FAILED: {failed[0]}; {args.tag} was removed", file=sys.stderr)
        return 1
    progress(5, f"writing {args.manifest}")
    write_manifest(args, source, artifact, started)
    print(f"  manifest  {args.manifest}")
    print(f"make image: built and verified {args.tag} in {time.time() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
