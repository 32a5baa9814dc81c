"""The daemon: start, control socket, bootstrap (with backoff), signals, saving and stopping cleanly."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import threading
import time
from pathlib import Path

import pytest

from kadnode.config import DaemonConfig
from kadnode.runtime.daemon import run, run_daemon
from kadnode.runtime.node import Node
from kadnode.runtime.state import StateStore
from kadnode.settings import Settings
from tests.conftest import eventually

FAST = Settings(
    rpc_timeout_initial=0.2, rpc_timeout_max=0.3, rpc_short_timeout_max=0.1,
    bootstrap_retry_initial=0.1, bootstrap_retry_max=0.2,
)


async def control_request(path: Path, cmd: str) -> dict[str, object]:
    reader, writer = await asyncio.open_unix_connection(str(path))
    try:
        writer.write(json.dumps({"cmd": cmd}).encode() + b"\n")
        await writer.drain()
        reply: dict[str, object] = json.loads(await asyncio.wait_for(reader.readline(), 5))
        return reply
    finally:
        writer.close()
        await writer.wait_closed()


class Daemon:
    """run_daemon in a task, with the Node it started."""

    def __init__(self, config: DaemonConfig) -> None:
        self.config = config
        self.stop = asyncio.Event()
        self.node: Node | None = None
        self.task = asyncio.create_task(run_daemon(config, ready=self._ready, stop_event=self.stop))

    def _ready(self, node: Node) -> None:
        self.node = node

    async def started(self) -> Node:
        await eventually(lambda: self.node is not None or self.task.done())
        if self.task.done():
            self.task.result()  # raises what made it fail
        assert self.node is not None
        return self.node

    async def finish(self) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, 5)


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="kadnode")
    return caplog


async def test_run_daemon_starts_bootstraps_saves_and_stops(
    tmp_path: Path, logs: pytest.LogCaptureFixture
) -> None:
    async with Node("127.0.0.3") as seed:
        config = DaemonConfig(host="127.0.0.2", port=0, data_dir=tmp_path / "data", bootstrap=(seed.addr,),
                              settings=FAST)
        daemon = Daemon(config)
        node = await daemon.started()
        assert node.addr[0] == "127.0.0.2"
        await eventually(lambda: node.core.routing_table.get(seed.node_id) is not None)

        reply = await control_request(config.control_socket_path, "status")
        assert reply["ok"] is True
        result = reply["result"]
        assert isinstance(result, dict)
        assert result["addr"] == f"127.0.0.2:{node.addr[1]}"
        routes = await control_request(config.control_socket_path, "routes")
        assert routes["ok"] is True

        await daemon.finish()
        assert not config.control_socket_path.exists()
        assert not node.running
    with StateStore.open(config.data_dir) as store:
        assert store.load_node_id() == node.node_id
        assert [n.addr for n in store.load_routes()] == [seed.addr]
    text = logs.text
    assert f"node {node.node_id:040x} listening on 127.0.0.2:{node.addr[1]}" in text
    assert "bootstrapped: 1 of 1 seeds answered; routing table has 1 nodes" in text
    assert text.rstrip().endswith("stopped")
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # handlers removed again


async def test_no_seeds_starts_a_new_network(tmp_path: Path, logs: pytest.LogCaptureFixture) -> None:
    daemon = Daemon(DaemonConfig(host="127.0.0.2", port=0, data_dir=tmp_path))
    await daemon.started()
    await eventually(lambda: "no bootstrap seeds: starting a new network" in logs.text)
    await daemon.finish()


async def test_silent_seed_is_retried_with_backoff(
    tmp_path: Path, logs: pytest.LogCaptureFixture
) -> None:
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.5", 0))
    port = silent.getsockname()[1]
    try:
        daemon = Daemon(DaemonConfig(host="127.0.0.2", port=0, data_dir=tmp_path, bootstrap=(("127.0.0.5", port),),
                                     settings=FAST))
        await daemon.started()
        await eventually(lambda: "retrying in 0.2s" in logs.text)
        await daemon.finish()
    finally:
        silent.close()
    warnings = [r.getMessage() for r in logs.records if r.levelno == logging.WARNING]
    assert warnings[:2] == [
        f"no seed answered (tried 127.0.0.5:{port}); retrying in 0.1s",
        f"no seed answered (tried 127.0.0.5:{port}); retrying in 0.2s",
    ]
    assert "bootstrapped" not in logs.text


async def test_seeds_file_and_late_seed(tmp_path: Path, logs: pytest.LogCaptureFixture) -> None:
    """A seed that comes up after the daemon is found on a retry; seeds may come from a file."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.3", 0))
    port = probe.getsockname()[1]
    probe.close()  # a free port for the seed to take later
    seeds = tmp_path / "seeds.txt"
    seeds.write_text(f"# test seeds\n127.0.0.3:{port}\n")
    daemon = Daemon(DaemonConfig(host="127.0.0.2", port=0, data_dir=tmp_path / "d", seeds_file=seeds,
                                 settings=FAST))
    node = await daemon.started()
    await eventually(lambda: "no seed answered" in logs.text)
    async with Node("127.0.0.3", port) as seed:
        await eventually(lambda: node.core.routing_table.get(seed.node_id) is not None)
        await eventually(lambda: "bootstrapped: 1 of 1" in logs.text)
        await daemon.finish()


