"""RpcManager: transaction ids, reply matching, adaptive timeouts and deadline ordering."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

import pytest

from kadnode.core.rpc import MAX_PEER_ESTIMATES, TID_SPACE, RpcManager, Transaction
from kadnode.settings import Settings
from kadnode.types import Addr

if TYPE_CHECKING:
    from kadnode.wire.krpc import ErrorReply, Response

A: Addr = ("127.0.0.2", 6881)
B: Addr = ("127.0.0.3", 6881)
C: Addr = ("127.0.0.4", 6881)


class Recorder:
    """Records every callback as (kind, txn, now)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Transaction, float]] = []

    def rpc_response(self, txn: Transaction, response: Response, now: float) -> None:
        self.events.append(("response", txn, now))

    def rpc_error(self, txn: Transaction, error: ErrorReply, now: float) -> None:
        self.events.append(("error", txn, now))

    def rpc_timeout(self, txn: Transaction, now: float) -> None:
        self.events.append(("timeout", txn, now))

    def rpc_slow(self, txn: Transaction, now: float) -> None:
        self.events.append(("slow", txn, now))

    def kinds(self) -> list[str]:
        return [kind for kind, _, _ in self.events]


class FixedStart(random.Random):
    """A Random whose randrange returns a fixed value, to place the tid counter."""

    def __init__(self, value: int) -> None:
        super().__init__(0)
        self.value = value

    def randrange(self, *args: object, **kwargs: object) -> int:
        return self.value


def make(settings: Settings | None = None, seed: int = 1) -> RpcManager:
    return RpcManager(settings or Settings(), random.Random(seed))


def test_tids_are_two_bytes_and_unique_while_in_flight() -> None:
    mgr = make()
    rec = Recorder()
    txns = [mgr.start(A, None, "ping", rec, 0.0) for _ in range(1000)]
    tids = [t.tid for t in txns if t is not None]
    assert len(tids) == 1000
    assert all(len(tid) == 2 for tid in tids)
    assert len(set(tids)) == 1000
    assert mgr.in_flight == 1000


def test_tid_start_is_random() -> None:
    rec = Recorder()
    firsts = set()
    for seed in range(20):
        txn = make(seed=seed).start(A, None, "ping", rec, 0.0)
        assert txn is not None
        firsts.add(txn.tid)
    assert len(firsts) > 15


def test_tid_wraps_around() -> None:
    mgr = RpcManager(Settings(), FixedStart(TID_SPACE - 2))
    rec = Recorder()
    tids = []
    for _ in range(3):
        txn = mgr.start(A, None, "ping", rec, 0.0)
        assert txn is not None
        tids.append(txn.tid)
    assert tids == [b"\xff\xfe", b"\xff\xff", b"\x00\x00"]


def test_tid_allocation_skips_ids_in_flight() -> None:
    mgr = RpcManager(Settings(max_outstanding_requests=TID_SPACE), FixedStart(5))
    rec = Recorder()
    txns = [mgr.start(A, None, "ping", rec, 0.0) for _ in range(TID_SPACE)]
    live = [t for t in txns if t is not None]
    assert len({t.tid for t in live}) == TID_SPACE
    assert mgr.start(A, None, "ping", rec, 0.0) is None  # every id in use
    freed = live[1234]
    mgr.cancel(freed)
    again = mgr.start(B, None, "ping", rec, 0.0)
    assert again is not None and again.tid == freed.tid
    # the counter continues after the reused id, still skipping those in flight
    mgr.cancel(live[10])
    nxt = mgr.start(B, None, "ping", rec, 0.0)
    assert nxt is not None and nxt.tid == live[10].tid


def test_match_requires_tid_and_address() -> None:
    mgr = make()
    rec = Recorder()
    txn = mgr.start(A, 7, "find_node", rec, 0.0)
    assert txn is not None
    assert mgr.match(txn.tid, B) is None  # spoofed source
    assert mgr.match(txn.tid, (A[0], A[1] + 1)) is None  # same host, other port
    assert mgr.match(bytes([txn.tid[0] ^ 1, txn.tid[1]]), A) is None
    assert mgr.in_flight == 1
    assert mgr.match(txn.tid, A) is txn
    assert mgr.in_flight == 0
    assert mgr.match(txn.tid, A) is None  # a duplicate reply finds nothing


