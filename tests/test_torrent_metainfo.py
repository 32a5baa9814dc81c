"""Torrent metadata: building from real files, strict parsing of hostile info dicts, libtorrent agreement."""

from __future__ import annotations

import contextlib
import hashlib
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import libtorrent as lt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kadnode.torrent import metainfo
from kadnode.torrent.magnet import parse_target
from kadnode.torrent.metainfo import (
    MAX_FILES,
    MAX_PATH_DEPTH,
    MAX_TOTAL_LENGTH,
    FileEntry,
    Metainfo,
    MetainfoError,
    build_metainfo,
    parse_info,
    parse_torrent_file,
    piece_length_for,
    torrent_file,
    unsafe_component,
)
from kadnode.wire.bencode import Bencodable, bdecode, bencode

KIB = 1024
MIB = 1024 * 1024


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def decoded(data: bytes) -> dict[bytes, Any]:
    value = bdecode(data, max_depth=6)
    assert isinstance(value, dict)
    return value


def lt_info(data: bytes) -> Any:
    """libtorrent's parse of a .torrent (its stubs do not type bdecode's result as a torrent dict)."""
    return lt.torrent_info(cast(Any, lt.bdecode(data)))


def piece_hashes(data: bytes, piece_length: int) -> tuple[bytes, ...]:
    return tuple(hashlib.sha1(data[i : i + piece_length]).digest() for i in range(0, len(data), piece_length))


@pytest.fixture
def share(tmp_path: Path) -> Iterator[tuple[Path, dict[tuple[str, ...], bytes]]]:
    """A directory with nested files, an empty one, and sizes that make pieces span file boundaries."""
    root = tmp_path / "share"
    contents = {
        ("b.bin",): os.urandom(40_000),
        ("a.txt",): b"hello\n" * 1000,
        ("empty",): b"",
        ("sub", "deeper", "z"): os.urandom(1),
        ("sub", "c d é"): os.urandom(20_000),
    }
    for rel, data in contents.items():
        write(root.joinpath(*rel), data)
    yield root, contents


# --- piece length -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("total", "expected"),
    [
        (0, 16 * KIB),
        (1, 16 * KIB),
        (2000 * 16 * KIB, 16 * KIB),
        (2000 * 16 * KIB + 1, 32 * KIB),
        (20_000_000, 16 * KIB),
        (100 * MIB, 64 * KIB),
        (1024 * MIB, MIB),
        (4 * 1024 * MIB, 4 * MIB),
        (2**40, 16 * MIB),
    ],
)
def test_piece_length_table(total: int, expected: int) -> None:
    assert piece_length_for(total) == expected


