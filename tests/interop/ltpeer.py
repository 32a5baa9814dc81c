"""A libtorrent 2.1 DHT node confined to loopback, driven synchronously, for interoperability tests.

libtorrent is the reference peer: if it keeps our nodes in its routing table, finds what we announce and
we find what it announces, we speak the same Mainline DHT. Getting it to run on 127.0.0.0/8 takes a
handful of settings found by experiment (``bench/ltloopback.py`` says why for each), and nothing it does
may leave 127.0.0.0/8.

Everything here blocks (libtorrent delivers results as alerts that have to be polled). From asyncio code
call the methods through ``asyncio.to_thread`` so the event loop, and the kadnode nodes on it, keep
running while libtorrent waits; ``wait_for_alert`` releases the GIL. One instance must not be used from
two threads at once (a lock enforces it).

Alert objects are views into libtorrent's memory that die at the next ``pop_alerts()``; every field
needed is copied into plain Python values as soon as an alert is popped, and no alert is kept.

BEP 44 items: libtorrent's bindings have no ed25519 helpers, so the few BEP 44 rules a test needs to
judge what libtorrent returns (the signing buffer, libtorrent's expanded secret key) are written here
again, on purpose independently of ``kadnode.core.bep44``: this module is the oracle kadnode is checked
against, and must not share its mistakes.
"""

from __future__ import annotations

import hashlib
import ipaddress
import socket
import struct
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, cast

import libtorrent as lt
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from bench import ltloopback
from bench.ltloopback import loopback_only_filter
from kadnode.types import Addr
from kadnode.wire.bencode import bencode

LOOPBACK = ipaddress.ip_network("127.0.0.0/8")

_CATEGORY = lt.alert.category_t
ALERT_MASK = (
    _CATEGORY.status_notification  # listen_succeeded / listen_failed
    | _CATEGORY.error_notification
    | _CATEGORY.dht_notification  # incoming announce_peer, BEP 44 put and item alerts
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
    """The session settings for a DHT-only libtorrent on ``host:port`` (bench/ltloopback.py says why each
    one is needed)."""
    return ltloopback.loopback_settings(host, port, int(ALERT_MASK))


# --- BEP 44, independently of kadnode ------------------------------------------------------------

SEED_LEN = 32
EXPANDED_SECRET_LEN = 64
PUBLIC_KEY_LEN = 32


def ed25519_public_key(seed: bytes) -> bytes:
    """The RFC 8032 public key of a 32-byte ed25519 seed."""
    if len(seed) != SEED_LEN:
        raise ValueError(f"an ed25519 seed is {SEED_LEN} bytes")
    return Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes_raw()


def expanded_secret(seed: bytes) -> bytes:
    """The 64-byte secret key ``dht_put_mutable_item`` wants: SHA-512 of the seed, scalar half clamped.

    libtorrent embeds orlp/ed25519, which keeps keys in this form; handing it the bare seed signs with
    a different scalar, and every node then refuses the item's signature.
    """
    if len(seed) != SEED_LEN:
        raise ValueError(f"an ed25519 seed is {SEED_LEN} bytes")
    expanded = bytearray(hashlib.sha512(seed).digest())
    expanded[0] &= 0xF8
    expanded[31] &= 0x3F
    expanded[31] |= 0x40
    return bytes(expanded)


def signing_buffer(salt: bytes, seq: int, value: bytes) -> bytes:
    """BEP 44: what a mutable item's signature covers (``4:salt..`` only for a non-empty salt)."""
    salted = b"4:salt" + str(len(salt)).encode() + b":" + salt if salt else b""
    return salted + b"3:seqi" + str(seq).encode() + b"e1:v" + value


def signature_valid(public_key: bytes, signature: bytes, salt: bytes, seq: int, value: bytes) -> bool:
    """Whether ``signature`` is the key's ed25519 signature of the item (``value`` = bencoded ``v``)."""
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, signing_buffer(salt, seq, value))
    except (InvalidSignature, ValueError):
        return False
    return True


