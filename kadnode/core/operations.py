"""The node's own requests: ping, the lookups (one traversal, specialised per query), and stores.

Each operation is an `RpcHandler`: the node sends its queries and routes the outcomes back here. The
routing-table bookkeeping for every reply and timeout happens in the node before a handler runs, so
operations only decide what to ask next and what to report.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING

from kadnode.core.bep44 import item_from_reply
from kadnode.core.lookup import Lookup
from kadnode.core.results import BootstrapResult, LookupResult, PingResult
from kadnode.core.rpc import Transaction
from kadnode.storage.base import ImmutableItem, Item, MutableItem
from kadnode.types import Addr, NodeInfo
from kadnode.wire.compact import CompactError, id_to_bytes
from kadnode.wire.krpc import (
    ErrorReply,
    FindNode,
    Get,
    GetPeers,
    KrpcError,
    Ping,
    QueryBody,
    Response,
    response_item,
    response_nodes,
    response_peers,
    response_token,
)

if TYPE_CHECKING:
    from kadnode.core.node import NodeCore


class Handler:
    """Base for the node's RPC handlers: timeouts always count against the node that did not answer."""

    def __init__(self, node: NodeCore) -> None:
        self.node = node

    def rpc_response(self, txn: Transaction, response: Response, now: float) -> None:
        pass

    def rpc_error(self, txn: Transaction, error: ErrorReply, now: float) -> None:
        pass

    def rpc_timeout(self, txn: Transaction, now: float) -> None:
        self.node.note_failure(txn, now)

    def rpc_slow(self, txn: Transaction, now: float) -> None:
        pass


class MaintenancePing(Handler):
    """A ping whose only purpose is the routing-table bookkeeping the node does on every reply."""


class PingOp(Handler):
    def __init__(self, node: NodeCore, addr: Addr, done: Callable[[PingResult], None]) -> None:
        super().__init__(node)
        self.addr = addr
        self.done = done

    def start(self, now: float) -> None:
        if self.node.send_query(self.addr, None, Ping(), self, now) is None:
            self.done(PingResult(self.addr, ok=False, error="too many requests in flight"))

    def rpc_response(self, txn: Transaction, response: Response, now: float) -> None:
        self.done(PingResult(self.addr, ok=True, node_id=txn.node_id, rtt=now - txn.sent_at))

    def rpc_error(self, txn: Transaction, error: ErrorReply, now: float) -> None:
        self.done(PingResult(self.addr, ok=False, rtt=now - txn.sent_at,
                             error=f"error {error.code}: {error.message}"))

    def rpc_timeout(self, txn: Transaction, now: float) -> None:
        super().rpc_timeout(txn, now)
        self.done(PingResult(self.addr, ok=False, error="timeout"))


