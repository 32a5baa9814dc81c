"""The daemon's shared files: what `kadnode share` hands it, served over TCP and announced on the DHT.

A share is a .torrent (built here from the file, or given) plus where the content is. Both go to the
state database, so a restart serves and re-announces every share without re-hashing content that did
not change since it was last verified: each file's (size, mtime_ns) is kept with the share, and only a
share whose files changed is verified again (its changed pieces are then not served).

Announces use the node's own `keep` announces: re-announced every `announce_interval` (15 min, well
within `peer_ttl`), and after each restart with the port the seed server has now.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kadnode.runtime.node import Node
from kadnode.runtime.state import SavedShare
from kadnode.torrent.metainfo import Metainfo, MetainfoError, build_metainfo, parse_torrent_file, torrent_file
from kadnode.torrent.pieces import PieceStore
from kadnode.torrent.server import SeedServer

log = logging.getLogger("kadnode.shares")


class ShareError(ValueError):
    """A share cannot be made; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class Share:
    meta: Metainfo
    path: Path
    """The shared file or directory; its parent is the torrent's root."""
    have: frozenset[int]
    """Pieces verified on disk (all of them, unless the content changed or was given partial)."""
    added: float
    """Wall-clock seconds."""

    def to_json(self) -> dict[str, Any]:
        meta = self.meta
        return {
            "info_hash": meta.info_hash.hex(),
            "name": meta.name,
            "path": str(self.path),
            "size": meta.total_length,
            "files": sum(1 for f in meta.files if not f.pad),
            "pieces": meta.piece_count,
            "piece_length": meta.piece_length,
            "verified": len(self.have),
            "magnet": meta.magnet(),
            "added": self.added,
        }


def file_stamp(meta: Metainfo, root: Path) -> list[list[int]]:
    """(size, mtime_ns) of each content file, [-1, -1] for one that is missing."""
    stamp: list[list[int]] = []
    for entry in meta.files:
        if entry.pad:
            continue
        try:
            st = root.joinpath(*entry.path).stat()
        except OSError:
            stamp.append([-1, -1])
        else:
            stamp.append([st.st_size, st.st_mtime_ns])
    return stamp


def _verify(meta: Metainfo, root: Path) -> frozenset[int]:
    with PieceStore(meta, root, writable=False) as store:
        return frozenset(store.verify())


