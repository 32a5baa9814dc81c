"""Liveness gossip wired into a node: the `Gossip` state machine's actions become KRPC traffic.

`kadnode.core.gossip` decides (whom to probe, what to suspect, when our own evidence says dead); this
module carries it out through the node and feeds the outcomes back:

- members mirror the routing table's live entries (`TableListener`);
- `Probe` is a `kn_gossip` query carrying our claims, or a plain `ping` to a node that answered it with
  an error (204 by the rule; libtorrent 2.1 says 203);
- `IndirectProbe` asks helpers with `kn_gossip` + `p`; a helper answers once its own probe ended;
- `Questionable` gives the entry a failure (not good until it answers), `Evict` goes to the routing
  table, which removes the node only in favour of a waiting replacement (else marks it BAD);
- `Candidate` (a stranger claimed alive) is pinged, and only if its bucket has room: it enters the table,
  like anyone, only by answering us.

Every datagram gossip sends, or answers, is counted in the node's `gossip.bytes_out` with 28 bytes of
IPv4/UDP header, the measure of issue 5's bandwidth budget.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kadnode.core.gossip import (
    CLAIM_SIZE,
    Action,
    Candidate,
    ClaimDecodeError,
    Evict,
    Gossip,
    GossipSettings,
    IndirectProbe,
    IndirectReply,
    Probe,
    Questionable,
    decode_claims,
)
from kadnode.core.operations import Handler
from kadnode.core.routing import RoutingEntry
from kadnode.core.rpc import Transaction
from kadnode.types import Addr, NodeInfo
from kadnode.wire.compact import CompactError, decode_nodes, encode_nodes
from kadnode.wire.krpc import (
    SERVER_ERROR,
    ErrorReply,
    KnGossip,
    KrpcError,
    Ping,
    Response,
    response_gossip,
)

if TYPE_CHECKING:
    from kadnode.core.node import NodeCore

UDP_IP_HEADER = 28
"""IPv4 (20) + UDP (8) bytes on top of every datagram: counted in the bandwidth figures."""
MAX_CLAIM_BYTES = 16 * 31
"""Claims one message carries at most (the machine's own cap is the same 16)."""
KNOWN_ERRORS = frozenset({201, 202, 203, 204})
"""Error codes that get a counter of their own (a remote must not be able to mint counter names)."""
PIGGYBACK_DATAGRAM_LIMIT = 1280
"""Claims ride on other traffic only while the datagram stays within this (IPv6's minimum MTU): a BEP 44
reply near the 1,000-byte value limit goes without them rather than be fragmented."""
PIGGYBACK_OVERHEAD = 10
"""`4:kn_c` and the string's length prefix."""
STALE_ENTRY = 2.0
"""An entry that enters the table having last answered longer ago than this (a replacement promoted in
place of an evicted node) is questionable until it answers, and probed at once: when nodes crash
together, so may their replacements. (A newcomer that never answered is not good anyway, and pinged.)"""
MAX_CANDIDATE_PINGS = 4
"""Pings to strangers that others claimed alive, in flight at once: hearsay cannot make us flood."""


class Liveness:
    """One node's gossip, started once the node knows its own address (others must be able to recognise
    claims about us). `incarnation` must grow across restarts: the daemon passes its start time."""

    def __init__(self, node: NodeCore, own: NodeInfo, now: float, incarnation: int) -> None:
        self.node = node
        tuning = GossipSettings(gossip_bytes_per_second=node.settings.gossip_bytes_per_second)
        self.gossip = Gossip(own, node.rng, now, incarnation=incarnation, settings=tuning)
        self._pending_behalf: dict[tuple[int, int], tuple[bytes, Addr]] = {}
        """(target, requester) -> the kn_gossip request (tid, address) to answer when our probe ends."""
        self._candidate_pings = 0
        for entry in node.routing_table.entries():
            self.gossip.add(entry.node_info(), now)
        self.deadline: float | None = None
        """When `advance` is next due: the machine's next deadline, cached (asking it walks every member,
        and the node asks after every datagram); refreshed whenever the machine was called. A cached time
        that is too early costs one call of `advance`, never a missed deadline."""
        self._refresh()

    def _refresh(self) -> None:
        self.deadline = self.gossip.next_deadline()

    # --- the routing table's changes ---------------------------------------------------------------

    def entry_added(self, entry: RoutingEntry) -> None:
        now = self.node.last_now
        self.gossip.add(entry.node_info(), now)
        if entry.last_response is not None and now - entry.last_response > STALE_ENTRY:
            # A promoted replacement: it may be as dead as its forerunner. Not good until it answers us,
            # and asked at once.
            self.node.routing_table.mark_questionable(entry.id)
            self.gossip.check_soon(entry.id, now)
            self._refresh()
        elif self.deadline is None:
            self._refresh()

    def entry_removed(self, entry: RoutingEntry, evicted: bool) -> None:
        self.gossip.remove(entry.id)
        if evicted:
            self.node.counters["routing.evicted"] += 1

    # --- events from the node ----------------------------------------------------------------------

    def heard_from(self, node_id: int, now: float, incarnation: int | None = None) -> None:
        """Any message from a node: first-hand sign of life."""
        if node_id in self.gossip:
            self.gossip.heard_from(node_id, now, incarnation)

    def piggyback_for(self, dest: int, size: int, now: float) -> bytes:
        """Claims to add to a query or reply of ``size`` bytes for ``dest``: only for members known to
        gossip, within the datagram limit and the gossip budget (counted in ``gossip.bytes_out``)."""
        if not self.gossip.gossips(dest):
            return b""
        room = min(MAX_CLAIM_BYTES, PIGGYBACK_DATAGRAM_LIMIT - size - PIGGYBACK_OVERHEAD)
        if room < CLAIM_SIZE:
            return b""
        claims = self.gossip.take_piggyback(room, now, dest)
        if claims:
            counters = self.node.counters
            counters["gossip.bytes_out"] += len(claims) + PIGGYBACK_OVERHEAD
            counters["gossip.piggybacked"] += len(claims) // CLAIM_SIZE
        return claims

    def piggyback_received(self, data: bytes, sender: int, now: float) -> None:
        """Claims that rode on another query or reply: the sender gossips."""
        self.gossip.mark_gossiper(sender)
        self._take_claims(data, sender, now)

    def set_own_addr(self, addr: Addr) -> None:
        """Our address as others see it changed: claims we make about ourselves carry the new one."""
        self.gossip.own = NodeInfo(self.gossip.own.id, addr)

    def query_received(self, tid: bytes, body: KnGossip, sender: NodeInfo, now: float) -> None:
        """A kn_gossip request: take its claims, then answer, at once or (an indirect probe) once our
        probe of its target has ended."""
        if sender.id in self.gossip:
            self.gossip.heard_from(sender.id, now, body.incarnation)
            self.gossip.mark_gossiper(sender.id)
        self._take_claims(body.claims, sender.id, now)
        if body.probe is None:
            self._reply(tid, sender.addr, sender.id, now)
            return
        try:
            (target,) = decode_nodes(body.probe)
        except (CompactError, ValueError):
            self.node.counters["gossip.bad_probe"] += 1
            self._error(tid, sender.addr, "bad probe target")
            return
        timeout = None if body.probe_timeout_ms is None else body.probe_timeout_ms / 1000
        actions = self.gossip.probe_on_behalf(target, sender, now, timeout)
        if not actions:
            self._error(tid, sender.addr, "busy")
            return
        self._pending_behalf[(target.id, sender.id)] = (tid, sender.addr)
        self.run(actions, now)

    def advance(self, now: float) -> None:
        """Timers: rounds that ended, suspicions that timed out, probes that are due."""
        actions = self.gossip.tick(now)
        while True:
            probe = self.gossip.next_probe(now)
            if probe is None:
                break
            actions.append(probe)
        self.run(actions, now)

    def next_deadline(self) -> float | None:
        return self.gossip.next_deadline()

    def view(self, now: float) -> dict[str, Any]:
        view = self.gossip.view(now)
        view["counters"] = dict(self.gossip.counters)
        return view

    # --- carrying out actions ----------------------------------------------------------------------

    def run(self, actions: list[Action], now: float) -> None:
        """Carry out the machine's actions (then refresh the cached deadline: the machine was called)."""
        table = self.node.routing_table
        for action in actions:
            if isinstance(action, Probe):
                self._probe(action, now)
            elif isinstance(action, IndirectProbe):
                for helper in action.helpers:
                    body = KnGossip(self.gossip.incarnation, self._claims_for(helper.id, now),
                                    encode_nodes([action.target]), round(action.helper_timeout * 1000))
                    handler = _IndirectRequest(self.node, self, action.target.id, helper.id)
                    self._send(helper, body, handler, action.timeout, now)
            elif isinstance(action, IndirectReply):
                pending = self._pending_behalf.pop((action.target, action.requester.id), None)
                if pending is not None:
                    self._reply(pending[0], pending[1], action.requester.id, now, probe_acked=action.acked)
            elif isinstance(action, Questionable):
                table.mark_questionable(action.node_id)
            elif isinstance(action, Evict):
                table.evict(action.node_id, now)
            elif isinstance(action, Candidate):
                self._candidate(action.node, now)
        self._refresh()

    def _probe(self, probe: Probe, now: float) -> None:
        target = probe.target
        handler = _Probe(self.node, self, target.id, probe.on_behalf_of)
        if probe.plain:
            self._send(target, Ping(), handler, probe.timeout, now)
        else:
            body = KnGossip(self.gossip.incarnation, self._claims_for(target.id, now))
            self._send(target, body, handler, probe.timeout, now)

    def _candidate(self, node: NodeInfo, now: float) -> None:
        if self._candidate_pings >= MAX_CANDIDATE_PINGS or not self.node.routing_table.has_room(node.id):
            return
        self._candidate_pings += 1
        self._send(node, Ping(), _CandidatePing(self.node, self), None, now)

    def _send(self, to: NodeInfo, body: Ping | KnGossip, handler: _GossipHandler, timeout: float | None,
              now: float) -> None:
        if self.node.send_query(to.addr, to.id, body, handler, now, timeout=timeout) is None:
            handler.failed(now)  # too many requests in flight: as good as a timeout to gossip
            return
        self._count_sent()

    def _claims_for(self, dest: int, now: float) -> bytes:
        return self.gossip.take_piggyback(MAX_CLAIM_BYTES, now, dest)

    def _take_claims(self, data: bytes, origin: int, now: float) -> None:
        if not data:
            return
        try:
            claims = decode_claims(data, origin)
        except ClaimDecodeError:
            self.node.counters["gossip.bad_claims"] += 1
            return
        self.run(self.gossip.receive_claims(claims, now), now)

    def _reply(self, tid: bytes, addr: Addr, dest: int, now: float, *, probe_acked: bool | None = None) -> None:
        values: dict[bytes, Any] = {b"inc": self.gossip.incarnation}
        claims = self._claims_for(dest, now)
        if claims:
            values[b"c"] = claims
        if probe_acked is not None:
            values[b"pa"] = int(probe_acked)
        self.node.send_response(tid, values, addr)
        self._count_sent()

    def _error(self, tid: bytes, addr: Addr, text: str) -> None:
        self.node.send_error(tid, SERVER_ERROR, text, addr)
        self._count_sent()

    def _count_sent(self) -> None:
        self.node.counters["gossip.bytes_out"] += self.node.last_datagram_size() + UDP_IP_HEADER

    def response_received(self, response: Response, origin: int, now: float) -> bool | None:
        """The gossip fields of a kn_gossip reply: its claims are taken, its `pa` returned."""
        try:
            reply = response_gossip(response)
        except KrpcError:
            self.node.counters["gossip.bad_reply"] += 1
            return None
        if reply.incarnation is not None and origin in self.gossip:
            self.gossip.heard_from(origin, now, reply.incarnation)
            self.gossip.mark_gossiper(origin)
        self._take_claims(reply.claims, origin, now)
        return reply.probe_acked


class _GossipHandler(Handler):
    """Gossip's own requests: their timeouts are gossip's business, not the routing table's (with gossip
    on, failures never evict anyway, but they would make the node questionable twice over)."""

    def __init__(self, node: NodeCore, liveness: Liveness) -> None:
        super().__init__(node)
        self.liveness = liveness

    def rpc_timeout(self, txn: Transaction, now: float) -> None:
        self.failed(now)

    def failed(self, now: float) -> None:
        raise NotImplementedError


class _Probe(_GossipHandler):
    def __init__(self, node: NodeCore, liveness: Liveness, target: int, on_behalf_of: int | None) -> None:
        super().__init__(node, liveness)
        self.target = target
        self.on_behalf_of = on_behalf_of

    def rpc_response(self, txn: Transaction, response: Response, now: float) -> None:
        liveness = self.liveness
        if txn.method == "kn_gossip":
            liveness.response_received(response, self.target, now)
        self._ended(True, now)

    def rpc_error(self, txn: Transaction, error: ErrorReply, now: float) -> None:
        if txn.method == "kn_gossip":
            # Not a kadnode that gossips: 204 is the rule, but libtorrent 2.1 answers an unknown query
            # without a target 203. Either way: ping it from now on, never send it claims.
            self.node.counters[f"gossip.plain.{error.code if error.code in KNOWN_ERRORS else 'other'}"] += 1
            self.liveness.gossip.mark_plain(self.target)
        self._ended(True, now)  # an error reply is an answer: the node is up

    def failed(self, now: float) -> None:
        self._ended(False, now)

    def _ended(self, acked: bool, now: float) -> None:
        gossip = self.liveness.gossip
        if self.on_behalf_of is not None:
            self.liveness.run(gossip.behalf_result(self.target, self.on_behalf_of, acked, now), now)
        elif acked:
            self.liveness.run(gossip.probe_acked(self.target, now), now)
        else:
            self.liveness.run(gossip.probe_failed(self.target, now), now)


class _IndirectRequest(_GossipHandler):
    def __init__(self, node: NodeCore, liveness: Liveness, target: int, helper: int) -> None:
        super().__init__(node, liveness)
        self.target = target
        self.helper = helper

    def rpc_response(self, txn: Transaction, response: Response, now: float) -> None:
        liveness = self.liveness
        acked = liveness.response_received(response, self.helper, now)
        if acked:
            liveness.run(liveness.gossip.indirect_acked(self.target, self.helper, now), now)
        else:
            self._nack(now, helper_answered=True)

    def rpc_error(self, txn: Transaction, error: ErrorReply, now: float) -> None:
        if error.code != SERVER_ERROR:  # 202 is a busy kadnode helper; anything else does not gossip
            self.liveness.gossip.mark_plain(self.helper)
        self._nack(now, helper_answered=True)  # it answered us: we are not the one cut off

    def failed(self, now: float) -> None:
        self._nack(now, helper_answered=False)

    def _nack(self, now: float, *, helper_answered: bool) -> None:
        gossip = self.liveness.gossip
        actions = gossip.indirect_failed(self.target, self.helper, now, helper_answered=helper_answered)
        self.liveness.run(actions, now)


class _CandidatePing(_GossipHandler):
    """A ping to a stranger claimed alive: if it answers, the node's reply handling adds it to the table."""

    def rpc_response(self, txn: Transaction, response: Response, now: float) -> None:
        self.liveness._candidate_pings -= 1

    def rpc_error(self, txn: Transaction, error: ErrorReply, now: float) -> None:
        self.liveness._candidate_pings -= 1

    def failed(self, now: float) -> None:
        self.liveness._candidate_pings -= 1
