"""A torrent's pieces in its files on disk: read blocks to serve, write verified pieces, check what is there.

Pieces are ranges of the files' concatenation, so one piece may span several files (and a padding
file's range is zeros that never touch the disk). Every file is opened by walking from `root` one
component at a time with O_NOFOLLOW, relative to the directory already opened: a symlink anywhere below
root (planted before or during a download) is refused rather than followed, and the components
themselves are re-checked, so no path from metadata can reach outside root.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import stat
import threading
from bisect import bisect_left, bisect_right
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from kadnode.torrent.metainfo import FileEntry, Metainfo, unsafe_component

log = logging.getLogger(__name__)

MAX_OPEN_FILES = 16
"""File descriptors one store keeps open (least recently used closed first): a multi-file torrent must
not exhaust the process's descriptors."""

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK  # NONBLOCK: opening a FIFO must not hang


class PieceStore:
    """Reads and writes a torrent's pieces in its files under `root`.

    A share's root is the directory that contains the shared file/directory; a fetch's root is the
    output directory (files are created there, under the torrent's name for multi-file torrents).
    Paths are re-checked to stay inside root. A writable store creates directories and files when a
    piece first lands in them (sparse: `ftruncate` to the file's length); a read-only store opens files
    read-only and never creates anything. Missing or short files raise OSError on reads.
    """

    meta: Metainfo
    root: Path
    writable: bool

    def __init__(self, meta: Metainfo, root: Path, *, writable: bool) -> None:
        for entry in meta.files:
            problems = [p for p in map(unsafe_component, entry.path) if p is not None]
            if not entry.path or problems:
                raise ValueError(f"refusing file path {entry.path!r}: {problems[0] if problems else 'empty'}")
        self.meta = meta
        self.root = Path(root)
        self.writable = writable
        self._offsets = [entry.offset for entry in meta.files]
        self._empty = [(e.offset, i) for i, e in enumerate(meta.files) if e.length == 0 and not e.pad]  # sorted
        self._fds: OrderedDict[int, int] = OrderedDict()
        self._sized: set[int] = set()  # files this store has set to their length
        self._warned: set[str] = set()
        self._lock = threading.RLock()  # the fd cache is shared; callers may use worker threads

    @property
    def content_path(self) -> Path:
        """The torrent's file (single-file) or directory (multi-file) under root."""
        return self.root / self.meta.name

    def path_of(self, entry: FileEntry) -> Path:
        return self.root.joinpath(*entry.path)

    # --- reading -----------------------------------------------------------------------------------

    def read_block(self, index: int, begin: int, length: int) -> bytes:
        """`length` bytes at `begin` in piece `index`; ValueError unless the block lies inside the piece."""
        count = self.meta.piece_count
        if not 0 <= index < count:
            raise ValueError(
                f"request for piece {index}, which does not exist (begin {begin}, length {length}; "
                f"the torrent has {count} pieces)"
            )
        size = self.meta.piece_size(index)
        if begin < 0 or length <= 0 or begin + length > size:
            raise ValueError(
                f"request beyond piece {index} (begin {begin}, length {length}; the piece has {size} bytes)"
            )
        with self._lock:
            return self._read(index * self.meta.piece_length + begin, length)

    def read_piece(self, index: int) -> bytes:
        if not 0 <= index < self.meta.piece_count:
            raise ValueError(f"piece {index} does not exist (the torrent has {self.meta.piece_count} pieces)")
        return self.read_block(index, 0, self.meta.piece_size(index))

    def verify(self, progress: Callable[[int], None] | None = None) -> set[int]:
        """Hash what is on disk; the indices whose SHA-1 matches. Missing, short or unsafe files leave
        their pieces unverified. `progress` gets the bytes checked so far."""
        self.close()  # a cached descriptor would still read a file deleted or replaced since
        ok: set[int] = set()
        done = 0
        for index, expected in enumerate(self.meta.piece_hashes):
            size = self.meta.piece_size(index)
            try:
                with self._lock:
                    data = self._read(index * self.meta.piece_length, size)
            except OSError:
                data = None
            except ValueError as exc:  # a symlink or non-regular file in the way: say so once
                data = None
                if str(exc) not in self._warned:
                    self._warned.add(str(exc))
                    log.warning("not verifying piece %d of %s: %s", index, self.meta.name, exc)
            if data is not None and hashlib.sha1(data).digest() == expected:
                ok.add(index)
            done += size
            if progress is not None:
                progress(done)
        return ok

    # --- writing -----------------------------------------------------------------------------------

    def write_piece(self, index: int, data: bytes) -> bool:
        """Write piece `index` if `data` is exactly that piece (size and SHA-1); False and nothing written
        otherwise. ValueError for a read-only store, an index out of range or a symlink in the way."""
        if not self.writable:
            raise ValueError(f"cannot write piece {index} of {self.meta.name}: the store is read-only")
        count = self.meta.piece_count
        if not 0 <= index < count:
            raise ValueError(f"piece {index} does not exist (the torrent has {count} pieces)")
        if len(data) != self.meta.piece_size(index) or hashlib.sha1(data).digest() != self.meta.piece_hashes[index]:
            return False
        start = index * self.meta.piece_length
        view = memoryview(data)
        with self._lock:
            pos = 0
            for file_index, file_offset, n in self._segments(start, len(data)):
                if not self.meta.files[file_index].pad:
                    fd = self._fd(file_index, create=True)
                    written = 0
                    while written < n:
                        written += os.pwrite(fd, view[pos + written : pos + n], file_offset + written)
                pos += n
            self._create_empty_files(start, start + len(data))
        return True

    def close(self) -> None:
        """Close the cached file descriptors (a later read or write opens them again)."""
        with self._lock:
            while self._fds:
                os.close(self._fds.popitem()[1])

    def __enter__(self) -> PieceStore:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    # --- internals -----------------------------------------------------------------------------------

    def _segments(self, start: int, length: int) -> list[tuple[int, int, int]]:
        """The byte range as (file index, offset in that file, byte count), skipping empty files."""
        out: list[tuple[int, int, int]] = []
        files = self.meta.files
        i = bisect_right(self._offsets, start) - 1
        end = start + length
        pos = start
        while pos < end:
            entry = files[i]
            stop = min(end, entry.offset + entry.length)
            if stop > pos:
                out.append((i, pos - entry.offset, stop - pos))
                pos = stop
            i += 1
        return out

    def _read(self, start: int, length: int) -> bytes:
        parts: list[bytes] = []
        for file_index, file_offset, n in self._segments(start, length):
            entry = self.meta.files[file_index]
            if entry.pad:
                parts.append(bytes(n))
                continue
            fd = self._fd(file_index, create=False)
            got = 0
            while got < n:
                chunk = os.pread(fd, n - got, file_offset + got)
                if not chunk:
                    raise OSError(errno.EIO, f"{'/'.join(entry.path)} is shorter than {entry.length} bytes")
                parts.append(chunk)
                got += len(chunk)
        return b"".join(parts)

    def _create_empty_files(self, start: int, end: int) -> None:
        """Zero-length files are in no piece's range; create those at the edges of the piece just written."""
        first = bisect_left(self._empty, (start, -1))
        for offset, i in self._empty[first:]:
            if offset > end:
                break
            self._fd(i, create=True)

    def _fd(self, index: int, *, create: bool) -> int:
        fd = self._fds.get(index)
        if fd is None:
            fd = self._open(self.meta.files[index], create)
            self._fds[index] = fd
            while len(self._fds) > MAX_OPEN_FILES:
                os.close(self._fds.popitem(last=False)[1])
        else:
            self._fds.move_to_end(index)
        if create and index not in self._sized:
            length = self.meta.files[index].length
            if os.fstat(fd).st_size != length:
                os.ftruncate(fd, length)  # sparse; also cuts a longer stale file to the torrent's size
            self._sized.add(index)
        return fd

    def _open(self, entry: FileEntry, create: bool) -> int:
        """Open `entry` under root without following any symlink below root (root itself is trusted)."""
        shown = "/".join(entry.path)
        if create:
            os.makedirs(self.root, exist_ok=True)
        dir_fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            for component in entry.path[:-1]:
                if create:
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(component, 0o777, dir_fd=dir_fd)
                try:
                    next_fd = os.open(component, _DIR_FLAGS, dir_fd=dir_fd)
                except OSError as exc:
                    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                        raise ValueError(f"refusing {shown}: {component!r} is a symlink or not a directory") from exc
                    raise
                os.close(dir_fd)
                dir_fd = next_fd
            flags = _FILE_FLAGS | (os.O_RDWR if self.writable else os.O_RDONLY) | (os.O_CREAT if create else 0)
            try:
                fd = os.open(entry.path[-1], flags, 0o666, dir_fd=dir_fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.EISDIR):
                    raise ValueError(f"refusing {shown}: it is a symlink or a directory") from exc
                raise
        finally:
            os.close(dir_fd)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise ValueError(f"refusing {shown}: not a regular file")
        return fd
