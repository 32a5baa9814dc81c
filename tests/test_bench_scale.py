"""bench.scale at CI size and bench.report on small JSON files: shapes, the fit, the plots and the tables
(no timing targets)."""

from __future__ import annotations

import contextlib
import io
import json
import math
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from bench import report as report_module
from bench import scale
from bench.report import ROOT, render, replace_section
from bench.scale import estimate, fit_log2, large_fits, least_squares, measure_size, omission

SIZES = (30, 60, 120)
LOOKUPS = 12


# ---------------------------------------------------------------------- the fit


def test_fit_recovers_exact_log_data() -> None:
    sizes = [100, 1000, 10_000, 100_000]
    fit = fit_log2(sizes, [0.4 + 0.27 * math.log2(n) for n in sizes])
    assert fit is not None
    assert fit.a == pytest.approx(0.4)
    assert fit.b == pytest.approx(0.27)
    assert fit.r2 == pytest.approx(1.0)
    assert fit.points == 4
    assert fit.at(math.log2(1_000_000)) == pytest.approx(0.4 + 0.27 * math.log2(1_000_000))


def test_fit_of_inexact_data_matches_the_hand_computation() -> None:
    # x = 1, 2, 3; y = 1, 2, 2: b = Sxy/Sxx = 1/2, a = 5/3 - 2b = 2/3, R² = 1 - (1/6)/(2/3) = 0.75
    fit = least_squares([1.0, 2.0, 3.0], [1.0, 2.0, 2.0])
    assert fit is not None
    assert fit.a == pytest.approx(2 / 3)
    assert fit.b == pytest.approx(0.5)
    assert fit.r2 == pytest.approx(0.75)


def test_fit_needs_two_distinct_sizes() -> None:
    assert least_squares([3.0], [1.0]) is None
    assert least_squares([3.0, 3.0], [1.0, 2.0]) is None
    flat = least_squares([1.0, 2.0], [5.0, 5.0])
    assert flat is not None and flat.b == 0 and flat.r2 == 1.0
    with pytest.raises(ValueError):
        least_squares([1.0, 2.0], [1.0])


# ---------------------------------------------------------------------- sizes left out


def _fake_run(nodes: int, peak: float, base: float, wall: float) -> dict[str, Any]:
    return {"nodes": nodes, "peak_rss_mb": peak, "rss_base_mb": base, "wall_s": wall}


def test_estimate_extrapolates_from_the_largest_measured_size() -> None:
    runs = [_fake_run(100, 40.0, 30.0, 1.0), _fake_run(10_000, 2530.0, 30.0, 300.0), {"nodes": 20_000, "error": "x"}]
    guess = estimate(100_000, runs)
    growth = 10 * math.log2(100_000) / math.log2(10_000)  # N·log2(N)
    assert guess["from_nodes"] == 10_000
    assert guess["rss_mb"] == pytest.approx(30.0 + 2500.0 * growth)
    assert guess["wall_s"] == pytest.approx(300.0 * growth)


def test_estimate_from_small_networks_is_not_below_the_reference() -> None:
    floor = 100_000 * scale.FALLBACK_KB_PER_NODE / 1024
    assert estimate(100_000, [_fake_run(100, 37.0, 30.0, 1.0)])["rss_mb"] == pytest.approx(floor)
    assert estimate(100_000, [])["rss_mb"] == pytest.approx(floor)
    assert estimate(100_000, [])["from_nodes"] == 0


def test_large_size_is_refused_when_it_would_not_fit(monkeypatch: pytest.MonkeyPatch) -> None:
    runs = [_fake_run(10_000, 2030.0, 30.0, 300.0)]  # 2,000 MB over the base, x 12.5 (N·log2 N): 25,030 MB
    monkeypatch.setattr(scale, "mem_available_mb", lambda: 24_000.0)
    reason = large_fits(100_000, runs)
    assert reason is not None and "25,030 MB" in reason and "24,000 MB" in reason
    monkeypatch.setattr(scale, "mem_available_mb", lambda: 64_000.0)
    assert large_fits(100_000, runs) is None
    entry = omission(100_000, "because", runs)
    assert entry["estimated_peak_rss_mb"] == 25_030 and entry["mem_available_mb"] == 64_000.0


