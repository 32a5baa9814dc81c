"""The asyncio UDP driver: one socket drives one sans-I/O `NodeCore` on the loop's monotonic clock.

Receive path, cheapest checks first: size, then a per-source-IP token bucket, then a bounded queue, then
the core. Every datagram dropped on the way bumps a named counter in the core's `counters`.

Why not asyncio-dgram (or any DatagramProtocol): asyncio's datagram transport reads one datagram per
event-loop turn and hands it to the protocol at once, so a queue behind it never holds more than one
datagram and a bound on it can never trigger; the surplus of a flood piles up in the kernel and is
dropped there, invisibly. asyncio-dgram adds an unbounded queue on top and raises queued ICMP errors
out of the next recv()/send(). Reading the non-blocking socket ourselves (`loop.add_reader`, as on
uvloop too) drains it in batches, which costs fewer loop turns per datagram, and puts the bound where
it can act: the reader may read faster than the core handles datagrams, and what does not fit in
`receive_queue_size` is dropped and counted (`dropped.queue_full`). The core then gets at most
`PROCESS_BATCH` datagrams per turn, so that timers and the control socket keep running under a flood.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
from collections import OrderedDict, deque

from kadnode.core.node import NodeCore
from kadnode.settings import Settings
from kadnode.types import Addr

log = logging.getLogger(__name__)

READ_BATCH = 2048
"""Datagrams read per readiness event, at most (more than the default queue holds, so that a backlog
beyond `receive_queue_size` is counted rather than left for the kernel to drop unseen)."""
PROCESS_BATCH = 256
"""Datagrams handed to the core per loop turn before other callbacks get their turn."""
RATE_TABLE_SIZE = 10_000
"""Source IPs the rate limiter remembers (least recently seen forgotten first)."""
SOCKET_BUFFER_BYTES = 1 << 20
"""Requested SO_RCVBUF/SO_SNDBUF (capped by net.core.rmem_max/wmem_max): absorbs bursts and pauses."""
CORE_ERROR_LOG_FIRST = 10
"""Core exceptions logged with a traceback before logging only every 1000th (a crafted packet that
trips a bug must not flood the log)."""


class BindError(OSError):
    """The UDP socket could not be bound; the message says what to do about it."""

    def __init__(self, host: str, port: int, cause: OSError) -> None:
        super().__init__(cause.errno, cause.strerror)
        self.host = host
        self.port = port
        where = f"cannot bind {host}:{port}"
        if cause.errno == errno.EADDRINUSE:
            self.message = (
                f"{where}: address already in use — is another kadnode running? pick another --port"
            )
        elif cause.errno == errno.EADDRNOTAVAIL:
            self.message = f"{where}: address not available on this machine — pick another --host"
        elif cause.errno == errno.EACCES:
            self.message = f"{where}: permission denied (ports below 1024 need privileges)"
        else:
            self.message = f"{where}: {cause.strerror or cause}"

    def __str__(self) -> str:
        return self.message


def bind_udp(host: str, port: int) -> socket.socket:
    """A non-blocking IPv4 UDP socket bound to (host, port). No SO_REUSEADDR: two nodes on one port
    would each get a random share of the datagrams."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            with contextlib.suppress(OSError):  # best effort: the kernel default still works
                sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER_BYTES)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise BindError(host, port, exc) from exc
    return sock


class _Bucket:
    __slots__ = ("blocked_until", "last", "tokens")

    def __init__(self, tokens: float, last: float) -> None:
        self.tokens = tokens
        self.last = last
        self.blocked_until = 0.0


class RateLimiter:
    """Per-source-IP token bucket; an IP that empties its bucket is ignored for `block_seconds`
    (libtorrent's dos_blocker does the same). The table is an LRU of at most `max_entries` IPs, so
    spoofed sources cost bounded memory (and at worst let a blocked IP in early)."""

    def __init__(
        self, rate: float, burst: int, block_seconds: float, max_entries: int = RATE_TABLE_SIZE
    ) -> None:
        self.rate = rate
        self.burst = float(max(burst, 1))
        self.block_seconds = block_seconds
        self.max_entries = max_entries
        self._table: OrderedDict[str, _Bucket] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def __len__(self) -> int:
        return len(self._table)

    def allow(self, ip: str, now: float) -> bool:
        """Whether a datagram from `ip` at `now` may pass (it spends a token if so)."""
        if not self.enabled:
            return True
        bucket = self._table.get(ip)
        if bucket is None:
            if len(self._table) >= self.max_entries:
                self._table.popitem(last=False)
            self._table[ip] = _Bucket(self.burst - 1, now)
            return True
        self._table.move_to_end(ip)
        if now < bucket.blocked_until:
            return False
        tokens = min(self.burst, bucket.tokens + (now - bucket.last) * self.rate)
        bucket.last = now
        if tokens < 1:
            bucket.tokens = tokens
            bucket.blocked_until = now + self.block_seconds
            log.info("rate limit: ignoring %s for %gs", ip, self.block_seconds)
            return False
        bucket.tokens = tokens - 1
        return True

    def blocked(self, now: float) -> list[str]:
        return [ip for ip, bucket in self._table.items() if now < bucket.blocked_until]


