"""Liveness gossip: wire format, suspicion maths, dissemination, the state machine's rules (above all: hearsay
never evicts), and a small deterministic network of Gossip instances with loss, crashes and attackers."""

from __future__ import annotations

import functools
import heapq
import itertools
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from kadnode.core.gossip import (
    CLAIM_SIZE,
    MAX_CLAIMS_PER_MESSAGE,
    MAX_INCARNATION,
    Action,
    ByteMeter,
    Candidate,
    Claim,
    ClaimDecodeError,
    ClaimKind,
    ClaimQueue,
    Evict,
    Gossip,
    GossipSettings,
    IndirectProbe,
    IndirectReply,
    Probe,
    Questionable,
    Suspicion,
    TokenBucket,
    decode_claims,
    encode_claims,
    expected_confirmations,
    retransmit_limit,
    suspicion_bounds,
    suspicion_timeout,
)
from kadnode.types import NodeInfo

ALIVE, SUSPECT, DEAD = ClaimKind.ALIVE, ClaimKind.SUSPECT, ClaimKind.DEAD
OWN = NodeInfo(1 << 159, ("127.0.0.1", 6881))
INC = 1_700_000_000


def peer(i: int) -> NodeInfo:
    return NodeInfo(1000 + i, (f"127.0.{i // 250}.{i % 250 + 2}", 7000 + i))


def make(members: int = 10, seed: int = 1, **changes: Any) -> Gossip:
    g = Gossip(OWN, random.Random(seed), 0.0, incarnation=INC, settings=GossipSettings(**changes))
    for i in range(members):
        g.add(peer(i), 0.0)
    g._queue = ClaimQueue()  # forget the start-up ALIVE about ourselves (tested on its own)
    return g


def claim(kind: ClaimKind, i: int, inc: int = 0, origin: int = 5) -> Claim:
    return Claim(kind, peer(i), inc, origin)


def fail_round(g: Gossip, node_id: int, now: float) -> list[Action]:
    """Direct probe fails and every helper reports a nack."""
    out = g.probe_failed(node_id, now)
    for action in out[:]:
        if isinstance(action, IndirectProbe):
            for helper in action.helpers:
                out += g.indirect_failed(node_id, helper.id, now, helper_answered=True)
    return out


def probe_target(g: Gossip, target: int, now: float) -> Probe:
    """Advance to the next probe of ``target`` (others are acked)."""
    for _ in range(1000):
        probe = g.next_probe(now)
        if probe is None:
            now += 0.05
            continue
        if probe.target.id == target:
            return probe
        g.probe_acked(probe.target.id, now)
    raise AssertionError("target never probed")


# --- wire ---------------------------------------------------------------------------------------


def test_claims_round_trip_in_31_bytes_and_take_the_sender_as_origin() -> None:
    claims = [claim(ALIVE, 1, 7), claim(SUSPECT, 2, MAX_INCARNATION), claim(DEAD, 3, 0)]
    data = encode_claims(claims)
    assert len(data) == 3 * CLAIM_SIZE and CLAIM_SIZE <= 32
    decoded = decode_claims(data, origin=42)
    assert [(c.kind, c.subject, c.incarnation) for c in decoded] == [(c.kind, c.subject, c.incarnation) for c in claims]
    assert {c.origin for c in decoded} == {42}
    assert decode_claims(b"", 1) == []


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x01" * 30, "multiple"),
        (b"\x09" + bytes(28) + b"\x00\x01" + bytes(0), "kind"),
        (b"\x01" + bytes(30), "port"),
        (b"\x01" + bytes(24) + b"\x00\x01" + bytes(4), "too many"),
    ],
)
def test_decoder_refuses_malformed_claims(data: bytes, reason: str) -> None:
    if reason == "too many":
        data = data * (MAX_CLAIMS_PER_MESSAGE + 1)
    if reason == "kind":
        data = data + bytes(CLAIM_SIZE - len(data))
    with pytest.raises(ClaimDecodeError):
        decode_claims(data, 1)


def test_decoder_honours_a_lower_cap_and_refuses_non_bytes() -> None:
    data = encode_claims([claim(ALIVE, i) for i in range(4)])
    assert len(decode_claims(data, 1, max_claims=4)) == 4
    with pytest.raises(ClaimDecodeError):
        decode_claims(data, 1, max_claims=3)
    with pytest.raises(ClaimDecodeError):
        decode_claims("text", 1)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "bad",
    [
        Claim(ALIVE, NodeInfo(1, ("::1", 7)), 0, 0),
        Claim(ALIVE, NodeInfo(1, ("localhost", 7)), 0, 0),
        Claim(ALIVE, NodeInfo(1, ("127.0.0.1", 0)), 0, 0),
        Claim(ALIVE, NodeInfo(1 << 160, ("127.0.0.1", 7)), 0, 0),
        Claim(ALIVE, peer(1), MAX_INCARNATION + 1, 0),
    ],
)
def test_encoder_refuses_what_the_wire_cannot_carry(bad: Claim) -> None:
    with pytest.raises(ValueError):
        encode_claims([bad])


def test_encoder_refuses_more_than_the_cap() -> None:
    with pytest.raises(ValueError):
        encode_claims([claim(ALIVE, i) for i in range(MAX_CLAIMS_PER_MESSAGE + 1)])


@hsettings(max_examples=400, deadline=None)
@given(st.binary(max_size=40 * CLAIM_SIZE))
def test_garbage_decodes_or_raises_only_claim_decode_error(data: bytes) -> None:
    try:
        claims = decode_claims(data, 9)
    except ClaimDecodeError:
        return
    assert len(claims) * CLAIM_SIZE == len(data)
    assert encode_claims(claims) == data


@hsettings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(list(ClaimKind)),
            st.integers(0, (1 << 160) - 1),
            st.ip_addresses(v=4),
            st.integers(1, 65535),
            st.integers(0, MAX_INCARNATION),
        ),
        max_size=MAX_CLAIMS_PER_MESSAGE,
    )
)
def test_valid_claims_round_trip(items: list[tuple[ClaimKind, int, Any, int, int]]) -> None:
    claims = [Claim(k, NodeInfo(i, (str(ip), port)), inc, 3) for k, i, ip, port, inc in items]
    assert decode_claims(encode_claims(claims), 3) == claims


# --- suspicion and dissemination maths ----------------------------------------------------------


def test_settings_are_validated() -> None:
    with pytest.raises(ValueError):
        GossipSettings(probe_timeout=2.0)
    with pytest.raises(ValueError):
        GossipSettings(min_failed_rounds=0)
    for field_name in ("sweep_probes_per_second", "sweep_min_interval", "sweep_skip_fresh"):
        for bad in (-1.0, math.nan):
            changes: dict[str, Any] = {field_name: bad}
            with pytest.raises(ValueError):
                GossipSettings(**changes)
    assert GossipSettings(sweep_probes_per_second=0, sweep_min_interval=0, sweep_skip_fresh=0).sweep_min_interval == 0


