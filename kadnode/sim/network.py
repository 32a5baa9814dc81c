"""An in-memory datagram network on a virtual clock, driving many unmodified `NodeCore`s.

Everything random (IDs, latencies, losses, each node's own random source) is drawn from one seed, and
events at equal times run in the order they were scheduled, so a run is a pure function of its seed.
`trace_hash` summarises every delivery so that tests can prove it.
"""

from __future__ import annotations

import hashlib
import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from kadnode.core.node import NodeCore
from kadnode.core.nodeid import random_id
from kadnode.settings import Settings
from kadnode.types import Addr

T = TypeVar("T")

_DELIVER = 0
_TIMER = 1


class SimulationStalled(RuntimeError):
    """An operation did not complete within the virtual time it was given."""


@dataclass(slots=True)
class SimNode:
    addr: Addr
    core: NodeCore
    armed: float | None = None
    alive: bool = True


def sim_addr(index: int, port: int = 6881) -> Addr:
    """The virtual endpoint of node `index`: unique loopback-style addresses, nothing leaves the process."""
    return (f"127.{(index >> 16) & 255}.{(index >> 8) & 255}.{index & 255}", port)


class SimNetwork:
    """Nodes, links and one timeline. Latency is drawn per datagram (so packets may reorder)."""

    def __init__(
        self,
        seed: int,
        *,
        settings: Settings | None = None,
        latency: tuple[float, float] = (0.005, 0.050),
        loss: float = 0.0,
    ) -> None:
        self.seed = seed
        self.settings = settings if settings is not None else Settings()
        self.latency = latency
        self.loss = loss
        self.rng = random.Random(seed)
        self.now = 0.0
        self.nodes: dict[Addr, SimNode] = {}
        self.delivered = 0
        self.lost = 0
        self._events: list[tuple[float, int, int, Addr, Addr, bytes]] = []
        self._seq = 0
        self._trace = hashlib.sha256()
        self._next_index = 1

    # ------------------------------------------------------------------ membership

    def add_node(self, node_id: int | None = None, addr: Addr | None = None) -> NodeCore:
        """Create a node (ID and address drawn from the seed unless given) and return its core."""
        if addr is None:
            addr = sim_addr(self._next_index)
            self._next_index += 1
        if node_id is None:
            node_id = random_id(self.rng)
        node_rng = random.Random(self.rng.getrandbits(64))
        core = NodeCore(node_id, self.settings, node_rng, self.now)
        node = SimNode(addr, core)
        self.nodes[addr] = node
        self._flush(node)
        return core

    def join(self, seeds: list[Addr], node_id: int | None = None) -> SimNode:
        """Add a node and start its bootstrap through `seeds` (it completes as the network runs)."""
        core = self.add_node(node_id)
        node = next(reversed(self.nodes.values()))
        core.bootstrap(seeds, self.now, lambda _result: None)
        self._flush(node)
        return node

    def crash(self, addr: Addr) -> None:
        """The node goes silent at once, as a crashed host does: it neither receives nor sends."""
        self.nodes[addr].alive = False

    def live_nodes(self) -> list[SimNode]:
        return [n for n in self.nodes.values() if n.alive]

    # ------------------------------------------------------------------ running

    def run_until(self, when: float) -> None:
        """Process every event up to virtual time `when`."""
        while self._events and self._events[0][0] <= when:
            self._step()
        self.now = max(self.now, when)

    def run_op(self, addr: Addr, start: Callable[[NodeCore, float, Callable[[T], None]], None],
               limit: float = 120.0) -> T:
        """Start an operation on one node and run the network until its result arrives."""
        node = self.nodes[addr]
        box: list[T] = []
        start(node.core, self.now, box.append)
        self._flush(node)
        deadline = self.now + limit
        while not box:
            if not self._events or self._events[0][0] > deadline:
                raise SimulationStalled(f"operation on {addr} gave no result within {limit}s (seed {self.seed})")
            self._step()
        return box[0]

    def _step(self) -> None:
        when, _, kind, src, dst, data = heapq.heappop(self._events)
        self.now = when
        node = self.nodes.get(dst)
        if node is None or not node.alive:
            return
        if kind == _DELIVER:
            self.delivered += 1
            self._trace.update(b"%.9f|%s:%d>%s:%d|" % (when, src[0].encode(), src[1], dst[0].encode(), dst[1]))
            self._trace.update(data)
            node.core.datagram_received(data, src, when)
        else:
            if node.armed != when:
                return
            node.armed = None
            node.core.advance(when)
        self._flush(node)

    def _flush(self, node: SimNode) -> None:
        low, high = self.latency
        for data, dst in node.core.take_outgoing():
            if self.loss and self.rng.random() < self.loss:
                self.lost += 1
                continue
            self._push(self.now + self.rng.uniform(low, high), _DELIVER, node.addr, dst, data)
        deadline = node.core.next_deadline()
        if deadline is not None and deadline != node.armed:
            node.armed = max(deadline, self.now)
            self._push(node.armed, _TIMER, node.addr, node.addr, b"")

    def _push(self, when: float, kind: int, src: Addr, dst: Addr, data: bytes) -> None:
        self._seq += 1
        heapq.heappush(self._events, (when, self._seq, kind, src, dst, data))

    def trace_hash(self) -> str:
        """A digest of every datagram delivered so far, with its time and endpoints."""
        return self._trace.hexdigest()
