"""bench.answer: the in-process answer benchmark answers every query of the mix and reports per method."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.answer import main, run
from bench.loadgen import METHODS


def test_every_query_of_the_mix_is_answered() -> None:
    report = run(400, seed=3, profile=None)
    assert report["queries"] == 400
    assert report["answered"] == 400  # every measured query got its answer (the warm-up is not counted)
    assert set(report["us_per_method"]) == set(METHODS)
    assert all(value is not None and value > 0 for value in report["us_per_method"].values())
    assert report["us_per_query"] > 0


def test_main_prints_and_writes_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "answer.json"
    assert main(["--queries", "200", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "CPU per query" in printed and "get_peers" in printed
    assert json.loads(out.read_text())["queries"] == 200
