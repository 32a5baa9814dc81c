"""kadnode and libtorrent 2.1 in one DHT on loopback: each keeps the other in its routing table, finds
what the other announced, and kadnode's codec reads libtorrent's own datagrams.

libtorrent blocks while it waits for alerts, so every call into it runs in a worker thread
(``asyncio.to_thread``) and the kadnode nodes keep serving on the event loop meanwhile.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack, closing
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pytest

from kadnode import Node
from kadnode.core.routing import NodeState
from kadnode.types import Addr, NodeInfo
from kadnode.wire.compact import id_from_bytes, id_to_bytes
from kadnode.wire.krpc import (
    AnnouncePeer,
    ErrorReply,
    FindNode,
    GetPeers,
    Message,
    Query,
    Response,
    decode_message,
    encode_message,
    response_nodes,
    response_peers,
    response_token,
)
from tests.interop.ltpeer import LibtorrentDhtPeer
from tests.interop.mesh import STEP_TIMEOUT, in_thread, kadnode_cli, start_mixed_network

pytestmark = pytest.mark.interop

KADNODE_HOSTS = [f"127.0.0.{i}" for i in range(30, 35)]
LIBTORRENT_HOSTS = ["127.0.0.40", "127.0.0.41", "127.0.0.42"]
RAW_HOST = "127.0.0.45"
"""Where the hand-driven UDP socket lives (nothing else uses it)."""
DAEMON_HOST = "127.0.0.36"
DAEMON_PEER_HOSTS = ("127.0.0.46", "127.0.0.47")

@dataclass
class Mesh:
    nodes: list[Node]
    peers: list[LibtorrentDhtPeer]
    peer_seeds: list[list[Addr]]
    """The kadnode endpoints each libtorrent peer was bootstrapped from."""

    def node_at(self, addr: Addr) -> Node:
        return next(n for n in self.nodes if n.addr == addr)


@pytest.fixture
async def mesh() -> AsyncIterator[Mesh]:
    """Five kadnode nodes (one seed, four bootstrapped from it) and three libtorrent peers, each
    bootstrapped from two kadnode nodes. Ports are chosen by the OS."""
    async with AsyncExitStack() as stack:
        nodes, peers, peer_seeds = await start_mixed_network(stack, KADNODE_HOSTS, LIBTORRENT_HOSTS)
        yield Mesh(nodes, peers, peer_seeds)


def kadnode_table(node: Node) -> dict[Addr, int]:
    return {entry.addr: entry.id for entry in node.core.routing_table.entries()}


def holds(node: Node, addr: Addr) -> bool:
    return addr in kadnode_table(node)


async def wait_until(condition: Callable[[], bool], timeout: float = STEP_TIMEOUT) -> None:
    """Poll ``condition`` while the event loop runs; TimeoutError if it does not hold in time."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.05)


# --- 1. routing tables ---------------------------------------------------------------------------


async def test_libtorrent_keeps_kadnode_nodes_in_its_routing_table(mesh: Mesh) -> None:
    kadnode_ids = {node.addr: id_to_bytes(node.node_id) for node in mesh.nodes}
    for peer, seeds in zip(mesh.peers, mesh.peer_seeds, strict=True):
        for seed in seeds:
            assert await in_thread(peer.wait_for_node, seed, STEP_TIMEOUT), f"{peer} never verified {seed}"
        # A lookup walks on from the seeds to the other kadnode nodes, which answer and so enter the table.
        await in_thread(peer.get_peers, os.urandom(20), STEP_TIMEOUT)
        entries = await in_thread(peer.routing_entries)
        known = {addr: node_id for node_id, addr in entries if addr in kadnode_ids}
        assert len(known) >= 3, f"{peer} holds only {sorted(known)} of kadnode's nodes"
        # libtorrent files each node under the ID kadnode put on the wire.
        assert all(kadnode_ids[addr] == node_id for addr, node_id in known.items())


