"""Strict, canonical and bounded bencode.

The decoder sits on the receive path and sees hostile input, so it is iterative (an explicit stack, never
Python recursion), bounded in depth and in token count, never allocates more than the input, and accepts
only the one canonical encoding of a value. Canonical input means `bencode(bdecode(x)) == x`, which keeps
signatures over re-encoded values (BEP 44) exact. Every rejection is a `BencodeError` with a short
`reason` that the node counts; nothing else escapes.

Every datagram goes through here, so the shapes KRPC messages have (a dict of strings, integers, lists
and one level of inner dicts) take a fast path first, which hands anything unusual or invalid to the
general decoder; the encoder likewise writes plain dicts, strings and integers without dispatch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypeAlias

Bencoded: TypeAlias = int | bytes | list["Bencoded"] | dict[bytes, "Bencoded"]
"""What `bdecode` returns."""


@dataclass(frozen=True, slots=True)
class Raw:
    """Bytes that are already bencoded: `bencode` writes them verbatim, unchecked.

    BEP 44 signs and hashes the `v` value exactly as it was encoded, so a message carries a stored
    value as these bytes rather than re-encoding a decoded copy. The caller vouches that `data` is one
    canonical bencoded value (a value that came out of `bdecode`, or went through `bencode`).
    """

    data: bytes


Bencodable: TypeAlias = (
    Raw
    | int
    | bytes
    | bytearray
    | str
    | Sequence["Bencodable"]
    | Mapping[bytes, "Bencodable"]
    | Mapping[str, "Bencodable"]
    | Mapping[bytes | str, "Bencodable"]
)
"""What `bencode` accepts (str is sent as UTF-8; tuples encode as lists)."""

MAX_INT_DIGITS = 64
"""Digits an integer may have. BEP 5/44 integers fit in 64 bits (19 digits); the cap keeps `int()` away
from Python's 4,300-digit conversion limit and from quadratic parsing."""

_I, _L, _D, _E = 0x69, 0x6C, 0x64, 0x65  # b"i", b"l", b"d", b"e"
_ZERO, _NINE, _MINUS, _COLON = 0x30, 0x39, 0x2D, 0x3A


class BencodeError(ValueError):
    """The input is not canonical bencode within the limits."""

    reason: str

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason


def bdecode(data: bytes | bytearray | memoryview, *, max_depth: int = 10, max_items: int = 500) -> Bencoded:
    """Decode one complete bencoded value; raise BencodeError on anything else.

    `max_depth` bounds nested lists/dicts, `max_items` the tokens (ints, strings incl. dict keys, lists,
    dicts) in the whole value.
    """
    if type(data) is not bytes:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"bdecode needs bytes, not {type(data).__name__}")
        data = bytes(data)
    n = len(data)
    if n == 0:
        raise BencodeError("empty", "no input")
    if max_depth >= _FAST_DEPTH:
        fast = _decode_flat(data, n, max_items)
        if fast is not None:
            return fast
    return _decode_general(data, n, max_depth, max_items)


