"""bench.liveness at CI size: the report's shape, the detection tracker against brute force, the forged
query, `SimNetwork.inject`, and what gossip must achieve (issue 5), at small N."""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import random
from typing import Any

import pytest

from bench import liveness
from bench.liveness import (
    CrashWatch,
    first_at_or_below,
    forged_query,
    grown,
    holds_good,
    must_show,
    speedups,
)
from kadnode.core.gossip.wire import MAX_INCARNATION, ClaimKind, decode_claims
from kadnode.sim.links import LinkModel
from kadnode.sim.network import SimNetwork
from kadnode.sim.scenarios import grow
from kadnode.wire.bencode import bencode
from kadnode.wire.krpc import KnGossip, Query, decode_message

NODES = 150
SETTLE = 30.0
WATCH = 60.0
LOSS_MINUTES = 2.0
ATTACK_MINUTES = 1.0


# ---------------------------------------------------------------------- SimNetwork.inject


def _ping(tid: bytes, sender: int) -> bytes:
    return bencode({b"a": {b"id": sender.to_bytes(20, "big")}, b"q": b"ping", b"t": tid, b"y": b"q"})


def _small_net(**kwargs: Any) -> SimNetwork:
    net = SimNetwork(11, **kwargs)
    grow(net, 12)
    net.run_until(net.now + 5)
    return net


def test_inject_delivers_like_a_send_and_the_reply_comes_back() -> None:
    net = _small_net()
    a, b = net.live_nodes()[:2]
    sent, delivered = net.sent, net.delivered
    pings_in = b.core.counters["queries_in.ping"]
    unsolicited = a.core.counters["dropped.unsolicited"]
    net.inject(a.addr, b.addr, _ping(b"zz", a.core.node_id))
    assert net.sent == sent + 1
    net.run_until(net.now + 2)
    assert b.core.counters["queries_in.ping"] == pings_in + 1
    # b answered to a, which never sent that query: its reply arrives and is dropped as unsolicited
    assert a.core.counters["dropped.unsolicited"] == unsolicited + 1
    assert net.delivered >= delivered + 2


def test_inject_from_an_address_nobody_holds_and_to_nobody() -> None:
    net = _small_net()
    b = net.live_nodes()[1]
    outsider = ("127.9.9.9", 6881)
    pings_in, lost = b.core.counters["queries_in.ping"], net.lost
    net.inject(outsider, b.addr, _ping(b"aa", 12345))
    net.inject(b.addr, ("127.9.9.8", 6881), _ping(b"ab", b.core.node_id))  # nobody there
    assert net.lost == lost + 1
    net.run_until(net.now + 2)
    assert b.core.counters["queries_in.ping"] == pings_in + 1
    assert net.lost >= lost + 2  # b's reply went to the outsider's address, which nobody holds


def test_inject_honours_loss() -> None:
    net = _small_net()
    a, b = net.live_nodes()[:2]
    net.set_links(LinkModel(loss=1.0))
    pings_in, lost = b.core.counters["queries_in.ping"], net.lost
    for i in range(5):
        net.inject(a.addr, b.addr, _ping(bytes([i, i]), a.core.node_id))
    net.run_until(net.now + 2)
    assert b.core.counters["queries_in.ping"] == pings_in
    assert net.lost >= lost + 5


def test_injections_are_deterministic() -> None:
    hashes = []
    for _ in range(2):
        net = _small_net(loss=0.1)
        nodes = net.live_nodes()
        rng = random.Random(3)
        for i in range(40):
            src, dst = rng.sample(nodes, 2)
            net.inject(src.addr, dst.addr, _ping(i.to_bytes(2, "big"), src.core.node_id))
            net.run_until(net.now + 0.01)
        net.run_until(net.now + 5)
        hashes.append(net.trace_hash())
    assert hashes[0] == hashes[1]


# ---------------------------------------------------------------------- pieces


