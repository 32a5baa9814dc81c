"""The daemon's local control API: newline-delimited JSON over a Unix stream socket.

A Unix socket with mode 0600 makes the file system the access control: only the daemon's user can
talk to it, and nothing is ever exposed on the network. Each request is one line
``{"cmd": "status", "args": {...}}`` and gets one line back, ``{"ok": true, "result": ...}`` or
``{"ok": false, "error": "..."}``. Bad input is answered, never raised: the server must outlive any client.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import dataclasses
import enum
import ipaddress
import json
import logging
import os
import socket
import stat
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

from kadnode.client import format_item_address, parse_item_address
from kadnode.core.bep44 import mutable_target
from kadnode.core.results import AnnounceResult, GetPeersResult, GetResult, LookupResult, PingResult, PutResult
from kadnode.runtime.control_args import RequestError, check_args, parse_bool, parse_hex20
from kadnode.runtime.files_api import FILE_HANDLERS
from kadnode.runtime.shares import ShareService
from kadnode.settings import Settings
from kadnode.storage.base import Item, MutableItem, StorageError
from kadnode.types import Addr, NodeInfo
from kadnode.wire.bencode import Bencodable, BencodeError, bdecode

log = logging.getLogger(__name__)

MAX_LINE = 64 * 1024
"""Longest request line accepted; real requests are under 200 bytes."""
MAX_CONNECTIONS = 32
"""Control connections served at once; more are answered with an error and closed."""
IDLE_TIMEOUT = 300.0
"""A connection that sends nothing for this long is closed, so idle clients cannot hold slots."""
MAX_UNIX_PATH = 107
"""sun_path holds 108 bytes on Linux, including the terminating NUL."""
ID_KEYS = frozenset({"id", "node_id", "target"})
"""Integer fields with these names are 160-bit IDs and travel as 40-char hex."""

COMMANDS = ("status", "routes", "ping", "lookup", "announce", "unannounce", "peers", "put", "get", "share", "shares",
            "unshare", "locate")
MAX_VALUE_DEPTH = 32
MAX_VALUE_ITEMS = 2000
"""Bounds for decoding a client's pre-bencoded value (`bencoded: true`); a 1000-byte value has fewer."""


class ControlSocketError(RuntimeError):
    """The control socket cannot be created (in use by a live daemon, path unusable)."""


class RouteRow(Protocol):
    """One routing-table entry as the control API reports it (kadnode.core.routing.RoutingEntry fits)."""

    @property
    def id(self) -> int: ...
    @property
    def addr(self) -> Addr: ...
    @property
    def failures(self) -> int: ...
    @property
    def rtt(self) -> float | None: ...


class ControlledNode(Protocol):
    """What the server needs from a node: kadnode.runtime.node.Node provides all of it."""

    @property
    def node_id(self) -> int: ...
    @property
    def settings(self) -> Settings: ...
    def status(self) -> dict[str, Any]: ...
    def routes(self) -> Iterable[tuple[RouteRow, str]]: ...
    async def ping(self, addr: Addr) -> PingResult: ...
    async def find_node(self, target: int) -> LookupResult: ...
    async def get_peers(self, info_hash: bytes) -> GetPeersResult: ...
    async def announce(self, info_hash: bytes, port: int | None = None, *, keep: bool = True) -> AnnounceResult: ...
    def unannounce(self, info_hash: bytes) -> bool: ...
    async def put(
        self, value: Bencodable, *, salt: bytes | str = b"", immutable: bool = False, cas: int | None = None
    ) -> PutResult: ...
    async def get(self, target: bytes | str, *, salt: bytes | str = b"") -> GetResult: ...
    def local_item(self, target: bytes | str, *, salt: bytes | str = b"") -> Item | None: ...


# --- JSON conversion ---------------------------------------------------------------------------


def hex_id(value: int) -> str:
    return f"{value:040x}"


def format_addr(addr: Addr) -> str:
    return f"{addr[0]}:{addr[1]}"


def _is_addr(value: object) -> bool:
    return (
        isinstance(value, tuple)
        and len(value) == 2
        and isinstance(value[0], str)
        and isinstance(value[1], int)
        and not isinstance(value[1], bool)
    )


def to_json(value: Any, key: str | None = None) -> Any:
    """Results as JSON values: IDs and hashes as hex, addresses as "host:port", dataclasses as dicts."""
    if isinstance(value, bool) or value is None or isinstance(value, str | float):
        return value
    if isinstance(value, int):
        return hex_id(value) if key in ID_KEYS and 0 <= value < 2**160 else value
    if isinstance(value, bytes | bytearray):
        return bytes(value).hex()
    if isinstance(value, NodeInfo):
        return {"id": hex_id(value.id), "addr": format_addr(value.addr)}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_json(getattr(value, f.name), f.name) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.name.lower()
    if _is_addr(value):
        return format_addr(value)
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for k, v in value.items():
            name = format_addr(k) if _is_addr(k) else k.hex() if isinstance(k, bytes) else str(k)
            out[name] = to_json(v, name)
        return out
    if isinstance(value, list | tuple | set | frozenset):
        return [to_json(v) for v in value]
    return str(value)


