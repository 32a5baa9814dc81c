"""Liveness gossip inside the node: kn_gossip on the wire, the routing table's verdicts, degradation to
ping for nodes that do not speak it, and crash detection in the simulator (docs/gossip.md)."""

from __future__ import annotations

import random

from kadnode.core.gossip import Claim, ClaimKind, decode_claims, encode_claims
from kadnode.core.liveness import PIGGYBACK_DATAGRAM_LIMIT
from kadnode.core.node import NodeCore
from kadnode.core.routing import NodeState
from kadnode.settings import Settings
from kadnode.sim.network import SimNetwork
from kadnode.sim.scenarios import grow
from kadnode.types import Addr, NodeInfo
from kadnode.wire.bencode import bencode
from kadnode.wire.compact import encode_nodes
from kadnode.wire.krpc import (
    PIGGYBACK_KEY,
    ErrorReply,
    FindNode,
    KnGossip,
    Message,
    Ping,
    Query,
    Response,
    decode_message,
    encode_message,
    encode_response,
    response_gossip,
)

ME: Addr = ("127.0.0.2", 6881)
PEER: Addr = ("127.0.0.3", 7000)
PEER_ID = bytes(range(20))
OTHER: Addr = ("127.0.0.4", 7000)
OTHER_ID = bytes(range(1, 21))


def started_core(seed: int = 1) -> NodeCore:
    """A core that knows its address (a reply told it), so its gossip runs; PEER is in its table."""
    rng = random.Random(seed)
    core = NodeCore(rng.getrandbits(160), Settings(), rng, now=0.0, incarnation=1000)
    core.ping(PEER, 0.0, lambda _r: None)
    (data, _), = core.take_outgoing()
    query = decode_message(data)
    core.datagram_received(encode_response(query.tid, {b"id": PEER_ID}, None, ME), PEER, 0.01)
    assert core.liveness is not None and core.external_addr == ME
    return core


def ask(core: NodeCore, body: object, *, src: Addr = PEER, sender: bytes = PEER_ID, now: float = 1.0,
        tid: bytes = b"tx") -> list[Message]:
    core.datagram_received(encode_message(Query(tid, sender, body)), src, now)  # type: ignore[arg-type]
    return [m for m in (decode_message(d) for d, a in core.take_outgoing() if a == src) if m.tid == tid]


def test_gossip_starts_once_the_node_knows_its_address_and_mirrors_the_table() -> None:
    rng = random.Random(2)
    core = NodeCore(rng.getrandbits(160), Settings(), rng, now=0.0)
    assert core.liveness is None and core.status(0.0)["gossip"].startswith("starting")
    core = started_core()
    liveness = core.liveness
    assert liveness is not None
    assert int.from_bytes(PEER_ID, "big") in liveness.gossip
    view = core.status(1.0)["gossip"]
    assert view["members"] == 1 and view["alive"] == 1 and view["incarnation"] == 1000


def test_disabled_gossip_answers_kn_gossip_with_204() -> None:
    rng = random.Random(3)
    core = NodeCore(rng.getrandbits(160), Settings(gossip_enabled=False), rng, now=0.0)
    (reply,) = ask(core, KnGossip(5))
    assert isinstance(reply, ErrorReply) and reply.code == 204
    assert core.status(1.0)["gossip"] == "off"


def test_kn_gossip_is_answered_with_our_incarnation_and_its_claims_are_taken() -> None:
    core = started_core()
    (reply,) = ask(core, KnGossip(7))
    assert isinstance(reply, Response)
    gossip = response_gossip(reply)
    assert gossip.incarnation == 1000 and gossip.probe_acked is None
    assert core.counters["queries_in.kn_gossip"] == 1
    assert core.counters["gossip.bytes_out"] > 28
    # A claim that we are suspect, at our incarnation, is refuted: the incarnation goes up.
    me = NodeInfo(core.node_id, ME)
    claims = encode_claims([Claim(ClaimKind.SUSPECT, me, 1000, int.from_bytes(PEER_ID, "big"))])
    (reply,) = ask(core, KnGossip(7, claims), tid=b"t2")
    assert isinstance(reply, Response)
    assert response_gossip(reply).incarnation == 1001


