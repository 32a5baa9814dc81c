"""PieceStore: blocks across file boundaries, verified writes, resume by verify(), and no escape from root."""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import libtorrent as lt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kadnode.torrent.metainfo import FileEntry, Metainfo, build_metainfo, parse_torrent_file
from kadnode.torrent.pieces import MAX_OPEN_FILES, PieceStore

KIB = 1024
PIECE = 16 * KIB
# Sizes chosen so that pieces start and end inside files, a piece spans four files, and empty files sit
# between and after the others.
SIZES = {"a": 5000, "b/empty": 0, "b/c": 40_000, "b/d/e": 1, "f": 3000, "g": 30_000, "h": PIECE, "z": 0}


def tree(root: Path, sizes: dict[str, int]) -> bytes:
    """Write files of random bytes; the torrent's byte stream (files in path order)."""
    for rel, size in sizes.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(size))
    return b"".join((root / rel).read_bytes() for rel in sorted(sizes, key=lambda r: tuple(r.split("/"))))


@pytest.fixture
def seeded(tmp_path: Path) -> Iterator[tuple[Metainfo, Path, bytes]]:
    """(meta, share root, the whole byte stream) for a shared directory `tmp_path/src/share`."""
    stream = tree(tmp_path / "src" / "share", SIZES)
    meta = build_metainfo(tmp_path / "src" / "share", piece_length=PIECE)
    assert meta.total_length == len(stream)
    yield meta, tmp_path / "src", stream


def listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


# --- reading --------------------------------------------------------------------------------------------


def test_pieces_equal_the_concatenated_files(seeded: tuple[Metainfo, Path, bytes]) -> None:
    meta, root, stream = seeded
    with PieceStore(meta, root, writable=False) as store:
        for i in range(meta.piece_count):
            assert store.read_piece(i) == stream[i * PIECE : (i + 1) * PIECE]
        assert store.verify() == set(range(meta.piece_count))
        assert store.content_path == root / "share"


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_blocks_spanning_files(seeded: tuple[Metainfo, Path, bytes], data: st.DataObject) -> None:
    meta, root, stream = seeded
    index = data.draw(st.integers(0, meta.piece_count - 1))
    size = meta.piece_size(index)
    begin = data.draw(st.integers(0, size - 1))
    length = data.draw(st.integers(1, size - begin))
    with PieceStore(meta, root, writable=False) as store:
        start = index * PIECE + begin
        assert store.read_block(index, begin, length) == stream[start : start + length]


def test_a_piece_spanning_four_files(seeded: tuple[Metainfo, Path, bytes]) -> None:
    meta, root, stream = seeded
    # Piece 2 covers [32768, 49152): the end of b/c, all of b/d/e and f, and the start of g.
    starts = {"/".join(e.path[1:]): e.offset for e in meta.files}
    assert starts["b/c"] < 2 * PIECE < starts["b/d/e"] < starts["f"] < starts["g"] < 3 * PIECE
    with PieceStore(meta, root, writable=False) as store:
        assert store.read_block(2, 0, PIECE) == stream[2 * PIECE : 3 * PIECE]


@pytest.mark.parametrize(
    ("index", "begin", "length"),
    [(-1, 0, 10), (6, 0, 10), (0, -1, 10), (0, 0, 0), (0, 0, -5), (0, PIECE - 1, 2), (0, PIECE, 1), (5, 0, PIECE)],
)
def test_read_block_outside_the_piece(
    seeded: tuple[Metainfo, Path, bytes], index: int, begin: int, length: int
) -> None:
    meta, root, _ = seeded
    assert meta.piece_count == 6 and meta.piece_size(5) < PIECE
    with PieceStore(meta, root, writable=False) as store, pytest.raises(ValueError) as err:
        store.read_block(index, begin, length)
    message = str(err.value)
    assert f"piece {index}" in message and f"begin {begin}" in message and f"length {length}" in message