# ---------------------------------------------------------------------- a small run


@pytest.fixture(scope="module")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str, Path]:
    """One CI-sized run of the command (a worker process per size), shared by the tests below."""
    out = tmp_path_factory.mktemp("scale") / "scale.json"
    printed = io.StringIO()
    sizes = ",".join(str(n) for n in SIZES) + ",20000"  # 20,000 needs --large: left out with the reason
    with contextlib.redirect_stdout(printed):
        status = scale.main(["--sizes", sizes, "--lookups", str(LOOKUPS), "--seed", "5", "--json", str(out)])
    assert status == 0
    return json.loads(out.read_text()), printed.getvalue(), out


def test_small_run_writes_every_figure(small_run: tuple[dict[str, Any], str, Path]) -> None:
    report, _, _ = small_run
    assert report["benchmark"] == "scale"
    assert report["parameters"]["sizes"] == [*SIZES, 20_000]
    runs = report["runs"]
    assert [r["nodes"] for r in runs] == list(SIZES)
    for r in runs:
        assert "error" not in r
        lk = r["lookups"]
        assert lk["count"] == LOOKUPS and 0 <= lk["exact"] <= LOOKUPS
        assert lk["exact"] == LOOKUPS  # a settled lossless network of this size: lookups are exact
        assert 1 <= lk["hops"]["p50"] <= lk["hops"]["p99"] <= lk["hops"]["max"]
        assert sum(lk["hops_histogram"].values()) == LOOKUPS
        assert 0 < lk["requests"]["mean"] <= lk["requests"]["max"]
        assert lk["datagrams_per_lookup"] >= lk["requests"]["mean"]  # requests, their replies, and the rest
        assert 0 < lk["latency_ms"]["p50"] <= lk["latency_ms"]["p99"]
        grow = r["grow"]
        assert grow["datagrams"] > 0 and grow["datagrams_per_node"] == pytest.approx(grow["datagrams"] / r["nodes"])
        assert grow["virtual_s"] > 0 and 0 < grow["wall_s"] <= r["wall_s"]
        assert r["datagrams"] >= grow["datagrams"] + r["settle"]["datagrams"]
        assert r["datagrams_per_wall_second"] > 0
        assert r["peak_rss_mb"] >= r["rss_base_mb"] > 0
        assert re.fullmatch(r"[0-9a-f]{64}", r["trace_hash"])
    fits = report["fits"]
    assert fits["hops_log2"]["points"] == len(SIZES) and fits["hops_linear"] is not None
    assert {o["nodes"]: o["reason"] for o in report["omitted"]} == {
        20_000: "needs --large",
        100_000: "not requested (run with --large to try it)",
    }
    assert all(o["estimated_from_nodes"] == SIZES[-1] for o in report["omitted"])
    requests_check = report["must_show_4"][-1]
    assert requests_check["check"] == f"requests per lookup at N={SIZES[-1]}"
    assert "target is for N=10,000" in requests_check["note"]
    assert report["must_show_1"] == []  # no N = 10,000 row


def test_small_run_prints_the_table_and_the_fit(small_run: tuple[dict[str, Any], str, Path]) -> None:
    report, printed, _ = small_run
    assert scale.format_report(report) in printed
    fit = report["fits"]["hops_log2"]
    assert f"mean hops = {fit['a']:.3f} + {fit['b']:.3f}·log2(N)" in printed
    assert "N=20,000 left out: needs --large" in printed
    for n in SIZES:
        assert re.search(rf"^\s*{n}\s+{LOOKUPS}/{LOOKUPS}\s", printed, re.M)


