"""NodeCore's handling of every KRPC message, driven with raw datagrams and a hand-held clock."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from kadnode.core.node import NodeCore
from kadnode.core.results import PingResult
from kadnode.settings import Settings
from kadnode.types import Addr, NodeInfo
from kadnode.wire.bencode import bencode
from kadnode.wire.compact import decode_nodes, decode_peer, id_to_bytes
from kadnode.wire.krpc import (
    AnnouncePeer,
    ErrorReply,
    FindNode,
    GetPeers,
    Message,
    Ping,
    Query,
    Response,
    UnknownMethod,
    decode_message,
    encode_message,
)

ME = ("127.0.0.2", 6881)
PEER = ("127.0.0.3", 7000)
PEER_ID = bytes(range(20))


def make_core(seed: int = 1, **changes: object) -> NodeCore:
    rng = random.Random(seed)
    return NodeCore(rng.getrandbits(160), Settings().with_changes(**changes), rng, now=0.0)


def ask(core: NodeCore, body: object, *, src: Addr = PEER, now: float = 1.0, tid: bytes = b"tx") -> Message:
    query = Query(tid=tid, sender_id=PEER_ID, body=body)  # type: ignore[arg-type]
    core.datagram_received(encode_message(query), src, now)
    replies = [m for m in (decode_message(d) for d, a in core.take_outgoing() if a == src) if m.tid == tid]
    assert len(replies) == 1
    return replies[0]


def test_ping_is_answered_with_our_id_and_the_requester_address() -> None:
    core = make_core()
    reply = ask(core, Ping())
    assert isinstance(reply, Response)
    assert reply.tid == b"tx"
    assert reply.sender_id == id_to_bytes(core.node_id)
    assert reply.ip == PEER
    assert core.counters["queries_in.ping"] == 1
    # The querying node enters the routing table (questionable until it answers us) ...
    entry = core.routing_table.get(int.from_bytes(PEER_ID, "big"))
    assert entry is not None and entry.last_response is None
    # ... and was pinged to confirm it; a second query does not ping again.
    assert core.counters["queries_out.ping"] == 1
    ask(core, Ping(), now=1.5)
    assert core.counters["queries_out.ping"] == 1


def test_read_only_queries_do_not_enter_the_table() -> None:
    core = make_core()
    query = Query(tid=b"t", sender_id=PEER_ID, body=Ping(), read_only=True)
    core.datagram_received(encode_message(query), PEER, 1.0)
    assert len(core.take_outgoing()) == 1  # the answer only: no ping to confirm it
    assert len(core.routing_table) == 0


def test_find_node_returns_closest_known_nodes() -> None:
    core = make_core()
    rng = random.Random(2)
    known = [NodeInfo(rng.getrandbits(160), (f"127.0.1.{i}", 6881)) for i in range(1, 30)]
    for node in known:
        core.routing_table.heard_from(node, 0.5, responded=True)
    target = rng.getrandbits(160)
    reply = ask(core, FindNode(target=id_to_bytes(target)))
    assert isinstance(reply, Response)
    nodes = decode_nodes(reply.values[b"nodes"])
    expected = [e.id for e in core.routing_table.closest(target)]
    assert [n.id for n in nodes] == expected
    assert len(nodes) == core.settings.k


def test_announce_with_token_is_stored_and_returned_by_get_peers() -> None:
    core = make_core()
    info_hash = b"\x11" * 20
    reply = ask(core, GetPeers(info_hash=info_hash))
    assert isinstance(reply, Response)
    token = reply.values[b"token"]
    assert b"values" not in reply.values
    ack = ask(core, AnnouncePeer(info_hash=info_hash, port=51413, token=token))
    assert isinstance(ack, Response)
    implied = ask(core, AnnouncePeer(info_hash=info_hash, port=0, token=token, implied_port=True),
                  src=("127.0.0.3", 7001))
    assert isinstance(implied, Response)
    reply = ask(core, GetPeers(info_hash=info_hash), src=("127.0.0.4", 6881))
    assert isinstance(reply, Response)
    peers = {decode_peer(v) for v in reply.values[b"values"]}
    assert peers == {("127.0.0.3", 51413), ("127.0.0.3", 7001)}


def test_announce_with_bad_token_gets_error_203() -> None:
    core = make_core()
    reply = ask(core, AnnouncePeer(info_hash=b"\x11" * 20, port=6881, token=b"forged"))
    assert isinstance(reply, ErrorReply)
    assert reply.code == 203
    assert core.counters["refused.bad_token"] == 1
    assert core.storage.stats(1.0).peers == 0


def test_token_from_another_ip_is_refused() -> None:
    core = make_core()
    reply = ask(core, GetPeers(info_hash=b"\x11" * 20))
    assert isinstance(reply, Response)
    token = reply.values[b"token"]
    other = ask(core, AnnouncePeer(info_hash=b"\x11" * 20, port=6881, token=token), src=("127.0.0.9", 7000))
    assert isinstance(other, ErrorReply) and other.code == 203


def test_unknown_method_with_target_is_answered_like_find_node() -> None:
    core = make_core()
    reply = ask(core, UnknownMethod(method=b"sample_infohashes", target=b"\x22" * 20))
    assert isinstance(reply, Response)
    assert b"nodes" in reply.values


def test_unknown_method_without_target_gets_204() -> None:
    core = make_core()
    reply = ask(core, UnknownMethod(method=b"frobnicate", target=None))
    assert isinstance(reply, ErrorReply)
    assert reply.code == 204


def test_malformed_query_with_readable_tid_gets_203() -> None:
    core = make_core()
    raw = bencode({b"t": b"zz", b"y": b"q", b"q": b"find_node", b"a": {b"id": PEER_ID}})
    core.datagram_received(raw, PEER, 1.0)
    (data, _addr), = core.take_outgoing()
    reply = decode_message(data)
    assert isinstance(reply, ErrorReply) and reply.code == 203 and reply.tid == b"zz"
    assert sum(v for k, v in core.counters.items() if k.startswith("dropped.")) == 1


def test_garbage_is_dropped_and_counted_without_reply() -> None:
    core = make_core()
    for junk in (b"", b"hello", b"d1:t", b"l" * 5000, b"i1e" * 10):
        core.datagram_received(junk, PEER, 1.0)
    assert core.take_outgoing() == []
    assert sum(v for k, v in core.counters.items() if k.startswith("dropped.")) == 5


def test_oversized_datagram_is_dropped_unread() -> None:
    core = make_core(max_datagram_size=100)
    core.datagram_received(b"x" * 101, PEER, 1.0)
    assert core.counters["dropped.oversized"] == 1
    assert core.take_outgoing() == []


def test_unsolicited_and_spoofed_responses_are_dropped() -> None:
    core = make_core()
    results: list[PingResult] = []
    core.ping(PEER, 0.0, results.append)
    (data, _), = core.take_outgoing()
    sent = decode_message(data)
    assert isinstance(sent, Query)
    # Same transaction id, wrong source address: a spoofing attempt.
    fake = Response(tid=sent.tid, sender_id=PEER_ID, values={b"id": PEER_ID})
    core.datagram_received(encode_message(fake), ("127.0.0.66", 7000), 0.1)
    assert results == [] and core.counters["dropped.unsolicited"] == 1
    core.datagram_received(encode_message(fake), PEER, 0.2)
    assert results and results[0].ok and results[0].node_id == int.from_bytes(PEER_ID, "big")
    # A replay of the same answer no longer matches anything.
    core.datagram_received(encode_message(fake), PEER, 0.3)
    assert core.counters["dropped.unsolicited"] == 2


def test_ping_timeout_is_reported() -> None:
    core = make_core()
    results: list[PingResult] = []
    core.ping(PEER, 0.0, results.append)
    core.take_outgoing()
    deadline = core.next_deadline()
    assert deadline is not None
    while not results:
        deadline = core.next_deadline()
        assert deadline is not None and deadline < 30
        core.advance(deadline)
    assert results[0].ok is False and results[0].error == "timeout"


def test_status_is_json_friendly() -> None:
    import json

    core = make_core()
    ask(core, Ping())
    core.datagram_received(b"junk", PEER, 1.0)
    status = core.status(2.0)
    json.dumps(status)
    assert status["routing_table"]["nodes"] == 1
    assert status["storage"]["items"] == 0
    assert status["counters"]["queries_in"]["ping"] == 1


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_never_escape(data: bytes) -> None:
    core = make_core()
    core.datagram_received(data, PEER, 1.0)
    for out, _ in core.take_outgoing():
        assert isinstance(decode_message(out), ErrorReply)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_mutated_valid_messages_never_escape(data: st.DataObject) -> None:
    core = make_core()
    base = encode_message(Query(tid=b"ab", sender_id=PEER_ID, body=GetPeers(info_hash=b"\x33" * 20)))
    position = data.draw(st.integers(0, len(base) - 1))
    replacement = data.draw(st.binary(min_size=0, max_size=4))
    mutated = base[:position] + replacement + base[position + 1:]
    core.datagram_received(mutated, PEER, 1.0)
    for out, _ in core.take_outgoing():
        decode_message(out)


def test_a_lost_request_retried_and_answered_is_no_failure_against_the_node() -> None:
    """A lookup retries a slow node once; when the retry is answered, the first request is cancelled, so
    its timeout does not count against a node that answered (nor mark it questionable)."""
    core = make_core()
    peer_id = int.from_bytes(PEER_ID, "big")
    core.routing_table.heard_from(NodeInfo(peer_id, PEER), 0.0, responded=True)
    results: list[object] = []
    core.find_node(12345, 0.0, results.append)

    def queries_to_peer() -> list[Query]:
        sent = [decode_message(d) for d, a in core.take_outgoing() if a == PEER]
        return [m for m in sent if isinstance(m, Query)]

    first = queries_to_peer()
    assert len(first) == 1  # the only node we know; its datagram is "lost"
    now = 0.0
    retry: list[Query] = []
    while not retry:  # the short timeout passes: the same node is asked again
        deadline = core.next_deadline()
        assert deadline is not None and deadline < 5
        now = deadline
        core.advance(now)
        retry = queries_to_peer()
    assert retry[0].tid != first[0].tid and core.counters["lookup.retries"] == 1
    reply = Response(tid=retry[0].tid, sender_id=PEER_ID, values={b"nodes": b""})
    core.datagram_received(encode_message(reply), PEER, now + 0.01)
    assert len(results) == 1  # the lookup is done
    core.advance(now + 30.0)  # long past the first request's full timeout
    entry = core.routing_table.get(peer_id)
    assert entry is not None and entry.failures == 0
    assert core.counters["rpc.timeouts"] == 0
