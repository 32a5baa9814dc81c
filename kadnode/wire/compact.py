"""BEP 5 compact encodings: 6-byte IPv4 peers, 26-byte nodes, 20-byte node IDs.

IPv4 only, as BEP 5 defines them. Hosts must be dotted quads: `inet_pton` refuses the shorthand forms
("127.1") that `inet_aton` would quietly accept.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable
from functools import lru_cache

from kadnode.types import Addr, NodeInfo

ID_BYTES = 20
PEER_BYTES = 6
NODE_BYTES = ID_BYTES + PEER_BYTES
_ID_LIMIT = 1 << (8 * ID_BYTES)
NODE_CACHE_SIZE = 16384
"""Decoded compact nodes kept for reuse (about 6 MB when full): more than a large simulation holds."""
IPV4_CACHE_SIZE = 16384
"""Packed IPv4 addresses kept for reuse."""


class CompactError(ValueError):
    """A value does not fit, or bytes do not decode to, a compact encoding."""


def encode_peer(addr: Addr) -> bytes:
    """6 bytes: the IPv4 address and the big-endian port."""
    host, port = addr
    if not isinstance(host, str):
        raise CompactError(f"host must be a dotted-quad string, not {type(host).__name__}")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 0xFFFF:
        raise CompactError(f"port {port!r} is not in 0..65535")
    return _pack_ipv4(host) + port.to_bytes(2, "big")


@lru_cache(maxsize=IPV4_CACHE_SIZE)
def _pack_ipv4(host: str) -> bytes:
    """inet_pton, cached: a node encodes the same few hundred table endpoints over and over."""
    try:
        return socket.inet_pton(socket.AF_INET, host)
    except OSError:
        raise CompactError(f"{host!r} is not an IPv4 address") from None


def decode_peer(data: bytes) -> Addr:
    """The (host, port) in exactly 6 bytes."""
    if len(data) != PEER_BYTES:
        raise CompactError(f"compact peer must be {PEER_BYTES} bytes, not {len(data)}")
    return socket.inet_ntoa(data[:4]), int.from_bytes(data[4:6], "big")


def encode_nodes(nodes: Iterable[NodeInfo]) -> bytes:
    """26 bytes per node: the 20-byte ID, then the compact peer."""
    try:
        return b"".join(
            node.id.to_bytes(ID_BYTES, "big") + _pack_ipv4(node.addr[0]) + node.addr[1].to_bytes(2, "big")
            for node in nodes
        )
    except (OverflowError, AttributeError, TypeError) as exc:  # an ID or port out of range, a bad host
        raise CompactError(f"cannot encode node: {exc}") from None


def decode_nodes(data: bytes) -> list[NodeInfo]:
    """Every node in a compact node string (its length must be a multiple of 26)."""
    if len(data) % NODE_BYTES:
        raise CompactError(f"compact node info length {len(data)} is not a multiple of {NODE_BYTES}")
    node = _decode_node
    return [node(data[i : i + NODE_BYTES]) for i in range(0, len(data), NODE_BYTES)]


@lru_cache(maxsize=NODE_CACHE_SIZE)
def _decode_node(data: bytes) -> NodeInfo:
    """One 26-byte node, interned: a node hears of the same few thousand nodes in reply after reply, and
    every lookup that holds one then shares one object (NodeInfo is immutable)."""
    addr = (socket.inet_ntoa(data[ID_BYTES:24]), int.from_bytes(data[24:], "big"))
    return NodeInfo(int.from_bytes(data[:ID_BYTES], "big"), addr)


def id_to_bytes(node_id: int) -> bytes:
    """The 20-byte big-endian form of a 160-bit ID."""
    if isinstance(node_id, bool) or not isinstance(node_id, int) or not 0 <= node_id < _ID_LIMIT:
        raise CompactError(f"node id {node_id!r} is not in [0, 2**160)")
    return node_id.to_bytes(ID_BYTES, "big")


def id_from_bytes(data: bytes) -> int:
    """The ID in exactly 20 bytes."""
    if len(data) != ID_BYTES:
        raise CompactError(f"node id must be {ID_BYTES} bytes, not {len(data)}")
    return int.from_bytes(data, "big")
