"""The ceiling: a bare asyncio UDP echo server, on the stock event loop or on uvloop.

    python -m bench.echo_server --host 127.0.0.3 --port 0 [--uvloop]

Prints ``ready HOST PORT`` once bound, then echoes every datagram to its sender until SIGTERM/SIGINT.
It does the least any asyncio UDP server must do per datagram (one callback, one sendto), so no Python
node on the same loop can answer faster; kadnode's rate is reported as a share of this one.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any, cast

from kadnode.types import Addr


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
    """Echo on (host, port) until SIGTERM or SIGINT."""
    loop = asyncio.get_running_loop()
    transport, _protocol = await loop.create_datagram_endpoint(EchoProtocol, local_addr=(host, port))
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    bound = transport.get_extra_info("sockname")
    if ready is not None:
        ready((str(bound[0]), int(bound[1])))
    try:
        await stop.wait()
    finally:
        transport.close()


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
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop instead of the stock loop")
    args = parser.parse_args(argv)
    factory = None
    if args.uvloop:
        factory = uvloop_factory()
        if factory is None:
            print("uvloop is not installed (pip install uvloop)", file=sys.stderr)
            return 2

    def ready(addr: Addr) -> None:
        print(f"ready {addr[0]} {addr[1]}", flush=True)

    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(serve(args.host, args.port, ready))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
