"""The liveness-gossip state machine (SWIM + Lifeguard), sans-I/O.

Members are the nodes of our routing table. Time comes in as ``now`` and randomness as an injected
``random.Random``; every event method returns the actions the caller must carry out.

The safety rule: a claim never evicts anything. Hearsay (SUSPECT or DEAD from others) makes a member
SUSPECT locally, yields ``Questionable`` and schedules our own probe of it (at most one per subject per
``hearsay_probe_min_interval``). Only our own probe rounds (direct, then indirect through helpers), failing
``min_failed_rounds`` times in a row with no sign of life in between, *and* outlasting the suspicion timeout
yield ``Evict``; and the caller evicts only in favour of a waiting replacement (the routing table's rule).
Any ack or message from a member clears everything at once. We send only claims we vouch for: our own
verdicts, our own refutations, and ALIVE claims the subject sent us itself, so honest nodes never amplify a
forged claim.

Sweeps: evidence of churn (a failed round of ours starting a new suspicion, or anyone's SUSPECT/DEAD claim
about anyone but us) makes us probe every member once, faster than the round robin, at most once per
``sweep_min_interval`` and paid from the same token bucket; a sweep only changes *when* we probe, so the
eviction rule above is untouched.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from dataclasses import dataclass
from typing import Any

from kadnode.core.gossip.dissemination import ByteMeter, ClaimQueue, TokenBucket, retransmit_limit
from kadnode.core.gossip.settings import GossipSettings
from kadnode.core.gossip.suspicion import Suspicion, expected_confirmations, suspicion_bounds
from kadnode.core.gossip.wire import (
    CLAIM_SIZE,
    MAX_CLAIMS_PER_MESSAGE,
    MAX_INCARNATION,
    Claim,
    ClaimKind,
    encode_claims,
)
from kadnode.types import NodeInfo

# --- actions ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Probe:
    """Send a probe (kn_gossip query, or ``ping`` when ``plain``) to ``target`` and report its outcome
    within ``timeout``: ``probe_acked``/``probe_failed``, or ``behalf_result`` when ``on_behalf_of``."""

    target: NodeInfo
    plain: bool
    timeout: float
    on_behalf_of: int | None = None


@dataclass(frozen=True, slots=True)
class IndirectProbe:
    """Ask each helper to probe ``target`` for us, giving it ``helper_timeout`` (sent in the request) so its
    nack can reach us before our ``timeout``; report ``indirect_acked``/``indirect_failed``."""

    target: NodeInfo
    helpers: tuple[NodeInfo, ...]
    timeout: float
    helper_timeout: float


@dataclass(frozen=True, slots=True)
class IndirectReply:
    """Helper side: tell ``requester`` whether ``target`` answered the probe we ran for it."""

    requester: NodeInfo
    target: int
    acked: bool


@dataclass(frozen=True, slots=True)
class Questionable:
    """Stop treating ``node_id`` as good until it answers (it stays in the table)."""

    node_id: int


@dataclass(frozen=True, slots=True)
class Evict:
    """Our own probes say ``node_id`` is dead: evict it if (and only if) a replacement is waiting."""

    node_id: int


@dataclass(frozen=True, slots=True)
class Candidate:
    """A node we do not track was claimed alive: at most a replacement candidate, never good."""

    node: NodeInfo


NACK_SHARE = 0.8
"""A helper gets this share of our remaining round time, so its nack arrives in time (Lifeguard §4.3)."""

Action = Probe | IndirectProbe | IndirectReply | Questionable | Evict | Candidate

# --- member state -------------------------------------------------------------------------------


@dataclass(slots=True)
class _Member:
    node: NodeInfo
    plain: bool = False
    gossips: bool = False
    """It has spoken kn_gossip to us (a query, a reply, or claims on other traffic): claims may ride on any
    message to it. Members not known to gossip get claims only in kn_gossip probes, which find out."""
    status: ClaimKind = ClaimKind.ALIVE
    incarnation: int = 0
    suspicion: Suspicion | None = None
    failed_rounds: int = 0
    """Our own consecutive failed probe rounds; any sign of life resets it."""
    vouched: bool = False
    """We have queued our own SUSPECT claim for the current suspicion."""
    last_hearsay_probe: float = -math.inf
    last_heard: float | None = None
    """Our last first-hand sign of life from it: an ack (direct, through a helper, or to a probe we ran for
    someone), or any message (``heard_from``). Sweeps skip members heard recently."""


@dataclass(slots=True)
class _Round:
    target: int
    deadline: float
    direct_failed: bool = False
    asked: frozenset[int] = frozenset()
    waiting: frozenset[int] = frozenset()
    helper_answered: bool = False
    conclusive: bool = True


class Gossip:
    """One node's gossip state. ``incarnation`` must grow across restarts (pass the start time in Unix
    seconds): claims about our previous run then carry smaller incarnations and can never override us,
    and it fits the 4-byte wire field until 2106."""

    def __init__(
        self,
        own: NodeInfo,
        rng: random.Random,
        now: float,
        *,
        incarnation: int,
        settings: GossipSettings | None = None,
    ) -> None:
        if not 0 <= incarnation < MAX_INCARNATION:
            raise ValueError("incarnation out of range")
        self.own = own
        self.settings = s = settings or GossipSettings()
        self.incarnation = incarnation
        self.health = 0
        """Lifeguard's local health multiplier: probe interval and timeouts scale by health + 1."""
        self.counters: Counter[str] = Counter()
        self._rng = rng
        self._members: dict[int, _Member] = {}
        self._order: list[int] = []
        self._pos = 0
        self._rounds: dict[int, _Round] = {}
        self._urgent: dict[int, float] = {}
        """Re-probes of members our own rounds failed: due at these times, outside the slot."""
        self._suspects: dict[int, _Member] = {}
        """Members with a running suspicion: what ``tick`` and ``next_deadline`` walk, not every member."""
        self._hearsay: dict[int, float] = {}
        """Checks of members others accused: each takes a round-robin slot, so forged claims cannot raise
        our probe rate, only reorder it."""
        self._behalf: dict[tuple[int, int], tuple[float, NodeInfo]] = {}
        self._next_slot = now
        self._last_now = now
        self._last_refute_penalty = -math.inf
        self._queue = ClaimQueue()
        self._bucket = TokenBucket(s.gossip_bytes_per_second, s.gossip_bytes_per_second * s.gossip_burst_seconds, now)
        self._meter = ByteMeter(now)
        self._round_cost = s.probe_bytes * (s.indirect_probes + 1)
        self._probe_reserve = self._round_cost + 2 * s.probe_bytes
        """Budget claims never touch: one full probe round and one helper request stay affordable."""
        floor = self._probe_reserve + s.max_claims_per_message * CLAIM_SIZE
        self._sweep_floor = max(0.0, min(floor, self._bucket.capacity - self._round_cost))
        """Budget sweeps never touch: whatever triggers them, a full message of claims (refutations, our
        verdicts) and the regular rounds stay affordable (less in a bucket too small for that)."""
        self._sweep: dict[int, None] = {}
        """The running sweep's to-do list, stalest first: members it has yet to probe. A member leaves it
        when heard from, so the ``last_heard`` of those in it never changes and the order holds."""
        self._sweep_started = -math.inf
        self._next_sweep = now
        self._queue.push(Claim(ClaimKind.ALIVE, own, incarnation, own.id))  # tell our contacts who we are

    # --- membership -----------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._members)

    def __contains__(self, node_id: object) -> bool:
        return node_id in self._members

    @property
    def bytes_sent(self) -> int:
        return self._meter.total

    def is_plain(self, node_id: int) -> bool:
        """Whether ``node_id`` answered 204 to kn_gossip (probed with ``ping``, never sent claims)."""
        member = self._members.get(node_id)
        return member is not None and member.plain

    def gossips(self, node_id: int) -> bool:
        """Whether ``node_id`` is a member known to speak kn_gossip: claims may ride on any message to it."""
        member = self._members.get(node_id)
        return member is not None and member.gossips and not member.plain

    def mark_gossiper(self, node_id: int) -> None:
        """``node_id`` spoke kn_gossip to us (a query, a reply, or claims piggybacked on other traffic)."""
        member = self._members.get(node_id)
        if member is not None:
            member.gossips = True

    def status_of(self, node_id: int) -> ClaimKind | None:
        member = self._members.get(node_id)
        return None if member is None else member.status

    def add(self, node: NodeInfo, now: float) -> None:
        """Track ``node`` (it entered our routing table); it joins this probe round at a random place."""
        if node.id == self.own.id or node.id in self._members:
            return
        self._members[node.id] = _Member(node)
        self._order.insert(self._rng.randint(0, len(self._order)), node.id)

    def check_soon(self, node_id: int, now: float) -> None:
        """Probe member ``node_id`` as soon as the budget allows, outside the round robin: it entered our
        table without a recent answer. After a mass crash the replacements promoted in place of the dead
        may have crashed too; the round robin would reach them only a whole round later."""
        if node_id in self._members and node_id not in self._rounds and node_id not in self._urgent:
            self._urgent[node_id] = now
            self.counters["probes.stale_added"] += 1

    def remove(self, node_id: int) -> None:
        """Stop tracking ``node_id`` (it left our routing table). Claims already queued still go out."""
        if self._members.pop(node_id, None) is not None:
            self._rounds.pop(node_id, None)
            self._suspects.pop(node_id, None)
            self._urgent.pop(node_id, None)
            self._hearsay.pop(node_id, None)
            self._sweep.pop(node_id, None)

    def mark_plain(self, node_id: int) -> None:
        """``node_id`` answered 204 to kn_gossip: probe it with ``ping``, never send it claims or ask it
        to probe for us."""
        member = self._members.get(node_id)
        if member is not None:
            member.plain = True

    # --- probing --------------------------------------------------------------------------------

    def next_probe(self, now: float) -> Probe | None:
        """The next probe due: re-probes of suspects first, then the slot (a hearsay check, else the
        round robin), then a sweep's next member.
        Call until None. A round starts only when the budget could pay for it in full (the probe and its
        helpers), so that a round is never cut short into weaker evidence; the probe is charged at once."""
        self._last_now = now
        if not self._bucket.has(self._round_cost, now):  # start only rounds we can finish (with helpers)
            return None
        target: int | None = None
        due = [(when, node_id) for node_id, when in self._urgent.items() if when <= now and node_id not in self._rounds]
        if due:
            _, target = min(due)
            del self._urgent[target]
        elif now >= self._next_slot and self._members:
            self._next_slot = now + self._scaled(self.settings.probe_interval)
            checks = [(when, i) for i, when in self._hearsay.items() if when <= now and i not in self._rounds]
            if checks:
                _, target = min(checks)
                del self._hearsay[target]
                self.counters["probes.hearsay"] += 1
            else:
                target = self._next_in_order()
        if target is None:
            target = self._sweep_target(now)
        if target is None:
            return None
        return self._start_round(self._members[target], now)

    def churn_evidence(self, now: float) -> bool:
        """Evidence that nodes are failing: start a sweep (True) unless one is running, the last started
        less than ``sweep_min_interval`` ago, or sweeps are off. Called by the machine itself on a new
        suspicion of ours and on SUSPECT/DEAD claims; the caller may add its own evidence. Safe whatever
        its source: a sweep only probes our own members sooner, within the budget."""
        self._last_now = now
        s = self.settings
        if s.sweep_probes_per_second <= 0 or self._sweep or now - self._sweep_started < s.sweep_min_interval:
            return False
        todo = [i for i, m in self._members.items() if m.status is not ClaimKind.DEAD and i not in self._rounds]
        if not todo:
            return False
        self._rng.shuffle(todo)  # ties in random order, then the stalest (never heard: first) go first
        todo.sort(key=lambda i: -math.inf if (heard := self._members[i].last_heard) is None else heard)
        self._sweep = dict.fromkeys(todo)
        self._sweep_started = self._next_sweep = now
        self.counters["sweeps"] += 1
        return True

    def probe_acked(self, node_id: int, now: float, incarnation: int | None = None) -> list[Action]:
        """The target answered our direct probe (a kn_gossip reply carries its ``incarnation``)."""
        self._alive(node_id, now, incarnation=incarnation)
        return []

    def heard_from(self, node_id: int, now: float, incarnation: int | None = None) -> list[Action]:
        """Any message from ``node_id``: it is alive, whatever anyone claimed. kn_gossip messages carry
        the sender's ``incarnation``, so members learn it first-hand and our claims about them agree."""
        self._alive(node_id, now, incarnation=incarnation)
        return []

    def probe_failed(self, node_id: int, now: float) -> list[Action]:
        """Our direct probe timed out: ask helpers, or fail the round if there are none."""
        self._last_now = now
        rnd = self._rounds.get(node_id)
        if rnd is None or rnd.direct_failed:
            return []
        rnd.direct_failed = True
        self.counters["probes.direct_failed"] += 1
        pool = self._helper_pool(node_id)
        wanted = min(self.settings.indirect_probes, len(pool))
        affordable = int(self._bucket.available(now) // self.settings.probe_bytes)
        helpers = self._rng.sample(pool, min(wanted, affordable))
        rnd.conclusive = len(helpers) == wanted  # a round the budget cut short proves nothing
        if not helpers:
            return self._round_failed(rnd, now)
        self._spend(len(helpers) * self.settings.probe_bytes, now)
        rnd.asked = rnd.waiting = frozenset(h.id for h in helpers)
        self.counters["indirect.sent"] += len(helpers)
        remaining = max(0.0, rnd.deadline - now)
        return [IndirectProbe(self._members[node_id].node, tuple(helpers), remaining, NACK_SHARE * remaining)]

    def indirect_acked(self, target_id: int, helper_id: int, now: float) -> list[Action]:
        rnd = self._rounds.get(target_id)
        if rnd is not None and helper_id in rnd.asked:
            self.counters["indirect.acked"] += 1
            self._alive(target_id, now)
        return []

    def indirect_failed(self, target_id: int, helper_id: int, now: float, *, helper_answered: bool) -> list[Action]:
        """``helper_answered``: the helper replied that the target did not answer it (a Lifeguard nack,
        proof that *we* can still reach others); False: the helper did not reply at all."""
        rnd = self._rounds.get(target_id)
        if rnd is None or helper_id not in rnd.waiting:
            return []
        self.counters["indirect.nacked" if helper_answered else "indirect.lost"] += 1
        rnd.helper_answered |= helper_answered
        rnd.waiting = rnd.waiting - {helper_id}
        return [] if rnd.waiting else self._round_failed(rnd, now)

    def probe_on_behalf(
        self, target: NodeInfo, requester: NodeInfo, now: float, timeout: float | None = None
    ) -> list[Action]:
        """Helper side: ``requester`` asks us to probe ``target`` within ``timeout`` (its
        ``helper_timeout``; never more than our own probe timeout). One request per pair at a time, at most
        ``max_behalf_in_flight`` in all, charged to our budget (a probe and the reply): we relay, we do
        not amplify. Report the outcome with ``behalf_result``."""
        self._expire_behalf(now)
        key = (target.id, requester.id)
        if target.id == self.own.id:
            return [IndirectReply(requester, target.id, True)]
        if (
            key in self._behalf
            or len(self._behalf) >= self.settings.max_behalf_in_flight
            or not self._spend(2 * self.settings.probe_bytes, now)
        ):
            self.counters["indirect.refused"] += 1
            return []
        own_timeout = self._scaled(self.settings.probe_timeout)
        timeout = own_timeout if timeout is None else max(0.0, min(timeout, own_timeout))
        self._behalf[key] = (now + 2 * timeout, requester)  # room for a late result
        self.counters["indirect.behalf"] += 1
        member = self._members.get(target.id)
        return [Probe(target, member is not None and member.plain, timeout, on_behalf_of=requester.id)]

    def behalf_result(self, target_id: int, requester_id: int, acked: bool, now: float) -> list[Action]:
        """The probe we ran for ``requester_id`` ended: the reply to send back."""
        entry = self._behalf.pop((target_id, requester_id), None)
        if entry is None:
            return []
        if acked:
            self._alive(target_id, now, probe=False)
        return [IndirectReply(entry[1], target_id, acked)]

    def tick(self, now: float) -> list[Action]:
        """Run what is due: rounds whose period ended without an ack, suspicions that timed out."""
        self._last_now = now
        actions: list[Action] = []
        for rnd in [r for r in self._rounds.values() if r.deadline <= now]:
            actions += self._round_failed(rnd, now)
        for member in list(self._suspects.values()):
            if member.suspicion is not None and member.suspicion.deadline <= now:
                actions += self._maybe_dead(member, now)
        self._expire_behalf(now)
        return actions

    def next_deadline(self) -> float | None:
        """When ``tick``/``next_probe`` next has work (None: nothing scheduled)."""
        times = [r.deadline for r in self._rounds.values()]
        times += [when for when, _ in self._behalf.values()]
        times += [
            m.suspicion.deadline
            for m in self._suspects.values()
            if m.suspicion is not None and m.suspicion.deadline > self._last_now
        ]
        probe_times = [when for node_id, when in self._urgent.items() if node_id not in self._rounds]
        if self._members:
            probe_times.append(self._next_slot)
        if probe_times:
            ready = self._bucket.ready_at(self._round_cost, self._last_now)
            times.append(max(min(probe_times), ready))
        swept = self._sweep_next()
        if swept is not None:
            ready = self._bucket.ready_at(self._round_cost + self._sweep_floor, self._last_now)
            times.append(max(self._sweep_ready_at(swept), self._next_sweep, ready))
        return min(times) if times else None

    # --- claims ---------------------------------------------------------------------------------

    def receive_claims(self, claims: list[Claim], now: float) -> list[Action]:
        """Claims that arrived on a message (decoded with the sender as origin)."""
        self._last_now = now
        actions: list[Action] = []
        churn = False
        for claim in claims[:MAX_CLAIMS_PER_MESSAGE]:
            self.counters["claims.received"] += 1
            subject = claim.subject
            if subject.id == self.own.id:
                self._about_me(claim, now)
                continue
            churn |= claim.kind is not ClaimKind.ALIVE  # even about a stranger: a reason to check our own
            member = self._members.get(subject.id)
            if member is None:
                if claim.kind is ClaimKind.ALIVE:
                    self.counters["candidates"] += 1
                    actions.append(Candidate(subject))
                else:
                    self.counters["claims.ignored"] += 1
            elif subject.addr != member.node.addr:
                self.counters["claims.ignored"] += 1  # the same ID elsewhere: not the node we track
            elif claim.kind is ClaimKind.ALIVE:
                self._alive_claim(member, claim)
            else:
                actions += self._accusation(member, claim, now)
        if churn:
            self.churn_evidence(now)
        return actions

    def take_piggyback(self, max_bytes: int, now: float, dest: int | None = None) -> bytes:
        """Encoded claims to attach to a message for ``dest`` (empty for plain peers), within
        ``max_bytes`` and the bandwidth budget, leaving enough of it for a full probe round."""
        member = self._members.get(dest) if dest is not None else None
        if member is not None and member.plain:
            return b""
        spare = self._bucket.available(now) - self._probe_reserve
        count = min(self.settings.max_claims_per_message, max_bytes // CLAIM_SIZE, int(spare // CLAIM_SIZE))
        claims = self._queue.take(count, retransmit_limit(self.settings.retransmit_mult, len(self._members) + 1))
        if not claims:
            return b""
        data = encode_claims(claims)
        self._spend(len(data), now)
        self.counters["claims.sent"] += len(claims)
        return data

    # --- visibility -----------------------------------------------------------------------------

    def view(self, now: float) -> dict[str, Any]:
        states = Counter(m.status for m in self._members.values())
        return {
            "members": len(self._members),
            "alive": states[ClaimKind.ALIVE],
            "suspect": states[ClaimKind.SUSPECT],
            "dead": states[ClaimKind.DEAD],
            "plain": sum(m.plain for m in self._members.values()),
            "local_health": self.health,
            "incarnation": self.incarnation,
            "bytes_per_second": round(self._meter.rate(now), 1),
            "bytes_sent": self._meter.total,
            "claims_queued": len(self._queue),
            "probes_in_flight": len(self._rounds),
            "sweeping": len(self._sweep),
        }

    # --- internals ------------------------------------------------------------------------------

    def _scaled(self, seconds: float) -> float:
        return seconds * (self.health + 1)

    def _spend(self, size: int, now: float) -> bool:
        if not self._bucket.spend(size, now):
            return False
        self._meter.add(size, now)
        return True

    def _next_in_order(self) -> int | None:
        """Round robin over a shuffled order, reshuffled each round (SWIM §4.3: bounded detection time)."""
        for _ in range(len(self._order) + 1):
            if self._pos >= len(self._order):
                self._order = list(self._members)
                self._rng.shuffle(self._order)
                self._pos = 0
            node_id = self._order[self._pos]
            self._pos += 1
            if node_id in self._members and node_id not in self._rounds and node_id not in self._urgent:
                return node_id
        return None

    def _sweep_ready_at(self, node_id: int) -> float:
        """When the sweep may probe ``node_id``: at once, or once we have not heard it for
        ``sweep_skip_fresh`` (the same expression decides in ``_sweep_target`` and ``next_deadline``)."""
        heard = self._members[node_id].last_heard
        return -math.inf if heard is None else heard + self.settings.sweep_skip_fresh

    def _sweep_next(self) -> int | None:
        """The sweep's next member: the stalest one not already due for a re-probe of its own (it waits for
        that). Stalest first means no other member is ready before it."""
        for node_id in self._sweep:
            if node_id not in self._urgent and node_id not in self._rounds:
                return node_id
        return None

    def _sweep_target(self, now: float) -> int | None:
        """The sweep's next member if it is due (fresh ones wait until they are not) and the budget above
        the sweep floor pays a full round."""
        if not self._sweep or now < self._next_sweep:
            return None
        node_id = self._sweep_next()
        if node_id is None or now < self._sweep_ready_at(node_id):
            return None
        if not self._bucket.has(self._round_cost + self._sweep_floor, now):
            return None
        self._next_sweep = now + self._scaled(1.0 / self.settings.sweep_probes_per_second)
        self.counters["probes.sweep"] += 1
        return node_id

    def _start_round(self, member: _Member, now: float) -> Probe:
        node_id = member.node.id
        self._sweep.pop(node_id, None)  # any round of ours to it counts as its sweep probe
        self._rounds[node_id] = _Round(node_id, now + self._scaled(self.settings.probe_interval))
        self._spend(self.settings.probe_bytes, now)
        self.counters["probes.sent"] += 1
        return Probe(member.node, member.plain, self._scaled(self.settings.probe_timeout))

    def _helper_pool(self, target: int) -> list[NodeInfo]:
        """Who may probe ``target`` for us: gossip-capable members we currently believe alive."""
        return [
            m.node
            for node_id, m in self._members.items()
            if node_id != target and not m.plain and m.status is ClaimKind.ALIVE
        ]

    def _alive(self, node_id: int, now: float, *, probe: bool = True, incarnation: int | None = None) -> None:
        """First-hand sign of life: ends any round (as a success) and any suspicion of the node."""
        if self._rounds.pop(node_id, None) is not None and probe:
            self.counters["probes.acked"] += 1
            self.health = max(0, self.health - 1)
        member = self._members.get(node_id)
        if member is None:
            return
        if incarnation is not None and member.incarnation < incarnation <= MAX_INCARNATION:
            member.incarnation = incarnation
        member.last_heard = now
        self._sweep.pop(node_id, None)  # alive since the sweep started: nothing to check
        member.failed_rounds = 0
        if member.status is not ClaimKind.ALIVE:
            self._clear(member)

    def _clear(self, member: _Member) -> None:
        member.status = ClaimKind.ALIVE
        member.suspicion = None
        self._suspects.pop(member.node.id, None)
        member.failed_rounds = 0
        member.vouched = False
        self._urgent.pop(member.node.id, None)
        self._hearsay.pop(member.node.id, None)

    def _round_failed(self, rnd: _Round, now: float) -> list[Action]:
        """A whole round failed (direct and every helper): our own evidence against the target."""
        self._rounds.pop(rnd.target, None)
        self.counters["probes.failed"] += 1
        if rnd.asked and not rnd.helper_answered:  # nobody answered us at all: maybe we are the sick one
            self.health = min(self.settings.max_health_multiplier, self.health + 1)
        member = self._members.get(rnd.target)
        if member is None or member.status is ClaimKind.DEAD:
            return []
        if not rnd.conclusive:
            self.counters["probes.inconclusive"] += 1
            self._urgent[rnd.target] = now + self._scaled(self.settings.probe_interval)
            return []
        member.failed_rounds += 1
        actions: list[Action] = []
        if member.suspicion is None:
            actions += self._suspect(member, self.own.id, now)
            self.churn_evidence(now)  # a new suspicion of our own: check the other members soon
        else:
            member.suspicion.confirm(self.own.id)
        if not member.vouched:
            member.vouched = True
            self._queue.push(Claim(ClaimKind.SUSPECT, member.node, member.incarnation, self.own.id))
            self.counters["claims.queued"] += 1
        self._urgent[rnd.target] = now + self._scaled(self.settings.probe_interval)  # keep re-probing
        self._hearsay.pop(rnd.target, None)
        return actions + self._maybe_dead(member, now)

    def _suspect(self, member: _Member, origin: int, now: float) -> list[Action]:
        size = len(self._members)
        low, high = suspicion_bounds(self.settings, size)
        member.suspicion = Suspicion(now, low, high, expected_confirmations(self.settings, size), {origin})
        self._suspects[member.node.id] = member
        member.status = ClaimKind.SUSPECT
        self.counters["questionable"] += 1
        return [Questionable(member.node.id)]

    def _maybe_dead(self, member: _Member, now: float) -> list[Action]:
        """SUSPECT -> DEAD only on our own evidence: the timeout passed and our last rounds all failed."""
        suspicion = member.suspicion
        if (
            suspicion is None
            or now < suspicion.deadline
            or member.failed_rounds < self.settings.min_failed_rounds
            or member.node.id in self._rounds
        ):
            return []
        member.status = ClaimKind.DEAD
        member.suspicion = None
        self._suspects.pop(member.node.id, None)
        self._urgent.pop(member.node.id, None)
        self._hearsay.pop(member.node.id, None)
        self._sweep.pop(member.node.id, None)
        self._queue.push(Claim(ClaimKind.DEAD, member.node, member.incarnation, self.own.id))
        self.counters["claims.queued"] += 1
        self.counters["evictions"] += 1
        return [Evict(member.node.id)]

    def _about_me(self, claim: Claim, now: float) -> None:
        """Refute any suspicion of us that is not from the future: only we issue our incarnations, so a
        claim above ours is forged and ignored; one at ours makes us bump it (SWIM §4.2)."""
        if claim.kind is ClaimKind.ALIVE:
            self.counters["claims.ignored"] += 1
            return
        if claim.incarnation > self.incarnation:
            self.counters["claims.forged"] += 1
            return
        if claim.incarnation == self.incarnation and self.incarnation < MAX_INCARNATION:
            self.incarnation += 1
            if now - self._last_refute_penalty >= self.settings.probe_interval:  # one penalty per period
                self._last_refute_penalty = now
                self.health = min(self.settings.max_health_multiplier, self.health + 1)
        self.counters["refutations"] += 1
        self._queue.push(Claim(ClaimKind.ALIVE, self.own, self.incarnation, self.own.id))

    def _alive_claim(self, member: _Member, claim: Claim) -> None:
        """SWIM: ALIVE i overrides SUSPECT j when i > j. Only the subject's own word raises what we hold
        and is forwarded; an ALIVE from a third party merely cancels a suspicion that is hearsay only."""
        if claim.incarnation <= member.incarnation:
            self.counters["claims.stale"] += 1
            return
        if claim.origin == member.node.id:
            member.incarnation = claim.incarnation
            self._queue.push(claim)
            self.counters["claims.forwarded"] += 1
        if member.status is ClaimKind.SUSPECT and member.failed_rounds == 0:
            self._clear(member)

    def _accusation(self, member: _Member, claim: Claim, now: float) -> list[Action]:
        """Hearsay SUSPECT or DEAD (both only make a member SUSPECT here): questionable, and a probe of
        our own soon. SUSPECT i overrides ALIVE j when i >= j; older claims are stale."""
        if claim.incarnation < member.incarnation or member.status is ClaimKind.DEAD:
            self.counters["claims.stale"] += 1
            return []
        if member.suspicion is not None:
            member.incarnation = claim.incarnation
            new = member.suspicion.confirm(claim.origin)
            self.counters["claims.confirmations" if new else "claims.stale"] += 1
            return []
        member.incarnation = claim.incarnation
        member.vouched = False
        actions = self._suspect(member, claim.origin, now)
        node_id = member.node.id
        if node_id not in self._urgent and node_id not in self._hearsay and node_id not in self._rounds:
            when = max(now, member.last_hearsay_probe + self.settings.hearsay_probe_min_interval)
            member.last_hearsay_probe = when
            self._hearsay[node_id] = when
        return actions

    def _expire_behalf(self, now: float) -> None:
        for key in [k for k, (deadline, _) in self._behalf.items() if deadline <= now]:
            del self._behalf[key]
