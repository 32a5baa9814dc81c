"""`Storage` in memory: what the simulator gives each of its thousands of nodes, and the tests' default.

Every peer lives exactly `peer_ttl` after its last announce and every item `item_ttl` after its last put,
so with the core's monotonic clock expiry order is write order. Insertion-ordered dicts (a refresh
re-inserts at the end) therefore hold each kind soonest-expiry first: `sweep` costs O(entries dropped),
and each info-hash's own peer dict names its soonest-expiring peer at its front. Reads still check
`expires_at`, so a clock that steps back never serves an expired entry (it only delays the sweep).
"""

from __future__ import annotations

import random

from kadnode.settings import Settings
from kadnode.storage.base import Item, MutableItem, StorageError, StorageFull, StorageStats, ValueTooLarge
from kadnode.types import Addr

SEQ_MIN = -(2**63)
SEQ_MAX = 2**63 - 1
"""BEP 44's `seq` is a 64-bit signed integer (libtorrent's `sequence_number`); SQLite stores no more."""


def check_seq(seq: int) -> None:
    """Refuse a `seq` no peer could hold, in both implementations alike."""
    if not SEQ_MIN <= seq <= SEQ_MAX:
        raise StorageError(f"seq {seq} is outside the 64-bit range")


class _Peer:
    __slots__ = ("expires_at", "seed")

    def __init__(self, expires_at: float, seed: bool) -> None:
        self.expires_at = expires_at
        self.seed = seed


class _Held:
    """An item stored for someone else, with the IP it is counted against."""

    __slots__ = ("expires_at", "item", "source_ip")

    def __init__(self, item: Item, source_ip: str, expires_at: float) -> None:
        self.item = item
        self.source_ip = source_ip
        self.expires_at = expires_at


