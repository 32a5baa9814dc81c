"""Benchmark `fetch`: one file fetched by magnet link on loopback, by kadnode and by libtorrent, side by side.

    python -m bench.fetch [--size 100M] [--seeders 3] [--runs 3] [--json bench/results/fetch.json]

Three cases on one DHT, each run `--runs` times, interleaved (run 1 of every case, then run 2, ...), so
that a slow minute of the machine falls on all of them:

  kadnode from kadnode      `kadnode fetch MAGNET --json` while N `kadnode run` daemons share the file
  libtorrent from kadnode   libtorrent 2.1 adds the same magnet link and finds the same daemons through the DHT
  kadnode from libtorrent   `kadnode fetch` while N libtorrent sessions seed the file, announced on the DHT

Set up once: a random file of `--size` (written in 1 MiB chunks, SHA-256 taken on the way); daemons on
127.0.0.200 (the fetcher's daemon, which every other node bootstraps from) and 127.0.0.201.. (the N
sharers, all sharing that one file); N libtorrent sessions on 127.0.0.216.., in one worker process, seeding
the same file under the torrent libtorrent itself makes of it (its defaults: a v1+v2 hybrid, its own piece
size), so its info-hash differs from kadnode's and case 3 can only be served by libtorrent. The
libtorrent fetcher runs on 127.0.0.215, in a worker process of its own per run. Every address is in
127.0.0.200-230. Before the runs, the fetcher's daemon must list every seeder of both info-hashes.

libtorrent runs with its defaults except: plain TCP peer connections (no uTP, no encryption: kadnode
speaks neither, and each would cost seconds per connection), the loopback DHT settings of
/work/shared/design/libtorrent-on-loopback.md, and BEP 43 read-only DHT nodes (`lt_settings` says why).
Each libtorrent fetcher runs `--lt-warmup` seconds (3) before it is given the magnet link, like a client
that is already running (`LT_WARMUP` says why); `--lt-set NAME=VALUE` changes any setting.

Per fetch:
  process s   the fetching process from its start to its exit (kadnode: `python -m kadnode fetch`, which
              asks its daemon for peers; libtorrent: the worker, which starts a session), less the warm-up
  transfer s  the download itself: kadnode's own `seconds` (peer lookup, metadata, pieces), libtorrent's
              add_torrent to torrent_finished_alert (peer lookup, metadata, pieces)
  MiB/s       size / transfer s
  CPU s       user + system CPU of the fetching process, whole life (os.wait4 of that child)
  peak RSS    its own peak (ru_maxrss, or VmHWM sampled from /proc: `run_measured` says why); `anon` is the
              largest RssAnon sampled every 25 ms (libtorrent 2 maps the files it writes, and those file
              pages count in its RSS)
  seeders' CPU  CPU the N seeders' processes used meanwhile (/proc, before and after)
  verified    the SHA-256 of the fetched file equals the original's

Prints a table (progress on stderr) and writes every run and the medians as JSON with `--json`.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import queue
import re
import resource
import select
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, cast

from bench.common import distribution, free_port, log
from kadnode.client import ClientError, ControlClient

if TYPE_CHECKING:
    import libtorrent as lt

MiB = 1 << 20
NET = "127.0.0."
FETCHER_HOST = NET + "200"
"""The fetcher's daemon: `kadnode fetch` asks it for peers, and every other node bootstraps from it."""
SHARER_BASE = 201
"""kadnode sharers: 127.0.0.201 .. 127.0.0.214."""
LT_FETCHER_HOST = NET + "215"
LT_SEEDER_BASE = 216
"""libtorrent seeders: 127.0.0.216 .. 127.0.0.229."""
MAX_SEEDERS = 14
CONTENT_NAME = "fetch-bench.bin"
CHUNK = MiB
"""The random file is written, and every file hashed, this many bytes at a time: memory stays flat."""
SAMPLE_INTERVAL = 0.025
"""Seconds between /proc readings of a fetching process (its peak and anonymous RSS)."""
START_TIMEOUT = 30.0
ANNOUNCE_TIMEOUT = 60.0
"""Bound on waiting until the fetcher's daemon lists every seeder (a loopback lookup takes milliseconds)."""
LT_WARMUP = 3.0
"""Seconds the libtorrent fetcher's session runs before it is given the magnet link, as a client that is
already running (kadnode's fetch asks a daemon that is). Added sooner, a fresh libtorrent 2.1.1 session
gets its first peer about 0.5 s later, or ~1 s when added 0.6 s after the start; from 2 s on, within
~6 ms (measured here). `--lt-warmup 0` measures that cold start."""
ANNOUNCE_RETRY = 1.0
"""While libtorrent has no peer, ask it for a DHT announce (a get_peers lookup) this often."""
DEFAULT_TIMEOUT = 300.0
DISK_MARGIN = 64 * MiB


@dataclass(frozen=True, slots=True)
class Case:
    key: str
    fetcher: str
    seeders: str

    @property
    def label(self) -> str:
        return f"{self.fetcher} from {self.seeders}"


CASES = (
    Case("kadnode_from_kadnode", "kadnode", "kadnode"),
    Case("libtorrent_from_kadnode", "libtorrent", "kadnode"),
    Case("kadnode_from_libtorrent", "kadnode", "libtorrent"),
)
CASE_BY_KEY = {case.key: case for case in CASES}


# ---------------------------------------------------------------------- small helpers


