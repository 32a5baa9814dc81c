"""The Kademlia routing table: k-buckets split along our own ID, with replacement caches.

Bucket ``i`` (all but the last) holds nodes whose XOR distance to us has its highest set bit at position
``159 - i``, i.e. IDs sharing exactly ``i`` leading bits with ours; the last bucket holds every ID that
shares at least as many bits with ours, so it is the one that covers our own ID and the only one that
splits. A bucket's nodes are therefore a contiguous ID range (see ``bucket_range``).

Eviction is deliberately slow (design notes §5: networks collapse when one timeout evicts a node): a node
becomes BAD after ``max_failures`` consecutive failures and leaves only when a replacement is waiting.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol

from kadnode.core.nodeid import ID_BITS, ID_SPACE, bep42_acceptable, random_id_in_range
from kadnode.settings import Settings
from kadnode.types import Addr, NodeInfo
from kadnode.wire.compact import encode_nodes

PING_INTERVAL = 60.0
"""An entry offered by ``ping_candidates`` is not offered again for this long (seconds)."""
RTT_WEIGHT = 0.25
"""Weight of a new round-trip sample in an entry's RTT moving average."""
TURNED_AWAY_SECONDS = 60.0
"""A querying stranger that found no room (full bucket, no weaker replacement) is not examined again for
this long, unless it answers us: a busy node hears the same strangers many times a second, and each
examination built an entry only to drop it. A minute's delay before a newcomer may wait as a
replacement costs nothing."""
TURNED_AWAY_MAX = 4096
"""Turned-away strangers remembered; the memory is emptied when full."""


class NodeState(Enum):
    GOOD = "good"
    QUESTIONABLE = "questionable"
    BAD = "bad"


@dataclass(slots=True)
class RoutingEntry:
    """What we know about one node; mutable, updated in place as we hear from it."""

    id: int
    addr: Addr
    added: float
    last_response: float | None
    """When it last answered one of our queries; None until it does (it only queried us)."""
    last_query: float | None
    """When it last sent us a query."""
    failures: int = 0
    """Consecutive requests to it that failed; reset by any response."""
    rtt: float | None = None
    """Moving average of its round-trip time (seconds)."""
    verified: bool = False
    """Its ID passes BEP 42 for its address (addresses in BEP 42's exempt ranges pass)."""
    last_pinged: float | None = None
    """When ``ping_candidates`` last offered it."""
    dead: bool = False
    """Liveness gossip's own probes found it dead (``evict``) while no replacement was waiting: BAD, and
    the first newcomer takes its place."""
    _compact: bytes = field(default=b"", init=False, repr=False, compare=False)

    @property
    def compact(self) -> bytes:
        """Its 26-byte BEP 5 compact node info, encoded once: every find_node reply we send is made of these."""
        compact = self._compact
        if not compact:
            compact = self._compact = encode_nodes((self.node_info(),))
        return compact

    def state(self, now: float, settings: Settings) -> NodeState:
        """BEP 5 states: GOOD answered within ``good_interval`` (or has answered ever and queried us within
        it) with no failure since; BAD after ``max_failures`` consecutive failures; else QUESTIONABLE.
        With liveness gossip on, failures make a node questionable but only gossip makes it BAD (``dead``):
        timeouts under loss must not evict a node that answers (docs/gossip.md)."""
        if self.dead or (self.failures >= settings.max_failures and not settings.gossip_enabled):
            return NodeState.BAD
        if self.failures == 0 and self.last_response is not None:
            recent = now - settings.good_interval
            if self.last_response >= recent or (self.last_query is not None and self.last_query >= recent):
                return NodeState.GOOD
        return NodeState.QUESTIONABLE

    @property
    def last_heard(self) -> float:
        """The latest time we heard anything from it (or added it)."""
        return max(self.added, self.last_response or -math.inf, self.last_query or -math.inf)

    def node_info(self) -> NodeInfo:
        return NodeInfo(self.id, self.addr)


def _replacement_rank(entry: RoutingEntry) -> tuple[bool, bool, float, float]:
    """Larger is better: answered (and not failing since), then BEP 42 verified, then most recent."""
    answered = entry.last_response is not None and entry.failures == 0
    return (answered, entry.verified, entry.last_response or -math.inf, entry.last_heard)


