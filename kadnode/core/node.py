"""The node core: KRPC dispatch, answering queries, starting operations and maintenance, with no I/O.

`NodeCore` takes datagrams and the current time in and queues datagrams and a next deadline out.
The asyncio runtime and the simulator drive it the same way: after any call, send what
`take_outgoing()` returns and call `advance(now)` at `next_deadline()`.
"""

from __future__ import annotations

import heapq
import random
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from kadnode.core.bep44 import PutRefused, item_from_put
from kadnode.core.counters import Counters, grouped, new_counters
from kadnode.core.gossip.wire import MAX_INCARNATION
from kadnode.core.liveness import Liveness
from kadnode.core.nodeid import random_id_in_range
from kadnode.core.operations import (
    BootstrapOp,
    GetOp,
    GetPeersOp,
    Handler,
    LookupOp,
    MaintenancePing,
    PingOp,
    StoreOp,
)
from kadnode.core.republish import Schedule
from kadnode.core.results import (
    AnnounceResult,
    BootstrapResult,
    GetPeersResult,
    GetResult,
    LookupResult,
    PingResult,
    PutResult,
)
from kadnode.core.routing import NodeState, RoutingTable
from kadnode.core.rpc import RpcManager, Transaction
from kadnode.core.tokens import TokenManager
from kadnode.settings import Settings
from kadnode.storage.base import (
    ImmutableItem,
    Item,
    MutableItem,
    Storage,
    StorageError,
    StorageFull,
    ValueTooLarge,
)
from kadnode.storage.memory import MemoryStorage
from kadnode.types import Addr, NodeInfo
from kadnode.wire.bencode import Raw
from kadnode.wire.compact import encode_peer, id_from_bytes, id_to_bytes
from kadnode.wire.krpc import (
    METHOD_UNKNOWN,
    PIGGYBACK_KEY,
    PROTOCOL_ERROR,
    SERVER_ERROR,
    AnnouncePeer,
    ErrorReply,
    FindNode,
    Get,
    GetPeers,
    KnGossip,
    KrpcError,
    Message,
    Ping,
    Put,
    Query,
    QueryBody,
    Response,
    UnknownMethod,
    decode_message,
    encode_message,
    encode_response,
    response_item,
    response_token,
)

MAINTENANCE_INTERVAL = 5.0
"""Seconds between maintenance ticks (pings of questionable nodes, bucket refresh, expiry, republish).
libtorrent ticks every 5 s as well."""
SWEEP_INTERVAL = 60.0
PING_SCAN_INTERVAL = 15.0
"""How often the table is scanned for nodes to confirm. A scan walks every entry, and a node that is
questionable for 15 s longer costs nothing: lookups already skip nodes that fail."""
MAX_MAINTENANCE_PINGS = 16
"""Pings per tick, so that a node waking from a long pause does not burst its whole table at once."""
MAX_REFRESH_LOOKUPS = 2
"""Bucket-refresh lookups started per tick, for the same reason."""
MAX_REPUBLISH_PER_TICK = 4
"""Re-puts (own items, announces, replicas) started per tick: republishing is spread, never a burst."""
EXTERNAL_IP_VOTES = 64
"""Recent BEP 42 `ip` reports kept to decide our external address by majority."""

Timer = tuple[float, int, Callable[[float], None]]


