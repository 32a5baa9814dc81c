"""OpenDHT (PyPI `opendht`, the C++ library's Python bindings): `DhtRunner`s in this process, each with
its own threads; their callbacks come back to the asyncio loop through `call_soon_threadsafe`."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

import opendht  # type: ignore[import-untyped]

from bench.peers.base import Cluster

JOIN_WAIT_SECONDS = 30.0
"""OpenDHT joins in the background (`bootstrap` returns at once), so it gets this long to join before
the common `--settle` (kadnode and bmuller await their bootstrap instead). Waiting longer did not
change its success rate before the crash (about 57% at N = 500, seed 1)."""


class OpendhtCluster(Cluster):
    name = "opendht"

    def __init__(self) -> None:
        self.runners: list[Any] = []
        self.hosts: list[str] = []
        self.ports: list[int] = []
        self.dead: set[int] = set()

    async def start(self, hosts: Sequence[str], progress: Callable[[int], None] | None = None) -> None:
        self.hosts = list(hosts)
        for host in self.hosts:
            runner = opendht.DhtRunner()
            runner.run(port=0, ipv4=host, config=opendht.DhtConfig())
            self.ports.append(int(runner.getBound().getPort()))
            self.runners.append(runner)
        seed_host, seed_port = self.hosts[0], str(self.ports[0])
        for index, runner in enumerate(self.runners[1:], start=1):
            runner.bootstrap(seed_host, seed_port)
            if progress is not None and index % 50 == 0:
                progress(index)
        self.runners[0].bootstrap(self.hosts[1], str(self.ports[1]))
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
        # join() stops the runner's threads and closes its sockets; unlike shutdown() it does not first
        # push its stored values to other nodes. The packet filter silences the address beforehand.
        for index in indices:
            self.dead.add(index)
            await asyncio.to_thread(self.runners[index].join)

    async def close(self) -> None:
        for index, runner in enumerate(self.runners):
            if index not in self.dead:
                await asyncio.to_thread(runner.join)
        self.dead = set(range(len(self.runners)))

    def info(self) -> dict[str, Any]:
        return {"version": str(opendht.__version__), "join_wait_seconds": JOIN_WAIT_SECONDS}


def _settle(future: asyncio.Future[bool], ok: bool) -> None:
    if not future.done():
        future.set_result(ok)
