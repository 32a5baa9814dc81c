"""BEP 44 rules: the BEP's test vectors, signatures, libtorrent's key format, and every put refusal."""

from __future__ import annotations

import hashlib
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kadnode.core.bep44 import (
    INVALID_SIGNATURE,
    MAX_SEQ,
    SALT_TOO_BIG,
    VALUE_TOO_BIG,
    PutRefused,
    SigningKey,
    immutable_target,
    item_from_put,
    item_from_reply,
    make_immutable,
    make_mutable,
    mutable_target,
    signing_buffer,
    verify_signature,
)
from kadnode.settings import Settings
from kadnode.storage.base import ImmutableItem, Item, MutableItem
from kadnode.types import Addr
from kadnode.wire.bencode import Raw, bencode
from kadnode.wire.krpc import (
    PROTOCOL_ERROR,
    ErrorReply,
    Get,
    ItemReply,
    Message,
    Put,
    Query,
    Response,
    decode_message,
    encode_message,
    response_item,
    response_token,
)

SETTINGS = Settings()
KEY = SigningKey(bytes(range(32)))
OTHER = SigningKey(bytes(range(1, 33)))
HELLO = b"12:Hello World!"

# --- an independent ed25519 (RFC 8032, section 5.1), to check keys in libtorrent's expanded form ---------
# `cryptography` signs only from a 32-byte seed, while libtorrent and the BEP's vectors hold the 64-byte
# expanded secret (clamped scalar + nonce prefix). This slow but plain reference signs from that form.

_P = 2**255 - 19
_L = 2**252 + 27742317777372353535851937790883648493
_D = -121665 * pow(121666, _P - 2, _P) % _P


def _point_add(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, int, int, int]:
    x1, y1, z1, t1 = a
    x2, y2, z2, t2 = b
    pa = (y1 - x1) * (y2 - x2) % _P
    pb = (y1 + x1) * (y2 + x2) % _P
    pc = 2 * t1 * t2 * _D % _P
    pd = 2 * z1 * z2 % _P
    e, f, g, h = pb - pa, pd - pc, pd + pc, pb + pa
    return e * f % _P, g * h % _P, f * g % _P, e * h % _P


