"""Which block to ask which peer for next: the fetch's bookkeeping, with no I/O and no clock.

A piece is downloaded whole from one peer (an *assignment*), so when its SHA-1 check fails exactly one
peer is to blame. Free pieces go out rarest first (fewest connected peers have them), which keeps rare
pieces from vanishing with the one peer that has them. When every piece some peer has is assigned
(*endgame*), a peer with spare pipeline capacity takes a second (or third) copy of a piece already
assigned to someone else; each copy keeps its own blocks, the first copy to verify wins, and the losers'
outstanding requests come back to be cancelled.

The fetch drives it: `add_peer` / `peer_has` as bitfields and Haves arrive, `next_requests` to fill a
peer's pipeline, `on_block` for each block (a finished piece comes back whole), then `piece_verified` or
`piece_failed` with the result of its hash check; `release` when a peer chokes us, `remove_peer` when it
goes away, `stalled` to find peers that hold requests but send nothing. Time is passed in as `now`.
"""

from __future__ import annotations

import random
from collections.abc import Hashable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Generic, TypeVar

BLOCK_SIZE = 16 * 1024
"""The request size every client uses (BEP 3 recommends 2^14; larger requests are commonly refused)."""

ENDGAME_COPIES = 3
"""At most this many peers download the same piece at once in endgame: enough to route around one slow
peer holding the last pieces, few enough not to multiply the final megabytes by the peer count."""

_SCAN = 16
"""Candidates gathered among the equally rare before choosing one at random (bounds the work per pick)."""

K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True, slots=True)
class BlockRequest:
    """One block to request (or cancel): `length` bytes at `begin` inside piece `index`."""

    index: int
    begin: int
    length: int


@dataclass(frozen=True, slots=True)
class PieceComplete:
    """Every block of piece `index` arrived from one peer; `data` is the piece, still unverified."""

    index: int
    data: bytes


class _IndexedSet:
    """A set of ints with O(1) add, discard and random choice (a list plus each item's position)."""

    __slots__ = ("_items", "_pos")

    def __init__(self) -> None:
        self._items: list[int] = []
        self._pos: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, item: int) -> bool:
        return item in self._pos

    def add(self, item: int) -> None:
        if item not in self._pos:
            self._pos[item] = len(self._items)
            self._items.append(item)

    def discard(self, item: int) -> None:
        pos = self._pos.pop(item, None)
        if pos is None:
            return
        last = self._items.pop()
        if pos < len(self._items):
            self._items[pos] = last
            self._pos[last] = pos

    def scan(self, start: int) -> Iterator[int]:
        """Every item once, beginning at position `start` (mod the size) and wrapping around."""
        n = len(self._items)
        for i in range(n):
            yield self._items[(start + i) % n]


@dataclass(slots=True, eq=False)
class _Assignment:
    """One peer's copy of one piece: blocks not yet requested, requested, and received."""

    size: int
    pending: list[int]  # begins still to request, in reverse order (pop() gives the lowest)
    requested: dict[int, int] = field(default_factory=dict)  # begin -> length
    received: dict[int, bytes] = field(default_factory=dict)  # begin -> block


@dataclass(slots=True, eq=False)
class _Peer:
    have: set[int]
    has_all: bool = False
    assignments: dict[int, _Assignment] = field(default_factory=dict)
    outstanding: int = 0
    last_progress: float = 0.0


