"""`kadnode run`: one Node, its control socket, bootstrap with backoff, clean shutdown on SIGINT/SIGTERM.

Bootstrap never fails silently (design notes §5): while no seed answers the daemon says which seeds it
tried and when it will try again, and a node with no seeds says it is starting a new network.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable

from kadnode.config import DaemonConfig, read_seeds_file
from kadnode.logs import setup_logging
from kadnode.runtime.node import Node
from kadnode.runtime.shares import ShareService
from kadnode.runtime.state import StateError
from kadnode.runtime.udp import BindError
from kadnode.torrent.peerid import new_peer_id
from kadnode.torrent.server import SeedServer
from kadnode.types import Addr

log = logging.getLogger("kadnode.daemon")

SEEDS_SHOWN = 5
"""Seeds listed by name in the "no seed answered" warning; the rest are counted."""


def _seed_list(seeds: list[Addr]) -> str:
    shown = ", ".join(f"{h}:{p}" for h, p in seeds[:SEEDS_SHOWN])
    more = len(seeds) - SEEDS_SHOWN
    return f"{shown} and {more} more" if more > 0 else shown


async def _wait_or_stop(stop_event: asyncio.Event, seconds: float) -> bool:
    """Sleep `seconds` unless stopped first; True when stopped."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop_event.wait(), seconds)
    return stop_event.is_set()


def _has_live_nodes(node: Node) -> bool:
    """Whether the table holds a node that is not BAD (`closest` never returns BAD nodes)."""
    return bool(node.core.routing_table.closest(node.node_id, 1))


async def keep_bootstrapped(node: Node, stop_event: asyncio.Event) -> None:
    """Bootstrap with exponential backoff until a seed answers. Afterwards, if every node in the table
    has gone bad (say, the network was down for long: maintenance pings fail), start over."""
    settings = node.settings
    if not node.bootstrap_candidates():
        log.info("no bootstrap seeds: starting a new network")
        return
    while not stop_event.is_set():
        delay = settings.bootstrap_retry_initial
        while True:
            candidates = node.bootstrap_candidates()
            result = await node.bootstrap()
            if result.seeds_answered > 0:
                log.info(
                    "bootstrapped: %d of %d seeds answered; routing table has %d nodes",
                    result.seeds_answered, result.seeds_tried, result.table_size,
                    extra={"table_size": result.table_size, "seeds_answered": result.seeds_answered},
                )
                break
            log.warning("no seed answered (tried %s); retrying in %gs", _seed_list(candidates), delay)
            if await _wait_or_stop(stop_event, delay):
                return
            delay = min(delay * 2, settings.bootstrap_retry_max)
        while _has_live_nodes(node):
            if await _wait_or_stop(stop_event, settings.bootstrap_retry_max):
                return
        log.warning("no live node left in the routing table; bootstrapping again")


def _install_signal_handlers(stop_event: asyncio.Event) -> list[signal.Signals]:
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop_event.set)
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, or no support
            log.debug("cannot handle %s here; stop the daemon through its stop event", sig.name)
        else:
            installed.append(sig)
    return installed


async def start_seed_server(host: str, port: int, upload_rate: int | None = None) -> SeedServer:
    """The TCP server for shared files, on `port` (0: any free port)."""
    server = SeedServer(host, port, peer_id=new_peer_id(), upload_rate=upload_rate)
    try:
        await server.start()
    except OSError as exc:
        raise TorrentPortError(
            f"cannot listen for file transfers on TCP {host}:{port}: {exc.strerror or exc}; "
            "free the port or choose another with --torrent-port (0: any free port)"
        ) from None
    return server


class TorrentPortError(OSError):
    """The TCP port for shared files is taken."""


async def run_daemon(
    config: DaemonConfig,
    *,
    ready: Callable[[Node], None] | None = None,
    stop_event: asyncio.Event | None = None,
) -> None:
    """Run a node until `stop_event` is set (by SIGINT/SIGTERM, or by the caller).

    `ready(node)` is called once the node and its control socket are up, before bootstrap finishes.
    """
    from kadnode.runtime.control import ControlServer  # written separately; imported when needed

    stop = stop_event if stop_event is not None else asyncio.Event()
    seeds = list(config.bootstrap)
    if config.seeds_file is not None:
        seeds += read_seeds_file(config.seeds_file)
    node = Node(
        config.host,
        config.port,
        settings=config.settings,
        bootstrap=list(dict.fromkeys(seeds)),
        data_dir=config.data_dir,
    )
    await node.start()
    control: ControlServer | None = None
    seeder: SeedServer | None = None
    shares: ShareService | None = None
    signals: list[signal.Signals] = []
    bootstrapper: asyncio.Task[None] | None = None
    try:
        torrent_port = node.addr[1] if config.torrent_port is None else config.torrent_port
        seeder = await start_seed_server(config.host, torrent_port, config.upload_rate)
        shares = ShareService(node, seeder)
        control = ControlServer(node, config.control_socket_path, shares=shares)
        await control.start()
        await shares.restore()
        host, port = node.addr
        log.info(
            "node %040x listening on %s:%d (data in %s)", node.node_id, host, port, config.data_dir,
            extra={"node_id": f"{node.node_id:040x}", "addr": f"{host}:{port}"},
        )
        if node.identity is not None:
            log.info("mutable items are signed with public key %s", node.identity.public_key.hex())
        if node.saved_routes:
            log.info("warm start: %d nodes saved from the last run", len(node.saved_routes))
        signals = _install_signal_handlers(stop)
        if ready is not None:
            ready(node)
        bootstrapper = asyncio.create_task(keep_bootstrapped(node, stop), name="kadnode-bootstrap")
        await stop.wait()
        log.info("stopping")
    finally:
        loop = asyncio.get_running_loop()
        for sig in signals:
            loop.remove_signal_handler(sig)
        if bootstrapper is not None:
            bootstrapper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await bootstrapper
        if control is not None:
            await control.close()
        if shares is not None:
            await shares.close()
        if seeder is not None:
            await seeder.close()
        await node.stop()  # saves the routing table first
        log.info("stopped")


def run(config: DaemonConfig) -> int:
    """Run the daemon in the foreground (for the CLI): 0 after a clean stop, 1 when it cannot start."""
    from kadnode.runtime.control import ControlSocketError

    setup_logging(config.log_level, config.log_format)
    try:
        asyncio.run(run_daemon(config))
    except (BindError, StateError, ControlSocketError, TorrentPortError) as exc:  # written for the operator
        log.error("%s", exc)
        return 1
    except KeyboardInterrupt:  # a second Ctrl-C before the handlers were installed
        return 130
    except (OSError, ValueError) as exc:  # e.g. an unreadable seeds file or data directory
        log.error("cannot run: %s", exc)
        return 1
    return 0
