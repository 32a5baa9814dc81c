"""The file locator end to end (issue 6): `kadnode run` processes share a file, the `kadnode` CLI locates and
fetches it, exactly as a user runs them; sharers die, restart, serve bad data, and fetches get interrupted.

Every daemon has its own 127.0.0.X (150-169 here) and data directory; its UDP and TCP ports have one
number, chosen free. Upload rates are limited where a transfer must last long enough to be disturbed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.common import free_port
from kadnode.torrent.metainfo import build_metainfo
from kadnode.torrent.pieces import PieceStore

MiB = 1024 * 1024
START_TIMEOUT = 20.0
"""A daemon answers its control socket within about a second; this bounds a slow CI machine."""
FETCH_TIMEOUT = 60.0
"""Bound on a whole `kadnode fetch` run (each here takes a few seconds)."""
NO_PROGRESS = "30"
"""`kadnode fetch --timeout`: a broken fetch fails on its own, with its reason, instead of hanging."""


# --- processes ------------------------------------------------------------------------------------


def kadnode_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "kadnode", *args]


class Daemon:
    """One `kadnode run` process on `host`; `endpoint` is its UDP (DHT) and TCP (peer wire) address."""

    def __init__(self, workdir: Path, name: str, host: str, *, bootstrap: Daemon | None = None,
                 upload_rate: str | None = None) -> None:
        self.name, self.host = name, host
        self.port = free_port(host)
        self.data_dir = workdir / name
        self.log_path = workdir / f"{name}.log"
        self.args = kadnode_cmd("run", "--host", host, "--port", str(self.port), "--torrent-port", str(self.port),
                                "--data-dir", str(self.data_dir))
        if bootstrap is not None:
            self.args += ["--bootstrap", bootstrap.endpoint]
        if upload_rate is not None:
            self.args += ["--upload-rate", upload_rate]
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> Daemon:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT)
        return self

    def ready(self, min_nodes: int = 0) -> None:
        """Wait until the control socket answers and the routing table holds `min_nodes` nodes."""
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            assert self.proc is not None and self.proc.poll() is None, f"{self.name} exited: {self.read_log()}"
            done = self.cli("status", "--json")
            if done.returncode == 0 and json.loads(done.stdout)["routing_table"]["nodes"] >= min_nodes:
                return
            assert time.monotonic() < deadline, f"{self.name} did not come up: {done.stderr}\n{self.read_log()}"
            time.sleep(0.1)

    def cli(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return subprocess.run(kadnode_cmd(*args, "--data-dir", str(self.data_dir)), capture_output=True, text=True,
                              timeout=timeout)

    def cli_json(self, *args: str, timeout: float = 30) -> Any:
        done = self.cli(*args, "--json", timeout=timeout)
        assert done.returncode == 0, f"kadnode {' '.join(args)} failed: {done.stderr}\n{self.read_log()}"
        return json.loads(done.stdout)

    def fetch(self, target: str, out: Path) -> subprocess.CompletedProcess[str]:
        """`kadnode fetch TARGET -o OUT --json` through this daemon, to the end."""
        return self.cli("fetch", target, "-o", str(out), "--json", "--timeout", NO_PROGRESS, timeout=FETCH_TIMEOUT)

    def bytes_served(self) -> int:
        return int(self.cli_json("shares")["server"]["bytes_served"])

    def stop(self, sig: int | None = signal.SIGTERM, timeout: float = 20) -> int:
        """Signal the process (by its PID; None: it was signalled already) and wait for it; SIGKILL if it
        does not exit in time. One signal only: a second SIGTERM cuts the daemon's shutdown short."""
        assert self.proc is not None
        if self.proc.poll() is None:
            if sig is not None:
                self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def read_log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""