# --- argument validation -----------------------------------------------------------------------


def parse_port(value: Any, name: str = "port") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise RequestError(f"{name} must be an integer from 1 to 65535, got {value!r:.60}")
    return value


def parse_host(value: Any) -> str:
    if not isinstance(value, str):
        raise RequestError(f"host must be an IPv4 address like 127.0.0.2, got {value!r:.60}")
    try:
        return str(ipaddress.IPv4Address(value))
    except ValueError:
        raise RequestError(f"host must be an IPv4 address like 127.0.0.2, got {value!r:.60}") from None


# --- command handlers --------------------------------------------------------------------------


def _lookup_json(result: LookupResult) -> dict[str, Any]:
    """A lookup result with each node's XOR distance to the target added, closest first."""
    out: dict[str, Any] = to_json(result)
    out["closest"] = [
        {"id": hex_id(n.id), "addr": format_addr(n.addr), "distance": hex_id(n.id ^ result.target)}
        for n in result.closest
    ]
    return out


async def _cmd_status(node: ControlledNode, args: Mapping[str, Any]) -> Any:
    check_args(args, ())
    return to_json(node.status())


async def _cmd_routes(node: ControlledNode, args: Mapping[str, Any]) -> Any:
    check_args(args, ())
    own = node.node_id
    rows = sorted(node.routes(), key=lambda row: row[0].id ^ own)
    return {
        "node_id": hex_id(own),
        "count": len(rows),
        "nodes": [
            {
                "id": hex_id(entry.id),
                "host": entry.addr[0],
                "port": entry.addr[1],
                "state": state,
                "failures": entry.failures,
                "rtt": entry.rtt,
            }
            for entry, state in rows
        ],
    }


async def _cmd_ping(node: ControlledNode, args: Mapping[str, Any]) -> Any:
    check_args(args, ("host", "port"))
    addr = (parse_host(args["host"]), parse_port(args["port"]))
    return to_json(await node.ping(addr))


async def _cmd_lookup(node: ControlledNode, args: Mapping[str, Any]) -> Any:
    check_args(args, ("target",))
    target = int.from_bytes(parse_hex20(args["target"], "target"), "big")
    return _lookup_json(await node.find_node(target))





async def _cmd_announce(node: ControlledNode, args: Mapping[str, Any]) -> Any:
    check_args(args, ("info_hash",), ("port", "keep"))
    info_hash = parse_hex20(args["info_hash"], "info_hash")
    port = args.get("port")
    port = None if port is None else parse_port(port)
    keep = parse_bool(args.get("keep", True), "keep")
    out: dict[str, Any] = to_json(await node.announce(info_hash, port, keep=keep))
    out["reannounce_interval"] = node.settings.announce_interval if keep else None
    return out


async def _cmd_unannounce(node: ControlledNode, args: Mapping[str, Any]) -> Any:
    check_args(args, ("info_hash",))
    info_hash = parse_hex20(args["info_hash"], "info_hash")
    return {"info_hash": info_hash.hex(), "was_announced": node.unannounce(info_hash)}


def _value_bytes(args: Mapping[str, Any]) -> bytes:
    """`value` (text, sent as its UTF-8 bytes) or `value_b64` (any bytes, base64): exactly one."""
    if ("value" in args) == ("value_b64" in args):
        raise RequestError("give exactly one of value (UTF-8 text) and value_b64 (base64 bytes)")
    if "value" in args:
        if not isinstance(args["value"], str):
            raise RequestError(f"value must be a string (use value_b64 for bytes), got {args['value']!r:.60}")
        return str(args["value"]).encode()
    text = args["value_b64"]
    if not isinstance(text, str):
        raise RequestError(f"value_b64 must be a base64 string, got {text!r:.60}")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(f"value_b64 is not valid base64: {text!r:.60}") from None


def item_json(item: Item) -> dict[str, Any]:
    """An item for clients: the bencoded value as base64 (exact bytes), keys and hashes as hex."""
    out: dict[str, Any] = {
        "kind": "mutable" if isinstance(item, MutableItem) else "immutable",
        "target": item.target.hex(),
        "value_b64": base64.b64encode(item.value).decode(),
        "size": len(item.value),
    }
    if isinstance(item, MutableItem):
        out.update(
            seq=item.seq,
            public_key=item.public_key.hex(),
            salt_b64=base64.b64encode(item.salt).decode(),
            signature=item.signature.hex(),
            address=format_item_address(item.public_key, item.salt),
        )
    return out


