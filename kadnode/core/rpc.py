"""Outgoing KRPC transactions: ids, adaptive timeouts and deadlines, with no I/O.

Each request gets two deadlines. The *short* one says "this peer is slow" so a lookup can open another
slot while still accepting a late answer; the *full* one fails the request. Both adapt to each peer's
measured round-trip time (RFC 6298 SRTT/RTTVAR), so a loopback peer times out in milliseconds and an
internet peer in about a second, instead of one fixed multi-second timeout for everyone.
"""

from __future__ import annotations

import heapq
import random
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from kadnode.settings import Settings
from kadnode.types import Addr

if TYPE_CHECKING:
    from kadnode.wire.krpc import ErrorReply, Response

MAX_PEER_ESTIMATES = 4096
"""Per-address round-trip estimators kept (least recently updated ones are forgotten first)."""

TID_SPACE = 1 << 16
"""Transaction ids are 2 bytes: short on the wire, and 65,536 is far above any sane number in flight."""

RTT_ALPHA = 1 / 8
RTT_BETA = 1 / 4
"""RFC 6298 gains for SRTT and RTTVAR."""

_HEAP_COMPACT_SLACK = 64
"""Stale heap entries tolerated (beyond twice the live ones) before the heap is rebuilt."""


class RpcHandler(Protocol):
    """Whoever started a transaction hears how it ended (and, first, when it became slow)."""

    def rpc_response(self, txn: Transaction, response: Response, now: float) -> None: ...
    def rpc_error(self, txn: Transaction, error: ErrorReply, now: float) -> None: ...
    def rpc_timeout(self, txn: Transaction, now: float) -> None: ...
    def rpc_slow(self, txn: Transaction, now: float) -> None: ...


@dataclass(slots=True, eq=False)
class Transaction:
    """One request in flight. Identity matters (eq=False): a tid is reused once its request is done."""

    tid: bytes
    addr: Addr
    node_id: int | None
    method: str
    sent_at: float
    short_deadline: float
    deadline: float
    handler: RpcHandler
    slow: bool = False


class _Estimator:
    """SRTT/RTTVAR of one peer (or of all peers), plus an RFC 6298 5.5 backed-off timeout."""

    __slots__ = ("backoff", "last_timeout", "rttvar", "srtt", "timeouts")

    def __init__(self) -> None:
        self.srtt: float | None = None
        self.rttvar = 0.0
        self.backoff: float | None = None
        """Set after a timeout: the doubled full timeout, kept until the next real sample."""
        self.timeouts = 0
        """Requests in a row that timed out (any answer resets it)."""
        self.last_timeout = 0.0

    def sample(self, rtt: float) -> None:
        if self.srtt is None:
            self.srtt = rtt
            self.rttvar = rtt / 2
        else:
            self.rttvar = (1 - RTT_BETA) * self.rttvar + RTT_BETA * abs(self.srtt - rtt)
            self.srtt = (1 - RTT_ALPHA) * self.srtt + RTT_ALPHA * rtt
        self.backoff = None
        self.timeouts = 0


UNRESPONSIVE_TIMEOUTS = 3
UNRESPONSIVE_MEMORY = 120.0
"""Seconds an address that timed out UNRESPONSIVE_TIMEOUTS times in a row is skipped as a lookup referral;
after that one request may try it again (a node restarted at the same address comes back)."""


def _clamp(value: float, low: float, high: float) -> float:
    return max(low, min(high, value))


