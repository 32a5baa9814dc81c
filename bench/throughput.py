"""Benchmark 2, `throughput`: how many queries one `kadnode run` daemon answers, next to the ceiling.

    python -m bench.throughput --seconds 60 [--inflight 32] [--json bench/results/throughput.json]

1. One daemon (a `kadnode run` subprocess on its own 127.0.77.1, temp data dir) is given a realistic
   state: ~100 helper nodes (in this process, each on its own 127.0.78.X) whose IDs fill the routing
   table's buckets 8 deep, stored peers for 64 info hashes and 128 BEP 44 items. Its per-IP rate
   limit is switched off in its TOML config (`[settings] rate_limit_per_second = 0`): the whole load
   comes from one source IP, which the default limit (50/s) would rightly block.
2. `bench.loadgen`, in a second process, keeps `--inflight` queries outstanding (ping, find_node,
   get_peers, get in equal shares; half the get_peers/get ask for stored keys) and measures answered
   queries/s, loss, p50/p99. This process samples the daemon's CPU and RSS from /proc every second.
3. The same load generator then measures a bare asyncio UDP echo server (`bench.echo_server`) on the
   stock loop, and on uvloop when it is installed: the stock-loop echo rate is the ceiling, and the
   report gives kadnode's share of it. It also measures a lean echo server that reads its socket as
   kadnode does, and gives kadnode's share of that tighter ceiling too (`bench/echo_server.py` says
   why the stock one varies so much between hosts).

Prints a table (progress on stderr) and writes JSON. `--profile DIR` also records the daemon under load
with py-spy and prints its hottest functions.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.echo_server import uvloop_factory
from bench.loadgen import Stored
from kadnode.client import ClientError, ControlClient
from kadnode.core.bep44 import SigningKey, immutable_target, make_mutable
from kadnode.runtime.node import Node
from kadnode.types import Addr
from kadnode.wire.bencode import bencode
from kadnode.wire.krpc import (
    AnnouncePeer,
    Get,
    GetPeers,
    KrpcError,
    Put,
    Query,
    QueryBody,
    Response,
    decode_message,
    encode_message,
    response_token,
)

DAEMON_HOST = "127.0.77.1"
ECHO_HOST = "127.0.77.2"
LOADGEN_HOST = "127.0.77.9"
HELPER_NET = "127.0.78."
CLIENT_NET = "127.0.79."
"""Sources of the announces and puts that fill the daemon's storage (one IP per stored peer)."""
BUCKET_FILL = 8
"""Helpers per routing-table bucket (k)."""
DEFAULT_HELPERS = 13 * BUCKET_FILL
INFO_HASHES = 64
IMMUTABLE_ITEMS = 96
MUTABLE_ITEMS = 32
MAX_CLIENT_IPS = 50
"""Distinct source IPs used to store peers and items (50 = one full get_peers reply of peers)."""
REQUEST_TIMEOUT = 2.0
STARTUP_TIMEOUT = 30.0
SHARE_REQUIRED = 0.40
"""Must-show 3: kadnode answers at least this share of the stock-asyncio echo ceiling."""
RSS_FLAT_BYTES = 4 << 20
RSS_FLAT_SHARE = 0.05
"""RSS counts as flat when it grows by less than both of these over the whole measured window (first
sample to last) and over its second half (a leak shows there too, after any warm-up growth)."""
PROFILE_SECONDS = 15.0
SAMPLE_INTERVAL = 1.0
"""Seconds between /proc readings of the server and the load generator."""


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------- /proc sampling


@dataclass(frozen=True, slots=True)
class ProcSample:
    at: float
    """time.monotonic() when read; seconds since the measured window began once summarised."""
    cpu_seconds: float
    rss_bytes: int


