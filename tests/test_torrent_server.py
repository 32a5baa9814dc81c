"""kadnode.torrent.server.SeedServer on 127.0.0.1: a raw client gets the handshake, bitfield and extension
handshake, downloads every block and the metadata; hostile clients are each refused with a log line and a
counter while the server keeps serving; and libtorrent downloads from it, from a .torrent and from a
magnet link alone."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any, cast

import libtorrent as lt
import pytest

from kadnode.torrent.connection import PeerConnection
from kadnode.torrent.metainfo import Metainfo, build_metainfo, torrent_file
from kadnode.torrent.peerwire import (
    HANDSHAKE_SIZE,
    UT_METADATA,
    BitfieldMsg,
    Cancel,
    Choke,
    Extended,
    ExtHandshake,
    Handshake,
    Have,
    Interested,
    KeepAlive,
    Message,
    MessageReader,
    MetadataData,
    MetadataReject,
    MetadataRequest,
    Piece,
    Request,
    Unchoke,
    decode_ext_handshake,
    decode_handshake,
    decode_metadata,
    encode,
    encode_ext_handshake,
    encode_handshake,
    encode_metadata,
)
from kadnode.torrent.pieces import PieceStore
from kadnode.torrent.server import SeedServer

HOST = "127.0.0.1"
SERVER_ID = b"-KN0100-seedserver01"
CLIENT_ID = b"-XX0001-rawclient001"
PIECE_LENGTH = 32 * 1024
FILE_SIZE = 3 * PIECE_LENGTH + 5000  # 4 pieces, the last one short: 7 blocks
STEP = 5.0
"""Seconds any single wait in these tests may take on loopback before it counts as a failure."""
OUR_METADATA_ID = 5
"""The ut_metadata id the raw client announces."""


# --- fixtures ---------------------------------------------------------------------------------------


def make_file(directory: Path, size: int = FILE_SIZE, seed: int = 1) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "data.bin"
    path.write_bytes(random.Random(seed).randbytes(size))
    return path


def make_tree(directory: Path, seed: int = 2) -> Path:
    """A multi-file share whose info dict takes two BEP 9 pieces (long names, 180 files)."""
    rng = random.Random(seed)
    root = directory / "tree"
    for i in range(180):
        sub = root / f"sub{i % 3}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / (f"file-{i:03d}-" + "n" * 90 + ".bin")).write_bytes(rng.randbytes(rng.randrange(1, 3000)))
    return root


class Seed:
    def __init__(self, server: SeedServer, meta: Metainfo, content: bytes) -> None:
        self.server = server
        self.meta = meta
        self.content = content

    @property
    def addr(self) -> tuple[str, int]:
        return (HOST, self.server.port)


async def start_seed(
    stack: AsyncExitStack, directory: Path, *, have: set[int] | None = None, **server_args: Any
) -> Seed:
    path = make_file(directory)
    meta = build_metainfo(path, piece_length=PIECE_LENGTH)
    store = PieceStore(meta, directory, writable=False)
    stack.callback(store.close)
    server = SeedServer(HOST, 0, peer_id=SERVER_ID, **server_args)
    server.add(store, have)
    await server.start()
    stack.push_async_callback(server.close)
    return Seed(server, meta, path.read_bytes())


@pytest.fixture
async def stack() -> AsyncIterator[AsyncExitStack]:
    async with AsyncExitStack() as stack:
        yield stack


@pytest.fixture
async def seed(stack: AsyncExitStack, tmp_path: Path) -> Seed:
    return await start_seed(stack, tmp_path / "share")


@pytest.fixture
def torrent_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="kadnode.torrent")
    return caplog


# --- a raw client ---------------------------------------------------------------------------------


class RawPeer:
    """A hand-driven peer over plain asyncio streams: whatever bytes a test wants, in any order."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.messages = MessageReader()
        self.pending: list[Message] = []

    @classmethod
    async def open(cls, addr: tuple[str, int]) -> RawPeer:
        reader, writer = await asyncio.open_connection(*addr)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def handshake(self, info_hash: bytes, *, extensions: bool = True) -> Handshake:
        await self.send(encode_handshake(Handshake(info_hash, CLIENT_ID, extensions=extensions)))
        async with asyncio.timeout(STEP):
            return decode_handshake(await self.reader.readexactly(HANDSHAKE_SIZE))

    async def next(self) -> Message:
        async with asyncio.timeout(STEP):
            while not self.pending:
                data = await self.reader.read(65536)
                if not data:
                    raise ConnectionResetError("closed")
                self.pending.extend(self.messages.feed(data))
        return self.pending.pop(0)

    async def next_of(self, kind: type[Message] | tuple[type[Message], ...]) -> Message:
        """The next message of `kind`, skipping keep-alives, bitfield and extension handshake."""
        while True:
            msg = await self.next()
            if isinstance(msg, kind):
                return msg
            assert isinstance(msg, KeepAlive | BitfieldMsg | Extended), msg

    async def closed_by_server(self) -> bool:
        """True when the server closes within STEP seconds (whatever it sent before)."""
        try:
            async with asyncio.timeout(STEP):
                while await self.reader.read(65536):
                    pass
        except TimeoutError:
            return False
        except ConnectionError:
            pass
        return True

    def close(self) -> None:
        self.writer.transport.abort()


