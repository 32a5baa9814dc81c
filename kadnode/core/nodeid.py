"""Node IDs as ints, CRC32C, and BEP 42 (node IDs tied to the node's external IPv4 address).

IDs are plain ints in ``[0, 2**160)``: XOR distance and comparisons are single int operations.
"""

from __future__ import annotations

import ipaddress
import random
from functools import lru_cache

ID_BITS = 160
ID_SPACE = 1 << ID_BITS

_CRC32C_POLY = 0x82F63B78
"""Castagnoli polynomial, bit-reflected (BEP 42 chose it for its uniform prefixes)."""


def _make_crc_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ _CRC32C_POLY if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC_TABLE = _make_crc_table()


def crc32c(data: bytes) -> int:
    """CRC32C (Castagnoli) of ``data``; table-driven pure Python, fine for 4-byte BEP 42 inputs."""
    crc = 0xFFFFFFFF
    table = _CRC_TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def random_id(rng: random.Random) -> int:
    """A uniformly random node ID."""
    return rng.getrandbits(ID_BITS)


def random_id_in_range(low: int, high: int, rng: random.Random) -> int:
    """A uniformly random ID in ``[low, high)`` (bucket refreshes look up a random ID in the bucket)."""
    if not 0 <= low < high <= ID_SPACE:
        raise ValueError(f"bad id range [{low:#x}, {high:#x})")
    return rng.randrange(low, high)


IPV4_CACHE_SIZE = 16384
"""Addresses whose parse (and BEP 42 exemption) is kept: more than the distinct endpoints a node, or a
10,000-node simulation, deals with at once."""


@lru_cache(maxsize=IPV4_CACHE_SIZE)
def ipv4_int(ip: str) -> int:
    """A dotted-quad IPv4 address as an int; ValueError for anything else (strict, unlike inet_aton).

    Cached: the routing table and the token manager ask about the same few thousand addresses again
    and again, and parsing through `ipaddress` is slow. Invalid input raises each time (never cached)."""
    return int(ipaddress.IPv4Address(ip))


def pack_ipv4(ip: str) -> bytes:
    """The 4 network-order bytes of a dotted-quad IPv4 address (what BEP 5 tokens and BEP 42 hash)."""
    return ipv4_int(ip).to_bytes(4, "big")


# --- BEP 42 -------------------------------------------------------------------------------------

_V4_MASK = 0x030F3FFF
_PREFIX_BITS = 21
_PREFIX_SHIFT = ID_BITS - _PREFIX_BITS

_EXEMPT_V4 = (
    (0x0A000000, 8),  # 10.0.0.0/8
    (0xAC100000, 12),  # 172.16.0.0/12
    (0xC0A80000, 16),  # 192.168.0.0/16
    (0xA9FE0000, 16),  # 169.254.0.0/16
    (0x7F000000, 8),  # 127.0.0.0/8
)
"""Local ranges BEP 42 exempts from verification: their IDs cannot match an external IP anyway."""


def bep42_prefix(ip: str, r: int) -> int:
    """The 32-bit CRC32C of the masked IPv4 address with ``r & 7`` in its top 3 bits.

    A valid ID starts with the top 21 bits of this value and has ``r`` in the low 3 bits of its last byte.
    """
    masked = (ipv4_int(ip) & _V4_MASK) | ((r & 7) << 29)
    return crc32c(masked.to_bytes(4, "big"))


def bep42_node_id(ip: str, rng: random.Random, *, rand: int | None = None) -> int:
    """A random node ID that is valid for ``ip`` under BEP 42.

    ``rand`` is the ID's last byte (random when None); its low 3 bits are the BEP's ``r``, as in the
    BEP's example code and test vectors (e.g. rand 86 -> r 6, last byte 0x56).
    """
    last = rng.randrange(256) if rand is None else rand
    if not 0 <= last < 256:
        raise ValueError(f"rand must be a byte, got {last}")
    prefix = bep42_prefix(ip, last) >> (32 - _PREFIX_BITS)
    middle = rng.getrandbits(_PREFIX_SHIFT - 8)
    return (prefix << _PREFIX_SHIFT) | (middle << 8) | last


def bep42_valid(node_id: int, ip: str) -> bool:
    """Whether ``node_id`` matches ``ip`` per BEP 42 (pure check: exempt ranges are *not* special here)."""
    expected = bep42_prefix(ip, node_id & 7) >> (32 - _PREFIX_BITS)
    return node_id >> _PREFIX_SHIFT == expected


@lru_cache(maxsize=IPV4_CACHE_SIZE)
def bep42_exempt(ip: str) -> bool:
    """Whether ``ip`` is in a local range (loopback, private, link-local) that BEP 42 exempts."""
    value = ipv4_int(ip)
    return any(value >> (32 - bits) == net >> (32 - bits) for net, bits in _EXEMPT_V4)


def bep42_acceptable(node_id: int, ip: str) -> bool:
    """Exempt or valid: what the routing table records as ``verified`` (libtorrent's verify_id)."""
    return bep42_exempt(ip) or bep42_valid(node_id, ip)
