"""The `kadnode` CLI, through click's CliRunner, against a control server backed by a fake node."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from kadnode.cli import main
from kadnode.core.results import AnnounceResult, GetPeersResult, GetResult, LookupResult, PingResult, PutResult
from kadnode.runtime.control import ControlServer
from kadnode.storage.base import ImmutableItem, Item, MutableItem
from kadnode.types import Addr, NodeInfo
from kadnode.wire.bencode import Bencodable, bencode
from tests.conftest import FAKE_PUBLIC_KEY, FakeEntry, FakeNodeBase, fake_item

OWN_ID = 0xF000000000000000000000000000000000000000
NEAR = NodeInfo(0x0000000000000000000000000000000000000001, ("127.0.0.2", 6881))
FAR = NodeInfo(0x8000000000000000000000000000000000000000, ("127.0.0.30", 40000))
IH = "c0ffee" + "00" * 17
COMMANDS = [
    "run", "status", "routes", "ping", "lookup", "announce", "unannounce", "peers", "put", "get", "demo", "sim",
    "share", "shares", "unshare", "locate", "fetch",
]
PUBLIC_KEY = FAKE_PUBLIC_KEY
ADDRESS = f"{PUBLIC_KEY.hex()}/greeting"


class FakeNode(FakeNodeBase):
    def __init__(self) -> None:
        super().__init__(OWN_ID)
        self.peers: list[Addr] = [("127.0.0.2", 51413), ("127.0.0.30", 6881)]
        self.stored_at = 8
        self.attempted = 8
        self.errors: dict[int, int] = {}
        self.fail: Exception | None = None
        self.holders = 3
        self.invalid = 0

    def status(self) -> dict[str, Any]:
        return {"node_id": f"{OWN_ID:040x}", "external_addr": None, "routing_table": {"nodes": 2, "good": 1}}

    def routes(self) -> list[tuple[FakeEntry, str]]:
        return [
            (FakeEntry(FAR.id, FAR.addr, 1, None), "questionable"),
            (FakeEntry(NEAR.id, NEAR.addr, 0, 0.00025), "good"),
        ]

    def _lookup(self, target: int) -> LookupResult:
        return LookupResult(target, [NEAR, FAR], queried=5, responded=4, failed=1, duration=0.0123)

    async def ping(self, addr: Addr) -> PingResult:
        self.calls.append(("ping", addr))
        if addr[1] == 9:
            return PingResult(addr, False, error="timeout")
        return PingResult(addr, True, node_id=NEAR.id, rtt=0.00042)

    async def find_node(self, target: int) -> LookupResult:
        self.calls.append(("find_node", target))
        return self._lookup(target)

    async def get_peers(self, info_hash: bytes) -> GetPeersResult:
        self.calls.append(("get_peers", info_hash))
        if self.fail is not None:
            raise self.fail
        return GetPeersResult(info_hash, list(self.peers), self._lookup(int.from_bytes(info_hash, "big")))

    async def announce(self, info_hash: bytes, port: int | None = None, *, keep: bool = True) -> AnnounceResult:
        self.calls.append(("announce", (info_hash, port)))
        self.announced.add(info_hash)
        return AnnounceResult(info_hash, port, stored_at=self.stored_at, attempted=8, peers=self.peers[:1])

    async def put(
        self, value: Bencodable, *, salt: bytes | str = b"", immutable: bool = False, cas: int | None = None
    ) -> PutResult:
        """Stores like a node would (targets are real hashes; the signature is a stand-in)."""
        self.calls.append(("put", (value, salt, immutable, cas)))
        item = fake_item(value, salt=salt, immutable=immutable)
        if isinstance(item, MutableItem):
            old = self.items.get(item.target)
            seq = cas + 1 if cas is not None else (old.seq + 1 if isinstance(old, MutableItem) else 1)
            item = dataclasses.replace(item, seq=seq)
        self.items[item.target] = item
        return PutResult(item.target, item, stored_at=self.stored_at, attempted=self.attempted, errors=self.errors)

    def _target(self, target: bytes | str) -> bytes:
        assert isinstance(target, str)
        if len(target) == 40:
            return bytes.fromhex(target)
        key, _, name = target.partition("/")
        return hashlib.sha1(bytes.fromhex(key) + name.encode()).digest()

    async def get(self, target: bytes | str, *, salt: bytes | str = b"") -> GetResult:
        self.calls.append(("get", target))
        key = self._target(target)
        item = self.items.get(key)
        lookup = self._lookup(int.from_bytes(key, "big"))
        return GetResult(key, item, lookup, holders=self.holders if item else 0, invalid=self.invalid)

    def local_item(self, target: bytes | str, *, salt: bytes | str = b"") -> Item | None:
        self.calls.append(("local_item", target))
        return self.items.get(self._target(target))


@pytest.fixture
def daemon(short_dir: Path) -> Iterator[tuple[Path, FakeNode]]:
    """A control server for a fake node, on its own event loop thread (the CLI blocks on a socket)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    node = FakeNode()
    server = ControlServer(node, short_dir / "control.sock")
    asyncio.run_coroutine_threadsafe(server.start(), loop).result(5)
    try:
        yield short_dir, node
    finally:
        asyncio.run_coroutine_threadsafe(server.close(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, list(args), env=env, prog_name="kadnode")


# --- help and version --------------------------------------------------------------------------


def test_version() -> None:
    result = invoke("--version")
    assert result.exit_code == 0
    assert result.stdout.startswith("kadnode, version ")


def test_group_help_lists_every_command() -> None:
    result = invoke("--help")
    assert result.exit_code == 0
    for command in COMMANDS:
        assert f"  {command} " in result.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_help_teaches_with_an_example(command: str) -> None:
    result = invoke(command, "--help")
    assert result.exit_code == 0
    assert "Example" in result.stdout
    assert f"kadnode {command}" in result.stdout.split("Example", 1)[1]
    if command not in ("run", "demo", "sim"):  # these talk to no daemon
        assert "--data-dir" in result.stdout and "--json" in result.stdout


def test_run_help_explains_seeds_and_the_opt_in_to_mainline() -> None:
    text = " ".join(invoke("run", "--help").stdout.split())
    assert "starts a new, private network" in text
    assert "--seeds-file bootstrap/mainline.txt" in text
    assert "never contacts the public BitTorrent DHT by itself" in text


def test_python_dash_m_runs_the_cli() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "kadnode", "--help"],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
        timeout=60,
        check=True,
    )
    assert "Usage: kadnode" in out.stdout


