"""BitTorrent v1 metadata (BEP 3): build it from files on disk, parse it strictly from anyone.

The info dict arrives from strangers (BEP 9 metadata exchange, .torrent files) and names the files we
will create, so `parse_info` checks every field's type and range, bounds every size, and refuses any
path component that could leave the output directory or confuse a file system. `build_metainfo` goes
through the same parser, so whatever we share is something we would accept ourselves.

Paths: `FileEntry.path` is relative to the directory that holds the torrent's content: `(name,)` for a
single-file torrent, `(name, *path)` for a multi-file one (whose files live in a directory called
`name`). Only UTF-8 names are accepted; the legacy `name.utf-8`/`path.utf-8` keys are ignored, since a
torrent that needs them has a non-UTF-8 `name`/`path` and is refused anyway.

Padding files (BEP 47 `attr` containing "p", which libtorrent puts in hybrid v1+v2 torrents) are
accepted as `FileEntry(pad=True)`: zeros in the piece stream that are never written to disk. A
symlink entry (`attr` "l") is refused.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from kadnode.torrent.magnet import magnet_link
from kadnode.wire.bencode import Bencodable, Bencoded, BencodeError, Raw, bdecode, bencode

BLOCK_SIZE = 16 * 1024
"""The unit of a peer-wire request (BEP 3's de-facto size) and the smallest piece length."""
MIN_PIECE_LENGTH = 16 * 1024
MAX_PIECE_LENGTH = 64 * 1024 * 1024
"""Largest piece length we accept: a piece is hashed and buffered whole; libtorrent's limit is 128 MiB."""
MAX_BUILD_PIECE_LENGTH = 16 * 1024 * 1024
"""Largest piece length `piece_length_for` picks."""
TARGET_PIECES = 2000
"""`piece_length_for` picks the smallest power of two that keeps the piece count at or under this, so
there are 1,000-2,000 pieces (fewer only for small files or when the 16 MiB cap is reached)."""
MAX_TOTAL_LENGTH = 2**40
"""1 TiB: bounds what one torrent may ask us to allocate."""
MAX_FILES = 20_000
MAX_PATH_DEPTH = 32
"""Components in one file's path (after the torrent's name)."""
MAX_COMPONENT_BYTES = 255
"""NAME_MAX on Linux and most file systems."""
MAX_PATH_BYTES = 4000
"""Under PATH_MAX (4096), leaving room for the output directory."""
MAX_INFO_SIZE = 16 * 1024 * 1024
MAX_TORRENT_SIZE = 64 * 1024 * 1024
"""A .torrent may carry more than its info dict (hybrid torrents' `piece layers`)."""
_DECODE_ITEMS = 300_000
"""bencode tokens in an info dict: ~8 per file for MAX_FILES files plus path components and slack. Also
bounds the Python objects a hostile 16 MiB info dict can make us allocate."""
_DECODE_DEPTH = MAX_PATH_DEPTH + 8
"""Nesting: info/files/file/path is 4 deep; a hybrid torrent's `file tree` nests one level per directory."""
_HASH_CHUNK = 1024 * 1024
_T = TypeVar("_T")


class MetainfoError(ValueError):
    """Metadata we refuse, or files we cannot share; `reason` is a short counter-friendly name."""

    reason: str

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason


@dataclass(frozen=True, slots=True)
class FileEntry:
    """One file of the torrent and where its bytes sit in the concatenated piece stream."""

    path: tuple[str, ...]
    length: int
    offset: int
    pad: bool = False


@dataclass(frozen=True, slots=True)
class Metainfo:
    """A parsed info dict; `info` is the exact bencoded bytes whose SHA-1 is `info_hash`."""

    info: bytes = field(repr=False)
    info_hash: bytes
    name: str
    piece_length: int
    piece_hashes: tuple[bytes, ...] = field(repr=False)
    files: tuple[FileEntry, ...]
    total_length: int

    @property
    def piece_count(self) -> int:
        return len(self.piece_hashes)

    def piece_size(self, index: int) -> int:
        """Bytes in piece `index`: `piece_length`, except the last piece, which may be shorter."""
        count = len(self.piece_hashes)
        if not 0 <= index < count:
            raise IndexError(f"piece {index} out of range (the torrent has {count} pieces)")
        if index == count - 1:
            return self.total_length - self.piece_length * (count - 1)
        return self.piece_length

    def magnet(self) -> str:
        return magnet_link(self.info_hash, self.name)


def piece_length_for(total_length: int) -> int:
    """A power of two from 16 KiB to 16 MiB giving at most ~2,000 pieces (so 1,000-2,000 in the middle
    range): few enough for a small bitfield and info dict, small enough that a bad piece costs little."""
    length = MIN_PIECE_LENGTH
    while length < MAX_BUILD_PIECE_LENGTH and total_length > length * TARGET_PIECES:
        length *= 2
    return length


def unsafe_component(component: str) -> str | None:
    """Why `component` may not be a file or directory name under an output directory, or None if it is
    safe. Refused: empty, "." and "..", separators ("/" and "\\"), NUL and other control characters, a
    drive letter ("C:"), a lone surrogate (not UTF-8), and names longer than 255 bytes."""
    if component in ("", ".", ".."):
        return f"{component!r} is not a file name"
    if "/" in component or "\\" in component:
        return f"{component!r} contains a path separator"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in component):
        return f"{component!r} contains a control character"
    if len(component) >= 2 and component[1] == ":" and component[0].isascii() and component[0].isalpha():
        return f"{component!r} starts with a drive letter"
    try:
        size = len(component.encode("utf-8"))
    except UnicodeEncodeError:
        return f"{component!r} is not valid UTF-8"
    if size > MAX_COMPONENT_BYTES:
        return f"a name of {size} bytes exceeds {MAX_COMPONENT_BYTES}"
    return None


