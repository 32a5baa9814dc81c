"""The storage interface the node core writes through, and the values it stores.

The storage never authenticates: the core checks tokens, signatures, `seq` and `cas` before it calls
`put_*`. The storage only enforces its own caps and expiry, and reports refusals as typed errors.
Every `now` is the core's clock (seconds, as handed to the core); implementations that persist across
restarts convert it to wall-clock time themselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from kadnode.types import Addr


class StorageError(Exception):
    """A write the storage refuses; the message says why, for logs and KRPC error replies."""


class StorageFull(StorageError):
    """A cap would be exceeded (total items, total bytes, info-hashes, or one source IP's share)."""


class ValueTooLarge(StorageError):
    """The value is larger than the storage accepts (BEP 44: 1,000 bytes of bencoded `v`)."""


@dataclass(frozen=True, slots=True)
class ImmutableItem:
    """BEP 44 immutable item: `target` is SHA-1 of `value` (the bencoded `v`, verbatim)."""

    target: bytes
    value: bytes


@dataclass(frozen=True, slots=True)
class MutableItem:
    """BEP 44 mutable item: `target` is SHA-1(public_key + salt); `signature` covers salt, seq, value."""

    target: bytes
    public_key: bytes
    salt: bytes
    seq: int
    signature: bytes
    value: bytes


Item = ImmutableItem | MutableItem


@dataclass(frozen=True, slots=True)
class StorageStats:
    info_hashes: int
    peers: int
    items: int
    item_bytes: int


class Storage(Protocol):
    """What the node core needs from a store. Implementations: `MemoryStorage`, `SqliteStorage`."""

    # --- peers (BEP 5 announce_peer) ----------------------------------------------------------
    def add_peer(self, info_hash: bytes, peer: Addr, now: float, *, seed: bool = False) -> None:
        """Store or refresh a peer for `peer_ttl`. Raises StorageFull at `max_info_hashes` for a new
        info-hash; at `max_peers_per_info_hash` the peer expiring soonest makes room."""

    def get_peers(self, info_hash: bytes, now: float, limit: int, *, noseed: bool = False) -> list[Addr]:
        """Up to `limit` live peers, a random sample when there are more."""

    # --- items (BEP 44 put / get) -------------------------------------------------------------
    def get_item(self, target: bytes, now: float) -> Item | None:
        """The live item stored under `target`, if any."""

    def put_item(self, item: Item, now: float, *, source_ip: str) -> None:
        """Store or replace the item under `item.target` for `item_ttl`, durably before returning.

        Replacing a mutable item with the same seq and value only refreshes its expiry. Raises
        ValueTooLarge, or StorageFull when `max_items`, `max_item_bytes` or the source IP's share
        (`max_items_per_ip`) would be exceeded by a new item.
        """

    def items(self, now: float) -> list[Item]:
        """Every live item (for replication to closer nodes)."""

    # --- what this node originated: republished by it, across restarts ------------------------
    def save_own_item(self, item: Item) -> None:
        """Remember an item this node put, replacing an older one under the same target."""

    def own_items(self) -> list[Item]: ...

    def save_own_announce(self, info_hash: bytes, port: int | None) -> None:
        """Remember an info-hash this node announces (port None: implied_port)."""

    def remove_own_announce(self, info_hash: bytes) -> None: ...

    def own_announces(self) -> list[tuple[bytes, int | None]]: ...

    # --- housekeeping -------------------------------------------------------------------------
    def sweep(self, now: float) -> int:
        """Delete expired peers and items; returns how many entries went."""

    def stats(self, now: float) -> StorageStats: ...

    def close(self) -> None: ...
