"""bench.throughput at CI size: the whole run completes and its numbers are consistent (no timing limits)."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest

from bench.echo_server import uvloop_factory
from bench.loadgen import METHODS, TID_LEN, Stored, build_templates, percentile
from bench.throughput import (
    BUCKET_FILL,
    ProcSample,
    ServerUsage,
    format_report,
    helper_ids,
    main,
    read_proc,
    summarize_collapsed,
)
from kadnode.wire.krpc import FindNode, Get, GetPeers, Ping, Query, decode_message


def shared_prefix(a: int, b: int) -> int:
    return 160 - (a ^ b).bit_length()


def test_helper_ids_fill_each_bucket_k_deep() -> None:
    rng = random.Random(3)
    own = rng.getrandbits(160)
    ids = helper_ids(own, 5 * BUCKET_FILL, rng)
    assert len(set(ids)) == len(ids)
    prefixes = [shared_prefix(own, node_id) for node_id in ids]
    assert prefixes == [n // BUCKET_FILL for n in range(5 * BUCKET_FILL)]
    assert all(0 <= node_id < 1 << 160 for node_id in ids)


def test_templates_splice_a_fresh_tid_into_valid_queries() -> None:
    rng = random.Random(5)
    stored = Stored((b"\x01" * 20,), (b"\x02" * 20,))
    templates = build_templates(rng, b"S" * 20, stored, size=400)
    seen: set[str] = set()
    hits = 0
    for template in templates:
        tid = rng.randbytes(TID_LEN)
        message = decode_message(template.prefix + tid + template.suffix)
        assert isinstance(message, Query)
        assert message.tid == tid and message.sender_id == b"S" * 20
        name = METHODS[template.method]
        seen.add(name)
        expected = {"ping": Ping, "find_node": FindNode, "get_peers": GetPeers, "get": Get}[name]
        assert isinstance(message.body, expected)
        if template.stored:
            hits += 1
            assert isinstance(message.body, GetPeers | Get)
            key = message.body.info_hash if isinstance(message.body, GetPeers) else message.body.target
            assert key in (b"\x01" * 20, b"\x02" * 20)
    assert seen == set(METHODS)
    assert 0 < hits < 200  # about half of the 200 get_peers/get queries


def test_percentile_is_nearest_rank() -> None:
    values = [float(n) for n in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile([], 50) is None


def test_rss_flat_and_growing_are_told_apart() -> None:
    mib = 1 << 20
    flat = [ProcSample(float(t), t * 0.9, 40 * mib + (t % 2) * 4096) for t in range(61)]
    usage = ServerUsage.from_samples(flat, 0.0, 60.0)
    assert usage.rss_flat is True
    assert usage.cpu == pytest.approx(0.9)
    assert usage.rss_start == 40 * mib and usage.rss_max is not None
    leaking = [ProcSample(float(t), t * 0.9, 40 * mib + t * 200 * 1024) for t in range(61)]
    assert ServerUsage.from_samples(leaking, 0.0, 60.0).rss_flat is False


def test_collapsed_stacks_are_summed_per_function() -> None:
    text = (
        "main (kadnode/a.py:1);work (kadnode/b.py:10) 30\n"
        "main (kadnode/a.py:1);work (kadnode/b.py:12) 20\n"
        "main (kadnode/a.py:1);select (selectors.py:468) 50\n"
    )
    summary = summarize_collapsed(text)
    assert summary["samples"] == 100
    own = {row["function"]: row["share"] for row in summary["own"]}
    assert own == {"work (kadnode/b.py)": 0.5, "select (selectors.py)": 0.5}
    inclusive = {row["function"]: row["share"] for row in summary["inclusive"]}
    assert inclusive == {"main (kadnode/a.py)": 1.0, "work (kadnode/b.py)": 0.5}


def test_read_proc_of_this_process() -> None:
    reading = read_proc(os.getpid())
    assert reading is not None
    cpu, rss = reading
    assert cpu > 0 and rss > 1 << 20
    assert read_proc(2**22 + 1) is None  # above pid_max's default: no such process


def test_throughput_run_completes_with_consistent_numbers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "throughput.json"
    args = ["--seconds", "2", "--warmup", "0.5", "--helpers", "16", "--info-hashes", "8", "--items", "8"]
    assert main([*args, "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    expected = {"kadnode", "echo-asyncio", "echo-lean"} | ({"echo-uvloop"} if uvloop_factory() is not None else set())
    assert set(report["phases"]) == expected
    assert report["daemon_exit_code"] == 0
    population = report["population"]
    assert population["routing_table_nodes"] >= 16
    assert population["info_hashes"] == 8 and population["peers"] >= 8 and population["items"] == 8
    for name, phase in report["phases"].items():
        assert phase["answered"] > 0, name
        assert phase["answered"] + phase["lost"] <= phase["sent"], name
        assert phase["errors"] == 0 and phase["invalid"] == 0, name
        assert phase["validated"] > 0 or phase["answered"] < 256, name
        assert phase["qps"] == pytest.approx(phase["answered"] / 2, abs=0.1)
        assert 0 < phase["p50_ms"] <= phase["p99_ms"] <= phase["max_ms"], name
        assert sum(phase["per_second"]) <= phase["answered"], name
        server = phase["server"]
        assert server["cpu"] is not None and server["cpu"] > 0, name
        assert server["rss_start"] > 1 << 20, name
    kadnode = report["phases"]["kadnode"]
    methods = kadnode["per_method"]
    assert all(methods[name]["answered"] > 0 for name in METHODS)
    # Real payloads: node lists and peers make find_node/get_peers replies much larger than a pong.
    assert methods["find_node"]["mean_reply_bytes"] > methods["ping"]["mean_reply_bytes"] + 100
    assert methods["get_peers"]["mean_reply_bytes"] > methods["ping"]["mean_reply_bytes"] + 100
    queries_in = kadnode["daemon_status_after"]["counters"]["queries_in"]
    assert queries_in["ping"] >= methods["ping"]["answered"]
    share = kadnode["qps"] / report["phases"]["echo-asyncio"]["qps"]
    assert report["share_of_asyncio_echo"] == pytest.approx(share, abs=1e-4)
    printed = capsys.readouterr().out
    assert "kadnode answers" in printed and "echo-asyncio" in printed
    assert format_report(report) in printed
