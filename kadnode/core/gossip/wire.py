"""Liveness claims and their compact wire form.

A claim is 31 bytes: kind (1) | subject ID (20) | subject IPv4 (4) | port (2) | incarnation (4, big
endian). The origin is *not* on the wire: every claim in a message is attributed to the node that sent
it, because kadnode nodes only send claims they vouch for (their own probe verdicts, their own
refutations, and ALIVE claims heard from the subject itself). Leaving it out keeps a claim under 32
bytes, and an origin field would prove nothing anyway (it is as forgeable as the rest).
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum

from kadnode.types import NodeInfo

CLAIM_SIZE = 31
"""Bytes per encoded claim."""
MAX_INCARNATION = (1 << 32) - 1
"""Incarnations are 4 bytes on the wire; Unix seconds fit until 2106."""
MAX_CLAIMS_PER_MESSAGE = 32
"""Hard cap on claims in one message (992 bytes): a decoder never builds more than this."""

_LAYOUT = struct.Struct(">B20s4sHI")
assert _LAYOUT.size == CLAIM_SIZE


class ClaimKind(IntEnum):
    ALIVE = 1
    SUSPECT = 2
    DEAD = 3


@dataclass(frozen=True, slots=True)
class Claim:
    """``origin`` says ``subject`` (at ``incarnation``) is ``kind``. ``origin`` is a node ID: ours for
    claims we make, the sender's for claims we decode."""

    kind: ClaimKind
    subject: NodeInfo
    incarnation: int
    origin: int


class ClaimDecodeError(ValueError):
    """The bytes are not a valid claim list. The only exception ``decode_claims`` raises."""


def encode_claims(claims: Iterable[Claim]) -> bytes:
    """Concatenated 31-byte claims. Raises ValueError for a claim that cannot be encoded (local misuse:
    not IPv4, port or incarnation out of range) or for more than ``MAX_CLAIMS_PER_MESSAGE`` claims."""
    out = []
    for claim in claims:
        node = claim.subject
        if not 0 <= claim.incarnation <= MAX_INCARNATION:
            raise ValueError("incarnation out of range")
        if not 0 <= node.id < 1 << 160:
            raise ValueError("node id out of range")
        if not 0 < node.addr[1] < 1 << 16:
            raise ValueError("port out of range")
        try:
            packed_ip = ipaddress.IPv4Address(node.addr[0]).packed
            raw_id = node.id.to_bytes(20, "big")
            out.append(_LAYOUT.pack(claim.kind, raw_id, packed_ip, node.addr[1], claim.incarnation))
        except (ipaddress.AddressValueError, struct.error) as exc:
            raise ValueError(f"cannot encode claim: {exc}") from None
    if len(out) > MAX_CLAIMS_PER_MESSAGE:
        raise ValueError("too many claims for one message")
    return b"".join(out)


def decode_claims(data: bytes, origin: int, *, max_claims: int = MAX_CLAIMS_PER_MESSAGE) -> list[Claim]:
    """Claims sent by ``origin``. Anything malformed (length, count, kind, port 0) raises ClaimDecodeError
    and nothing else: the whole message is refused rather than half-trusted."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ClaimDecodeError("claims must be bytes")
    data = bytes(data)
    if len(data) % CLAIM_SIZE:
        raise ClaimDecodeError(f"length {len(data)} is not a multiple of {CLAIM_SIZE}")
    count = len(data) // CLAIM_SIZE
    if count > min(max_claims, MAX_CLAIMS_PER_MESSAGE):
        raise ClaimDecodeError(f"{count} claims exceed the cap")
    claims = []
    for kind, raw_id, raw_ip, port, incarnation in _LAYOUT.iter_unpack(data):
        if kind not in ClaimKind._value2member_map_:
            raise ClaimDecodeError(f"unknown claim kind {kind}")
        if port == 0:
            raise ClaimDecodeError("port 0")
        subject = NodeInfo(int.from_bytes(raw_id, "big"), (str(ipaddress.IPv4Address(raw_ip)), port))
        claims.append(Claim(ClaimKind(kind), subject, incarnation, origin))
    return claims
