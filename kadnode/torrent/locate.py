"""`kadnode locate`: the peers the DHT lists for an info-hash, each checked with a BitTorrent handshake.

The DHT only says who announced; an announce lives 30 minutes after its peer went away. So every peer is
asked directly: how long its handshake took, and what its bitfield says it has (and its client name from
the extension handshake, when it sends one). Peers are checked in parallel, each within a timeout.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from kadnode.torrent.connection import PeerConnection
from kadnode.torrent.peerwire import BitfieldMsg, Extended, Have, PeerWireError
from kadnode.types import Addr

CONNECT_TIMEOUT = 5.0
LISTEN_TIME = 1.0
"""After the handshake, how long to wait for the peer's bitfield and extension handshake."""
MAX_PARALLEL = 32


@dataclass(frozen=True, slots=True)
class PeerCheck:
    addr: Addr
    handshake_ms: float | None
    """Connect + handshake round trip; None when the peer did not complete one."""
    pieces: int | None
    """Pieces its bitfield (and Have messages) say it has; None when it sent no bitfield."""
    client: str | None
    metadata: bool
    """It offers the metadata (BEP 9): a magnet link alone is enough to fetch from it."""
    error: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "addr": f"{self.addr[0]}:{self.addr[1]}", "handshake_ms": self.handshake_ms, "pieces": self.pieces,
            "client": self.client, "metadata": self.metadata, "error": self.error,
        }


async def check_peer(addr: Addr, info_hash: bytes, peer_id: bytes, *, timeout: float = CONNECT_TIMEOUT,
                     listen: float = LISTEN_TIME) -> PeerCheck:
    started = time.monotonic()
    try:
        conn = await PeerConnection.connect(addr, info_hash, peer_id, timeout=timeout)
    except (OSError, TimeoutError, PeerWireError) as exc:
        return PeerCheck(addr, None, None, None, False, _describe(exc))
    handshake_ms = round((time.monotonic() - started) * 1000, 2)
    have: set[int] | None = None
    try:
        deadline = time.monotonic() + listen
        while (left := deadline - time.monotonic()) > 0:
            msg = await conn.receive(left)
            if isinstance(msg, BitfieldMsg):
                have = {i * 8 + bit for i, byte in enumerate(msg.data) for bit in range(8) if byte & (0x80 >> bit)}
            elif isinstance(msg, Have):
                have = (have or set()) | {msg.index}
            elif isinstance(msg, Extended) and conn.remote_ext is not None and have is not None:
                break  # both heard: nothing more to learn
    except (OSError, TimeoutError, PeerWireError):
        pass  # it answered the handshake: whatever came after is what we report
    finally:
        await conn.close()
    ext = conn.remote_ext
    return PeerCheck(addr, handshake_ms, None if have is None else len(have), ext.client if ext else None,
                     ext is not None and ext.metadata_size is not None and conn.ext_id("ut_metadata") is not None,
                     None)


async def check_peers(peers: Sequence[Addr], info_hash: bytes, peer_id: bytes, *,
                      timeout: float = CONNECT_TIMEOUT) -> list[PeerCheck]:
    """Every peer checked, at most MAX_PARALLEL at once; those that answered first, fastest first."""
    limit = asyncio.Semaphore(MAX_PARALLEL)

    async def one(addr: Addr) -> PeerCheck:
        async with limit:
            return await check_peer(addr, info_hash, peer_id, timeout=timeout)

    checks = await asyncio.gather(*(one(addr) for addr in dict.fromkeys(peers)))
    return sorted(checks, key=lambda c: (c.handshake_ms is None, c.handshake_ms or 0.0))


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "no answer"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, PeerWireError):
        return f"bad handshake ({exc.reason})"
    return str(exc) or type(exc).__name__
