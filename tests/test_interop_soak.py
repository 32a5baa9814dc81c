"""Issue 5, must-show 5: a mixed network of kadnode nodes (gossip on) and libtorrent sessions keeps
working over time. libtorrent does not speak kn_gossip, so kadnode probes it with ping; it must stay in
kadnode's routing tables, good, and lookups across both implementations must keep succeeding.

CI runs a short soak (``KADNODE_SOAK_SECONDS``, default 40 s); the full one is
``KADNODE_SOAK_SECONDS=1800 python -m pytest -q tests/test_interop_soak.py`` (docs/gossip.md).
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from contextlib import AsyncExitStack

import pytest

from kadnode import Node
from kadnode.core.routing import NodeState
from kadnode.types import Addr
from tests.interop.ltpeer import LibtorrentDhtPeer
from tests.interop.mesh import STEP_TIMEOUT, in_thread, start_mixed_network

pytestmark = pytest.mark.interop

KADNODE_HOSTS = [f"127.0.0.{i}" for i in range(50, 55)]
LIBTORRENT_HOSTS = [f"127.0.0.{i}" for i in range(60, 63)]
SOAK_SECONDS = float(os.environ.get("KADNODE_SOAK_SECONDS", "40"))
ROUND_PAUSE = 2.0
"""Idle time between rounds: the gossip's probes and the tables' maintenance run meanwhile."""

log = logging.getLogger(__name__)


def libtorrent_entries(node: Node, peers: list[LibtorrentDhtPeer]) -> dict[Addr, NodeState]:
    """The state of every libtorrent peer that ``node`` holds in its routing table."""
    addrs = {peer.addr for peer in peers}
    now, settings = node.now(), node.core.settings
    return {e.addr: e.state(now, settings) for e in node.core.routing_table.entries() if e.addr in addrs}


async def one_round(rng: random.Random, nodes: list[Node], peers: list[LibtorrentDhtPeer], index: int) -> None:
    """libtorrent announces, kadnode finds it; kadnode announces, libtorrent finds it."""
    lt_hash = rng.randbytes(20)
    announcer = rng.choice(peers)
    await in_thread(announcer.announce, lt_hash, 40_000 + index, STEP_TIMEOUT)
    finder = rng.choice(nodes)
    async with asyncio.timeout(STEP_TIMEOUT):
        found = await finder.get_peers(lt_hash)
    assert (announcer.host, 40_000 + index) in found.peers, f"round {index}: {finder.addr} missed {announcer}"

    kn_hash = rng.randbytes(20)
    node = rng.choice(nodes)
    async with asyncio.timeout(STEP_TIMEOUT):
        stored = await node.announce(kn_hash, 50_000 + index, keep=False)
    assert stored.stored_at >= 1
    seeker = rng.choice(peers)
    peers_found = await in_thread(seeker.get_peers, kn_hash, STEP_TIMEOUT)
    assert (node.addr[0], 50_000 + index) in peers_found, f"round {index}: {seeker} missed {node.addr}"


async def test_mixed_network_keeps_working_with_gossip_on() -> None:
    rng = random.Random(5)
    async with AsyncExitStack() as stack:
        nodes, peers, peer_seeds = await start_mixed_network(stack, KADNODE_HOSTS, LIBTORRENT_HOSTS)
        assert all(node.core.settings.gossip_enabled for node in nodes)
        # As in tests/test_interop_libtorrent.py: each libtorrent session has verified its seeds and made a
        # lookup, so the tables have met before the first round (libtorrent refreshes one node per 5 s).
        for peer, seeds in zip(peers, peer_seeds, strict=True):
            for seed in seeds:
                assert await in_thread(peer.wait_for_node, seed, STEP_TIMEOUT), f"{peer} never verified {seed}"
            await in_thread(peer.get_peers, rng.randbytes(20), STEP_TIMEOUT)
        deadline = time.monotonic() + SOAK_SECONDS
        rounds = 0
        while rounds < 3 or time.monotonic() < deadline:
            await one_round(rng, nodes, peers, rounds)
            rounds += 1
            await asyncio.sleep(ROUND_PAUSE)
        log.info("soak: %d rounds in %.0f s", rounds, SOAK_SECONDS)

        # Every libtorrent peer is still held, as good, by the kadnode nodes it bootstrapped from.
        for peer, seeds in zip(peers, peer_seeds, strict=True):
            for seed in seeds:
                node = next(n for n in nodes if n.addr == seed)
                states = libtorrent_entries(node, peers)
                assert states.get(peer.addr) is NodeState.GOOD, f"{node.addr} holds {peer}: {states}"
        # kadnode's gossip found out that libtorrent does not speak it, and evicted nobody.
        plain = sum(n.core.liveness.view(n.now())["plain"] for n in nodes if n.core.liveness is not None)
        assert plain >= len(peers)
        assert sum(n.core.counters["routing.evicted"] for n in nodes) == 0
        # ...while the kadnode nodes gossiped with each other.
        assert sum(n.core.counters["queries_in.kn_gossip"] for n in nodes) > 0
