"""The asyncio runtime over real UDP on loopback: Node operations, the bounded and rate-limited receive
path, socket errors as counters, persistence across restarts."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from kadnode.core.nodeid import bep42_valid
from kadnode.runtime import node as node_module
from kadnode.runtime.node import Node, NodeClosedError
from kadnode.runtime.state import StateLockedError, StateStore
from kadnode.runtime.udp import BindError, RateLimiter
from kadnode.settings import Settings
from kadnode.types import NodeInfo
from kadnode.wire.bencode import bdecode
from kadnode.wire.krpc import Ping, Query, encode_message
from tests.conftest import eventually

FAST = Settings(rpc_timeout_initial=0.3, rpc_timeout_max=0.5, rpc_short_timeout_max=0.1)
"""Short timeouts: tests that wait for a silent peer should not wait seconds."""


@pytest.fixture
def raw_socket() -> Iterator[Callable[[str], socket.socket]]:
    """Plain UDP sockets bound to a loopback address, for junk, floods and silent peers."""
    opened: list[socket.socket] = []

    def make(ip: str) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((ip, 0))
        opened.append(sock)
        return sock

    yield make
    for sock in opened:
        sock.close()


@pytest.fixture
async def pair() -> AsyncIterator[tuple[Node, Node]]:
    async with Node("127.0.0.2") as a, Node("127.0.0.3") as b:
        yield a, b


def ping_bytes(tid: bytes = b"aa") -> bytes:
    return encode_message(Query(tid, b"\x01" * 20, Ping()))


def field(datagram: bytes, key: bytes) -> object:
    """One top-level field of a bencoded reply (None if absent)."""
    value = bdecode(datagram)
    return value.get(key) if isinstance(value, dict) else None


def received(sock: socket.socket) -> list[bytes]:
    sock.setblocking(False)
    out = []
    while True:
        try:
            out.append(sock.recv(4096))
        except BlockingIOError:
            return out


# --- operations between real nodes -------------------------------------------------------------


async def test_two_nodes_ping_each_other(pair: tuple[Node, Node]) -> None:
    a, b = pair
    assert a.addr[0] == "127.0.0.2" and a.addr[1] > 0
    ab = await a.ping(b.addr)
    ba = await b.ping(a.addr)
    assert ab.ok and ab.node_id == b.node_id and ab.rtt is not None and ab.rtt < 1.0
    assert ba.ok and ba.node_id == a.node_id
    assert a.core.routing_table.get(b.node_id) is not None


async def test_bootstrap_find_node_announce_get_peers() -> None:
    async with Node("127.0.0.2") as a, Node("127.0.0.3") as b, Node("127.0.0.4") as c:
        b.seeds = (a.addr,)  # a's port is known only once it is bound: set the configured seeds now
        boot_b = await b.bootstrap()
        assert (boot_b.seeds_tried, boot_b.seeds_answered) == (1, 1)
        boot_c = await c.bootstrap([a.addr])
        assert boot_c.seeds_answered == 1
        assert boot_c.table_size == 2  # a, and b learnt through a
        found = await c.find_node(b.node_id)
        assert found.closest[0] == NodeInfo(b.node_id, b.addr)
        info_hash = os.urandom(20)
        announced = await c.announce(info_hash, 5555)
        assert announced.stored_at == 2
        peers = await b.get_peers(info_hash)
        assert ("127.0.0.4", 5555) in peers.peers
        implied = await c.announce(info_hash)  # implied_port: our UDP port
        assert implied.port is None
        assert c.addr in (await b.get_peers(info_hash)).peers


async def test_status_merges_runtime_and_core(
    pair: tuple[Node, Node], raw_socket: Callable[[str], socket.socket]
) -> None:
    a, b = pair
    await b.ping(a.addr)
    raw_socket("127.0.0.9").sendto(b"x" * 3000, a.addr)
    await eventually(lambda: a.core.counters["dropped.oversized"] == 1)
    status = a.status()
    assert status["addr"] == f"127.0.0.2:{a.addr[1]}"
    assert status["node_id"] == f"{a.node_id:040x}"
    assert status["uptime"] >= 0
    assert status["counters"]["dropped"]["oversized"] == 1  # runtime counter
    assert status["counters"]["queries_in"]["ping"] >= 1  # core counter
    assert status["counters"]["datagrams_out"] == a.core.counters["datagrams_out"] >= 1
    assert status["routing_table"]["nodes"] == 1
    assert [(entry.id, state) for entry, state in a.routes()] == [(b.node_id, "good")]


async def test_ping_timeout_fires_from_the_timer(raw_socket: Callable[[str], socket.socket]) -> None:
    silent = raw_socket("127.0.0.5")
    async with Node("127.0.0.2", settings=FAST) as a:
        started = time.monotonic()
        result = await a.ping(silent.getsockname())
        assert not result.ok and result.error == "timeout"
        assert time.monotonic() - started < 2.0
        assert a.core.counters["rpc.timeouts"] == 1
        assert len(received(silent)) == 1


async def test_operations_validate_arguments(pair: tuple[Node, Node]) -> None:
    a, _ = pair
    with pytest.raises(ValueError, match="info_hash must be 20 bytes"):
        await a.get_peers(b"short")
    with pytest.raises(ValueError, match="port must be in 1-65535"):
        await a.announce(b"\x00" * 20, 0)
    with pytest.raises(ValueError, match="target"):
        await a.find_node(2**160)
    assert not a._pending


async def test_not_started_and_restart_refused() -> None:
    node = Node("127.0.0.2")
    with pytest.raises(RuntimeError, match="not started"):
        _ = node.addr
    with pytest.raises(RuntimeError, match="not running"):
        await node.ping(("127.0.0.3", 1))
    await node.start()
    await node.stop()
    await node.stop()  # idempotent
    with pytest.raises(RuntimeError, match="not running"):
        await node.ping(("127.0.0.3", 1))
    with pytest.raises(RuntimeError, match="started once"):
        await node.start()


async def test_stop_fails_waiting_operations(raw_socket: Callable[[str], socket.socket]) -> None:
    silent = raw_socket("127.0.0.5")
    node = Node("127.0.0.2")  # default timeouts: the ping would wait seconds
    await node.start()
    task = asyncio.create_task(node.ping(silent.getsockname()))
    await eventually(lambda: len(received(silent)) > 0 or task.done())
    await node.stop()
    with pytest.raises(NodeClosedError):
        await task


async def test_cancelled_operation_does_not_break_the_node(raw_socket: Callable[[str], socket.socket]) -> None:
    silent = raw_socket("127.0.0.5")
    async with Node("127.0.0.2", settings=FAST) as a, Node("127.0.0.3") as b:
        task = asyncio.create_task(a.ping(silent.getsockname()))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0.6)  # the core's timeout fires and calls done on a cancelled future
        assert (await a.ping(b.addr)).ok
        assert not a._pending


# --- node identity -----------------------------------------------------------------------------


async def test_node_id_bep42_for_a_concrete_address() -> None:
    async with Node("127.0.0.2") as a:
        assert bep42_valid(a.node_id, "127.0.0.2")
    async with Node("0.0.0.0") as wildcard:
        assert 0 <= wildcard.node_id < 2**160  # random: no concrete address to derive it from


async def test_given_node_id_then_saved_one_wins(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async with Node("127.0.0.2", node_id=12345) as a:
        assert a.node_id == 12345
    async with Node("127.0.0.2", node_id=777, data_dir=tmp_path) as b:
        assert b.node_id == 777
    with caplog.at_level(logging.WARNING, logger="kadnode.runtime.node"):
        async with Node("127.0.0.2", node_id=888, data_dir=tmp_path) as c:
            assert c.node_id == 777
    assert "saved in" in caplog.text
    async with Node("127.0.0.2", data_dir=tmp_path) as d:
        assert d.node_id == 777


def test_node_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="node_id"):
        Node(node_id=2**160)
    with pytest.raises(ValueError, match="port"):
        Node(port=70000)


# --- binding and locking -----------------------------------------------------------------------


async def test_port_in_use_is_a_clear_error(pair: tuple[Node, Node]) -> None:
    a, _ = pair
    with pytest.raises(BindError) as info:
        await Node(a.addr[0], a.addr[1]).start()
    assert str(info.value) == (
        f"cannot bind 127.0.0.2:{a.addr[1]}: address already in use — is another kadnode running? "
        "pick another --port"
    )


async def test_bind_error_releases_the_data_dir(tmp_path: Path, pair: tuple[Node, Node]) -> None:
    a, _ = pair
    with pytest.raises(BindError):
        await Node(a.addr[0], a.addr[1], data_dir=tmp_path).start()
    StateStore.open(tmp_path).close()  # not left locked


async def test_two_nodes_cannot_share_a_data_dir(tmp_path: Path) -> None:
    async with Node("127.0.0.2", data_dir=tmp_path):
        with pytest.raises(StateLockedError):
            await Node("127.0.0.3", data_dir=tmp_path).start()


# --- hostile input -----------------------------------------------------------------------------


async def test_garbage_is_counted_and_the_node_keeps_answering(
    pair: tuple[Node, Node], raw_socket: Callable[[str], socket.socket]
) -> None:
    a, b = pair
    junk = raw_socket("127.0.0.6")
    garbage = [b"", b"junk", b"d1:ai0ee", b"i-0e", b"l" * 60 + b"e" * 60, b"d1:t2:aa1:y1:qe", os.urandom(300),
               b"\xff" * 5000]
    for _ in range(3):
        for datagram in garbage:
            junk.sendto(datagram, a.addr)
    await eventually(lambda: a.core.counters["datagrams_in"] >= 3 * (len(garbage) - 1))
    counters = a.core.counters
    assert counters["dropped.oversized"] == 3
    dropped = sum(n for name, n in counters.items() if name.startswith("dropped."))
    assert dropped >= 3 * (len(garbage) - 1)
    assert (await b.ping(a.addr)).ok
    junk.sendto(ping_bytes(b"zz"), a.addr)  # the junk sender itself still gets answers
    await eventually(lambda: any(field(r, b"t") == b"zz" for r in received(junk)))


async def test_socket_errors_become_counters(pair: tuple[Node, Node]) -> None:
    a, b = pair
    a.core.ping(("127.0.0.1", 0), a.now(), lambda result: None)  # sendto port 0: EINVAL
    a.driver.flush()
    assert a.core.counters["socket_errors.EINVAL"] == 1
    assert a.status()["counters"]["socket_errors"] == {"EINVAL": 1}
    assert (await a.ping(b.addr)).ok


async def test_rate_limit_blocks_a_flooding_ip(raw_socket: Callable[[str], socket.socket]) -> None:
    settings = Settings(rate_limit_per_second=1.0, rate_limit_burst=5, rate_limit_block_seconds=60.0)
    async with Node("127.0.0.2", settings=settings) as a, Node("127.0.0.3") as b:
        flooder = raw_socket("127.0.0.7")
        for i in range(20):
            flooder.sendto(ping_bytes(bytes([97, 97 + i])), a.addr)
        await eventually(lambda: a.core.counters["dropped.rate_limited"] == 15)
        await asyncio.sleep(0.05)
        replies = [field(r, b"y") for r in received(flooder)]
        assert replies.count(b"r") == 5  # only the burst passes; the node may also query the flooder
        assert a.status()["rate_limited_ips"] == 1
        assert (await b.ping(a.addr)).ok  # another IP is unaffected
        flooder.sendto(ping_bytes(), a.addr)
        await eventually(lambda: a.core.counters["dropped.rate_limited"] == 16)  # still blocked


async def test_receive_queue_bound_drops_under_a_flood(raw_socket: Callable[[str], socket.socket]) -> None:
    settings = Settings(receive_queue_size=64, rate_limit_per_second=0)
    async with Node("127.0.0.2", settings=settings) as a, Node("127.0.0.3") as b:
        flooder = raw_socket("127.0.0.8")
        for _ in range(20_000):  # sent while the loop is blocked: it all waits in the socket buffer
            flooder.sendto(b"flood", a.addr)
        await asyncio.sleep(0.3)
        counters = a.core.counters
        assert counters["dropped.queue_full"] > 0
        assert counters["datagrams_in"] > 0
        assert counters["dropped.queue_full"] + counters["datagrams_in"] <= 20_000
        assert a.driver.queue_depth == 0
        assert (await b.ping(a.addr)).ok


def test_rate_limiter_refills_and_unblocks() -> None:
    limiter = RateLimiter(rate=2.0, burst=3, block_seconds=10.0)
    assert [limiter.allow("1.2.3.4", 0.0) for _ in range(4)] == [True, True, True, False]
    assert limiter.blocked(0.0) == ["1.2.3.4"]
    assert not limiter.allow("1.2.3.4", 9.9)  # blocked, however long it waited
    assert limiter.allow("1.2.3.4", 10.0)
    assert limiter.allow("1.2.3.4", 10.0) and limiter.allow("1.2.3.4", 10.0)  # bucket refilled to burst
    assert not limiter.allow("1.2.3.4", 10.0)
    assert limiter.allow("5.6.7.8", 10.0)  # per IP


def test_rate_limiter_sustained_rate() -> None:
    limiter = RateLimiter(rate=8.0, burst=1, block_seconds=1.0)
    assert all(limiter.allow("ip", t / 8) for t in range(100))  # exactly the allowed rate passes
    assert not limiter.allow("ip", 99 / 8 + 0.01)  # one more in between does not


def test_rate_limiter_table_is_bounded() -> None:
    limiter = RateLimiter(rate=1.0, burst=1, block_seconds=100.0, max_entries=3)
    limiter.allow("a", 0.0)
    assert not limiter.allow("a", 0.0)
    for ip in "bcd":
        limiter.allow(ip, 0.0)
    assert len(limiter) == 3
    assert limiter.allow("a", 0.0)  # forgotten (least recently seen), so no longer blocked


def test_rate_limiter_disabled() -> None:
    limiter = RateLimiter(rate=0.0, burst=1, block_seconds=1.0)
    assert not limiter.enabled
    assert all(limiter.allow("ip", 0.0) for _ in range(1000))
    assert len(limiter) == 0


# --- persistence -------------------------------------------------------------------------------


async def test_warm_restart_repopulates_from_saved_nodes(tmp_path: Path) -> None:
    async with Node("127.0.0.2") as a, Node("127.0.0.3") as b:
        gone = Node("127.0.0.5")
        await gone.start()
        await b.bootstrap([a.addr])
        await gone.bootstrap([a.addr])
        async with Node("127.0.0.4", data_dir=tmp_path, bootstrap=[a.addr], settings=FAST) as c:
            result = await c.bootstrap()
            assert result.table_size == 3
            first_id = c.node_id
        await gone.stop()  # one saved node is dead by the time c comes back

        async with Node("127.0.0.4", data_dir=tmp_path, settings=FAST) as c2:
            assert c2.node_id == first_id
            assert {n.addr for n in c2.saved_routes} == {a.addr, b.addr, gone.addr}
            assert len(c2.core.routing_table) == 0
            result = await c2.bootstrap()  # no configured seeds: the saved nodes are the seeds
            assert (result.seeds_tried, result.seeds_answered) == (3, 2)
            assert {e.addr for e in c2.core.routing_table.entries()} == {a.addr, b.addr}

        with StateStore.open(tmp_path) as store:
            assert {n.addr for n in store.load_routes()} == {a.addr, b.addr}


async def test_empty_table_does_not_overwrite_saved_nodes(tmp_path: Path) -> None:
    saved = [NodeInfo(99, ("127.0.0.9", 9999))]
    with StateStore.open(tmp_path) as store:
        store.save_routes(saved)
    async with Node("127.0.0.4", data_dir=tmp_path) as c:
        assert c.saved_routes == saved
        assert c.bootstrap_candidates() == [("127.0.0.9", 9999)]
    with StateStore.open(tmp_path) as store:
        assert store.load_routes() == saved


async def test_bootstrap_candidates_skip_duplicates_and_self(tmp_path: Path) -> None:
    async with Node("127.0.0.4", data_dir=tmp_path) as c:
        own = c.addr
    with StateStore.open(tmp_path) as store:
        store.save_routes([NodeInfo(1, ("127.0.0.9", 1)), NodeInfo(2, ("127.0.0.2", 7))])
    async with Node(own[0], own[1], data_dir=tmp_path, bootstrap=[("127.0.0.2", 7), own]) as c2:
        assert c2.bootstrap_candidates() == [("127.0.0.2", 7), ("127.0.0.9", 1)]
        assert c2.bootstrap_candidates([("127.0.0.3", 3)]) == [("127.0.0.3", 3), ("127.0.0.9", 1),
                                                               ("127.0.0.2", 7)]


async def test_state_is_saved_periodically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(node_module, "SAVE_INTERVAL", 0.05)
    async with Node("127.0.0.2") as a, Node("127.0.0.4", data_dir=tmp_path) as c:
        await c.ping(a.addr)

        def rows() -> list[tuple[str, int]]:  # the live node holds the lock: read the file directly
            conn = sqlite3.connect(tmp_path / "kadnode.db")
            try:
                return conn.execute("SELECT host, port FROM routes").fetchall()
            finally:
                conn.close()

        await eventually(lambda: rows() == [a.addr], timeout=3.0)
