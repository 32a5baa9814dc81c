"""The seeding side: serves registered torrents to any BitTorrent peer (BEP 3, BEP 10, BEP 9).

Per connection: read the peer's handshake, find the torrent by info-hash, answer with our handshake, our
bitfield and (if the peer speaks BEP 10) an extension handshake offering ut_metadata; unchoke a peer as
soon as it is interested; answer block requests from a bounded queue; serve the info dict by BEP 9.

Peers are hostile until proven otherwise: connections, queued requests and metadata requests are all
bounded, every wait has a timeout, and each refusal is logged once in a line an operator can read and
counted under ``refused.<reason>``. A connection's task never lets an exception escape.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from dataclasses import dataclass, field

from kadnode import __version__
from kadnode.torrent.connection import PeerConnection, read_handshake
from kadnode.torrent.peerwire import (
    BLOCK_LIMIT,
    METADATA_PIECE_SIZE,
    UT_METADATA,
    Bitfield,
    BitfieldMsg,
    Cancel,
    Extended,
    ExtHandshake,
    Handshake,
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
    encode_handshake,
    encode_metadata,
    metadata_piece_count,
)
from kadnode.torrent.pieces import PieceStore
from kadnode.types import Addr

log = logging.getLogger("kadnode.torrent")

HANDSHAKE_TIMEOUT = 10.0
"""Seconds a new connection has to send its 68-byte handshake."""
KEEPALIVE_INTERVAL = 60.0
"""BEP 3 peers send keep-alives about every two minutes and time out after a few; we send twice as often."""
MAX_QUEUE = 256
"""Requests one peer may have waiting; we announce reqq 250 (libtorrent's default), so a peer that
honours it never reaches this."""
REQQ = 250
OUR_UT_METADATA = 2
"""The id we want ut_metadata messages sent to us on (any non-zero byte; libtorrent uses 2 as well)."""
BLOCKS_PER_WRITE = 4
"""Blocks written before waiting for the socket: enough to keep loopback busy, few enough to stay fair."""
METADATA_REQUEST_FACTOR = 4
"""BEP 9 flood protection: a peer gets each metadata piece this many times (plus a few), then rejects."""
CLIENT = f"kadnode {__version__}"


@dataclass(slots=True)
class _Torrent:
    store: PieceStore
    have: Bitfield
    sessions: set[_Session] = field(default_factory=set)


class _Refused(Exception):
    """A peer broke a rule: close the connection, log `detail` once, count `reason`."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class _StoreFailed(Exception):
    """Our own files failed us (deleted, truncated, unreadable): close the connection, log a warning."""


def _peer(addr: Addr) -> str:
    return f"{addr[0]}:{addr[1]}"


class SeedServer:
    """Serves registered torrents to any peer (BEP 3 + BEP 10 + BEP 9): handshake, our bitfield,
    extension handshake with metadata_size, unchoke on interested, answers requests (≤16 KiB, inside the
    piece, bounded per-peer queue), cancel, keep-alive; serves the info dict via ut_metadata. Bounded
    connections, per-connection idle timeout; every refusal logged once in a line an operator reads
    ("refused 127.0.0.5:51234: request beyond piece 12 (begin 32768, length 16384)") and counted."""

    def __init__(
        self,
        host: str,
        port: int = 0,
        *,
        peer_id: bytes,
        max_connections: int = 64,
        idle_timeout: float = 120.0,
        handshake_timeout: float = HANDSHAKE_TIMEOUT,
        keepalive_interval: float = KEEPALIVE_INTERVAL,
        max_queue: int = MAX_QUEUE,
        upload_rate: float | None = None,
    ) -> None:
        if len(peer_id) != 20:
            raise ValueError("peer_id must be 20 bytes")
        self.host = host
        self.peer_id = peer_id
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self.handshake_timeout = handshake_timeout
        self.keepalive_interval = keepalive_interval
        self.max_queue = max_queue
        self.upload_limit = UploadLimit(upload_rate) if upload_rate else None
        """Bytes per second for all peers together (None: as fast as they read)."""
        self.counters: dict[str, int] = {"connections": 0, "blocks_served": 0, "bytes_served": 0, "metadata_served": 0}
        self._requested_port = port
        self._torrents: dict[bytes, _Torrent] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None

    # --- registry -----------------------------------------------------------------------------------

    def add(self, store: PieceStore, have: set[int] | None = None) -> None:
        """Serve `store`'s torrent; `have` are the verified pieces (None: all of them)."""
        meta = store.meta
        bits = Bitfield(meta.piece_count)
        for index in range(meta.piece_count) if have is None else have:
            bits.add(index)
        old = self._torrents.get(meta.info_hash)
        if old is None:
            self._torrents[meta.info_hash] = _Torrent(store, bits)
        else:  # connected peers keep being served, from the new store
            old.store, old.have = store, bits
        log.info("serving %s (%s, %d of %d pieces)", meta.info_hash.hex(), meta.name, len(bits), meta.piece_count)

    def remove(self, info_hash: bytes) -> None:
        """Stop serving a torrent and drop its connections."""
        torrent = self._torrents.pop(info_hash, None)
        if torrent is None:
            return
        for session in list(torrent.sessions):
            session.conn.abort()
        log.info("stopped serving %s", info_hash.hex())

    def have(self, info_hash: bytes, index: int) -> None:
        """A fetch verified piece `index`: serve it from now on and announce it to connected peers."""
        torrent = self._torrents.get(info_hash)
        if torrent is None or index in torrent.have:
            return
        torrent.have.add(index)
        for session in torrent.sessions:
            session.post(Have(index))

    @property
    def torrents(self) -> list[bytes]:
        return list(self._torrents)

    # --- lifecycle ----------------------------------------------------------------------------------

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.host, self._requested_port)
        log.info("seeding on %s:%d", self.host, self.port)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None

    @property
    def port(self) -> int:
        if self._server is None or not self._server.sockets:
            raise RuntimeError("the server is not started")
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def active(self) -> int:
        """Open connections, handshaking ones included."""
        return len(self._tasks)

    def _count(self, name: str) -> None:
        self.counters[name] = self.counters.get(name, 0) + 1

    def _refuse(self, addr: Addr, reason: str, detail: str) -> None:
        self._count(f"refused.{reason}")
        log.info("refused %s: %s", _peer(addr), detail)

    # --- one connection -----------------------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        peername = writer.get_extra_info("peername")
        addr: Addr = (str(peername[0]), int(peername[1])) if peername else ("?", 0)
        if task is None or len(self._tasks) >= self.max_connections:
            self._refuse(addr, "too_many_connections", f"too many connections ({self.max_connections})")
            writer.transport.abort()
            return
        self._tasks.add(task)
        try:
            await self._serve(reader, writer, addr)
        except asyncio.CancelledError:
            # close() cancels us. Re-raising would make Python 3.11's stream callback log the
            # cancellation as an error; the task ends either way.
            return
        except Exception:  # a bug of ours must not take the server down
            self._count("errors")
            log.exception("connection %s failed", _peer(addr))
        finally:
            self._tasks.discard(task)
            writer.transport.abort()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, addr: Addr) -> None:
        try:
            async with asyncio.timeout(self.handshake_timeout):
                remote = await read_handshake(reader)
        except TimeoutError:
            self._refuse(addr, "handshake_timeout", f"no handshake within {self.handshake_timeout:g} s")
            return
        except PeerWireError as exc:
            self._refuse(addr, exc.reason, f"malformed handshake ({exc})")
            return
        except (ConnectionError, OSError):
            return
        torrent = self._torrents.get(remote.info_hash)
        if torrent is None:
            self._refuse(addr, "unknown_torrent", f"asked for unknown torrent {remote.info_hash.hex()}")
            return
        writer.write(encode_handshake(Handshake(remote.info_hash, self.peer_id, extensions=True)))
        conn = PeerConnection(reader, writer, remote, addr)
        session = _Session(self, conn, torrent)
        self._count("connections")
        log.debug("peer %s connected for %s", _peer(addr), remote.info_hash.hex())
        torrent.sessions.add(session)
        try:
            await session.run()
        finally:
            torrent.sessions.discard(session)


