"""What the node's operations report back: small frozen values, partial results included."""

from __future__ import annotations

from dataclasses import dataclass, field

from kadnode.types import Addr, NodeInfo


@dataclass(frozen=True, slots=True)
class PingResult:
    addr: Addr
    ok: bool
    node_id: int | None = None
    rtt: float | None = None
    error: str | None = None
    """Why it failed: "timeout", or "error 20x: message" for a KRPC error reply."""


@dataclass(frozen=True, slots=True)
class LookupResult:
    """An iterative lookup's outcome: the closest nodes that answered, and how it went."""

    target: int
    closest: list[NodeInfo]
    """Up to k nodes that answered, closest to the target first."""
    queried: int
    responded: int
    failed: int
    duration: float
    timed_out: bool = False
    """True when the lookup hit `lookup_timeout` before converging."""


@dataclass(frozen=True, slots=True)
class GetPeersResult:
    info_hash: bytes
    peers: list[Addr]
    """Distinct peers announced for the info-hash, in the order first seen."""
    lookup: LookupResult
    tokens: dict[Addr, bytes] = field(default_factory=dict)
    """Write tokens handed out by the closest responders (for a following announce)."""


@dataclass(frozen=True, slots=True)
class AnnounceResult:
    info_hash: bytes
    port: int | None
    """None when announced with implied_port (the receiver uses our UDP source port)."""
    stored_at: int
    """Nodes that acknowledged the announce_peer."""
    attempted: int
    peers: list[Addr]
    """Peers the get_peers phase found along the way."""


@dataclass(frozen=True, slots=True)
class BootstrapResult:
    seeds_tried: int
    seeds_answered: int
    table_size: int
    lookup: LookupResult | None
    """The self-lookup that fills the table; None when no seed answered."""