@dataclass(frozen=True, slots=True)
class LtImmutablePut:
    """libtorrent's report of an immutable put (``dht_put_alert``)."""

    target: bytes
    """The target libtorrent computed (SHA-1 of the value as it bencodes it)."""
    value: bytes
    """The bencoded ``v`` (libtorrent's encoding of the entry it was given)."""
    num_success: int
    """Nodes that acknowledged the put."""


@dataclass(frozen=True, slots=True)
class LtMutablePut:
    """libtorrent's report of a mutable put (``dht_put_alert``); the alert carries no target."""

    public_key: bytes
    salt: bytes
    seq: int
    """Chosen by libtorrent: one more than the highest seq its lookup found (1 when none)."""
    signature: bytes
    value: bytes
    """The bencoded ``v``: the bindings put a byte string, so this is ``<len>:<bytes>``."""
    num_success: int


@dataclass(frozen=True, slots=True)
class LtMutableItem:
    """A mutable item libtorrent's get found (the authoritative answer), its signature checked here."""

    public_key: bytes
    salt: bytes
    seq: int
    signature: bytes
    value: bytes
    """The bencoded ``v``."""


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
        # BEP 44: results keyed by target, or by (public key, salt) for mutable items.
        self._immutable_puts: dict[bytes, int] = {}  # target -> num_success
        self._mutable_puts: dict[tuple[bytes, bytes], tuple[int, bytes, int]] = {}  # seq, sig, num_success
        self._immutable_items: dict[bytes, bytes | None] = {}
        self._mutable_items: dict[tuple[bytes, bytes], LtMutableItem | None] = {}

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
                    where = f"{self.host}:{self.port}"
                    raise OSError(f"libtorrent cannot listen on {where}: {self._listen_error}")
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

    # --- BEP 44 items ------------------------------------------------------------------------

    def put_immutable(self, value: object, timeout: float = 10) -> LtImmutablePut:
        """``dht_put_immutable_item``: a get lookup for tokens, then put to the closest nodes.

        ``value`` is any entry libtorrent's converter takes (bytes, int, list, dict with bytes keys);
        libtorrent encodes it itself. Returns once ``dht_put_alert`` reports the put done.
        """
        with self._lock:
            session = self._running()
            self._pump(0)
            # The stubs' entry type is private; libtorrent's converter raises TypeError for anything else.
            target = bytes(session.dht_put_immutable_item(cast(Any, value)).to_bytes())
            self._immutable_puts.pop(target, None)
            if not self._wait(lambda: target in self._immutable_puts, timeout):
                raise TimeoutError(f"libtorrent's put of immutable item {target.hex()} did not finish")
            num_success = self._immutable_puts.pop(target)
            return LtImmutablePut(target, lt.bencode(cast(Any, value)), num_success)

    def put_mutable(
        self,
        key: bytes,
        value: bytes,
        *,
        salt: bytes = b"",
        public_key: bytes | None = None,
        timeout: float = 10,
    ) -> LtMutablePut:
        """``dht_put_mutable_item``: libtorrent looks the item up, signs ``value`` with seq one above the
        highest it found, and puts it to the closest nodes that gave tokens.

        ``key`` is a 32-byte ed25519 seed, or libtorrent's 64-byte expanded secret with its
        ``public_key``. ``value`` is a byte string: the bindings put nothing else, and choose the seq
        themselves (no way to pass one).
        """
        secret, pk = _signing_pair(key, public_key)
        wanted = (pk, bytes(salt))
        with self._lock:
            session = self._running()
            self._pump(0)
            self._mutable_puts.pop(wanted, None)
            session.dht_put_mutable_item(secret, pk, bytes(value), bytes(salt))
            if not self._wait(lambda: wanted in self._mutable_puts, timeout):
                raise TimeoutError(f"libtorrent's put of mutable item {pk.hex()}/{salt!r} did not finish")
            seq, signature, num_success = self._mutable_puts.pop(wanted)
            return LtMutablePut(pk, bytes(salt), seq, signature, lt.bencode(bytes(value)), num_success)

    def get_immutable(self, target: bytes, timeout: float = 10) -> bytes | None:
        """``dht_get_immutable_item``: the bencoded value, or None when the lookup found none.

        libtorrent reports "nothing found" as an empty entry, so a value counts as found only if it
        hashes to ``target`` (the one value this misreads is the empty string, ``0:``).
        """
        self._check_hash(target)
        with self._lock:
            session = self._running()
            self._pump(0)
            self._immutable_items.pop(target, None)
            session.dht_get_immutable_item(lt.sha1_hash(target))
            if not self._wait(lambda: target in self._immutable_items, timeout):
                raise TimeoutError(f"libtorrent's get of immutable item {target.hex()} did not finish")
            return self._immutable_items.pop(target)

    def get_mutable(self, public_key: bytes, salt: bytes = b"", timeout: float = 10) -> LtMutableItem | None:
        """``dht_get_mutable_item``: the item with the highest seq found, once libtorrent has heard from
        the closest nodes (its authoritative alert), or None when it found none.

        libtorrent reports "nothing found" as an empty entry with seq 0 and a stale signature buffer, so
        an item counts as found only if its signature verifies (libtorrent itself stores and returns
        only items whose signature it checked).
        """
        if len(public_key) != PUBLIC_KEY_LEN:
            raise ValueError(f"an ed25519 public key is {PUBLIC_KEY_LEN} bytes")
        wanted = (bytes(public_key), bytes(salt))
        with self._lock:
            session = self._running()
            self._pump(0)
            self._mutable_items.pop(wanted, None)
            session.dht_get_mutable_item(wanted[0], wanted[1])
            if not self._wait(lambda: wanted in self._mutable_items, timeout):
                what = f"mutable item {public_key.hex()}/{salt!r}"
                raise TimeoutError(f"libtorrent's get of {what} did not finish")
            return self._mutable_items.pop(wanted)

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
        elif isinstance(alert, lt.dht_put_alert):
            target = bytes(alert.target.to_bytes())
            if any(target):  # an immutable put; a mutable one leaves the target zero
                self._immutable_puts[target] = int(alert.num_success)
            else:
                key = (bytes(alert.public_key), bytes(alert.salt))
                self._mutable_puts[key] = (int(alert.seq), bytes(alert.signature), int(alert.num_success))
        elif isinstance(alert, lt.dht_immutable_item_alert):
            target = bytes(alert.target.to_bytes())
            value = _encoded(alert.item)
            self._immutable_items[target] = value if hashlib.sha1(value).digest() == target else None
        elif isinstance(alert, lt.dht_mutable_item_alert) and alert.authoritative:
            public_key, salt, seq = bytes(alert.key), bytes(alert.salt), int(alert.seq)
            signature, value = bytes(alert.signature), _encoded(alert.item)
            valid = signature_valid(public_key, signature, salt, seq, value)
            item = LtMutableItem(public_key, salt, seq, signature, value) if valid else None
            self._mutable_items[(public_key, salt)] = item


def _encoded(entry: object) -> bytes:
    """An alert's item, bencoded by libtorrent (an absent or empty entry comes out as ``0:``)."""
    return lt.bencode(cast(Any, b"" if entry is None else entry))


def _signing_pair(key: bytes, public_key: bytes | None) -> tuple[bytes, bytes]:
    """(libtorrent's 64-byte secret, the public key) from a seed, or from a secret and its public key."""
    if len(key) == SEED_LEN:
        derived = ed25519_public_key(key)
        if public_key is not None and public_key != derived:
            raise ValueError("public_key does not belong to the seed")
        return expanded_secret(key), derived
    if len(key) == EXPANDED_SECRET_LEN and public_key is not None and len(public_key) == PUBLIC_KEY_LEN:
        return bytes(key), bytes(public_key)
    raise ValueError("key must be a 32-byte seed, or a 64-byte expanded secret with a 32-byte public_key")
