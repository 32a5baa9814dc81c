"""A closed-loop UDP load generator for KRPC servers: keeps `inflight` queries outstanding, one socket.

Run it in its own process (the server under test gets the other core):

    python -m bench.loadgen --target 127.0.0.2:6881 --seconds 10 --inflight 32 [--echo] [--stored F]

It prints one JSON object (see `LoadResult`) on stdout.

Why it is built this way: at tens of thousands of queries per second a Python load generator is itself
close to saturating a core, so the hot loop does as little as possible. Queries are encoded once, up
front, with `encode_message`; only the 4-byte random transaction id is spliced in per send. A reply is
matched by finding its `t` (the last ``1:t4:`` in the datagram: every key after `t` — `v`, `y` — has a
fixed-size value, so a match can never start inside the tid) instead of decoding it; a sample of
replies is fully decoded to check that they are real, well-formed answers. An echo server returns the
query itself, which matches the same way, so both are measured by the same code.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import select
import socket
import sys
import time
from array import array
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kadnode.types import Addr
from kadnode.wire.krpc import (
    FindNode,
    Get,
    GetPeers,
    KrpcError,
    Ping,
    Query,
    QueryBody,
    Response,
    decode_message,
    encode_message,
)

METHODS = ("ping", "find_node", "get_peers", "get")
"""The query mix, in equal shares."""
STORED_SHARE = 0.5
"""Share of get_peers/get queries that ask for something the server stores (the rest ask at random)."""
TID_LEN = 4
TID_SENTINEL = b"\xfe\xed\xfa\xce"
POOL_SIZE = 4096
"""Distinct pre-encoded queries, cycled through."""
SWEEP_INTERVAL = 0.02
"""Seconds between checks for queries that have timed out."""
VALIDATE_EVERY = 256
"""Every n-th reply is fully decoded and checked."""
CLIENT_VERSION = b"LG\x00\x01"
RECV_SIZE = 4096


@dataclass(frozen=True, slots=True)
class Template:
    """One pre-encoded query split around its transaction id."""

    method: int
    """Index into METHODS."""
    prefix: bytes
    suffix: bytes
    stored: bool
    """It asks for a key the server stores (get_peers/get)."""


@dataclass(frozen=True, slots=True)
class Stored:
    """Keys the server under test stores, so that some answers carry peers and items."""

    info_hashes: tuple[bytes, ...] = ()
    targets: tuple[bytes, ...] = ()

    def to_json(self) -> dict[str, list[str]]:
        return {"info_hashes": [h.hex() for h in self.info_hashes], "targets": [t.hex() for t in self.targets]}

    @classmethod
    def from_json(cls, data: dict[str, list[str]]) -> Stored:
        return cls(
            tuple(bytes.fromhex(h) for h in data.get("info_hashes", [])),
            tuple(bytes.fromhex(t) for t in data.get("targets", [])),
        )


def _split(method: int, body: QueryBody, sender_id: bytes, stored: bool) -> Template:
    data = encode_message(Query(TID_SENTINEL, sender_id, body, version=CLIENT_VERSION))
    marker = b"1:t%d:%s" % (TID_LEN, TID_SENTINEL)
    pos = data.rindex(marker) + len(marker) - TID_LEN
    return Template(method, data[:pos], data[pos + TID_LEN :], stored)


def build_templates(rng: random.Random, sender_id: bytes, stored: Stored, size: int = POOL_SIZE) -> list[Template]:
    """`size` queries in the METHODS mix, in random order."""
    templates: list[Template] = []
    for n in range(size):
        method = n % len(METHODS)
        name = METHODS[method]
        key = rng.randbytes(20)
        hit = False
        if name == "get_peers" and stored.info_hashes and rng.random() < STORED_SHARE:
            key, hit = rng.choice(stored.info_hashes), True
        elif name == "get" and stored.targets and rng.random() < STORED_SHARE:
            key, hit = rng.choice(stored.targets), True
        body: QueryBody
        if name == "ping":
            body = Ping()
        elif name == "find_node":
            body = FindNode(key)
        elif name == "get_peers":
            body = GetPeers(key)
        else:
            body = Get(key)
        templates.append(_split(method, body, sender_id, hit))
    rng.shuffle(templates)
    return templates


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile of already sorted values (None when empty)."""
    if not sorted_values:
        return None
    rank = min(len(sorted_values), max(1, math.ceil(q / 100 * len(sorted_values)))) - 1
    return sorted_values[rank]


@dataclass(slots=True)
class MethodStats:
    answered: int = 0
    errors: int = 0
    reply_bytes: int = 0
    p50_ms: float | None = None
    p99_ms: float | None = None
    mean_reply_bytes: float | None = None


