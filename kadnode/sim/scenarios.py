"""Building blocks for simulated scenarios: grow a network in waves, run lookups, check them.

Used by the scenario tests and by `kadnode sim`. Every check failure goes through `fail`, which names
the seed, so that a failing run can be replayed exactly.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from kadnode.core.node import NodeCore
from kadnode.core.results import LookupResult
from kadnode.sim.network import SimNetwork, SimNode

WAVE_SEEDS = 3
"""Already-joined nodes each newcomer bootstraps through (a daemon is usually given a few)."""
WAVE_SPACING = 0.002
"""Virtual seconds between two joins of a wave."""
WAVE_SETTLE = 10.0
"""Virtual seconds a wave runs after its last join, so its bootstraps finish before the next wave."""


class ScenarioFailure(AssertionError):
    """A scenario check failed; the message names the seed to replay it with."""


def fail(net: SimNetwork, message: str) -> ScenarioFailure:
    """The error to raise for a failed check: `raise fail(net, "...")`."""
    return ScenarioFailure(f"{message} (replay with seed {net.seed})")


def check(net: SimNetwork, condition: bool, message: str) -> None:
    if not condition:
        raise fail(net, message)


def grow(
    net: SimNetwork, size: int, *, progress: Callable[[int], None] | None = None, wave_factor: float = 1.0
) -> None:
    """Grow the network to `size` live nodes in waves: each wave adds up to `wave_factor` times the
    nodes already there, each newcomer joining through `WAVE_SEEDS` random nodes of the earlier waves.

    Joining everyone through one seed makes that seed answer every newcomer and know far more than its
    share; waves spread the load as a real network's growth does. `progress(n)` hears each join.
    """
    if not net.live_nodes():
        net.add_node()
        if progress is not None:
            progress(1)
    rng = net.rng
    while len(net.live_nodes()) < size:
        joined = [n.addr for n in net.live_nodes()]
        wave = min(max(1, int(len(joined) * wave_factor)), size - len(joined))
        for _ in range(wave):
            net.join(rng.sample(joined, min(WAVE_SEEDS, len(joined))))
            net.run_until(net.now + WAVE_SPACING)
            if progress is not None:
                progress(1)
        net.run_until(net.now + WAVE_SETTLE)


def build(seed: int, size: int, **kwargs: object) -> SimNetwork:
    """A network of `size` nodes grown by `grow` and settled for a minute of virtual time."""
    net = SimNetwork(seed, **kwargs)  # type: ignore[arg-type]
    grow(net, size)
    net.run_until(net.now + 60)
    return net


def brute_force_closest(net: SimNetwork, target: int, k: int, *, exclude: int | None = None,
                        among: Sequence[SimNode] | None = None) -> list[int]:
    """The true k closest live node IDs to `target` (optionally among some nodes, without one ID)."""
    nodes = net.live_nodes() if among is None else among
    ids = (n.core.node_id for n in nodes if n.core.node_id != exclude)
    return heapq.nsmallest(k, ids, key=lambda i: i ^ target)


def find_node(net: SimNetwork, node: SimNode, target: int) -> LookupResult:
    result: LookupResult = net.run_op(node.addr, lambda core, now, done: core.find_node(target, now, done))
    return result


@dataclass(slots=True)
class LookupStats:
    """Lookups compared with brute force: how many found exactly the true k closest, and the rest."""

    total: int = 0
    exact: int = 0
    overlap: float = 0.0
    """Sum over lookups of the fraction of the true k closest that were found."""
    latencies: list[float] = field(default_factory=list)
    hops: list[int] = field(default_factory=list)
    queried: list[int] = field(default_factory=list)
    returned: list[int] = field(default_factory=list)
    """How many nodes each lookup returned (k unless the network is smaller or cut off)."""
    datagrams: int = 0
    """Datagrams the network carried while the lookups ran (requests, replies and background)."""

    @property
    def exact_ratio(self) -> float:
        return self.exact / self.total if self.total else 0.0

    @property
    def mean_overlap(self) -> float:
        return self.overlap / self.total if self.total else 0.0


def run_lookups(
    net: SimNetwork,
    count: int,
    rng: random.Random,
    *,
    origins: Sequence[SimNode] | None = None,
    among: Sequence[SimNode] | None = None,
    concurrency: int = 1,
    progress: Callable[[int], None] | None = None,
) -> LookupStats:
    """`count` find_node lookups of random targets from random origins (default: any live node), each
    compared with the brute-force k closest of `among` (default: every live node but the origin).

    With `concurrency` > 1 the lookups run in batches started at the same virtual moment, as on a busy
    network; at 10,000 nodes most of the wall time of one-at-a-time lookups goes to the background
    maintenance of every node during the virtual time they take."""
    stats = LookupStats()
    k = net.settings.k
    sent_before = net.sent
    live = list(origins) if origins is not None else net.live_nodes()
    done = 0
    while done < count:
        batch = [(rng.choice(live), rng.getrandbits(160)) for _ in range(min(concurrency, count - done))]
        results = net.run_ops([(origin.addr, _find_node(target)) for origin, target in batch])
        for (origin, target), result in zip(batch, results, strict=True):
            expected = brute_force_closest(net, target, k, exclude=origin.core.node_id, among=among)
            found = [n.id for n in result.closest]
            stats.total += 1
            stats.exact += found == expected
            stats.overlap += len(set(found) & set(expected)) / len(expected) if expected else 1.0
            stats.latencies.append(result.duration)
            stats.hops.append(result.hops)
            stats.queried.append(result.queried)
            stats.returned.append(len(found))
        done += len(batch)
        if progress is not None:
            progress(len(batch))
    stats.datagrams = net.sent - sent_before
    return stats


def _find_node(target: int) -> Callable[[NodeCore, float, Callable[[Any], None]], None]:
    return lambda core, now, done: core.find_node(target, now, done)


def churn(net: SimNetwork, fraction: float, rng: random.Random) -> tuple[int, int]:
    """Crash `fraction` of the live nodes at once and join as many new ones through survivors.
    Returns (crashed, joined)."""
    live = net.live_nodes()
    victims = rng.sample(live, int(fraction * len(live)))
    for node in victims:
        net.crash(node.addr)
    survivors = [n.addr for n in net.live_nodes()]
    for _ in victims:
        net.join(rng.sample(survivors, min(WAVE_SEEDS, len(survivors))))
        net.run_until(net.now + WAVE_SPACING)
    return len(victims), len(victims)