# --- argument validation -----------------------------------------------------------------------


@pytest.mark.parametrize("command", ["peers", "announce"])
@pytest.mark.parametrize("bad", ["xyz", "ab" * 19, "ab" * 21, "g" * 40])
def test_bad_info_hash_is_a_usage_error(command: str, bad: str, short_dir: Path) -> None:
    result = invoke(command, bad, "--data-dir", str(short_dir))
    assert result.exit_code == 2
    assert f"Error: INFOHASH must be 40 hex characters (a 20-byte SHA-1), got '{bad}'" in result.stderr
    assert result.stdout == ""


def test_bad_lookup_id_is_a_usage_error(short_dir: Path) -> None:
    result = invoke("lookup", "xyz", "--data-dir", str(short_dir))
    assert result.exit_code == 2
    assert "ID must be 40 hex characters (a 160-bit node ID or info-hash), got 'xyz'" in result.stderr


@pytest.mark.parametrize("bad", ["127.0.0.2", "127.0.0.2:0", "127.0.0.2:70000", "localhost:1", "1.2.3:4"])
def test_bad_ping_endpoint_is_a_usage_error(bad: str, short_dir: Path) -> None:
    result = invoke("ping", bad, "--data-dir", str(short_dir))
    assert result.exit_code == 2
    assert f"HOST:PORT must be an IPv4 address and a port like 127.0.0.2:6881, got '{bad}'" in result.stderr


def test_announce_port_is_range_checked(short_dir: Path) -> None:
    result = invoke("announce", IH, "--port", "0", "--data-dir", str(short_dir))
    assert result.exit_code == 2


# --- no daemon ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["status"], ["routes"], ["ping", "127.0.0.2:1"], ["lookup", IH], ["announce", IH], ["peers", IH],
        ["unannounce", IH], ["put", "name", "value"], ["put", "--immutable", "value"], ["get", IH],
        ["get", ADDRESS],
    ],
)
def test_daemon_not_running_says_how_to_start_one(args: list[str], short_dir: Path) -> None:
    result = invoke(*args, "--data-dir", str(short_dir))
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        f"Error: no kadnode daemon is running with data dir {short_dir} — "
        f"start one with `kadnode run --data-dir {short_dir}`"
    )
    assert result.stdout == ""


def test_data_dir_comes_from_the_environment(daemon: tuple[Path, FakeNode]) -> None:
    data_dir, _ = daemon
    result = invoke("status", "--json", env={"KADNODE_DATA_DIR": str(data_dir)})
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["node_id"] == f"{OWN_ID:040x}"


def test_socket_option_overrides_the_data_dir(daemon: tuple[Path, FakeNode], short_dir: Path) -> None:
    data_dir, _ = daemon
    result = invoke("status", "--data-dir", "/nonexistent", "--socket", str(data_dir / "control.sock"))
    assert result.exit_code == 0, result.output


# --- commands against the fake daemon ----------------------------------------------------------


