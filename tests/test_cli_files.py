"""The file commands' own logic: argument errors, progress output, sizes (the end-to-end runs are in
tests/test_file_locator.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from kadnode.cli import main
from kadnode.cli_files import ProgressLine, human_size
from kadnode.torrent.fetch import FetchProgress

IH = "5fbfbff10c5d6a4ec8a88e4c6ab4c28b95eeb19e"


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), prog_name="kadnode")


@pytest.mark.parametrize("command", ["fetch", "locate", "unshare"])
def test_a_bad_target_is_a_usage_error_that_says_what_to_give(command: str, tmp_path: Path) -> None:
    result = invoke(command, "not-a-hash", "--data-dir", str(tmp_path))
    assert result.exit_code == 2
    assert "40-hex-digit info-hash or a magnet:?xt=urn:btih:" in result.output


@pytest.mark.parametrize("args", [["fetch", IH], ["locate", IH], ["shares"], ["unshare", f"magnet:?xt=urn:btih:{IH}"]])
def test_without_a_daemon_the_commands_say_how_to_start_one(args: list[str], tmp_path: Path) -> None:
    result = invoke(*args, "--data-dir", str(tmp_path))
    assert result.exit_code == 1
    assert "no kadnode daemon is running" in result.output and "kadnode run" in result.output


def test_fetch_checks_a_given_torrent_against_the_target(tmp_path: Path) -> None:
    from kadnode.torrent.metainfo import build_metainfo, torrent_file

    content = tmp_path / "a.bin"
    content.write_bytes(b"x" * 50_000)
    torrent = tmp_path / "a.torrent"
    torrent.write_bytes(torrent_file(build_metainfo(content)))
    result = invoke("fetch", IH, "--torrent", str(torrent), "--data-dir", str(tmp_path))
    assert result.exit_code == 1 and f"not {IH}" in result.output
    (tmp_path / "bad.torrent").write_bytes(b"d4:infoi1ee")
    result = invoke("fetch", IH, "--torrent", str(tmp_path / "bad.torrent"), "--data-dir", str(tmp_path))
    assert result.exit_code == 1 and "not a usable torrent" in result.output


def test_progress_without_a_terminal_prints_every_tenth_and_nothing_before_the_metadata(
    capsys: pytest.CaptureFixture[str],
) -> None:
    line = ProgressLine()
    assert not line.tty  # pytest captures stderr
    line(FetchProgress(verified=0, pieces=0, bytes_done=0, total=0, peers=2, rate=0.0))
    for done in range(0, 101):
        line(FetchProgress(verified=done, pieces=100, bytes_done=done * 1024, total=100 * 1024, peers=3,
                           rate=2048.0))
    line.done()
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 11
    assert lines[0].strip().startswith("0.0%") and lines[-1].startswith("100.0% 100.0 KiB/100.0 KiB")
    assert "100/100 pieces  3 peers  2.0 KiB/s" in lines[-1]


@pytest.mark.parametrize(
    ("size", "text"), [(0, "0 B"), (1023, "1023 B"), (16384, "16.0 KiB"), (20 * 1024**2, "20.0 MiB"),
                       (3 * 1024**4, "3072.0 GiB")],
)
def test_sizes_are_in_binary_units(size: int, text: str) -> None:
    assert human_size(size) == text
