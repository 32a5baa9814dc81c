"""A mixed DHT on loopback, for interop tests: kadnode nodes and libtorrent peers that know each other."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from typing import Any, TypeVar

from kadnode import Node
from kadnode.types import Addr
from tests.interop.ltpeer import LibtorrentDhtPeer

STEP_TIMEOUT = 15.0
"""Upper bound for one step; on loopback each takes well under a second."""

T = TypeVar("T")


async def in_thread(func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a blocking libtorrent call off the event loop, bounded by STEP_TIMEOUT."""
    async with asyncio.timeout(STEP_TIMEOUT + 5):
        return await asyncio.to_thread(func, *args, **kwargs)


async def start_mixed_network(
    stack: AsyncExitStack, kadnode_hosts: Sequence[str], libtorrent_hosts: Sequence[str]
) -> tuple[list[Node], list[LibtorrentDhtPeer], list[list[Addr]]]:
    """kadnode nodes (the first a seed, the rest bootstrapped from it), then libtorrent peers each
    bootstrapped from two kadnode nodes. Everything is closed by `stack`; ports are chosen by the OS.
    Returns the nodes, the peers, and the kadnode endpoints each peer was bootstrapped from."""
    seed = await stack.enter_async_context(Node(host=kadnode_hosts[0], port=0))
    nodes = [seed]
    for host in kadnode_hosts[1:]:
        nodes.append(await stack.enter_async_context(Node(host=host, port=0, bootstrap=[seed.addr])))
    async with asyncio.timeout(STEP_TIMEOUT):
        await asyncio.gather(*(node.bootstrap() for node in nodes[1:]))
    peers: list[LibtorrentDhtPeer] = []
    peer_seeds: list[list[Addr]] = []
    for i, host in enumerate(libtorrent_hosts):
        seeds = [nodes[(2 * i + 1) % len(nodes)].addr, nodes[(2 * i + 2) % len(nodes)].addr]
        peer = LibtorrentDhtPeer(host, 0, bootstrap=seeds)
        stack.push_async_callback(asyncio.to_thread, peer.close)
        await in_thread(peer.start)
        peers.append(peer)
        peer_seeds.append(seeds)
    return nodes, peers, peer_seeds


def kadnode_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """The `kadnode` command line, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "kadnode", *args], capture_output=True, text=True, timeout=STEP_TIMEOUT
    )
