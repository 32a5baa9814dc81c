"""The interface every implementation's adapter offers to the benchmarks."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any


class Cluster(ABC):
    """N nodes of one implementation in this process, each on its own loopback address, in one network.

    Nodes are named by their index in the `hosts` given to `start`; node 0 is the seed the others join
    through. Keys are 20 random bytes and values short byte strings; an adapter maps them to its
    implementation's own notion of a key (kadnode stores immutable BEP 44 items, whose target is the
    hash of the value).
    """

    name: str = ""

    @abstractmethod
    async def start(self, hosts: Sequence[str], progress: Any = None) -> None:
        """Start one node per host and bootstrap them all into one network."""

    @abstractmethod
    async def put(self, index: int, key: bytes, value: bytes) -> bool:
        """Store `value` under `key` from node `index`; True when the implementation reports success."""

    @abstractmethod
    async def get(self, index: int, key: bytes, value: bytes) -> bool:
        """Look `key` up from node `index`; True when `value` came back."""

    @abstractmethod
    async def kill(self, indices: Sequence[int]) -> None:
        """Stop these nodes as a crash would: no goodbye, no final store, sockets closed."""

    @abstractmethod
    async def close(self) -> None:
        """Stop every node still running."""

    def datagrams_sent(self) -> int | None:
        """Datagrams the live nodes have sent so far, by the implementation's own count (None: unknown)."""
        return None

    def info(self) -> dict[str, Any]:
        """Version and parameters worth recording next to the figures."""
        return {}
