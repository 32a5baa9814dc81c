"""The BitTorrent peer wire protocol (BEP 3) with the extension protocol (BEP 10) and metadata exchange
(BEP 9), as pure encoding and decoding: bytes in, typed messages out, no I/O.

Everything a peer sends is hostile. Decoding is strict (each message type has its exact length), every
rejection is a `PeerWireError` with a short counter-friendly `reason`, nothing else escapes, and
`MessageReader` refuses a declared length over its limit as soon as the 4-byte prefix arrives, so a
peer can never make it buffer more than one bounded message.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TypeAlias

from kadnode.wire.bencode import Bencodable, Bencoded, BencodeError, bdecode, bencode


class PeerWireError(ValueError):
    """The remote peer sent something we do not accept; `reason` names it for counters and logs."""

    reason: str

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason


PROTOCOL = b"\x13BitTorrent protocol"
HANDSHAKE_SIZE = 68
"""1 + 19 protocol bytes, 8 reserved bytes, 20-byte info-hash, 20-byte peer id."""
_EXTENSION_BYTE, _EXTENSION_BIT = 5, 0x10
"""BEP 10: reserved_byte[5] & 0x10 says the peer speaks the extension protocol."""

BLOCK_LIMIT = 16 * 1024
"""BEP 3: every current client requests 16 KiB blocks and closes connections that ask for more."""
MAX_MESSAGE = BLOCK_LIMIT + 13 + 1024
"""Default reader limit: a 16 KiB piece message (9 header bytes) or a BEP 9 data message (its small
dict plus 16 KiB) fits, with room; bitfields up to ~139,000 pieces fit too."""


@dataclass(frozen=True, slots=True)
class Handshake:
    """The 68-byte opening of every connection."""

    info_hash: bytes
    peer_id: bytes
    extensions: bool = True


def encode_handshake(h: Handshake) -> bytes:
    if len(h.info_hash) != 20 or len(h.peer_id) != 20:
        raise ValueError("info_hash and peer_id must be 20 bytes each")
    reserved = bytearray(8)
    if h.extensions:
        reserved[_EXTENSION_BYTE] |= _EXTENSION_BIT
    return PROTOCOL + bytes(reserved) + h.info_hash + h.peer_id


def decode_handshake(data: bytes) -> Handshake:
    """Decode exactly 68 bytes; unknown reserved bits are ignored, as BEP 3 asks."""
    if len(data) != HANDSHAKE_SIZE:
        raise PeerWireError("bad_handshake", f"handshake is {len(data)} bytes, not {HANDSHAKE_SIZE}")
    if data[:20] != PROTOCOL:
        raise PeerWireError("bad_handshake", "not the BitTorrent protocol (encrypted or another protocol?)")
    extensions = bool(data[20 + _EXTENSION_BYTE] & _EXTENSION_BIT)
    return Handshake(info_hash=bytes(data[28:48]), peer_id=bytes(data[48:68]), extensions=extensions)


# --- messages ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KeepAlive:
    """A zero-length message."""


@dataclass(frozen=True, slots=True)
class Choke:
    pass


@dataclass(frozen=True, slots=True)
class Unchoke:
    pass


@dataclass(frozen=True, slots=True)
class Interested:
    pass


@dataclass(frozen=True, slots=True)
class NotInterested:
    pass


@dataclass(frozen=True, slots=True)
class Have:
    index: int


@dataclass(frozen=True, slots=True)
class BitfieldMsg:
    """The raw bitfield bytes; `Bitfield.from_bytes` checks them once the piece count is known."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Request:
    index: int
    begin: int
    length: int


@dataclass(frozen=True, slots=True)
class Piece:
    index: int
    begin: int
    block: bytes


@dataclass(frozen=True, slots=True)
class Cancel:
    index: int
    begin: int
    length: int


@dataclass(frozen=True, slots=True)
class Port:
    """BEP 5: the sender's DHT port."""

    port: int


@dataclass(frozen=True, slots=True)
class Extended:
    """BEP 10: ext_id 0 is the extension handshake, others are the ids the receiver announced."""

    ext_id: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class Unknown:
    """A message id we do not speak; its payload (`size` bytes) was skipped."""

    msg_id: int
    size: int