@dataclass(slots=True)
class LoadResult:
    """What one load run measured; counts cover the measured window only (after the warm-up)."""

    target: str
    mode: str
    seconds: float
    inflight: int
    timeout: float
    sent: int = 0
    answered: int = 0
    """Replies (KRPC responses, or echoes) to queries sent in the window, within the timeout."""
    errors: int = 0
    """KRPC error replies (counted in `answered` too: the server did answer)."""
    lost: int = 0
    """Queries sent in the window and not answered within the timeout."""
    late_or_unknown: int = 0
    """Datagrams whose tid matched nothing in flight (answers after the timeout, strays)."""
    invalid: int = 0
    """Sampled replies that did not decode as a KRPC response/error (or an echo of the query)."""
    validated: int = 0
    queries_answered: int = 0
    """Queries the server sent us (the daemon may ping a node that queried it); we answer them."""
    send_errors: int = 0
    qps: float = 0.0
    loss: float = 0.0
    p50_ms: float | None = None
    p90_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    per_second: list[int] = field(default_factory=list)
    per_method: dict[str, MethodStats] = field(default_factory=dict)
    loadgen_cpu: float = 0.0
    """CPU seconds used by this process per second of wall time in the window (1.0 = one core)."""
    window_monotonic: tuple[float, float] = (0.0, 0.0)
    """The measured window on `time.monotonic()` (system-wide on Linux: other processes can line up
    their own samples with it)."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class _Window:
    """Which phase a send or an arrival falls in: warm-up, measured, or drain."""

    __slots__ = ("end", "start")

    def __init__(self, start: float, end: float) -> None:
        self.start = start
        self.end = end


def run_load(
    target: Addr,
    templates: Sequence[Template],
    *,
    seconds: float,
    inflight: int = 32,
    timeout: float = 1.0,
    warmup: float = 1.0,
    echo: bool = False,
    bind_host: str = "127.0.0.1",
    seed: int | None = None,
) -> LoadResult:
    """Keep `inflight` queries outstanding towards `target` for `warmup` + `seconds`, then drain.

    A query is lost when no reply came within `timeout`; its slot is refilled with a new query.
    """
    if inflight < 1 or seconds <= 0 or not templates:
        raise ValueError("need inflight >= 1, seconds > 0 and at least one template")
    rng = random.Random(seed)
    getrandbits = rng.getrandbits
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    sock.bind((bind_host, 0))
    sock.setblocking(False)
    sendto = sock.sendto
    recvfrom = sock.recvfrom
    target = (target[0], target[1])
    result = LoadResult(f"{target[0]}:{target[1]}", "echo" if echo else "krpc", seconds, inflight, timeout)
    n_methods = len(METHODS)
    latencies = [array("d") for _ in range(n_methods)]
    answered = [0] * n_methods
    errors = [0] * n_methods
    reply_bytes = [0] * n_methods
    per_second = [0] * (int(seconds) + 1)
    pool_size = len(templates)
    pending: dict[bytes, tuple[float, Template]] = {}
    reply_tail = b"1:y1:qe" if echo else b"1:y1:re"
    marker = b"1:t%d:" % TID_LEN
    our_id = rng.randbytes(20)

    counter = 0
    now = time.perf_counter()
    window = _Window(now + warmup, now + warmup + seconds)
    to_monotonic = time.monotonic() - time.perf_counter()
    result.window_monotonic = (window.start + to_monotonic, window.end + to_monotonic)
    stop_sending = window.end
    drain_end = window.end + timeout
    next_sweep = now + SWEEP_INTERVAL
    cpu_start: float | None = None
    sent = lost = late = invalid = validated = send_errors = queries_answered = 0
    seen = 0

    try:
        while True:
            now = time.perf_counter()
            if now >= next_sweep:
                next_sweep = now + SWEEP_INTERVAL
                if cpu_start is None and now >= window.start:
                    times = os.times()
                    cpu_start = times.user + times.system
                oldest_allowed = now - timeout
                expired = [tid for tid, (sent_at, _) in pending.items() if sent_at < oldest_allowed]
                for tid in expired:
                    sent_at, _ = pending.pop(tid)
                    if window.start <= sent_at < window.end:
                        lost += 1
                if now >= drain_end or (now >= stop_sending and not pending):
                    break
            if now < stop_sending:
                while len(pending) < inflight:
                    tid = getrandbits(32).to_bytes(TID_LEN, "big")
                    if tid in pending:
                        continue
                    template = templates[counter % pool_size]
                    counter += 1
                    try:
                        sendto(template.prefix + tid + template.suffix, target)
                    except BlockingIOError:
                        send_errors += 1
                        break
                    pending[tid] = (now, template)
                    if now >= window.start:
                        sent += 1
            try:
                data, _source = recvfrom(RECV_SIZE)
            except BlockingIOError:
                select.select([sock], [], [], SWEEP_INTERVAL)
                continue
            except OSError:  # e.g. ICMP port unreachable reported on the socket
                send_errors += 1
                continue
            arrived = time.perf_counter()
            if not echo and data.endswith(b"1:y1:qe"):
                queries_answered += _answer_query(sock, data, target, our_id)
                continue
            pos = data.rfind(marker)
            entry = pending.pop(data[pos + 5 : pos + 5 + TID_LEN], None) if pos >= 0 else None
            if entry is None:
                late += 1
                continue
            sent_at, template = entry
            if not window.start <= sent_at < window.end:
                continue
            method = template.method
            is_error = not data.endswith(reply_tail)
            if is_error:
                errors[method] += 1
            seen += 1
            if seen % VALIDATE_EVERY == 0:
                validated += 1
                if not _valid_reply(data, template, echo):
                    invalid += 1
            answered[method] += 1
            reply_bytes[method] += len(data)
            latencies[method].append(arrived - sent_at)
            second = int(arrived - window.start)
            if 0 <= second < len(per_second):
                per_second[second] += 1
    finally:
        sock.close()
    times = os.times()
    cpu_used = times.user + times.system - (cpu_start if cpu_start is not None else 0.0)
    result.loadgen_cpu = round(cpu_used / (seconds + timeout), 3)

    result.sent = sent
    result.answered = sum(answered)
    result.errors = sum(errors)
    result.lost = lost
    result.late_or_unknown = late
    result.invalid = invalid
    result.validated = validated
    result.send_errors = send_errors
    result.queries_answered = queries_answered
    result.qps = round(result.answered / seconds, 1)
    result.loss = round(lost / sent, 6) if sent else 0.0
    result.per_second = per_second[: int(seconds)]
    everything = sorted(value for values in latencies for value in values)
    result.p50_ms, result.p90_ms, result.p99_ms, result.max_ms = (
        _ms(percentile(everything, q)) for q in (50, 90, 99, 100)
    )
    for method, name in enumerate(METHODS):
        values = sorted(latencies[method])
        count = answered[method]
        result.per_method[name] = MethodStats(
            answered=count,
            errors=errors[method],
            reply_bytes=reply_bytes[method],
            p50_ms=_ms(percentile(values, 50)),
            p99_ms=_ms(percentile(values, 99)),
            mean_reply_bytes=round(reply_bytes[method] / count, 1) if count else None,
        )
    return result


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def _valid_reply(data: bytes, template: Template, echo: bool) -> bool:
    """Whether a reply is what its query deserves: the query itself from an echo server, else a KRPC
    response (or error) with the fields its method answers with."""
    if echo:
        return data.startswith(template.prefix) and data.endswith(template.suffix)
    try:
        message = decode_message(data)
    except KrpcError:
        return False
    if not isinstance(message, Response):
        return True  # an error reply: counted as an error, not as malformed
    values = message.values
    name = METHODS[template.method]
    if name == "ping":
        return True
    if name == "find_node":
        return b"nodes" in values
    if name == "get_peers":
        return b"token" in values and (b"values" in values or b"nodes" in values)
    return b"token" in values and (b"v" in values or b"nodes" in values)


def _answer_query(sock: socket.socket, data: bytes, target: Addr, our_id: bytes) -> int:
    """Answer a query the server sent us (a liveness ping, typically) with a bare response."""
    try:
        message = decode_message(data)
    except KrpcError:
        return 0
    if not isinstance(message, Query):
        return 0
    reply = Response(message.tid, our_id, {b"id": our_id, b"nodes": b""}, version=CLIENT_VERSION)
    try:
        sock.sendto(encode_message(reply), target)
    except OSError:
        return 0
    return 1


def parse_addr(text: str) -> Addr:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return (host, int(port))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.loadgen", description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", type=parse_addr, required=True, help="HOST:PORT of the server")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured window (after the warm-up)")
    parser.add_argument("--inflight", type=int, default=32, help="queries kept outstanding")
    parser.add_argument("--timeout", type=float, default=1.0, help="a query unanswered this long is lost")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of load before measuring")
    parser.add_argument("--echo", action="store_true", help="the server echoes queries back")
    parser.add_argument("--bind", default="127.0.0.1", help="local address to send from")
    parser.add_argument("--stored", type=Path, help="JSON {info_hashes, targets} the server stores (hex)")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    stored = Stored.from_json(json.loads(args.stored.read_text())) if args.stored else Stored()
    templates = build_templates(rng, rng.randbytes(20), stored)
    result = run_load(
        args.target,
        templates,
        seconds=args.seconds,
        inflight=args.inflight,
        timeout=args.timeout,
        warmup=args.warmup,
        echo=args.echo,
        bind_host=args.bind,
        seed=args.seed,
    )
    json.dump(result.to_json(), sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
