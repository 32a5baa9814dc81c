"""What gossip sends and how much: the retransmit-limited claim queue and the bandwidth budget."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from kadnode.core.gossip.wire import Claim

METER_WINDOW = 60.0
"""``ByteMeter`` reports bytes/s over this many seconds."""
_SLACK = 1e-6
"""Bytes of float rounding forgiven, so a refilled bucket is not forever a hair short."""


def retransmit_limit(mult: int, members: int) -> int:
    """How often one claim is sent: mult·ceil(log10(N + 1)), as memberlist's retransmitLimit. Epidemic
    spread reaches everyone w.h.p. after O(log N) rounds (SWIM §4.1)."""
    return max(1, mult * math.ceil(math.log10(members + 1)))


class TokenBucket:
    """``rate`` bytes per second, at most ``capacity`` saved up; spending never goes below zero."""

    __slots__ = ("_last", "_tokens", "capacity", "rate")

    def __init__(self, rate: float, capacity: float, now: float) -> None:
        self.rate = rate
        self.capacity = capacity
        self._tokens = capacity
        self._last = now

    def available(self, now: float) -> float:
        if now > self._last:
            self._tokens = min(self.capacity, self._tokens + (now - self._last) * self.rate)
            self._last = now
        return self._tokens

    def has(self, amount: float, now: float) -> bool:
        return self.available(now) + _SLACK >= amount

    def spend(self, amount: float, now: float) -> bool:
        if not self.has(amount, now):
            return False
        self._tokens = max(0.0, self._tokens - amount)
        return True

    def ready_at(self, amount: float, now: float) -> float:
        """When ``amount`` will be available (``now`` if it already is)."""
        missing = amount - self.available(now)
        return now if missing <= _SLACK else now + missing / self.rate


class ByteMeter:
    """Bytes sent, total and per second over the last ``METER_WINDOW``."""

    __slots__ = ("_recent", "_started", "total")

    def __init__(self, now: float) -> None:
        self.total = 0
        self._recent: deque[tuple[float, int]] = deque()
        self._started = now

    def add(self, size: int, now: float) -> None:
        self.total += size
        self._recent.append((now, size))

    def rate(self, now: float) -> float:
        recent = self._recent
        while recent and recent[0][0] <= now - METER_WINDOW:
            recent.popleft()
        span = min(METER_WINDOW, now - self._started)
        return sum(size for _, size in recent) / span if span > 0 else 0.0


@dataclass(slots=True)
class _Queued:
    claim: Claim
    sent: int
    seq: int


class ClaimQueue:
    """One pending claim per subject, the newest replacing older ones; fewest-sent go first (memberlist's
    TransmitLimitedQueue), so a fresh claim overtakes ones that have already spread."""

    __slots__ = ("_items", "_seq")

    def __init__(self) -> None:
        self._items: dict[int, _Queued] = {}
        self._seq = 0

    def __len__(self) -> int:
        return len(self._items)

    def push(self, claim: Claim) -> None:
        self._seq += 1
        self._items[claim.subject.id] = _Queued(claim, 0, self._seq)

    def pending(self, subject_id: int) -> Claim | None:
        item = self._items.get(subject_id)
        return None if item is None else item.claim

    def take(self, count: int, limit: int) -> list[Claim]:
        """Up to ``count`` claims, fewest-sent then newest first; each counts as sent once, and leaves the
        queue when it has been sent ``limit`` times."""
        if count <= 0 or not self._items:
            return []
        chosen = sorted(self._items.values(), key=lambda q: (q.sent, -q.seq))[:count]
        for item in chosen:
            item.sent += 1
            if item.sent >= limit:
                del self._items[item.claim.subject.id]
        return [item.claim for item in chosen]
