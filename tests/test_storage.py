"""The storage contract, run against both implementations, plus what only SQLite promises (reopen, modes).

Every test gets a factory `make(**settings_changes)`; SQLite stores run with a large `wall_offset` so
that a missing conversion between the core's clock and wall-clock time shows up as wrong expiry.
"""

from __future__ import annotations

import hashlib
import random
import sqlite3
import stat
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from kadnode.runtime import state
from kadnode.runtime.state import StateError, StateStore
from kadnode.settings import Settings
from kadnode.storage.base import (
    ImmutableItem,
    Item,
    MutableItem,
    Storage,
    StorageError,
    StorageFull,
    StorageStats,
    ValueTooLarge,
)
from kadnode.storage.memory import MemoryStorage
from kadnode.storage.sqlite import SqliteStorage
from kadnode.types import Addr

PEER_TTL = 100.0
ITEM_TTL = 1000.0
WALL_OFFSET = 1.7e9
IH_A = b"a" * 20
IH_B = b"b" * 20
IH_C = b"c" * 20
BASE = Settings().with_changes(peer_ttl=PEER_TTL, item_ttl=ITEM_TTL)

Factory = Callable[..., Storage]


def peer(i: int) -> Addr:
    return ("127.0.0.1", 1000 + i)


def immutable(i: int, size: int = 10) -> ImmutableItem:
    value = _bstr(f"v{i}", size)
    return ImmutableItem(hashlib.sha1(value).digest(), value)


def _bstr(seed: str, size: int) -> bytes:
    """Exactly `size` bytes of value; the storage treats `v` as opaque, so it need not be bencode."""
    return (seed * size).encode()[:size].ljust(size, b"_")


def mutable(key: int, seq: int, value: bytes = b"3:abc", salt: bytes = b"") -> MutableItem:
    public_key = bytes([key]) * 32
    return MutableItem(
        hashlib.sha1(public_key + salt).digest(), public_key, salt, seq, bytes([seq % 256]) * 64, value
    )


@pytest.fixture(params=["memory", "sqlite"])
def make(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Factory]:
    opened: list[Storage] = []

    def factory(**changes: Any) -> Storage:
        settings = BASE.with_changes(**changes)
        store: Storage
        if request.param == "memory":
            store = MemoryStorage(settings, random.Random(7))
        else:
            path = tmp_path / f"db{len(opened)}" / state.DB_NAME
            store = SqliteStorage.open(path, settings, random.Random(7), wall_offset=WALL_OFFSET)
        opened.append(store)
        return store

    yield factory
    for store in opened:
        store.close()


def by_target(items: Iterable[Item]) -> list[Item]:
    return sorted(items, key=lambda item: item.target)


def stats(s: Storage, now: float) -> tuple[int, int, int, int]:
    st_ = s.stats(now)
    return (st_.info_hashes, st_.peers, st_.items, st_.item_bytes)


# ---------------------------------------------------------------------------------------------- peers


def test_peers_add_refresh_get(make: Factory) -> None:
    s = make()
    s.add_peer(IH_A, peer(1), 0.0)
    s.add_peer(IH_A, peer(2), 0.0, seed=True)
    s.add_peer(IH_B, peer(1), 0.0)
    s.add_peer(IH_A, peer(1), 1.0)  # refresh, not a new peer
    assert stats(s, 1.0) == (2, 3, 0, 0)
    assert sorted(s.get_peers(IH_A, 1.0, 10)) == [peer(1), peer(2)]
    assert s.get_peers(IH_A, 1.0, 10, noseed=True) == [peer(1)]
    assert s.get_peers(IH_C, 1.0, 10) == []
    assert s.get_peers(IH_A, 1.0, 0) == []


def test_peer_seed_flag_follows_latest_announce(make: Factory) -> None:
    s = make()
    s.add_peer(IH_A, peer(1), 0.0, seed=True)
    assert s.get_peers(IH_A, 0.0, 10, noseed=True) == []
    s.add_peer(IH_A, peer(1), 1.0, seed=False)
    assert s.get_peers(IH_A, 1.0, 10, noseed=True) == [peer(1)]


