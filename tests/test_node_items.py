"""NodeCore answering BEP 44 get / put: what it stores, and every way a hostile write is refused."""

from __future__ import annotations

import random

import pytest

from kadnode.core.bep44 import SigningKey, immutable_target, make_mutable, mutable_target
from kadnode.core.node import NodeCore
from kadnode.settings import Settings
from kadnode.storage.base import ImmutableItem, MutableItem
from kadnode.types import Addr
from kadnode.wire.bencode import bdecode, bencode
from kadnode.wire.krpc import ErrorReply, Get, Message, Put, Query, Response, decode_message, encode_message

PEER: Addr = ("127.0.0.3", 7000)
PEER_ID = bytes(range(20))
KEY = SigningKey(bytes(range(32)))


def make_core(**changes: object) -> NodeCore:
    rng = random.Random(1)
    return NodeCore(rng.getrandbits(160), Settings().with_changes(**changes), rng, now=0.0)


def ask(core: NodeCore, body: object, *, src: Addr = PEER, now: float = 1.0) -> Message:
    core.datagram_received(encode_message(Query(tid=b"tx", sender_id=PEER_ID, body=body)), src, now)  # type: ignore[arg-type]
    replies = [decode_message(d) for d, a in core.take_outgoing() if a == src]
    replies = [m for m in replies if m.tid == b"tx"]
    assert len(replies) == 1
    return replies[0]


def token(core: NodeCore, target: bytes, src: Addr = PEER, now: float = 1.0) -> bytes:
    reply = ask(core, Get(target=target), src=src, now=now)
    assert isinstance(reply, Response)
    value = reply.values[b"token"]
    assert isinstance(value, bytes)
    return value


def put_mutable(core: NodeCore, value: bytes, seq: int, *, salt: bytes = b"", cas: int | None = None,
                src: Addr = PEER, now: float = 1.0, key: SigningKey = KEY) -> Message:
    item = make_mutable(key, value, seq, salt)
    body = Put(token=token(core, item.target, src, now), value=item.value, public_key=item.public_key,
               salt=salt, seq=seq, signature=item.signature, cas=cas)
    return ask(core, body, src=src, now=now)


def error_code(message: Message) -> int:
    assert isinstance(message, ErrorReply), message
    return message.code


def test_immutable_put_then_get_returns_the_value_verbatim() -> None:
    core = make_core()
    value = bencode([b"hello", 42, {b"a": b"b"}])
    target = immutable_target(value)
    reply = ask(core, Put(token=token(core, target), value=value))
    assert isinstance(reply, Response)
    reply = ask(core, Get(target=target))
    assert isinstance(reply, Response)
    assert bencode(reply.values[b"v"]) == value
    assert b"token" in reply.values and b"nodes" in reply.values
    assert core.storage.get_item(target, 2.0) == ImmutableItem(target, value)


def test_mutable_put_then_get_returns_key_seq_and_signature() -> None:
    core = make_core()
    assert isinstance(put_mutable(core, bencode(b"v1"), 1, salt=b"name"), Response)
    target = mutable_target(KEY.public_key, b"name")
    reply = ask(core, Get(target=target))
    assert isinstance(reply, Response)
    assert reply.values[b"k"] == KEY.public_key
    assert reply.values[b"seq"] == 1
    assert bdecode(bencode(reply.values[b"v"])) == b"v1"
    # BEP 44: with `seq` in the get, the value is sent only if the stored one is newer.
    reply = ask(core, Get(target=target, seq=1))
    assert isinstance(reply, Response)
    assert reply.values[b"seq"] == 1 and b"v" not in reply.values and b"sig" not in reply.values


def test_higher_seq_replaces_and_stale_seq_is_refused_with_302() -> None:
    core = make_core()
    assert isinstance(put_mutable(core, bencode(b"v2"), 2), Response)
    assert error_code(put_mutable(core, bencode(b"v1"), 1)) == 302
    assert error_code(put_mutable(core, bencode(b"other"), 2)) == 302  # same seq, different value
    assert isinstance(put_mutable(core, bencode(b"v2"), 2), Response)  # same seq and value: refresh
    assert isinstance(put_mutable(core, bencode(b"v3"), 3), Response)
    item = core.storage.get_item(mutable_target(KEY.public_key), 2.0)
    assert isinstance(item, MutableItem) and item.seq == 3
    assert core.counters["refused.put_302"] == 2