class TableListener(Protocol):
    """Hears every change to the set of live entries (the liveness gossip mirrors it)."""

    def entry_added(self, entry: RoutingEntry) -> None: ...

    def entry_removed(self, entry: RoutingEntry, evicted: bool) -> None:
        """``evicted``: it left because it failed (timeouts, or gossip found it dead), not by ``remove``."""


class _Bucket:
    __slots__ = ("last_changed", "live", "replacements")

    def __init__(self, last_changed: float) -> None:
        self.live: dict[int, RoutingEntry] = {}
        self.replacements: dict[int, RoutingEntry] = {}
        self.last_changed = last_changed
        """When a node was last added to it or answered us (drives ``refresh_targets``)."""


class RoutingTable:
    """k-buckets around ``own_id``. ``now`` is when the table starts (buckets count as fresh then)."""

    def __init__(self, own_id: int, settings: Settings, rng: random.Random, *, now: float = 0.0) -> None:
        if not 0 <= own_id < ID_SPACE:
            raise ValueError("own_id out of range")
        self.own_id = own_id
        self._settings = settings
        self._rng = rng
        self._k = settings.k
        self._max_failures = settings.max_failures
        self._buckets: list[_Bucket] = [_Bucket(now)]
        self._turned_away: dict[int, float] = {}
        """IDs of querying strangers that found no room, and until when to turn them away unexamined."""
        self._evict_on_failures = not settings.gossip_enabled
        self.listener: TableListener | None = None
        self.evicted = 0
        """Live entries that left because they failed (see ``TableListener.entry_removed``)."""

    # --- sizes and inspection -------------------------------------------------------------------

    def __len__(self) -> int:
        return sum(len(b.live) for b in self._buckets)

    @property
    def bucket_count(self) -> int:
        return len(self._buckets)

    @property
    def replacement_count(self) -> int:
        return sum(len(b.replacements) for b in self._buckets)

    def entries(self) -> Iterator[RoutingEntry]:
        """Every live entry (not the replacement caches), farthest bucket first."""
        for bucket in self._buckets:
            yield from bucket.live.values()

    def replacements(self) -> Iterator[RoutingEntry]:
        """Every entry waiting in a replacement cache."""
        for bucket in self._buckets:
            yield from bucket.replacements.values()

    def get(self, node_id: int) -> RoutingEntry | None:
        """The live entry for ``node_id`` (replacement-cache entries are not returned)."""
        return self._bucket_of(node_id).live.get(node_id)

    def bucket_range(self, index: int) -> tuple[int, int]:
        """The IDs bucket ``index`` covers, as ``[low, high)``."""
        last = len(self._buckets) - 1
        if not 0 <= index <= last:
            raise IndexError(index)
        if index == last:
            shift = ID_BITS - index
            low = (self.own_id >> shift) << shift
            return low, low + (1 << shift)
        shift = ID_BITS - 1 - index
        prefix = (self.own_id >> shift) ^ 1
        return prefix << shift, (prefix + 1) << shift

    def bucket_size(self, index: int) -> int:
        """Live entries in bucket ``index``."""
        return len(self._buckets[index].live)

    def bucket_entries(self, index: int) -> list[RoutingEntry]:
        return list(self._buckets[index].live.values())

    def bucket_replacements(self, index: int) -> list[RoutingEntry]:
        return list(self._buckets[index].replacements.values())

    def to_nodes(self) -> list[NodeInfo]:
        """Live, non-BAD nodes for persistence: answered and not failing (most recent first), then
        answered but failing since, then those that never answered."""
        alive = [e for e in self.entries() if not self._is_bad(e)]
        alive.sort(key=lambda e: (e.last_response is None, e.failures > 0, -(e.last_response or 0.0)))
        return [e.node_info() for e in alive]

    # --- updates --------------------------------------------------------------------------------

    def heard_from(
        self, node: NodeInfo, now: float, *, responded: bool, rtt: float | None = None
    ) -> RoutingEntry | None:
        """Record that ``node`` answered us (``responded``) or queried us, inserting it if it is new.
        Returns ``get(node.id)`` afterwards: its live entry, or None (refused, or waiting in a replacement
        cache), so that callers need not look it up again.

        A known ID arriving from another address is ignored unless the known entry is BAD (so a forged
        source cannot hijack a live entry). With ``enforce_node_id`` a new node whose ID fails BEP 42
        (outside the exempt ranges) is refused.
        """
        node_id = node.id
        own_id = self.own_id
        if node_id == own_id:
            return None
        if not 0 <= node_id < ID_SPACE:
            raise ValueError("node id out of range")
        buckets = self._buckets
        bucket = buckets[min(ID_BITS - (node_id ^ own_id).bit_length(), len(buckets) - 1)]
        live = bucket.live
        entry = live.get(node_id)
        if entry is not None and entry.addr == node.addr:  # the common case: a known live node
            self._update(entry, now, responded, rtt)
            if responded:
                bucket.last_changed = now
            return entry
        for pool in (live, bucket.replacements):
            entry = pool.get(node_id)
            if entry is None:
                continue
            if entry.addr != node.addr:
                if not self._is_bad(entry):
                    return live.get(node_id)
                fresh = self._new_entry(node, now)
                if fresh is None:
                    return live.get(node_id)
                pool[node_id] = fresh
                if pool is live:
                    self._removed(entry, evicted=True)
                    self._added(fresh)
                entry = fresh
            self._update(entry, now, responded, rtt)
            if pool is live:
                if responded:
                    bucket.last_changed = now
                return entry
            return None
        if not responded:
            until = self._turned_away.get(node_id)
            if until is not None and now < until:
                return None  # found no room moments ago: a busy node hears strangers again and again
        entry = self._new_entry(node, now)
        if entry is None:
            return None
        self._update(entry, now, responded, rtt)
        self._insert(entry, now)
        return self.get(node_id)

    def failed(self, node_id: int, now: float, *, addr: Addr | None = None) -> None:
        """Count a failed request to ``node_id``; a BAD entry leaves only if a replacement waits.

        Pass ``addr`` (where the request went) so a failure at an address someone else advertised for
        this ID does not count against the entry we hold at its real address.
        """
        bucket = self._bucket_of(node_id)
        entry = bucket.live.get(node_id)
        if entry is not None:
            if addr is not None and addr != entry.addr:
                return
            entry.failures += 1
            if self._evict_on_failures and entry.failures >= self._max_failures and bucket.replacements:
                del bucket.live[node_id]
                self._removed(entry, evicted=True)
                self._promote(bucket, now)
            return
        entry = bucket.replacements.get(node_id)
        if entry is not None and (addr is None or addr == entry.addr):
            entry.failures += 1
            if entry.failures >= self._max_failures:
                del bucket.replacements[node_id]

    def remove(self, node_id: int, now: float | None = None) -> None:
        """Forget ``node_id`` (live or waiting); a freed live slot goes to the best replacement
        (which counts as a bucket change at ``now`` when given)."""
        bucket = self._bucket_of(node_id)
        entry = bucket.live.pop(node_id, None)
        if entry is not None:
            self._removed(entry, evicted=False)
            self._promote(bucket, now)
        else:
            bucket.replacements.pop(node_id, None)

    def evict(self, node_id: int, now: float) -> bool:
        """Liveness gossip's verdict: our own probes found ``node_id`` dead. It leaves at once if a
        replacement is waiting (True); otherwise it stays, BAD, until a newcomer takes its place."""
        bucket = self._bucket_of(node_id)
        entry = bucket.live.get(node_id)
        if entry is None:
            return False
        if not bucket.replacements:
            entry.dead = True
            return False
        del bucket.live[node_id]
        self._removed(entry, evicted=True)
        self._promote(bucket, now)
        return True

    def mark_questionable(self, node_id: int) -> None:
        """Stop treating ``node_id`` as good until it answers us again (liveness gossip heard it may be
        dead): one failure on its record, which any response clears."""
        entry = self.get(node_id)
        if entry is not None and entry.failures == 0:
            entry.failures = 1

    def has_room(self, node_id: int) -> bool:
        """Whether ``node_id`` would enter the table now (not as a replacement) if it answered us."""
        if node_id == self.own_id or self.get(node_id) is not None:
            return False
        index = min(ID_BITS - (node_id ^ self.own_id).bit_length(), len(self._buckets) - 1)
        bucket = self._buckets[index]
        return (
            len(bucket.live) < self._k
            or (index == len(self._buckets) - 1 and len(self._buckets) < ID_BITS)
            or any(self._is_bad(e) for e in bucket.live.values())
        )

    # --- queries --------------------------------------------------------------------------------

    def closest(self, target: int, count: int | None = None, *, answered_only: bool = False) -> list[RoutingEntry]:
        """Up to ``count`` (default k) live entries nearest ``target`` by XOR, nearest first: not dead, and with
        fewer than ``max_failures`` failures in a row (with gossip too: a lookup skips what keeps failing).

        Each bucket is an aligned block of IDs, so its distances to ``target`` form an aligned block too:
        buckets are strictly ordered by distance, and visiting them in that order sorts only the few
        buckets needed (usually one). ``answered_only`` skips entries that never answered us.
        """
        want = self._k if count is None else count
        if want <= 0:
            return []
        buckets = self._buckets
        max_failures = self._max_failures
        result: list[RoutingEntry] = []
        for index in self._buckets_by_distance(target):
            found = [
                e
                for e in buckets[index].live.values()
                if e.failures < max_failures and not e.dead and not (answered_only and e.last_response is None)
            ]
            found.sort(key=lambda e: e.id ^ target)
            result.extend(found)
            if len(result) >= want:
                break
        return result[:want]

    def refresh_targets(self, now: float) -> list[int]:
        """A random ID in each bucket unchanged for ``bucket_refresh_interval``; marks those refreshed."""
        interval = self._settings.bucket_refresh_interval
        targets = []
        for index, bucket in enumerate(self._buckets):
            if now - bucket.last_changed >= interval:
                low, high = self.bucket_range(index)
                targets.append(random_id_in_range(low, high, self._rng))
                bucket.last_changed = now
        return targets

    def ping_candidates(self, now: float) -> list[RoutingEntry]:
        """Entries worth pinging now; each is offered at most once per ``PING_INTERVAL``.

        For each full bucket with replacements waiting: its questionable entry heard from least
        recently (a ping confirms it or lets failures evict it). Then every entry that has not answered
        within ``good_interval`` (or never has).
        """
        settings = self._settings
        stale_before = now - settings.good_interval
        out: list[RoutingEntry] = []

        def pingable(e: RoutingEntry) -> bool:
            return e.last_pinged is None or now - e.last_pinged >= PING_INTERVAL

        for bucket in self._buckets:
            if bucket.replacements and len(bucket.live) >= self._k:
                questionable = [
                    e for e in bucket.live.values() if pingable(e) and e.state(now, settings) is NodeState.QUESTIONABLE
                ]
                if questionable:
                    pick = min(questionable, key=lambda e: (e.last_response or -math.inf, e.last_heard))
                    pick.last_pinged = now
                    out.append(pick)
        for entry in self.entries():
            if pingable(entry) and (entry.last_response is None or entry.last_response <= stale_before):
                entry.last_pinged = now
                out.append(entry)
        return out

    # --- internals ------------------------------------------------------------------------------

    def _buckets_by_distance(self, target: int) -> Iterator[int]:
        """Bucket indexes, nearest to ``target`` first; lazy, as ``closest`` usually stops after one.

        Bucket ``j`` (not the last) holds IDs that first differ from ours at bit ``j`` (MSB first), so
        their distances to ``target`` have bit ``j`` set exactly when ``target`` agrees with us there,
        and agree with ``target ^ own_id`` above it. Nearest first is therefore: buckets where
        ``target`` differs from us, ascending; the last bucket; buckets where it agrees, descending.
        """
        last = len(self._buckets) - 1
        diff = target ^ self.own_id
        top = ID_BITS - 1
        for j in range(last):
            if diff >> (top - j) & 1:
                yield j
        yield last
        for j in range(last - 1, -1, -1):
            if not diff >> (top - j) & 1:
                yield j

    def _is_bad(self, entry: RoutingEntry) -> bool:
        return entry.dead or (self._evict_on_failures and entry.failures >= self._max_failures)

    def _added(self, entry: RoutingEntry) -> None:
        if self.listener is not None:
            self.listener.entry_added(entry)

    def _removed(self, entry: RoutingEntry, *, evicted: bool) -> None:
        if evicted:
            self.evicted += 1
        if self.listener is not None:
            self.listener.entry_removed(entry, evicted)

    def _bucket_of(self, node_id: int) -> _Bucket:
        shared = ID_BITS - (node_id ^ self.own_id).bit_length()
        return self._buckets[min(shared, len(self._buckets) - 1)]

    def _new_entry(self, node: NodeInfo, now: float) -> RoutingEntry | None:
        verified = bep42_acceptable(node.id, node.addr[0])
        if self._settings.enforce_node_id and not verified:
            return None
        return RoutingEntry(node.id, node.addr, now, None, None, verified=verified)

    @staticmethod
    def _update(entry: RoutingEntry, now: float, responded: bool, rtt: float | None) -> None:
        entry.dead = False  # it sent us something from its address: whatever gossip concluded, it is up
        if not responded:
            entry.last_query = now
            return
        entry.last_response = now
        entry.failures = 0
        if rtt is not None:
            entry.rtt = rtt if entry.rtt is None else entry.rtt + RTT_WEIGHT * (rtt - entry.rtt)

    def _insert(self, entry: RoutingEntry, now: float) -> None:
        while True:
            index = min(ID_BITS - (entry.id ^ self.own_id).bit_length(), len(self._buckets) - 1)
            bucket = self._buckets[index]
            if len(bucket.live) < self._k:
                bucket.live[entry.id] = entry
                bucket.last_changed = now
                self._added(entry)
                return
            if index < len(self._buckets) - 1 or len(self._buckets) >= ID_BITS:
                break
            self._split()
        bad = next((e for e in bucket.live.values() if self._is_bad(e)), None)
        if bad is not None:
            del bucket.live[bad.id]
            self._removed(bad, evicted=True)
            bucket.live[entry.id] = entry
            bucket.last_changed = now
            self._added(entry)
            return
        if not self._add_replacement(bucket, entry) and entry.last_response is None:
            turned_away = self._turned_away
            if len(turned_away) >= TURNED_AWAY_MAX:
                turned_away.clear()
            turned_away[entry.id] = now + TURNED_AWAY_SECONDS

    def _add_replacement(self, bucket: _Bucket, entry: RoutingEntry) -> bool:
        """Put `entry` in the bucket's replacement cache if it outranks someone there; True if it did."""
        cache = bucket.replacements
        if len(cache) >= self._settings.replacement_cache_size:
            if not cache:
                return False
            pool: Iterable[RoutingEntry] = cache.values()
            if entry.last_response is None or entry.failures:
                # A newcomer that has not answered us can only beat replacements that have not either:
                # the common case (a stranger's query) is settled without ranking the whole cache.
                pool = [e for e in pool if e.last_response is None or e.failures]
                if not pool:
                    return False
            worst = min(pool, key=_replacement_rank)
            if _replacement_rank(entry) <= _replacement_rank(worst):
                return False
            del cache[worst.id]
        cache[entry.id] = entry
        return True

    def _promote(self, bucket: _Bucket, now: float | None) -> None:
        while bucket.replacements and len(bucket.live) < self._k:
            best = max(bucket.replacements.values(), key=_replacement_rank)
            del bucket.replacements[best.id]
            bucket.live[best.id] = best
            if now is not None:
                bucket.last_changed = now
            self._added(best)

    def _split(self) -> None:
        """Split the last bucket: IDs sharing one more bit with ours move to a new last bucket.

        The last bucket has no replacements to share out: while it can split, it never waits on any.
        """
        old = self._buckets[-1]
        depth = len(self._buckets)  # IDs sharing >= depth leading bits with ours move
        near = _Bucket(old.last_changed)
        self._buckets.append(near)
        for node_id in [i for i in old.live if ID_BITS - (i ^ self.own_id).bit_length() >= depth]:
            near.live[node_id] = old.live.pop(node_id)