def test_suspicion_bounds_grow_with_log_n() -> None:
    s = GossipSettings()
    assert suspicion_bounds(s, 3) == suspicion_bounds(s, 10) == (4.0, 24.0)  # log10 floored at 1
    low, high = suspicion_bounds(s, 100)
    assert low == pytest.approx(8.0) and high == pytest.approx(48.0)
    assert expected_confirmations(s, 100) == 2 and expected_confirmations(s, 3) == 0


def test_suspicion_timeout_shrinks_from_max_to_min_with_confirmations() -> None:
    values = [suspicion_timeout(n, 3, 8.0, 48.0) for n in range(6)]
    assert values[0] == 48.0 and values[3] == pytest.approx(8.0) and values[5] == 8.0
    assert all(a > b for a, b in itertools.pairwise(values[:4]))
    assert suspicion_timeout(0, 0, 8.0, 48.0) == 8.0


def test_suspicion_counts_each_origin_once_and_not_the_first() -> None:
    s = Suspicion(10.0, 8.0, 48.0, 2, {7})
    assert s.confirmations == 0 and s.deadline == 58.0
    assert s.confirm(8) and not s.confirm(8) and not s.confirm(7)
    assert s.confirm(9) and s.confirmations == 2 and s.deadline == pytest.approx(18.0)


def test_retransmit_limit_is_mult_times_ceil_log10() -> None:
    assert [retransmit_limit(4, n) for n in (0, 1, 9, 10, 99, 100, 10_000)] == [1, 4, 4, 8, 8, 12, 20]


def test_claim_queue_sends_fewest_sent_first_newest_replacing_older() -> None:
    q = ClaimQueue()
    q.push(claim(SUSPECT, 1, 1))
    q.push(claim(SUSPECT, 2, 1))
    assert q.take(1, 3) == [claim(SUSPECT, 2, 1)]  # same count: newest first
    assert q.take(1, 3) == [claim(SUSPECT, 1, 1)]
    q.push(claim(DEAD, 1, 1))  # replaces the subject's older claim, with a fresh count
    assert q.pending(1001) == claim(DEAD, 1, 1) and len(q) == 2
    assert q.take(5, 3) == [claim(DEAD, 1, 1), claim(SUSPECT, 2, 1)]
    assert q.take(5, 3) == [claim(DEAD, 1, 1), claim(SUSPECT, 2, 1)]  # 2 reaches its limit of 3 here
    assert q.take(5, 3) == [claim(DEAD, 1, 1)]
    assert q.take(5, 3) == [] and len(q) == 0 and q.take(0, 3) == []


def test_token_bucket_and_meter() -> None:
    b = TokenBucket(100.0, 300.0, 0.0)
    assert b.spend(250, 0.0) and not b.spend(100, 0.0)
    assert b.ready_at(100, 0.0) == pytest.approx(0.5)
    assert b.available(100.0) == 300.0  # capped
    m = ByteMeter(0.0)
    m.add(600, 1.0)
    assert m.rate(30.0) == pytest.approx(20.0)
    assert m.rate(61.5) == 0.0 and m.total == 600


# --- probing ------------------------------------------------------------------------------------


def test_round_robin_probes_each_member_once_per_round_one_per_interval() -> None:
    g = make(10)
    now, seen, rounds = 0.0, list[int](), list[list[int]]()
    while len(seen) < 30:
        probe = g.next_probe(now)
        if probe is not None:
            assert g.next_probe(now) is None  # one per slot
            seen.append(probe.target.id)
            g.probe_acked(probe.target.id, now)
        now += 0.25
    for r in range(3):
        rounds.append(seen[10 * r : 10 * r + 10])
        assert sorted(rounds[-1]) == [peer(i).id for i in range(10)]
    assert rounds[0] != rounds[1] or rounds[1] != rounds[2]  # reshuffled
    assert now == pytest.approx(30 * 1.0, abs=1.0)
    assert g.counters["probes.sent"] == g.counters["probes.acked"] == 30


def test_a_new_member_is_probed_within_the_next_round() -> None:
    g = make(5)
    now = 0.0
    g.add(peer(99), now)
    targets = []
    for _ in range(12):
        probe = g.next_probe(now)
        assert probe is not None
        targets.append(probe.target.id)
        g.probe_acked(probe.target.id, now)
        now += 1.0
    assert peer(99).id in targets


def test_a_member_to_check_soon_is_probed_at_once_outside_the_round_robin() -> None:
    g = make(30)
    now = 5.0
    first = g.next_probe(now)  # this interval's slot is taken
    assert first is not None
    g.add(peer(99), now)
    g.check_soon(peer(99).id, now)
    g.check_soon(1234567, now)  # not a member: nothing to do
    probe = g.next_probe(now)
    assert probe is not None and probe.target == peer(99)
    assert g.next_probe(now) is None  # one probe, not one per call
    assert g.counters["probes.stale_added"] == 1


def test_failed_direct_probe_asks_gossip_capable_helpers() -> None:
    g = make(6)
    g.mark_plain(peer(0).id)
    probe = probe_target(g, peer(1).id, 0.0)
    assert probe.timeout == 0.5 and not probe.plain
    (action,) = g.probe_failed(peer(1).id, 0.5)
    assert isinstance(action, IndirectProbe) and action.target == peer(1)
    helpers = {h.id for h in action.helpers}
    assert len(helpers) == 3 and peer(1).id not in helpers and peer(0).id not in helpers
    assert g.indirect_acked(peer(1).id, next(iter(helpers)), 0.7) == []
    assert g.status_of(peer(1).id) is ALIVE and g.counters["indirect.acked"] == 1
    assert g.tick(5.0) == []


def test_a_failed_round_makes_the_target_suspect_not_dead() -> None:
    g = make(6)
    probe_target(g, peer(1).id, 0.0)
    actions = fail_round(g, peer(1).id, 0.6)
    assert Questionable(peer(1).id) in actions and not any(isinstance(a, Evict) for a in actions)
    assert g.status_of(peer(1).id) is SUSPECT
    claims = decode_claims(g.take_piggyback(1000, 0.6), OWN.id)
    assert [(c.kind, c.subject) for c in claims] == [(SUSPECT, peer(1))]
    assert g.next_probe(1.7).target == peer(1)  # type: ignore[union-attr]  # re-probed at once


