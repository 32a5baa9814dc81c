"""Must-show 2: nothing a daemon acknowledged is lost to kill -9.

A real `kadnode run` process takes a stream of puts over its control socket; every put it answers
with ok:true is recorded. At a moment drawn from a seeded Random the process gets SIGKILL, mid-stream.
It is restarted on the same data directory and every acknowledged item is read back from its local
store (`get` with `local: true`: no network, only what the daemon persisted). The daemon runs alone,
so each put is acknowledged as stored locally (stored_at 0), which is exactly what must survive.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from kadnode.wire.bencode import bencode

HOST = "127.0.0.21"
CYCLES = 24
NAMES = [f"name-{i}" for i in range(8)]
"""Mutable items are updated again and again: the newest acknowledged seq must be what survives."""
SEED = int(os.environ.get("KADNODE_DURABILITY_SEED", "20240503"))
VERIFY_BATCH = 100
"""Read-back requests pipelined on one connection before their replies are read."""


def free_udp_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class Control:
    """A line-oriented connection to the daemon's control socket."""

    def __init__(self, path: Path, timeout: float = 10.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(str(path))
        self.file = self.sock.makefile("rwb")

    def send(self, cmd: str, **args: Any) -> None:
        self.file.write(json.dumps({"cmd": cmd, "args": args}).encode() + b"\n")

    def receive(self) -> dict[str, Any]:
        line = self.file.readline()
        if not line:
            raise ConnectionResetError("the daemon closed the connection")
        reply: dict[str, Any] = json.loads(line)
        return reply

    def call(self, cmd: str, **args: Any) -> dict[str, Any]:
        self.send(cmd, **args)
        self.file.flush()
        return self.receive()

    def close(self) -> None:
        with contextlib.suppress(OSError):  # a killed daemon: the unsent buffer cannot be flushed
            self.file.close()
        self.sock.close()


class Daemon:
    def __init__(self, data_dir: Path, port: int, log: Path) -> None:
        self.data_dir = data_dir
        self.log = open(log, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kadnode", "run", "--host", HOST, "--port", str(port),
             "--data-dir", str(data_dir), "--log-level", "warning"],
            stdout=self.log, stderr=subprocess.STDOUT,
        )

    def connect(self) -> Control:
        """Wait for the control socket to answer status, then return a connection."""
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited with {self.proc.returncode}")
            try:
                control = Control(self.data_dir / "control.sock")
            except OSError:
                time.sleep(0.01)
                continue
            if control.call("status")["ok"]:
                return control
            control.close()
        raise AssertionError("the daemon's control socket did not come up")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.log.close()


@dataclass
class Acked:
    """What the daemon acknowledged: immutable targets, and for each name its newest seq and value."""

    immutable: dict[str, bytes]
    mutable: dict[str, tuple[int, bytes]]
    in_flight: dict[str, bytes]
    """A put sent but not answered when the daemon died: it may or may not have been persisted."""


def stream_puts(control: Control, rng: random.Random, acked: Acked, public_key: str) -> int:
    """Put until the daemon dies; returns how many puts were acknowledged."""
    count = 0
    while True:
        value = rng.randbytes(rng.randint(0, 200))
        mutable = rng.random() < 0.5
        name = rng.choice(NAMES) if mutable else None
        args: dict[str, Any] = {"value_b64": base64.b64encode(value).decode()}
        if name is None:
            args["immutable"] = True
        else:
            args["name"] = name
            acked.in_flight[name] = value
        try:
            reply = control.call("put", **args)
        except (OSError, ValueError):  # killed mid-request: this put was not acknowledged
            return count
        assert reply["ok"], reply
        result = reply["result"]
        assert (result["stored_at"], result["attempted"]) == (0, 0)  # a lone daemon stores locally
        if name is None:
            acked.immutable[result["target"]] = value
        else:
            del acked.in_flight[name]
            previous = acked.mutable.get(name, (0, b""))[0]
            assert result["seq"] > previous, (name, result["seq"], previous)  # seq continues after restarts
            assert result["address"] == f"{public_key}/{name}"
            acked.mutable[name] = (result["seq"], value)
        count += 1