async def test_warm_start_is_logged_and_used(tmp_path: Path, logs: pytest.LogCaptureFixture) -> None:
    async with Node("127.0.0.3") as seed:
        first = Daemon(DaemonConfig(host="127.0.0.2", port=0, data_dir=tmp_path, bootstrap=(seed.addr,)))
        await first.started()
        await eventually(lambda: "bootstrapped" in logs.text)
        await first.finish()
        logs.clear()
        second = Daemon(DaemonConfig(host="127.0.0.2", port=0, data_dir=tmp_path))
        node = await second.started()
        await eventually(lambda: "bootstrapped: 1 of 1" in logs.text)
        assert "warm start: 1 nodes saved from the last run" in logs.text
        assert "starting a new network" not in logs.text
        assert node.core.routing_table.get(seed.node_id) is not None
        await second.finish()


async def test_bootstraps_again_when_every_node_went_bad(tmp_path: Path, logs: pytest.LogCaptureFixture) -> None:
    async with Node("127.0.0.3") as seed:
        daemon = Daemon(DaemonConfig(host="127.0.0.2", port=0, data_dir=tmp_path, bootstrap=(seed.addr,),
                                     settings=FAST))
        node = await daemon.started()
        await eventually(lambda: "bootstrapped" in logs.text)
        for _ in range(node.settings.max_failures):  # as if maintenance pings had failed
            node.core.routing_table.failed(seed.node_id, node.now())
        assert not node.core.routing_table.closest(node.node_id, 1)
        await eventually(lambda: "no live node left in the routing table; bootstrapping again" in logs.text)
        await eventually(lambda: logs.text.count("bootstrapped: 1 of 1") == 2)
        assert node.core.routing_table.closest(node.node_id, 1)  # the seed answered again: alive
        await daemon.finish()


async def test_second_daemon_on_the_same_data_dir_fails(tmp_path: Path) -> None:
    first = Daemon(DaemonConfig(host="127.0.0.2", port=0, data_dir=tmp_path))
    await first.started()
    second = Daemon(DaemonConfig(host="127.0.0.3", port=0, data_dir=tmp_path))
    with pytest.raises(Exception, match="in use by another kadnode"):
        await asyncio.wait_for(second.task, 5)
    await first.finish()


# --- run(): the synchronous entry point of `kadnode run` ----------------------------------------


@pytest.mark.usefixtures("restore_logging")
def test_run_port_in_use(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    busy = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    busy.bind(("127.0.0.2", 0))
    port = busy.getsockname()[1]
    try:
        code = run(DaemonConfig(host="127.0.0.2", port=port, data_dir=tmp_path))
    finally:
        busy.close()
    assert code == 1
    err = capsys.readouterr().err
    assert (
        f"ERROR kadnode.daemon: cannot bind 127.0.0.2:{port}: address already in use — is another kadnode "
        "running? pick another --port" in err
    )
    assert "Traceback" not in err


@pytest.mark.usefixtures("restore_logging")
def test_run_refuses_an_identity_key_others_can_read(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from kadnode.runtime.identity import IDENTITY_FILE, load_or_create_identity

    load_or_create_identity(tmp_path)
    key_file = tmp_path / IDENTITY_FILE
    key_file.chmod(0o644)
    code = run(DaemonConfig(host="127.0.0.2", port=0, data_dir=tmp_path))
    assert code == 1
    err = capsys.readouterr().err
    assert f"ERROR kadnode.daemon: permissions 0644 for {key_file} are too open" in err
    assert f"Run: chmod 600 {key_file}" in err
    assert "Traceback" not in err


async def test_daemon_logs_its_public_key_and_serves_put_and_get(
    tmp_path: Path, logs: pytest.LogCaptureFixture
) -> None:
    daemon = Daemon(DaemonConfig(host="127.0.0.2", port=0, data_dir=tmp_path, settings=FAST))
    node = await daemon.started()
    try:
        assert node.identity is not None
        assert f"mutable items are signed with public key {node.identity.public_key.hex()}" in logs.text
        reader, writer = await asyncio.open_unix_connection(str(tmp_path / "control.sock"))
        writer.write(json.dumps({"cmd": "put", "args": {"value": "hi", "name": "n"}}).encode() + b"\n")
        await writer.drain()
        put = json.loads(await asyncio.wait_for(reader.readline(), 5))
        writer.write(json.dumps({"cmd": "get", "args": {"target": put["result"]["address"]}}).encode() + b"\n")
        await writer.drain()
        got = json.loads(await asyncio.wait_for(reader.readline(), 5))
        writer.close()
        assert put["ok"] and put["result"]["seq"] == 1 and put["result"]["stored_at"] == 0
        assert got["ok"] and got["result"]["item"] == {k: put["result"][k] for k in got["result"]["item"]}
    finally:
        await daemon.finish()


@pytest.mark.usefixtures("restore_logging")
def test_run_stops_cleanly_on_sigterm(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    original = signal.getsignal(signal.SIGTERM)

    def terminate_when_handled() -> None:
        deadline = time.monotonic() + 10
        while signal.getsignal(signal.SIGTERM) == original:  # only once the daemon handles SIGTERM
            if time.monotonic() > deadline:
                return
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGTERM)

    killer = threading.Thread(target=terminate_when_handled)
    killer.start()
    code = run(DaemonConfig(host="127.0.0.2", port=0, data_dir=tmp_path, log_format="json"))
    killer.join()
    assert code == 0
    messages = [json.loads(line)["msg"] for line in capsys.readouterr().err.splitlines()]
    assert "no bootstrap seeds: starting a new network" in messages
    assert messages[-2:] == ["stopping", "stopped"]
    assert signal.getsignal(signal.SIGTERM) == original
    with StateStore.open(tmp_path) as store:
        assert store.load_node_id() is not None
