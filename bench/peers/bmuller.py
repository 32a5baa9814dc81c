"""bmuller/kademlia (PyPI `kademlia`): `Server`s on one asyncio loop, with its default parameters
(k = 20, alpha = 3, a fixed 5 s RPC timeout)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from importlib import metadata
from typing import Any

from kademlia.network import Server  # type: ignore[import-untyped]

from bench.peers.base import Cluster

BOOTSTRAP_BATCH = 25


class _CountingTransport:
    """Wraps the datagram transport so every datagram the node sends is counted."""

    def __init__(self, inner: Any, counter: list[int]) -> None:
        self._inner = inner
        self._counter = counter

    def sendto(self, data: bytes, addr: Any = None) -> None:
        self._counter[0] += 1
        self._inner.sendto(data, addr)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class BmullerCluster(Cluster):
    name = "bmuller"

    def __init__(self) -> None:
        self.servers: list[Server] = []
        self.hosts: list[str] = []
        self.ports: list[int] = []
        self.dead: set[int] = set()
        self._sent = [0]
        for noisy in ("kademlia", "rpcudp"):
            logging.getLogger(noisy).setLevel(logging.CRITICAL)

    async def start(self, hosts: Sequence[str], progress: Callable[[int], None] | None = None) -> None:
        self.hosts = list(hosts)
        for host in self.hosts:
            server = Server()
            await server.listen(0, interface=host)
            assert server.transport is not None
            self.ports.append(int(server.transport.get_extra_info("sockname")[1]))
            counting = _CountingTransport(server.transport, self._sent)
            server.protocol.transport = counting
            self.servers.append(server)
        seed = (self.hosts[0], self.ports[0])
        for first in range(1, len(self.servers), BOOTSTRAP_BATCH):
            batch = self.servers[first : first + BOOTSTRAP_BATCH]
            await asyncio.gather(*(server.bootstrap([seed]) for server in batch))
            if progress is not None:
                progress(first + len(batch))
        await self.servers[0].bootstrap([(self.hosts[1], self.ports[1])])

    async def put(self, index: int, key: bytes, value: bytes) -> bool:
        return bool(await self.servers[index].set(key, value))

    async def get(self, index: int, key: bytes, value: bytes) -> bool:
        found: object = await self.servers[index].get(key)
        return found == value

    async def kill(self, indices: Sequence[int]) -> None:
        # Server.stop() closes the transport and cancels its loops; it sends nothing.
        for index in indices:
            self.dead.add(index)
            self.servers[index].stop()

    async def close(self) -> None:
        for index, server in enumerate(self.servers):
            if index not in self.dead:
                server.stop()
        self.dead = set(range(len(self.servers)))

    def datagrams_sent(self) -> int | None:
        return self._sent[0]

    def info(self) -> dict[str, Any]:
        return {"version": metadata.version("kademlia"), "ksize": 20, "alpha": 3, "rpc_timeout_s": 5}
