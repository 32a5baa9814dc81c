"""`kadnode sim`: grow a simulated network, run lookups against brute force, churn it, report.

Kept apart from the CLI so that benchmarks and tests can call `run_sim` and read a `SimReport`.
"""

from __future__ import annotations

import gc
import random
import resource
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

from kadnode.sim.links import LinkModel
from kadnode.sim.network import SimNetwork
from kadnode.sim.scenarios import LookupStats, churn, grow, run_lookups

CHURN_SETTLE = 60.0
"""Virtual seconds between churn and the lookups after it: the newcomers' bootstraps finish, the
survivors have not yet pinged their dead contacts away (so the lookups meet the dead)."""

LOOKUP_CONCURRENCY = 25
"""Lookups started at the same virtual moment. One at a time, 1,000 lookups at 10,000 nodes take six
virtual minutes, and every node's maintenance during them costs most of the wall time."""

Progress = Callable[[str, int], Callable[[int], None]]
"""progress(label, total) -> a function called with each increment; the CLI draws click progress bars."""


@dataclass(frozen=True, slots=True)
class PhaseReport:
    """One batch of lookups, compared with the brute-force k closest live nodes."""

    name: str
    lookups: int
    exact: int
    mean_overlap: float
    latency_mean: float
    latency_p50: float
    latency_p99: float
    hops_mean: float
    hops_p50: float
    hops_p99: float
    requests_per_lookup: float
    """Requests the lookup itself sent (LookupResult.queried)."""
    datagrams_per_lookup: float
    """Every datagram the network carried during the phase, divided by the lookups (incl. replies and
    background maintenance)."""
    virtual_time: float
    wall_time: float


@dataclass(frozen=True, slots=True)
class SimReport:
    seed: int
    nodes: int
    churn: float
    loss: float
    bootstrap_virtual: float
    bootstrap_wall: float
    bootstrap_datagrams: int
    phases: list[PhaseReport] = field(default_factory=list)
    datagrams: int = 0
    datagrams_per_wall_second: float = 0.0
    peak_rss_mb: float = 0.0
    trace_hash: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _phase(name: str, stats: LookupStats, virtual: float, wall: float) -> PhaseReport:
    hops = [float(h) for h in stats.hops]
    count = max(1, stats.total)
    return PhaseReport(
        name=name, lookups=stats.total, exact=stats.exact, mean_overlap=stats.mean_overlap,
        latency_mean=statistics.fmean(stats.latencies) if stats.latencies else 0.0,
        latency_p50=_percentile(stats.latencies, 0.5), latency_p99=_percentile(stats.latencies, 0.99),
        hops_mean=statistics.fmean(hops) if hops else 0.0,
        hops_p50=_percentile(hops, 0.5), hops_p99=_percentile(hops, 0.99),
        requests_per_lookup=sum(stats.queried) / count, datagrams_per_lookup=stats.datagrams / count,
        virtual_time=virtual, wall_time=wall,
    )


def _no_progress(_label: str, _total: int) -> Callable[[int], None]:
    return lambda _n: None


def run_sim(nodes: int, *, seed: int, churn_fraction: float = 0.0, loss: float = 0.0, lookups: int = 1000,
            links: LinkModel | None = None, progress: Progress = _no_progress) -> SimReport:
    """Grow `nodes` nodes, run `lookups` lookups; then, if asked, crash `churn_fraction` of the nodes,
    join as many new ones, turn on `loss` and run the lookups again."""
    with cyclic_gc_paused():
        return _run_sim(nodes, seed, churn_fraction, loss, lookups, links, progress)


@contextmanager
def cyclic_gc_paused() -> Iterator[None]:
    """Pause CPython's cyclic garbage collector (reference counting goes on).

    A large simulation holds millions of long-lived objects (routing entries, lookups, RTT estimates),
    and the collector re-scans all of them each time the heap has grown by a quarter: 21% of the CPU
    time of a 5,000-node run. What the simulator frees, reference counting frees: peak RSS is the same
    with the collector paused (1,118 vs 1,124 MB at 5,000 nodes). It resumes afterwards.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _run_sim(nodes: int, seed: int, churn_fraction: float, loss: float, lookups: int, links: LinkModel | None,
             progress: Progress) -> SimReport:
    net = SimNetwork(seed, links=links)
    rng = random.Random(seed ^ 0x100C)
    started = time.perf_counter()
    grow(net, nodes, progress=progress("bootstrap", nodes))
    net.run_until(net.now + CHURN_SETTLE)
    bootstrap_wall = time.perf_counter() - started
    bootstrap_virtual = net.now
    bootstrap_datagrams = net.sent
    phases = []

    def phase(name: str) -> None:
        wall, virtual = time.perf_counter(), net.now
        stats = run_lookups(net, lookups, rng, concurrency=LOOKUP_CONCURRENCY,
                            progress=progress(f"lookups ({name})", lookups))
        phases.append(_phase(name, stats, net.now - virtual, time.perf_counter() - wall))

    if lookups:
        phase("stable")
    if churn_fraction or loss:
        if churn_fraction:
            churn(net, churn_fraction, rng)
            net.run_until(net.now + CHURN_SETTLE)
        net.set_links(LinkModel(net.links.median, net.links.spread, net.links.jitter, loss, net.links.duplicate))
        if lookups:
            phase(f"churn {churn_fraction:.0%}, loss {loss:.0%}")
    wall = time.perf_counter() - started
    return SimReport(
        seed=seed, nodes=nodes, churn=churn_fraction, loss=loss, bootstrap_virtual=bootstrap_virtual,
        bootstrap_wall=bootstrap_wall, bootstrap_datagrams=bootstrap_datagrams, phases=phases,
        datagrams=net.sent, datagrams_per_wall_second=net.sent / wall if wall else 0.0,
        peak_rss_mb=peak_rss_mb(), trace_hash=net.trace_hash(),
    )


def peak_rss_mb() -> float:
    """This process's peak resident set (ru_maxrss is in KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def format_report(report: SimReport) -> str:
    """The human-readable report `kadnode sim` prints."""
    lines = [
        f"kadnode sim: {report.nodes:,} nodes, seed {report.seed}, churn {report.churn:.0%}, loss {report.loss:.0%}",
        f"  bootstrap   {report.bootstrap_virtual:9.1f} s virtual  {report.bootstrap_wall:8.1f} s wall  "
        f"{report.bootstrap_datagrams:,} datagrams ({report.bootstrap_datagrams / max(1, report.nodes):.0f} per node)",
    ]
    for p in report.phases:
        lines += [
            f"  lookups ({p.name})",
            f"    exact       {p.exact} / {p.lookups}  (mean overlap with the true k closest {p.mean_overlap:.1%})",
            f"    time        {p.virtual_time:9.1f} s virtual  {p.wall_time:8.1f} s wall",
            f"    latency     mean {p.latency_mean * 1000:.0f} ms  p50 {p.latency_p50 * 1000:.0f} ms  "
            f"p99 {p.latency_p99 * 1000:.0f} ms  (virtual)",
            f"    hops        mean {p.hops_mean:.2f}  p50 {p.hops_p50:.0f}  p99 {p.hops_p99:.0f}",
            f"    per lookup  {p.requests_per_lookup:.1f} requests sent, {p.datagrams_per_lookup:.1f} datagrams "
            "in the network",
        ]
    lines += [
        f"  datagrams   {report.datagrams:,} simulated, {report.datagrams_per_wall_second:,.0f} per wall second",
        f"  peak RSS    {report.peak_rss_mb:.0f} MB",
        f"  trace hash  {report.trace_hash}",
    ]
    return "\n".join(lines)
