"""The SQLite state store: round trips, file modes, locking, schema migrations, damaged data."""

from __future__ import annotations

import sqlite3
import stat
from pathlib import Path

import pytest

from kadnode.runtime import state
from kadnode.runtime.state import StateError, StateLockedError, StateStore
from kadnode.types import NodeInfo


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_node_id_round_trip(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with StateStore.open(data) as store:
        assert store.load_node_id() is None
        store.save_node_id(2**160 - 1)
        store.save_node_id(0x1234)  # replaces
    with StateStore.open(data) as store:
        assert store.load_node_id() == 0x1234


def test_node_id_out_of_range(tmp_path: Path) -> None:
    with StateStore.open(tmp_path / "d") as store, pytest.raises(ValueError, match="out of range"):
        store.save_node_id(2**160)


def test_routes_round_trip_newest_first_and_replaced_whole(tmp_path: Path) -> None:
    nodes = [NodeInfo(i * 7919, (f"127.0.0.{i}", 6000 + i)) for i in range(1, 6)]
    with StateStore.open(tmp_path) as store:
        store.save_routes(nodes, last_seen={n.id: 1000.0 + i for i, n in enumerate(nodes)})
    with StateStore.open(tmp_path) as store:
        assert store.load_routes() == list(reversed(nodes))
        store.save_routes(nodes[:2])
        assert sorted(store.load_routes(), key=lambda n: n.id) == nodes[:2]
        store.save_routes([])
        assert store.load_routes() == []


def test_save_routes_rolls_back_on_error(tmp_path: Path) -> None:
    good = [NodeInfo(1, ("127.0.0.1", 1))]
    with StateStore.open(tmp_path) as store:
        store.save_routes(good)
        with pytest.raises(OverflowError):
            store.save_routes([NodeInfo(2, ("127.0.0.2", 2)), NodeInfo(2**170, ("127.0.0.3", 3))])
        assert store.load_routes() == good


def test_creates_private_directory_and_files(tmp_path: Path) -> None:
    data = tmp_path / "a" / "b"
    with StateStore.open(data) as store:
        store.save_routes([NodeInfo(5, ("127.0.0.5", 5))])
        assert mode(data) == 0o700
        assert mode(data / state.DB_NAME) == 0o600
        wal = data / (state.DB_NAME + "-wal")
        assert wal.exists(), "WAL mode"
        assert mode(wal) == 0o600
        assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert store.conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL


def test_existing_directory_mode_left_alone(tmp_path: Path) -> None:
    data = tmp_path / "shared"
    data.mkdir(mode=0o755)
    data.chmod(0o755)
    StateStore.open(data).close()
    assert mode(data) == 0o755


def test_data_dir_that_is_a_file(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(StateError, match="not a directory"):
        StateStore.open(target)


def test_second_open_is_refused_until_closed(tmp_path: Path) -> None:
    first = StateStore.open(tmp_path)
    with pytest.raises(StateLockedError, match="in use by another kadnode"):
        StateStore.open(tmp_path)
    first.close()
    first.close()  # idempotent
    StateStore.open(tmp_path).close()


def test_closed_store_raises(tmp_path: Path) -> None:
    store = StateStore.open(tmp_path)
    store.close()
    assert store.closed
    with pytest.raises(StateError, match="closed"):
        store.load_node_id()


def test_schema_version_recorded(tmp_path: Path) -> None:
    with StateStore.open(tmp_path) as store:
        assert store.schema_version() == state.SCHEMA_VERSION == 3
        tables = {r[0] for r in store.conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"meta", "routes", "peers", "items", "own_items", "own_announces"} <= tables


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    with StateStore.open(tmp_path) as store:
        store.conn.execute("UPDATE meta SET value = 99 WHERE key = 'schema_version'")
    with pytest.raises(StateError, match="schema version 99 is newer"):
        StateStore.open(tmp_path)
    StateStore.open(tmp_path / "other").close()  # the lock was released on failure
    with pytest.raises(StateError):
        StateStore.open(tmp_path)


def test_migration_to_a_new_version_runs_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with StateStore.open(tmp_path) as store:
        store.save_node_id(42)
    new = state.SCHEMA_VERSION + 1
    monkeypatch.setattr(state, "SCHEMA_VERSION", new)
    monkeypatch.setitem(state._MIGRATIONS, new, ("CREATE TABLE extra (key BLOB PRIMARY KEY, value BLOB)",))
    with StateStore.open(tmp_path) as store:
        assert store.schema_version() == new
        assert store.load_node_id() == 42
        store.conn.execute("INSERT INTO extra VALUES (x'01', x'02')")
    with StateStore.open(tmp_path) as store:  # a second open must not re-run the new version
        assert store.conn.execute("SELECT count(*) FROM extra").fetchone()[0] == 1


def test_failed_migration_leaves_old_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    StateStore.open(tmp_path).close()
    old = state.SCHEMA_VERSION
    monkeypatch.setattr(state, "SCHEMA_VERSION", old + 1)
    monkeypatch.setitem(state._MIGRATIONS, old + 1, ("CREATE TABLE t2 (a)", "THIS IS NOT SQL"))
    with pytest.raises(StateError, match="cannot use state database"):
        StateStore.open(tmp_path)
    monkeypatch.setattr(state, "SCHEMA_VERSION", old)
    with StateStore.open(tmp_path) as store:
        assert store.schema_version() == old
        assert store.conn.execute("SELECT 1 FROM sqlite_master WHERE name = 't2'").fetchone() is None


def test_malformed_rows_are_skipped(tmp_path: Path) -> None:
    with StateStore.open(tmp_path) as store:
        good = NodeInfo(7, ("127.0.0.7", 7))
        store.save_routes([good])
        rows = [
            (b"short", "127.0.0.1", 1, 1.0),
            (b"\x01" * 20, "not-an-ip", 1, 1.0),
            (b"\x02" * 20, "127.0.0.1", 0, 1.0),
            (b"\x03" * 20, "127.0.0.1", 70000, 1.0),
            (b"\x04" * 20, "::1", 1, 1.0),
        ]
        store.conn.executemany("INSERT INTO routes VALUES (?, ?, ?, ?)", rows)
        assert store.load_routes() == [good]


def test_malformed_node_id(tmp_path: Path) -> None:
    with StateStore.open(tmp_path) as store:
        store.conn.execute("INSERT INTO meta VALUES ('node_id', x'0102')")
        with pytest.raises(StateError, match="malformed node_id"):
            store.load_node_id()


def test_corrupt_database_file(tmp_path: Path) -> None:
    (tmp_path / state.DB_NAME).write_bytes(b"this is not a database" * 100)
    with pytest.raises(StateError, match="cannot use state database"):
        StateStore.open(tmp_path)


def test_database_is_plain_sqlite(tmp_path: Path) -> None:
    """Operators can inspect the file with the sqlite3 tool: the schema is the documented one."""
    with StateStore.open(tmp_path) as store:
        store.save_node_id(1)
        store.save_routes([NodeInfo(3, ("127.0.0.3", 3))], last_seen={3: 12.5})
    conn = sqlite3.connect(tmp_path / state.DB_NAME)
    try:
        assert conn.execute("SELECT value FROM meta WHERE key='node_id'").fetchone()[0] == (1).to_bytes(20, "big")
        assert conn.execute("SELECT host, port, last_seen FROM routes").fetchall() == [("127.0.0.3", 3, 12.5)]
    finally:
        conn.close()