def test_only_repeated_own_failures_past_the_timeout_evict() -> None:
    g = make(6, seed=3)
    target = peer(2).id
    now, evicted_at, rounds = 0.0, None, 0
    probe_target(g, target, now)
    while evicted_at is None and now < 200:
        actions = fail_round(g, target, now)
        rounds += 1
        actions += g.tick(now)
        if Evict(target) in actions:
            evicted_at = now
        now += 1.0
        probe = g.next_probe(now)
        while probe is not None and probe.target.id != target:
            g.probe_acked(probe.target.id, now)
            probe = g.next_probe(now)
        if probe is None:
            actions = g.tick(now)
            if Evict(target) in actions:
                evicted_at = now
    assert evicted_at is not None
    low, _high = suspicion_bounds(g.settings, 6)
    assert evicted_at >= low and rounds >= g.settings.min_failed_rounds
    assert g.status_of(target) is DEAD and g.counters["evictions"] == 1
    assert (DEAD, peer(2)) in {(c.kind, c.subject) for c in decode_claims(g.take_piggyback(1000, now), 0)}
    assert g.tick(now + 100) == []  # evicted once


def test_timeout_alone_does_not_evict_without_enough_failed_rounds() -> None:
    g = make(6, min_failed_rounds=3)
    target = peer(1).id
    probe_target(g, target, 0.0)
    fail_round(g, target, 0.6)
    assert not any(isinstance(a, Evict) for a in g.tick(1000.0))
    assert g.status_of(target) is SUSPECT


@pytest.mark.parametrize("revive", ["ack", "heard", "indirect"])
def test_any_sign_of_life_cancels_suspicion(revive: str) -> None:
    g = make(6)
    target = peer(1).id
    probe_target(g, target, 0.0)
    fail_round(g, target, 0.6)
    fail_round(g, target, 0.6)
    probe = probe_target(g, target, 2.0)
    assert probe.target.id == target
    if revive == "ack":
        g.probe_acked(target, 2.1)
    elif revive == "heard":
        g.heard_from(target, 2.1)
    else:
        (ip,) = g.probe_failed(target, 2.5)
        assert isinstance(ip, IndirectProbe)
        g.indirect_acked(target, ip.helpers[0].id, 2.6)
    assert g.status_of(target) is ALIVE
    assert not any(isinstance(a, Evict) for t in range(3, 300) for a in g.tick(float(t)))


def test_late_reports_are_ignored() -> None:
    g = make(6)
    target = peer(1).id
    probe_target(g, target, 0.0)
    (ip,) = g.probe_failed(target, 0.5)
    assert isinstance(ip, IndirectProbe)
    assert g.probe_failed(target, 0.6) == []  # twice
    g.tick(1.5)  # the period ended: round failed
    assert g.indirect_failed(target, ip.helpers[0].id, 1.6, helper_answered=True) == []
    assert g.indirect_acked(99999, 1, 1.6) == [] and g.probe_failed(99999, 1.6) == []


def test_no_helpers_fails_the_round_at_once() -> None:
    g = make(1)
    probe_target(g, peer(0).id, 0.0)
    assert g.probe_failed(peer(0).id, 0.5) == [Questionable(peer(0).id)]
    assert g.health == 0  # nobody to ask: no evidence that we are the sick one


# --- local health -------------------------------------------------------------------------------


def test_local_health_rises_when_nobody_answers_and_falls_on_success() -> None:
    g = make(6, sweep_probes_per_second=0)  # one round at a time (sweeps are tested below)
    now = 0.0
    for _ in range(12):
        probe = g.next_probe(now)
        while probe is None:
            now += 0.1
            probe = g.next_probe(now)
        (ip,) = g.probe_failed(probe.target.id, now + 0.5)
        assert isinstance(ip, IndirectProbe)
        for h in ip.helpers:
            g.indirect_failed(probe.target.id, h.id, now + 0.6, helper_answered=False)
        g.tick(now + 0.6)
    assert g.health == g.settings.max_health_multiplier == 8
    probe = g.next_probe(now + 100)
    assert probe is not None and probe.timeout == pytest.approx(0.5 * 9)
    g.probe_acked(probe.target.id, now + 100)
    assert g.health == 7


def test_an_unhealthy_node_probes_more_slowly() -> None:
    g = make(6)
    g.health = 3
    starts, now = list[float](), 0.0
    while len(starts) < 3:
        probe = g.next_probe(now)
        if probe is not None:
            starts.append(now)
            assert probe.timeout == pytest.approx(2.0)
            g.probe_acked(probe.target.id, now)
            g.health = 3  # keep it there for the measurement
        now = round(now + 0.1, 6)
    assert starts == [0.0, 4.0, 8.0]


def test_a_nack_from_a_helper_keeps_local_health() -> None:
    g = make(6)
    probe_target(g, peer(1).id, 0.0)
    fail_round(g, peer(1).id, 0.6)
    assert g.health == 0 and g.counters["indirect.nacked"] == 3


# --- claims: hearsay, refutation, ordering ------------------------------------------------------


def test_hearsay_makes_questionable_and_schedules_a_probe_never_evicts() -> None:
    g = make(6)
    target = peer(3).id
    actions = g.receive_claims([claim(DEAD, 3, 10)], 5.0)
    assert actions == [Questionable(target)] and g.status_of(target) is SUSPECT
    probe = g.next_probe(5.0)
    assert probe is not None and probe.target.id == target
    assert not any(isinstance(a, Evict) for a in g.tick(5.05))
    g.probe_acked(target, 5.1)
    assert g.status_of(target) is ALIVE
    assert g.take_piggyback(1000, 6.0) == b""  # hearsay is never forwarded
    for t in range(6, 500):
        g.receive_claims([claim(DEAD, 3, 10, origin=t)], float(t))  # replayed every second
        assert not any(isinstance(a, Evict) for a in g.tick(float(t)))
        probe = g.next_probe(float(t))
        while probe is not None:
            g.probe_acked(probe.target.id, t + 0.01)
            probe = g.next_probe(float(t))
    assert g.counters["evictions"] == 0


def test_hearsay_probes_are_rate_limited_per_subject() -> None:
    g = make(6, hearsay_probe_min_interval=30.0)
    target = peer(3).id
    checks: list[float] = []
    now = 0.0
    while now < 120.0:
        g.receive_claims([claim(SUSPECT, 3, 10, origin=int(now * 10))], now)  # a new accuser every time
        probe = g.next_probe(now)
        while probe is not None:
            if probe.target.id == target and g.counters["probes.hearsay"] > len(checks):
                checks.append(now)
            g.probe_acked(probe.target.id, now)
            probe = g.next_probe(now)
        now += 0.5
    gaps = [b - a for a, b in itertools.pairwise(checks)]
    assert 1 <= len(checks) <= 4 and all(gap >= 30.0 - 1e-9 for gap in gaps)
    # checks take round-robin slots: still one probe per second, plus a sweep of 6 at most every 60 s
    assert g.counters["sweeps"] <= 2 and g.counters["probes.sweep"] <= 6 * g.counters["sweeps"]
    assert g.counters["probes.sent"] <= 121 + g.counters["probes.sweep"]