def test_garbage_claims_are_counted_and_the_query_still_answered() -> None:
    core = started_core()
    (reply,) = ask(core, KnGossip(7, b"\x01" * 30))
    assert isinstance(reply, Response)
    assert core.counters["gossip.bad_claims"] == 1


def test_a_forged_dead_claim_never_evicts_a_node_that_answers() -> None:
    core = started_core()
    peer = NodeInfo(int.from_bytes(PEER_ID, "big"), PEER)
    forged = encode_claims([Claim(ClaimKind.DEAD, peer, 2**32 - 1, int.from_bytes(OTHER_ID, "big"))])
    ask(core, KnGossip(3, forged), src=OTHER, sender=OTHER_ID)
    entry = core.routing_table.get(peer.id)
    assert entry is not None and entry.state(1.0, core.settings) is not NodeState.GOOD  # questionable
    # Our own probe of it follows; it answers, and it is good again. Nothing was evicted.
    now = 1.0
    for _ in range(200):
        now += 0.25
        core.advance(now)
        for data, addr in core.take_outgoing():
            message = decode_message(data)
            if addr == PEER and isinstance(message, Query):
                core.datagram_received(encode_response(message.tid, {b"id": PEER_ID}, None, ME), PEER, now)
        core.take_outgoing()
    assert entry.state(now, core.settings) is NodeState.GOOD
    assert core.routing_table.get(peer.id) is entry and core.counters["routing.evicted"] == 0


def piggybacked(message: Message) -> bytes:
    if isinstance(message, Query):
        return message.claims
    assert isinstance(message, Response)
    claims = message.values.get(PIGGYBACK_KEY, b"")
    assert isinstance(claims, bytes)
    return claims


def test_claims_ride_on_other_traffic_only_to_nodes_known_to_gossip() -> None:
    core = started_core()
    me = core.node_id
    (reply,) = ask(core, FindNode(bytes(20)), tid=b"f1")
    assert piggybacked(reply) == b""  # PEER has not shown it gossips: it may be libtorrent
    ask(core, KnGossip(7), tid=b"g1")  # now it has
    (reply,) = ask(core, FindNode(bytes(20)), tid=b"f2")
    claims = decode_claims(piggybacked(reply), int.from_bytes(PEER_ID, "big"))
    assert [(c.kind, c.subject.id) for c in claims] == [(ClaimKind.ALIVE, me)]  # we tell who we are
    assert core.counters["gossip.piggybacked"] == 1
    # Our own queries to it carry claims too (while the claim's retransmissions last).
    core.find_node(1, 2.0, lambda _r: None)
    (query,) = [decode_message(d) for d, a in core.take_outgoing() if a == PEER]
    assert isinstance(query, Query) and isinstance(query.body, FindNode)
    assert [c.subject.id for c in decode_claims(piggybacked(query), 0)] == [me]
    # A stranger never gets claims on other traffic.
    (reply,) = ask(core, FindNode(bytes(20)), src=OTHER, sender=OTHER_ID, tid=b"f3")
    assert piggybacked(reply) == b""


def test_piggybacked_claims_are_taken_and_bad_ones_counted_without_harm_to_the_query() -> None:
    core = started_core()
    assert core.liveness is not None
    me = NodeInfo(core.node_id, ME)
    accusation = encode_claims([Claim(ClaimKind.SUSPECT, me, 1000, int.from_bytes(PEER_ID, "big"))])
    core.datagram_received(encode_message(Query(b"q2", PEER_ID, FindNode(bytes(20)), claims=accusation)), PEER, 1.0)
    assert core.liveness.gossip.incarnation == 1001  # refuted: the claims were read
    assert core.liveness.gossip.gossips(int.from_bytes(PEER_ID, "big"))
    core.datagram_received(encode_message(Query(b"q3", PEER_ID, Ping(), claims=b"\x01" * 5)), PEER, 1.0)
    assert core.counters["gossip.bad_claims"] == 1
    not_a_string = bencode({b"a": {b"id": PEER_ID, b"kn_c": 5}, b"q": b"ping", b"t": b"q4", b"y": b"q"})
    core.datagram_received(not_a_string, PEER, 1.0)
    replies = [decode_message(d) for d, a in core.take_outgoing() if a == PEER]
    assert {m.tid for m in replies if isinstance(m, Response)} >= {b"q2", b"q3", b"q4"}