Message: TypeAlias = (
    KeepAlive
    | Choke
    | Unchoke
    | Interested
    | NotInterested
    | Have
    | BitfieldMsg
    | Request
    | Piece
    | Cancel
    | Port
    | Extended
    | Unknown
)

CHOKE, UNCHOKE, INTERESTED, NOT_INTERESTED, HAVE, BITFIELD, REQUEST, PIECE, CANCEL, PORT = range(10)
EXTENDED = 20

_U32 = struct.Struct(">I")
_ID_U32 = struct.Struct(">IBI")  # length, id, one integer
_ID_3U32 = struct.Struct(">IBIII")  # length, id, three integers
_ID_2U32 = struct.Struct(">IBII")  # length, id, two integers (piece header)
_MAX_U32 = 0xFFFFFFFF


def _check_u32(*values: int) -> None:
    for value in values:
        if not 0 <= value <= _MAX_U32:
            raise ValueError(f"{value} does not fit in 32 bits")


def encode(msg: Message) -> bytes:
    """The message with its 4-byte length prefix; ValueError on fields that do not fit the wire."""
    if isinstance(msg, Piece):
        _check_u32(msg.index, msg.begin)
        return _ID_2U32.pack(9 + len(msg.block), PIECE, msg.index, msg.begin) + msg.block
    if isinstance(msg, Request | Cancel):
        _check_u32(msg.index, msg.begin, msg.length)
        return _ID_3U32.pack(13, REQUEST if isinstance(msg, Request) else CANCEL, msg.index, msg.begin, msg.length)
    if isinstance(msg, Have):
        _check_u32(msg.index)
        return _ID_U32.pack(5, HAVE, msg.index)
    if isinstance(msg, KeepAlive):
        return b"\x00\x00\x00\x00"
    if isinstance(msg, Choke | Unchoke | Interested | NotInterested):
        return _U32.pack(1) + bytes((_SIMPLE_IDS[type(msg)],))
    if isinstance(msg, BitfieldMsg):
        return _U32.pack(1 + len(msg.data)) + bytes((BITFIELD,)) + msg.data
    if isinstance(msg, Extended):
        if not 0 <= msg.ext_id <= 255:
            raise ValueError(f"extended message id {msg.ext_id} does not fit in a byte")
        return _U32.pack(2 + len(msg.payload)) + bytes((EXTENDED, msg.ext_id)) + msg.payload
    if isinstance(msg, Port):
        if not 0 <= msg.port <= 0xFFFF:
            raise ValueError(f"port {msg.port} does not fit in 16 bits")
        return _U32.pack(3) + bytes((PORT,)) + struct.pack(">H", msg.port)
    if not 0 <= msg.msg_id <= 255 or msg.msg_id in _KNOWN_IDS:
        raise ValueError(f"{msg.msg_id} is not an unknown message id")
    return _U32.pack(1 + msg.size) + bytes((msg.msg_id,)) + bytes(msg.size)


_SIMPLE_IDS: dict[type, int] = {Choke: CHOKE, Unchoke: UNCHOKE, Interested: INTERESTED, NotInterested: NOT_INTERESTED}
_SIMPLE: dict[int, Message] = {
    CHOKE: Choke(),
    UNCHOKE: Unchoke(),
    INTERESTED: Interested(),
    NOT_INTERESTED: NotInterested(),
}
_KNOWN_IDS = frozenset((*range(10), EXTENDED))
_KEEPALIVE = KeepAlive()