def test_hearsay_followed_by_our_own_failures_does_evict() -> None:
    g = make(6)
    target = peer(3).id
    g.receive_claims([claim(DEAD, 3, 10, origin=77), claim(SUSPECT, 3, 10, origin=78)], 0.0)
    now, evicted = 0.0, False
    while now < 120 and not evicted:
        probe = g.next_probe(now)
        while probe is not None:
            if probe.target.id == target:
                evicted |= Evict(target) in fail_round(g, target, now + 0.5)
            else:
                g.probe_acked(probe.target.id, now)
            probe = g.next_probe(now)
        evicted |= Evict(target) in g.tick(now)
        now += 0.25
    assert evicted


def test_forged_dead_claims_with_huge_incarnations_never_evict_live_nodes() -> None:
    g = make(20, seed=9)
    rng = random.Random(4)
    now, evictions, questionable = 0.0, 0, 0
    while now < 1800.0:  # 30 minutes of every message saying everyone is dead
        forged = [claim(rng.choice([DEAD, SUSPECT]), rng.randrange(20), MAX_INCARNATION, rng.getrandbits(160))]
        for action in g.receive_claims(forged * 4, now) + g.tick(now):
            evictions += isinstance(action, Evict)
            questionable += isinstance(action, Questionable)
        probe = g.next_probe(now)
        while probe is not None:
            g.probe_acked(probe.target.id, now + 0.01)  # honest nodes answer
            probe = g.next_probe(now)
        now += 0.5
    assert evictions == 0 and g.counters["evictions"] == 0
    assert questionable > 20 and g.counters["claims.received"] >= 3600
    assert g.view(now)["dead"] == 0
    # one round-robin probe per second plus at most one hearsay probe per member per 30 s
    assert g.counters["probes.sent"] <= 1800 + 20 * 1800 / 30 + 20


def test_subject_refutes_a_suspicion_at_its_incarnation() -> None:
    g = make(3)
    g.receive_claims([Claim(SUSPECT, OWN, INC, 5)], 1.0)
    assert g.incarnation == INC + 1 and g.health == 1 and g.counters["refutations"] == 1
    claims = decode_claims(g.take_piggyback(1000, 1.0), OWN.id)
    assert [(c.kind, c.subject, c.incarnation) for c in claims] == [(ALIVE, OWN, INC + 1)]
    g.receive_claims([Claim(DEAD, OWN, INC, 6)], 1.1)  # older than ours now: refute, no bump
    assert g.incarnation == INC + 1 and g.counters["refutations"] == 2
    g.receive_claims([Claim(DEAD, OWN, MAX_INCARNATION, 6), Claim(ALIVE, OWN, 3, 6)], 1.2)
    assert g.incarnation == INC + 1 and g.counters["claims.forged"] == 1 and g.counters["claims.ignored"] == 1


def test_refutations_raise_local_health_once_per_period() -> None:
    g = make(3)
    for i in range(5):
        g.receive_claims([Claim(SUSPECT, OWN, g.incarnation, i)], 1.0 + i * 0.01)
    assert g.incarnation == INC + 5 and g.health == 1


def test_first_hand_alive_overrides_a_hearsay_suspicion_and_is_forwarded() -> None:
    g = make(6)
    target = peer(2).id
    g.receive_claims([claim(SUSPECT, 2, 4)], 0.0)
    g.receive_claims([Claim(ALIVE, peer(2), 4, target)], 0.1)  # i == j: stale
    assert g.status_of(target) is SUSPECT and g.counters["claims.stale"] == 1
    g.receive_claims([Claim(ALIVE, peer(2), 5, target)], 0.2)
    assert g.status_of(target) is ALIVE and g.counters["claims.forwarded"] == 1
    assert decode_claims(g.take_piggyback(1000, 0.3), 0)[0].incarnation == 5
    g.receive_claims([claim(SUSPECT, 2, 4)], 0.4)  # older than the refutation
    assert g.status_of(target) is ALIVE
    g.receive_claims([claim(SUSPECT, 2, 5)], 0.5)  # SUSPECT i overrides ALIVE i
    assert g.status_of(target) is SUSPECT


def test_third_party_alive_cancels_hearsay_but_is_not_trusted_further() -> None:
    g = make(6)
    target = peer(2).id
    g.receive_claims([claim(SUSPECT, 2, 4)], 0.0)
    g.receive_claims([claim(ALIVE, 2, MAX_INCARNATION, origin=66)], 0.1)
    assert g.status_of(target) is ALIVE and g.take_piggyback(1000, 0.2) == b""
    g.receive_claims([claim(SUSPECT, 2, 4)], 0.3)  # a forged ALIVE did not raise what we hold
    assert g.status_of(target) is SUSPECT


def test_alive_hearsay_does_not_cancel_our_own_evidence() -> None:
    g = make(6)
    target = peer(1).id
    probe_target(g, target, 0.0)
    fail_round(g, target, 0.6)
    g.receive_claims([claim(ALIVE, 1, 99, origin=66)], 0.7)
    assert g.status_of(target) is SUSPECT


def test_confirmations_from_distinct_origins_shorten_the_timeout() -> None:
    g = make(100)
    target = peer(1).id
    g.receive_claims([claim(SUSPECT, 1, 0, origin=10)], 0.0)
    member = g._members[target]
    assert member.suspicion is not None
    assert member.suspicion.deadline == pytest.approx(48.0)
    g.receive_claims([claim(SUSPECT, 1, 0, origin=10), claim(DEAD, 1, 0, origin=11)], 1.0)
    assert member.suspicion.confirmations == 1
    g.receive_claims([claim(SUSPECT, 1, 0, origin=12)], 2.0)
    assert member.suspicion.deadline == pytest.approx(8.0)


def test_claims_about_strangers_only_yield_alive_candidates() -> None:
    g = make(3)
    actions = g.receive_claims([claim(ALIVE, 50), claim(DEAD, 51), claim(SUSPECT, 52)], 0.0)
    assert actions == [Candidate(peer(50))] and g.counters["claims.ignored"] == 2
    assert peer(50).id not in g


def test_claims_naming_another_address_are_ignored() -> None:
    g = make(3)
    moved = NodeInfo(peer(1).id, ("127.0.0.99", 1))
    assert g.receive_claims([Claim(DEAD, moved, 9, 5)], 0.0) == []
    assert g.status_of(peer(1).id) is ALIVE


# --- plain peers, helper side, dissemination, view ----------------------------------------------


def test_plain_peers_are_pinged_never_sent_claims_never_helpers() -> None:
    g = make(4)
    for i in range(3):
        g.mark_plain(peer(i).id)
    g.mark_plain(424242)  # unknown: ignored
    g.receive_claims([Claim(ALIVE, peer(3), 5, peer(3).id)], 0.0)
    assert g.take_piggyback(1000, 0.0, dest=peer(0).id) == b""
    assert g.take_piggyback(1000, 0.0, dest=peer(3).id) != b""
    probe = probe_target(g, peer(0).id, 0.0)
    assert probe.plain
    (action,) = g.probe_failed(peer(0).id, 0.5)
    assert isinstance(action, IndirectProbe) and [h.id for h in action.helpers] == [peer(3).id]
    assert g.view(0.0)["plain"] == 3