def test_status_human_and_json(daemon: tuple[Path, FakeNode]) -> None:
    data_dir, _ = daemon
    human = invoke("status", "--data-dir", str(data_dir))
    assert human.exit_code == 0
    lines = human.stdout.splitlines()
    assert lines[0].split() == ["node_id", f"{OWN_ID:040x}"]
    assert "routing_table.nodes" in human.stdout and "external_addr" in human.stdout
    assert len({line.index(line.split()[1]) for line in lines}) == 1  # values aligned in one column
    assert json.loads(invoke("status", "--json", "--data-dir", str(data_dir)).stdout)["routing_table"] == {
        "nodes": 2,
        "good": 1,
    }


def test_routes_table(daemon: tuple[Path, FakeNode]) -> None:
    data_dir, _ = daemon
    result = invoke("routes", "--data-dir", str(data_dir))
    assert result.exit_code == 0
    header, first, second, footer = result.stdout.splitlines()
    assert header.split() == ["ID", "ADDRESS", "STATE", "FAILURES", "RTT"]
    assert first.split() == [
        f"{FAR.id:040x}",
        "127.0.0.30:40000",
        "questionable",
        "1",
        "-",
    ]  # XOR-closer to us
    assert second.split() == [f"{NEAR.id:040x}", "127.0.0.2:6881", "good", "0", "0.2", "ms"]
    assert header.index("STATE") == first.index("questionable") == second.index("good")
    assert footer == f"2 nodes in the routing table of {OWN_ID:040x}"
    parsed = json.loads(invoke("routes", "--json", "--data-dir", str(data_dir)).stdout)
    assert [n["port"] for n in parsed["nodes"]] == [40000, 6881]


def test_ping(daemon: tuple[Path, FakeNode]) -> None:
    data_dir, node = daemon
    result = invoke("ping", "127.0.0.2:6881", "--data-dir", str(data_dir))
    assert result.exit_code == 0
    assert result.stdout == f"pong from 127.0.0.2:6881: node id {NEAR.id:040x}, rtt 0.4 ms\n"
    assert node.calls == [("ping", ("127.0.0.2", 6881))]
    failed = invoke("ping", "127.0.0.2:9", "--data-dir", str(data_dir))
    assert failed.exit_code == 1
    assert "Error: no answer from 127.0.0.2:9: timeout" in failed.stderr
    failed_json = invoke("ping", "127.0.0.2:9", "--json", "--data-dir", str(data_dir))
    assert failed_json.exit_code == 1
    assert json.loads(failed_json.stdout)["error"] == "timeout"


def test_lookup_prints_the_closest_with_distances(daemon: tuple[Path, FakeNode]) -> None:
    data_dir, node = daemon
    target = "FF" * 20
    result = invoke("lookup", target, "--data-dir", str(data_dir))
    assert result.exit_code == 0, result.output
    assert node.calls == [("find_node", 2**160 - 1)]
    summary, header, first, second = result.stdout.splitlines()
    assert summary == f"lookup {'ff' * 20}: queried 5, responded 4, failed 1, 12.3 ms"
    assert header.split() == ["#", "ID", "ADDRESS", "DISTANCE", "LOG2"]
    assert first.split() == [
        "1",
        f"{NEAR.id:040x}",
        "127.0.0.2:6881",
        f"{NEAR.id ^ (2**160 - 1):040x}",
        "160",
    ]
    assert second.split()[-1] == "159"
    parsed = json.loads(invoke("lookup", target, "--json", "--data-dir", str(data_dir)).stdout)
    assert parsed["closest"][1] == {
        "id": f"{FAR.id:040x}",
        "addr": "127.0.0.30:40000",
        "distance": f"{FAR.id ^ (2**160 - 1):040x}",
    }


def test_announce(daemon: tuple[Path, FakeNode]) -> None:
    data_dir, node = daemon
    result = invoke("announce", IH, "--port", "51413", "--data-dir", str(data_dir))
    assert result.exit_code == 0
    assert result.stdout == (
        f"announced {IH} (port 51413) to 8 of 8 nodes; 1 other peer already listed\n"
        f"the daemon re-announces it every 15 min until `kadnode unannounce {IH}`\n"
    )
    implied = invoke("announce", IH, "--data-dir", str(data_dir))
    assert "(implied port)" in implied.stdout
    assert node.calls == [("announce", (bytes.fromhex(IH), 51413)), ("announce", (bytes.fromhex(IH), None))]
    assert json.loads(invoke("announce", IH, "--json", "--data-dir", str(data_dir)).stdout)["stored_at"] == 8


