"""Benchmark 3, `scale`: lookup hops, requests and datagrams per lookup, and bootstrap cost as the simulated
network grows, with mean hops fitted to a + b·log2(N).

    python -m bench.scale --sizes 100,1000,10000 --lookups 1000 --seed 7 --json bench/results/scale.json

Each size runs in its own worker process (so that peak RSS is that size's own, and one network's memory is
gone before the next is built): grow N nodes in waves (`kadnode.sim.scenarios.grow`), let the network
settle a minute of virtual time, then run the lookups of random targets from random nodes, `--concurrency`
at a time, each compared with the brute-force k closest. Sizes above 10,000 need `--large`, and even then
run only if the memory extrapolated from the sizes already measured fits in what the machine has free;
otherwise the report says why they were left out, with the estimate.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.common import distribution, log, progress_logger, run_json_worker

DEFAULT_SIZES = (100, 1000, 10_000)
TARGET_LARGE = 100_000
"""The issue's largest size, tried only with `--large` and when it fits in memory."""
LARGE_LIMIT = 10_000
"""Sizes above this need `--large`: 10,000 nodes take ~5 minutes and ~2.5 GB today."""
SETTLE = 60.0
"""Virtual seconds between the last join and the lookups, as `kadnode sim` does."""
LOOKUP_SEED_SALT = 0x100C
"""The lookups' random source is seeded with seed ^ this (the same draws as `kadnode sim`)."""
MEMORY_HEADROOM = 0.85
"""A large size runs only if its extrapolated peak RSS is below this share of MemAvailable."""
FALLBACK_KB_PER_NODE = 250.0
FALLBACK_WALL_PER_NODE = 0.035
"""Used to estimate a large size when no smaller size was measured in the run (docs/simulator.md:
10,000 nodes, 2,511 MB peak RSS, 351 s of wall time)."""
REQUESTS_TARGET_N = 10_000
REQUESTS_TARGET = 40.0
"""Must-show 4: a lookup at N = 10,000 sends fewer than 40 requests on average."""
R2_TARGET = 0.95
SIM_TARGET_N = 10_000
SIM_TARGET_LOOKUPS = 1000
SIM_TARGET_WALL = 300.0
"""Must-show 1: 10,000 nodes bootstrap and serve 1,000 lookups within 5 minutes, agreeing with brute force."""


# ---------------------------------------------------------------------- least squares


@dataclass(frozen=True, slots=True)
class Fit:
    """y = a + b·x by ordinary least squares, with the coefficient of determination."""

    a: float
    b: float
    r2: float
    points: int

    def at(self, x: float) -> float:
        return self.a + self.b * x


def least_squares(xs: Sequence[float], ys: Sequence[float]) -> Fit | None:
    """The least-squares line through (xs, ys); None with fewer than two distinct xs."""
    if len(xs) != len(ys):
        raise ValueError("xs and ys differ in length")
    n = len(xs)
    if n < 2:
        return None
    mean_x, mean_y = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mean_x) ** 2 for x in xs)
    if sxx == 0:
        return None
    sxy = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True))
    b = sxy / sxx
    a = mean_y - b * mean_x
    ss_res = sum((y - (a + b * x)) ** 2 for x, y in zip(xs, ys, strict=True))
    ss_tot = sum((y - mean_y) ** 2 for y in ys)
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else (1.0 if ss_res == 0 else 0.0)
    return Fit(a, b, r2, n)


def fit_log2(sizes: Sequence[int], values: Sequence[float]) -> Fit | None:
    """values = a + b·log2(N)."""
    return least_squares([math.log2(n) for n in sizes], list(values))


# ---------------------------------------------------------------------- worker: one size