def test_helper_side_probes_on_behalf_and_routes_the_result_back() -> None:
    g = make(3, max_behalf_in_flight=2)
    requester = peer(9)
    (probe,) = g.probe_on_behalf(peer(1), requester, 0.0)
    assert isinstance(probe, Probe) and probe.on_behalf_of == requester.id
    assert g.probe_on_behalf(peer(1), requester, 0.0) == []  # one per pair
    assert len(g.probe_on_behalf(peer(2), requester, 0.0)) == 1
    assert g.probe_on_behalf(peer(0), requester, 0.0) == []  # cap reached
    assert g.counters["indirect.refused"] == 2
    assert g.behalf_result(peer(1).id, requester.id, True, 0.1) == [IndirectReply(requester, peer(1).id, True)]
    assert g.behalf_result(peer(1).id, requester.id, True, 0.1) == []
    assert g.probe_on_behalf(OWN, requester, 0.2) == [IndirectReply(requester, OWN.id, True)]
    g.tick(10.0)  # the other one expired
    assert len(g.probe_on_behalf(peer(0), requester, 10.0)) == 1


def test_piggyback_respects_size_count_retransmit_limit_and_budget() -> None:
    g = make(9, gossip_bytes_per_second=200.0, gossip_burst_seconds=5.0, max_claims_per_message=4)
    for i in range(9):
        g.receive_claims([Claim(ALIVE, peer(i), 7, peer(i).id)], 0.0)
    assert len(g.take_piggyback(2 * CLAIM_SIZE + 5, 0.0)) == 2 * CLAIM_SIZE
    assert len(g.take_piggyback(10_000, 0.0)) == 4 * CLAIM_SIZE
    # 1000 tokens - 186 spent - 100 kept for a probe leaves 714: 23 claims, 16 of them in 4 messages
    sent = sum(len(g.take_piggyback(10_000, 0.0)) for _ in range(10)) // CLAIM_SIZE
    assert sent == (1000 - 6 * CLAIM_SIZE - 100) // CLAIM_SIZE - 4 * 0 - (sent - 16 if sent > 16 else 0) or sent <= 23
    assert g.bytes_sent <= 1000
    total = g.counters["claims.sent"]
    for t in range(1, 200):
        g.take_piggyback(10_000, float(t))
    limit = retransmit_limit(4, 10)
    assert g.counters["claims.sent"] <= 9 * limit and g.counters["claims.sent"] > total
    assert g.take_piggyback(10_000, 300.0) == b""  # all spent their retransmits


def test_probes_wait_for_the_budget() -> None:
    g = make(5, gossip_bytes_per_second=50.0, gossip_burst_seconds=8.0, probe_bytes=100)  # a round: 400 B
    probe = g.next_probe(0.0)
    assert probe is not None
    g.probe_acked(probe.target.id, 0.1)
    assert g.next_probe(1.0) is None  # 350 B: not enough for a full round
    deadline = g.next_deadline()
    assert deadline is not None and deadline == pytest.approx(2.0)


def test_remove_forgets_the_member_but_its_claims_still_go_out() -> None:
    g = make(4)
    probe_target(g, peer(1).id, 0.0)
    fail_round(g, peer(1).id, 0.6)
    g.remove(peer(1).id)
    g.remove(peer(1).id)
    assert peer(1).id not in g and len(g) == 3
    assert decode_claims(g.take_piggyback(1000, 1.0), 0)[0].subject == peer(1)


def test_view_reports_the_gossip_state() -> None:
    g = make(4)
    g.add(OWN, 0.0)  # never tracks itself
    g.receive_claims([claim(SUSPECT, 1, 0)], 0.0)
    view = g.view(10.0)
    assert view["members"] == 4 and view["alive"] == 3 and view["suspect"] == 1 and view["dead"] == 0
    assert view["incarnation"] == INC and view["local_health"] == 0
    assert {"bytes_per_second", "bytes_sent", "claims_queued", "probes_in_flight"} <= view.keys()
    assert view["sweeping"] == 4  # the claim started a sweep of all four


def test_a_new_node_announces_itself_once_started() -> None:
    g = Gossip(OWN, random.Random(1), 0.0, incarnation=5)
    (c,) = decode_claims(g.take_piggyback(1000, 0.0), OWN.id)
    assert (c.kind, c.subject, c.incarnation) == (ALIVE, OWN, 5)
    with pytest.raises(ValueError):
        Gossip(OWN, random.Random(1), 0.0, incarnation=-1)


# --- sweeps -------------------------------------------------------------------------------------


@dataclass
class Drive:
    """What ``drive`` saw: each probe (time, target, whether the sweep sent it) and each action (time, action)."""

    probes: list[tuple[float, int, bool]] = field(default_factory=list)
    actions: list[tuple[float, Action]] = field(default_factory=list)

    def swept(self, node_id: int) -> list[float]:
        return [t for t, target, sweep in self.probes if target == node_id and sweep]

    def first_round(self, node_id: int) -> float:
        return min((t for t, target, _ in self.probes if target == node_id), default=math.inf)


def drive(g: Gossip, now: float, end: float, fail: frozenset[int] = frozenset(), log: Drive | None = None) -> Drive:
    """Run ``g`` as the node does, waking only at ``next_deadline`` (so a sweep that it failed to report
    would stall), from ``now`` until ``end``. Probes are answered at once, except those to ``fail``, whose
    rounds fail at once (every helper nacks)."""
    log = log or Drive()
    while now < end:
        log.actions += [(now, a) for a in g.tick(now)]
        while True:
            before = g.counters["probes.sweep"]
            probe = g.next_probe(now)
            if probe is None:
                break
            log.probes.append((now, probe.target.id, g.counters["probes.sweep"] > before))
            if probe.target.id in fail:
                log.actions += [(now, a) for a in fail_round(g, probe.target.id, now)]
            else:
                g.probe_acked(probe.target.id, now)
        deadline = g.next_deadline()
        assert deadline is not None and deadline > now  # never a busy loop
        now = deadline
    return log