@asynccontextmanager
async def fake_peer(
    handle: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
) -> AsyncIterator[int]:
    """A listener on HOST that runs `handle` per connection; yields its port, closes everything after."""
    writers: list[asyncio.StreamWriter] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        try:
            await handle(reader, writer)
        finally:
            writer.close()

    server = await asyncio.start_server(serve, HOST, 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for writer in writers:
            writer.transport.abort()
        await server.wait_closed()


async def unchoked_connection(seed: Seed) -> PeerConnection:
    conn = await PeerConnection.connect(seed.addr, seed.meta.info_hash, CLIENT_ID, timeout=STEP)
    await conn.send(Interested())
    while not isinstance(await conn.receive(STEP), Unchoke):
        pass
    return conn


def all_blocks(meta: Metainfo) -> list[Request]:
    out: list[Request] = []
    for index in range(meta.piece_count):
        size = meta.piece_size(index)
        out.extend(Request(index, begin, min(16384, size - begin)) for begin in range(0, size, 16384))
    return out


async def download(conn: PeerConnection, meta: Metainfo, requests: list[Request]) -> dict[tuple[int, int], bytes]:
    await conn.send(*requests)
    got: dict[tuple[int, int], bytes] = {}
    while len(got) < len(requests):
        msg = await conn.receive(STEP)
        if isinstance(msg, Piece):
            got[msg.index, msg.begin] = msg.block
    return got


async def assert_still_serves(seed: Seed) -> None:
    """A well-behaved client still gets correct data (the last block, from the short last piece)."""
    conn = await unchoked_connection(seed)
    try:
        last = all_blocks(seed.meta)[-1]
        got = await download(conn, seed.meta, [last])
        start = last.index * PIECE_LENGTH + last.begin
        assert got[last.index, last.begin] == seed.content[start : start + last.length]
    finally:
        await conn.close()


def refusals(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.name == "kadnode.torrent" and r.getMessage().startswith("refused")
    ]


# --- a well-behaved client ------------------------------------------------------------------------


async def test_handshake_bitfield_and_extension_handshake(seed: Seed) -> None:
    peer = await RawPeer.open(seed.addr)
    try:
        theirs = await peer.handshake(seed.meta.info_hash)
        assert theirs == Handshake(seed.meta.info_hash, SERVER_ID, extensions=True)
        assert await peer.next() == BitfieldMsg(b"\xf0")  # 4 pieces, all there, spare bits zero
        ext = await peer.next()
        assert isinstance(ext, Extended) and ext.ext_id == 0
        handshake = decode_ext_handshake(ext.payload)
        assert handshake.extensions[UT_METADATA] > 0
        assert handshake.metadata_size == len(seed.meta.info)
        assert handshake.reqq == 250
        assert handshake.client is not None and handshake.client.startswith("kadnode")
        await peer.send(encode(Interested()))
        assert await peer.next() == Unchoke()
    finally:
        peer.close()


async def test_no_extension_handshake_for_a_peer_without_bep10(seed: Seed) -> None:
    peer = await RawPeer.open(seed.addr)
    try:
        await peer.handshake(seed.meta.info_hash, extensions=False)
        assert await peer.next() == BitfieldMsg(b"\xf0")
        await peer.send(encode(Interested()))
        assert await peer.next() == Unchoke()
    finally:
        peer.close()


async def test_downloads_every_block(seed: Seed) -> None:
    conn = await unchoked_connection(seed)
    try:
        requests = all_blocks(seed.meta)
        assert len(requests) == 7
        got = await download(conn, seed.meta, requests)
    finally:
        await conn.close()
    data = b"".join(got[r.index, r.begin] for r in requests)
    assert data == seed.content
    assert seed.server.counters["blocks_served"] == 7
    assert seed.server.counters["bytes_served"] == FILE_SIZE
    assert seed.server.counters["connections"] == 1


async def test_serves_the_metadata_by_bep9(stack: AsyncExitStack, tmp_path: Path) -> None:
    meta = build_metainfo(make_tree(tmp_path))
    assert 16384 < len(meta.info) <= 32768  # two metadata pieces, the last one short
    store = PieceStore(meta, tmp_path, writable=False)
    stack.callback(store.close)
    server = SeedServer(HOST, 0, peer_id=SERVER_ID)
    server.add(store)
    await server.start()
    stack.push_async_callback(server.close)

    conn = await PeerConnection.connect((HOST, server.port), meta.info_hash, CLIENT_ID, timeout=STEP)
    try:
        ours = ExtHandshake({UT_METADATA: OUR_METADATA_ID})
        await conn.send(Extended(0, encode_ext_handshake(ours)))
        while conn.remote_ext is None:
            await conn.receive(STEP)
        assert conn.remote_ext.metadata_size == len(meta.info)
        their_id = conn.ext_id(UT_METADATA)
        assert their_id is not None
        await conn.send(*(Extended(their_id, encode_metadata(MetadataRequest(p))) for p in (0, 1, 2)))
        answers: dict[int, MetadataData | MetadataReject] = {}
        while len(answers) < 3:
            msg = await conn.receive(STEP)
            if isinstance(msg, Extended) and msg.ext_id == OUR_METADATA_ID:
                answer = decode_metadata(msg.payload)
                assert not isinstance(answer, MetadataRequest)
                answers[answer.piece] = answer
    finally:
        await conn.close()
    first, second = answers[0], answers[1]
    assert isinstance(first, MetadataData) and isinstance(second, MetadataData)
    assert first.total_size == second.total_size == len(meta.info)
    assert hashlib.sha1(first.data + second.data).digest() == meta.info_hash
    assert answers[2] == MetadataReject(2)
    assert server.counters["metadata_served"] == 2


async def test_cancel_drops_a_queued_request(seed: Seed) -> None:
    conn = await unchoked_connection(seed)
    try:
        a, b, c = all_blocks(seed.meta)[:3]
        await conn.send(a, b, Cancel(b.index, b.begin, b.length))  # one write: all queued before any is served
        first = await conn.receive(STEP)
        assert isinstance(first, Piece) and (first.index, first.begin) == (a.index, a.begin)
        await conn.send(c)
        second = await conn.receive(STEP)
        assert isinstance(second, Piece) and (second.index, second.begin) == (c.index, c.begin)
    finally:
        await conn.close()
    assert seed.server.counters["blocks_served"] == 2


async def test_have_announces_a_new_piece(stack: AsyncExitStack, tmp_path: Path) -> None:
    seed = await start_seed(stack, tmp_path, have={0})
    peer = await RawPeer.open(seed.addr)
    try:
        await peer.handshake(seed.meta.info_hash)
        assert await peer.next() == BitfieldMsg(b"\x80")
        seed.server.have(seed.meta.info_hash, 2)
        assert await peer.next_of(Have) == Have(2)
        await peer.send(encode(Interested()))
        await peer.next_of(Unchoke)
        await peer.send(encode(Request(2, 16384, 16384)))
        block = await peer.next_of(Piece)
        assert block == Piece(2, 16384, seed.content[2 * PIECE_LENGTH + 16384 : 3 * PIECE_LENGTH])
    finally:
        peer.close()


async def test_request_for_a_piece_we_lack_is_refused(
    stack: AsyncExitStack, tmp_path: Path, torrent_log: pytest.LogCaptureFixture
) -> None:
    seed = await start_seed(stack, tmp_path, have={0})
    peer = await RawPeer.open(seed.addr)
    try:
        await after_handshake(encode(Request(1, 0, 16384)), interested=True)(peer, seed)
        assert await peer.closed_by_server()
    finally:
        peer.close()
    assert seed.server.counters["refused.piece_missing"] == 1
    assert refusals(torrent_log) == [
        f"refused {HOST}:{peer.writer.get_extra_info('sockname')[1]}: request for piece 1, which we do not have"
    ]


async def test_no_bitfield_when_we_have_nothing(stack: AsyncExitStack, tmp_path: Path) -> None:
    seed = await start_seed(stack, tmp_path, have=set())
    peer = await RawPeer.open(seed.addr)
    try:
        await peer.handshake(seed.meta.info_hash)
        first = await peer.next()
        assert isinstance(first, Extended) and first.ext_id == 0
    finally:
        peer.close()


async def test_keepalives_flow_on_a_quiet_connection(stack: AsyncExitStack, tmp_path: Path) -> None:
    seed = await start_seed(stack, tmp_path, keepalive_interval=0.1)
    peer = await RawPeer.open(seed.addr)
    try:
        await peer.handshake(seed.meta.info_hash)
        assert await peer.next_of(KeepAlive) == KeepAlive()
    finally:
        peer.close()


async def test_remove_drops_the_torrents_peers(seed: Seed) -> None:
    peer = await RawPeer.open(seed.addr)
    try:
        await peer.handshake(seed.meta.info_hash)
        await peer.next()
        seed.server.remove(seed.meta.info_hash)
        assert await peer.closed_by_server()
    finally:
        peer.close()
    with pytest.raises(ConnectionError):
        conn = await PeerConnection.connect(seed.addr, seed.meta.info_hash, CLIENT_ID, timeout=STEP)
        await conn.receive(STEP)


async def test_connect_refuses_a_peer_answering_for_another_torrent(seed: Seed) -> None:
    async def answer_wrong(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(HANDSHAKE_SIZE)
        writer.write(encode_handshake(Handshake(b"\x01" * 20, SERVER_ID)))
        await writer.drain()
        await reader.read()

    async with fake_peer(answer_wrong) as port:
        with pytest.raises(ValueError, match="info_hash_mismatch"):
            await PeerConnection.connect((HOST, port), seed.meta.info_hash, CLIENT_ID, timeout=STEP)


async def test_metadata_requests_beyond_the_flood_limit_are_rejected(seed: Seed) -> None:
    conn = await PeerConnection.connect(seed.addr, seed.meta.info_hash, CLIENT_ID, timeout=STEP)
    try:
        await conn.send(Extended(0, encode_ext_handshake(ExtHandshake({UT_METADATA: OUR_METADATA_ID}))))
        while conn.ext_id(UT_METADATA) is None:
            await conn.receive(STEP)
        their_id = conn.ext_id(UT_METADATA)
        assert their_id is not None
        await conn.send(*[Extended(their_id, encode_metadata(MetadataRequest(0)))] * 12)
        answers: list[MetadataRequest | MetadataData | MetadataReject] = []
        while len(answers) < 12:
            msg = await conn.receive(STEP)
            if isinstance(msg, Extended) and msg.ext_id == OUR_METADATA_ID:
                answers.append(decode_metadata(msg.payload))
    finally:
        await conn.close()
    assert answers[:8] == [MetadataData(0, len(seed.meta.info), seed.meta.info)] * 8  # one piece: 4 x 1 + 4
    assert answers[8:] == [MetadataReject(0)] * 4
    assert seed.server.counters["metadata_served"] == 8


async def test_unreadable_content_closes_the_connection_with_a_warning(
    seed: Seed, tmp_path: Path, torrent_log: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "share" / "data.bin").unlink()
    conn = await unchoked_connection(seed)
    try:
        await conn.send(Request(0, 0, 16384))
        with pytest.raises(ConnectionError):
            while True:
                await conn.receive(STEP)
    finally:
        await conn.close()
    assert seed.server.counters["read_errors"] == 1
    warnings = [r.getMessage() for r in torrent_log.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "cannot read piece 0 of data.bin" in warnings[0]


async def test_close_drops_every_connection(seed: Seed) -> None:
    peer = await RawPeer.open(seed.addr)
    try:
        await peer.handshake(seed.meta.info_hash)
        await seed.server.close()
        assert await peer.closed_by_server()
        assert seed.server.active == 0
    finally:
        peer.close()


async def test_connection_timeouts() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()

    async with fake_peer(silent) as port:
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await PeerConnection.connect((HOST, port), b"\x01" * 20, CLIENT_ID, timeout=0.2)
        assert time.monotonic() - started < STEP


async def test_receive_times_out_on_a_quiet_peer(stack: AsyncExitStack, tmp_path: Path) -> None:
    seed = await start_seed(stack, tmp_path, have=set())
    conn = await PeerConnection.connect(seed.addr, seed.meta.info_hash, CLIENT_ID, timeout=STEP)
    try:
        assert isinstance(await conn.receive(STEP), Extended)  # its extension handshake, no bitfield
        assert conn.remote_ext is not None and conn.remote_ext.metadata_size == len(seed.meta.info)
        with pytest.raises(TimeoutError):
            await conn.receive(0.1)
    finally:
        await conn.close()


# --- hostile clients --------------------------------------------------------------------------------


def after_handshake(*msgs: bytes, interested: bool = False) -> Callable[[RawPeer, Seed], Awaitable[None]]:
    async def act(peer: RawPeer, seed: Seed) -> None:
        await peer.handshake(seed.meta.info_hash)
        if interested:
            await peer.send(encode(Interested()))
            await peer.next_of(Unchoke)
        await peer.send(b"".join(msgs))

    return act


def raw(data: bytes, *, eof: bool = False) -> Callable[[RawPeer, Seed], Awaitable[None]]:
    async def act(peer: RawPeer, seed: Seed) -> None:
        await peer.send(data)
        if eof:
            peer.writer.write_eof()

    return act


def wrong_info_hash() -> Callable[[RawPeer, Seed], Awaitable[None]]:
    async def act(peer: RawPeer, seed: Seed) -> None:
        await peer.send(encode_handshake(Handshake(b"\xee" * 20, CLIENT_ID)))

    return act


HOSTILE = {
    "http_instead_of_handshake": (raw(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + bytes(60)), "bad_handshake", "malformed"),
    "short_handshake_then_eof": (raw(b"\x13BitTorrent protocol" + bytes(10), eof=True), "bad_handshake", "after 30"),
    "wrong_info_hash": (wrong_info_hash(), "unknown_torrent", "eeeeeeee"),
    "oversized_message": (after_handshake(struct.pack(">I", 1 << 20)), "oversized", "1048576 bytes"),
    "huge_length_prefix": (after_handshake(b"\xff\xff\xff\xff"), "oversized", "oversized"),
    "bad_have_length": (after_handshake(b"\x00\x00\x00\x03\x04\x00\x00"), "bad_length", "have"),
    "request_beyond_piece": (after_handshake(encode(Request(0, 24576, 16384))), "bad_request", "beyond piece 0"),
    "request_beyond_file": (after_handshake(encode(Request(3, 0, 16384))), "bad_request", "beyond piece 3"),
    "request_beyond_torrent": (after_handshake(encode(Request(4, 0, 16384))), "bad_request", "beyond the torrent"),
    "request_too_large": (after_handshake(encode(Request(0, 0, 32768))), "request_too_large", "32768 bytes"),
    "request_empty": (after_handshake(encode(Request(0, 0, 0))), "request_too_large", "0 bytes"),
    "bad_bitfield": (after_handshake(encode(BitfieldMsg(b"\xff"))), "bad_bitfield", "spare bits"),
    "bad_have_index": (after_handshake(encode(Have(4))), "bad_have", "piece 4"),
    "unsolicited_piece": (after_handshake(encode(Piece(0, 0, b"x"))), "unsolicited_piece", "never asked"),
    "bad_ext_handshake": (after_handshake(encode(Extended(0, b"d1:mi1ee"))), "bad_extended", "'m'"),
    "metadata_request_without_ext_handshake": (
        after_handshake(encode(Extended(2, encode_metadata(MetadataRequest(0))))),
        "bad_extended",
        "without announcing",
    ),
    "bad_metadata_message": (after_handshake(encode(Extended(2, b"d8:msg_typei0ee"))), "bad_metadata", "piece"),
    "request_flood": (
        after_handshake(*(encode(Request(0, 0, 16384)) for _ in range(300)), interested=True),
        "queue_full",
        "more than 256",
    ),
}


@pytest.mark.parametrize("case", list(HOSTILE))
async def test_hostile_client_is_refused_and_counted(
    case: str, seed: Seed, torrent_log: pytest.LogCaptureFixture
) -> None:
    act, reason, text = HOSTILE[case]
    peer = await RawPeer.open(seed.addr)
    try:
        await act(peer, seed)
        assert await peer.closed_by_server()
    finally:
        peer.close()
    lines = refusals(torrent_log)
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"refused {HOST}:") and text in lines[0], lines[0]
    assert seed.server.counters[f"refused.{reason}"] == 1
    await assert_still_serves(seed)
    assert refusals(torrent_log) == lines


async def test_silent_handshake_times_out(stack: AsyncExitStack, tmp_path: Path, torrent_log: Any) -> None:
    seed = await start_seed(stack, tmp_path, handshake_timeout=0.2)
    peer = await RawPeer.open(seed.addr)
    try:
        await peer.send(b"\x13BitTorrent")
        assert await peer.closed_by_server()
    finally:
        peer.close()
    assert seed.server.counters["refused.handshake_timeout"] == 1
    assert any("no handshake within 0.2 s" in line for line in refusals(torrent_log))
    await assert_still_serves(seed)


async def test_idle_connection_is_closed(stack: AsyncExitStack, tmp_path: Path, torrent_log: Any) -> None:
    seed = await start_seed(stack, tmp_path, idle_timeout=0.3)
    peer = await RawPeer.open(seed.addr)
    try:
        await peer.handshake(seed.meta.info_hash)
        assert await peer.closed_by_server()
    finally:
        peer.close()
    assert seed.server.counters["idle_timeouts"] == 1
    assert any("idle for 0.3 s" in r.getMessage() for r in torrent_log.records)


async def test_connections_are_bounded(stack: AsyncExitStack, tmp_path: Path, torrent_log: Any) -> None:
    seed = await start_seed(stack, tmp_path, max_connections=2)
    first, second = await RawPeer.open(seed.addr), await RawPeer.open(seed.addr)
    try:
        await first.handshake(seed.meta.info_hash)
        await second.handshake(seed.meta.info_hash)
        third = await RawPeer.open(seed.addr)
        try:
            assert await third.closed_by_server()
        finally:
            third.close()
    finally:
        first.close()
        second.close()
    assert seed.server.counters["refused.too_many_connections"] == 1
    assert any("too many connections (2)" in line for line in refusals(torrent_log))
    async with asyncio.timeout(STEP):
        while seed.server.active:
            await asyncio.sleep(0.01)
    await assert_still_serves(seed)


async def test_choked_requests_are_ignored(seed: Seed) -> None:
    conn = await PeerConnection.connect(seed.addr, seed.meta.info_hash, CLIENT_ID, timeout=STEP)
    try:
        await conn.send(Request(0, 0, 16384), Interested())
        while not isinstance(msg := await conn.receive(STEP), Unchoke):
            assert not isinstance(msg, Piece | Choke)
        await conn.send(Request(0, 0, 100))
        msg = await conn.receive(STEP)
        assert msg == Piece(0, 0, seed.content[:100])
    finally:
        await conn.close()
    assert seed.server.counters["ignored.choked_request"] == 1
    assert seed.server.counters["blocks_served"] == 1


# --- libtorrent ---------------------------------------------------------------------------------------


LT_HOST = "127.0.0.71"


def lt_session(*, plain_tcp: bool = True) -> lt.session:
    """A libtorrent session on loopback that only talks to the peers it is given (no DHT, LSD, UPnP).

    `plain_tcp`: connect over TCP without encryption at once. libtorrent's defaults first try uTP (which
    we do not speak: ~4.5 s until it gives up), then an encrypted TCP handshake (refused by us), then
    plain TCP a second later; one test keeps the defaults to show that this path works too."""
    from bench.ltloopback import loopback_only_filter, loopback_settings

    mask = lt.alert.category_t.error_notification | lt.alert.category_t.status_notification
    settings = dict(cast(dict[str, Any], loopback_settings(LT_HOST, 0, int(mask), peers=True)))
    if not plain_tcp:  # back to libtorrent's defaults for these
        for name in ("enable_outgoing_utp", "enable_incoming_utp", "out_enc_policy", "in_enc_policy"):
            del settings[name]
    session = lt.session(cast("lt.settings_pack", settings))
    session.set_ip_filter(loopback_only_filter())
    return session


def wait_until_seeding(handle: Any, deadline: float) -> Any:
    while time.monotonic() < deadline:
        status = handle.status()
        if status.is_seeding:
            return status
        time.sleep(0.05)
    status = handle.status()
    raise AssertionError(f"libtorrent did not finish: state {status.state}, {status.progress:.0%}, {status.errc}")


async def libtorrent_download(
    params: Any, seed_addr: tuple[str, int], save: Path, *, plain_tcp: bool = True, seconds: float = 8.0
) -> Any:
    def run() -> Any:
        session = lt_session(plain_tcp=plain_tcp)
        try:
            params.save_path = str(save)
            handle = session.add_torrent(params)
            handle.connect_peer(seed_addr)
            return wait_until_seeding(handle, time.monotonic() + seconds)
        finally:
            del session

    return await asyncio.to_thread(run)


async def start_server_for(stack: AsyncExitStack, meta: Metainfo, root: Path) -> SeedServer:
    store = PieceStore(meta, root, writable=False)
    stack.callback(store.close)
    server = SeedServer(HOST, 0, peer_id=SERVER_ID)
    server.add(store)
    await server.start()
    stack.push_async_callback(server.close)
    return server


@pytest.mark.parametrize("plain_tcp", [True, False], ids=["plain_tcp", "libtorrent_defaults"])
async def test_libtorrent_downloads_from_a_torrent_file(
    stack: AsyncExitStack, tmp_path: Path, plain_tcp: bool, torrent_log: pytest.LogCaptureFixture
) -> None:
    share = tmp_path / "share"
    path = make_file(share, size=10 * PIECE_LENGTH + 1234, seed=7)
    meta = build_metainfo(path, piece_length=PIECE_LENGTH)
    server = await start_server_for(stack, meta, share)

    params = lt.add_torrent_params()
    params.ti = lt.torrent_info(cast(Any, lt.bdecode(torrent_file(meta))))
    await libtorrent_download(params, (HOST, server.port), tmp_path / "lt", plain_tcp=plain_tcp, seconds=9.0)
    assert (tmp_path / "lt" / "data.bin").read_bytes() == path.read_bytes()
    assert server.counters["bytes_served"] >= meta.total_length
    if plain_tcp:
        assert refusals(torrent_log) == []
    else:  # the encrypted attempt before the plain one
        assert all("malformed handshake" in line for line in refusals(torrent_log))


async def test_libtorrent_with_only_a_magnet_link_gets_metadata_and_file(
    stack: AsyncExitStack, tmp_path: Path, torrent_log: pytest.LogCaptureFixture
) -> None:
    share = tmp_path / "share"
    meta = build_metainfo(make_tree(share))
    server = await start_server_for(stack, meta, share)

    await libtorrent_download(lt.parse_magnet_uri(meta.magnet()), (HOST, server.port), tmp_path / "lt")
    assert server.counters["metadata_served"] >= 2
    assert refusals(torrent_log) == []
    for entry in meta.files:
        assert (tmp_path / "lt").joinpath(*entry.path).read_bytes() == share.joinpath(*entry.path).read_bytes()
