"""BEP 44 items between kadnode and libtorrent 2.1 on loopback, both ways.

libtorrent puts an immutable and a salted mutable item and kadnode reads them; kadnode puts them and
libtorrent reads them; a mutable item is updated in turn by each side under one key, and each side sees
the other's higher seq and stores it in place of the old value; and both compute the same targets,
salt included (the class of bug in webtorrent/bittorrent-dht #176, where the salt was hashed apart).

The checks are made with libtorrent's own API, with BEP 44 code in ``tests.interop.ltpeer`` written
apart from kadnode's, and with hand-made KRPC: never only with kadnode's code. Calls into libtorrent
block, so they run in worker threads while the kadnode nodes keep serving on the event loop.
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
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack, closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import libtorrent as lt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from kadnode import Node
from kadnode.core.bep44 import SigningKey, immutable_target, mutable_target
from kadnode.storage.base import ImmutableItem, MutableItem
from kadnode.types import Addr
from kadnode.wire.bencode import Bencodable, bencode
from tests.interop.ltpeer import LibtorrentDhtPeer, ed25519_public_key, expanded_secret, signature_valid
from tests.interop.mesh import STEP_TIMEOUT, in_thread, kadnode_cli, start_mixed_network

pytestmark = pytest.mark.interop

KADNODE_HOSTS = [f"127.0.0.{i}" for i in range(50, 55)]
READER_HOST = "127.0.0.55"
"""A kadnode node started after the puts: whatever its get returns came over the wire."""
LIBTORRENT_HOSTS = ["127.0.0.60", "127.0.0.61", "127.0.0.62"]
PROBE_HOST = "127.0.0.65"
"""A hand-driven UDP socket that asks one libtorrent peer what it stores (read-only, BEP 43)."""
LONE_HOST, RESPONDER_HOST = "127.0.0.66", "127.0.0.67"
"""A libtorrent peer whose only contact is a hand-driven socket that records the targets it asks for."""
DAEMON_HOST = "127.0.0.56"
DAEMON_PEER_HOSTS = ("127.0.0.68", "127.0.0.69")

# --- the mixed network ---------------------------------------------------------------------------


@dataclass
class Mesh:
    nodes: list[Node]
    peers: list[LibtorrentDhtPeer]

    def kadnode_holders(self, target: bytes, *, salt: bytes = b"") -> dict[Addr, ImmutableItem | MutableItem]:
        """The items kadnode's nodes hold under ``target``, by node (from their own stores, no lookup)."""
        held = {node.addr: node.local_item(target, salt=salt) for node in self.nodes}
        return {addr: item for addr, item in held.items() if item is not None}


@pytest.fixture
async def mesh() -> AsyncIterator[Mesh]:
    """Five kadnode nodes (one seed, four bootstrapped from it) and three libtorrent peers bootstrapped
    from two kadnode nodes each, then a lookup from every node so that the tables mix both kinds."""
    async with AsyncExitStack() as stack:
        nodes, peers, _ = await start_mixed_network(stack, KADNODE_HOSTS, LIBTORRENT_HOSTS)
        # A lookup from each libtorrent peer walks to every kadnode node (which enter its table by
        # answering) and files the peer with the nodes it queries; kadnode lookups then verify the peers.
        for peer in peers:
            await in_thread(peer.get_peers, os.urandom(20), STEP_TIMEOUT)
        async with asyncio.timeout(STEP_TIMEOUT):
            await asyncio.gather(*(node.find_node(int.from_bytes(os.urandom(20), "big")) for node in nodes))
        yield Mesh(nodes, peers)


@pytest.fixture
def probe() -> Iterator[socket.socket]:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_DGRAM)) as sock:
        sock.bind((PROBE_HOST, 0))
        sock.settimeout(STEP_TIMEOUT)
        yield sock