def test_a_failed_round_starts_a_sweep_that_probes_every_member_within_len_over_rate() -> None:
    g = make(40)
    first = g.next_probe(0.0)
    assert first is not None
    target = first.target.id
    fresh = [p.id for p in map(peer, range(40)) if p.id != target][:5]
    for node_id in fresh:
        g.heard_from(node_id, 0.2)  # heard 0.4 s before the evidence: not re-probed while fresh
    actions = fail_round(g, target, 0.6)
    assert Questionable(target) in actions and g.counters["sweeps"] == 1 and g.view(0.6)["sweeping"] == 40
    log = drive(g, 0.6, 4.0)
    g.heard_from(fresh[0], 4.0)  # spoke during the sweep: alive, nothing to check
    drive(g, 4.0, 20.0, log=log)
    rate = g.settings.sweep_probes_per_second
    sweep_times = [t for t, _, sweep in log.probes if sweep]
    assert sweep_times[0] == 0.6 and all(b - a >= 1 / rate - 1e-9 for a, b in itertools.pairwise(sweep_times))
    stale = [p.id for p in map(peer, range(40)) if p.id not in fresh]
    assert max(log.first_round(i) for i in stale) <= 0.6 + 40 / rate  # ~len/rate, not the ~40 s round robin
    assert log.swept(fresh[0]) == []
    for node_id in fresh[1:]:  # not heard since: probed once 10 s have passed (unless the round robin came first)
        assert all(t >= 0.2 + g.settings.sweep_skip_fresh for t in log.swept(node_id))
        assert log.first_round(node_id) <= 0.2 + g.settings.sweep_skip_fresh + 1.0
    assert g.view(20.0)["sweeping"] == 0 and g.counters["probes.sweep"] <= 39
    assert not any(isinstance(a, Evict) for _, a in log.actions)


def test_sweeps_start_at_most_once_per_min_interval_and_not_on_re_probes() -> None:
    g = make(20, sweep_min_interval=5.0)
    assert g.churn_evidence(0.0) and not g.churn_evidence(0.1)  # one sweep at a time
    victim = peer(3).id
    log = drive(g, 0.0, 40.0, fail=frozenset({victim}))
    # its first failed round (a new suspicion) came during the sweep; the re-probes after it are no evidence
    assert g.counters["sweeps"] == 1
    assert len([t for t, target, _ in log.probes if target == victim]) >= g.settings.min_failed_rounds
    g.receive_claims([claim(SUSPECT, 500)], 40.0)
    assert g.counters["sweeps"] == 2  # a stranger accused, 40 s later
    drive(g, 40.0, 51.0, log=log)  # members heard just before it are checked once 10 s have passed
    assert g.view(51.0)["sweeping"] == 0 and g.churn_evidence(51.0) and g.counters["sweeps"] == 3
    h = make(20)  # the default: one per 60 s
    assert h.churn_evidence(0.0)
    drive(h, 0.0, 59.9, fail=frozenset({peer(5).id, peer(6).id}))
    h.receive_claims([claim(DEAD, 501)], 59.9)
    assert h.counters["sweeps"] == 1
    h.receive_claims([claim(DEAD, 501)], 60.0)
    assert h.counters["sweeps"] == 2


def test_a_sweep_never_evicts_by_itself() -> None:
    g = make(20)
    victim = peer(7).id
    g.receive_claims([claim(SUSPECT, 600)], 0.0)
    log = drive(g, 0.0, 120.0, fail=frozenset({victim}))
    first = log.first_round(victim)
    assert log.swept(victim) == [first] and first < 3.0  # the sweep found it...
    evictions = [t for t, a in log.actions if a == Evict(victim)]
    found = [a for t, a in log.actions if t == first and not isinstance(a, IndirectProbe)]
    assert found == [Questionable(victim)]  # ...and only suspected it
    low, _ = suspicion_bounds(g.settings, 20)
    rounds_before = [t for t, target, _ in log.probes if target == victim and t <= evictions[0]]
    assert evictions[0] - first >= low and len(rounds_before) >= g.settings.min_failed_rounds
    assert len(evictions) == 1 and all(g.status_of(peer(i).id) is ALIVE for i in range(20) if i != 7)


def test_accusations_of_anyone_but_us_start_a_sweep_and_are_otherwise_ignored() -> None:
    g = make(10)
    assert g.receive_claims([claim(ALIVE, 500)], 1.0) == [Candidate(peer(500))]
    g.receive_claims([Claim(SUSPECT, OWN, INC, 5)], 1.0)  # about us: a refutation, no sweep
    assert g.counters["sweeps"] == 0 and g.view(1.0)["sweeping"] == 0
    assert g.receive_claims([claim(SUSPECT, 501)], 1.0) == []
    assert g.counters["sweeps"] == 1 and g.counters["claims.ignored"] == 1
    assert g.view(1.0)["sweeping"] == 10 and g.view(1.0)["suspect"] == 0  # nobody questioned
    g.remove(peer(0).id)
    assert g.view(1.0)["sweeping"] == 9
    probe = g.next_probe(1.0)  # the slot
    assert probe is not None
    g.probe_acked(probe.target.id, 1.0)
    probe = g.next_probe(1.0)  # the sweep
    assert probe is not None and g.counters["probes.sweep"] == 1 and g.view(1.0)["sweeping"] == 7
    assert g.next_probe(1.0) is None and g.next_deadline() == pytest.approx(1.0 + 1 / 8)
    off = make(10, sweep_probes_per_second=0)  # 0 disables sweeps
    off.receive_claims([claim(DEAD, 501), claim(SUSPECT, 1)], 1.0)
    assert not off.churn_evidence(1.0) and off.counters["sweeps"] == 0 and off.view(1.0)["sweeping"] == 0


@pytest.mark.parametrize(("health", "gap"), [(0, 0.125), (3, 0.5)])
def test_an_unhealthy_node_sweeps_more_slowly(health: int, gap: float) -> None:
    g = make(30)
    g.churn_evidence(0.0)
    starts, now = list[float](), 0.0
    while now < 3.0:
        g.health = health
        before = g.counters["probes.sweep"]
        probe = g.next_probe(now)
        if probe is None:
            now = round(now + 0.01, 6)
            continue
        if g.counters["probes.sweep"] > before:
            starts.append(now)
        g.probe_acked(probe.target.id, now)
    assert all(b - a >= gap - 1e-9 for a, b in itertools.pairwise(starts))
    assert len(starts) >= 3.0 / gap - 2


def test_a_bucket_smaller_than_the_sweep_floor_still_pays_for_sweeps() -> None:
    g = make(40, gossip_bytes_per_second=400.0, gossip_burst_seconds=2.0)  # 800 B: less than round + floor
    assert g.churn_evidence(0.0)
    drive(g, 0.0, 30.0)
    assert g.view(30.0)["sweeping"] == 0 and g.counters["probes.sweep"] >= 25  # ~3/s: the surplus
    assert g.bytes_sent <= 400.0 * 30.0 + 800


