"""bench.fetch at CI size (4 MiB, 2 seeders, 1 run): every case completes, verified, with consistent figures;
plus the pieces it measures with (sizes, settings, one child's rusage, the medians and the table). No
timing targets: the machine may be busy."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.fetch import (
    CASES,
    MiB,
    format_report,
    main,
    parse_lt_set,
    parse_size,
    run_measured,
    summarize_case,
)

SIZE = 4 * MiB
SEEDERS = 2


def test_sizes_are_binary_multiples() -> None:
    assert parse_size("100M") == 100 * MiB
    assert parse_size("4m") == 4 * MiB
    assert parse_size("512K") == 512 * 1024
    assert parse_size("1G") == 1 << 30
    assert parse_size("1.5MiB") == 3 * MiB // 2
    assert parse_size("12345") == 12345
    for bad in ("", "M", "-1M", "0", "10X", "ten"):
        with pytest.raises(ValueError):
            parse_size(bad)


def test_libtorrent_settings_from_the_command_line() -> None:
    assert parse_lt_set(["tick_interval=100", "dht_read_only=false", "user_agent=x=y"]) == {
        "tick_interval": 100,
        "dht_read_only": False,
        "user_agent": "x=y",
    }
    with pytest.raises(ValueError):
        parse_lt_set(["tick_interval"])


def test_run_measured_reports_that_child_alone(tmp_path: Path) -> None:
    """64 MiB touched and ~0.3 s of CPU burnt by the child show in its own figures; neither an earlier,
    bigger child (RUSAGE_CHILDREN) nor this process (ru_maxrss after vfork) leaks into a small one's peak."""
    out, err = tmp_path / "out", tmp_path / "err"
    code = (
        "import time\nb = bytearray(64 << 20)\nfor i in range(0, len(b), 4096): b[i] = 1\n"
        "t = time.process_time()\nwhile time.process_time() - t < 0.3: pass\nprint('done')"
    )
    big = run_measured([sys.executable, "-c", code], cwd=str(tmp_path), env=None, stdout=out, stderr=err, timeout=30)
    assert big.exit_code == 0 and not big.timed_out and out.read_text() == "done\n"
    assert big.peak_rss_bytes >= 64 * MiB
    assert big.cpu_s >= 0.3 and big.wall_s >= 0.3
    assert 64 * MiB <= big.peak_anon_rss_bytes <= big.peak_rss_bytes

    small = run_measured(
        [sys.executable, "-c", "import time; time.sleep(0.3); raise SystemExit(3)"],
        cwd=str(tmp_path),
        env=None,
        stdout=out,
        stderr=err,
        timeout=30,
    )
    assert small.exit_code == 3
    assert 0 < small.peak_rss_bytes < 48 * MiB < big.peak_rss_bytes  # not this (pytest) process's RSS

    hung = run_measured(
        [sys.executable, "-c", "import time; time.sleep(60)"],
        cwd=str(tmp_path),
        env=None,
        stdout=out,
        stderr=err,
        timeout=0.5,
    )
    assert hung.timed_out and hung.exit_code == -9 and hung.wall_s < 10


def _run(case: str, run: int, transfer: float | None, verified: bool) -> dict[str, Any]:
    return {
        "case": case,
        "run": run,
        "size": 8 * MiB,
        "seeders": 2,
        "process_s": (transfer or 0) + 0.25,
        "transfer_s": transfer,
        "mib_per_s": 8 / transfer if transfer and verified else None,
        "cpu_s": 0.5,
        "peak_rss_bytes": 40 * MiB,
        "peak_anon_rss_bytes": 20 * MiB,
        "seeders_cpu_s": 0.1,
        "verified": verified,
        "error": None if verified else "SHA-256 of the fetched file is 00, not ff",
    }


