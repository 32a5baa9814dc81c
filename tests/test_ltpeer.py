"""The libtorrent test peer works on its own: three sessions on loopback find each other and each
other's announces. If this fails, the kadnode interop tests cannot be trusted either way."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from contextlib import ExitStack

import pytest

from kadnode.types import Addr
from tests.interop.ltpeer import LibtorrentDhtPeer, loopback_only_filter, loopback_settings

pytestmark = pytest.mark.interop

HOSTS = ("127.0.0.20", "127.0.0.21", "127.0.0.22")


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