def test_piggybacking_keeps_datagrams_within_the_limit() -> None:
    core = started_core()
    assert core.liveness is not None
    ask(core, KnGossip(7), tid=b"g1")
    for index in range(30):  # plenty of claims waiting
        subject = NodeInfo(10**6 + index, ("127.0.1.1", 1000 + index))
        core.liveness.gossip._queue.push(Claim(ClaimKind.SUSPECT, subject, 1, core.node_id))
    big = {b"v": b"x" * 990}  # a BEP 44 value near the limit
    core.datagram_received(encode_message(Query(b"p1", PEER_ID, Ping())), PEER, 1.0)
    (small,) = [d for d, a in core.take_outgoing() if a == PEER]
    assert len(decode_claims(piggybacked(decode_message(small)), 0)) == 16  # a full message's worth
    core._answering = int.from_bytes(PEER_ID, "big")  # as while answering a get of a near-limit item
    core.send_response(b"p2", dict(big), PEER)
    (large,) = [d for d, a in core.take_outgoing() if a == PEER]
    assert len(large) <= PIGGYBACK_DATAGRAM_LIMIT


def test_a_replacement_promoted_without_a_recent_answer_is_probed_at_once() -> None:
    """After a mass crash the replacements may have crashed too: they are checked now, not a round later."""
    core = started_core()
    assert core.liveness is not None
    stale = NodeInfo(2**159 + 77, ("127.0.0.9", 7009))
    fresh = NodeInfo(2**159 + 78, ("127.0.0.10", 7010))
    now = 300.0
    core.advance(now)  # this interval's round-robin probe goes out now
    core.take_outgoing()
    entry = core.routing_table.heard_from(stale, 100.0, responded=True)  # last heard long ago
    core.routing_table.heard_from(fresh, now, responded=True)
    assert entry is not None and entry.state(now, core.settings) is not NodeState.GOOD  # not until it answers
    core.advance(now)
    out = core.take_outgoing()
    probes = [decode_message(d) for d, a in out if a == stale.addr]
    assert [type(m) for m in probes] == [Query]
    assert not [d for d, a in out if a == fresh.addr]  # a fresh entry waits for its round-robin turn
    assert core.liveness.gossip.counters["probes.stale_added"] == 1
    core.datagram_received(encode_response(probes[0].tid, {b"id": stale.id.to_bytes(20, "big"), b"inc": 1}, None, ME),
                           stale.addr, now + 0.1)
    assert entry.state(now + 0.1, core.settings) is NodeState.GOOD


def test_indirect_probe_request_is_answered_after_our_probe_of_the_target() -> None:
    core = started_core()
    target = NodeInfo(int.from_bytes(PEER_ID, "big"), PEER)
    core.datagram_received(
        encode_message(Query(b"ix", OTHER_ID, KnGossip(9, b"", encode_nodes([target]), 400))), OTHER, 1.0
    )
    out = core.take_outgoing()
    assert not [d for d, a in out if a == OTHER and decode_message(d).tid == b"ix"]  # we probe first
    (probe,) = [decode_message(d) for d, a in out if a == PEER and isinstance(decode_message(d), Query)]
    assert isinstance(probe, Query) and isinstance(probe.body, KnGossip)
    core.datagram_received(encode_response(probe.tid, {b"id": PEER_ID, b"inc": 1}, None, ME), PEER, 1.1)
    (reply,) = [m for m in (decode_message(d) for d, a in core.take_outgoing() if a == OTHER) if m.tid == b"ix"]
    assert isinstance(reply, Response)
    assert response_gossip(reply).probe_acked is True