def measure_size(nodes: int, *, seed: int, lookups: int, concurrency: int, settle: float = SETTLE) -> dict[str, Any]:
    """Grow a simulated network of `nodes` nodes, settle it, run `lookups` lookups: every figure of one row."""
    from kadnode.sim.network import SimNetwork
    from kadnode.sim.report import peak_rss_mb
    from kadnode.sim.scenarios import grow, run_lookups

    rss_base = peak_rss_mb()
    started = time.perf_counter()
    net = SimNetwork(seed)
    log(f"N={nodes:,}: growing")
    grow(net, nodes, progress=progress_logger(f"N={nodes:,} joined", nodes))
    grow_wall = time.perf_counter() - started
    grow_virtual, grow_datagrams = net.now, net.sent

    settle_started, settle_sent = time.perf_counter(), net.sent
    net.run_until(net.now + settle)
    settle_wall, settle_datagrams = time.perf_counter() - settle_started, net.sent - settle_sent

    log(f"N={nodes:,}: grown in {grow_wall:.1f} s wall; {lookups:,} lookups, {concurrency} at a time")
    lookup_started, lookup_virtual_start = time.perf_counter(), net.now
    rng = random.Random(seed ^ LOOKUP_SEED_SALT)
    progress = progress_logger(f"N={nodes:,} lookups", lookups)
    stats = run_lookups(net, lookups, rng, concurrency=concurrency, progress=progress)
    lookup_wall = time.perf_counter() - lookup_started
    total_wall = time.perf_counter() - started
    count = max(1, stats.total)
    peak = peak_rss_mb()
    return {
        "nodes": nodes,
        "seed": seed,
        "grow": {
            "virtual_s": grow_virtual,
            "wall_s": grow_wall,
            "datagrams": grow_datagrams,
            "datagrams_per_node": grow_datagrams / nodes,
            "datagrams_per_wall_second": grow_datagrams / grow_wall if grow_wall else 0.0,
        },
        "settle": {"virtual_s": settle, "wall_s": settle_wall, "datagrams": settle_datagrams},
        "lookups": {
            "count": stats.total,
            "concurrency": concurrency,
            "exact": stats.exact,
            "exact_ratio": stats.exact_ratio,
            "mean_overlap": stats.mean_overlap,
            "hops": distribution([float(h) for h in stats.hops]),
            "hops_histogram": {str(h): c for h, c in sorted(Counter(stats.hops).items())},
            "requests": distribution([float(q) for q in stats.queried]),
            "datagrams_per_lookup": stats.datagrams / count,
            "latency_ms": distribution([d * 1000 for d in stats.latencies]),
            "virtual_s": net.now - lookup_virtual_start,
            "wall_s": lookup_wall,
        },
        "datagrams": net.sent,
        "wall_s": total_wall,
        "datagrams_per_wall_second": net.sent / total_wall if total_wall else 0.0,
        "rss_base_mb": rss_base,
        "peak_rss_mb": peak,
        "rss_kb_per_node": (peak - rss_base) * 1024 / nodes,
        "trace_hash": net.trace_hash(),
    }


def run_worker(nodes: int, args: argparse.Namespace) -> dict[str, Any]:
    """Measure one size in a fresh process (its own peak RSS; the previous network's memory is gone)."""
    worker_args = [
        "--worker", str(nodes), "--lookups", str(args.lookups), "--seed", str(args.seed),
        "--concurrency", str(args.concurrency), "--settle", str(args.settle),
    ]  # fmt: skip
    return run_json_worker("bench.scale", worker_args, args.worker_timeout, {"nodes": nodes})


# ---------------------------------------------------------------------- estimates for sizes left out


def mem_available_mb() -> float | None:
    """MemAvailable from /proc/meminfo (Linux), else None."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def estimate(nodes: int, runs: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Peak RSS and wall time of a size not measured, extrapolated from the largest measured run as
    N·log2(N), for both: each node's routing table and each join's bootstrap lookup grow with log N.

    Small networks understate the memory per node, so below `LARGE_LIMIT` nodes the memory estimate is
    at least the reference figure (`FALLBACK_KB_PER_NODE`): refusing a size that would fit costs a rerun,
    trying one that does not can take the machine down."""
    floor = {"rss_mb": nodes * FALLBACK_KB_PER_NODE / 1024, "wall_s": nodes * FALLBACK_WALL_PER_NODE}
    measured = [r for r in runs if "error" not in r]
    if not measured:
        return {**floor, "from_nodes": 0}
    ref = max(measured, key=lambda r: r["nodes"])
    n0 = ref["nodes"]
    growth = (nodes / n0) * (math.log2(nodes) / math.log2(max(2, n0)))
    rss = ref["rss_base_mb"] + max(0.0, ref["peak_rss_mb"] - ref["rss_base_mb"]) * growth
    if n0 < LARGE_LIMIT:
        rss = max(rss, floor["rss_mb"])
    return {"rss_mb": rss, "wall_s": ref["wall_s"] * growth, "from_nodes": n0}