def test_read_piece_out_of_range(seeded: tuple[Metainfo, Path, bytes]) -> None:
    meta, root, _ = seeded
    with PieceStore(meta, root, writable=False) as store:
        for bad in (-1, meta.piece_count):
            with pytest.raises(ValueError, match=f"piece {bad}"):
                store.read_piece(bad)


def test_read_only_store_creates_nothing(tmp_path: Path, seeded: tuple[Metainfo, Path, bytes]) -> None:
    meta, _, _ = seeded
    empty = tmp_path / "empty"
    empty.mkdir()
    with PieceStore(meta, empty, writable=False) as store:
        assert store.verify() == set()
        with pytest.raises(FileNotFoundError):
            store.read_piece(0)
        with pytest.raises(ValueError, match="read-only"):
            store.write_piece(0, b"x")
    assert listing(empty) == []
    with PieceStore(meta, tmp_path / "missing", writable=False) as store:
        assert store.verify() == set()
    assert not (tmp_path / "missing").exists()


def open_modes(under: Path) -> dict[str, int]:
    """Access modes (os.O_RDONLY/O_WRONLY/O_RDWR) of this process's descriptors for files under `under`."""
    modes: dict[str, int] = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
            flags = int(Path(f"/proc/self/fdinfo/{fd}").read_text().split("flags:")[1].split()[0], 8)
        except OSError:
            continue
        if target.startswith(str(under) + "/"):
            modes[target] = flags & os.O_ACCMODE
    return modes


def test_read_only_store_opens_files_read_only(seeded: tuple[Metainfo, Path, bytes], tmp_path: Path) -> None:
    meta, root, stream = seeded
    with PieceStore(meta, root, writable=False) as store:
        assert store.read_piece(2) == stream[2 * PIECE : 3 * PIECE]
        modes = open_modes(root)
        assert len(modes) == 4 and set(modes.values()) == {os.O_RDONLY}
    assert open_modes(root) == {}
    with PieceStore(meta, tmp_path / "out", writable=True) as store:
        assert store.write_piece(2, stream[2 * PIECE : 3 * PIECE])
        assert set(open_modes(tmp_path / "out").values()) == {os.O_RDWR}


# --- writing and verifying -----------------------------------------------------------------------------------


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(order=st.permutations(range(6)), stop=st.integers(0, 6))
def test_verify_after_partial_writes_returns_exactly_the_written_pieces(
    seeded: tuple[Metainfo, Path, bytes], tmp_path_factory: pytest.TempPathFactory, order: list[int], stop: int
) -> None:
    meta, _, stream = seeded
    out = tmp_path_factory.mktemp("out")
    written = order[:stop]
    with PieceStore(meta, out, writable=True) as store:
        for i in written:
            assert store.write_piece(i, stream[i * PIECE : (i + 1) * PIECE])
        assert store.verify() == set(written)
    # A new store (a resumed fetch) sees the same.
    with PieceStore(meta, out, writable=True) as again:
        assert again.verify() == set(written)


def test_complete_download_reproduces_every_file(seeded: tuple[Metainfo, Path, bytes], tmp_path: Path) -> None:
    meta, root, stream = seeded
    out = tmp_path / "out" / "nested"  # created on the first write
    with PieceStore(meta, out, writable=True) as store:
        for i in reversed(range(meta.piece_count)):
            assert store.write_piece(i, stream[i * PIECE : (i + 1) * PIECE])
    assert listing(out / "share") == listing(root / "share")
    for rel in SIZES:
        assert (out / "share" / rel).read_bytes() == (root / "share" / rel).read_bytes(), rel


def test_files_are_sparse_until_written(tmp_path: Path) -> None:
    data = os.urandom(PIECE * 64)
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "big").write_bytes(data)
    meta = build_metainfo(tmp_path / "src" / "big", piece_length=PIECE)
    with PieceStore(meta, tmp_path / "out", writable=True) as store:
        assert store.write_piece(63, data[63 * PIECE :])
        assert store.verify() == {63}
    st_out = os.stat(tmp_path / "out" / "big")
    assert st_out.st_size == len(data)
    assert st_out.st_blocks * 512 < len(data) // 2