def read_proc(pid: int) -> tuple[float, int] | None:
    """(user+system CPU seconds, resident set size in bytes) of a live process, else None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # the command name may contain spaces
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks  # utime, stime: fields 14 and 15 of stat
    rss = 0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) * 1024
            break
    return cpu, rss


@dataclass(slots=True)
class ServerUsage:
    """What /proc said about a process during the measured window."""

    cpu: float | None = None
    """CPU seconds per wall second (1.0 = one core busy)."""
    rss_start: int | None = None
    rss_middle: int | None = None
    rss_end: int | None = None
    rss_max: int | None = None
    rss_growth: int | None = None
    rss_growth_second_half: int | None = None
    rss_flat: bool | None = None
    samples: list[ProcSample] = field(default_factory=list)

    @classmethod
    def from_samples(cls, samples: list[ProcSample], start: float, end: float) -> ServerUsage:
        slack = SAMPLE_INTERVAL / 2
        inside = [
            ProcSample(round(s.at - start, 3), s.cpu_seconds, s.rss_bytes)
            for s in samples
            if start - slack <= s.at <= end + slack
        ]
        usage = cls(samples=inside)
        if len(inside) < 2:
            return usage
        first, last = inside[0], inside[-1]
        usage.cpu = round((last.cpu_seconds - first.cpu_seconds) / (last.at - first.at), 3)
        middle = min(inside, key=lambda s: abs(s.at - (first.at + last.at) / 2))
        usage.rss_start, usage.rss_middle, usage.rss_end = first.rss_bytes, middle.rss_bytes, last.rss_bytes
        usage.rss_max = max(s.rss_bytes for s in inside)
        usage.rss_growth = last.rss_bytes - first.rss_bytes
        usage.rss_growth_second_half = last.rss_bytes - middle.rss_bytes

        def flat(growth: int, base: int) -> bool:
            return growth < RSS_FLAT_BYTES and growth < RSS_FLAT_SHARE * base

        usage.rss_flat = flat(usage.rss_growth, first.rss_bytes) and flat(
            usage.rss_growth_second_half, middle.rss_bytes
        )
        return usage


# ---------------------------------------------------------------------- populating the daemon


def helper_ids(own_id: int, count: int, rng: random.Random) -> list[int]:
    """IDs that land `BUCKET_FILL` per bucket of a table around `own_id`: bucket i holds IDs sharing
    exactly i leading bits with it (the table splits only its own bucket, so each fills to k)."""
    ids: list[int] = []
    for n in range(count):
        shared = n // BUCKET_FILL
        flip = 159 - shared
        high = (own_id >> (flip + 1)) << (flip + 1)
        bit = ((own_id >> flip) & 1 ^ 1) << flip
        ids.append(high | bit | rng.getrandbits(flip))
    return ids


class KrpcClient:
    """Blocking request/response over one UDP socket, for setting the daemon up (not for load)."""

    def __init__(self, host: str, rng: random.Random) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.settimeout(REQUEST_TIMEOUT)
        self.rng = rng
        self.node_id = rng.randbytes(20)

    def close(self) -> None:
        self.sock.close()

    def request(self, dest: Addr, body: QueryBody, attempts: int = 3) -> Response:
        for _ in range(attempts):
            tid = self.rng.randbytes(4)
            self.sock.sendto(encode_message(Query(tid, self.node_id, body)), dest)
            deadline = time.monotonic() + REQUEST_TIMEOUT
            while time.monotonic() < deadline:
                try:
                    data, _ = self.sock.recvfrom(4096)
                except TimeoutError:
                    break
                try:
                    message = decode_message(data)
                except KrpcError:
                    continue
                if message.tid != tid:
                    continue
                if isinstance(message, Response):
                    return message
                raise RuntimeError(f"{type(body).__name__} refused: {message}")
        raise TimeoutError(f"no answer to {type(body).__name__} from {dest[0]}:{dest[1]}")

    def token(self, dest: Addr, body: QueryBody) -> bytes:
        token = response_token(self.request(dest, body))
        if token is None:
            raise RuntimeError("no write token in the reply")
        return token


@dataclass(slots=True)
class Population:
    helpers: int = 0
    routing_table_nodes: int = 0
    info_hashes: int = 0
    peers: int = 0
    items: int = 0
    item_bytes: int = 0


def populate_storage(daemon: Addr, rng: random.Random, info_hashes: int, items: int) -> Stored:
    """Announce peers for `info_hashes` info hashes and put `items` BEP 44 items (3/4 immutable)."""
    clients = [KrpcClient(f"{CLIENT_NET}{n + 1}", random.Random(rng.getrandbits(64))) for n in range(MAX_CLIENT_IPS)]
    try:
        hashes = [rng.randbytes(20) for _ in range(info_hashes)]
        for n, info_hash in enumerate(hashes):
            # A quarter are popular (a full reply of peers); the rest have a few.
            count = MAX_CLIENT_IPS if n % 4 == 0 else rng.randint(1, 12)
            for client in clients[:count]:
                token = client.token(daemon, GetPeers(info_hash))
                client.request(daemon, AnnouncePeer(info_hash, rng.randint(1024, 65535), token))
        targets: list[bytes] = []
        immutable = items - items // 4
        for n in range(items):
            client = clients[n % len(clients)]
            size = rng.choice((16, 64, 200, 500, 900))
            value = bencode(rng.randbytes(size))
            if n < immutable:
                target = immutable_target(value)
                token = client.token(daemon, Get(target))
                client.request(daemon, Put(token, value))
            else:
                key = SigningKey(rng.randbytes(32))
                salt = b"" if n % 2 else b"salt-%d" % n
                item = make_mutable(key, value, seq=rng.randint(1, 1000), salt=salt)
                target = item.target
                token = client.token(daemon, Get(target))
                client.request(daemon, Put(token, value, item.public_key, item.salt, item.seq, item.signature))
            targets.append(target)
        return Stored(tuple(hashes), tuple(targets))
    finally:
        for client in clients:
            client.close()


# ---------------------------------------------------------------------- processes


def daemon_codec(cwd: Path) -> str:
    """"compiled" when the daemon's bencode module (as `python -m kadnode` finds it from `cwd`) is the
    mypyc build `pip install .` makes, else "pure Python"."""
    found = subprocess.run(
        [sys.executable, "-c", "import kadnode.wire.bencode as b; print(b.__file__)"],
        cwd=cwd, capture_output=True, text=True, check=False,
    )  # fmt: skip
    return "compiled" if found.stdout.strip().endswith(".so") else "pure Python"


class Daemon:
    """One `kadnode run` subprocess with its own TOML config and data dir."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.data_dir = workdir / "daemon"
        self.config = workdir / "kadnode.toml"
        self.log_path = workdir / "daemon.log"
        self.proc: asyncio.subprocess.Process | None = None
        self.client = ControlClient(self.data_dir / "control.sock", timeout=10.0)
        self.addr: Addr = (DAEMON_HOST, 0)
        self.node_id = 0

    async def start(self) -> None:
        self.config.write_text(
            f'host = "{DAEMON_HOST}"\nport = 0\ndata_dir = "{self.data_dir}"\nlog_level = "warning"\n'
            "\n[settings]\n# The load comes from one IP: the per-IP limit (50/s by default) would block it.\n"
            "rate_limit_per_second = 0\n"
        )
        with self.log_path.open("ab") as out:
            # Started outside the checkout, so that `-m kadnode` is the installed package (compiled by
            # `pip install .`; an editable install is the source tree either way).
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "kadnode", "run", "--config", str(self.config),
                stdout=out, stderr=asyncio.subprocess.STDOUT, cwd=self.workdir,
            )  # fmt: skip
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            if self.proc.returncode is not None:
                raise RuntimeError(f"kadnode run exited with {self.proc.returncode}: {self.log_path.read_text()}")
            try:
                status = await self.call("status")
                break
            except ClientError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"kadnode run did not come up: {self.log_path.read_text()}") from None
                await asyncio.sleep(0.1)
        host, port = str(status["addr"]).rsplit(":", 1)
        self.addr = (host, int(port))
        self.node_id = int(status["node_id"], 16)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def call(self, cmd: str, **args: Any) -> Any:
        return await asyncio.to_thread(self.client.call, cmd, **args)

    async def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 20)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        return self.proc.returncode


