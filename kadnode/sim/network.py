"""An in-memory datagram network on a virtual clock, driving many unmodified `NodeCore`s.

Everything random (IDs, link latencies, jitter, losses, each node's own random source) is drawn from
one seed, and events at equal times run in the order they were scheduled, so a run is a pure function
of its seed. `trace_hash` summarises every delivery and every membership change so that tests can prove
it. Links (latency, jitter, loss, duplication) are described by `LinkModel`; partitions and churn
(crash, restart with or without state, graceful leave) are methods of `SimNetwork`.

The event loop is the hot path of a 10,000-node run (millions of datagrams): events are plain tuples
in one heap, and a datagram costs one heap push, one pop and a few integer operations here.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import random
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from kadnode.core.node import NodeCore
from kadnode.core.nodeid import random_id
from kadnode.settings import Settings
from kadnode.sim.links import LinkLatency, LinkModel
from kadnode.storage.base import Storage
from kadnode.types import Addr, NodeInfo

_TIMER = -1
"""The source index of a timer event (datagram events carry the sender's node index)."""
WARM_START_MAX = 100
"""Saved nodes a restarted node bootstraps from, as the daemon's warm start (kadnode.runtime.node)."""
LEAVE_GRACE = 30.0
"""A leaving node stops at the latest this long after `leave`, even if new work kept it busy."""
_DELIVERY = struct.Struct("<dii").pack

# An event: (time, sequence, source index or _TIMER, source, destination, payload).
Event = tuple[float, int, int, Addr, Addr, bytes]


class SimulationStalled(RuntimeError):
    """An operation did not complete within the virtual time it was given."""


@dataclass(slots=True)
class SimNode:
    addr: Addr
    core: NodeCore
    index: int
    armed: float | None = None
    alive: bool = True
    leaving_until: float | None = None
    """Set by `leave`: the node stops once idle, or at this time at the latest."""


def sim_addr(index: int, port: int = 6881) -> Addr:
    """The virtual endpoint of node `index`: unique loopback-style addresses, nothing leaves the process."""
    return (f"127.{(index >> 16) & 255}.{(index >> 8) & 255}.{index & 255}", port)


class SimNetwork:
    """Nodes, links and one timeline."""

    def __init__(
        self,
        seed: int,
        *,
        settings: Settings | None = None,
        links: LinkModel | None = None,
        loss: float | None = None,
    ) -> None:
        self.seed = seed
        self.settings = settings if settings is not None else Settings()
        links = links if links is not None else LinkModel()
        if loss is not None:
            links = LinkModel(links.median, links.spread, links.jitter, loss, links.duplicate)
        self.links = links
        self.latency = LinkLatency(links, seed)
        self.rng = random.Random(seed)
        """Membership: node IDs, node random sources, choices made by scenarios."""
        self._link_rng = random.Random(seed ^ 0x5EED_11AC)
        """Per-datagram draws, apart so that changing loss does not change the nodes' IDs."""
        self.now = 0.0
        self.nodes: dict[Addr, SimNode] = {}
        self.sent = 0
        self.delivered = 0
        self.lost = 0
        """Datagrams dropped by the links (loss), by a partition, or sent to nobody."""
        self.duplicated = 0
        self.events = 0
        self._events: list[Event] = []
        self._seq = itertools.count()
        self._trace = hashlib.sha256()
        self._next_index = 1
        self._groups: dict[Addr, int] | None = None

    # ------------------------------------------------------------------ membership

    def add_node(
        self, node_id: int | None = None, addr: Addr | None = None, *, storage: Storage | None = None
    ) -> NodeCore:
        """Create a node (ID and address drawn from the seed unless given) and return its core."""
        if addr is None:
            while sim_addr(self._next_index) in self.nodes:  # taken by a node given an explicit address
                self._next_index += 1
            addr = sim_addr(self._next_index)
        old = self.nodes.get(addr)
        if old is not None and old.alive:
            raise ValueError(f"{addr} is already running")
        if old is None:
            index = self._next_index
            self._next_index += 1
        else:
            index = old.index
        if node_id is None:
            node_id = random_id(self.rng)
        node_rng = random.Random(self.rng.getrandbits(64))
        core = NodeCore(node_id, self.settings, node_rng, self.now, storage)
        node = SimNode(addr, core, index)
        self.nodes[addr] = node
        self._note(b"start", addr, node_id)
        self._flush(node)
        return core

    def join(self, seeds: list[Addr], node_id: int | None = None, addr: Addr | None = None) -> SimNode:
        """Add a node and start its bootstrap through `seeds` (it completes as the network runs)."""
        core = self.add_node(node_id, addr)
        node = self.nodes[addr] if addr is not None else next(reversed(self.nodes.values()))
        core.bootstrap(seeds, self.now, lambda _result: None)
        self._flush(node)
        return node

    def crash(self, addr: Addr) -> None:
        """The node goes silent at once, as a crashed host does: it neither receives nor sends."""
        node = self.nodes[addr]
        node.alive = False
        node.leaving_until = None
        self._note(b"crash", addr, node.core.node_id)

    def leave(self, addr: Addr) -> None:
        """Graceful leave: the node finishes its in-flight requests, then stops (DHTs have no leave
        message, so the others notice only as they would a crash, but nothing it started is cut off)."""
        node = self.nodes[addr]
        if not node.alive:
            return
        node.leaving_until = self.now + LEAVE_GRACE
        self._note(b"leave", addr, node.core.node_id)
        self._maybe_stop(node)

    def restart(self, addr: Addr, *, keep_state: bool, seeds: list[Addr] | None = None) -> SimNode:
        """Start a stopped node's host again.

        With `keep_state`, as the daemon's warm start: the same ID, the old storage (its items and its
        own items to republish), and the nodes that answered it as bootstrap seeds (after `seeds`).
        Without: a fresh node (new ID, empty) at the same address, joining through `seeds` (default:
        three random live nodes).
        """
        old = self.nodes[addr]
        if old.alive:
            raise ValueError(f"{addr} is running: crash or leave it first")
        if keep_state:
            saved = saved_routes(old.core)
            candidates = list(dict.fromkeys([*(seeds or []), *(n.addr for n in saved)]))
            core = self.add_node(old.core.node_id, addr, storage=old.core.storage)
        else:
            if seeds is None:
                live = [n.addr for n in self.nodes.values() if n.alive]
                seeds = self.rng.sample(live, min(3, len(live)))
            candidates = list(seeds)
            core = self.add_node(None, addr)
        node = self.nodes[addr]
        core.bootstrap(candidates, self.now, lambda _result: None)
        self._flush(node)
        return node

    def set_links(self, links: LinkModel) -> None:
        """Change loss, duplication or jitter from now on. Link latencies stay: they come from the seed
        and `median`/`spread`, which must not change mid-run."""
        if (links.median, links.spread) != (self.links.median, self.links.spread):
            raise ValueError("median and spread are fixed for a run")
        self.links = links
        self._trace.update(repr(links).encode())

    def live_nodes(self) -> list[SimNode]:
        return [n for n in self.nodes.values() if n.alive]

    def inject(self, src: Addr, dst: Addr, data: bytes) -> None:
        """Send `data` from `src` to `dst` as if a node had sent it, now: the same latency, jitter, loss,
        duplication and partitions, counted in `sent`. For traffic no `NodeCore` would produce (an
        attacker's forged datagrams). `src` need not be a node; replies to an address nobody holds are lost.
        """
        source = self.nodes.get(src)
        src_index = source.index if source is not None else 0  # nodes are numbered from 1
        self.sent += 1
        target = self.nodes.get(dst)
        if target is None:
            self.lost += 1
            return
        # The body of `_flush`'s loop, kept apart so that the hot path stays inline.
        links = self.links
        delay = self.latency(src_index, target.index)
        draw = self._link_rng.random
        if links.loss + links.duplicate:
            u = draw()
            if u < links.loss:
                self.lost += 1
                return
            if u < links.loss + links.duplicate:
                self.duplicated += 1
                heapq.heappush(
                    self._events, (self.now + delay + draw() * links.jitter, next(self._seq), src_index, src, dst, data)
                )
        if links.jitter:
            delay += draw() * links.jitter
        heapq.heappush(self._events, (self.now + delay, next(self._seq), src_index, src, dst, data))

    # ------------------------------------------------------------------ partitions

    def partition(self, groups: Iterable[set[Addr]]) -> None:
        """Split the network: datagrams between different groups are dropped (also those in flight).
        Nodes in no group form one more group together."""
        mapping: dict[Addr, int] = {}
        for number, group in enumerate(groups, start=1):
            for addr in group:
                mapping[addr] = number
        self._groups = mapping
        self._note(b"partition", ("", len(mapping)), 0)

    def isolate(self, addr: Addr) -> None:
        """Cut one node off from every other (on top of any partition in place)."""
        mapping = dict(self._groups) if self._groups is not None else {}
        mapping[addr] = max(mapping.values(), default=0) + 1
        self._groups = mapping
        self._note(b"isolate", addr, 0)

    def heal(self) -> None:
        """Remove every partition."""
        self._groups = None
        self._note(b"heal", ("", 0), 0)

    def connected(self, a: Addr, b: Addr) -> bool:
        """Whether a partition lets datagrams from a to b through."""
        groups = self._groups
        return groups is None or groups.get(a, 0) == groups.get(b, 0)

    # ------------------------------------------------------------------ running

    def run_until(self, when: float) -> None:
        """Process every event up to virtual time `when`."""
        events = self._events
        step = self._step
        while events and events[0][0] <= when:
            step(heapq.heappop(events))
        self.now = max(self.now, when)

    def run_op(self, addr: Addr, start: Callable[[NodeCore, float, Callable[[Any], None]], None],
               limit: float = 120.0) -> Any:
        """Start an operation on one node and run the network until its result arrives.

        Typed as Any because type checkers cannot infer a result type through a lambda's `done`:
        annotate the variable that receives it (`result: LookupResult = net.run_op(...)`).
        """
        node = self.nodes[addr]
        box: list[Any] = []
        start(node.core, self.now, box.append)
        self._flush(node)
        deadline = self.now + limit
        events = self._events
        step = self._step
        while not box:
            if not events or events[0][0] > deadline:
                raise SimulationStalled(f"operation on {addr} gave no result within {limit}s (seed {self.seed})")
            step(heapq.heappop(events))
        return box[0]

    def run_ops(self, ops: list[tuple[Addr, Callable[[NodeCore, float, Callable[[Any], None]], None]]],
                limit: float = 120.0) -> list[Any]:
        """Start several operations at the same virtual moment and run until every result arrived;
        results in the order of `ops`. Concurrent operations share virtual time, and so the cost of
        every node's background maintenance meanwhile."""
        boxes: list[list[Any]] = []
        for addr, start in ops:
            node = self.nodes[addr]
            box: list[Any] = []
            start(node.core, self.now, box.append)
            self._flush(node)
            boxes.append(box)
        deadline = self.now + limit
        events = self._events
        step = self._step
        for addr, box in zip((addr for addr, _ in ops), boxes, strict=True):
            while not box:
                if not events or events[0][0] > deadline:
                    raise SimulationStalled(
                        f"operation on {addr} gave no result within {limit}s (seed {self.seed})")
                step(heapq.heappop(events))
        return [box[0] for box in boxes]

    def _step(self, event: Event) -> None:
        when, _, src_index, src, dst, data = event
        self.now = when
        self.events += 1
        node = self.nodes.get(dst)
        if node is None or not node.alive:
            return
        if src_index >= 0:
            groups = self._groups
            if groups is not None and groups.get(src, 0) != groups.get(dst, 0):
                self.lost += 1
                return
            self.delivered += 1
            trace = self._trace.update
            trace(_DELIVERY(when, src_index, node.index))
            trace(data)
            node.core.datagram_received(data, src, when)
        else:
            if node.armed != when:
                return
            node.armed = None
            node.core.advance(when)
        self._flush(node)
        if node.leaving_until is not None:
            self._maybe_stop(node)

    def _flush(self, node: SimNode) -> None:
        core = node.core
        out = core.take_outgoing()
        if out:
            now = self.now
            src = node.addr
            src_index = node.index
            nodes = self.nodes
            latency = self.latency
            events = self._events
            seq = self._seq
            links = self.links
            loss = links.loss
            dup = loss + links.duplicate
            jitter = links.jitter
            draw = self._link_rng.random
            self.sent += len(out)
            for data, dst in out:
                target = nodes.get(dst)
                if target is None:
                    self.lost += 1
                    continue
                delay = latency(src_index, target.index)
                if dup:
                    u = draw()
                    if u < loss:
                        self.lost += 1
                        continue
                    if u < dup:
                        self.duplicated += 1
                        heapq.heappush(events, (now + delay + draw() * jitter, next(seq), src_index, src, dst, data))
                if jitter:
                    delay += draw() * jitter
                heapq.heappush(events, (now + delay, next(seq), src_index, src, dst, data))
        deadline = core.next_deadline()
        if deadline is not None and deadline != node.armed:
            armed = node.armed = max(deadline, self.now)
            heapq.heappush(self._events, (armed, next(self._seq), _TIMER, node.addr, node.addr, b""))

    def _maybe_stop(self, node: SimNode) -> None:
        until = node.leaving_until
        assert until is not None
        core = node.core
        if (core.rpc.in_flight == 0 and not core.active_lookups) or self.now >= until:
            node.alive = False
            node.leaving_until = None
            self._note(b"left", node.addr, core.node_id)

    def _note(self, what: bytes, addr: Addr, node_id: int) -> None:
        self._trace.update(b"%s|%r|%s:%d|%x|" % (what, self.now, addr[0].encode(), addr[1], node_id))

    def trace_hash(self) -> str:
        """A digest of every datagram delivered so far (time, endpoints, bytes) and every membership
        or partition change."""
        return self._trace.hexdigest()


def saved_routes(core: NodeCore) -> list[NodeInfo]:
    """What the daemon would have saved of this node's table: nodes that answered it and are not bad,
    most recently heard first (kadnode.runtime.node.Node.save_state)."""
    max_failures = core.settings.max_failures
    entries = [e for e in core.routing_table.entries() if e.last_response is not None and e.failures < max_failures]
    entries.sort(key=lambda e: e.last_response or 0.0, reverse=True)
    return [NodeInfo(e.id, e.addr) for e in entries[:WARM_START_MAX]]
