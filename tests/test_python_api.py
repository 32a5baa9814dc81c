"""`kadnode.Node`'s BEP 44 API over real UDP on loopback: put, get, seq, cas, limits, persistence."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from kadnode.core.bep44 import SigningKey, mutable_target
from kadnode.runtime.node import Node
from kadnode.settings import Settings
from kadnode.storage.base import ImmutableItem, MutableItem
from kadnode.wire.bencode import Bencodable, bencode

FAST = Settings(rpc_timeout_initial=0.3, rpc_timeout_max=0.5, rpc_short_timeout_max=0.1)


@pytest.fixture
async def trio() -> AsyncIterator[tuple[Node, Node, Node]]:
    """Three joined nodes; the first has an identity (as a daemon's node does)."""
    async with (
        Node("127.0.0.2", settings=FAST, identity=SigningKey.generate()) as a,
        Node("127.0.0.3", settings=FAST) as b,
        Node("127.0.0.4", settings=FAST) as c,
    ):
        await b.bootstrap([a.addr])
        await c.bootstrap([a.addr])
        await a.bootstrap([b.addr])
        yield a, b, c


def sent(node: Node, method: str) -> int:
    return node.core.counters[f"queries_out.{method}"]


async def test_immutable_put_then_get_from_another_node(trio: tuple[Node, Node, Node]) -> None:
    a, _b, c = trio
    result = await a.put(b"hello, world", immutable=True)
    assert result.target == hashlib.sha1(b"12:hello, world").digest()
    assert (result.stored_at, result.attempted) == (2, 2)
    assert isinstance(result.item, ImmutableItem)
    for target in (result.target, result.target.hex(), result.target.hex().upper()):
        found = await c.get(target)
        assert found.item == result.item
        assert found.holders >= 1 and found.invalid == 0


async def test_mutable_put_signs_with_the_identity_and_seq_grows(trio: tuple[Node, Node, Node]) -> None:
    a, _b, c = trio
    assert a.identity is not None
    first = await a.put("v1", salt="greeting")
    item = first.item
    assert isinstance(item, MutableItem)
    assert (item.seq, item.salt, item.public_key) == (1, b"greeting", a.identity.public_key)
    assert item.value == b"2:v1"
    assert first.target == mutable_target(a.identity.public_key, b"greeting")
    assert first.stored_at == 2

    address = f"{a.identity.public_key.hex()}/greeting"
    found = await c.get(address)
    assert found.item == item

    second = await a.put("v2", salt=b"greeting")
    assert isinstance(second.item, MutableItem) and second.item.seq == 2
    found = await c.get(address)
    assert isinstance(found.item, MutableItem)
    assert (found.item.seq, found.item.value) == (2, b"2:v2")
    assert found.holders >= 1  # b; a, the originator, answers gets from what it stores for others only
    # By raw target the salt must be given (the signature covers it).
    by_target = await c.get(second.target, salt="greeting")
    assert by_target.item == second.item


async def test_the_seq_continues_from_what_the_network_holds(trio: tuple[Node, Node, Node]) -> None:
    """Another node with the same key (another device) continues after the highest seq found."""
    a, b, c = trio
    key = SigningKey.generate()
    await a.put(b"x", salt="shared", key=key)
    await a.put(b"y", salt="shared", key=key)
    third = await c.put(b"z", salt="shared", key=key)  # c never held it: the lookup finds seq 2
    assert isinstance(third.item, MutableItem) and third.item.seq == 3
    found = await b.get(f"{key.public_key.hex()}/shared")
    assert isinstance(found.item, MutableItem) and found.item.value == b"1:z"


async def test_structured_values_are_bencoded(trio: tuple[Node, Node, Node]) -> None:
    a, _b, c = trio
    meta: dict[bytes, Bencodable] = {b"k": b"\x00\xff"}
    value: dict[str, Bencodable] = {"name": "kadnode", "ports": [6881, 6882], "meta": meta}
    result = await a.put(value, salt="config")
    found = await c.get(result.target, salt="config")
    assert found.item is not None and found.item.value == bencode(value)


async def test_cas_replaces_only_the_expected_seq(trio: tuple[Node, Node, Node]) -> None:
    a, _b, c = trio
    key = SigningKey.generate()
    await a.put(b"one", salt="counter", key=key)
    swapped = await a.put(b"two", salt="counter", key=key, cas=1)
    assert isinstance(swapped.item, MutableItem) and swapped.item.seq == 2 and swapped.stored_at == 2
    # A writer that itself holds a newer seq (c stores the item for others) is stopped before sending.
    before = sent(c, "put")
    with pytest.raises(ValueError, match="cas mismatch: this node already holds seq 2 of the item, not 1"):
        await c.put(b"older", salt="counter", key=key, cas=1)
    assert sent(c, "put") == before
    # A stale cas from a writer that holds nothing: every node answers 301. (Its ID is the farthest
    # from the target, so that no node hands it the item when it joins.)
    far = int.from_bytes(swapped.target, "big") ^ (2**160 - 1)
    async with Node("127.0.0.5", settings=FAST, node_id=far) as d:
        await d.bootstrap([a.addr])
        assert d.local_item(swapped.target) is None
        stale = await d.put(b"other", salt="counter", key=key, cas=1)
        assert stale.attempted == 3 and stale.errors.get(301, 0) >= 2  # at least b and c, which store seq 2
    found = await a.get(swapped.target, salt="counter")
    assert found.item == swapped.item


async def test_limits_are_checked_before_anything_is_sent(trio: tuple[Node, Node, Node]) -> None:
    a, _b, _c = trio
    before = (sent(a, "get"), sent(a, "put"))
    with pytest.raises(ValueError, match="value is 1005 bytes when bencoded; BEP 44 items hold at most 1000"):
        await a.put(b"x" * 1000, immutable=True)
    with pytest.raises(ValueError, match="1001 bytes"):
        await a.put(b"x" * 997, salt="n")
    with pytest.raises(ValueError, match=r"salt \(name\) is 65 bytes; BEP 44 allows at most 64"):
        await a.put(b"x", salt="s" * 65)
    with pytest.raises(ValueError, match="immutable item takes no salt"):
        await a.put(b"x", immutable=True, salt="s")
    with pytest.raises(ValueError, match="cas must be"):
        await a.put(b"x", salt="s", cas=-1)
    with pytest.raises(TypeError):
        await a.put(1.5)  # type: ignore[arg-type]
    assert (sent(a, "get"), sent(a, "put")) == before
    ok = await a.put(b"x" * 995, salt="n")  # 999 bytes bencoded: fits
    assert ok.stored_at == 2


async def test_a_mutable_put_without_any_key_says_how_to_get_one(trio: tuple[Node, Node, Node]) -> None:
    _a, b, _c = trio
    assert b.identity is None
    with pytest.raises(ValueError, match="needs a signing key"):
        await b.put(b"x", salt="name")


async def test_get_of_a_missing_item_and_bad_targets(trio: tuple[Node, Node, Node]) -> None:
    _a, b, _c = trio
    missing = await b.get(os.urandom(20))
    assert missing.item is None and missing.holders == 0 and missing.lookup.responded >= 1
    for bad in ("xyz", "ab" * 19, "ab" * 32 + "/" + "n" * 65, "zz" * 20, "ab" * 33):
        with pytest.raises(ValueError):
            await b.get(bad)
    with pytest.raises(ValueError, match="20 bytes"):
        await b.get(b"short")
    with pytest.raises(ValueError, match="names its salt already"):
        await b.get("ab" * 32 + "/one", salt="two")


async def test_concurrent_puts_to_one_name_get_distinct_seqs(trio: tuple[Node, Node, Node]) -> None:
    a, _b, c = trio
    results = await asyncio.gather(*(a.put(f"v{i}", salt="race") for i in range(4)))
    seqs = sorted(r.item.seq for r in results if isinstance(r.item, MutableItem))
    assert seqs == [1, 2, 3, 4]
    assert all(r.stored_at == 2 for r in results)
    found = await c.get(results[0].target, salt="race")
    assert isinstance(found.item, MutableItem) and found.item.seq == 4


async def test_a_lone_node_keeps_its_puts_locally() -> None:
    async with Node("127.0.0.2", settings=FAST, identity=SigningKey.generate()) as node:
        result = await node.put(b"alone", salt="solo")
        assert (result.stored_at, result.attempted) == (0, 0)
        assert node.local_item(result.target) == result.item
        assert node.status()["storage"]["own_items"] == 1
        again = await node.get(result.target, salt="solo")  # served from what it holds
        assert again.item == result.item and again.lookup.queried == 0


async def test_puts_survive_a_restart_and_seq_continues(tmp_path: Path) -> None:
    async with Node("127.0.0.2", settings=FAST, data_dir=tmp_path) as node:
        mutable = await node.put(b"kept", salt="durable")
        immutable = await node.put([1, 2, 3], immutable=True)
        key = node.identity
    async with Node("127.0.0.2", settings=FAST, data_dir=tmp_path) as node:
        assert node.identity is not None and key is not None and node.identity.seed == key.seed
        assert node.local_item(mutable.target) == mutable.item
        assert node.local_item(immutable.target.hex()) == immutable.item
        assert node.local_item(f"{key.public_key.hex()}/durable") == mutable.item
        assert node.status()["storage"]["own_items"] == 2
        after = await node.put(b"newer", salt="durable")
        assert isinstance(after.item, MutableItem) and after.item.seq == 2


async def test_announce_keeps_going_until_unannounce(tmp_path: Path) -> None:
    info_hash = os.urandom(20)
    async with Node("127.0.0.2", settings=FAST, data_dir=tmp_path) as node:
        await node.announce(info_hash, 51413)
        await node.announce(os.urandom(20), 51413, keep=False)
        assert node.status()["storage"]["own_announces"] == 1
    async with Node("127.0.0.2", settings=FAST, data_dir=tmp_path) as node:
        assert node.status()["storage"]["own_announces"] == 1  # survives a restart
        assert node.unannounce(info_hash) is True
        assert node.unannounce(info_hash) is False
        assert node.status()["storage"]["own_announces"] == 0
        with pytest.raises(ValueError):
            node.unannounce(b"short")