class EchoServer:
    """`bench.echo_server` in a subprocess."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        """"stock", "uvloop" or "lean" (see bench.echo_server)."""
        self.proc: asyncio.subprocess.Process | None = None
        self.addr: Addr = (ECHO_HOST, 0)

    async def start(self) -> None:
        args = [sys.executable, "-m", "bench.echo_server", "--host", ECHO_HOST, "--port", "0"]
        if self.mode != "stock":
            args.append(f"--{self.mode}")
        self.proc = await asyncio.create_subprocess_exec(*args, stdout=asyncio.subprocess.PIPE)
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), STARTUP_TIMEOUT)
        parts = line.decode().split()
        if len(parts) != 3 or parts[0] != "ready":
            raise RuntimeError(f"echo server did not start: {line!r}")
        self.addr = (parts[1], int(parts[2]))

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


@dataclass(frozen=True, slots=True)
class LoadOptions:
    seconds: float
    inflight: int
    timeout: float
    warmup: float
    seed: int


async def measure(
    name: str, target: Addr, server_pid: int, options: LoadOptions, *, echo: bool, stored_file: Path | None
) -> dict[str, Any]:
    """Run the load generator against `target` while sampling the server's and its own /proc."""
    args = [
        sys.executable, "-m", "bench.loadgen", "--target", f"{target[0]}:{target[1]}",
        "--seconds", str(options.seconds), "--inflight", str(options.inflight),
        "--timeout", str(options.timeout), "--warmup", str(options.warmup), "--bind", LOADGEN_HOST,
        "--seed", str(options.seed),
    ]  # fmt: skip
    if echo:
        args.append("--echo")
    if stored_file is not None:
        args += ["--stored", str(stored_file)]
    log(f"{name}: {options.inflight} in flight for {options.warmup:g} s warm-up + {options.seconds:g} s")
    proc = await asyncio.create_subprocess_exec(*args, stdout=asyncio.subprocess.PIPE)
    server_samples: list[ProcSample] = []
    loadgen_samples: list[ProcSample] = []

    async def sample() -> None:
        while True:
            at = time.monotonic()
            for pid, samples in ((server_pid, server_samples), (proc.pid, loadgen_samples)):
                reading = read_proc(pid)
                if reading is not None:
                    samples.append(ProcSample(at, reading[0], reading[1]))
            await asyncio.sleep(SAMPLE_INTERVAL)

    sampler = asyncio.create_task(sample())
    try:
        out, _ = await proc.communicate()
    finally:
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler
    if proc.returncode != 0:
        raise RuntimeError(f"the load generator failed ({proc.returncode}) against {name}")
    result: dict[str, Any] = json.loads(out)
    window = result["window_monotonic"]
    result["server"] = asdict(ServerUsage.from_samples(server_samples, window[0], window[1]))
    result["loadgen_process"] = asdict(ServerUsage.from_samples(loadgen_samples, window[0], window[1]))
    log(f"{name}: {result['qps']:,.0f} answered/s, loss {result['loss']:.3%}, p99 {result['p99_ms']} ms")
    return result