_QUERIES_IN: dict[type, str] = {
    type(body): f"queries_in.{body.method.decode('ascii')}"
    for body in (
        Ping(), FindNode(b""), GetPeers(b""), AnnouncePeer(b"", 0, b""), Get(b""), Put(b"", b""), KnGossip(0)
    )
}
"""Counter names of the known queries, formatted once (every incoming query bumps one)."""
PEER_ENCODING_CACHE = 4096
"""Compact forms of stored peers kept for get_peers replies (emptied when full)."""


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
        storage: Storage | None = None,
        *,
        incarnation: int | None = None,
    ) -> None:
        """``incarnation`` (liveness gossip) must grow across restarts of this identity: the daemon passes
        its start time in Unix seconds; by default it is ``now`` rounded down."""
        self.node_id = node_id
        self.settings = settings
        self.rng = rng
        self.counters: Counters = new_counters()
        self.routing_table = RoutingTable(node_id, settings, rng, now=now)
        self.rpc = RpcManager(settings, rng)
        self.tokens = TokenManager(rng, settings)
        self.storage: Storage = storage if storage is not None else MemoryStorage(settings, rng)
        self.started = now
        self.external_addr: Addr | None = None
        self.last_now = now
        """The latest time the driver gave us (gossip's membership hooks have no ``now`` of their own)."""
        self.liveness: Liveness | None = None
        self._answering: int | None = None
        """The sender of the query being answered, while it is (its reply may carry gossip claims)."""
        """Liveness gossip, started once we know our own address (``settings.gossip_enabled``)."""
        self._incarnation = min(max(int(now) if incarnation is None else incarnation, 0), MAX_INCARNATION)
        self.active_lookups: set[LookupOp] = set()
        self._id_bytes = id_to_bytes(node_id)
        self._outgoing: list[tuple[bytes, Addr]] = []
        self._peer_encodings: dict[Addr, bytes] = {}
        self._timers: list[Timer] = []
        self._timer_seq = 0
        self._ip_votes: deque[Addr] = deque()
        self._ip_counts: Counter[Addr] = Counter()
        self._last_sweep = now
        self._next_ping_scan = now
        # Republishing: what we originated (persisted by the storage) and what we hold for others.
        self._own_items: dict[bytes, Item] = {item.target: item for item in self.storage.own_items()}
        self._own_announces: dict[bytes, int | None] = dict(self.storage.own_announces())
        self._republish_items = Schedule(settings.republish_interval, rng)
        self._republish_announces = Schedule(settings.announce_interval, rng)
        self._replicas = Schedule(settings.replicate_interval, rng)
        for target in self._own_items:
            self._republish_items.add(target, now, spread=True)
        for info_hash in self._own_announces:
            self._republish_announces.add(info_hash, now, spread=True)
        for item in self.storage.items(now):
            self._replicas.add(item.target, now, spread=True)
        self.schedule(now + MAINTENANCE_INTERVAL, self._maintenance)

    # ------------------------------------------------------------------ driver interface

    def take_outgoing(self) -> list[tuple[bytes, Addr]]:
        """Datagrams queued since the last call, to be sent as they are."""
        out, self._outgoing = self._outgoing, []
        return out

    def next_deadline(self) -> float | None:
        """When `advance` must next be called (None: nothing scheduled)."""
        deadline = self.rpc.next_deadline()  # asked after every datagram: no lists built here
        if self._timers and (deadline is None or self._timers[0][0] < deadline):
            deadline = self._timers[0][0]
        gossip_due = self.liveness.deadline if self.liveness is not None else None
        if gossip_due is not None and (deadline is None or gossip_due < deadline):
            deadline = gossip_due
        return deadline

    def advance(self, now: float) -> None:
        """Run every RPC timeout and timer due at `now`."""
        self.last_now = now
        self.rpc.advance(now)
        while self._timers and self._timers[0][0] <= now:
            _, _, callback = heapq.heappop(self._timers)
            callback(now)
        liveness = self.liveness
        if liveness is not None and liveness.deadline is not None and liveness.deadline <= now:
            liveness.advance(now)

    def schedule(self, when: float, callback: Callable[[float], None]) -> None:
        """Call `callback(now)` from `advance` once `when` has come."""
        self._timer_seq += 1
        heapq.heappush(self._timers, (when, self._timer_seq, callback))

    # ------------------------------------------------------------------ receiving

    def datagram_received(self, data: bytes, addr: Addr, now: float) -> None:
        """Handle one datagram. Never raises for anything a remote can send."""
        self.last_now = now
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
                self.send_error(exc.tid, exc.code, exc.message, addr)
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
        self.counters[_QUERIES_IN.get(type(body), "queries_in.unknown")] += 1
        sender = int.from_bytes(query.sender_id, "big")  # 20 bytes: decode_message checked
        if sender == self.node_id:
            self.counters["dropped.own_id"] += 1
            return
        if not query.read_only:
            self._note_querier(NodeInfo(sender, addr), now)
        liveness = self.liveness
        if liveness is not None:
            liveness.heard_from(sender, now)
            if query.claims:
                liveness.piggyback_received(query.claims, sender, now)
            if type(body) is not KnGossip:
                self._answering = sender  # send_response may add claims for it
        tid = query.tid
        if isinstance(body, Ping):
            self.send_response(tid, {}, addr)
        elif isinstance(body, FindNode):
            self.send_response(tid, {b"nodes": self._closest_compact(body.target)}, addr)
        elif isinstance(body, GetPeers):
            self._answer_get_peers(tid, body, addr, now)
        elif isinstance(body, AnnouncePeer):
            self._answer_announce(tid, body, addr, now)
        elif isinstance(body, Get):
            self._answer_get(tid, body, addr, now)
        elif isinstance(body, Put):
            self._answer_put(tid, body, addr, now)
        elif isinstance(body, KnGossip):
            if liveness is None:
                self.send_error(tid, METHOD_UNKNOWN, "method unknown", addr)
            else:
                liveness.query_received(tid, body, NodeInfo(sender, addr), now)
        elif body.target is not None:
            # libtorrent's rule: an unknown query that names a target is answered like find_node,
            # so newer extensions degrade gracefully.
            self.send_response(tid, {b"nodes": self._closest_compact(body.target)}, addr)
        else:
            self.send_error(tid, METHOD_UNKNOWN, "method unknown", addr)
        self._answering = None

    def _note_querier(self, node: NodeInfo, now: float) -> None:
        """A node that queries us may join the table, but we vouch for it only once it answers us:
        a new one is pinged at once (once), so it is confirmed within a round trip."""
        entry = self.routing_table.heard_from(node, now, responded=False)
        if entry is not None and entry.last_response is None and entry.last_pinged is None:
            entry.last_pinged = now
            self.send_query(entry.addr, entry.id, Ping(), MaintenancePing(self), now)

    def _closest_compact(self, target: bytes) -> bytes:
        # Only nodes that answered us: we never vouch for an endpoint we have not heard answer.
        entries = self.routing_table.closest(int.from_bytes(target, "big"), answered_only=True)
        return b"".join([e.compact for e in entries])

    def _token_and_nodes(self, target: bytes, addr: Addr, now: float) -> dict[bytes, Any]:
        return {b"token": self.tokens.token_for(addr[0], now), b"nodes": self._closest_compact(target)}

    def _answer_get_peers(self, tid: bytes, body: GetPeers, addr: Addr, now: float) -> None:
        values = self._token_and_nodes(body.info_hash, addr, now)
        peers = self.storage.get_peers(body.info_hash, now, self.settings.max_peers_per_reply, noseed=body.noseed)
        if peers:
            values[b"values"] = [self._encoded_peer(p) for p in peers]
        self.send_response(tid, values, addr)

    def _encoded_peer(self, addr: Addr) -> bytes:
        """The compact form of a stored peer or a querier's address (BEP 42 `ip`), cached: the same
        few thousand addresses go into reply after reply."""
        cache = self._peer_encodings
        encoded = cache.get(addr)
        if encoded is None:
            if len(cache) >= PEER_ENCODING_CACHE:
                cache.clear()
            encoded = cache[addr] = encode_peer(addr)
        return encoded

    def _refuse(self, tid: bytes, code: int, text: str, reason: str, addr: Addr) -> None:
        self.counters[f"refused.{reason}"] += 1
        self.send_error(tid, code, text, addr)

    def _answer_announce(self, tid: bytes, body: AnnouncePeer, addr: Addr, now: float) -> None:
        if not self.tokens.is_valid(body.token, addr[0], now):
            self._refuse(tid, PROTOCOL_ERROR, "invalid token", "bad_token", addr)
            return
        port = addr[1] if body.implied_port else body.port
        if not 0 < port < 65536:
            self._refuse(tid, PROTOCOL_ERROR, "invalid port", "bad_port", addr)
            return
        if self._stored(tid, addr, lambda: self.storage.add_peer(body.info_hash, (addr[0], port), now,
                                                                 seed=body.seed)):
            self.send_response(tid, {}, addr)

    def _stored(self, tid: bytes, addr: Addr, write: Callable[[], None]) -> bool:
        """Run a storage write; a refusal becomes the KRPC error BEP 5 / BEP 44 name for it."""
        try:
            write()
        except ValueTooLarge:
            self._refuse(tid, 205, "message (v field) too big", "put_205", addr)
        except StorageFull as exc:
            self._refuse(tid, SERVER_ERROR, f"store full: {exc}", "store_full", addr)
        except StorageError as exc:
            self._refuse(tid, SERVER_ERROR, str(exc), "store_error", addr)
        else:
            return True
        return False

    def _answer_get(self, tid: bytes, body: Get, addr: Addr, now: float) -> None:
        values = self._token_and_nodes(body.target, addr, now)
        item = self.local_item(body.target, now)
        if isinstance(item, MutableItem):
            values[b"seq"] = item.seq
            if body.seq is None or item.seq > body.seq:  # BEP 44: send only what is newer than asked
                values.update({b"v": Raw(item.value), b"k": item.public_key, b"sig": item.signature})
        elif item is not None:
            values[b"v"] = Raw(item.value)
        self.send_response(tid, values, addr)

    def _answer_put(self, tid: bytes, body: Put, addr: Addr, now: float) -> None:
        if not self.tokens.is_valid(body.token, addr[0], now):
            self._refuse(tid, PROTOCOL_ERROR, "invalid token", "bad_token", addr)
            return
        try:
            item = item_from_put(body, self.settings)
        except PutRefused as exc:
            self._refuse(tid, exc.code, exc.message, f"put_{exc.code}", addr)
            return
        current = self.local_item(item.target, now)
        if isinstance(item, MutableItem) and isinstance(current, MutableItem):
            if body.cas is not None and body.cas != current.seq:
                self._refuse(tid, 301, "cas mismatch: re-read the item and try again", "put_301", addr)
                return
            if item.seq < current.seq or (item.seq == current.seq and item.value != current.value):
                self._refuse(tid, 302, "sequence number less than current", "put_302", addr)
                return
        if not self._stored(tid, addr, lambda: self.storage.put_item(item, now, source_ip=addr[0])):
            return
        self.counters["items.stored"] += 1
        if item.target in self._replicas:
            self._replicas.postpone(item.target, now)  # someone else keeps it alive this interval
        else:
            self._replicas.add(item.target, now)
        self.send_response(tid, {}, addr)

    def _handle_response(self, response: Response, addr: Addr, now: float) -> None:
        txn = self.rpc.match(response.tid, addr)
        if txn is None:
            self.counters["dropped.unsolicited"] += 1
            return
        rtt = self.rpc.complete(txn, now)
        sender = int.from_bytes(response.sender_id, "big")  # 20 bytes: decode_message checked
        if sender == self.node_id:
            self.counters["dropped.own_id"] += 1
            txn.handler.rpc_timeout(txn, now)
            return
        if txn.node_id is not None and txn.node_id != sender:
            # The endpoint now answers with another ID (a restart with a new identity).
            self.counters["rpc.id_changed"] += 1
            self.routing_table.remove(txn.node_id, now)
        self.counters["responses_in"] += 1
        table = self.routing_table
        before = table.get(sender)
        confirmed_before = before is not None and before.last_response is not None
        entry = table.heard_from(NodeInfo(sender, addr), now, responded=True, rtt=rtt)
        if not confirmed_before and entry is not None:  # a node we now vouch for
            self._hand_over(NodeInfo(sender, addr), now)
        if response.ip is not None:
            self._vote_external_addr(response.ip)
        liveness = self.liveness
        if liveness is not None:
            liveness.heard_from(sender, now)
            claims = response.values.get(PIGGYBACK_KEY)
            if type(claims) is bytes and claims:
                liveness.piggyback_received(claims, sender, now)
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
        """The address most of the last EXTERNAL_IP_VOTES responders saw us at (kept incrementally:
        this runs on every response)."""
        votes, counts = self._ip_votes, self._ip_counts
        votes.append(reported)
        counts[reported] += 1
        if len(votes) > EXTERNAL_IP_VOTES:
            dropped = votes.popleft()
            counts[dropped] -= 1
            if not counts[dropped]:
                del counts[dropped]
        current = self.external_addr
        if current is None or counts[reported] > counts.get(current, 0):
            self.external_addr = reported
            if reported != current:
                self._address_known(reported)

    def _address_known(self, addr: Addr) -> None:
        """Others see us at ``addr``: gossip can start (claims about us must carry where we are)."""
        if not self.settings.gossip_enabled:
            return
        if self.liveness is None:
            self.liveness = Liveness(self, NodeInfo(self.node_id, addr), self.last_now, self._incarnation)
            self.routing_table.listener = self.liveness
        else:
            self.liveness.set_own_addr(addr)

    # ------------------------------------------------------------------ sending

    def send_response(self, tid: bytes, values: dict[bytes, Any], addr: Addr) -> None:
        values[b"id"] = self._id_bytes
        version, encoded_ip = self.settings.client_version, self._encoded_peer(addr)
        data = encode_response(tid, values, version, addr, encoded_ip)
        dest, liveness = self._answering, self.liveness
        if dest is not None and liveness is not None:
            self._answering = None  # one reply per query
            claims = liveness.piggyback_for(dest, len(data), self.last_now)
            if claims:
                values[PIGGYBACK_KEY] = claims
                data = encode_response(tid, values, version, addr, encoded_ip)
        self._outgoing.append((data, addr))
        self.counters["responses_out"] += 1

    def send_error(self, tid: bytes, code: int, text: str, addr: Addr) -> None:
        message = ErrorReply(tid=tid, code=code, message=text, version=self.settings.client_version)
        self._outgoing.append((encode_message(message), addr))
        self.counters[f"errors_out.{code}"] += 1

    def send_query(
        self, addr: Addr, node_id: int | None, body: QueryBody, handler: Handler, now: float,
        *, timeout: float | None = None,
    ) -> Transaction | None:
        """Send a query; the handler hears the outcome. None when too many requests are in flight.
        ``timeout`` fixes the timeout instead of adapting it to the peer (gossip probes)."""
        method = method_name(body)
        txn = self.rpc.start(addr, node_id, method, handler, now, timeout)
        if txn is None:
            self.counters["rpc.refused_busy"] += 1
            return None
        query = Query(tid=txn.tid, sender_id=self._id_bytes, body=body, version=self.settings.client_version)
        data = encode_message(query)
        liveness = self.liveness
        if liveness is not None and node_id is not None and type(body) is not KnGossip:
            claims = liveness.piggyback_for(node_id, len(data), now)
            if claims:
                data = encode_message(replace(query, claims=claims))
        self._outgoing.append((data, addr))
        self.counters[f"queries_out.{method}"] += 1
        return txn

    def last_datagram_size(self) -> int:
        """Bytes of the datagram queued last (what gossip counts against its budget)."""
        return len(self._outgoing[-1][0]) if self._outgoing else 0

    def note_failure(self, txn: Transaction, now: float) -> None:
        """A request timed out: the routing table counts it against the node."""
        self.counters["rpc.timeouts"] += 1
        if txn.node_id is not None:
            self.routing_table.failed(txn.node_id, now, addr=txn.addr)

    # ------------------------------------------------------------------ operations

    def ping(self, addr: Addr, now: float, done: Callable[[PingResult], None]) -> None:
        """Ping an endpoint (its ID need not be known)."""
        PingOp(self, addr, done).start(now)

    def find_node(self, target: int, now: float, done: Callable[[LookupResult], None]) -> None:
        """Iterative FIND_NODE: the k closest live nodes to `target`."""
        seeds = self.lookup_seeds(id_to_bytes(target))
        LookupOp(self, target, seeds, now, lambda op, _now: done(op.lookup_result())).pump(now)

    def get_peers(self, info_hash: bytes, now: float, done: Callable[[GetPeersResult], None]) -> None:
        """Iterative get_peers (BEP 5): peers announced for `info_hash`, and write tokens."""

        def finished(op: LookupOp, _now: float) -> None:
            assert isinstance(op, GetPeersOp)
            done(GetPeersResult(info_hash=info_hash, peers=list(op.peers), lookup=op.lookup_result(),
                                tokens=op.closest_tokens()))

        GetPeersOp(self, info_hash, now, finished).pump(now)

    def announce(
        self, info_hash: bytes, port: int | None, now: float, done: Callable[[AnnounceResult], None],
        *, keep: bool = True,
    ) -> None:
        """get_peers towards `info_hash`, then announce_peer to the k closest nodes that gave tokens.

        `port=None` announces with implied_port: receivers store our UDP source port. With `keep`
        the node re-announces every `announce_interval`, across restarts, until `stop_announcing`.
        """
        if keep:
            self._own_announces[info_hash] = port
            self.storage.save_own_announce(info_hash, port)
            self._republish_announces.add(info_hash, now)

        def after_lookup(op: LookupOp, now: float) -> None:
            assert isinstance(op, GetPeersOp)
            ids = op.closest_ids()
            requests: list[tuple[Addr, int | None, QueryBody]] = [
                (addr, ids.get(addr), AnnouncePeer(info_hash=info_hash, port=port or 0, token=token,
                                                   implied_port=port is None))
                for addr, token in op.closest_tokens().items()
            ]

            def stored(count: int, attempted: int, _errors: dict[int, int]) -> None:
                done(AnnounceResult(info_hash=info_hash, port=port, stored_at=count, attempted=attempted,
                                    peers=list(op.peers)))

            StoreOp(self, stored).start(requests, now)

        GetPeersOp(self, info_hash, now, after_lookup).pump(now)

    def stop_announcing(self, info_hash: bytes) -> None:
        """Forget an announce: it is no longer renewed, and expires from the network within peer_ttl."""
        self._own_announces.pop(info_hash, None)
        self._republish_announces.remove(info_hash)
        self.storage.remove_own_announce(info_hash)

    def get(self, target: bytes, now: float, done: Callable[[GetResult], None], *, salt: bytes = b"") -> None:
        """Iterative BEP 44 get: the best valid item under `target` (pass the `salt` of a salted
        mutable item: signatures cover it, and it is not sent back). An immutable item ends the
        lookup at its first valid copy; a mutable one is looked for at all k closest nodes, for the
        highest seq."""

        def finished(op: LookupOp, _now: float) -> None:
            assert isinstance(op, GetOp)
            done(self._get_result(op))

        GetOp(self, target, salt, now, finished, first_immutable=True).pump(now)

    def _get_result(self, op: GetOp) -> GetResult:
        closest = {n.addr for n in op.lookup.result()}
        return GetResult(target=op.target_bytes, item=op.item, lookup=op.lookup_result(), holders=op.holders,
                         invalid=op.invalid, tokens=op.closest_tokens(),
                         seqs={a: s for a, s in op.seqs.items() if a in closest})

    def put(
        self, item: Item, now: float, done: Callable[[PutResult], None], *, cas: int | None = None,
        keep: bool = True,
    ) -> None:
        """Store `item` on the k closest nodes: a get lookup for tokens, then put to each.

        With `keep` the item is ours: persisted, and re-put every `republish_interval` across restarts.
        `cas` (mutable items) is sent only to nodes that returned a value, as BEP 44 asks.
        """
        if keep:
            self._own_items[item.target] = item
            self.storage.save_own_item(item)
            self._republish_items.add(item.target, now)
        salt = item.salt if isinstance(item, MutableItem) else b""

        def after_lookup(op: LookupOp, now: float) -> None:
            assert isinstance(op, GetOp)
            ids = op.closest_ids()
            requests: list[tuple[Addr, int | None, QueryBody]] = [
                (addr, ids.get(addr), self._put_body(item, token, cas if addr in op.seqs else None))
                for addr, token in op.closest_tokens().items()
            ]

            def stored(count: int, attempted: int, errors: dict[int, int]) -> None:
                self.counters["items.put"] += 1
                if count == 0 and (errors.get(301) or errors.get(302)):
                    self._stop_republishing(item)  # the network holds a newer version: ours is stale
                done(PutResult(target=item.target, item=item, stored_at=count, attempted=attempted, errors=errors))

            StoreOp(self, stored).start(requests, now)

        GetOp(self, item.target, salt, now, after_lookup).pump(now)

    def _stop_republishing(self, item: Item) -> None:
        if self._own_items.get(item.target) == item:
            del self._own_items[item.target]
            self._republish_items.remove(item.target)
            self.counters["items.stale_dropped"] += 1

    @staticmethod
    def _put_body(item: Item, token: bytes, cas: int | None) -> Put:
        if isinstance(item, ImmutableItem):
            return Put(token=token, value=item.value)
        return Put(token=token, value=item.value, public_key=item.public_key, salt=item.salt, seq=item.seq,
                   signature=item.signature, cas=cas)

    def local_item(self, target: bytes, now: float) -> Item | None:
        """The newest item we have under `target`: one we originated, or one stored for others."""
        own = self._own_items.get(target)
        held = self.storage.get_item(target, now)
        if own is None or held is None:
            return own if own is not None else held
        if isinstance(own, MutableItem) and isinstance(held, MutableItem) and held.seq > own.seq:
            return held
        return own

    def bootstrap(self, seeds: list[Addr], now: float, done: Callable[[BootstrapResult], None]) -> None:
        """Ask every seed for nodes near our own ID, then look ourselves up to fill the table."""
        BootstrapOp(self, seeds, done).start(now)

    def lookup_seeds(self, target: bytes) -> list[NodeInfo]:
        """Where a lookup starts: the closest nodes our table knows (twice k, in case some are gone)."""
        entries = self.routing_table.closest(id_from_bytes(target), 2 * self.settings.k)
        return [NodeInfo(e.id, e.addr) for e in entries]

    # ------------------------------------------------------------------ maintenance

    def after_join(self, now: float) -> None:
        """After a bootstrap: fill the far buckets, and republish what we own right away (after a
        restart our items may have expired in the network while we were down)."""
        self.fill_buckets(now)
        for target in self._own_items:
            self._republish_items.add(target, now - self.settings.republish_interval)
        for info_hash in self._own_announces:
            self._republish_announces.add(info_hash, now - self.settings.announce_interval)

    def fill_buckets(self, now: float) -> None:
        """Look up a random ID in every bucket, but our own, that the join left empty.

        The self-lookup of a bootstrap fills the buckets near our own ID, and its first hops leave a
        few contacts in most far ones; a bucket with no contact at all would make lookups towards its
        range start from the wrong side. The Kademlia paper refreshes every far bucket here, but a
        bucket that holds a contact already routes into its range, and it fills from the queries that
        reach us; BEP 5 (and libtorrent) refresh only buckets unchanged for 15 minutes, which
        `_maintenance` does. At 10,000 simulated nodes a join cost 326 datagrams when it refreshed
        every far bucket (65% of them refresh lookups) and costs 210 now; lookups stay exact, with
        ~0.05 more hops.
        """
        table = self.routing_table
        for index in range(table.bucket_count - 1):
            if table.bucket_size(index):
                continue
            low, high = table.bucket_range(index)
            self.counters["refresh_lookups"] += 1
            self.find_node(random_id_in_range(low, high, self.rng), now, lambda _result: None)

    def _hand_over(self, newcomer: NodeInfo, now: float) -> None:
        """A node just joined our table: give it every item we hold for which it is closer than we are
        and among the k closest we know (the Kademlia paper's rule), so that data follows churn."""
        for target in self._replicas:
            key = int.from_bytes(target, "big")
            if newcomer.id ^ key >= self.node_id ^ key:
                continue
            if all(e.id != newcomer.id for e in self.routing_table.closest(key)):
                continue
            item = self.storage.get_item(target, now)
            if item is None:
                self._replicas.remove(target)
                continue
            self.counters["items.handed_over"] += 1
            _HandOver(self, item).start(newcomer, now)

    def _maintenance(self, now: float) -> None:
        """Keep the table healthy and the data alive: confirm questionable nodes, refresh stale buckets,
        expire stored entries, and re-put what is due."""
        if now >= self._next_ping_scan:
            self._next_ping_scan = now + PING_SCAN_INTERVAL
            for entry in self.routing_table.ping_candidates(now)[:MAX_MAINTENANCE_PINGS]:
                self.send_query(entry.addr, entry.id, Ping(), MaintenancePing(self), now)
        if len(self.routing_table) > 0:
            for target in self.routing_table.refresh_targets(now)[:MAX_REFRESH_LOOKUPS]:
                self.counters["refresh_lookups"] += 1
                self.find_node(target, now, lambda _result: None)
            self._republish(now)
        if now - self._last_sweep >= SWEEP_INTERVAL:
            self.storage.sweep(now)
            self._last_sweep = now
        self.schedule(now + MAINTENANCE_INTERVAL, self._maintenance)

    def _republish(self, now: float) -> None:
        budget = MAX_REPUBLISH_PER_TICK
        for target in self._republish_items.due(now, budget):
            self.counters["items.republished"] += 1
            self.put(self._own_items[target], now, lambda _r: None, keep=False)
            budget -= 1
        for info_hash in self._republish_announces.due(now, budget):
            self.counters["announces.renewed"] += 1
            self.announce(info_hash, self._own_announces[info_hash], now, lambda _r: None, keep=False)
            budget -= 1
        for target in self._replicas.due(now, budget):
            item = self.storage.get_item(target, now)
            if item is None:  # expired: nobody re-put it to us
                self._replicas.remove(target)
                continue
            self.counters["items.replicated"] += 1
            self.put(item, now, lambda _r: None, keep=False)

    def status(self, now: float) -> dict[str, Any]:
        """A JSON-friendly snapshot for operators: table health, storage, traffic counters."""
        states: Counter[NodeState] = Counter(entry.state(now, self.settings) for entry in self.routing_table.entries())
        stats = self.storage.stats(now)
        external = self.external_addr
        return {
            "node_id": self._id_bytes.hex(),
            "uptime": round(now - self.started, 3),
            "external_addr": f"{external[0]}:{external[1]}" if external else None,
            "routing_table": {
                "nodes": len(self.routing_table),
                "good": states[NodeState.GOOD],
                "questionable": states[NodeState.QUESTIONABLE],
                "bad": states[NodeState.BAD],
                "buckets": self.routing_table.bucket_count,
                "replacements": self.routing_table.replacement_count,
            },
            "storage": {
                "info_hashes": stats.info_hashes,
                "peers": stats.peers,
                "items": stats.items,
                "item_bytes": stats.item_bytes,
                "own_items": len(self._own_items),
                "own_announces": len(self._own_announces),
            },
            "gossip": self._gossip_status(now),
            "rpc_in_flight": self.rpc.in_flight,
            "lookups_active": len(self.active_lookups),
            "counters": grouped(self.counters),
        }


    def _gossip_status(self, now: float) -> dict[str, Any] | str:
        if self.liveness is not None:
            return self.liveness.view(now)
        return "starting: waits for a reply that tells our address" if self.settings.gossip_enabled else "off"


class _HandOver(Handler):
    """get (for a token and the newcomer's seq), then put the item if the newcomer lacks it."""

    def __init__(self, node: NodeCore, item: Item) -> None:
        super().__init__(node)
        self.item = item
        self.newcomer: NodeInfo | None = None

    def start(self, newcomer: NodeInfo, now: float) -> None:
        self.newcomer = newcomer
        self.node.send_query(newcomer.addr, newcomer.id, Get(target=self.item.target), self, now)

    def rpc_response(self, txn: Transaction, response: Response, now: float) -> None:
        if txn.method != "get" or self.newcomer is None:
            return
        try:
            token = response_token(response)
            held = response_item(response)
        except KrpcError:
            return
        newest = not isinstance(self.item, MutableItem) or (held.seq is not None and held.seq >= self.item.seq)
        has_it = held.value is not None and newest
        if token is None or has_it:
            return
        self.node.send_query(self.newcomer.addr, self.newcomer.id,
                             NodeCore._put_body(self.item, token, None), self, now)
