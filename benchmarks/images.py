# Copyright: the ecs-imds-golden authors
# Apache License 2.0
"""The images the benchmarks run on, built once and reused.

- ecs-imds-golden:local: the `make image` result, built with local_image.make_image if missing.
- ecs-imds-bench:latest: the offline Debian base plus iptables-persistent (its autosave
  questions preseeded, as the role answers them), iperf3 and ping. It is the fresh target of
  the role-cost measurement (so neither the role nor the shell recipe downloads anything) and,
  loaded into the inner Docker, the client container (python3, iperf3, ping).
- botocore for those containers: copied from this interpreter's own installed distributions
  (pure Python, the pinned version), so the containers need no network.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from local_image import PROJECT_ROOT, make_image

from benchmarks.progress import log

GOLDEN = "ecs-imds-golden:local"
BASE = "ecs-imds-debian12:latest"
BENCH = "ecs-imds-bench:latest"
BASE_LABEL = "ecs-imds-bench.base"  # the base image ID the bench image was built from
GOLDEN_MANIFEST = Path(__file__).resolve().parent / "results" / "golden-manifest.json"
BOTOCORE_DISTRIBUTIONS = ("botocore", "jmespath", "python-dateutil", "six", "urllib3")

DOCKERFILE = f"""\
FROM {BASE}
LABEL {BASE_LABEL}={{base_id}}
RUN printf '%s\\n' \\
      'iptables-persistent iptables-persistent/autosave_v4 boolean false' \\
      'iptables-persistent iptables-persistent/autosave_v6 boolean false' | debconf-set-selections \\
 && apt-get update -qq \\
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \\
      iptables-persistent iperf3 iputils-ping >/dev/null \\
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb /var/cache/apt/*.bin
"""


def image_id(tag: str) -> str | None:
    result = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{.Id}}", tag], capture_output=True, text=True
    )
    return result.stdout.strip() if result.returncode == 0 else None


def created(tag: str) -> str:
    """When the image was built: a reused golden image may predate the working tree's role."""
    return subprocess.run(
        ["docker", "image", "inspect", "--format", "{{.Created}}", tag], capture_output=True, text=True
    ).stdout.strip()


def ensure_base_images() -> None:
    """scripts/build-base-images skips images that exist: seconds when they do."""
    subprocess.run(
        [str(PROJECT_ROOT / "scripts" / "build-base-images")], check=True, stdout=subprocess.DEVNULL
    )


def ensure_golden(tag: str = GOLDEN, rebuild: bool = False) -> tuple[str, bool]:
    """The golden image, and whether this run built it: `make image` (build, then verify the
    data path) when it is missing. Its manifest goes to GOLDEN_MANIFEST, not build/manifest.json
    (make_image wants it inside the checkout)."""
    old = image_id(tag)
    if old and not rebuild:
        return tag, False
    log(f"{tag} {'rebuild' if old else 'missing'}: building it with local_image.make_image (2-3 minutes)")
    with contextlib.redirect_stdout(sys.stderr):  # its report is progress here; stdout is our table
        failed = make_image.main(["--tag", tag, "--manifest", str(GOLDEN_MANIFEST)])
    if failed:
        raise RuntimeError(f"make image failed; see {PROJECT_ROOT / 'build' / 'make-image.log'}")
    if old and old != image_id(tag):  # the replaced image, unless a container still uses it
        subprocess.run(["docker", "rmi", old], capture_output=True)
    return tag, True


def ensure_bench_image() -> str:
    base_id = image_id(BASE)
    built_from = subprocess.run(
        ["docker", "image", "inspect", "--format", f'{{{{index .Config.Labels "{BASE_LABEL}"}}}}', BENCH],
        capture_output=True,
        text=True,
    ).stdout.strip()
    if built_from != base_id:
        log(f"building {BENCH} from {BASE} (apt: iptables-persistent, iperf3, iputils-ping)")
        subprocess.run(
            ["docker", "build", "--quiet", "--tag", BENCH, "-"],
            input=DOCKERFILE.format(base_id=base_id),
            text=True,
            check=True,
            capture_output=True,
        )
    return BENCH


def copy_botocore(dest: Path) -> Path:
    """botocore and its dependencies, as installed here, into dest (a PYTHONPATH entry)."""
    for name in BOTOCORE_DISTRIBUTIONS:
        distribution = metadata.distribution(name)
        for file in distribution.files or []:
            if file.parts[0] in ("..", "__pycache__") or file.suffix == ".pyc":
                continue
            target = dest / file
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(distribution.locate_file(file), target)
    return dest