def parse_size(text: str) -> int:
    """`100M`, `4m`, `512K`, `1G`, `100MiB` (binary multiples) or plain bytes; at least 1 byte."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmg]?)(?:i?b)?\s*", text, re.IGNORECASE)
    if match is None:
        raise ValueError(f"not a size: {text!r} (e.g. 100M, 512K, 1G, or bytes)")
    unit = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[match.group(2).lower()]
    size = int(float(match.group(1)) * unit)
    if size < 1:
        raise ValueError(f"the size must be at least 1 byte, not {text!r}")
    return size


def port_is_free(host: str, port: int) -> bool:
    """Whether libtorrent can listen on `port` again (with SO_REUSEADDR, as it does: the last run's
    connections may still be in TIME_WAIT)."""
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp,
        socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp,
    ):
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            udp.bind((host, port))
            tcp.bind((host, port))
        except OSError:
            return False
    return True


def write_random_file(path: Path, size: int) -> str:
    """Fill `path` with `size` random bytes, a chunk at a time; returns their SHA-256 (hex)."""
    digest = hashlib.sha256()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        left = size
        while left:
            chunk = os.urandom(min(CHUNK, left))
            handle.write(chunk)
            digest.update(chunk)
            left -= len(chunk)
    return digest.hexdigest()


def file_sha256(path: Path) -> str | None:
    """SHA-256 (hex) of a file read a chunk at a time, or None when it cannot be read."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(CHUNK):
                digest.update(chunk)
    except OSError:
        return None
    return digest.hexdigest()


def proc_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a live process (all its threads), from /proc/PID/stat."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # the command name may contain spaces
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_memory(pid: int | str) -> dict[str, int]:
    """The kB fields of /proc/PID/status we read, in bytes: VmHWM (peak RSS of its current program) and
    RssAnon (its own memory, without mapped file pages). Empty once it has exited."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    out = {}
    for line in status.splitlines():
        name, _, value = line.partition(":")
        if name in ("VmHWM", "RssAnon"):
            out[name] = int(value.split()[0]) * 1024
    return out


def stop_process(proc: subprocess.Popen[Any] | None, timeout: float = 20.0) -> None:
    """SIGTERM one child by its PID, SIGKILL if it has not exited in `timeout`; reaps it."""
    if proc is None or proc.returncode is not None:
        return
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def repo_env() -> tuple[str, dict[str, str]]:
    """The checkout root and an environment in which `python -m bench.fetch` runs from it."""
    root = str(Path(__file__).resolve().parent.parent)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
    return root, env


# ---------------------------------------------------------------------- measuring one child process


@dataclass(frozen=True, slots=True)
class ProcessUsage:
    """What one fetching process cost, from its own exit status and rusage (os.wait4)."""

    exit_code: int
    wall_s: float
    cpu_user_s: float
    cpu_system_s: float
    peak_rss_bytes: int
    """Its peak RSS: ru_maxrss, or the largest VmHWM sampled (see run_measured)."""
    peak_anon_rss_bytes: int
    """Largest RssAnon sampled every SAMPLE_INTERVAL (0 when the process ended before the first sample)."""
    timed_out: bool

    @property
    def cpu_s(self) -> float:
        return self.cpu_user_s + self.cpu_system_s


def run_measured(
    cmd: Sequence[str], *, cwd: str, env: dict[str, str] | None, stdout: Path, stderr: Path, timeout: float
) -> ProcessUsage:
    """Run `cmd` to its end; its wall time (start to exit), CPU and peak RSS. Killed after `timeout`.

    The exit is seen through a pidfd (no polling delay in the wall time), and the child is reaped with
    os.wait4, whose rusage is that child's alone (RUSAGE_CHILDREN's would mix in every child reaped).
    Its ru_maxrss is not quite its own, though: Linux carries the high-water mark of the memory a process
    had before exec over, and after Python's vfork that is this process's (a 10 MiB child reported pytest's
    77 MiB). So ru_maxrss counts only when it is above our own peak; otherwise the child's peak is the
    largest VmHWM sampled from /proc while it ran (VmHWM only grows, so a sample misses only growth in the
    child's last SAMPLE_INTERVAL)."""
    with open(stdout, "wb") as out, open(stderr, "wb") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(list(cmd), stdout=out, stderr=err, cwd=cwd, env=env)
    own_peak = proc_memory("self").get("VmHWM", 0)
    peak_anon = peak_sampled = 0
    timed_out = False
    try:
        pidfd = os.pidfd_open(proc.pid)
        try:
            while not select.select([pidfd], [], [], SAMPLE_INTERVAL)[0]:
                memory = proc_memory(proc.pid)
                peak_anon = max(peak_anon, memory.get("RssAnon", 0))
                peak_sampled = max(peak_sampled, memory.get("VmHWM", 0))
                if not timed_out and time.perf_counter() - started > timeout:
                    timed_out = True
                    proc.kill()  # not reaped yet, so the PID is still this child's
        finally:
            os.close(pidfd)
        ended = time.perf_counter()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    finally:
        if proc.returncode is None:
            proc.kill()
            proc.wait()
    ru_maxrss = usage.ru_maxrss * 1024
    return ProcessUsage(
        exit_code=proc.returncode, wall_s=ended - started, cpu_user_s=usage.ru_utime, cpu_system_s=usage.ru_stime,
        peak_rss_bytes=ru_maxrss if ru_maxrss > own_peak else peak_sampled, peak_anon_rss_bytes=peak_anon,
        timed_out=timed_out,
    )  # fmt: skip


# ---------------------------------------------------------------------- kadnode daemons


def kadnode_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "kadnode", *args]


class Daemon:
    """One `kadnode run` process on `host`; its UDP (DHT) and TCP (peer wire) ports have one number."""

    def __init__(self, workdir: Path, name: str, host: str, bootstrap: str | None) -> None:
        from kadnode.cli import CONTROL_SOCKET_NAME

        self.name, self.host = name, host
        self.port = free_port(host)
        self.data_dir = workdir / name
        self.log_path = workdir / f"{name}.log"
        self.client = ControlClient(self.data_dir / CONTROL_SOCKET_NAME, timeout=30.0, data_dir=self.data_dir)
        self.args = kadnode_cmd(
            "run",
            "--host",
            host,
            "--port",
            str(self.port),
            "--torrent-port",
            str(self.port),
            "--data-dir",
            str(self.data_dir),
            "--log-level",
            "warning",
        )
        if bootstrap is not None:
            self.args += ["--bootstrap", bootstrap]
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, cwd: Path) -> Daemon:
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(self.args, stdout=out, stderr=subprocess.STDOUT, cwd=cwd)
        return self

    def ready(self, min_nodes: int) -> None:
        """Wait until the control socket answers and the routing table holds `min_nodes` nodes."""
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.proc is None or self.proc.poll() is not None:
                raise RuntimeError(f"daemon {self.name} exited: {self.read_log()}")
            with contextlib.suppress(ClientError):
                if self.client.call("status")["routing_table"]["nodes"] >= min_nodes:
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"daemon {self.name} did not come up in {START_TIMEOUT:g} s: {self.read_log()}")
            time.sleep(0.1)

    def peers(self, info_hash: str) -> list[str]:
        return list(self.client.call("peers", info_hash=info_hash)["peers"])

    def bytes_served(self) -> int:
        return int(self.client.call("shares")["server"]["bytes_served"])

    def cpu_seconds(self) -> float | None:
        return None if self.proc is None else proc_cpu_seconds(self.proc.pid)

    def read_log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-2000:]
        except OSError:
            return ""