def test_bad_data_returns_false_and_writes_nothing(seeded: tuple[Metainfo, Path, bytes], tmp_path: Path) -> None:
    meta, _, stream = seeded
    out = tmp_path / "out"
    good = stream[:PIECE]
    with PieceStore(meta, out, writable=True) as store:
        assert not store.write_piece(0, b"\x00" + good[1:])
        assert not store.write_piece(0, good[:-1])
        assert not store.write_piece(0, good + b"x")
        assert not store.write_piece(1, good)
        assert not out.exists()
        with pytest.raises(ValueError, match="piece 6"):
            store.write_piece(6, good)
        assert store.write_piece(0, good)
        assert store.verify() == {0}


def test_short_and_missing_files_leave_their_pieces_unverified(
    seeded: tuple[Metainfo, Path, bytes], tmp_path: Path
) -> None:
    meta, root, _ = seeded
    with PieceStore(meta, root, writable=False) as store:
        os.truncate(root / "share" / "g", 100)  # g covers pieces 2..4
        assert store.verify() == {0, 1, 5}
        with pytest.raises(OSError, match="shorter"):
            store.read_piece(3)
        (root / "share" / "a").unlink()  # a is in piece 0
        assert store.verify() == {1, 5}


def test_stale_longer_file_is_cut_to_length(seeded: tuple[Metainfo, Path, bytes], tmp_path: Path) -> None:
    meta, _, stream = seeded
    out = tmp_path / "out"
    (out / "share").mkdir(parents=True)
    (out / "share" / "a").write_bytes(b"\xff" * 100_000)
    with PieceStore(meta, out, writable=True) as store:
        assert store.verify() == set()
        assert store.write_piece(0, stream[:PIECE])
        assert store.verify() == {0}
    assert (out / "share" / "a").read_bytes() == stream[:5000]


def test_descriptors_are_bounded_and_closed(tmp_path: Path) -> None:
    sizes = {f"f{i:03d}": 1000 for i in range(3 * MAX_OPEN_FILES)}
    stream = tree(tmp_path / "src" / "many", sizes)
    meta = build_metainfo(tmp_path / "src" / "many", piece_length=PIECE)
    before = len(os.listdir("/proc/self/fd"))
    store = PieceStore(meta, tmp_path / "src", writable=False)
    assert b"".join(store.read_piece(i) for i in range(meta.piece_count)) == stream
    assert len(os.listdir("/proc/self/fd")) - before <= MAX_OPEN_FILES
    store.close()
    assert len(os.listdir("/proc/self/fd")) == before
    assert store.read_block(0, 0, 10) == stream[:10]  # reopens after close
    store.close()


def test_padding_files_read_as_zeros_and_are_never_created(tmp_path: Path) -> None:
    src = tmp_path / "src"
    stream = tree(src / "share", {"a": 20_000, "b": 7000})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        storage = lt.file_storage()
        lt.add_files(storage, str(src / "share"))
        creator = lt.create_torrent(storage, PIECE)  # hybrid v1+v2: pads each file to a piece boundary
    lt.set_piece_hashes(creator, str(src))
    meta = parse_torrent_file(bytes(lt.bencode(creator.generate())))
    assert any(e.pad for e in meta.files)
    with PieceStore(meta, src, writable=False) as seed:
        assert seed.verify() == set(range(meta.piece_count))
        pieces = [seed.read_piece(i) for i in range(meta.piece_count)]
    assert pieces[1][20_000 - PIECE :] == bytes(2 * PIECE - 20_000)
    out = tmp_path / "out"
    with PieceStore(meta, out, writable=True) as store:
        assert all(store.write_piece(i, piece) for i, piece in enumerate(pieces))
    assert listing(out) == ["share", "share/a", "share/b"]
    assert (out / "share" / "a").read_bytes() + (out / "share" / "b").read_bytes() == stream


# --- staying inside root ------------------------------------------------------------------------------------------