@given(st.integers(1, 2**40))
def test_piece_length_keeps_1000_to_2000_pieces(total: int) -> None:
    length = piece_length_for(total)
    assert 16 * KIB <= length <= 16 * MIB and length & (length - 1) == 0
    pieces = -(-total // length)
    assert pieces <= 2000 or length == 16 * MIB
    assert pieces > 1000 or length == 16 * KIB


# --- building -------------------------------------------------------------------------------------------


def test_build_single_file(tmp_path: Path) -> None:
    data = os.urandom(100_000)
    meta = build_metainfo(write(tmp_path / "movie.bin", data))
    assert meta.name == "movie.bin"
    assert meta.files == (FileEntry(("movie.bin",), 100_000, 0),)
    assert meta.total_length == 100_000
    assert meta.piece_length == 16 * KIB
    assert meta.piece_hashes == piece_hashes(data, 16 * KIB)
    assert meta.piece_count == 7
    assert meta.info_hash == hashlib.sha1(meta.info).digest()
    assert bdecode(meta.info, max_depth=5) == {
        b"name": b"movie.bin",
        b"length": 100_000,
        b"piece length": 16 * KIB,
        b"pieces": b"".join(meta.piece_hashes),
    }


def test_build_directory_sorts_files_and_keeps_empty_ones(
    share: tuple[Path, dict[tuple[str, ...], bytes]],
) -> None:
    root, contents = share
    meta = build_metainfo(root, piece_length=16 * KIB)
    order = sorted(contents)
    assert [f.path for f in meta.files] == [("share", *rel) for rel in order]
    offsets = [0]
    for rel in order:
        offsets.append(offsets[-1] + len(contents[rel]))
    assert [f.offset for f in meta.files] == offsets[:-1]
    assert [f.length for f in meta.files] == [len(contents[rel]) for rel in order]
    stream = b"".join(contents[rel] for rel in order)
    assert meta.total_length == len(stream)
    assert meta.piece_hashes == piece_hashes(stream, 16 * KIB)
    assert decoded(meta.info)[b"files"][2] == {b"length": 0, b"path": [b"empty"]}


def test_build_round_trips_through_parse_and_torrent_file(share: tuple[Path, dict[tuple[str, ...], bytes]]) -> None:
    root, _ = share
    meta = build_metainfo(root)
    assert parse_info(meta.info, info_hash=meta.info_hash) == meta
    data = torrent_file(meta)
    assert decoded(data)[b"created by"] == b"kadnode"
    assert parse_torrent_file(data) == meta


def test_build_reports_progress_up_to_the_total(tmp_path: Path) -> None:
    seen: list[int] = []
    meta = build_metainfo(write(tmp_path / "f", os.urandom(3 * MIB + 5)), piece_length=2 * MIB, progress=seen.append)
    assert seen == sorted(seen) and seen[-1] == meta.total_length
    assert len(seen) >= 4  # 1 MiB chunks


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sizes=st.lists(st.integers(0, 3000), min_size=1, max_size=6), chunk=st.integers(1, 5000))
def test_chunked_hashing_matches_hashing_the_whole_stream(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch, sizes: list[int], chunk: int
) -> None:
    root = tmp_path_factory.mktemp("chunks") / "d"
    blobs = [os.urandom(n) for n in sizes]
    for i, blob in enumerate(blobs):
        write(root / f"f{i:02d}", blob)
    with monkeypatch.context() as patch:
        patch.setattr(metainfo, "_HASH_CHUNK", chunk)
        if sum(sizes) == 0:
            with pytest.raises(MetainfoError) as err:
                build_metainfo(root)
            assert err.value.reason == "empty"
            return
        meta = build_metainfo(root)
    assert meta.piece_hashes == piece_hashes(b"".join(blobs), 16 * KIB)


def test_build_refuses_a_bad_piece_length(tmp_path: Path) -> None:
    path = write(tmp_path / "f", b"x" * 10)
    for length in (1000, 8 * KIB, 48 * KIB, 128 * MIB):
        with pytest.raises(MetainfoError) as err:
            build_metainfo(path, piece_length=length)
        assert err.value.reason == "bad_piece_length"


def build_reason(path: Path) -> str:
    with pytest.raises(MetainfoError) as err:
        build_metainfo(path)
    return err.value.reason


def test_build_refuses_symlinks(tmp_path: Path) -> None:
    target = write(tmp_path / "real", b"data")
    (tmp_path / "link").symlink_to(target)
    assert build_reason(tmp_path / "link") == "symlink"
    write(tmp_path / "dir" / "ok", b"data")
    (tmp_path / "dir" / "link").symlink_to(target)
    with pytest.raises(MetainfoError, match="link"):
        build_metainfo(tmp_path / "dir")


def test_build_refuses_special_files(tmp_path: Path) -> None:
    write(tmp_path / "dir" / "ok", b"data")
    os.mkfifo(tmp_path / "dir" / "fifo")
    assert build_reason(tmp_path / "dir") == "special_file"
    assert build_reason(tmp_path / "dir" / "fifo") == "special_file"


def test_build_refuses_empty_shares_and_missing_paths(tmp_path: Path) -> None:
    (tmp_path / "empty_dir" / "sub").mkdir(parents=True)
    assert build_reason(tmp_path / "empty_dir") == "empty"
    write(tmp_path / "zeros" / "a", b"")
    assert build_reason(tmp_path / "zeros") == "empty"
    assert build_reason(write(tmp_path / "nothing", b"")) == "empty"
    assert build_reason(tmp_path / "missing") == "not_found"