class LookupOp(Handler):
    """Drives one `Lookup` over the network with find_node; subclasses ask other queries and keep
    what the answers carry besides `nodes`."""

    def __init__(
        self,
        node: NodeCore,
        target: int,
        seeds: list[NodeInfo],
        now: float,
        on_finish: Callable[[LookupOp, float], None],
    ) -> None:
        super().__init__(node)
        self.target = target
        self.lookup = Lookup(target, node.settings, seeds, now, exclude=node.node_id)
        self.on_finish = on_finish
        self.started = now
        self.finished_at: float | None = None
        self._first: dict[int, Transaction] = {}
        """The first request to each node asked, by node ID."""
        self._attempts: dict[int, tuple[Transaction, Transaction]] = {}
        """Both requests to each retried node: once one is answered, the other is cancelled."""
        node.active_lookups.add(self)
        node.schedule(now + node.settings.lookup_timeout, self.pump)

    def body(self) -> QueryBody:
        return FindNode(target=id_to_bytes(self.target))

    def absorb(self, node: NodeInfo, response: Response, now: float) -> None:
        """Keep what a response carries besides `nodes`. Raises KrpcError/CompactError when malformed."""

    def satisfied(self) -> bool:
        """True once the lookup found what it was after and need not converge (an immutable item)."""
        return False

    def pump(self, now: float) -> None:
        """Send what the lookup wants sent; finish once it has converged."""
        if self.finished_at is not None:
            return
        if self.satisfied():
            self.lookup.stop()
        for candidate in self.lookup.next_requests(now):
            txn = self.node.send_query(candidate.addr, candidate.id, self.body(), self, now)
            if txn is None:
                self.lookup.on_failure(candidate, now)
                continue
            first = self._first.setdefault(candidate.id, txn)
            if first is not txn:  # a retry of a slow request
                self.node.counters["lookup.retries"] += 1
                self._attempts[candidate.id] = (first, txn)
        if self.lookup.finished:
            # Requests still in flight stay open: their late answers still refresh the routing table
            # (and their timeouts still count against dead nodes); the lookup ignores them.
            self.finished_at = now
            self.node.active_lookups.discard(self)
            self.node.counters["lookups_done"] += 1
            self.on_finish(self, now)

    def _candidate(self, txn: Transaction) -> NodeInfo | None:
        if self.finished_at is not None or txn.node_id is None:
            return None
        return NodeInfo(txn.node_id, txn.addr)

    def rpc_response(self, txn: Transaction, response: Response, now: float) -> None:
        attempts = self._attempts.pop(txn.node_id, None) if txn.node_id is not None else None
        if attempts is not None:
            # The node answered one of its two requests: the other one's timeout is not a failure.
            self.node.rpc.cancel(attempts[1] if txn is attempts[0] else attempts[0])
        node = self._candidate(txn)
        if node is None:
            return
        try:
            closer = response_nodes(response)
            self.absorb(node, response, now)
        except (KrpcError, CompactError):
            self.node.counters["dropped.bad_response"] += 1
            self.lookup.on_failure(node, now)
        else:
            rpc = self.node.rpc
            self.lookup.on_response(node, [n for n in closer if not rpc.unresponsive(n.addr, now)], now)
        self.pump(now)

    def rpc_error(self, txn: Transaction, error: ErrorReply, now: float) -> None:
        node = self._candidate(txn)
        if node is not None:
            self.lookup.on_failure(node, now)
            self.pump(now)

    def rpc_timeout(self, txn: Transaction, now: float) -> None:
        super().rpc_timeout(txn, now)
        node = self._candidate(txn)
        if node is not None:
            self.lookup.on_failure(node, now)
            self.pump(now)

    def rpc_slow(self, txn: Transaction, now: float) -> None:
        if self.finished_at is None and txn.node_id is not None:
            self.lookup.on_slow(NodeInfo(txn.node_id, txn.addr), now)
            self.pump(now)

    def lookup_result(self) -> LookupResult:
        end = self.finished_at if self.finished_at is not None else self.started
        return LookupResult(
            target=self.target,
            closest=self.lookup.result(),
            queried=self.lookup.queried,
            responded=self.lookup.responded,
            failed=self.lookup.failed,
            duration=end - self.started,
            timed_out=self.lookup.timed_out,
            hops=self.lookup.hops,
        )


class TokenLookupOp(LookupOp):
    """A lookup whose answers carry write tokens (get_peers, get): tokens of the closest responders
    are what a following announce or put needs."""

    def __init__(self, node: NodeCore, target: int, seeds: list[NodeInfo], now: float,
                 on_finish: Callable[[LookupOp, float], None]) -> None:
        super().__init__(node, target, seeds, now, on_finish)
        self.tokens: dict[int, tuple[Addr, bytes]] = {}

    def absorb(self, node: NodeInfo, response: Response, now: float) -> None:
        token = response_token(response)
        if token is not None:
            self.tokens[node.id] = (node.addr, token)

    def closest_tokens(self) -> dict[Addr, bytes]:
        """Tokens of the k closest responders, by address."""
        return {self.tokens[n.id][0]: self.tokens[n.id][1] for n in self.lookup.result() if n.id in self.tokens}

    def closest_ids(self) -> dict[Addr, int]:
        return {n.addr: n.id for n in self.lookup.result()}


class GetPeersOp(TokenLookupOp):
    """BEP 5 get_peers: collects announced peers, starting with those we store ourselves."""

    def __init__(self, node: NodeCore, info_hash: bytes, now: float,
                 on_finish: Callable[[LookupOp, float], None]) -> None:
        super().__init__(node, int.from_bytes(info_hash, "big"), node.lookup_seeds(info_hash), now, on_finish)
        self.info_hash = info_hash
        # We may be one of the closest nodes ourselves.
        local = node.storage.get_peers(info_hash, now, node.settings.max_peers_per_reply)
        self.peers: dict[Addr, None] = dict.fromkeys(local)

    def body(self) -> QueryBody:
        return GetPeers(info_hash=self.info_hash)

    def absorb(self, node: NodeInfo, response: Response, now: float) -> None:
        peers = response_peers(response)
        super().absorb(node, response, now)
        for peer in peers:
            self.peers.setdefault(peer, None)


