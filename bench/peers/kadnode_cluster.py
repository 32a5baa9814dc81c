"""kadnode: `kadnode.Node`s on one asyncio loop, storing immutable BEP 44 items."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Sequence
from typing import Any

from bench.peers.base import Cluster
from kadnode import Node
from kadnode.settings import Settings
from kadnode.wire.bencode import bencode

BOOTSTRAP_BATCH = 25
"""Nodes bootstrapping at once (each joins through the seed, then looks up its own ID)."""


class KadnodeCluster(Cluster):
    name = "kadnode"

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings if settings is not None else Settings()
        self.nodes: list[Node] = []
        self.dead: set[int] = set()
        self.get_stats: list[tuple[int, int, int, float]] = []
        """(queried, responded, failed, duration) of every get's lookup, for `profile_gets`."""

    async def start(self, hosts: Sequence[str], progress: Callable[[int], None] | None = None) -> None:
        self.nodes = [Node(host, 0, settings=self.settings) for host in hosts]
        for node in self.nodes:
            await node.start()
        seed = self.nodes[0].addr
        for first in range(1, len(self.nodes), BOOTSTRAP_BATCH):
            batch = self.nodes[first : first + BOOTSTRAP_BATCH]
            await asyncio.gather(*(node.bootstrap([seed]) for node in batch))
            if progress is not None:
                progress(first + len(batch))
        # The seed met everyone; let it (and the first joiners) fill their tables from the rest too.
        await self.nodes[0].bootstrap([self.nodes[1].addr])

    @staticmethod
    def _encoded(value: bytes) -> bytes:
        return bencode(value)

    async def put(self, index: int, key: bytes, value: bytes) -> bool:
        result = await self.nodes[index].put(value, immutable=True)
        return result.stored_at > 0

    async def get(self, index: int, key: bytes, value: bytes) -> bool:
        target = hashlib.sha1(self._encoded(value)).digest()
        result = await self.nodes[index].get(target)
        lookup = result.lookup
        self.get_stats.append((lookup.queried, lookup.responded, lookup.failed, lookup.duration))
        return result.item is not None and result.item.value == self._encoded(value)

    async def kill(self, indices: Sequence[int]) -> None:
        # No data_dir: stop() saves nothing and sends nothing; it closes the socket and cancels timers.
        for index in indices:
            self.dead.add(index)
            await self.nodes[index].stop()

    async def close(self) -> None:
        for index, node in enumerate(self.nodes):
            if index not in self.dead:
                await node.stop()
        self.dead = set(range(len(self.nodes)))

    def datagrams_sent(self) -> int | None:
        return sum(node.core.counters["datagrams_out"] for node in self.nodes)

    def counters(self) -> dict[str, int]:
        """The nodes' counters summed (rpc.timeouts, queries_out.*, ...), for profiling."""
        total: dict[str, int] = {}
        for node in self.nodes:
            for name, value in node.core.counters.items():
                total[name] = total.get(name, 0) + value
        return total

    def profile_gets(self) -> dict[str, Any]:
        """Where the gets since the last call spent their time: those whose lookup saw a request fail
        (a timeout: a crashed node or a lost datagram) against those that did not."""
        stats, self.get_stats = self.get_stats, []
        if not stats:
            return {}
        clean = sorted(s[3] * 1000 for s in stats if s[2] == 0)
        hit = sorted(s[3] * 1000 for s in stats if s[2] > 0)

        def median(values: list[float]) -> float | None:
            return values[len(values) // 2] if values else None

        return {
            "gets": len(stats),
            "mean_queried": sum(s[0] for s in stats) / len(stats),
            "mean_responded": sum(s[1] for s in stats) / len(stats),
            "mean_failed": sum(s[2] for s in stats) / len(stats),
            "share_with_a_failed_request": len(hit) / len(stats),
            "median_ms_without_failed_request": median(clean),
            "median_ms_with_failed_request": median(hit),
            "min_ms_with_failed_request": hit[0] if hit else None,
        }

    def info(self) -> dict[str, Any]:
        defaults = Settings()
        changed = {
            name: getattr(self.settings, name)
            for name in Settings.field_names()
            if getattr(self.settings, name) != getattr(defaults, name)
        }
        return {"settings_changed": {k: (v.hex() if isinstance(v, bytes) else v) for k, v in changed.items()}}