def test_slow_fires_once_then_response_still_accepted() -> None:
    mgr = make()
    rec = Recorder()
    txn = mgr.start(A, None, "get_peers", rec, 10.0)
    assert txn is not None
    assert txn.short_deadline < txn.deadline
    assert mgr.next_deadline() == txn.short_deadline
    mgr.advance(txn.short_deadline - 1e-6)
    assert rec.events == []
    mgr.advance(txn.short_deadline)
    assert rec.kinds() == ["slow"] and txn.slow
    assert mgr.next_deadline() == txn.deadline
    mgr.advance((txn.short_deadline + txn.deadline) / 2)
    assert rec.kinds() == ["slow"]
    now = txn.deadline - 0.01
    assert mgr.match(txn.tid, A) is txn
    rtt = mgr.complete(txn, now)
    assert rtt == pytest.approx(now - 10.0)
    assert mgr.next_deadline() is None
    mgr.advance(txn.deadline + 100)
    assert rec.kinds() == ["slow"]


def test_timeout_after_slow_and_forgotten() -> None:
    mgr = make()
    rec = Recorder()
    txn = mgr.start(A, None, "ping", rec, 0.0)
    assert txn is not None
    mgr.advance(txn.deadline + 1)
    assert rec.kinds() == ["slow", "timeout"]
    assert [now for _, _, now in rec.events] == [txn.deadline + 1] * 2
    assert mgr.in_flight == 0
    assert mgr.match(txn.tid, A) is None
    assert mgr.next_deadline() is None


def test_cancelled_transaction_never_calls_back() -> None:
    mgr = make()
    rec = Recorder()
    txn = mgr.start(A, None, "ping", rec, 0.0)
    other = mgr.start(B, None, "ping", rec, 0.5)
    assert txn is not None and other is not None
    mgr.cancel(txn)
    assert mgr.next_deadline() == other.short_deadline
    mgr.advance(100.0)
    assert [t for _, t, _ in rec.events] == [other, other]


def test_deadlines_fire_in_order() -> None:
    settings = Settings(rpc_timeout_min=0.01, rpc_short_timeout_min=0.001)
    mgr = make(settings)
    rng = random.Random(5)
    rec = Recorder()
    # give peers different round-trip times so their deadlines differ
    peers: list[Addr] = [(f"127.0.1.{i}", 7000) for i in range(1, 40)]
    for i, peer in enumerate(peers):
        for _ in range(3):
            t = mgr.start(peer, None, "ping", rec, 0.0)
            assert t is not None and mgr.match(t.tid, peer) is t
            mgr.complete(t, 0.001 * (i + 1))
    txns: list[Transaction] = []
    for peer in rng.sample(peers, len(peers)):
        t = mgr.start(peer, None, "ping", rec, rng.uniform(0.0, 0.2))
        assert t is not None
        txns.append(t)
    fire_times: list[float] = []
    while (deadline := mgr.next_deadline()) is not None:
        before = len(rec.events)
        mgr.advance(deadline)
        assert len(rec.events) >= before + 1
        fire_times.append(deadline)
    assert fire_times == sorted(fire_times)
    expected = sorted([t.short_deadline for t in txns] + [t.deadline for t in txns])
    assert fire_times == expected
    assert rec.kinds().count("timeout") == len(txns)
    # one big step fires everything in the same order too
    mgr2 = make()
    rec2 = Recorder()
    starts = [rng.uniform(0, 5) for _ in range(200)]
    t2 = [mgr2.start(peers[i % len(peers)], None, "ping", rec2, s) for i, s in enumerate(starts)]
    mgr2.advance(1000.0)
    order = [(t.short_deadline if k == "slow" else t.deadline) for k, t, _ in rec2.events]
    assert order == sorted(order)
    assert len(rec2.events) == 2 * len(t2)


def test_no_sample_uses_initial_timeout() -> None:
    s = Settings()
    mgr = make(s)
    assert mgr.timeout_for(A) == s.rpc_timeout_initial
    assert mgr.short_timeout_for(A) == s.rpc_short_timeout_max
    assert mgr.rtt_estimate(A) is None


def test_rtt_convergence_shrinks_timeout_to_min() -> None:
    s = Settings()
    mgr = make(s)
    rec = Recorder()
    previous = mgr.timeout_for(A)
    now = 0.0
    for _ in range(60):
        txn = mgr.start(A, None, "ping", rec, now)
        assert txn is not None
        assert mgr.match(txn.tid, A) is txn
        rtt = mgr.complete(txn, now + 0.005)
        assert rtt == pytest.approx(0.005)
        current = mgr.timeout_for(A)
        assert current <= previous
        previous = current
        now += 1.0
    assert mgr.timeout_for(A) == s.rpc_timeout_min
    assert mgr.short_timeout_for(A) == s.rpc_short_timeout_min
    estimate = mgr.rtt_estimate(A)
    assert estimate is not None and estimate == pytest.approx(0.005)