def stop_daemons(daemons: Sequence[Daemon]) -> None:
    """SIGTERM every daemon still running (all first: they shut down in parallel), then reap each by PID."""
    running = [d.proc for d in daemons if d.proc is not None and d.proc.poll() is None]
    for proc in running:
        proc.send_signal(signal.SIGTERM)
    for proc in running:
        stop_process(proc)


def wait_listed(daemon: Daemon, info_hash: str, endpoints: Sequence[str], what: str) -> float:
    """Poll `daemon`'s get_peers until it lists every endpoint; returns the seconds it took."""
    started = time.monotonic()
    while True:
        listed = set(daemon.peers(info_hash))
        if set(endpoints) <= listed:
            return time.monotonic() - started
        if time.monotonic() - started > ANNOUNCE_TIMEOUT:
            missing = sorted(set(endpoints) - listed)
            raise RuntimeError(f"the DHT does not list {what} {', '.join(missing)} after {ANNOUNCE_TIMEOUT:g} s")
        time.sleep(0.3)


# ---------------------------------------------------------------------- libtorrent sessions (worker side)


@dataclass(frozen=True, slots=True)
class LtEvent:
    """An alert's fields, copied at once: an alert object dies at the next pop_alerts()."""

    kind: str
    message: str
    at: float
    detail: str = ""


def lt_settings(host: str, port: int, alert_mask: int, overrides: dict[str, Any] | None = None) -> lt.settings_pack:
    """libtorrent on `host:port` only, DHT started later, TCP peers without uTP or encryption
    (`bench.ltloopback`), as a BEP 43 read-only DHT node; then `overrides` (`--lt-set`).

    Read-only: a read-only node looks up and announces but never enters a routing table. Otherwise each
    run's fetcher, once exited, stays behind as a dead node (in kadnode's tables, or handed to kadnode's
    lookups by the libtorrent seeders), and later lookups pay for it."""
    from bench.ltloopback import loopback_settings

    settings = dict(cast(dict[str, Any], loopback_settings(host, port, alert_mask, peers=True)))
    settings["dht_read_only"] = True
    settings.update(overrides or {})
    return cast("lt.settings_pack", settings)