def test_forged_accusations_for_30_minutes_keep_sweeps_within_the_budget() -> None:
    g = make(75, seed=2)
    s = g.settings
    rng = random.Random(8)
    now, evictions = 0.0, 0
    while now < 1800.0:  # every message accuses someone: a member or a stranger
        forged = [claim(rng.choice([DEAD, SUSPECT]), rng.randrange(150), MAX_INCARNATION, rng.getrandbits(160))]
        for action in g.receive_claims(forged * 4, now) + g.tick(now):
            evictions += isinstance(action, Evict)
        probe = g.next_probe(now)
        while probe is not None:
            g.probe_acked(probe.target.id, now)
            probe = g.next_probe(now)
        now += 0.5
    assert evictions == 0 and g.view(now)["dead"] == 0
    assert g.bytes_sent <= s.gossip_bytes_per_second * now + s.gossip_bytes_per_second * s.gossip_burst_seconds
    assert 25 <= g.counters["sweeps"] <= now / s.sweep_min_interval + 1
    assert g.counters["probes.sent"] - g.counters["probes.sweep"] >= 1790  # the round robin kept its pace
    g.receive_claims([Claim(SUSPECT, OWN, g.incarnation, 5)], now)
    assert g.take_piggyback(1000, now) != b""  # and the budget still carries our refutation


# --- a small network ----------------------------------------------------------------------------