class UdpDriver:
    """Feeds one bound socket to one NodeCore and follows the driver contract (docs/architecture.md):
    after every call into the core, send `take_outgoing()` and keep one timer at `next_deadline()`."""

    def __init__(self, core: NodeCore, sock: socket.socket, settings: Settings) -> None:
        self.core = core
        self.settings = settings
        self.limiter = RateLimiter(
            settings.rate_limit_per_second, settings.rate_limit_burst, settings.rate_limit_block_seconds
        )
        self._loop = asyncio.get_running_loop()
        self._sock = sock
        host, port = sock.getsockname()[:2]
        self.addr: Addr = (str(host), int(port))
        self._queue: deque[tuple[bytes, Addr]] = deque()
        self._process_scheduled = False
        self._timer: asyncio.TimerHandle | None = None
        self._timer_deadline: float | None = None
        self._last_now = self._loop.time()
        self._core_errors = 0
        self._reading = False
        self.closed = False

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start reading and arm the core's first timer."""
        if self._reading or self.closed:
            return
        self._loop.add_reader(self._sock.fileno(), self._on_readable)
        self._reading = True
        self.flush()

    def close(self) -> None:
        """Stop reading, cancel the timer, close the socket (idempotent)."""
        if self.closed:
            return
        self.closed = True
        if self._reading:
            self._loop.remove_reader(self._sock.fileno())
            self._reading = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._queue.clear()
        self._sock.close()

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    def now(self) -> float:
        """The loop's monotonic clock, never going back (timers may run us at their deadline)."""
        now = self._loop.time()
        if now < self._last_now:
            return self._last_now
        self._last_now = now
        return now

    # ------------------------------------------------------------------ receiving

    def _on_readable(self) -> None:
        counters = self.core.counters
        queue = self._queue
        limit = self.settings.receive_queue_size
        max_size = self.settings.max_datagram_size
        bufsize = max_size + 1  # one byte more than allowed: a longer datagram shows as oversized
        limiter = self.limiter
        recvfrom = self._sock.recvfrom
        now = self.now()
        for _ in range(READ_BATCH):
            try:
                data, source = recvfrom(bufsize)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:  # e.g. a queued ICMP error: an event, not a reason to stop
                self._socket_error(exc)
                continue
            if len(data) > max_size:
                counters["dropped.oversized"] += 1
            elif limiter.enabled and not limiter.allow(source[0], now):
                counters["dropped.rate_limited"] += 1
            elif len(queue) >= limit:
                counters["dropped.queue_full"] += 1
            else:
                queue.append((data, (source[0], source[1])))
        if queue and not self._process_scheduled:
            # Handle the first batch in this same loop turn: a turn of its own per batch would cost one
            # more pass through the event loop (an epoll_wait) for every few datagrams under load.
            self._process_scheduled = True
            self._process()

    def _process(self) -> None:
        self._process_scheduled = False
        if self.closed:
            return
        core = self.core
        queue = self._queue
        for _ in range(min(len(queue), PROCESS_BATCH)):
            data, source = queue.popleft()
            try:
                core.datagram_received(data, source, self.now())
            except Exception:
                self._core_failed("datagram_received")
        self.flush()
        if queue and not self._process_scheduled:
            self._process_scheduled = True
            self._loop.call_soon(self._process)

    # ------------------------------------------------------------------ sending and timers

    def flush(self) -> None:
        """Send what the core queued and (re)arm the timer for its next deadline."""
        out = self.core.take_outgoing()
        if self.closed:
            return
        counters = self.core.counters
        sendto = self._sock.sendto
        for data, dest in out:
            try:
                sendto(data, dest)
            except BlockingIOError:
                counters["dropped.send_buffer_full"] += 1
            except OSError as exc:
                self._socket_error(exc)
            else:
                counters["datagrams_out"] += 1
        self._arm()

    def _arm(self) -> None:
        deadline = self.core.next_deadline()
        if self._timer is not None:
            if deadline == self._timer_deadline:
                return
            self._timer.cancel()
            self._timer = None
        if deadline is not None:
            self._timer = self._loop.call_at(deadline, self._on_timer)
        self._timer_deadline = deadline

    def _on_timer(self) -> None:
        self._timer = None
        if self.closed:
            return
        now = self.now()
        deadline = self._timer_deadline
        if deadline is not None and now < deadline:
            # call_at may fire up to the clock resolution early; run as if on time rather than spin.
            now = self._last_now = deadline
        try:
            self.core.advance(now)
        except Exception:
            self._core_failed("advance")
        self.flush()

    # ------------------------------------------------------------------ errors

    def _socket_error(self, exc: OSError) -> None:
        name = errno.errorcode.get(exc.errno, "other") if exc.errno is not None else "other"
        self.core.counters[f"socket_errors.{name}"] += 1

    def _core_failed(self, where: str) -> None:
        """A bug in the core must not stop the node: count it, log it (sparingly), carry on."""
        self.core.counters["runtime.core_errors"] += 1
        self._core_errors += 1
        if self._core_errors <= CORE_ERROR_LOG_FIRST or self._core_errors % 1000 == 0:
            log.exception("NodeCore.%s raised (error %d); the node carries on", where, self._core_errors)
