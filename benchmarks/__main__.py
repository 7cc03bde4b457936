# Copyright: the ecs-imds-golden authors
# Apache License 2.0
"""python -m benchmarks: measure the golden-AMI pipeline, print a table, write results.

    python -m benchmarks                 # everything (~10-15 min on 2 cores), writes results/latest.json
    python -m benchmarks --only imds     # one measurement (repeatable), writes results/only-imds.json
    python -m benchmarks --smoke         # seconds, no Docker: harness, client scripts, moto audit path

Measurements (one module each): imds.py (time-to-fail of a blocked IMDS request), role.py
(role cost next to the seed's shell recipe), datapath.py (throughput and connection rate with
and without the rules), audit_scaling.py (API calls of `golden-ami audit` as a cluster grows),
dockerstart.py (docker.service's start with and without the role's drop-in), heal.py (the
heal timer: time from a flush to the block being back, and its CPU cost).
Progress goes to stderr, the table to stdout. Exit 0 when every target passed, 1 when a
target failed (the results are still written), 2 when the harness itself failed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from local_image.tools import MissingTool, venv_tool

from benchmarks import audit_scaling, datapath, dockerstart, fixture, heal, images, imds, report, role, stats
from benchmarks.progress import log

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
MEASUREMENTS = ("imds", "role", "datapath", "audit", "dockerstart", "heal")
AUDIT_SIZES = (100, 1000, 5000)
SMOKE_AUDIT_SIZES = (1, 150)  # 150: two pages, so paging is exercised
# Both clients of imds_client.py against a refused port, importing only the copied botocore.
SMOKE_CLIENT = """\
import sys, json
sys.path[:0] = {path!r}
import imds_client
print(json.dumps([imds_client.boto("http://127.0.0.1:9/"), imds_client.raw("127.0.0.1", 9)]))
"""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", choices=MEASUREMENTS, help="run only this (repeatable)")
    parser.add_argument("--smoke", action="store_true", help="fast harness check; writes no results file")
    parser.add_argument(
        "--output", type=Path, help="results file (default: results/latest.json, or only-*.json)"
    )
    parser.add_argument(
        "--golden",
        default=images.GOLDEN,
        help=f"golden image; built with make image if missing (default {images.GOLDEN})",
    )
    parser.add_argument("--rebuild-golden", action="store_true", help="rebuild the golden image first")
    parser.add_argument("--rounds", type=int, default=6, help="imds: interleaved rounds (default 6)")
    parser.add_argument(
        "--per-round", type=int, default=6, help="imds: requests per case and round (default 6)"
    )
    parser.add_argument("--role-runs", type=int, default=3, help="role: fresh targets per side (default 3)")
    # 12 pairs of 4 s: with 8 of 2 s, single samples on 2 vCPUs swung by 15% and one run's
    # ratio by 10%; this keeps the per-pair spread near 5% for about 2 minutes.
    parser.add_argument("--pairs", type=int, default=12, help="datapath: ABBA pairs (default 12)")
    parser.add_argument(
        "--iperf-seconds", type=int, default=4, help="datapath: timed seconds per iperf3 run (default 4)"
    )
    parser.add_argument("--connections", type=int, default=2000, help="datapath: connects per sample")
    parser.add_argument(
        "--start-pairs", type=int, default=8, help="dockerstart: ABBA pairs of Docker starts (default 8)"
    )
    args = parser.parse_args(argv)
    if args.output is None and not args.smoke:
        args.output = RESULTS / (
            "latest.json" if not args.only else f"only-{'-'.join(sorted(set(args.only)))}.json"
        )
    return args


@contextlib.contextmanager
def _phase(phases: dict, name: str):
    start = time.monotonic()
    log(f"{name}: start")
    try:
        yield
    finally:
        phases[name] = round(time.monotonic() - start, 1)
        log(f"{name}: {phases[name]:.0f} s")


def run(args: argparse.Namespace) -> int:
    selected = set(args.only or MEASUREMENTS)
    started = time.monotonic()
    date, machine, before, git = report.now(), report.machine(), report.neighbours(), report.git_state()
    log_file = RESULTS / "bench.log"  # the Ansible output of every playbook run
    log_file.parent.mkdir(parents=True, exist_ok=True)
    log_file.write_text("")
    measured: dict = {}
    phases: dict = {}
    images_used: dict = {}
    try:
        with _phase(phases, "images"):
            images.ensure_base_images()
            bench = images.ensure_bench_image()
            if selected & {"imds", "datapath", "dockerstart", "heal"}:
                golden, built = images.ensure_golden(args.golden, args.rebuild_golden)
                images_used["golden"] = {
                    "image": golden,
                    "id": images.image_id(golden),
                    "created": images.created(golden),
                    "built_this_run": built,
                }
            images_used["bench"] = {"image": bench, "id": images.image_id(bench)}
        if selected & {"imds", "datapath"}:
            booting = time.monotonic()
            with fixture.golden_instance(golden, bench, log_file) as host:
                phases["fixture"] = round(time.monotonic() - booting, 1)  # boot, prepare.yml, image load
                if "imds" in selected:
                    with _phase(phases, "imds"):
                        measured["imds"] = imds.measure(host, bench, args.rounds, args.per_round)
                if "datapath" in selected:
                    with _phase(phases, "datapath"):
                        measured["datapath"] = datapath.measure(
                            host, bench, args.pairs, args.iperf_seconds, args.connections
                        )
        if "dockerstart" in selected:  # a host of its own: restarting Docker would stop the clients
            with _phase(phases, "dockerstart"):
                measured["dockerstart"] = dockerstart.measure(golden, args.start_pairs)
        if "heal" in selected:  # a host of its own: each sample flushes its filter tables
            with _phase(phases, "heal"):
                measured["heal"] = heal.measure(golden, bench, log_file)
        if "role" in selected:
            with _phase(phases, "role"):
                measured["role"] = role.measure(bench, args.role_runs, log_file)
        if "audit" in selected:
            with _phase(phases, "audit"):
                measured["audit"] = audit_scaling.measure(AUDIT_SIZES)
    except (RuntimeError, subprocess.CalledProcessError, OSError) as exc:
        detail = getattr(exc, "stderr", None) or ""
        print(f"bench: failed: {exc} {detail}".strip(), file=sys.stderr)
        return 2

    wall = time.monotonic() - started
    data = report.results_file(measured, machine, date, wall)
    data["git"] = git
    if selected == set(MEASUREMENTS):  # the budget is for the whole run
        data["targets"].append(
            {
                "target": "whole run under 15 minutes",
                "pass": wall < report.WALL_BUDGET,
                "detail": f"{wall:.0f} s",
            }
        )
    data["phase_seconds"] = phases
    data["images"] = images_used
    data["neighbours"] = {"at_start": before, "at_end": report.neighbours()}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(data, indent=2) + "\n")
    print(report.render(data, measured))
    print(f"\nwall time {wall:.0f} s; results in {args.output}; Ansible log in {log_file}")
    return 0 if all(t["pass"] for t in data["targets"]) else 1


def _smoke_dockerstart() -> tuple[str, bool, str]:
    """The dockerstart summary, targets and table from fixed samples: per-pair differences
    40, 50 and 10 ms (median 40), ratios 1.04, 1.048 and 1.01 (median 1.04)."""
    wall = {"with": [1040.0, 1100.0, 1010.0], "without": [1000.0, 1050.0, 1000.0]}
    samples = {
        state: [
            {"wall_ms": ms, "unit_ms": ms - 10, "pre_ms": ms / 100, "intact_after_start": state == "with"}
            for ms in wall[state]
        ]
        for state in dockerstart.STATES
    }
    summary = dockerstart.summarise(samples, dockerstart.dropin_path())
    measured = {"dockerstart": summary}
    table = report.render({"date": "", "machine": "", "targets": report.targets(measured)}, measured)
    ok = (
        summary["overhead_ms"] == 40
        and summary["ratio"] == 1.04
        and "PASS  docker.service start: the block adds at most 100 ms: +40 ms" in table
        and "PASS  with the drop-in, the block was intact after every Docker start: 3/3" in table
        and "5. docker.service start" in table
    )
    detail = f"overhead {summary['overhead_ms']} ms, ratio {summary['ratio']}"
    return "dockerstart: paired summary, target and table from fixed samples", ok, detail


def smoke(args: argparse.Namespace) -> int:
    """No Docker, seconds: the client scripts run on the copied botocore alone, the stats
    helper and the report work, and the moto audit path counts calls as the formula says."""
    checks: list[tuple[str, bool, str]] = []
    for script in sorted(fixture.CLIENTS.glob("*.py")):
        compile(script.read_text(), str(script), "exec")
    with tempfile.TemporaryDirectory() as scratch:
        pylib = images.copy_botocore(Path(scratch) / "pylib")
        # -S: no site-packages, so botocore can only come from the copy, as in the container.
        code = SMOKE_CLIENT.format(path=[str(pylib), str(fixture.CLIENTS)])
        probe = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, timeout=60)
    if probe.returncode:
        checks.append(("imds_client on the copied botocore", False, probe.stderr.strip()[-300:]))
    else:
        (boto_ms, boto_ok), (raw_ms, raw_ok) = json.loads(probe.stdout)
        fast = not boto_ok and not raw_ok and boto_ms < 1000 and raw_ms < 1000
        checks.append(
            (
                "imds_client on the copied botocore (refused port)",
                fast,
                f"boto {boto_ms:.1f} ms, raw {raw_ms:.1f} ms",
            )
        )
    checks.append(
        ("stats: median and p95", stats.median([1, 2, 3, 4]) == 2.5 and stats.p95(range(1, 102)) == 96, "")
    )
    checks.append(_smoke_dockerstart())

    measured = {"audit": audit_scaling.measure(SMOKE_AUDIT_SIZES)}
    data = report.results_file(measured, report.machine(), report.now(), 0)
    data["targets"] += [{"target": name, "pass": ok, "detail": detail} for name, ok, detail in checks]
    print(report.render(data, measured))
    if args.output:  # only when asked: a smoke run never touches results/latest.json by default
        args.output.write_text(json.dumps(data, indent=2) + "\n")
    passed = all(t["pass"] for t in data["targets"])
    written = f"results written to {args.output} only" if args.output else "no results file written"
    print(f"\nsmoke: {'OK' if passed else 'FAILED'}; {written}")
    return 0 if passed else 1


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.smoke:
        return smoke(args)
    try:  # the playbooks run through local_image.make_image.playbook, which finds it so too
        venv_tool("ansible-playbook")
    except MissingTool as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