def test_medians_leave_failed_runs_out_and_the_table_says_so() -> None:
    case = CASES[0]
    runs = [
        _run(case.key, 1, 1.0, True),
        _run(case.key, 2, 4.0, True),
        _run(case.key, 3, 0.5, False),
        _run(case.key, 4, 2.0, True),
    ]
    summary = summarize_case(case, runs)
    assert summary["runs"] == 4 and summary["verified"] == 3
    assert summary["transfer_s"]["median"] == 2.0  # of 1, 2 and 4: the failed run's 0.5 s is not a result
    assert summary["mib_per_s"]["median"] == 4.0
    assert summary["transfer_s"]["min"] == 1.0 and summary["transfer_s"]["max"] == 4.0
    report = {
        "parameters": {"size": 8 * MiB, "seeders": 2, "runs": 4, "lt_warmup": 3.0},
        "environment": {"python": "3.11", "cpus": 2, "loadavg_start": [1.0], "loadavg_end": [1.0]},
        "summary": {case.key: summary},
        "runs": runs,
    }
    text = format_report(report)
    row = next(line for line in text.splitlines() if line.startswith(case.label))
    assert row.split()[-1] == "3/4"
    assert "2.00" in row.split() and "4.0" in row.split()
    assert "FAILED: run 3 of kadnode_from_kadnode: SHA-256" in text


def _children() -> set[int]:
    pids: set[int] = set()
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        text = (task / "children").read_text().split()
        pids.update(int(pid) for pid in text)
    return pids


@pytest.mark.interop
def test_every_case_fetches_the_file_verified_with_consistent_figures(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    children_before = _children()
    out = tmp_path / "fetch.json"
    assert main(["--size", "4M", "--seeders", str(SEEDERS), "--runs", "1", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    table = capsys.readouterr().out

    assert report["parameters"]["size"] == SIZE and report["parameters"]["seeders"] == SEEDERS
    setup = report["setup"]
    assert len(setup["kadnode_sharers"]) == SEEDERS and len(setup["libtorrent_share"]["endpoints"]) == SEEDERS
    kadnode_hash, lt_hash = setup["kadnode_share"]["info_hash"], setup["libtorrent_share"]["info_hash"]
    assert kadnode_hash != lt_hash  # libtorrent's own torrent of the file: only libtorrent can serve case 3
    assert {r["case"] for r in report["runs"]} == {c.key for c in CASES} and len(report["runs"]) == len(CASES)

    for run in report["runs"]:
        label = run["case"]
        assert run["error"] is None and run["verified"] is True, run
        assert run["sha256"] == setup["sha256"], label
        assert run["size"] == SIZE and run["seeders"] == SEEDERS
        assert run["info_hash"] == (lt_hash if run["case"].endswith("libtorrent") else kadnode_hash)
        assert 0 < run["transfer_s"] <= run["process_s"] <= run["process_wall_s"], label
        assert run["mib_per_s"] == pytest.approx(SIZE / MiB / run["transfer_s"], rel=1e-3), label
        assert run["cpu_s"] > 0 and run["cpu_s"] == pytest.approx(run["cpu_user_s"] + run["cpu_system_s"], abs=2e-3)
        assert 10 * MiB < run["peak_rss_bytes"] < 1024 * MiB, label
        assert run["peak_anon_rss_bytes"] <= run["peak_rss_bytes"], label
        # The seeders really sent the file (each piece at least once), and their CPU was read.
        assert len(run["served_by_seeder"]) == SEEDERS and sum(run["served_by_seeder"]) >= SIZE, label
        assert run["seeders_used"] >= 1 and run["seeders_cpu_s"] is not None, label
        if run["case"].startswith("kadnode"):
            assert run["downloaded"] == SIZE and run["banned"] == [] and run["reused_pieces"] == 0
        else:
            assert run["downloaded"] >= SIZE
            assert 0 <= run["metadata_s"] < run["transfer_s"]
            assert run["process_wall_s"] - run["process_s"] == pytest.approx(run["warmup_s"], abs=1e-3)

    for case in CASES:
        summary = report["summary"][case.key]
        assert summary["verified"] == 1 and summary["runs"] == 1
        run = next(r for r in report["runs"] if r["case"] == case.key)
        assert summary["transfer_s"]["median"] == run["transfer_s"]
        row = next(line for line in table.splitlines() if line.startswith(case.label))
        assert row.split()[-1] == "1/1" and f"{run['mib_per_s']:.1f}" in row.split()

    # Everything it started is gone: no child process left, no work directory.
    assert _children() <= children_before
    assert not Path(report["workdir"]).exists()