def forged(*paths: tuple[str, ...]) -> Metainfo:
    """Metainfo that skipped parse_info (as a buggy caller might build it)."""
    files = tuple(FileEntry(p, 10, 10 * i) for i, p in enumerate(paths))
    hashes = (hashlib.sha1(bytes(10 * len(paths))).digest(),)
    return Metainfo(b"", b"\x00" * 20, paths[0][0], PIECE, hashes, files, 10 * len(paths))


@pytest.mark.parametrize(
    "path",
    [("..", "escape"), ("x", "..", "..", "escape"), ("/etc",), ("x", "/abs"), ("x", "a/b"), ("x", ""), ()],
)
def test_forged_paths_are_refused(tmp_path: Path, path: tuple[str, ...]) -> None:
    with pytest.raises(ValueError, match="refusing file path"):
        PieceStore(forged(("x", "ok"), path), tmp_path / "out", writable=True)
    assert not (tmp_path / "out").exists() and not (tmp_path / "escape").exists()


def test_symlinked_directory_is_not_followed(seeded: tuple[Metainfo, Path, bytes], tmp_path: Path) -> None:
    meta, _, stream = seeded
    out, outside = tmp_path / "out", tmp_path / "outside"
    outside.mkdir()
    out.mkdir()
    (out / "share").symlink_to(outside)  # planted where the torrent's directory goes
    with PieceStore(meta, out, writable=True) as store:
        assert store.verify() == set()
        with pytest.raises(ValueError, match="symlink"):
            store.write_piece(0, stream[:PIECE])
    assert listing(outside) == []


def test_symlinked_file_is_not_followed(seeded: tuple[Metainfo, Path, bytes], tmp_path: Path) -> None:
    meta, _, stream = seeded
    out = tmp_path / "out"
    (out / "share" / "b").mkdir(parents=True)
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    (out / "share" / "a").symlink_to(victim)
    (out / "share" / "b" / "c").symlink_to(victim)
    with PieceStore(meta, out, writable=True) as store:
        for i in (0, 1):
            with pytest.raises(ValueError, match="symlink"):
                store.write_piece(i, stream[i * PIECE : (i + 1) * PIECE])
    with PieceStore(meta, out, writable=False) as reader, pytest.raises(ValueError, match="symlink"):
        reader.read_piece(0)
    assert victim.read_bytes() == b"precious"


def test_symlinked_share_is_not_served(seeded: tuple[Metainfo, Path, bytes], tmp_path: Path) -> None:
    meta, root, _ = seeded
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (root / "share").rename(elsewhere / "share")
    (root / "share").symlink_to(elsewhere / "share")
    with PieceStore(meta, root, writable=False) as store:
        assert store.verify() == set()
    # The root itself may be reached through a symlink: only what is below root is checked.
    (tmp_path / "alias").symlink_to(elsewhere)
    with PieceStore(meta, tmp_path / "alias", writable=False) as store:
        assert store.verify() == set(range(meta.piece_count))


def test_fifo_in_place_of_a_file_is_refused_without_blocking(
    seeded: tuple[Metainfo, Path, bytes], tmp_path: Path
) -> None:
    meta, root, _ = seeded
    (root / "share" / "a").unlink()
    os.mkfifo(root / "share" / "a")
    with PieceStore(meta, root, writable=False) as store:
        with pytest.raises(ValueError, match="not a regular file"):
            store.read_piece(0)
        assert 0 not in store.verify()


def test_file_where_a_directory_belongs(seeded: tuple[Metainfo, Path, bytes], tmp_path: Path) -> None:
    meta, _, stream = seeded
    out = tmp_path / "out"
    (out / "share").mkdir(parents=True)
    (out / "share" / "b").write_bytes(b"in the way")
    with PieceStore(meta, out, writable=True) as store, pytest.raises(ValueError, match="not a directory"):
        store.write_piece(1, stream[PIECE : 2 * PIECE])
    assert (out / "share" / "b").read_bytes() == b"in the way"
