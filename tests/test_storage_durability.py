"""What SqliteStorage acknowledged survives kill -9: a child writes and acknowledges each write on stdout,
the parent kills it with SIGKILL at a random moment, reopens the database and checks every
acknowledged write is there and intact. Many cycles on one database, so recovery of a killed writer's
WAL is exercised again and again (the child of each cycle opens what the previous one left).
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from kadnode.storage.base import ImmutableItem, MutableItem
from kadnode.storage.sqlite import SqliteStorage
from tests import storage_writer as writer

ROOT = Path(__file__).resolve().parent.parent

CYCLES = 24
MAX_DELAY = 0.25
EARLY_KILLS = 0.15
SEED = 20240917


class Child:
    """A writer process whose stdout lines are collected by a thread, so the pipe never fills."""

    def __init__(self, db: Path, seed: int) -> None:
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "tests" / "storage_writer.py"), str(db), str(seed)],
            stdout=subprocess.PIPE,
            env=env,
        )
        self.lines: list[str] = []
        self.ready = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode()
            if not line.endswith("\n"):
                break  # torn by the kill: not an acknowledgement
            if line == "ready\n":
                self.ready.set()
            else:
                self.lines.append(line)
        self.ready.set()

    def kill(self) -> list[str]:
        """SIGKILL, then every complete line the child wrote before it died."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        self._reader.join(timeout=10)
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        return self.lines


class Acks:
    """Everything acknowledged so far, across cycles."""

    def __init__(self) -> None:
        self.immutable: set[bytes] = set()
        self.seqs: dict[int, int] = {}
        self.peers: set[tuple[bytes, int]] = set()
        self.announces: dict[bytes, int] = {}
        self.count = 0

    def add(self, line: str) -> None:
        kind, *fields = line.split()
        if kind == "i":
            self.immutable.add(bytes.fromhex(fields[0]))
        elif kind == "m":
            key, seq = int(fields[0]), int(fields[1])
            self.seqs[key] = max(seq, self.seqs.get(key, 0))
        elif kind == "p":
            self.peers.add((bytes.fromhex(fields[0]), int(fields[1])))
        elif kind == "a":
            self.announces[bytes.fromhex(fields[0])] = int(fields[1])
        else:
            raise AssertionError(f"unexpected line from the writer: {line!r}")
        self.count += 1


def check(db: Path, acks: Acks, cycles_done: int) -> None:
    storage = SqliteStorage.open(
        db, writer.SETTINGS, random.Random(0), wall_offset=time.time() - time.monotonic()
    )
    try:
        assert storage.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        now = time.monotonic()
        stored = {item.target: item for item in storage.items(now)}
        for target in acks.immutable:
            item = stored.get(target)
            assert isinstance(item, ImmutableItem), f"acknowledged immutable item {target.hex()} lost"
            assert hashlib.sha1(item.value).digest() == target, "torn immutable value"
        for key, seq in acks.seqs.items():
            item = stored.get(writer.mutable_target(key))
            assert isinstance(item, MutableItem), f"acknowledged mutable item {key} lost"
            # At most one write per cycle was in flight (done, not yet acknowledged) when the kill came.
            assert seq <= item.seq <= seq + cycles_done, (key, seq, item.seq)
            assert item.public_key == writer.public_key(key)
            assert item.signature == writer.item_signature(item.public_key, item.seq, item.value), "torn"
        unacked = {t for t, i in stored.items() if isinstance(i, ImmutableItem)} - acks.immutable
        assert len(unacked) <= cycles_done
        for info_hash, port in acks.peers:
            assert ("127.0.0.1", port) in storage.get_peers(info_hash, now, 10**6), "acknowledged peer lost"
        announces = dict(storage.own_announces())
        for info_hash, port in acks.announces.items():
            assert announces.get(info_hash) == port, "acknowledged announce lost"
        stats = storage.stats(now)
        assert stats.items == len(stored)
    finally:
        storage.close()


@pytest.mark.slow
def test_acknowledged_writes_survive_sigkill(tmp_path: Path) -> None:
    db = tmp_path / "data" / "kadnode.db"
    rng = random.Random(SEED)
    acks = Acks()
    killed_with_acks = 0
    for cycle in range(CYCLES):
        child = Child(db, seed=SEED + cycle)
        if rng.random() < EARLY_KILLS:  # anywhere from start-up through opening (and migrating) the db
            time.sleep(rng.uniform(0.0, 0.2))
        else:
            assert child.ready.wait(timeout=20), "the writer did not start"
            assert child.proc.poll() is None, "the writer died on its own"
            time.sleep(rng.uniform(0.0, MAX_DELAY))
        lines = child.kill()
        assert child.proc.returncode == -signal.SIGKILL
        for line in lines:
            acks.add(line)
        killed_with_acks += bool(lines)
        check(db, acks, cycle + 1)
    # The run proved something only if the kills landed amid a stream of acknowledged writes.
    assert killed_with_acks >= CYCLES // 2
    assert acks.count > 1000
    assert len(acks.immutable) > 100 and acks.seqs and acks.peers and acks.announces