def stored_at_libtorrent(sock: socket.socket, peer: LibtorrentDhtPeer, target: bytes) -> dict[bytes, Any]:
    """What ``peer`` itself stores under ``target``: a hand-made read-only ``get`` (BEP 43 ``ro``, so
    libtorrent never files the probe as a node), decoded by libtorrent's own decoder."""
    tid = os.urandom(2)
    query = b"d1:ad2:id20:" + os.urandom(20) + b"6:target20:" + target + b"e1:q3:get2:roi1e1:t2:" + tid
    sock.sendto(query + b"1:y1:qe", peer.addr)
    while True:
        data, source = sock.recvfrom(4096)
        reply = lt_decode(data)
        if source == peer.addr and reply.get(b"t") == tid:
            assert reply.get(b"y") == b"r", reply
            body = reply[b"r"]
            assert isinstance(body, dict)
            return body


def lt_decode(data: bytes) -> dict[bytes, Any]:
    """A KRPC message decoded by libtorrent (its decoder, not kadnode's)."""
    message = lt.bdecode(data)
    assert isinstance(message, dict), data
    return cast(dict[bytes, Any], message)


def check_mutable(item: object, public_key: bytes, salt: bytes, seq: int, value: bytes) -> MutableItem:
    """A mutable item kadnode returned: the expected fields, and a signature that verifies here."""
    assert isinstance(item, MutableItem), item
    assert (item.public_key, item.salt, item.seq, item.value) == (public_key, salt, seq, value)
    assert item.target == hashlib.sha1(public_key + salt).digest()
    assert signature_valid(public_key, item.signature, salt, seq, value)
    return item


# --- 1. libtorrent puts, kadnode gets ------------------------------------------------------------


async def test_items_put_by_libtorrent_are_read_by_kadnode(mesh: Mesh) -> None:
    writer = mesh.peers[0]
    value = {b"from": b"libtorrent", b"n": [1, 2, 3]}
    immutable = await in_thread(writer.put_immutable, value)
    assert immutable.num_success >= 1
    assert immutable.value == bencode(value)

    key, salt = os.urandom(32), b"lt-name"
    public_key = ed25519_public_key(key)
    mutable = await in_thread(writer.put_mutable, key, b"signed by libtorrent", salt=salt)
    assert mutable.seq == 1 and mutable.num_success >= 1
    mutable_key = mutable_target(public_key, salt)

    # kadnode accepted libtorrent's put queries (token, encoding, signature) and stored the items.
    held = mesh.kadnode_holders(immutable.target)
    assert held, "no kadnode node stored libtorrent's immutable put"
    assert all(item == ImmutableItem(immutable.target, immutable.value) for item in held.values())
    held_mutable = mesh.kadnode_holders(mutable_key, salt=salt)
    assert held_mutable, "no kadnode node stored libtorrent's mutable put"
    for item in held_mutable.values():
        assert check_mutable(item, public_key, salt, 1, mutable.value).signature == mutable.signature

    # A kadnode node that joins afterwards (through a libtorrent peer) finds both over the wire.
    async with Node(host=READER_HOST, port=0, bootstrap=[mesh.peers[1].addr]) as reader:
        async with asyncio.timeout(STEP_TIMEOUT):
            await reader.bootstrap()
            found = await reader.get(immutable.target)
            found_mutable = await reader.get(f"{public_key.hex()}/{salt.decode()}")
    assert found.item == ImmutableItem(immutable.target, immutable.value)
    assert found.invalid == 0
    assert found.holders >= 1  # an immutable get ends at its first valid copy
    # The mutable get asks all k closest: libtorrent's peers answered it, not only kadnode's nodes.
    check_mutable(found_mutable.item, public_key, salt, 1, mutable.value)
    assert found_mutable.invalid == 0
    lt_holders = {peer.addr for peer in mesh.peers} & set(found_mutable.seqs)
    assert lt_holders, f"no libtorrent peer told the reader its seq: {found_mutable.seqs}"
    assert all(found_mutable.seqs[addr] == 1 for addr in lt_holders)


# --- 2. kadnode puts, libtorrent gets ------------------------------------------------------------


