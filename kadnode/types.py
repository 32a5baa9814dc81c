"""Small value types shared by every layer."""

from __future__ import annotations

from dataclasses import dataclass

Addr = tuple[str, int]
"""An IPv4 UDP endpoint: (dotted-quad host, port)."""


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """A DHT node as other nodes know it: its 160-bit ID (as an int) and its UDP endpoint."""

    id: int
    addr: Addr