async def _cmd_put(node: ControlledNode, args: Mapping[str, Any]) -> Any:
    check_args(args, (), ("value", "value_b64", "name", "immutable", "bencoded", "cas"))
    raw = _value_bytes(args)
    immutable = parse_bool(args.get("immutable", False), "immutable")
    name = args.get("name")
    if name is not None and not isinstance(name, str):
        raise RequestError(f"name must be a string, got {name!r:.60}")
    if immutable and name is not None:
        raise RequestError("an immutable item has no name: its target is the hash of its value")
    cas = args.get("cas")
    if cas is not None and (isinstance(cas, bool) or not isinstance(cas, int)):
        raise RequestError(f"cas must be an integer seq, got {cas!r:.60}")
    value: Bencodable = raw
    if parse_bool(args.get("bencoded", False), "bencoded"):
        try:
            value = bdecode(raw, max_depth=MAX_VALUE_DEPTH, max_items=MAX_VALUE_ITEMS)
        except BencodeError as exc:
            raise RequestError(f"the value is not valid bencode ({exc})") from None
    try:
        result = await node.put(value, salt=name or b"", immutable=immutable, cas=cas)
    except ValueError as exc:  # too large, bad salt, no key: said before anything was sent
        raise RequestError(str(exc)) from None
    except StorageError as exc:  # e.g. the disk is full: nothing was acknowledged
        raise RequestError(f"the daemon cannot store the item: {exc}") from None
    return {
        **item_json(result.item),
        "stored_at": result.stored_at,
        "attempted": result.attempted,
        "errors": {str(code): count for code, count in sorted(result.errors.items())},
    }


async def _cmd_get(node: ControlledNode, args: Mapping[str, Any]) -> Any:
    check_args(args, ("target",), ("salt", "local"))
    target = args["target"]
    salt = args.get("salt", "")
    if not isinstance(target, str):
        raise RequestError(f"target must be a string, got {target!r:.60}")
    if not isinstance(salt, str):
        raise RequestError(f"salt must be a string, got {salt!r:.60}")
    local = parse_bool(args.get("local", False), "local")
    try:
        address = parse_item_address(target)
        if local:
            item = node.local_item(target, salt=salt)
        else:
            result = await node.get(target, salt=salt)
    except ValueError as exc:
        raise RequestError(str(exc)) from None
    if local:
        if address.target is not None:
            target_bytes = address.target
        else:
            assert address.public_key is not None
            target_bytes = mutable_target(address.public_key, address.salt or salt.encode())
        return {
            "target": target_bytes.hex(), "found": item is not None, "local": True,
            "item": item_json(item) if item is not None else None,
            "holders": 0, "invalid": 0, "queried": 0, "nodes_answered": 0, "duration": 0.0,
        }
    return {
        "target": result.target.hex(),
        "found": result.item is not None,
        "local": False,
        "item": item_json(result.item) if result.item is not None else None,
        "holders": result.holders,
        "invalid": result.invalid,
        "queried": result.lookup.queried,
        "nodes_answered": result.lookup.responded,
        "duration": result.lookup.duration,
    }


async def _cmd_peers(node: ControlledNode, args: Mapping[str, Any]) -> Any:
    check_args(args, ("info_hash",))
    info_hash = parse_hex20(args["info_hash"], "info_hash")
    result = await node.get_peers(info_hash)
    out: dict[str, Any] = to_json(result)
    out["lookup"] = _lookup_json(result.lookup)
    return out


Handler = Callable[[ControlledNode, Mapping[str, Any]], Awaitable[Any]]
HANDLERS: dict[str, Handler] = {
    "status": _cmd_status,
    "routes": _cmd_routes,
    "ping": _cmd_ping,
    "lookup": _cmd_lookup,
    "announce": _cmd_announce,
    "unannounce": _cmd_unannounce,
    "peers": _cmd_peers,
    "put": _cmd_put,
    "get": _cmd_get,
}


async def handle_request(node: ControlledNode, line: bytes, shares: ShareService | None = None) -> dict[str, Any]:
    """Answer one request line; every failure becomes an ok:false reply. The file commands need the
    daemon's `shares`."""
    try:
        request = json.loads(line)
    except (ValueError, UnicodeDecodeError) as exc:
        return _error(f"request is not valid JSON ({exc}); send one JSON object per line")
    if not isinstance(request, dict):
        return _error('a request must be a JSON object like {"cmd": "status", "args": {}}')
    cmd = request.get("cmd")
    args = request.get("args", {})
    if args is None:
        args = {}
    extra = sorted(set(request) - {"cmd", "args"})
    if extra:
        return _error(f"unknown request field(s) {', '.join(extra)}; a request has only cmd and args")
    if not isinstance(cmd, str) or (cmd not in HANDLERS and cmd not in FILE_HANDLERS):
        return _error(f"unknown command {cmd!r:.60}; known commands: {', '.join(COMMANDS)}")
    if not isinstance(args, dict):
        return _error("args must be a JSON object")
    try:
        if cmd in FILE_HANDLERS:
            if shares is None:
                return _error(f"{cmd}: this node does not share files (only `kadnode run` does)")
            result = await FILE_HANDLERS[cmd](shares, args)
        else:
            result = await HANDLERS[cmd](node, args)
    except RequestError as exc:
        return _error(f"{cmd}: {exc}")
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        log.exception("control command %s failed", cmd)
        return _error(f"{cmd} failed inside the daemon: {exc!r}; see the daemon log for details")
    return {"ok": True, "result": result}


