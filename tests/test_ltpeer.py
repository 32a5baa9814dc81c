"""The libtorrent test peer works on its own: three sessions on loopback find each other, each other's
announces and each other's BEP 44 items. If this fails, the kadnode interop tests cannot be trusted
either way."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from contextlib import ExitStack

import pytest

from kadnode.types import Addr
from tests.interop.ltpeer import (
    LibtorrentDhtPeer,
    ed25519_public_key,
    expanded_secret,
    loopback_only_filter,
    loopback_settings,
    signature_valid,
    signing_buffer,
)

pytestmark = pytest.mark.interop

HOSTS = ("127.0.0.20", "127.0.0.21", "127.0.0.22")

# BEP 44's test vectors (its "private key" is the 64-byte expanded form libtorrent takes).
BEP44_PUBLIC_KEY = bytes.fromhex("77ff84905a91936367c01360803104f92432fcd904a43511876df5cdf3e7e548")
BEP44_SECRET = bytes.fromhex(
    "e06d3183d14159228433ed599221b80bd0a5ce8352e4bdf0262f76786ef1c74d"
    "b7e7a9fea2c0eb269d61e3b38e450a22e754941ac78479d6c54e1faf6037881d"
)
BEP44_SIGNATURE = bytes.fromhex(
    "305ac8aeb6c9c151fa120f120ea2cfb923564e11552d06a5d856091e5e853cff"
    "1260d3f39e4999684aa92eb73ffd136e6f4f3ecbfda0ce53a1608ecd7ae21f01"
)
BEP44_SALTED_SIGNATURE = bytes.fromhex(
    "6834284b6b24c3204eb2fea824d82f88883a3d95e8b4a21b8c0ded553d17d17d"
    "df9a8a7104b1258f30bed3787e6cb896fca78c58f8e03b5f18f14951a87d9a08"
)
BEP44_IMMUTABLE_TARGET = bytes.fromhex("e5f96f6f38320f0f33959cb4d3d656452117aadb")


@pytest.fixture(scope="module")
def peers() -> Iterator[list[LibtorrentDhtPeer]]:
    """A seed, and two peers bootstrapped from those started before them (OS-chosen ports)."""
    with ExitStack() as stack:
        started: list[LibtorrentDhtPeer] = []
        for host in HOSTS:
            peer = LibtorrentDhtPeer(host, 0, bootstrap=[p.addr for p in started])
            stack.enter_context(peer)
            started.append(peer)
        seed = started[0]
        # The seed only hears queries from the others, which leaves them unverified replacements;
        # add_node makes it contact them, as a bootstrap list would have.
        for peer in started[1:]:
            seed.add_node(peer.addr)
        yield started


def test_peers_listen_on_their_own_loopback_address(peers: list[LibtorrentDhtPeer]) -> None:
    assert [p.host for p in peers] == list(HOSTS)
    assert all(p.port > 0 for p in peers)
    ids = {p.node_id() for p in peers}
    assert len(ids) == 3 and all(len(i) == 20 for i in ids)


def test_routing_tables_hold_each_other(peers: list[LibtorrentDhtPeer]) -> None:
    seed, second, third = peers
    assert second.wait_for_node(seed.addr, timeout=5)
    assert third.wait_for_node(seed.addr, timeout=5)
    assert third.wait_for_node(second.addr, timeout=5)
    assert seed.wait_for_node(second.addr, timeout=5)
    assert seed.wait_for_node(third.addr, timeout=5)
    # The IDs in the table are the peers' own IDs.
    entries = dict((addr, node_id) for node_id, addr in seed.routing_entries())
    assert entries[second.addr] == second.node_id()
    assert entries[third.addr] == third.node_id()


def test_routing_table_holds_only_loopback_nodes(peers: list[LibtorrentDhtPeer]) -> None:
    for peer in peers:
        table = peer.routing_table()
        assert table, f"{peer} has an empty routing table"
        assert all(host.startswith("127.") for host, _ in table)
        assert peer.addr not in table


def test_announce_is_found_by_the_other_peers(peers: list[LibtorrentDhtPeer]) -> None:
    seed, second, third = peers
    info_hash = hashlib.sha1(b"ltpeer announce test").digest()
    second.announce(info_hash, 40_001, timeout=10)
    expected: Addr = (second.host, 40_001)
    assert expected in third.get_peers(info_hash, timeout=10)
    assert expected in seed.get_peers(info_hash, timeout=10)
    # The announce reached at least one other node, not only the announcer's own store.
    received = [p for p in (seed, third) if (info_hash, expected) in p.announces_received()]
    assert received


def test_get_peers_of_an_unannounced_hash_is_empty(peers: list[LibtorrentDhtPeer]) -> None:
    info_hash = hashlib.sha1(b"nobody announced this").digest()
    assert peers[2].get_peers(info_hash, timeout=10) == []


def test_libtorrent_took_every_setting(peers: list[LibtorrentDhtPeer]) -> None:
    peer = peers[0]
    wanted = dict(loopback_settings(peer.host, 0))  # the fixture asked for port 0
    wanted["enable_dht"] = True  # turned on by start()
    actual = peer.settings()
    assert {name: actual.get(name) for name in wanted} == wanted


def test_ip_filter_allows_only_loopback() -> None:
    ip_filter = loopback_only_filter()
    assert ip_filter.access("127.0.0.1") == 0
    assert ip_filter.access("127.255.255.254") == 0
    for blocked in ("0.0.0.0", "10.0.0.1", "126.255.255.255", "128.0.0.0", "192.0.2.1", "255.255.255.255"):
        assert ip_filter.access(blocked) == 1, blocked


def test_non_loopback_addresses_are_refused() -> None:
    with pytest.raises(ValueError):
        LibtorrentDhtPeer("0.0.0.0", 0)
    with pytest.raises(ValueError):
        LibtorrentDhtPeer("127.0.0.23", 0, bootstrap=[("192.0.2.1", 6881)])
    peer = LibtorrentDhtPeer("127.0.0.23", 0)
    with pytest.raises(ValueError):
        peer.add_node(("192.0.2.1", 6881))


def test_close_is_quick_and_idempotent() -> None:
    peer = LibtorrentDhtPeer("127.0.0.23", 0)
    peer.start()
    started = time.monotonic()
    peer.close()
    peer.close()
    assert time.monotonic() - started < 5
    with pytest.raises(RuntimeError):
        peer.get_peers(bytes(20), timeout=1)


def test_a_taken_port_is_reported() -> None:
    with LibtorrentDhtPeer("127.0.0.23", 0) as first:
        second = LibtorrentDhtPeer("127.0.0.23", first.port)
        with pytest.raises((OSError, TimeoutError)):
            second.start(timeout=5)
        with pytest.raises(RuntimeError):
            second.node_id()


# --- BEP 44 items between libtorrent peers ------------------------------------------------------


def test_signing_buffer_and_signature_check_match_the_bep44_vectors() -> None:
    value = b"12:Hello World!"
    assert signing_buffer(b"", 1, value) == b"3:seqi1e1:v12:Hello World!"
    assert signing_buffer(b"foobar", 1, value) == b"4:salt6:foobar3:seqi1e1:v12:Hello World!"
    assert signature_valid(BEP44_PUBLIC_KEY, BEP44_SIGNATURE, b"", 1, value)
    assert signature_valid(BEP44_PUBLIC_KEY, BEP44_SALTED_SIGNATURE, b"foobar", 1, value)
    # Any change to what is signed fails the check.
    assert not signature_valid(BEP44_PUBLIC_KEY, BEP44_SIGNATURE, b"foobar", 1, value)
    assert not signature_valid(BEP44_PUBLIC_KEY, BEP44_SIGNATURE, b"", 2, value)
    assert not signature_valid(BEP44_PUBLIC_KEY, BEP44_SIGNATURE, b"", 1, b"12:Hello World?")
    assert not signature_valid(BEP44_PUBLIC_KEY, bytes(64), b"", 1, value)


def test_expanded_secret_is_clamped_sha512_of_the_seed() -> None:
    seed = bytes(range(32))
    secret = expanded_secret(seed)
    digest = hashlib.sha512(seed).digest()
    assert len(secret) == 64 and secret[32:] == digest[32:]
    assert secret[0] == digest[0] & 0xF8
    assert secret[31] == (digest[31] & 0x3F) | 0x40
    assert secret[1:31] == digest[1:31]
    assert len(ed25519_public_key(seed)) == 32
    with pytest.raises(ValueError):
        expanded_secret(bytes(31))


def test_libtorrent_signs_the_bep44_vectors(peers: list[LibtorrentDhtPeer]) -> None:
    """libtorrent, given BEP 44's expanded secret, produces the BEP's signatures (seq 1: the first put)."""
    seed, second, third = peers
    for salt, signature in ((b"", BEP44_SIGNATURE), (b"foobar", BEP44_SALTED_SIGNATURE)):
        put = second.put_mutable(BEP44_SECRET, b"Hello World!", salt=salt, public_key=BEP44_PUBLIC_KEY)
        assert (put.seq, put.signature, put.value) == (1, signature, b"12:Hello World!")
        assert put.public_key == BEP44_PUBLIC_KEY and put.salt == salt
        assert put.num_success >= 1
        for reader in (third, seed):
            item = reader.get_mutable(BEP44_PUBLIC_KEY, salt)
            assert item is not None, f"{reader} did not find the item salted {salt!r}"
            assert (item.seq, item.signature, item.value, item.salt) == (1, signature, b"12:Hello World!", salt)
    immutable = second.put_immutable(b"Hello World!")
    assert (immutable.target, immutable.value) == (BEP44_IMMUTABLE_TARGET, b"12:Hello World!")
    assert third.get_immutable(BEP44_IMMUTABLE_TARGET) == b"12:Hello World!"


def test_immutable_item_round_trip(peers: list[LibtorrentDhtPeer]) -> None:
    seed, second, third = peers
    value = {b"name": b"ltpeer", b"list": [1, -2, b"three"], b"n": 4}
    put = second.put_immutable(value)
    encoded = b"d4:listli1ei-2e5:threee1:ni4e4:name6:ltpeere"
    assert put.value == encoded
    assert put.target == hashlib.sha1(encoded).digest()
    assert put.num_success >= 1
    assert third.get_immutable(put.target) == encoded
    assert seed.get_immutable(put.target) == encoded


def test_mutable_update_raises_seq_and_replaces_the_value(peers: list[LibtorrentDhtPeer]) -> None:
    seed, second, third = peers
    key = os.urandom(32)
    public_key = ed25519_public_key(key)
    first = second.put_mutable(key, b"one", salt=b"counter")
    assert first.seq == 1 and first.num_success >= 1
    assert signature_valid(public_key, first.signature, b"counter", 1, b"3:one")
    # Another peer updates it: its lookup finds seq 1, so it signs seq 2.
    update = third.put_mutable(key, b"two", salt=b"counter")
    assert update.seq == 2 and update.num_success >= 1
    for reader in (seed, second):
        item = reader.get_mutable(public_key, b"counter")
        assert item is not None
        assert (item.seq, item.value) == (2, b"3:two")
        assert signature_valid(public_key, item.signature, b"counter", 2, b"3:two")


def test_salt_separates_items_under_one_key(peers: list[LibtorrentDhtPeer]) -> None:
    _, second, third = peers
    key = os.urandom(32)
    public_key = ed25519_public_key(key)
    # The expanded-secret form signs exactly as the seed does.
    second.put_mutable(expanded_secret(key), b"plain", public_key=public_key)
    second.put_mutable(key, b"salted", salt=b"a")
    plain, salted = third.get_mutable(public_key), third.get_mutable(public_key, b"a")
    assert plain is not None and plain.value == b"5:plain" and plain.salt == b""
    assert salted is not None and salted.value == b"6:salted" and salted.salt == b"a"
    assert third.get_mutable(public_key, b"b") is None


def test_missing_items_are_none(peers: list[LibtorrentDhtPeer]) -> None:
    reader = peers[1]
    assert reader.get_immutable(hashlib.sha1(b"never put").digest()) is None
    assert reader.get_mutable(ed25519_public_key(os.urandom(32)), b"never put") is None


def test_put_mutable_refuses_keys_that_do_not_fit(peers: list[LibtorrentDhtPeer]) -> None:
    peer = peers[0]
    seed = os.urandom(32)
    with pytest.raises(ValueError):
        peer.put_mutable(seed[:31], b"x")
    with pytest.raises(ValueError):
        peer.put_mutable(expanded_secret(seed), b"x")  # the expanded form needs its public key
    with pytest.raises(ValueError):
        peer.put_mutable(seed, b"x", public_key=ed25519_public_key(os.urandom(32)))
    with pytest.raises(ValueError):
        peer.get_mutable(bytes(31))