def test_peers_expire_and_refresh_extends(make: Factory) -> None:
    s = make()
    s.add_peer(IH_A, peer(1), 0.0)
    s.add_peer(IH_A, peer(2), 50.0)
    assert sorted(s.get_peers(IH_A, PEER_TTL - 1, 10)) == [peer(1), peer(2)]
    assert s.get_peers(IH_A, PEER_TTL, 10) == [peer(2)]  # expired exactly at the TTL
    s.add_peer(IH_A, peer(2), 120.0)  # lives until 220
    assert s.get_peers(IH_A, 219.0, 10) == [peer(2)]
    assert s.get_peers(IH_A, 220.0, 10) == []
    assert stats(s, 220.0) == (0, 0, 0, 0)


def test_info_hash_cap_refuses_new_and_frees_on_expiry(make: Factory) -> None:
    s = make(max_info_hashes=2)
    s.add_peer(IH_A, peer(1), 0.0)
    s.add_peer(IH_B, peer(1), 10.0)
    with pytest.raises(StorageFull, match="info-hashes"):
        s.add_peer(IH_C, peer(1), 20.0)
    s.add_peer(IH_A, peer(2), 20.0)  # a known info-hash still takes peers
    assert s.get_peers(IH_C, 20.0, 10) == []
    s.add_peer(IH_A, peer(1), 30.0)
    s.add_peer(IH_A, peer(2), 30.0)
    s.add_peer(IH_C, peer(1), 110.0)  # IH_B (last announce at 10) expired at 110
    assert s.get_peers(IH_C, 110.0, 10) == [peer(1)]
    assert stats(s, 110.0)[:2] == (2, 3)


def test_full_info_hash_drops_soonest_expiring_peer(make: Factory) -> None:
    s = make(max_peers_per_info_hash=3)
    for i in range(3):
        s.add_peer(IH_A, peer(i), float(i))
    s.add_peer(IH_A, peer(0), 5.0)  # refresh at the cap drops nobody; peer 1 is now soonest
    assert sorted(s.get_peers(IH_A, 5.0, 10)) == [peer(0), peer(1), peer(2)]
    s.add_peer(IH_A, peer(9), 6.0)
    assert sorted(s.get_peers(IH_A, 6.0, 10)) == [peer(0), peer(2), peer(9)]
    assert stats(s, 6.0)[:2] == (1, 3)


def test_get_peers_samples_randomly_within_limit(make: Factory) -> None:
    s = make()
    everyone = {peer(i) for i in range(30)}
    for p in everyone:
        s.add_peer(IH_A, p, 0.0)
    seen: set[Addr] = set()
    for _ in range(20):
        sample = s.get_peers(IH_A, 1.0, 8)
        assert len(sample) == len(set(sample)) == 8
        assert set(sample) <= everyone
        seen.update(sample)
    assert len(seen) > 20  # not always the same 8


# ---------------------------------------------------------------------------------------------- items


def test_items_put_get_and_list(make: Factory) -> None:
    s = make()
    a, m = immutable(1), mutable(1, seq=5, salt=b"salt")
    assert s.get_item(a.target, 0.0) is None
    s.put_item(a, 0.0, source_ip="127.0.0.2")
    s.put_item(m, 0.0, source_ip="127.0.0.3")
    assert s.get_item(a.target, 1.0) == a
    assert s.get_item(m.target, 1.0) == m
    assert by_target(s.items(1.0)) == by_target([a, m])
    assert stats(s, 1.0) == (0, 0, 2, len(a.value) + len(m.value))


def test_mutable_with_empty_salt_and_extreme_seq_round_trips(make: Factory) -> None:
    s = make()
    for seq in (0, -(2**63), 2**63 - 1):
        item = mutable(2, seq=seq, salt=b"")
        s.put_item(item, 0.0, source_ip="127.0.0.2")
        assert s.get_item(item.target, 0.0) == item
    with pytest.raises(StorageError, match="64-bit"):
        s.put_item(mutable(2, seq=2**63), 0.0, source_ip="127.0.0.2")
    assert s.get_item(mutable(2, 0).target, 0.0) == mutable(2, seq=2**63 - 1)


def test_replace_counts_once_and_tracks_bytes(make: Factory) -> None:
    s = make()
    s.put_item(mutable(1, 1, b"3:abc"), 0.0, source_ip="127.0.0.2")
    newer = mutable(1, 2, b"6:abcdef")
    s.put_item(newer, 1.0, source_ip="127.0.0.2")
    assert s.get_item(newer.target, 1.0) == newer
    assert stats(s, 1.0) == (0, 0, 1, 8)
    smaller = mutable(1, 3, b"1:x")
    s.put_item(smaller, 2.0, source_ip="127.0.0.4")
    assert stats(s, 2.0) == (0, 0, 1, 3)


