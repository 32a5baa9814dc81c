"""The piece picker on its own: rarest first, whole pieces per peer, endgame copies and cancels, blame and
requeue after a failed hash, stalls and departures, all without sockets or a clock."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kadnode.torrent.picker import BLOCK_SIZE, BlockRequest, PieceComplete, PiecePicker

B = BLOCK_SIZE


def picker(pieces: int, *, piece_length: int = 2 * B, last: int | None = None, **kw: object) -> PiecePicker[str]:
    total = piece_length * pieces if last is None else piece_length * (pieces - 1) + last
    return PiecePicker(piece_length, total, **kw)  # type: ignore[arg-type]


def block(req: BlockRequest) -> bytes:
    return bytes([req.index % 251]) * req.length


def deliver(p: PiecePicker[str], peer: str, reqs: list[BlockRequest], now: float = 1.0) -> list[PieceComplete]:
    done = []
    for req in reqs:
        result = p.on_block(peer, req.index, req.begin, block(req), now)
        if result is not None:
            done.append(result)
    return done


def test_sizes_and_blocks_of_a_short_last_piece() -> None:
    p = picker(3, piece_length=2 * B, last=B + 100)
    assert p.piece_count == 3
    assert [p.piece_size(i) for i in range(3)] == [2 * B, 2 * B, B + 100]
    with pytest.raises(IndexError):
        p.piece_size(3)
    p.add_peer("a", [2])
    reqs = p.next_requests("a", 8, 0.0)
    assert reqs == [BlockRequest(2, 0, B), BlockRequest(2, B, 100)]
    (complete,) = deliver(p, "a", reqs)
    assert complete.index == 2 and len(complete.data) == B + 100


def test_rarest_piece_goes_first() -> None:
    p = picker(4)
    p.add_peer("a", [0, 1, 2, 3])
    p.add_peer("b", [1, 2, 3])
    p.add_peer("c", [2, 3])
    p.add_peer("d", [3])
    assert [p.availability(i) for i in range(4)] == [1, 2, 3, 4]
    # a has everything, but piece 0 only a has: it is asked for first.
    assert {r.index for r in p.next_requests("a", 2, 0.0)} == {0}
    # b cannot have 0; its rarest is 1.
    assert {r.index for r in p.next_requests("b", 2, 0.0)} == {1}
    assert {r.index for r in p.next_requests("c", 2, 0.0)} == {2}
    assert {r.index for r in p.next_requests("d", 2, 0.0)} == {3}


def test_have_messages_change_rarity() -> None:
    p = picker(3)
    p.add_peer("a", [0, 1, 2])
    p.add_peer("b", [])
    assert p.peer_has("b", 0) is True
    assert p.peer_has("b", 1) is True
    assert p.availability(0) == 2 and p.availability(2) == 1
    assert {r.index for r in p.next_requests("a", 2, 0.0)} == {2}


def test_a_whole_piece_goes_to_one_peer_and_the_pipeline_is_kept_full() -> None:
    p = picker(4, piece_length=4 * B)
    p.add_peer("a", range(4))
    p.add_peer("b", range(4))
    first = p.next_requests("a", 6, 0.0)
    assert len(first) == 6 and p.outstanding("a") == 6
    pieces_a = {r.index for r in first}
    assert len(pieces_a) == 2  # one whole piece (4 blocks) and half of the next
    second = p.next_requests("b", 6, 0.0)
    assert not pieces_a & {r.index for r in second}, "no piece is shared outside endgame"
    # Nothing more while the pipeline is full; one answer opens one slot.
    assert p.next_requests("a", 6, 0.0) == []
    deliver(p, "a", first[:1])
    (more,) = p.next_requests("a", 6, 0.5)
    assert more.index in pieces_a and more.begin == 2 * B


def test_blocks_nobody_asked_for_are_dropped_and_wrong_lengths_refused() -> None:
    p = picker(2)
    p.add_peer("a", [0, 1])
    p.add_peer("b", [0, 1])
    reqs = p.next_requests("a", 1, 0.0)
    assert p.on_block("b", reqs[0].index, 0, block(reqs[0]), 1.0) is None
    assert p.on_block("a", reqs[0].index, B, block(reqs[0]), 1.0) is None  # not requested yet
    assert p.on_block("nobody", 0, 0, b"x", 1.0) is None
    assert p.unexpected_blocks == 3
    with pytest.raises(ValueError, match="bytes"):
        p.on_block("a", reqs[0].index, 0, b"short", 1.0)


def test_a_failed_piece_is_blamed_on_its_one_peer_and_requeued() -> None:
    p = picker(2)
    p.add_peer("bad", [0, 1])
    p.add_peer("good", [0, 1])
    reqs = p.next_requests("bad", 2, 0.0)
    (complete,) = deliver(p, "bad", reqs)
    index = complete.index
    assert p.owners(index) == []
    assert not p.is_done(index)
    # While it is being checked nobody else is handed that piece.
    first = p.next_requests("good", 2, 0.0)
    assert first and all(r.index != index for r in first)
    p.piece_failed(index)
    p.remove_peer("bad")  # the fetch bans it
    assert p.availability(index) == 1
    # The piece is back in the pool and goes to the other peer.
    assert not p.complete
    good = p.next_requests("good", 4, 1.0)
    assert {r.index for r in good} == {index}
    good = first + good
    for done in deliver(p, "good", good):
        assert p.piece_verified(done.index) == []
    assert p.complete and p.done_bytes == 4 * B


def test_resumed_pieces_are_never_requested() -> None:
    p = picker(5, have=[0, 2, 4])
    assert p.missing == 2 and p.done_count == 3 and p.done_bytes == 6 * B
    p.add_peer("a", range(5))
    reqs = p.next_requests("a", 100, 0.0)
    assert {r.index for r in reqs} == {1, 3}
    p.add_peer("b", [0, 2])
    assert not p.interesting("b")
    assert p.peer_has("b", 4) is False
    assert p.peer_has("b", 3) is True
    assert p.interesting("b")


def test_a_choke_returns_the_peers_pieces_but_keeps_its_availability() -> None:
    p = picker(2)
    p.add_peer("a", [0, 1])
    reqs = p.next_requests("a", 1, 0.0)
    deliver(p, "a", reqs)  # half of the piece
    p.release("a")
    assert p.outstanding("a") == 0 and p.assigned("a") == []
    assert p.availability(0) == 1 and p.availability(1) == 1
    # The partial copy is gone: after an unchoke the piece starts again from its first block.
    again = p.next_requests("a", 4, 1.0)
    assert sum(1 for r in again if r.begin == 0) == 2


def test_stall_detection_and_requeue() -> None:
    p = picker(3)
    p.add_peer("slow", range(3))
    p.add_peer("fast", range(3))
    slow = p.next_requests("slow", 2, 10.0)
    p.next_requests("fast", 2, 10.0)
    assert p.stalled(14.0, 5.0) == []
    assert set(p.stalled(15.0, 5.0)) == {"slow", "fast"}
    # A block resets the clock of its peer only.
    deliver(p, "fast", [], 0)
    fast_reqs = p.next_requests("fast", 2, 10.0)
    assert fast_reqs == []
    p.on_block("fast", p.assigned("fast")[0], 0, bytes(B), 14.0)
    assert p.stalled(15.0, 5.0) == ["slow"]
    # An idle peer never stalls.
    p.add_peer("idle", [])
    assert "idle" not in p.stalled(100.0, 5.0)
    # The stalled peer is dropped: its piece goes to the others.
    stalled_piece = slow[0].index
    p.remove_peer("slow")
    p.add_peer("other", range(3))
    assert stalled_piece in {r.index for r in p.next_requests("other", 2, 16.0)}


def test_endgame_duplicates_to_an_idle_peer_and_cancels_the_loser() -> None:
    p = picker(2, piece_length=4 * B)
    p.add_peer("a", [0, 1])
    p.add_peer("b", [0, 1])
    p.add_peer("c", [0, 1])
    ra = p.next_requests("a", 4, 0.0)
    rb = p.next_requests("b", 4, 0.0)
    assert {r.index for r in ra} != {r.index for r in rb}
    assert p.endgame
    # c has nothing of its own left: it takes copies.
    rc = p.next_requests("c", 8, 0.0)
    assert {r.index for r in rc} == {0, 1}
    assert len(p.owners(0)) == 2 and len(p.owners(1)) == 2
    # a finishes its piece first: c's outstanding requests for it come back to be cancelled.
    (done,) = deliver(p, "a", ra)
    cancels = p.piece_verified(done.index)
    assert cancels and all(peer == "c" and r.index == done.index for peer, r in cancels)
    assert sorted(r.begin for _, r in cancels) == [0, B, 2 * B, 3 * B]
    assert p.outstanding("c") == 4
    # A late block for the cancelled request is dropped, not counted as progress.
    assert p.on_block("c", done.index, 0, bytes(B), 1.0) is None
    assert p.unexpected_blocks == 1
    # c wins the other piece; b is cancelled.
    other = 1 - done.index
    (won,) = deliver(p, "c", [r for r in rc if r.index == other])
    assert won.index == other
    cancels = p.piece_verified(other)
    assert {peer for peer, _ in cancels} == {"b"}
    assert p.complete and p.outstanding("b") == 0 and p.endgame is False


def test_endgame_copies_are_bounded() -> None:
    p = picker(1, endgame_copies=2)
    for peer in "abcd":
        p.add_peer(peer, [0])
    assert p.next_requests("a", 4, 0.0)
    assert p.next_requests("b", 4, 0.0)
    assert p.next_requests("c", 4, 0.0) == []
    assert sorted(p.owners(0)) == ["a", "b"]


def test_a_failed_endgame_copy_leaves_the_other_running() -> None:
    p = picker(1)
    p.add_peer("bad", [0])
    p.add_peer("good", [0])
    rb = p.next_requests("bad", 4, 0.0)
    rg = p.next_requests("good", 4, 0.0)
    assert rb and rg
    (copy,) = deliver(p, "bad", rb)
    p.piece_failed(copy.index)
    p.remove_peer("bad")
    assert p.owners(0) == ["good"]
    (good,) = deliver(p, "good", rg)
    assert p.piece_verified(good.index) == []
    assert p.complete


def test_a_piece_nobody_has_does_not_start_endgame() -> None:
    p = picker(3)
    p.add_peer("a", [0])
    assert not p.endgame
    p.next_requests("a", 2, 0.0)
    assert p.endgame  # every piece some peer has is under way
    p.add_peer("b", [1])
    assert not p.endgame


def test_leaving_peer_lowers_availability() -> None:
    p = picker(3)
    p.add_peer("seed", range(3))
    p.add_peer("part", [1])
    assert [p.availability(i) for i in range(3)] == [1, 2, 1]
    p.remove_peer("seed")
    assert [p.availability(i) for i in range(3)] == [0, 1, 0]
    assert {r.index for r in p.next_requests("part", 8, 0.0)} == {1}
    with pytest.raises(ValueError):
        p.add_peer("part", [])


@settings(max_examples=60, deadline=None)
@given(
    pieces=st.integers(1, 12),
    blocks=st.integers(1, 3),
    seed=st.integers(0, 2**32),
    steps=st.lists(st.tuples(st.sampled_from("abcd"), st.integers(0, 5)), max_size=200),
)
def test_random_schedules_complete_every_piece_exactly_once(
    pieces: int, blocks: int, seed: int, steps: list[tuple[str, int]]
) -> None:
    """Peers come and go, choke, stall, send corrupt pieces in any order: every piece is verified once,
    the bookkeeping stays consistent, and once the churn stops an honest peer finishes the rest."""
    rng = random.Random(seed)
    p: PiecePicker[str] = PiecePicker(blocks * B, pieces * blocks * B - 7, rng=rng)
    inflight: dict[str, list[BlockRequest]] = {}
    verified: list[int] = []
    now = 0.0

    def finish(peer: str, piece: PieceComplete, ok: bool) -> None:
        assert not p.is_done(piece.index)
        if ok:
            verified.append(piece.index)
            for other, req in p.piece_verified(piece.index):
                inflight[other].remove(req)
        else:
            p.piece_failed(piece.index)

    for peer, action in steps:
        now += 1.0
        if peer not in p.peers():
            p.add_peer(peer, [i for i in range(pieces) if rng.random() < 0.7])
            inflight[peer] = []
        elif action == 0:
            p.remove_peer(peer)
            inflight.pop(peer)
        elif action == 1:
            p.release(peer)
            inflight[peer] = []
        elif action in (2, 3) and inflight[peer]:
            req = inflight[peer].pop(0)
            done = p.on_block(peer, req.index, req.begin, block(req), now)
            if done is not None:
                finish(peer, done, ok=action == 2)
        else:
            inflight[peer].extend(p.next_requests(peer, 4, now))
        assert sum(len(v) for v in inflight.values()) == sum(p.outstanding(k) for k in p.peers())
    for peer in list(p.peers()):
        p.remove_peer(peer)
    p.add_peer("seed", range(pieces))
    while not p.complete:
        reqs = p.next_requests("seed", 4, now)
        assert reqs, "an honest seed always has something to do until the end"
        for done in deliver(p, "seed", reqs):
            finish("seed", done, ok=True)
    assert sorted(verified) == list(range(pieces))