# --- parsing -------------------------------------------------------------------------------------


def parse_info(info: bytes, *, info_hash: bytes | None = None, max_size: int = MAX_INFO_SIZE) -> Metainfo:
    """Parse and check a bencoded info dict; MetainfoError (with a `reason`) on anything we refuse."""
    info = bytes(info)
    if len(info) > max_size:
        raise MetainfoError("too_large", f"info dict of {len(info)} bytes exceeds {max_size}")
    digest = hashlib.sha1(info).digest()
    if info_hash is not None and digest != info_hash:
        raise MetainfoError("bad_hash", f"info dict hashes to {digest.hex()}, expected {info_hash.hex()}")
    try:
        value = bdecode(info, max_depth=_DECODE_DEPTH, max_items=_DECODE_ITEMS)
    except BencodeError as exc:
        raise MetainfoError("bad_bencode", f"info dict: {exc}") from exc
    if not isinstance(value, dict):
        raise MetainfoError("bad_type", "info is not a dict")
    name = _text(_field(value, b"name", bytes, "info"), "name")
    _check_component(name, "name")
    piece_length = _field(value, b"piece length", int, "info")
    if not MIN_PIECE_LENGTH <= piece_length <= MAX_PIECE_LENGTH or piece_length & (piece_length - 1):
        raise MetainfoError(
            "bad_piece_length",
            f"piece length {piece_length} is not a power of two from {MIN_PIECE_LENGTH} to {MAX_PIECE_LENGTH}",
        )
    pieces = _field(value, b"pieces", bytes, "info")
    if len(pieces) % 20:
        raise MetainfoError("bad_pieces", f"pieces is {len(pieces)} bytes, not a multiple of 20")
    if b"length" in value and b"files" in value:
        raise MetainfoError("bad_files", "info has both 'length' and 'files'")
    if b"length" in value:
        length = _length(_field(value, b"length", int, "info"), name)
        files: tuple[FileEntry, ...] = (FileEntry((name,), length, 0),)
    elif b"files" in value:
        files = _parse_files(_field(value, b"files", list, "info"), name)
    else:
        raise MetainfoError("missing_field", "info has neither 'length' nor 'files'")
    total = files[-1].offset + files[-1].length
    if total == 0:
        raise MetainfoError("empty", "the torrent has no content (total length 0)")
    count = -(-total // piece_length)
    if len(pieces) != 20 * count:
        raise MetainfoError(
            "bad_pieces",
            f"{len(pieces) // 20} piece hashes for {total} bytes in pieces of {piece_length} (needs {count})",
        )
    hashes = tuple(pieces[i : i + 20] for i in range(0, len(pieces), 20))
    return Metainfo(info, digest, name, piece_length, hashes, files, total)


def _field(d: dict[bytes, Bencoded], key: bytes, kind: type[_T], where: str) -> _T:
    if key not in d:
        raise MetainfoError("missing_field", f"{where} has no {key.decode()!r}")
    value = d[key]
    if not isinstance(value, kind):
        raise MetainfoError("bad_type", f"{where} {key.decode()!r} is not {_KIND_NAMES[kind]}")
    return value


_KIND_NAMES: dict[type, str] = {bytes: "a string", int: "an integer", list: "a list", dict: "a dict"}


def _text(raw: bytes, what: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MetainfoError("bad_utf8", f"{what} {raw[:60]!r} is not UTF-8") from exc


def _check_component(component: str, what: str) -> None:
    problem = unsafe_component(component)
    if problem is not None:
        raise MetainfoError("unsafe_path", f"{what}: {problem}")


def _length(length: int, where: str) -> int:
    if length < 0:
        raise MetainfoError("bad_length", f"{where}: negative length {length}")
    if length > MAX_TOTAL_LENGTH:
        raise MetainfoError("too_large", f"{where}: length {length} exceeds {MAX_TOTAL_LENGTH}")
    return length


def _parse_files(items: list[Bencoded], name: str) -> tuple[FileEntry, ...]:
    if not items:
        raise MetainfoError("bad_files", "files is empty")
    if len(items) > MAX_FILES:
        raise MetainfoError("too_many_files", f"{len(items)} files exceed {MAX_FILES}")
    out: list[FileEntry] = []
    offset = 0
    for number, item in enumerate(items):
        where = f"file {number}"
        if not isinstance(item, dict):
            raise MetainfoError("bad_type", f"{where} is not a dict")
        length = _length(_field(item, b"length", int, where), where)
        raw_path = _field(item, b"path", list, where)
        if not raw_path:
            raise MetainfoError("unsafe_path", f"{where} has an empty path")
        if len(raw_path) > MAX_PATH_DEPTH:
            depth = len(raw_path)
            raise MetainfoError("unsafe_path", f"{where}: a path of {depth} components exceeds {MAX_PATH_DEPTH}")
        parts: list[str] = []
        for component in raw_path:
            if not isinstance(component, bytes):
                raise MetainfoError("bad_type", f"{where} has a path component that is not a string")
            text = _text(component, f"{where} path component")
            _check_component(text, where)
            parts.append(text)
        path = (name, *parts)
        if sum(len(p.encode()) + 1 for p in path) > MAX_PATH_BYTES:
            raise MetainfoError("unsafe_path", f"{where}: path longer than {MAX_PATH_BYTES} bytes")
        attr = item.get(b"attr", b"")
        if not isinstance(attr, bytes):
            raise MetainfoError("bad_type", f"{where} 'attr' is not a string")
        if b"l" in attr:
            raise MetainfoError("unsafe_path", f"{where} ({'/'.join(path)}) is a symlink; symlinks are not supported")
        out.append(FileEntry(path, length, offset, pad=b"p" in attr))
        offset += length
        if offset > MAX_TOTAL_LENGTH:
            raise MetainfoError("too_large", f"total length exceeds {MAX_TOTAL_LENGTH}")
    _check_layout(out)
    return tuple(out)


def _check_layout(files: list[FileEntry]) -> None:
    """Every real file's path is unique and no file sits where another one needs a directory."""
    seen: set[tuple[str, ...]] = set()
    dirs: set[tuple[str, ...]] = set()
    for entry in files:
        if entry.pad:
            continue  # never on disk
        if entry.path in seen:
            raise MetainfoError("duplicate_path", f"{'/'.join(entry.path)} appears twice")
        seen.add(entry.path)
        for depth in range(1, len(entry.path)):
            dirs.add(entry.path[:depth])
    clash = seen & dirs
    if clash:
        path = "/".join(min(clash))
        raise MetainfoError("path_conflict", f"{path} is both a file and a directory")


def torrent_file(meta: Metainfo) -> bytes:
    """A .torrent file for `meta`: the info dict verbatim (so the info-hash is unchanged) and no tracker."""
    top: dict[bytes, Bencodable] = {b"created by": b"kadnode", b"info": Raw(meta.info)}
    return bencode(top)


def parse_torrent_file(data: bytes, *, max_size: int = MAX_TORRENT_SIZE) -> Metainfo:
    """Parse a .torrent file: its `info` dict is checked by `parse_info`, everything else ignored.

    The decoder accepts only canonical bencode, so re-encoding the decoded `info` gives back exactly the
    bytes in the file, and therefore its real info-hash (BEP 3: never hash a re-encoding of invalid
    input). A non-canonical .torrent is refused as "bad_bencode".
    """
    if len(data) > max_size:
        raise MetainfoError("too_large", f".torrent of {len(data)} bytes exceeds {max_size}")
    try:
        top = bdecode(data, max_depth=_DECODE_DEPTH + 1, max_items=2 * _DECODE_ITEMS)
    except BencodeError as exc:
        raise MetainfoError("bad_bencode", f".torrent: {exc}") from exc
    if not isinstance(top, dict):
        raise MetainfoError("bad_type", ".torrent is not a dict")
    info = _field(top, b"info", dict, ".torrent")
    return parse_info(bencode(info))


# --- building ------------------------------------------------------------------------------------


def build_metainfo(
    path: Path, *, piece_length: int | None = None, progress: Callable[[int], None] | None = None
) -> Metainfo:
    """Hash a file, or a directory's regular files (sorted by path), into a v1 torrent named after it.

    Symlinks, special files, non-UTF-8 or unsafe names and an empty share are refused with a
    MetainfoError; files are read in 1 MiB chunks; `progress` gets the bytes hashed so far.
    """
    name, files = _scan(Path(path))
    total = sum(length for _, _, length in files)
    if total == 0:
        raise MetainfoError("empty", f"nothing to share in {path}: no bytes")
    if total > MAX_TOTAL_LENGTH:
        raise MetainfoError("too_large", f"{path}: {total} bytes exceed {MAX_TOTAL_LENGTH}")
    if piece_length is None:
        piece_length = piece_length_for(total)
    elif not MIN_PIECE_LENGTH <= piece_length <= MAX_PIECE_LENGTH or piece_length & (piece_length - 1):
        raise MetainfoError("bad_piece_length", f"piece length {piece_length} is not a power of two in range")
    pieces = _hash_files([(disk, length) for _, disk, length in files], piece_length, progress)
    info: dict[bytes, Bencodable] = {b"name": name, b"piece length": piece_length, b"pieces": pieces}
    if files[0][0] == ():
        info[b"length"] = files[0][2]
    else:
        info[b"files"] = [{b"length": length, b"path": list(rel)} for rel, _, length in files]
    return parse_info(bencode(info))


def _scan(path: Path) -> tuple[str, list[tuple[tuple[str, ...], str, int]]]:
    """The share's name and its files: (path inside the share, path on disk, length).

    A single file has the empty relative path `()`.
    """
    name = os.path.basename(os.path.normpath(os.path.abspath(path)))
    _check_share_name(name, str(path))
    try:
        st = os.lstat(path)
    except FileNotFoundError as exc:
        raise MetainfoError("not_found", f"{path} does not exist") from exc
    if stat.S_ISLNK(st.st_mode):
        raise MetainfoError("symlink", f"refusing to share {path}: it is a symlink")
    if stat.S_ISREG(st.st_mode):
        return name, [((), str(path), st.st_size)]
    if not stat.S_ISDIR(st.st_mode):
        raise MetainfoError("special_file", f"refusing to share {path}: not a regular file or directory")
    files: list[tuple[tuple[str, ...], str, int]] = []
    stack: list[tuple[tuple[str, ...], str]] = [((), str(path))]
    while stack:
        rel_dir, disk_dir = stack.pop()
        with os.scandir(disk_dir) as entries:
            for entry in entries:
                rel = (*rel_dir, entry.name)
                _check_share_name(entry.name, entry.path)
                if len(rel) > MAX_PATH_DEPTH:
                    raise MetainfoError("unsafe_path", f"{entry.path}: deeper than {MAX_PATH_DEPTH} levels")
                if entry.is_symlink():
                    raise MetainfoError("symlink", f"refusing to share {entry.path}: it is a symlink")
                if entry.is_dir(follow_symlinks=False):
                    stack.append((rel, entry.path))
                elif entry.is_file(follow_symlinks=False):
                    files.append((rel, entry.path, entry.stat(follow_symlinks=False).st_size))
                    if len(files) > MAX_FILES:
                        raise MetainfoError("too_many_files", f"{path} holds more than {MAX_FILES} files")
                else:
                    raise MetainfoError("special_file", f"refusing to share {entry.path}: not a regular file")
    if not files:
        raise MetainfoError("empty", f"nothing to share in {path}: no files")
    files.sort(key=lambda f: f[0])
    return name, files


def _check_share_name(component: str, where: str) -> None:
    problem = unsafe_component(component)
    if problem is not None:
        reason = "bad_utf8" if "UTF-8" in problem else "unsafe_path"
        raise MetainfoError(reason, f"cannot share {where!r}: {problem}")


def _hash_files(files: list[tuple[str, int]], piece_length: int, progress: Callable[[int], None] | None) -> bytes:
    """SHA-1 of each piece of the files' concatenation, streamed in chunks."""
    hashes: list[bytes] = []
    h = hashlib.sha1()
    filled = 0
    done = 0
    for disk, length in files:
        try:
            fd = os.open(disk, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as exc:
            raise MetainfoError("unreadable", f"cannot read {disk}: {exc.strerror}") from exc
        with open(fd, "rb", buffering=0) as f:
            remaining = length
            while remaining:
                chunk = f.read(min(_HASH_CHUNK, remaining, piece_length - filled))
                if not chunk:
                    raise MetainfoError("file_changed", f"{disk} shrank while it was being hashed")
                h.update(chunk)
                remaining -= len(chunk)
                filled += len(chunk)
                done += len(chunk)
                if filled == piece_length:
                    hashes.append(h.digest())
                    h = hashlib.sha1()
                    filled = 0
                if progress is not None:
                    progress(done)
    if filled:
        hashes.append(h.digest())
    return b"".join(hashes)
