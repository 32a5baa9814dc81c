"""The daemon's shares (kadnode/runtime/shares.py): made, served, kept across restarts without re-hashing
unchanged content, re-verified when it changed, and removed; and their control commands."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from kadnode.runtime import shares as shares_module
from kadnode.runtime.control import handle_request
from kadnode.runtime.node import Node
from kadnode.runtime.shares import ShareError, ShareService
from kadnode.torrent.metainfo import build_metainfo, torrent_file
from kadnode.torrent.server import SeedServer

HOST = "127.0.0.1"
PIECE = 16 * 1024


@asynccontextmanager
async def service(data_dir: Path) -> AsyncIterator[ShareService]:
    node = Node(HOST, 0, data_dir=data_dir)
    await node.start()
    server = SeedServer(HOST, 0, peer_id=b"-KN0100-testtesttest")
    await server.start()
    shares = ShareService(node, server)
    try:
        await shares.restore()
        yield shares
    finally:
        await shares.close()
        await server.close()
        await node.stop()


def content(tmp_path: Path, size: int = 5 * PIECE + 100) -> Path:
    path = tmp_path / "content" / "report.bin"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(os.urandom(size))
    return path


def counting_verify(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    real: Callable[..., Any] = shares_module._verify

    def verify(meta: Any, root: Path) -> Any:
        calls.append(meta.name)
        return real(meta, root)

    monkeypatch.setattr(shares_module, "_verify", verify)
    return calls


async def test_a_share_is_served_and_listed(tmp_path: Path) -> None:
    path = content(tmp_path)
    async with service(tmp_path / "data") as shares:
        share, stored = await shares.share(path)
        assert stored == 0  # a lone node: nobody took the announce, and that is not an error
        meta = build_metainfo(path)
        assert share.meta.info_hash == meta.info_hash and share.have == frozenset(range(meta.piece_count))
        assert shares.server.torrents == [meta.info_hash]
        (row,) = shares.shares()
        assert row["info_hash"] == meta.info_hash.hex() and row["verified"] == row["pieces"] == meta.piece_count
        assert row["magnet"].startswith(f"magnet:?xt=urn:btih:{meta.info_hash.hex()}")
        # the node keeps announcing it (a kept announce, with the server's port)
        assert (meta.info_hash, shares.server.port) in list(shares.node.core.storage.own_announces())


async def test_a_restart_serves_unchanged_shares_without_hashing_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = content(tmp_path)
    async with service(tmp_path / "data") as shares:
        share, _ = await shares.share(path)
    calls = counting_verify(monkeypatch)
    async with service(tmp_path / "data") as shares:
        assert shares.server.torrents == [share.meta.info_hash]
        assert [row["verified"] for row in shares.shares()] == [share.meta.piece_count]
    assert calls == []


async def test_changed_content_is_verified_again_and_bad_pieces_are_not_served(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = content(tmp_path)
    async with service(tmp_path / "data") as shares:
        share, _ = await shares.share(path)
    with path.open("r+b") as fh:  # piece 2 damaged
        fh.seek(2 * PIECE + 7)
        fh.write(b"\xff\x00\xff")
    calls = counting_verify(monkeypatch)
    async with service(tmp_path / "data") as shares:
        assert calls == ["report.bin"]
        restored = shares.get(share.meta.info_hash)
        assert restored is not None and restored.have == frozenset(range(share.meta.piece_count)) - {2}
    calls.clear()
    async with service(tmp_path / "data") as shares:  # the new state was saved: no second re-hash
        assert calls == []
        restored = shares.get(share.meta.info_hash)
        assert restored is not None and 2 not in restored.have


async def test_missing_content_is_kept_but_not_served_until_unshared(tmp_path: Path) -> None:
    path = content(tmp_path)
    async with service(tmp_path / "data") as shares:
        share, _ = await shares.share(path)
    path.unlink()
    info_hash = share.meta.info_hash
    async with service(tmp_path / "data") as shares:
        assert shares.server.torrents == []
        assert shares.shares() == [{"info_hash": info_hash.hex(), "path": str(path), "missing": True,
                                    "added": share.added}]
        assert await shares.unshare(info_hash)
    async with service(tmp_path / "data") as shares:
        assert shares.shares() == []


async def test_unshare_stops_serving_and_announcing_for_good(tmp_path: Path) -> None:
    path = content(tmp_path)
    async with service(tmp_path / "data") as shares:
        share, _ = await shares.share(path)
        assert await shares.unshare(share.meta.info_hash)
        assert not await shares.unshare(share.meta.info_hash)
        assert shares.server.torrents == [] and shares.shares() == []
        assert list(shares.node.core.storage.own_announces()) == []
    async with service(tmp_path / "data") as shares:
        assert shares.shares() == []


async def test_sharing_against_a_given_torrent_checks_name_and_pieces(tmp_path: Path) -> None:
    path = content(tmp_path)
    torrent = torrent_file(build_metainfo(path))
    other = tmp_path / "elsewhere" / "renamed.bin"
    other.parent.mkdir()
    other.write_bytes(path.read_bytes())
    unrelated = tmp_path / "elsewhere" / "report.bin"
    unrelated.write_bytes(os.urandom(path.stat().st_size))
    async with service(tmp_path / "data") as shares:
        with pytest.raises(ShareError, match=r"named 'report\.bin'"):
            await shares.share(other, torrent)
        with pytest.raises(ShareError, match="no piece verified"):
            await shares.share(unrelated, torrent)
        with pytest.raises(ShareError, match="absolute"):
            await shares.share(Path("report.bin"), torrent)
        share, _ = await shares.share(path, torrent)
        assert len(share.have) == share.meta.piece_count


async def request(shares: ShareService, cmd: str, **args: Any) -> dict[str, Any]:
    return await handle_request(shares.node, json.dumps({"cmd": cmd, "args": args}).encode(), shares)


async def test_control_commands_check_their_arguments(tmp_path: Path) -> None:
    path = content(tmp_path)
    async with service(tmp_path / "data") as shares:
        reply = await request(shares, "share", path=str(path))
        assert reply["ok"] and reply["result"]["port"] == shares.server.port
        info_hash = reply["result"]["info_hash"]
        listed = await request(shares, "shares")
        assert [row["info_hash"] for row in listed["result"]["shares"]] == [info_hash]
        located = await request(shares, "locate", info_hash=info_hash)
        assert located["ok"] and located["result"]["shared_here"] is True
        for cmd, args, message in [
            ("share", {"path": "relative/file"}, "absolute"),
            ("share", {"path": str(tmp_path / "nope")}, "no such file"),
            ("share", {}, "missing argument"),
            ("share", {"path": str(path), "torrent": str(tmp_path / "none.torrent")}, "cannot read"),
            ("unshare", {"info_hash": "xyz"}, "40 hex characters"),
            ("locate", {"info_hash": info_hash, "check": "yes"}, "check must be true or false"),
            ("locate", {"info_hash": info_hash, "extra": 1}, "unknown argument"),
        ]:
            reply = await request(shares, cmd, **args)
            assert not reply["ok"] and message in reply["error"], (cmd, reply)
        reply = await request(shares, "unshare", info_hash=info_hash)
        assert reply["result"]["was_shared"] is True


async def test_file_commands_need_a_daemon_that_shares(tmp_path: Path) -> None:
    async with service(tmp_path / "data") as shares:
        reply = await handle_request(shares.node, b'{"cmd": "shares"}')
        assert not reply["ok"] and "does not share files" in reply["error"]
