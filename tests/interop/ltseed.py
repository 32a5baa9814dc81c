"""A libtorrent 2.1 session that downloads and seeds torrents on loopback, its DHT bootstrapped from kadnode.

``ltpeer.LibtorrentDhtPeer`` runs libtorrent's DHT alone; this one also moves file data over TCP, so a
test can check that libtorrent fetches what kadnode shares (magnet link only: peers from the DHT,
metadata by BEP 9) and that kadnode fetches what libtorrent seeds.

With ``bench.ltloopback.loopback_settings(..., peers=True)`` (why each setting is needed is written there), peer
connections are TCP only and unencrypted: libtorrent's defaults try uTP first and then an encrypted
handshake, and each attempt at a peer that speaks neither costs seconds before the plain TCP one. kadnode
speaks plain BEP 3 over TCP, so the defaults only slow the test down.

Everything blocks; alert objects are read at once and never kept (they die at the next ``pop_alerts``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType

import libtorrent as lt

from bench.common import free_port
from bench.ltloopback import loopback_only_filter, loopback_settings
from kadnode.types import Addr
from kadnode.wire.bencode import bencode
from tests.interop.ltpeer import _compact, _is_loopback, _require_loopback

ALERT_MASK = lt.alert.category_t.status_notification | lt.alert.category_t.error_notification
"""Listen results and errors; torrent state is read by polling ``status()``."""
POLL_INTERVAL = 0.05
ANNOUNCE_EVERY = 1.0
"""While waiting, ask the torrent for a DHT announce (a get_peers lookup) this often: libtorrent's own
schedule announces once at start, then every 15 minutes."""


class LibtorrentTorrentSession:
    """One libtorrent session on ``host`` (127.0.0.0/8) with TCP peers and a DHT that knows ``bootstrap``."""

    def __init__(self, host: str, bootstrap: Sequence[Addr] = ()) -> None:
        if not _is_loopback(host):
            raise ValueError(f"libtorrent test sessions only run on 127.0.0.0/8, not {host!r}")
        for addr in bootstrap:
            _require_loopback(addr)
        self.host = host
        self.port = 0
        self._bootstrap = [(addr[0], addr[1]) for addr in bootstrap]
        self._session: lt.session | None = None
        self._listening: set[str] = set()
        self._listen_error: str | None = None
        self.errors: list[str] = []
        """Error alerts, as text, for failure messages."""

    @property
    def addr(self) -> Addr:
        return (self.host, self.port)

    def start(self, timeout: float = 10) -> None:
        """Listen on TCP and UDP, then start the DHT with the bootstrap nodes as its saved state."""
        if self._session is not None:
            raise RuntimeError("already started")
        self.port = free_port(self.host)
        params = lt.read_session_params(bencode({b"dht state": {b"nodes": [_compact(a) for a in self._bootstrap]}}))
        params.settings = loopback_settings(self.host, self.port, int(ALERT_MASK), peers=True)
        params.ip_filter = loopback_only_filter()
        self._session = lt.session(params)
        try:
            if not self._wait(lambda: {"tcp", "udp"} <= self._listening or self._listen_error is not None, timeout):
                raise TimeoutError(f"libtorrent did not listen on {self.host}:{self.port}")
            if self._listen_error is not None:
                raise OSError(f"libtorrent cannot listen on {self.host}:{self.port}: {self._listen_error}")
            self._session.apply_settings({"enable_dht": True})
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        session, self._session = self._session, None
        if session is None:
            return
        session.pause()
        session.apply_settings({"enable_dht": False})
        session.pop_alerts()
        del session  # the last reference: libtorrent shuts down here

    def __enter__(self) -> LibtorrentTorrentSession:
        if self._session is None:
            self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # --- torrents -----------------------------------------------------------------------------------

    def add_magnet(self, uri: str, save_path: Path) -> lt.torrent_handle:
        """Add a torrent known only by its magnet link: peers come from the DHT, metadata from them."""
        params = lt.parse_magnet_uri(uri)
        params.save_path = str(save_path)
        return self._running().add_torrent(params)

    def add_torrent(self, torrent: bytes, save_path: Path) -> lt.torrent_handle:
        """Add a .torrent whose content is already in ``save_path``: libtorrent checks it, then seeds."""
        params = lt.add_torrent_params()
        params.ti = lt.torrent_info(torrent)
        params.save_path = str(save_path)
        return self._running().add_torrent(params)

    def wait_for(
        self, handle: lt.torrent_handle, condition: Callable[[lt.torrent_status], bool], timeout: float,
        *, announce: bool = True,
    ) -> lt.torrent_status:
        """Poll the torrent's status until ``condition`` holds, asking for a DHT announce every
        ANNOUNCE_EVERY seconds meanwhile; TimeoutError with the last status otherwise."""
        deadline = time.monotonic() + timeout
        next_announce = 0.0
        while True:
            self._pump(0)
            status = handle.status()
            if condition(status):
                return status
            now = time.monotonic()
            if now >= deadline:
                raise TimeoutError(f"libtorrent: {describe(status)}; errors: {self.errors[-5:]}")
            if announce and now >= next_announce:
                handle.force_dht_announce()
                next_announce = now + ANNOUNCE_EVERY
            self._pump(POLL_INTERVAL)

    # --- internals ----------------------------------------------------------------------------------

    def _running(self) -> lt.session:
        if self._session is None:
            raise RuntimeError("the libtorrent session is not running")
        return self._session

    def _wait(self, condition: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not condition():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._pump(min(remaining, 0.1))
        return True

    def _pump(self, timeout: float) -> None:
        session = self._running()
        if timeout > 0:
            session.wait_for_alert(max(1, int(timeout * 1000)))
        for alert in session.pop_alerts():
            if isinstance(alert, lt.listen_succeeded_alert):
                kind = {lt.socket_type_t.tcp: "tcp", lt.socket_type_t.udp: "udp", lt.socket_type_t.utp: "udp"}
                self._listening.add(kind.get(alert.socket_type, "other"))
            elif isinstance(alert, lt.listen_failed_alert):
                self._listen_error = str(alert.message())
            elif alert.category() & lt.alert.category_t.error_notification:
                self.errors.append(str(alert.message()))


def describe(status: lt.torrent_status) -> str:
    """A torrent's state in one line, for failure messages."""
    return (f"state {status.state}, metadata {status.has_metadata}, {status.num_peers} peers "
            f"({status.list_peers} known), {status.total_wanted_done}/{status.total_wanted} bytes, "
            f"error {status.errc.message() if status.errc.value() else '-'}")
