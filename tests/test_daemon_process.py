"""`kadnode run` as real processes: two daemons, the CLI between them, hostile datagrams, warm restart.

These are the issue's acceptance scenarios, run exactly as an operator would run them.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kadnode.wire.bencode import bencode

INFO_HASH = "c12fe1c06bba254a9dc9f519b335aa7c1367a88a"


def free_udp_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def kadnode(*args: str, data_dir: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kadnode", *args, "--data-dir", str(data_dir)],
        capture_output=True, text=True, timeout=timeout,
    )


def status(data_dir: Path) -> dict:  # type: ignore[type-arg]
    done = kadnode("status", "--json", data_dir=data_dir)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


class Daemon:
    """One `kadnode run` process; waits until its control socket answers."""

    def __init__(self, host: str, port: int, data_dir: Path, *bootstrap: str) -> None:
        self.host, self.port, self.data_dir = host, port, data_dir
        args = [sys.executable, "-m", "kadnode", "run", "--host", host, "--port", str(port),
                "--data-dir", str(data_dir)]
        for seed in bootstrap:
            args += ["--bootstrap", seed]
        self.log = open(data_dir.parent / f"{host}-{port}.log", "a")  # noqa: SIM115
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, env=os.environ.copy())
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited {self.proc.returncode}: {self.read_log()}")
            if kadnode("status", data_dir=data_dir, timeout=10).returncode == 0:
                return
            time.sleep(0.1)
        raise AssertionError(f"daemon did not come up: {self.read_log()}")

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"

    def read_log(self) -> str:
        self.log.flush()
        return (self.data_dir.parent / f"{self.host}-{self.port}.log").read_text()

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=20)
        self.log.close()
        return self.proc.returncode


@pytest.fixture
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="kn-proc-", dir="/tmp") as tmp:  # short: Unix socket paths
        yield Path(tmp)


def test_two_daemons_announce_and_find_peers_then_survive_garbage_and_restart_warm(workdir: Path) -> None:
    port_a, port_b = free_udp_port("127.0.0.2"), free_udp_port("127.0.0.3")
    a = Daemon("127.0.0.2", port_a, workdir / "a")
    b = Daemon("127.0.0.3", port_b, workdir / "b", f"127.0.0.2:{port_a}")
    try:
        # Announce on one, find the peer from the other.
        done = kadnode("announce", INFO_HASH, "--port", "51413", data_dir=workdir / "a")
        assert done.returncode == 0, done.stderr
        done = kadnode("peers", INFO_HASH, "--json", data_dir=workdir / "b")
        assert done.returncode == 0, done.stderr
        assert "127.0.0.2:51413" in json.dumps(json.loads(done.stdout))

        # Hostile datagrams: garbage, truncated, deeply nested, oversized, wrong types.
        junk = [
            b"", b"\xff" * 40, b"d1:t2:aa1:y1:q", b"l" * 5000, b"x" * 3000,
            bencode({b"t": b"aa", b"y": b"q", b"q": b"find_node", b"a": {b"id": b"short"}}),
            bencode({b"t": 5, b"y": b"q"}),
            bencode({b"t": b"zz", b"y": b"r", b"r": {b"id": b"\x01" * 20}}),
        ]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.9", 0))
            for _ in range(20):
                for datagram in junk:
                    sock.sendto(datagram, ("127.0.0.3", port_b))
        time.sleep(0.5)
        done = kadnode("ping", f"127.0.0.3:{port_b}", data_dir=workdir / "a")
        assert done.returncode == 0, done.stderr
        counters = status(workdir / "b")["counters"]
        dropped = counters["dropped"]
        assert dropped["oversized"] >= 20
        assert dropped["bad_bencode"] >= 20
        assert dropped["unsolicited"] >= 20
        assert counters["errors_out"]["203"] >= 20  # the malformed query with a readable tid

        # Warm restart: stop b, start it again with no --bootstrap: it rejoins from its saved table.
        assert b.stop() == 0
        assert (workdir / "b" / "kadnode.db").exists()
        b = Daemon("127.0.0.3", port_b, workdir / "b")
        deadline = time.monotonic() + 15
        while status(workdir / "b")["routing_table"]["good"] < 1 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert status(workdir / "b")["routing_table"]["good"] >= 1, b.read_log()
        node_a = status(workdir / "a")["node_id"]
        done = kadnode("lookup", node_a, "--json", data_dir=workdir / "b")
        assert done.returncode == 0 and node_a in done.stdout, done.stderr
        # The peer b stored for a's announce survived the restart (SQLite in the data dir).
        done = kadnode("peers", INFO_HASH, "--json", data_dir=workdir / "b")
        assert "127.0.0.2:51413" in done.stdout, done.stderr
    finally:
        b.stop()
        a.stop()