def omission(nodes: int, reason: str, runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    guess = estimate(nodes, runs)
    return {
        "nodes": nodes,
        "reason": reason,
        "estimated_peak_rss_mb": round(guess["rss_mb"]),
        "estimated_wall_s": round(guess["wall_s"]),
        "estimated_from_nodes": guess["from_nodes"],
        "mem_available_mb": mem_available_mb(),
    }


def large_fits(nodes: int, runs: Sequence[dict[str, Any]]) -> str | None:
    """None when a large size should fit in memory; otherwise why not."""
    available = mem_available_mb()
    guess = estimate(nodes, runs)["rss_mb"]
    if available is not None and guess > MEMORY_HEADROOM * available:
        return f"estimated peak RSS {guess:,.0f} MB exceeds {MEMORY_HEADROOM:.0%} of the {available:,.0f} MB available"
    return None


# ---------------------------------------------------------------------- the report


def analyse(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Fits of mean hops and mean requests against log2(N), and of hops against N to compare (with three
    sizes or more: any line fits two points)."""
    ok = sorted((r for r in runs if "error" not in r), key=lambda r: r["nodes"])
    sizes = [r["nodes"] for r in ok]
    hops = [r["lookups"]["hops"]["mean"] for r in ok]
    requests = [r["lookups"]["requests"]["mean"] for r in ok]
    fits: dict[str, Any] = {}
    for name, fit in (
        ("hops_log2", fit_log2(sizes, hops)),
        ("requests_log2", fit_log2(sizes, requests)),
        ("hops_linear", least_squares([float(n) for n in sizes], hops) if len(sizes) >= 3 else None),
    ):
        fits[name] = asdict(fit) if fit is not None else None
    return fits


def must_show(runs: Sequence[dict[str, Any]], fits: dict[str, Any]) -> list[dict[str, Any]]:
    """Must-show 4's checks, each with the measured figure and the target."""
    checks: list[dict[str, Any]] = []

    def check(name: str, measured: Any, target: str, passed: bool, note: str | None = None) -> None:
        entry: dict[str, Any] = {"check": name, "measured": measured, "target": target, "pass": bool(passed)}
        if note:
            entry["note"] = note
        checks.append(entry)

    log_fit, lin_fit = fits.get("hops_log2"), fits.get("hops_linear")
    measured = sorted(r["nodes"] for r in runs if "error" not in r)
    if log_fit is not None and len(measured) >= 3:
        check("mean hops grow with log2(N) (slope b > 0)", round(log_fit["b"], 3), "> 0", log_fit["b"] > 0)
        check("log2(N) explains mean hops (R²)", round(log_fit["r2"], 4), f">= {R2_TARGET}", log_fit["r2"] >= R2_TARGET)
        if lin_fit is not None:
            check(
                "log2(N) fits mean hops better than N does (R²)",
                round(lin_fit["r2"], 4),
                f"< {log_fit['r2']:.4f}",
                lin_fit["r2"] < log_fit["r2"],
            )
    at_target = [r for r in runs if r["nodes"] == REQUESTS_TARGET_N and "error" not in r]
    if at_target:
        mean = at_target[0]["lookups"]["requests"]["mean"]
        check(
            f"requests per lookup at N={REQUESTS_TARGET_N:,}",
            round(mean, 2),
            f"< {REQUESTS_TARGET:g}",
            mean < REQUESTS_TARGET,
        )
    else:
        largest = max(measured, default=None)
        if largest is not None:
            row = next(r for r in runs if r["nodes"] == largest and "error" not in r)
            mean = row["lookups"]["requests"]["mean"]
            check(
                f"requests per lookup at N={largest:,}",
                round(mean, 2),
                f"< {REQUESTS_TARGET:g}",
                mean < REQUESTS_TARGET,
                note=f"target is for N={REQUESTS_TARGET_N:,}; not measured in this run",
            )
    return checks


def must_show_sim(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Must-show 1's timing and exactness, when this run has N=10,000 with at least 1,000 lookups."""
    row = next((r for r in runs if r["nodes"] == SIM_TARGET_N and "error" not in r), None)
    if row is None or row["lookups"]["count"] < SIM_TARGET_LOOKUPS:
        return []
    lk = row["lookups"]
    return [
        {
            "check": f"N={SIM_TARGET_N:,}: grow, settle and {lk['count']:,} lookups within {SIM_TARGET_WALL:g} s wall",
            "measured": round(row["wall_s"], 1),
            "target": f"< {SIM_TARGET_WALL:g}",
            "pass": row["wall_s"] < SIM_TARGET_WALL,
        },
        {
            "check": f"N={SIM_TARGET_N:,}: lookups agree with brute force",
            "measured": f"{lk['exact']}/{lk['count']}",
            "target": "all",
            "pass": lk["exact"] == lk["count"],
        },
    ]


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(lines)


TABLE_HEADERS = (
    "N",
    "exact",
    "hops mean",
    "p50",
    "p99",
    "requests",
    "datagrams/lookup",
    "join datagrams/node",
    "grow virtual s",
    "grow wall s",
    "total wall s",
    "sim datagrams/s",
    "peak RSS MB",
)


def table_rows(runs: Sequence[dict[str, Any]]) -> list[list[str]]:
    """One row per measured size (shared with bench.report's markdown table)."""
    rows = []
    for r in sorted((r for r in runs if "error" not in r), key=lambda r: r["nodes"]):
        lk = r["lookups"]
        rows.append(
            [
                f"{r['nodes']:,}",
                f"{lk['exact']}/{lk['count']}",
                f"{lk['hops']['mean']:.2f}",
                f"{lk['hops']['p50']:.0f}",
                f"{lk['hops']['p99']:.0f}",
                f"{lk['requests']['mean']:.1f}",
                f"{lk['datagrams_per_lookup']:.1f}",
                f"{r['grow']['datagrams_per_node']:.0f}",
                f"{r['grow']['virtual_s']:.0f}",
                f"{r['grow']['wall_s']:.1f}",
                f"{r['wall_s']:.1f}",
                f"{r['datagrams_per_wall_second']:,.0f}",
                f"{r['peak_rss_mb']:,.0f}",
            ]
        )
    return rows


def fit_line(fit: dict[str, Any] | None, what: str = "mean hops") -> str:
    if fit is None:
        return f"{what}: no fit (fewer than two sizes measured)"
    caveat = ": two points, any line fits them" if fit["points"] == 2 else ""
    return f"{what} = {fit['a']:.3f} + {fit['b']:.3f}·log2(N)   (R² = {fit['r2']:.4f}, {fit['points']} sizes{caveat})"


def format_report(report: dict[str, Any]) -> str:
    params = report["parameters"]
    runs = report["runs"]
    out = [
        f"scale benchmark: sizes {', '.join(f'{n:,}' for n in params['sizes'])}, {params['lookups']:,} lookups "
        f"each ({params['concurrency']} at a time), seed {params['seed']}, settle {params['settle']:g} s virtual",
        "",
        format_table(TABLE_HEADERS, table_rows(runs)),
        "",
        fit_line(report["fits"]["hops_log2"]),
        fit_line(report["fits"]["requests_log2"], "mean requests"),
    ]
    lin = report["fits"]["hops_linear"]
    if lin is not None:
        out.append(f"(for comparison, mean hops = {lin['a']:.3f} + {lin['b']:.3g}·N has R² = {lin['r2']:.4f})")
    for r in runs:
        if "error" in r:
            out.append(f"N={r['nodes']:,}: FAILED: {r['error']}")
    for o in report["omitted"]:
        out.append(
            f"N={o['nodes']:,} left out: {o['reason']} (extrapolated from N={o['estimated_from_nodes']:,}: "
            f"~{o['estimated_peak_rss_mb']:,} MB peak RSS, ~{o['estimated_wall_s'] / 60:,.0f} min wall; "
            f"{_mb(o['mem_available_mb'])} MB available)"
        )
    for entry in [*report["must_show_1"], *report["must_show_4"]]:
        mark = "PASS" if entry["pass"] else "FAIL"
        note = f"  ({entry['note']})" if "note" in entry else ""
        out.append(f"{mark}  {entry['check']}: measured {entry['measured']}, target {entry['target']}{note}")
    return "\n".join(out)


def _mb(value: float | None) -> str:
    return "?" if value is None else f"{value:,.0f}"


# ---------------------------------------------------------------------- command line


def parse_sizes(text: str) -> list[int]:
    sizes = sorted({int(part.replace("_", "")) for part in text.split(",") if part.strip()})
    if not sizes or sizes[0] < 2:
        raise argparse.ArgumentTypeError("sizes must be integers >= 2")
    return sizes


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    from kadnode.sim.report import LOOKUP_CONCURRENCY

    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes",
        type=parse_sizes,
        default=list(DEFAULT_SIZES),
        help="comma-separated network sizes (default 100,1000,10000)",
    )
    parser.add_argument(
        "--large",
        action="store_true",
        help=f"also try N={TARGET_LARGE:,} (and allow sizes above {LARGE_LIMIT:,}) if it fits in memory",
    )
    parser.add_argument("--lookups", type=int, default=1000, help="lookups per size")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--concurrency", type=int, default=LOOKUP_CONCURRENCY, help="lookups started at the same virtual moment"
    )
    parser.add_argument("--settle", type=float, default=SETTLE, help="virtual seconds between growth and lookups")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument("--worker-timeout", type=float, default=3 * 3600.0)
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.large and TARGET_LARGE not in args.sizes:
        args.sizes = sorted([*args.sizes, TARGET_LARGE])
    return args


def run(args: argparse.Namespace) -> dict[str, Any]:
    runs: list[dict[str, Any]] = []
    omitted: list[dict[str, Any]] = []
    for nodes in args.sizes:
        if nodes > LARGE_LIMIT:
            why_not = "needs --large" if not args.large else large_fits(nodes, runs)
            if why_not is not None:
                omitted.append(omission(nodes, why_not, runs))
                log(f"N={nodes:,} left out: {why_not}")
                continue
        runs.append(run_worker(nodes, args))
        if "error" in runs[-1]:
            log(f"N={nodes:,}: {runs[-1]['error']}")
        else:
            r, lk = runs[-1], runs[-1]["lookups"]
            log(
                f"N={nodes:,}: hops {lk['hops']['mean']:.2f}, requests {lk['requests']['mean']:.1f}, "
                f"{r['wall_s']:.1f} s wall, peak RSS {r['peak_rss_mb']:,.0f} MB"
            )
    if TARGET_LARGE not in args.sizes:
        omitted.append(omission(TARGET_LARGE, "not requested (run with --large to try it)", runs))
    fits = analyse(runs)
    return {
        "benchmark": "scale",
        "parameters": {
            "sizes": args.sizes,
            "lookups": args.lookups,
            "seed": args.seed,
            "concurrency": args.concurrency,
            "settle": args.settle,
            "large": args.large,
        },
        "environment": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "mem_available_mb": mem_available_mb(),
            "loadavg_start": os.getloadavg(),
        },
        "runs": runs,
        "omitted": omitted,
        "fits": fits,
        "must_show_1": must_show_sim(runs),
        "must_show_4": must_show(runs, fits),
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(list(sys.argv[1:] if argv is None else argv))
    if args.worker is not None:
        result = measure_size(
            args.worker, seed=args.seed, lookups=args.lookups, concurrency=args.concurrency, settle=args.settle
        )
        Path(args.worker_out).write_text(json.dumps(result))
        return 0
    report = run(args)
    print(format_report(report))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1) + "\n")
        log(f"wrote {args.json}")
    return 0 if all("error" not in r for r in report["runs"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
