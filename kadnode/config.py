"""Daemon configuration: a TOML file, overridden by command-line flags, checked with clear messages.

There are no public hosts in any default: a node joins the network its operator names (design notes §5,
users of other DHTs complain about nodes silently joining a public network).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import socket
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

from kadnode.settings import Settings
from kadnode.types import Addr

DEFAULT_PORT = 6881
"""The customary Mainline DHT port (BitTorrent clients' default range starts here)."""
LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
CONFIG_KEYS = (
    "host", "port", "torrent_port", "upload_rate", "data_dir", "bootstrap", "seeds_file", "log_format",
    "log_level", "control_socket", "settings",
)
RATE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def default_data_dir() -> Path:
    """$KADNODE_DATA_DIR, else $XDG_DATA_HOME/kadnode, else ~/.local/share/kadnode."""
    explicit = os.environ.get("KADNODE_DATA_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME")
    if xdg and Path(xdg).is_absolute():  # the XDG spec says relative values are to be ignored
        return Path(xdg) / "kadnode"
    return Path.home() / ".local" / "share" / "kadnode"


@dataclass(frozen=True, slots=True)
class DaemonConfig:
    host: str = "0.0.0.0"
    port: int = DEFAULT_PORT
    torrent_port: int | None = None
    """TCP port that serves shared files (BitTorrent peer wire); None: the UDP port's number, as
    BitTorrent clients do; 0: any free port."""
    upload_rate: int | None = None
    """Bytes per second the shared files are served at, all peers together; None: no limit."""
    data_dir: Path = field(default_factory=default_data_dir)
    bootstrap: tuple[Addr, ...] = ()
    seeds_file: Path | None = None
    log_format: Literal["text", "json"] = "text"
    log_level: str = "info"
    control_socket: Path | None = None
    """None: data_dir / "control.sock"."""
    settings: Settings = field(default_factory=Settings)

    @property
    def control_socket_path(self) -> Path:
        return self.control_socket if self.control_socket is not None else self.data_dir / "control.sock"


def parse_rate(value: Any, name: str = "rate") -> int:
    """Bytes per second from an integer or a string like "500k", "2M" or "1.5m" (binary units, per
    second)."""
    if isinstance(value, int) and not isinstance(value, bool):
        rate = value
    elif isinstance(value, str):
        text = value.strip().lower().removesuffix("/s").removesuffix("b")
        number, unit = (text[:-1], text[-1]) if text and text[-1] in RATE_UNITS else (text, "")
        try:
            rate = int(float(number) * RATE_UNITS[unit])
        except ValueError:
            raise ValueError(f"{name} must be bytes per second, like 500000, '500k' or '2M'; got {value!r}") from None
    else:
        raise ValueError(f"{name} must be bytes per second, like 500000, '500k' or '2M'; got {value!r}")
    if rate <= 0:
        raise ValueError(f"{name} must be positive, got {value!r}")
    return rate


def parse_endpoint(text: str, default_port: int = DEFAULT_PORT) -> Addr:
    """"host:port" or "host" -> (IPv4 address, port). Names are resolved (IPv4 only); literals are not."""
    if not isinstance(text, str):
        raise ValueError(f"endpoint must be a string like 'host:port', got {text!r}")
    raw = text.strip()
    if not raw:
        raise ValueError("empty endpoint: expected 'host:port' or 'host'")
    if raw.startswith("[") or raw.count(":") > 1:
        raise ValueError(f"{text!r}: only IPv4 endpoints are supported ('host:port')")
    host, colon, port_text = raw.partition(":")
    host = host.strip()
    if not host:
        raise ValueError(f"{text!r}: missing host (expected 'host:port')")
    if colon:
        port_text = port_text.strip()
        if not port_text.isdigit():
            raise ValueError(f"{text!r}: port must be a number, got {port_text!r}")
        port = int(port_text)
    else:
        port = default_port
    if not 0 < port < 65536:
        raise ValueError(f"{text!r}: port {port} is out of range (1-65535)")
    return (_resolve_ipv4(host, port, text), port)


def _resolve_ipv4(host: str, port: int, text: str) -> str:
    try:
        return str(ipaddress.IPv4Address(host))
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, port, socket.AF_INET, socket.SOCK_DGRAM)
    except (socket.gaierror, UnicodeError) as exc:
        reason = exc.strerror if isinstance(exc, socket.gaierror) and exc.strerror else str(exc)
        raise ValueError(f"{text!r}: cannot resolve host {host!r}: {reason}") from None
    for _family, _type, _proto, _canon, sockaddr in infos:
        return str(sockaddr[0])
    raise ValueError(f"{text!r}: host {host!r} has no IPv4 address")