def test_same_seed_same_trace() -> None:
    first = measure_size(30, seed=11, lookups=5, concurrency=5, settle=5.0)
    second = measure_size(30, seed=11, lookups=5, concurrency=5, settle=5.0)
    other = measure_size(30, seed=12, lookups=5, concurrency=5, settle=5.0)
    assert first["trace_hash"] == second["trace_hash"] != other["trace_hash"]
    assert first["lookups"]["hops"] == second["lookups"]["hops"]


# ---------------------------------------------------------------------- the report


def _lookup_json() -> dict[str, Any]:
    def phase(ok: float, median: float, p99: float) -> dict[str, Any]:
        return {
            "success_rate": ok,
            "median_ms": median,
            "p90_ms": (median + p99) / 2,
            "p99_ms": p99,
            "datagrams_per_op": 25.0,
        }

    return {
        "benchmark": "lookup",
        "parameters": {"nodes": 30, "ops": 12, "concurrency": 4, "kill": 0.3, "loss": 0.05, "seed": 1},
        "netns": False,
        "results": {
            "kadnode": {
                "phases": {
                    "put": phase(1.0, 30.0, 90.0),
                    "baseline": phase(1.0, 20.0, 27.0),
                    "churn": phase(1.0, 300.0, 500.0),
                }
            },
            "bmuller": {
                "phases": {
                    "put": phase(0.9, 100.0, 250.0),
                    "baseline": phase(0.9, 14.0, 70.0),
                    "churn": phase(0.9, 5000.0, 30000.0),
                }
            },
            "opendht": {"impl": "opendht", "error": "worker exited with status 1"},
        },
        "must_show_2": [
            {
                "check": "churn p99 < 250 ms",
                "measured": 500.0,
                "target": "< 250",
                "pass": False,
                "note": "targets are for N=500; this run has N=30",
            }
        ],
    }


def _throughput_json() -> dict[str, Any]:
    def phase(qps: float, rss: int) -> dict[str, Any]:
        samples = [{"at": float(t), "cpu_seconds": t * 0.9, "rss_bytes": rss} for t in range(4)]
        return {
            "qps": qps,
            "loss": 0.0,
            "p50_ms": 1.4,
            "p99_ms": 2.5,
            "per_second": [int(qps)] * 3,
            "answered_per_cpu_second": qps / 0.9,
            "server": {
                "cpu": 0.9,
                "rss_start": rss,
                "rss_middle": rss,
                "rss_end": rss,
                "rss_flat": True,
                "rss_growth": 0,
                "samples": samples,
            },
        }

    return {
        "benchmark": "throughput",
        "options": {"seconds": 3.0, "inflight": 32, "timeout": 1.0, "warmup": 0.5, "seed": 1},
        "phases": {"kadnode": phase(22_000.0, 40 << 20), "echo-asyncio": phase(32_000.0, 30 << 20)},
        "share_of_asyncio_echo": 0.6875,
        "share_of_asyncio_echo_per_cpu_second": 0.45,
    }


def _sections(text: str) -> dict[str, str]:
    return dict(re.findall(r"<!-- generated:(\w+) -->\n(.*?)<!-- end:\1 -->", text, re.S))


def _outside(text: str) -> str:
    return re.sub(r"(<!-- generated:(\w+) -->\n).*?(<!-- end:\2 -->)", r"\1\3", text, flags=re.S)