class GetOp(TokenLookupOp):
    """BEP 44 get: keeps the best valid item (the highest seq of a mutable one) and who holds it.

    With `first_immutable` it ends at the first valid immutable item: its target is the hash of its
    value, so any copy is the item (BEP 44), and there is no newer version to wait for. A put needs
    the tokens of the k closest nodes instead, so its lookup runs to the end.
    """

    def __init__(self, node: NodeCore, target: bytes, salt: bytes, now: float,
                 on_finish: Callable[[LookupOp, float], None], *, first_immutable: bool = False) -> None:
        super().__init__(node, int.from_bytes(target, "big"), node.lookup_seeds(target), now, on_finish)
        self.first_immutable = first_immutable
        self.target_bytes = target
        self.salt = salt
        self.item: Item | None = node.local_item(target, now)
        self.holders_by_seq: Counter[int] = Counter()
        held = node.storage.get_item(target, now)
        if held is not None and held == self.item:  # we hold it for others: one of the copies
            self.holders_by_seq[held.seq if isinstance(held, MutableItem) else 0] += 1
        self.seqs: dict[Addr, int] = {}
        self.invalid = 0

    def body(self) -> QueryBody:
        return Get(target=self.target_bytes)

    def satisfied(self) -> bool:
        return self.first_immutable and isinstance(self.item, ImmutableItem)

    def absorb(self, node: NodeInfo, response: Response, now: float) -> None:
        reply = response_item(response)
        super().absorb(node, response, now)
        if reply.seq is not None:
            self.seqs[node.addr] = reply.seq
        if reply.value is None:
            return
        item = item_from_reply(self.target_bytes, reply, self.salt)
        if item is None:
            self.invalid += 1
            self.node.counters["items.invalid"] += 1
            return
        seq = item.seq if isinstance(item, MutableItem) else 0
        self.holders_by_seq[seq] += 1
        current = self.item
        if current is None or (isinstance(current, MutableItem) and isinstance(item, MutableItem)
                               and item.seq > current.seq):
            self.item = item

    @property
    def holders(self) -> int:
        if self.item is None:
            return 0
        return self.holders_by_seq[self.item.seq if isinstance(self.item, MutableItem) else 0]


class StoreOp(Handler):
    """Send one store query (announce_peer or put) to each node; report acks and error codes."""

    def __init__(self, node: NodeCore, done: Callable[[int, int, dict[int, int]], None]) -> None:
        super().__init__(node)
        self.done = done
        self.pending = 0
        self.stored = 0
        self.attempted = 0
        self.errors: Counter[int] = Counter()

    def start(self, requests: list[tuple[Addr, int | None, QueryBody]], now: float) -> None:
        for addr, node_id, body in requests:
            if self.node.send_query(addr, node_id, body, self, now) is not None:
                self.pending += 1
                self.attempted += 1
        self._maybe_done()

    def _settle(self) -> None:
        self.pending -= 1
        self._maybe_done()

    def _maybe_done(self) -> None:
        if self.pending == 0:
            self.done(self.stored, self.attempted, dict(self.errors))

    def rpc_response(self, txn: Transaction, response: Response, now: float) -> None:
        self.stored += 1
        self._settle()

    def rpc_error(self, txn: Transaction, error: ErrorReply, now: float) -> None:
        self.errors[error.code] += 1
        self._settle()

    def rpc_timeout(self, txn: Transaction, now: float) -> None:
        super().rpc_timeout(txn, now)
        self._settle()


class BootstrapOp(Handler):
    """find_node(own ID) to every seed (their IDs are unknown), then a self-lookup through the table."""

    def __init__(self, node: NodeCore, seeds: list[Addr], done: Callable[[BootstrapResult], None]) -> None:
        super().__init__(node)
        self.seeds = list(dict.fromkeys(seeds))
        self.done = done
        self.pending = 0
        self.answered = 0
        self.candidates: dict[int, NodeInfo] = {}

    def start(self, now: float) -> None:
        body = FindNode(target=id_to_bytes(self.node.node_id))
        for addr in self.seeds:
            if self.node.send_query(addr, None, body, self, now) is not None:
                self.pending += 1
        if self.pending == 0:
            self._seeds_done(now)

    def rpc_response(self, txn: Transaction, response: Response, now: float) -> None:
        self.answered += 1
        try:
            # Hearsay: candidates for the self-lookup, never table entries until they answer us.
            for found in response_nodes(response):
                self.candidates.setdefault(found.id, found)
        except (KrpcError, CompactError):
            self.node.counters["dropped.bad_response"] += 1
        self._settled(now)

    def rpc_error(self, txn: Transaction, error: ErrorReply, now: float) -> None:
        self._settled(now)

    def rpc_timeout(self, txn: Transaction, now: float) -> None:
        super().rpc_timeout(txn, now)
        self._settled(now)

    def _settled(self, now: float) -> None:
        self.pending -= 1
        if self.pending == 0:
            self._seeds_done(now)

    def _seeds_done(self, now: float) -> None:
        node = self.node
        if len(node.routing_table) == 0 and not self.candidates:
            self.done(BootstrapResult(len(self.seeds), self.answered, 0, None))
            return

        def finished(op: LookupOp, now: float) -> None:
            node.after_join(now)
            self.done(BootstrapResult(len(self.seeds), self.answered, len(node.routing_table),
                                      op.lookup_result()))

        seeds = node.lookup_seeds(id_to_bytes(node.node_id)) + list(self.candidates.values())
        LookupOp(node, node.node_id, seeds, now, finished).pump(now)
