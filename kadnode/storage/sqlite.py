"""`Storage` on SQLite: the daemon's peers and BEP 44 items survive restarts and kill -9.

The tables live in the node's one database file (`kadnode.db`, schema version 2 in
`kadnode.runtime.state`), next to its ID and routing table, so a data directory is backed up or moved
as one file. This class opens its own connection to that file; the directory lock that `StateStore`
takes keeps any other process out, so this connection is the tables' only writer and the counters it
keeps in memory (items, bytes, per-IP shares, peers per info-hash) stay exact: they are loaded once at
open and changed only after a commit succeeds. Caps therefore cost no `COUNT(*)`.

Durability: every `add_peer`, `put_item` and `save_own_*` commits before it returns, in WAL mode with
`synchronous=NORMAL`. SQLite's documentation of PRAGMA synchronous (sqlite.org/pragma.html) says that
WAL with NORMAL may roll back the latest commits after a power loss or an OS crash, but that
"transactions are durable across application crashes regardless of the synchronous setting or journal
mode": a committed WAL frame is in the OS page cache, which outlives the process. So what the node has
acknowledged survives kill -9 (tests/test_storage_durability.py checks it), and no commit waits for
an fsync on the event-loop thread. FULL would add that fsync only to survive power loss, which the
DHT covers anyway: originators re-put their items every hour.

Expiry times on disk are wall-clock seconds: the core runs on a monotonic clock that restarts at each
boot, so `wall_offset` (wall = now + wall_offset) translates in both directions.

Reads are served from memory where they can be: every get_peers and get query a node answers reads the
store, and a SELECT costs more than the rest of the answer. The live peers of an info-hash are cached
until the first of them expires or the info-hash is written; `get_item` results (misses included) sit
in a bounded LRU until they expire or their target is written. This class is the tables' only writer,
so a write here is the only thing that can make a cached read stale.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import sqlite3
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kadnode.runtime.state import open_database
from kadnode.settings import Settings
from kadnode.storage.base import (
    ImmutableItem,
    Item,
    MutableItem,
    StorageFull,
    StorageStats,
    ValueTooLarge,
)
from kadnode.storage.memory import check_seq
from kadnode.types import Addr

log = logging.getLogger(__name__)

IMMUTABLE = "immutable"
MUTABLE = "mutable"
_ITEM_COLUMNS = "target, kind, public_key, salt, seq, signature, value"
ITEM_CACHE_SIZE = 4096
"""`get_item` results kept in memory (hits and misses), least recently used dropped first."""


def _item_row(item: Item) -> tuple[Any, ...]:
    if isinstance(item, MutableItem):
        return (item.target, MUTABLE, item.public_key, item.salt, item.seq, item.signature, item.value)
    return (item.target, IMMUTABLE, None, None, None, None, item.value)


def _item_from_row(row: tuple[Any, ...]) -> Item | None:
    """The item a row holds, or None (logged) when the row cannot be one: the file is the operator's."""
    target, kind, public_key, salt, seq, signature, value = row
    if isinstance(target, bytes) and isinstance(value, bytes):
        if kind == IMMUTABLE:
            return ImmutableItem(target, value)
        if (
            kind == MUTABLE
            and isinstance(public_key, bytes)
            and isinstance(salt, bytes)
            and isinstance(seq, int)
            and isinstance(signature, bytes)
        ):
            return MutableItem(target, public_key, salt, seq, signature, value)
    log.warning("skipping a malformed item row (target %r)", target)
    return None