def test_rtt_estimate_follows_rfc6298() -> None:
    s = Settings(rpc_timeout_min=0.0, rpc_short_timeout_min=0.0)
    mgr = make(s)
    rec = Recorder()
    samples = [0.1, 0.3, 0.2]
    srtt, rttvar = samples[0], samples[0] / 2
    for r in samples[1:]:
        rttvar = 0.75 * rttvar + 0.25 * abs(srtt - r)
        srtt = 0.875 * srtt + 0.125 * r
    for r in samples:
        txn = mgr.start(A, None, "ping", rec, 1.0)
        assert txn is not None
        mgr.complete(txn, 1.0 + r)
    assert mgr.rtt_estimate(A) == pytest.approx(srtt)
    assert mgr.timeout_for(A) == pytest.approx(srtt + 4 * rttvar)
    assert mgr.short_timeout_for(A) == pytest.approx(max(2 * srtt, srtt + 2 * rttvar))


def test_unknown_peer_uses_global_estimate() -> None:
    s = Settings(rpc_timeout_min=0.01)
    mgr = make(s)
    rec = Recorder()
    for i in range(30):
        peer = (f"127.0.2.{i + 1}", 7000)
        txn = mgr.start(peer, None, "ping", rec, 0.0)
        assert txn is not None
        mgr.complete(txn, 0.05)
    assert mgr.rtt_estimate(C) is None
    assert mgr.timeout_for(C) < s.rpc_timeout_initial
    # thirty identical samples overall: the global estimate is tight (a single sample per peer is not)
    assert mgr.timeout_for(C) == pytest.approx(0.05, rel=0.01)
    assert mgr.timeout_for(("127.0.2.1", 7000)) == pytest.approx(0.05 + 4 * 0.025)


def test_timeout_backs_off_and_is_capped() -> None:
    s = Settings()
    mgr = make(s)
    rec = Recorder()
    now = 0.0
    for _ in range(20):
        txn = mgr.start(A, None, "ping", rec, now)
        assert txn is not None
        mgr.complete(txn, now + 0.02)
    base = mgr.timeout_for(A)
    short = mgr.short_timeout_for(A)
    seen = [base]
    for _ in range(10):
        txn = mgr.start(A, None, "ping", rec, now)
        assert txn is not None
        assert txn.deadline - txn.sent_at == pytest.approx(seen[-1])
        mgr.advance(txn.deadline)
        assert rec.kinds()[-1] == "timeout"
        seen.append(mgr.timeout_for(A))
        now = txn.deadline
    assert seen[1] == pytest.approx(2 * base)
    assert seen[2] == pytest.approx(4 * base)
    assert max(seen) == s.rpc_timeout_max
    assert seen[-1] == s.rpc_timeout_max
    # the short timeout is not backed off: a dead peer frees a lookup slot as fast as before
    assert mgr.short_timeout_for(A) == short
    # other peers are unaffected
    assert mgr.timeout_for(B) < s.rpc_timeout_max
    # one real answer ends the backoff
    txn = mgr.start(A, None, "ping", rec, now)
    assert txn is not None
    mgr.complete(txn, now + 0.02)
    assert mgr.timeout_for(A) == pytest.approx(base, rel=0.5)


def test_backoff_of_never_measured_peer() -> None:
    s = Settings()
    mgr = make(s)
    rec = Recorder()
    txn = mgr.start(A, None, "ping", rec, 0.0)
    assert txn is not None
    mgr.advance(txn.deadline)
    assert mgr.timeout_for(A) == min(s.rpc_timeout_max, 2 * s.rpc_timeout_initial)
    assert mgr.rtt_estimate(A) is None


def test_peer_table_is_bounded() -> None:
    mgr = make()
    rec = Recorder()
    first: Addr = ("127.0.3.1", 1)
    addrs = [first] + [(f"127.1.{i // 250}.{i % 250 + 1}", 2) for i in range(MAX_PEER_ESTIMATES + 10)]
    for addr in addrs:
        txn = mgr.start(addr, None, "ping", rec, 0.0)
        assert txn is not None
        mgr.complete(txn, 0.01)
    assert mgr.rtt_estimate(first) is None
    assert mgr.rtt_estimate(addrs[-1]) is not None
    assert len(mgr._peers) == MAX_PEER_ESTIMATES