def _decode_general(data: bytes, n: int, max_depth: int, max_items: int) -> Bencoded:
    """Any value, every check, with the precise reason for a rejection."""
    # A string length with more digits than the input's own length cannot fit; never int() it.
    max_len_digits = len(str(n))
    frames: list[list[Bencoded]] = []  # open containers; a dict collects key, value, key, value, ...
    is_dict: list[bool] = []
    items = 0
    pos = 0
    value: Bencoded
    while True:
        if pos >= n:
            raise BencodeError("truncated", "input ends inside a value")
        c = data[pos]
        if _ZERO <= c <= _NINE:
            items += 1
            if items > max_items:
                raise BencodeError("too_many_items", f"more than {max_items} values")
            if pos + 1 < n and data[pos + 1] == _COLON:  # fast path: most strings are under 10 bytes
                start = pos + 2
                end = start + c - _ZERO
            elif pos + 2 < n and data[pos + 2] == _COLON and c != _ZERO and _ZERO <= data[pos + 1] <= _NINE:
                start = pos + 3  # 10..99 bytes: node ids, hashes, compact peers
                end = start + (c - _ZERO) * 10 + data[pos + 1] - _ZERO
            else:
                if c == _ZERO:  # "0:" took the fast path; no other length may start with 0
                    if pos + 1 >= n:
                        raise BencodeError("truncated", "input ends inside a string length")
                    if _ZERO <= data[pos + 1] <= _NINE:
                        raise BencodeError("leading_zero", "string length has a leading zero")
                    raise BencodeError("bad_length", "string length is not a number")
                colon = data.find(b":", pos, pos + max_len_digits + 1)
                if colon < 0:
                    seg = data[pos : pos + max_len_digits + 1]
                    if not seg.isdigit():
                        raise BencodeError("bad_length", "string length is not a number")
                    if pos + len(seg) >= n:
                        raise BencodeError("truncated", "input ends inside a string length")
                    raise BencodeError("length_past_end", "string length exceeds the input")
                digits = data[pos:colon]
                if not digits.isdigit():
                    raise BencodeError("bad_length", "string length is not a number")
                start = colon + 1
                end = start + int(digits)
            if end > n:
                raise BencodeError("length_past_end", "string length exceeds the input")
            value = data[start:end]
            pos = end
        elif c == _I:
            if frames and is_dict[-1] and not len(frames[-1]) & 1:
                raise BencodeError("bad_key", "dict key is not a string")
            items += 1
            if items > max_items:
                raise BencodeError("too_many_items", f"more than {max_items} values")
            value, pos = _decode_int(data, pos, n)
        elif c in (_L, _D):
            if frames and is_dict[-1] and not len(frames[-1]) & 1:
                raise BencodeError("bad_key", "dict key is not a string")
            items += 1
            if items > max_items:
                raise BencodeError("too_many_items", f"more than {max_items} values")
            if len(frames) >= max_depth:
                raise BencodeError("too_deep", f"nesting deeper than {max_depth}")
            frames.append([])
            is_dict.append(c == _D)
            pos += 1
            continue
        elif c == _E:
            if not frames:
                raise BencodeError("unexpected_end", "'e' outside a list or dict")
            frame = frames.pop()
            value = _close_dict(frame) if is_dict.pop() else frame
            pos += 1
        else:
            raise BencodeError("bad_type", f"unknown type byte {c:#04x}")
        if not frames:
            if pos != n:
                raise BencodeError("trailing_bytes", f"{n - pos} bytes after the value")
            return value
        frames[-1].append(value)


_FAST_DEPTH = 3
"""Nesting the fast path handles: a message dict, its `a`/`r` dict, and a list in that (`values`)."""


def _decode_flat(data: bytes, n: int, max_items: int) -> dict[bytes, Bencoded] | None:
    """The KRPC shapes, fast: a dict of strings, ints, lists of those, and dicts of those three.

    A pure shortcut: it accepts only canonical input within the limits, returns exactly what the general
    decoder would, and returns None on anything else (a deeper value, an empty key, a negative integer,
    any error) so that the general decoder decides, with its precise reason.
    """
    if data[0] != _D:
        return None
    try:
        top, pos, items = _flat_dict(data, 1, True)
    except (_NotFlat, IndexError, ValueError):
        return None
    if pos != n or items > max_items:
        return None
    return top


class _NotFlat(Exception):
    """Internal: leave this input to the general decoder."""