class RpcManager:
    """Owns transaction ids, the per-peer round-trip estimates and every request's deadlines."""

    def __init__(self, settings: Settings, rng: random.Random) -> None:
        self._settings = settings
        self._next_tid = rng.randrange(TID_SPACE)
        self._live: dict[bytes, Transaction] = {}
        # (time, seq, txn): each live txn has exactly one entry, at short_deadline until it turns slow,
        # then at deadline. Entries of cancelled/completed txns are skipped when they reach the top.
        self._heap: list[tuple[float, int, Transaction]] = []
        self._seq = 0
        self._peers: OrderedDict[Addr, _Estimator] = OrderedDict()
        self._global = _Estimator()
        self._max_live = min(settings.max_outstanding_requests, TID_SPACE)

    # --- transactions --------------------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        return len(self._live)

    def start(
        self, addr: Addr, node_id: int | None, method: str, handler: RpcHandler, now: float,
        timeout: float | None = None,
    ) -> Transaction | None:
        """A new transaction with a fresh tid, or None when too many are in flight. A fixed ``timeout``
        (a gossip probe's) replaces the adaptive ones, with no slow stage."""
        if len(self._live) >= self._max_live:
            return None
        tid_int = self._next_tid
        tid = tid_int.to_bytes(2, "big")
        while tid in self._live:
            tid_int = (tid_int + 1) % TID_SPACE
            tid = tid_int.to_bytes(2, "big")
        self._next_tid = (tid_int + 1) % TID_SPACE
        if timeout is None:
            full = self.timeout_for(addr)
            short = self.short_timeout_for(addr)
        else:
            full = short = timeout
        txn = Transaction(tid, addr, node_id, method, now, now + short, now + full, handler)
        self._live[tid] = txn
        self._push(txn.short_deadline, txn)
        return txn

    def cancel(self, txn: Transaction) -> None:
        """Forget a transaction without any callback (its heap entry is skipped later)."""
        self._forget(txn)

    def match(self, tid: bytes, addr: Addr) -> Transaction | None:
        """Pop the transaction a reply belongs to; a reply from any other address is not ours."""
        txn = self._live.get(tid)
        if txn is None or txn.addr != addr:
            return None
        self._forget(txn)
        return txn

    def complete(self, txn: Transaction, now: float) -> float:
        """Record the round trip of an answered transaction and return it."""
        self._forget(txn)
        rtt = max(0.0, now - txn.sent_at)
        self._peer(txn.addr).sample(rtt)
        self._global.sample(rtt)
        return rtt

    def advance(self, now: float) -> None:
        """Fire slow and timeout callbacks that are due, each after its state change is recorded."""
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, _, txn = heapq.heappop(heap)
            if self._live.get(txn.tid) is not txn:
                continue
            if not txn.slow and txn.short_deadline < txn.deadline:
                txn.slow = True
                self._push(txn.deadline, txn)
                txn.handler.rpc_slow(txn, now)
            else:
                del self._live[txn.tid]
                self._back_off(txn)
                txn.handler.rpc_timeout(txn, now)

    def next_deadline(self) -> float | None:
        heap = self._heap
        while heap and self._live.get(heap[0][2].tid) is not heap[0][2]:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    # --- round-trip estimates ------------------------------------------------------------------

    def rtt_estimate(self, addr: Addr) -> float | None:
        est = self._peers.get(addr)
        return None if est is None else est.srtt

    def unresponsive(self, addr: Addr, now: float) -> bool:
        """Whether `addr` left our last UNRESPONSIVE_TIMEOUTS (3) requests unanswered, the latest less than
        UNRESPONSIVE_MEMORY ago: lookups then skip it when others name it (nodes keep handing out a
        dead node they rarely query, and a lookup with fewer than k answers waits out every request)."""
        est = self._peers.get(addr)
        return (
            est is not None
            and est.timeouts >= UNRESPONSIVE_TIMEOUTS
            and now - est.last_timeout < UNRESPONSIVE_MEMORY
        )

    def timeout_for(self, addr: Addr) -> float:
        """Full timeout: SRTT + 4*RTTVAR of the peer (or of everyone, for a peer never measured)."""
        s = self._settings
        est = self._peers.get(addr)
        if est is not None and est.backoff is not None:
            return est.backoff
        base = self._base_estimator(est)
        if base is None:
            return _clamp(s.rpc_timeout_initial, s.rpc_timeout_min, s.rpc_timeout_max)
        assert base.srtt is not None
        return _clamp(base.srtt + 4 * base.rttvar, s.rpc_timeout_min, s.rpc_timeout_max)

    def short_timeout_for(self, addr: Addr) -> float:
        """When a request counts as slow. Not backed off: a dead peer should free its slot quickly."""
        s = self._settings
        base = self._base_estimator(self._peers.get(addr))
        if base is None:
            short = s.rpc_short_timeout_max
        else:
            assert base.srtt is not None
            short = _clamp(
                max(2 * base.srtt, base.srtt + 2 * base.rttvar),
                s.rpc_short_timeout_min,
                s.rpc_short_timeout_max,
            )
        return min(short, self.timeout_for(addr))

    # --- internals -----------------------------------------------------------------------------

    def _base_estimator(self, est: _Estimator | None) -> _Estimator | None:
        if est is not None and est.srtt is not None:
            return est
        return self._global if self._global.srtt is not None else None

    def _peer(self, addr: Addr) -> _Estimator:
        est = self._peers.get(addr)
        if est is None:
            est = self._peers[addr] = _Estimator()
            if len(self._peers) > MAX_PEER_ESTIMATES:
                self._peers.popitem(last=False)
        else:
            self._peers.move_to_end(addr)
        return est

    def _back_off(self, txn: Transaction) -> None:
        """RFC 6298 5.5: double the timeout that just expired (capped), until the peer answers again."""
        doubled = min(self._settings.rpc_timeout_max, 2 * (txn.deadline - txn.sent_at))
        est = self._peer(txn.addr)
        est.backoff = doubled if est.backoff is None else max(est.backoff, doubled)
        est.timeouts += 1
        est.last_timeout = txn.deadline

    def _push(self, when: float, txn: Transaction) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (when, self._seq, txn))

    def _forget(self, txn: Transaction) -> None:
        if self._live.get(txn.tid) is txn:
            del self._live[txn.tid]
            if len(self._heap) > 2 * len(self._live) + _HEAP_COMPACT_SLACK:
                live = self._live
                self._heap = [e for e in self._heap if live.get(e[2].tid) is e[2]]
                heapq.heapify(self._heap)