class MemoryStorage:
    """`Storage` in dicts; lost when the process ends (the daemon uses `SqliteStorage`)."""

    def __init__(self, settings: Settings, rng: random.Random) -> None:
        self._settings = settings
        self._rng = rng
        self._by_hash: dict[bytes, dict[Addr, _Peer]] = {}
        self._peer_expiry: dict[tuple[bytes, Addr], float] = {}
        """Every stored peer, soonest expiry first."""
        self._items: dict[bytes, _Held] = {}
        """Every stored item by target, soonest expiry first."""
        self._item_bytes = 0
        self._per_ip: dict[str, int] = {}
        self._own_items: dict[bytes, Item] = {}
        self._own_announces: dict[bytes, int | None] = {}

    # ------------------------------------------------------------------ peers

    def add_peer(self, info_hash: bytes, peer: Addr, now: float, *, seed: bool = False) -> None:
        """Store or refresh `peer`; a full info-hash drops its soonest-expiring peer (the one closest to
        re-announcing or to leaving), a new info-hash beyond `max_info_hashes` is refused."""
        self._sweep_peers(now)
        peers = self._by_hash.get(info_hash)
        if peers is None:
            if len(self._by_hash) >= self._settings.max_info_hashes:
                raise StorageFull(f"peer store full ({self._settings.max_info_hashes} info-hashes)")
            peers = self._by_hash[info_hash] = {}
        key = (info_hash, peer)
        if peer in peers:
            del peers[peer]
            del self._peer_expiry[key]
        elif len(peers) >= self._settings.max_peers_per_info_hash:
            oldest = next(iter(peers))
            del peers[oldest]
            del self._peer_expiry[(info_hash, oldest)]
        expires_at = now + self._settings.peer_ttl
        peers[peer] = _Peer(expires_at, seed)
        self._peer_expiry[key] = expires_at

    def get_peers(self, info_hash: bytes, now: float, limit: int, *, noseed: bool = False) -> list[Addr]:
        """Up to `limit` live peers: all of them when they fit (in no particular order: the asker gets
        every one anyway), else a random sample. BEP 33 `noseed` leaves seeds out."""
        self._sweep_peers(now)
        peers = self._by_hash.get(info_hash)
        if not peers or limit <= 0:
            return []
        live = [addr for addr, p in peers.items() if p.expires_at > now and not (noseed and p.seed)]
        if len(live) <= limit:
            return live
        return self._rng.sample(live, limit)

    def _sweep_peers(self, now: float) -> int:
        expiry = self._peer_expiry
        dropped = 0
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
            dropped += 1
        return dropped

    # ------------------------------------------------------------------ items

    def get_item(self, target: bytes, now: float) -> Item | None:
        held = self._items.get(target)
        if held is None or held.expires_at <= now:
            return None
        return held.item

    def put_item(self, item: Item, now: float, *, source_ip: str) -> None:
        """Store or replace; a replacement keeps counting against the IP that first stored the target
        and is refused only if its larger value would break `max_item_bytes`."""
        size = len(item.value)
        if size > self._settings.max_value_size:
            raise ValueTooLarge(f"value of {size} bytes exceeds {self._settings.max_value_size}")
        if isinstance(item, MutableItem):
            check_seq(item.seq)
        self._sweep_items(now)
        held = self._items.get(item.target)
        if held is not None and held.expires_at <= now:  # only if the clock stepped back
            self._drop_item(item.target, held)
            held = None
        if held is None:
            self._check_room(source_ip, size)
            ip = source_ip
            self._per_ip[ip] = self._per_ip.get(ip, 0) + 1
        else:
            growth = size - len(held.item.value)
            if growth > 0 and self._item_bytes + growth > self._settings.max_item_bytes:
                raise StorageFull(f"item store full ({self._settings.max_item_bytes} bytes)")
            ip = held.source_ip
            self._item_bytes -= len(held.item.value)
            del self._items[item.target]
        self._item_bytes += size
        self._items[item.target] = _Held(item, ip, now + self._settings.item_ttl)

    def _check_room(self, source_ip: str, size: int) -> None:
        s = self._settings
        if len(self._items) >= s.max_items:
            raise StorageFull(f"item store full ({s.max_items} items)")
        if self._item_bytes + size > s.max_item_bytes:
            raise StorageFull(f"item store full ({s.max_item_bytes} bytes)")
        if self._per_ip.get(source_ip, 0) >= s.max_items_per_ip:
            raise StorageFull(f"{source_ip} already stores {s.max_items_per_ip} items here")

    def _drop_item(self, target: bytes, held: _Held) -> None:
        del self._items[target]
        self._item_bytes -= len(held.item.value)
        left = self._per_ip[held.source_ip] - 1
        if left:
            self._per_ip[held.source_ip] = left
        else:
            del self._per_ip[held.source_ip]

    def _sweep_items(self, now: float) -> int:
        items = self._items
        dropped = 0
        while items:
            target = next(iter(items))
            held = items[target]
            if held.expires_at > now:
                break
            self._drop_item(target, held)
            dropped += 1
        return dropped

    def items(self, now: float) -> list[Item]:
        return [held.item for held in self._items.values() if held.expires_at > now]

    # ------------------------------------------------------------------ own items and announces

    def save_own_item(self, item: Item) -> None:
        self._own_items[item.target] = item

    def own_items(self) -> list[Item]:
        return list(self._own_items.values())

    def save_own_announce(self, info_hash: bytes, port: int | None) -> None:
        self._own_announces[info_hash] = port

    def remove_own_announce(self, info_hash: bytes) -> None:
        self._own_announces.pop(info_hash, None)

    def own_announces(self) -> list[tuple[bytes, int | None]]:
        return list(self._own_announces.items())

    # ------------------------------------------------------------------ housekeeping

    def sweep(self, now: float) -> int:
        return self._sweep_peers(now) + self._sweep_items(now)

    def stats(self, now: float) -> StorageStats:
        self.sweep(now)
        return StorageStats(
            info_hashes=len(self._by_hash),
            peers=len(self._peer_expiry),
            items=len(self._items),
            item_bytes=self._item_bytes,
        )

    def close(self) -> None:
        """Nothing to release; present for the `Storage` interface."""