# ---------------------------------------------------------------------- profiling


async def profile_daemon(pid: int, out_dir: Path, seconds: float) -> dict[str, Any]:
    """py-spy the daemon for `seconds` (it must be under load meanwhile); top functions by own time."""
    py_spy = shutil.which("py-spy")
    if py_spy is None:
        return {"error": "py-spy is not installed (pip install py-spy)"}
    out_dir.mkdir(parents=True, exist_ok=True)
    raw = out_dir / "kadnode-daemon.pyspy.txt"
    proc = await asyncio.create_subprocess_exec(
        py_spy, "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", "250",
        "--nonblocking", "--format", "raw", "--output", str(raw),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await proc.communicate()
    if proc.returncode != 0 or not raw.exists():
        return {"error": f"py-spy failed: {err.decode(errors='replace')[-500:]}"}
    return {"file": str(raw), **summarize_collapsed(raw.read_text())}


def _function(frame: str) -> str:
    """py-spy names a frame "func (file:line)"; a function's share is the sum over its lines."""
    return _LINE_NUMBER.sub(")", frame)


_LINE_NUMBER = re.compile(r":\d+\)$")


def summarize_collapsed(text: str, top: int = 25) -> dict[str, Any]:
    """Sample shares from py-spy's collapsed stacks: per function own ("self") time, per line own time,
    and inclusive time of kadnode's own functions (the event loop and click frames would top that list
    without saying anything)."""
    own: Counter[str] = Counter()
    own_lines: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in text.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [frame.strip() for frame in stack.split(";") if frame.strip()]
        if not frames:
            continue
        total += count
        own[_function(frames[-1])] += count
        own_lines[frames[-1]] += count
        for function in {_function(frame) for frame in frames}:
            if "kadnode/" in function:
                inclusive[function] += count

    def rows(counter: Counter[str]) -> list[dict[str, Any]]:
        return [{"function": f, "share": round(c / total, 4)} for f, c in counter.most_common(top)]

    if not total:
        return {"samples": 0}
    return {"samples": total, "own": rows(own), "own_lines": rows(own_lines), "inclusive": rows(inclusive)}


# ---------------------------------------------------------------------- the run


async def run_benchmark(
    options: LoadOptions,
    *,
    helpers: int = DEFAULT_HELPERS,
    info_hashes: int = INFO_HASHES,
    items: int = IMMUTABLE_ITEMS + MUTABLE_ITEMS,
    with_uvloop: bool = True,
    profile_dir: Path | None = None,
) -> dict[str, Any]:
    rng = random.Random(options.seed)
    report: dict[str, Any] = {
        "benchmark": "throughput",
        "options": asdict(options),
        "environment": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "loadavg_start": os.getloadavg(),
        },
        "phases": {},
    }
    workdir = Path(tempfile.mkdtemp(prefix="kadnode-throughput-"))
    daemon = Daemon(workdir)
    helper_nodes: list[Node] = []
    try:
        await daemon.start()
        report["environment"]["daemon_rate_limit_per_second"] = 0
        report["environment"]["daemon_codec"] = daemon_codec(workdir)
        log(f"daemon {daemon.node_id:040x} on {daemon.addr[0]}:{daemon.addr[1]} (pid {daemon.pid})")
        for n, node_id in enumerate(helper_ids(daemon.node_id, helpers, rng)):
            node = Node(f"{HELPER_NET}{n + 1}", 0, node_id=node_id)
            await node.start()
            helper_nodes.append(node)
        # The daemon pings each helper itself: they enter its table as nodes that answered (good).
        await asyncio.gather(*(daemon.call("ping", host=node.addr[0], port=node.addr[1]) for node in helper_nodes))
        stored = await asyncio.to_thread(populate_storage, daemon.addr, rng, info_hashes, items)
        stored_file = workdir / "stored.json"
        stored_file.write_text(json.dumps(stored.to_json()))
        status = await daemon.call("status")
        storage = status["storage"]
        population = Population(
            helpers=helpers,
            routing_table_nodes=status["routing_table"]["nodes"],
            info_hashes=storage["info_hashes"],
            peers=storage["peers"],
            items=storage["items"],
            item_bytes=storage["item_bytes"],
        )
        report["population"] = asdict(population)
        log(
            f"daemon holds {population.routing_table_nodes} nodes, {population.peers} peers for "
            f"{population.info_hashes} info hashes, {population.items} items"
        )

        profiling: asyncio.Task[dict[str, Any]] | None = None
        if profile_dir is not None:
            delay = options.warmup + 2.0

            async def delayed_profile() -> dict[str, Any]:
                await asyncio.sleep(delay)
                return await profile_daemon(daemon.pid, profile_dir, min(PROFILE_SECONDS, options.seconds - 2))

            profiling = asyncio.create_task(delayed_profile())
        kadnode = await measure("kadnode", daemon.addr, daemon.pid, options, echo=False, stored_file=stored_file)
        kadnode["daemon_status_after"] = await daemon.call("status")
        report["phases"]["kadnode"] = kadnode
        if profiling is not None:
            report["profile"] = await profiling

        variants = [("echo-asyncio", "stock"), ("echo-lean", "lean")]
        if with_uvloop and uvloop_factory() is not None:
            variants.append(("echo-uvloop", "uvloop"))
        for name, mode in variants:
            echo = EchoServer(mode)
            await echo.start()
            try:
                report["phases"][name] = await measure(name, echo.addr, echo.pid, options, echo=True, stored_file=None)
            finally:
                await echo.stop()
    finally:
        for node in helper_nodes:
            await node.stop()
        report["daemon_exit_code"] = await daemon.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    report["environment"]["loadavg_end"] = os.getloadavg()
    if not with_uvloop or uvloop_factory() is None:
        report["environment"]["uvloop"] = None
    else:
        report["environment"]["uvloop"] = _uvloop_version()
    ceiling = report["phases"]["echo-asyncio"]["qps"]
    share = report["phases"]["kadnode"]["qps"] / ceiling if ceiling else 0.0
    report["share_of_asyncio_echo"] = round(share, 4)
    lean = report["phases"]["echo-lean"]["qps"]
    report["share_of_lean_echo"] = round(report["phases"]["kadnode"]["qps"] / lean, 4) if lean else None
    for phase in report["phases"].values():
        cpu = phase["server"]["cpu"]
        phase["answered_per_cpu_second"] = round(phase["qps"] / cpu, 1) if cpu else None
    ceiling_per_cpu = report["phases"]["echo-asyncio"]["answered_per_cpu_second"]
    kadnode_per_cpu = report["phases"]["kadnode"]["answered_per_cpu_second"]
    report["share_of_asyncio_echo_per_cpu_second"] = (
        round(kadnode_per_cpu / ceiling_per_cpu, 4) if kadnode_per_cpu and ceiling_per_cpu else None
    )
    report["must_show"] = {
        "share_at_least_40_percent": share >= SHARE_REQUIRED,
        "rss_flat": bool(report["phases"]["kadnode"]["server"]["rss_flat"]),
    }
    return report