def verify(control: Control, acked: Acked, public_key: str) -> None:
    """Every acknowledged item is in the restarted daemon's local store."""
    requests: list[tuple[str, str | None]] = [(target, None) for target in acked.immutable]
    requests += [(f"{public_key}/{name}", name) for name in acked.mutable]
    for start in range(0, len(requests), VERIFY_BATCH):
        batch = requests[start:start + VERIFY_BATCH]
        for target, _ in batch:
            control.send("get", target=target, local=True)
        control.file.flush()
        for target, name in batch:
            reply = control.receive()
            assert reply["ok"], reply
            item = reply["result"]["item"]
            assert item is not None, f"acknowledged item {target} lost"
            stored = base64.b64decode(item["value_b64"])
            if name is None:
                assert stored == bencode(acked.immutable[target])
                continue
            seq, value = acked.mutable[name]
            if item["seq"] == seq:
                assert stored == bencode(value), f"{name}: seq {seq} holds another value"
            else:  # only the put in flight at the kill may have landed (persisted, then not answered)
                assert item["seq"] == seq + 1 and name in acked.in_flight, (name, item["seq"], seq)
                assert stored == bencode(acked.in_flight[name])
                acked.mutable[name] = (item["seq"], acked.in_flight[name])
    for name in list(acked.in_flight):  # settled either way by the read-back above
        if name not in acked.mutable:
            reply = control.call("get", target=f"{public_key}/{name}", local=True)
            item = reply["result"]["item"]
            if item is not None:
                assert base64.b64decode(item["value_b64"]) == bencode(acked.in_flight[name])
                acked.mutable[name] = (item["seq"], acked.in_flight[name])
    acked.in_flight.clear()


@pytest.fixture
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="kn-dur-", dir="/tmp") as tmp:  # short: Unix socket paths
        yield Path(tmp)


def test_acknowledged_puts_survive_sigkill_at_random_moments(workdir: Path) -> None:
    rng = random.Random(SEED)
    data_dir = workdir / "node"
    port = free_udp_port(HOST)
    acked = Acked({}, {}, {})
    public_key: str | None = None
    total = 0
    started = time.monotonic()
    for cycle in range(CYCLES):
        daemon = Daemon(data_dir, port, workdir / "daemon.log")
        try:
            control = daemon.connect()
            status = control.call("status")["result"]
            if public_key is None:
                public_key = status["public_key"]
            assert status["public_key"] == public_key, "the identity changed across a restart"
            verify(control, acked, public_key)
            delay = rng.uniform(0.0, 0.25)
            killer = threading.Timer(delay, daemon.proc.send_signal, (signal.SIGKILL,))
            killer.start()
            total += stream_puts(control, rng, acked, public_key)
            killer.join()
            control.close()
        finally:
            daemon.kill()
        assert daemon.proc.returncode == -signal.SIGKILL, f"cycle {cycle}: the daemon was not killed"
    daemon = Daemon(data_dir, port, workdir / "daemon.log")
    try:
        assert public_key is not None
        control = daemon.connect()
        verify(control, acked, public_key)
        control.close()
        # The CLI reads the same persisted store.
        name, (_seq, value) = next(iter(acked.mutable.items()))
        done = subprocess.run(
            [sys.executable, "-m", "kadnode", "get", f"{public_key}/{name}", "--local", "--data-dir", str(data_dir)],
            capture_output=True, timeout=30,
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout == value
    finally:
        daemon.kill()
    elapsed = time.monotonic() - started
    assert total >= CYCLES, f"only {total} puts acknowledged in {CYCLES} cycles (seed {SEED})"
    assert len(acked.immutable) + len(acked.mutable) > 0
    print(f"durability: {CYCLES} kills, {total} acknowledged puts, none lost, {elapsed:.1f} s (seed {SEED})")
