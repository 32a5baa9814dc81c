"""The node core: KRPC dispatch, query handlers, lookups and maintenance, with no I/O.

`NodeCore` takes datagrams and the current time in and queues datagrams and a next deadline out.
The asyncio runtime and the simulator drive it the same way: after any call, send what
`take_outgoing()` returns and call `advance(now)` at `next_deadline()`.
"""

from __future__ import annotations

import heapq
import random
from collections import Counter
from collections.abc import Callable
from typing import Any

from kadnode.core.counters import Counters, grouped, new_counters
from kadnode.core.lookup import Lookup
from kadnode.core.nodeid import random_id_in_range
from kadnode.core.peerstore import PeerStore
from kadnode.core.results import (
    AnnounceResult,
    BootstrapResult,
    GetPeersResult,
    LookupResult,
    PingResult,
)
from kadnode.core.routing import NodeState, RoutingTable
from kadnode.core.rpc import RpcManager, Transaction
from kadnode.core.tokens import TokenManager
from kadnode.settings import Settings
from kadnode.types import Addr, NodeInfo
from kadnode.wire.compact import CompactError, encode_nodes, encode_peer, id_from_bytes, id_to_bytes
from kadnode.wire.krpc import (
    METHOD_UNKNOWN,
    PROTOCOL_ERROR,
    SERVER_ERROR,
    AnnouncePeer,
    ErrorReply,
    FindNode,
    GetPeers,
    KrpcError,
    Message,
    Ping,
    Query,
    QueryBody,
    Response,
    UnknownMethod,
    decode_message,
    encode_message,
    response_nodes,
    response_peers,
    response_token,
)

MAINTENANCE_INTERVAL = 5.0
"""Seconds between maintenance ticks (pings of questionable nodes, bucket refresh, expiry).
libtorrent ticks every 5 s as well."""
PEER_SWEEP_INTERVAL = 60.0
MAX_MAINTENANCE_PINGS = 16
"""Pings per tick, so that a node waking from a long pause does not burst its whole table at once."""
MAX_REFRESH_LOOKUPS = 2
"""Bucket-refresh lookups started per tick, so that a node waking up after a long pause does not
start a lookup for every bucket at once."""
EXTERNAL_IP_VOTES = 64
"""Recent BEP 42 `ip` reports kept to decide our external address by majority."""

Timer = tuple[float, int, Callable[[float], None]]


def method_name(body: QueryBody) -> str:
    """The KRPC method name of a query body, as used in counters and transactions.

    Unknown methods all count as "unknown": a remote must not be able to mint counter names.
    """
    if isinstance(body, UnknownMethod):
        return "unknown"
    return body.method.decode("ascii")


