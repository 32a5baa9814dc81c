"""A libtorrent 2.1 DHT node confined to loopback, driven synchronously, for interoperability tests.

libtorrent is the reference peer: if it keeps our nodes in its routing table, finds what we announce and
we find what it announces, we speak the same Mainline DHT. Getting it to run on 127.0.0.0/8 takes a
handful of settings found by experiment (``loopback_settings`` says why for each), and nothing it does
may leave 127.0.0.0/8.

Everything here blocks (libtorrent delivers results as alerts that have to be polled). From asyncio code
call the methods through ``asyncio.to_thread`` so the event loop, and the kadnode nodes on it, keep
running while libtorrent waits; ``wait_for_alert`` releases the GIL. One instance must not be used from
two threads at once (a lock enforces it).

Alert objects are views into libtorrent's memory that die at the next ``pop_alerts()``; every field
needed is copied into plain Python values as soon as an alert is popped, and no alert is kept.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
import threading
import time
from collections.abc import Callable, Sequence
from types import TracebackType

import libtorrent as lt

from kadnode.types import Addr
from kadnode.wire.bencode import bencode

LOOPBACK = ipaddress.ip_network("127.0.0.0/8")

_CATEGORY = lt.alert.category_t
ALERT_MASK = (
    _CATEGORY.status_notification  # listen_succeeded / listen_failed
    | _CATEGORY.error_notification
    | _CATEGORY.dht_notification  # incoming announce_peer (dht_announce_alert)
    | _CATEGORY.dht_operation_notification  # dht_get_peers_reply_alert
)
"""dht_stats_alert and dht_live_nodes_alert are posted whatever the mask says."""

POLL_INTERVAL = 0.02
"""Seconds between ``post_dht_stats`` polls while a lookup runs (a loopback lookup takes ~20-100 ms)."""


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.IPv4Address(host) in LOOPBACK
    except ValueError:
        return False


def _require_loopback(addr: Addr) -> None:
    """Tests never send off 127.0.0.0/8; refuse an address that would make libtorrent do so."""
    if not _is_loopback(addr[0]) or not 0 < addr[1] < 65536:
        raise ValueError(f"not a loopback IPv4 endpoint: {addr!r}")


def _compact(addr: Addr) -> bytes:
    return socket.inet_aton(addr[0]) + struct.pack("!H", addr[1])


def loopback_settings(host: str, port: int) -> lt.settings_pack:
    """The session settings for a DHT-only libtorrent on ``host:port``."""
    return {
        # An explicit loopback interface: with 0.0.0.0 libtorrent marks the loopback socket
        # local-only and never runs the DHT on it.
        "listen_interfaces": f"{host}:{port}",
        # Started by start() once the socket is listening; otherwise the injected nodes are used up
        # before any socket exists and nothing is sent.
        "enable_dht": False,
        # A taken port must fail start(), not silently move to another port.
        "listen_system_port_fallback": False,
        "max_retry_port_bind": 0,
        # Replace the public default router; bootstrap nodes come in as DHT state instead.
        "dht_bootstrap_nodes": "",
        # Everything that would send off loopback.
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "enable_ip_notifier": False,
        # No torrents here, so no peer connections either: only the DHT uses the UDP socket.
        "enable_outgoing_utp": False,
        "enable_outgoing_tcp": False,
        # One node per /24 by default, and every loopback node is in 127.0.0.0/24.
        "dht_restrict_routing_ips": False,
        "dht_restrict_search_ips": False,
        # The default 8,000 B/s quota silently drops incoming queries once spent.
        "dht_upload_rate_limit": 10_000_000,
        # The default blocks an IP for 300 s after 5 messages/s; a test sends far more.
        "dht_block_ratelimit": 1_000_000,
        "dht_block_timeout": 1,
        # get_peers would first send obfuscated targets.
        "dht_privacy_lookups": False,
        # BEP 42 is skipped for 127/8 anyway; keep it from ever mattering.
        "dht_enforce_node_id": False,
        "dht_prefer_verified_node_ids": False,
        # The ip_filter below also guards the DHT.
        "apply_filter_to_dht": True,  # type: ignore[typeddict-unknown-key]  # missing from the stubs
        "alert_mask": ALERT_MASK,
        "alert_queue_size": 10_000,
    }


def loopback_only_filter() -> lt.ip_filter:
    """An ip_filter that blocks every IPv4 address except 127.0.0.0/8."""
    ip_filter = lt.ip_filter()
    ip_filter.add_rule("0.0.0.0", "255.255.255.255", 1)  # 1 = blocked
    ip_filter.add_rule("127.0.0.0", "127.255.255.255", 0)
    return ip_filter


class LibtorrentDhtPeer:
    """One libtorrent session that runs only the DHT, on ``host:port`` in 127.0.0.0/8.

    ``port`` 0 lets the OS pick one; ``addr`` holds the real endpoint after ``start()``. Bootstrap
    nodes are handed in as saved DHT state, not as routers: libtorrent never puts a router in its
    routing table and bypasses routers once it knows three nodes.
    """

    def __init__(self, host: str, port: int, bootstrap: Sequence[Addr] = ()) -> None:
        if not _is_loopback(host):
            raise ValueError(f"libtorrent test peers only run on 127.0.0.0/8, not {host!r}")
        for addr in bootstrap:
            _require_loopback(addr)
        self.host = host
        self.port = port
        self._bootstrap: list[Addr] = [(addr[0], addr[1]) for addr in bootstrap]
        self._lock = threading.RLock()
        self._session: lt.session | None = None
        self._listening = False
        self._listen_error: str | None = None
        # Results copied out of alerts.
        self._stats_posted = 0
        self._stats_seen = 0
        self._lookups: list[str] = []  # lookup types in the most recent dht_stats_alert
        self._live_posted = 0
        self._live_seen = 0
        self._live_nodes: list[tuple[bytes, Addr]] = []
        self._peers_found: dict[bytes, list[Addr]] = {}
        self._announces_in: list[tuple[bytes, Addr]] = []

    # --- lifecycle ----------------------------------------------------------------------------

    @property
    def addr(self) -> Addr:
        return (self.host, self.port)

    def start(self, timeout: float = 10) -> None:
        """Open the session, wait until its UDP socket listens, then start the DHT."""
        with self._lock:
            if self._session is not None:
                raise RuntimeError("already started")
            nodes = [_compact(addr) for addr in self._bootstrap]
            params = lt.read_session_params(bencode({b"dht state": {b"nodes": nodes}}))
            params.settings = loopback_settings(self.host, self.port)
            params.ip_filter = loopback_only_filter()
            self._session = lt.session(params)
            try:
                if not self._wait(lambda: self._listening or self._listen_error is not None, timeout):
                    raise TimeoutError(f"libtorrent did not listen on {self.host}:{self.port}")
                if self._listen_error is not None:
                    raise OSError(f"libtorrent cannot listen on {self.host}:{self.port}: {self._listen_error}")
                self._session.apply_settings({"enable_dht": True})
                if not self._wait(lambda: self._read_node_id() is not None, timeout):
                    raise TimeoutError("libtorrent's DHT did not start")
            except BaseException:
                self.close()
                raise

    def close(self) -> None:
        """Stop the DHT and destroy the session (libtorrent's destructor waits for its threads)."""
        with self._lock:
            session, self._session = self._session, None
            if session is None:
                return
            session.pause()
            session.apply_settings({"enable_dht": False})
            session.pop_alerts()
            del session  # the last reference: the session shuts down here

    def __enter__(self) -> LibtorrentDhtPeer:
        if self._session is None:
            self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "running" if self._session is not None else "stopped"
        return f"LibtorrentDhtPeer({self.host}:{self.port}, {state})"

    def settings(self) -> dict[str, object]:
        """The session's settings as libtorrent holds them (to check it understood ours)."""
        with self._lock:
            return dict(self._running().get_settings())

    # --- routing table ------------------------------------------------------------------------

    def node_id(self) -> bytes:
        """libtorrent's 20-byte node ID on this socket (read fresh: libtorrent may change it)."""
        with self._lock:
            node_id = self._read_node_id()
            if node_id is None:
                raise RuntimeError("the DHT is not running")
            return node_id

    def add_node(self, addr: Addr) -> None:
        """Ask libtorrent to contact ``addr``; a node that answers enters the routing table at once."""
        _require_loopback(addr)
        with self._lock:
            self._running().add_dht_node((addr[0], addr[1]))

    def routing_entries(self, timeout: float = 5) -> list[tuple[bytes, Addr]]:
        """(node ID, endpoint) of every live node in libtorrent's routing table.

        ``dht_live_nodes`` lists exactly the routing table's buckets. The saved DHT state
        (``session_state()``) is not usable for this: it also holds the replacement caches, where a
        node that merely queried libtorrent waits unverified.
        """
        with self._lock:
            session = self._running()
            node_id = self._read_node_id()
            if node_id is None:
                raise RuntimeError("the DHT is not running")
            self._pump(0)
            wanted = self._live_posted + 1
            self._live_posted += 1
            session.dht_live_nodes(lt.sha1_hash(node_id))
            if not self._wait(lambda: self._live_seen >= wanted, timeout):
                raise TimeoutError("no dht_live_nodes_alert")
            return list(self._live_nodes)

    def routing_table(self) -> list[Addr]:
        """Endpoints of the live nodes in libtorrent's routing table."""
        return [addr for _, addr in self.routing_entries()]

    def wait_for_node(self, addr: Addr, timeout: float) -> bool:
        """Poll the routing table until ``addr`` is in it; False if it is not within ``timeout``."""
        deadline = time.monotonic() + timeout
        wanted = (addr[0], addr[1])
        while True:
            if wanted in self.routing_table():
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            time.sleep(min(0.1, remaining))

    # --- lookups ------------------------------------------------------------------------------

    def announce(self, info_hash: bytes, port: int, timeout: float) -> None:
        """``dht_announce``: a get_peers lookup, then announce_peer to the closest nodes that answered.

        Returns once the lookup has finished; the announce_peer queries are sent by then (loopback
        delivers them within milliseconds).
        """
        self._check_hash(info_hash)
        with self._lock:
            session = self._running()
            self._pump(0)
            first_stats = self._stats_posted + 1
            session.dht_announce(lt.sha1_hash(info_hash), port, 0)
            self._wait_lookups_done(first_stats, timeout, f"announce of {info_hash.hex()}")

    def get_peers(self, info_hash: bytes, timeout: float) -> list[Addr]:
        """``dht_get_peers``: the distinct peers found, in the order the replies brought them."""
        self._check_hash(info_hash)
        with self._lock:
            session = self._running()
            self._pump(0)
            self._peers_found[info_hash] = []
            first_stats = self._stats_posted + 1
            session.dht_get_peers(lt.sha1_hash(info_hash))
            self._wait_lookups_done(first_stats, timeout, f"get_peers of {info_hash.hex()}")
            return self._peers_found.pop(info_hash)

    def announces_received(self) -> list[tuple[bytes, Addr]]:
        """(info-hash, announced peer) of every announce_peer libtorrent accepted so far."""
        with self._lock:
            if self._session is not None:
                self._pump(0)
            return list(self._announces_in)

    # --- internals ----------------------------------------------------------------------------

    def _running(self) -> lt.session:
        if self._session is None:
            raise RuntimeError("the libtorrent session is not running")
        return self._session

    @staticmethod
    def _check_hash(info_hash: bytes) -> None:
        if len(info_hash) != 20:
            raise ValueError("an info-hash is 20 bytes")

    def _read_node_id(self) -> bytes | None:
        """Our node ID from the session's DHT state: entries are 20 ID bytes + the socket's address."""
        if self._session is None:
            return None
        state = lt.write_session_params(self._session.session_state(lt.save_state_flags_t.save_dht_state))
        own = socket.inet_aton(self.host)
        for entry in state.get(b"dht state", {}).get(b"node-id", []):
            if isinstance(entry, bytes) and len(entry) == 24 and entry[20:] == own:
                return entry[:20]
        return None

    def _wait_lookups_done(self, first_stats: int, timeout: float, what: str) -> None:
        """Poll ``post_dht_stats`` until a snapshot taken after the request shows no get_peers lookup.

        No alert says a lookup finished, and ``active_requests`` does not name targets: this waits for
        every get_peers lookup (libtorrent also refreshes with them), which on loopback is quick.
        """
        deadline = time.monotonic() + timeout
        while True:
            self._post_stats()
            self._wait(lambda: self._stats_seen >= self._stats_posted, max(0.0, deadline - time.monotonic()))
            if self._stats_seen >= first_stats and "get_peers" not in self._lookups:
                return
            if time.monotonic() >= deadline:
                raise TimeoutError(f"libtorrent's {what} did not finish in {timeout} s")
            time.sleep(POLL_INTERVAL)

    def _post_stats(self) -> None:
        self._stats_posted += 1
        self._running().post_dht_stats()

    def _wait(self, condition: Callable[[], bool], timeout: float) -> bool:
        """Pump alerts until ``condition()`` holds or ``timeout`` passes."""
        deadline = time.monotonic() + timeout
        while not condition():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._pump(min(remaining, 0.1))
        return True

    def _pump(self, timeout: float) -> None:
        """Wait up to ``timeout`` for alerts, then copy what we need out of each one at once."""
        session = self._running()
        if timeout > 0:
            session.wait_for_alert(max(1, int(timeout * 1000)))
        for alert in session.pop_alerts():
            self._absorb(alert)

    def _absorb(self, alert: lt.alert) -> None:
        if isinstance(alert, lt.listen_succeeded_alert):
            if alert.socket_type in (lt.socket_type_t.udp, lt.socket_type_t.utp):
                self.port = int(alert.port)
                self._listening = True
        elif isinstance(alert, lt.listen_failed_alert):
            # A taken TCP port fails the whole listen socket: the UDP one is never opened.
            self._listen_error = str(alert.message())
        elif isinstance(alert, lt.dht_stats_alert):
            self._stats_seen += 1
            self._lookups = [str(lookup["type"]) for lookup in alert.active_requests]
        elif isinstance(alert, lt.dht_live_nodes_alert):
            self._live_seen += 1
            self._live_nodes = [
                (bytes(node["nid"].to_bytes()), (str(node["endpoint"][0]), int(node["endpoint"][1])))
                for node in alert.nodes
            ]
        elif isinstance(alert, lt.dht_get_peers_reply_alert):
            found = self._peers_found.get(bytes(alert.info_hash.to_bytes()))
            if found is not None:
                for host, port in alert.peers():
                    peer = (str(host), int(port))
                    if peer not in found:
                        found.append(peer)
        elif isinstance(alert, lt.dht_announce_alert):
            peer = (str(alert.ip), int(alert.port))
            self._announces_in.append((bytes(alert.info_hash.to_bytes()), peer))
