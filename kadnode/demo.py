"""`kadnode demo`: a throwaway DHT of real nodes on loopback, checked against brute force.

Every node is a full `kadnode.Node` on its own UDP socket, so the demo exercises the same code as the
daemon. Nothing leaves 127.0.0.0/8: node i binds 127.0.0.(10 + i mod 240) with an ephemeral port.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import click

from kadnode.runtime.node import Node
from kadnode.settings import Settings

FIRST_HOST = 10
"""Node i binds 127.0.0.(FIRST_HOST + i); addresses below stay free for tests and daemons."""
HOSTS = 240
"""127.0.0.10 .. 127.0.0.249; more nodes share addresses (each still has its own port)."""
CONCURRENCY = 20
"""Bootstraps (and checks) in flight at once, so a large demo does not flood one seed node."""
DRAIN_TURNS = 50
"""Waits of 10 ms for answers still in flight before the datagram counts are read (0.5 s at most)."""
DEMO_SETTINGS = Settings(rate_limit_per_second=0.0)
"""Every demo node hammers the seed at once from the same machine: the per-IP limiter is for strangers."""

T = TypeVar("T")
Echo = Callable[[str], None]


def demo_host(index: int) -> str:
    return f"127.0.0.{FIRST_HOST + index % HOSTS}"


@dataclass(slots=True)
class DemoReport:
    """What the demo measured; `ok` is the exit status's source of truth."""

    nodes: int
    joined: int = 0
    table_sizes: list[int] = field(default_factory=list)
    lookups_total: int = 0
    lookups_exact: int = 0
    lookup_matches: list[tuple[int, int]] = field(default_factory=list)
    """(matched, expected) per lookup: how many of the true k closest it returned."""
    lookup_latencies: list[float] = field(default_factory=list)
    announces_total: int = 0
    announces_found: int = 0
    datagrams_sent: int = 0
    datagrams_received: int = 0
    dropped: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return (
            self.joined == self.nodes - 1
            and self.lookups_exact == self.lookups_total
            and self.announces_found == self.announces_total
        )

    def summary(self) -> list[tuple[str, str]]:
        lat = self.lookup_latencies
        latency = f"median {statistics.median(lat) * 1000:.1f} ms, max {max(lat) * 1000:.1f} ms" if lat else "-"
        dropped = ", ".join(f"{k} {v}" for k, v in sorted(self.dropped.items())) or "none"
        mean_table = statistics.fmean(self.table_sizes) if self.table_sizes else 0.0
        return [
            ("nodes", f"{self.nodes} ({self.joined} of {self.nodes - 1} joined through the seed)"),
            ("mean routing table size", f"{mean_table:.1f}"),
            ("lookups exact / total", f"{self.lookups_exact}/{self.lookups_total}"),
            ("lookup latency", latency),
            ("announces found / total", f"{self.announces_found}/{self.announces_total}"),
            ("datagrams sent", str(self.datagrams_sent)),
            ("datagrams received", str(self.datagrams_received)),
            ("dropped", dropped),
            ("result", "OK" if self.ok else "FAILED"),
        ]


async def _bounded(items: Sequence[Callable[[], Awaitable[T]]], limit: int = CONCURRENCY) -> list[T]:
    """Run the thunks with at most `limit` in flight; results in order."""
    gate = asyncio.Semaphore(limit)

    async def one(thunk: Callable[[], Awaitable[T]]) -> T:
        async with gate:
            return await thunk()

    return list(await asyncio.gather(*(one(t) for t in items)))


def true_closest(ids: Sequence[int], target: int, k: int, exclude: int) -> list[int]:
    """Brute force: the k IDs nearest `target` by XOR, leaving out the node that asks."""
    return sorted((i for i in ids if i != exclude), key=lambda i: i ^ target)[:k]