async def test_items_put_by_kadnode_are_read_by_libtorrent(mesh: Mesh, probe: socket.socket) -> None:
    writer = mesh.nodes[2]
    value: Bencodable = [b"from kadnode", {b"k": 7}]
    async with asyncio.timeout(STEP_TIMEOUT):
        immutable = await writer.put(value, immutable=True)
    # Every node asked (libtorrent's peers among them) acknowledged: no error, no timeout.
    assert immutable.stored_at == immutable.attempted >= 1 and not immutable.errors
    encoded = bencode(value)
    assert immutable.target == hashlib.sha1(encoded).digest()

    key, salt = SigningKey(os.urandom(32)), b"kadnode-name"
    async with asyncio.timeout(STEP_TIMEOUT):
        mutable = await writer.put(b"signed by kadnode", salt=salt, key=key)
    assert mutable.stored_at == mutable.attempted >= 1 and not mutable.errors
    item = check_mutable(mutable.item, key.public_key, salt, 1, b"17:signed by kadnode")

    # libtorrent accepted kadnode's put queries: the peers' own stores hold the items.
    lt_immutable = [stored_at_libtorrent(probe, peer, immutable.target) for peer in mesh.peers]
    assert any(lt.bencode(r[b"v"]) == encoded for r in lt_immutable if b"v" in r), lt_immutable
    lt_mutable = [stored_at_libtorrent(probe, peer, mutable.target) for peer in mesh.peers]
    holding = [r for r in lt_mutable if b"v" in r]
    assert holding, lt_mutable
    for reply in holding:
        assert (reply[b"k"], reply[b"seq"], reply[b"sig"]) == (key.public_key, 1, item.signature)
        assert lt.bencode(reply[b"v"]) == item.value

    # Every libtorrent peer's DHT get finds both, the mutable one checked by libtorrent and again here.
    for peer in mesh.peers:
        assert await in_thread(peer.get_immutable, immutable.target) == encoded
        found = await in_thread(peer.get_mutable, key.public_key, salt)
        assert found is not None, f"{peer} did not find kadnode's mutable item"
        assert (found.seq, found.value, found.signature) == (1, item.value, item.signature)


# --- 3. a mutable item updated in turn by each side ------------------------------------------------


async def test_higher_seq_replaces_the_value_on_both_sides(mesh: Mesh, probe: socket.socket) -> None:
    """One key, known to both: libtorrent signs seq 1, kadnode seq 2, libtorrent seq 3. Each writer
    picks its seq from what its lookup found, so each must have read the other's item."""
    seed, salt = os.urandom(32), b"shared"
    key = SigningKey(seed)
    # kadnode's expanded secret is what libtorrent signs with: a wrong one fails every signature check.
    assert key.libtorrent_secret() == expanded_secret(seed)
    target = mutable_target(key.public_key, salt)
    peer_a, peer_b, peer_c = mesh.peers
    writer = mesh.nodes[3]

    secret = key.libtorrent_secret()
    first = await in_thread(peer_a.put_mutable, secret, b"one", salt=salt, public_key=key.public_key)
    assert first.seq == 1
    async with asyncio.timeout(STEP_TIMEOUT):
        seen = await mesh.nodes[0].get(target, salt=salt)
    check_mutable(seen.item, key.public_key, salt, 1, b"3:one")

    # kadnode updates: it finds seq 1 and signs seq 2.
    async with asyncio.timeout(STEP_TIMEOUT):
        second = await writer.put(b"two", salt=salt, key=key)
    assert second.stored_at == second.attempted >= 1 and not second.errors
    check_mutable(second.item, key.public_key, salt, 2, b"3:two")
    found = await in_thread(peer_b.get_mutable, key.public_key, salt)
    assert found is not None and (found.seq, found.value) == (2, b"3:two")
    # The libtorrent peers that held seq 1 now hold seq 2 in its place.
    held = [stored_at_libtorrent(probe, peer, target) for peer in mesh.peers]
    assert [r[b"seq"] for r in held if b"seq" in r], held
    assert all(r[b"seq"] == 2 and lt.bencode(r[b"v"]) == b"3:two" for r in held if b"seq" in r), held

    # libtorrent updates again: its lookup finds kadnode's seq 2 and signs seq 3.
    third = await in_thread(peer_c.put_mutable, seed, b"three", salt=salt)
    assert third.seq == 3 and third.num_success >= 1
    holders = mesh.kadnode_holders(target, salt=salt)
    assert holders
    for item in holders.values():
        check_mutable(item, key.public_key, salt, 3, b"5:three")
    async with asyncio.timeout(STEP_TIMEOUT):
        latest = await writer.get(target, salt=salt)
    check_mutable(latest.item, key.public_key, salt, 3, b"5:three")
    assert latest.holders >= 2
    # The next kadnode put continues from libtorrent's seq.
    async with asyncio.timeout(STEP_TIMEOUT):
        fourth = await mesh.nodes[1].put(b"four", salt=salt, key=key)
    check_mutable(fourth.item, key.public_key, salt, 4, b"4:four")
    found = await in_thread(peer_a.get_mutable, key.public_key, salt)
    assert found is not None and (found.seq, found.value) == (4, b"4:four")


