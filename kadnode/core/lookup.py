"""The iterative Kademlia lookup as a state machine: the caller sends, this only decides.

There is no round barrier: every answer, failure or slow request immediately frees a slot for the next
closest unqueried candidate, so `alpha` parallel requests actually cut latency.

A request that passes its short timeout is *slow*: it stops holding its slot at once. A slow candidate
gets one retry when it is (or later comes to be) among the k closest candidates still in the running: a
lost datagram is the likeliest cause, and one retry turns a 10% round-trip loss into 1%. When the retry
is slow too, the candidate is *given up*: the end of the lookup no longer waits for it, so a crashed
node costs two short timeouts, never a full one. A late answer is still used if it comes before the end.
"""

from __future__ import annotations

import heapq
from bisect import bisect_left
from collections.abc import Iterable
from enum import Enum

from kadnode.settings import Settings
from kadnode.types import NodeInfo


class _State(Enum):
    NEW = 0
    IN_FLIGHT = 1
    RESPONDED = 2
    FAILED = 3


MAX_ATTEMPTS = 2
"""Requests sent to one candidate at most: the first, and one retry when it turned slow."""


class _Candidate:
    __slots__ = ("attempts", "dist", "given_up", "holds_slot", "hop", "inflight", "listed", "node", "state",
                 "wants_retry")

    def __init__(self, node: NodeInfo, dist: int, hop: int) -> None:
        self.node = node
        self.dist = dist
        self.hop = hop
        """1 for the seeds we started from; one more than the node that told us about it."""
        self.state = _State.NEW
        self.holds_slot = False
        """In flight and not yet slow: one of the `alpha` slots."""
        self.wants_retry = False
        """Its first request is slow: ask again once it is among the k closest still in the running."""
        self.given_up = False
        """Its retry is slow too: the end of the lookup no longer waits for it."""
        self.attempts = 0
        self.inflight = 0
        """Requests to it not yet answered or failed (two after a retry)."""
        self.listed = False


