"""`kadnode demo`: real nodes on loopback, checked against brute force; clean stop on Ctrl-C."""

from __future__ import annotations

import random
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from kadnode.cli import main
from kadnode.demo import DemoReport, demo_host, run_demo, true_closest

ROOT = Path(__file__).resolve().parent.parent


def test_demo_with_10_nodes_succeeds() -> None:
    result = CliRunner().invoke(main, ["demo", "--nodes", "10", "--seed", "3"], prog_name="kadnode")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "bootstrapped 9/9 nodes" in out
    assert len(re.findall(r"^lookup [0-9a-f]{40} from 127\.0\.0\.\d+:\d+: exact", out, re.M)) == 5
    assert len(re.findall(r"^announce .*: found among", out, re.M)) == 5
    summary = dict((name.strip(), value.strip()) for name, value in re.findall(r"^([a-z /]+?)  +(.+)$", out, re.M))
    assert summary["nodes"] == "10 (9 of 9 joined through the seed)"
    assert summary["lookups exact / total"] == "5/5"
    assert summary["announces found / total"] == "5/5"
    assert re.fullmatch(r"median \d+\.\d ms, max \d+\.\d ms", summary["lookup latency"])
    assert int(summary["datagrams sent"]) > 0
    assert summary["datagrams received"] == summary["datagrams sent"]  # loopback loses nothing; none in flight
    assert summary["result"] == "OK"


async def test_run_demo_reports_every_check_and_uses_only_loopback() -> None:
    lines: list[str] = []
    report = await run_demo(12, seed=5, lookups=3, announces=2, echo=lines.append)
    assert report.ok
    assert (report.nodes, report.joined) == (12, 11)
    assert report.lookups_total == report.lookups_exact == 3
    assert report.lookup_matches == [(8, 8)] * 3
    assert report.announces_total == report.announces_found == 2
    assert len(report.table_sizes) == 12 and min(report.table_sizes) >= 8
    hosts = set(re.findall(r"(\d+\.\d+\.\d+\.\d+):\d+", "\n".join(lines)))
    assert hosts and all(h.startswith("127.0.0.") for h in hosts)


@pytest.mark.slow
async def test_more_nodes_than_addresses_share_addresses_on_distinct_ports() -> None:
    report = await run_demo(245, seed=1, lookups=2, announces=1, echo=lambda _line: None)
    assert report.ok, report.summary()


def test_node_addresses_stay_in_127_0_0_10_to_249() -> None:
    assert demo_host(0) == "127.0.0.10"
    assert demo_host(239) == "127.0.0.249"
    assert demo_host(240) == "127.0.0.10"
    assert {demo_host(i) for i in range(1000)} == {f"127.0.0.{n}" for n in range(10, 250)}


def test_true_closest_is_brute_force_xor_order_without_the_asker() -> None:
    rng = random.Random(4)
    ids = [rng.getrandbits(160) for _ in range(100)]
    target = rng.getrandbits(160)
    asker = min(ids, key=lambda i: i ^ target)
    closest = true_closest(ids, target, 8, exclude=asker)
    assert asker not in closest and len(closest) == 8
    others = set(ids) - set(closest) - {asker}
    assert max(i ^ target for i in closest) < min(i ^ target for i in others)
    assert closest == sorted(closest, key=lambda i: i ^ target)


def test_a_report_with_any_failed_check_is_not_ok() -> None:
    good = DemoReport(nodes=3, joined=2, lookups_total=2, lookups_exact=2, announces_total=1, announces_found=1)
    assert good.ok
    assert not DemoReport(nodes=3, joined=1).ok
    assert not DemoReport(nodes=3, joined=2, lookups_total=2, lookups_exact=1).ok
    assert not DemoReport(nodes=3, joined=2, announces_total=1, announces_found=0).ok
    assert dict(good.summary())["result"] == "OK"
    assert dict(DemoReport(nodes=3, joined=1).summary())["result"] == "FAILED"


def test_ctrl_c_stops_the_demo_cleanly() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "kadnode", "demo", "--nodes", "40", "--lookups", "1000"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # a background shell ignores it
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("lookup "):
                break
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130
    assert "interrupted; all nodes stopped" in err
    assert "Traceback" not in err