# --- 4. the same targets ---------------------------------------------------------------------------


SALTS = [b"", b"a", b"foobar", bytes(range(64)), "námé".encode()]


def test_libtorrent_asks_for_the_targets_kadnode_computes() -> None:
    """libtorrent's own ``get`` queries, captured on the wire, name the target kadnode's
    ``mutable_target`` computes for the same key and salt: SHA-1 of the key followed by the raw salt."""
    key = SigningKey(os.urandom(32))
    with (
        closing(socket.socket(socket.AF_INET, socket.SOCK_DGRAM)) as responder,
        LibtorrentDhtPeer(LONE_HOST, 0) as peer,
        ThreadPoolExecutor(max_workers=1) as executor,
    ):
        responder.bind((RESPONDER_HOST, 0))
        responder.settimeout(STEP_TIMEOUT)
        responder_id = os.urandom(20)
        # libtorrent contacts a node it is told about; the node enters its table by answering.
        peer.add_node(responder.getsockname())
        deadline = time.monotonic() + STEP_TIMEOUT
        while responder.getsockname() not in peer.routing_table():
            assert time.monotonic() < deadline, "libtorrent never filed the responder"
            answer_one_query(responder, responder_id, peer.addr)
        asked: list[bytes] = []
        for salt in SALTS:
            lookup = executor.submit(peer.get_mutable, key.public_key, salt, STEP_TIMEOUT)
            while not lookup.done():
                target = answer_one_query(responder, responder_id, peer.addr)
                if target is not None:
                    asked.append(target)
            assert lookup.result() is None  # the responder holds nothing
            assert asked and asked[-1] == mutable_target(key.public_key, salt), salt
            assert asked[-1] == hashlib.sha1(key.public_key + salt).digest()
    # Different salts, different targets (the salt is part of the hash, not dropped).
    assert len(set(asked)) == len(SALTS)


def answer_one_query(sock: socket.socket, own_id: bytes, peer: Addr) -> bytes | None:
    """Answer one query from ``peer`` with an empty, well-formed reply; the target if it was a ``get``.

    A short socket timeout lets the caller notice the lookup has finished.
    """
    sock.settimeout(0.05)
    try:
        data, source = sock.recvfrom(4096)
    except TimeoutError:
        return None
    message = lt_decode(data)
    if source != peer or message.get(b"y") != b"q":
        return None
    tid, args = message[b"t"], message[b"a"]
    assert isinstance(tid, bytes) and isinstance(args, dict)
    reply = b"d1:rd2:id20:" + own_id + b"5:nodes0:5:token3:toke1:t" + str(len(tid)).encode() + b":" + tid
    sock.sendto(reply + b"1:y1:re", source)
    if message.get(b"q") != b"get":
        return None
    target = args[b"target"]
    assert isinstance(target, bytes)
    return target


async def test_immutable_targets_agree(mesh: Mesh) -> None:
    values: list[Bencodable] = [b"", b"Hello World!", 42, [b"a", [b"b"], {}], {b"z": 1, b"a": {b"c": b"d"}}]
    for value in values:
        put = await in_thread(mesh.peers[2].put_immutable, value)
        assert put.target == immutable_target(bencode(value)), value
    assert put.target == immutable_target(b"d1:ad1:c1:de1:zi1ee")


# --- 5. the same through the daemon and the CLI ------------------------------------------------


def daemon_seed(data_dir: Path) -> bytes:
    """The daemon's ed25519 seed, read from its identity file (so libtorrent can sign as the daemon)."""
    private = serialization.load_pem_private_key((data_dir / "identity.key").read_bytes(), password=None)
    assert isinstance(private, Ed25519PrivateKey)
    return private.private_bytes_raw()