def test_items_expire_and_reput_refreshes(make: Factory) -> None:
    s = make()
    a, b = immutable(1), immutable(2)
    s.put_item(a, 0.0, source_ip="127.0.0.2")
    s.put_item(b, 500.0, source_ip="127.0.0.2")
    assert s.get_item(a.target, ITEM_TTL - 1) == a
    assert s.get_item(a.target, ITEM_TTL) is None  # expired exactly at the TTL
    assert s.items(ITEM_TTL) == [b]
    s.put_item(b, 1400.0, source_ip="127.0.0.2")  # re-put: lives until 2400
    assert s.get_item(b.target, 2399.0) == b
    assert s.get_item(b.target, 2400.0) is None
    assert stats(s, 2400.0) == (0, 0, 0, 0)


def test_expired_item_put_again_is_a_new_item_for_the_new_ip(make: Factory) -> None:
    s = make(max_items_per_ip=1)
    a = immutable(1)
    s.put_item(a, 0.0, source_ip="127.0.0.2")
    s.put_item(a, ITEM_TTL, source_ip="127.0.0.3")  # the old copy expired: counted for .3 now
    s.put_item(immutable(2), ITEM_TTL, source_ip="127.0.0.2")
    with pytest.raises(StorageFull):
        s.put_item(immutable(3), ITEM_TTL, source_ip="127.0.0.3")


def test_item_count_cap(make: Factory) -> None:
    s = make(max_items=3)
    for i in range(3):
        s.put_item(immutable(i), float(i), source_ip=f"127.0.0.{i + 2}")
    with pytest.raises(StorageFull, match="3 items"):
        s.put_item(immutable(9), 10.0, source_ip="127.0.0.9")
    assert s.get_item(immutable(9).target, 10.0) is None
    s.put_item(immutable(1), 10.0, source_ip="127.0.0.9")  # replacing at the cap is fine
    s.put_item(immutable(9), ITEM_TTL, source_ip="127.0.0.9")  # item 0 expired: room again
    assert stats(s, ITEM_TTL)[2] == 3


def test_item_bytes_cap_for_new_and_growing_items(make: Factory) -> None:
    s = make(max_item_bytes=25)
    s.put_item(mutable(1, 1, _bstr("a", 10)), 0.0, source_ip="127.0.0.2")
    s.put_item(immutable(2, size=10), 0.0, source_ip="127.0.0.2")
    with pytest.raises(StorageFull, match="25 bytes"):
        s.put_item(immutable(3, size=6), 0.0, source_ip="127.0.0.2")
    with pytest.raises(StorageFull, match="25 bytes"):
        s.put_item(mutable(1, 2, _bstr("b", 16)), 0.0, source_ip="127.0.0.2")
    assert s.get_item(mutable(1, 1).target, 0.0) == mutable(1, 1, _bstr("a", 10))
    s.put_item(mutable(1, 3, _bstr("c", 15)), 0.0, source_ip="127.0.0.2")  # grows to exactly the cap
    assert stats(s, 0.0)[3] == 25
    s.put_item(mutable(1, 4, _bstr("d", 4)), 0.0, source_ip="127.0.0.2")  # shrinking always fits
    s.put_item(immutable(3, size=11), 0.0, source_ip="127.0.0.2")
    assert stats(s, 0.0)[2:] == (3, 25)


def test_per_ip_share_counts_new_items_of_the_first_storer(make: Factory) -> None:
    s = make(max_items_per_ip=2)
    s.put_item(immutable(1), 0.0, source_ip="127.0.0.2")
    s.put_item(immutable(2), 0.0, source_ip="127.0.0.2")
    with pytest.raises(StorageFull, match=r"127\.0\.0\.2"):
        s.put_item(immutable(3), 0.0, source_ip="127.0.0.2")
    s.put_item(immutable(1), 1.0, source_ip="127.0.0.2")  # a re-put is no new item
    s.put_item(immutable(3), 0.0, source_ip="127.0.0.3")  # another IP has its own share
    s.put_item(immutable(2), 2.0, source_ip="127.0.0.3")  # re-put by .3 stays counted for .2
    s.put_item(immutable(4), 2.0, source_ip="127.0.0.3")
    with pytest.raises(StorageFull):
        s.put_item(immutable(5), 2.0, source_ip="127.0.0.3")
    with pytest.raises(StorageFull):
        s.put_item(immutable(5), 2.0, source_ip="127.0.0.2")
    # Item 1 (last put at 1.0) expires at ITEM_TTL + 1; item 2 lives on: .2 has one free slot.
    s.put_item(immutable(5), ITEM_TTL + 1, source_ip="127.0.0.2")
    with pytest.raises(StorageFull):
        s.put_item(immutable(6), ITEM_TTL + 1, source_ip="127.0.0.2")
    # Items 2, 3 and 4 expire at ITEM_TTL + 2: .2 then holds item 5 only, .3 nothing.
    now = ITEM_TTL + 2
    s.put_item(immutable(6), now, source_ip="127.0.0.2")
    with pytest.raises(StorageFull):
        s.put_item(immutable(7), now, source_ip="127.0.0.2")
    s.put_item(immutable(7), now, source_ip="127.0.0.3")
    s.put_item(immutable(8), now, source_ip="127.0.0.3")
    with pytest.raises(StorageFull):
        s.put_item(immutable(9), now, source_ip="127.0.0.3")


