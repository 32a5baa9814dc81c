"""A small synchronous client for the daemon's control socket (see kadnode.runtime.control).

Synchronous on purpose: the CLI and scripts make one call and exit, and a plain socket needs no event loop.
"""

from __future__ import annotations

import errno
import json
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_TIMEOUT = 10.0
"""Quick commands (status, routes) answer in milliseconds; this only guards against a hung daemon."""
COMMAND_TIMEOUTS = {"ping": 30.0, "lookup": 90.0, "peers": 90.0, "announce": 150.0, "get": 90.0, "put": 220.0,
                    "share": 3600.0, "locate": 120.0}
"""Lookups may run up to lookup_timeout (60 s); an announce is a get_peers lookup plus a round of stores;
a mutable put looks the item up twice (for its seq, then for write tokens) before its stores. A share
hashes the whole content first (a 100 GB share at ~500 MB/s takes minutes)."""
MAX_REPLY = 16 * 1024 * 1024
"""A reply larger than this means something is wrong; stop reading rather than exhaust memory."""
TARGET_HEX = 40
PUBLIC_KEY_HEX = 64
MAX_NAME_BYTES = 64
"""BEP 44's salt limit: a name is the salt of the item it names."""


class ClientError(Exception):
    """Base class: the call did not produce a result. The message says what to do."""


class DaemonNotRunning(ClientError):
    """Nothing listens on the control socket."""


class ControlError(ClientError):
    """The daemon answered ok:false (or answered something unreadable)."""


class ControlTimeout(ClientError):
    """The daemon did not answer in time."""


class ControlClient:
    """Calls commands on a running daemon: ``ControlClient(path).call("peers", info_hash="ab" * 20)``."""

    def __init__(
        self, socket_path: Path | str, timeout: float = DEFAULT_TIMEOUT, *, data_dir: Path | str | None = None
    ) -> None:
        self.socket_path = Path(socket_path)
        self.timeout = timeout
        self.data_dir = Path(data_dir) if data_dir is not None else self.socket_path.parent

    def call(self, cmd: str, **args: Any) -> Any:
        """Send one request and return its result; raise a ClientError subclass otherwise."""
        timeout = max(self.timeout, COMMAND_TIMEOUTS.get(cmd, 0.0))
        request = json.dumps({"cmd": cmd, "args": args}).encode() + b"\n"
        with self._connect(timeout) as sock:
            try:
                sock.sendall(request)
                line = self._read_line(sock)
            except TimeoutError:
                raise ControlTimeout(f"the daemon did not answer {cmd!r} within {timeout:g} s; check its log") from None
            except ConnectionError as exc:
                raise ControlError(f"the daemon closed the connection during {cmd!r}: {exc}") from None
        try:
            reply = json.loads(line)
        except ValueError:
            raise ControlError(f"the daemon sent an unreadable reply: {line[:200]!r}") from None
        if not isinstance(reply, dict) or "ok" not in reply:
            raise ControlError(f"the daemon sent an unexpected reply: {line[:200]!r}")
        if not reply["ok"]:
            raise ControlError(str(reply.get("error", "the daemon reported an unspecified error")))
        return reply.get("result")

    def _not_running(self) -> DaemonNotRunning:
        return DaemonNotRunning(
            f"no kadnode daemon is running with data dir {self.data_dir} — "
            f"start one with `kadnode run --data-dir {self.data_dir}`"
        )

    def _connect(self, timeout: float) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(str(self.socket_path))
        except (FileNotFoundError, ConnectionRefusedError):
            sock.close()
            raise self._not_running() from None
        except PermissionError:
            sock.close()
            raise ClientError(
                f"permission denied on {self.socket_path}; the daemon runs as another user "
                "(run the command as that user)"
            ) from None
        except OSError as exc:
            sock.close()
            if exc.errno == errno.ENOTSOCK or exc.errno == errno.ECONNREFUSED:
                raise self._not_running() from None
            raise ClientError(f"cannot connect to the control socket {self.socket_path}: {exc}") from None
        return sock

    @staticmethod
    def _read_line(sock: socket.socket) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionResetError("connection closed before a full reply")
            newline = chunk.find(b"\n")
            if newline >= 0:
                chunks.append(chunk[:newline])
                return b"".join(chunks)
            chunks.append(chunk)
            size += len(chunk)
            if size > MAX_REPLY:
                raise ControlError(f"the daemon's reply exceeds {MAX_REPLY} bytes")


# --- item addresses ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ItemAddress:
    """How a user names a BEP 44 item: its 20-byte `target`, or the `public_key` that signs it and a
    name (the `salt`), written ``PUBKEYHEX/NAME``; the target is then SHA-1(public_key + salt)."""

    target: bytes | None
    public_key: bytes | None
    salt: bytes = b""


def parse_item_address(text: str) -> ItemAddress:
    """`TARGET` (40 hex), `PUBKEYHEX/NAME`, or `PUBKEYHEX` (an unsalted mutable item).

    Pure syntax, so that the CLI can refuse a typo before it contacts the daemon; ValueError otherwise.
    """
    if not isinstance(text, str):
        raise ValueError(f"an item address must be a string, got {type(text).__name__}")
    key_text, slash, name = text.partition("/")
    key_text = key_text.strip().lower()
    if not slash and len(key_text) == TARGET_HEX:
        return ItemAddress(target=_hex(key_text, text), public_key=None)
    if len(key_text) != PUBLIC_KEY_HEX:
        raise ValueError(
            f"{text!r:.90} is neither a target (40 hex characters) nor an address PUBKEY/NAME "
            "(64 hex characters of an ed25519 public key, a slash, and the item's name)"
        )
    salt = name.encode()
    if len(salt) > MAX_NAME_BYTES:
        raise ValueError(f"the name in {text!r:.90} is {len(salt)} bytes; BEP 44 allows at most {MAX_NAME_BYTES}")
    return ItemAddress(target=None, public_key=_hex(key_text, text), salt=salt)


def _hex(value: str, text: str) -> bytes:
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise ValueError(f"{text!r:.90} is not hexadecimal where a key or target is expected") from None


def format_item_address(public_key: bytes, salt: bytes) -> str | None:
    """``PUBKEYHEX/NAME`` for a mutable item (just ``PUBKEYHEX`` without salt); None when the salt is not
    UTF-8 text and so cannot be typed as a name."""
    if not salt:
        return public_key.hex()
    try:
        return f"{public_key.hex()}/{salt.decode()}"
    except UnicodeDecodeError:
        return None