class SqliteStorage:
    """`Storage` in the node's SQLite database. Use `SqliteStorage.open(...)`; close it when done."""

    def __init__(
        self, conn: sqlite3.Connection, settings: Settings, rng: random.Random, *, wall_offset: float
    ) -> None:
        """Take over `conn` (autocommit, migrated; see `open`) and load the counters from it."""
        self._conn: sqlite3.Connection | None = conn
        self._settings = settings
        self._rng = rng
        self.wall_offset = wall_offset
        self._peer_counts: dict[bytes, int] = dict(
            conn.execute("SELECT info_hash, COUNT(*) FROM peers GROUP BY info_hash").fetchall()
        )
        self._peer_total = sum(self._peer_counts.values())
        self._per_ip: dict[str, int] = dict(
            conn.execute("SELECT source_ip, COUNT(*) FROM items GROUP BY source_ip").fetchall()
        )
        count, size = conn.execute("SELECT COUNT(*), COALESCE(SUM(length(value)), 0) FROM items").fetchone()
        self._item_count: int = count
        self._item_bytes: int = size
        self._peer_cache: dict[bytes, tuple[list[tuple[Addr, bool]], float]] = {}
        """info-hash -> (its live peers with their seed flag, the wall time the first of them expires)."""
        self._item_cache: OrderedDict[bytes, tuple[Item | None, float]] = OrderedDict()
        """target -> (`get_item`'s answer, the wall time until which it holds)."""

    @classmethod
    def open(cls, path: Path, settings: Settings, rng: random.Random, *, wall_offset: float) -> SqliteStorage:
        """Open the database file `path` (normally data_dir/kadnode.db), creating and migrating it as
        `kadnode.runtime.state.open_database` does; raises StateError if it cannot be used."""
        conn = open_database(Path(path))
        try:
            return cls(conn, settings, rng, wall_offset=wall_offset)
        except BaseException:
            conn.close()
            raise

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise sqlite3.ProgrammingError("the storage is closed")
        return self._conn

    def close(self) -> None:
        """Close the connection (idempotent). Every acknowledged write is already committed."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, committed before the caller returns; a full disk is StorageFull."""
        conn = self.conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if exc.sqlite_errorcode == sqlite3.SQLITE_FULL:
                raise StorageFull("the disk holding the database is full") from exc
            raise

    # ------------------------------------------------------------------ peers

    def add_peer(self, info_hash: bytes, peer: Addr, now: float, *, seed: bool = False) -> None:
        """Store or refresh `peer`; a full info-hash drops its soonest-expiring peer, a new info-hash
        beyond `max_info_hashes` is refused (after expired ones are swept)."""
        s = self._settings
        if info_hash not in self._peer_counts and len(self._peer_counts) >= s.max_info_hashes:
            self.sweep(now)
            if len(self._peer_counts) >= s.max_info_hashes:
                raise StorageFull(f"peer store full ({s.max_info_hashes} info-hashes)")
        host, port = peer
        count = self._peer_counts.get(info_hash, 0)
        with self._write() as conn:
            known = conn.execute(
                "SELECT 1 FROM peers WHERE info_hash = ? AND host = ? AND port = ?", (info_hash, host, port)
            ).fetchone()
            evicted = False
            if known is None and count >= s.max_peers_per_info_hash:
                conn.execute(
                    "DELETE FROM peers WHERE (info_hash, host, port) = (SELECT info_hash, host, port"
                    " FROM peers WHERE info_hash = ? ORDER BY expires_at LIMIT 1)",
                    (info_hash,),
                )
                evicted = True
            conn.execute(
                "INSERT INTO peers (info_hash, host, port, seed, expires_at) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (info_hash, host, port) DO UPDATE SET"
                " seed = excluded.seed, expires_at = excluded.expires_at",
                (info_hash, host, port, int(seed), now + s.peer_ttl + self.wall_offset),
            )
        self._peer_cache.pop(info_hash, None)
        if known is None and not evicted:
            self._peer_counts[info_hash] = count + 1
            self._peer_total += 1

    def get_peers(self, info_hash: bytes, now: float, limit: int, *, noseed: bool = False) -> list[Addr]:
        """Up to `limit` live peers: all of them when they fit (in no particular order: the asker gets
        every one anyway), else a random sample. BEP 33 `noseed` leaves seeds out."""
        if limit <= 0 or info_hash not in self._peer_counts:
            return []
        wall_now = now + self.wall_offset
        cached = self._peer_cache.get(info_hash)
        if cached is None or wall_now >= cached[1]:
            rows = self.conn.execute(
                "SELECT host, port, seed, expires_at FROM peers WHERE info_hash = ? AND expires_at > ?",
                (info_hash, wall_now),
            ).fetchall()
            cached = ([((host, port), bool(seed)) for host, port, seed, _ in rows],
                      min((row[3] for row in rows), default=math.inf))
            self._peer_cache[info_hash] = cached
        live = [peer for peer, seed in cached[0] if not (noseed and seed)]
        if len(live) <= limit:
            return live
        return self._rng.sample(live, limit)

    # ------------------------------------------------------------------ items

    def get_item(self, target: bytes, now: float) -> Item | None:
        wall_now = now + self.wall_offset
        cache = self._item_cache
        cached = cache.get(target)
        if cached is not None and wall_now < cached[1]:
            cache.move_to_end(target)
            return cached[0]
        row = self.conn.execute(
            f"SELECT {_ITEM_COLUMNS}, expires_at FROM items WHERE target = ? AND expires_at > ?",
            (target, wall_now),
        ).fetchone()
        item = None if row is None else _item_from_row(row[:-1])
        cache[target] = (item, math.inf if row is None else row[-1])
        cache.move_to_end(target)
        if len(cache) > ITEM_CACHE_SIZE:
            cache.popitem(last=False)
        return item

    def put_item(self, item: Item, now: float, *, source_ip: str) -> None:
        """Store or replace, committed before returning. A replacement keeps counting against the IP
        that first stored the target and is refused only if its larger value breaks `max_item_bytes`;
        an expired row under the target (not yet swept) is replaced as a new item."""
        size = len(item.value)
        if size > self._settings.max_value_size:
            raise ValueTooLarge(f"value of {size} bytes exceeds {self._settings.max_value_size}")
        if isinstance(item, MutableItem):
            check_seq(item.seq)
        wall_now = now + self.wall_offset
        old = self._held(item.target)
        if old is not None and old[2] <= wall_now:
            self.sweep(now)
            old = self._held(item.target)
        refusal = self._refusal(source_ip, size, old)
        if refusal is not None:
            self.sweep(now)
            old = self._held(item.target)
            refusal = self._refusal(source_ip, size, old)
            if refusal is not None:
                raise StorageFull(refusal)
        row = _item_row(item)
        expires_at = wall_now + self._settings.item_ttl
        self._item_cache.pop(item.target, None)
        with self._write() as conn:
            if old is None:
                conn.execute(
                    f"INSERT INTO items ({_ITEM_COLUMNS}, source_ip, expires_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (*row, source_ip, expires_at),
                )
            else:
                conn.execute(
                    "UPDATE items SET kind = ?, public_key = ?, salt = ?, seq = ?, signature = ?, value = ?,"
                    " expires_at = ? WHERE target = ?",
                    (*row[1:], expires_at, item.target),
                )
        if old is None:
            self._item_count += 1
            self._item_bytes += size
            self._per_ip[source_ip] = self._per_ip.get(source_ip, 0) + 1
        else:
            self._item_bytes += size - old[1]

    def _held(self, target: bytes) -> tuple[str, int, float] | None:
        """(source_ip, value bytes, expires_at) of the row under `target`, expired or not."""
        row: tuple[str, int, float] | None = self.conn.execute(
            "SELECT source_ip, length(value), expires_at FROM items WHERE target = ?", (target,)
        ).fetchone()
        return row

    def _refusal(self, source_ip: str, size: int, old: tuple[str, int, float] | None) -> str | None:
        """Why storing `size` bytes (replacing `old`) would break a cap, or None."""
        s = self._settings
        if old is not None:
            if size > old[1] and self._item_bytes + size - old[1] > s.max_item_bytes:
                return f"item store full ({s.max_item_bytes} bytes)"
            return None
        if self._item_count >= s.max_items:
            return f"item store full ({s.max_items} items)"
        if self._item_bytes + size > s.max_item_bytes:
            return f"item store full ({s.max_item_bytes} bytes)"
        if self._per_ip.get(source_ip, 0) >= s.max_items_per_ip:
            return f"{source_ip} already stores {s.max_items_per_ip} items here"
        return None

    def items(self, now: float) -> list[Item]:
        rows = self.conn.execute(
            f"SELECT {_ITEM_COLUMNS} FROM items WHERE expires_at > ?", (now + self.wall_offset,)
        ).fetchall()
        return [item for item in map(_item_from_row, rows) if item is not None]

    # ------------------------------------------------------------------ own items and announces

    def save_own_item(self, item: Item) -> None:
        if isinstance(item, MutableItem):
            check_seq(item.seq)
        with self._write() as conn:
            conn.execute(
                f"INSERT OR REPLACE INTO own_items ({_ITEM_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                _item_row(item),
            )

    def own_items(self) -> list[Item]:
        rows = self.conn.execute(f"SELECT {_ITEM_COLUMNS} FROM own_items").fetchall()
        return [item for item in map(_item_from_row, rows) if item is not None]

    def save_own_announce(self, info_hash: bytes, port: int | None) -> None:
        with self._write() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO own_announces (info_hash, port) VALUES (?, ?)", (info_hash, port)
            )

    def remove_own_announce(self, info_hash: bytes) -> None:
        with self._write() as conn:
            conn.execute("DELETE FROM own_announces WHERE info_hash = ?", (info_hash,))

    def own_announces(self) -> list[tuple[bytes, int | None]]:
        announces: list[tuple[bytes, int | None]] = []
        for info_hash, port in self.conn.execute("SELECT info_hash, port FROM own_announces"):
            if isinstance(info_hash, bytes) and (
                port is None or (isinstance(port, int) and 0 < port < 65536)
            ):
                announces.append((info_hash, port))
            else:
                log.warning("skipping a malformed own_announces row (%r, %r)", info_hash, port)
        return announces

    # ------------------------------------------------------------------ housekeeping

    def sweep(self, now: float) -> int:
        """Delete expired peers and items in one transaction (found through the expiry indices)."""
        wall_now = now + self.wall_offset
        conn = self.conn
        if (
            conn.execute("SELECT 1 FROM peers WHERE expires_at <= ? LIMIT 1", (wall_now,)).fetchone() is None
            and conn.execute("SELECT 1 FROM items WHERE expires_at <= ? LIMIT 1", (wall_now,)).fetchone()
            is None
        ):
            return 0  # the common case costs two index probes and no write lock
        with self._write() as conn:
            peers = conn.execute(
                "DELETE FROM peers WHERE expires_at <= ? RETURNING info_hash", (wall_now,)
            ).fetchall()
            items = conn.execute(
                "DELETE FROM items WHERE expires_at <= ? RETURNING source_ip, length(value)", (wall_now,)
            ).fetchall()
        for (info_hash,) in peers:
            self._peer_cache.pop(info_hash, None)
            left = self._peer_counts[info_hash] - 1
            if left:
                self._peer_counts[info_hash] = left
            else:
                del self._peer_counts[info_hash]
        self._peer_total -= len(peers)
        for source_ip, size in items:
            left = self._per_ip[source_ip] - 1
            if left:
                self._per_ip[source_ip] = left
            else:
                del self._per_ip[source_ip]
            self._item_bytes -= size
        self._item_count -= len(items)
        return len(peers) + len(items)

    def stats(self, now: float) -> StorageStats:
        """Counts of live entries (expired ones are swept first)."""
        self.sweep(now)
        return StorageStats(
            info_hashes=len(self._peer_counts),
            peers=self._peer_total,
            items=self._item_count,
            item_bytes=self._item_bytes,
        )
