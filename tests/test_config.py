"""Daemon configuration (file, overrides, validation messages) and log formatting."""

from __future__ import annotations

import io
import ipaddress
import json
import logging
import re
import socket
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kadnode import config as config_module
from kadnode.config import DaemonConfig, default_data_dir, load_config, parse_endpoint, read_seeds_file
from kadnode.logs import setup_logging
from kadnode.settings import Settings

# --- default_data_dir --------------------------------------------------------------------------


def test_default_data_dir_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("KADNODE_DATA_DIR", raising=False)
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    assert default_data_dir() == tmp_path / "home" / ".local" / "share" / "kadnode"
    monkeypatch.setenv("XDG_DATA_HOME", "relative/ignored")
    assert default_data_dir() == tmp_path / "home" / ".local" / "share" / "kadnode"
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert default_data_dir() == tmp_path / "xdg" / "kadnode"
    monkeypatch.setenv("KADNODE_DATA_DIR", str(tmp_path / "explicit"))
    assert default_data_dir() == tmp_path / "explicit"
    assert DaemonConfig().data_dir == tmp_path / "explicit"  # evaluated per instance, not at import


def test_defaults_join_no_network() -> None:
    cfg = DaemonConfig()
    assert cfg.bootstrap == ()
    assert cfg.seeds_file is None
    assert cfg.port == 6881
    assert cfg.control_socket_path == cfg.data_dir / "control.sock"
    assert DaemonConfig(control_socket=Path("/x/c.sock")).control_socket_path == Path("/x/c.sock")


# --- parse_endpoint ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.2:6881", ("127.0.0.2", 6881)),
        (" 127.0.0.3:1 ", ("127.0.0.3", 1)),
        ("127.0.0.4", ("127.0.0.4", 6881)),
        ("127.0.0.5:65535", ("127.0.0.5", 65535)),
    ],
)
def test_parse_endpoint(text: str, expected: tuple[str, int]) -> None:
    assert parse_endpoint(text) == expected


@given(st.ip_addresses(v=4), st.integers(1, 65535))
def test_parse_endpoint_round_trips_any_ipv4(ip: ipaddress.IPv4Address, port: int) -> None:
    assert parse_endpoint(f"{ip}:{port}") == (str(ip), port)
    assert parse_endpoint(str(ip), default_port=port) == (str(ip), port)


def test_parse_endpoint_default_port() -> None:
    assert parse_endpoint("127.0.0.9", default_port=7000) == ("127.0.0.9", 7000)


def test_parse_endpoint_literal_does_not_resolve(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("an IP literal must not be resolved")

    monkeypatch.setattr(socket, "getaddrinfo", fail)
    assert parse_endpoint("127.0.0.2:1") == ("127.0.0.2", 1)


def test_parse_endpoint_resolves_names(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[Any, ...]] = []

    def fake(host: str, port: int, family: int, type_: int) -> list[Any]:
        calls.append((host, port, family, type_))
        return [(socket.AF_INET, socket.SOCK_DGRAM, 17, "", ("127.0.0.42", port))]

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    assert parse_endpoint("seed.example:7000") == ("127.0.0.42", 7000)
    assert calls == [("seed.example", 7000, socket.AF_INET, socket.SOCK_DGRAM)]


def test_parse_endpoint_localhost() -> None:
    assert parse_endpoint("localhost:6881") == ("127.0.0.1", 6881)


def test_parse_endpoint_unresolvable(monkeypatch: pytest.MonkeyPatch) -> None:
    def fake(*args: Any) -> Any:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    with pytest.raises(ValueError, match=r"cannot resolve host 'nowhere': Name or service not known"):
        parse_endpoint("nowhere:1")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty endpoint"),
        ("   ", "empty endpoint"),
        (":6881", "missing host"),
        ("127.0.0.1:", "port must be a number"),
        ("127.0.0.1:abc", "port must be a number"),
        ("127.0.0.1:-1", "port must be a number"),
        ("127.0.0.1:0", r"port 0 is out of range \(1-65535\)"),
        ("127.0.0.1:65536", "out of range"),
        ("[::1]:6881", "only IPv4"),
        ("::1", "only IPv4"),
    ],
)
def test_parse_endpoint_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_endpoint(text)


# --- seeds file --------------------------------------------------------------------------------


