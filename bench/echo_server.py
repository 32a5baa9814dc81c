"""The ceiling: a bare asyncio UDP echo server, on the stock event loop or on uvloop, or a lean one.

    python -m bench.echo_server --host 127.0.0.3 --port 0 [--uvloop | --lean]

Prints ``ready HOST PORT`` once bound, then echoes every datagram to its sender until SIGTERM/SIGINT.

The default is what the issue names as the ceiling: asyncio's own datagram endpoint, one protocol
callback and one sendto per datagram. Its cost is not only system calls: the stock transport reads
each datagram into a fresh 256 KiB buffer (`max_size`), which glibc serves with mmap, then shrinks
with mremap and frees with munmap (three more system calls and page faults per datagram, `strace -c`
shows them). How much that costs depends on the host's memory management far more than on its CPU,
so this ceiling moved several-fold between runs on this machine (40k to 200k/s), depending on
whether anything in the process had freed a large block before: glibc raises its mmap threshold above
the size of the largest mmapped block freed so far, and a 256 KiB buffer then comes from the heap,
with no system call. The server therefore frees one such block before it starts (`settle_malloc`), so
that it always runs in that faster state: the higher, steadier ceiling.

`--lean` is the tighter, steadier ceiling: kadnode's own read path (`kadnode.runtime.udp`: the loop's
`add_reader`, then `recvfrom` into a datagram-sized buffer until the socket is empty) with nothing
between reading and echoing. What kadnode falls short of it is the cost of its protocol work.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any, cast

from kadnode.runtime.udp import READ_BATCH, bind_udp
from kadnode.settings import Settings
from kadnode.types import Addr

LEAN_BUFFER = Settings().max_datagram_size + 1
"""The buffer kadnode's driver reads into (one byte over the largest datagram it accepts)."""


class EchoProtocol(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # The selector and uvloop datagram transports do not subclass DatagramTransport.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        if self.transport is not None:
            self.transport.sendto(data, addr)


async def serve(host: str, port: int, ready: Callable[[Addr], None] | None = None) -> None:
    """Echo on (host, port) with asyncio's datagram endpoint until SIGTERM or SIGINT."""
    loop = asyncio.get_running_loop()
    transport, _protocol = await loop.create_datagram_endpoint(EchoProtocol, local_addr=(host, port))
    stop = _stop_on_signals(loop)
    bound = transport.get_extra_info("sockname")
    if ready is not None:
        ready((str(bound[0]), int(bound[1])))
    try:
        await stop.wait()
    finally:
        transport.close()


async def serve_lean(host: str, port: int, ready: Callable[[Addr], None] | None = None) -> None:
    """Echo on (host, port) reading the socket as kadnode's UDP driver does, until SIGTERM or SIGINT."""
    loop = asyncio.get_running_loop()
    sock = bind_udp(host, port)
    recvfrom, sendto = sock.recvfrom, sock.sendto

    def readable() -> None:
        for _ in range(READ_BATCH):
            try:
                data, source = recvfrom(LEAN_BUFFER)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue
            with contextlib.suppress(OSError):
                sendto(data, source)

    loop.add_reader(sock.fileno(), readable)
    stop = _stop_on_signals(loop)
    if ready is not None:
        bound = sock.getsockname()
        ready((str(bound[0]), int(bound[1])))
    try:
        await stop.wait()
    finally:
        loop.remove_reader(sock.fileno())
        sock.close()


def _stop_on_signals(loop: asyncio.AbstractEventLoop) -> asyncio.Event:
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


ASYNCIO_READ_SIZE = 256 * 1024
"""What asyncio's selector datagram transport passes to recvfrom (`max_size`), datagram after datagram."""


def settle_malloc() -> None:
    """Free one block larger than asyncio's read buffer, so that glibc serves that buffer from the heap
    from then on instead of with mmap/mremap/munmap per datagram (see the module docstring)."""
    block = bytearray(ASYNCIO_READ_SIZE + 64 * 1024)
    del block


def uvloop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop factory when uvloop is installed, else None."""
    try:
        module = importlib.import_module("uvloop")
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = module.new_event_loop
    return factory


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.echo_server", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--uvloop", action="store_true", help="run on uvloop instead of the stock loop")
    mode.add_argument("--lean", action="store_true", help="read the socket as kadnode does, not through a transport")
    args = parser.parse_args(argv)
    factory = None
    if args.uvloop:
        factory = uvloop_factory()
        if factory is None:
            print("uvloop is not installed (pip install uvloop)", file=sys.stderr)
            return 2

    def ready(addr: Addr) -> None:
        print(f"ready {addr[0]} {addr[1]}", flush=True)

    settle_malloc()
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run((serve_lean if args.lean else serve)(args.host, args.port, ready))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
