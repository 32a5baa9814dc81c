"""Download a torrent from several peers at once: metadata by BEP 9, pieces by BEP 3, each piece verified.

`fetch` runs a supervisor (find peers, connect, watch for stalls, report progress, give up after
`timeout` without progress) and one session per peer. A session is two tasks on one connection: a reader
that turns messages into state (the picker's bookkeeping, the metadata download) and a writer that sends
whatever is due (requests to fill the peer's pipeline, cancels, keep-alives) when woken. Decisions about
which block to ask whom live in `picker.PiecePicker`, which has no I/O.

Peers are not trusted: a whole piece comes from one peer, so a piece that fails its SHA-1 check bans
exactly the peer that sent it; metadata is checked against the info-hash and then parsed strictly
(`parse_info` refuses unsafe paths), and nothing is written before that. One peer's failure (a closed
socket, a protocol error, a bug it triggers) ends that session only; its pieces go back to the pool.
Verified pieces are on disk as soon as they are verified, so a cancelled fetch resumes from them.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import logging
import random
import tempfile
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from kadnode import __version__
from kadnode.torrent.connection import PeerConnection
from kadnode.torrent.metainfo import BLOCK_SIZE, MAX_INFO_SIZE, Metainfo, MetainfoError, parse_info
from kadnode.torrent.peerwire import (
    METADATA_PIECE_SIZE,
    UT_METADATA,
    Bitfield,
    BitfieldMsg,
    Cancel,
    Choke,
    Extended,
    ExtHandshake,
    Have,
    Interested,
    KeepAlive,
    Message,
    MetadataData,
    MetadataReject,
    MetadataRequest,
    PeerWireError,
    Piece,
    Request,
    Unchoke,
    decode_metadata,
    encode_ext_handshake,
    encode_metadata,
    metadata_piece_count,
)
from kadnode.torrent.picker import PieceComplete, PiecePicker
from kadnode.torrent.pieces import PieceStore
from kadnode.types import Addr

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 5.0
"""Seconds for TCP connect plus handshake: peer lists hold many dead addresses, each must cost little."""
REQUERY_INTERVAL = 30.0
"""Ask `find_peers` again this often while downloading (new sharers appear, old ones go)."""
REQUERY_MIN = 1.0
"""With no live peer, ask again after this long, doubling up to REQUERY_INTERVAL."""
RETRY_BASE = 2.0
RETRY_MAX = 60.0
"""A peer that failed (refused, closed, stalled) is retried after RETRY_BASE * 2^(failures-1) seconds,
at most RETRY_MAX: a seeder that restarts comes back, a dead address costs one attempt a minute."""
TICK = 0.25
"""Supervisor period: stall checks, pipeline top-ups, progress reports (at most 4 per second)."""
KEEPALIVE_INTERVAL = 60.0
"""Send a keep-alive after this long without sending (peers time out silent connections after ~2 min)."""
SILENCE_TIMEOUT = 300.0
"""A peer that sends nothing at all (not even keep-alives) for this long is dropped."""
MAX_METADATA_SIZE = MAX_INFO_SIZE
"""Largest metadata_size accepted (16 MiB, the bound parse_info applies): bigger announcements are lies
or torrents with millions of pieces."""
METADATA_PIPELINE = 4
"""ut_metadata requests outstanding per peer."""
METADATA_SOURCES = 3
"""Peers downloading the metadata at once; each download is kept apart so a bad one is blamed exactly."""
MAX_CANDIDATES = 2000
"""Peer addresses remembered; `find_peers` results beyond this are ignored."""
MAX_EARLY_HAVES = 1 << 18
"""Have messages remembered per peer before the metadata (and thus the piece count) is known."""
RATE_WINDOW = 5.0
"""Seconds over which the download rate is averaged."""
OUR_UT_METADATA = 3
"""The id we ask peers to send ut_metadata messages on (any non-zero byte)."""
CLIENT = f"kadnode {__version__}"


@dataclass(frozen=True, slots=True)
class FetchProgress:
    """A snapshot for a progress bar; `pieces` and `total` are 0 until the metadata is known."""

    verified: int
    pieces: int
    bytes_done: int
    total: int
    peers: int
    rate: float


@dataclass(frozen=True, slots=True)
class FetchResult:
    """A finished fetch: `downloaded` counts the bytes of pieces fetched and verified in this run (so a
    resumed fetch counts only what it had to get), `reused` the pieces found verified on disk at start."""

    meta: Metainfo
    path: Path
    downloaded: int
    reused: int
    peers_used: int
    banned: tuple[Addr, ...]


class FetchError(RuntimeError):
    """The fetch cannot finish; the message says what to do. `reason` is a short name for counters:
    "no_peers", "unreachable", "no_metadata", "bad_metadata", "disk", "stalled"."""

    reason: str

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _peer(addr: Addr) -> str:
    return f"{addr[0]}:{addr[1]}"


async def fetch(
    info_hash: bytes,
    out_dir: Path,
    *,
    find_peers: Callable[[], Awaitable[list[Addr]]],
    peer_id: bytes,
    meta: Metainfo | None = None,
    on_progress: Callable[[FetchProgress], None] | None = None,
    on_piece: Callable[[int], None] | None = None,
    max_peers: int = 30,
    request_pipeline: int = 8,
    stall_timeout: float = 10.0,
    timeout: float | None = None,
) -> FetchResult:
    """Download the torrent `info_hash` into `out_dir` (the file, or the directory of a multi-file
    torrent, is `out_dir / name`) and return once every piece is verified.

    `find_peers` is asked for addresses at the start, every 30 s, and sooner when no peer is left.
    `meta` skips the metadata exchange. Pieces already verified on disk are kept (resume).
    `timeout`: give up with FetchError after that many seconds without progress (no metadata and no
    verified piece); None waits for peers forever. Cancelling the task keeps every verified piece.
    """
    if len(info_hash) != 20 or len(peer_id) != 20:
        raise ValueError("info_hash and peer_id must be 20 bytes")
    if meta is not None and meta.info_hash != info_hash:
        raise ValueError(f"meta is for {meta.info_hash.hex()}, not {info_hash.hex()}")
    if max_peers < 1 or request_pipeline < 1 or stall_timeout <= 0:
        raise ValueError("max_peers, request_pipeline and stall_timeout must be positive")
    job = _Fetch(
        info_hash, Path(out_dir), find_peers=find_peers, peer_id=peer_id, meta=meta, on_progress=on_progress,
        on_piece=on_piece, max_peers=max_peers, request_pipeline=request_pipeline, stall_timeout=stall_timeout,
        timeout=timeout,
    )
    return await job.run()


@dataclass(slots=True)
class _Candidate:
    """A peer address we know, and how it has treated us."""

    failures: int = 0
    retry_at: float = 0.0
    banned: bool = False


@dataclass(slots=True)
class _MetadataDownload:
    """One peer's copy of the info dict, piece by piece."""

    size: int
    buf: bytearray
    count: int
    last_progress: float
    next_piece: int = 0
    inflight: set[int] = field(default_factory=set)
    got: int = 0


