"""Control commands of the file locator (issue 6): share, shares, unshare, locate.

They act on the daemon's `ShareService`. Paths come from the local user of the control socket (mode
0600: the daemon's own user), so a path names what that user may read anyway.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from kadnode.runtime.control_args import RequestError, check_args, parse_bool, parse_hex20
from kadnode.runtime.shares import ShareError, ShareService
from kadnode.torrent.locate import check_peers
from kadnode.torrent.metainfo import MAX_TORRENT_SIZE


def _path(value: Any, name: str) -> Path:
    if not isinstance(value, str) or not value or "\0" in value:
        raise RequestError(f"{name} must be a path")
    path = Path(value)
    if not path.is_absolute():
        raise RequestError(f"{name} must be absolute (the daemon's working directory is not yours)")
    return path


async def _cmd_share(service: ShareService, args: Mapping[str, Any]) -> Any:
    check_args(args, ("path",), ("torrent",))
    torrent: bytes | None = None
    if args.get("torrent") is not None:
        torrent_path = _path(args["torrent"], "torrent")
        try:
            if torrent_path.stat().st_size > MAX_TORRENT_SIZE:
                raise RequestError(f"{torrent_path} is larger than a torrent file can be")
            torrent = torrent_path.read_bytes()
        except OSError as exc:
            raise RequestError(f"cannot read {torrent_path}: {exc.strerror or exc}") from None
    try:
        share, stored_at = await service.share(_path(args["path"], "path"), torrent)
    except ShareError as exc:
        raise RequestError(str(exc)) from None
    return {**share.to_json(), "announced_to": stored_at, "port": service.server.port}


async def _cmd_shares(service: ShareService, args: Mapping[str, Any]) -> Any:
    check_args(args, ())
    return {"port": service.server.port, "shares": service.shares(), "server": dict(service.server.counters)}


async def _cmd_unshare(service: ShareService, args: Mapping[str, Any]) -> Any:
    check_args(args, ("info_hash",))
    info_hash = parse_hex20(args["info_hash"], "info_hash")
    return {"info_hash": info_hash.hex(), "was_shared": await service.unshare(info_hash)}


async def _cmd_locate(service: ShareService, args: Mapping[str, Any]) -> Any:
    check_args(args, ("info_hash",), ("check",))
    info_hash = parse_hex20(args["info_hash"], "info_hash")
    result = await service.node.get_peers(info_hash)
    peers = list(result.peers)
    checks = []
    if parse_bool(args.get("check", True), "check"):
        checks = [c.to_json() for c in await check_peers(peers, info_hash, service.server.peer_id)]
    return {
        "info_hash": info_hash.hex(),
        "peers": [f"{h}:{p}" for h, p in peers],
        "checked": checks,
        "lookup_ms": round(result.lookup.duration * 1000, 1),
        "nodes_answered": result.lookup.responded,
        "shared_here": service.get(info_hash) is not None,
    }


FileHandler = Callable[[ShareService, Mapping[str, Any]], Awaitable[Any]]
FILE_HANDLERS: dict[str, FileHandler] = {
    "share": _cmd_share,
    "shares": _cmd_shares,
    "unshare": _cmd_unshare,
    "locate": _cmd_locate,
}