class FetchRun:
    """`kadnode fetch` running in the background; its stderr lines (the progress) are collected as they come."""

    PERCENT = re.compile(r"^\s*(\d+(?:\.\d+)?)%")

    def __init__(self, daemon: Daemon, *args: str) -> None:
        self.daemon = daemon
        self.proc = subprocess.Popen(kadnode_cmd("fetch", *args, "--timeout", NO_PROGRESS, "--data-dir",
                                                 str(daemon.data_dir)),
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self.stdout = ""
        assert self.proc.stderr is not None and self.proc.stdout is not None
        self._err = threading.Thread(target=self._read_lines, daemon=True)
        self._out = threading.Thread(target=self._read_stdout, daemon=True)
        self._err.start()
        self._out.start()

    def _read_lines(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        self.stdout = self.proc.stdout.read()

    def percents(self) -> list[float]:
        """The progress shown so far: one line per 10% when stderr is not a terminal."""
        return [float(m.group(1)) for line in list(self.lines) if (m := self.PERCENT.match(line))]

    def wait_until(self, condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
        """Poll `condition` while the fetch runs; fail if the fetch ends first or time runs out."""
        deadline = time.monotonic() + timeout
        while not condition():
            assert self.proc.poll() is None, f"the fetch ended ({self.proc.returncode}) before {what}: {self.stderr}"
            assert time.monotonic() < deadline, f"no {what} in {timeout} s: {self.stderr}"
            time.sleep(0.05)

    def wait(self, timeout: float = FETCH_TIMEOUT) -> int:
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"the fetch did not finish in {timeout} s: {self.stderr}") from None
        self._err.join(5)
        self._out.join(5)
        return rc

    @property
    def stderr(self) -> str:
        return "\n".join(self.lines)

    def json(self) -> Any:
        return json.loads(self.stdout)


@pytest.fixture
def workdir(short_dir: Path) -> Path:
    """Data directories live under /tmp/kn-*: a control socket's path must stay under 108 bytes."""
    return short_dir


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    """Every daemon a test starts goes here; all are stopped (by PID) however the test ends."""
    started: list[Daemon] = []
    yield started
    stop_all(started)


def stop_all(started: list[Daemon]) -> None:
    """SIGTERM every daemon still running (all first: they shut down in parallel), then reap each."""
    running = [d for d in started if d.proc is not None and d.proc.poll() is None]
    for daemon in running:
        assert daemon.proc is not None
        daemon.proc.send_signal(signal.SIGTERM)
    for daemon in running:
        daemon.stop(None)


def start_network(daemons: list[Daemon], workdir: Path, hosts: list[str],
                  upload_rates: list[str | None] | None = None) -> list[Daemon]:
    """The first host runs the fetcher's daemon (also the bootstrap node); the others bootstrap from it."""
    first = Daemon(workdir, "d0", hosts[0]).start()
    daemons.append(first)
    first.ready()
    rates = upload_rates or [None] * len(hosts)
    rest = [Daemon(workdir, f"d{i}", host, bootstrap=first, upload_rate=rates[i]).start()
            for i, host in enumerate(hosts) if i > 0]
    daemons.extend(rest)
    for daemon in rest:
        daemon.ready(min_nodes=1)
    return [first, *rest]


def random_file(path: Path, size: int) -> bytes:
    data = os.urandom(size)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return data


def share_copies(sharers: list[Daemon], workdir: Path, name: str, data: bytes) -> tuple[dict[str, Any], list[Path]]:
    """Each sharer shares its own copy of `data`; returns the (common) share and the copies' paths."""
    results, paths = [], []
    for sharer in sharers:
        path = workdir / f"content-{sharer.name}" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        shared = sharer.cli_json("share", str(path))
        assert shared["announced_to"] >= 1, f"{sharer.name}'s announce reached no node"
        results.append(shared)
        paths.append(path)
    assert len({r["info_hash"] for r in results}) == 1
    return results[0], paths


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- must show 1: a sharer dies mid-transfer --------------------------------------------------------


def test_fetch_from_three_sharers_survives_one_killed_mid_transfer(workdir: Path, daemons: list[Daemon]) -> None:
    hosts = ["127.0.0.150", "127.0.0.151", "127.0.0.152", "127.0.0.153"]
    fetcher, *sharers = start_network(daemons, workdir, hosts, [None, "2M", "2M", "2M"])
    data = os.urandom(20 * MiB)
    share, _ = share_copies(sharers, workdir, "random.bin", data)
    assert share["magnet"].startswith(f"magnet:?xt=urn:btih:{share['info_hash']}")
    out = workdir / "out"

    run = FetchRun(fetcher, share["magnet"], "-o", str(out), "--json")
    try:
        victim, survivors = sharers[0], sharers[1:]
        # The victim has sent a good part of the file (so it was used), and the fetch still runs.
        run.wait_until(lambda: victim.bytes_served() >= MiB, "MiB served by the victim")
        run.wait_until(lambda: any(p > 0 for p in run.percents()), "verified pieces shown on stderr")
        shown_at_kill = run.percents()
        assert max(shown_at_kill) < 100, "the fetch was done before the sharer died"
        assert victim.stop(signal.SIGKILL) == -signal.SIGKILL
        assert run.wait() == 0, run.stderr
    finally:
        if run.proc.poll() is None:
            run.proc.kill()
            run.proc.wait()

    result = run.json()
    assert sha256(out / "random.bin") == hashlib.sha256(data).hexdigest()
    assert result["size"] == len(data) and result["reused_pieces"] == 0 and result["banned"] == []
    assert result["peers_used"] >= 2
    # Progress went on after the kill, to the end, from the two sharers left.
    assert len(run.percents()) > len(shown_at_kill) and run.percents()[-1] == 100.0, run.stderr
    assert sum(s.bytes_served() for s in survivors) > 0


# --- must show 4: an interrupted fetch resumes --------------------------------------------------------


def test_fetch_interrupted_by_sigint_resumes_without_refetching_verified_pieces(
    workdir: Path, daemons: list[Daemon]
) -> None:
    fetcher, sharer = start_network(daemons, workdir, ["127.0.0.154", "127.0.0.155"], [None, "1M"])
    data = os.urandom(4 * MiB)
    share, (original,) = share_copies([sharer], workdir, "resume.bin", data)
    meta = build_metainfo(original)
    assert meta.info_hash.hex() == share["info_hash"]
    assert len(data) % meta.piece_length == 0  # so `downloaded` below is exactly the missing pieces
    out = workdir / "out"

    first = FetchRun(fetcher, share["magnet"], "-o", str(out))
    try:
        first.wait_until(lambda: any(p >= 20 for p in first.percents()), "20% progress")
        first.proc.send_signal(signal.SIGINT)
        assert first.wait(20) == 130, first.stderr
    finally:
        if first.proc.poll() is None:
            first.proc.kill()
            first.proc.wait()
    assert "interrupted" in first.stderr

    with PieceStore(meta, out, writable=False) as store:
        kept = store.verify()
    assert meta.piece_count * 0.2 <= len(kept) < meta.piece_count, f"{len(kept)} of {meta.piece_count} pieces kept"

    second = fetcher.fetch(share["magnet"], out)  # the same command again (with --json, to read the counts)
    assert second.returncode == 0, second.stderr
    result = json.loads(second.stdout)
    assert result["reused_pieces"] == len(kept)
    assert result["downloaded"] == len(data) - len(kept) * meta.piece_length < len(data)
    assert sha256(out / "resume.bin") == hashlib.sha256(data).hexdigest()


# --- locate, shares, unshare, and a restart that keeps sharing -----------------------------------------


def test_locate_shares_unshare_and_a_restarted_sharer_serves_again(workdir: Path, daemons: list[Daemon]) -> None:
    fetcher, kept, dropped = start_network(daemons, workdir, ["127.0.0.156", "127.0.0.157", "127.0.0.158"])
    data = os.urandom(2 * MiB + 12_345)
    share, (kept_path, _) = share_copies([kept, dropped], workdir, "notes.bin", data)
    info_hash = share["info_hash"]

    # locate: both sharers, each with its handshake time, its piece count and the metadata on offer.
    located = fetcher.cli_json("locate", share["magnet"])
    assert {kept.endpoint, dropped.endpoint} <= set(located["peers"])
    checks = {c["addr"]: c for c in located["checked"]}
    for sharer in (kept, dropped):
        check = checks[sharer.endpoint]
        assert check["handshake_ms"] is not None and check["handshake_ms"] > 0, check
        assert check["pieces"] == share["pieces"] and check["metadata"] is True, check
    table = fetcher.cli("locate", info_hash)
    assert table.returncode == 0, table.stderr
    for sharer in (kept, dropped):
        row = next(line for line in table.stdout.splitlines() if line.startswith(sharer.endpoint))
        assert re.search(rf"\d+(\.\d+)? ms\s+{share['pieces']}\s+yes", row), table.stdout

    # shares lists it; unshare removes it (and says so); the unshared daemon no longer serves it.
    listing = kept.cli("shares")
    assert listing.returncode == 0 and info_hash in listing.stdout and str(kept_path) in listing.stdout, listing
    assert [s["info_hash"] for s in kept.cli_json("shares")["shares"]] == [info_hash]
    gone = dropped.cli("unshare", share["magnet"])
    assert gone.returncode == 0 and f"stopped sharing {info_hash}" in gone.stdout, gone
    assert dropped.cli_json("shares")["shares"] == []
    assert dropped.cli_json("unshare", info_hash)["was_shared"] is False
    rechecked = {c["addr"]: c for c in fetcher.cli_json("locate", info_hash)["checked"]}
    assert rechecked[dropped.endpoint]["handshake_ms"] is None, rechecked
    assert rechecked[kept.endpoint]["pieces"] == share["pieces"], rechecked

    # A restart (SIGTERM, then the same data dir) serves the share again without being asked.
    assert kept.stop() == 0
    kept.start().ready(min_nodes=1)
    assert [s["info_hash"] for s in kept.cli_json("shares")["shares"]] == [info_hash]
    out = workdir / "out"
    done = fetcher.fetch(share["magnet"], out)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["peers_used"] == 1 and result["downloaded"] == len(data)
    assert sha256(out / "notes.bin") == hashlib.sha256(data).hexdigest()
    assert kept.bytes_served() >= len(data)  # counted since the restart: all of it came from here


# --- must show 2: a sharer serves corrupt pieces ------------------------------------------------------


def corrupt_in_place(path: Path, piece_length: int) -> None:
    """Flip one byte in every piece of the file, writing in place (the daemon may hold it open), and
    give it back its size and mtime: to the daemon it is the file it hashed, serving pieces that fail."""
    before = path.stat()
    with open(path, "r+b") as handle:
        for offset in range(piece_length // 2, before.st_size, piece_length):
            handle.seek(offset)
            byte = handle.read(1)
            handle.seek(offset)
            handle.write(bytes([byte[0] ^ 0xFF]))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert path.stat().st_size == before.st_size


def test_fetch_bans_a_sharer_that_serves_corrupt_pieces(workdir: Path, daemons: list[Daemon]) -> None:
    # The honest sharer is slow, the corrupt one fast: the fetch surely takes pieces from both.
    fetcher, honest, liar = start_network(daemons, workdir, ["127.0.0.159", "127.0.0.160", "127.0.0.161"],
                                          [None, "2M", None])
    data = os.urandom(4 * MiB)
    share, (_, liar_copy) = share_copies([honest, liar], workdir, "data.bin", data)
    corrupt_in_place(liar_copy, share["piece_length"])
    assert liar_copy.read_bytes() != data

    out = workdir / "out"
    done = fetcher.fetch(share["magnet"], out)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["banned"] == [liar.endpoint], result
    assert sha256(out / "data.bin") == hashlib.sha256(data).hexdigest()
    assert liar.bytes_served() > 0  # it did serve (bad) pieces
    assert honest.bytes_served() >= len(data)