def test_max_outstanding_requests() -> None:
    mgr = make(Settings(max_outstanding_requests=3))
    rec = Recorder()
    txns = [mgr.start(A, None, "ping", rec, 0.0) for _ in range(3)]
    assert all(t is not None for t in txns)
    assert mgr.start(A, None, "ping", rec, 0.0) is None
    assert mgr.in_flight == 3
    first = txns[0]
    assert first is not None
    assert mgr.match(first.tid, A) is first
    mgr.complete(first, 0.1)
    assert mgr.start(A, None, "ping", rec, 0.1) is not None
    assert mgr.start(A, None, "ping", rec, 0.1) is None
    mgr.advance(1000.0)
    assert mgr.in_flight == 0
    assert mgr.start(A, None, "ping", rec, 1000.0) is not None


class Retrier(Recorder):
    """Retries a timed-out ping from inside its timeout callback, and starts a probe from inside
    the ping's slow callback."""

    def __init__(self, mgr: RpcManager, retries: int) -> None:
        super().__init__()
        self.mgr = mgr
        self.retries = retries
        self.started: list[Transaction] = []

    def rpc_timeout(self, txn: Transaction, now: float) -> None:
        super().rpc_timeout(txn, now)
        assert self.mgr.match(txn.tid, txn.addr) is None  # already forgotten when we hear of it
        if txn.method == "ping" and self.retries > 0:
            self.retries -= 1
            new = self.mgr.start(txn.addr, txn.node_id, txn.method, self, now)
            assert new is not None
            self.started.append(new)

    def rpc_slow(self, txn: Transaction, now: float) -> None:
        super().rpc_slow(txn, now)
        assert txn.slow  # state is updated before the callback
        if txn.method == "ping":
            new = self.mgr.start(B, None, "probe", self, now)
            assert new is not None
            self.started.append(new)


def test_callbacks_can_start_new_transactions() -> None:
    mgr = make()
    handler = Retrier(mgr, retries=2)
    txn = mgr.start(A, None, "ping", handler, 0.0)
    assert txn is not None
    mgr.advance(txn.deadline)
    # slow -> probe started; timeout -> retry started; neither new one is due yet
    assert handler.kinds() == ["slow", "timeout"]
    assert len(handler.started) == 2
    assert mgr.in_flight == 2
    for _ in range(100):
        deadline = mgr.next_deadline()
        if deadline is None:
            break
        mgr.advance(deadline)
    timeouts = [t for k, t, _ in handler.events if k == "timeout"]
    assert len(timeouts) == 1 + 2 + 3  # original, two retries, three probes
    assert len({t.tid for t in timeouts}) == len(timeouts)
    assert mgr.in_flight == 0
    assert mgr.next_deadline() is None


class Canceller(Recorder):
    def __init__(self, mgr: RpcManager) -> None:
        super().__init__()
        self.mgr = mgr
        self.victims: list[Transaction] = []

    def rpc_timeout(self, txn: Transaction, now: float) -> None:
        super().rpc_timeout(txn, now)
        for victim in self.victims:
            self.mgr.cancel(victim)


def test_callback_cancelling_a_due_transaction() -> None:
    mgr = make()
    handler = Canceller(mgr)
    first = mgr.start(A, None, "x", handler, 0.0)
    second = mgr.start(B, None, "x", handler, 0.0)
    assert first is not None and second is not None
    mgr.advance(first.short_deadline)
    handler.victims.append(second)
    mgr.advance(100.0)
    assert [(k, t) for k, t, _ in handler.events] == [
        ("slow", first),
        ("slow", second),
        ("timeout", first),
    ]
    assert mgr.in_flight == 0


def test_heap_stays_bounded_with_completed_transactions() -> None:
    mgr = make()
    rec = Recorder()
    for i in range(20_000):
        txn = mgr.start(A, None, "ping", rec, i * 1e-4)
        assert txn is not None
        assert mgr.match(txn.tid, A) is txn
        mgr.complete(txn, i * 1e-4)
    assert len(mgr._heap) <= 2 * mgr.in_flight + 100
    assert mgr.next_deadline() is None


def test_short_timeout_never_above_full() -> None:
    s = Settings(
        rpc_timeout_min=0.1, rpc_timeout_max=0.2, rpc_short_timeout_min=0.5, rpc_short_timeout_max=1.0
    )
    mgr = make(s)
    rec = Recorder()
    assert mgr.short_timeout_for(A) <= mgr.timeout_for(A)
    txn = mgr.start(A, None, "ping", rec, 0.0)
    assert txn is not None
    assert txn.short_deadline == txn.deadline
    mgr.advance(txn.deadline)
    assert rec.kinds() == ["timeout"]  # no slow phase when there is no time between the deadlines
