"""OpenDHT (PyPI `opendht`, the C++ library's Python bindings): `DhtRunner`s in this process, each with
its own threads; their callbacks come back to the asyncio loop through `call_soon_threadsafe`.

Every OpenDHT node listens on one loopback address (`HOST`), each on its own port, rather than on the
127.0.x.y the benchmark hands out. OpenDHT treats all of 127.0.0.0/8 as "the sender's own machine": when
a reply lists a node at a loopback address, it replaces that address with the replier's IP and keeps the
port (`NetworkEngine::deserializeNodes`, `addr.isLoopback()`), so with one 127.0.x.y per node every
node learnt second hand points at the wrong host. The network then collapses onto the seed (the only node
everyone reached directly): a median of 1 good node per routing table, puts taking seconds, gets that succeed
only where the seed answers, and none once the seed is among the crashed. On one IP the rewrite is a
no-op, which is the condition OpenDHT was written for (a distinct IP per host, or one host with ports).
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Callable, Sequence
from typing import Any

import opendht  # type: ignore[import-untyped]

from bench.common import KILL_COMMENT, PacketFilter
from bench.peers.base import Cluster

HOST = "127.0.0.1"
"""The one address all OpenDHT nodes share (see the module docstring). `loopback_addresses` never hands
out 127.0.0.x, so the benchmark's own per-address rules never touch it; `kill` silences by port."""

JOIN_WAIT_SECONDS = 30.0
"""OpenDHT joins in the background (`bootstrap` returns at once), so it gets this long to join before
the common `--settle` (kadnode and bmuller await their bootstrap instead). Waiting 120 s instead did not
change the few misplaced values at N = 500: about half the nodes still know no node in the other half
of the ID space (OpenDHT does not look up distant, empty buckets after joining), and a put from such a
node can end on the closest nodes its side knows, reporting success."""

MAX_REQ_PER_SEC = 0
"""OpenDHT's global limit on requests a node answers per second: 0 keeps its default."""

MAX_PEER_REQ_PER_SEC = -1
"""OpenDHT's per-IP request limit (default: the global limit / 8): off (-1), because here every peer
shares `HOST`, so the limit would count the whole network as one abusive host. Its own test suite and
benchmarks turn it off for the same reason."""


class OpendhtCluster(Cluster):
    name = "opendht"

    def __init__(self) -> None:
        self.runners: list[Any] = []
        self.ports: list[int] = []
        self.dead: set[int] = set()
        self._filter = PacketFilter()

    async def start(self, hosts: Sequence[str], progress: Callable[[int], None] | None = None) -> None:
        for _host in hosts:
            config = opendht.DhtConfig()
            config.setRateLimit(MAX_REQ_PER_SEC, MAX_PEER_REQ_PER_SEC)
            runner = opendht.DhtRunner()
            runner.run(port=0, ipv4=HOST, config=config)
            self.ports.append(int(runner.getBound().getPort()))
            self.runners.append(runner)
        seed_port = str(self.ports[0])
        for index, runner in enumerate(self.runners[1:], start=1):
            runner.bootstrap(HOST, seed_port)
            if progress is not None and index % 50 == 0:
                progress(index)
        self.runners[0].bootstrap(HOST, str(self.ports[1]))
        await asyncio.sleep(JOIN_WAIT_SECONDS)

    def _key(self, key: bytes) -> Any:
        return opendht.InfoHash.get(key.hex())

    async def put(self, index: int, key: bytes, value: bytes) -> bool:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bool] = loop.create_future()

        def done(ok: bool, _nodes: Any) -> None:
            loop.call_soon_threadsafe(_settle, future, bool(ok))

        self.runners[index].put(self._key(key), opendht.Value(value), done)
        return await future

    async def get(self, index: int, key: bytes, value: bytes) -> bool:
        """True as soon as a node returns the value (the application has it then); False when the
        search ends without it."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bool] = loop.create_future()

        def found(v: Any) -> bool:
            if bytes(v.data) == value:
                loop.call_soon_threadsafe(_settle, future, True)
                return False  # stop the search: we have what we came for
            return True

        def done(_ok: bool, _nodes: Any) -> None:
            loop.call_soon_threadsafe(_settle, future, False)

        self.runners[index].get(self._key(key), found, done)
        return await future

    async def kill(self, indices: Sequence[int]) -> None:
        # The benchmark silences the victims' 127.0.x.y, which OpenDHT does not use: silence their ports
        # on HOST the same way (no ICMP back, nothing they still send arrives). Then join() stops the
        # runner's threads and closes its sockets; unlike shutdown() it does not first push its stored
        # values to other nodes.
        self._silence_ports([self.ports[index] for index in indices])
        for index in indices:
            self.dead.add(index)
            await asyncio.to_thread(self.runners[index].join)

    def _silence_ports(self, ports: Sequence[int]) -> None:
        if not self._filter.available or not ports:
            return
        rules = ["*filter"]
        for port in ports:
            for match in (f"-d {HOST}/32 --dport {port}", f"-s {HOST}/32 --sport {port}"):
                rules.append(f"-A INPUT -p udp {match} -m comment --comment {KILL_COMMENT} -j DROP")
        rules.append("COMMIT")
        subprocess.run(["iptables-restore", "-w", "--noflush"], input="\n".join(rules) + "\n", text=True, check=True)

    async def close(self) -> None:
        for index, runner in enumerate(self.runners):
            if index not in self.dead:
                await asyncio.to_thread(runner.join)
        self.dead = set(range(len(self.runners)))

    def info(self) -> dict[str, Any]:
        return {
            "version": str(opendht.__version__),
            "host": HOST,
            "join_wait_seconds": JOIN_WAIT_SECONDS,
            "max_req_per_sec": MAX_REQ_PER_SEC,
            "max_peer_req_per_sec": MAX_PEER_REQ_PER_SEC,
        }


def _settle(future: asyncio.Future[bool], ok: bool) -> None:
    if not future.done():
        future.set_result(ok)