def test_build_refuses_names_it_would_refuse_to_parse(tmp_path: Path) -> None:
    write(tmp_path / "d1" / "back\\slash", b"x")
    assert build_reason(tmp_path / "d1") == "unsafe_path"
    write(tmp_path / "d2" / "tab\there", b"x")
    assert build_reason(tmp_path / "d2") == "unsafe_path"
    (tmp_path / "d3").mkdir()
    (Path(os.fsdecode(bytes(tmp_path / "d3") + b"/\xff\xfe"))).write_bytes(b"x")
    assert build_reason(tmp_path / "d3") == "bad_utf8"


# --- Metainfo ---------------------------------------------------------------------------------------------


def test_piece_size_and_magnet(tmp_path: Path) -> None:
    meta = build_metainfo(write(tmp_path / "a b+c", os.urandom(40_000)))
    assert [meta.piece_size(i) for i in range(meta.piece_count)] == [16 * KIB, 16 * KIB, 40_000 - 32 * KIB]
    for bad in (-1, 3):
        with pytest.raises(IndexError):
            meta.piece_size(bad)
    magnet = parse_target(meta.magnet())
    assert (magnet.info_hash, magnet.name) == (meta.info_hash, "a b+c")


def test_exact_multiple_has_a_full_last_piece(tmp_path: Path) -> None:
    meta = build_metainfo(write(tmp_path / "f", os.urandom(32 * KIB)))
    assert meta.piece_count == 2 and meta.piece_size(1) == 16 * KIB


# --- hostile info dicts -------------------------------------------------------------------------------------

_DROP = object()


def info_bytes(**changes: Any) -> bytes:
    """A valid single-file info dict (100 bytes, one piece) with fields replaced or dropped."""
    info: dict[str, Any] = {"name": b"x", "piece length": 16 * KIB, "pieces": b"\x01" * 20, "length": 100}
    for key, value in changes.items():
        key = key.replace("_", " ")
        if value is _DROP:
            del info[key]
        else:
            info[key] = value
    return bencode(info)


def files_info(files: list[Any], *, pieces: int = 1, **changes: Any) -> bytes:
    return info_bytes(length=_DROP, files=files, pieces=b"\x01" * 20 * pieces, **changes)


def f(*path: bytes | str, length: int = 10, **extra: Bencodable) -> dict[str, Bencodable]:
    return {"length": length, "path": [p.encode() if isinstance(p, str) else p for p in path], **extra}