class LtSession:
    """One libtorrent session on `host` (127.0.0.0/8) whose DHT knows `bootstrap` (loopback endpoints)."""

    def __init__(
        self,
        host: str,
        bootstrap: Sequence[tuple[str, int]],
        *,
        dht_alerts: bool = False,
        overrides: dict[str, Any] | None = None,
    ) -> None:
        import libtorrent as lt

        for addr in [(host, 1), *bootstrap]:
            if not addr[0].startswith("127."):
                raise ValueError(f"libtorrent runs on 127.0.0.0/8 only, not {addr[0]!r}")
        self.host = host
        self.port = 0
        self._bootstrap = list(bootstrap)
        self._overrides = dict(overrides or {})
        category = lt.alert.category_t
        mask = category.status_notification | category.error_notification
        if dht_alerts:
            mask |= category.dht_notification  # dht_bootstrap_alert
        self._mask = int(mask)
        self._session: lt.session | None = None
        self.errors: list[str] = []

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, port: int = 0, timeout: float = 10.0) -> None:
        """Listen on TCP and UDP (`port`, or one free for both), then start the DHT with the bootstrap
        nodes as its saved state."""
        import libtorrent as lt

        self.port = port or free_port(self.host)
        nodes = [socket.inet_aton(ip) + struct.pack("!H", node_port) for ip, node_port in self._bootstrap]
        state: dict[bytes, Any] = {b"dht state": {b"nodes": nodes}}
        params = lt.read_session_params(lt.bencode(state))
        params.settings = lt_settings(self.host, self.port, self._mask, self._overrides)
        from bench.ltloopback import loopback_only_filter

        params.ip_filter = loopback_only_filter()
        self._session = lt.session(params)
        listening: set[str] = set()
        deadline = time.monotonic() + timeout
        while not {"tcp", "udp"} <= listening:
            for event in self.pump(0.1):
                if event.kind == "listen_succeeded_alert":
                    listening.add(event.detail)
                elif event.kind == "listen_failed_alert":
                    raise OSError(f"libtorrent cannot listen on {self.endpoint}: {event.message}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"libtorrent did not listen on {self.endpoint} in {timeout:g} s")
        self._session.apply_settings({"enable_dht": True})

    @property
    def session(self) -> lt.session:
        if self._session is None:
            raise RuntimeError("the libtorrent session is not running")
        return self._session

    def pump(self, wait: float) -> list[LtEvent]:
        """Wait up to `wait` seconds for an alert, then copy out every pending one."""
        import libtorrent as lt

        if wait > 0:
            self.session.wait_for_alert(max(1, int(wait * 1000)))
        at = time.perf_counter()
        events = []
        for alert in self.session.pop_alerts():
            detail = ""
            if isinstance(alert, lt.listen_succeeded_alert):
                detail = "tcp" if alert.socket_type == lt.socket_type_t.tcp else "udp"
            event = LtEvent(type(alert).__name__, str(alert.message()), at, detail)
            if alert.category() & lt.alert.category_t.error_notification:
                self.errors.append(event.message)
            events.append(event)
        return events

    def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            session.pause()
            session.apply_settings({"enable_dht": False})
            session.pop_alerts()
            del session  # the last reference: libtorrent shuts down here


def parse_lt_set(pairs: Sequence[str]) -> dict[str, Any]:
    """`NAME=VALUE` libtorrent settings: integers and true/false as such, anything else as text."""
    out: dict[str, Any] = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep or not name:
            raise ValueError(f"--lt-set wants NAME=VALUE, not {pair!r}")
        value: Any = text
        if re.fullmatch(r"-?\d+", text):
            value = int(text)
        elif text.lower() in ("true", "false"):
            value = text.lower() == "true"
        out[name.strip()] = value
    return out


def parse_endpoints(text: str) -> list[tuple[str, int]]:
    out = []
    for item in filter(None, text.split(",")):
        host, _, port = item.rpartition(":")
        out.append((host, int(port)))
    return out


def lt_fetch_worker(args: argparse.Namespace) -> dict[str, Any]:
    """Worker for case 2: start a session, let it run `--lt-warmup` seconds, add the magnet link and time
    the download from add_torrent to torrent_finished_alert."""
    import libtorrent as lt

    session = LtSession(
        args.host, parse_endpoints(args.bootstrap), dht_alerts=True, overrides=parse_lt_set(args.lt_set)
    )
    session.start(args.port)
    try:
        warmup_started = time.perf_counter()
        bootstrap_s: float | None = None
        while (left := args.lt_warmup - (time.perf_counter() - warmup_started)) > 0:
            for event in session.pump(min(0.1, left)):
                if event.kind == "dht_bootstrap_alert" and bootstrap_s is None:
                    bootstrap_s = event.at - warmup_started

        params = lt.parse_magnet_uri(args.magnet)
        params.save_path = args.save
        cpu_before = resource.getrusage(resource.RUSAGE_SELF)
        added = time.perf_counter()
        handle = session.session.add_torrent(params)
        metadata_at: float | None = None
        finished_at: float | None = None
        announces = 0
        next_check = added + ANNOUNCE_RETRY
        while finished_at is None:
            now = time.perf_counter()
            if now - added > args.timeout:
                status = handle.status()
                raise TimeoutError(
                    f"libtorrent: {status.total_wanted_done}/{status.total_wanted} bytes from "
                    f"{status.num_peers} peers after {args.timeout:g} s; errors {session.errors[-5:]}"
                )
            for event in session.pump(0.25):
                if event.kind == "metadata_received_alert":
                    metadata_at = event.at
                elif event.kind == "torrent_finished_alert":
                    finished_at = event.at
                elif event.kind in ("torrent_error_alert", "file_error_alert"):
                    raise RuntimeError(f"libtorrent: {event.message}")
            now = time.perf_counter()
            if finished_at is None and now >= next_check:
                next_check = now + ANNOUNCE_RETRY
                status = handle.status()
                if status.is_finished:  # the alert should have said so; never wait on a lost one
                    finished_at = now
                elif status.num_peers == 0:
                    handle.force_dht_announce()
                    announces += 1
        cpu_after = resource.getrusage(resource.RUSAGE_SELF)
        status = handle.status()
        info = handle.torrent_file()
        return {
            "port": session.port,
            "warmup_s": round(added - warmup_started, 4),
            "bootstrap_s": None if bootstrap_s is None else round(bootstrap_s, 4),
            "transfer_s": round(finished_at - added, 4),
            "metadata_s": None if metadata_at is None else round(metadata_at - added, 4),
            "pieces_s": None if metadata_at is None else round(finished_at - metadata_at, 4),
            "download_cpu_s": round(
                cpu_after.ru_utime + cpu_after.ru_stime - cpu_before.ru_utime - cpu_before.ru_stime, 3
            ),
            "downloaded": int(status.total_payload_download),
            "size": int(status.total_wanted),
            "piece_length": None if info is None else info.piece_length(),
            "forced_announces": announces,
            "errors": session.errors[-10:],
        }
    finally:
        session.close()


def lt_seed_worker(args: argparse.Namespace) -> int:
    """Worker for case 3: make libtorrent's own torrent of the content, seed it from N sessions, and
    answer the parent's commands (one per stdin line) until stdin closes:

      quiet   stop asking for DHT announces every second (done once the DHT lists every seeder)
      stats   print each session's uploaded payload bytes

    Replies and the first "seeding" report are JSON lines on stdout."""
    import libtorrent as lt

    content = Path(args.content)
    started = time.perf_counter()
    storage = lt.file_storage()
    lt.add_files(storage, str(content))
    creator = lt.create_torrent(storage)  # libtorrent's defaults: a v1+v2 hybrid, its own piece size
    lt.set_piece_hashes(creator, str(content.parent))
    torrent = lt.bencode(creator.generate())
    info = lt.torrent_info(torrent)
    created_s = time.perf_counter() - started

    commands: queue.Queue[str | None] = queue.Queue()

    def read_commands() -> None:
        for line in sys.stdin:
            commands.put(line.strip())
        commands.put(None)

    threading.Thread(target=read_commands, daemon=True).start()
    sessions = [
        LtSession(host, parse_endpoints(args.bootstrap), overrides=parse_lt_set(args.lt_set))
        for host in args.hosts.split(",")
    ]
    try:
        handles = []
        for session in sessions:
            session.start()
            params = lt.add_torrent_params()
            params.ti = lt.torrent_info(torrent)
            params.save_path = str(content.parent)
            handles.append(session.session.add_torrent(params))
        checked = time.perf_counter()
        while not all(handle.status().is_seeding for handle in handles):
            for session in sessions:
                session.pump(0.05)
            if time.perf_counter() - checked > args.timeout:
                raise TimeoutError(f"libtorrent did not finish checking {content} in {args.timeout:g} s")
        emit_line(
            {
                "event": "seeding",
                "info_hash": info.info_hashes().v1.to_bytes().hex(),
                "hybrid": bool(info.info_hashes().has_v2()),
                "piece_length": info.piece_length(),
                "pieces": info.num_pieces(),
                "endpoints": [session.endpoint for session in sessions],
                "create_s": round(created_s, 3),
                "check_s": round(time.perf_counter() - checked, 3),
            }
        )
        announcing = True
        next_announce = 0.0
        while True:
            for session in sessions:
                session.pump(0)
            if announcing and time.monotonic() >= next_announce:
                for handle in handles:
                    handle.force_dht_announce()
                next_announce = time.monotonic() + ANNOUNCE_RETRY
            try:
                command = commands.get(timeout=0.1)
            except queue.Empty:
                continue
            if command is None or command == "exit":
                return 0
            if command == "quiet":
                announcing = False
                emit_line({"event": "quiet"})
            elif command == "stats":
                emit_line({"event": "stats", "uploaded": [int(h.status().total_payload_upload) for h in handles]})
            else:
                emit_line({"event": "error", "error": f"unknown command {command!r}"})
    finally:
        for session in sessions:
            session.close()


def emit_line(message: dict[str, Any]) -> None:
    print(json.dumps(message), flush=True)


# ---------------------------------------------------------------------- libtorrent seeders (parent side)


class LtSeeders:
    """The case-3 seeders: one `python -m bench.fetch --worker lt-seed` process with N sessions."""

    def __init__(
        self, workdir: Path, hosts: Sequence[str], bootstrap: Sequence[str], content: Path, options: Options
    ) -> None:
        self.log_path = workdir / "lt-seeders.log"
        self.args = [
            sys.executable,
            "-m",
            "bench.fetch",
            "--worker",
            "lt-seed",
            "--hosts",
            ",".join(hosts),
            "--bootstrap",
            ",".join(bootstrap),
            "--content",
            str(content),
            "--timeout",
            str(options.timeout),
            *lt_set_args(options),
        ]
        self.proc: subprocess.Popen[str] | None = None
        self._lines: queue.Queue[str | None] = queue.Queue()

    def start(self, timeout: float) -> dict[str, Any]:
        """Start the worker; returns its "seeding" report (info-hash, endpoints, piece size)."""
        root, env = repo_env()
        with open(self.log_path, "ab") as err:
            self.proc = subprocess.Popen(
                self.args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, cwd=root, env=env, text=True
            )
        threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True).start()
        return self._expect("seeding", timeout)

    def _read(self, stream: IO[str] | None) -> None:
        assert stream is not None
        for line in stream:
            self._lines.put(line)
        self._lines.put(None)

    def _expect(self, event: str, timeout: float) -> dict[str, Any]:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise RuntimeError(
                f"the libtorrent seeders sent no {event!r} in {timeout:g} s: {self.read_log()}"
            ) from None
        if line is None:
            raise RuntimeError(f"the libtorrent seeders exited: {self.read_log()}")
        message: dict[str, Any] = json.loads(line)
        if message.get("event") != event:
            raise RuntimeError(f"the libtorrent seeders answered {message!r} instead of {event!r}")
        return message

    def command(self, command: str, reply: str, timeout: float = 30.0) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self._expect(reply, timeout)

    def uploaded(self) -> list[int]:
        return [int(n) for n in self.command("stats", "stats")["uploaded"]]

    def cpu_seconds(self) -> float | None:
        return None if self.proc is None else proc_cpu_seconds(self.proc.pid)

    def stop(self) -> None:
        """Close its stdin (it exits), SIGTERM/SIGKILL by PID if it does not."""
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        if proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            stop_process(proc)

    def read_log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-2000:]
        except OSError:
            return ""