def test_report_draws_plots_and_rewrites_only_the_generated_sections(
    small_run: tuple[dict[str, Any], str, Path], tmp_path: Path
) -> None:
    _, _, scale_json = small_run
    results = tmp_path / "results"
    results.mkdir()
    (results / "scale.json").write_text(scale_json.read_text())
    (results / "lookup.json").write_text(json.dumps(_lookup_json()))
    (results / "throughput.json").write_text(json.dumps(_throughput_json()))
    doc = tmp_path / "docs" / "performance.md"
    doc.parent.mkdir()
    original = (ROOT / "docs" / "performance.md").read_text()
    doc.write_text(original)
    plots = tmp_path / "docs" / "performance"

    drawn = render(results, doc, plots)

    assert set(drawn) == {"lookup", "throughput", "scale"}
    names = {p.name for images in drawn.values() for p in images}
    assert names == {
        "lookup_latency.png",
        "throughput_share.png",
        "throughput_timeline.png",
        "scale_hops.png",
        "scale_cost.png",
    }
    for images in drawn.values():
        for image in images:
            assert image.parent == plots and image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = doc.read_text()
    assert _outside(text) == _outside(original)  # hand-written prose untouched
    sections = _sections(text)
    scale_md = sections["scale"]
    assert "| N | exact | hops mean |" in scale_md and "| 120 | 12/12 |" in scale_md
    assert "mean hops = " in scale_md and "·log2(N)" in scale_md
    assert "N=100,000 left out: not requested" in scale_md
    assert "![scale_hops](performance/scale_hops.png)" in scale_md
    lookup_md = sections["lookup"]
    assert "| churn | bmuller | 90.0% | 5000.0 |" in lookup_md
    assert "| churn | 16.67× | 60.00× |" in lookup_md  # bmuller / kadnode, median and p99
    assert "opendht" not in lookup_md  # its worker failed: no figures
    assert "**FAIL**: churn p99 < 250 ms" in lookup_md
    throughput_md = sections["throughput"]
    assert "| kadnode | 22,000 | 69% |" in throughput_md and "68.8% of the stock-asyncio echo" in throughput_md
    assert "![throughput_timeline](performance/throughput_timeline.png)" in throughput_md

    # Rendering again from the same JSON gives the same document and the same PNG bytes.
    before = {p: p.read_bytes() for p in plots.iterdir()}
    render(results, doc, plots)
    assert doc.read_text() == text
    assert {p: p.read_bytes() for p in plots.iterdir()} == before


def test_report_keeps_sections_without_json(tmp_path: Path) -> None:
    doc = tmp_path / "performance.md"
    doc.write_text("intro\n<!-- generated:scale -->\nold table\n<!-- end:scale -->\noutro\n")
    (tmp_path / "results").mkdir()
    assert render(tmp_path / "results", doc, tmp_path / "plots") == {}
    assert doc.read_text() == "intro\n<!-- generated:scale -->\nold table\n<!-- end:scale -->\noutro\n"


def test_replace_section() -> None:
    text = "a\n<!-- generated:x -->\nold\n<!-- end:x -->\nb <!-- generated:y -->\n<!-- end:y -->\n"
    out = replace_section(text, "x", "new\nlines\n")
    assert out == "a\n<!-- generated:x -->\nnew\nlines\n<!-- end:x -->\nb <!-- generated:y -->\n<!-- end:y -->\n"
    assert replace_section(out, "x", "new\nlines") == out
    with pytest.raises(KeyError):
        replace_section(text, "z", "body")


def test_run_uses_the_documented_parameters(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls: list[list[str]] = []

    def fake_run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess[bytes]:
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, 3 if "bench.lookup" in cmd else 0)

    monkeypatch.setattr(subprocess, "run", fake_run)  # bench.report calls subprocess.run
    doc = tmp_path / "performance.md"
    doc.write_text("<!-- generated:scale -->\n<!-- end:scale -->\n")
    argv = ["--run", "--only", "lookup,scale", "--results", str(tmp_path), "--doc", str(doc), "--plots", str(tmp_path)]
    assert report_module.main(argv) == 1  # the lookup benchmark "failed"
    assert [c[2] for c in calls] == ["bench.lookup", "bench.scale"]
    assert calls[1][-2:] == ["--json", str(tmp_path / "scale.json")]
    # The commands docs/performance.md tells readers to run are the ones `--run` runs.
    documented = (ROOT / "docs" / "performance.md").read_text()
    for name, args in report_module.FULL_RUNS.items():
        assert f"python {' '.join(args)} --json bench/results/{name}.json" in documented