async def test_kadnode_keeps_libtorrent_peers_in_its_routing_table(mesh: Mesh) -> None:
    # Every libtorrent peer queried its seeds while bootstrapping; kadnode files a querying node.
    for peer, seeds in zip(mesh.peers, mesh.peer_seeds, strict=True):
        peer_id = id_from_bytes(await in_thread(peer.node_id))
        for seed in seeds:
            node = mesh.node_at(seed)
            await wait_until(partial(holds, node, peer.addr))
            assert kadnode_table(node)[peer.addr] == peer_id


async def test_gossip_pings_libtorrent_peers_and_keeps_them_good(mesh: Mesh) -> None:
    """Issue 5, must-show 5: libtorrent answers kn_gossip with 204, so kadnode's gossip probes it with
    plain ping from then on; it stays in the table, good, and no node is evicted meanwhile."""
    node = mesh.node_at(mesh.peer_seeds[0][0])
    peer = mesh.peers[0]
    await wait_until(partial(holds, node, peer.addr))
    peer_id = kadnode_table(node)[peer.addr]

    def probed_as_plain() -> bool:
        liveness = node.core.liveness
        return liveness is not None and liveness.gossip.is_plain(peer_id)

    await wait_until(probed_as_plain, timeout=60)
    liveness = node.core.liveness
    assert liveness is not None
    pings_before = liveness.gossip.counters["probes.acked"]
    await asyncio.sleep(3 * liveness.gossip.settings.probe_interval * max(1, len(liveness.gossip)))
    assert liveness.gossip.counters["probes.acked"] > pings_before
    entry = node.core.routing_table.get(peer_id)
    assert entry is not None and entry.state(node.now(), node.core.settings) is NodeState.GOOD
    assert sum(n.core.counters["routing.evicted"] for n in mesh.nodes) == 0


# --- 2. and 3. announce / get_peers across implementations ---------------------------------------


async def test_libtorrent_announce_is_found_by_kadnode(mesh: Mesh) -> None:
    info_hash = hashlib.sha1(b"announced through libtorrent").digest()
    peer = mesh.peers[0]
    await in_thread(peer.announce, info_hash, 51_413, STEP_TIMEOUT)
    expected: Addr = (peer.host, 51_413)
    for node in (mesh.nodes[0], mesh.nodes[-1]):
        async with asyncio.timeout(STEP_TIMEOUT):
            result = await node.get_peers(info_hash)
        assert expected in result.peers, f"{node.addr} found {result.peers}"
        assert result.info_hash == info_hash


async def test_kadnode_announce_is_found_by_libtorrent(mesh: Mesh) -> None:
    info_hash = hashlib.sha1(b"announced through kadnode").digest()
    node = mesh.nodes[2]
    # Let the announcer know the libtorrent peers, so some of the closest nodes it stores at are them.
    async with asyncio.timeout(STEP_TIMEOUT):
        await node.find_node(id_from_bytes(info_hash))
    async with asyncio.timeout(STEP_TIMEOUT):
        result = await node.announce(info_hash, 6_881)
    assert result.stored_at >= 1
    expected: Addr = (node.addr[0], 6_881)
    for peer in mesh.peers:
        found = await in_thread(peer.get_peers, info_hash, STEP_TIMEOUT)
        assert expected in found, f"{peer} found {found}"
    # At least one libtorrent peer accepted kadnode's announce_peer (and so kadnode's use of its token).
    stored = [p for p in mesh.peers if (info_hash, expected) in p.announces_received()]
    assert stored, "no libtorrent peer accepted kadnode's announce_peer"


# --- 2b. the same through the daemon and the CLI ------------------------------------------------