# ---------------------------------------------------------------------- the benchmark


@dataclass(frozen=True, slots=True)
class Options:
    size: int
    seeders: int
    runs: int
    cases: tuple[str, ...]
    timeout: float
    lt_warmup: float = LT_WARMUP
    lt_set: tuple[str, ...] = ()
    """libtorrent settings changed from the benchmark's (`--lt-set NAME=VALUE`), for every session."""


def lt_set_args(options: Options) -> list[str]:
    return [arg for pair in options.lt_set for arg in ("--lt-set", pair)]


@dataclass(slots=True)
class Network:
    """Everything set up once and used by every run."""

    workdir: Path
    content: Path
    sha256: str
    fetcher: Daemon
    sharers: list[Daemon]
    kadnode_share: dict[str, Any]
    lt_seeders: LtSeeders | None
    lt_share: dict[str, Any] | None
    lt_port: int = 0

    @property
    def daemons(self) -> list[Daemon]:
        return [self.fetcher, *self.sharers]

    def lt_fetcher_port(self) -> int:
        """The libtorrent fetcher's port: the same in every run while it stays free. Each run's session
        announces itself as a peer of the file, and the DHT lists it for 30 minutes after it has gone: one
        such address for the kadnode fetches to try (and be refused at once), not one more per run."""
        if not self.lt_port or not port_is_free(LT_FETCHER_HOST, self.lt_port):
            self.lt_port = free_port(LT_FETCHER_HOST)
        return self.lt_port


