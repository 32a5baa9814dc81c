"""Benchmark `liveness` (issue 5): how soon crashed nodes stop being held as good with liveness gossip on
and off, that 20% loss and forged DEAD claims evict nobody alive, and what the gossip costs in bytes.

    python -m bench.liveness --nodes 1000,10000 --seed 7 --jobs 2 --json bench/results/liveness.json

Everything runs in the simulator on virtual time, and each run is a pure function of `--seed`. Each run
(one experiment, one size, gossip on or off) goes in a worker process of its own, `--jobs` at a time.

  detection   grow N nodes, let them run `--settle` s, crash 5% at once, then every virtual second the share
              of live nodes that still hold some crashed node as good. T50/T90/T99: first time it is at
              most 50%/10%/1%. Gossip on and off grow the same network (same IDs, same victims).
  bandwidth   `gossip.bytes_out` per node per second in the detection runs with gossip on.
  loss        `--loss-nodes` nodes, 20% of datagrams lost for `--loss-minutes`: every node is alive, so every
              routing-table eviction is a false one.
  attack      10% of `--attack-nodes` nodes also send, each second, 10 forged kn_gossip queries to random
              honest nodes, each with 16 DEAD claims about random honest nodes at incarnation 2**32-1.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench.common import distribution, log, progress_logger, run_json_worker
from bench.scale import format_table
from kadnode.core.gossip.wire import Claim, ClaimKind, encode_claims
from kadnode.core.node import NodeCore
from kadnode.core.routing import NodeState, RoutingEntry, RoutingTable
from kadnode.settings import Settings
from kadnode.sim.network import SimNetwork
from kadnode.sim.report import cyclic_gc_paused, peak_rss_mb
from kadnode.sim.scenarios import grow
from kadnode.types import NodeInfo
from kadnode.wire.bencode import bencode

EXPERIMENTS = ("detection", "loss", "attack")
DEFAULT_NODES = (1000, 10_000)
SETTLE = 300.0
"""Virtual seconds between growth and the experiment: every entry has answered, gossip is in its steady state."""
WATCH = 1200.0
"""Virtual seconds watched after the crash (BEP 5 alone needs up to `good_interval`, 900 s)."""
STEP = 1.0
"""Resolution of the detection series, in virtual seconds."""
CRASH_FRACTION = 0.05
THRESHOLDS = (("t50", 0.5), ("t90", 0.1), ("t99", 0.01))
"""Tx: the first time the share of live nodes holding a crashed node as good is at most this."""
CRASH_SEED_SALT = 0xC7A5
ATTACK_SEED_SALT = 0xA77AC
"""The victims and the attack's draws come from seed ^ these, apart from the network's own draws."""
LOSS = 0.2
LOSS_NODES = 1000
LOSS_MINUTES = 30.0
ATTACK_NODES = 1000
ATTACK_MINUTES = 10.0
ATTACKER_FRACTION = 0.1
FORGED_PER_SECOND = 10
"""Forged kn_gossip queries each attacker sends per virtual second."""
CLAIMS_PER_FORGERY = 16
FORGED_INCARNATION = 2**32 - 1
SAMPLE_EVERY = 10.0
"""Virtual seconds between two counts of not-good entries (each walks every table)."""
BASELINE_WINDOW = 60.0
"""Before the attack, not-good entries are counted for this long: what they are without it."""
PROGRESS_EVERY = 60.0
"""Progress on stderr every this many virtual seconds."""

T99_TARGET_N = 10_000
T99_TARGET = 30.0
SPEEDUP_TARGET = 5.0
BANDWIDTH_TARGET = 300.0
"""Issue 5, must-show 1: with gossip T99 < 30 s at N = 10,000, at least 5x faster than without, and gossip
costs under 300 B/s per node; must-show 2 and 3: no live node evicted under 20% loss or under attack."""


# ---------------------------------------------------------------------- reading a node's state


def make_settings(gossip: bool) -> Settings:
    return Settings(gossip_enabled=gossip)


def evictions(core: NodeCore) -> int:
    """Live entries that left `core`'s table because they failed (timeouts or gossip's verdict).

    `routing.evicted` is the counter; the table's own tally counts the same events and also those before
    gossip starts (or with gossip off, where nothing else may bump the counter): take whichever is larger."""
    return max(core.counters.get("routing.evicted", 0), getattr(core.routing_table, "evicted", 0))


def holds_good(core: NodeCore, node_id: int, now: float) -> bool:
    """Whether `core` holds `node_id` as a GOOD live entry of its routing table."""
    entry = core.routing_table.get(node_id)
    return entry is not None and entry.state(now, core.settings) is NodeState.GOOD


def gossip_bytes(core: NodeCore) -> int:
    return core.counters.get("gossip.bytes_out", 0)


def summed_counters(
    cores: Iterable[NodeCore], prefixes: Sequence[str] = ("gossip.", "routing.", "rpc.")
) -> dict[str, int]:
    total: dict[str, int] = {}
    for core in cores:
        for name, value in core.counters.items():
            if name.startswith(tuple(prefixes)):
                total[name] = total.get(name, 0) + value
    return dict(sorted(total.items()))


class CrashWatch:
    """Counts the live nodes that hold some crashed node as GOOD, cheaply, step after step.

    A crashed node sends nothing, so an entry of it never becomes GOOD again once it is not: its last
    answer only ages, and its failures are never cleared. At the crash we list, for each live node, the
    crashed nodes it holds as GOOD in its table or its replacement cache (a replacement may be promoted,
    GOOD, later); each count then looks up only those, dropping the ones that can no longer be GOOD.
    """

    def __init__(self, holders: Iterable[NodeCore], crashed: set[int], now: float) -> None:
        self.holders = 0
        self.pairs = 0
        """(live node, crashed node) pairs held as good (or as good replacements) at the crash."""
        self._watch: list[tuple[RoutingTable, Settings, list[int], frozenset[int]]] = []
        for core in holders:
            self.holders += 1
            settings = core.settings
            live = [e.id for e in core.routing_table.entries() if e.id in crashed and _good(e, now, settings)]
            spare = frozenset(
                e.id for e in core.routing_table.replacements() if e.id in crashed and _good(e, now, settings)
            )
            if live or spare:
                self._watch.append((core.routing_table, settings, [*live, *spare], spare))
                self.pairs += len(live) + len(spare)

    def held(self, now: float) -> int:
        """Live nodes holding some crashed node as a GOOD live entry now (`now` never goes back)."""
        good = NodeState.GOOD
        count = 0
        kept: list[tuple[RoutingTable, Settings, list[int], frozenset[int]]] = []
        for table, settings, ids, spare in self._watch:
            remaining: list[int] = []
            for position, node_id in enumerate(ids):
                entry = table.get(node_id)
                if entry is None:
                    if node_id in spare:  # maybe still waiting in the replacement cache
                        remaining.append(node_id)
                elif entry.state(now, settings) is good:
                    count += 1
                    remaining.extend(ids[position:])
                    break
            if remaining:
                kept.append((table, settings, remaining, spare))
        self._watch = kept
        return count


def _good(entry: RoutingEntry, now: float, settings: Settings) -> bool:
    return entry.state(now, settings) is NodeState.GOOD


def first_at_or_below(series: Sequence[float], threshold: float, step: float = STEP) -> float | None:
    """Seconds after the crash when `series` (one value per step, from the crash on) first is at most
    `threshold`; None if it never is."""
    for index, value in enumerate(series):
        if value <= threshold:
            return index * step
    return None


# ---------------------------------------------------------------------- running the network


class Progress:
    """Logs the virtual time done to stderr every `PROGRESS_EVERY` virtual seconds."""

    def __init__(self, label: str, start: float, total: float) -> None:
        self.label, self.start, self.total = label, start, total
        self.next = start + PROGRESS_EVERY
        self.wall = time.perf_counter()

    def at(self, now: float) -> None:
        if now >= self.next or now >= self.start + self.total:
            done = now - self.start
            wall = time.perf_counter() - self.wall
            log(f"  {self.label}: {done:,.0f}/{self.total:,.0f} virtual s ({wall:,.0f} s wall)")
            self.next = now + PROGRESS_EVERY


def run_for(net: SimNetwork, seconds: float, label: str) -> None:
    """Run the network `seconds` further, logging progress."""
    progress = Progress(label, net.now, seconds)
    end = net.now + seconds
    while net.now < end:
        net.run_until(min(end, net.now + PROGRESS_EVERY))
        progress.at(net.now)


def grown(nodes: int, seed: int, gossip: bool, label: str) -> SimNetwork:
    """A network of `nodes` nodes grown in waves (`kadnode.sim.scenarios.grow`), not yet settled."""
    net = SimNetwork(seed, settings=make_settings(gossip))
    started = time.perf_counter()
    grow(net, nodes, progress=progress_logger(f"{label} joined", nodes))
    log(f"  {label}: grown in {net.now:,.0f} virtual s, {time.perf_counter() - started:,.1f} s wall")
    return net


def _label(kind: str, nodes: int, gossip: bool) -> str:
    return f"{kind} N={nodes:,} gossip {'on' if gossip else 'off'}"


# ---------------------------------------------------------------------- experiment 1 (and 3): detection


def measure_detection(
    nodes: int,
    *,
    seed: int,
    gossip: bool,
    settle: float = SETTLE,
    watch: float = WATCH,
    crash_fraction: float = CRASH_FRACTION,
) -> dict[str, Any]:
    """Grow, settle, crash `crash_fraction` of the nodes, watch: the detection series, its Tx, and the
    gossip's bytes per node per second (settle period and whole run)."""
    label = _label("detection", nodes, gossip)
    started = time.perf_counter()
    net = grown(nodes, seed, gossip, label)
    grow_virtual = net.now
    everyone = list(net.nodes.values())
    settle_from = {n.addr: gossip_bytes(n.core) for n in everyone}
    sent_before_settle = net.sent
    run_for(net, settle, f"{label} settle")
    settle_bytes = [(gossip_bytes(n.core) - settle_from[n.addr]) / settle if settle else 0.0 for n in everyone]
    settle_datagrams = net.sent - sent_before_settle

    live = sorted(net.live_nodes(), key=lambda n: n.index)
    victims = random.Random(seed ^ CRASH_SEED_SALT).sample(live, round(crash_fraction * len(live)))
    crash_time = net.now
    for node in victims:
        net.crash(node.addr)
    crashed_ids = {n.core.node_id for n in victims}
    survivors = net.live_nodes()
    tracker = CrashWatch((n.core for n in survivors), crashed_ids, crash_time)
    evicted_before = sum(evictions(n.core) for n in survivors)
    log(f"  {label}: crashed {len(victims):,}; {tracker.pairs:,} entries of them held as good")

    series = [tracker.held(crash_time) / len(survivors)]
    progress = Progress(f"{label} watch", crash_time, watch)
    steps = round(watch / STEP)
    for index in range(1, steps + 1):
        now = crash_time + index * STEP
        net.run_until(now)
        series.append(tracker.held(now) / len(survivors))
        progress.at(now)

    end = net.now
    crashed_addrs = {n.addr for n in victims}
    lifetimes = [(crash_time if n.addr in crashed_addrs else end) - n.core.started for n in everyone]
    total_bytes = sum(gossip_bytes(n.core) for n in everyone)
    node_seconds = sum(lifetimes)
    run_rates = [gossip_bytes(n.core) / life for n, life in zip(everyone, lifetimes, strict=True) if life > 0]
    times = {name: first_at_or_below(series, threshold) for name, threshold in THRESHOLDS}
    return {
        "experiment": "detection",
        "nodes": nodes,
        "gossip": gossip,
        "seed": seed,
        "settle_s": settle,
        "watch_s": watch,
        "step_s": STEP,
        "crashed": len(victims),
        "live": len(survivors),
        "crashed_ids_hash": _ids_hash(crashed_ids),
        "pairs_at_crash": tracker.pairs,
        **times,
        "series": [round(v, 6) for v in series],
        "evicted_after_crash": sum(evictions(n.core) for n in survivors) - evicted_before,
        "bandwidth": {
            "settle_bytes_per_node_s": distribution(settle_bytes),
            "run_bytes_per_node_s": total_bytes / node_seconds if node_seconds else 0.0,
            "run_per_node": distribution(run_rates),
            "settle_datagrams_per_node_s": settle_datagrams / nodes / settle if settle else 0.0,
        },
        "counters": summed_counters(n.core for n in everyone),
        "grow_virtual_s": grow_virtual,
        "virtual_s": end,
        "datagrams": net.sent,
        "lost": net.lost,
        "wall_s": time.perf_counter() - started,
        "peak_rss_mb": peak_rss_mb(),
        "trace_hash": net.trace_hash(),
    }