HOSTILE: list[tuple[str, bytes, str]] = [
    ("garbage", b"not bencode", "bad_bencode"),
    ("trailing", info_bytes() + b"x", "bad_bencode"),
    ("unsorted keys", b"d4:name1:x6:lengthi100e12:piece lengthi16384e6:pieces20:" + b"\x01" * 20 + b"e", "bad_bencode"),
    ("a list", bencode([1, 2]), "bad_type"),
    ("no name", info_bytes(name=_DROP), "missing_field"),
    ("int name", info_bytes(name=5), "bad_type"),
    ("latin-1 name", info_bytes(name=b"caf\xe9"), "bad_utf8"),
    ("dotdot name", info_bytes(name=b".."), "unsafe_path"),
    ("dot name", info_bytes(name=b"."), "unsafe_path"),
    ("empty name", info_bytes(name=b""), "unsafe_path"),
    ("slash name", info_bytes(name=b"a/b"), "unsafe_path"),
    ("absolute name", info_bytes(name=b"/etc"), "unsafe_path"),
    ("drive name", info_bytes(name=b"C:x"), "unsafe_path"),
    ("no piece length", info_bytes(piece_length=_DROP), "missing_field"),
    ("piece length 0", info_bytes(piece_length=0), "bad_piece_length"),
    ("piece length -16384", info_bytes(piece_length=-16384), "bad_piece_length"),
    ("piece length 8 KiB", info_bytes(piece_length=8 * KIB), "bad_piece_length"),
    ("piece length 48 KiB", info_bytes(piece_length=48 * KIB), "bad_piece_length"),
    ("piece length 128 MiB", info_bytes(piece_length=128 * MIB), "bad_piece_length"),
    ("piece length string", info_bytes(piece_length=b"16384"), "bad_type"),
    ("no pieces", info_bytes(pieces=_DROP), "missing_field"),
    ("pieces 19 bytes", info_bytes(pieces=b"\x01" * 19), "bad_pieces"),
    ("too many pieces", info_bytes(pieces=b"\x01" * 40), "bad_pieces"),
    ("too few pieces", info_bytes(length=16 * KIB + 1), "bad_pieces"),
    ("no pieces for content", info_bytes(pieces=b""), "bad_pieces"),
    ("length and files", info_bytes(files=[f("a")]), "bad_files"),
    ("neither length nor files", info_bytes(length=_DROP), "missing_field"),
    ("negative length", info_bytes(length=-1), "bad_length"),
    ("huge length", info_bytes(length=MAX_TOTAL_LENGTH + 1), "too_large"),
    ("zero length", info_bytes(length=0, pieces=b""), "empty"),
    ("files not a list", info_bytes(length=_DROP, files=b"a"), "bad_type"),
    ("no files", files_info([]), "bad_files"),
    ("file not a dict", files_info([b"a"]), "bad_type"),
    ("file without path", files_info([{"length": 10}]), "missing_field"),
    ("file without length", files_info([{"path": [b"a"]}]), "missing_field"),
    ("negative file length", files_info([f("a", length=-5), f("b", length=20)]), "bad_length"),
    ("files over the limit in sum", files_info([f("a", length=2**39), f("b", length=2**39 + 1)]), "too_large"),
    ("all files empty", files_info([f("a", length=0)], pieces=0), "empty"),
    ("empty path", files_info([f()]), "unsafe_path"),
    ("path not a list", files_info([{"length": 1, "path": b"a"}]), "bad_type"),
    ("path component int", files_info([{"length": 1, "path": [1]}]), "bad_type"),
    ("dotdot component", files_info([f("..", "etc", "passwd")]), "unsafe_path"),
    ("dot component", files_info([f(".", "a")]), "unsafe_path"),
    ("empty component", files_info([f("a", "", "b")]), "unsafe_path"),
    ("slash component", files_info([f("a/../../b")]), "unsafe_path"),
    ("absolute component", files_info([f("/etc/passwd")]), "unsafe_path"),
    ("backslash component", files_info([f("..\\..\\x")]), "unsafe_path"),
    ("drive component", files_info([f("C:", "x")]), "unsafe_path"),
    ("NUL component", files_info([f("a\x00b")]), "unsafe_path"),
    ("escape component", files_info([f("a\x1b[31mred")]), "unsafe_path"),
    ("long component", files_info([f("x" * 256)]), "unsafe_path"),
    ("non-UTF-8 component", files_info([f(b"\xff")]), "bad_utf8"),
    ("deep path", files_info([f(*["d"] * (MAX_PATH_DEPTH + 1))]), "unsafe_path"),
    ("long path", files_info([f(*["d" * 200] * 25)]), "unsafe_path"),
    ("duplicate path", files_info([f("a"), f("a")]), "duplicate_path"),
    ("file is a directory too", files_info([f("a"), f("a", "b")]), "path_conflict"),
    ("directory is a file too", files_info([f("a", "b"), f("a")]), "path_conflict"),
    ("symlink attr", files_info([{"length": 0, "path": [b"a"], "attr": b"l", "symlink path": [b".."]}]), "unsafe_path"),
    ("attr not a string", files_info([f("a", attr=1)]), "bad_type"),
]


@pytest.mark.parametrize(
    ("data", "reason"), [(data, reason) for _, data, reason in HOSTILE], ids=[c[0] for c in HOSTILE]
)
def test_parse_info_refuses_hostile_metadata(data: bytes, reason: str) -> None:
    with pytest.raises(MetainfoError) as err:
        parse_info(data)
    assert err.value.reason == reason
    assert str(err.value).startswith(reason + ": ")