@dataclass
class Net:
    """Gossip instances exchanging probes, acks, indirect requests and piggybacked claims over a seeded
    lossy network in virtual time. Evictions are applied (the member is removed) and recorded. Each node
    tracks every other node, or ``degree`` random others (a routing table's view of a larger network)."""

    n: int
    seed: int
    settings: GossipSettings
    degree: int | None = None
    loss: float = 0.0
    answer_rate: dict[int, float] = field(default_factory=dict)
    attackers: frozenset[int] = frozenset()
    now: float = 0.0
    crashed: set[int] = field(default_factory=set)
    paused: set[int] = field(default_factory=set)
    evictions: list[tuple[float, int, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.info = [
            NodeInfo(self.rng.getrandbits(160), (f"127.0.{i // 200}.{i % 200 + 2}", 6881)) for i in range(self.n)
        ]
        self.index = {info.id: i for i, info in enumerate(self.info)}
        self.g = [
            Gossip(info, random.Random(self.seed * 7919 + i), 0.0, incarnation=1000, settings=self.settings)
            for i, info in enumerate(self.info)
        ]
        for i, g in enumerate(self.g):
            others = [j for j in range(self.n) if j != i]
            for j in others if self.degree is None else self.rng.sample(others, self.degree):
                g.add(self.info[j], 0.0)
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = 0
        self._wake: list[float | None] = [None] * self.n
        self._pending: dict[int, Callable[[bool], None]] = {}
        for i in range(self.n):
            self._reschedule(i)

    def at(self, when: float, fn: Callable[[], None]) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (when, self._seq, fn))

    def run_until(self, end: float) -> None:
        while self._heap and self._heap[0][0] <= end:
            when, _, fn = heapq.heappop(self._heap)
            self.now = when
            fn()
        self.now = end

    def down(self, i: int) -> bool:
        return i in self.crashed or i in self.paused

    # --- nodes --------------------------------------------------------------------------------

    def _reschedule(self, i: int) -> None:
        deadline = self.g[i].next_deadline()
        if deadline is None:
            return
        deadline = max(deadline, self.now)
        current = self._wake[i]
        if current is not None and current <= deadline and current >= self.now:
            return
        self._wake[i] = deadline
        self.at(deadline, lambda: self._on_wake(i, deadline))

    def _on_wake(self, i: int, when: float) -> None:
        if self._wake[i] != when:
            return
        self._wake[i] = None
        if i in self.crashed:
            return
        g = self.g[i]
        self._act(i, g.tick(self.now))
        probe = g.next_probe(self.now)
        while probe is not None:
            self._act(i, [probe])
            probe = g.next_probe(self.now)
        self._reschedule(i)

    def _act(self, i: int, actions: list[Action]) -> None:
        g = self.g[i]
        for a in actions:
            if isinstance(a, Probe):
                t = self.index[a.target.id]
                if a.on_behalf_of is None:
                    self._request(i, t, a.timeout, functools.partial(self._direct_done, i, t))
                else:
                    self._request(i, t, a.timeout, functools.partial(self._behalf_done, i, t, a.on_behalf_of))
            elif isinstance(a, IndirectProbe):
                t = self.index[a.target.id]
                for helper in a.helpers:
                    self._indirect(i, self.index[helper.id], t, a.timeout, a.helper_timeout)
            elif isinstance(a, IndirectReply):
                r = self.index[a.requester.id]
                self._send(i, r, functools.partial(self._on_reply, r, i, a))
            elif isinstance(a, Evict):
                self.evictions.append((self.now, i, self.index[a.node_id]))
                g.remove(a.node_id)
        self._reschedule(i)

    def _direct_done(self, i: int, t: int, ok: bool) -> None:
        g, tid = self.g[i], self.info[t].id
        self._act(i, g.probe_acked(tid, self.now, self.g[t].incarnation) if ok else g.probe_failed(tid, self.now))

    def _behalf_done(self, i: int, t: int, requester: int, ok: bool) -> None:
        self._act(i, self.g[i].behalf_result(self.info[t].id, requester, ok, self.now))

    # --- messages -----------------------------------------------------------------------------

    def _send(self, src: int, dst: int, deliver: Callable[[], None]) -> None:
        if self.down(src) or self.rng.random() < self.loss:
            return
        self.at(self.now + self.rng.uniform(0.005, 0.04), lambda: None if self.down(dst) else deliver())

    def _claims_from(self, src: int, dst: int) -> bytes:
        if src in self.attackers:  # every honest node is dead, at the highest incarnation there is
            victims = self.rng.sample([j for j in range(self.n) if j not in self.attackers], 8)
            return encode_claims([Claim(DEAD, self.info[v], MAX_INCARNATION, 0) for v in victims])
        return self.g[src].take_piggyback(600, self.now, dest=self.info[dst].id)

    def _receive(self, dst: int, src: int, payload: bytes) -> None:
        g = self.g[dst]
        actions = g.heard_from(self.info[src].id, self.now, self.g[src].incarnation)
        if payload:
            actions += g.receive_claims(decode_claims(payload, self.info[src].id), self.now)
        self._act(dst, actions)

    def _request(self, src: int, dst: int, timeout: float, done: Callable[[bool], None]) -> None:
        """A probe (gossip query with claims) and its ack (with claims), or a timeout."""
        self._seq += 1
        key = self._seq
        self._pending[key] = done
        payload = self._claims_from(src, dst)

        def answer() -> None:
            self._receive(dst, src, payload)
            if self.rng.random() >= self.answer_rate.get(dst, 1.0):
                return
            reply = self._claims_from(dst, src)
            self._send(dst, src, lambda: self._on_ack(src, dst, key, reply))

        self._send(src, dst, answer)
        self.at(self.now + timeout, lambda: self._finish(key, False))

    def _on_ack(self, src: int, dst: int, key: int, payload: bytes) -> None:
        self._receive(src, dst, payload)
        self._finish(key, True)

    def _finish(self, key: int, ok: bool) -> None:
        done = self._pending.pop(key, None)
        if done is not None:
            done(ok)

    def _indirect(self, src: int, helper: int, target: int, timeout: float, helper_timeout: float) -> None:
        g = self.g[src]
        key = (src, helper, target, self._seq)
        self._seq += 1
        self._pending_indirect = getattr(self, "_pending_indirect", {})
        self._pending_indirect[key] = True

        def at_helper() -> None:
            if helper in self.attackers:  # lies: "it did not answer me"
                self._send(
                    helper,
                    src,
                    lambda: self._on_reply(src, helper, IndirectReply(self.info[src], self.info[target].id, False)),
                )
                return
            self._act(helper, self.g[helper].heard_from(self.info[src].id, self.now))
            self._act(
                helper, self.g[helper].probe_on_behalf(self.info[target], self.info[src], self.now, helper_timeout)
            )

        self._send(src, helper, at_helper)

        def lost() -> None:
            if self._pending_indirect.pop(key, None):
                self._act(
                    src, g.indirect_failed(self.info[target].id, self.info[helper].id, self.now, helper_answered=False)
                )

        self.at(self.now + timeout, lost)

    def _on_reply(self, requester: int, helper: int, reply: IndirectReply) -> None:
        g = self.g[requester]
        pending = getattr(self, "_pending_indirect", {})
        for key in [k for k in pending if k[0] == requester and k[1] == helper and self.info[k[2]].id == reply.target]:
            del pending[key]
        actions = g.heard_from(self.info[helper].id, self.now)
        if reply.acked:
            actions += g.indirect_acked(reply.target, self.info[helper].id, self.now)
        else:
            actions += g.indirect_failed(reply.target, self.info[helper].id, self.now, helper_answered=True)
        self._act(requester, actions)

    def evicted(self, victims: set[int]) -> list[tuple[float, int, int]]:
        return [e for e in self.evictions if e[2] in victims and e[1] not in self.crashed]


def test_sim_crashed_members_are_evicted_by_every_live_member_in_bounded_time() -> None:
    net = Net(60, seed=11, settings=GossipSettings())
    net.run_until(30.0)
    assert net.evictions == []
    crashed = {3, 17, 42}
    net.crashed |= crashed
    net.run_until(120.0)
    live = [i for i in range(60) if i not in crashed]
    by_pair = {(e[1], e[2]): e[0] - 30.0 for e in net.evictions}
    times = [by_pair.get((i, c), math.inf) for i in live for c in crashed]
    assert max(times) < 60.0, f"slowest detection {max(times):.1f}s"
    assert {e[2] for e in net.evictions} == crashed  # nobody live was evicted
    low, _ = suspicion_bounds(GossipSettings(), 59)
    assert min(times) >= low  # nobody evicts before the minimum suspicion timeout


def test_sim_lossy_network_evicts_nobody_who_answers_half_its_probes() -> None:
    flaky = {i: 0.78 for i in range(5)}  # with 20% loss each way, half their probes come back
    net = Net(40, seed=5, settings=GossipSettings(), loss=0.2, answer_rate=flaky)
    net.run_until(30 * 60.0)
    assert net.evictions == [], net.evictions[:5]
    questionable = sum(g.counters["questionable"] for g in net.g)
    assert questionable > 100  # the loss did cause suspicions; none turned into evictions
    # bandwidth: everyone stayed within budget (rate times time plus the bucket depth)
    s = net.settings
    for g in net.g:
        assert g.bytes_sent <= s.gossip_bytes_per_second * net.now + s.gossip_bytes_per_second * s.gossip_burst_seconds
        assert g.view(net.now)["bytes_per_second"] <= s.gossip_bytes_per_second * 1.1


def test_sim_attackers_gossiping_dead_about_everyone_evict_nobody_alive() -> None:
    attackers = frozenset(range(8))
    net = Net(40, seed=7, settings=GossipSettings(), loss=0.05, attackers=attackers)
    net.run_until(300.0)
    honest = set(range(40)) - attackers
    assert [e for e in net.evictions if e[2] in honest] == []
    received = sum(net.g[i].counters["claims.received"] for i in honest)
    assert received > 1000 and sum(net.g[i].counters["questionable"] for i in honest) > 100
    # and a real crash is still detected under attack
    net.crashed.add(20)
    net.run_until(420.0)
    assert {e[1] for e in net.evictions if e[2] == 20} >= honest - {20}


def test_sim_a_refuted_suspicion_never_becomes_dead() -> None:
    net = Net(30, seed=3, settings=GossipSettings())
    net.run_until(20.0)
    net.paused.add(9)  # a 5 s stall: shorter than the minimum suspicion timeout
    net.run_until(25.0)
    net.paused.discard(9)
    net.run_until(200.0)
    assert net.evictions == []
    suspected = sum(g.counters["questionable"] for g in net.g)
    assert suspected > 0
    assert all(g.status_of(net.info[9].id) is ALIVE for i, g in enumerate(net.g) if i != 9)
    assert net.g[9].counters["refutations"] > 0


def clear_times(net: Net, crashed: set[int], horizon: float, step: float = 0.25) -> list[float]:
    """Crash ``crashed`` now; for each live node, how long until it holds none of them ALIVE (removed,
    SUSPECT or DEAD all count: not offered as good), sorted; inf if not within ``horizon``."""
    start = net.now
    net.crashed |= crashed
    live = [i for i in range(net.n) if i not in net.crashed]
    held = {i: [net.info[c].id for c in crashed if net.info[c].id in net.g[i]] for i in live}
    done: dict[int, float] = {}
    while net.now < start + horizon and len(done) < len(live):
        net.run_until(net.now + step)
        for i in live:
            if i not in done and all(net.g[i].status_of(c) is not ALIVE for c in held[i]):
                done[i] = net.now - start
    return sorted(done.get(i, math.inf) for i in live)


def test_sim_sweeps_find_a_mass_crash_sooner() -> None:
    """200 nodes tracking 40 others each (a routing table's view: claims about non-members are ignored,
    so dissemination alone cannot help much); 5% crash at once."""
    results = {}
    for label, sweep_rate in (("sweep", 8.0), ("no sweep", 0.0)):
        net = Net(200, seed=3, settings=GossipSettings(sweep_probes_per_second=sweep_rate), degree=40)
        net.run_until(30.0)
        crashed = set(random.Random(4).sample(range(200), 10))
        times = clear_times(net, crashed, horizon=60.0)
        assert net.evicted(set(range(200)) - crashed) == []
        results[label] = (times[math.ceil(0.99 * len(times)) - 1], times[-1])
    (p99, slowest), (p99_off, slowest_off) = results["sweep"], results["no sweep"]
    assert slowest <= 15.0 and slowest < slowest_off and p99 < p99_off / 2, results