def _ids_hash(ids: Iterable[int]) -> str:
    """A short digest of a set of IDs: runs with gossip on and off must crash the same nodes."""
    return hashlib.sha256(b"".join(i.to_bytes(20, "big") for i in sorted(ids))).hexdigest()[:16]


# ---------------------------------------------------------------------- experiment 2: loss


def count_not_good(holders: Iterable[NodeCore], subjects: set[int] | None, now: float) -> tuple[int, int, int]:
    """(entries, not GOOD, BAD) over the live entries of `holders`' tables about `subjects` (None: all)."""
    entries = not_good = bad = 0
    for core in holders:
        settings = core.settings
        for entry in core.routing_table.entries():
            if subjects is not None and entry.id not in subjects:
                continue
            entries += 1
            state = entry.state(now, settings)
            if state is not NodeState.GOOD:
                not_good += 1
                if state is NodeState.BAD:
                    bad += 1
    return entries, not_good, bad


def measure_loss(
    nodes: int, *, seed: int, gossip: bool, settle: float = SETTLE, minutes: float = LOSS_MINUTES, loss: float = LOSS
) -> dict[str, Any]:
    """Grow and settle without loss, then lose `loss` of all datagrams for `minutes`: evictions meanwhile
    (every node is alive, so each is false) and entries held BAD at the end."""
    label = _label("loss", nodes, gossip)
    started = time.perf_counter()
    net = grown(nodes, seed, gossip, label)
    run_for(net, settle, f"{label} settle")
    cores = [n.core for n in net.live_nodes()]
    before = [evictions(c) for c in cores]
    bytes_before = sum(gossip_bytes(c) for c in cores)
    sent_before, lost_before = net.sent, net.lost
    net.set_links(replace(net.links, loss=loss))
    seconds = minutes * 60
    run_for(net, seconds, f"{label} lossy")
    evicted = [evictions(c) - b for c, b in zip(cores, before, strict=True)]
    entries, not_good, bad = count_not_good(cores, None, net.now)
    return {
        "experiment": "loss",
        "nodes": nodes,
        "gossip": gossip,
        "seed": seed,
        "loss": loss,
        "settle_s": settle,
        "lossy_s": seconds,
        "evicted": sum(evicted),
        "nodes_that_evicted": sum(1 for e in evicted if e),
        "entries_at_end": entries,
        "not_good_at_end": not_good,
        "bad_at_end": bad,
        "gossip_bytes_per_node_s": (sum(gossip_bytes(c) for c in cores) - bytes_before) / len(cores) / seconds,
        "datagrams": net.sent - sent_before,
        "lost": net.lost - lost_before,
        "counters": summed_counters(cores),
        "wall_s": time.perf_counter() - started,
        "trace_hash": net.trace_hash(),
    }


