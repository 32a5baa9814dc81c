"""What the node's operations report back: small frozen values, partial results included."""

from __future__ import annotations

from dataclasses import dataclass, field

from kadnode.storage.base import Item
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
    hops: int = 0
    """Referral hops to the closest node found: 1 when a node we started from was the closest."""


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


@dataclass(frozen=True, slots=True)
class GetResult:
    """A BEP 44 get lookup: the best valid item found (highest seq for mutable items)."""

    target: bytes
    item: Item | None
    lookup: LookupResult
    holders: int
    """Nodes known to hold the item (for a mutable item: at the returned seq): the responders that
    returned it, plus this node if it stores it for others. An immutable get ends at its first copy."""
    invalid: int
    """Responses whose item failed verification (wrong hash, bad signature): counted, never used."""
    tokens: dict[Addr, bytes] = field(default_factory=dict)
    """Write tokens from the closest responders, for a following put."""
    seqs: dict[Addr, int] = field(default_factory=dict)
    """The seq each closest responder holds for a mutable item (for cas)."""


@dataclass(frozen=True, slots=True)
class PutResult:
    """A BEP 44 put: a get lookup for tokens, then put to the k closest nodes that gave one."""

    target: bytes
    item: Item
    stored_at: int
    attempted: int
    errors: dict[int, int] = field(default_factory=dict)
    """KRPC error code -> how many nodes answered with it (e.g. 301 cas mismatch, 302 old seq)."""