async def run_demo(
    n_nodes: int,
    *,
    seed: int | None = None,
    lookups: int = 5,
    announces: int = 5,
    settings: Settings = DEMO_SETTINGS,
    echo: Echo = click.echo,
) -> DemoReport:
    """Start the nodes, join them, check lookups and announces, stop every node (also when cancelled)."""
    if n_nodes < 2:
        raise ValueError("the demo needs at least 2 nodes")
    rng = random.Random(seed)
    report = DemoReport(nodes=n_nodes)
    async with contextlib.AsyncExitStack() as stack:
        started = time.monotonic()
        nodes: list[Node] = []
        for i in range(n_nodes):
            bootstrap = [nodes[0].addr] if nodes else []
            node = Node(demo_host(i), 0, settings=settings, bootstrap=bootstrap, node_id=rng.getrandbits(160))
            nodes.append(await stack.enter_async_context(node))
        last = demo_host(n_nodes - 1) if n_nodes <= HOSTS else demo_host(HOSTS - 1)
        echo(
            f"started {n_nodes} nodes on {demo_host(0)}..{last} in {time.monotonic() - started:.2f} s; "
            f"seed node {nodes[0].addr[0]}:{nodes[0].addr[1]}"
        )

        started = time.monotonic()
        joins = await _bounded([node.bootstrap for node in nodes[1:]])
        report.joined = sum(1 for result in joins if result.seeds_answered > 0)
        report.table_sizes = [len(node.core.routing_table) for node in nodes]
        echo(
            f"bootstrapped {report.joined}/{n_nodes - 1} nodes in {time.monotonic() - started:.2f} s; "
            f"mean routing table size {statistics.fmean(report.table_sizes):.1f}"
        )

        ids = [node.node_id for node in nodes]
        k = settings.k
        for _ in range(lookups):
            origin = rng.choice(nodes)
            target = rng.getrandbits(160)
            result = await origin.find_node(target)
            expected = true_closest(ids, target, k, origin.node_id)
            found = [info.id for info in result.closest]
            matched = len(set(found) & set(expected))
            report.lookups_total += 1
            report.lookups_exact += found == expected
            report.lookup_matches.append((matched, len(expected)))
            report.lookup_latencies.append(result.duration)
            verdict = "exact" if found == expected else f"{matched}/{len(expected)} of the true closest"
            echo(
                f"lookup {target:040x} from {origin.addr[0]}:{origin.addr[1]}: {verdict}, "
                f"{result.responded} responded, {result.duration * 1000:.1f} ms"
            )

        for i in range(announces):
            info_hash = rng.randbytes(20)
            announcer, finder = rng.sample(nodes, 2)
            port = 10000 + i
            stored = await announcer.announce(info_hash, port)
            got = await finder.get_peers(info_hash)
            found_it = (announcer.addr[0], port) in got.peers
            report.announces_total += 1
            report.announces_found += found_it
            echo(
                f"announce {info_hash.hex()} from {announcer.addr[0]}:{announcer.addr[1]} "
                f"(stored at {stored.stored_at}/{stored.attempted}); get_peers from "
                f"{finder.addr[0]}:{finder.addr[1]}: {'found' if found_it else 'NOT found'} "
                f"among {len(got.peers)} peers"
            )

        # Lookups end once their k closest answered; late answers may still be on their way. Let them land
        # (a moment on loopback) so that "sent" and "received" compare what the network actually did.
        for _ in range(DRAIN_TURNS):
            if sum(n.core.counters["datagrams_out"] for n in nodes) == sum(
                n.core.counters["datagrams_in"] for n in nodes
            ):
                break
            await asyncio.sleep(0.01)
        for node in nodes:
            counters = node.core.counters
            report.datagrams_sent += counters["datagrams_out"]
            report.datagrams_received += counters["datagrams_in"]
            for name, count in counters.items():
                if name.startswith("dropped.") and count:
                    reason = name.removeprefix("dropped.")
                    report.dropped[reason] = report.dropped.get(reason, 0) + count
        echo(f"stopping {n_nodes} nodes")
    return report


def print_summary(report: DemoReport, echo: Echo = click.echo) -> None:
    rows = report.summary()
    width = max(len(name) for name, _ in rows)
    echo("")
    for name, value in rows:
        echo(f"{name.ljust(width)}  {value}")


def main(n_nodes: int, *, seed: int | None = None, lookups: int = 5, announces: int = 5) -> int:
    """Run the demo and print its summary; 0 only if every node joined and every check passed."""
    try:
        report = asyncio.run(run_demo(n_nodes, seed=seed, lookups=lookups, announces=announces))
    except KeyboardInterrupt:
        click.echo("interrupted; all nodes stopped", err=True)
        return 130
    print_summary(report)
    return 0 if report.ok else 1
