"""Magnet links (BEP 9): the info-hash, a display name and direct peer addresses, in one URI.

A magnet link is what a user pastes, so parsing is forgiving where BEP 9 asks it to be (hex or base32
info-hash, any letter case, unknown parameters ignored, a malformed peer address skipped) and strict
where a mistake would fetch the wrong thing (exactly one well-formed BitTorrent v1 info-hash).
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote

from kadnode.types import Addr

_HEX = re.compile(r"[0-9a-fA-F]{40}")
_BASE32 = re.compile(r"[A-Za-z2-7]{32}")
_PORT = re.compile(r"[0-9]{1,5}")
_BTIH = "urn:btih:"
MAX_PEERS = 200
"""x.pe addresses kept from one link: a link is user input, not a peer list to trust at any size."""


class MagnetError(ValueError):
    """The text is neither a magnet link with a BitTorrent v1 info-hash nor a bare info-hash."""

    reason: str

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Magnet:
    """What a magnet link names: the torrent, what to call it while its metadata is unknown, and where
    to ask first."""

    info_hash: bytes
    name: str | None
    peers: tuple[Addr, ...] = ()


def magnet_link(info_hash: bytes, name: str | None = None, peers: Sequence[Addr] = ()) -> str:
    """`magnet:?xt=urn:btih:<40 hex>&dn=<name>&x.pe=<ip:port>...`, every value percent-encoded.

    `quote(..., safe="")` encodes "+", "&", "=", "#" and spaces (as %20), so any name survives a
    round trip through our parser and through libtorrent's.
    """
    if len(info_hash) != 20:
        raise ValueError(f"an info-hash is 20 bytes, not {len(info_hash)}")
    parts = [f"xt={_BTIH}{info_hash.hex()}"]
    if name is not None:
        parts.append("dn=" + quote(name, safe=""))
    for host, port in peers:
        parts.append("x.pe=" + quote(f"{host}:{port}", safe=":"))
    return "magnet:?" + "&".join(parts)


def parse_target(text: str) -> Magnet:
    """A magnet URI, or a bare info-hash (40 hex or 32 base32 characters); MagnetError otherwise."""
    text = text.strip()
    if text[:7].lower() != "magnet:":
        info_hash = _decode_hash(text)
        if info_hash is None:
            raise MagnetError("bad_target", f"not a magnet link or a 40-hex/32-base32 info-hash: {text[:80]!r}")
        return Magnet(info_hash, None)
    query = text[7:]
    if not query.startswith("?"):
        raise MagnetError("bad_magnet", "a magnet link starts with 'magnet:?'")
    info_hash = None
    name: str | None = None
    peers: list[Addr] = []
    # parse_qsl undoes percent-encoding and "+" for a space, as libtorrent's parser does.
    for key, value in parse_qsl(query[1:].split("#", 1)[0], keep_blank_values=True):
        if key == "xt" and info_hash is None and value[: len(_BTIH)].lower() == _BTIH:
            info_hash = _decode_hash(value[len(_BTIH) :])
            if info_hash is None:
                raise MagnetError("bad_info_hash", f"xt is not a 40-hex or 32-base32 info-hash: {value[:80]!r}")
        elif key == "dn" and name is None:
            name = value
        elif key == "x.pe" and len(peers) < MAX_PEERS:
            addr = _parse_peer(value)
            if addr is not None and addr not in peers:
                peers.append(addr)
    if info_hash is None:
        raise MagnetError("no_info_hash", "the magnet link has no xt=urn:btih: parameter")
    return Magnet(info_hash, name, tuple(peers))


def _decode_hash(text: str) -> bytes | None:
    if _HEX.fullmatch(text):
        return bytes.fromhex(text)
    if _BASE32.fullmatch(text):
        try:
            return base64.b32decode(text.upper())
        except binascii.Error:  # pragma: no cover - the pattern admits only valid base32 of 20 bytes
            return None
    return None


def _parse_peer(text: str) -> Addr | None:
    """`a.b.c.d:port` with a port in 1..65535; anything else (host names, IPv6) is None."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not _PORT.fullmatch(port_text):
        return None
    port = int(port_text)
    if not 0 < port < 65536:
        return None
    try:
        ip = ipaddress.IPv4Address(host)
    except ValueError:
        return None
    return (str(ip), port)