def test_forged_query_is_a_kn_gossip_query_with_dead_claims() -> None:
    subjects = [(i * 7919 + 1, (f"127.0.1.{i + 1}", 6881)) for i in range(16)]
    data = forged_query(42, 1000, subjects, b"tt")
    message = decode_message(data)
    assert isinstance(message, Query) and isinstance(message.body, KnGossip)
    assert message.tid == b"tt" and message.body.incarnation == 1000
    claims = decode_claims(message.body.claims, 42)
    assert [(c.subject.id, c.subject.addr) for c in claims] == subjects
    assert {c.kind for c in claims} == {ClaimKind.DEAD}
    assert {c.incarnation for c in claims} == {MAX_INCARNATION}


def test_first_at_or_below() -> None:
    series = [1.0, 0.8, 0.5, 0.6, 0.05, 0.0]
    assert first_at_or_below(series, 0.5) == 2.0
    assert first_at_or_below(series, 0.1, step=2.0) == 8.0
    assert first_at_or_below(series, 0.0) == 5.0
    assert first_at_or_below([0.9, 0.7], 0.5) is None


@pytest.mark.parametrize("gossip", [False, True])
def test_crash_watch_counts_what_brute_force_counts(gossip: bool) -> None:
    net = grown(120, 5, gossip, "watch")
    net.run_until(net.now + 30)
    victims = random.Random(1).sample(net.live_nodes(), 8)
    for node in victims:
        net.crash(node.addr)
    crashed = {n.core.node_id for n in victims}
    survivors = net.live_nodes()
    watch = CrashWatch((n.core for n in survivors), crashed, net.now)
    assert watch.holders == len(survivors) and watch.pairs > 0
    counts = []
    for step in range(60):
        net.run_until(net.now + (1 if step else 0))
        held = watch.held(net.now)
        assert held == sum(any(holds_good(n.core, x, net.now) for x in crashed) for n in survivors)
        counts.append(held)
    assert counts[0] > 0


def _detection(nodes: int, gossip: bool, t99: float | None, watch: float = 100.0) -> dict[str, Any]:
    return {"experiment": "detection", "nodes": nodes, "gossip": gossip, "t99": t99, "watch_s": watch, "step_s": 1.0,
            "bandwidth": {"run_bytes_per_node_s": 120.0}}  # fmt: skip


def test_speedup_is_a_lower_bound_when_gossip_off_never_got_there() -> None:
    runs = [_detection(10_000, True, 20.0), _detection(10_000, False, None, watch=1200.0),
            _detection(1000, True, 10.0), _detection(1000, False, 400.0)]  # fmt: skip
    ratios = speedups(runs)
    assert ratios == [
        {"nodes": 1000, "ratio": 40.0, "lower_bound": False},
        {"nodes": 10_000, "ratio": 60.0, "lower_bound": True},
    ]
    checks = must_show({"detection": runs, "speedups": ratios, "loss": [], "attack": None})
    assert [c["pass"] for c in checks] == [True, True, True]
    assert checks[1]["measured"] == ">= 60.0"
    slow = [_detection(10_000, True, 40.0), _detection(10_000, False, None, watch=120.0)]
    checks = must_show({"detection": slow, "speedups": speedups(slow), "loss": [], "attack": None})
    assert [c["pass"] for c in checks] == [False, False, True]


# ---------------------------------------------------------------------- a small run of the command


@pytest.fixture(scope="module")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str]:
    """One CI-sized run of every experiment (a worker process per run), shared by the tests below."""
    out = tmp_path_factory.mktemp("liveness") / "liveness.json"
    printed = io.StringIO()
    argv = [
        "--nodes", str(NODES), "--seed", "3", "--settle", str(SETTLE), "--watch", str(WATCH),
        "--loss-nodes", str(NODES), "--loss-minutes", str(LOSS_MINUTES),
        "--attack-nodes", str(NODES), "--attack-minutes", str(ATTACK_MINUTES), "--jobs", "2", "--json", str(out),
    ]  # fmt: skip
    with contextlib.redirect_stdout(printed):
        status = liveness.main(argv)
    assert status == 0
    return json.loads(out.read_text()), printed.getvalue()


def _run(report: dict[str, Any], gossip: bool) -> dict[str, Any]:
    return next(r for r in report["detection"] if r["gossip"] is gossip)