def _error(message: str) -> dict[str, Any]:
    return {"ok": False, "error": message}


def _encode(reply: dict[str, Any]) -> bytes:
    return json.dumps(reply, separators=(",", ":")).encode() + b"\n"


# --- the server --------------------------------------------------------------------------------


class ControlServer:
    """Serves the control protocol for one node on a Unix socket at `path`."""

    def __init__(
        self,
        node: ControlledNode,
        path: Path | str,
        *,
        max_connections: int = MAX_CONNECTIONS,
        max_line: int = MAX_LINE,
        idle_timeout: float = IDLE_TIMEOUT,
        shares: ShareService | None = None,
    ) -> None:
        self.node = node
        self.shares = shares
        self.path = Path(path)
        self.max_connections = max_connections
        self.max_line = max_line
        self.idle_timeout = idle_timeout
        self._server: asyncio.Server | None = None
        self._inode: tuple[int, int] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Bind the socket (mode 0600); refuse if a live daemon answers there, replace a stale file."""
        if len(os.fsencode(self.path)) > MAX_UNIX_PATH:
            raise ControlSocketError(
                f"control socket path {self.path} is {len(os.fsencode(self.path))} bytes, longer than a "
                f"Unix socket allows ({MAX_UNIX_PATH}); use a shorter --data-dir or set control_socket"
            )
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._remove_stale()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            old_umask = os.umask(0o177)
            try:
                sock.bind(str(self.path))
            finally:
                os.umask(old_umask)
            os.chmod(self.path, 0o600)
            st = os.stat(self.path)
            self._inode = (st.st_dev, st.st_ino)
            self._server = await asyncio.start_unix_server(self._serve, sock=sock, limit=self.max_line)
        except OSError as exc:
            sock.close()
            raise ControlSocketError(f"cannot create control socket {self.path}: {exc}") from exc
        log.info("control socket listening at %s", self.path)

    def _remove_stale(self) -> None:
        """Delete a leftover socket file nobody listens on; refuse a live one or anything not a socket."""
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(st.st_mode):
            raise ControlSocketError(
                f"{self.path} exists and is not a socket; move it away or choose another control socket path"
            )
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.settimeout(2.0)
        try:
            probe.connect(str(self.path))
        except (ConnectionRefusedError, FileNotFoundError):
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            log.info("removed stale control socket %s", self.path)
            return
        except OSError:
            pass  # a timeout or a full backlog: something is alive there
        finally:
            probe.close()
        raise ControlSocketError(
            f"another kadnode daemon is already running with control socket {self.path}; "
            "stop it first or give this one another --data-dir"
        )

    async def close(self) -> None:
        """Stop serving, end open connections and remove the socket file (only if it is still ours)."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if server is not None:
            await server.wait_closed()
        if self._inode is not None:
            with contextlib.suppress(FileNotFoundError):
                st = os.lstat(self.path)
                if (st.st_dev, st.st_ino) == self._inode:
                    self.path.unlink()
            self._inode = None

    async def __aenter__(self) -> ControlServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if len(self._tasks) >= self.max_connections:
            await self._reply_and_close(
                writer, _error(f"the daemon already serves {self.max_connections} control connections; retry")
            )
            return
        self._tasks.add(task)
        try:
            await self._serve_requests(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(OSError, asyncio.CancelledError):
                await writer.wait_closed()

    async def _serve_requests(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                line = await asyncio.wait_for(reader.readline(), self.idle_timeout)
            except TimeoutError:
                return
            except ValueError:  # the line exceeded the stream limit; framing is lost, so hang up
                writer.write(_encode(_error(f"request line longer than {self.max_line} bytes")))
                await writer.drain()
                return
            if not line:
                return
            if not line.strip():
                continue
            writer.write(_encode(await handle_request(self.node, line, self.shares)))
            await writer.drain()

    @staticmethod
    async def _reply_and_close(writer: asyncio.StreamWriter, reply: dict[str, Any]) -> None:
        try:
            writer.write(_encode(reply))
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