def test_parse_info_refuses_too_many_files() -> None:
    files = [f(f"{i}", length=0) for i in range(MAX_FILES + 1)]
    files[0]["length"] = 1
    with pytest.raises(MetainfoError) as err:
        parse_info(files_info(files))
    assert err.value.reason == "too_many_files"


def test_parse_info_refuses_a_wrong_hash_and_oversized_input() -> None:
    data = info_bytes()
    with pytest.raises(MetainfoError) as err:
        parse_info(data, info_hash=b"\x00" * 20)
    assert err.value.reason == "bad_hash"
    with pytest.raises(MetainfoError) as err:
        parse_info(data, max_size=len(data) - 1)
    assert err.value.reason == "too_large"
    assert parse_info(data, info_hash=hashlib.sha1(data).digest(), max_size=len(data)).total_length == 100


def test_parse_info_refuses_too_many_tokens() -> None:
    many = [f("a", length=1), {"length": 0, "path": [b"b"], "junk": [0] * 400_000}]
    with pytest.raises(MetainfoError) as err:
        parse_info(files_info(many))
    assert err.value.reason == "bad_bencode"


def test_parse_info_keeps_unknown_keys_in_the_hash() -> None:
    data = info_bytes(private=1, source=b"somewhere", **{"name.utf-8": b"ignored"})
    meta = parse_info(data)
    assert meta.info == data and meta.info_hash == hashlib.sha1(data).digest()
    assert meta.name == "x"


def test_parse_info_multi_file_layout() -> None:
    data = files_info([f("a", length=16 * KIB), f("d", "b", length=0), f("d", "c", length=5)], pieces=2)
    meta = parse_info(data, info_hash=hashlib.sha1(data).digest())
    assert meta.files == (
        FileEntry(("x", "a"), 16 * KIB, 0),
        FileEntry(("x", "d", "b"), 0, 16 * KIB),
        FileEntry(("x", "d", "c"), 5, 16 * KIB),
    )
    assert meta.total_length == 16 * KIB + 5 and meta.piece_count == 2 and meta.piece_size(1) == 5


def test_padding_files_may_repeat_their_path() -> None:
    pad = f(".pad", "6", length=6, attr=b"p")
    data = files_info([f("a", length=10), pad, f("b", length=10), pad])
    meta = parse_info(data)
    assert [entry.pad for entry in meta.files] == [False, True, False, True]
    assert meta.total_length == 32


def test_unsafe_component_accepts_ordinary_names() -> None:
    for name in ("a", "...", "..a", "a..", "ça va", "日本語.txt", "x" * 255, ".hidden", "ab:c", "1:x"):
        assert unsafe_component(name) is None, name


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_parse_info_fuzz_only_raises_metainfo_error(data: st.DataObject) -> None:
    base = files_info([f("a", length=10), f("b", "c", length=20)])
    mutated = bytearray(base)
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(mutated) - 1))
        mutated[pos] = data.draw(st.integers(0, 255))
    try:
        meta = parse_info(bytes(mutated))
    except MetainfoError:
        return
    for entry in meta.files:
        assert all(unsafe_component(part) is None for part in entry.path)


@given(st.binary(max_size=200))
def test_parse_info_random_bytes_only_raise_metainfo_error(data: bytes) -> None:
    with contextlib.suppress(MetainfoError):
        parse_info(data)


def test_parse_torrent_file_refusals() -> None:
    cases = [
        (b"garbage", "bad_bencode"),
        (bencode([1]), "bad_type"),
        (bencode({"announce": b"http://127.0.0.1/"}), "missing_field"),
        (bencode({"info": b"x"}), "bad_type"),
        (b"d4:infod4:name1:xee", "missing_field"),
    ]
    for data, reason in cases:
        with pytest.raises(MetainfoError) as err:
            parse_torrent_file(data)
        assert err.value.reason == reason
    with pytest.raises(MetainfoError) as err:
        parse_torrent_file(b"d4:info" + info_bytes() + b"e", max_size=10)
    assert err.value.reason == "too_large"