class PiecePicker(Generic[K]):
    """Piece and block selection for one torrent; peers are any hashable key (the fetch uses addresses)."""

    def __init__(self, piece_length: int, total_length: int, *, have: Iterable[int] = (),
                 block_size: int = BLOCK_SIZE, endgame_copies: int = ENDGAME_COPIES,
                 rng: random.Random | None = None) -> None:
        if piece_length <= 0 or total_length <= 0 or block_size <= 0:
            raise ValueError("piece_length, total_length and block_size must be positive")
        if endgame_copies < 1:
            raise ValueError("endgame_copies must be at least 1")
        self.piece_length = piece_length
        self.total_length = total_length
        self.block_size = block_size
        self.endgame_copies = endgame_copies
        self._rng = rng
        self.piece_count = -(-total_length // piece_length)
        self._avail = [0] * self.piece_count
        self._done = bytearray(self.piece_count)
        self._done_count = 0
        self._done_bytes = 0
        # Free pieces: missing, nobody working on them; bucketed by availability for rarest first.
        self._free: dict[int, _IndexedSet] = {0: _IndexedSet()}
        self._owners: dict[int, dict[K, _Assignment]] = {}  # pieces being downloaded
        self._verifying: dict[int, int] = {}  # piece -> copies handed out and not yet judged
        self._peers: dict[K, _Peer] = {}
        self.unexpected_blocks = 0
        """Blocks nobody asked for (typically a late answer to a cancelled request); dropped."""
        for index in have:
            self._mark_done(self._check_index(index))
        for index in range(self.piece_count):
            if not self._done[index]:
                self._free[0].add(index)

    # --- queries ---------------------------------------------------------------------------------

    def piece_size(self, index: int) -> int:
        """The size of piece `index` (the last one may be shorter)."""
        self._check_index(index)
        return min(self.piece_length, self.total_length - index * self.piece_length)

    @property
    def complete(self) -> bool:
        return self._done_count == self.piece_count

    @property
    def missing(self) -> int:
        """Pieces not verified yet."""
        return self.piece_count - self._done_count

    @property
    def done_count(self) -> int:
        return self._done_count

    @property
    def done_bytes(self) -> int:
        return self._done_bytes

    def is_done(self, index: int) -> bool:
        return bool(self._done[self._check_index(index)])

    @property
    def endgame(self) -> bool:
        """Every missing piece that some connected peer has is already being downloaded."""
        return not self.complete and not any(len(b) for level, b in self._free.items() if level > 0)

    def availability(self, index: int) -> int:
        """How many connected peers have piece `index`."""
        return self._avail[self._check_index(index)]

    def peers(self) -> list[K]:
        return list(self._peers)

    def outstanding(self, peer: K) -> int:
        """Requests sent to `peer` and not answered yet."""
        state = self._peers.get(peer)
        return state.outstanding if state is not None else 0

    def assigned(self, peer: K) -> list[int]:
        """The pieces `peer` is downloading."""
        state = self._peers.get(peer)
        return list(state.assignments) if state is not None else []

    def owners(self, index: int) -> list[K]:
        """The peers downloading piece `index`."""
        return list(self._owners.get(index, {}))

    def has(self, peer: K, index: int) -> bool:
        state = self._peers.get(peer)
        return state is not None and (state.has_all or index in state.have)

    def interesting(self, peer: K) -> bool:
        """Whether `peer` has a piece we still need (what the Interested message says)."""
        state = self._peers.get(peer)
        if state is None or self.complete:
            return False
        if state.has_all:
            return True
        return any(not self._done[i] for i in state.have)

    # --- peers -----------------------------------------------------------------------------------

    def add_peer(self, peer: K, have: Iterable[int] = ()) -> None:
        """A peer connected; `have` is what its bitfield says (more may come with `peer_has`)."""
        if peer in self._peers:
            raise ValueError(f"peer {peer!r} is already known")
        self._peers[peer] = _Peer(have=set())
        for index in have:
            self.peer_has(peer, index)

    def peer_has(self, peer: K, index: int) -> bool:
        """`peer` announced piece `index` (bitfield or Have); True when it is a piece we still need."""
        state = self._peers[peer]
        self._check_index(index)
        if state.has_all or index in state.have:
            return not self._done[index]
        state.have.add(index)
        if len(state.have) == self.piece_count:  # a seed: no need to keep its set
            state.has_all, state.have = True, set()
        self._change_avail(index, +1)
        return not self._done[index]

    def release(self, peer: K) -> None:
        """`peer` choked us (its pending requests are void): its pieces go back to the pool."""
        state = self._peers.get(peer)
        if state is None:
            return
        for index in list(state.assignments):
            self._drop_assignment(peer, state, index)
        state.outstanding = 0

    def remove_peer(self, peer: K) -> None:
        """`peer` went away (closed, stalled, banned): its pieces go back to the pool, its pieces'
        availability goes down."""
        state = self._peers.get(peer)
        if state is None:
            return
        self.release(peer)
        del self._peers[peer]
        for index in range(self.piece_count) if state.has_all else state.have:
            self._change_avail(index, -1)

    # --- requests and blocks ---------------------------------------------------------------------

    def next_requests(self, peer: K, limit: int, now: float) -> list[BlockRequest]:
        """Requests to send `peer` now so that it has `limit` outstanding: more blocks of its pieces,
        then new pieces rarest first, then (endgame) copies of pieces others are downloading."""
        state = self._peers[peer]
        room = limit - state.outstanding
        out: list[BlockRequest] = []
        if room <= 0 or self.complete:
            return out
        was_idle = state.outstanding == 0
        for index, assignment in state.assignments.items():
            room -= self._take(index, assignment, room, out)
            if room <= 0:
                break
        while room > 0:
            picked = self._pick_free(state)
            if picked is None:
                break
            room -= self._take(picked, self._assign(peer, state, picked), room, out)
        while room > 0 and self.endgame:
            picked = self._pick_endgame(peer, state)
            if picked is None:
                break
            room -= self._take(picked, self._assign(peer, state, picked), room, out)
        state.outstanding += len(out)
        if out and was_idle:
            state.last_progress = now  # the stall clock starts with the first request
        return out

    def on_block(self, peer: K, index: int, begin: int, data: bytes, now: float) -> PieceComplete | None:
        """A block arrived from `peer`. Blocks nobody asked for are dropped (counted); a block of the
        wrong length raises ValueError (the peer is broken). Returns the piece once it is whole."""
        state = self._peers.get(peer)
        assignment = state.assignments.get(index) if state is not None else None
        if state is None or assignment is None or begin not in assignment.requested:
            self.unexpected_blocks += 1
            return None
        length = assignment.requested[begin]
        if len(data) != length:
            raise ValueError(f"block {begin} of piece {index} has {len(data)} bytes, {length} were requested")
        del assignment.requested[begin]
        assignment.received[begin] = data
        state.outstanding -= 1
        state.last_progress = now
        if assignment.pending or assignment.requested:
            return None
        blocks = assignment.received
        piece = b"".join(blocks[b] for b in range(0, assignment.size, self.block_size))
        self._drop_owner(peer, state, index)
        self._verifying[index] = self._verifying.get(index, 0) + 1
        return PieceComplete(index, piece)

    def piece_verified(self, index: int) -> list[tuple[K, BlockRequest]]:
        """Piece `index` passed its hash check and is stored. Returns the requests other peers still
        hold for it (endgame copies), to be cancelled; those copies are dropped."""
        self._judged(index)
        if self._done[index]:
            return []
        cancels: list[tuple[K, BlockRequest]] = []
        for owner, assignment in list(self._owners.get(index, {}).items()):
            cancels.extend((owner, BlockRequest(index, b, n)) for b, n in sorted(assignment.requested.items()))
            state = self._peers[owner]
            state.outstanding -= len(assignment.requested)
            self._drop_owner(owner, state, index)
        self._free_discard(index)
        self._mark_done(index)
        return cancels

    def piece_failed(self, index: int) -> None:
        """The copy of piece `index` that `on_block` returned failed its hash check (the fetch bans the
        peer that sent it): the piece goes back to the pool unless another copy is on its way."""
        self._judged(index)
        if not self._done[index] and not self._owners.get(index) and not self._verifying.get(index):
            self._free_add(index)

    def stalled(self, now: float, timeout: float) -> list[K]:
        """Peers that hold requests and sent no block for `timeout` seconds."""
        return [p for p, s in self._peers.items() if s.outstanding > 0 and now - s.last_progress >= timeout]

    # --- internals -------------------------------------------------------------------------------

    def _check_index(self, index: int) -> int:
        if not 0 <= index < self.piece_count:
            raise IndexError(f"piece {index} is outside 0..{self.piece_count - 1}")
        return index

    def _mark_done(self, index: int) -> None:
        if not self._done[index]:
            self._done[index] = 1
            self._done_count += 1
            self._done_bytes += self.piece_size(index)

    def _is_free(self, index: int) -> bool:
        bucket = self._free.get(self._avail[index])
        return bucket is not None and index in bucket

    def _free_add(self, index: int) -> None:
        self._free.setdefault(self._avail[index], _IndexedSet()).add(index)

    def _free_discard(self, index: int) -> None:
        bucket = self._free.get(self._avail[index])
        if bucket is not None:
            bucket.discard(index)

    def _change_avail(self, index: int, delta: int) -> None:
        free = self._is_free(index)
        if free:
            self._free_discard(index)
        self._avail[index] += delta
        if free:
            self._free_add(index)

    def _judged(self, index: int) -> None:
        self._check_index(index)
        left = self._verifying.get(index, 0) - 1
        if left > 0:
            self._verifying[index] = left
        else:
            self._verifying.pop(index, None)

    def _assign(self, peer: K, state: _Peer, index: int) -> _Assignment:
        size = self.piece_size(index)
        assignment = _Assignment(size=size, pending=list(range(0, size, self.block_size))[::-1])
        state.assignments[index] = assignment
        self._owners.setdefault(index, {})[peer] = assignment
        self._free_discard(index)
        return assignment

    def _take(self, index: int, assignment: _Assignment, room: int, out: list[BlockRequest]) -> int:
        taken = 0
        while taken < room and assignment.pending:
            begin = assignment.pending.pop()
            length = min(self.block_size, assignment.size - begin)
            assignment.requested[begin] = length
            out.append(BlockRequest(index, begin, length))
            taken += 1
        return taken

    def _drop_owner(self, peer: K, state: _Peer, index: int) -> None:
        del state.assignments[index]
        owners = self._owners[index]
        del owners[peer]
        if not owners:
            del self._owners[index]

    def _drop_assignment(self, peer: K, state: _Peer, index: int) -> None:
        """Forget `peer`'s copy of `index`, blocks and all; free the piece if nobody else has it."""
        self._drop_owner(peer, state, index)
        if not self._done[index] and index not in self._owners and not self._verifying.get(index):
            self._free_add(index)

    def _pick_free(self, state: _Peer) -> int | None:
        """A free piece the peer has, among the rarest; at random among equals when an rng is given."""
        for level in sorted(level for level, bucket in self._free.items() if level > 0 and len(bucket)):
            bucket = self._free[level]
            found: list[int] = []
            if state.has_all or len(bucket) <= len(state.have):
                start = self._rng.randrange(len(bucket)) if self._rng is not None else 0
                for index in bucket.scan(start):
                    if state.has_all or index in state.have:
                        found.append(index)
                        if len(found) >= _SCAN:
                            break
            else:
                for index in state.have:
                    if index in bucket:
                        found.append(index)
                        if len(found) >= _SCAN:
                            break
            if found:
                return self._rng.choice(found) if self._rng is not None else min(found)
        return None

    def _pick_endgame(self, peer: K, state: _Peer) -> int | None:
        """A piece others are downloading that this peer has: the one with the fewest copies under way,
        then the one whose best copy is furthest from finished."""
        best: tuple[int, int, int] | None = None
        for index, owners in self._owners.items():
            if peer in owners or len(owners) >= self.endgame_copies:
                continue
            if not (state.has_all or index in state.have):
                continue
            done = max(len(a.received) for a in owners.values())
            key = (len(owners), done, index)
            if best is None or key < best:
                best = key
        return best[2] if best is not None else None