def decode(frame: bytes) -> Message:
    """One message without its length prefix (id byte + payload; empty is a keep-alive)."""
    size = len(frame)
    if size == 0:
        return _KEEPALIVE
    msg_id = frame[0]
    if msg_id == PIECE:
        if size < 9:
            raise PeerWireError("bad_length", f"piece message of {size} bytes (at least 9)")
        index, begin = struct.unpack_from(">II", frame, 1)
        return Piece(index, begin, bytes(frame[9:]))
    if msg_id in (REQUEST, CANCEL):
        if size != 13:
            raise PeerWireError("bad_length", f"{'request' if msg_id == REQUEST else 'cancel'} of {size} bytes (13)")
        index, begin, length = struct.unpack_from(">III", frame, 1)
        return Request(index, begin, length) if msg_id == REQUEST else Cancel(index, begin, length)
    if msg_id == HAVE:
        if size != 5:
            raise PeerWireError("bad_length", f"have message of {size} bytes (5)")
        return Have(_U32.unpack_from(frame, 1)[0])
    if msg_id in _SIMPLE:
        if size != 1:
            raise PeerWireError("bad_length", f"message {msg_id} of {size} bytes (1)")
        return _SIMPLE[msg_id]
    if msg_id == BITFIELD:
        if size < 2:
            raise PeerWireError("bad_length", "empty bitfield")
        return BitfieldMsg(bytes(frame[1:]))
    if msg_id == EXTENDED:
        if size < 2:
            raise PeerWireError("bad_length", "extended message without its id")
        return Extended(frame[1], bytes(frame[2:]))
    if msg_id == PORT:
        if size != 3:
            raise PeerWireError("bad_length", f"port message of {size} bytes (3)")
        return Port(struct.unpack_from(">H", frame, 1)[0])
    return Unknown(msg_id, size - 1)


class MessageReader:
    """Splits a byte stream into messages. Memory stays bounded: a declared length over `max_message`
    is refused as soon as its prefix is seen, before any of its body is kept. After an error the
    stream cannot be resynchronised, so the reader stays failed."""

    def __init__(self, max_message: int = MAX_MESSAGE) -> None:
        self.max_message = max_message
        self._buf = bytearray()
        self._failed: PeerWireError | None = None

    @property
    def buffered(self) -> int:
        """Bytes held that do not make a whole message yet."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[Message]:
        if self._failed is not None:
            raise self._failed
        buf = self._buf
        buf += data
        out: list[Message] = []
        pos = 0
        end = len(buf)
        try:
            while end - pos >= 4:
                length = _U32.unpack_from(buf, pos)[0]
                if length > self.max_message:
                    raise PeerWireError("oversized", f"message of {length} bytes (limit {self.max_message})")
                if end - pos - 4 < length:
                    break
                out.append(decode(bytes(buf[pos + 4 : pos + 4 + length])))
                pos += 4 + length
        except PeerWireError as exc:
            self._failed = exc
            buf.clear()
            raise
        del buf[:pos]
        return out


class Bitfield:
    """Which pieces a peer has; bit 0 is the high bit of the first byte (BEP 3)."""

    __slots__ = ("_bits", "_set", "count")

    def __init__(self, count: int) -> None:
        if count < 0:
            raise ValueError("piece count must not be negative")
        self.count = count
        self._bits = bytearray((count + 7) // 8)
        self._set = 0

    @classmethod
    def from_bytes(cls, data: bytes, count: int) -> Bitfield:
        field = cls(count)
        if len(data) != len(field._bits):
            raise PeerWireError("bad_bitfield", f"bitfield of {len(data)} bytes for {count} pieces")
        spare = len(data) * 8 - count
        if spare and data[-1] & ((1 << spare) - 1):
            raise PeerWireError("bad_bitfield", "spare bits at the end of the bitfield are set")
        field._bits[:] = data
        field._set = int.from_bytes(data, "big").bit_count()
        return field

    @classmethod
    def full(cls, count: int) -> Bitfield:
        field = cls(count)
        for index in range(count):
            field.add(index)
        return field

    def to_bytes(self) -> bytes:
        return bytes(self._bits)

    def add(self, index: int) -> None:
        if not 0 <= index < self.count:
            raise IndexError(f"piece {index} outside 0..{self.count - 1}")
        mask = 0x80 >> (index & 7)
        if not self._bits[index >> 3] & mask:
            self._bits[index >> 3] |= mask
            self._set += 1

    def __contains__(self, index: object) -> bool:
        if not isinstance(index, int) or not 0 <= index < self.count:
            return False
        return bool(self._bits[index >> 3] & (0x80 >> (index & 7)))

    def __len__(self) -> int:
        return self._set

    def __iter__(self) -> Iterator[int]:
        for byte_index, byte in enumerate(self._bits):
            if byte:
                for bit in range(8):
                    if byte & (0x80 >> bit):
                        yield byte_index * 8 + bit

    def complete(self) -> bool:
        return self._set == self.count

    def __repr__(self) -> str:
        return f"Bitfield({self._set}/{self.count})"


# --- BEP 10 / BEP 9 -----------------------------------------------------------------------------------

UT_METADATA = "ut_metadata"
METADATA_PIECE_SIZE = 16 * 1024
_EXT_LIMITS = {"max_depth": 4, "max_items": 500}
"""An extension handshake is a dict with one inner dict (`m`); libtorrent's has about 30 values."""