def read_seeds_file(path: Path) -> list[Addr]:
    """One "host:port" per line; '#' starts a comment; blank lines are ignored. Duplicates are dropped."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read seeds file {path}: {exc}") from None
    seeds: list[Addr] = []
    for number, line in enumerate(text.splitlines(), start=1):
        entry = line.split("#", 1)[0].strip()
        if not entry:
            continue
        try:
            seeds.append(parse_endpoint(entry))
        except ValueError as exc:
            raise ValueError(f"{path}:{number}: {exc}") from None
    return list(dict.fromkeys(seeds))


def load_config(path: Path | None, **overrides: Any) -> DaemonConfig:
    """Read the TOML file at `path` (None: defaults only), then apply the non-None `overrides`.

    Relative paths in the file are taken relative to the file's directory, so a config keeps working
    whatever the daemon's working directory is.
    """
    values: dict[str, Any] = {}
    settings = Settings()
    if path is not None:
        path = Path(path)
        try:
            with path.open("rb") as fh:
                document = tomllib.load(fh)
        except OSError as exc:
            raise ValueError(f"cannot read config file {path}: {exc.strerror or exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"{path}: invalid TOML: {exc}") from None
        _check_keys(document, CONFIG_KEYS, f"{path}: unknown key")
        base = path.parent
        for key, value in document.items():
            if key == "settings":
                if not isinstance(value, dict):
                    raise ValueError(f"{path}: [settings] must be a table")
                settings = apply_settings(settings, value, where=f"{path}: ")
            else:
                values[key] = _convert(key, value, base, where=f"{path}: ")
    unknown = [key for key in overrides if key not in CONFIG_KEYS]
    if unknown:
        raise ValueError(f"unknown config option {unknown[0]!r}; valid options: {', '.join(CONFIG_KEYS)}")
    for key, value in overrides.items():
        if value is None:
            continue
        if key == "settings":
            if isinstance(value, Settings):
                settings = value
            elif isinstance(value, Mapping):
                settings = apply_settings(settings, value)
            else:
                raise ValueError("settings override must be a Settings or a mapping of field names")
        else:
            values[key] = _convert(key, value, None, where="")
    return DaemonConfig(settings=settings, **values)


def _check_keys(table: Mapping[str, Any], valid: tuple[str, ...], what: str) -> None:
    for key in table:
        if key not in valid:
            raise ValueError(f"{what} {key!r}; valid keys: {', '.join(valid)}")


def _path(value: Any, base: Path | None, name: str) -> Path:
    if not isinstance(value, str | os.PathLike) or not str(value):
        raise ValueError(f"{name} must be a path string, got {value!r}")
    result = Path(value).expanduser()
    if base is not None and not result.is_absolute():
        result = base / result
    return result


def _convert(key: str, value: Any, base: Path | None, *, where: str) -> Any:
    """Check one top-level option's type and turn it into the DaemonConfig field's type."""
    name = f"{where}{key}"
    if key == "host":
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{name} must be a non-empty string (an IPv4 address to bind), got {value!r}")
        return value.strip()
    if key in ("port", "torrent_port"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name} must be an integer, got {value!r}")
        if not 0 <= value < 65536:
            raise ValueError(f"{name} {value} is out of range (0-65535)")
        return value
    if key == "upload_rate":
        return parse_rate(value, name)
    if key in ("data_dir", "seeds_file", "control_socket"):
        return _path(value, base, name)
    if key == "bootstrap":
        if isinstance(value, str) or not isinstance(value, list | tuple):
            raise ValueError(f"{name} must be a list of 'host:port' strings, got {value!r}")
        seeds: list[Addr] = []
        for item in value:
            if isinstance(item, tuple) and len(item) == 2:
                seeds.append(parse_endpoint(f"{item[0]}:{item[1]}"))
            else:
                try:
                    seeds.append(parse_endpoint(item))
                except ValueError as exc:
                    raise ValueError(f"{name}: {exc}") from None
        return tuple(dict.fromkeys(seeds))
    if key == "log_format":
        if value not in LOG_FORMATS:
            raise ValueError(f"{name} must be one of {', '.join(LOG_FORMATS)}, got {value!r}")
        return cast(Literal["text", "json"], value)
    if key == "log_level":
        if not isinstance(value, str) or value.lower() not in LOG_LEVELS:
            raise ValueError(f"{name} must be one of {', '.join(LOG_LEVELS)}, got {value!r}")
        return value.lower()
    raise ValueError(f"unknown config option {key!r}")  # unreachable: keys are checked first


POSITIVE_SETTINGS = frozenset({
    "k", "alpha", "max_datagram_size", "bencode_max_depth", "bencode_max_items", "max_outstanding_requests",
    "max_failures", "lookup_max_candidates", "receive_queue_size", "rpc_timeout_initial", "rpc_timeout_max",
    "gossip_bytes_per_second",
})
"""Settings for which zero makes no sense (a zero rate limit is meaningful: it disables the limiter)."""


def apply_settings(settings: Settings, table: Mapping[str, Any], *, where: str = "") -> Settings:
    """`settings` with fields from `table` (names as in Settings), each checked against the field's type.

    `where` prefixes error messages (e.g. the config file's name).
    """
    valid = Settings.field_names()
    for key in table:
        if key not in valid:
            raise ValueError(f"{where}unknown setting {key!r}; valid settings: {', '.join(valid)}")
    changes: dict[str, Any] = {}
    for key, value in table.items():
        default = getattr(settings, key)
        name = f"{where}settings.{key}"
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise ValueError(f"{name} must be true or false, got {value!r}")
        elif isinstance(default, int | float):
            is_int = isinstance(default, int)
            if isinstance(value, bool) or not isinstance(value, int if is_int else int | float):
                raise ValueError(f"{name} must be {'an integer' if is_int else 'a number'}, got {value!r}")
            value = int(value) if is_int else float(value)
            positive = key in POSITIVE_SETTINGS
            if value < 0 or (value == 0 and positive):
                raise ValueError(f"{name} must be {'positive' if positive else 'non-negative'}, got {value}")
        elif isinstance(default, bytes):
            if isinstance(value, str):
                try:
                    value = value.encode("latin-1")
                except UnicodeEncodeError:
                    raise ValueError(f"{name} must be a string of bytes (latin-1), got {value!r}") from None
            elif not isinstance(value, bytes):
                raise ValueError(f"{name} must be a string, got {value!r}")
        changes[key] = value
    return dataclasses.replace(settings, **changes)