def test_detection_runs_have_every_figure(small_run: tuple[dict[str, Any], str]) -> None:
    report, printed = small_run
    assert report["benchmark"] == "liveness"
    assert report["parameters"]["nodes"] == [NODES]
    assert [(r["nodes"], r["gossip"]) for r in report["detection"]] == [(NODES, True), (NODES, False)]
    on, off = _run(report, True), _run(report, False)
    assert on["crashed_ids_hash"] == off["crashed_ids_hash"]  # the same seed crashes the same nodes
    for r in (on, off):
        assert "error" not in r
        assert r["crashed"] == round(NODES * liveness.CRASH_FRACTION) and r["live"] == NODES - r["crashed"]
        series = r["series"]
        assert len(series) == WATCH / liveness.STEP + 1
        assert all(0.0 <= v <= 1.0 for v in series)
        assert series[0] > 0 and r["pairs_at_crash"] > 0
        for name, threshold in liveness.THRESHOLDS:
            t = r[name]
            if t is not None:
                index = round(t / r["step_s"])
                assert series[index] <= threshold and all(v > threshold for v in series[:index])
            else:
                assert min(series) > threshold
        reached = [r[name] for name, _ in liveness.THRESHOLDS]
        assert all(a <= b for a, b in itertools.pairwise(reached) if a is not None and b is not None)
        if reached[-1] is not None:  # at most 1% implies at most 10% and 50%
            assert None not in reached
        assert r["virtual_s"] == pytest.approx(r["grow_virtual_s"] + SETTLE + WATCH)
    assert off["bandwidth"]["run_bytes_per_node_s"] == 0  # no gossip, no gossip bytes
    assert off["bandwidth"]["settle_bytes_per_node_s"]["max"] == 0
    assert "T99 s" in printed and "gossip B/s/node" in printed


def test_loss_and_attack_runs_have_every_figure(small_run: tuple[dict[str, Any], str]) -> None:
    report, printed = small_run
    assert sorted(r["gossip"] for r in report["loss"]) == [False, True]
    for r in report["loss"]:
        assert "error" not in r and r["nodes"] == NODES and r["loss"] == liveness.LOSS
        assert r["lossy_s"] == LOSS_MINUTES * 60 and r["evicted"] >= r["nodes_that_evicted"] >= 0
        assert 0 <= r["bad_at_end"] <= r["not_good_at_end"] <= r["entries_at_end"]
    attack = report["attack"]
    assert "error" not in attack
    assert attack["attackers"] == round(NODES * liveness.ATTACKER_FRACTION)
    assert attack["honest"] == NODES - attack["attackers"]
    assert attack["forged_queries"] == attack["attackers"] * liveness.FORGED_PER_SECOND * ATTACK_MINUTES * 60
    assert attack["datagrams"] >= attack["forged_queries"]
    assert attack["attack"]["samples"] == ATTACK_MINUTES * 60 / liveness.SAMPLE_EVERY
    assert attack["baseline"]["samples"] == 0  # settle shorter than the baseline window: no baseline
    names = [c["check"] for c in report["must_show"]]
    assert any("under attack" in n for n in names) and any("loss" in n for n in names)
    assert all(set(c) >= {"check", "measured", "target", "pass"} for c in report["must_show"])
    assert "forged queries" in printed and "BAD at end" in printed


def test_gossip_makes_crashed_nodes_not_good_sooner(small_run: tuple[dict[str, Any], str]) -> None:
    report, _ = small_run
    on, off = _run(report, True), _run(report, False)
    assert on["t99"] is not None
    assert off["t99"] is None or off["t99"] > on["t99"]
    assert on["bandwidth"]["run_bytes_per_node_s"] > 0


def test_no_live_node_is_evicted_under_loss_with_gossip(small_run: tuple[dict[str, Any], str]) -> None:
    report, _ = small_run
    (on,) = [r for r in report["loss"] if r["gossip"]]
    assert on["counters"].get("gossip.bytes_out", 0) > 0  # the gossip ran
    assert on["evicted"] == 0 and on["bad_at_end"] == 0


def test_forged_dead_claims_evict_no_honest_node(small_run: tuple[dict[str, Any], str]) -> None:
    report, _ = small_run
    attack = report["attack"]
    assert attack["counters"].get("gossip.bytes_out", 0) > 0
    assert attack["evicted_by_honest"] == 0 and attack["attack"]["bad_max"] == 0