@dataclass(frozen=True, slots=True)
class ExtHandshake:
    """The BEP 10 handshake: `extensions` maps names to the ids the *sender* wants to receive them on
    (0 means disabled); `metadata_size` is BEP 9's; `client` is `v`; `reqq` the sender's request queue."""

    extensions: dict[str, int]
    metadata_size: int | None = None
    client: str | None = None
    reqq: int | None = None


def encode_ext_handshake(h: ExtHandshake) -> bytes:
    """The payload of Extended(0, ...)."""
    value: dict[str, Bencodable] = {"m": dict(h.extensions)}
    if h.metadata_size is not None:
        value["metadata_size"] = h.metadata_size
    if h.client is not None:
        value["v"] = h.client
    if h.reqq is not None:
        value["reqq"] = h.reqq
    return bencode(value)


def decode_ext_handshake(payload: bytes) -> ExtHandshake:
    """Strict on the fields we use (`m`, `metadata_size`, `v`, `reqq`); other keys are ignored (BEP 10)."""
    try:
        value = bdecode(payload, **_EXT_LIMITS)
    except BencodeError as exc:
        raise PeerWireError("bad_extended", f"extension handshake: {exc}") from None
    if not isinstance(value, dict):
        raise PeerWireError("bad_extended", "extension handshake is not a dict")
    extensions: dict[str, int] = {}
    m = value.get(b"m", {})
    if not isinstance(m, dict):
        raise PeerWireError("bad_extended", "'m' is not a dict")
    for name, ext_id in m.items():
        if not isinstance(ext_id, int) or not 0 <= ext_id <= 255:
            raise PeerWireError("bad_extended", f"extension id {ext_id!r} is not a byte")
        extensions[name.decode("utf-8", "replace")] = ext_id
    metadata_size = _optional_int(value, b"metadata_size")
    reqq = _optional_int(value, b"reqq")
    client = value.get(b"v")
    if client is not None and not isinstance(client, bytes):
        raise PeerWireError("bad_extended", "'v' is not a string")
    return ExtHandshake(
        extensions=extensions,
        metadata_size=metadata_size,
        client=None if client is None else client.decode("utf-8", "replace"),
        reqq=reqq,
    )


def _optional_int(value: dict[bytes, Bencoded], key: bytes) -> int | None:
    item = value.get(key)
    if item is None:
        return None
    if not isinstance(item, int) or item < 0:
        raise PeerWireError("bad_extended", f"{key.decode()!r} is not a non-negative integer")
    return item


@dataclass(frozen=True, slots=True)
class MetadataRequest:
    piece: int


@dataclass(frozen=True, slots=True)
class MetadataData:
    piece: int
    total_size: int
    data: bytes


@dataclass(frozen=True, slots=True)
class MetadataReject:
    piece: int


MetadataMessage: TypeAlias = MetadataRequest | MetadataData | MetadataReject
_REQUEST_TYPE, _DATA_TYPE, _REJECT_TYPE = 0, 1, 2
_METADATA_LIMITS = {"max_depth": 2, "max_items": 40}
"""A ut_metadata dict is flat with three keys; room for a few unknown ones."""


def encode_metadata(msg: MetadataMessage) -> bytes:
    """The payload of Extended(<the receiver's ut_metadata id>, ...)."""
    if isinstance(msg, MetadataData):
        head = bencode({"msg_type": _DATA_TYPE, "piece": msg.piece, "total_size": msg.total_size})
        return head + msg.data
    msg_type = _REQUEST_TYPE if isinstance(msg, MetadataRequest) else _REJECT_TYPE
    return bencode({"msg_type": msg_type, "piece": msg.piece})


