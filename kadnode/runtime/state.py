"""A node's durable state in SQLite: its ID and its routing table, so that a restart is a warm start.

Users of other DHTs lose their routing tables (and so their place in the network) on every restart
(design notes §5). One small database per data directory keeps the identity and the last known good
nodes; version 2 adds what `kadnode.storage.sqlite.SqliteStorage` keeps (peers, BEP 44 items, what
this node originated) to the same file, so that one file is the whole node to back up or move.
`open_database` is the one way either of them opens it: private modes, WAL, migrated.

Durability choice: WAL with ``synchronous=NORMAL``. A commit then never waits for fsync (the event loop
thread does these writes), survives a crash of the process, and after a power loss at worst rolls back
the latest snapshot, which costs nothing but a slightly older routing table. FULL would fsync the WAL
on every periodic save for no gain in what we can recover. (SqliteStorage relies on the same mode for
its per-write commits; its docstring cites SQLite's documentation on why a kill -9 loses nothing.)
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from kadnode.types import NodeInfo

DB_NAME = "kadnode.db"
LOCK_NAME = "kadnode.lock"
DIR_MODE = 0o700
FILE_MODE = 0o600
ID_BYTES = 20

SCHEMA_VERSION = 3
_MIGRATIONS: dict[int, tuple[str, ...]] = {
    # version -> statements that bring a database at version-1 to version; append, never edit.
    1: (
        "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB)",
        "CREATE TABLE IF NOT EXISTS routes ("
        " node_id BLOB PRIMARY KEY, host TEXT NOT NULL, port INTEGER NOT NULL, last_seen REAL NOT NULL)",
    ),
    # Storage (kadnode.storage.sqlite). expires_at is wall-clock seconds (time.time()); the expiry
    # indices keep sweeps and "soonest-expiring peer of this info-hash" from scanning the tables.
    2: (
        "CREATE TABLE IF NOT EXISTS peers ("
        " info_hash BLOB NOT NULL, host TEXT NOT NULL, port INTEGER NOT NULL, seed INTEGER NOT NULL,"
        " expires_at REAL NOT NULL, PRIMARY KEY (info_hash, host, port)) WITHOUT ROWID",
        "CREATE INDEX IF NOT EXISTS peers_by_expiry ON peers (expires_at)",
        "CREATE INDEX IF NOT EXISTS peers_by_info_hash_expiry ON peers (info_hash, expires_at)",
        "CREATE TABLE IF NOT EXISTS items ("
        " target BLOB PRIMARY KEY, kind TEXT NOT NULL CHECK (kind IN ('immutable', 'mutable')),"
        " public_key BLOB, salt BLOB, seq INTEGER, signature BLOB, value BLOB NOT NULL,"
        " source_ip TEXT NOT NULL, expires_at REAL NOT NULL)",
        "CREATE INDEX IF NOT EXISTS items_by_expiry ON items (expires_at)",
        "CREATE TABLE IF NOT EXISTS own_items ("
        " target BLOB PRIMARY KEY, kind TEXT NOT NULL CHECK (kind IN ('immutable', 'mutable')),"
        " public_key BLOB, salt BLOB, seq INTEGER, signature BLOB, value BLOB NOT NULL)",
        "CREATE TABLE IF NOT EXISTS own_announces (info_hash BLOB PRIMARY KEY, port INTEGER)",
    ),
    # Shared files (kadnode/runtime/shares.py): the .torrent we built or were given, where the content
    # is, and each file's (size, mtime_ns) when it was last verified, so a restart re-hashes only files
    # that changed.
    3: (
        "CREATE TABLE IF NOT EXISTS shares ("
        " info_hash BLOB PRIMARY KEY, path TEXT NOT NULL, torrent BLOB NOT NULL, stamp TEXT NOT NULL,"
        " added REAL NOT NULL)",
    ),
}


@dataclass(frozen=True, slots=True)
class SavedShare:
    """One row of `shares`: what `kadnode share` handed the daemon."""

    info_hash: bytes
    path: str
    """The shared file or directory (its parent is the torrent's root)."""
    torrent: bytes
    """The .torrent file (its `info` is what the info-hash names)."""
    stamp: str
    """JSON list of [size, mtime_ns] per file when the content was last verified."""
    added: float
    """Wall-clock seconds."""


class StateError(RuntimeError):
    """The state database cannot be used (corrupt, too new, unreadable)."""


class StateLockedError(StateError):
    """Another process holds the data directory: two daemons must not share one node ID."""


def _ensure_dir(path: Path) -> None:
    if not path.exists():
        path.mkdir(parents=True, mode=DIR_MODE)
        os.chmod(path, DIR_MODE)  # mkdir's mode is filtered by the umask
    elif not path.is_dir():
        raise StateError(f"data directory {path} exists and is not a directory")


def _touch_private(path: Path) -> None:
    """Create `path` with mode 0600 if missing; SQLite copies the mode to its -wal and -shm files."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, FILE_MODE)
    os.close(fd)


def open_database(path: Path) -> sqlite3.Connection:
    """Open (creating it 0600, its directory 0700, if missing) the database at `path`: WAL, NORMAL,
    autocommit (callers open their own transactions), migrated to SCHEMA_VERSION.

    Several connections of one process may share the file (the state store and the storage each hold
    one); the directory lock taken by `StateStore.open` keeps other processes out.
    """
    path = Path(path).expanduser()
    _ensure_dir(path.parent)
    conn: sqlite3.Connection | None = None
    try:
        _touch_private(path)
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        _migrate(conn)
    except sqlite3.Error as exc:
        if conn is not None:
            conn.close()
        raise StateError(f"cannot use state database {path}: {exc}") from exc
    except BaseException:
        if conn is not None:
            conn.close()
        raise
    return conn


def _valid_ipv4(host: str) -> bool:
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        return False
    return True


class StateStore:
    """The state database of one data directory. Use `StateStore.open(data_dir)`; close it when done."""

    def __init__(self, data_dir: Path, conn: sqlite3.Connection, lock_fd: int) -> None:
        self.data_dir = data_dir
        self.path = data_dir / DB_NAME
        self._conn: sqlite3.Connection | None = conn
        self._lock_fd = lock_fd

    @classmethod
    def open(cls, data_dir: Path) -> StateStore:
        """Open (creating if needed) `data_dir`/kadnode.db, locked for this process, migrated to date."""
        data_dir = Path(data_dir).expanduser()
        _ensure_dir(data_dir)
        lock_path = data_dir / LOCK_NAME
        lock_fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, FILE_MODE)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(lock_fd)
            raise StateLockedError(
                f"data directory {data_dir} is in use by another kadnode process; "
                "give each node its own --data-dir"
            ) from None
        try:
            conn = open_database(data_dir / DB_NAME)
        except BaseException:
            os.close(lock_fd)
            raise
        return cls(data_dir, conn, lock_fd)

    def close(self) -> None:
        """Close the database and release the directory lock (idempotent)."""
        if self._conn is None:
            return
        self._conn.close()
        self._conn = None
        os.close(self._lock_fd)

    def __enter__(self) -> StateStore:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self._conn is None

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StateError(f"state database {self.path} is closed")
        return self._conn

    def schema_version(self) -> int:
        return _schema_version(self.conn)

    # ------------------------------------------------------------------ node ID

    def load_node_id(self) -> int | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = 'node_id'").fetchone()
        if row is None:
            return None
        value = row[0]
        if not isinstance(value, bytes) or len(value) != ID_BYTES:
            raise StateError(f"malformed node_id in {self.path}; delete the file to start afresh")
        return int.from_bytes(value, "big")

    def save_node_id(self, node_id: int) -> None:
        if not 0 <= node_id < 1 << (8 * ID_BYTES):
            raise ValueError(f"node ID out of range: {node_id:#x}")
        with self._transaction() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('node_id', ?)",
                (node_id.to_bytes(ID_BYTES, "big"),),
            )

    # ------------------------------------------------------------------ routing table

    def load_routes(self) -> list[NodeInfo]:
        """Saved nodes, most recently seen first; rows that cannot be a valid node are skipped."""
        nodes: list[NodeInfo] = []
        for node_id, host, port, _ in self.conn.execute(
            "SELECT node_id, host, port, last_seen FROM routes ORDER BY last_seen DESC"
        ):
            if (
                isinstance(node_id, bytes)
                and len(node_id) == ID_BYTES
                and isinstance(host, str)
                and _valid_ipv4(host)
                and isinstance(port, int)
                and 0 < port < 65536
            ):
                nodes.append(NodeInfo(int.from_bytes(node_id, "big"), (host, port)))
        return nodes

    def save_routes(self, nodes: Iterable[NodeInfo], *, last_seen: Mapping[int, float] | None = None) -> None:
        """Replace the saved table with `nodes` in one transaction.

        `last_seen` maps node IDs to wall-clock seconds (time.time()); nodes missing from it get now.
        """
        seen = last_seen or {}
        now = time.time()
        rows = [
            (n.id.to_bytes(ID_BYTES, "big"), n.addr[0], n.addr[1], seen.get(n.id, now)) for n in nodes
        ]
        with self._transaction() as conn:
            conn.execute("DELETE FROM routes")
            conn.executemany(
                "INSERT OR REPLACE INTO routes (node_id, host, port, last_seen) VALUES (?, ?, ?, ?)", rows
            )

    # ------------------------------------------------------------------ shares

    def save_share(self, share: SavedShare) -> None:
        with self._transaction() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO shares (info_hash, path, torrent, stamp, added) VALUES (?, ?, ?, ?, ?)",
                (share.info_hash, share.path, share.torrent, share.stamp, share.added),
            )

    def remove_share(self, info_hash: bytes) -> bool:
        with self._transaction() as conn:
            return conn.execute("DELETE FROM shares WHERE info_hash = ?", (info_hash,)).rowcount > 0

    def load_shares(self) -> list[SavedShare]:
        """Saved shares, oldest first; rows of the wrong types are skipped (the share code re-checks the
        torrent itself)."""
        shares: list[SavedShare] = []
        for info_hash, path, torrent, stamp, added in self.conn.execute(
            "SELECT info_hash, path, torrent, stamp, added FROM shares ORDER BY added"
        ):
            if (
                isinstance(info_hash, bytes) and len(info_hash) == ID_BYTES and isinstance(path, str)
                and isinstance(torrent, bytes) and isinstance(stamp, str) and isinstance(added, float | int)
            ):
                shares.append(SavedShare(info_hash, path, torrent, stamp, float(added)))
        return shares

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")


def _schema_version(conn: sqlite3.Connection) -> int:
    has_meta = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'").fetchone()
    if has_meta is None:
        return 0
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    if row is None:
        return 0
    try:
        return int(row[0])
    except (TypeError, ValueError):
        raise StateError(f"unreadable schema_version {row[0]!r}") from None


def _migrate(conn: sqlite3.Connection) -> int:
    """Bring the schema to SCHEMA_VERSION, one version per transaction; returns the version found.

    Each step re-reads the version inside its write transaction, so two connections opening the same
    file at once never run a step twice.
    """
    target = SCHEMA_VERSION
    found = _schema_version(conn)
    while True:
        conn.execute("BEGIN IMMEDIATE")
        try:
            current = _schema_version(conn)
            if current > target:
                raise StateError(
                    f"database schema version {current} is newer than this kadnode supports ({target}); "
                    "upgrade kadnode or use another --data-dir"
                )
            if current == target:
                conn.execute("COMMIT")
                return found
            for statement in _MIGRATIONS[current + 1]:
                conn.execute(statement)
            conn.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)", (current + 1,)
            )
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
