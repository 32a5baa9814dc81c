"""The `kadnode` CLI, through click's CliRunner, against a control server backed by a fake node."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from kadnode.cli import main
from kadnode.core.results import AnnounceResult, GetPeersResult, LookupResult, PingResult
from kadnode.runtime.control import ControlServer
from kadnode.types import Addr, NodeInfo

OWN_ID = 0xF000000000000000000000000000000000000000
NEAR = NodeInfo(0x0000000000000000000000000000000000000001, ("127.0.0.2", 6881))
FAR = NodeInfo(0x8000000000000000000000000000000000000000, ("127.0.0.30", 40000))
IH = "c0ffee" + "00" * 17
COMMANDS = ["run", "status", "routes", "ping", "lookup", "announce", "peers", "demo"]


@dataclass(frozen=True, slots=True)
class Entry:
    id: int
    addr: Addr
    failures: int
    rtt: float | None


class FakeNode:
    def __init__(self) -> None:
        self.node_id = OWN_ID
        self.peers: list[Addr] = [("127.0.0.2", 51413), ("127.0.0.30", 6881)]
        self.stored_at = 8
        self.fail: Exception | None = None
        self.calls: list[tuple[str, Any]] = []

    def status(self) -> dict[str, Any]:
        return {"node_id": f"{OWN_ID:040x}", "external_addr": None, "routing_table": {"nodes": 2, "good": 1}}

    def routes(self) -> list[tuple[Entry, str]]:
        return [
            (Entry(FAR.id, FAR.addr, 1, None), "questionable"),
            (Entry(NEAR.id, NEAR.addr, 0, 0.00025), "good"),
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

    async def announce(self, info_hash: bytes, port: int | None = None) -> AnnounceResult:
        self.calls.append(("announce", (info_hash, port)))
        return AnnounceResult(info_hash, port, stored_at=self.stored_at, attempted=8, peers=self.peers[:1])


@pytest.fixture
def short_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="kn-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


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
    if command not in ("run", "demo"):
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
    "args", [["status"], ["routes"], ["ping", "127.0.0.2:1"], ["lookup", IH], ["announce", IH], ["peers", IH]]
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
    assert result.stdout == f"announced {IH} (port 51413) to 8 of 8 nodes; 1 other peer already listed\n"
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


# --- end to end: two real daemons --------------------------------------------------------------


@pytest.mark.parametrize(
    "hosts",
    [
        pytest.param(["127.0.0.2", "127.0.0.3"], id="two-daemons"),
        pytest.param(["127.0.0.2", "127.0.0.3", "127.0.0.4"], id="three-daemons"),
    ],
)
async def test_announce_on_one_daemon_is_found_from_another(hosts: list[str]) -> None:
    from kadnode.config import DaemonConfig
    from kadnode.runtime.daemon import run_daemon
    from kadnode.runtime.node import Node

    dirs = [Path(tempfile.mkdtemp(prefix="kn-e2e-", dir="/tmp")) for _ in hosts]
    stops = [asyncio.Event() for _ in hosts]
    nodes: list[Node] = []
    tasks: list[asyncio.Task[None]] = []

    async def cli(*args: str) -> Result:
        return await asyncio.to_thread(invoke, *args)

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
    finally:
        for stop in stops:
            stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 10)
        sockets_left = [path for path in dirs if (path / "control.sock").exists()]
        for path in dirs:
            shutil.rmtree(path, ignore_errors=True)
    assert sockets_left == []
