"""`kadnode.Node`: the asyncio facade over one NodeCore on one UDP socket, with optional persistence.

Every operation hands the core a `done` callback that resolves an asyncio future, then flushes the
driver; the core calls `done` exactly once, from a later datagram or timer (or at once).

With a data directory the node keeps everything there: its ID and routing table (`StateStore`), the
peers and items it stores and the items it published (`SqliteStorage`, committed before a put is
acknowledged), and its ed25519 identity (`identity.key`). Without one it lives in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import logging
import random
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from kadnode.client import parse_item_address
from kadnode.core.bep44 import MAX_SEQ, SigningKey, make_immutable, make_mutable, mutable_target
from kadnode.core.node import NodeCore
from kadnode.core.nodeid import bep42_node_id, random_id
from kadnode.core.results import (
    AnnounceResult,
    BootstrapResult,
    GetPeersResult,
    GetResult,
    LookupResult,
    PingResult,
    PutResult,
)
from kadnode.core.routing import RoutingEntry
from kadnode.runtime.identity import load_or_create_identity
from kadnode.runtime.state import StateError, StateStore
from kadnode.runtime.udp import UdpDriver, bind_udp
from kadnode.settings import Settings
from kadnode.storage.base import Item, MutableItem, Storage
from kadnode.storage.memory import MemoryStorage
from kadnode.storage.sqlite import SqliteStorage
from kadnode.types import Addr, NodeInfo
from kadnode.wire.bencode import Bencodable, bencode

log = logging.getLogger(__name__)

SAVE_INTERVAL = 60.0
"""Seconds between routing-table snapshots to the data directory (and one more at stop)."""
WARM_START_MAX = 100
"""Saved nodes (most recently seen first) offered to bootstrap after a restart."""
ID_SPACE = 1 << 160

T = TypeVar("T")


class NodeClosedError(RuntimeError):
    """The node stopped while an operation was waiting for its result."""


def _concrete_ipv4(host: str) -> str | None:
    try:
        ip = ipaddress.IPv4Address(host)
    except ValueError:
        return None
    return None if ip.is_unspecified else str(ip)


class Node:
    """A DHT node on a UDP socket. Use as ``async with Node(...) as node:`` or start()/stop()."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        node_id: int | None = None,
        settings: Settings | None = None,
        bootstrap: Sequence[Addr] = (),
        data_dir: Path | None = None,
        identity: SigningKey | None = None,
    ) -> None:
        """Nothing is opened or bound until `start()`.

        `identity` signs mutable items put without an explicit key; by default it is the data
        directory's `identity.key` (created on first start), or None for a node without a data dir.
        """
        if node_id is not None and not 0 <= node_id < ID_SPACE:
            raise ValueError(f"node_id must be in [0, 2**160), got {node_id:#x}")
        if not 0 <= port < 65536:
            raise ValueError(f"port must be in 0-65535, got {port}")
        self.host = host
        self.port = port
        self.settings = settings if settings is not None else Settings()
        self.seeds: tuple[Addr, ...] = tuple(bootstrap)
        self.data_dir = Path(data_dir).expanduser() if data_dir is not None else None
        self.rng: random.Random = random.SystemRandom()
        self._requested_id = node_id
        self._identity = identity
        self._core: NodeCore | None = None
        self._driver: UdpDriver | None = None
        self._store: StateStore | None = None
        self._storage: Storage | None = None
        self._seq_locks: dict[bytes, tuple[asyncio.Lock, int]] = {}
        self._saved_routes: list[NodeInfo] = []
        self._pending: set[asyncio.Future[Any]] = set()
        self._save_task: asyncio.Task[None] | None = None
        self._started_at = 0.0
        self._stopped = False

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Open the data directory (if any), bind the socket, start the core. Raises BindError,
        StateLockedError or StateError (IdentityError for the key file) with a message meant for the
        operator."""
        if self._core is not None or self._stopped:
            raise RuntimeError("a Node can be started once; create a new Node to start again")
        loop = asyncio.get_running_loop()
        store = StateStore.open(self.data_dir) if self.data_dir is not None else None
        sock = None
        storage: Storage | None = None
        # Peer sampling draws often and needs no secrecy: a Mersenne Twister seeded from the OS, not
        # SystemRandom (an os.urandom call per draw). Tokens and transaction ids keep the system source.
        sampling_rng = random.Random(self.rng.getrandbits(64))
        try:
            if store is not None and self.data_dir is not None:
                if self._identity is None:
                    self._identity, created = load_or_create_identity(self.data_dir)
                    if created:
                        log.info("created a new identity in %s", self.data_dir)
                # The core's clock is the loop's monotonic one; the database keeps wall-clock expiry times.
                storage = SqliteStorage.open(
                    store.path, self.settings, sampling_rng, wall_offset=time.time() - loop.time()
                )
            else:
                storage = MemoryStorage(self.settings, sampling_rng)
            sock = bind_udp(self.host, self.port)
            node_id = self._choose_id(store, sock.getsockname()[0])
            if store is not None:
                store.save_node_id(node_id)
                self._saved_routes = store.load_routes()[:WARM_START_MAX]
            # Gossip incarnations must grow across restarts: the wall clock's seconds do (docs/gossip.md).
            core = NodeCore(node_id, self.settings, self.rng, loop.time(), storage=storage,
                            incarnation=int(time.time()))
            driver = UdpDriver(core, sock, self.settings)
        except BaseException:
            if sock is not None:
                sock.close()
            if storage is not None:
                storage.close()
            if store is not None:
                store.close()
            raise
        self._store, self._storage, self._core, self._driver = store, storage, core, driver
        self._started_at = loop.time()
        driver.start()
        if store is not None:
            self._save_task = asyncio.create_task(self._save_periodically(), name="kadnode-save-state")
        log.debug("node %040x listening on %s:%d", node_id, *driver.addr)

    def _choose_id(self, store: StateStore | None, bound_ip: str) -> int:
        """Saved ID, else the given one, else a BEP 42 ID for a concrete bind address, else random."""
        saved = store.load_node_id() if store is not None else None
        if saved is not None:
            if self._requested_id is not None and self._requested_id != saved:
                log.warning("using the node ID saved in %s, not the one given", self.data_dir)
            return saved
        if self._requested_id is not None:
            return self._requested_id
        ip = _concrete_ipv4(bound_ip)
        return bep42_node_id(ip, self.rng) if ip is not None else random_id(self.rng)

    async def stop(self) -> None:
        """Save state, close the socket and the database; waiting operations raise NodeClosedError.

        Every put already acknowledged is in the database before this (each is committed at once).
        """
        if self._core is None or self._stopped:
            self._stopped = True
            return
        self._stopped = True
        if self._save_task is not None:
            self._save_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._save_task
            self._save_task = None
        try:
            self.save_state()
        except (StateError, sqlite3.Error, OSError) as exc:
            log.error("cannot save state at stop: %s", exc)
        if self._driver is not None:
            self._driver.close()
        for future in self._pending:
            if not future.done():
                future.set_exception(NodeClosedError("the node stopped"))
        self._pending.clear()
        if self._storage is not None:
            self._storage.close()
        if self._store is not None:
            self._store.close()

    async def __aenter__(self) -> Node:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    # ------------------------------------------------------------------ state

    @property
    def core(self) -> NodeCore:
        if self._core is None:
            raise RuntimeError("the node is not started")
        return self._core

    @property
    def driver(self) -> UdpDriver:
        if self._driver is None:
            raise RuntimeError("the node is not started")
        return self._driver

    @property
    def node_id(self) -> int:
        return self.core.node_id

    @property
    def addr(self) -> Addr:
        """The bound address (the real port when 0 was asked for)."""
        return self.driver.addr

    @property
    def identity(self) -> SigningKey | None:
        """The key that signs mutable items put without `key=` (the data dir's identity.key)."""
        return self._identity

    @property
    def state(self) -> StateStore | None:
        """The data directory's state database (None for a node without a data dir, or not started)."""
        return self._store

    @property
    def running(self) -> bool:
        return self._core is not None and not self._stopped

    @property
    def saved_routes(self) -> list[NodeInfo]:
        """Nodes loaded from the data directory at start (warm-start bootstrap candidates)."""
        return list(self._saved_routes)

    def now(self) -> float:
        return self.driver.now()

    def status(self) -> dict[str, Any]:
        """core.status() plus the runtime's view: bound address, uptime, queue, rate limiter."""
        driver = self.driver
        now = driver.now()
        status = self.core.status(now)
        status["addr"] = f"{driver.addr[0]}:{driver.addr[1]}"
        status["uptime"] = round(now - self._started_at, 3)
        status["data_dir"] = str(self.data_dir) if self.data_dir is not None else None
        status["running"] = self.running
        status["receive_queue"] = driver.queue_depth
        status["rate_limited_ips"] = len(driver.limiter.blocked(now))
        status["public_key"] = self._identity.public_key.hex() if self._identity is not None else None
        return status

    def routes(self) -> list[tuple[RoutingEntry, str]]:
        """Routing-table entries with their BEP 5 state ("good", "questionable", "bad")."""
        core = self.core
        now = self.driver.now()
        return [(entry, entry.state(now, self.settings).value) for entry in core.routing_table.entries()]

    def save_state(self) -> None:
        """Snapshot the node ID and the nodes that answered us to the data directory (no-op without one).

        An empty snapshot does not replace a saved one: a node stopped while cut off from the network
        keeps the table it had.
        """
        if self._store is None or self._store.closed or self._core is None or self._driver is None:
            return
        now = self._driver.now()
        wall = time.time()
        nodes: list[NodeInfo] = []
        last_seen: dict[int, float] = {}
        for entry in self._core.routing_table.entries():
            if entry.last_response is None or entry.failures >= self.settings.max_failures:
                continue
            nodes.append(NodeInfo(entry.id, entry.addr))
            last_seen[entry.id] = wall - max(0.0, now - entry.last_response)
        self._store.save_node_id(self._core.node_id)
        if nodes or not self._saved_routes:
            self._store.save_routes(nodes, last_seen=last_seen)
        log.debug("saved %d routing-table nodes", len(nodes))

    async def _save_periodically(self) -> None:
        while True:
            await asyncio.sleep(SAVE_INTERVAL)
            try:
                self.save_state()
            except (StateError, sqlite3.Error, OSError) as exc:
                log.warning("cannot save state: %s", exc)

    # ------------------------------------------------------------------ operations

    def bootstrap_candidates(self, seeds: Sequence[Addr] | None = None) -> list[Addr]:
        """`seeds` (default: the configured ones), then saved nodes; without duplicates or ourselves."""
        chosen = self.seeds if seeds is None else tuple(seeds)
        own = self.addr
        candidates = [(str(h), int(p)) for h, p in chosen] + [n.addr for n in self._saved_routes]
        return [addr for addr in dict.fromkeys(candidates) if addr != own]

    async def bootstrap(self, seeds: Sequence[Addr] | None = None) -> BootstrapResult:
        """Join through `seeds` (default: the configured ones) and the nodes saved at the last run."""
        candidates = self.bootstrap_candidates(seeds)
        future: asyncio.Future[BootstrapResult] = self._new_future()
        self._begin(future, self.core.bootstrap, candidates)
        return await self._wait(future)

    async def ping(self, addr: Addr) -> PingResult:
        future: asyncio.Future[PingResult] = self._new_future()
        self._begin(future, self.core.ping, (str(addr[0]), int(addr[1])))
        return await self._wait(future)

    async def find_node(self, target: int) -> LookupResult:
        if not 0 <= target < ID_SPACE:
            raise ValueError(f"target must be in [0, 2**160), got {target:#x}")
        future: asyncio.Future[LookupResult] = self._new_future()
        self._begin(future, self.core.find_node, target)
        return await self._wait(future)

    async def get_peers(self, info_hash: bytes) -> GetPeersResult:
        _check_info_hash(info_hash)
        future: asyncio.Future[GetPeersResult] = self._new_future()
        self._begin(future, self.core.get_peers, bytes(info_hash))
        return await self._wait(future)

    async def announce(self, info_hash: bytes, port: int | None = None, *, keep: bool = True) -> AnnounceResult:
        """Announce that we are a peer for `info_hash` on `port` (None: our UDP port, implied_port).

        With `keep` (the default) the node re-announces every `announce_interval`, across restarts
        when it has a data directory, until `unannounce(info_hash)`.
        """
        _check_info_hash(info_hash)
        if port is not None and not 0 < port < 65536:
            raise ValueError(f"port must be in 1-65535, got {port}")
        future: asyncio.Future[AnnounceResult] = self._new_future()
        self._begin(future, functools.partial(self.core.announce, keep=keep), bytes(info_hash), port)
        return await self._wait(future)

    def unannounce(self, info_hash: bytes) -> bool:
        """Stop re-announcing `info_hash`; nodes forget us within `peer_ttl`. False if we were not."""
        _check_info_hash(info_hash)
        key = bytes(info_hash)
        was = any(ih == key for ih, _port in self.core.storage.own_announces())
        self.core.stop_announcing(key)
        return was

    async def put(
        self,
        value: Bencodable,
        *,
        salt: bytes | str = b"",
        immutable: bool = False,
        key: SigningKey | None = None,
        cas: int | None = None,
    ) -> PutResult:
        """Store `value` in the DHT (BEP 44) and keep republishing it; returns where it was stored.

        `value` is any bencodable value (bytes, str, int, lists, dicts); at most `max_value_size`
        (1000) bytes once bencoded. An immutable item's target is SHA-1 of the bencoded value. A mutable
        item is signed by `key` (default: the node's identity) under `salt` (a name, at most 64
        bytes) and gets the next seq: one more than the highest seq found in a lookup and held here,
        or `cas + 1` when `cas` is given, in which case nodes holding another seq refuse it (error
        301). The item is persisted before this returns, so `stored_at == 0` (no node reached) still
        means it is kept and republished once the node has joined a network. Raises ValueError for
        a value or salt too large or arguments that do not fit together, before anything is sent.
        """
        raw_salt = salt.encode() if isinstance(salt, str) else bytes(salt)
        encoded = bencode(value)
        limit = self.settings.max_value_size
        if len(encoded) > limit:
            raise ValueError(f"value is {len(encoded)} bytes when bencoded; BEP 44 items hold at most {limit} bytes")
        if immutable:
            if raw_salt or key is not None or cas is not None:
                raise ValueError("an immutable item takes no salt, key or cas: its target is the hash of its value")
            return await self._wait(self._start_put(make_immutable(encoded), None))
        if len(raw_salt) > self.settings.max_salt_size:
            raise ValueError(
                f"salt (name) is {len(raw_salt)} bytes; BEP 44 allows at most {self.settings.max_salt_size}"
            )
        signer = key if key is not None else self._identity
        if signer is None:
            raise ValueError(
                "a mutable item needs a signing key: pass key=SigningKey.generate() (keep its seed), or give "
                "the Node a data_dir (its identity.key signs)"
            )
        if cas is not None and (isinstance(cas, bool) or not 0 <= cas < MAX_SEQ):
            raise ValueError(f"cas must be a seq from 0 to {MAX_SEQ - 1}, got {cas!r}")
        target = mutable_target(signer.public_key, raw_salt)
        async with self._seq_lock(target):
            if cas is not None:
                # The item would be kept (and republished) as ours: never one older than we hold.
                held = self.core.local_item(target, self.now())
                if isinstance(held, MutableItem) and held.seq > cas:
                    raise ValueError(f"cas mismatch: this node already holds seq {held.seq} of the item, not {cas}")
            seq = cas + 1 if cas is not None else await self._next_seq(target, raw_salt)
            # Started under the lock: the core records the item as ours at once, so the next put to
            # this target sees its seq; the stores then proceed without holding the lock.
            future = self._start_put(make_mutable(signer, encoded, seq, raw_salt), cas)
        return await self._wait(future)

    def _start_put(self, item: Item, cas: int | None) -> asyncio.Future[PutResult]:
        future: asyncio.Future[PutResult] = self._new_future()
        self._begin(future, functools.partial(self.core.put, cas=cas), item)
        return future

    async def _next_seq(self, target: bytes, salt: bytes) -> int:
        """One more than the highest verified seq: found by a get lookup, or held here (our own last
        put included). Unverified seq claims of other nodes are not trusted: a liar could exhaust seq."""
        found = await self.get(target, salt=salt)
        best = found.item.seq if isinstance(found.item, MutableItem) else 0
        local = self.core.local_item(target, self.now())
        if isinstance(local, MutableItem):
            best = max(best, local.seq)
        if best >= MAX_SEQ:
            raise ValueError(f"the item's seq is already {best}, the highest BEP 44 allows; use another name")
        return best + 1

    @contextlib.asynccontextmanager
    async def _seq_lock(self, target: bytes) -> AsyncIterator[None]:
        """Mutable puts to one target choose their seq one at a time, so that two concurrent puts
        never sign two values with the same seq (nodes would refuse the second with 302)."""
        lock, users = self._seq_locks.get(target, (asyncio.Lock(), 0))
        self._seq_locks[target] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._seq_locks[target]
            if users == 1:
                del self._seq_locks[target]
            else:
                self._seq_locks[target] = (lock, users - 1)

    async def get(self, target: bytes | str, *, salt: bytes | str = b"") -> GetResult:
        """Look up a BEP 44 item: the valid item with the highest seq found (or held here).

        `target` is 20 raw bytes, 40 hex characters, or an address ``"PUBKEYHEX/NAME"`` (the public key
        that signs the item and its name; the salt is then NAME). A salted item looked up by its raw
        target needs its `salt` to check the signature. `result.item` is None when nothing was found.
        """
        raw_target, raw_salt = self._resolve_target(target, salt)
        future: asyncio.Future[GetResult] = self._new_future()
        self._begin(future, functools.partial(self.core.get, salt=raw_salt), raw_target)
        return await self._wait(future)

    def local_item(self, target: bytes | str, *, salt: bytes | str = b"") -> Item | None:
        """The newest item under `target` held by this node (published by it, or stored for others),
        without asking the network. Takes the same forms of `target` as `get`."""
        raw_target, _salt = self._resolve_target(target, salt)
        return self.core.local_item(raw_target, self.now())

    @staticmethod
    def _resolve_target(target: bytes | str, salt: bytes | str) -> tuple[bytes, bytes]:
        raw_salt = salt.encode() if isinstance(salt, str) else bytes(salt)
        if isinstance(target, bytes | bytearray):
            if len(target) != 20:
                raise ValueError(f"target must be 20 bytes, got {len(target)}")
            return bytes(target), raw_salt
        address = parse_item_address(target)
        if address.target is not None:
            return address.target, raw_salt
        assert address.public_key is not None
        if raw_salt and address.salt and raw_salt != address.salt:
            raise ValueError(f"{target!r} names its salt already; do not pass another salt")
        raw_salt = address.salt or raw_salt
        return mutable_target(address.public_key, raw_salt), raw_salt

    def _new_future(self) -> asyncio.Future[Any]:
        if not self.running:
            raise RuntimeError("the node is not running")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.add(future)
        return future

    def _begin(self, future: asyncio.Future[T], operation: Callable[..., None], *args: Any) -> None:
        """Start `operation(*args, now, done)` on the core; `done` resolves `future`."""

        def done(result: T) -> None:
            if not future.done():  # cancelled by the caller, or failed by stop()
                future.set_result(result)

        try:
            operation(*args, self.now(), done)
        except BaseException:
            self._pending.discard(future)
            raise

    async def _wait(self, future: asyncio.Future[T]) -> T:
        self.driver.flush()
        try:
            return await future
        finally:
            self._pending.discard(future)


def _check_info_hash(info_hash: bytes) -> None:
    if not isinstance(info_hash, bytes | bytearray) or len(info_hash) != 20:
        raise ValueError(f"info_hash must be 20 bytes, got {info_hash!r}")
