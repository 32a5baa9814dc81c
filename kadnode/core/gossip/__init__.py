"""Liveness gossip (issue 5): SWIM probing, Lifeguard suspicion and local health, bounded dissemination.

Protocol-independent and sans-I/O; see docs/gossip.md. The modules: ``wire`` (claims and their 31-byte
encoding), ``settings``, ``suspicion`` (timeouts), ``dissemination`` (claim queue, bandwidth budget) and
``machine`` (the ``Gossip`` state machine and its actions).
"""

from kadnode.core.gossip.dissemination import ByteMeter, ClaimQueue, TokenBucket, retransmit_limit
from kadnode.core.gossip.machine import (
    Action,
    Candidate,
    Evict,
    Gossip,
    IndirectProbe,
    IndirectReply,
    Probe,
    Questionable,
)
from kadnode.core.gossip.settings import GossipSettings
from kadnode.core.gossip.suspicion import Suspicion, expected_confirmations, suspicion_bounds, suspicion_timeout
from kadnode.core.gossip.wire import (
    CLAIM_SIZE,
    MAX_CLAIMS_PER_MESSAGE,
    MAX_INCARNATION,
    Claim,
    ClaimDecodeError,
    ClaimKind,
    decode_claims,
    encode_claims,
)

__all__ = [
    "CLAIM_SIZE",
    "MAX_CLAIMS_PER_MESSAGE",
    "MAX_INCARNATION",
    "Action",
    "ByteMeter",
    "Candidate",
    "Claim",
    "ClaimDecodeError",
    "ClaimKind",
    "ClaimQueue",
    "Evict",
    "Gossip",
    "GossipSettings",
    "IndirectProbe",
    "IndirectReply",
    "Probe",
    "Questionable",
    "Suspicion",
    "TokenBucket",
    "decode_claims",
    "encode_claims",
    "expected_confirmations",
    "retransmit_limit",
    "suspicion_bounds",
    "suspicion_timeout",
]