def test_announce_that_nobody_stored_fails(daemon: tuple[Path, FakeNode]) -> None:
    data_dir, node = daemon
    node.stored_at = 0
    result = invoke("announce", IH, "--data-dir", str(data_dir))
    assert result.exit_code == 1
    assert "no node stored the announce (8 tried)" in result.stderr


def test_peers_table_and_json(daemon: tuple[Path, FakeNode]) -> None:
    data_dir, _ = daemon
    result = invoke("peers", IH, "--data-dir", str(data_dir))
    assert result.exit_code == 0
    assert result.stdout.splitlines() == [
        "HOST        PORT",
        "127.0.0.2   51413",
        "127.0.0.30  6881",
        f"2 peers for {IH}",
    ]
    assert "queried 5, responded 4, 12.3 ms" in result.stderr
    as_json = invoke("peers", IH, "--json", "--data-dir", str(data_dir))
    assert json.loads(as_json.stdout) == ["127.0.0.2:51413", "127.0.0.30:6881"]


def test_no_peers_is_not_an_error(daemon: tuple[Path, FakeNode]) -> None:
    data_dir, node = daemon
    node.peers = []
    result = invoke("peers", IH, "--data-dir", str(data_dir))
    assert result.exit_code == 0
    assert result.stdout == f"no peers found for {IH}\n"
    as_json = invoke("peers", IH, "--json", "--data-dir", str(data_dir))
    assert as_json.exit_code == 0
    assert json.loads(as_json.stdout) == []


def test_daemon_errors_go_to_stderr_with_exit_1(daemon: tuple[Path, FakeNode]) -> None:
    data_dir, node = daemon
    node.fail = RuntimeError("node is shutting down")
    result = invoke("peers", IH, "--data-dir", str(data_dir))
    assert result.exit_code == 1
    assert result.stdout == ""
    assert "Error: peers failed inside the daemon" in result.stderr
    assert "node is shutting down" in result.stderr


def test_unannounce(daemon: tuple[Path, FakeNode]) -> None:
    data_dir, node = daemon
    node.announced.add(bytes.fromhex(IH))
    result = invoke("unannounce", IH.upper(), "--data-dir", str(data_dir))
    assert result.exit_code == 0, result.output
    assert result.stdout == f"stopped announcing {IH}; nodes forget this host when their entry expires\n"
    again = invoke("unannounce", IH, "--data-dir", str(data_dir))
    assert again.exit_code == 1
    assert f"Error: {IH} is not being announced by this daemon" in again.stderr
    assert invoke("unannounce", "xyz", "--data-dir", str(data_dir)).exit_code == 2


# --- put and get -------------------------------------------------------------------------------


def test_put_mutable_prints_target_and_address(daemon: tuple[Path, FakeNode]) -> None:
    data_dir, node = daemon
    result = invoke("put", "greeting", "hello, world", "--data-dir", str(data_dir))
    assert result.exit_code == 0, result.output
    target = hashlib.sha1(PUBLIC_KEY + b"greeting").hexdigest()
    assert result.stdout.splitlines() == [
        "stored greeting (seq 1, 15 bytes bencoded) on 8 of 8 nodes",
        f"target   {target}",
        f"address  {ADDRESS}",
    ]
    assert node.calls == [("put", (b"hello, world", "greeting", False, None))]
    second = invoke("put", "greeting", "v2", "--json", "--data-dir", str(data_dir))
    parsed = json.loads(second.stdout)
    assert (parsed["seq"], parsed["address"], parsed["stored_at"]) == (2, ADDRESS, 8)
    assert base64.b64decode(parsed["value_b64"]) == b"2:v2"


def test_put_immutable_prints_the_hash(daemon: tuple[Path, FakeNode]) -> None:
    data_dir, node = daemon
    result = invoke("put", "--immutable", "hello", "--data-dir", str(data_dir))
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "stored immutable item (7 bytes bencoded) on 8 of 8 nodes",
        f"target   {hashlib.sha1(b'5:hello').hexdigest()}",
    ]
    assert node.calls == [("put", (b"hello", b"", True, None))]


def test_put_values_from_a_file_stdin_and_bencoded(daemon: tuple[Path, FakeNode], short_dir: Path) -> None:
    data_dir, node = daemon
    blob = bytes(range(256))
    (short_dir / "blob").write_bytes(blob)
    assert invoke("put", "--immutable", "--file", str(short_dir / "blob"), "--data-dir", str(data_dir)).exit_code == 0
    piped = CliRunner().invoke(main, ["put", "note", "-", "--data-dir", str(data_dir)], input=b"line\n")
    assert piped.exit_code == 0, piped.output
    piped_file = CliRunner().invoke(
        main, ["put", "--immutable", "--file", "-", "--data-dir", str(data_dir)], input=b"x"
    )
    assert piped_file.exit_code == 0, piped_file.output
    structured = invoke("put", "cfg", "d4:porti6881ee", "--bencoded", "--cas", "4", "--data-dir", str(data_dir))
    assert structured.exit_code == 0, structured.output
    assert "seq 5" in structured.stdout
    assert [call[1] for call in node.calls] == [
        (blob, b"", True, None),
        (b"line\n", "note", False, None),
        (b"x", b"", True, None),
        ({b"port": 6881}, "cfg", False, 4),
    ]


