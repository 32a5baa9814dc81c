"""Shared pieces of the benchmarks: loopback addresses, latency summaries, progress, and the packet filter.

The packet filter is what makes the scenarios equal for every implementation: inside a network namespace
the benchmark creates for itself, iptables counts every datagram delivered on loopback, silences killed
nodes (no ICMP, no goodbye gets through, as with a crashed host) and drops a random share of datagrams.
Nothing here touches the host's own network configuration.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

NETNS_ENV = "KADBENCH_NETNS"
"""Set (to the namespace's name) in the environment of a benchmark re-executed inside its namespace."""
COUNT_COMMENT = "kadbench-count"
LOSS_COMMENT = "kadbench-loss"
KILL_COMMENT = "kadbench-kill"


def log(message: str) -> None:
    """Progress goes to stderr, so that stdout carries only the report (or a worker's JSON)."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def loopback_addresses(count: int, rng: random.Random) -> list[str]:
    """`count` distinct addresses 127.0.x.y (x, y in 1..254), never 127.0.0.1, in random order."""
    if count > 254 * 254:
        raise ValueError(f"at most {254 * 254} loopback addresses, asked for {count}")
    chosen: set[str] = set()
    while len(chosen) < count:
        chosen.add(f"127.0.{rng.randint(1, 254)}.{rng.randint(1, 254)}")
    out = sorted(chosen)
    rng.shuffle(out)
    return out


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty sequence: a value that was measured."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def distribution(values: Sequence[float]) -> dict[str, float]:
    """Mean, p50, p99 and max of `values` (all 0.0 when there are none)."""
    if not values:
        return {"mean": 0.0, "p50": 0.0, "p99": 0.0, "max": 0.0}
    return {
        "mean": sum(values) / len(values),
        "p50": percentile(values, 50),
        "p99": percentile(values, 99),
        "max": max(values),
    }


def progress_logger(label: str, total: int) -> Callable[[int], None]:
    """A callback logging about every tenth of `total` to stderr."""
    step = max(1, total // 10)
    state = {"done": 0, "next": step}

    def advance(increment: int) -> None:
        state["done"] += increment
        if state["done"] >= state["next"] or state["done"] == total:
            log(f"  {label}: {state['done']:,}/{total:,}")
            state["next"] = state["done"] + step

    return advance


@dataclass(frozen=True, slots=True)
class OpSample:
    """One operation: whether it succeeded and how long it took (capped at the timeout when it did not end)."""

    ok: bool
    seconds: float


@dataclass(frozen=True, slots=True)
class PhaseSummary:
    """Latency and cost of one round of operations. Latencies are of all operations, failed ones included
    (a failure counts with its elapsed time, at most the per-operation timeout)."""

    phase: str
    ops: int
    succeeded: int
    success_rate: float
    median_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    ok_median_ms: float
    datagrams_per_op: float | None
    wall_seconds: float

    def to_json(self) -> dict[str, Any]:
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in asdict(self).items()}


def summarize(phase: str, samples: Sequence[OpSample], datagrams: int | None, wall: float) -> PhaseSummary:
    ops = len(samples)
    times = [s.seconds * 1000 for s in samples]
    ok_times = [s.seconds * 1000 for s in samples if s.ok]
    succeeded = len(ok_times)
    return PhaseSummary(
        phase=phase,
        ops=ops,
        succeeded=succeeded,
        success_rate=succeeded / ops if ops else math.nan,
        median_ms=percentile(times, 50),
        p90_ms=percentile(times, 90),
        p99_ms=percentile(times, 99),
        mean_ms=sum(times) / ops if ops else math.nan,
        ok_median_ms=percentile(ok_times, 50),
        datagrams_per_op=(datagrams / ops) if datagrams is not None and ops else None,
        wall_seconds=round(wall, 3),
    )


# ---------------------------------------------------------------------- network namespace and iptables


def netns_tools_available() -> str | None:
    """None when `ip netns` and iptables can be used here; otherwise why not."""
    if os.geteuid() != 0:
        return "not root: cannot create a network namespace"
    for tool in ("ip", "iptables"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    return None


def reexec_in_netns(argv: Sequence[str]) -> int:
    """Create a fresh namespace, bring its loopback up, run `python argv` inside it, delete it. Returns the
    child's exit status. The namespace has only `lo`: nothing the benchmark sends can leave the machine."""
    name = f"kadbench-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"], check=True)
        env = dict(os.environ, **{NETNS_ENV: name})
        cmd = ["ip", "netns", "exec", name, sys.executable, *argv]
        return subprocess.run(cmd, env=env).returncode
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def in_benchmark_netns() -> bool:
    return bool(os.environ.get(NETNS_ENV))


