"""Routing table: splitting, states, eviction rules, anti-hijack, closest(), refresh and ping candidates."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kadnode.core.nodeid import ID_BITS, ID_SPACE, bep42_node_id
from kadnode.core.routing import PING_INTERVAL, NodeState, RoutingEntry, RoutingTable
from kadnode.settings import Settings
from kadnode.types import Addr, NodeInfo
from kadnode.wire.compact import encode_nodes

TOP = 1 << (ID_BITS - 1)
PUBLIC_IP = "203.0.113.5"  # TEST-NET-3: not BEP 42 exempt, never contacted


def addr(i: int) -> Addr:
    return (f"127.0.{(i >> 8) & 255}.{i & 255}", 6881)


def node(node_id: int, i: int | None = None) -> NodeInfo:
    return NodeInfo(node_id, addr(node_id % 60000 if i is None else i))


BEP5 = Settings(gossip_enabled=False)
"""Plain BEP 5 eviction (timeouts evict); tests of the gossip mode say so."""


def table(own_id: int = 0, seed: int = 1, **changes: object) -> RoutingTable:
    return RoutingTable(own_id, BEP5.with_changes(**changes), random.Random(seed))


def in_bucket(t: RoutingTable, index: int, low_bits: int) -> int:
    """An ID that falls in bucket ``index`` of ``t`` (``low_bits`` varies it)."""
    low, high = t.bucket_range(index)
    return low + low_bits % (high - low)


def check_invariants(t: RoutingTable) -> None:
    k = t._settings.k
    cache_size = t._settings.replacement_cache_size
    ranges = [t.bucket_range(i) for i in range(t.bucket_count)]
    # Bucket i < last covers 2**(159 - i) IDs; the last one covers all IDs sharing its prefix with ours.
    assert [high - low for low, high in ranges[:-1]] == [1 << (ID_BITS - 1 - i) for i in range(len(ranges) - 1)]
    # Sorted by position, the ranges tile [0, 2**160) with no gap or overlap.
    position = 0
    for low, high in sorted(ranges):
        assert low == position and high > low
        position = high
    assert position == ID_SPACE
    for i, (low, high) in enumerate(ranges):
        live, waiting = t.bucket_entries(i), t.bucket_replacements(i)
        assert len(live) <= k
        assert len(waiting) <= cache_size
        if waiting:
            assert len(live) == k  # replacements wait only behind a full bucket
        for e in live + waiting:
            assert low <= e.id < high and e.id != t.own_id
        assert (low <= t.own_id < high) is (i == t.bucket_count - 1)
    assert len(t) == sum(len(t.bucket_entries(i)) for i in range(t.bucket_count))


# --- splitting --------------------------------------------------------------------------------


def test_split_order_along_own_id() -> None:
    t = table(own_id=0, k=2)
    assert t.bucket_count == 1 and t.bucket_range(0) == (0, ID_SPACE)
    t.heard_from(node(TOP | 1), 0.0, responded=True)
    t.heard_from(node(TOP | 2), 0.0, responded=True)
    assert t.bucket_count == 1
    # Full bucket covering our ID: a third far node splits it, then waits (the far half is full).
    t.heard_from(node(TOP | 3), 0.0, responded=True)
    assert t.bucket_count == 2
    assert t.bucket_range(0) == (TOP, ID_SPACE)
    assert t.bucket_range(1) == (0, TOP)
    assert {e.id for e in t.bucket_entries(0)} == {TOP | 1, TOP | 2}
    assert [e.id for e in t.bucket_replacements(0)] == [TOP | 3]
    assert t.bucket_entries(1) == []
    # Nodes nearer to us fill the last bucket, then split it again.
    quarter = TOP >> 1
    t.heard_from(node(quarter | 1), 0.0, responded=True)
    t.heard_from(node(quarter | 2), 0.0, responded=True)
    assert t.bucket_count == 2
    t.heard_from(node(5), 0.0, responded=True)
    assert t.bucket_count == 3
    assert t.bucket_range(1) == (quarter, TOP)
    assert t.bucket_range(2) == (0, quarter)
    assert [e.id for e in t.bucket_entries(2)] == [5]
    check_invariants(t)


def test_split_stops_at_160_buckets() -> None:
    t = table(own_id=0, k=1)
    for bit in range(ID_BITS - 1, -1, -1):
        t.heard_from(node(1 << bit), 0.0, responded=True)
    assert t.bucket_count == ID_BITS
    assert len(t) == ID_BITS
    t.heard_from(node(3), 0.0, responded=True)  # shares bucket 158 with node 2; nothing left to split
    assert t.bucket_count == ID_BITS
    assert [e.id for e in t.bucket_replacements(158)] == [3]
    check_invariants(t)


def test_split_leaves_replacements_only_behind_full_far_buckets() -> None:
    t = table(own_id=0, k=2)
    t.heard_from(node(TOP | 1), 0.0, responded=True)
    t.heard_from(node((TOP >> 1) | 1), 0.0, responded=True)
    t.heard_from(node(TOP | 2), 0.0, responded=True)  # splits: far half [TOP|1, TOP|2], near half one
    assert t.bucket_count == 2 and t.replacement_count == 0
    t.heard_from(node(TOP | 3), 1.0, responded=True)
    assert [e.id for e in t.bucket_replacements(0)] == [TOP | 3]
    check_invariants(t)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32), n=st.integers(0, 400), k=st.integers(1, 8))
def test_random_inserts_keep_invariants(seed: int, n: int, k: int) -> None:
    rng = random.Random(seed)
    t = table(own_id=rng.getrandbits(ID_BITS), seed=seed, k=k, replacement_cache_size=3)
    for i in range(n):
        # Bias toward our own ID so that deep buckets form.
        node_id = t.own_id ^ (rng.getrandbits(ID_BITS) >> rng.randrange(ID_BITS))
        t.heard_from(node(node_id, i), float(i), responded=rng.random() < 0.7)
        if rng.random() < 0.3 and len(t):
            t.failed(rng.choice(list(t.entries())).id, float(i))
    check_invariants(t)


# --- states, updates, anti-hijack ---------------------------------------------------------------


def test_states_and_updates() -> None:
    s = BEP5
    t = table(own_id=0)
    t.heard_from(node(TOP), 0.0, responded=False)  # only queried us
    e = t.get(TOP)
    assert e is not None and e.last_response is None and e.last_query == 0.0
    assert e.state(0.0, s) is NodeState.QUESTIONABLE
    t.heard_from(node(TOP), 10.0, responded=True, rtt=0.2)
    assert e.state(10.0, s) is NodeState.GOOD and e.rtt == pytest.approx(0.2)
    t.heard_from(node(TOP), 11.0, responded=True, rtt=0.6)
    assert e.rtt == pytest.approx(0.2 + 0.25 * 0.4)
    assert e.state(11.0 + s.good_interval, s) is NodeState.GOOD
    assert e.state(11.1 + s.good_interval, s) is NodeState.QUESTIONABLE
    # A query within good_interval keeps a node that has answered before good.
    t.heard_from(node(TOP), 600.0, responded=False)
    assert e.state(600.0 + s.good_interval - 1, s) is NodeState.GOOD
    t.failed(TOP, 700.0)
    assert e.state(700.0, s) is NodeState.QUESTIONABLE
    t.failed(TOP, 700.0)
    t.failed(TOP, 700.0)
    assert e.failures == s.max_failures and e.state(700.0, s) is NodeState.BAD
    t.heard_from(node(TOP), 701.0, responded=True)
    assert e.failures == 0 and e.state(701.0, s) is NodeState.GOOD


def test_own_id_never_inserted() -> None:
    t = table(own_id=12345)
    t.heard_from(node(12345), 0.0, responded=True)
    assert len(t) == 0 and t.replacement_count == 0
    with pytest.raises(ValueError):
        t.heard_from(node(ID_SPACE), 0.0, responded=True)


def test_address_change_is_ignored_unless_entry_is_bad() -> None:
    t = table(own_id=0)
    t.heard_from(NodeInfo(TOP, addr(1)), 0.0, responded=True)
    t.heard_from(NodeInfo(TOP, addr(2)), 5.0, responded=True)  # forged or moved: ignored
    e = t.get(TOP)
    assert e is not None and e.addr == addr(1) and e.last_response == 0.0
    # A failure reported for the other address does not count against the real entry.
    t.failed(TOP, 6.0, addr=addr(2))
    assert e.failures == 0
    for _ in range(3):
        t.failed(TOP, 7.0, addr=addr(1))
    assert e.failures == 3
    # Once BAD, the ID may move to its new address.
    t.heard_from(NodeInfo(TOP, addr(2)), 8.0, responded=True)
    moved = t.get(TOP)
    assert moved is not None and moved.addr == addr(2) and moved.failures == 0 and moved.last_response == 8.0
    assert len(t) == 1


def test_address_change_in_replacement_cache_is_ignored() -> None:
    t = table(own_id=0, k=1)
    t.heard_from(node(TOP | 1), 0.0, responded=True)
    t.heard_from(NodeInfo(TOP | 2, addr(50)), 1.0, responded=True)
    t.heard_from(NodeInfo(TOP | 2, addr(51)), 2.0, responded=True)
    [waiting] = t.bucket_replacements(0)
    assert waiting.addr == addr(50) and waiting.last_response == 1.0


# --- eviction -----------------------------------------------------------------------------------


def full_far_bucket(k: int = 2) -> RoutingTable:
    """A table whose bucket 0 (the far half) holds k nodes TOP|1..TOP|k, all answered at t=0."""
    t = table(own_id=0, k=k)
    for i in range(1, k + 1):
        t.heard_from(node(TOP | i), 0.0, responded=True)
    t.heard_from(node(1), 0.0, responded=True)  # forces the first split
    assert t.bucket_count == 2 and len(t.bucket_entries(0)) == k
    return t


def test_eviction_needs_max_failures_and_a_waiting_replacement() -> None:
    t = full_far_bucket()
    t.heard_from(node(TOP | 9), 1.0, responded=True)
    assert [e.id for e in t.bucket_replacements(0)] == [TOP | 9]
    t.failed(TOP | 1, 2.0)
    t.failed(TOP | 1, 3.0)
    assert t.get(TOP | 1) is not None  # two failures: still there
    t.failed(TOP | 1, 4.0)
    assert t.get(TOP | 1) is None  # third failure with a replacement waiting: evicted
    assert t.get(TOP | 9) is not None and t.replacement_count == 0
    check_invariants(t)


def test_failing_node_without_replacement_stays_but_leaves_closest() -> None:
    t = full_far_bucket()
    for _ in range(5):
        t.failed(TOP | 1, 2.0)
    bad = t.get(TOP | 1)
    assert bad is not None and bad.state(2.0, t._settings) is NodeState.BAD
    assert TOP | 1 not in [e.id for e in t.closest(TOP | 1, 10)]
    assert TOP | 1 in [n.id for n in [e.node_info() for e in t.entries()]]
    assert TOP | 1 not in [n.id for n in t.to_nodes()]
    # A newcomer takes the BAD node's place directly.
    t.heard_from(node(TOP | 7), 3.0, responded=False)
    assert t.get(TOP | 1) is None and t.get(TOP | 7) is not None
    assert t.replacement_count == 0


def far_bep42_id(ip: str) -> int:
    """A BEP 42-valid ID for ``ip`` that lands in the far half (bucket 0 when our ID is 0)."""
    seed = 0
    while (node_id := bep42_node_id(ip, random.Random(seed))) < TOP:
        seed += 1
    return node_id


def test_promotion_prefers_answered_then_verified_then_recent() -> None:
    t = full_far_bucket(k=1)  # one live slot: each eviction shows which replacement won
    verified_id = far_bep42_id(PUBLIC_IP)
    unverified_ip = "198.51.100.1"  # TEST-NET-2, not exempt
    arrivals = [  # (node, when, answered)
        (node(TOP | 20), 1.0, False),  # exempt (so verified), only queried us
        (NodeInfo(verified_id, (PUBLIC_IP, 6881)), 2.0, False),  # verified, only queried, more recent
        (NodeInfo(TOP | 23, (unverified_ip, 6882)), 3.0, False),  # unverified, most recent query
        (NodeInfo(TOP | 21, (unverified_ip, 6881)), 0.5, True),  # answered, unverified
        (node(TOP | 24), 0.6, True),  # answered, verified
        (node(TOP | 22), 0.7, True),  # answered, verified, most recently
    ]
    for info, when, answered in arrivals:
        t.heard_from(info, when, responded=answered)
    assert t.replacement_count == len(arrivals)
    promoted = []
    for _ in arrivals:
        [victim] = t.bucket_entries(0)
        for _ in range(t._settings.max_failures):
            t.failed(victim.id, 5.0)
        [newcomer] = t.bucket_entries(0)
        promoted.append(newcomer.id)
    assert promoted == [TOP | 22, TOP | 24, TOP | 21, verified_id, TOP | 20, TOP | 23]
    assert t.replacement_count == 0


def test_replacement_cache_is_bounded_and_keeps_the_best() -> None:
    t = full_far_bucket()
    cache = t._settings.replacement_cache_size
    for i in range(cache + 5):
        t.heard_from(node(TOP | (100 + i)), 10.0 + i, responded=True)
    waiting = sorted(e.id for e in t.bucket_replacements(0))
    assert waiting == [TOP | (100 + i) for i in range(5, cache + 5)]  # oldest dropped
    # A stranger that only queried us does not push out nodes that answered.
    t.heard_from(node(TOP | 999), 100.0, responded=False)
    assert TOP | 999 not in [e.id for e in t.bucket_replacements(0)]
    # Hearing from a waiting node again updates it in place.
    t.heard_from(node(TOP | 105), 200.0, responded=True, rtt=0.1)
    [updated] = [e for e in t.bucket_replacements(0) if e.id == TOP | 105]
    assert updated.last_response == 200.0 and updated.rtt == 0.1
    assert t.replacement_count == cache


def test_failures_of_waiting_nodes_drop_them() -> None:
    t = full_far_bucket()
    t.heard_from(node(TOP | 9), 1.0, responded=True)
    t.failed(TOP | 9, 2.0)
    t.failed(TOP | 9, 2.0)
    assert t.replacement_count == 1
    t.failed(TOP | 9, 2.0)
    assert t.replacement_count == 0
    # With nothing waiting, the live node stays no matter how often it fails.
    for _ in range(10):
        t.failed(TOP | 1, 3.0)
    assert t.get(TOP | 1) is not None


def test_remove_promotes_a_replacement() -> None:
    t = full_far_bucket()
    t.heard_from(node(TOP | 9), 1.0, responded=True)
    t.remove(TOP | 1, 2.0)
    assert t.get(TOP | 1) is None and t.get(TOP | 9) is not None
    t.remove(TOP | 9)
    assert len(t.bucket_entries(0)) == 1


def test_enforce_node_id() -> None:
    good_id = bep42_node_id(PUBLIC_IP, random.Random(1))
    bad_id = good_id ^ TOP
    enforcing = table(own_id=0, enforce_node_id=True)
    enforcing.heard_from(NodeInfo(bad_id, (PUBLIC_IP, 1)), 0.0, responded=True)
    assert len(enforcing) == 0
    enforcing.heard_from(NodeInfo(good_id, (PUBLIC_IP, 1)), 0.0, responded=True)
    enforcing.heard_from(NodeInfo(bad_id, ("127.0.0.9", 1)), 0.0, responded=True)  # exempt
    assert len(enforcing) == 2
    lenient = table(own_id=0)
    lenient.heard_from(NodeInfo(bad_id, (PUBLIC_IP, 1)), 0.0, responded=True)
    lenient.heard_from(NodeInfo(good_id, (PUBLIC_IP, 2)), 0.0, responded=True)
    flags = {e.id: e.verified for e in lenient.entries()}
    assert flags == {bad_id: False, good_id: True}


# --- closest ------------------------------------------------------------------------------------


def brute_force_closest(t: RoutingTable, target: int, count: int) -> list[int]:
    alive = [e.id for e in t.entries() if e.failures < t._settings.max_failures]
    return sorted(alive, key=lambda i: i ^ target)[:count]


@settings(max_examples=80, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    n=st.integers(0, 300),
    k=st.integers(1, 8),
    count=st.integers(0, 40),
)
def test_closest_matches_brute_force(seed: int, n: int, k: int, count: int) -> None:
    rng = random.Random(seed)
    t = table(own_id=rng.getrandbits(ID_BITS), seed=seed, k=k)
    for i in range(n):
        node_id = t.own_id ^ (rng.getrandbits(ID_BITS) >> rng.randrange(ID_BITS))
        t.heard_from(node(node_id, i), 0.0, responded=True)
    for e in list(t.entries()):
        if rng.random() < 0.2:
            for _ in range(t._settings.max_failures):
                t.failed(e.id, 1.0)
    targets = [rng.getrandbits(ID_BITS), t.own_id, t.own_id ^ 1]
    targets += [e.id for e in rng.sample(list(t.entries()), min(3, len(t)))]
    targets += [t.own_id ^ (rng.getrandbits(ID_BITS) >> rng.randrange(ID_BITS)) for _ in range(5)]
    for target in targets:
        got = [e.id for e in t.closest(target, count)]
        assert got == brute_force_closest(t, target, count)
    assert [e.id for e in t.closest(targets[0])] == brute_force_closest(t, targets[0], k)


def test_closest_answered_only() -> None:
    t = table(own_id=0)
    t.heard_from(node(TOP | 1), 0.0, responded=False)
    t.heard_from(node(TOP | 2), 0.0, responded=True)
    assert [e.id for e in t.closest(TOP | 1)] == [TOP | 1, TOP | 2]
    assert [e.id for e in t.closest(TOP | 1, answered_only=True)] == [TOP | 2]


# --- refresh and ping candidates ------------------------------------------------------------------


def test_refresh_targets_fall_in_stale_buckets() -> None:
    s = Settings()
    rng = random.Random(4)
    t = RoutingTable(rng.getrandbits(ID_BITS), s, rng, now=0.0)
    for i in range(300):
        t.heard_from(node(t.own_id ^ (rng.getrandbits(ID_BITS) >> rng.randrange(40)), i), 0.0, responded=True)
    assert t.bucket_count > 5
    assert t.refresh_targets(s.bucket_refresh_interval - 1) == []
    # Keep bucket 0 fresh with an answer; every other bucket goes stale.
    fresh = t.bucket_entries(0)[0]
    t.heard_from(fresh.node_info(), 100.0, responded=True)
    later = s.bucket_refresh_interval + 50
    targets = t.refresh_targets(later)
    assert len(targets) == t.bucket_count - 1
    for index, target in zip(range(1, t.bucket_count), targets, strict=True):
        low, high = t.bucket_range(index)
        assert low <= target < high
    assert t.refresh_targets(later + 1) == []  # marked refreshed
    bucket0_refreshed = 100 + s.bucket_refresh_interval
    assert len(t.refresh_targets(bucket0_refreshed)) == 1  # bucket 0's turn
    # A query alone does not count as a change (queries can be forged): bucket 0 is still due.
    t.heard_from(fresh.node_info(), bucket0_refreshed + 100, responded=False)
    assert len(t.refresh_targets(bucket0_refreshed + s.bucket_refresh_interval)) == t.bucket_count


def test_ping_candidates_for_full_bucket_with_waiting_replacements() -> None:
    t = full_far_bucket()
    assert t.ping_candidates(1.0) == []  # all good, nothing waiting
    t.failed(TOP | 2, 1.0)  # questionable now (one failure)
    assert t.ping_candidates(2.0) == []  # nobody is waiting for its slot
    t.heard_from(node(TOP | 9), 3.0, responded=True)
    assert [e.id for e in t.ping_candidates(4.0)] == [TOP | 2]
    assert t.ping_candidates(4.0 + PING_INTERVAL - 1) == []  # not again so soon
    assert [e.id for e in t.ping_candidates(4.0 + PING_INTERVAL)] == [TOP | 2]


def test_ping_candidates_pick_least_recently_answered() -> None:
    s = BEP5
    t = full_far_bucket()
    t.heard_from(node(TOP | 1), 100.0, responded=True)  # TOP|2 last answered at 0
    t.heard_from(node(TOP | 9), 100.0, responded=True)
    now = s.good_interval + 150  # both questionable by age; TOP|2 is older
    first = t.ping_candidates(now)
    assert first[0].id == TOP | 2
    # Then every stale entry (none of these has answered within good_interval).
    assert {e.id for e in first} == {TOP | 1, TOP | 2, 1}
    assert t.ping_candidates(now + 1) == []


def test_ping_candidates_include_never_answered_nodes() -> None:
    t = table(own_id=0)
    t.heard_from(node(TOP), 0.0, responded=False)
    t.heard_from(node(TOP | 1), 0.0, responded=True)
    assert [e.id for e in t.ping_candidates(1.0)] == [TOP]


def test_to_nodes_orders_good_first() -> None:
    t = table(own_id=0)
    t.heard_from(node(TOP | 1), 5.0, responded=False)
    t.heard_from(node(TOP | 2), 1.0, responded=True)
    t.heard_from(node(TOP | 3), 2.0, responded=True)
    t.heard_from(node(TOP | 4), 3.0, responded=True)
    t.failed(TOP | 4, 4.0)
    assert [n.id for n in t.to_nodes()] == [TOP | 3, TOP | 2, TOP | 4, TOP | 1]


def test_entry_is_a_plain_mutable_record() -> None:
    e = RoutingEntry(1, addr(1), 0.0, None, None)
    assert e.failures == 0 and e.rtt is None and not e.verified and e.last_heard == 0.0


def test_heard_from_returns_the_live_entry() -> None:
    t = table(k=2, replacement_cache_size=2)
    first = t.heard_from(node(TOP + 1), 1.0, responded=True)
    assert first is t.get(TOP + 1) and first is not None and first.last_response == 1.0
    assert t.heard_from(node(TOP + 1), 2.0, responded=False) is first and first.last_query == 2.0
    assert t.heard_from(node(TOP + 2), 2.0, responded=False) is t.get(TOP + 2) is not None
    assert t.heard_from(node(TOP + 3), 3.0, responded=True) is None  # bucket full: a replacement
    assert t.heard_from(node(TOP + 3), 4.0, responded=True) is None
    assert t.heard_from(NodeInfo(TOP + 1, addr(999)), 5.0, responded=True) is first  # no hijack
    assert first.addr == node(TOP + 1).addr
    assert t.heard_from(node(0), 5.0, responded=True) is None  # our own ID


def test_entry_compact_is_its_node_info() -> None:
    t = table()
    entry = t.heard_from(NodeInfo(TOP + 5, ("127.0.3.4", 6881)), 1.0, responded=True)
    assert entry is not None
    assert entry.compact == encode_nodes([NodeInfo(TOP + 5, ("127.0.3.4", 6881))])
    assert entry.compact is entry.compact  # encoded once


def test_a_stranger_that_found_no_room_is_turned_away_for_a_minute_unless_it_answers() -> None:
    t = table(own_id=0, k=2, replacement_cache_size=1, max_failures=2)
    for low in (1, 2, 3):  # bucket 0 (far half) full of answering nodes, and its one replacement too
        t.heard_from(node(TOP | low), 0.0, responded=True)
    assert len(t.bucket_replacements(0)) == 1
    stranger = node(TOP | 9)
    assert t.heard_from(stranger, 1.0, responded=False) is None  # no room: turned away
    # Room opens: a live node turns BAD, the waiting replacement takes its place, the cache is empty.
    live = t.bucket_entries(0)[0].id
    t.failed(live, 2.0)
    t.failed(live, 2.0)
    assert t.bucket_replacements(0) == []
    # For a minute the stranger's queries are not examined...
    t.heard_from(stranger, 30.0, responded=False)
    assert t.bucket_replacements(0) == []
    # ...then its query is examined again, and it waits as a replacement.
    t.heard_from(stranger, 61.5, responded=False)
    assert [e.id for e in t.bucket_replacements(0)] == [TOP | 9]
    check_invariants(t)


def test_a_turned_away_stranger_that_answers_us_is_examined_at_once() -> None:
    t = table(own_id=0, k=2, replacement_cache_size=1)
    for low in (1, 2, 3):  # two live nodes and one replacement, all answering
        t.heard_from(node(TOP | low), 0.0, responded=True)
    stranger = node(TOP | 9)
    t.heard_from(stranger, 1.0, responded=False)  # turned away: it cannot outrank a node that answers
    assert TOP | 9 not in [e.id for e in t.bucket_replacements(0)]
    t.heard_from(stranger, 2.0, responded=True)  # its answer is news: it now outranks the replacement
    assert [e.id for e in t.bucket_replacements(0)] == [TOP | 9]
    check_invariants(t)


# --- with liveness gossip: only gossip's verdict evicts ---------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, int, bool]] = []

    def entry_added(self, entry: RoutingEntry) -> None:
        self.events.append(("added", entry.id, False))

    def entry_removed(self, entry: RoutingEntry, evicted: bool) -> None:
        self.events.append(("removed", entry.id, evicted))


def test_with_gossip_timeouts_make_a_node_questionable_never_bad() -> None:
    s = Settings(gossip_enabled=True)
    t = table(gossip_enabled=True)
    ids = [TOP | i for i in range(1, 9)]
    for node_id in ids:
        t.heard_from(node(node_id), 0.0, responded=True)
    t.heard_from(node(TOP | 9), 0.0, responded=True)  # waits as a replacement
    for _ in range(10):
        t.failed(ids[0], 1.0)
    entry = t.get(ids[0])
    assert entry is not None and entry.state(1.0, s) is NodeState.QUESTIONABLE
    assert t.evicted == 0 and len(t.bucket_replacements(0)) == 1
    t.heard_from(node(ids[0]), 2.0, responded=True)
    assert entry.state(2.0, s) is NodeState.GOOD


def test_gossip_eviction_takes_a_waiting_replacement_or_marks_bad() -> None:
    s = Settings(gossip_enabled=True)
    t = table(gossip_enabled=True)
    recorder = Recorder()
    t.listener = recorder
    ids = [TOP | i for i in range(1, 9)]
    for node_id in ids:
        t.heard_from(node(node_id), 0.0, responded=True)
    assert [e for e in recorder.events if e[0] == "added"] == [("added", i, False) for i in ids]
    assert not t.evict(ids[0], 1.0)  # nobody waits: it stays, BAD, out of closest
    entry = t.get(ids[0])
    assert entry is not None and entry.state(1.0, s) is NodeState.BAD
    assert ids[0] not in [e.id for e in t.closest(TOP, 20)]
    assert t.has_room(TOP | 10)
    t.heard_from(node(TOP | 10), 2.0, responded=True)  # a newcomer takes the dead node's place
    assert t.get(ids[0]) is None and t.get(TOP | 10) is not None
    assert recorder.events[-2:] == [("removed", ids[0], True), ("added", TOP | 10, False)]
    t.heard_from(node(TOP | 11), 3.0, responded=True)  # full again: waits as a replacement
    assert not t.has_room(TOP | 12)
    assert t.evict(ids[1], 4.0)
    assert t.get(ids[1]) is None and t.get(TOP | 11) is not None and t.evicted == 2
    t.remove(ids[2])
    assert recorder.events[-1] == ("removed", ids[2], False) and t.evicted == 2


def test_mark_questionable_lasts_until_the_node_answers() -> None:
    s = Settings(gossip_enabled=True)
    t = table(gossip_enabled=True)
    t.heard_from(node(TOP | 1), 0.0, responded=True)
    t.mark_questionable(TOP | 1)
    entry = t.get(TOP | 1)
    assert entry is not None and entry.state(1.0, s) is NodeState.QUESTIONABLE
    t.heard_from(node(TOP | 1), 2.0, responded=False)  # a query is not an answer
    assert entry.state(2.0, s) is NodeState.QUESTIONABLE
    t.heard_from(node(TOP | 1), 3.0, responded=True)
    assert entry.state(3.0, s) is NodeState.GOOD
