"""Every limit and interval of a node, in one place.

Each default names where it comes from, so that an operator changing it knows what they move away from.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any


@dataclass(frozen=True, slots=True)
class Settings:
    # --- Kademlia parameters -------------------------------------------------------------------
    k: int = 8
    """Bucket size and lookup width (BEP 5, libtorrent, jech/dht; the paper uses 20)."""
    alpha: int = 3
    """Requests a lookup keeps in flight (Kademlia paper)."""

    # --- wire limits (checked before any dispatch) --------------------------------------------
    max_datagram_size: int = 2048
    """Larger datagrams are dropped unread. BEP 44 puts stay well under 1,500 bytes."""
    bencode_max_depth: int = 10
    """Nesting depth the decoder accepts (libtorrent's decoder limit is similar)."""
    bencode_max_items: int = 500
    """Total tokens (ints, strings, lists, dicts) the decoder accepts in one message."""

    # --- RPC timeouts (adaptive; RFC 6298 style estimate per peer) ----------------------------
    rpc_timeout_initial: float = 2.0
    """Timeout towards a peer we have no round-trip sample for (and no global estimate yet)."""
    rpc_timeout_min: float = 0.25
    rpc_timeout_max: float = 10.0
    rpc_short_timeout_min: float = 0.02
    """Floor of the short timeout, max(2·SRTT, SRTT + 2·RTTVAR): a slow request frees its lookup slot
    and is retried once; a retry that is slow too is given up on."""
    rpc_short_timeout_max: float = 1.0
    """libtorrent opens the extra slot after 1 s."""
    max_outstanding_requests: int = 4096
    """Transactions in flight at once; beyond this new requests are refused."""

    # --- routing table ------------------------------------------------------------------------
    good_interval: float = 15 * 60.0
    """A node is good if it answered us within this time (BEP 5)."""
    bucket_refresh_interval: float = 15 * 60.0
    """A bucket untouched this long is refreshed with a lookup of a random ID in it (BEP 5)."""
    max_failures: int = 3
    """Consecutive failed requests after which a node is bad (jech/dht evicts after >2 missed pings)."""
    replacement_cache_size: int = 8
    """Candidates kept per bucket, waiting for a bad node to leave."""
    enforce_node_id: bool = False
    """Refuse nodes whose ID does not match their IP per BEP 42 (loopback and private ranges exempt)."""

    # --- lookups ------------------------------------------------------------------------------
    lookup_timeout: float = 60.0
    """A lookup that has not converged by then returns what it has."""
    lookup_max_candidates: int = 64
    """Candidates a lookup remembers; farther ones are forgotten."""

    # --- write tokens (BEP 5) -----------------------------------------------------------------
    token_rotation_interval: float = 5 * 60.0
    """Secret rotation; the previous secret stays valid, so a token lives 5-10 minutes."""

    # --- peer store (announce_peer) -----------------------------------------------------------
    peer_ttl: float = 30 * 60.0
    """Announced peers expire after this (libtorrent and jech: ~30-45 min)."""
    max_info_hashes: int = 2000
    """libtorrent's dht_max_torrents."""
    max_peers_per_info_hash: int = 500
    """libtorrent's dht_max_peers."""
    max_peers_per_reply: int = 50
    """Peers in one get_peers reply, to stay under the path MTU (50 x 8 bytes)."""
    announce_interval: float = 15 * 60.0
    """How often the originator re-announces (libtorrent, jech)."""

    # --- BEP 44 items (get / put) --------------------------------------------------------------
    item_ttl: float = 2 * 60 * 60.0
    """Items expire unless re-put within this time (BEP 44: "MAY expire in 2 hours")."""
    republish_interval: float = 60 * 60.0
    """The originator re-puts its items this often (BEP 44: "re-announced once an hour")."""
    replicate_interval: float = 60 * 60.0
    """A node holding an item re-puts it to the current k closest nodes this often (Kademlia's
    hourly republish), unless it received a put for it within the interval."""
    max_value_size: int = 1000
    """Bencoded `v` larger than this is refused with error 205 (BEP 44)."""
    max_salt_size: int = 64
    """Salt larger than this is refused with error 207 (BEP 44)."""
    max_items: int = 700
    """Items stored for others (libtorrent's dht_max_dht_items)."""
    max_item_bytes: int = 4 * 1024 * 1024
    """Total bytes of stored values."""
    max_items_per_ip: int = 50
    """New items one source IP may have stored at once, so one client cannot fill the store."""

    # --- bootstrap ----------------------------------------------------------------------------
    bootstrap_retry_initial: float = 1.0
    bootstrap_retry_max: float = 60.0
    """Backoff between bootstrap attempts while no seed answers."""

    # --- abuse protection ---------------------------------------------------------------------
    rate_limit_per_second: float = 50.0
    """Sustained datagrams/s accepted per source IP; 0 disables. libtorrent blocks above 5/s
    (dos_blocker); we allow more because one busy client behind one IP is common."""
    rate_limit_burst: int = 500
    rate_limit_block_seconds: float = 300.0
    """An IP over the limit is ignored this long (libtorrent: 5 minutes)."""
    receive_queue_size: int = 1024
    """Datagrams waiting for the receive loop; beyond this they are dropped and counted."""

    # --- liveness gossip (docs/gossip.md) --------------------------------------------------------
    gossip_enabled: bool = True
    """Probe routing-table nodes SWIM-style and exchange liveness claims with other kadnode nodes
    (`kn_gossip`); off, a node learns of failures only from its own timeouts, as plain BEP 5 nodes do."""
    gossip_bytes_per_second: float = 200.0
    """Budget for everything gossip sends (probes, indirect probes, claims, including those piggybacked on
    other traffic), IPv4/UDP headers counted; issue 5 allows 300 B/s, and answering others' probes takes
    ~80 of it. Below ~100 a node can no longer probe once a second: detection slows, nothing breaks. The
    finer tuning (probe interval, suspicion multipliers) is `kadnode.core.gossip.GossipSettings`."""

    # --- identity -----------------------------------------------------------------------------
    client_version: bytes = b"KN\x00\x01"
    """The `v` field: two letters naming the client and two version bytes."""

    def with_changes(self, **changes: Any) -> Settings:
        """A copy with the given fields changed; unknown names raise TypeError."""
        return replace(self, **changes)

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]