def test_libtorrent_announce_is_found_through_the_cli(tmp_path: Path) -> None:
    """`kadnode run` joins two libtorrent peers; `kadnode peers` finds what one of them announced."""
    with (
        LibtorrentDhtPeer(DAEMON_PEER_HOSTS[0], 0) as first,
        LibtorrentDhtPeer(DAEMON_PEER_HOSTS[1], 0, bootstrap=[first.addr]) as second,
    ):
        first.add_node(second.addr)
        seed = f"{first.addr[0]}:{first.addr[1]}"
        run = [sys.executable, "-m", "kadnode", "run", "--host", DAEMON_HOST, "--port", "0"]
        run += ["--data-dir", str(tmp_path), "--bootstrap", seed]
        daemon = subprocess.Popen(run, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            # Ready once the control socket answers and the bootstrap filled the table.
            deadline = time.monotonic() + STEP_TIMEOUT
            table_size = 0
            while table_size < 2:
                assert daemon.poll() is None, daemon.stderr.read() if daemon.stderr else ""
                assert time.monotonic() < deadline, "the daemon did not bootstrap from libtorrent"
                time.sleep(0.1)
                status = kadnode_cli("status", "--data-dir", str(tmp_path), "--json")
                if status.returncode == 0:
                    table_size = json.loads(status.stdout)["routing_table"]["nodes"]
            info_hash = hashlib.sha1(b"announced through libtorrent, found by the CLI").digest()
            second.announce(info_hash, 7_777, STEP_TIMEOUT)
            peers = kadnode_cli("peers", info_hash.hex(), "--data-dir", str(tmp_path), "--json")
            assert peers.returncode == 0, peers.stderr
            assert f"{second.host}:7777" in json.loads(peers.stdout)
        finally:
            daemon.terminate()
            try:
                daemon.communicate(timeout=STEP_TIMEOUT)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.communicate()
        assert daemon.returncode == 0


# --- 4. raw KRPC against libtorrent --------------------------------------------------------------


@pytest.fixture
def lt_pair() -> Iterator[tuple[LibtorrentDhtPeer, LibtorrentDhtPeer]]:
    """Two libtorrent peers that know each other, for hand-made queries."""
    with (
        LibtorrentDhtPeer("127.0.0.43", 0) as first,
        LibtorrentDhtPeer("127.0.0.44", 0, bootstrap=[first.addr]) as second,
    ):
        first.add_node(second.addr)
        assert first.wait_for_node(second.addr, STEP_TIMEOUT)
        yield first, second


@pytest.fixture
def raw_socket() -> Iterator[socket.socket]:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_DGRAM)) as sock:
        sock.bind((RAW_HOST, 0))
        sock.settimeout(STEP_TIMEOUT)
        yield sock


def exchange(sock: socket.socket, data: bytes, to: Addr, tid: bytes) -> Message:
    """Send one datagram and return the reply carrying ``tid`` (libtorrent may query us meanwhile)."""
    sock.sendto(data, to)
    while True:
        reply, source = sock.recvfrom(4096)
        message = decode_message(reply)
        if source == to and not isinstance(message, Query) and message.tid == tid:
            return message


def test_libtorrent_ping_reply_parses(
    lt_pair: tuple[LibtorrentDhtPeer, LibtorrentDhtPeer], raw_socket: socket.socket
) -> None:
    peer, _ = lt_pair
    our_id = os.urandom(20)
    # Encoded by hand, independently of kadnode's encoder.
    ping = b"d1:ad2:id20:" + our_id + b"e1:q4:ping1:t2:pi1:y1:qe"
    reply = exchange(raw_socket, ping, peer.addr, b"pi")
    assert isinstance(reply, Response)
    assert reply.sender_id == peer.node_id()
    assert reply.version is not None and reply.version.startswith(b"LT")
    # BEP 42: libtorrent tells us the address it saw.
    assert reply.ip == raw_socket.getsockname()


def test_libtorrent_find_node_reply_parses(
    lt_pair: tuple[LibtorrentDhtPeer, LibtorrentDhtPeer], raw_socket: socket.socket
) -> None:
    peer, other = lt_pair
    query = Query(tid=b"fn", sender_id=os.urandom(20), body=FindNode(target=other.node_id()))
    reply = exchange(raw_socket, encode_message(query), peer.addr, b"fn")
    assert isinstance(reply, Response)
    assert reply.sender_id == peer.node_id()
    nodes = response_nodes(reply)
    assert NodeInfo(id_from_bytes(other.node_id()), other.addr) in nodes
    assert all(node.addr[0].startswith("127.") for node in nodes)


