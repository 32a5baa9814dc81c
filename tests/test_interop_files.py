"""The file locator against libtorrent 2.1 (issue 6, must show 3): libtorrent fetches what `kadnode run`
shares, knowing only kadnode's magnet link, and `kadnode fetch` gets what libtorrent seeds, knowing only
the info-hash. Peers are found through the DHT alone (no trackers, no peer addresses in the links), and
the metadata travels by BEP 9 each way.

kadnode runs as daemon processes (127.0.0.170-176), libtorrent in this process (127.0.0.173, .177) with
its DHT bootstrapped from the daemons' UDP endpoints.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kadnode.torrent.magnet import parse_target
from kadnode.torrent.metainfo import build_metainfo, torrent_file
from kadnode.types import Addr
from tests.interop.ltseed import LibtorrentTorrentSession
from tests.test_file_locator import Daemon, MiB, share_copies, start_network, stop_all

pytestmark = pytest.mark.interop
TRANSFER_TIMEOUT = 30.0
"""A few MiB over loopback take well under a second once the peers have found each other."""


@pytest.fixture
def workdir(short_dir: Path) -> Path:
    """Data directories live under /tmp/kn-*: a control socket's path must stay under 108 bytes."""
    return short_dir


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    """Every daemon a test starts goes here; all are stopped (by PID) however the test ends."""
    started: list[Daemon] = []
    yield started
    stop_all(started)


def addr(daemon: Daemon) -> Addr:
    return (daemon.host, daemon.port)


def test_libtorrent_fetches_a_kadnode_share_from_its_magnet_link(
    workdir: Path, daemons: list[Daemon], tmp_path: Path
) -> None:
    network = start_network(daemons, workdir, ["127.0.0.170", "127.0.0.171", "127.0.0.172"])
    sharers = network[1:]
    data = os.urandom(3 * MiB + 777)
    share, _ = share_copies(sharers, workdir, "from-kadnode.bin", data)
    magnet = parse_target(share["magnet"])
    assert magnet.peers == () and "tr=" not in share["magnet"]  # the DHT is the only way to the sharers

    save_path = tmp_path / "libtorrent"
    with LibtorrentTorrentSession("127.0.0.173", bootstrap=[addr(d) for d in network]) as session:
        handle = session.add_magnet(share["magnet"], save_path)
        status = session.wait_for(handle, lambda s: s.is_seeding, TRANSFER_TIMEOUT)
        assert status.total_wanted == len(data)

    assert (save_path / "from-kadnode.bin").read_bytes() == data
    served = [sharer.cli_json("shares")["server"] for sharer in sharers]
    assert sum(s["bytes_served"] for s in served) >= len(data), served
    assert sum(s["metadata_served"] for s in served) >= 1, served  # the info dict came from kadnode (BEP 9)


def test_kadnode_fetches_what_libtorrent_seeds(workdir: Path, daemons: list[Daemon], tmp_path: Path) -> None:
    network = start_network(daemons, workdir, ["127.0.0.175", "127.0.0.176"])
    fetcher = network[0]
    content = tmp_path / "seed" / "from-libtorrent.bin"
    content.parent.mkdir()
    data = os.urandom(3 * MiB + 4321)
    content.write_bytes(data)
    meta = build_metainfo(content)
    info_hash = meta.info_hash.hex()

    with LibtorrentTorrentSession("127.0.0.177", bootstrap=[addr(d) for d in network]) as session:
        handle = session.add_torrent(torrent_file(meta), content.parent)
        session.wait_for(handle, lambda s: s.is_seeding, TRANSFER_TIMEOUT, announce=False)
        # libtorrent announces with its listen port; repeat until the kadnode DHT lists it.
        wanted = f"{session.host}:{session.port}"
        deadline = time.monotonic() + TRANSFER_TIMEOUT
        while wanted not in fetcher.cli_json("peers", info_hash):
            assert time.monotonic() < deadline, f"libtorrent's announce never reached the kadnode DHT: {wanted}"
            handle.force_dht_announce()
            time.sleep(0.3)

        out = tmp_path / "out"
        done = fetcher.fetch(info_hash, out)
        assert done.returncode == 0, done.stderr
        uploaded = handle.status().total_payload_upload

    result = json.loads(done.stdout)
    assert result["name"] == "from-libtorrent.bin" and result["peers_used"] == 1 and result["banned"] == []
    assert hashlib.sha256((out / "from-libtorrent.bin").read_bytes()).digest() == hashlib.sha256(data).digest()
    assert uploaded >= len(data)
