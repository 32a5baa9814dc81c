"""fetch() end to end on loopback: several kadnode seeders, metadata by BEP 9, a corrupt seeder banned, a
seeder that dies or stalls mid-transfer, resume after cancel, hostile metadata, the ways a fetch gives up,
and libtorrent as the seeder."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from kadnode.torrent.fetch import FetchError, FetchProgress, FetchResult, fetch
from kadnode.torrent.metainfo import FileEntry, Metainfo, build_metainfo, torrent_file
from kadnode.torrent.peerwire import (
    Bitfield,
    BitfieldMsg,
    Extended,
    ExtHandshake,
    Handshake,
    Unchoke,
    encode,
    encode_ext_handshake,
    encode_handshake,
)
from kadnode.torrent.pieces import PieceStore
from kadnode.torrent.server import SeedServer
from kadnode.types import Addr
from kadnode.wire.bencode import bencode

FETCHER_ID = b"-KN0001-fetcher00000"
PIECE = 16 * 1024


def seeder_id(n: int) -> bytes:
    return f"-KN0001-seeder{n:06d}".encode()


def random_file(path: Path, size: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(os.urandom(size))
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def finder(addrs: Sequence[Addr]) -> Callable[[], Awaitable[list[Addr]]]:
    """find_peers returning `addrs` (with a duplicate and a dead address, as a DHT answer may)."""
    dead = ("127.0.0.1", free_port())

    async def find() -> list[Addr]:
        return [*addrs, *addrs[:1], dead]

    return find


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


class CorruptStore(PieceStore):
    """Serves every block with its first byte flipped."""

    def read_block(self, index: int, begin: int, length: int) -> bytes:
        block = bytearray(super().read_block(index, begin, length))
        block[0] ^= 0xFF
        return bytes(block)


@asynccontextmanager
async def seeders(stores: Sequence[PieceStore], host: str = "127.0.0.1") -> AsyncIterator[list[SeedServer]]:
    servers = []
    try:
        for n, store in enumerate(stores):
            server = SeedServer(host, 0, peer_id=seeder_id(n))
            server.add(store)
            await server.start()
            servers.append(server)
        yield servers
    finally:
        for server in servers:
            await server.close()


def addrs_of(servers: Sequence[SeedServer]) -> list[Addr]:
    return [(s.host, s.port) for s in servers]


@pytest.fixture
def shared(tmp_path: Path) -> tuple[Path, Metainfo]:
    """A 1 MiB random file in pieces of 16 KiB (64 pieces), and its metadata."""
    path = random_file(tmp_path / "share" / "data.bin", 1024 * 1024 + 1234)
    return path, build_metainfo(path, piece_length=PIECE)


def store_of(path: Path, meta: Metainfo, cls: type[PieceStore] = PieceStore) -> PieceStore:
    return cls(meta, path.parent, writable=False)


async def test_fetches_from_several_seeders(tmp_path: Path, shared: tuple[Path, Metainfo]) -> None:
    path, meta = shared
    progress: list[FetchProgress] = []
    pieces: list[int] = []
    async with seeders([store_of(path, meta) for _ in range(3)]) as servers:
        result = await asyncio.wait_for(
            fetch(meta.info_hash, tmp_path / "out", find_peers=finder(addrs_of(servers)), peer_id=FETCHER_ID,
                  meta=meta, on_progress=progress.append, on_piece=pieces.append, request_pipeline=4),
            timeout=15,
        )
        served = [s.counters["blocks_served"] for s in servers]
    assert result.path == tmp_path / "out" / "data.bin"
    assert result.path.read_bytes() == path.read_bytes()
    assert result.downloaded == meta.total_length and result.reused == 0
    assert result.banned == () and result.meta == meta
    assert sorted(pieces) == list(range(meta.piece_count))
    assert result.peers_used == 3 and all(served), served
    # Every block came once, except endgame copies (at most a few pieces' worth).
    blocks = -(-meta.total_length // PIECE)
    assert blocks <= sum(served) <= blocks + 3 * 2 * 4
    final = progress[-1]
    assert (final.verified, final.pieces, final.bytes_done, final.total) == (
        meta.piece_count, meta.piece_count, meta.total_length, meta.total_length)


async def test_fetches_the_metadata_when_not_given(tmp_path: Path, shared: tuple[Path, Metainfo]) -> None:
    path, meta = shared
    async with seeders([store_of(path, meta) for _ in range(2)]) as servers:
        result = await asyncio.wait_for(
            fetch(meta.info_hash, tmp_path / "out", find_peers=finder(addrs_of(servers)), peer_id=FETCHER_ID),
            timeout=15,
        )
        served = sum(s.counters["metadata_served"] for s in servers)
    assert result.meta.info == meta.info and result.meta.info_hash == meta.info_hash
    assert sha256(result.path) == sha256(path)
    assert served >= 1


async def test_a_multi_file_torrent_lands_under_its_name(tmp_path: Path) -> None:
    share = tmp_path / "share" / "album"
    random_file(share / "a.bin", 40_000)
    random_file(share / "sub" / "b.bin", 70_001)
    (share / "sub" / "empty").write_bytes(b"")
    meta = build_metainfo(share, piece_length=PIECE)
    async with seeders([PieceStore(meta, share.parent, writable=False)]) as servers:
        result = await asyncio.wait_for(
            fetch(meta.info_hash, tmp_path / "out", find_peers=finder(addrs_of(servers)), peer_id=FETCHER_ID),
            timeout=15,
        )
    assert result.path == tmp_path / "out" / "album"
    assert (result.path / "a.bin").read_bytes() == (share / "a.bin").read_bytes()
    assert (result.path / "sub" / "b.bin").read_bytes() == (share / "sub" / "b.bin").read_bytes()
    assert (result.path / "sub" / "empty").read_bytes() == b""


async def test_a_corrupt_seeder_is_banned_and_the_file_is_still_right(
    tmp_path: Path, shared: tuple[Path, Metainfo], caplog: pytest.LogCaptureFixture
) -> None:
    path, meta = shared
    caplog.set_level(logging.INFO, logger="kadnode.torrent")
    stores = [store_of(path, meta, CorruptStore), store_of(path, meta), store_of(path, meta)]
    async with seeders(stores) as servers:
        bad = addrs_of(servers)[0]
        result = await asyncio.wait_for(
            fetch(meta.info_hash, tmp_path / "out", find_peers=finder(addrs_of(servers)), peer_id=FETCHER_ID,
                  meta=meta, request_pipeline=2),
            timeout=15,
        )
        # Banned means banned: the corrupt seeder saw exactly one connection.
        assert servers[0].counters["connections"] == 1
    assert result.banned == (bad,)
    assert result.path.read_bytes() == path.read_bytes()
    bans = [r.getMessage() for r in caplog.records if r.getMessage().startswith("banned")]
    assert len(bans) == 1
    assert bans[0].startswith(f"banned {bad[0]}:{bad[1]}: piece ") and bans[0].endswith("failed its SHA-1 check")


async def test_a_seeder_closed_mid_transfer_is_replaced_by_the_others(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = random_file(tmp_path / "share" / "big.bin", 4 * 1024 * 1024)
    meta = build_metainfo(path, piece_length=PIECE)
    caplog.set_level(logging.INFO, logger="kadnode.torrent")
    pieces: list[int] = []
    closed_at: list[int] = []
    async with seeders([store_of(path, meta) for _ in range(3)]) as servers:
        victim = servers[0]
        addr = f"{victim.host}:{victim.port}"
        closing: list[asyncio.Task[None]] = []

        def on_piece(index: int) -> None:
            pieces.append(index)
            if len(pieces) >= 10 and victim.counters["blocks_served"] and not closed_at:
                closed_at.append(len(pieces))
                closing.append(asyncio.create_task(victim.close()))

        result = await asyncio.wait_for(
            fetch(meta.info_hash, tmp_path / "out", find_peers=finder(addrs_of(servers)), peer_id=FETCHER_ID,
                  meta=meta, on_piece=on_piece, request_pipeline=2),
            timeout=15,
        )
        await asyncio.gather(*closing)
    assert closed_at and closed_at[0] < meta.piece_count // 2, "the victim was closed late, or never"
    assert sha256(result.path) == sha256(path)
    assert sorted(pieces) == list(range(meta.piece_count))
    assert any(r.getMessage().startswith(f"dropped {addr}:") for r in caplog.records)
    assert result.banned == ()


async def test_a_stalling_peer_loses_its_pieces_to_the_others(
    tmp_path: Path, shared: tuple[Path, Metainfo], caplog: pytest.LogCaptureFixture
) -> None:
    """A peer that has everything, unchokes, accepts requests and never answers: after stall_timeout it
    is dropped (not banned) and its pieces go to the real seeder, which find_peers names only once the
    staller is gone (otherwise endgame copies would route around the staller before it counts as stalled)."""
    path, meta = shared
    caplog.set_level(logging.INFO, logger="kadnode.torrent")

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(68)
        writer.write(encode_handshake(Handshake(meta.info_hash, seeder_id(99))))
        writer.write(encode(BitfieldMsg(Bitfield.full(meta.piece_count).to_bytes())))
        writer.write(encode(Unchoke()))
        while await reader.read(65536):
            pass
        writer.close()

    staller = await asyncio.start_server(silent, "127.0.0.1", 0)
    stall_addr: Addr = ("127.0.0.1", staller.sockets[0].getsockname()[1])
    try:
        async with seeders([store_of(path, meta)]) as servers:
            asked: list[int] = []

            async def find() -> list[Addr]:
                asked.append(1)
                return [stall_addr] if len(asked) == 1 else [stall_addr, *addrs_of(servers)]

            started = time.monotonic()
            result = await asyncio.wait_for(
                fetch(meta.info_hash, tmp_path / "out", find_peers=find, peer_id=FETCHER_ID, meta=meta,
                      stall_timeout=0.5),
                timeout=15,
            )
            assert time.monotonic() - started < 5
    finally:
        staller.close()
    assert result.path.read_bytes() == path.read_bytes()
    assert result.banned == () and result.peers_used == 1
    dropped = [r.getMessage() for r in caplog.records if r.getMessage().startswith("dropped 127.0.0.1:")]
    assert any(m.startswith(f"dropped 127.0.0.1:{stall_addr[1]}: no block for 0.5 s") for m in dropped), dropped


@pytest.mark.parametrize(
    ("behaviour", "logged"),
    [
        ("bitfield", "protocol error (bad_bitfield"),
        ("have", "it announced piece 70 of a torrent with 65 pieces"),
        ("oversized", "protocol error (oversized"),
        ("short_block", "bad block (block 0 of piece"),
    ],
)
async def test_a_misbehaving_peer_is_dropped_and_the_fetch_goes_on(
    tmp_path: Path, shared: tuple[Path, Metainfo], caplog: pytest.LogCaptureFixture, behaviour: str, logged: str
) -> None:
    path, meta = shared
    caplog.set_level(logging.INFO, logger="kadnode.torrent")

    async def hostile(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        from kadnode.torrent.peerwire import Have, MessageReader, Piece, Request

        await reader.readexactly(68)
        writer.write(encode_handshake(Handshake(meta.info_hash, seeder_id(13), extensions=False)))
        full = Bitfield.full(meta.piece_count).to_bytes()
        if behaviour == "bitfield":
            writer.write(encode(BitfieldMsg(full + b"\xff")))
        elif behaviour == "have":
            writer.write(encode(Have(70)))
        elif behaviour == "oversized":
            writer.write(b"\xff\xff\xff\xff\x07")
        else:
            writer.write(encode(BitfieldMsg(full)) + encode(Unchoke()))
        messages = MessageReader()
        while data := await reader.read(65536):
            for msg in messages.feed(data):
                if isinstance(msg, Request):
                    writer.write(encode(Piece(msg.index, msg.begin, bytes(msg.length - 1))))
        writer.close()

    server = await asyncio.start_server(hostile, "127.0.0.1", 0)
    bad: Addr = ("127.0.0.1", server.sockets[0].getsockname()[1])
    try:
        async with seeders([store_of(path, meta)]) as servers:
            asked: list[int] = []

            async def find() -> list[Addr]:
                asked.append(1)  # the hostile peer alone first: it is certainly connected and heard
                return [bad] if len(asked) == 1 else [bad, *addrs_of(servers)]

            result = await asyncio.wait_for(
                fetch(meta.info_hash, tmp_path / "out", find_peers=find, peer_id=FETCHER_ID, meta=meta), timeout=15
            )
    finally:
        server.close()
    assert result.path.read_bytes() == path.read_bytes()
    assert result.banned == ()
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith(f"dropped 127.0.0.1:{bad[1]}:")]
    assert lines and logged in lines[0], lines


async def test_endgame_routes_around_a_peer_sitting_on_its_requests(
    tmp_path: Path, shared: tuple[Path, Metainfo]
) -> None:
    """A peer that accepts requests and never answers, next to a real seeder, with a long stall timeout:
    endgame copies of its pieces go to the seeder, the fetch ends long before the stall timeout, and the
    silent peer is sent a Cancel for each request it still held."""
    path, meta = shared
    requests: list[tuple[int, int]] = []
    cancels: list[tuple[int, int]] = []

    async def sitter(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        from kadnode.torrent.peerwire import Cancel, MessageReader, Request

        await reader.readexactly(68)
        writer.write(encode_handshake(Handshake(meta.info_hash, seeder_id(42), extensions=False)))
        writer.write(encode(BitfieldMsg(Bitfield.full(meta.piece_count).to_bytes())) + encode(Unchoke()))
        messages = MessageReader()
        while data := await reader.read(65536):
            for msg in messages.feed(data):
                if isinstance(msg, Request):
                    requests.append((msg.index, msg.begin))
                elif isinstance(msg, Cancel):
                    cancels.append((msg.index, msg.begin))
        writer.close()

    server = await asyncio.start_server(sitter, "127.0.0.1", 0)
    sitter_addr: Addr = ("127.0.0.1", server.sockets[0].getsockname()[1])
    try:
        async with seeders([store_of(path, meta)]) as servers:
            asked: list[int] = []

            async def find() -> list[Addr]:
                asked.append(1)
                return [sitter_addr, *addrs_of(servers)]

            started = time.monotonic()
            result = await asyncio.wait_for(
                fetch(meta.info_hash, tmp_path / "out", find_peers=find, peer_id=FETCHER_ID, meta=meta,
                      stall_timeout=30, request_pipeline=4),
                timeout=15,
            )
            assert time.monotonic() - started < 5
            await asyncio.sleep(0.1)  # let the cancels arrive
    finally:
        server.close()
    assert result.path.read_bytes() == path.read_bytes()
    assert result.peers_used == 1 and result.banned == ()
    assert requests, "the silent peer was never asked for anything"
    assert sorted(cancels) == sorted(requests)


async def test_a_cancelled_fetch_resumes_from_its_verified_pieces(tmp_path: Path) -> None:
    path = random_file(tmp_path / "share" / "data.bin", 2 * 1024 * 1024 + 99)
    meta = build_metainfo(path, piece_length=PIECE)
    out = tmp_path / "out"
    first: list[int] = []
    second: list[int] = []
    async with seeders([store_of(path, meta) for _ in range(2)]) as servers:
        find = finder(addrs_of(servers))
        running: list[asyncio.Task[FetchResult]] = []

        def stop_after_some(index: int) -> None:
            first.append(index)
            if len(first) == 20:
                running[0].cancel()

        running.append(asyncio.create_task(
            fetch(meta.info_hash, out, find_peers=find, peer_id=FETCHER_ID, on_piece=stop_after_some,
                  request_pipeline=2)
        ))
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(running[0], timeout=15)
        assert 20 <= len(first) < meta.piece_count
        assert len(set(first)) == len(first)
        # Everything reported is on disk, verified; a write already running in its thread when the
        # cancel came may have added a piece that was never reported.
        on_disk = PieceStore(meta, out, writable=False).verify()
        assert set(first) <= on_disk and len(on_disk) < meta.piece_count

        result = await asyncio.wait_for(
            fetch(meta.info_hash, out, find_peers=find, peer_id=FETCHER_ID, on_piece=second.append), timeout=15
        )
    assert result.reused == len(on_disk)
    assert not on_disk & set(second)
    assert sorted([*on_disk, *second]) == list(range(meta.piece_count))
    assert result.downloaded == meta.total_length - sum(meta.piece_size(i) for i in on_disk)
    assert result.path.read_bytes() == path.read_bytes()


async def test_a_complete_download_needs_no_peer(tmp_path: Path, shared: tuple[Path, Metainfo]) -> None:
    path, meta = shared
    out = tmp_path / "out"
    out.mkdir()
    (out / "data.bin").write_bytes(path.read_bytes())
    asked: list[int] = []

    async def find() -> list[Addr]:
        asked.append(1)
        return []

    result = await fetch(meta.info_hash, out, find_peers=find, peer_id=FETCHER_ID, meta=meta, timeout=1)
    assert result.reused == meta.piece_count and result.downloaded == 0 and asked == []


async def test_hostile_metadata_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    """The info dict behind the info-hash names its file "../evil": the fetch refuses it before
    creating anything."""
    content = os.urandom(40_000)
    pieces = b"".join(hashlib.sha1(content[i : i + PIECE]).digest() for i in range(0, len(content), PIECE))
    info = bencode({"name": "innocent", "piece length": PIECE, "pieces": pieces,
                    "files": [{"length": len(content), "path": ["..", "evil"]}]})
    info_hash = hashlib.sha1(info).digest()
    share = tmp_path / "share"
    random_file(share / "innocent", len(content))
    # What the seeder serves is the hostile info dict; its own store only needs a harmless layout.
    hashes = tuple(pieces[i : i + 20] for i in range(0, len(pieces), 20))
    disguised = Metainfo(info, info_hash, "innocent", PIECE, hashes, (FileEntry(("innocent",), len(content), 0),),
                         len(content))
    out = tmp_path / "deep" / "out"
    async with seeders([PieceStore(disguised, share, writable=False)]) as servers:
        with pytest.raises(FetchError) as caught:
            await asyncio.wait_for(
                fetch(info_hash, out, find_peers=finder(addrs_of(servers)), peer_id=FETCHER_ID, timeout=10),
                timeout=15,
            )
    assert caught.value.reason == "bad_metadata"
    assert "unsafe_path" in str(caught.value) and "nothing was written" in str(caught.value)
    assert list(out.iterdir()) == []
    assert not (tmp_path / "deep" / "evil").exists() and not (tmp_path / "deep" / "innocent").exists()


async def test_no_peers_gives_up_after_the_timeout(tmp_path: Path) -> None:
    calls: list[float] = []

    async def nobody() -> list[Addr]:
        calls.append(time.monotonic())
        return []

    started = time.monotonic()
    with pytest.raises(FetchError, match="no peers found") as caught:
        await fetch(b"\x01" * 20, tmp_path / "out", find_peers=nobody, peer_id=FETCHER_ID, timeout=2.5)
    assert caught.value.reason == "no_peers"
    assert 2.5 <= time.monotonic() - started < 4
    # Asked again while starving (1 s, then 2 s later), not in a busy loop.
    assert 2 <= len(calls) <= 3


async def test_dead_addresses_give_up_with_their_own_message(tmp_path: Path) -> None:
    dead = [("127.0.0.1", free_port()), ("127.0.0.1", free_port())]

    async def find() -> list[Addr]:
        return list(dead)

    with pytest.raises(FetchError, match="none accepted a connection") as caught:
        await fetch(b"\x02" * 20, tmp_path / "out", find_peers=find, peer_id=FETCHER_ID, timeout=1.5)
    assert caught.value.reason == "unreachable"


async def test_peers_without_metadata_give_up_with_their_own_message(tmp_path: Path) -> None:
    """A peer that speaks BEP 3 only (no extension bit): it can never send the metadata."""
    info_hash = b"\x03" * 20

    async def plain(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(68)
        writer.write(encode_handshake(Handshake(info_hash, seeder_id(7), extensions=False)))
        while await reader.read(65536):
            pass
        writer.close()

    server = await asyncio.start_server(plain, "127.0.0.1", 0)
    addr: Addr = ("127.0.0.1", server.sockets[0].getsockname()[1])

    async def find() -> list[Addr]:
        return [addr]

    try:
        with pytest.raises(FetchError, match="none sent the metadata") as caught:
            await fetch(info_hash, tmp_path / "out", find_peers=find, peer_id=FETCHER_ID, timeout=1.5)
    finally:
        server.close()
    assert caught.value.reason == "no_metadata"


async def test_metadata_that_does_not_match_the_hash_bans_its_sender(
    tmp_path: Path, shared: tuple[Path, Metainfo]
) -> None:
    """A peer announcing ut_metadata whose info dict hashes to something else is banned; the real seeder
    still provides it."""
    path, meta = shared
    liar_info = meta.info.replace(b"data.bin", b"data.bad")

    async def liar(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        from kadnode.torrent.peerwire import (
            MessageReader,
            MetadataData,
            decode_ext_handshake,
            decode_metadata,
            encode_metadata,
        )

        await reader.readexactly(68)
        writer.write(encode_handshake(Handshake(meta.info_hash, seeder_id(66))))
        ext = ExtHandshake({"ut_metadata": 5}, metadata_size=len(liar_info))
        writer.write(encode(Extended(0, encode_ext_handshake(ext))))
        messages = MessageReader()
        their_id = None
        while data := await reader.read(65536):
            for msg in messages.feed(data):
                if isinstance(msg, Extended) and msg.ext_id == 0:
                    their_id = decode_ext_handshake(msg.payload).extensions["ut_metadata"]
                elif isinstance(msg, Extended) and msg.ext_id == 5 and their_id is not None:
                    piece = decode_metadata(msg.payload).piece
                    chunk = liar_info[piece * PIECE : (piece + 1) * PIECE]
                    writer.write(encode(Extended(their_id, encode_metadata(MetadataData(piece, len(liar_info),
                                                                                            chunk)))))
        writer.close()

    server = await asyncio.start_server(liar, "127.0.0.1", 0)
    liar_addr: Addr = ("127.0.0.1", server.sockets[0].getsockname()[1])
    try:
        async with seeders([store_of(path, meta)]) as servers:
            seeder = addrs_of(servers)[0]

            asked: list[int] = []

            async def find() -> list[Addr]:
                # The liar alone first, so that it is the one to send the metadata.
                asked.append(1)
                return [liar_addr] if len(asked) == 1 else [liar_addr, seeder]

            result = await asyncio.wait_for(
                fetch(meta.info_hash, tmp_path / "out", find_peers=find, peer_id=FETCHER_ID), timeout=15
            )
    finally:
        server.close()
    assert result.banned == (liar_addr,)
    assert result.meta.info == meta.info
    assert result.path.read_bytes() == path.read_bytes()


async def test_an_unwritable_output_fails_before_any_download(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_bytes(b"x")
    asked: list[int] = []

    async def find() -> list[Addr]:
        asked.append(1)
        return []

    with pytest.raises(FetchError, match="cannot write to") as caught:
        await fetch(b"\x04" * 20, blocker / "out", find_peers=find, peer_id=FETCHER_ID, timeout=5)
    assert caught.value.reason == "disk" and "-o DIR" in str(caught.value)
    assert asked == []


async def test_a_write_failure_stops_the_fetch_with_advice(tmp_path: Path, shared: tuple[Path, Metainfo]) -> None:
    """A directory where the file should go: nothing verifies, the first write fails, the fetch stops."""
    path, meta = shared
    out = tmp_path / "out"
    (out / "data.bin").mkdir(parents=True)
    async with seeders([store_of(path, meta)]) as servers:
        with pytest.raises(FetchError, match="cannot write piece") as caught:
            await asyncio.wait_for(
                fetch(meta.info_hash, out, find_peers=finder(addrs_of(servers)), peer_id=FETCHER_ID, meta=meta),
                timeout=15,
            )
    assert caught.value.reason == "disk" and "move it out of the way" in str(caught.value)
    assert (out / "data.bin").is_dir()


async def test_a_find_peers_that_fails_is_retried(tmp_path: Path, shared: tuple[Path, Metainfo]) -> None:
    path, meta = shared
    calls: list[int] = []
    async with seeders([store_of(path, meta)]) as servers:

        async def flaky() -> list[Addr]:
            calls.append(1)
            if len(calls) == 1:
                raise OSError("DHT not ready")
            return [*addrs_of(servers), ("not an address", -1)]

        result: FetchResult = await asyncio.wait_for(
            fetch(meta.info_hash, tmp_path / "out", find_peers=flaky, peer_id=FETCHER_ID, meta=meta), timeout=15
        )
    assert len(calls) >= 2
    assert result.path.read_bytes() == path.read_bytes()


# --- libtorrent seeds, kadnode fetches ----------------------------------------------------------------

LT_HOST = "127.0.0.81"


@pytest.fixture
def lt_seed(tmp_path: Path) -> Iterator[tuple[Path, Metainfo, Addr]]:
    """libtorrent 2.1 seeding a 3 MB file on LT_HOST (no DHT: the fetch is handed its endpoint)."""
    lt = pytest.importorskip("libtorrent")
    from bench.ltloopback import loopback_only_filter, loopback_settings

    path = random_file(tmp_path / "lt-share" / "from-libtorrent.bin", 3_000_000 + 17)
    meta = build_metainfo(path)
    mask = lt.alert.category_t.status_notification | lt.alert.category_t.error_notification
    session = lt.session(loopback_settings(LT_HOST, 0, int(mask), peers=True))
    session.set_ip_filter(loopback_only_filter())
    params = lt.add_torrent_params()
    params.ti = lt.torrent_info(torrent_file(meta))
    params.save_path = str(path.parent)
    params.flags |= lt.torrent_flags.seed_mode
    handle = session.add_torrent(params)
    # libtorrent closes connections for a torrent until its auto-manager resumes it (~0.5 s).
    deadline = time.monotonic() + 10
    while handle.status().flags & lt.torrent_flags.paused and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not handle.status().flags & lt.torrent_flags.paused, "libtorrent never started the torrent"
    yield path, meta, (LT_HOST, session.listen_port())
    session.pause()
    del session


@pytest.mark.interop
async def test_fetches_what_libtorrent_seeds(tmp_path: Path, lt_seed: tuple[Path, Metainfo, Addr]) -> None:
    path, meta, endpoint = lt_seed

    async def find() -> list[Addr]:
        return [endpoint]

    result = await asyncio.wait_for(
        fetch(meta.info_hash, tmp_path / "out", find_peers=find, peer_id=FETCHER_ID, timeout=10), timeout=15
    )
    assert result.meta.info == meta.info  # the metadata came from libtorrent by BEP 9
    assert result.peers_used == 1 and result.banned == ()
    assert sha256(result.path) == sha256(path)
