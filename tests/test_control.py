"""The control protocol: good and bad requests, socket hygiene, limits, and the synchronous client."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import socket
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kadnode.client import ControlClient, ControlError, ControlTimeout, DaemonNotRunning
from kadnode.core.results import (
    AnnounceResult,
    GetPeersResult,
    GetResult,
    LookupResult,
    PingResult,
    PutResult,
)
from kadnode.runtime.control import (
    MAX_UNIX_PATH,
    ControlServer,
    ControlSocketError,
    handle_request,
    to_json,
)
from kadnode.storage.base import Item, MutableItem
from kadnode.types import Addr, NodeInfo
from kadnode.wire.bencode import Bencodable, bencode
from tests.conftest import FAKE_PUBLIC_KEY, FakeEntry, FakeNodeBase, fake_item

OWN_ID = 0x8000000000000000000000000000000000000000
PEER_A = NodeInfo(0x8000000000000000000000000000000000000001, ("127.0.0.2", 6881))
PEER_B = NodeInfo(0x0000000000000000000000000000000000000ABC, ("127.0.0.3", 6882))
INFO_HASH = bytes(range(20))
PUBLIC_KEY = FAKE_PUBLIC_KEY
ITEM = MutableItem(b"\x07" * 20, PUBLIC_KEY, b"greeting", 3, b"\x05" * 64, b"5:hello")


class FakeNode(FakeNodeBase):
    """Answers every control command with fixed, recognisable values and records the calls."""

    def __init__(self) -> None:
        super().__init__(OWN_ID, announced={INFO_HASH}, items={ITEM.target: ITEM})
        self.peers: list[Addr] = [("127.0.0.9", 51413)]
        self.fail_with: Exception | None = None
        self.gate: asyncio.Event | None = None

    def status(self) -> dict[str, Any]:
        return {"node_id": f"{OWN_ID:040x}", "routing_table": {"nodes": 2}, "counters": {"dropped": {"x": 1}}}

    def routes(self) -> list[tuple[FakeEntry, str]]:
        return [
            (FakeEntry(PEER_B.id, PEER_B.addr, 2, None), "questionable"),
            (FakeEntry(PEER_A.id, PEER_A.addr, 0, 0.0012), "good"),
        ]

    async def _enter(self, name: str, arg: Any) -> None:
        self.calls.append((name, arg))
        if self.gate is not None:
            await self.gate.wait()
        if self.fail_with is not None:
            raise self.fail_with

    def _lookup(self, target: int) -> LookupResult:
        return LookupResult(target, [PEER_A, PEER_B], queried=3, responded=2, failed=1, duration=0.0042)

    async def ping(self, addr: Addr) -> PingResult:
        await self._enter("ping", addr)
        if addr[1] == 9:
            return PingResult(addr, False, error="timeout")
        return PingResult(addr, True, node_id=PEER_A.id, rtt=0.0005)

    async def find_node(self, target: int) -> LookupResult:
        await self._enter("find_node", target)
        return self._lookup(target)

    async def get_peers(self, info_hash: bytes) -> GetPeersResult:
        await self._enter("get_peers", info_hash)
        lookup = self._lookup(int.from_bytes(info_hash, "big"))
        return GetPeersResult(info_hash, list(self.peers), lookup, tokens={PEER_A.addr: b"\x01\x02"})

    async def announce(self, info_hash: bytes, port: int | None = None, *, keep: bool = True) -> AnnounceResult:
        await self._enter("announce", (info_hash, port) if keep else (info_hash, port, keep))
        return AnnounceResult(info_hash, port, stored_at=2, attempted=2, peers=list(self.peers))

    async def put(
        self, value: Bencodable, *, salt: bytes | str = b"", immutable: bool = False, cas: int | None = None
    ) -> PutResult:
        await self._enter("put", (value, salt, immutable, cas))
        encoded = bencode(value)
        if len(encoded) > self.settings.max_value_size:
            raise ValueError(f"value is {len(encoded)} bytes when bencoded; BEP 44 items hold at most 1000 bytes")
        item = fake_item(value, salt=salt, immutable=immutable, seq=4, target=b"\x08" * 20)
        return PutResult(item.target, item, stored_at=2, attempted=3, errors={302: 1})

    async def get(self, target: bytes | str, *, salt: bytes | str = b"") -> GetResult:
        await self._enter("get", (target, salt))
        key = bytes.fromhex(target) if isinstance(target, str) and len(target) == 40 else ITEM.target
        return GetResult(key, self.items.get(key), self._lookup(int.from_bytes(key, "big")), holders=2, invalid=1)

    def local_item(self, target: bytes | str, *, salt: bytes | str = b"") -> Item | None:
        self.calls.append(("local_item", (target, salt)))
        key = bytes.fromhex(target) if isinstance(target, str) and len(target) == 40 else ITEM.target
        return self.items.get(key)


@pytest.fixture
async def served(short_dir: Path) -> AsyncIterator[tuple[FakeNode, ControlServer]]:
    node = FakeNode()
    server = ControlServer(node, short_dir / "control.sock")
    await server.start()
    yield node, server
    await server.close()


async def ask(path: Path, *requests: Any) -> list[dict[str, Any]]:
    """Send several requests on one connection and read one reply per request."""
    reader, writer = await asyncio.open_unix_connection(str(path))
    try:
        replies = []
        for request in requests:
            line = request if isinstance(request, bytes) else json.dumps(request).encode() + b"\n"
            writer.write(line)
            await writer.drain()
            replies.append(json.loads(await asyncio.wait_for(reader.readline(), 5)))
        return replies
    finally:
        writer.close()


async def ask1(path: Path, cmd: str, **args: Any) -> dict[str, Any]:
    return (await ask(path, {"cmd": cmd, "args": args}))[0]


# --- good requests -----------------------------------------------------------------------------


async def test_status_passes_the_node_status_through(served: tuple[FakeNode, ControlServer]) -> None:
    _, server = served
    reply = await ask1(server.path, "status")
    assert reply == {"ok": True, "result": FakeNode().status()}


async def test_routes_are_sorted_by_distance_and_json_friendly(
    served: tuple[FakeNode, ControlServer],
) -> None:
    _, server = served
    reply = await ask1(server.path, "routes")
    assert reply["ok"]
    result = reply["result"]
    assert result["node_id"] == f"{OWN_ID:040x}"
    assert result["count"] == 2
    assert result["nodes"] == [
        {
            "id": f"{PEER_A.id:040x}",
            "host": "127.0.0.2",
            "port": 6881,
            "state": "good",
            "failures": 0,
            "rtt": 0.0012,
        },
        {
            "id": f"{PEER_B.id:040x}",
            "host": "127.0.0.3",
            "port": 6882,
            "state": "questionable",
            "failures": 2,
            "rtt": None,
        },
    ]


async def test_ping_converts_the_result(served: tuple[FakeNode, ControlServer]) -> None:
    node, server = served
    reply = await ask1(server.path, "ping", host="127.0.0.2", port=6881)
    assert reply == {
        "ok": True,
        "result": {
            "addr": "127.0.0.2:6881",
            "ok": True,
            "node_id": f"{PEER_A.id:040x}",
            "rtt": 0.0005,
            "error": None,
        },
    }
    assert node.calls == [("ping", ("127.0.0.2", 6881))]


async def test_lookup_reports_hex_ids_addresses_and_distances(served: tuple[FakeNode, ControlServer]) -> None:
    node, server = served
    target = "ff" * 20
    reply = await ask1(server.path, "lookup", target=target.upper())
    assert node.calls == [("find_node", 2**160 - 1)]
    result = reply["result"]
    assert result["target"] == target
    assert result["closest"] == [
        {"id": f"{PEER_A.id:040x}", "addr": "127.0.0.2:6881", "distance": f"{PEER_A.id ^ (2**160 - 1):040x}"},
        {"id": f"{PEER_B.id:040x}", "addr": "127.0.0.3:6882", "distance": f"{PEER_B.id ^ (2**160 - 1):040x}"},
    ]
    assert (result["queried"], result["responded"], result["failed"]) == (3, 2, 1)
    assert result["duration"] == 0.0042
    assert result["timed_out"] is False


async def test_announce_with_and_without_port(served: tuple[FakeNode, ControlServer]) -> None:
    node, server = served
    with_port, implied = await ask(
        server.path,
        {"cmd": "announce", "args": {"info_hash": INFO_HASH.hex(), "port": 51413}},
        {"cmd": "announce", "args": {"info_hash": INFO_HASH.hex(), "port": None}},
    )
    assert with_port["result"] == {
        "info_hash": INFO_HASH.hex(),
        "port": 51413,
        "stored_at": 2,
        "attempted": 2,
        "peers": ["127.0.0.9:51413"],
        "reannounce_interval": 900.0,
    }
    assert implied["result"]["port"] is None
    assert node.calls == [("announce", (INFO_HASH, 51413)), ("announce", (INFO_HASH, None))]


async def test_announce_once_and_unannounce(served: tuple[FakeNode, ControlServer]) -> None:
    node, server = served
    once = await ask1(server.path, "announce", info_hash=INFO_HASH.hex(), port=1, keep=False)
    assert once["result"]["reannounce_interval"] is None
    stopped, again = await ask(
        server.path,
        {"cmd": "unannounce", "args": {"info_hash": INFO_HASH.hex()}},
        {"cmd": "unannounce", "args": {"info_hash": INFO_HASH.hex()}},
    )
    assert stopped["result"] == {"info_hash": INFO_HASH.hex(), "was_announced": True}
    assert again["result"] == {"info_hash": INFO_HASH.hex(), "was_announced": False}
    assert node.calls[0] == ("announce", (INFO_HASH, 1, False))


async def test_put_mutable_text_value(served: tuple[FakeNode, ControlServer]) -> None:
    node, server = served
    reply = await ask1(server.path, "put", value="hello", name="greeting")
    assert node.calls == [("put", (b"hello", "greeting", False, None))]
    assert reply == {
        "ok": True,
        "result": {
            "kind": "mutable",
            "target": "08" * 20,
            "value_b64": base64.b64encode(b"5:hello").decode(),
            "size": 7,
            "seq": 4,
            "public_key": PUBLIC_KEY.hex(),
            "salt_b64": base64.b64encode(b"greeting").decode(),
            "signature": "06" * 64,
            "address": f"{PUBLIC_KEY.hex()}/greeting",
            "stored_at": 2,
            "attempted": 3,
            "errors": {"302": 1},
        },
    }


async def test_put_immutable_bytes_bencoded_and_cas(served: tuple[FakeNode, ControlServer]) -> None:
    node, server = served
    raw = base64.b64encode(b"\x00\xff").decode()
    immutable = await ask1(server.path, "put", value_b64=raw, immutable=True)
    assert immutable["result"]["kind"] == "immutable"
    assert immutable["result"]["target"] == hashlib.sha1(b"2:\x00\xff").hexdigest()
    assert "seq" not in immutable["result"] and "address" not in immutable["result"]
    structured = base64.b64encode(b"d1:ai1ee").decode()
    await ask1(server.path, "put", value_b64=structured, bencoded=True, name="n", cas=7)
    assert node.calls == [("put", (b"\x00\xff", b"", True, None)), ("put", ({b"a": 1}, "n", False, 7))]


async def test_put_reports_the_nodes_refusal_of_a_too_large_value(served: tuple[FakeNode, ControlServer]) -> None:
    _, server = served
    reply = await ask1(server.path, "put", value="x" * 1000, immutable=True)
    assert reply == {
        "ok": False,
        "error": "put: value is 1005 bytes when bencoded; BEP 44 items hold at most 1000 bytes",
    }


async def test_get_by_target_address_and_locally(served: tuple[FakeNode, ControlServer]) -> None:
    node, server = served
    found = (await ask1(server.path, "get", target=ITEM.target.hex()))["result"]
    assert found == {
        "target": ITEM.target.hex(),
        "found": True,
        "local": False,
        "item": {
            "kind": "mutable",
            "target": ITEM.target.hex(),
            "value_b64": base64.b64encode(b"5:hello").decode(),
            "size": 7,
            "seq": 3,
            "public_key": PUBLIC_KEY.hex(),
            "salt_b64": base64.b64encode(b"greeting").decode(),
            "signature": "05" * 64,
            "address": f"{PUBLIC_KEY.hex()}/greeting",
        },
        "holders": 2,
        "invalid": 1,
        "queried": 3,
        "nodes_answered": 2,
        "duration": 0.0042,
    }
    missing = (await ask1(server.path, "get", target="ab" * 20))["result"]
    assert (missing["found"], missing["item"], missing["target"]) == (False, None, "ab" * 20)
    address = f"{PUBLIC_KEY.hex()}/greeting"
    by_address = (await ask1(server.path, "get", target=address))["result"]
    assert by_address["item"]["seq"] == 3
    local = (await ask1(server.path, "get", target=address, local=True))["result"]
    assert local["local"] is True and local["item"] == found["item"] and local["queried"] == 0
    assert local["target"] == hashlib.sha1(PUBLIC_KEY + b"greeting").hexdigest()
    local_missing = (await ask1(server.path, "get", target="cd" * 20, local=True))["result"]
    assert (local_missing["found"], local_missing["target"]) == (False, "cd" * 20)
    assert node.calls == [
        ("get", (ITEM.target.hex(), "")),
        ("get", ("ab" * 20, "")),
        ("get", (address, "")),
        ("local_item", (address, "")),
        ("local_item", ("cd" * 20, "")),
    ]


async def test_peers_converts_peers_tokens_and_lookup(served: tuple[FakeNode, ControlServer]) -> None:
    _, server = served
    result = (await ask1(server.path, "peers", info_hash=INFO_HASH.hex()))["result"]
    assert result["info_hash"] == INFO_HASH.hex()
    assert result["peers"] == ["127.0.0.9:51413"]
    assert result["tokens"] == {"127.0.0.2:6881": "0102"}
    assert result["lookup"]["target"] == INFO_HASH.hex()
    assert result["lookup"]["closest"][0]["distance"] == f"{PEER_A.id ^ int.from_bytes(INFO_HASH, 'big'):040x}"


async def test_one_connection_serves_several_requests_even_pipelined(
    served: tuple[FakeNode, ControlServer],
) -> None:
    _, server = served
    reader, writer = await asyncio.open_unix_connection(str(server.path))
    writer.write(b'{"cmd": "status"}\n\n{"cmd": "routes", "args": null}\n{"cmd": "nope"}\n')
    await writer.drain()
    replies = [json.loads(await asyncio.wait_for(reader.readline(), 5)) for _ in range(3)]
    writer.close()
    assert [r["ok"] for r in replies] == [True, True, False]
    assert "count" in replies[1]["result"]


# --- bad requests ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_line", "fragment"),
    [
        (b"not json\n", "not valid JSON"),
        (b"\xff\xfe\n", "not valid JSON"),
        (b"[1, 2]\n", "must be a JSON object"),
        (b'{"cmd": "reboot"}\n', "unknown command 'reboot'"),
        (b'{"cmd": 7}\n', "unknown command 7"),
        (b'{"args": {}}\n', "unknown command None"),
        (b'{"cmd": "status", "args": []}\n', "args must be a JSON object"),
        (b'{"cmd": "status", "extra": 1}\n', "unknown request field(s) extra"),
        (b'{"cmd": "status", "args": {"verbose": true}}\n', "unknown argument(s) verbose"),
        (b'{"cmd": "ping", "args": {"host": "127.0.0.2"}}\n', "missing argument(s): port"),
        (b'{"cmd": "ping", "args": {"host": "example.org", "port": 1}}\n', "host must be an IPv4 address"),
        (b'{"cmd": "ping", "args": {"host": 2130706433, "port": 1}}\n', "host must be an IPv4 address"),
        (b'{"cmd": "ping", "args": {"host": "127.0.0.2", "port": 0}}\n', "port must be an integer"),
        (b'{"cmd": "ping", "args": {"host": "127.0.0.2", "port": 65536}}\n', "port must be an integer"),
        (b'{"cmd": "ping", "args": {"host": "127.0.0.2", "port": "80"}}\n', "port must be an integer"),
        (b'{"cmd": "ping", "args": {"host": "127.0.0.2", "port": true}}\n', "port must be an integer"),
        (b'{"cmd": "ping", "args": {"host": "127.0.0.2", "port": 1.5}}\n', "port must be an integer"),
        (b'{"cmd": "lookup", "args": {"target": "abc"}}\n', "target must be 40 hex characters"),
        (b'{"cmd": "lookup", "args": {"target": "' + b"zz" * 20 + b'"}}\n', "target must be 40 hex"),
        (b'{"cmd": "lookup", "args": {"target": 12}}\n', "target must be 40 hex characters"),
        (b'{"cmd": "peers", "args": {}}\n', "missing argument(s): info_hash"),
        (b'{"cmd": "peers", "args": {"info_hash": "' + b"ab" * 21 + b'"}}\n', "info_hash must be 40 hex"),
        (b'{"cmd": "announce", "args": {"info_hash": "' + b"ab" * 20 + b'", "port": -1}}\n', "port must be"),
        (b'{"cmd": "announce", "args": {"info_hash": "' + b"ab" * 20 + b'", "keep": 1}}\n', "keep must be true"),
        (b'{"cmd": "unannounce", "args": {"info_hash": "ab"}}\n', "info_hash must be 40 hex"),
        (b'{"cmd": "put", "args": {}}\n', "exactly one of value (UTF-8 text) and value_b64"),
        (b'{"cmd": "put", "args": {"value": "a", "value_b64": "YQ=="}}\n', "exactly one of value"),
        (b'{"cmd": "put", "args": {"value": 5}}\n', "value must be a string"),
        (b'{"cmd": "put", "args": {"value_b64": "***"}}\n', "value_b64 is not valid base64"),
        (b'{"cmd": "put", "args": {"value_b64": 5}}\n', "value_b64 must be a base64 string"),
        (b'{"cmd": "put", "args": {"value": "a", "immutable": "yes"}}\n', "immutable must be true or false"),
        (b'{"cmd": "put", "args": {"value": "a", "immutable": true, "name": "n"}}\n', "immutable item has no name"),
        (b'{"cmd": "put", "args": {"value": "a", "name": 5}}\n', "name must be a string"),
        (b'{"cmd": "put", "args": {"value": "a", "cas": "1"}}\n', "cas must be an integer"),
        (b'{"cmd": "put", "args": {"value": "a", "cas": true}}\n', "cas must be an integer"),
        (b'{"cmd": "put", "args": {"value": "i01e", "bencoded": true}}\n', "not valid bencode"),
        (b'{"cmd": "put", "args": {"value": "a", "key": "k"}}\n', "unknown argument(s) key"),
        (b'{"cmd": "get", "args": {}}\n', "missing argument(s): target"),
        (b'{"cmd": "get", "args": {"target": "xyz"}}\n', "neither a target (40 hex characters) nor an address"),
        (b'{"cmd": "get", "args": {"target": 5}}\n', "target must be a string"),
        (b'{"cmd": "get", "args": {"target": "' + b"zz" * 20 + b'"}}\n', "not hexadecimal"),
        (b'{"cmd": "get", "args": {"target": "' + b"ab" * 32 + b"/" + b"n" * 65 + b'"}}\n', "is 65 bytes"),
        (b'{"cmd": "get", "args": {"target": "' + b"ab" * 20 + b'", "salt": 1}}\n', "salt must be a string"),
        (b'{"cmd": "get", "args": {"target": "' + b"ab" * 20 + b'", "local": 1}}\n', "local must be true"),
    ],
)
async def test_bad_requests_get_an_error_and_the_connection_stays_usable(
    served: tuple[FakeNode, ControlServer], request_line: bytes, fragment: str
) -> None:
    node, server = served
    bad, good = await ask(server.path, request_line, {"cmd": "status"})
    assert bad["ok"] is False
    assert fragment in bad["error"]
    assert set(bad) == {"ok", "error"}
    assert good["ok"] is True
    assert node.calls == []


async def test_a_failing_node_operation_is_reported_not_raised(
    served: tuple[FakeNode, ControlServer],
) -> None:
    node, server = served
    node.fail_with = RuntimeError("socket closed")
    failed, still_alive = await ask(server.path, {"cmd": "lookup", "args": {"target": "00" * 20}}, {"cmd": "status"})
    assert failed["ok"] is False
    assert "lookup failed inside the daemon" in failed["error"]
    assert "socket closed" in failed["error"]
    assert still_alive["ok"] is True


async def test_a_too_long_line_is_refused_and_the_connection_closed(short_dir: Path) -> None:
    async with ControlServer(FakeNode(), short_dir / "c.sock", max_line=1024) as server:
        reader, writer = await asyncio.open_unix_connection(str(server.path))
        writer.write(b'{"cmd": "status", "args": {"pad": "' + b"x" * 5000 + b'"}}\n')
        await writer.drain()
        reply = json.loads(await asyncio.wait_for(reader.readline(), 5))
        assert reply["ok"] is False
        assert "longer than 1024 bytes" in reply["error"]
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
        assert (await ask1(server.path, "status"))["ok"] is True


async def test_the_default_line_limit_is_64_kib(served: tuple[FakeNode, ControlServer]) -> None:
    _, server = served
    fits = {"cmd": "status", "args": {"pad": "x" * 60_000}}
    assert "unknown argument(s) pad" in (await ask(server.path, fits))[0]["error"]
    too_long = {"cmd": "status", "args": {"pad": "x" * 70_000}}
    assert "longer than 65536 bytes" in (await ask(server.path, too_long))[0]["error"]


async def test_connections_beyond_the_limit_are_refused(short_dir: Path) -> None:
    async with ControlServer(FakeNode(), short_dir / "c.sock", max_connections=2) as server:
        held = [await asyncio.open_unix_connection(str(server.path)) for _ in range(2)]
        for reader, writer in held:  # a served request proves the connection is counted
            writer.write(b'{"cmd": "status"}\n')
            assert json.loads(await asyncio.wait_for(reader.readline(), 5))["ok"]
        reply = await ask1(server.path, "status")
        assert reply["ok"] is False
        assert "already serves 2 control connections" in reply["error"]
        held[0][1].close()
        await held[0][1].wait_closed()
        for _ in range(100):
            if len(server._tasks) < 2:
                break
            await asyncio.sleep(0.01)
        assert (await ask1(server.path, "status"))["ok"] is True
        held[1][1].close()


async def test_idle_connections_are_closed(short_dir: Path) -> None:
    async with ControlServer(FakeNode(), short_dir / "c.sock", idle_timeout=0.05) as server:
        reader, writer = await asyncio.open_unix_connection(str(server.path))
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()


@settings(max_examples=200, deadline=None)
@given(
    cmd=st.sampled_from(
        ["status", "routes", "ping", "lookup", "announce", "unannounce", "peers", "put", "get", "x"]
    ),
    args=st.dictionaries(
        st.sampled_from(
            ["host", "port", "target", "info_hash", "other", "value", "value_b64", "name", "immutable",
             "bencoded", "cas", "salt", "local", "keep"]
        ),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=50),
            lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
            max_leaves=5,
        ),
    ),
)
def test_any_request_gets_a_well_formed_reply(cmd: str, args: dict[str, Any]) -> None:
    reply = asyncio.run(handle_request(FakeNode(), json.dumps({"cmd": cmd, "args": args}).encode()))
    assert isinstance(reply["ok"], bool)
    json.dumps(reply)  # always serialisable
    if not reply["ok"]:
        assert isinstance(reply["error"], str) and reply["error"]


# --- socket hygiene ----------------------------------------------------------------------------


async def test_socket_is_created_with_mode_0600_and_removed_on_close(short_dir: Path) -> None:
    path = short_dir / "sub" / "control.sock"
    old = os.umask(0)  # even a permissive umask must not widen the socket
    try:
        server = ControlServer(FakeNode(), path)
        await server.start()
    finally:
        os.umask(old)
    mode = os.stat(path).st_mode
    assert stat.S_ISSOCK(mode)
    assert stat.S_IMODE(mode) == 0o600
    await server.close()
    assert not path.exists()
    await server.close()  # idempotent


async def test_a_stale_socket_file_is_replaced(short_dir: Path) -> None:
    path = short_dir / "control.sock"
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))  # bound but never listening, then closed: what a crashed daemon leaves
    dead.close()
    assert path.exists()
    async with ControlServer(FakeNode(), path) as server:
        assert (await ask1(server.path, "status"))["ok"]


async def test_a_live_daemon_is_not_replaced(served: tuple[FakeNode, ControlServer]) -> None:
    _, server = served
    with pytest.raises(ControlSocketError, match="already running"):
        await ControlServer(FakeNode(), server.path).start()
    assert (await ask1(server.path, "status"))["ok"]


async def test_a_regular_file_in_the_way_is_left_alone(short_dir: Path) -> None:
    path = short_dir / "control.sock"
    path.write_text("precious")
    with pytest.raises(ControlSocketError, match="not a socket"):
        await ControlServer(FakeNode(), path).start()
    assert path.read_text() == "precious"


async def test_close_leaves_a_socket_that_another_server_now_owns(short_dir: Path) -> None:
    path = short_dir / "control.sock"
    first = ControlServer(FakeNode(), path)
    await first.start()
    path.unlink()  # e.g. an operator removed it and started another daemon
    async with ControlServer(FakeNode(), path) as second:
        await first.close()
        assert path.exists()
        assert (await ask1(second.path, "status"))["ok"]


async def test_too_long_socket_path_is_refused_with_advice(short_dir: Path) -> None:
    path = short_dir / ("d" * (MAX_UNIX_PATH - len(str(short_dir)))) / "control.sock"
    with pytest.raises(ControlSocketError, match="shorter --data-dir"):
        await ControlServer(FakeNode(), path).start()


async def test_close_ends_requests_in_progress(short_dir: Path) -> None:
    node = FakeNode()
    node.gate = asyncio.Event()  # never set: the lookup hangs
    server = ControlServer(node, short_dir / "c.sock")
    await server.start()
    reader, writer = await asyncio.open_unix_connection(str(server.path))
    writer.write(b'{"cmd": "lookup", "args": {"target": "' + b"00" * 20 + b'"}}\n')
    await writer.drain()
    while not node.calls:
        await asyncio.sleep(0.01)
    await asyncio.wait_for(server.close(), 5)
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()


# --- JSON conversion ---------------------------------------------------------------------------


def test_to_json_conversions() -> None:
    assert to_json(NodeInfo(5, ("127.0.0.2", 1))) == {"id": "0" * 39 + "5", "addr": "127.0.0.2:1"}
    assert to_json({"node_id": 255, "count": 255}) == {"node_id": "0" * 38 + "ff", "count": 255}
    assert to_json({("127.0.0.2", 1): b"\xab"}) == {"127.0.0.2:1": "ab"}
    assert to_json([("127.0.0.2", 1), True, None, 1.5]) == ["127.0.0.2:1", True, None, 1.5]
    assert to_json(PingResult(("127.0.0.2", 1), False, error="timeout")) == {
        "addr": "127.0.0.2:1",
        "ok": False,
        "node_id": None,
        "rtt": None,
        "error": "timeout",
    }


# --- the synchronous client --------------------------------------------------------------------


async def test_client_returns_results_and_raises_on_errors(served: tuple[FakeNode, ControlServer]) -> None:
    _, server = served
    client = ControlClient(server.path, timeout=5)
    result = await asyncio.to_thread(client.call, "peers", info_hash=INFO_HASH.hex())
    assert result["peers"] == ["127.0.0.9:51413"]
    with pytest.raises(ControlError, match="target must be 40 hex"):
        await asyncio.to_thread(client.call, "lookup", target="xyz")


async def test_client_times_out_on_a_hung_daemon(short_dir: Path) -> None:
    path = short_dir / "hung.sock"
    hold = asyncio.Event()

    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await hold.wait()
        writer.close()

    server = await asyncio.start_unix_server(never_answer, str(path))
    try:
        client = ControlClient(path, timeout=0.2)
        with pytest.raises(ControlTimeout, match=r"did not answer .status. within 0\.2 s"):
            await asyncio.to_thread(client.call, "status")
    finally:
        hold.set()
        server.close()


async def test_client_reports_a_daemon_that_hangs_up(short_dir: Path) -> None:
    path = short_dir / "rude.sock"

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        writer.write(b"garbage\n")
        writer.close()

    server = await asyncio.start_unix_server(hang_up, str(path))
    try:
        with pytest.raises(ControlError, match="unreadable reply"):
            await asyncio.to_thread(ControlClient(path, timeout=5).call, "status")
    finally:
        server.close()


def test_client_reports_a_missing_daemon_with_advice(short_dir: Path) -> None:
    client = ControlClient(short_dir / "control.sock")
    with pytest.raises(DaemonNotRunning) as info:
        client.call("status")
    assert str(info.value) == (
        f"no kadnode daemon is running with data dir {short_dir} — start one with `kadnode run --data-dir {short_dir}`"
    )


def test_client_treats_a_stale_socket_as_no_daemon(short_dir: Path) -> None:
    path = short_dir / "control.sock"
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))
    dead.close()
    with pytest.raises(DaemonNotRunning, match="no kadnode daemon is running"):
        ControlClient(path).call("status")