class PacketFilter:
    """iptables in the benchmark's own namespace. A no-op (with `available` False) outside one: we never
    change the filter rules of the host's namespace."""

    def __init__(self) -> None:
        self.available = in_benchmark_netns() and shutil.which("iptables") is not None
        self._killed: list[str] = []

    def _run(self, *args: str) -> str:
        done = subprocess.run(["iptables", "-w", *args], check=True, capture_output=True, text=True)
        return done.stdout

    def reset(self) -> None:
        """Flush INPUT and put the accounting rule first: it counts every UDP datagram delivered."""
        if not self.available:
            return
        self._run("-F", "INPUT")
        self._run("-A", "INPUT", "-p", "udp", "-m", "comment", "--comment", COUNT_COMMENT)
        self._killed = []

    def count(self) -> int | None:
        """UDP datagrams sent to any address in the namespace since `reset()` (dropped ones included)."""
        if not self.available:
            return None
        listing = self._run("-n", "-v", "-x", "-L", "INPUT")
        for line in listing.splitlines():
            if COUNT_COMMENT in line:
                return int(line.split()[0])
        return None

    def silence(self, ips: Sequence[str]) -> None:
        """Drop every datagram to or from these addresses: to the rest of the network they are a crashed
        host (no ICMP port-unreachable, and nothing they might still send arrives)."""
        if not self.available or not ips:
            return
        rules = ["*filter"]
        for ip in ips:
            rules.append(f"-A INPUT -d {ip}/32 -m comment --comment {KILL_COMMENT} -j DROP")
            rules.append(f"-A INPUT -s {ip}/32 -m comment --comment {KILL_COMMENT} -j DROP")
        rules.append("COMMIT")
        subprocess.run(["iptables-restore", "-w", "--noflush"], input="\n".join(rules) + "\n", text=True, check=True)
        self._killed.extend(ips)

    def set_loss(self, probability: float) -> None:
        """Drop each delivered UDP datagram with `probability` (0 removes the rule)."""
        if not self.available:
            return
        listing = self._run("-n", "--line-numbers", "-L", "INPUT")
        for line in reversed(listing.splitlines()):
            if LOSS_COMMENT in line:
                self._run("-D", "INPUT", line.split()[0])
        if probability > 0:
            self._run(
                "-A", "INPUT", "-p", "udp", "-m", "statistic", "--mode", "random",
                "--probability", f"{probability:.6f}", "-m", "comment", "--comment", LOSS_COMMENT, "-j", "DROP",
            )  # fmt: skip

    def dropped_by_loss(self) -> int | None:
        if not self.available:
            return None
        listing = self._run("-n", "-v", "-x", "-L", "INPUT")
        total = 0
        for line in listing.splitlines():
            if LOSS_COMMENT in line:
                total += int(line.split()[0])
        return total


def run_json_worker(
    module: str, worker_args: Sequence[str], timeout: float, failure: dict[str, Any]
) -> dict[str, Any]:
    """Run `python -m module --worker-out FILE *worker_args` from the checkout root (in a process of its
    own: its threads, memory and leftovers go with it) and return the JSON it wrote there, with
    `worker_seconds`; on a non-zero exit or a timeout, `failure` with an "error"."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
        out_path = handle.name
    root = str(Path(__file__).resolve().parent.parent)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
    cmd = [sys.executable, "-m", module, "--worker-out", out_path, *worker_args]
    started = time.perf_counter()
    try:
        done = subprocess.run(cmd, timeout=timeout, cwd=root, env=env)
        if done.returncode != 0:
            return {**failure, "error": f"worker exited with status {done.returncode}"}
        with open(out_path) as handle:
            result: dict[str, Any] = json.load(handle)
        result["worker_seconds"] = round(time.perf_counter() - started, 1)
        return result
    except subprocess.TimeoutExpired:
        return {**failure, "error": f"worker did not finish within {timeout:g} s"}
    finally:
        os.unlink(out_path)


def free_port(host: str = "127.0.0.1") -> int:
    """A port free for both UDP and TCP on `host`: kadnode and libtorrent listen on both with one number."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((host, 0))
            port = int(udp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind((host, port))
                except OSError:
                    continue
                return port
    raise OSError(f"no port free for both UDP and TCP on {host}")