class NodeCore:
    """One DHT node's protocol logic. See the module docstring for how to drive it."""

    def __init__(
        self,
        node_id: int,
        settings: Settings,
        rng: random.Random,
        now: float,
        peer_store: PeerStore | None = None,
    ) -> None:
        self.node_id = node_id
        self.settings = settings
        self.rng = rng
        self.counters: Counters = new_counters()
        self.routing_table = RoutingTable(node_id, settings, rng, now=now)
        self.rpc = RpcManager(settings, rng)
        self.tokens = TokenManager(rng, settings)
        self.peer_store = peer_store if peer_store is not None else PeerStore(settings, rng)
        self.started = now
        self.external_addr: Addr | None = None
        self._id_bytes = id_to_bytes(node_id)
        self._outgoing: list[tuple[bytes, Addr]] = []
        self._timers: list[Timer] = []
        self._timer_seq = 0
        self._ip_votes: list[Addr] = []
        self._active_lookups: set[_LookupOp] = set()
        self._last_peer_sweep = now
        self.schedule(now + MAINTENANCE_INTERVAL, self._maintenance)

    # ------------------------------------------------------------------ driver interface

    def take_outgoing(self) -> list[tuple[bytes, Addr]]:
        """Datagrams queued since the last call, to be sent as they are."""
        out, self._outgoing = self._outgoing, []
        return out

    def next_deadline(self) -> float | None:
        """When `advance` must next be called (None: nothing scheduled)."""
        rpc_deadline = self.rpc.next_deadline()
        timer_deadline = self._timers[0][0] if self._timers else None
        if rpc_deadline is None:
            return timer_deadline
        if timer_deadline is None:
            return rpc_deadline
        return min(rpc_deadline, timer_deadline)

    def advance(self, now: float) -> None:
        """Run every RPC timeout and timer due at `now`."""
        self.rpc.advance(now)
        while self._timers and self._timers[0][0] <= now:
            _, _, callback = heapq.heappop(self._timers)
            callback(now)

    def schedule(self, when: float, callback: Callable[[float], None]) -> None:
        """Call `callback(now)` from `advance` once `when` has come."""
        self._timer_seq += 1
        heapq.heappush(self._timers, (when, self._timer_seq, callback))

    # ------------------------------------------------------------------ receiving

    def datagram_received(self, data: bytes, addr: Addr, now: float) -> None:
        """Handle one datagram. Never raises for anything a remote can send."""
        self.counters["datagrams_in"] += 1
        if len(data) > self.settings.max_datagram_size:
            self.counters["dropped.oversized"] += 1
            return
        try:
            message = decode_message(
                data, max_depth=self.settings.bencode_max_depth, max_items=self.settings.bencode_max_items
            )
        except KrpcError as exc:
            self.counters[f"dropped.{exc.reason}"] += 1
            if exc.tid is not None and exc.msg_type == b"q":
                self._send_error(exc.tid, exc.code, exc.message, addr)
            return
        self._dispatch(message, addr, now)

    def _dispatch(self, message: Message, addr: Addr, now: float) -> None:
        if isinstance(message, Query):
            self._handle_query(message, addr, now)
        elif isinstance(message, Response):
            self._handle_response(message, addr, now)
        else:
            self._handle_error(message, addr, now)

    def _handle_query(self, query: Query, addr: Addr, now: float) -> None:
        body = query.body
        self.counters[f"queries_in.{method_name(body)}"] += 1
        sender = id_from_bytes(query.sender_id)
        if sender == self.node_id:
            self.counters["dropped.own_id"] += 1
            return
        if not query.read_only:
            self._note_querier(NodeInfo(sender, addr), now)
        if isinstance(body, Ping):
            self._send_response(query.tid, {}, addr)
        elif isinstance(body, FindNode):
            self._send_response(query.tid, {b"nodes": self._closest_compact(body.target)}, addr)
        elif isinstance(body, GetPeers):
            self._answer_get_peers(query.tid, body, addr, now)
        elif isinstance(body, AnnouncePeer):
            self._answer_announce(query.tid, body, addr, now)
        elif body.target is not None:
            # libtorrent's rule: an unknown query that names a target is answered like find_node,
            # so newer extensions degrade gracefully.
            self._send_response(query.tid, {b"nodes": self._closest_compact(body.target)}, addr)
        else:
            self._send_error(query.tid, METHOD_UNKNOWN, "method unknown", addr)

    def _note_querier(self, node: NodeInfo, now: float) -> None:
        """A node that queries us may join the table, but we vouch for it only once it answers us:
        a new one is pinged at once (once), so it is confirmed within a round trip."""
        table = self.routing_table
        table.heard_from(node, now, responded=False)
        entry = table.get(node.id)
        if entry is not None and entry.last_response is None and entry.last_pinged is None:
            entry.last_pinged = now
            self.send_query(entry.addr, entry.id, Ping(), _MaintenancePing(self), now)

    def _closest_compact(self, target: bytes) -> bytes:
        # Only nodes that answered us: we never vouch for an endpoint we have not heard answer.
        entries = self.routing_table.closest(id_from_bytes(target), answered_only=True)
        return encode_nodes(NodeInfo(e.id, e.addr) for e in entries)

    def _answer_get_peers(self, tid: bytes, body: GetPeers, addr: Addr, now: float) -> None:
        values: dict[bytes, Any] = {
            b"token": self.tokens.token_for(addr[0], now),
            b"nodes": self._closest_compact(body.info_hash),
        }
        peers = self.peer_store.get(body.info_hash, now, self.settings.max_peers_per_reply)
        if peers:
            values[b"values"] = [encode_peer(p) for p in peers]
        self._send_response(tid, values, addr)

    def _answer_announce(self, tid: bytes, body: AnnouncePeer, addr: Addr, now: float) -> None:
        if not self.tokens.is_valid(body.token, addr[0], now):
            self.counters["refused.bad_token"] += 1
            self._send_error(tid, PROTOCOL_ERROR, "invalid token", addr)
            return
        port = addr[1] if body.implied_port else body.port
        if not 0 < port < 65536:
            self.counters["refused.bad_port"] += 1
            self._send_error(tid, PROTOCOL_ERROR, "invalid port", addr)
            return
        if not self.peer_store.add(body.info_hash, (addr[0], port), now, seed=body.seed):
            self.counters["refused.store_full"] += 1
            self._send_error(tid, SERVER_ERROR, "peer store full", addr)
            return
        self._send_response(tid, {}, addr)

    def _handle_response(self, response: Response, addr: Addr, now: float) -> None:
        txn = self.rpc.match(response.tid, addr)
        if txn is None:
            self.counters["dropped.unsolicited"] += 1
            return
        rtt = self.rpc.complete(txn, now)
        sender = id_from_bytes(response.sender_id)
        if sender == self.node_id:
            self.counters["dropped.own_id"] += 1
            txn.handler.rpc_timeout(txn, now)
            return
        if txn.node_id is not None and txn.node_id != sender:
            # The endpoint now answers with another ID (a restart with a new identity).
            self.counters["rpc.id_changed"] += 1
            self.routing_table.remove(txn.node_id, now)
        self.counters["responses_in"] += 1
        self.routing_table.heard_from(NodeInfo(sender, addr), now, responded=True, rtt=rtt)
        if response.ip is not None:
            self._vote_external_addr(response.ip)
        txn.node_id = sender
        txn.handler.rpc_response(txn, response, now)

    def _handle_error(self, error: ErrorReply, addr: Addr, now: float) -> None:
        txn = self.rpc.match(error.tid, addr)
        if txn is None:
            self.counters["dropped.unsolicited"] += 1
            return
        self.rpc.complete(txn, now)
        self.counters[f"errors_in.{error.code}"] += 1
        txn.handler.rpc_error(txn, error, now)

    def _vote_external_addr(self, reported: Addr) -> None:
        self._ip_votes.append(reported)
        if len(self._ip_votes) > EXTERNAL_IP_VOTES:
            del self._ip_votes[0]
        self.external_addr = Counter(self._ip_votes).most_common(1)[0][0]

    # ------------------------------------------------------------------ sending

    def _send_response(self, tid: bytes, values: dict[bytes, Any], addr: Addr) -> None:
        values[b"id"] = self._id_bytes
        message = Response(tid=tid, sender_id=self._id_bytes, values=values,
                           version=self.settings.client_version, ip=addr)
        self._outgoing.append((encode_message(message), addr))
        self.counters["responses_out"] += 1

    def _send_error(self, tid: bytes, code: int, text: str, addr: Addr) -> None:
        message = ErrorReply(tid=tid, code=code, message=text, version=self.settings.client_version)
        self._outgoing.append((encode_message(message), addr))
        self.counters[f"errors_out.{code}"] += 1

    def send_query(
        self, addr: Addr, node_id: int | None, body: QueryBody, handler: _Handler, now: float
    ) -> Transaction | None:
        """Send a query; the handler hears the outcome. None when too many requests are in flight."""
        method = method_name(body)
        txn = self.rpc.start(addr, node_id, method, handler, now)
        if txn is None:
            self.counters["rpc.refused_busy"] += 1
            return None
        query = Query(tid=txn.tid, sender_id=self._id_bytes, body=body, version=self.settings.client_version)
        self._outgoing.append((encode_message(query), addr))
        self.counters[f"queries_out.{method}"] += 1
        return txn

    def note_failure(self, txn: Transaction, now: float) -> None:
        """A request timed out: the routing table counts it against the node."""
        self.counters["rpc.timeouts"] += 1
        if txn.node_id is not None:
            self.routing_table.failed(txn.node_id, now, addr=txn.addr)

    # ------------------------------------------------------------------ operations

    def ping(self, addr: Addr, now: float, done: Callable[[PingResult], None]) -> None:
        """Ping an endpoint (its ID need not be known)."""
        _PingOp(self, addr, done).start(now)

    def find_node(self, target: int, now: float, done: Callable[[LookupResult], None]) -> None:
        """Iterative FIND_NODE: the k closest live nodes to `target`."""
        self._start_lookup(target, None, [], now, lambda op, _now: done(op.lookup_result()))

    def get_peers(self, info_hash: bytes, now: float, done: Callable[[GetPeersResult], None]) -> None:
        """Iterative get_peers (BEP 5): peers announced for `info_hash`, and write tokens."""
        self._start_lookup(id_from_bytes(info_hash), info_hash, [], now,
                           lambda op, _now: done(op.get_peers_result()))

    def announce(
        self, info_hash: bytes, port: int | None, now: float, done: Callable[[AnnounceResult], None]
    ) -> None:
        """get_peers towards `info_hash`, then announce_peer to the k closest nodes that gave tokens.

        `port=None` announces with implied_port: receivers store our UDP source port.
        """

        def after_lookup(op: _LookupOp, now: float) -> None:
            _AnnounceOp(self, op.get_peers_result(), port, done).start(now)

        self._start_lookup(id_from_bytes(info_hash), info_hash, [], now, after_lookup)

    def _start_lookup(
        self,
        target: int,
        info_hash: bytes | None,
        extra_seeds: list[NodeInfo],
        now: float,
        on_finish: Callable[[_LookupOp, float], None],
    ) -> None:
        entries = self.routing_table.closest(target, 2 * self.settings.k)
        seeds = [NodeInfo(e.id, e.addr) for e in entries] + extra_seeds
        _LookupOp(self, target, info_hash, seeds, now, on_finish).pump(now)

    def bootstrap(self, seeds: list[Addr], now: float, done: Callable[[BootstrapResult], None]) -> None:
        """Ask every seed for nodes near our own ID, then look ourselves up to fill the table."""
        _BootstrapOp(self, seeds, done).start(now)

    # ------------------------------------------------------------------ maintenance

    def fill_buckets(self, now: float) -> None:
        """Look up a random ID in every bucket but our own, as a joining Kademlia node does.

        The self-lookup of a bootstrap only fills the buckets near our own ID; without this the far
        buckets stay thin and lookups towards far targets start from too few nodes.
        """
        table = self.routing_table
        for index in range(table.bucket_count - 1):
            low, high = table.bucket_range(index)
            self.counters["refresh_lookups"] += 1
            self.find_node(random_id_in_range(low, high, self.rng), now, lambda _result: None)

    def _maintenance(self, now: float) -> None:
        """Keep the table healthy: confirm questionable nodes, refresh stale buckets, expire peers."""
        for entry in self.routing_table.ping_candidates(now)[:MAX_MAINTENANCE_PINGS]:
            self.send_query(entry.addr, entry.id, Ping(), _MaintenancePing(self), now)
        if len(self.routing_table) > 0:
            for target in self.routing_table.refresh_targets(now)[:MAX_REFRESH_LOOKUPS]:
                self.counters["refresh_lookups"] += 1
                self.find_node(target, now, lambda _result: None)
        if now - self._last_peer_sweep >= PEER_SWEEP_INTERVAL:
            self.peer_store.sweep(now)
            self._last_peer_sweep = now
        self.schedule(now + MAINTENANCE_INTERVAL, self._maintenance)

    def status(self, now: float) -> dict[str, Any]:
        """A JSON-friendly snapshot for operators: table health, storage, traffic counters."""
        states: Counter[str] = Counter(
            entry.state(now, self.settings).name.lower() for entry in self.routing_table.entries()
        )
        return {
            "node_id": self._id_bytes.hex(),
            "uptime": round(now - self.started, 3),
            "external_addr": f"{self.external_addr[0]}:{self.external_addr[1]}" if self.external_addr else None,
            "routing_table": {
                "nodes": len(self.routing_table),
                "good": states.get(NodeState.GOOD.name.lower(), 0),
                "questionable": states.get(NodeState.QUESTIONABLE.name.lower(), 0),
                "bad": states.get(NodeState.BAD.name.lower(), 0),
                "buckets": self.routing_table.bucket_count,
                "replacements": self.routing_table.replacement_count,
            },
            "peer_store": {
                "info_hashes": self.peer_store.info_hash_count,
                "peers": self.peer_store.peer_count,
            },
            "rpc_in_flight": self.rpc.in_flight,
            "lookups_active": len(self._active_lookups),
            "counters": grouped(self.counters),
        }


