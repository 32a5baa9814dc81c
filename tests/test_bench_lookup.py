"""A CI-sized run of the lookup benchmark: it completes and reports sane figures (no timing targets)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from bench.common import OpSample, loopback_addresses, percentile, summarize
from bench.lookup import main, must_show, render_table

PEERS = ["bmuller"] if importlib.util.find_spec("kademlia") is not None else []


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile([7.0], 99) == 7.0


def test_failed_ops_count_with_their_capped_time() -> None:
    samples = [OpSample(True, 0.001)] * 98 + [OpSample(False, 30.0)] * 2
    summary = summarize("churn", samples, datagrams=500, wall=1.0)
    assert summary.success_rate == 0.98
    assert summary.median_ms == 1.0
    assert summary.p99_ms == 30_000.0
    assert summary.datagrams_per_op == 5.0


def test_addresses_are_distinct_and_loopback() -> None:
    import random

    hosts = loopback_addresses(600, random.Random(3))
    assert len(set(hosts)) == 600
    assert all(h.startswith("127.0.") and h != "127.0.0.1" for h in hosts)


def test_small_run_completes_with_sane_figures(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "lookup.json"
    impls = ",".join(["kadnode", *PEERS])
    argv = ["--nodes", "30", "--ops", "12", "--impl", impls, "--no-netns", "--settle", "0.5",
            "--concurrency", "4", "--op-timeout", "20", "--json", str(out)]  # fmt: skip
    assert main(argv) == 0
    report = json.loads(out.read_text())
    results = report["results"]
    assert set(results) == {"kadnode", *PEERS}
    for name, result in results.items():
        assert "error" not in result, name
        phases = result["phases"]
        assert {"put", "baseline", "churn"} <= set(phases)
        for phase in phases.values():
            assert phase["ops"] == 12
            assert 0.0 <= phase["success_rate"] <= 1.0
            assert 0.0 < phase["median_ms"] <= phase["p90_ms"] <= phase["p99_ms"] <= 20_000
        # On a healthy 30-node network every put lands and every value is found again.
        assert phases["put"]["success_rate"] == 1.0
        assert phases["baseline"]["success_rate"] == 1.0
        assert phases["baseline"]["datagrams_per_op"] > 0
    kad = results["kadnode"]
    assert kad["counters"]["baseline"]["lookups_done"] >= 12
    printed = capsys.readouterr().out
    assert "baseline" in printed and "kadnode" in printed
    assert render_table(results) in printed
    checks = must_show(results, 30)
    assert checks and all(c["note"].startswith("targets are for N=500") for c in checks)