def test_value_too_large(make: Factory) -> None:
    s = make(max_value_size=20)
    s.put_item(immutable(1, size=20), 0.0, source_ip="127.0.0.2")
    with pytest.raises(ValueTooLarge):
        s.put_item(immutable(2, size=21), 0.0, source_ip="127.0.0.2")
    with pytest.raises(ValueTooLarge):
        s.put_item(mutable(1, 2, _bstr("x", 21)), 0.0, source_ip="127.0.0.2")
    s.put_item(mutable(1, 1, _bstr("x", 20)), 0.0, source_ip="127.0.0.2")
    with pytest.raises(ValueTooLarge):  # a replacement too
        s.put_item(mutable(1, 2, _bstr("y", 21)), 0.0, source_ip="127.0.0.2")
    assert stats(s, 0.0)[2:] == (2, 40)
    assert issubclass(ValueTooLarge, StorageError) and issubclass(StorageFull, StorageError)


# ---------------------------------------------------------------------------------------------- own


def test_own_items_and_announces(make: Factory) -> None:
    s = make()
    assert s.own_items() == [] and s.own_announces() == []
    s.save_own_item(mutable(1, 1))
    s.save_own_item(immutable(1))
    s.save_own_item(mutable(1, 2, b"1:z"))  # replaces seq 1
    assert by_target(s.own_items()) == by_target([mutable(1, 2, b"1:z"), immutable(1)])
    s.save_own_announce(IH_A, 6881)
    s.save_own_announce(IH_B, None)
    s.save_own_announce(IH_A, 6882)
    assert sorted(s.own_announces()) == [(IH_A, 6882), (IH_B, None)]
    s.remove_own_announce(IH_A)
    s.remove_own_announce(IH_C)  # unknown: nothing happens
    assert s.own_announces() == [(IH_B, None)]
    assert stats(s, 0.0) == (0, 0, 0, 0)  # what we originate is not stored for others


# ---------------------------------------------------------------------------------------------- sweep


def test_sweep_counts_what_went(make: Factory) -> None:
    s = make()
    s.add_peer(IH_A, peer(1), 0.0)
    s.add_peer(IH_B, peer(1), 0.0)
    s.add_peer(IH_B, peer(2), 50.0)
    s.put_item(immutable(1), 0.0, source_ip="127.0.0.2")
    s.put_item(immutable(2), 500.0, source_ip="127.0.0.2")
    assert s.sweep(PEER_TTL - 1) == 0
    assert s.sweep(PEER_TTL) == 2
    assert stats(s, PEER_TTL) == (1, 1, 2, 20)
    assert s.sweep(ITEM_TTL) == 2  # the last peer and item 1
    assert s.sweep(ITEM_TTL) == 0
    assert stats(s, ITEM_TTL) == (0, 0, 1, 10)
    assert s.items(ITEM_TTL) == [immutable(2)]


def test_stats_type(make: Factory) -> None:
    assert make().stats(0.0) == StorageStats(info_hashes=0, peers=0, items=0, item_bytes=0)


# ---------------------------------------------------------------------------------------------- differential


_op = st.one_of(
    st.tuples(st.just("peer"), st.integers(0, 3), st.integers(0, 5), st.booleans()),
    st.tuples(st.just("put_i"), st.integers(0, 6), st.integers(0, 3), st.integers(3, 40)),
    st.tuples(st.just("put_m"), st.integers(0, 4), st.integers(0, 3), st.integers(0, 5), st.integers(3, 40)),
    st.tuples(st.just("tick"), st.floats(0.0, 400.0)),
    st.tuples(st.just("sweep")),
)