def test_announce_peer_encoded_by_kadnode_is_accepted_by_libtorrent(
    lt_pair: tuple[LibtorrentDhtPeer, LibtorrentDhtPeer], raw_socket: socket.socket
) -> None:
    # (No lookup from the other peer here: libtorrent now lists our raw socket as a node, and a
    # lookup would wait its full 15 s timeout for the socket's answer.)
    peer, _ = lt_pair
    our_id = os.urandom(20)
    info_hash = hashlib.sha1(b"raw announce_peer").digest()
    get_peers = Query(tid=b"gp", sender_id=our_id, body=GetPeers(info_hash=info_hash))
    reply = exchange(raw_socket, encode_message(get_peers), peer.addr, b"gp")
    assert isinstance(reply, Response)
    assert response_peers(reply) == []
    token = response_token(reply)
    assert token
    body = AnnouncePeer(info_hash=info_hash, port=6_889, token=token)
    announce = Query(tid=b"ap", sender_id=our_id, body=body)
    reply = exchange(raw_socket, encode_message(announce), peer.addr, b"ap")
    assert isinstance(reply, Response), reply
    expected: Addr = (RAW_HOST, 6_889)
    assert (info_hash, expected) in peer.announces_received()
    # A second get_peers now returns the peer as a compact `values` entry.
    again = Query(tid=b"g2", sender_id=our_id, body=GetPeers(info_hash=info_hash))
    reply = exchange(raw_socket, encode_message(again), peer.addr, b"g2")
    assert isinstance(reply, Response)
    assert response_peers(reply) == [expected]


def test_libtorrent_error_reply_parses(
    lt_pair: tuple[LibtorrentDhtPeer, LibtorrentDhtPeer], raw_socket: socket.socket
) -> None:
    peer, _ = lt_pair
    # get_peers without info_hash: libtorrent answers with a protocol error.
    bad = b"d1:ad2:id20:" + os.urandom(20) + b"e1:q9:get_peers1:t2:er1:y1:qe"
    reply = exchange(raw_socket, bad, peer.addr, b"er")
    assert isinstance(reply, ErrorReply)
    assert reply.code == 203
    assert reply.message


def test_libtorrent_queries_decode(
    lt_pair: tuple[LibtorrentDhtPeer, LibtorrentDhtPeer], raw_socket: socket.socket
) -> None:
    """libtorrent's own get_peers (sent when it is told about our socket) decodes as a Query."""
    peer, _ = lt_pair
    peer.add_node(raw_socket.getsockname())
    data, source = raw_socket.recvfrom(4096)
    assert source == peer.addr
    query = decode_message(data)
    assert isinstance(query, Query)
    assert isinstance(query.body, GetPeers)
    assert query.sender_id == peer.node_id()
    assert query.version is not None and query.version.startswith(b"LT")
    assert not query.read_only


# --- 5. libtorrent's exact query bytes, replayed to kadnode --------------------------------------


async def test_kadnode_answers_libtorrents_get_peers_bytes(
    lt_pair: tuple[LibtorrentDhtPeer, LibtorrentDhtPeer], raw_socket: socket.socket
) -> None:
    """Capture a get_peers exactly as libtorrent encodes it (with `v`, without `ro`) and replay the
    bytes to a kadnode node: the reply must carry a token and nodes, and kadnode must file the
    sender."""
    peer, _ = lt_pair
    peer.add_node(raw_socket.getsockname())
    data, _ = await asyncio.to_thread(raw_socket.recvfrom, 4096)
    captured = decode_message(data)
    assert isinstance(captured, Query) and b"1:v4:LT" in data and b"2:ro" not in data
    async with (
        Node(host=KADNODE_HOSTS[0], port=0) as seed,
        Node(host=KADNODE_HOSTS[1], port=0, bootstrap=[seed.addr]) as node,
    ):
        async with asyncio.timeout(STEP_TIMEOUT):
            await node.bootstrap()
        reply = await asyncio.to_thread(exchange, raw_socket, data, node.addr, captured.tid)
        assert isinstance(reply, Response)
        assert reply.sender_id == id_to_bytes(node.node_id)
        assert response_token(reply)
        assert NodeInfo(seed.node_id, seed.addr) in response_nodes(reply)
        assert reply.ip == raw_socket.getsockname()
        # The query named libtorrent's ID; kadnode files it under the socket that sent it (ours).
        assert kadnode_table(node).get(raw_socket.getsockname()) == id_from_bytes(captured.sender_id)