def metadata_piece_count(total_size: int) -> int:
    return (total_size + METADATA_PIECE_SIZE - 1) // METADATA_PIECE_SIZE


def decode_metadata(payload: bytes) -> MetadataMessage:
    """A BEP 9 message: a bencoded dict, followed by the raw metadata piece for a data message.

    A data message must carry exactly its piece's share of `total_size` (16 KiB except the last).
    An unknown msg_type raises PeerWireError("unknown_metadata_type"): BEP 9 says to ignore those, so
    callers should skip that reason rather than drop the peer.
    """
    try:
        end = bencode_end(payload, 0, **_METADATA_LIMITS)
        value = bdecode(payload[:end], **_METADATA_LIMITS)
    except BencodeError as exc:
        raise PeerWireError("bad_metadata", f"ut_metadata message: {exc}") from None
    if not isinstance(value, dict):
        raise PeerWireError("bad_metadata", "ut_metadata message is not a dict")
    msg_type = value.get(b"msg_type")
    piece = value.get(b"piece")
    if not isinstance(msg_type, int) or not isinstance(piece, int) or piece < 0:
        raise PeerWireError("bad_metadata", "ut_metadata message without a valid msg_type and piece")
    rest = payload[end:]
    if msg_type == _DATA_TYPE:
        total = value.get(b"total_size")
        if not isinstance(total, int) or total <= 0:
            raise PeerWireError("bad_metadata", "data message without a positive total_size")
        if piece >= metadata_piece_count(total):
            raise PeerWireError("bad_metadata", f"metadata piece {piece} beyond total_size {total}")
        expected = min(METADATA_PIECE_SIZE, total - piece * METADATA_PIECE_SIZE)
        if len(rest) != expected:
            raise PeerWireError("bad_metadata", f"metadata piece {piece} has {len(rest)} bytes, not {expected}")
        return MetadataData(piece, total, bytes(rest))
    if msg_type in (_REQUEST_TYPE, _REJECT_TYPE):
        if rest:
            raise PeerWireError("bad_metadata", f"{len(rest)} bytes after a ut_metadata request/reject")
        return MetadataRequest(piece) if msg_type == _REQUEST_TYPE else MetadataReject(piece)
    raise PeerWireError("unknown_metadata_type", f"ut_metadata msg_type {msg_type}")


def bencode_end(data: bytes, start: int = 0, *, max_depth: int = 10, max_items: int = 500) -> int:
    """Where the one bencoded value starting at `start` ends, without building it.

    Only the token structure is scanned (bounded by the same limits as bdecode, no recursion, no
    allocation beyond slicing length digits); run bdecode on the slice for the canonical checks.
    """
    n = len(data)
    max_len_digits = len(str(n))
    depth = 0
    items = 0
    pos = start
    while True:
        if pos >= n:
            raise BencodeError("truncated", "input ends inside a value")
        c = data[pos]
        if 0x30 <= c <= 0x39:
            colon = data.find(b":", pos, pos + max_len_digits + 1)
            if colon < 0 or not data[pos:colon].isdigit():
                raise BencodeError("bad_length", "string length is not a number")
            pos = colon + 1 + int(data[pos:colon])
            if pos > n:
                raise BencodeError("length_past_end", "string length exceeds the input")
        elif c == 0x69:  # i
            close = data.find(b"e", pos + 1, pos + 68)
            if close < 0:
                raise BencodeError("bad_int", "integer without its end")
            pos = close + 1
        elif c in (0x6C, 0x64):  # l, d
            depth += 1
            if depth > max_depth:
                raise BencodeError("too_deep", f"nesting deeper than {max_depth}")
            pos += 1
        elif c == 0x65 and depth > 0:  # e
            depth -= 1
            pos += 1
        else:
            raise BencodeError("bad_type", f"unexpected byte {c:#04x}")
        if c != 0x65:
            items += 1
            if items > max_items:
                raise BencodeError("too_many_items", f"more than {max_items} values")
        if depth == 0:
            return pos