# ---------------------------------------------------------------------- experiment 4: attack


def forged_query(
    sender_id: int,
    incarnation: int,
    subjects: Sequence[tuple[int, tuple[str, int]]],
    tid: bytes,
    claim_incarnation: int = FORGED_INCARNATION,
) -> bytes:
    """A kn_gossip query from `sender_id` claiming every subject (ID, address) DEAD at `claim_incarnation`."""
    claims = encode_claims(
        Claim(ClaimKind.DEAD, NodeInfo(node_id, addr), claim_incarnation, sender_id) for node_id, addr in subjects
    )
    args: dict[bytes, Any] = {b"id": sender_id.to_bytes(20, "big"), b"inc": incarnation, b"c": claims}
    return bencode({b"a": args, b"q": b"kn_gossip", b"t": tid, b"y": b"q"})


def measure_attack(
    nodes: int,
    *,
    seed: int,
    settle: float = SETTLE,
    minutes: float = ATTACK_MINUTES,
    attacker_fraction: float = ATTACKER_FRACTION,
    per_second: int = FORGED_PER_SECOND,
    claims: int = CLAIMS_PER_FORGERY,
) -> dict[str, Any]:
    """Gossip on; `attacker_fraction` of the nodes forge DEAD claims about honest nodes. Evictions by honest
    nodes (all nodes are alive: each is false), and honest entries not GOOD in honest tables, before and
    during the attack."""
    label = _label("attack", nodes, True)
    started = time.perf_counter()
    net = grown(nodes, seed, True, label)
    run_for(net, settle - BASELINE_WINDOW if settle > BASELINE_WINDOW else settle, f"{label} settle")
    rng = random.Random(seed ^ ATTACK_SEED_SALT)
    live = sorted(net.live_nodes(), key=lambda n: n.index)
    attackers = rng.sample(live, max(1, round(attacker_fraction * len(live))))
    chosen = {n.addr for n in attackers}
    honest = [n for n in live if n.addr not in chosen]
    honest_cores = [n.core for n in honest]
    honest_ids = {c.node_id for c in honest_cores}

    def sample(into: list[tuple[int, int, int]]) -> None:
        into.append(count_not_good(honest_cores, honest_ids, net.now))

    baseline: list[tuple[int, int, int]] = []
    if settle > BASELINE_WINDOW:
        end = net.now + BASELINE_WINDOW
        while net.now < end:
            net.run_until(min(end, net.now + SAMPLE_EVERY))
            sample(baseline)
    before = [evictions(c) for c in honest_cores]
    sent_before = net.sent

    during: list[tuple[int, int, int]] = []
    forged = 0
    seconds = round(minutes * 60)
    progress = Progress(f"{label} attack", net.now, seconds)
    targets = [(n.core.node_id, n.addr) for n in honest]
    attack_start = net.now
    for second in range(seconds):
        t0 = attack_start + second
        sends = sorted(
            (
                (rng.random(), attacker, rng.choice(honest), rng.sample(targets, min(claims, len(targets))))
                for attacker in attackers
                for _ in range(per_second)
            ),
            key=lambda send: send[0],
        )
        for offset, attacker, target, subjects in sends:
            net.run_until(t0 + offset)
            data = forged_query(attacker.core.node_id, int(attacker.core.started), subjects, rng.randbytes(2))
            net.inject(attacker.addr, target.addr, data)
            forged += 1
        net.run_until(t0 + 1)
        if (second + 1) % SAMPLE_EVERY == 0:
            sample(during)
        progress.at(net.now)
    evicted = [evictions(c) - b for c, b in zip(honest_cores, before, strict=True)]
    return {
        "experiment": "attack",
        "nodes": nodes,
        "seed": seed,
        "settle_s": settle,
        "attack_s": seconds,
        "attackers": len(attackers),
        "honest": len(honest),
        "forged_queries": forged,
        "claims_per_query": min(claims, len(targets)),
        "evicted_by_honest": sum(evicted),
        "honest_nodes_that_evicted": sum(1 for e in evicted if e),
        "baseline": _not_good_summary(baseline, len(honest)),
        "attack": _not_good_summary(during, len(honest)),
        "counters": summed_counters(honest_cores),
        "datagrams": net.sent - sent_before,
        "wall_s": time.perf_counter() - started,
        "trace_hash": net.trace_hash(),
    }