def test_put_on_a_lone_daemon_says_it_is_stored_locally(daemon: tuple[Path, FakeNode]) -> None:
    data_dir, node = daemon
    node.stored_at = node.attempted = 0
    result = invoke("put", "greeting", "hi", "--data-dir", str(data_dir))
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == (
        "stored greeting (seq 1, 4 bytes bencoded) locally; no other node reached "
        "(the daemon puts it once it joins a network)"
    )
    assert result.stdout.splitlines()[2] == f"address  {ADDRESS}"


def test_put_partly_refused_and_wholly_refused(daemon: tuple[Path, FakeNode]) -> None:
    data_dir, node = daemon
    node.stored_at, node.attempted, node.errors = 5, 8, {302: 2}
    partly = invoke("put", "greeting", "hi", "--data-dir", str(data_dir))
    assert partly.exit_code == 0
    assert partly.stdout.splitlines()[0] == (
        "stored greeting (seq 1, 4 bytes bencoded) on 5 of 8 nodes; "
        "2 refused it (2x 302 sequence number less than current), 1 did not answer"
    )
    node.stored_at, node.attempted, node.errors = 0, 3, {301: 3}
    refused = invoke("put", "greeting", "hi", "--data-dir", str(data_dir))
    assert refused.exit_code == 1
    assert "Error: no node stored the item: 3 refused it (3x 301 cas mismatch: the item changed)" in refused.stderr


def test_put_refuses_a_too_large_value_without_a_daemon(short_dir: Path) -> None:
    result = invoke("put", "--immutable", "x" * 997, "--data-dir", str(short_dir))
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        "Error: value is 1001 bytes when bencoded (997 bytes of data); BEP 44 items hold at most 1000 bytes"
    )
    (short_dir / "big").write_bytes(b"y" * 100_000)
    big = invoke("put", "name", "--file", str(short_dir / "big"), "--data-dir", str(short_dir))
    assert big.exit_code == 1
    assert "value is more than 65536 bytes; BEP 44 items hold at most 1000 bytes" in big.stderr
    fits = invoke("put", "--immutable", "x" * 996, "--data-dir", str(short_dir))
    assert "no kadnode daemon is running" in fits.stderr  # 1000 bytes: it would have been sent


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["put"], "missing NAME"),
        (["put", "name"], "missing VALUE"),
        (["put", "--immutable"], "missing VALUE"),
        (["put", "name", "a", "b"], "too many arguments"),
        (["put", "--immutable", "a", "b"], "too many arguments"),
        (["put", "name", "a", "--file", "/etc/hostname"], "give VALUE or --file, not both"),
        (["put", "n" * 65, "a"], "NAME must be 1 to 64 bytes of UTF-8, got 65 bytes"),
        (["put", "", "a"], "NAME must be 1 to 64 bytes"),
        (["put", "--immutable", "--cas", "1", "a"], "--cas applies to mutable items only"),
        (["get", "xyz"], "neither a target (40 hex characters) nor an address PUBKEY/NAME"),
        (["get", "ab" * 33], "neither a target"),
        (["get", "zz" * 32 + "/name"], "not hexadecimal"),
        (["get", "ab" * 32 + "/" + "n" * 65], "is 65 bytes; BEP 44 allows at most 64"),
    ],
)
def test_bad_put_and_get_arguments_are_usage_errors(args: list[str], fragment: str, short_dir: Path) -> None:
    result = invoke(*args, "--data-dir", str(short_dir))
    assert result.exit_code == 2, result.output
    assert fragment in result.stderr


def test_put_reports_an_unreadable_file(short_dir: Path) -> None:
    result = invoke("put", "name", "--file", str(short_dir / "missing"), "--data-dir", str(short_dir))
    assert result.exit_code == 1
    assert f"cannot read {short_dir / 'missing'}: No such file or directory" in result.stderr