def test_read_seeds_file(tmp_path: Path) -> None:
    path = tmp_path / "seeds.txt"
    path.write_text(
        "# a comment\n\n127.0.0.2:6881\n   127.0.0.3:7000   # trailing comment\n127.0.0.4\n127.0.0.2:6881\n"
    )
    assert read_seeds_file(path) == [("127.0.0.2", 6881), ("127.0.0.3", 7000), ("127.0.0.4", 6881)]


def test_read_seeds_file_names_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "seeds.txt"
    path.write_text("127.0.0.2:6881\n\n127.0.0.3:port\n")
    with pytest.raises(ValueError, match=re.escape(f"{path}:3: '127.0.0.3:port': port must be a number")):
        read_seeds_file(path)


def test_read_seeds_file_missing(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot read seeds file"):
        read_seeds_file(tmp_path / "nope.txt")


# --- load_config -------------------------------------------------------------------------------


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "kadnode.toml"
    path.write_text(text)
    return path


def test_load_config_none_is_defaults() -> None:
    cfg = load_config(None)
    assert cfg.host == "0.0.0.0"
    assert cfg.settings == Settings()


def test_load_config_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
host = "127.0.0.2"
port = 7001
data_dir = "state"
bootstrap = ["127.0.0.3:6881", "127.0.0.4"]
seeds_file = "/etc/kadnode/seeds.txt"
log_format = "json"
log_level = "DEBUG"
control_socket = "run/ctl.sock"

[settings]
k = 16
rpc_timeout_initial = 3
enforce_node_id = true
rate_limit_per_second = 0
client_version = "KN\\u0000\\u0002"
""",
    )
    cfg = load_config(path)
    assert cfg.host == "127.0.0.2"
    assert cfg.port == 7001
    assert cfg.data_dir == tmp_path / "state"  # relative to the file, not the working directory
    assert cfg.bootstrap == (("127.0.0.3", 6881), ("127.0.0.4", 6881))
    assert cfg.seeds_file == Path("/etc/kadnode/seeds.txt")
    assert cfg.log_format == "json"
    assert cfg.log_level == "debug"
    assert cfg.control_socket == tmp_path / "run" / "ctl.sock"
    assert cfg.settings.k == 16
    assert cfg.settings.rpc_timeout_initial == 3.0
    assert isinstance(cfg.settings.rpc_timeout_initial, float)
    assert cfg.settings.enforce_node_id is True
    assert cfg.settings.rate_limit_per_second == 0.0
    assert cfg.settings.client_version == b"KN\x00\x02"
    assert cfg.settings.alpha == Settings().alpha


def test_overrides_win_and_none_is_ignored(tmp_path: Path) -> None:
    path = write(tmp_path, 'host = "127.0.0.2"\nport = 7001\nbootstrap = ["127.0.0.3:1"]\nlog_level = "error"\n')
    cfg = load_config(
        path,
        host=None,
        port=7002,
        data_dir=Path("rel"),
        bootstrap=(("127.0.0.9", 9),),
        log_level=None,
        seeds_file=None,
    )
    assert cfg.host == "127.0.0.2"
    assert cfg.port == 7002
    assert cfg.data_dir == Path("rel")  # CLI paths stay relative to the working directory
    assert cfg.bootstrap == (("127.0.0.9", 9),)
    assert cfg.log_level == "error"


def test_settings_override_merges_with_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[settings]\nk = 12\nalpha = 4\n")
    cfg = load_config(path, settings={"alpha": 5})
    assert (cfg.settings.k, cfg.settings.alpha) == (12, 5)
    replaced = load_config(path, settings=Settings(k=3))
    assert replaced.settings == Settings(k=3)


def test_override_bootstrap_strings() -> None:
    assert load_config(None, bootstrap=["127.0.0.2:5"]).bootstrap == (("127.0.0.2", 5),)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('hots = "127.0.0.1"', r"unknown key 'hots'; valid keys: host, port, torrent_port, upload_rate, data_dir"),
        ("port = 70000", "port 70000 is out of range"),
        ('port = "6881"', r"port must be an integer, got '6881'"),
        ("port = true", "port must be an integer"),
        ('bootstrap = "127.0.0.1:1"', "bootstrap must be a list"),
        ('bootstrap = ["127.0.0.1:x"]', r"bootstrap: '127.0.0.1:x': port must be a number"),
        ('log_format = "xml"', "log_format must be one of text, json, got 'xml'"),
        ('log_level = "loud"', "log_level must be one of debug, info"),
        ("host = 5", "host must be a non-empty string"),
        ("data_dir = 5", "data_dir must be a path string"),
        ("settings = 5", r"\[settings\] must be a table"),
        ("[settings]\nkk = 3", r"unknown setting 'kk'; valid settings: k, alpha, "),
        ('[settings]\nk = "8"', r"settings.k must be an integer, got '8'"),
        ("[settings]\nk = 8.5", "settings.k must be an integer"),
        ("[settings]\nk = 0", "settings.k must be positive, got 0"),
        ("[settings]\nlookup_timeout = -1", "settings.lookup_timeout must be non-negative"),
        ('[settings]\nlookup_timeout = "1"', "settings.lookup_timeout must be a number"),
        ("[settings]\nenforce_node_id = 1", "settings.enforce_node_id must be true or false"),
        ("[settings]\nclient_version = 5", "settings.client_version must be a string"),
        ("port = ", "invalid TOML"),
    ],
)
def test_load_config_errors(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ValueError, match=message) as info:
        load_config(path)
    assert str(path) in str(info.value)  # every file error names the file


def test_every_setting_listed_in_unknown_setting_message(tmp_path: Path) -> None:
    with pytest.raises(ValueError) as info:
        load_config(write(tmp_path, "[settings]\nnope = 1\n"))
    for name in Settings.field_names():
        assert name in str(info.value)


def test_unknown_override() -> None:
    with pytest.raises(ValueError, match="unknown config option 'prot'"):
        load_config(None, prot=1)


def test_bad_override_values() -> None:
    with pytest.raises(ValueError, match="port 99999 is out of range"):
        load_config(None, port=99999)
    with pytest.raises(ValueError, match="unknown setting 'x'"):
        load_config(None, settings={"x": 1})


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot read config file"):
        load_config(tmp_path / "missing.toml")


def test_config_is_frozen() -> None:
    cfg = load_config(None)
    with pytest.raises(AttributeError):
        cfg.port = 1  # type: ignore[misc]


def test_module_has_no_public_hosts() -> None:
    """No public host in any default (the network rule, and users' trust)."""
    source = Path(config_module.__file__).read_text()
    for literal in re.findall(r"\b\d{1,3}(?:\.\d{1,3}){3}\b", source):
        assert literal.startswith(("127.", "0.0.0.0")), literal


# --- logging -----------------------------------------------------------------------------------


@pytest.mark.usefixtures("restore_logging")
def test_text_log_format() -> None:
    stream = io.StringIO()
    setup_logging("info", "text", stream=stream)
    logging.getLogger("kadnode.daemon").info("hello %s", "world")
    logging.getLogger("kadnode.daemon").debug("hidden")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d INFO kadnode\.daemon: hello world", lines[0])


@pytest.mark.usefixtures("restore_logging")
def test_json_log_format_with_extra_and_exception() -> None:
    stream = io.StringIO()
    setup_logging("DEBUG", "json", stream=stream)
    log = logging.getLogger("kadnode.test")
    log.debug("table has %d nodes", 5, extra={"table_size": 5, "path": Path("/x")})
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.exception("failed")
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["level"] == "DEBUG"
    assert first["logger"] == "kadnode.test"
    assert first["msg"] == "table has 5 nodes"
    assert first["table_size"] == 5
    assert first["path"] == "/x"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["ts"])
    assert set(first) == {"ts", "level", "logger", "msg", "table_size", "path"}
    assert second["level"] == "ERROR"
    assert "RuntimeError: boom" in second["exc"]


@pytest.mark.usefixtures("restore_logging")
def test_setup_logging_replaces_its_own_handler() -> None:
    first, second = io.StringIO(), io.StringIO()
    setup_logging("info", "text", stream=first)
    setup_logging("warning", "json", stream=second)
    logging.getLogger("kadnode").warning("once")
    logging.getLogger("kadnode").info("filtered")
    assert first.getvalue() == ""
    assert [json.loads(line)["msg"] for line in second.getvalue().splitlines()] == ["once"]


def test_setup_logging_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="unknown log level 'loud'"):
        setup_logging("loud", "text")
    with pytest.raises(ValueError, match="unknown log format 'xml'"):
        setup_logging("info", "xml")  # type: ignore[arg-type]