def setup_network(options: Options, workdir: Path, daemons: list[Daemon], seeders_out: list[LtSeeders]) -> Network:
    """Content, daemons, kadnode shares and libtorrent seeders; every started process is appended to
    `daemons` / `seeders_out` at once, so the caller stops it however this ends."""
    content = workdir / "content" / CONTENT_NAME
    log(f"writing {options.size / MiB:.1f} MiB of random data to {content}")
    sha256 = write_random_file(content, options.size)

    fetcher = Daemon(workdir, "d0", FETCHER_HOST, None).start(workdir)
    daemons.append(fetcher)
    fetcher.ready(0)
    sharers = []
    for n in range(options.seeders):
        sharer = Daemon(workdir, f"d{n + 1}", f"{NET}{SHARER_BASE + n}", fetcher.endpoint).start(workdir)
        daemons.append(sharer)
        sharers.append(sharer)
    for sharer in sharers:
        sharer.ready(1)
    log(
        f"{1 + len(sharers)} kadnode daemons up: fetcher's {fetcher.endpoint}, sharers "
        f"{', '.join(s.endpoint for s in sharers)}"
    )

    kadnode_cases = any(CASE_BY_KEY[key].seeders == "kadnode" for key in options.cases)
    kadnode_share: dict[str, Any] = {}
    if kadnode_cases:
        started = time.monotonic()
        for sharer in sharers:
            shared = sharer.client.call("share", path=str(content))
            if shared["announced_to"] < 1:
                raise RuntimeError(f"{sharer.name}'s announce reached no node")
            kadnode_share = shared
        waited = wait_listed(fetcher, kadnode_share["info_hash"], [s.endpoint for s in sharers], "the kadnode sharers")
        kadnode_share = {k: kadnode_share[k] for k in ("info_hash", "magnet", "piece_length", "pieces", "size")}
        kadnode_share["setup_s"] = round(time.monotonic() - started, 2)
        log(
            f"kadnode shares {kadnode_share['info_hash']} ({kadnode_share['pieces']} pieces of "
            f"{kadnode_share['piece_length'] // 1024} KiB); listed by the DHT after {waited:.1f} s"
        )

    lt_seeders: LtSeeders | None = None
    lt_share: dict[str, Any] | None = None
    if any(CASE_BY_KEY[key].seeders == "libtorrent" for key in options.cases):
        hosts = [f"{NET}{LT_SEEDER_BASE + n}" for n in range(options.seeders)]
        lt_seeders = LtSeeders(workdir, hosts, [d.endpoint for d in [fetcher, *sharers]], content, options)
        seeders_out.append(lt_seeders)
        started = time.monotonic()
        lt_share = lt_seeders.start(options.timeout)
        waited = wait_listed(fetcher, lt_share["info_hash"], lt_share["endpoints"], "the libtorrent seeders")
        lt_seeders.command("quiet", "quiet")
        lt_share["magnet"] = f"magnet:?xt=urn:btih:{lt_share['info_hash']}&dn={CONTENT_NAME}"
        lt_share["setup_s"] = round(time.monotonic() - started, 2)
        log(
            f"libtorrent seeds {lt_share['info_hash']} ({'hybrid' if lt_share['hybrid'] else 'v1'}, "
            f"{lt_share['pieces']} pieces of {lt_share['piece_length'] // 1024} KiB) from "
            f"{', '.join(lt_share['endpoints'])}; listed by the DHT after {waited:.1f} s"
        )
    return Network(workdir, content, sha256, fetcher, sharers, kadnode_share, lt_seeders, lt_share)


def seeders_cpu(network: Network, case: Case) -> float | None:
    """CPU seconds the case's seeders' processes have used so far, all together."""
    if case.seeders == "kadnode":
        readings = [d.cpu_seconds() for d in network.sharers]
    else:
        readings = [None if network.lt_seeders is None else network.lt_seeders.cpu_seconds()]
    values = [r for r in readings if r is not None]
    return sum(values) if len(values) == len(readings) else None


def served(network: Network, case: Case) -> list[int]:
    """Payload bytes each seeder has uploaded so far."""
    if case.seeders == "kadnode":
        return [d.bytes_served() for d in network.sharers]
    assert network.lt_seeders is not None
    return network.lt_seeders.uploaded()


@dataclass(frozen=True, slots=True)
class Fetched:
    """One fetching process's outcome, before verification."""

    usage: ProcessUsage
    transfer_s: float | None
    idle_s: float
    """Seconds the process idled on purpose (libtorrent's warm-up), left out of `process_s`."""
    extra: dict[str, Any]


def kadnode_fetch(
    network: Network, share: dict[str, Any], out_dir: Path, logs: tuple[Path, Path], options: Options
) -> Fetched:
    """`kadnode fetch MAGNET --json` through the fetcher's daemon; the transfer time is its own `seconds`."""
    cmd = kadnode_cmd(
        "fetch",
        share["magnet"],
        "-o",
        str(out_dir),
        "--json",
        "--data-dir",
        str(network.fetcher.data_dir),
        "--timeout",
        str(int(min(60.0, max(1.0, options.timeout)))),  # without progress: a broken fetch fails on its own
    )
    usage = run_measured(
        cmd, cwd=str(network.workdir), env=None, stdout=logs[0], stderr=logs[1], timeout=options.timeout
    )
    if usage.exit_code != 0:
        return Fetched(usage, None, 0.0, {})
    result = json.loads(logs[0].read_text())
    extra = {k: result[k] for k in ("downloaded", "peers_used", "banned", "reused_pieces")}
    return Fetched(usage, float(result["seconds"]), 0.0, extra)


def libtorrent_fetch(
    network: Network, share: dict[str, Any], out_dir: Path, logs: tuple[Path, Path], options: Options
) -> Fetched:
    """The lt-fetch worker: a fresh libtorrent session, warmed up, given the magnet link."""
    root, env = repo_env()
    worker_out = logs[0].with_suffix(".json")
    cmd = [
        sys.executable,
        "-m",
        "bench.fetch",
        "--worker",
        "lt-fetch",
        "--worker-out",
        str(worker_out),
        "--host",
        LT_FETCHER_HOST,
        "--port",
        str(network.lt_fetcher_port()),
        "--bootstrap",
        ",".join(d.endpoint for d in network.daemons),
        "--magnet",
        share["magnet"],
        "--save",
        str(out_dir),
        "--timeout",
        str(options.timeout),
        "--lt-warmup",
        str(options.lt_warmup),
        *lt_set_args(options),
    ]
    usage = run_measured(
        cmd, cwd=root, env=env, stdout=logs[0], stderr=logs[1], timeout=options.timeout + options.lt_warmup + 30
    )
    if usage.exit_code != 0:
        return Fetched(usage, None, 0.0, {})
    extra: dict[str, Any] = json.loads(worker_out.read_text())
    return Fetched(usage, float(extra.pop("transfer_s")), float(extra["warmup_s"]), extra)