def test_get_prints_byte_strings_raw_and_other_values_as_json(daemon: tuple[Path, FakeNode]) -> None:
    data_dir, node = daemon
    invoke("put", "greeting", "hello", "--data-dir", str(data_dir))
    raw = invoke("get", ADDRESS, "--data-dir", str(data_dir))
    assert raw.exit_code == 0, raw.output
    assert raw.stdout_bytes == b"hello"  # exact bytes: no newline added when not on a terminal
    assert raw.stderr == "(seq 1, signature valid; held by 3 of 4 nodes that answered)\n"
    blob = bytes([0, 255, 10])
    target = hashlib.sha1(bencode(blob)).hexdigest()
    node.items[bytes.fromhex(target)] = ImmutableItem(bytes.fromhex(target), bencode(blob))
    assert invoke("get", target, "--data-dir", str(data_dir)).stdout_bytes == blob
    structured = {b"name": b"kadnode", b"ports": [6881, 6882], b"id": b"\xff\x00"}
    cfg = f"{PUBLIC_KEY.hex()}/cfg"
    node.items[hashlib.sha1(PUBLIC_KEY + b"cfg").digest()] = MutableItem(
        hashlib.sha1(PUBLIC_KEY + b"cfg").digest(), PUBLIC_KEY, b"cfg", 1, b"\x06" * 64, bencode(structured)
    )
    shown = invoke("get", cfg, "--data-dir", str(data_dir))
    assert json.loads(shown.stdout) == {"id": {"hex": "ff00"}, "name": "kadnode", "ports": [6881, 6882]}


def test_get_json(daemon: tuple[Path, FakeNode]) -> None:
    data_dir, _ = daemon
    invoke("put", "greeting", "hello", "--data-dir", str(data_dir))
    target = hashlib.sha1(PUBLIC_KEY + b"greeting").hexdigest()
    for name in (ADDRESS, target):
        result = invoke("get", name, "--json", "--data-dir", str(data_dir))
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout) == {
            "value": "hello",
            "kind": "mutable",
            "seq": 1,
            "public_key": PUBLIC_KEY.hex(),
            "address": ADDRESS,
            "signature_valid": True,
            "target": target,
            "holders": 3,
            "nodes_answered": 4,
            "local": False,
        }
    invoke("put", "--immutable", "17", "--data-dir", str(data_dir))
    got = invoke("get", hashlib.sha1(b"2:17").hexdigest(), "--json", "--data-dir", str(data_dir))
    immutable = json.loads(got.stdout)
    assert (immutable["value"], immutable["kind"], immutable["seq"], immutable["signature_valid"]) == (
        "17", "immutable", None, None
    )


def test_get_of_a_missing_item_fails_with_what_was_asked(daemon: tuple[Path, FakeNode]) -> None:
    data_dir, node = daemon
    result = invoke("get", IH, "--data-dir", str(data_dir))
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.strip() == f"Error: no item found under {IH} (asked 5 nodes)"
    by_address = invoke("get", ADDRESS, "--json", "--data-dir", str(data_dir))
    target = hashlib.sha1(PUBLIC_KEY + b"greeting").hexdigest()
    assert by_address.exit_code == 1
    assert f"Error: no item found under {ADDRESS} (target {target}; asked 5 nodes)" in by_address.stderr
    node.invalid = 2
    unverifiable = invoke("get", IH, "--data-dir", str(data_dir))
    assert unverifiable.stderr.strip() == (
        f"Error: no item found under {IH} (asked 5 nodes); 2 answers failed verification (a salted mutable "
        "item looked up by its raw target cannot be checked: use its address PUBKEY/NAME)"
    )


def test_get_says_when_only_the_daemon_itself_had_the_item(daemon: tuple[Path, FakeNode]) -> None:
    data_dir, node = daemon
    invoke("put", "greeting", "hello", "--data-dir", str(data_dir))
    node.holders = 0
    result = invoke("get", ADDRESS, "--data-dir", str(data_dir))
    assert result.stderr == (
        "(seq 1, signature valid; from this daemon's store; none of the 4 nodes that answered had it)\n"
    )
    node.invalid = 1
    result = invoke("get", ADDRESS, "--data-dir", str(data_dir))
    assert result.stderr == (
        "(seq 1, signature valid; from this daemon's store; none of the 4 nodes that answered had it; "
        "1 answer failed verification)\n"
    )


def test_get_local_reads_only_the_daemon_store(daemon: tuple[Path, FakeNode]) -> None:
    data_dir, node = daemon
    missing = invoke("get", ADDRESS, "--local", "--data-dir", str(data_dir))
    assert missing.exit_code == 1
    assert "this daemon holds no item under" in missing.stderr
    invoke("put", "greeting", "hello", "--data-dir", str(data_dir))
    found = invoke("get", ADDRESS, "--local", "--data-dir", str(data_dir))
    assert found.exit_code == 0 and found.stdout == "hello"
    assert found.stderr == "(seq 1, signature valid; held by this daemon)\n"
    assert node.calls[-1] == ("local_item", ADDRESS)


# --- run ---------------------------------------------------------------------------------------