def test_parse_torrent_file_ignores_fields_outside_info() -> None:
    torrent = b"d8:announce18:http://127.0.0.1/a7:comment2:hi4:info" + info_bytes() + b"e"
    meta = parse_torrent_file(torrent)
    assert meta.info == info_bytes()


# --- libtorrent agreement ------------------------------------------------------------------------------------


def test_libtorrent_reads_our_torrents(tmp_path: Path, share: tuple[Path, dict[tuple[str, ...], bytes]]) -> None:
    root, _ = share
    single = write(tmp_path / "single.dat", os.urandom(70_000))
    for meta in (build_metainfo(root), build_metainfo(single), build_metainfo(single, piece_length=32 * KIB)):
        ti = lt_info(torrent_file(meta))
        assert str(ti.info_hashes().v1) == meta.info_hash.hex()
        assert ti.num_pieces() == meta.piece_count
        assert ti.total_size() == meta.total_length
        assert ti.piece_length() == meta.piece_length
        assert ti.name() == meta.name
        files = ti.layout()
        assert [files.file_size(i) for i in range(files.num_files())] == [e.length for e in meta.files]
        assert [files.file_offset(i) for i in range(files.num_files())] == [e.offset for e in meta.files]
        assert [files.file_path(i) for i in range(files.num_files())] == [os.path.join(*e.path) for e in meta.files]
        assert [ti.hash_for_piece(i) for i in range(ti.num_pieces())] == list(meta.piece_hashes)
        assert ti.piece_size(ti.num_pieces() - 1) == meta.piece_size(meta.piece_count - 1)


def libtorrent_torrent(path: Path, flags: int) -> bytes:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the file_storage API still works in 2.1
        storage = lt.file_storage()
        lt.add_files(storage, str(path))
        creator = lt.create_torrent(storage, 0, flags=flags)
    lt.set_piece_hashes(creator, str(path.parent))
    return bytes(lt.bencode(creator.generate()))


@pytest.mark.parametrize("flags", [lt.create_torrent.v1_only, 0], ids=["v1", "hybrid"])
def test_we_read_libtorrent_torrents(
    tmp_path: Path, share: tuple[Path, dict[tuple[str, ...], bytes]], flags: int
) -> None:
    root, _ = share
    single = write(tmp_path / "single.dat", os.urandom(70_000))
    for path in (single, root):
        data = libtorrent_torrent(path, flags)
        meta = parse_torrent_file(data)
        ti = lt_info(data)
        assert meta.info_hash.hex() == str(ti.info_hashes().v1)
        assert meta.piece_count == ti.num_pieces()
        assert meta.total_length == ti.total_size()
        assert meta.name == path.name
        files = ti.layout()
        pads = [bool(files.file_flags(i) & files.flag_pad_file) for i in range(files.num_files())]
        assert [e.pad for e in meta.files] == pads
        assert [e.offset for e in meta.files] == [files.file_offset(i) for i in range(files.num_files())]
        real = [e for e in meta.files if not e.pad]
        assert sorted(e.path[1:] for e in real) == sorted(e.path[1:] for e in build_metainfo(path).files)
        # Our layout of libtorrent's torrent, filled from disk (padding as zeros), hashes to its pieces.
        stream = b"".join(bytes(e.length) if e.pad else path.parent.joinpath(*e.path).read_bytes() for e in meta.files)
        assert meta.piece_hashes == piece_hashes(stream, meta.piece_length)
        assert any(pads) == (flags != lt.create_torrent.v1_only and path.is_dir())


def test_metainfo_is_a_frozen_value(tmp_path: Path) -> None:
    meta = build_metainfo(write(tmp_path / "f", b"abc"))
    with pytest.raises(AttributeError):
        meta.name = "y"  # type: ignore[misc]
    assert isinstance(meta, Metainfo) and meta == parse_info(meta.info)