def fetch_once(network: Network, case: Case, run: int, options: Options) -> dict[str, Any]:
    """One fetch of `case` into a fresh directory, measured and verified; the directory is removed after."""
    share = network.kadnode_share if case.seeders == "kadnode" else network.lt_share
    assert share is not None
    out_dir = network.workdir / f"out-{case.key}-{run}"
    logs = (network.workdir / f"{case.key}-{run}.out", network.workdir / f"{case.key}-{run}.err")
    served_before = served(network, case)
    cpu_before = seeders_cpu(network, case)
    fetcher = kadnode_fetch if case.fetcher == "kadnode" else libtorrent_fetch
    fetched = fetcher(network, share, out_dir, logs, options)
    cpu_after = seeders_cpu(network, case)
    usage = fetched.usage
    error: str | None = None
    digest: str | None = None
    if usage.exit_code != 0:
        reason = " (timed out)" if usage.timed_out else ""
        error = f"exit status {usage.exit_code}{reason}: {logs[1].read_text(errors='replace').strip()[-500:]}"
    else:
        digest = file_sha256(out_dir / CONTENT_NAME)
        if digest != network.sha256:
            error = f"SHA-256 of the fetched file is {digest}, not {network.sha256}"
    shutil.rmtree(out_dir, ignore_errors=True)
    # Read after the hashing: libtorrent may count a connection's last bytes only once it has closed.
    served_by = [after - before for before, after in zip(served_before, served(network, case), strict=True)]
    transfer_s = fetched.transfer_s
    return {
        "case": case.key,
        "run": run,
        "size": options.size,
        "seeders": options.seeders,
        "info_hash": share["info_hash"],
        "process_s": round(usage.wall_s - fetched.idle_s, 4),
        "process_wall_s": round(usage.wall_s, 4),
        "transfer_s": transfer_s,
        "mib_per_s": round(options.size / MiB / transfer_s, 3) if error is None and transfer_s else None,
        "cpu_s": round(usage.cpu_s, 3),
        "cpu_user_s": round(usage.cpu_user_s, 3),
        "cpu_system_s": round(usage.cpu_system_s, 3),
        "peak_rss_bytes": usage.peak_rss_bytes,
        "peak_anon_rss_bytes": usage.peak_anon_rss_bytes,
        "seeders_cpu_s": None if cpu_before is None or cpu_after is None else round(cpu_after - cpu_before, 3),
        "served_by_seeder": served_by,
        "seeders_used": sum(1 for n in served_by if n > 0),
        "sha256": digest,
        "verified": error is None,
        "exit_code": usage.exit_code,
        "error": error,
        **fetched.extra,
    }