def _flat_dict(data: bytes, pos: int, nest: bool) -> tuple[dict[bytes, Bencoded], int, int]:
    """The dict whose body starts at `pos`: (value, position after its 'e', tokens incl. itself).

    Raises _NotFlat, IndexError (truncated) or ValueError when the input is not for the fast path.
    """
    out: dict[bytes, Bencoded] = {}
    items = 1
    last = b""
    n = len(data)
    while True:
        c = data[pos]
        if c == 0x65:  # e
            return out, pos + 1, items
        # The key: a string of 1 to 99 bytes ("0:" is valid but rare, and must come first).
        if 0x30 < c <= 0x39 and data[pos + 1] == 0x3A:
            start = pos + 2
            end = start + c - 0x30
        elif 0x30 < c <= 0x39 and data[pos + 2] == 0x3A and 0x30 <= data[pos + 1] <= 0x39:
            start = pos + 3
            end = start + (c - 0x30) * 10 + data[pos + 1] - 0x30
        else:
            raise _NotFlat
        key = data[start:end]
        if end > n or key <= last:  # also refuses a repeated key; b"" cannot be a key here
            raise _NotFlat
        last = key
        pos = end
        c = data[pos]
        value: Bencoded
        if 0x30 <= c <= 0x39:
            value, pos = _flat_str(data, pos, c, n)
        elif c == 0x69:  # i
            value, pos = _flat_int(data, pos)
        elif c == 0x6C:  # l
            value, pos, count = _flat_list(data, pos + 1, n)
            items += count - 1
        elif c == 0x64 and nest:  # d
            value, pos, count = _flat_dict(data, pos + 1, False)
            items += count - 1
        else:
            raise _NotFlat
        out[key] = value
        items += 2


def _flat_str(data: bytes, pos: int, c: int, n: int) -> tuple[bytes, int]:
    if data[pos + 1] == 0x3A:
        start = pos + 2
        end = start + c - 0x30
    else:
        colon = data.index(b":", pos, pos + 6)  # ValueError: more than 5 digits, longer than any datagram
        digits = data[pos:colon]
        if c == 0x30 or not digits.isdigit():
            raise _NotFlat
        start = colon + 1
        end = start + int(digits)
    if end > n:
        raise _NotFlat
    return data[start:end], end


def _flat_int(data: bytes, pos: int) -> tuple[int, int]:
    end = data.index(b"e", pos + 1, pos + 2 + MAX_INT_DIGITS)
    text = data[pos + 1 : end]
    if not text.isdigit() or (text[0] == 0x30 and len(text) > 1):
        raise _NotFlat  # negative, empty, non-digit, leading zero
    return int(text), end + 1


def _flat_list(data: bytes, pos: int, n: int) -> tuple[list[Bencoded], int, int]:
    out: list[Bencoded] = []
    while True:
        c = data[pos]
        if c == 0x65:  # e
            return out, pos + 1, len(out) + 1
        if 0x30 <= c <= 0x39:
            value, pos = _flat_str(data, pos, c, n)
            out.append(value)
        elif c == 0x69:  # i
            number, pos = _flat_int(data, pos)
            out.append(number)
        else:
            raise _NotFlat


def _decode_int(data: bytes, pos: int, n: int) -> tuple[int, int]:
    """Parse `i<digits>e` at `pos`; return the value and the position after it."""
    window = pos + MAX_INT_DIGITS + 3  # "i", "-", digits, "e"
    end = data.find(b"e", pos + 1, window)
    if end < 0:
        seg = data[pos + 1 : window]
        body = seg[1:] if seg[:1] == b"-" else seg
        if body and not body.isdigit():
            raise BencodeError("bad_int", "integer has a non-digit")
        if window >= n:
            raise BencodeError("truncated", "input ends inside an integer")
        raise BencodeError("int_too_large", f"integer longer than {MAX_INT_DIGITS} digits")
    text = data[pos + 1 : end]
    if not text:
        raise BencodeError("empty_int", "integer has no digits")
    negative = text[0] == _MINUS
    body = text[1:] if negative else text
    if not body.isdigit():
        raise BencodeError("bad_int", "integer has a non-digit")
    if len(body) > MAX_INT_DIGITS:
        raise BencodeError("int_too_large", f"integer longer than {MAX_INT_DIGITS} digits")
    if body[0] == _ZERO:
        if len(body) > 1:
            raise BencodeError("leading_zero", "integer has a leading zero")
        if negative:
            raise BencodeError("negative_zero", "integer is -0")
    return int(text), end + 1