class _Drop(Exception):
    """End this peer's session; the message is the readable reason."""


class _Banned(Exception):
    """End this peer's session and never connect to it again in this fetch."""


class _Ourselves(Exception):
    """The address is our own (its handshake carries our peer id): never connect to it again."""


class _Fetch:
    """The state of one fetch (see the module docstring)."""

    def __init__(
        self, info_hash: bytes, out_dir: Path, *, find_peers: Callable[[], Awaitable[list[Addr]]], peer_id: bytes,
        meta: Metainfo | None, on_progress: Callable[[FetchProgress], None] | None,
        on_piece: Callable[[int], None] | None, max_peers: int, request_pipeline: int, stall_timeout: float,
        timeout: float | None,
    ) -> None:
        self.info_hash = info_hash
        self.out_dir = out_dir
        self.find_peers = find_peers
        self.peer_id = peer_id
        self.meta = meta
        self.on_progress = on_progress
        self.on_piece = on_piece
        self.max_peers = max_peers
        self.request_pipeline = request_pipeline
        self.stall_timeout = stall_timeout
        self.timeout = timeout
        self.loop = asyncio.get_running_loop()
        self.store: PieceStore | None = None
        self.picker: PiecePicker[Addr] | None = None
        self.candidates: dict[Addr, _Candidate] = {}
        self.sessions: dict[Addr, _Session] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.verifying: set[asyncio.Task[None]] = set()
        self.changed = asyncio.Event()
        self.fatal: FetchError | None = None
        self.closing = False
        self.discovery: asyncio.Task[list[Addr]] | None = None
        self.next_query_at = 0.0
        self.last_query_at = -1e9
        self.queries = 0
        self.empty_delay = REQUERY_MIN
        self.progress_at = self.loop.time()
        self.addresses_seen = 0
        self.connections = 0
        self.metadata_sources = 0
        self.reused = 0
        self.downloaded = 0
        self.contributors: set[Addr] = set()
        self.banned: list[Addr] = []
        self.received = 0  # block bytes, for the rate
        self.rate_samples: deque[tuple[float, int]] = deque()
        self.last_report = -1e9

    # --- the supervisor ---------------------------------------------------------------------------

    async def run(self) -> FetchResult:
        try:
            _check_writable(self.out_dir)
            if self.meta is not None:
                await self._prepare(self.meta)
            while self.picker is None or not self.picker.complete:
                self.changed.clear()
                if self.fatal is not None:
                    raise self.fatal
                if self.meta is not None and self.picker is None:
                    await self._prepare(self.meta)
                    continue
                now = self.loop.time()
                self._discover(now)
                self._connect_more(now)
                self._check_stalls(now)
                self._report(now)
                self._check_timeout(now)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(TICK):
                        await self.changed.wait()
            if self.fatal is not None:
                raise self.fatal
            assert self.meta is not None and self.store is not None
            self._report(self.loop.time(), final=True)
            log.info(
                "fetched %s (%s): %d bytes from %d peer(s), %d pieces reused%s", self.info_hash.hex(),
                self.meta.name, self.downloaded, len(self.contributors), self.reused,
                f", banned {', '.join(map(_peer, self.banned))}" if self.banned else "",
            )
            return FetchResult(
                meta=self.meta, path=self.store.content_path, downloaded=self.downloaded, reused=self.reused,
                peers_used=len(self.contributors), banned=tuple(self.banned),
            )
        finally:
            await self._shutdown()

    async def _shutdown(self) -> None:
        """Close every connection; let piece writes in progress finish (they are verified pieces)."""
        self.closing = True
        if self.discovery is not None:
            self.discovery.cancel()
        for task in list(self.tasks):
            task.cancel()
        pending: list[asyncio.Task[None] | asyncio.Task[list[Addr]]] = [*self.tasks, *self.verifying]
        if self.discovery is not None:
            pending.append(self.discovery)
        cancelled = False
        while pending:
            # asyncio.wait, unlike gather, does not cancel what it waits for when this task is cancelled
            # again: a piece write in progress finishes (and is reported) before the store closes.
            try:
                await asyncio.wait(pending)
            except asyncio.CancelledError:
                cancelled = True
            pending = [t for t in pending if not t.done()]
        for session in list(self.sessions.values()):
            if session.conn is not None:
                session.conn.abort()
        if self.store is not None:
            self.store.close()
        if cancelled:
            raise asyncio.CancelledError

    async def _prepare(self, meta: Metainfo) -> None:
        """Open the output, keep what is already verified on disk, and start handing out pieces."""
        try:
            store = PieceStore(meta, self.out_dir, writable=True)
        except ValueError as exc:
            raise FetchError("bad_metadata", f"refusing to write {meta.name!r}: {exc}") from exc
        self.store = store
        try:
            have = await asyncio.to_thread(store.verify)
        except OSError as exc:
            raise FetchError("disk", f"cannot read {store.content_path}: {exc}; move it away or choose "
                             "another output directory (-o DIR)") from exc
        self.reused = len(have)
        picker: PiecePicker[Addr] = PiecePicker(meta.piece_length, meta.total_length, have=have,
                                                block_size=BLOCK_SIZE, rng=random.Random())
        self.picker = picker
        self.progress_at = self.loop.time()
        if have:
            log.info("resuming %s: %d of %d pieces already verified in %s", meta.name, len(have), meta.piece_count,
                     store.content_path)
        for session in list(self.sessions.values()):
            if session.conn is not None:
                session.picker_ready()

    def _discover(self, now: float) -> None:
        """Ask find_peers every REQUERY_INTERVAL, and with a growing delay while no peer is left."""
        if self.discovery is not None:
            return
        due = self.next_query_at
        starving = not self.sessions and not any(self._connectable(c, now + REQUERY_MIN)
                                                 for c in self.candidates.values())
        if starving:
            due = min(due, self.last_query_at + self.empty_delay)
        if now < due:
            return
        if starving and self.queries:
            self.empty_delay = min(self.empty_delay * 2, REQUERY_INTERVAL)
        self.queries += 1
        self.last_query_at = now
        self.next_query_at = now + REQUERY_INTERVAL
        self.discovery = asyncio.create_task(self._ask_for_peers())
        self.discovery.add_done_callback(self._discovered)

    async def _ask_for_peers(self) -> list[Addr]:
        return list(await self.find_peers())

    def _discovered(self, task: asyncio.Task[list[Addr]]) -> None:
        self.discovery = None
        if task.cancelled() or self.closing:
            return
        exc = task.exception()
        if exc is not None:
            log.warning("looking for peers of %s failed: %s", self.info_hash.hex(), exc)
            return
        new = 0
        for item in task.result():
            addr = _valid_addr(item)
            if addr is None or addr in self.candidates:
                continue
            if len(self.candidates) >= MAX_CANDIDATES:
                break
            self.candidates[addr] = _Candidate()
            new += 1
        self.addresses_seen += new
        if new:
            log.debug("%d new peer addresses for %s", new, self.info_hash.hex())
            self.changed.set()

    @staticmethod
    def _connectable(candidate: _Candidate, now: float) -> bool:
        return not candidate.banned and candidate.retry_at <= now

    def _connect_more(self, now: float) -> None:
        if self.closing:
            return
        for addr, candidate in self.candidates.items():
            if len(self.sessions) >= self.max_peers:
                return
            if addr in self.sessions or not self._connectable(candidate, now):
                continue
            session = _Session(self, addr)
            self.sessions[addr] = session
            task = asyncio.create_task(session.run(), name=f"fetch peer {_peer(addr)}")
            session.task = task
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    def _check_stalls(self, now: float) -> None:
        picker = self.picker
        if picker is not None:
            for addr in picker.stalled(now, self.stall_timeout):
                session = self.sessions.get(addr)
                if session is not None:
                    session.stop(f"no block for {self.stall_timeout:g} s with {picker.outstanding(addr)} "
                                 "requests pending")
        for session in list(self.sessions.values()):
            session.tick(now)

    def _check_timeout(self, now: float) -> None:
        if self.timeout is None or now - self.progress_at < self.timeout:
            return
        wait = f"{self.timeout:g} s"
        hexhash = self.info_hash.hex()
        if self.connections == 0 and self.addresses_seen == 0:
            raise FetchError("no_peers", f"no peers found for {hexhash} in {wait}: nobody seems to share it "
                             "(check the info-hash, or that a sharer is online, and try again)")
        if self.connections == 0:
            raise FetchError("unreachable", f"found {self.addresses_seen} peer addresses for {hexhash} but none "
                             f"accepted a connection in {wait}; they may be offline, try again later")
        if self.picker is None:
            raise FetchError("no_metadata", f"connected to {self.connections} peers but none sent the metadata "
                             f"of {hexhash} in {wait} (they may not support BEP 9); try again later")
        raise FetchError("stalled", f"no piece arrived for {wait} ({self.picker.done_count} of "
                         f"{self.picker.piece_count} verified, {self._live()} peers connected); the verified "
                         f"pieces are kept in {self.out_dir}: run the same fetch again to resume")

    def _live(self) -> int:
        return sum(1 for s in self.sessions.values() if s.conn is not None)

    def _report(self, now: float, *, final: bool = False) -> None:
        self.rate_samples.append((now, self.received))
        while len(self.rate_samples) > 2 and now - self.rate_samples[0][0] > RATE_WINDOW:
            self.rate_samples.popleft()
        if self.on_progress is None or (not final and now - self.last_report < TICK * 0.9):
            return
        self.last_report = now
        first_time, first_bytes = self.rate_samples[0]
        rate = (self.received - first_bytes) / (now - first_time) if now > first_time else 0.0
        picker, meta = self.picker, self.meta
        progress = FetchProgress(
            verified=picker.done_count if picker else 0,
            pieces=picker.piece_count if picker else 0,
            bytes_done=picker.done_bytes if picker else 0,
            total=meta.total_length if meta is not None and picker is not None else 0,
            peers=self._live(),
            rate=rate,
        )
        try:
            self.on_progress(progress)
        except Exception:
            log.exception("on_progress failed")

    # --- events from sessions ---------------------------------------------------------------------

    def session_connected(self) -> None:
        self.connections += 1
        self.empty_delay = REQUERY_MIN

    def session_ended(self, session: _Session, why: str | None, *, connect_failed: bool = False) -> None:
        addr = session.addr
        if self.sessions.get(addr) is session:
            del self.sessions[addr]
        held = 0
        if self.picker is not None and session.in_picker:
            held = len(self.picker.assigned(addr))
            self.picker.remove_peer(addr)
        session.abandon_metadata()
        if session.conn is not None:
            session.conn.abort()
        candidate = self.candidates.get(addr)
        if candidate is not None and why is not None and not candidate.banned:
            candidate.failures += 1
            delay = min(RETRY_MAX, RETRY_BASE * 2 ** (candidate.failures - 1))
            candidate.retry_at = self.loop.time() + delay
            if connect_failed:
                log.debug("could not connect to %s: %s (retry in %g s)", _peer(addr), why, delay)
            else:
                pieces = f"; its {held} piece(s) go to other peers" if held else ""
                log.info("dropped %s: %s%s", _peer(addr), why, pieces)
        if not self.closing:
            self.changed.set()

    def ban(self, addr: Addr, why: str) -> None:
        """Never talk to `addr` again in this fetch (it sent data that failed a hash check)."""
        candidate = self.candidates.setdefault(addr, _Candidate())
        if candidate.banned:
            return
        candidate.banned = True
        self.banned.append(addr)
        log.warning("banned %s: %s", _peer(addr), why)
        session = self.sessions.get(addr)
        if session is not None and session.task is not asyncio.current_task():
            session.stop(None)

    def block_received(self, size: int) -> None:
        self.received += size

    def metadata_received(self, info: bytes, source: Addr) -> None:
        """A peer's copy of the info dict hashed to info_hash: parse it (a refusal here is fatal: the
        torrent the user asked for is itself unsafe or broken)."""
        if self.meta is not None:
            return
        try:
            meta = parse_info(info, info_hash=self.info_hash)
        except MetainfoError as exc:
            self.fail(FetchError("bad_metadata", f"the metadata of {self.info_hash.hex()} is unacceptable "
                                 f"({exc}); nothing was written. Do not fetch this torrent."))
            return
        log.info("got the metadata of %s from %s: %s, %d bytes in %d pieces", self.info_hash.hex(), _peer(source),
                 meta.name, meta.total_length, meta.piece_count)
        self.meta = meta
        self.progress_at = self.loop.time()
        for session in self.sessions.values():
            session.abandon_metadata()
        self.changed.set()

    def fail(self, error: FetchError) -> None:
        if self.fatal is None:
            self.fatal = error
        self.changed.set()

    def piece_complete(self, addr: Addr, piece: PieceComplete) -> asyncio.Task[None]:
        """Check and write a piece in a worker thread, as a task of its own: it must finish (and tell
        the picker) even if the peer's session is cancelled meanwhile."""
        task = asyncio.create_task(self._verify(addr, piece))
        self.verifying.add(task)
        task.add_done_callback(self.verifying.discard)
        return task

    async def _verify(self, addr: Addr, piece: PieceComplete) -> None:
        store, picker = self.store, self.picker
        assert store is not None and picker is not None
        try:
            ok = await asyncio.to_thread(store.write_piece, piece.index, piece.data)
        except (OSError, ValueError) as exc:
            picker.piece_failed(piece.index)
            full = isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)
            advice = "free some space" if full else "move it out of the way"
            self.fail(FetchError("disk", f"cannot write piece {piece.index} to {store.content_path}: {exc}; "
                                 f"{advice} or choose another output directory (-o DIR); the pieces verified so "
                                 "far are kept, and the same fetch resumes from them"))
            return
        if not ok:
            picker.piece_failed(piece.index)
            self.ban(addr, f"piece {piece.index} failed its SHA-1 check")
            return
        fresh = not picker.is_done(piece.index)
        for owner, req in picker.piece_verified(piece.index):
            session = self.sessions.get(owner)
            if session is not None:
                session.post(Cancel(req.index, req.begin, req.length))
        if not fresh:
            return
        self.downloaded += len(piece.data)
        self.contributors.add(addr)
        candidate = self.candidates.get(addr)
        if candidate is not None:
            candidate.failures = 0
        self.progress_at = self.loop.time()
        if self.on_piece is not None:
            try:
                self.on_piece(piece.index)
            except Exception:
                log.exception("on_piece failed")
        if picker.complete:
            self.changed.set()