def summarize_case(case: Case, runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Medians (and the spread) over the runs of one case; failed runs count only in `verified`."""
    good = [r for r in runs if r["verified"] and r["mib_per_s"]]

    def stats(key: str) -> dict[str, float] | None:
        values = [float(r[key]) for r in good if r.get(key) is not None]
        if not values:
            return None
        return {"median": statistics.median(values), "min": min(values), **distribution(values)}

    return {
        "label": case.label,
        "fetcher": case.fetcher,
        "seeders_impl": case.seeders,
        "size": runs[0]["size"] if runs else None,
        "seeders": runs[0]["seeders"] if runs else None,
        "runs": len(runs),
        "verified": sum(1 for r in runs if r["verified"]),
        **{
            key: stats(key)
            for key in (
                "process_s",
                "transfer_s",
                "mib_per_s",
                "cpu_s",
                "peak_rss_bytes",
                "peak_anon_rss_bytes",
                "seeders_cpu_s",
            )
        },
    }


def environment() -> dict[str, Any]:
    import importlib.metadata

    from bench.throughput import daemon_codec

    def version(package: str) -> str | None:
        try:
            return importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            return None

    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "loadavg_start": os.getloadavg(),
        "kadnode": version("kadnode"),
        "kadnode_codec": daemon_codec(Path(tempfile.gettempdir())),
        "libtorrent": version("libtorrent"),
    }


def run_benchmark(options: Options, keep: bool = False) -> dict[str, Any]:
    report: dict[str, Any] = {"benchmark": "fetch", "parameters": asdict(options), "environment": environment()}
    free = shutil.disk_usage("/tmp").free
    if free < 3 * options.size + DISK_MARGIN:
        raise RuntimeError(
            f"/tmp has {free / MiB:.0f} MiB free; {options.size / MiB:.0f} MiB need "
            f"{(3 * options.size + DISK_MARGIN) / MiB:.0f} MiB (the file and two fetched copies)"
        )
    workdir = Path(tempfile.mkdtemp(prefix="knb-", dir="/tmp"))  # control sockets need short paths
    report["workdir"] = str(workdir)
    daemons: list[Daemon] = []
    seeders: list[LtSeeders] = []
    runs: list[dict[str, Any]] = []
    started = time.monotonic()
    try:
        network = setup_network(options, workdir, daemons, seeders)
        report["setup"] = {
            "seconds": round(time.monotonic() - started, 2),
            "sha256": network.sha256,
            "fetcher_daemon": network.fetcher.endpoint,
            "kadnode_sharers": [d.endpoint for d in network.sharers],
            "kadnode_share": network.kadnode_share or None,
            "libtorrent_share": network.lt_share,
        }
        total = options.runs * len(options.cases)
        for run in range(1, options.runs + 1):
            for key in options.cases:
                case = CASE_BY_KEY[key]
                result = fetch_once(network, case, run, options)
                runs.append(result)
                if result["error"] is None:
                    log(
                        f"[{len(runs)}/{total}] run {run}, {case.label}: {result['transfer_s']:.2f} s "
                        f"({result['mib_per_s']:.1f} MiB/s), process {result['process_s']:.2f} s, "
                        f"CPU {result['cpu_s']:.2f} s, peak RSS {result['peak_rss_bytes'] / MiB:.0f} MiB, "
                        f"served {', '.join(f'{b / MiB:.1f}' for b in result['served_by_seeder'])} MiB"
                    )
                else:
                    log(f"[{len(runs)}/{total}] run {run}, {case.label}: FAILED: {result['error']}")
    finally:
        for lt_seeders in seeders:
            lt_seeders.stop()
        stop_daemons(daemons)
        if keep:
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    report["runs"] = runs
    report["summary"] = {
        key: summarize_case(CASE_BY_KEY[key], [r for r in runs if r["case"] == key]) for key in options.cases
    }
    report["environment"]["loadavg_end"] = os.getloadavg()
    report["wall_seconds"] = round(time.monotonic() - started, 1)
    return report


# ---------------------------------------------------------------------- the report


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True)))

    return "\n".join([line(headers), "  ".join("-" * w for w in widths), *(line(r) for r in rows)])


def _median(summary: dict[str, Any], key: str, fmt: str, scale: float = 1.0) -> str:
    stats = summary.get(key)
    return "-" if not stats else format(stats["median"] / scale, fmt)


def format_report(report: dict[str, Any]) -> str:
    options = report["parameters"]
    headers = [
        "case",
        "size MiB",
        "seeders",
        "process s",
        "transfer s",
        "MiB/s",
        "CPU s",
        "peak RSS MiB",
        "anon MiB",
        "seeders' CPU s",
        "verified",
    ]
    rows = []
    for summary in report["summary"].values():
        rows.append([
            summary["label"], f"{options['size'] / MiB:.1f}", str(options["seeders"]),
            _median(summary, "process_s", ".2f"), _median(summary, "transfer_s", ".2f"),
            _median(summary, "mib_per_s", ".1f"), _median(summary, "cpu_s", ".2f"),
            _median(summary, "peak_rss_bytes", ".0f", MiB), _median(summary, "peak_anon_rss_bytes", ".0f", MiB),
            _median(summary, "seeders_cpu_s", ".2f"), f"{summary['verified']}/{summary['runs']}",
        ])  # fmt: skip
    env = report["environment"]
    out = [
        f"fetch: a {options['size'] / MiB:.1f} MiB random file by magnet link on loopback, "
        f"{options['seeders']} seeders, median of {options['runs']} run(s)",
        "",
        format_table(headers, rows),
        "",
        f"process s: the fetching process from start to exit (libtorrent's less its {options['lt_warmup']:g} s "
        "warm-up); transfer s: peer lookup + metadata + pieces "
        "(kadnode's own timer; libtorrent's add_torrent to torrent_finished_alert); MiB/s = size / transfer s;",
        "CPU s and peak RSS: the fetching process's own; anon: its largest RssAnon sampled every 25 ms "
        "(libtorrent 2 maps the file it writes, and those pages count in its RSS);",
        "seeders' CPU s: all N seeders together during the fetch; verified: SHA-256 of the result matches.",
        f"kadnode {env.get('kadnode')} ({env.get('kadnode_codec')}), libtorrent {env.get('libtorrent')}, "
        f"Python {env['python']}; {env['cpus']} CPUs shared by every process, load average "
        f"{env['loadavg_start'][0]:.2f} at start, {env.get('loadavg_end', [float('nan')])[0]:.2f} at end",
    ]
    failures = [r for r in report["runs"] if r["error"] is not None]
    for failure in failures:
        out.append(f"FAILED: run {failure['run']} of {failure['case']}: {failure['error']}")
    return "\n".join(out)


# ---------------------------------------------------------------------- the command line


def _terminated(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fetch", description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "--size",
        type=parse_size,
        default=parse_size("100M"),
        help="size of the random file: bytes, or 512K, 100M, 1G (binary units; default 100M)",
    )
    parser.add_argument("--seeders", type=int, default=3, help=f"sharers per case, 1-{MAX_SEEDERS} (default 3)")
    parser.add_argument("--runs", type=int, default=3, help="fetches per case (default 3)")
    parser.add_argument(
        "--cases",
        default=",".join(c.key for c in CASES),
        help="comma-separated subset of: " + ", ".join(c.key for c in CASES),
    )
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="give up on one fetch after this")
    parser.add_argument(
        "--lt-warmup",
        type=float,
        default=LT_WARMUP,
        help="seconds the libtorrent fetcher runs before it gets the magnet link "
        f"(default {LT_WARMUP:g}; 0: a cold start)",
    )
    parser.add_argument(
        "--lt-set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="change a libtorrent setting in every session (repeatable), e.g. tick_interval=100",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, content)")
    parser.add_argument("--json", type=Path, help="write every run and the medians here")
    # Worker modes (run by the benchmark itself).
    parser.add_argument("--worker", choices=("lt-fetch", "lt-seed"), help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", help=argparse.SUPPRESS)
    parser.add_argument("--host", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--hosts", help=argparse.SUPPRESS)
    parser.add_argument("--bootstrap", default="", help=argparse.SUPPRESS)
    parser.add_argument("--magnet", help=argparse.SUPPRESS)
    parser.add_argument("--save", help=argparse.SUPPRESS)
    parser.add_argument("--content", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker == "lt-fetch":
        result = lt_fetch_worker(args)
        Path(args.worker_out).write_text(json.dumps(result))
        return 0
    if args.worker == "lt-seed":
        return lt_seed_worker(args)

    cases = tuple(filter(None, (c.strip() for c in args.cases.split(","))))
    unknown = [c for c in cases if c not in CASE_BY_KEY]
    if unknown or not cases:
        parser.error(f"unknown case(s) {', '.join(unknown) or '(none given)'}; choose from " + ", ".join(CASE_BY_KEY))
    if not 1 <= args.seeders <= MAX_SEEDERS:
        parser.error(f"--seeders must be 1-{MAX_SEEDERS} (the addresses 127.0.0.200-230 hold no more)")
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    try:
        parse_lt_set(args.lt_set)
    except ValueError as exc:
        parser.error(str(exc))
    if args.lt_warmup < 0:
        parser.error("--lt-warmup must not be negative")
    options = Options(
        size=args.size,
        seeders=args.seeders,
        runs=args.runs,
        cases=cases,
        timeout=args.timeout,
        lt_warmup=args.lt_warmup,
        lt_set=tuple(args.lt_set),
    )
    previous = signal.signal(signal.SIGTERM, _terminated)  # so that the finally blocks stop every process
    try:
        report = run_benchmark(options, keep=args.keep)
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(format_report(report))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1, default=str) + "\n")
        log(f"wrote {args.json}")
    return 0 if all(r["verified"] for r in report["runs"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