def test_indirect_probe_of_a_silent_target_is_nacked() -> None:
    core = started_core()
    silent = NodeInfo(12345, ("127.0.0.9", 9))
    core.datagram_received(
        encode_message(Query(b"iy", OTHER_ID, KnGossip(9, b"", encode_nodes([silent]), 300))), OTHER, 1.0
    )
    core.take_outgoing()
    core.advance(1.5)
    (reply,) = [m for m in (decode_message(d) for d, a in core.take_outgoing() if a == OTHER) if m.tid == b"iy"]
    assert isinstance(reply, Response) and response_gossip(reply).probe_acked is False


def test_a_node_that_answers_204_is_probed_with_ping_and_stays() -> None:
    """libtorrent and other clients do not know kn_gossip: they are pinged instead, never evicted for it."""
    core = started_core()
    peer_id = int.from_bytes(PEER_ID, "big")
    now, pings, gossip_queries = 0.0, 0, 0
    for _ in range(400):  # 100 virtual seconds
        now += 0.25
        core.advance(now)
        for data, addr in core.take_outgoing():
            message = decode_message(data)
            if addr != PEER or not isinstance(message, Query):
                continue
            if isinstance(message.body, KnGossip):
                gossip_queries += 1
                reply = encode_message(ErrorReply(message.tid, 204, "method unknown"))
            else:
                pings += isinstance(message.body, Ping)
                reply = encode_response(message.tid, {b"id": PEER_ID}, None, ME)
            core.datagram_received(reply, PEER, now)
    assert gossip_queries == 1 and pings >= 10
    assert core.liveness is not None and core.liveness.view(now)["plain"] == 1
    entry = core.routing_table.get(peer_id)
    assert entry is not None and entry.state(now, core.settings) is NodeState.GOOD


def detection_time(gossip: bool, seed: int = 5, size: int = 120) -> float:
    """Virtual seconds until no live node holds a crashed node as good, after 5% crash at once."""
    net = SimNetwork(seed, settings=Settings(gossip_enabled=gossip))
    grow(net, size)
    net.run_until(net.now + 120)
    rng = random.Random(seed)
    victims = rng.sample(net.live_nodes(), size // 20)
    dead = {v.core.node_id for v in victims}
    for victim in victims:
        net.crash(victim.addr)
    start = net.now
    while net.now - start < 1200:
        net.run_until(net.now + 1)
        holding = [
            n for n in net.live_nodes()
            if any((e := n.core.routing_table.get(d)) is not None and e.state(net.now, n.core.settings)
                   is NodeState.GOOD for d in dead)
        ]
        if not holding:
            return net.now - start
    return float("inf")


def test_crashed_nodes_stop_being_good_far_sooner_with_gossip() -> None:
    with_gossip = detection_time(True)
    without = detection_time(False)
    assert with_gossip < 120 and without > 5 * with_gossip, (with_gossip, without)


def test_a_referral_that_never_answers_is_skipped_after_three_timeouts() -> None:
    """A small network keeps naming a dead node (its peers rarely query it): after it left three of our
    requests unanswered, lookups stop asking it for a while instead of waiting out its backed-off
    timeout each time."""
    core = started_core()
    dead = NodeInfo(2**159 + 5, ("127.0.0.99", 9999))
    now = 10.0
    queried_dead: list[bool] = []
    durations: list[float] = []
    for _ in range(5):
        done: list[object] = []
        started = now
        core.find_node(2**159 + 6, now, done.append)
        asked_dead = False
        while not done and now < started + 60:
            for data, addr in core.take_outgoing():
                message = decode_message(data)
                if not isinstance(message, Query):
                    continue
                if addr == PEER:
                    values = {b"id": PEER_ID, b"nodes": encode_nodes([dead])}
                    core.datagram_received(encode_response(message.tid, values, None, ME), PEER, now + 0.01)
                elif addr == dead.addr and isinstance(message.body, FindNode):
                    asked_dead = True
            now += 0.05
            core.advance(now)
        assert done
        queried_dead.append(asked_dead)
        durations.append(now - started)
    # Each lookup asks it twice (a request and its retry): three timeouts are passed during the second.
    assert queried_dead == [True, True, False, False, False]
    assert max(durations[2:]) <= 0.1 < min(durations[:2])  # no more waiting for the dead node