def _base_point() -> tuple[int, int, int, int]:
    y = 4 * pow(5, _P - 2, _P) % _P
    xx = (y * y - 1) * pow(_D * y * y + 1, _P - 2, _P) % _P
    x = pow(xx, (_P + 3) // 8, _P)
    if (x * x - xx) % _P:
        x = x * pow(2, (_P - 1) // 4, _P) % _P
    if x & 1:
        x = _P - x
    return x, y, 1, x * y % _P


_B = _base_point()


def _scalar_mult(scalar: int) -> bytes:
    """Encoded scalar * B."""
    q: tuple[int, ...] = (0, 1, 1, 0)
    p: tuple[int, ...] = _B
    while scalar:
        if scalar & 1:
            q = _point_add(q, p)
        p = _point_add(p, p)
        scalar >>= 1
    x, y, z, _ = q
    zi = pow(z, _P - 2, _P)
    x, y = x * zi % _P, y * zi % _P
    return (y | (x & 1) << 255).to_bytes(32, "little")


def _h(data: bytes) -> int:
    return int.from_bytes(hashlib.sha512(data).digest(), "little")


def reference_public_key(expanded: bytes) -> bytes:
    return _scalar_mult(int.from_bytes(expanded[:32], "little"))


def reference_sign(expanded: bytes, message: bytes) -> bytes:
    """ed25519 signature from a 64-byte expanded secret key."""
    a = int.from_bytes(expanded[:32], "little")
    public = _scalar_mult(a)
    r = _h(expanded[32:] + message) % _L
    big_r = _scalar_mult(r)
    s = (r + _h(big_r + public + message) * a) % _L
    return big_r + s.to_bytes(32, "little")


# --- BEP 44 test vectors ---------------------------------------------------------------------------------

BEP_PUBLIC = bytes.fromhex("77ff84905a91936367c01360803104f92432fcd904a43511876df5cdf3e7e548")
BEP_SECRET = bytes.fromhex(
    "e06d3183d14159228433ed599221b80bd0a5ce8352e4bdf0262f76786ef1c74d"
    "b7e7a9fea2c0eb269d61e3b38e450a22e754941ac78479d6c54e1faf6037881d"
)
BEP_VECTORS = [  # salt, buffer, target, signature
    (
        b"",
        b"3:seqi1e1:v12:Hello World!",
        "4a533d47ec9c7d95b1ad75f576cffc641853b750",
        "305ac8aeb6c9c151fa120f120ea2cfb923564e11552d06a5d856091e5e853cff"
        "1260d3f39e4999684aa92eb73ffd136e6f4f3ecbfda0ce53a1608ecd7ae21f01",
    ),
    (
        b"foobar",
        b"4:salt6:foobar3:seqi1e1:v12:Hello World!",
        "411eba73b6f087ca51a3795d9c8c938d365e32c1",
        "6834284b6b24c3204eb2fea824d82f88883a3d95e8b4a21b8c0ded553d17d17d"
        "df9a8a7104b1258f30bed3787e6cb896fca78c58f8e03b5f18f14951a87d9a08",
    ),
]


@pytest.mark.parametrize(("salt", "buffer", "target", "signature"), BEP_VECTORS)
def test_bep44_mutable_vectors(salt: bytes, buffer: bytes, target: str, signature: str) -> None:
    assert signing_buffer(salt, 1, HELLO) == buffer
    assert mutable_target(BEP_PUBLIC, salt).hex() == target
    assert verify_signature(BEP_PUBLIC, bytes.fromhex(signature), salt, 1, HELLO)
    item = item_from_put(Put(b"tok", HELLO, BEP_PUBLIC, salt, 1, bytes.fromhex(signature)), SETTINGS)
    assert item == MutableItem(bytes.fromhex(target), BEP_PUBLIC, salt, 1, bytes.fromhex(signature), HELLO)


def test_bep44_immutable_vector() -> None:
    assert immutable_target(HELLO).hex() == "e5f96f6f38320f0f33959cb4d3d656452117aadb"
    assert make_immutable(HELLO) == ImmutableItem(
        bytes.fromhex("e5f96f6f38320f0f33959cb4d3d656452117aadb"), HELLO
    )


def test_signing_buffer_examples_from_the_bep_text() -> None:
    assert signing_buffer(b"", 4, b"12:Hello world!") == b"3:seqi4e1:v12:Hello world!"
    assert signing_buffer(b"foobar", 4, b"12:Hello world!") == b"4:salt6:foobar3:seqi4e1:v12:Hello world!"
    assert signing_buffer(b"", MAX_SEQ, b"i-1e") == b"3:seqi9223372036854775807e1:vi-1e"
    assert signing_buffer(b"\x00" * 10, 0, b"le") == b"4:salt10:" + b"\x00" * 10 + b"3:seqi0e1:vle"


@pytest.mark.parametrize(("salt", "buffer", "target", "signature"), BEP_VECTORS)
def test_bep_private_key_is_the_expanded_form(
    salt: bytes, buffer: bytes, target: str, signature: str
) -> None:
    # The reference signer reproduces the BEP's signatures from its 64-byte key: that key is
    # libtorrent's expanded form, and the reference is right.
    assert reference_public_key(BEP_SECRET) == BEP_PUBLIC
    assert reference_sign(BEP_SECRET, buffer).hex() == signature


# --- SigningKey and libtorrent's secret key format -------------------------------------------------------


@pytest.mark.parametrize("seed", [bytes(32), bytes(range(32)), b"\xff" * 32, hashlib.sha256(b"x").digest()])
def test_libtorrent_secret_signs_like_the_seed(seed: bytes) -> None:
    key = SigningKey(seed)
    secret = key.libtorrent_secret()
    assert len(secret) == 64
    assert secret[32:] == hashlib.sha512(seed).digest()[32:]
    assert secret[0] & 7 == 0 and secret[31] & 0x80 == 0 and secret[31] & 0x40
    digest = hashlib.sha512(seed).digest()
    assert secret[1:31] == digest[1:31]
    assert secret[0] == digest[0] & 248 and secret[31] == (digest[31] & 63) | 64
    assert reference_public_key(secret) == key.public_key
    for salt, seq in ((b"", 1), (b"name", 77)):
        assert reference_sign(secret, signing_buffer(salt, seq, HELLO)) == key.sign(salt, seq, HELLO)


def test_signing_key_basics() -> None:
    assert len(KEY.public_key) == 32 and KEY.seed == bytes(range(32))
    assert KEY.public_key != OTHER.public_key
    assert SigningKey(bytes(range(32))).public_key == KEY.public_key
    sig = KEY.sign(b"s", 3, HELLO)
    assert len(sig) == 64 and sig == KEY.sign(b"s", 3, HELLO)  # ed25519 is deterministic
    assert verify_signature(KEY.public_key, sig, b"s", 3, HELLO)
    assert KEY.seed.hex() not in repr(KEY) and KEY.public_key.hex() in repr(KEY)
    for bad in (b"", bytes(31), bytes(33), bytes(64)):
        with pytest.raises(ValueError):
            SigningKey(bad)


def test_generate_makes_fresh_keys() -> None:
    first, second = SigningKey.generate(), SigningKey.generate()
    assert first.seed != second.seed and len(first.seed) == 32
    assert SigningKey(first.seed).public_key == first.public_key
    assert verify_signature(first.public_key, first.sign(b"", 1, b"0:"), b"", 1, b"0:")


# --- verification never passes anything tampered ---------------------------------------------------------


def test_tampered_items_fail_verification() -> None:
    sig = KEY.sign(b"salt", 5, HELLO)
    assert verify_signature(KEY.public_key, sig, b"salt", 5, HELLO)
    assert not verify_signature(KEY.public_key, sig, b"salt", 5, b"12:Hello World?")
    assert not verify_signature(KEY.public_key, sig, b"salt", 6, HELLO)
    assert not verify_signature(KEY.public_key, sig, b"salt", 4, HELLO)
    assert not verify_signature(KEY.public_key, sig, b"salT", 5, HELLO)
    assert not verify_signature(KEY.public_key, sig, b"", 5, HELLO)
    assert not verify_signature(OTHER.public_key, sig, b"salt", 5, HELLO)
    for i in (0, 31, 32, 63):
        flipped = bytearray(sig)
        flipped[i] ^= 1
        assert not verify_signature(KEY.public_key, bytes(flipped), b"salt", 5, HELLO)
    # The salt is not just glued onto the value: moving bytes between them breaks the signature.
    unsalted = KEY.sign(b"", 5, b"4:salt")
    assert not verify_signature(KEY.public_key, unsalted, b"salt", 5, b"")


def test_malformed_keys_and_signatures_are_false_not_errors() -> None:
    sig = KEY.sign(b"", 1, HELLO)
    assert not verify_signature(KEY.public_key[:31], sig, b"", 1, HELLO)
    assert not verify_signature(KEY.public_key + b"\x00", sig, b"", 1, HELLO)
    assert not verify_signature(KEY.public_key, sig[:63], b"", 1, HELLO)
    assert not verify_signature(KEY.public_key, sig + b"\x00", b"", 1, HELLO)
    assert not verify_signature(b"\xff" * 32, sig, b"", 1, HELLO)  # not a curve point encoding
    assert not verify_signature(bytes(32), bytes(64), b"", 1, HELLO)


@given(st.binary(max_size=40), st.binary(max_size=70), st.binary(max_size=8), st.integers(-(2**70), 2**70))
def test_verify_signature_never_raises(key: bytes, sig: bytes, salt: bytes, seq: int) -> None:
    assert verify_signature(key, sig, salt, seq, HELLO) is False


# --- our own items ---------------------------------------------------------------------------------------


def test_make_mutable() -> None:
    item = make_mutable(KEY, HELLO, 7, b"name")
    assert (
        item.target
        == mutable_target(KEY.public_key, b"name")
        == hashlib.sha1(KEY.public_key + b"name").digest()
    )
    assert (item.public_key, item.salt, item.seq, item.value) == (KEY.public_key, b"name", 7, HELLO)
    assert verify_signature(KEY.public_key, item.signature, b"name", 7, HELLO)
    assert make_mutable(KEY, HELLO, 7).target == hashlib.sha1(KEY.public_key).digest()
    assert make_mutable(KEY, b"i0e", 0).seq == 0 and make_mutable(KEY, b"i0e", MAX_SEQ).seq == MAX_SEQ


@pytest.mark.parametrize("value", [b"", b"5:hello ", b"i01e", b"d1:bi1e1:ai2ee", b"hello", b"li1e"])
def test_own_items_must_be_canonical_bencode(value: bytes) -> None:
    with pytest.raises(ValueError):
        make_immutable(value)
    with pytest.raises(ValueError):
        make_mutable(KEY, value, 1)


def test_own_items_have_no_structure_limits() -> None:
    deep = b"l" * 50 + b"e" * 50
    many = b"l" + b"i1e" * 300 + b"e"
    assert make_immutable(deep).value == deep
    assert make_mutable(KEY, many, 1).value == many


@pytest.mark.parametrize("seq", [-1, MAX_SEQ + 1])
def test_make_mutable_seq_range(seq: int) -> None:
    with pytest.raises(ValueError, match="seq"):
        make_mutable(KEY, HELLO, seq)


# --- item_from_put: what a received put stores, and every refusal ----------------------------------------


def mutable_put(item: MutableItem, **changes: Any) -> Put:
    put = Put(b"tok", item.value, item.public_key, item.salt, item.seq, item.signature)
    return replace(put, **changes)


def refusal(put: Put, settings: Settings = SETTINGS) -> int:
    with pytest.raises(PutRefused) as info:
        item_from_put(put, settings)
    assert info.value.message and str(info.value).startswith(str(info.value.code))
    return info.value.code


def test_put_accepts_valid_items() -> None:
    assert item_from_put(Put(b"tok", HELLO), SETTINGS) == make_immutable(HELLO)
    item = make_mutable(KEY, HELLO, 3, b"name")
    assert item_from_put(mutable_put(item), SETTINGS) == item
    assert item_from_put(mutable_put(item, cas=2, token=b""), SETTINGS) == item  # not checked here


def test_immutable_put_ignores_mutable_extras() -> None:
    put = Put(b"tok", HELLO, salt=b"x" * 500, seq=-5, signature=b"junk")
    assert item_from_put(put, SETTINGS) == make_immutable(HELLO)


def test_value_size_limit_205() -> None:
    exact = bencode(b"x" * 996)
    assert len(exact) == 1000
    assert item_from_put(Put(b"t", exact), SETTINGS) == make_immutable(exact)
    over = bencode(b"x" * 997)
    assert refusal(Put(b"t", over)) == VALUE_TOO_BIG == 205
    assert refusal(mutable_put(make_mutable(KEY, over, 1))) == 205
    assert item_from_put(mutable_put(make_mutable(KEY, exact, 1)), SETTINGS).value == exact
    small = SETTINGS.with_changes(max_value_size=10)
    assert refusal(Put(b"t", bencode(b"x" * 9)), small) == 205
    assert item_from_put(Put(b"t", bencode(b"x" * 8)), small).value == b"8:xxxxxxxx"
    # Too big is reported before anything else is wrong with it.
    assert refusal(mutable_put(make_mutable(KEY, over, 1), signature=bytes(64), salt=b"s" * 99)) == 205


def test_salt_size_limit_207() -> None:
    ok = make_mutable(KEY, HELLO, 1, b"s" * 64)
    assert item_from_put(mutable_put(ok), SETTINGS) == ok
    long = make_mutable(KEY, HELLO, 1, b"s" * 65)
    assert refusal(mutable_put(long)) == SALT_TOO_BIG == 207
    assert refusal(mutable_put(long, signature=bytes(64))) == 207  # before the signature is looked at
    assert refusal(mutable_put(ok), SETTINGS.with_changes(max_salt_size=63)) == 207


def test_bad_signature_206() -> None:
    item = make_mutable(KEY, HELLO, 4, b"name")
    assert refusal(mutable_put(item, value=b"12:Hello World?")) == INVALID_SIGNATURE == 206
    assert refusal(mutable_put(item, seq=5)) == 206
    assert refusal(mutable_put(item, salt=b"other")) == 206
    assert refusal(mutable_put(item, salt=b"")) == 206
    assert refusal(mutable_put(item, public_key=OTHER.public_key)) == 206
    assert refusal(mutable_put(item, signature=bytes(64))) == 206
    assert refusal(mutable_put(item, public_key=b"\xff" * 32)) == 206


def test_malformed_mutable_put_203() -> None:
    item = make_mutable(KEY, HELLO, 4)
    for changes in (
        {"seq": None},
        {"signature": None},
        {"public_key": KEY.public_key[:31]},
        {"seq": -1},
        {"seq": MAX_SEQ + 1},
    ):
        assert refusal(mutable_put(item, **changes)) == PROTOCOL_ERROR, changes


# --- item_from_reply: checking what a get lookup brings back ---------------------------------------------


def reply_of(item: MutableItem, **changes: Any) -> ItemReply:
    return replace(ItemReply(item.value, item.public_key, item.seq, item.signature), **changes)


def test_reply_immutable() -> None:
    target = immutable_target(HELLO)
    assert item_from_reply(target, ItemReply(HELLO, None, None, None), b"") == make_immutable(HELLO)
    # Extra fields do not matter when the hash matches; the salt we looked up with neither.
    assert item_from_reply(target, ItemReply(HELLO, OTHER.public_key, 3, bytes(64)), b"x") == make_immutable(
        HELLO
    )
    assert item_from_reply(target, ItemReply(b"12:Hello World?", None, None, None), b"") is None
    assert item_from_reply(bytes(20), ItemReply(HELLO, None, None, None), b"") is None


def test_reply_mutable() -> None:
    item = make_mutable(KEY, HELLO, 9, b"name")
    assert item_from_reply(item.target, reply_of(item), b"name") == item
    assert item_from_reply(item.target, reply_of(item), b"") is None  # wrong salt: target mismatch
    assert item_from_reply(item.target, reply_of(item), b"nam") is None
    assert item_from_reply(bytes(20), reply_of(item), b"name") is None
    assert item_from_reply(item.target, reply_of(item, seq=10), b"name") is None
    assert item_from_reply(item.target, reply_of(item, value=b"i1e"), b"name") is None
    assert item_from_reply(item.target, reply_of(item, signature=bytes(64)), b"name") is None
    for missing in ("value", "public_key", "seq", "signature"):
        assert item_from_reply(item.target, reply_of(item, **{missing: None}), b"name") is None
    assert item_from_reply(item.target, reply_of(item, seq=-1), b"name") is None


def test_reply_from_another_key_is_refused() -> None:
    # Validly signed by OTHER, but we asked for KEY's item: the key does not hash to our target.
    theirs = make_mutable(OTHER, HELLO, 9, b"name")
    ours = mutable_target(KEY.public_key, b"name")
    assert item_from_reply(ours, reply_of(theirs), b"name") is None


def test_reply_with_a_bep_vector() -> None:
    for salt, _buffer, target, signature in BEP_VECTORS:
        reply = ItemReply(HELLO, BEP_PUBLIC, 1, bytes.fromhex(signature))
        assert item_from_reply(bytes.fromhex(target), reply, salt) == MutableItem(
            bytes.fromhex(target), BEP_PUBLIC, salt, 1, bytes.fromhex(signature), HELLO
        )


# --- through the wire codec ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [HELLO, bencode(0), bencode(-12), bencode([b"a", [1, {b"k": b"v"}]]), bencode({b"": b"", b"z": []})],
)
def test_items_survive_the_wire(value: bytes) -> None:
    mutable = make_mutable(KEY, value, 2, b"n")
    cases: list[tuple[Item, Put, dict[bytes, Any], bytes]] = [
        (make_immutable(value), Put(b"tok", value), {b"v": Raw(value)}, b""),
        (
            mutable,
            mutable_put(mutable),
            {b"v": Raw(value), b"k": mutable.public_key, b"seq": 2, b"sig": mutable.signature},
            b"n",
        ),
    ]
    for item, body, values, salt in cases:
        query = decode_message(encode_message(Query(b"tx", bytes(20), body)))
        assert isinstance(query, Query) and isinstance(query.body, Put)
        assert item_from_put(query.body, SETTINGS) == item
        response = decode_message(encode_message(Response(b"tx", bytes(20), {**values, b"token": b"t"})))
        assert isinstance(response, Response)
        assert item_from_reply(item.target, response_item(response), salt) == item


# --- against libtorrent 2.1 ------------------------------------------------------------------------------

LT_HOST = "127.0.0.145"
RAW_HOST = "127.0.0.144"
WAIT = 10.0


class RawNode:
    """A bare DHT node on a UDP socket: answers every query with a token, keeps the puts it gets."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((RAW_HOST, 0))
        self.sock.settimeout(0.05)
        self.node_id = hashlib.sha1(b"raw node").digest()
        self.queries = 0
        self.puts: list[Put] = []
        self.replies: dict[bytes, Message] = {}
        self.errors: list[Exception] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def addr(self) -> Addr:
        host, port = self.sock.getsockname()
        return host, port

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, source = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            try:
                message = decode_message(data)
            except Exception as exc:  # recorded: the test fails on any message we cannot read
                self.errors.append(exc)
                continue
            if isinstance(message, Query):
                self.queries += 1
                if isinstance(message.body, Put):
                    self.puts.append(message.body)
                values = {b"token": b"tok", b"nodes": b""}
                self.sock.sendto(encode_message(Response(message.tid, self.node_id, values)), source)
            else:
                self.replies[message.tid] = message

    def ask(self, to: Addr, tid: bytes, body: Get | Put) -> Message:
        self.sock.sendto(encode_message(Query(tid, self.node_id, body)), to)
        deadline = time.monotonic() + WAIT
        while tid not in self.replies:
            assert time.monotonic() < deadline, f"no reply to {body}"
            time.sleep(0.005)
        return self.replies.pop(tid)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


@pytest.fixture
def libtorrent_and_raw_node() -> Iterator[tuple[Any, Addr, RawNode]]:
    """A libtorrent session whose only DHT contact is a RawNode; yields (session, its address, node)."""
    lt = pytest.importorskip("libtorrent")
    from tests.interop.ltpeer import loopback_only_filter, loopback_settings

    node = RawNode()
    try:
        state = {b"dht state": {b"nodes": [socket.inet_aton(RAW_HOST) + node.addr[1].to_bytes(2, "big")]}}
        params = lt.read_session_params(bencode(state))
        params.settings = loopback_settings(LT_HOST, 0)
        params.ip_filter = loopback_only_filter()
        session = lt.session(params)
        try:
            deadline = time.monotonic() + WAIT
            lt_port = 0
            while not lt_port:
                assert time.monotonic() < deadline, "libtorrent did not listen"
                session.wait_for_alert(100)
                for alert in session.pop_alerts():  # alerts die at the next pop: copy the port now
                    udp = (
                        isinstance(alert, lt.listen_succeeded_alert)
                        and alert.socket_type == lt.socket_type_t.udp
                    )
                    lt_port = alert.port if udp else lt_port
            session.apply_settings({"enable_dht": True})
            while not node.queries:  # libtorrent's DHT runs once it bootstraps from the node
                assert time.monotonic() < deadline, "libtorrent's DHT did not start"
                time.sleep(0.01)
            yield session, (LT_HOST, lt_port), node
        finally:
            session.pause()
            session.apply_settings({"enable_dht": False})
            del session
    finally:
        node.close()
    assert not node.errors


@pytest.mark.interop
def test_libtorrent_signs_with_our_expanded_secret(
    libtorrent_and_raw_node: tuple[Any, Addr, RawNode],
) -> None:
    session, _, node = libtorrent_and_raw_node
    deadline = time.monotonic() + WAIT
    while not node.puts:  # a put started before the node is in libtorrent's table reaches nobody: retry
        assert time.monotonic() < deadline, "libtorrent sent no put"
        session.dht_put_mutable_item(KEY.libtorrent_secret(), KEY.public_key, b"from libtorrent", b"salty")
        time.sleep(0.2)
    put = node.puts[0]
    value = bencode(b"from libtorrent")
    assert (put.public_key, put.salt, put.seq, put.value) == (KEY.public_key, b"salty", 1, value)
    assert put.signature == KEY.sign(b"salty", 1, value)  # ed25519 is deterministic: same key, same bytes
    assert item_from_put(put, SETTINGS) == make_mutable(KEY, value, 1, b"salty")


@pytest.mark.interop
def test_libtorrent_stores_our_puts_and_answers_our_gets(
    libtorrent_and_raw_node: tuple[Any, Addr, RawNode],
) -> None:
    _, lt_addr, node = libtorrent_and_raw_node
    mutable = make_mutable(KEY, bencode({b"list": [1, 2], b"name": b"kadnode"}), 5, b"salt")
    items: list[Item] = [mutable, make_immutable(bencode([b"immutable", 1]))]
    for n, item in enumerate(items):
        salt = item.salt if isinstance(item, MutableItem) else b""
        first = node.ask(lt_addr, b"g%d" % n, Get(item.target))
        assert isinstance(first, Response) and response_item(first).value is None
        token = response_token(first)
        assert token is not None
        body = mutable_put(item, token=token) if isinstance(item, MutableItem) else Put(token, item.value)
        assert isinstance(node.ask(lt_addr, b"p%d" % n, body), Response)
        held = node.ask(lt_addr, b"h%d" % n, Get(item.target))
        assert isinstance(held, Response)
        assert item_from_reply(item.target, response_item(held), salt) == item
    # libtorrent sends only what is newer than the seq we name, and refuses what we refuse.
    newer = node.ask(lt_addr, b"s1", Get(mutable.target, seq=5))
    assert isinstance(newer, Response)
    assert response_item(newer).value is None
    token = response_token(newer)
    assert token is not None
    forged = mutable_put(make_mutable(KEY, bencode(b"forged"), 6, b"salt"), token=token, value=bencode(b"x"))
    error = node.ask(lt_addr, b"f1", forged)
    assert isinstance(error, ErrorReply) and error.code == INVALID_SIGNATURE
