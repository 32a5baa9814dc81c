"""KRPC messages: BEP 5 examples, envelope validation, optional fields, helpers and fuzzing."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kadnode.types import NodeInfo
from kadnode.wire.bencode import Raw, bdecode, bencode
from kadnode.wire.compact import encode_nodes
from kadnode.wire.krpc import (
    MAX_SEQ,
    MAX_TID_LEN,
    METHOD_UNKNOWN,
    PROTOCOL_ERROR,
    AnnouncePeer,
    ErrorReply,
    FindNode,
    Get,
    GetPeers,
    GossipReply,
    ItemReply,
    KnGossip,
    KrpcError,
    Message,
    Ping,
    Put,
    Query,
    Response,
    UnknownMethod,
    decode_message,
    encode_message,
    encode_response,
    response_gossip,
    response_item,
    response_nodes,
    response_peers,
    response_token,
)

ID_A = b"abcdefghij0123456789"
ID_M = b"mnopqrstuvwxyz123456"

# --- BEP 5 example packets ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe", Query(b"aa", ID_A, Ping())),
        (b"d1:rd2:id20:mnopqrstuvwxyz123456e1:t2:aa1:y1:re", Response(b"aa", ID_M, {b"id": ID_M})),
        (
            b"d1:ad2:id20:abcdefghij01234567896:target20:mnopqrstuvwxyz123456e1:q9:find_node1:t2:aa1:y1:qe",
            Query(b"aa", ID_A, FindNode(ID_M)),
        ),
        (
            b"d1:ad2:id20:abcdefghij01234567899:info_hash20:mnopqrstuvwxyz123456e1:q9:get_peers1:t2:aa1:y1:qe",
            Query(b"aa", ID_A, GetPeers(ID_M)),
        ),
        (
            b"d1:rd2:id20:abcdefghij01234567895:token8:aoeusnth6:valuesl6:axje.u6:idhtnmee1:t2:aa1:y1:re",
            Response(b"aa", ID_A, {b"id": ID_A, b"token": b"aoeusnth", b"values": [b"axje.u", b"idhtnm"]}),
        ),
        (
            b"d1:ad2:id20:abcdefghij01234567899:info_hash20:mnopqrstuvwxyz1234564:porti6881e5:token8:aoeusnthe"
            b"1:q13:announce_peer1:t2:aa1:y1:qe",
            Query(b"aa", ID_A, AnnouncePeer(ID_M, 6881, b"aoeusnth")),
        ),
        (
            b"d1:eli201e23:A Generic Error Ocurrede1:t2:aa1:y1:ee",
            ErrorReply(b"aa", 201, "A Generic Error Ocurred"),
        ),
    ],
)
def test_bep5_examples(data: bytes, message: Message) -> None:
    assert decode_message(data) == message
    assert encode_message(message) == data


def test_bep5_get_peers_response_helpers() -> None:
    data = b"d1:rd2:id20:abcdefghij01234567895:token8:aoeusnth6:valuesl6:axje.u6:idhtnmee1:t2:aa1:y1:re"
    resp = decode_message(data)
    assert isinstance(resp, Response)
    assert response_token(resp) == b"aoeusnth"
    assert response_peers(resp) == [("97.120.106.101", 11893), ("105.100.104.116", 28269)]
    assert response_nodes(resp) == []


def test_bep5_nodes_placeholder_is_rejected_by_helper() -> None:
    # The BEP's "def456..." stands in for real compact node info; 9 bytes is not a multiple of 26.
    resp = decode_message(b"d1:rd2:id20:0123456789abcdefghij5:nodes9:def456...e1:t2:aa1:y1:re")
    assert isinstance(resp, Response)
    with pytest.raises(KrpcError) as info:
        response_nodes(resp)
    assert (info.value.code, info.value.reason, info.value.tid) == (PROTOCOL_ERROR, "bad_nodes", b"aa")


# --- envelope and argument validation -------------------------------------------------------------------


def _query(method: bytes, **args: Any) -> dict[bytes, Any]:
    a = {b"id": ID_A, **{k.encode(): v for k, v in args.items()}}
    return {b"t": b"tx", b"y": b"q", b"q": method, b"a": a}


@pytest.mark.parametrize(
    ("msg", "reason", "tid", "msg_type"),
    [
        ([b"t", b"tx"], "not_dict", None, None),
        (b"tx", "not_dict", None, None),
        (7, "not_dict", None, None),
        ({b"y": b"q"}, "missing_field", None, None),
        ({b"t": 1, b"y": b"q"}, "bad_tid", None, None),
        ({b"t": b"", b"y": b"q"}, "bad_tid", None, None),
        ({b"t": b"x" * (MAX_TID_LEN + 1), b"y": b"q"}, "bad_tid", None, None),
        ({b"t": [b"tx"], b"y": b"q"}, "bad_tid", None, None),
        ({b"t": b"tx"}, "missing_field", b"tx", None),
        ({b"t": b"tx", b"y": b"x"}, "bad_message_type", b"tx", None),
        ({b"t": b"tx", b"y": b"qq"}, "bad_message_type", b"tx", None),
        ({b"t": b"tx", b"y": 1}, "bad_message_type", b"tx", None),
        # queries
        ({b"t": b"tx", b"y": b"q", b"a": {b"id": ID_A}}, "missing_field", b"tx", b"q"),
        ({b"t": b"tx", b"y": b"q", b"q": 1, b"a": {b"id": ID_A}}, "bad_method", b"tx", b"q"),
        ({b"t": b"tx", b"y": b"q", b"q": b"ping"}, "missing_field", b"tx", b"q"),
        ({b"t": b"tx", b"y": b"q", b"q": b"ping", b"a": [ID_A]}, "bad_args", b"tx", b"q"),
        ({b"t": b"tx", b"y": b"q", b"q": b"ping", b"a": {}}, "missing_field", b"tx", b"q"),
        ({b"t": b"tx", b"y": b"q", b"q": b"ping", b"a": {b"id": ID_A[:19]}}, "bad_id", b"tx", b"q"),
        ({b"t": b"tx", b"y": b"q", b"q": b"ping", b"a": {b"id": ID_A + b"x"}}, "bad_id", b"tx", b"q"),
        ({b"t": b"tx", b"y": b"q", b"q": b"ping", b"a": {b"id": 5}}, "bad_id", b"tx", b"q"),
        ({b"t": b"tx", b"y": b"q", b"q": b"unknown", b"a": {b"id": b"short"}}, "bad_id", b"tx", b"q"),
        (_query(b"find_node"), "missing_field", b"tx", b"q"),
        (_query(b"find_node", target=ID_M[:10]), "bad_target", b"tx", b"q"),
        (_query(b"find_node", target=1), "bad_target", b"tx", b"q"),
        (_query(b"get_peers"), "missing_field", b"tx", b"q"),
        (_query(b"get_peers", info_hash=b"x" * 21), "bad_info_hash", b"tx", b"q"),
        (_query(b"get_peers", info_hash=ID_M, noseed=b"1"), "bad_field", b"tx", b"q"),
        (_query(b"get_peers", info_hash=ID_M, scrape=[1]), "bad_field", b"tx", b"q"),
        (_query(b"announce_peer", port=1, token=b"t"), "missing_field", b"tx", b"q"),
        (_query(b"announce_peer", info_hash=ID_M, port=1), "missing_field", b"tx", b"q"),
        (_query(b"announce_peer", info_hash=ID_M, port=1, token=1), "bad_token", b"tx", b"q"),
        (_query(b"announce_peer", info_hash=ID_M, token=b"t"), "missing_field", b"tx", b"q"),
        (_query(b"announce_peer", info_hash=ID_M, port=-1, token=b"t"), "bad_port", b"tx", b"q"),
        (_query(b"announce_peer", info_hash=ID_M, port=65536, token=b"t"), "bad_port", b"tx", b"q"),
        (_query(b"announce_peer", info_hash=ID_M, port=b"80", token=b"t"), "bad_port", b"tx", b"q"),
        (
            _query(b"announce_peer", info_hash=ID_M, port=80, token=b"t", implied_port=b"1"),
            "bad_field",
            b"tx",
            b"q",
        ),
        (_query(b"announce_peer", info_hash=ID_M, port=80, token=b"t", seed=b"1"), "bad_field", b"tx", b"q"),
        # responses
        ({b"t": b"tx", b"y": b"r"}, "missing_field", b"tx", b"r"),
        ({b"t": b"tx", b"y": b"r", b"r": b"x"}, "bad_response", b"tx", b"r"),
        ({b"t": b"tx", b"y": b"r", b"r": {}}, "missing_field", b"tx", b"r"),
        ({b"t": b"tx", b"y": b"r", b"r": {b"id": b"x"}}, "bad_id", b"tx", b"r"),
        # errors
        ({b"t": b"tx", b"y": b"e"}, "missing_field", b"tx", b"e"),
        ({b"t": b"tx", b"y": b"e", b"e": 201}, "bad_error", b"tx", b"e"),
        ({b"t": b"tx", b"y": b"e", b"e": []}, "bad_error", b"tx", b"e"),
        ({b"t": b"tx", b"y": b"e", b"e": [201]}, "bad_error", b"tx", b"e"),
        ({b"t": b"tx", b"y": b"e", b"e": [b"201", b"x"]}, "bad_error", b"tx", b"e"),
        ({b"t": b"tx", b"y": b"e", b"e": [201, 5]}, "bad_error", b"tx", b"e"),
        ({b"t": b"tx", b"y": b"e", b"e": [201, b"x", b"extra"]}, "bad_error", b"tx", b"e"),
    ],
)
def test_rejects(msg: Any, reason: str, tid: bytes | None, msg_type: bytes | None) -> None:
    with pytest.raises(KrpcError) as info:
        decode_message(bencode(msg))
    err = info.value
    assert (err.code, err.reason, err.tid, err.msg_type) == (PROTOCOL_ERROR, reason, tid, msg_type)
    assert err.message


@pytest.mark.parametrize(
    "data", [b"", b"d1:t2:aa1:y1:q", b"d1:y1:q1:t2:aae", b"l" * 20 + b"e" * 20, b"d1:t2:aa1:y1:qe\x00"]
)
def test_bad_bencode_has_no_tid(data: bytes) -> None:
    with pytest.raises(KrpcError) as info:
        decode_message(data)
    assert (info.value.code, info.value.reason, info.value.tid) == (PROTOCOL_ERROR, "bad_bencode", None)
    assert isinstance(info.value.__cause__, ValueError)


def test_limits_are_passed_to_the_decoder() -> None:
    data = encode_message(Response(b"aa", ID_A, {b"values": [b"abcdef"] * 10}))
    assert isinstance(decode_message(data), Response)
    with pytest.raises(KrpcError) as info:
        decode_message(data, max_items=10)
    assert info.value.reason == "bad_bencode"
    with pytest.raises(KrpcError):
        decode_message(data, max_depth=2)
    assert isinstance(decode_message(data, max_depth=3), Response)


def test_krpc_error_str() -> None:
    err = KrpcError(PROTOCOL_ERROR, "missing 'a'", b"aa", "missing_field")
    assert str(err) == "203 missing 'a'"
    assert err.msg_type is None


# --- optional fields ---------------------------------------------------------------------------------


def test_get_peers_flags() -> None:
    q = decode_message(bencode(_query(b"get_peers", info_hash=ID_M, noseed=1, scrape=1)))
    assert isinstance(q, Query)
    assert q.body == GetPeers(ID_M, noseed=True, scrape=True)
    q = decode_message(bencode(_query(b"get_peers", info_hash=ID_M, noseed=0, scrape=0)))
    assert isinstance(q, Query)
    assert q.body == GetPeers(ID_M)


def test_announce_implied_port() -> None:
    q = decode_message(bencode(_query(b"announce_peer", info_hash=ID_M, token=b"t", implied_port=1)))
    assert isinstance(q, Query)
    assert q.body == AnnouncePeer(ID_M, 0, b"t", implied_port=True)
    for port in (-5, 70000, b"x", [1]):
        q = decode_message(
            bencode(_query(b"announce_peer", info_hash=ID_M, token=b"t", implied_port=1, port=port))
        )
        assert isinstance(q, Query)
        assert q.body == AnnouncePeer(ID_M, 0, b"t", implied_port=True)
    q = decode_message(
        bencode(_query(b"announce_peer", info_hash=ID_M, token=b"", port=0, implied_port=0, seed=1))
    )
    assert isinstance(q, Query)
    assert q.body == AnnouncePeer(ID_M, 0, b"", implied_port=False, seed=True)


def test_unknown_method_target() -> None:
    def body(**args: Any) -> Any:
        q = decode_message(bencode(_query(b"sample_infohashes", **args)))
        assert isinstance(q, Query)
        return q.body

    assert body(target=ID_M) == UnknownMethod(b"sample_infohashes", ID_M)
    assert body(info_hash=ID_M) == UnknownMethod(b"sample_infohashes", ID_M)
    assert body(target=ID_M, info_hash=b"z" * 20) == UnknownMethod(b"sample_infohashes", ID_M)
    assert body(target=b"short", info_hash=b"z" * 20) == UnknownMethod(b"sample_infohashes", b"z" * 20)
    assert body(target=5) == UnknownMethod(b"sample_infohashes", None)
    assert body() == UnknownMethod(b"sample_infohashes", None)
    assert body().method == b"sample_infohashes"
    assert METHOD_UNKNOWN == 204


def test_method_names() -> None:
    assert [Ping().method, FindNode(ID_M).method, GetPeers(ID_M).method, AnnouncePeer(ID_M, 1, b"t").method] == [
        b"ping",
        b"find_node",
        b"get_peers",
        b"announce_peer",
    ]
    assert FindNode(ID_M).method == b"find_node"


def test_version_read_only_and_extra_keys() -> None:
    msg = _query(b"ping")
    msg[b"v"] = b"LT\x01\x02"
    msg[b"ro"] = 1
    msg[b"zz"] = [1, {b"nested": b"x"}]
    msg[b"a"][b"future"] = b"ok"
    q = decode_message(bencode(msg))
    assert q == Query(b"tx", ID_A, Ping(), version=b"LT\x01\x02", read_only=True)
    msg[b"ro"] = 0
    assert decode_message(bencode(msg)) == Query(b"tx", ID_A, Ping(), version=b"LT\x01\x02")
    msg[b"ro"] = b"1"
    msg[b"v"] = 12
    assert decode_message(bencode(msg)) == Query(b"tx", ID_A, Ping())


def test_response_ip_is_decoded_or_ignored() -> None:
    base: dict[bytes, Any] = {b"t": b"aa", b"y": b"r", b"r": {b"id": ID_A}}
    resp = decode_message(bencode({**base, b"ip": b"\x7f\x00\x00\x05\x1a\xe1"}))
    assert isinstance(resp, Response)
    assert resp.ip == ("127.0.0.5", 6881)
    for bad in (b"\x7f\x00\x00\x05\x1a", b"\x00" * 18, 5, [b"x"]):
        resp = decode_message(bencode({**base, b"ip": bad}))
        assert isinstance(resp, Response)
        assert resp.ip is None


def test_error_message_invalid_utf8_is_replaced() -> None:
    err = decode_message(bencode({b"t": b"aa", b"y": b"e", b"e": [202, b"bad \xff byte"], b"v": b"UT"}))
    assert err == ErrorReply(b"aa", 202, "bad \ufffd byte", version=b"UT")


def test_encoder_includes_optional_fields_only_when_set() -> None:
    assert encode_message(Query(b"aa", ID_A, Ping())) == b"d1:ad2:id20:" + ID_A + b"e1:q4:ping1:t2:aa1:y1:qe"
    ro = encode_message(Query(b"aa", ID_A, Ping(), version=b"KN\x00\x01", read_only=True))
    assert ro == b"d1:ad2:id20:" + ID_A + b"e1:q4:ping2:roi1e1:t2:aa1:v4:KN\x00\x011:y1:qe"
    resp = encode_message(Response(b"aa", ID_A, {}, ip=("127.0.0.1", 1)))
    assert resp == b"d2:ip6:\x7f\x00\x00\x01\x00\x011:rd2:id20:" + ID_A + b"e1:t2:aa1:y1:re"
    announce = encode_message(Query(b"aa", ID_A, AnnouncePeer(ID_M, 1, b"k")))
    assert b"implied_port" not in announce
    assert b"seed" not in announce
    announce = encode_message(Query(b"aa", ID_A, AnnouncePeer(ID_M, 0, b"k", implied_port=True, seed=True)))
    assert b"12:implied_porti1e" in announce
    assert b"4:seedi1e" in announce
    peers = encode_message(Query(b"aa", ID_A, GetPeers(ID_M)))
    assert b"noseed" not in peers
    assert b"scrape" not in peers
    assert b"target" not in encode_message(Query(b"aa", ID_A, UnknownMethod(b"x", None)))


def test_encode_rejects_non_messages() -> None:
    with pytest.raises(TypeError):
        encode_message(Ping())  # type: ignore[arg-type]


def test_response_id_comes_from_sender_id() -> None:
    resp = Response(b"aa", ID_A, {b"token": b"k"})
    assert resp.values == {b"id": ID_A, b"token": b"k"}
    assert Response(b"aa", ID_A, {b"id": ID_A}) == Response(b"aa", ID_A, {})
    with pytest.raises(ValueError, match="sender_id"):
        Response(b"aa", ID_A, {b"id": ID_M})


# --- response helpers -------------------------------------------------------------------------------


def test_response_helpers() -> None:
    nodes = [NodeInfo(1, ("127.0.0.2", 6881)), NodeInfo(2**160 - 1, ("127.0.0.3", 1))]
    resp = Response(
        b"aa",
        ID_A,
        {
            b"nodes": encode_nodes(nodes),
            b"token": b"tok",
            b"values": [b"\x7f\x00\x00\x04\x00\x50", b"short", 7, [b"x"], b"\x7f\x00\x00\x05\x00\x51"],
        },
    )
    assert response_nodes(resp) == nodes
    assert response_token(resp) == b"tok"
    assert response_peers(resp) == [("127.0.0.4", 80), ("127.0.0.5", 81)]
    empty = Response(b"aa", ID_A, {})
    assert (response_nodes(empty), response_peers(empty), response_token(empty)) == ([], [], None)


@pytest.mark.parametrize(
    ("values", "helper", "reason"),
    [
        ({b"nodes": [b"x" * 26]}, response_nodes, "bad_nodes"),
        ({b"nodes": 5}, response_nodes, "bad_nodes"),
        ({b"nodes": b"x" * 27}, response_nodes, "bad_nodes"),
        ({b"values": b"\x7f\x00\x00\x04\x00\x50"}, response_peers, "bad_values"),
        ({b"values": {b"a": b"b"}}, response_peers, "bad_values"),
        ({b"token": 5}, response_token, "bad_token"),
        ({b"token": [b"x"]}, response_token, "bad_token"),
    ],
)
def test_response_helpers_reject(values: dict[bytes, Any], helper: Any, reason: str) -> None:
    with pytest.raises(KrpcError) as info:
        helper(Response(b"zz", ID_A, values))
    assert (info.value.code, info.value.reason, info.value.tid) == (PROTOCOL_ERROR, reason, b"zz")


# --- BEP 44 get / put ----------------------------------------------------------------------------------

KEY32 = bytes(range(32))
SIG64 = bytes(range(64))


def test_get_encoding() -> None:
    assert encode_message(Query(b"aa", ID_A, Get(ID_M))) == (
        b"d1:ad2:id20:" + ID_A + b"6:target20:" + ID_M + b"e1:q3:get1:t2:aa1:y1:qe"
    )
    data = b"d1:ad2:id20:" + ID_A + b"3:seqi4e6:target20:" + ID_M + b"e1:q3:get1:t2:aa1:y1:qe"
    assert encode_message(Query(b"aa", ID_A, Get(ID_M, seq=4))) == data
    assert decode_message(data) == Query(b"aa", ID_A, Get(ID_M, seq=4))
    assert Get(ID_M).method == b"get" and Put(b"t", b"1:v").method == b"put"


def test_put_encoding_follows_the_bep() -> None:
    immutable = b"d1:ad2:id20:" + ID_A + b"5:token3:tok1:v12:Hello World!e1:q3:put1:t2:aa1:y1:qe"
    assert encode_message(Query(b"aa", ID_A, Put(b"tok", b"12:Hello World!"))) == immutable
    assert decode_message(immutable) == Query(b"aa", ID_A, Put(b"tok", b"12:Hello World!"))
    mutable = (
        b"d1:ad3:casi3e2:id20:" + ID_A + b"1:k32:" + KEY32 + b"4:salt6:foobar3:seqi4e3:sig64:" + SIG64
        + b"5:token3:tok1:vli1eee1:q3:put1:t2:aa1:y1:qe"
    )
    body = Put(b"tok", b"li1ee", KEY32, b"foobar", 4, SIG64, cas=3)
    assert encode_message(Query(b"aa", ID_A, body)) == mutable
    assert decode_message(mutable) == Query(b"aa", ID_A, body)
    unsalted = encode_message(Query(b"aa", ID_A, Put(b"tok", b"li1ee", KEY32, b"", 4, SIG64)))
    assert b"salt" not in unsalted and b"cas" not in unsalted


@pytest.mark.parametrize(
    "value",
    [b"i0e", b"i-42e", b"0:", b"le", b"de", b"d1:ad1:bli1e0:eee", b"l" * 5 + b"e" * 5, b"3:\x00\xffv"],
)
def test_put_value_is_the_bytes_as_sent(value: bytes) -> None:
    data = b"d1:ad2:id20:" + ID_A + b"5:token0:1:v" + value + b"e1:q3:put1:t2:aa1:y1:qe"
    q = decode_message(data)
    assert isinstance(q, Query) and isinstance(q.body, Put)
    assert q.body.value == value
    assert encode_message(q) == data


def test_put_decoder_leaves_limits_to_the_core() -> None:
    # Long salts (207) and big values (205) are the core's to refuse with the right code.
    body = Put(b"t", bencode(b"x" * 1500), KEY32, b"s" * 300, MAX_SEQ, SIG64, cas=-1)
    q = decode_message(encode_message(Query(b"aa", ID_A, body)))
    assert isinstance(q, Query) and q.body == body
    extras = Put(b"t", b"i1e", None, b"salt", 0, SIG64)  # immutable: kept as sent, ignored by the core
    assert decode_message(encode_message(Query(b"aa", ID_A, extras))) == Query(b"aa", ID_A, extras)


_PUT_OK = {"token": b"tok", "v": b"x", "k": KEY32, "seq": 1, "sig": SIG64}


def _put(**changes: Any) -> dict[bytes, Any]:
    args = {k: v for k, v in {**_PUT_OK, **changes}.items() if v is not None}
    return _query(b"put", **args)


@pytest.mark.parametrize(
    ("msg", "reason"),
    [
        (_query(b"get"), "missing_field"),
        (_query(b"get", target=ID_M[:19]), "bad_target"),
        (_query(b"get", target=[ID_M]), "bad_target"),
        (_query(b"get", target=ID_M, seq=b"1"), "bad_seq"),
        (_put(token=None), "missing_field"),
        (_put(token=5), "bad_token"),
        (_put(v=None), "missing_field"),
        (_put(k=KEY32[:31]), "bad_key"),
        (_put(k=KEY32 + b"x"), "bad_key"),
        (_put(k=1), "bad_key"),
        (_put(seq=None), "missing_field"),
        (_put(sig=None), "missing_field"),
        (_put(seq=None, sig=None), "missing_field"),
        (_put(seq=-1), "bad_seq"),
        (_put(seq=MAX_SEQ + 1), "bad_seq"),
        (_put(seq=b"1"), "bad_seq"),
        (_put(sig=SIG64[:63]), "bad_signature"),
        (_put(sig=[SIG64]), "bad_signature"),
        (_put(salt=5), "bad_salt"),
        (_put(salt=[b"x"]), "bad_salt"),
        (_put(cas=b"1"), "bad_cas"),
        (_put(k=None, seq=b"1"), "bad_seq"),
        (_put(k=None, sig=b"short"), "bad_signature"),
    ],
)
def test_bep44_rejects(msg: dict[bytes, Any], reason: str) -> None:
    with pytest.raises(KrpcError) as info:
        decode_message(bencode(msg))
    err = info.value
    assert (err.code, err.reason, err.tid, err.msg_type) == (PROTOCOL_ERROR, reason, b"tx", b"q")


def test_response_with_raw_item_value() -> None:
    value = b"d4:listli1ei2ee4:name7:kadnodee"
    resp = Response(b"aa", ID_A, {b"v": Raw(value), b"k": KEY32, b"seq": 7, b"sig": SIG64, b"token": b"t"})
    assert response_item(resp) == ItemReply(value, KEY32, 7, SIG64)
    data = encode_message(resp)
    assert b"1:v" + value + b"e" in data
    decoded = decode_message(data)
    assert isinstance(decoded, Response)
    assert decoded.values[b"v"] == bdecode(value) == {b"list": [1, 2], b"name": b"kadnode"}
    assert response_item(decoded) == ItemReply(value, KEY32, 7, SIG64)
    assert encode_message(decoded) == data
    assert decoded != resp  # Raw vs decoded value; the bytes on the wire are what matter
    assert response_item(Response(b"aa", ID_A, {})) == ItemReply(None, None, None, None)
    assert response_item(Response(b"aa", ID_A, {b"seq": 3})) == ItemReply(None, None, 3, None)
    zero = decode_message(encode_message(Response(b"aa", ID_A, {b"v": Raw(b"i0e")})))
    assert isinstance(zero, Response) and response_item(zero).value == b"i0e"


@pytest.mark.parametrize(
    ("values", "reason"),
    [
        ({b"k": KEY32[:31]}, "bad_key"),
        ({b"k": 5}, "bad_key"),
        ({b"seq": b"1"}, "bad_seq"),
        ({b"seq": -1}, "bad_seq"),
        ({b"seq": MAX_SEQ + 1}, "bad_seq"),
        ({b"sig": SIG64 + b"x"}, "bad_signature"),
        ({b"sig": [SIG64]}, "bad_signature"),
    ],
)
def test_response_item_rejects(values: dict[bytes, Any], reason: str) -> None:
    with pytest.raises(KrpcError) as info:
        response_item(Response(b"zz", ID_A, {b"v": b"x", **values}))
    assert (info.value.code, info.value.reason, info.value.tid) == (PROTOCOL_ERROR, reason, b"zz")


# --- properties -------------------------------------------------------------------------------------

_id20 = st.binary(min_size=20, max_size=20)
_tid = st.binary(min_size=1, max_size=MAX_TID_LEN)
_version = st.none() | st.binary(max_size=4)
_known = {b"ping", b"find_node", b"get_peers", b"announce_peer", b"get", b"put"}
_ipv4 = st.lists(st.integers(0, 255), min_size=4, max_size=4).map(lambda q: ".".join(map(str, q)))
_leaf = st.integers(-(2**63), 2**63 - 1) | st.binary(max_size=30)
_value = st.recursive(
    _leaf,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.binary(max_size=6), children, max_size=4)
    ),
    max_leaves=12,
)
_seq = st.none() | st.integers(0, MAX_SEQ)
_puts = st.one_of(
    st.builds(  # immutable, possibly with the meaningless extras kept as sent
        Put,
        st.binary(max_size=20),
        _value.map(bencode),
        st.none(),
        st.binary(max_size=80),
        _seq,
        st.none() | st.binary(min_size=64, max_size=64),
        st.none() | st.integers(-(2**63), 2**63),
    ),
    st.builds(
        Put,
        st.binary(max_size=20),
        _value.map(bencode),
        st.binary(min_size=32, max_size=32),
        st.binary(max_size=80),
        st.integers(0, MAX_SEQ),
        st.binary(min_size=64, max_size=64),
        st.none() | st.integers(-(2**63), 2**63),
    ),
)
_bodies = st.one_of(
    st.just(Ping()),
    st.builds(FindNode, _id20),
    st.builds(GetPeers, _id20, st.booleans(), st.booleans()),
    st.builds(
        AnnouncePeer, _id20, st.integers(0, 65535), st.binary(max_size=20), st.booleans(), st.booleans()
    ),
    st.builds(UnknownMethod, st.binary(max_size=20).filter(lambda m: m not in _known), st.none() | _id20),
    st.builds(Get, _id20, st.none() | st.integers(-(2**63), 2**63)),
    _puts,
)
_queries = st.builds(Query, _tid, _id20, _bodies, _version, st.booleans())
_responses = st.builds(
    Response,
    _tid,
    _id20,
    st.dictionaries(st.sampled_from([b"nodes", b"token", b"values", b"v", b"x", b"zz"]), _value, max_size=4),
    _version,
    st.none() | st.tuples(_ipv4, st.integers(0, 65535)),
)
_errors = st.builds(ErrorReply, _tid, st.integers(-(2**63), 2**63 - 1), st.text(max_size=40), _version)
_messages = st.one_of(_queries, _responses, _errors)


@given(_messages)
def test_round_trip(msg: Message) -> None:
    data = encode_message(msg)
    assert decode_message(data) == msg
    assert encode_message(decode_message(data)) == data


@given(_value, st.none() | st.binary(min_size=32, max_size=32), _seq)
def test_item_values_come_back_verbatim(value: Any, key: bytes | None, seq: int | None) -> None:
    raw = bencode(value)
    resp = Response(b"aa", ID_A, {b"v": Raw(raw), b"k": key, b"seq": seq, b"sig": SIG64 if key else None})
    resp = Response(b"aa", ID_A, {k: v for k, v in resp.values.items() if v is not None})
    decoded = decode_message(encode_message(resp))
    assert isinstance(decoded, Response)
    assert decoded.values[b"v"] == value
    assert response_item(decoded) == response_item(resp) == ItemReply(raw, key, seq, SIG64 if key else None)


@given(st.binary(max_size=300))
def test_random_bytes_message_or_krpc_error(data: bytes) -> None:
    try:
        msg = decode_message(data)
    except KrpcError as exc:
        assert exc.code == PROTOCOL_ERROR
        assert exc.tid is None or 0 < len(exc.tid) <= MAX_TID_LEN
    else:
        assert isinstance(msg, Query | Response | ErrorReply)


@settings(max_examples=500)
@given(_messages, st.data())
def test_mutated_messages_message_or_krpc_error(msg: Message, data: st.DataObject) -> None:
    raw = bytearray(encode_message(msg))
    for _ in range(data.draw(st.integers(1, 3))):
        op = data.draw(st.sampled_from(["flip", "insert", "delete", "truncate", "replace"]))
        i = data.draw(st.integers(0, len(raw)))
        if op == "flip" and i < len(raw):
            raw[i] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "insert":
            raw[i:i] = data.draw(st.binary(min_size=1, max_size=4))
        elif op == "delete" and i < len(raw):
            del raw[i : i + data.draw(st.integers(1, 4))]
        elif op == "truncate":
            del raw[i:]
        elif op == "replace" and i < len(raw):
            raw[i] = data.draw(st.sampled_from(list(b"ilde0123456789:-")))
    try:
        decoded = decode_message(bytes(raw))
    except KrpcError as exc:
        assert exc.code == PROTOCOL_ERROR
        return
    assert isinstance(decoded, Query | Response | ErrorReply)
    encode_message(decoded)  # whatever we accept we can also send back out


@settings(max_examples=500)
@given(_puts, st.data())
def test_mutated_puts_put_or_krpc_error(body: Put, data: st.DataObject) -> None:
    raw = bytearray(encode_message(Query(b"tx", ID_A, body)))
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(0, len(raw) - 1))
        op = data.draw(st.sampled_from(["flip", "replace", "delete"]))
        if op == "flip":
            raw[i] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "replace":
            raw[i] = data.draw(st.sampled_from(list(b"ilde0123456789:-")))
        else:
            del raw[i : i + data.draw(st.integers(1, 4))]
        if not raw:
            break
    try:
        decoded = decode_message(bytes(raw))
    except KrpcError as exc:
        assert exc.code == PROTOCOL_ERROR
        return
    if isinstance(decoded, Query) and isinstance(decoded.body, Put):
        put = decoded.body
        assert bencode(bdecode(put.value, max_depth=10)) == put.value  # still one canonical value
        assert put.public_key is None or (put.seq is not None and put.signature is not None)
    assert decode_message(encode_message(decoded)) == decoded


# --- the direct encoder writes what bencode of the message dict would --------------------------------


@pytest.mark.parametrize(
    ("msg", "as_dict"),
    [
        (
            Query(b"t1", ID_A, FindNode(ID_M), version=b"KN\x00\x01", read_only=True),
            {b"a": {b"id": ID_A, b"target": ID_M}, b"q": b"find_node", b"ro": 1, b"t": b"t1",
             b"v": b"KN\x00\x01", b"y": b"q"},
        ),
        (
            Query(b"t2", ID_A, UnknownMethod(b"vote", None)),
            {b"a": {b"id": ID_A}, b"q": b"vote", b"t": b"t2", b"y": b"q"},
        ),
        (
            Response(b"t3", ID_M, {b"nodes": b"", b"token": b"tok", b"values": [b"abcdef"]}, version=b"LT\x01\x02",
                     ip=("127.0.0.9", 6881)),
            {b"ip": b"\x7f\x00\x00\x09\x1a\xe1", b"r": {b"id": ID_M, b"nodes": b"", b"token": b"tok",
                                                        b"values": [b"abcdef"]},
             b"t": b"t3", b"v": b"LT\x01\x02", b"y": b"r"},
        ),
        (
            ErrorReply(b"t4", 203, "bad \u00e9", version=b"KN\x00\x01"),
            {b"e": [203, "bad \u00e9".encode()], b"t": b"t4", b"v": b"KN\x00\x01", b"y": b"e"},
        ),
    ],
)
def test_encode_message_matches_bencode_of_the_dict(msg: Message, as_dict: dict[bytes, Any]) -> None:
    data = encode_message(msg)
    assert data == bencode(as_dict)
    assert decode_message(data) == msg


def test_encode_message_refuses_other_values() -> None:
    with pytest.raises(TypeError):
        encode_message(Ping())  # type: ignore[arg-type]


@pytest.mark.parametrize("version", [None, b"KN\x00\x01"])
@pytest.mark.parametrize("ip", [None, ("127.0.0.9", 6881)])
def test_encode_response_is_encode_message_of_a_response(version: bytes | None, ip: tuple[str, int] | None) -> None:
    values = {b"id": ID_M, b"nodes": b"x" * 26, b"token": b"tok"}
    expected = encode_message(Response(tid=b"tx", sender_id=ID_M, values=dict(values), version=version, ip=ip))
    assert encode_response(b"tx", values, version, ip) == expected


# --- kn_gossip (kadnode's liveness gossip) --------------------------------------------------------


def test_kn_gossip_round_trips() -> None:
    body = KnGossip(7, b"c" * 31, b"n" * 26, 400)
    data = encode_message(Query(b"aa", ID_A, body))
    assert decode_message(data) == Query(b"aa", ID_A, body)
    assert decode_message(encode_message(Query(b"aa", ID_A, KnGossip(0)))) == Query(b"aa", ID_A, KnGossip(0))
    assert body.method == b"kn_gossip"


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        ({}, "missing_field"),
        ({b"inc": -1}, "bad_incarnation"),
        ({b"inc": 2**32}, "bad_incarnation"),
        ({b"inc": b"1"}, "bad_incarnation"),
        ({b"inc": 1, b"c": 5}, "bad_claims"),
        ({b"inc": 1, b"p": b"x" * 25}, "bad_probe"),
        ({b"inc": 1, b"p": b"x" * 26, b"pt": -1}, "bad_probe"),
        ({b"inc": 1, b"p": b"x" * 26, b"pt": 60_001}, "bad_probe"),
        ({b"inc": 1, b"pt": b"fast"}, "bad_probe"),
    ],
)
def test_malformed_kn_gossip_is_refused_with_a_reason(args: dict[bytes, object], reason: str) -> None:
    data = bencode({b"a": {b"id": ID_A, **args}, b"q": b"kn_gossip", b"t": b"aa", b"y": b"q"})
    with pytest.raises(KrpcError) as info:
        decode_message(data)
    assert (info.value.reason, info.value.tid, info.value.msg_type) == (reason, b"aa", b"q")


def test_response_gossip_reads_and_checks_the_reply_fields() -> None:
    def reply(**values: object) -> Response:
        return Response(b"aa", ID_A, {k.encode(): v for k, v in values.items()})

    assert response_gossip(reply(inc=5, c=b"", pa=1)) == GossipReply(5, b"", True)
    assert response_gossip(reply()) == GossipReply(None, b"", None)  # a node that does not gossip
    for bad in (reply(inc=-1), reply(inc=b"5"), reply(c=3), reply(pa=b"1")):
        with pytest.raises(KrpcError):
            response_gossip(bad)


def test_claims_piggybacked_on_other_queries_round_trip_and_a_bad_one_is_dropped() -> None:
    query = Query(b"aa", ID_A, FindNode(ID_A), claims=b"c" * 31)
    data = encode_message(query)
    decoded: Any = bdecode(data)
    assert decoded[b"a"][b"kn_c"] == b"c" * 31
    assert decode_message(data) == query
    not_a_string = bencode({b"a": {b"id": ID_A, b"kn_c": 7}, b"q": b"ping", b"t": b"aa", b"y": b"q"})
    assert decode_message(not_a_string) == Query(b"aa", ID_A, Ping())  # the query stands, the claims go
    # kn_gossip carries its claims in `c`: a `kn_c` there is not read twice.
    doubled = bencode({b"a": {b"id": ID_A, b"inc": 1, b"kn_c": b"x" * 31}, b"q": b"kn_gossip", b"t": b"aa",
                       b"y": b"q"})
    assert decode_message(doubled) == Query(b"aa", ID_A, KnGossip(1))
