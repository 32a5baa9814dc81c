"""Peers announced to us (BEP 5 announce_peer), bounded in info-hashes, peers and time.

Every peer lives exactly ``peer_ttl`` after its last announce, so expiry order is announce order: one
insertion-ordered dict over all peers (refreshes move to the end) lets ``sweep`` drop expired peers in
time proportional to what it drops, and each info-hash's own dict (same order) names its soonest-expiring
peer at its front.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

from kadnode.settings import Settings
from kadnode.types import Addr


@dataclass(frozen=True, slots=True)
class _Stored:
    expires_at: float
    seed: bool


class PeerStore:
    """Announced peers per info-hash; ``add`` refuses what would break a cap (see its docstring)."""

    def __init__(self, settings: Settings, rng: random.Random) -> None:
        self._ttl = settings.peer_ttl
        self._max_info_hashes = settings.max_info_hashes
        self._max_peers = settings.max_peers_per_info_hash
        self._rng = rng
        self._by_hash: dict[bytes, dict[Addr, _Stored]] = {}
        self._expiry: dict[tuple[bytes, Addr], float] = {}
        """Every stored peer, soonest expiry first (a refresh re-inserts at the end)."""

    @property
    def info_hash_count(self) -> int:
        return len(self._by_hash)

    @property
    def peer_count(self) -> int:
        return len(self._expiry)

    def add(self, info_hash: bytes, peer: Addr, now: float, *, seed: bool = False) -> bool:
        """Store or refresh ``peer`` for ``info_hash``; False when nothing was stored.

        A new info-hash is refused while ``max_info_hashes`` live ones are stored. A new peer for an
        info-hash already holding ``max_peers_per_info_hash`` replaces the one expiring soonest (its
        announcer is the closest to re-announcing or to leaving).
        """
        self.sweep(now)
        peers = self._by_hash.get(info_hash)
        if peers is None:
            if len(self._by_hash) >= self._max_info_hashes:
                return False
            peers = self._by_hash[info_hash] = {}
        key = (info_hash, peer)
        if peer in peers:
            del peers[peer]
            del self._expiry[key]
        elif len(peers) >= self._max_peers:
            oldest = next(iter(peers))
            del peers[oldest]
            del self._expiry[(info_hash, oldest)]
        expires_at = now + self._ttl
        peers[peer] = _Stored(expires_at, seed)
        self._expiry[key] = expires_at
        return True

    def get(self, info_hash: bytes, now: float, limit: int, *, noseed: bool = False) -> list[Addr]:
        """Up to ``limit`` live peers for ``info_hash``, a random sample (BEP 33 ``noseed`` drops seeds)."""
        self.sweep(now)
        peers = self._by_hash.get(info_hash)
        if not peers or limit <= 0:
            return []
        # The expiry check matters only if a caller's clock stepped back (then sweep order lags).
        live = [addr for addr, stored in peers.items() if stored.expires_at > now and not (noseed and stored.seed)]
        if len(live) <= limit:
            self._rng.shuffle(live)
            return live
        return self._rng.sample(live, limit)

    def sweep(self, now: float) -> None:
        """Drop expired peers and info-hashes left empty; costs O(peers dropped)."""
        expiry = self._expiry
        while expiry:
            key = next(iter(expiry))
            if expiry[key] > now:
                break
            del expiry[key]
            info_hash, addr = key
            peers = self._by_hash[info_hash]
            del peers[addr]
            if not peers:
                del self._by_hash[info_hash]

    def items(self) -> Iterator[tuple[bytes, list[Addr]]]:
        """Each stored info-hash with its peers (as of the last sweep), for status and debugging."""
        for info_hash, peers in list(self._by_hash.items()):
            yield info_hash, list(peers)