class _Handler:
    """Base for the node's RPC handlers: failures always reach the routing table."""

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


class _MaintenancePing(_Handler):
    """A ping whose only purpose is the routing-table bookkeeping the node does on every reply."""


class _PingOp(_Handler):
    def __init__(self, node: NodeCore, addr: Addr, done: Callable[[PingResult], None]) -> None:
        super().__init__(node)
        self.addr = addr
        self.done = done

    def start(self, now: float) -> None:
        entry_id = None
        if self.node.send_query(self.addr, entry_id, Ping(), self, now) is None:
            self.done(PingResult(self.addr, ok=False, error="too many requests in flight"))

    def rpc_response(self, txn: Transaction, response: Response, now: float) -> None:
        self.done(PingResult(self.addr, ok=True, node_id=txn.node_id, rtt=now - txn.sent_at))

    def rpc_error(self, txn: Transaction, error: ErrorReply, now: float) -> None:
        self.done(PingResult(self.addr, ok=False, rtt=now - txn.sent_at,
                             error=f"error {error.code}: {error.message}"))

    def rpc_timeout(self, txn: Transaction, now: float) -> None:
        super().rpc_timeout(txn, now)
        self.done(PingResult(self.addr, ok=False, error="timeout"))


class _LookupOp(_Handler):
    """Drives one `Lookup` over the network: find_node, or get_peers when `info_hash` is set."""

    def __init__(
        self,
        node: NodeCore,
        target: int,
        info_hash: bytes | None,
        seeds: list[NodeInfo],
        now: float,
        on_finish: Callable[[_LookupOp, float], None],
    ) -> None:
        super().__init__(node)
        self.target = target
        self.info_hash = info_hash
        self.lookup = Lookup(target, node.settings, seeds, now, exclude=node.node_id)
        self.on_finish = on_finish
        self.peers: dict[Addr, None] = {}
        if info_hash is not None:
            # Peers we store ourselves count too: we may be one of the closest nodes.
            self.peers.update(dict.fromkeys(node.peer_store.get(info_hash, now, node.settings.max_peers_per_reply)))
        self.tokens: dict[int, tuple[Addr, bytes]] = {}
        self.started = now
        self.finished_at: float | None = None
        self.txns: set[Transaction] = set()
        node._active_lookups.add(self)
        node.schedule(now + node.settings.lookup_timeout, self.pump)

    def _body(self) -> QueryBody:
        if self.info_hash is None:
            return FindNode(target=id_to_bytes(self.target))
        return GetPeers(info_hash=self.info_hash)

    def pump(self, now: float) -> None:
        """Send what the lookup wants sent; finish once it has converged."""
        if self.finished_at is not None:
            return
        for candidate in self.lookup.next_requests(now):
            txn = self.node.send_query(candidate.addr, candidate.id, self._body(), self, now)
            if txn is None:
                self.lookup.on_failure(candidate, now)
            else:
                self.txns.add(txn)
        if self.lookup.finished:
            # Requests still in flight stay open: their late answers still refresh the routing table
            # (and their timeouts still count against dead nodes); the lookup ignores them.
            self.finished_at = now
            self.txns.clear()
            self.node._active_lookups.discard(self)
            self.node.counters["lookups_done"] += 1
            self.on_finish(self, now)

    def _candidate(self, txn: Transaction) -> NodeInfo | None:
        self.txns.discard(txn)
        if self.finished_at is not None or txn.node_id is None:
            return None
        return NodeInfo(txn.node_id, txn.addr)

    def rpc_response(self, txn: Transaction, response: Response, now: float) -> None:
        node = self._candidate(txn)
        if node is None:
            return
        try:
            closer = response_nodes(response)
            if self.info_hash is not None:
                for peer in response_peers(response):
                    self.peers.setdefault(peer, None)
                token = response_token(response)
                if token is not None:
                    self.tokens[node.id] = (node.addr, token)
        except (KrpcError, CompactError):
            self.node.counters["dropped.bad_response"] += 1
            self.lookup.on_failure(node, now)
        else:
            self.lookup.on_response(node, closer, now)
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
        )

    def get_peers_result(self) -> GetPeersResult:
        assert self.info_hash is not None
        result = self.lookup_result()
        tokens = {self.tokens[n.id][0]: self.tokens[n.id][1] for n in result.closest if n.id in self.tokens}
        return GetPeersResult(info_hash=self.info_hash, peers=list(self.peers), lookup=result, tokens=tokens)