def test_kadnode_put_and_get_interoperate_with_libtorrent(tmp_path: Path) -> None:
    """`kadnode put` / `kadnode get` against two libtorrent peers: each side reads what the other put,
    and a higher seq from either side replaces the value."""
    with (
        LibtorrentDhtPeer(DAEMON_PEER_HOSTS[0], 0) as first,
        LibtorrentDhtPeer(DAEMON_PEER_HOSTS[1], 0, bootstrap=[first.addr]) as second,
    ):
        first.add_node(second.addr)
        seed = f"{first.addr[0]}:{first.addr[1]}"
        data_dir = str(tmp_path)
        run = [sys.executable, "-m", "kadnode", "run", "--host", DAEMON_HOST, "--port", "0"]
        run += ["--data-dir", data_dir, "--bootstrap", seed]
        daemon = subprocess.Popen(run, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            wait_for_daemon(daemon, data_dir)
            daemon_key = SigningKey(daemon_seed(tmp_path))

            # libtorrent puts; `kadnode get` reads.
            put = second.put_immutable(b"immutable from libtorrent")
            got = cli_json("get", put.target.hex(), "--data-dir", data_dir)
            assert got["value"] == "immutable from libtorrent" and got["kind"] == "immutable", got
            assert got["holders"] >= 1 and not got["local"]
            lt_key = os.urandom(32)
            lt_put = second.put_mutable(lt_key, b"mutable from libtorrent", salt=b"lt-name")
            address = f"{ed25519_public_key(lt_key).hex()}/lt-name"
            got = cli_json("get", address, "--data-dir", data_dir)
            assert (got["value"], got["seq"], got["signature_valid"]) == ("mutable from libtorrent", 1, True)
            assert lt_put.seq == 1

            # `kadnode put` puts; libtorrent's DHT get reads.
            stored = cli_json("put", "--immutable", "immutable from kadnode", "--data-dir", data_dir)
            target = bytes.fromhex(stored["target"])
            assert first.get_immutable(target) == b"22:immutable from kadnode"
            stored = cli_json("put", "greeting", "hello from kadnode", "--data-dir", data_dir)
            assert stored["address"] == f"{daemon_key.public_key.hex()}/greeting" and stored["seq"] == 1
            found = first.get_mutable(daemon_key.public_key, b"greeting")
            assert found is not None and (found.seq, found.value) == (1, b"18:hello from kadnode")

            # Updates: `kadnode put` again (seq 2), then libtorrent with the daemon's key (seq 3).
            stored = cli_json("put", "greeting", "second", "--data-dir", data_dir)
            assert stored["seq"] == 2
            found = first.get_mutable(daemon_key.public_key, b"greeting")
            assert found is not None and (found.seq, found.value) == (2, b"6:second")
            update = second.put_mutable(daemon_key.seed, b"third, by libtorrent", salt=b"greeting")
            assert update.seq == 3
            got = cli_json("get", stored["address"], "--data-dir", data_dir)
            assert (got["value"], got["seq"]) == ("third, by libtorrent", 3), got
        finally:
            daemon.terminate()
            try:
                daemon.communicate(timeout=STEP_TIMEOUT)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.communicate()
        assert daemon.returncode == 0


def wait_for_daemon(daemon: subprocess.Popen[str], data_dir: str) -> None:
    """Until the control socket answers and the bootstrap put both libtorrent peers in the table."""
    deadline = time.monotonic() + STEP_TIMEOUT
    table_size = 0
    while table_size < 2:
        assert daemon.poll() is None, daemon.stderr.read() if daemon.stderr else ""
        assert time.monotonic() < deadline, "the daemon did not bootstrap from libtorrent"
        time.sleep(0.1)
        status = kadnode_cli("status", "--data-dir", data_dir, "--json")
        if status.returncode == 0:
            table_size = json.loads(status.stdout)["routing_table"]["nodes"]


def cli_json(*args: str) -> dict[str, Any]:
    result = kadnode_cli(*args, "--json")
    assert result.returncode == 0, (args, result.stdout, result.stderr)
    out = json.loads(result.stdout)
    assert isinstance(out, dict)
    return out