def _not_good_summary(samples: Sequence[tuple[int, int, int]], holders: int) -> dict[str, Any]:
    """Means over the samples: honest entries in honest tables, how many not GOOD (share, per holder), BAD."""
    if not samples:
        return {"samples": 0, "entries": 0.0, "not_good_share": None, "not_good_per_node": None, "bad_max": 0}
    entries = sum(s[0] for s in samples) / len(samples)
    not_good = sum(s[1] for s in samples) / len(samples)
    return {
        "samples": len(samples),
        "entries": entries,
        "not_good_share": not_good / entries if entries else 0.0,
        "not_good_per_node": not_good / holders if holders else 0.0,
        "bad_max": max(s[2] for s in samples),
    }


# ---------------------------------------------------------------------- workers


MEASURES: dict[str, Callable[..., dict[str, Any]]] = {
    "detection": measure_detection,
    "loss": measure_loss,
    "attack": measure_attack,
}


def run_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """One run, as described by a worker spec (the keyword arguments of a measure_* plus "experiment")."""
    measure = MEASURES[spec["experiment"]]
    with cyclic_gc_paused():
        return measure(**{k: v for k, v in spec.items() if k != "experiment"})


def plan(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The runs this invocation makes, largest first (so that `--jobs` > 1 finishes soonest)."""
    specs: list[dict[str, Any]] = []
    if "detection" in args.experiments:
        for nodes in args.nodes:
            for gossip in (True, False):
                specs.append(
                    {
                        "experiment": "detection",
                        "nodes": nodes,
                        "gossip": gossip,
                        "seed": args.seed,
                        "settle": args.settle,
                        "watch": args.watch,
                        "crash_fraction": args.crash_fraction,
                    }
                )
    if "loss" in args.experiments:
        for gossip in (True, False):
            specs.append(
                {
                    "experiment": "loss",
                    "nodes": args.loss_nodes,
                    "gossip": gossip,
                    "seed": args.seed,
                    "settle": args.settle,
                    "minutes": args.loss_minutes,
                    "loss": args.loss,
                }
            )
    if "attack" in args.experiments:
        specs.append(
            {
                "experiment": "attack",
                "nodes": args.attack_nodes,
                "seed": args.seed,
                "settle": args.settle,
                "minutes": args.attack_minutes,
            }
        )
    return specs


def _cost(spec: dict[str, Any]) -> float:
    """Rough relative wall time of a run, to start the longest first."""
    seconds = float(spec.get("watch", 0.0)) + float(spec.get("settle", 0.0)) + 60 * float(spec.get("minutes", 0.0))
    return float(spec["nodes"]) * seconds * (1.0 if spec.get("gossip", True) else 0.1)


def run_worker(spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    failure = {k: spec[k] for k in ("experiment", "nodes") if k in spec} | {"gossip": spec.get("gossip", True)}
    return run_json_worker("bench.liveness", ["--worker", json.dumps(spec)], timeout, failure)


# ---------------------------------------------------------------------- the report


def _ok(runs: Iterable[dict[str, Any]], experiment: str) -> list[dict[str, Any]]:
    return [r for r in runs if r.get("experiment") == experiment and "error" not in r]


def speedups(detection: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """T99 off / T99 on per size; a lower bound (off = watch) when gossip off never got there."""
    out = []
    for nodes in sorted({r["nodes"] for r in detection}):
        on = next((r for r in detection if r["nodes"] == nodes and r["gossip"]), None)
        off = next((r for r in detection if r["nodes"] == nodes and not r["gossip"]), None)
        if on is None or off is None or on["t99"] is None:
            continue
        off_t99 = off["t99"] if off["t99"] is not None else off["watch_s"]
        on_t99 = max(on["t99"], on["step_s"])  # 0 s means "within the first step"
        out.append({"nodes": nodes, "ratio": off_t99 / on_t99, "lower_bound": off["t99"] is None})
    return out


def must_show(report: dict[str, Any]) -> list[dict[str, Any]]:
    checks: list[dict[str, Any]] = []

    def check(name: str, measured: Any, target: str, passed: bool, note: str | None = None) -> None:
        entry: dict[str, Any] = {"check": name, "measured": measured, "target": target, "pass": bool(passed)}
        if note:
            entry["note"] = note
        checks.append(entry)

    detection = [r for r in report["detection"] if "error" not in r]
    on_runs = sorted((r for r in detection if r["gossip"]), key=lambda r: r["nodes"])
    if on_runs:
        row = next((r for r in on_runs if r["nodes"] == T99_TARGET_N), on_runs[-1])
        note = None if row["nodes"] == T99_TARGET_N else f"target is for N={T99_TARGET_N:,}; not measured in this run"
        t99 = row["t99"]
        check(
            f"T99 with gossip at N={row['nodes']:,} (s)",
            _seconds(t99, row["watch_s"]),
            f"< {T99_TARGET:g}",
            t99 is not None and t99 < T99_TARGET,
            note,
        )
        ratio = next((s for s in report["speedups"] if s["nodes"] == row["nodes"]), None)
        if ratio is not None:
            measured = f"{'>= ' if ratio['lower_bound'] else ''}{ratio['ratio']:.1f}"
            check(
                f"T99 without / with gossip at N={row['nodes']:,}",
                measured,
                f">= {SPEEDUP_TARGET:g}",
                ratio["ratio"] >= SPEEDUP_TARGET,
                note,
            )
        rate = row["bandwidth"]["run_bytes_per_node_s"]
        check(
            f"gossip bytes per node per second at N={row['nodes']:,} (whole run)",
            round(rate, 1),
            f"< {BANDWIDTH_TARGET:g}",
            rate < BANDWIDTH_TARGET,
            note,
        )
    for row in report["loss"]:
        if "error" not in row and row["gossip"]:
            check(
                f"evictions under {row['loss']:.0%} loss with gossip, N={row['nodes']:,}, {row['lossy_s'] / 60:g} min",
                row["evicted"],
                "0",
                row["evicted"] == 0,
            )
    attack = report["attack"]
    if attack is not None and "error" not in attack:
        check(
            f"evictions by honest nodes under attack, N={attack['nodes']:,}, {attack['attack_s'] / 60:g} min",
            attack["evicted_by_honest"],
            "0",
            attack["evicted_by_honest"] == 0,
        )
    return checks


def _seconds(value: float | None, watch: float) -> str:
    return f">{watch:g}" if value is None else f"{value:g}"


DETECTION_HEADERS = (
    "N", "gossip", "crashed", "held at crash", "T50 s", "T90 s", "T99 s", "evicted",
    "gossip B/s/node settle", "whole run", "busiest node settle", "datagrams/node/s settle", "wall s",
)  # fmt: skip
LOSS_HEADERS = (
    "N",
    "gossip",
    "loss",
    "minutes",
    "evicted",
    "BAD at end",
    "not good at end",
    "gossip B/s/node",
    "wall s",
)
ATTACK_HEADERS = (
    "N",
    "attackers",
    "forged queries",
    "evicted",
    "not good before",
    "during",
    "per node during",
    "BAD max",
    "wall s",
)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def detection_rows(runs: Sequence[dict[str, Any]]) -> list[list[str]]:
    rows = []
    for r in sorted(runs, key=lambda r: (r["nodes"], not r["gossip"])):
        bw = r["bandwidth"]
        rows.append([
            f"{r['nodes']:,}", "on" if r["gossip"] else "off", f"{r['crashed']:,}", _pct(r["series"][0]),
            *(_seconds(r[name], r["watch_s"]) for name, _ in THRESHOLDS), f"{r['evicted_after_crash']:,}",
            f"{bw['settle_bytes_per_node_s']['mean']:.1f}", f"{bw['run_bytes_per_node_s']:.1f}",
            f"{bw['settle_bytes_per_node_s']['max']:.0f}", f"{bw['settle_datagrams_per_node_s']:.2f}",
            f"{r['wall_s']:.1f}",
        ])  # fmt: skip
    return rows


def loss_rows(runs: Sequence[dict[str, Any]]) -> list[list[str]]:
    return [
        [f"{r['nodes']:,}", "on" if r["gossip"] else "off", f"{r['loss']:.0%}", f"{r['lossy_s'] / 60:g}",
         f"{r['evicted']:,}", f"{r['bad_at_end']:,}", _pct(r["not_good_at_end"] / max(1, r["entries_at_end"])),
         f"{r['gossip_bytes_per_node_s']:.1f}", f"{r['wall_s']:.1f}"]
        for r in sorted(runs, key=lambda r: not r["gossip"])
    ]  # fmt: skip


def attack_rows(run: dict[str, Any]) -> list[list[str]]:
    per_node = run["attack"]["not_good_per_node"]
    return [[
        f"{run['nodes']:,}", f"{run['attackers']:,}", f"{run['forged_queries']:,}", f"{run['evicted_by_honest']:,}",
        _pct(run["baseline"]["not_good_share"]), _pct(run["attack"]["not_good_share"]),
        "-" if per_node is None else f"{per_node:.1f}", f"{run['attack']['bad_max']:,}", f"{run['wall_s']:.1f}",
    ]]  # fmt: skip


def format_report(report: dict[str, Any]) -> str:
    p = report["parameters"]
    out = [f"liveness benchmark: seed {p['seed']}, settle {p['settle']:g} s virtual"]
    detection = _ok(report["detection"], "detection")
    if "detection" in p["experiments"]:
        out += [
            "",
            f"detection: {p['crash_fraction']:.0%} of the nodes crash at once; share of live nodes still holding "
            f"one as good, watched {p['watch']:g} s",
            format_table(DETECTION_HEADERS, detection_rows(detection)),
        ]
        for s in report["speedups"]:
            bound = " (lower bound: gossip off never got there)" if s["lower_bound"] else ""
            out.append(f"N={s['nodes']:,}: T99 without / with gossip = {s['ratio']:.1f}{bound}")
    loss = _ok(report["loss"], "loss")
    if "loss" in p["experiments"]:
        out += [
            "",
            "loss: every node alive, datagrams lost at random after settling without loss",
            format_table(LOSS_HEADERS, loss_rows(loss)),
        ]
    attack = report["attack"]
    if attack is not None and "error" not in attack:
        out += [
            "",
            f"attack: {attack['claims_per_query']} DEAD claims per forged query, incarnation "
            f"{FORGED_INCARNATION}; honest entries in honest tables that are not good",
            format_table(ATTACK_HEADERS, attack_rows(attack)),
        ]
    failed = [r for r in [*report["detection"], *report["loss"], report["attack"]] if r is not None and "error" in r]
    for r in failed:
        out.append(f"{r.get('experiment')} N={r.get('nodes')} gossip {r.get('gossip')}: FAILED: {r['error']}")
    out.append("")
    for entry in report["must_show"]:
        mark = "PASS" if entry["pass"] else "FAIL"
        note = f"  ({entry['note']})" if "note" in entry else ""
        out.append(f"{mark}  {entry['check']}: measured {entry['measured']}, target {entry['target']}{note}")
    return "\n".join(out)


# ---------------------------------------------------------------------- command line


def parse_sizes(text: str) -> list[int]:
    sizes = sorted({int(part.replace("_", "")) for part in text.split(",") if part.strip()})
    if not sizes or sizes[0] < 20:
        raise argparse.ArgumentTypeError("sizes must be integers >= 20 (5% of them crash)")
    return sizes


def parse_experiments(text: str) -> list[str]:
    chosen = [part.strip() for part in text.split(",") if part.strip()]
    unknown = set(chosen) - set(EXPERIMENTS)
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"experiments are among {','.join(EXPERIMENTS)}")
    return chosen


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.liveness", description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "--nodes",
        type=parse_sizes,
        default=list(DEFAULT_NODES),
        help="detection: comma-separated network sizes (default 1000,10000)",
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--settle", type=float, default=SETTLE, help="virtual seconds from growth to each experiment")
    parser.add_argument("--watch", type=float, default=WATCH, help="detection: virtual seconds watched after the crash")
    parser.add_argument("--crash-fraction", type=float, default=CRASH_FRACTION)
    parser.add_argument("--loss-nodes", type=int, default=LOSS_NODES)
    parser.add_argument("--loss-minutes", type=float, default=LOSS_MINUTES)
    parser.add_argument("--loss", type=float, default=LOSS, help="share of datagrams lost in the loss experiment")
    parser.add_argument("--attack-nodes", type=int, default=ATTACK_NODES)
    parser.add_argument("--attack-minutes", type=float, default=ATTACK_MINUTES)
    parser.add_argument(
        "--experiments",
        type=parse_experiments,
        default=list(EXPERIMENTS),
        help="comma-separated subset of detection,loss,attack",
    )
    parser.add_argument("--jobs", type=int, default=1, help="worker processes at once (each uses one core)")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument("--worker-timeout", type=float, default=6 * 3600.0)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.jobs < 1 or args.settle < 0 or args.watch < 0:
        parser.error("--jobs must be >= 1, --settle and --watch >= 0")
    return args


def run(args: argparse.Namespace) -> dict[str, Any]:
    specs = plan(args)
    order = sorted(range(len(specs)), key=lambda i: -_cost(specs[i]))
    results: list[dict[str, Any]] = [{} for _ in specs]
    log(f"{len(specs)} runs, {args.jobs} at a time")
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = {i: pool.submit(run_worker, specs[i], args.worker_timeout) for i in order}
        for i in order:
            results[i] = futures[i].result()
            r = results[i]
            what = _label(r.get("experiment", "?"), r.get("nodes", 0), r.get("gossip", True))
            log(f"{what}: " + (f"FAILED: {r['error']}" if "error" in r else f"done in {r['wall_s']:.1f} s wall"))
    detection = [r for r in results if r.get("experiment") == "detection"]
    attack = next((r for r in results if r.get("experiment") == "attack"), None)
    report: dict[str, Any] = {
        "benchmark": "liveness",
        "parameters": {
            "experiments": args.experiments,
            "nodes": args.nodes,
            "seed": args.seed,
            "settle": args.settle,
            "watch": args.watch,
            "step": STEP,
            "crash_fraction": args.crash_fraction,
            "loss_nodes": args.loss_nodes,
            "loss_minutes": args.loss_minutes,
            "loss": args.loss,
            "attack_nodes": args.attack_nodes,
            "attack_minutes": args.attack_minutes,
            "attacker_fraction": ATTACKER_FRACTION,
            "forged_per_second": FORGED_PER_SECOND,
            "jobs": args.jobs,
        },
        "environment": {"python": platform.python_version(), "cpus": os.cpu_count(), "loadavg_start": os.getloadavg()},
        "detection": detection,
        "speedups": speedups(_ok(detection, "detection")),
        "loss": [r for r in results if r.get("experiment") == "loss"],
        "attack": attack,
    }
    report["must_show"] = must_show(report)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(list(sys.argv[1:] if argv is None else argv))
    if args.worker is not None:
        result = run_spec(json.loads(args.worker))
        Path(args.worker_out).write_text(json.dumps(result))
        return 0
    report = run(args)
    print(format_report(report))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1) + "\n")
        log(f"wrote {args.json}")
    runs = [*report["detection"], *report["loss"], *([report["attack"]] if report["attack"] is not None else [])]
    return 0 if all("error" not in r for r in runs) else 1


if __name__ == "__main__":
    raise SystemExit(main())
