"""Link behaviour of the simulated network: per-link latency, per-packet jitter, loss and duplication.

The latency of a link is fixed for the whole run, as the path between two hosts is, and drawn from a
lognormal distribution (internet one-way delays are skewed: most paths are short, a few very long).
It is not stored per pair (10,000 nodes make 10^8 pairs): a cheap integer hash of (seed, pair) picks
one of `QUANTILES` precomputed quantiles, so a lookup costs a few integer operations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

QUANTILES = 4096
"""Distinct link latencies; fine enough that the distribution's shape is kept."""
_MASK64 = (1 << 64) - 1


@dataclass(frozen=True, slots=True)
class LinkModel:
    """How datagrams travel. Times in seconds; probabilities per datagram."""

    median: float = 0.030
    """Median one-way latency of a link (30 ms: a round trip of 60 ms, typical within a continent)."""
    spread: float = 0.3
    """Sigma of the lognormal: with 0.3 the 99th percentile link is 2x the median, the 99.99th 3x.
    Wider tails make exact lookups rare today: the core's timeout for a peer it never measured
    (global SRTT + 4 RTTVAR, ~250 ms) is shorter than the slowest round trips, and a node whose
    request timed out is dropped from the lookup. With median 40 ms and spread 0.6 about 1 lookup in
    7 misses one true closest node at 1,000 nodes (see docs/simulator.md)."""
    jitter: float = 0.010
    """Extra delay per datagram, uniform in [0, jitter): datagrams closer together than this reorder."""
    loss: float = 0.0
    """Probability that a datagram is dropped."""
    duplicate: float = 0.0
    """Probability that a datagram is delivered twice (each copy with its own jitter)."""

    def __post_init__(self) -> None:
        if self.median <= 0 or self.spread < 0 or self.jitter < 0:
            raise ValueError("median must be > 0, spread and jitter >= 0")
        if not (0.0 <= self.loss <= 1.0 and 0.0 <= self.duplicate <= 1.0 and self.loss + self.duplicate <= 1.0):
            raise ValueError("loss and duplicate must be probabilities whose sum is at most 1")


class LinkLatency:
    """The fixed one-way latency of every link, derived from the seed: `latency(a, b)` for node indexes.

    Links are symmetric (a->b takes as long as b->a), as most internet paths roughly are.
    """

    def __init__(self, model: LinkModel, seed: int) -> None:
        normal = NormalDist()
        self.table: list[float] = [
            model.median * math.exp(model.spread * normal.inv_cdf((i + 0.5) / QUANTILES)) for i in range(QUANTILES)
        ]
        self._salt = (seed * 0x9E3779B97F4A7C15 + 0x632BE59BD9B4E019) & _MASK64

    def __call__(self, a: int, b: int) -> float:
        if a > b:
            a, b = b, a
        h = ((a << 32 | b) ^ self._salt) * 0xBF58476D1CE4E5B9 & _MASK64
        h = (h ^ (h >> 31)) * 0x94D049BB133111EB & _MASK64
        return self.table[(h >> 40) % QUANTILES]
