"""Scaffolding several test modules share: fixtures (found by pytest by name) and helpers (imported with
``from tests.conftest import ...``).

Only what is the same in each user lives here; a test's own fakes and values stay in its module, next
to the assertions that depend on them.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from kadnode.settings import Settings
from kadnode.storage.base import ImmutableItem, Item, MutableItem
from kadnode.types import Addr
from kadnode.wire.bencode import Bencodable, bencode

FAKE_PUBLIC_KEY = bytes(range(32))
"""The public key the fake nodes sign their mutable items with."""
FAKE_SIGNATURE = b"\x06" * 64
"""A stand-in signature: nothing behind a fake node checks it."""


# --- fixtures ----------------------------------------------------------------------------------


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A fresh directory under /tmp: Unix socket paths are limited to 107 bytes, and pytest's tmp_path
    can be longer."""
    path = Path(tempfile.mkdtemp(prefix="kn-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Undo what setup_logging does to the root logger (its handler and level) after the test."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)


# --- helpers -----------------------------------------------------------------------------------


async def eventually(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait until `condition()` holds (polling the event loop), or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


@dataclass(frozen=True, slots=True)
class FakeEntry:
    """A routing-table row as the control server reads it from `Node.routes()`."""

    id: int
    addr: Addr
    failures: int
    rtt: float | None


def fake_item(
    value: Bencodable, *, salt: bytes | str = b"", immutable: bool = False, seq: int = 1,
    target: bytes | None = None,
) -> Item:
    """The item a node would make of a put, signed with FAKE_SIGNATURE. Targets are real (SHA-1 of the
    value, or of FAKE_PUBLIC_KEY + salt) unless a mutable item's `target` is given."""
    encoded = bencode(value)
    if immutable:
        return ImmutableItem(hashlib.sha1(encoded).digest(), encoded)
    raw_salt = salt.encode() if isinstance(salt, str) else salt
    if target is None:
        target = hashlib.sha1(FAKE_PUBLIC_KEY + raw_salt).digest()
    return MutableItem(target, FAKE_PUBLIC_KEY, raw_salt, seq, FAKE_SIGNATURE, encoded)


class FakeNodeBase:
    """What the fake nodes behind a ControlServer have in common: an ID, default settings, a log of the
    calls the server made, the info-hashes being announced and the items held. Subclasses answer the
    operations with the values their tests expect."""

    def __init__(
        self, node_id: int, *, announced: set[bytes] | None = None, items: dict[bytes, Item] | None = None
    ) -> None:
        self.node_id = node_id
        self.settings = Settings()
        self.calls: list[tuple[str, Any]] = []
        self.announced: set[bytes] = set(announced) if announced is not None else set()
        self.items: dict[bytes, Item] = dict(items) if items is not None else {}

    def unannounce(self, info_hash: bytes) -> bool:
        self.calls.append(("unannounce", info_hash))
        was = info_hash in self.announced
        self.announced.discard(info_hash)
        return was