def test_run_builds_the_config_from_flags_over_the_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from kadnode.runtime import daemon

    seen: list[Any] = []

    def fake_run(config: Any) -> int:
        seen.append(config)
        return 3

    monkeypatch.setattr(daemon, "run", fake_run)
    config_file = tmp_path / "kadnode.toml"
    config_file.write_text('host = "127.0.0.5"\nport = 7000\nlog_level = "debug"\n[settings]\nk = 20\n')
    result = invoke(
        "run",
        "--config",
        str(config_file),
        "--port",
        "7001",
        "--data-dir",
        str(tmp_path / "data"),
        "--bootstrap",
        "127.0.0.2:6881",
        "--bootstrap",
        "127.0.0.3:6882",
        "--log-format",
        "json",
    )
    assert result.exit_code == 3, result.output
    (config,) = seen
    assert config.host == "127.0.0.5"
    assert config.port == 7001
    assert config.data_dir == tmp_path / "data"
    assert config.bootstrap == (("127.0.0.2", 6881), ("127.0.0.3", 6882))
    assert config.log_level == "debug"
    assert config.log_format == "json"
    assert config.settings.k == 20


def test_run_reports_a_bad_config_file(tmp_path: Path) -> None:
    config_file = tmp_path / "bad.toml"
    config_file.write_text("port = 'many'\n")
    result = invoke("run", "--config", str(config_file))
    assert result.exit_code == 1
    assert "cannot load the configuration" in result.stderr and "port must be an integer" in result.stderr


def test_run_rejects_a_bad_bootstrap_endpoint() -> None:
    result = invoke("run", "--bootstrap", "127.0.0.2:notaport")
    assert result.exit_code == 2
    assert "--bootstrap" in result.stderr and "port must be a number" in result.stderr


def test_client_commands_do_not_import_the_runtime() -> None:
    code = "import sys, kadnode.cli; print(sorted(m for m in sys.modules if m.startswith('kadnode.runtime')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"


def test_default_data_dir_is_used_without_flag_or_env(monkeypatch: pytest.MonkeyPatch, short_dir: Path) -> None:
    monkeypatch.delenv("KADNODE_DATA_DIR", raising=False)
    result = CliRunner().invoke(main, ["status"], env={"XDG_DATA_HOME": str(short_dir)}, prog_name="kadnode")
    assert result.exit_code == 1
    assert f"with data dir {short_dir / 'kadnode'} —" in result.stderr


# --- end to end: real daemons ------------------------------------------------------------------


@contextlib.asynccontextmanager
async def real_daemons(hosts: list[str]) -> AsyncIterator[tuple[list[Path], list[Any]]]:
    """`run_daemon` for each host (data dirs under /tmp), each later one joined through the first."""
    from kadnode.config import DaemonConfig
    from kadnode.runtime.daemon import run_daemon
    from kadnode.runtime.node import Node

    dirs = [Path(tempfile.mkdtemp(prefix="kn-e2e-", dir="/tmp")) for _ in hosts]
    stops = [asyncio.Event() for _ in hosts]
    nodes: list[Node] = []
    tasks: list[asyncio.Task[None]] = []
    try:
        for i, host in enumerate(hosts):
            came_up = asyncio.Event()

            def ready(node: Node, came_up: asyncio.Event = came_up) -> None:
                nodes.append(node)
                came_up.set()

            bootstrap = (nodes[0].addr,) if nodes else ()
            config = DaemonConfig(host=host, port=0, data_dir=dirs[i], bootstrap=bootstrap)
            tasks.append(asyncio.create_task(run_daemon(config, ready=ready, stop_event=stops[i])))
            await asyncio.wait_for(came_up.wait(), 10)
            for _ in range(200):  # each later daemon joins through the first
                status = await cli("status", "--json", "--data-dir", str(dirs[i]))
                assert status.exit_code == 0, status.output
                if i == 0 or json.loads(status.stdout)["routing_table"]["nodes"] >= 1:
                    break
                await asyncio.sleep(0.05)
            else:
                pytest.fail(f"daemon {i} never bootstrapped")
        yield dirs, nodes
    finally:
        for stop in stops:
            stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 10)
        sockets_left = [path for path in dirs if (path / "control.sock").exists()]
        for path in dirs:
            shutil.rmtree(path, ignore_errors=True)
    assert sockets_left == []


async def cli(*args: str, input: bytes | None = None) -> Result:
    return await asyncio.to_thread(lambda: CliRunner().invoke(main, list(args), input=input, prog_name="kadnode"))


