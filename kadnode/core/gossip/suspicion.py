"""Lifeguard suspicion timeouts: long enough for a slow node to refute, shorter with confirmations."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from kadnode.core.gossip.settings import GossipSettings


def suspicion_bounds(settings: GossipSettings, members: int) -> tuple[float, float]:
    """(min, max) timeout: min = suspicion_mult·log10(max(N, 10))·probe_interval (memberlist's
    suspicionTimeout: it grows with log N because a claim needs O(log N) rounds to reach everyone),
    max = suspicion_max_mult·min (Lifeguard §4.2: start long, shrink as confirmations arrive)."""
    low = settings.suspicion_mult * math.log10(max(members, 10)) * settings.probe_interval
    return low, low * settings.suspicion_max_mult


def expected_confirmations(settings: GossipSettings, members: int) -> int:
    """k: confirmations that drive the timeout to its minimum (memberlist: SuspicionMult - 2, fewer in a
    tiny group where that many other members do not exist)."""
    k = settings.suspicion_mult - 2
    return k if members - 2 >= k else 0


def suspicion_timeout(confirmations: int, expected: int, low: float, high: float) -> float:
    """max(min, max - (max - min)·log(n + 1)/log(k + 1)) (Lifeguard §4.2, memberlist suspicion.go)."""
    if expected <= 0:
        return low
    fraction = math.log(confirmations + 1) / math.log(expected + 1)
    return max(low, high - fraction * (high - low))


@dataclass(slots=True)
class Suspicion:
    """One running suspicion. The origin that started it does not count as a confirmation (it may come
    back to us through others), and each origin counts once."""

    start: float
    low: float
    high: float
    expected: int
    origins: set[int] = field(default_factory=set)
    deadline: float = field(init=False)
    """When the timeout ends; kept up to date by ``confirm`` (the machine reads it for every suspect on
    every ``next_deadline``)."""

    def __post_init__(self) -> None:
        self._update()

    @property
    def confirmations(self) -> int:
        return max(0, len(self.origins) - 1)

    def confirm(self, origin: int) -> bool:
        """Count ``origin`` once; False when it was already counted."""
        if origin in self.origins:
            return False
        self.origins.add(origin)
        self._update()
        return True

    def _update(self) -> None:
        self.deadline = self.start + suspicion_timeout(self.confirmations, self.expected, self.low, self.high)
