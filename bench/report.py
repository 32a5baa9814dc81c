"""`python -m bench.report`: the plots and tables of docs/performance.md, from the benchmarks' JSON.

    python -m bench.report            # redraw from bench/results/{lookup,throughput,scale}.json (those present)
    python -m bench.report --run      # first run all three benchmarks with their documented parameters

PNG plots go to docs/performance/; the tables replace what stands between `<!-- generated:NAME -->` and
`<!-- end:NAME -->` in docs/performance.md (NAME: lookup, throughput, scale). Everything outside the markers
is hand-written and left alone.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from bench.common import log
from bench.scale import TABLE_HEADERS, fit_line, table_rows

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "bench" / "results"
DOC = ROOT / "docs" / "performance.md"
PLOTS_DIR = ROOT / "docs" / "performance"
BENCHMARKS = ("lookup", "throughput", "scale")

FULL_RUNS: dict[str, list[str]] = {
    "lookup": ["-m", "bench.lookup", "--nodes", "500", "--ops", "300", "--impl", "kadnode,bmuller,opendht"],
    "throughput": ["-m", "bench.throughput", "--seconds", "60"],
    "scale": ["-m", "bench.scale", "--sizes", "100,1000,10000", "--lookups", "1000", "--seed", "7"],
}
"""The documented parameters of each benchmark: what `--run` runs (each adds `--json RESULTS/NAME.json`)."""

PHASES = ("put", "baseline", "loss", "churn", "churn+loss")
COLORS = {
    "kadnode": "#1f77b4",
    "bmuller": "#ff7f0e",
    "opendht": "#2ca02c",
    "echo-asyncio": "#7f7f7f",
    "echo-lean": "#17becf",
    "echo-uvloop": "#bcbd22",
}
PNG_METADATA: dict[str, Any] = {"Software": None}
"""No matplotlib version stamp in the PNGs: a rerun with equal numbers gives equal files."""


# ---------------------------------------------------------------------- markers


def replace_section(text: str, name: str, body: str) -> str:
    """`text` with what stands between `<!-- generated:name -->` and `<!-- end:name -->` replaced by `body`.
    Raises KeyError if the markers are missing."""
    pattern = re.compile(rf"(<!-- generated:{re.escape(name)} -->\n).*?(<!-- end:{re.escape(name)} -->)", re.S)
    if not pattern.search(text):
        raise KeyError(name)
    return pattern.sub(lambda m: m.group(1) + body.rstrip("\n") + "\n" + m.group(2), text, count=1)


def md_table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[bool] | None = None) -> str:
    right = right if right is not None else [i > 0 for i in range(len(headers))]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---:" if r else "---" for r in right) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _num(value: Any, fmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, fmt)


def _checks(checks: Sequence[dict[str, Any]]) -> list[str]:
    lines = []
    for c in checks:
        measured = c["measured"]
        shown = f"{measured:.4g}" if isinstance(measured, float) else str(measured)
        note = f" ({c['note']})" if c.get("note") else ""
        lines.append(
            f"- {'PASS' if c['pass'] else '**FAIL**'}: {c['check']}: measured {shown}, target {c['target']}{note}"
        )
    return lines


def _measured_at(path: Path) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(path.stat().st_mtime))


def _images(images: Sequence[Path], doc_dir: Path) -> list[str]:
    return [f"![{p.stem}]({Path(os.path.relpath(p, doc_dir)).as_posix()})" for p in images]


# ---------------------------------------------------------------------- scale


def plot_scale(report: dict[str, Any], out_dir: Path) -> list[Path]:
    runs = sorted((r for r in report["runs"] if "error" not in r), key=lambda r: r["nodes"])
    if not runs:
        return []
    sizes = [r["nodes"] for r in runs]
    hops = [r["lookups"]["hops"] for r in runs]

    fig = Figure(figsize=(7, 4.5))
    ax = fig.add_subplot()
    ax.plot(sizes, [h["mean"] for h in hops], "o", color=COLORS["kadnode"], label="mean hops")
    ax.plot(sizes, [h["p99"] for h in hops], "v", color="#9467bd", label="p99 hops")
    fit = report["fits"]["hops_log2"]
    if fit is not None:
        lo, hi = math.log2(sizes[0] / 2), math.log2(sizes[-1] * 2)
        xs = [2 ** (lo + (hi - lo) * i / 50) for i in range(51)]
        ax.plot(
            xs,
            [fit["a"] + fit["b"] * math.log2(x) for x in xs],
            "-",
            color="#d62728",
            label=f"fit {fit['a']:.2f} + {fit['b']:.3f}·log2 N (R² {fit['r2']:.3f})",
        )
    ax.set_xscale("log")
    ax.set_xlabel("nodes N")
    ax.set_ylabel("referral hops per lookup")
    ax.set_ylim(bottom=0)
    ax.set_title("Lookup hops vs network size (simulator)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    paths = [_save(fig, out_dir / "scale_hops.png")]

    fig = Figure(figsize=(12, 4))
    per_lookup, per_join, sim = fig.subplots(1, 3)
    per_lookup.plot(sizes, [r["lookups"]["requests"]["mean"] for r in runs], "o-", label="requests sent by the lookup")
    per_lookup.plot(
        sizes, [r["lookups"]["datagrams_per_lookup"] for r in runs], "s--", label="datagrams in the network"
    )
    per_lookup.axhline(40, color="#d62728", linestyle=":", label="target at N=10,000: < 40 requests")
    per_lookup.set_title("per lookup")
    per_join.plot(sizes, [r["grow"]["datagrams_per_node"] for r in runs], "o-", color="#8c564b")
    per_join.set_title("bootstrap: datagrams per joining node")
    sim.plot(sizes, [r["datagrams_per_wall_second"] for r in runs], "o-", color="#17becf", label="datagrams / wall s")
    sim.set_title("simulator speed and peak RSS")
    sim.set_ylabel("simulated datagrams per wall second")
    rss = sim.twinx()
    rss.plot(sizes, [r["peak_rss_mb"] for r in runs], "s--", color="#7f7f7f", label="peak RSS (MB)")
    rss.set_ylabel("peak RSS (MB)")
    for ax in (per_lookup, per_join, sim):
        ax.set_xscale("log")
        ax.set_xlabel("nodes N")
        ax.set_ylim(bottom=0)
        ax.grid(True, which="both", alpha=0.3)
    rss.set_ylim(bottom=0)
    per_lookup.legend(fontsize=8)
    sim.legend(handles=[*sim.get_lines(), *rss.get_lines()], fontsize=8, loc="lower left")
    fig.tight_layout()
    paths.append(_save(fig, out_dir / "scale_cost.png"))
    return paths


def markdown_scale(report: dict[str, Any], source: Path, images: Sequence[Path], doc_dir: Path) -> str:
    p = report["parameters"]
    lines = [
        f"Measured {_measured_at(source)} (`{source.name}`): sizes {', '.join(f'{n:,}' for n in p['sizes'])}, "
        f"{p['lookups']:,} lookups per size ({p['concurrency']} at a time), seed {p['seed']}.",
        "",
        md_table(TABLE_HEADERS, table_rows(report["runs"])),
        "",
        f"- {fit_line(report['fits']['hops_log2'])}",
        f"- {fit_line(report['fits']['requests_log2'], 'mean requests')}",
    ]
    lin = report["fits"]["hops_linear"]
    if lin is not None:
        lines.append(f"- for comparison, mean hops = {lin['a']:.3f} + {lin['b']:.3g}·N has R² = {lin['r2']:.4f}")
    for r in report["runs"]:
        if "error" in r:
            lines.append(f"- N={r['nodes']:,} failed: {r['error']}")
    for o in report["omitted"]:
        lines.append(
            f"- N={o['nodes']:,} left out: {o['reason']}. Extrapolated from N={o['estimated_from_nodes']:,}: "
            f"~{o['estimated_peak_rss_mb']:,} MB peak RSS and ~{o['estimated_wall_s'] / 60:,.0f} min of wall time "
            f"(the machine had {_num(o['mem_available_mb'], ',.0f')} MB available)."
        )
    if report.get("must_show_1"):
        lines += ["", "Must-show 1 (simulator at 10,000 nodes):", "", *_checks(report["must_show_1"])]
    lines += ["", "Must-show 4:", "", *_checks(report["must_show_4"]), "", *_images(images, doc_dir)]
    return "\n".join(lines)


# ---------------------------------------------------------------------- lookup


def _impls(report: dict[str, Any]) -> list[str]:
    return [name for name, r in report["results"].items() if "phases" in r]


def plot_lookup(report: dict[str, Any], out_dir: Path) -> list[Path]:
    impls = _impls(report)
    phases = [ph for ph in PHASES if any(ph in report["results"][i]["phases"] for i in impls)]
    if not impls or not phases:
        return []
    fig = Figure(figsize=(13, 4.5))
    axes = fig.subplots(1, 3)
    width = 0.8 / len(impls)
    for ax, key, title in zip(
        axes,
        ("median_ms", "p99_ms", "success_rate"),
        ("median latency (ms, log)", "p99 latency (ms, log)", "success rate"),
        strict=True,
    ):
        for k, impl in enumerate(impls):
            values = [report["results"][impl]["phases"].get(ph, {}).get(key) for ph in phases]
            xs = [i + (k - (len(impls) - 1) / 2) * width for i in range(len(phases))]
            heights = [v if isinstance(v, int | float) else 0.0 for v in values]
            ax.bar(xs, heights, width, label=impl, color=COLORS.get(impl))
        ax.set_xticks(range(len(phases)), phases)
        ax.set_title(title)
        ax.grid(True, axis="y", which="both", alpha=0.3)
        if key == "success_rate":
            ax.set_ylim(0, 1.05)
        else:
            ax.set_yscale("log")
    axes[0].legend()
    nodes = report["parameters"]["nodes"]
    fig.suptitle(
        f"lookup benchmark: N = {nodes}, {report['parameters']['ops']} operations per phase, real UDP on loopback"
    )
    fig.tight_layout()
    return [_save(fig, out_dir / "lookup_latency.png")]


def markdown_lookup(report: dict[str, Any], source: Path, images: Sequence[Path], doc_dir: Path) -> str:
    p = report["parameters"]
    impls = _impls(report)
    rows = []
    for phase in PHASES:
        for impl in impls:
            ph = report["results"][impl]["phases"].get(phase)
            if ph is None:
                continue
            rows.append(
                [
                    phase,
                    impl,
                    _num(ph["success_rate"] * 100, ".1f") + "%",
                    _num(ph["median_ms"], ".1f"),
                    _num(ph["p90_ms"], ".1f"),
                    _num(ph["p99_ms"], ".1f"),
                    _num(ph["datagrams_per_op"], ".1f"),
                ]
            )
    lines = [
        f"Measured {_measured_at(source)} (`{source.name}`): N = {p['nodes']}, {p['ops']} operations per phase, "
        f"{p['concurrency']} in flight, {p['kill']:.0%} killed, {p['loss']:.0%} loss, seed {p['seed']}, "
        f"{'private network namespace with iptables' if report.get('netns') else 'no network namespace'}.",
        "",
        md_table(
            ["phase", "implementation", "success", "median ms", "p90 ms", "p99 ms", "datagrams/op"],
            rows,
            [False, False, True, True, True, True, True],
        ),
    ]
    peers = [i for i in impls if i != "kadnode"]
    if "kadnode" in impls and peers:
        ratio_rows = []
        kad = report["results"]["kadnode"]["phases"]
        for phase in PHASES:
            if phase not in kad:
                continue
            row = [phase]
            for peer in peers:
                theirs = report["results"][peer]["phases"].get(phase, {})
                for key in ("median_ms", "p99_ms"):
                    ours, other = kad[phase].get(key), theirs.get(key)
                    ok = isinstance(ours, int | float) and isinstance(other, int | float) and ours > 0
                    row.append(f"{other / ours:.2f}×" if ok else "-")
            ratio_rows.append(row)
        headers = ["phase", *(f"{peer}/kadnode {m}" for peer in peers for m in ("median", "p99"))]
        lines += [
            "",
            "How many times faster kadnode is (peer latency / kadnode latency; > 1: kadnode faster):",
            "",
            md_table(headers, ratio_rows, [False, *([True] * (len(headers) - 1))]),
        ]
    if report.get("must_show_2"):
        lines += ["", "Must-show 2:", "", *_checks(report["must_show_2"])]
    lines += ["", *_images(images, doc_dir)]
    return "\n".join(lines)


# ---------------------------------------------------------------------- throughput


def plot_throughput(report: dict[str, Any], out_dir: Path) -> list[Path]:
    phases: dict[str, dict[str, Any]] = report["phases"]
    if not phases:
        return []
    names = list(phases)
    ceiling = phases.get("echo-asyncio", {}).get("qps")
    fig = Figure(figsize=(7, 3.5))
    ax = fig.add_subplot()
    qps = [phases[n]["qps"] for n in names]
    ax.barh(names, qps, color=[COLORS.get(n, "#1f77b4") for n in names])
    for y, value in enumerate(qps):
        share = f"  {value / ceiling:.0%} of echo" if ceiling else ""
        ax.text(value, y, f" {value:,.0f}/s{share}", va="center", fontsize=9)
    ax.invert_yaxis()
    ax.set_xlim(0, max(qps) * 1.45)
    ax.set_xlabel("answered queries per second")
    ax.set_title(f"throughput: {report['options']['inflight']} queries in flight, {report['options']['seconds']:g} s")
    ax.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    paths = [_save(fig, out_dir / "throughput_share.png")]

    with_series = [n for n in names if phases[n].get("per_second") or phases[n].get("server", {}).get("samples")]
    if with_series:
        fig = Figure(figsize=(12, 4))
        rate_ax, rss_ax = fig.subplots(1, 2)
        for n in with_series:
            per_second = phases[n].get("per_second") or []
            if per_second:
                rate_ax.plot(range(1, len(per_second) + 1), per_second, label=n, color=COLORS.get(n))
            samples = phases[n].get("server", {}).get("samples") or []
            if samples:
                rss_ax.plot(
                    [s["at"] for s in samples],
                    [s["rss_bytes"] / (1 << 20) for s in samples],
                    label=n,
                    color=COLORS.get(n),
                )
        rate_ax.set_title("answered per second")
        rate_ax.set_xlabel("second of the measured window")
        rss_ax.set_title("server RSS (MiB)")
        rss_ax.set_xlabel("seconds into the measured window")
        for a in (rate_ax, rss_ax):
            a.set_ylim(bottom=0)
            a.grid(True, alpha=0.3)
            a.legend(fontsize=8)
        fig.tight_layout()
        paths.append(_save(fig, out_dir / "throughput_timeline.png"))
    return paths


def markdown_throughput(report: dict[str, Any], source: Path, images: Sequence[Path], doc_dir: Path) -> str:
    phases: dict[str, dict[str, Any]] = report["phases"]
    options = report["options"]
    ceiling = phases.get("echo-asyncio", {}).get("qps")
    rows = []
    for name, ph in phases.items():
        server = ph.get("server", {})
        rss = [server.get(k) for k in ("rss_start", "rss_middle", "rss_end")]
        rows.append(
            [
                name,
                _num(ph["qps"], ",.0f"),
                f"{ph['qps'] / ceiling:.0%}" if ceiling else "-",
                f"{ph['loss']:.3%}",
                _num(ph.get("p50_ms"), ".2f"),
                _num(ph.get("p99_ms"), ".2f"),
                _num(server.get("cpu"), ".2f"),
                _num(ph.get("answered_per_cpu_second"), ",.0f"),
                " / ".join(_num(v / (1 << 20) if v is not None else None, ".1f") for v in rss),
            ]
        )
    lines = [
        f"Measured {_measured_at(source)} (`{source.name}`): {options['inflight']} queries in flight, "
        f"{options['seconds']:g} s per server after {options['warmup']:g} s of warm-up.",
        "",
        md_table(
            [
                "server",
                "answered/s",
                "of echo",
                "loss",
                "p50 ms",
                "p99 ms",
                "server CPU",
                "per CPU-s",
                "RSS MiB start / mid / end",
            ],
            rows,
        ),
        "",
    ]
    share = report.get("share_of_asyncio_echo")
    if share is not None:
        lines.append(f"- kadnode answers {share:.1%} of the stock-asyncio echo ceiling (must-show 3: at least 40%)")
    per_cpu = report.get("share_of_asyncio_echo_per_cpu_second")
    if per_cpu is not None:
        lines.append(f"- per server CPU-second: {per_cpu:.1%} of the echo server's")
    lean_share = report.get("share_of_lean_echo")
    if lean_share is not None:
        lines.append(f"- of the lean echo (kadnode's own read path and nothing else): {lean_share:.1%}")
    kad_server = phases.get("kadnode", {}).get("server", {})
    if kad_server.get("rss_flat") is not None:
        lines.append(
            f"- kadnode RSS over the run: {'flat' if kad_server['rss_flat'] else '**growing**'} "
            f"(growth {_num((kad_server.get('rss_growth') or 0) / (1 << 20), '.2f')} MiB)"
        )
    lines += ["", *_images(images, doc_dir)]
    return "\n".join(lines)


# ---------------------------------------------------------------------- rendering


Renderer = tuple[
    Callable[[dict[str, Any], Path], list[Path]],
    Callable[[dict[str, Any], Path, Sequence[Path], Path], str],
]
RENDERERS: dict[str, Renderer] = {
    "lookup": (plot_lookup, markdown_lookup),
    "throughput": (plot_throughput, markdown_throughput),
    "scale": (plot_scale, markdown_scale),
}


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, metadata=PNG_METADATA)
    return path


def render(results_dir: Path = RESULTS_DIR, doc: Path = DOC, plots_dir: Path = PLOTS_DIR) -> dict[str, list[Path]]:
    """Draw the plots of every benchmark whose JSON exists and rewrite its section of `doc`.
    Returns the plots drawn per benchmark. A benchmark without JSON keeps its section as it was."""
    text = doc.read_text()
    drawn: dict[str, list[Path]] = {}
    for name in BENCHMARKS:
        source = results_dir / f"{name}.json"
        if not source.exists():
            log(f"{name}: no {source}; its section is left as it was")
            continue
        report = json.loads(source.read_text())
        plot, markdown = RENDERERS[name]
        images = plot(report, plots_dir)
        try:
            text = replace_section(text, name, markdown(report, source, images, doc.parent))
        except KeyError:
            log(f"{name}: {doc} has no <!-- generated:{name} --> ... <!-- end:{name} --> markers")
        drawn[name] = images
        log(f"{name}: {len(images)} plot(s), table from {source}")
    doc.write_text(text)
    return drawn


def run_benchmarks(names: Sequence[str], results_dir: Path) -> dict[str, int]:
    """Run the benchmarks one after another (never at once: they would measure each other) with their
    documented parameters. Returns each one's exit status."""
    results_dir.mkdir(parents=True, exist_ok=True)
    statuses: dict[str, int] = {}
    for name in names:
        cmd = [sys.executable, *FULL_RUNS[name], "--json", str(results_dir / f"{name}.json")]
        log(f"running {' '.join(cmd[1:])}")
        started = time.perf_counter()
        statuses[name] = subprocess.run(cmd, cwd=ROOT).returncode
        log(f"{name}: exit status {statuses[name]} after {(time.perf_counter() - started) / 60:.1f} min")
    return statuses


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", action="store_true", help="run the benchmarks first (about 40 minutes for all)")
    parser.add_argument(
        "--only",
        default=",".join(BENCHMARKS),
        help="with --run: which benchmarks to run (comma-separated; default all)",
    )
    parser.add_argument("--results", type=Path, default=RESULTS_DIR, help="where the JSON files are")
    parser.add_argument("--doc", type=Path, default=DOC, help="the markdown file whose generated sections to rewrite")
    parser.add_argument("--plots", type=Path, default=PLOTS_DIR, help="where to write the PNG plots")
    args = parser.parse_args(argv)
    status = 0
    if args.run:
        names = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in names if n not in BENCHMARKS]
        if unknown:
            parser.error(f"unknown benchmark(s): {', '.join(unknown)}")
        failed = [n for n, code in run_benchmarks(names, args.results).items() if code != 0]
        if failed:
            log(f"failed: {', '.join(failed)} (their sections show their last JSON, if any)")
            status = 1
    drawn = render(args.results, args.doc, args.plots)
    for name, images in drawn.items():
        for image in images:
            print(f"{name}: {image}")
    print(f"rewrote {args.doc}")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