@hsettings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(_op, max_size=40))
def test_memory_and_sqlite_agree(ops: list[tuple[Any, ...]]) -> None:
    """Random operations give the same answers, refusals and counts from both implementations."""
    settings = BASE.with_changes(
        max_info_hashes=3,
        max_peers_per_info_hash=3,
        max_items=5,
        max_item_bytes=120,
        max_items_per_ip=3,
        max_value_size=30,
    )
    with tempfile.TemporaryDirectory() as tmp:
        memory = MemoryStorage(settings, random.Random(1))
        sql = SqliteStorage.open(Path(tmp) / "k.db", settings, random.Random(1), wall_offset=WALL_OFFSET)
        try:
            now = 0.0
            targets: set[bytes] = {bytes(20)}  # a target never stored: misses are cached too
            for op in ops:
                outcomes = []
                for s in (memory, sql):
                    try:
                        outcomes.append(_apply(s, op, now))
                    except StorageError as exc:
                        outcomes.append(type(exc).__name__)
                assert outcomes[0] == outcomes[1], op
                if op[0] == "tick":
                    now += op[1]
                # Reads after every step: SqliteStorage serves them from its caches when it can.
                for ih in range(4):
                    info_hash = bytes([ih]) * 20
                    for noseed in (False, True):
                        assert sorted(memory.get_peers(info_hash, now, 99, noseed=noseed)) == sorted(
                            sql.get_peers(info_hash, now, 99, noseed=noseed)
                        )
                if op[0] in ("put_i", "put_m"):
                    targets.add(_item_of(op).target)
                for target in targets:
                    assert memory.get_item(target, now) == sql.get_item(target, now)
                assert by_target(memory.items(now)) == by_target(sql.items(now))
                assert memory.stats(now) == sql.stats(now)
        finally:
            sql.close()


def _item_of(op: tuple[Any, ...]) -> Item:
    if op[0] == "put_i":
        return immutable(op[1], size=op[3])
    return mutable(op[1], op[3], _bstr("m", op[4]))


def _apply(s: Storage, op: tuple[Any, ...], now: float) -> object:
    kind = op[0]
    if kind == "peer":
        s.add_peer(bytes([op[1]]) * 20, peer(op[2]), now, seed=op[3])
    elif kind in ("put_i", "put_m"):
        s.put_item(_item_of(op), now, source_ip=f"127.0.0.{op[2]}")
    elif kind == "sweep":
        return s.sweep(now)
    return None


# ---------------------------------------------------------------------------------------------- sqlite only


def open_sql(path: Path, offset: float = WALL_OFFSET, **changes: Any) -> SqliteStorage:
    return SqliteStorage.open(path, BASE.with_changes(**changes), random.Random(5), wall_offset=offset)


def test_reopen_keeps_everything_and_expiry_in_wall_time(tmp_path: Path) -> None:
    path = tmp_path / state.DB_NAME
    a, m = immutable(1), mutable(3, 9, salt=b"s")
    s = open_sql(path, offset=1000.0, max_items_per_ip=2)
    s.add_peer(IH_A, peer(1), 0.0, seed=True)
    s.add_peer(IH_A, peer(2), 0.0)
    s.put_item(a, 0.0, source_ip="127.0.0.2")  # expires at wall 1000 + ITEM_TTL
    s.put_item(m, 0.0, source_ip="127.0.0.2")
    s.save_own_item(m)
    s.save_own_announce(IH_B, None)
    s.close()
    # The core's clock restarted: its 0.0 is now wall 1060, so 60 s of every TTL are gone.
    s = open_sql(path, offset=1060.0, max_items_per_ip=2)
    assert stats(s, 0.0) == (1, 2, 2, len(a.value) + len(m.value))
    assert s.get_peers(IH_A, 0.0, 10, noseed=True) == [peer(2)]
    assert s.get_item(a.target, ITEM_TTL - 61) == a
    assert s.get_item(m.target, 0.0) == m
    assert s.own_items() == [m]
    assert s.own_announces() == [(IH_B, None)]
    with pytest.raises(StorageFull):  # the per-IP share was restored too
        s.put_item(immutable(2), 0.0, source_ip="127.0.0.2")
    assert sorted(s.get_peers(IH_A, PEER_TTL - 61, 10)) == [peer(1), peer(2)]
    assert s.get_peers(IH_A, PEER_TTL - 60, 10) == []
    assert s.get_item(a.target, ITEM_TTL - 60) is None
    assert s.sweep(ITEM_TTL - 60) == 4
    s.close()
    s = open_sql(path, offset=0.0)
    assert stats(s, 0.0) == (0, 0, 0, 0)
    assert s.own_items() == [m]
    s.close()


