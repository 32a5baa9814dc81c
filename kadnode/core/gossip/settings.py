"""Gossip limits and intervals, each with its source (to be folded into ``kadnode.settings.Settings``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class GossipSettings:
    probe_interval: float = 1.0
    """Seconds between probe rounds (SWIM's protocol period; memberlist's LAN ProbeInterval)."""
    probe_timeout: float = 0.5
    """Wait for a direct ack before asking helpers (memberlist LAN ProbeTimeout); must be < probe_interval."""
    indirect_probes: int = 3
    """Helpers asked to probe a target that missed a direct probe (SWIM's k; memberlist IndirectChecks)."""
    suspicion_mult: int = 4
    """Suspicion lasts at least suspicion_mult·log10(max(N, 10))·probe_interval (memberlist SuspicionMult)."""
    suspicion_max_mult: int = 6
    """...and at most this many times that without confirmations (memberlist SuspicionMaxTimeoutMult)."""
    retransmit_mult: int = 4
    """Each claim is sent at most retransmit_mult·ceil(log10(N + 1)) times (memberlist RetransmitMult)."""
    max_health_multiplier: int = 8
    """Cap of the local health multiplier (Lifeguard; memberlist AwarenessMaxMultiplier)."""
    min_failed_rounds: int = 8
    """Consecutive failed rounds of our own (direct + indirect) before we evict. Behind 20% loss a live
    node fails one round 7% of the time (a node whose direct probes succeed half the time: 16%); eight
    in a row is 1e-9 (2e-7), small enough for the ~1e6 suspicions a 10,000-node network sees in 30
    minutes. Re-probed once per interval, eight rounds take about the minimum suspicion timeout anyway."""
    gossip_bytes_per_second: float = 200.0
    """Token-bucket rate for everything gossip sends (probes, indirect requests, piggybacked claims).
    Issue 5 allows 300 B/s per node: a node also *answers* about one probe per probe_interval
    (~80 B with IP/UDP headers, not ours to refuse), so 300 - 80 ≈ 220, rounded down; our own probe at
    1/s takes ~100 of it and leaves ~100 B/s (3 claims/s) for claims and indirect probes."""
    gossip_burst_seconds: float = 120.0
    """Bucket depth in seconds of rate (24 KB). Steady probing uses about half the rate, so the bucket is
    full when members crash, and verifying them (up to min_failed_rounds × 400 B each) is not held back;
    over the issue's 30 minutes the depth adds at most 24 KB / 1800 s ≈ 13 B/s to the average."""
    probe_bytes: int = 100
    """What one probe costs on the wire: a bencoded kn_gossip/ping query (~70 B) + 28 B of IPv4/UDP."""
    max_claims_per_message: int = 16
    """Claims piggybacked on one message (496 B), keeping KRPC datagrams well under the 1,400 B MTU."""
    hearsay_probe_min_interval: float = 30.0
    """At most one hearsay-triggered probe per subject per this many seconds, so forged claims cannot
    make us flood anyone (SWIM's rate is one probe per member per round; this is the round at N≈30)."""
    max_behalf_in_flight: int = 16
    """Probes we run for other nodes at once (the helper side); more requests are refused."""
    sweep_probes_per_second: float = 8.0
    """Pace of a sweep: on evidence of churn we probe every member once at this rate (on top of the round
    robin, scaled down by local health like every interval), so ~75 members take ~10 s instead of the
    round robin's ~75 s. Paid from the token bucket above a floor kept for claims and regular rounds, so
    it cannot raise the long-run byte rate. 0 disables sweeps."""
    sweep_min_interval: float = 60.0
    """At most one sweep started per this many seconds: whatever triggers them (honest churn, forged
    claims), sweeps add at most one probe per member per this period."""
    sweep_skip_fresh: float = 10.0
    """A member that acked us or sent us anything this recently is not probed by a sweep yet: it leaves the
    sweep if it speaks again, else it is probed once this long has passed since we last heard it (a member
    heard just before it crashed must not escape the sweep)."""

    def __post_init__(self) -> None:
        if not 0 < self.probe_timeout < self.probe_interval:
            raise ValueError("need 0 < probe_timeout < probe_interval")
        if self.gossip_bytes_per_second <= 0 or self.probe_bytes <= 0 or self.min_failed_rounds < 1:
            raise ValueError("rates, sizes and min_failed_rounds must be positive")
        if not (self.sweep_probes_per_second >= 0 and self.sweep_min_interval >= 0 and self.sweep_skip_fresh >= 0):
            raise ValueError("sweep settings must be >= 0 (sweep_probes_per_second=0 disables sweeps)")