@pytest.mark.parametrize(
    "hosts",
    [
        pytest.param(["127.0.0.2", "127.0.0.3"], id="two-daemons"),
        pytest.param(["127.0.0.2", "127.0.0.3", "127.0.0.4"], id="three-daemons"),
    ],
)
async def test_announce_on_one_daemon_is_found_from_another(hosts: list[str]) -> None:
    async with real_daemons(hosts) as (dirs, nodes):
        announced = await cli("announce", IH, "--port", "51413", "--data-dir", str(dirs[0]))
        assert announced.exit_code == 0, announced.output
        assert announced.stdout.startswith(f"announced {IH} (port 51413) to ")

        found = await cli("peers", IH, "--data-dir", str(dirs[1]))
        assert found.exit_code == 0, found.output
        assert found.stdout.splitlines() == ["HOST       PORT", "127.0.0.2  51413", f"1 peer for {IH}"]
        as_json = await cli("peers", IH, "--json", "--data-dir", str(dirs[1]))
        assert json.loads(as_json.stdout) == ["127.0.0.2:51413"]

        routes = await cli("routes", "--json", "--data-dir", str(dirs[1]))
        assert ("127.0.0.2", nodes[0].addr[1]) in [(n["host"], n["port"]) for n in json.loads(routes.stdout)["nodes"]]
        ping = await cli("ping", f"127.0.0.3:{nodes[1].addr[1]}", "--data-dir", str(dirs[0]))
        assert ping.exit_code == 0, ping.output
        assert ping.stdout.startswith(f"pong from 127.0.0.3:{nodes[1].addr[1]}: node id {nodes[1].node_id:040x}")

        stopped = await cli("unannounce", IH, "--data-dir", str(dirs[0]))
        assert stopped.exit_code == 0, stopped.output
        status = json.loads((await cli("status", "--json", "--data-dir", str(dirs[0]))).stdout)
        assert status["storage"]["own_announces"] == 0


async def test_put_on_one_daemon_get_from_another() -> None:
    async with real_daemons(["127.0.0.2", "127.0.0.3", "127.0.0.4"]) as (dirs, nodes):
        a, c = str(dirs[0]), str(dirs[2])
        public_key = nodes[0].identity.public_key.hex()
        put = await cli("put", "greeting", "hello, world", "--data-dir", a)
        assert put.exit_code == 0, put.output
        first, target_line, address_line = put.stdout.splitlines()
        assert first == "stored greeting (seq 1, 15 bytes bencoded) on 2 of 2 nodes"
        assert address_line == f"address  {public_key}/greeting"
        target = target_line.split()[1]

        got = await cli("get", f"{public_key}/greeting", "--data-dir", c)
        assert got.exit_code == 0, got.output
        assert got.stdout == "hello, world"
        assert got.stderr.startswith("(seq 1, signature valid; held by ")
        assert got.stderr.endswith(" of 2 nodes that answered)\n")

        updated = await cli("put", "greeting", "-", "--data-dir", a, input=b"second\n")
        assert "seq 2" in updated.stdout, updated.output
        as_json = json.loads((await cli("get", target, "--json", "--data-dir", c)).stdout)
        assert (as_json["value"], as_json["seq"], as_json["public_key"]) == ("second\n", 2, public_key)
        assert as_json["signature_valid"] is True and as_json["nodes_answered"] == 2

        immutable = await cli("put", "--immutable", "forever", "--data-dir", c)
        assert immutable.exit_code == 0, immutable.output
        hash_hex = immutable.stdout.splitlines()[1].split()[1]
        assert hash_hex == hashlib.sha1(b"7:forever").hexdigest()
        assert (await cli("get", hash_hex, "--data-dir", a)).stdout == "forever"

        missing = await cli("get", "00" * 20, "--data-dir", a)
        assert missing.exit_code == 1
        assert f"Error: no item found under {'00' * 20} (asked 2 nodes)" in missing.stderr
        too_large = await cli("put", "big", "x" * 1000, "--data-dir", a)
        assert too_large.exit_code == 1 and "1000 bytes" in too_large.stderr


async def test_a_lone_daemon_stores_locally_and_says_so() -> None:
    async with real_daemons(["127.0.0.2"]) as (dirs, nodes):
        put = await cli("put", "solo", "just me", "--data-dir", str(dirs[0]))
        assert put.exit_code == 0, put.output
        assert "locally; no other node reached" in put.stdout
        address = f"{nodes[0].identity.public_key.hex()}/solo"
        got = await cli("get", address, "--data-dir", str(dirs[0]))
        assert got.exit_code == 0 and got.stdout == "just me"
        local = await cli("get", address, "--local", "--json", "--data-dir", str(dirs[0]))
        assert json.loads(local.stdout)["local"] is True
        missing = await cli("get", "00" * 20, "--data-dir", str(dirs[0]))
        assert missing.exit_code == 1
        assert "(asked 0 nodes); the daemon knows no other node yet" in missing.stderr