def test_files_are_private_and_wal(tmp_path: Path) -> None:
    data = tmp_path / "a" / "b"
    s = open_sql(data / state.DB_NAME)
    s.put_item(immutable(1), 0.0, source_ip="127.0.0.2")
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    for name in (state.DB_NAME, state.DB_NAME + "-wal", state.DB_NAME + "-shm"):
        assert stat.S_IMODE((data / name).stat().st_mode) == 0o600, name
    assert s.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert s.conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    s.close()
    s.close()  # idempotent
    with pytest.raises(sqlite3.ProgrammingError):
        s.get_item(immutable(1).target, 0.0)


def test_shares_the_state_database(tmp_path: Path) -> None:
    """One file per node: the state store and the storage open the same kadnode.db side by side."""
    with StateStore.open(tmp_path) as store:
        s = open_sql(store.path)
        store.save_node_id(77)
        s.save_own_announce(IH_A, 1)
        assert store.schema_version() == state.SCHEMA_VERSION == 3
        s.close()
    with StateStore.open(tmp_path) as store:
        assert store.load_node_id() == 77
        assert store.conn.execute("SELECT port FROM own_announces").fetchall() == [(1,)]


def test_opening_a_version_1_database_migrates_it(tmp_path: Path) -> None:
    path = tmp_path / state.DB_NAME
    conn = sqlite3.connect(path, isolation_level=None)
    for statement in state._MIGRATIONS[1]:
        conn.execute(statement)
    conn.execute("INSERT INTO meta VALUES ('schema_version', 1), ('node_id', ?)", (b"\x01" * 20,))
    conn.close()
    s = open_sql(path)
    s.put_item(immutable(1), 0.0, source_ip="127.0.0.2")
    s.close()
    with StateStore.open(tmp_path) as store:
        assert store.schema_version() == state.SCHEMA_VERSION
        assert store.load_node_id() == int.from_bytes(b"\x01" * 20, "big")


def test_unusable_file_is_a_state_error(tmp_path: Path) -> None:
    path = tmp_path / state.DB_NAME
    path.write_bytes(b"not a database" * 200)
    with pytest.raises(StateError, match="cannot use"):
        open_sql(path)


def test_malformed_rows_are_skipped(tmp_path: Path) -> None:
    s = open_sql(tmp_path / state.DB_NAME)
    good = mutable(1, 1)
    s.save_own_item(good)
    s.put_item(good, 0.0, source_ip="127.0.0.2")
    far = WALL_OFFSET + 1e6
    s.conn.execute(
        "INSERT INTO items VALUES (x'01', 'mutable', NULL, x'', 1, x'', x'00', '127.0.0.9', ?)", (far,)
    )
    s.conn.execute("INSERT INTO own_items VALUES ('text', 'immutable', NULL, NULL, NULL, NULL, x'00')")
    s.conn.execute("INSERT INTO own_announces VALUES (x'02', 70000), (x'03', 5)")
    assert s.get_item(b"\x01", 0.0) is None
    assert s.items(0.0) == [good]
    assert s.own_items() == [good]
    assert s.own_announces() == [(b"\x03", 5)]
    s.close()


def test_disk_full_is_storage_full_and_leaves_counts_alone(tmp_path: Path) -> None:
    s = open_sql(tmp_path / state.DB_NAME, max_item_bytes=10**9, max_value_size=10**6)
    pages = s.conn.execute("PRAGMA page_count").fetchone()[0]
    s.conn.execute(f"PRAGMA max_page_count = {pages + 2}")
    s.put_item(immutable(1), 0.0, source_ip="127.0.0.2")
    before = stats(s, 0.0)
    with pytest.raises(StorageFull, match="disk"):
        s.put_item(immutable(2, size=100_000), 0.0, source_ip="127.0.0.2")
    assert stats(s, 0.0) == before
    assert not s.conn.in_transaction
    s.put_item(immutable(3), 0.0, source_ip="127.0.0.2")  # still usable
    assert stats(s, 0.0)[2] == 2
    s.close()