class _Session:
    """One peer: connect, trade handshakes, then a reader task and a writer task until either ends."""

    def __init__(self, fetch: _Fetch, addr: Addr) -> None:
        self.fetch = fetch
        self.addr = addr
        self.task: asyncio.Task[None] | None = None
        self.conn: PeerConnection | None = None
        self.outbox: list[Message] = []
        self.wake = asyncio.Event()
        self.choked = True
        self.interested = False
        self.in_picker = False
        self.pipeline = fetch.request_pipeline
        self.early_bitfield: bytes | None = None
        self.early_haves: set[int] = set()
        self.metadata: _MetadataDownload | None = None
        self.metadata_refused = False
        self.stop_reason: str | None = None
        self.stopped = False
        self.last_send = 0.0

    # --- control from the supervisor --------------------------------------------------------------

    def stop(self, why: str | None) -> None:
        """End the session; `why` (None: say nothing) is logged as the reason it was dropped."""
        if self.stopped:
            return
        self.stopped = True
        self.stop_reason = why
        if self.task is not None and not self.task.done():
            self.task.cancel()

    def post(self, msg: Message) -> None:
        self.outbox.append(msg)
        self.wake.set()

    def tick(self, now: float) -> None:
        """Periodic: give up on a metadata download that stalls, start one, top up the pipeline."""
        if self.conn is None or self.stopped:
            return
        md = self.metadata
        if md is not None and now - md.last_progress >= self.fetch.stall_timeout:
            log.info("%s sent no metadata for %g s; trying other peers", _peer(self.addr), self.fetch.stall_timeout)
            self.abandon_metadata()
            self.metadata_refused = True
        self._start_metadata(now)
        if self.in_picker and not self.choked:
            self.wake.set()

    def picker_ready(self) -> None:
        """The metadata is known: join the picker with what the peer announced so far."""
        try:
            self._join_picker()
        except _Drop as exc:
            self.stop(str(exc))
        except PeerWireError as exc:
            self.stop(f"protocol error ({exc})")

    # --- the connection ---------------------------------------------------------------------------

    async def run(self) -> None:
        fetch = self.fetch
        why: str | None = None
        connect_failed = False
        reader: asyncio.Task[None] | None = None
        writer: asyncio.Task[None] | None = None
        try:
            try:
                conn = await PeerConnection.connect(self.addr, fetch.info_hash, fetch.peer_id, timeout=CONNECT_TIMEOUT)
            except (OSError, TimeoutError, PeerWireError) as exc:
                connect_failed = True
                raise _Drop(str(exc) or type(exc).__name__) from exc
            self.conn = conn
            if conn.remote.peer_id == fetch.peer_id:
                raise _Ourselves
            fetch.session_connected()
            log.debug("connected to %s", _peer(self.addr))
            if conn.remote.extensions:
                size = len(fetch.meta.info) if fetch.meta is not None else None
                ours = ExtHandshake({UT_METADATA: OUR_UT_METADATA}, metadata_size=size, client=CLIENT)
                self.outbox.append(Extended(0, encode_ext_handshake(ours)))
            if fetch.picker is not None:
                self._join_picker()
            reader = asyncio.create_task(self._read_loop(conn))
            writer = asyncio.create_task(self._write_loop(conn))
            done, _ = await asyncio.wait((reader, writer), return_when=asyncio.FIRST_COMPLETED)
            first = reader if reader in done else writer
            error = first.exception()
            if error is not None:
                raise error
            why = "the session ended"
        except _Ourselves:
            log.debug("%s is ourselves", _peer(self.addr))
            fetch.candidates.setdefault(self.addr, _Candidate()).banned = True
        except _Banned as exc:
            fetch.ban(self.addr, str(exc))
        except _Drop as exc:
            why = str(exc)
        except PeerWireError as exc:
            why = f"protocol error ({exc})"
        except TimeoutError:
            why = "it stopped reading what we send"
        except (ConnectionError, OSError) as exc:
            why = str(exc) or "the connection closed"
        except asyncio.CancelledError:
            if not self.stopped or fetch.closing:
                raise
            why = self.stop_reason
        except Exception:  # one peer must never take the fetch down, even through a bug of ours
            log.exception("peer %s failed", _peer(self.addr))
            why = "internal error"
        finally:
            for task in (reader, writer):
                if task is not None:
                    task.cancel()
            if reader is not None and writer is not None:
                await asyncio.gather(reader, writer, return_exceptions=True)
            fetch.session_ended(self, why, connect_failed=connect_failed)

    async def _write_loop(self, conn: PeerConnection) -> None:
        loop = self.fetch.loop
        self.last_send = loop.time()
        while True:
            msgs, self.outbox = self.outbox, []
            msgs.extend(self._requests())
            now = loop.time()
            if not msgs and now - self.last_send >= KEEPALIVE_INTERVAL:
                msgs.append(KeepAlive())
            if msgs:
                await conn.send(*msgs)
                self.last_send = now
                continue
            self.wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(KEEPALIVE_INTERVAL):
                    await self.wake.wait()

    def _requests(self) -> list[Message]:
        picker = self.fetch.picker
        if picker is None or not self.in_picker or self.choked or self.stopped or self.fetch.closing:
            return []
        reqs = picker.next_requests(self.addr, self.pipeline, self.fetch.loop.time())
        return [Request(r.index, r.begin, r.length) for r in reqs]

    async def _read_loop(self, conn: PeerConnection) -> None:
        while True:
            try:
                msg = await conn.receive(SILENCE_TIMEOUT)
            except TimeoutError:
                raise _Drop(f"it sent nothing for {SILENCE_TIMEOUT:g} s") from None
            if isinstance(msg, Piece):
                await self._on_piece(msg)
            elif isinstance(msg, Unchoke):
                self.choked = False
                self.wake.set()
            elif isinstance(msg, Choke):
                self.choked = True
                if self.in_picker and self.fetch.picker is not None:
                    self.fetch.picker.release(self.addr)
            elif isinstance(msg, Have):
                self._on_have(msg.index)
            elif isinstance(msg, BitfieldMsg):
                self._on_bitfield(msg.data)
            elif isinstance(msg, Extended):
                self._on_extended(msg)
            # keep-alive, interested, requests (we do not upload while fetching), cancel, port, unknown

    # --- messages ---------------------------------------------------------------------------------

    def _join_picker(self) -> None:
        picker = self.fetch.picker
        assert picker is not None
        if self.in_picker:
            return
        picker.add_peer(self.addr)
        self.in_picker = True
        reqq = self.conn.remote_ext.reqq if self.conn is not None and self.conn.remote_ext is not None else None
        if reqq:
            self.pipeline = max(1, min(self.pipeline, reqq))
        early, self.early_bitfield = self.early_bitfield, None
        haves, self.early_haves = self.early_haves, set()
        if early is not None:
            self._on_bitfield(early)
        for index in haves:
            self._on_have(index)
        self._update_interest()

    def _on_bitfield(self, data: bytes) -> None:
        picker = self.fetch.picker
        if picker is None or not self.in_picker:
            self.early_bitfield = data
            return
        bits = Bitfield.from_bytes(data, picker.piece_count)
        for index in bits:
            picker.peer_has(self.addr, index)
        self._update_interest()

    def _on_have(self, index: int) -> None:
        picker = self.fetch.picker
        if picker is None or not self.in_picker:
            if len(self.early_haves) < MAX_EARLY_HAVES:
                self.early_haves.add(index)
            return
        if not 0 <= index < picker.piece_count:
            raise _Drop(f"it announced piece {index} of a torrent with {picker.piece_count} pieces")
        if picker.peer_has(self.addr, index) and not self.interested:
            self._update_interest()
        elif not self.choked:
            self.wake.set()

    def _update_interest(self) -> None:
        picker = self.fetch.picker
        if picker is not None and not self.interested and picker.interesting(self.addr):
            self.interested = True
            self.post(Interested())

    async def _on_piece(self, msg: Piece) -> None:
        fetch, picker = self.fetch, self.fetch.picker
        if picker is None or not self.in_picker:
            return
        fetch.block_received(len(msg.block))
        try:
            done = picker.on_block(self.addr, msg.index, msg.begin, msg.block, fetch.loop.time())
        except (ValueError, IndexError) as exc:
            raise _Drop(f"bad block ({exc})") from exc
        self.wake.set()  # one slot freed in the pipeline
        if done is not None:
            # Wait for the write (disk back-pressure), but shielded: the verdict must reach the picker
            # even if this session is cancelled meanwhile.
            await asyncio.shield(fetch.piece_complete(self.addr, done))

    def _on_extended(self, msg: Extended) -> None:
        if msg.ext_id == 0:  # the connection already decoded it into conn.remote_ext
            self._start_metadata(self.fetch.loop.time())
            return
        if msg.ext_id != OUR_UT_METADATA:
            return
        try:
            body = decode_metadata(msg.payload)
        except PeerWireError as exc:
            if exc.reason == "unknown_metadata_type":  # BEP 9: ignore message types we do not know
                return
            raise
        if isinstance(body, MetadataRequest):
            self._serve_metadata(body.piece)
        elif isinstance(body, MetadataReject):
            if self.metadata is not None and body.piece in self.metadata.inflight:
                log.info("%s refused to send the metadata; trying other peers", _peer(self.addr))
                self.abandon_metadata()
                self.metadata_refused = True
        else:
            self._on_metadata_data(body)

    def _serve_metadata(self, piece: int) -> None:
        """Answer a BEP 9 request: the piece when we know the metadata, a reject otherwise."""
        their_id = self.conn.ext_id(UT_METADATA) if self.conn is not None else None
        if their_id is None:
            return
        meta = self.fetch.meta
        reply: MetadataData | MetadataReject
        if meta is not None and piece < metadata_piece_count(len(meta.info)):
            start = piece * METADATA_PIECE_SIZE
            reply = MetadataData(piece, len(meta.info), meta.info[start : start + METADATA_PIECE_SIZE])
        else:
            reply = MetadataReject(piece)
        self.post(Extended(their_id, encode_metadata(reply)))

    # --- metadata (BEP 9) -------------------------------------------------------------------------

    def _start_metadata(self, now: float) -> None:
        fetch, conn = self.fetch, self.conn
        if (fetch.meta is not None or self.metadata is not None or self.metadata_refused or conn is None
                or self.stopped or fetch.metadata_sources >= METADATA_SOURCES):
            return
        ext = conn.remote_ext
        if ext is None or conn.ext_id(UT_METADATA) is None or ext.metadata_size is None:
            return
        size = ext.metadata_size
        if not 0 < size <= MAX_METADATA_SIZE:
            log.info("%s announces metadata of %d bytes; not asking it", _peer(self.addr), size)
            self.metadata_refused = True
            return
        self.metadata = _MetadataDownload(size=size, buf=bytearray(size), count=metadata_piece_count(size),
                                          last_progress=now)
        fetch.metadata_sources += 1
        self._request_metadata()

    def _request_metadata(self) -> None:
        md, conn = self.metadata, self.conn
        their_id = conn.ext_id(UT_METADATA) if conn is not None else None
        if md is None or their_id is None:
            return
        while len(md.inflight) < METADATA_PIPELINE and md.next_piece < md.count:
            md.inflight.add(md.next_piece)
            self.post(Extended(their_id, encode_metadata(MetadataRequest(md.next_piece))))
            md.next_piece += 1

    def _on_metadata_data(self, data: MetadataData) -> None:
        md = self.metadata
        if md is None or data.piece not in md.inflight or data.total_size != md.size:
            return  # late, unasked for, or after we gave up on this peer
        md.inflight.discard(data.piece)
        start = data.piece * METADATA_PIECE_SIZE
        md.buf[start : start + len(data.data)] = data.data
        md.got += 1
        md.last_progress = self.fetch.loop.time()
        if md.got < md.count:
            self._request_metadata()
            return
        info = bytes(md.buf)
        self.abandon_metadata()
        if hashlib.sha1(info).digest() != self.fetch.info_hash:
            raise _Banned("its metadata does not match the info-hash")
        self.fetch.metadata_received(info, self.addr)

    def abandon_metadata(self) -> None:
        if self.metadata is not None:
            self.metadata = None
            self.fetch.metadata_sources -= 1


def _check_writable(out_dir: Path) -> None:
    """Fail before downloading anything when the output directory cannot take files."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out_dir):
            pass
    except OSError as exc:
        raise FetchError("disk", f"cannot write to {out_dir} ({exc.strerror or exc}); choose a writable output "
                         "directory (-o DIR)") from exc


def _valid_addr(item: object) -> Addr | None:
    """An (IPv4 host, port) pair from find_peers, or None for anything else."""
    if not isinstance(item, tuple | list) or len(item) != 2:
        return None
    host, port = item
    if not isinstance(host, str) or not isinstance(port, int) or not 0 < port < 65536:
        return None
    return (host, port)