class ShareService:
    """The daemon's shares: a `SeedServer` serves them, the node announces them, the state keeps them."""

    def __init__(self, node: Node, server: SeedServer) -> None:
        self.node = node
        self.server = server
        self._shares: dict[bytes, Share] = {}
        self._missing: dict[bytes, SavedShare] = {}
        """Saved shares whose content is gone: kept (the files may come back), not served."""
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()

    # --- commands ---------------------------------------------------------------------------------

    async def share(self, path: Path, torrent: bytes | None = None) -> tuple[Share, int]:
        """Share `path` (absolute): build its metadata, or check it against `torrent`, then serve and
        announce it. Returns the share and how many nodes took the announce (0 is fine: the announce is
        kept and repeated)."""
        if not path.is_absolute():
            raise ShareError(f"{path}: give an absolute path")
        if not path.exists():
            raise ShareError(f"{path}: no such file or directory")
        async with self._lock:
            if torrent is None:
                log.info("hashing %s", path)
                try:
                    meta = await asyncio.to_thread(build_metainfo, path)
                except MetainfoError as exc:
                    raise ShareError(f"cannot share {path}: {exc}") from None
                have = frozenset(range(meta.piece_count))
                raw = torrent_file(meta)
            else:
                try:
                    meta = parse_torrent_file(torrent)
                except MetainfoError as exc:
                    raise ShareError(f"the torrent is not usable: {exc}") from None
                if meta.name != path.name:
                    raise ShareError(f"the torrent's content is named {meta.name!r}, not {path.name!r}: "
                                     f"share the file or directory named {meta.name!r}")
                have = await asyncio.to_thread(_verify, meta, path.parent)
                if not have:
                    raise ShareError(f"{path} does not match the torrent: no piece verified")
                raw = torrent
            share = Share(meta, path, have, time.time())
            self._serve(share)
            self._save(share, raw)
        result = await self.node.announce(meta.info_hash, self.server.port, keep=True)
        log.info("sharing %s as %s (%d of %d pieces); announced to %d nodes", path, meta.info_hash.hex(),
                 len(have), meta.piece_count, result.stored_at)
        return share, result.stored_at

    async def unshare(self, info_hash: bytes) -> bool:
        """Stop serving and announcing; False if it was not shared."""
        async with self._lock:
            known = self._shares.pop(info_hash, None) is not None
            known |= self._missing.pop(info_hash, None) is not None
            self.server.remove(info_hash)
            self.node.unannounce(info_hash)
            state = self.node.state
            if state is not None:
                known |= state.remove_share(info_hash)
        if known:
            log.info("stopped sharing %s", info_hash.hex())
        return known

    def shares(self) -> list[dict[str, Any]]:
        rows = [share.to_json() for share in self._shares.values()]
        for saved in self._missing.values():
            rows.append({"info_hash": saved.info_hash.hex(), "path": saved.path, "missing": True,
                         "added": saved.added})
        return sorted(rows, key=lambda row: row["added"])

    def get(self, info_hash: bytes) -> Share | None:
        return self._shares.get(info_hash)

    # --- restart ----------------------------------------------------------------------------------

    async def restore(self) -> None:
        """Serve the saved shares again: files unchanged since they were verified are trusted, others
        are verified again. Each is announced anew with the server's current port."""
        state = self.node.state
        if state is None:
            return
        for saved in state.load_shares():
            try:
                meta = parse_torrent_file(saved.torrent)
            except MetainfoError as exc:
                log.warning("saved share %s is unreadable (%s); `kadnode unshare %s` forgets it",
                            saved.info_hash.hex(), exc, saved.info_hash.hex())
                continue
            path = Path(saved.path)
            if not path.exists():
                log.warning("shared %s is gone; not serving %s until it is back (`kadnode unshare %s` "
                            "forgets it)", path, meta.info_hash.hex(), meta.info_hash.hex())
                self._missing[saved.info_hash] = saved
                continue
            have = self._trusted(saved, meta, path)
            if have is None:
                log.info("%s changed since it was shared: verifying it again", path)
                have = await asyncio.to_thread(_verify, meta, path.parent)
            share = Share(meta, path, have, saved.added)
            self._serve(share)
            self._save(share, saved.torrent)
            self._spawn(self._announce(meta.info_hash))
        if self._shares:
            log.info("serving %d shared torrents from the last run", len(self._shares))

    @staticmethod
    def _trusted(saved: SavedShare, meta: Metainfo, path: Path) -> frozenset[int] | None:
        """The verified pieces saved with the share, if no file changed since; else None."""
        try:
            record = json.loads(saved.stamp)
            files, missing = record["files"], record["missing"]
        except (ValueError, KeyError, TypeError):
            return None
        if files != file_stamp(meta, path.parent) or not isinstance(missing, list):
            return None
        return frozenset(range(meta.piece_count)) - frozenset(i for i in missing if isinstance(i, int))

    async def _announce(self, info_hash: bytes) -> None:
        try:
            await self.node.announce(info_hash, self.server.port, keep=True)
        except Exception as exc:  # the node may be stopping; the kept announce is retried anyway
            log.debug("announce of %s failed: %r", info_hash.hex(), exc)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # --- internals --------------------------------------------------------------------------------

    def _serve(self, share: Share) -> None:
        self._shares[share.meta.info_hash] = share
        self._missing.pop(share.meta.info_hash, None)
        self.server.add(PieceStore(share.meta, share.path.parent, writable=False), set(share.have))

    def _save(self, share: Share, torrent: bytes) -> None:
        state = self.node.state
        if state is None:
            return
        missing = sorted(set(range(share.meta.piece_count)) - share.have)
        stamp = json.dumps({"files": file_stamp(share.meta, share.path.parent), "missing": missing})
        state.save_share(SavedShare(share.meta.info_hash, str(share.path), torrent, stamp, share.added))

    def _spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
