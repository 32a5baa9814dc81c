"""One peer-wire connection over asyncio streams, after the handshake.

A thin I/O shell around `peerwire`: every byte read goes through a bounded `MessageReader`, every wait
has a timeout, and the extension handshake is decoded on arrival so callers find it in `remote_ext`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque

from kadnode.torrent.peerwire import (
    HANDSHAKE_SIZE,
    MAX_MESSAGE,
    PROTOCOL,
    Extended,
    ExtHandshake,
    Handshake,
    Message,
    MessageReader,
    PeerWireError,
    decode_ext_handshake,
    decode_handshake,
    encode,
    encode_handshake,
)
from kadnode.types import Addr

READ_CHUNK = 64 * 1024
"""Bytes asked of the socket per read: with the reader's limit, the most a connection ever holds."""
SEND_TIMEOUT = 60.0
"""A peer that reads nothing for this long cannot hold a writer (and its buffers) forever."""


class PeerConnection:
    """One TCP peer-wire connection after the handshake."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        remote: Handshake,
        addr: Addr,
        *,
        max_message: int = MAX_MESSAGE,
        send_timeout: float = SEND_TIMEOUT,
    ) -> None:
        self.remote = remote
        self.addr = addr
        self.remote_ext: ExtHandshake | None = None
        self.send_timeout = send_timeout
        self.bytes_received = 0
        self.bytes_sent = 0
        self._reader = reader
        self._writer = writer
        self._messages = MessageReader(max_message)
        self._pending: deque[Message] = deque()
        self._closed = False

    @classmethod
    async def connect(
        cls,
        addr: Addr,
        info_hash: bytes,
        peer_id: bytes,
        *,
        timeout: float = 10.0,
        local_host: str | None = None,
    ) -> PeerConnection:
        """Open a connection and trade handshakes (ours announces BEP 10); a peer that answers for
        another torrent is refused with PeerWireError("info_hash_mismatch")."""
        local_addr = (local_host, 0) if local_host is not None else None
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(addr[0], addr[1], local_addr=local_addr)
            try:
                writer.write(encode_handshake(Handshake(info_hash, peer_id, extensions=True)))
                await writer.drain()
                remote = decode_handshake(await _read_handshake(reader))
                if remote.info_hash != info_hash:
                    raise PeerWireError("info_hash_mismatch", f"peer answered for {remote.info_hash.hex()}")
            except BaseException:
                writer.close()
                raise
        conn = cls(reader, writer, remote, addr)
        conn.bytes_sent = HANDSHAKE_SIZE
        conn.bytes_received = HANDSHAKE_SIZE
        return conn

    @property
    def closed(self) -> bool:
        return self._closed

    def ext_id(self, name: str) -> int | None:
        """The id the peer wants extension `name` sent on, or None if it did not announce it."""
        if self.remote_ext is None:
            return None
        ext_id = self.remote_ext.extensions.get(name, 0)
        return ext_id or None

    async def send(self, *msgs: Message) -> None:
        """Write the messages and wait until the transport can take more (TimeoutError after
        `send_timeout`, ConnectionError when the peer is gone)."""
        if self._closed:
            raise ConnectionResetError("connection closed")
        data = b"".join(encode(msg) for msg in msgs)
        self._writer.write(data)
        self.bytes_sent += len(data)
        async with asyncio.timeout(self.send_timeout):
            await self._writer.drain()

    async def receive(self, timeout: float) -> Message:
        """The next message (TimeoutError / PeerWireError / ConnectionError). An extension handshake
        also updates `remote_ext` (its `m` is additive, as BEP 10 says)."""
        if not self._pending:
            async with asyncio.timeout(timeout):
                while not self._pending:
                    if self._closed:
                        raise ConnectionResetError("connection closed")
                    data = await self._reader.read(READ_CHUNK)
                    if not data:
                        raise ConnectionResetError("peer closed the connection")
                    self.bytes_received += len(data)
                    self._pending.extend(self._messages.feed(data))
        msg = self._pending.popleft()
        if isinstance(msg, Extended) and msg.ext_id == 0:
            self._update_ext(decode_ext_handshake(msg.payload))
        return msg

    def _update_ext(self, ext: ExtHandshake) -> None:
        old = self.remote_ext
        if old is None:
            self.remote_ext = ext
            return
        self.remote_ext = ExtHandshake(
            extensions={**old.extensions, **ext.extensions},
            metadata_size=ext.metadata_size if ext.metadata_size is not None else old.metadata_size,
            client=ext.client if ext.client is not None else old.client,
            reqq=ext.reqq if ext.reqq is not None else old.reqq,
        )

    def abort(self) -> None:
        """Drop the connection now, without waiting (wakes a pending receive with ConnectionError)."""
        self._closed = True
        self._writer.transport.abort()

    async def close(self) -> None:
        if self._closed and self._writer.transport.is_closing():
            return
        self._closed = True
        self._writer.close()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2.0):
                await self._writer.wait_closed()

    def __repr__(self) -> str:
        return f"PeerConnection({self.addr[0]}:{self.addr[1]})"


async def _read_handshake(reader: asyncio.StreamReader) -> bytes:
    """Exactly 68 bytes: PeerWireError("bad_handshake") when they are not the BitTorrent protocol or the
    stream ends inside them, ConnectionResetError when it ends before the first byte (a refusal or a probe)."""
    got = 0
    try:
        head = await reader.readexactly(len(PROTOCOL))
        got = len(head)
        if head != PROTOCOL:  # refuse at once, not after waiting for 68 bytes that may never come
            raise PeerWireError("bad_handshake", "not the BitTorrent protocol (encrypted or another protocol?)")
        return head + await reader.readexactly(HANDSHAKE_SIZE - len(PROTOCOL))
    except asyncio.IncompleteReadError as exc:
        got += len(exc.partial)
        if not got:
            raise ConnectionResetError("peer closed the connection before its handshake") from None
        raise PeerWireError("bad_handshake", f"connection closed after {got} handshake bytes") from None


async def read_handshake(reader: asyncio.StreamReader) -> Handshake:
    """The remote's handshake, for the accepting side (the caller sets the timeout)."""
    return decode_handshake(await _read_handshake(reader))
