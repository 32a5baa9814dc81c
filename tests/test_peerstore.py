"""Peer store: caps, refresh, expiry and sampling."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from kadnode.core.peerstore import PeerStore
from kadnode.settings import Settings
from kadnode.types import Addr

IH_A = b"a" * 20
IH_B = b"b" * 20
IH_C = b"c" * 20
TTL = 100.0


def store(**changes: int | float) -> PeerStore:
    return PeerStore(Settings().with_changes(peer_ttl=TTL, **changes), random.Random(3))


def peer(i: int) -> Addr:
    return ("127.0.0.1", 1000 + i)


def test_add_get_and_counts() -> None:
    s = store()
    assert s.add(IH_A, peer(1), 0.0)
    assert s.add(IH_A, peer(2), 0.0, seed=True)
    assert s.add(IH_B, peer(1), 0.0)
    assert s.add(IH_A, peer(1), 1.0)  # refresh, not a new peer
    assert (s.info_hash_count, s.peer_count) == (2, 3)
    assert sorted(s.get(IH_A, 1.0, 10)) == [peer(1), peer(2)]
    assert s.get(IH_A, 1.0, 10, noseed=True) == [peer(1)]
    assert s.get(IH_C, 1.0, 10) == []
    assert s.get(IH_A, 1.0, 0) == []
    assert dict(s.items()) == {IH_A: [peer(2), peer(1)], IH_B: [peer(1)]}


def test_expiry_and_refresh() -> None:
    s = store()
    s.add(IH_A, peer(1), 0.0)
    s.add(IH_A, peer(2), 50.0)
    assert sorted(s.get(IH_A, TTL - 1, 10)) == [peer(1), peer(2)]
    assert s.get(IH_A, TTL, 10) == [peer(2)]  # peer 1 expired exactly at TTL
    assert s.peer_count == 1
    s.add(IH_A, peer(2), 120.0)  # refreshed: lives until 220
    s.sweep(200.0)
    assert s.get(IH_A, 200.0, 10) == [peer(2)]
    s.sweep(220.0)
    assert (s.info_hash_count, s.peer_count) == (0, 0)
    assert list(s.items()) == []


def test_info_hash_cap_refuses_new_and_frees_on_expiry() -> None:
    s = store(max_info_hashes=2)
    assert s.add(IH_A, peer(1), 0.0)
    assert s.add(IH_B, peer(1), 10.0)
    assert not s.add(IH_C, peer(1), 20.0)
    assert s.info_hash_count == 2 and s.get(IH_C, 20.0, 10) == []
    assert s.add(IH_A, peer(2), 20.0)  # existing info-hashes still take peers
    # IH_B's only peer expires at 110; then there is room again.
    assert not s.add(IH_C, peer(1), 109.0)
    assert s.add(IH_C, peer(1), 110.0)
    assert s.info_hash_count == 2


def test_peer_cap_replaces_the_peer_expiring_soonest() -> None:
    s = store(max_peers_per_info_hash=3)
    for i in range(3):
        assert s.add(IH_A, peer(i), float(i))
    s.add(IH_A, peer(0), 5.0)  # refresh: peer 1 is now the soonest to expire
    assert s.add(IH_A, peer(9), 6.0)
    assert sorted(s.get(IH_A, 6.0, 10)) == [peer(0), peer(2), peer(9)]
    assert s.peer_count == 3


def test_get_samples_randomly_up_to_limit() -> None:
    s = store()
    for i in range(40):
        s.add(IH_A, peer(i), 0.0)
    seen: set[Addr] = set()
    for _ in range(20):
        got = s.get(IH_A, 1.0, 5)
        assert len(got) == 5 and len(set(got)) == 5
        seen.update(got)
    assert len(seen) > 20  # a random sample, not always the same five


def test_clock_stepping_back_never_returns_expired_peers() -> None:
    s = store()
    s.add(IH_A, peer(1), 100.0)  # expires 200
    s.add(IH_A, peer(2), 0.0)  # expires 100, but sits behind peer 1 in sweep order
    assert s.get(IH_A, 150.0, 10) == [peer(1)]


ops = st.lists(st.tuples(st.integers(0, 4), st.integers(0, 6), st.floats(0, 30), st.booleans()), max_size=80)


@settings(max_examples=150, deadline=None)
@given(ops=ops)
def test_caps_always_hold_and_match_a_model(ops: list[tuple[int, int, float, bool]]) -> None:
    s = PeerStore(Settings().with_changes(peer_ttl=TTL, max_info_hashes=3, max_peers_per_info_hash=4), random.Random(0))
    model: dict[bytes, dict[Addr, float]] = {}  # info-hash -> peer -> expires_at, in refresh order
    now = 0.0
    for ih_index, peer_index, dt, is_get in ops:
        now += dt
        ih = bytes([ih_index]) * 20
        model = {h: live for h, ps in model.items() if (live := {a: t for a, t in ps.items() if t > now})}
        if is_get:
            got = s.get(ih, now, 3)
            assert len(got) == len(set(got)) == min(3, len(model.get(ih, {})))
            assert set(got) <= set(model.get(ih, {}))
        else:
            addr = peer(peer_index)
            accepted = ih in model or len(model) < 3
            assert s.add(ih, addr, now) is accepted
            if accepted:
                peers = model.setdefault(ih, {})
                if addr in peers:
                    del peers[addr]
                elif len(peers) >= 4:
                    del peers[min(peers, key=peers.__getitem__)]
                peers[addr] = now + TTL
        assert {h: sorted(p) for h, p in s.items()} == {h: sorted(p) for h, p in model.items()}
        assert s.info_hash_count == len(model) <= 3
        assert s.peer_count == sum(len(p) for p in model.values())
