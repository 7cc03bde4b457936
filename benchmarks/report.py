# Copyright: the ecs-imds-golden authors
# Apache License 2.0
"""The results file, the printed table and the targets, from the measurements' results."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
from pathlib import Path

CLIENT_NAMES = {
    "boto": "botocore InstanceMetadataProvider (timeout 1 s, 1 attempt)",
    "raw": "raw socket HTTP GET (timeout 1 s)",
}
WALL_BUDGET = 15 * 60


def machine() -> str:
    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")),
        platform.processor() or platform.machine(),
    )  # fmt: skip
    memory = int(Path("/proc/meminfo").read_text().split()[1]) / 2**20
    try:
        docker = subprocess.run(
            ["docker", "version", "--format", "{{.Server.Version}}"], capture_output=True, text=True
        ).stdout.strip()
    except OSError:  # no Docker client: the smoke run needs none
        docker = ""
    return (
        f"{cpu}, {os.cpu_count()} CPUs, {memory:.0f} GiB RAM, Linux {platform.release()}, "
        f"Docker {docker or 'n/a'}, Python {platform.python_version()}"
    )


def neighbours() -> dict:
    """What else was running: other containers (CI) share the 2 cores and skew timings."""
    names = subprocess.run(["docker", "ps", "--format", "{{.Names}}"], capture_output=True, text=True).stdout
    others = [n for n in names.split() if not n.startswith("ecs-imds-bench-")]
    return {"load_average": [round(x, 2) for x in os.getloadavg()], "other_containers": others}


def git_state() -> dict:
    """The commit measured, and the tracked files that differed from it: the role and the
    playbooks are read from the working tree at run time."""

    def git(*argv: str) -> str:
        return subprocess.run(
            ["git", *argv], cwd=Path(__file__).parent, capture_output=True, text=True
        ).stdout

    changed = git("status", "--porcelain", "--untracked-files=no").splitlines()
    return {"commit": git("rev-parse", "HEAD").strip(), "modified": [line[3:] for line in changed]}


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def results_file(measured: dict, machine_text: str, date: str, wall: float) -> dict:
    """The shape of benchmarks/results/latest.json; keys for measurements not run are left out."""
    data: dict = {}
    if "imds" in measured:
        clients = measured["imds"]["clients"]
        data["imds_time_to_fail_ms"] = {**clients["boto"], "client": CLIENT_NAMES["boto"]}
        data["imds_time_to_fail_ms_raw"] = {**clients["raw"], "client": CLIENT_NAMES["raw"]}
        data["imds"] = {k: v for k, v in measured["imds"].items() if k != "clients"}
    if "role" in measured:
        data["role_seconds"] = measured["role"]
    if "datapath" in measured:
        data["throughput_ratio"] = measured["datapath"]["throughput_ratio"]
        data["connection_rate_ratio"] = measured["datapath"]["connection_rate_ratio"]
        data["datapath"] = measured["datapath"]
    if "audit" in measured:
        sizes = measured["audit"]["sizes"]
        data["audit_calls"] = {n: row["calls"] for n, row in sizes.items()}
        data["audit_verify_hosts_calls"] = {n: row["verify_hosts"]["calls"] for n, row in sizes.items()}
        data["audit"] = measured["audit"]
    if "heal" in measured:
        data["heal_p99_ms"] = {f: r["block_ms"]["p99"] for f, r in measured["heal"]["watcher"].items()}
        data["heal_cpu_share"] = measured["heal"]["cpu_share"]
        data["heal"] = measured["heal"]
    if "dockerstart" in measured:
        data["docker_start_overhead_ms"] = measured["dockerstart"]["overhead_ms"]
        data["docker_start_ratio"] = measured["dockerstart"]["ratio"]
        data["dockerstart"] = measured["dockerstart"]
    data["targets"] = targets(measured)
    data.update(machine=machine_text, date=date, wall_seconds=round(wall, 1))
    return data


def targets(measured: dict) -> list[dict]:
    """Each target with its value and PASS/FAIL; only for what was measured."""
    rows = []

    def add(name: str, passed: bool, detail: str) -> None:
        rows.append({"target": name, "pass": bool(passed), "detail": detail})

    if "imds" in measured:
        for client, result in measured["imds"]["clients"].items():
            reject, drop, floor = (result[c]["median"] for c in ("reject", "drop", "floor"))
            add(
                f"reject median within 5 ms of the floor [{client}]",
                reject <= floor + 5,
                f"reject {reject:.2f} ms, floor {floor:.2f} ms (difference {reject - floor:+.2f} ms)",
            )
            add(
                f"drop median >= 100x reject's [{client}]",
                drop >= 100 * reject,
                f"drop {drop:.1f} ms = {result['drop_over_reject']:.0f}x reject",
            )
        wrong = {c: n for c, n in measured["imds"]["unexpected_outcomes"].items() if n}
        add(
            "every request had the expected outcome (reject/drop fail, floor succeeds)",
            not wrong,
            f"unexpected: {wrong}" if wrong else "all as expected",
        )
    if "role" in measured:
        role = measured["role"]
        add(
            "idempotent re-run median under 10 s",
            role["idempotent_median"] < 10,
            f"{role['idempotent_median']:.1f} s (role alone {role['role_only_idempotent_median']:.1f} s)",
        )
        add(
            "the re-runs changed nothing (changed=0)",
            not any(role["idempotent_changed"]),
            f"changed per re-run: {role['idempotent_changed']}",
        )
    if "datapath" in measured:
        ratio = measured["datapath"]["throughput_ratio"]
        add("throughput ratio (with/without rules) >= 0.97", ratio >= 0.97, f"{ratio:.3f}")
        walked = measured["datapath"]["packets_through_loaded_chain"]
        add("the measured traffic walked the loaded DOCKER-USER chain", walked > 0, f"{walked} packets")
    if "audit" in measured:
        sizes = measured["audit"]["sizes"]
        add(
            "audit calls follow the formula",
            all(row["formula_holds"] for row in sizes.values()),
            ", ".join(f"n={n}: {row['calls']}/{row['expected_calls']}" for n, row in sizes.items()),
        )
        verify = {n: row["verify_hosts"] for n, row in sizes.items()}
        add(
            "audit --verify-hosts calls follow the formula",
            all(row["formula_holds"] for row in verify.values()),
            ", ".join(f"n={n}: {row['calls']}/{row['expected_calls']}" for n, row in verify.items()),
        )
    if "heal" in measured:
        from benchmarks import heal

        healed = measured["heal"]
        for fault, result in healed["watcher"].items():
            block, back = result["block_ms"], result["back_ms"]
            add(
                f"heal: the watcher has the block back at p99 within {heal.TARGET_MS} ms of {fault}",
                block["p99"] <= heal.TARGET_MS and result["samples"] >= 50,
                f"p50 {block['median']:.0f} ms, p99 {block['p99']:.0f} ms, max {block['max']:.0f} ms;"
                f" every layer p99 {back['p99']:.0f} ms ({result['samples']} faults;"
                f" {result['reached_imds']} probes reached IMDS)",
            )
        add(
            "heal: the watcher, idle, uses under 0.1% of one core",
            healed["watcher_idle_share"] < heal.IDLE_TARGET,
            f"{healed['watcher_idle_share'] * 100:.3f}% of a core",
        )
        add(
            "heal: the watcher and its backstop timer cost under 1% of one core",
            healed["cpu_share"] < heal.CPU_TARGET,
            f"{healed['cpu_share'] * 100:.2f}% of a core (heal on minus off)",
        )
    if "dockerstart" in measured:
        start = measured["dockerstart"]
        wall = start["wall_ms"]
        add(
            "docker.service start: the block adds at most 100 ms",
            start["overhead_ms"] <= 100,
            f"{start['overhead_ms']:+.0f} ms (median with {wall['with']['median']:.0f} ms, "
            f"without {wall['without']['median']:.0f} ms; ratio {start['ratio']:.3f})",
        )
        add(
            "with the drop-in, the block was intact after every Docker start",
            start["intact_after_start"]["with"] == start["pairs"],
            f"{start['intact_after_start']['with']}/{start['pairs']}",
        )
    return rows


def _table(rows: list[list[str]], header: list[str]) -> list[str]:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
    return ["    " + fmt.format(*header), *("    " + fmt.format(*map(str, r)) for r in rows)]


def render(data: dict, measured: dict) -> str:
    lines = [f"ecs-imds-golden benchmarks, {data['date']}", f"  machine: {data['machine']}"]
    if "git" in data:
        modified = data["git"]["modified"]
        lines.append(
            f"  tree:    {data['git']['commit'][:12]}"
            + (f" + modified {', '.join(modified)}" if modified else "")
        )
    lines.append("")
    if "imds" in measured:
        imds = measured["imds"]
        n = imds["clients"]["boto"]["reject"]["n"]
        lines.append(
            f"1. IMDS time-to-fail, ms: timed inside the container, {n} requests per case and client "
            f"in {imds['rounds']} interleaved rounds"
        )
        rows = []
        for client, result in imds["clients"].items():
            for case in ("reject", "drop", "floor"):
                s = result[case]
                rows.append([f"{client} {case}", f"{s['median']:.2f}", f"{s['p95']:.2f}", f"{s['min']:.2f}",
                             f"{s['max']:.2f}"])  # fmt: skip
            rows.append([f"{client} drop/reject", f"{result['drop_over_reject']:.0f}x", "", "", ""])
            rows.append([f"{client} reject/floor", f"{result['reject_over_floor']:.2f}", "", "", ""])
        lines += _table(rows, ["client case", "median", "p95", "min", "max"])
        lines += [f"    {k}: {v}" for k, v in CLIENT_NAMES.items()]
        lines.append("")
    if "role" in measured:
        role = measured["role"]
        lines.append(f"2. Role cost, s: {role['playbook']}, {role['runs']} runs, median")
        rows = [
            ["first converge (fresh target)", f"{role['first_converge_median']:.1f}"],
            ["idempotent re-run", f"{role['idempotent_median']:.1f}"],
            ["  of which the role alone (re-run)", f"{role['role_only_idempotent_median']:.1f}"],
            ["seed shell recipe (fresh target)", f"{role['shell_recipe_median']:.3f}"],
            ["idempotent re-run / shell recipe", f"{role['idempotent_over_shell']:.0f}x"],
        ]
        lines += [*_table(rows, ["", "seconds"]), ""]
    if "datapath" in measured:
        dp = measured["datapath"]
        lines.append(
            f"3. Data path, bridge container -> {dp['peer']} in the imds namespace, {dp['pairs']} ABBA pairs:"
            " medians, ratio = median of per-pair ratios"
        )
        t, c = dp["throughput_gbit_s"], dp["connections_per_s"]
        rows = [
            ["iperf3 throughput, Gbit/s", f"{t['with']['median']:.2f}", f"{t['without']['median']:.2f}",
             f"{dp['throughput_ratio']:.3f}"],
            ["new TCP connections per s", f"{c['with']['median']:.0f}", f"{c['without']['median']:.0f}",
             f"{dp['connection_rate_ratio']:.3f}"],
        ]  # fmt: skip
        lines += [*_table(rows, ["", "with rules", "without", "ratio"]), ""]
    if "audit" in measured:
        audit = measured["audit"]
        lines.append("4. Audit scaling: golden-ami audit --cluster, one cluster, moto paging like AWS")
        lines.append(f"    {audit['formula']}")
        rows = [
            [
                n,
                row["calls"],
                row["expected_calls"],
                "yes" if row["formula_holds"] else "NO",
                f"{row['seconds']:.2f}",
            ]
            for n, row in audit["sizes"].items()
        ]
        lines += [*_table(rows, ["n", "calls", "formula", "match", "seconds"]), ""]
        lines.append(f"   With --verify-hosts, every host verified: {audit['verify_formula']}")
        rows = [
            [
                n,
                row["verify_hosts"]["calls"],
                row["verify_hosts"]["expected_calls"],
                "yes" if row["verify_hosts"]["formula_holds"] else "NO",
                ", ".join(
                    f"{k.split(':')[1]} {v}"
                    for k, v in row["verify_hosts"]["by_call"].items()
                    if k.startswith("ssm:") and k != "ssm:GetParametersByPath"
                ),
            ]
            for n, row in audit["sizes"].items()
        ]
        lines += [*_table(rows, ["n", "calls", "formula", "match", "SSM Run Command calls"]), ""]
    if "heal" in measured:
        healed = measured["heal"]
        lines.append(
            f"6. Heal: {healed['samples']} of each fault in a golden-image host, repaired by the watcher (the"
            f" kernel's events) and by the timer alone (every {healed['interval_s']:g} s); block = from the"
            " fault to the stamp of the line naming our nftables table (0: the table stood); every layer ="
            " to the last heal line's stamp; reached = a bridge container's attempts that reached IMDS"
            f" ({healed['probe_attempts_per_s']:.0f} a second) between the fault and its repair"
        )
        rows = []
        for mode in ("watcher", "timer"):
            for fault, result in healed[mode].items():
                block, back = result["block_ms"], result["back_ms"]
                rows.append(
                    [mode, fault]
                    + [f"{block[k]:.0f}" for k in ("median", "p99", "max")]
                    + [f"{back[k]:.0f}" for k in ("median", "p99", "max")]
                    + [str(result["reached_imds"])]
                )
        head = ["heal", "fault", "block p50 ms", "p99", "max", "every layer p50 ms", "p99", "max", "reached"]
        lines += _table(rows, head)
        lines += [
            f"    the watcher, idle: {healed['watcher_idle_share'] * 100:.3f}% of one core; the heal on"
            f" (watcher and backstop timer) minus off: {healed['cpu_share'] * 100:.2f}%"
            f" ({len(healed['cpu_on'])} ABBA pairs of {healed['window_s']:g} s)",
            "",
        ]
    if "dockerstart" in measured:
        start = measured["dockerstart"]
        lines.append(
            f"5. docker.service start, ms: stop, then `systemctl start` in a golden-image host, with and"
            f" without {start['dropin']}, {start['pairs']} ABBA pairs: medians; difference and ratio ="
            " medians of per-pair values"
        )
        names = {
            "wall_ms": "systemctl start, timed in the host",
            "unit_ms": "start job (systemd: inactive -> active)",
            "pre_ms": "  ExecStartPre (inactive -> dockerd's exec)",
        }
        rows = [
            [name, f"{row['with']['median']:.0f}", f"{row['without']['median']:.0f}",
             f"{row['difference']:+.0f}", f"{row['ratio']:.3f}" if "ratio" in row else ""]
            for name, row in ((name, start[key]) for key, name in names.items())
        ]  # fmt: skip
        rows.append(["  ExecStartPost and the rest", "", "", f"{start['post_ms_difference']:+.0f}", ""])
        lines += _table(rows, ["", "with drop-in", "without", "difference", "ratio"])
        intact = start["intact_after_start"]
        lines += [
            f"    block intact once Docker was up (the loader's check): with the drop-in {intact['with']}"
            f"/{start['pairs']}, without {intact['without']}/{start['pairs']}",
            "",
        ]
    lines.append("Targets")
    for row in data["targets"]:
        lines.append(f"    {'PASS' if row['pass'] else 'FAIL'}  {row['target']}: {row['detail']}")
    return "\n".join(lines)