class _Session:
    """The state of one served peer: a receiving loop (rules, queue) and a sending loop (answers)."""

    def __init__(self, server: SeedServer, conn: PeerConnection, torrent: _Torrent) -> None:
        self.server = server
        self.conn = conn
        self.torrent = torrent
        self.queue: deque[tuple[int, int, int]] = deque()
        self.outbox: deque[Message] = deque()
        self.wake = asyncio.Event()
        self.unchoked = False
        self.metadata_replies = 0
        meta = torrent.store.meta
        if len(torrent.have):
            self.outbox.append(BitfieldMsg(torrent.have.to_bytes()))
        if conn.remote.extensions:
            ext = ExtHandshake(
                extensions={UT_METADATA: OUR_UT_METADATA}, metadata_size=len(meta.info), client=CLIENT, reqq=REQQ
            )
            self.outbox.append(Extended(0, encode_ext_handshake(ext)))

    def post(self, msg: Message) -> None:
        self.outbox.append(msg)
        self.wake.set()

    async def run(self) -> None:
        server, addr = self.server, self.conn.addr
        receiving = asyncio.create_task(self._receive_loop())
        sending = asyncio.create_task(self._send_loop())
        try:
            done, _ = await asyncio.wait((receiving, sending), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (receiving, sending):
                task.cancel()
            await asyncio.gather(receiving, sending, return_exceptions=True)
        first = receiving if receiving in done else sending
        exc = first.exception()
        if self.conn.closed:  # we dropped it ourselves (remove, shutdown): whatever failed after is moot
            log.debug("dropped %s", _peer(addr))
        elif isinstance(exc, _Refused):
            server._refuse(addr, exc.reason, exc.detail)
        elif isinstance(exc, PeerWireError):
            server._refuse(addr, exc.reason, str(exc))
        elif isinstance(exc, _StoreFailed):
            server._count("read_errors")
            log.warning("closed %s: %s", _peer(addr), exc)
        elif isinstance(exc, TimeoutError):
            idle = first is receiving
            server._count("idle_timeouts" if idle else "send_timeouts")
            what = f"idle for {server.idle_timeout:g} s" if idle else "not reading what we send"
            log.info("closed %s: %s", _peer(addr), what)
        elif isinstance(exc, ConnectionError | OSError) or exc is None:
            log.debug("peer %s disconnected", _peer(addr))
        else:
            raise exc

    # --- receiving ----------------------------------------------------------------------------------

    async def _receive_loop(self) -> None:
        while True:
            msg = await self.conn.receive(self.server.idle_timeout)
            if isinstance(msg, Request):
                self._on_request(msg)
            elif isinstance(msg, Cancel):
                with contextlib.suppress(ValueError):
                    self.queue.remove((msg.index, msg.begin, msg.length))
            elif isinstance(msg, Interested):
                if not self.unchoked:
                    self.unchoked = True
                    self.post(Unchoke())
            elif isinstance(msg, Have):
                if msg.index >= self.torrent.have.count:
                    raise _Refused("bad_have", f"have for piece {msg.index} of {self.torrent.have.count}")
            elif isinstance(msg, BitfieldMsg):
                Bitfield.from_bytes(msg.data, self.torrent.have.count)
            elif isinstance(msg, Piece):
                raise _Refused("unsolicited_piece", f"sent a block we never asked for (piece {msg.index})")
            elif isinstance(msg, Extended) and msg.ext_id == OUR_UT_METADATA:
                self._on_metadata(msg.payload)
            # keep-alive, choke/unchoke, not interested, port, other extensions, unknown ids: nothing to do

    def _on_request(self, req: Request) -> None:
        meta = self.torrent.store.meta
        where = f"(begin {req.begin}, length {req.length})"
        if req.index >= meta.piece_count:
            raise _Refused(
                "bad_request", f"request for piece {req.index} beyond the torrent ({meta.piece_count} pieces)"
            )
        if req.length == 0 or req.length > BLOCK_LIMIT:
            raise _Refused("request_too_large", f"request of {req.length} bytes (limit {BLOCK_LIMIT}) {where}")
        if req.begin + req.length > meta.piece_size(req.index):
            raise _Refused("bad_request", f"request beyond piece {req.index} {where}")
        if req.index not in self.torrent.have:
            raise _Refused("piece_missing", f"request for piece {req.index}, which we do not have")
        if not self.unchoked:
            self.server._count("ignored.choked_request")
            return
        if len(self.queue) >= self.server.max_queue:
            raise _Refused("queue_full", f"more than {self.server.max_queue} requests queued")
        self.queue.append((req.index, req.begin, req.length))
        self.wake.set()

    def _on_metadata(self, payload: bytes) -> None:
        try:
            msg = decode_metadata(payload)
        except PeerWireError as exc:
            if exc.reason == "unknown_metadata_type":  # BEP 9: ignore, for future message types
                return
            raise
        if not isinstance(msg, MetadataRequest):
            return  # data or reject: we never ask, nothing to do with them
        if len(self.outbox) >= self.server.max_queue:  # it asks faster than it reads our answers
            raise _Refused("queue_full", f"more than {self.server.max_queue} metadata answers waiting")
        their_id = self.conn.ext_id(UT_METADATA)
        if their_id is None:
            raise _Refused("bad_extended", "metadata request without announcing ut_metadata")
        info = self.torrent.store.meta.info
        pieces = metadata_piece_count(len(info))
        reply: MetadataData | MetadataReject
        if msg.piece >= pieces or self.metadata_replies >= METADATA_REQUEST_FACTOR * pieces + 4:
            reply = MetadataReject(msg.piece)
        else:
            start = msg.piece * METADATA_PIECE_SIZE
            reply = MetadataData(msg.piece, len(info), info[start : start + METADATA_PIECE_SIZE])
            self.metadata_replies += 1
            self.server._count("metadata_served")
        self.post(Extended(their_id, encode_metadata(reply)))

    # --- sending ------------------------------------------------------------------------------------

    async def _send_loop(self) -> None:
        server = self.server
        while True:
            if not self.outbox and not self.queue:
                self.wake.clear()
                try:
                    async with asyncio.timeout(server.keepalive_interval):
                        await self.wake.wait()
                except TimeoutError:
                    self.outbox.append(KeepAlive())
                continue
            batch: list[Message] = list(self.outbox)
            self.outbox.clear()
            wanted = [self.queue.popleft() for _ in range(min(BLOCKS_PER_WRITE, len(self.queue)))]
            if wanted and server.upload_limit is not None:
                await server.upload_limit.take(sum(length for _, _, length in wanted))
            if wanted:  # a worker thread: a slow disk must not stall the event loop (and the DHT on it)
                blocks = await asyncio.to_thread(_read_blocks, self.torrent.store, wanted)
                batch.extend(blocks)
            await self.conn.send(*batch)
            if wanted:
                server.counters["blocks_served"] += len(wanted)
                server.counters["bytes_served"] += sum(length for _, _, length in wanted)


class UploadLimit:
    """The server's upload rate, shared by every connection: each send first pays for its blocks, and
    waits while the account is in debt (a leaky bucket that holds at most one second of rate)."""

    def __init__(self, rate: float) -> None:
        if rate <= 0:
            raise ValueError("upload rate must be positive")
        self.rate = rate
        self._balance = rate
        self._updated = time.monotonic()

    async def take(self, size: int) -> None:
        now = time.monotonic()
        self._balance = min(self.rate, self._balance + (now - self._updated) * self.rate) - size
        self._updated = now
        if self._balance < 0:
            await asyncio.sleep(-self._balance / self.rate)


def _read_blocks(store: PieceStore, wanted: list[tuple[int, int, int]]) -> list[Piece]:
    out = []
    for index, begin, length in wanted:
        try:
            out.append(Piece(index, begin, store.read_block(index, begin, length)))
        except (OSError, ValueError) as exc:
            raise _StoreFailed(f"cannot read piece {index} of {store.meta.name}: {exc}") from exc
    return out
