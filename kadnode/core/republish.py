"""When to re-put what: a due time per key, so that republishing is spread over time, not bursty.

Used three ways by the node: its own items (re-put every `republish_interval`), its own announces
(every `announce_interval`), and items it holds for others (re-put to the current k closest every
`replicate_interval`, postponed whenever someone else put the item to us: the Kademlia paper's
optimisation, so that of the k holders usually only one republishes per interval).
"""

from __future__ import annotations

import random
from collections.abc import Iterator


class Schedule:
    """Keys with due times. `due()` hands out keys whose time has come and reschedules them."""

    def __init__(self, interval: float, rng: random.Random) -> None:
        self.interval = interval
        self._rng = rng
        self._due: dict[bytes, float] = {}

    def __len__(self) -> int:
        return len(self._due)

    def __contains__(self, key: object) -> bool:
        return key in self._due

    def __iter__(self) -> Iterator[bytes]:
        """The keys, as a snapshot: callers may add or remove while iterating."""
        return iter(list(self._due))

    def add(self, key: bytes, now: float, *, spread: bool = False) -> None:
        """Due one interval from now (with `spread`, at a random point within the interval: for keys
        loaded at start, so that they do not all fall due at once)."""
        delay = self._rng.uniform(0, self.interval) if spread else self.interval
        self._due[key] = now + delay

    def postpone(self, key: bytes, now: float) -> None:
        if key in self._due:
            self._due[key] = now + self.interval

    def remove(self, key: bytes) -> None:
        self._due.pop(key, None)

    def due(self, now: float, limit: int) -> list[bytes]:
        """Up to `limit` keys whose time has come, each rescheduled one interval on."""
        out = [key for key, when in self._due.items() if when <= now][:limit]
        for key in out:
            self._due[key] = now + self.interval
        return out