def test_cas_mismatch_is_refused_with_301() -> None:
    core = make_core()
    assert isinstance(put_mutable(core, bencode(b"v1"), 1), Response)
    assert error_code(put_mutable(core, bencode(b"v2"), 2, cas=5)) == 301
    assert isinstance(put_mutable(core, bencode(b"v2"), 2, cas=1), Response)


def test_bad_signature_is_refused_with_206() -> None:
    core = make_core()
    item = make_mutable(KEY, bencode(b"v1"), 1)
    forged = bytes([item.signature[0] ^ 1]) + item.signature[1:]
    body = Put(token=token(core, item.target), value=item.value, public_key=item.public_key, seq=1,
               signature=forged)
    assert error_code(ask(core, body)) == 206
    # A valid signature by another key over the same target's data does not verify either.
    other = make_mutable(SigningKey(bytes(32)), bencode(b"v1"), 1)
    body = Put(token=token(core, item.target), value=item.value, public_key=item.public_key, seq=1,
               signature=other.signature)
    assert error_code(ask(core, body)) == 206
    assert core.storage.get_item(item.target, 2.0) is None


def test_oversized_value_and_salt_are_refused_with_205_and_207() -> None:
    core = make_core(max_datagram_size=4096, bencode_max_items=5000)
    big = bencode(b"x" * 1001)
    assert error_code(ask(core, Put(token=token(core, immutable_target(big)), value=big))) == 205
    assert error_code(put_mutable(core, bencode(b"v"), 1, salt=b"s" * 65)) == 207
    assert core.storage.stats(2.0).items == 0


@pytest.mark.parametrize("bad_token", [b"", b"forged!!", None])
def test_missing_forged_or_expired_tokens_are_refused(bad_token: bytes | None) -> None:
    core = make_core()
    value = bencode(b"data")
    if bad_token is None:  # a real token, used after it expired (5-10 minutes)
        bad_token = token(core, immutable_target(value), now=1.0)
        reply = ask(core, Put(token=bad_token, value=value), now=1.0 + 11 * 60)
    else:
        reply = ask(core, Put(token=bad_token, value=value))
    assert error_code(reply) == 203
    assert core.counters["refused.bad_token"] == 1
    assert core.storage.stats(2.0).items == 0


def test_token_is_bound_to_the_requesting_ip() -> None:
    core = make_core()
    value = bencode(b"data")
    stolen = token(core, immutable_target(value), src=("127.0.0.4", 7000))
    assert error_code(ask(core, Put(token=stolen, value=value))) == 203


def test_a_flood_of_puts_never_grows_the_store_past_its_caps() -> None:
    core = make_core(max_items=40, max_items_per_ip=15, rate_limit_per_second=0)
    accepted = refused = 0
    for i in range(200):
        src = (f"127.0.1.{i % 5}", 7000)  # five flooding IPs
        value = bencode(b"item %d" % i)
        reply = ask(core, Put(token=token(core, immutable_target(value), src), value=value), src=src)
        if isinstance(reply, Response):
            accepted += 1
        else:
            assert error_code(reply) == 202
            refused += 1
        assert core.storage.stats(1.0).items <= 40
    assert accepted == 40 and refused == 160
    assert core.counters["refused.store_full"] == 160
    # One IP alone cannot take more than its share.
    lone = make_core(max_items=40, max_items_per_ip=15)
    stored = 0
    for i in range(30):
        value = bencode(b"solo %d" % i)
        stored += isinstance(ask(lone, Put(token=token(lone, immutable_target(value)), value=value)), Response)
    assert stored == 15


def test_items_expire_without_republish() -> None:
    core = make_core()
    value = bencode(b"short-lived")
    ask(core, Put(token=token(core, immutable_target(value)), value=value))
    ttl = core.settings.item_ttl
    assert core.storage.get_item(immutable_target(value), 1.0 + ttl - 1) is not None
    assert core.storage.get_item(immutable_target(value), 1.0 + ttl + 1) is None