class Lookup:
    """Find the k nodes closest to `target` that answer, starting from `seeds`.

    Candidates live in a list sorted by XOR distance (at most `lookup_max_candidates` of them, failed
    ones removed). Every node we contacted stays known by ID, so it is never queried twice and its late
    answer is still recognised. Events after the lookup finished are ignored: the result stays stable.
    """

    def __init__(
        self,
        target: int,
        settings: Settings,
        seeds: Iterable[NodeInfo],
        now: float,
        exclude: int | None = None,
    ) -> None:
        self.target = target
        self.started = now
        self.queried = 0
        """Requests sent, retries included."""
        self.retries = 0
        self.responded = 0
        self.failed = 0
        self._k = settings.k
        self._alpha = settings.alpha
        self._cap = max(settings.lookup_max_candidates, settings.k)
        self._deadline = now + settings.lookup_timeout
        self._exclude = exclude
        self._nodes: dict[int, _Candidate] = {}
        """Listed candidates plus every node ever contacted."""
        self._dists: list[int] = []
        self._cands: list[_Candidate] = []
        """Listed candidates, parallel to `_dists` (sorted ascending)."""
        self._active = 0
        """Candidates in flight whose request is not slow yet: these hold the `alpha` slots."""
        self._pending = 0
        """All requests in flight, slow ones, retries and unlisted ones included."""
        self._finished = False
        self._timed_out = False
        self._add(seeds, 1)
        self._update_finished()

    # --- state ---------------------------------------------------------------------------------

    @property
    def finished(self) -> bool:
        return self._finished

    @property
    def timed_out(self) -> bool:
        return self._timed_out

    @property
    def in_flight(self) -> int:
        """Requests sent and not yet answered or failed (slow ones included)."""
        return self._pending

    def check(self, now: float) -> bool:
        """Finish the lookup if `lookup_timeout` has passed; returns `finished`."""
        if not self._finished and now >= self._deadline:
            self._finished = True
            self._timed_out = True
        return self._finished

    @property
    def hops(self) -> int:
        """Referral hops to the closest node that answered (1: a node we started from); 0 if none."""
        answered = [c for c in self._nodes.values() if c.state is _State.RESPONDED]
        return min(answered, key=lambda c: c.dist).hop if answered else 0

    def result(self) -> list[NodeInfo]:
        """Up to k nodes that answered, closest to the target first."""
        answered = (c for c in self._nodes.values() if c.state is _State.RESPONDED)
        return [c.node for c in heapq.nsmallest(self._k, answered, key=lambda c: c.dist)]

    # --- driving -------------------------------------------------------------------------------

    def next_requests(self, now: float) -> list[NodeInfo]:
        """Requests to send now: the closest unqueried candidates, up to the free slots (marked in
        flight), and one retry for each slow candidate among the k closest still in the running."""
        if self.check(now):
            return []
        slots = self._alpha - self._active
        out: list[NodeInfo] = []
        fresh = 0
        needed = self._k
        rank = 0
        for cand in self._cands:
            if cand.given_up:
                continue
            state = cand.state
            if state is _State.RESPONDED:
                needed -= 1
                if needed == 0:
                    break
            elif state is _State.NEW:
                if slots > 0:
                    cand.state = _State.IN_FLIGHT
                    cand.holds_slot = True
                    cand.attempts = cand.inflight = 1
                    out.append(cand.node)
                    fresh += 1
                    slots -= 1
                elif rank >= self._k:
                    break  # no slot for it, and no retry is due this far out
            elif cand.wants_retry and rank < self._k:
                cand.wants_retry = False
                cand.attempts += 1
                cand.inflight += 1
                self._pending += 1
                self.retries += 1
                out.append(cand.node)
            rank += 1
        self.queried += len(out)
        self._active += fresh
        self._pending += fresh
        if not out:
            self._update_finished()
        return out

    def on_response(self, node: NodeInfo, closer: Iterable[NodeInfo], now: float) -> None:
        """`node` answered with `closer`. Only nodes we queried count (late answers after failure too)."""
        if self.check(now):
            return
        cand = self._nodes.get(node.id)
        if cand is None or cand.state is _State.NEW or cand.state is _State.RESPONDED:
            return
        if cand.state is _State.IN_FLIGHT:
            self._settle(cand, cand.inflight)
        else:  # FAILED earlier, answered late: it is a good candidate after all
            self.failed -= 1
        cand.state = _State.RESPONDED
        self.responded += 1
        if not cand.listed:
            self._list(cand)
        self._add(closer, cand.hop + 1)
        self._update_finished()

    def on_failure(self, node: NodeInfo, now: float) -> None:
        """A request to `node` timed out or got an error: once none is left, it leaves the list."""
        if self.check(now):
            return
        cand = self._nodes.get(node.id)
        if cand is None or cand.state is not _State.IN_FLIGHT:
            return
        if cand.inflight > 1:  # the retry may still be answered
            cand.inflight -= 1
            self._pending -= 1
            return
        self._settle(cand, 1)
        cand.state = _State.FAILED
        self.failed += 1
        if cand.listed:
            self._unlist(cand)
        self._update_finished()

    def on_slow(self, node: NodeInfo, now: float) -> None:
        """A request to `node` passed its short timeout: its slot is freed. After the first, a retry is
        due (see `next_requests`); after the retry, `node` is given up on: the lookup no longer waits
        for it, though an answer that comes before the end still counts."""
        if self.check(now):
            return
        cand = self._nodes.get(node.id)
        if cand is None or cand.state is not _State.IN_FLIGHT or cand.given_up:
            return
        if cand.holds_slot:
            cand.holds_slot = False
            self._active -= 1
        if cand.attempts < MAX_ATTEMPTS and cand.listed:
            cand.wants_retry = True
        else:
            cand.wants_retry = False
            cand.given_up = True
            self._update_finished()

    def stop(self) -> None:
        """End the lookup now (it found what it was after); later events are ignored."""
        self._finished = True

    # --- internals -----------------------------------------------------------------------------

    def _settle(self, cand: _Candidate, requests: int) -> None:
        """`cand` stopped being in flight (its last `requests` requests ended): release its slot."""
        self._pending -= requests
        if cand.holds_slot:
            self._active -= 1
        cand.holds_slot = cand.given_up = cand.wants_retry = False
        cand.inflight = 0

    def _add(self, nodes: Iterable[NodeInfo], hop: int) -> None:
        target, known, exclude = self.target, self._nodes, self._exclude
        for node in nodes:
            if node.id in known or node.id == exclude:
                continue
            dist = node.id ^ target
            if len(self._dists) >= self._cap and dist > self._dists[-1]:
                continue
            cand = _Candidate(node, dist, hop)
            known[node.id] = cand
            self._list(cand)

    def _list(self, cand: _Candidate) -> None:
        """Insert into the sorted list, evicting the farthest entry when over the cap."""
        dists = self._dists
        if len(dists) >= self._cap and cand.dist > dists[-1]:
            return
        i = bisect_left(dists, cand.dist)
        dists.insert(i, cand.dist)
        self._cands.insert(i, cand)
        cand.listed = True
        if len(dists) > self._cap:
            dists.pop()
            evicted = self._cands.pop()
            evicted.listed = False
            if evicted.state is _State.NEW:
                del self._nodes[evicted.node.id]  # never contacted: forget it entirely

    def _unlist(self, cand: _Candidate) -> None:
        i = bisect_left(self._dists, cand.dist)
        del self._dists[i]
        del self._cands[i]
        cand.listed = False

    def _update_finished(self) -> None:
        """Finished when the k closest listed candidates that were not given up on answered. With
        fewer than k answers, given-up requests are still waited for: they may bring referrals."""
        if self._finished:
            return
        needed = self._k
        for cand in self._cands:
            state = cand.state
            if state is _State.RESPONDED:
                needed -= 1
                if needed == 0:
                    self._finished = True
                    return
            elif not cand.given_up:
                return  # NEW or IN_FLIGHT (failed ones are not listed) closer than the k-th answer
        if self._pending == 0:
            self._finished = True