def _close_dict(frame: list[Bencoded]) -> dict[bytes, Bencoded]:
    """Turn collected key/value pairs into a dict, insisting on strictly ascending keys."""
    if len(frame) & 1:
        raise BencodeError("missing_value", "dict key without a value")
    keys: list[bytes] = frame[0::2]  # type: ignore[assignment]  # each key was checked on arrival
    prev = None
    for key in keys:
        if prev is not None and key <= prev:
            if key == prev:
                raise BencodeError("duplicate_key", "dict key repeated")
            raise BencodeError("unsorted_keys", "dict keys out of order")
        prev = key
    return dict(zip(keys, frame[1::2], strict=True))


def bencode(value: Bencodable) -> bytes:
    """Encode `value` canonically (dict keys sorted as bytes); unsupported types raise TypeError.

    A `Raw` anywhere in `value` is copied verbatim (it is already bencoded).
    """
    out: list[bytes] = []
    _encode(value, out)
    return b"".join(out)


def _encode(value: object, out: list[bytes]) -> None:
    # Fast paths for the exact types KRPC messages are made of; everything else takes the general road.
    kind = type(value)
    if kind is bytes:
        out.append(b"%d:%s" % (len(value), value))  # type: ignore[arg-type]
    elif kind is dict:
        _encode_dict(value, out)  # type: ignore[arg-type]
    elif kind is int:
        out.append(b"i%de" % value)  # type: ignore[str-format]
    elif kind is list:
        out.append(b"l")
        for item in value:  # type: ignore[attr-defined]
            _encode(item, out)
        out.append(b"e")
    else:
        _encode_general(value, out)


def _encode_dict(value: dict[object, object], out: list[bytes]) -> None:
    """A plain dict: bytes keys sorted, string values written with their key in one piece."""
    mark = len(out)
    out.append(b"d")
    try:
        keys = sorted(value)  # type: ignore[type-var]
    except TypeError:  # bytes and str keys mixed
        keys = [None]
    for key in keys:
        if type(key) is not bytes:  # str keys (or mixed): the general road sorts them as bytes
            del out[mark:]
            _encode_general(value, out)
            return
        item = value[key]
        if type(item) is bytes:
            out.append(b"%d:%s%d:%s" % (len(key), key, len(item), item))
        else:
            out.append(b"%d:%s" % (len(key), key))
            _encode(item, out)
    out.append(b"e")


def _encode_general(value: object, out: list[bytes]) -> None:
    if isinstance(value, Raw):
        out.append(value.data)
    elif isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
        out.append(b"%d:" % len(raw))
        out.append(raw)
    elif isinstance(value, bool):
        raise TypeError("bencode has no booleans; use 0 or 1")
    elif isinstance(value, int):
        out.append(b"i%de" % value)
    elif isinstance(value, str):
        raw = value.encode("utf-8")
        out.append(b"%d:" % len(raw))
        out.append(raw)
    elif isinstance(value, list | tuple):
        out.append(b"l")
        for item in value:
            _encode(item, out)
        out.append(b"e")
    elif isinstance(value, Mapping):
        pairs: list[tuple[bytes, object]] = []
        for key, item in value.items():
            if isinstance(key, str):
                key = key.encode("utf-8")
            elif not isinstance(key, bytes):
                raise TypeError(f"dict key must be bytes or str, not {type(key).__name__}")
            pairs.append((key, item))
        pairs.sort(key=lambda pair: pair[0])
        out.append(b"d")
        prev = None
        for key, item in pairs:
            if key == prev:
                raise ValueError(f"dict key {key!r} given twice (as bytes and as str)")
            prev = key
            out.append(b"%d:" % len(key))
            out.append(key)
            _encode(item, out)
        out.append(b"e")
    else:
        raise TypeError(f"cannot bencode {type(value).__name__}")
