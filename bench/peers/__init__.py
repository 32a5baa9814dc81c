"""One adapter per implementation, all behind `Cluster`: N nodes in this process, put, get, kill."""

from __future__ import annotations

from bench.peers.base import Cluster

IMPLEMENTATIONS = ("kadnode", "bmuller", "opendht")


def make_cluster(name: str, **options: object) -> Cluster:
    """The adapter for `name` (imported lazily: a peer's package need only be installed when benchmarked)."""
    if name == "kadnode":
        from bench.peers.kadnode_cluster import KadnodeCluster

        return KadnodeCluster(**options)  # type: ignore[arg-type]
    if name == "bmuller":
        from bench.peers.bmuller import BmullerCluster

        return BmullerCluster()
    if name == "opendht":
        from bench.peers.opendht_cluster import OpendhtCluster

        return OpendhtCluster()
    raise ValueError(f"unknown implementation {name!r}; choose from {', '.join(IMPLEMENTATIONS)}")