def _uvloop_version() -> str | None:
    try:
        import importlib.metadata

        return importlib.metadata.version("uvloop")
    except Exception:
        return None


# ---------------------------------------------------------------------- the report


def _mib(value: int | None) -> str:
    return "-" if value is None else f"{value / (1 << 20):.1f}"


def _num(value: float | None, fmt: str = ".2f") -> str:
    return "-" if value is None else format(value, fmt)


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.rjust(w) if i else h.ljust(w) for i, (h, w) in enumerate(zip(headers, widths, strict=True)))]
    lines.append("  ".join("-" * w for w in widths))
    for row in rows:
        lines.append(
            "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))
        )
    return "\n".join(lines)


def format_report(report: dict[str, Any]) -> str:
    phases: dict[str, dict[str, Any]] = report["phases"]
    options = report["options"]
    ceiling = phases["echo-asyncio"]["qps"]
    rows = []
    for name, phase in phases.items():
        server = phase["server"]
        rows.append([
            name,
            f"{phase['qps']:,.0f}",
            f"{phase['qps'] / ceiling:.0%}" if ceiling else "-",
            f"{phase['loss']:.3%}",
            _num(phase["p50_ms"], ".3f"),
            _num(phase["p99_ms"], ".3f"),
            _num(server["cpu"]),
            _num(phase["answered_per_cpu_second"], ",.0f"),
            _num(phase["loadgen_process"]["cpu"]),
            f"{_mib(server['rss_start'])} / {_mib(server['rss_middle'])} / {_mib(server['rss_end'])}",
        ])  # fmt: skip
    out = [
        f"throughput: {options['inflight']} queries in flight, {options['seconds']:g} s per server "
        f"(after {options['warmup']:g} s warm-up), loss = unanswered within {options['timeout']:g} s",
        "",
        format_table(
            [
                "server",
                "answered/s",
                "of echo",
                "loss",
                "p50 ms",
                "p99 ms",
                "server CPU",
                "per CPU-s",
                "loadgen CPU",
                "RSS MiB start/mid/end",
            ],
            rows,
        ),
    ]
    kadnode = phases["kadnode"]
    method_rows = [
        [
            name,
            f"{m['answered']:,}",
            _num(m["p50_ms"], ".3f"),
            _num(m["p99_ms"], ".3f"),
            _num(m["mean_reply_bytes"], ".0f"),
        ]
        for name, m in kadnode["per_method"].items()
    ]
    out += [
        "",
        "kadnode by query:",
        format_table(["query", "answered", "p50 ms", "p99 ms", "reply bytes"], method_rows),
    ]
    population = report["population"]
    out += [
        "",
        f"daemon state: {population['routing_table_nodes']} nodes in its table, {population['peers']} peers "
        f"for {population['info_hashes']} info hashes, {population['items']} BEP 44 items; "
        "rate limit off ([settings] rate_limit_per_second = 0: the load comes from one IP)",
    ]
    server = kadnode["server"]
    share = report["share_of_asyncio_echo"]
    out.append(
        f"kadnode answers {share:.1%} of the stock-asyncio echo ceiling "
        f"({'meets' if share >= SHARE_REQUIRED else 'BELOW'} the 40% must-show)"
    )
    per_cpu = report["share_of_asyncio_echo_per_cpu_second"]
    if per_cpu is not None:
        out.append(f"per server CPU-second (answered/s divided by the server's CPU use) the share is {per_cpu:.1%}")
    lean_share = report.get("share_of_lean_echo")
    if lean_share is not None:
        out.append(
            f"of the lean echo (kadnode's own read path, nothing else) kadnode answers {lean_share:.1%}: "
            "the rest is the cost of its protocol work"
        )
    if kadnode["per_second"]:
        rates = sorted(kadnode["per_second"])
        out.append(
            f"kadnode answered per second over the run: min {rates[0]:,}, median {rates[len(rates) // 2]:,}, "
            f"max {rates[-1]:,}"
        )
    if server["rss_start"] is not None:
        out.append(
            f"kadnode RSS over {options['seconds']:g} s: {_mib(server['rss_start'])} -> {_mib(server['rss_middle'])} "
            f"-> {_mib(server['rss_end'])} MiB (max {_mib(server['rss_max'])}; "
            f"{'flat' if server['rss_flat'] else 'GROWING'})"
        )
    env = report["environment"]
    out.append(f"daemon's bencode codec: {env.get('daemon_codec', 'unknown')} (`pip install .` compiles it)")
    out.append(
        f"machine: {env['cpus']} CPUs, load average {env['loadavg_start'][0]:.2f} at start and "
        f"{env['loadavg_end'][0]:.2f} at end (with other work running, rows measured minutes apart may see "
        "different contention)"
    )
    profile = report.get("profile")
    if profile and profile.get("own"):
        out += ["", f"daemon profile under load (py-spy, {profile['samples']} samples), own time:"]
        out += [f"  {row['share']:6.1%}  {row['function']}" for row in profile["own"][:15]]
        out += ["inclusive (kadnode functions):"]
        out += [f"  {row['share']:6.1%}  {row['function']}" for row in profile["inclusive"][:20]]
        out += ["own time by line:"]
        out += [f"  {row['share']:6.1%}  {row['function']}" for row in profile["own_lines"][:15]]
    elif profile:
        out += ["", f"profile: {profile.get('error')}"]
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.throughput", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="measured seconds per server")
    parser.add_argument("--inflight", type=int, default=32, help="queries the load generator keeps in flight")
    parser.add_argument("--timeout", type=float, default=1.0, help="a query unanswered this long is lost")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of load before measuring")
    parser.add_argument("--helpers", type=int, default=DEFAULT_HELPERS, help="nodes put in the daemon's table")
    parser.add_argument("--info-hashes", type=int, default=INFO_HASHES, help="info hashes with stored peers")
    parser.add_argument("--items", type=int, default=IMMUTABLE_ITEMS + MUTABLE_ITEMS, help="BEP 44 items stored")
    parser.add_argument("--no-uvloop", action="store_true", help="skip the uvloop echo server")
    parser.add_argument("--profile", type=Path, metavar="DIR", help="py-spy the daemon under load into DIR")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, help="write the full results here")
    args = parser.parse_args(argv)
    options = LoadOptions(args.seconds, args.inflight, args.timeout, args.warmup, args.seed)
    report = asyncio.run(
        run_benchmark(
            options,
            helpers=args.helpers,
            info_hashes=args.info_hashes,
            items=args.items,
            with_uvloop=not args.no_uvloop,
            profile_dir=args.profile,
        )
    )
    print(format_report(report))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1, default=str) + "\n")
        log(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