class _AnnounceOp(_Handler):
    """announce_peer to every closest node that gave a token; reports how many stored it."""

    def __init__(
        self, node: NodeCore, found: GetPeersResult, port: int | None, done: Callable[[AnnounceResult], None]
    ) -> None:
        super().__init__(node)
        self.found = found
        self.port = port
        self.done = done
        self.pending = 0
        self.stored = 0
        self.attempted = 0

    def start(self, now: float) -> None:
        ids = {n.addr: n.id for n in self.found.lookup.closest}
        for addr, token in self.found.tokens.items():
            body = AnnouncePeer(info_hash=self.found.info_hash, port=self.port or 0, token=token,
                                implied_port=self.port is None)
            if self.node.send_query(addr, ids.get(addr), body, self, now) is not None:
                self.pending += 1
                self.attempted += 1
        self._maybe_done()

    def _settle(self, stored: bool) -> None:
        self.pending -= 1
        self.stored += stored
        self._maybe_done()

    def _maybe_done(self) -> None:
        if self.pending == 0:
            self.done(AnnounceResult(info_hash=self.found.info_hash, port=self.port, stored_at=self.stored,
                                     attempted=self.attempted, peers=self.found.peers))

    def rpc_response(self, txn: Transaction, response: Response, now: float) -> None:
        self._settle(True)

    def rpc_error(self, txn: Transaction, error: ErrorReply, now: float) -> None:
        self._settle(False)

    def rpc_timeout(self, txn: Transaction, now: float) -> None:
        super().rpc_timeout(txn, now)
        self._settle(False)


class _BootstrapOp(_Handler):
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

        def finished(op: _LookupOp, now: float) -> None:
            node.fill_buckets(now)
            self.done(BootstrapResult(len(self.seeds), self.answered, len(node.routing_table),
                                      op.lookup_result()))

        node._start_lookup(node.node_id, None, list(self.candidates.values()), now, finished)
