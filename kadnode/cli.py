"""The `kadnode` command line: run the daemon, talk to it over its control socket, run the demo.

Client commands never touch the network themselves: they ask the local daemon (see kadnode.client).
Heavy modules (asyncio runtime) are imported inside commands so that `--help` stays instant.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import sys
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

import click

from kadnode import __version__
from kadnode.client import MAX_NAME_BYTES, ClientError, ControlClient, parse_item_address
from kadnode.wire.bencode import Bencoded, BencodeError, bdecode

ENVVAR_DATA_DIR = "KADNODE_DATA_DIR"
CONTROL_SOCKET_NAME = "control.sock"
MAX_VALUE_SIZE = 1000
"""BEP 44: a bencoded value holds at most 1000 bytes. Checked here so that a too-large value gets a
clear answer without a daemon; the daemon checks again against its own setting."""
MAX_READ = 64 * 1024
"""Bytes of VALUE read from a file or stdin at most; anything longer is far past MAX_VALUE_SIZE."""
ERROR_NAMES = {
    201: "generic error", 202: "server error (e.g. its store is full)", 203: "protocol error (e.g. token)",
    205: "value too big", 206: "invalid signature", 207: "salt too big",
    301: "cas mismatch: the item changed", 302: "sequence number less than current",
}

F = TypeVar("F", bound=Callable[..., Any])


def _version() -> str:
    """The installed distribution's version; kadnode.__version__ when run from a source tree."""
    try:
        return metadata.version("kadnode")
    except metadata.PackageNotFoundError:
        return __version__


def _default_data_dir() -> str:
    from kadnode.config import default_data_dir

    return str(default_data_dir())


# --- argument parsing --------------------------------------------------------------------------


def parse_hex_id(value: str, name: str, what: str) -> str:
    """Validate a 40-hex-character ID and return it lowercased; UsageError names the argument."""
    text = value.strip().lower()
    if len(text) == 40:
        try:
            bytes.fromhex(text)
        except ValueError:
            pass
        else:
            return text
    raise click.UsageError(f"{name} must be 40 hex characters ({what}), got {value!r}")


def parse_host_port(value: str, name: str = "HOST:PORT") -> tuple[str, int]:
    """'127.0.0.2:6881' -> ('127.0.0.2', 6881); UsageError with an example otherwise."""
    host, sep, port_text = value.rpartition(":")
    try:
        if not sep:
            raise ValueError
        host = str(ipaddress.IPv4Address(host))
        port = int(port_text)
        if not 1 <= port <= 65535:
            raise ValueError
    except ValueError:
        raise click.UsageError(
            f"{name} must be an IPv4 address and a port like 127.0.0.2:6881, got {value!r}"
        ) from None
    return host, port


# --- output ------------------------------------------------------------------------------------


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f} ms"


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Left-aligned columns separated by two spaces; the last column is not padded."""
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = []
    for row in cells:
        padded = [cell.ljust(widths[i]) for i, cell in enumerate(row[:-1])]
        lines.append("  ".join([*padded, row[-1]]).rstrip())
    return "\n".join(lines)


def emit_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=False))


def duration(seconds: float) -> str:
    """900 -> '15 min', 7200 -> '2 h', 45 -> '45 s'."""
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g} h"
    if seconds >= 60:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"


def bencoded_to_json(value: Bencoded) -> Any:
    """A decoded bencoded value as JSON: byte strings as text when they are UTF-8, else {"hex": ...}."""
    if isinstance(value, bytes):
        try:
            return value.decode()
        except UnicodeDecodeError:
            return {"hex": value.hex()}
    if isinstance(value, list):
        return [bencoded_to_json(v) for v in value]
    if isinstance(value, dict):
        return {k.decode(errors="backslashreplace"): bencoded_to_json(v) for k, v in value.items()}
    return value


def _flatten(prefix: str, value: Any, out: list[tuple[str, str]]) -> None:
    if isinstance(value, dict) and value:
        for key, sub in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), sub, out)
    else:
        out.append((prefix, "-" if value is None or value == {} else str(value)))


# --- client plumbing ---------------------------------------------------------------------------


def client_options(func: F) -> F:
    """--data-dir, --socket and --json, shared by every command that talks to the daemon."""
    func = click.option("--json", "as_json", is_flag=True, help="Print the raw result as JSON.")(func)
    func = click.option(
        "--socket",
        "socket_path",
        type=click.Path(dir_okay=False, path_type=Path),
        help=f"Control socket of the daemon (default: DATA_DIR/{CONTROL_SOCKET_NAME}).",
    )(func)
    func = click.option(
        "--data-dir",
        type=click.Path(file_okay=False, path_type=Path),
        envvar=ENVVAR_DATA_DIR,
        default=_default_data_dir,
        show_default=f"${ENVVAR_DATA_DIR}, else $XDG_DATA_HOME/kadnode",
        help="Data directory of the daemon to talk to.",
    )(func)
    return func


def call_daemon(data_dir: Path, socket_path: Path | None, cmd: str, **args: Any) -> Any:
    """Run one control command; any failure becomes a ClickException (message on stderr, exit 1)."""
    path = socket_path if socket_path is not None else Path(data_dir) / CONTROL_SOCKET_NAME
    try:
        return ControlClient(path, data_dir=data_dir).call(cmd, **args)
    except ClientError as exc:
        raise click.ClickException(str(exc)) from None


# --- the command group -------------------------------------------------------------------------


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(_version(), "--version", prog_name="kadnode")
def main() -> None:
    """kadnode: a Kademlia DHT node that speaks the BitTorrent Mainline DHT (BEP 5).

    Start a daemon with `kadnode run`, then query it from another terminal with
    `kadnode status`, `kadnode peers INFOHASH`, ... Every command has --help with an example.

    \b
    Example:
      kadnode run --port 6881 &
      kadnode status
    """


@main.command()
@click.option("--host", help="IPv4 address to bind the UDP socket to.  [default: 0.0.0.0]")
@click.option("--port", type=click.IntRange(0, 65535), help="UDP port (0: any free port).  [default: 6881]")
@click.option("--torrent-port", type=click.IntRange(0, 65535),
              help="TCP port that serves shared files (0: any free port).  [default: the UDP port's number]")
@click.option("--upload-rate", metavar="RATE",
              help="Serve shared files at most this fast, all peers together: bytes/s, or e.g. 500k, 2M.  "
                   "[default: no limit]")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar=ENVVAR_DATA_DIR,
    help=f"Where the routing table, peers and the control socket live.  [default: ${ENVVAR_DATA_DIR}, "
    "else $XDG_DATA_HOME/kadnode]",
)
@click.option(
    "--bootstrap",
    "bootstrap",
    multiple=True,
    metavar="HOST:PORT",
    help="A node to join through; repeat for several.",
)
@click.option(
    "--seeds-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="A file of HOST:PORT lines to join through (e.g. bootstrap/mainline.txt).",
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="A TOML config file; options given here override it.",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error", "critical"], case_sensitive=False),
    help="Log verbosity.  [default: info]",
)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"], case_sensitive=False),
    help="text for people, json (one object per line) for log collectors.  [default: text]",
)
def run(
    host: str | None,
    port: int | None,
    torrent_port: int | None,
    upload_rate: str | None,
    data_dir: Path | None,
    bootstrap: tuple[str, ...],
    seeds_file: Path | None,
    config_file: Path | None,
    log_level: str | None,
    log_format: str | None,
) -> None:
    """Run a DHT node in the foreground until Ctrl-C (SIGINT) or SIGTERM.

    The node keeps its ID and routing table in the data directory (a restart is a warm start) and serves the
    control socket DATA_DIR/control.sock that the other commands use.

    With no --bootstrap and no --seeds-file the node starts a new, private network: other nodes
    join it by bootstrapping from this one. kadnode never contacts the public BitTorrent DHT by
    itself; its routers are listed in bootstrap/mainline.txt and used only when you opt in with
    --seeds-file bootstrap/mainline.txt.

    \b
    Examples:
      kadnode run --host 127.0.0.2 --port 6881 --data-dir /tmp/kn-a
      kadnode run --host 127.0.0.3 --port 6881 --data-dir /tmp/kn-b --bootstrap 127.0.0.2:6881
      kadnode run --config kadnode.toml --log-format json
    """
    from kadnode.config import load_config, parse_endpoint

    seeds = []
    for item in bootstrap:
        try:
            seeds.append(parse_endpoint(item))
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="'--bootstrap'") from None
    try:
        config = load_config(
            config_file,
            host=host,
            port=port,
            torrent_port=torrent_port,
            upload_rate=upload_rate,
            data_dir=data_dir,
            bootstrap=tuple(seeds) if seeds else None,
            seeds_file=seeds_file,
            log_level=log_level.lower() if log_level else None,
            log_format=log_format.lower() if log_format else None,
        )
    except (ValueError, OSError) as exc:
        raise click.ClickException(f"cannot load the configuration: {exc}") from None
    from kadnode.runtime import daemon  # only now: a config error should not need the runtime

    raise SystemExit(daemon.run(config))


@main.command()
@client_options
def status(data_dir: Path, socket_path: Path | None, as_json: bool) -> None:
    """Show the running daemon's ID, routing table health, storage and traffic counters.

    \b
    Example:
      kadnode status --data-dir /tmp/kn-a
    """
    result = call_daemon(data_dir, socket_path, "status")
    if as_json:
        emit_json(result)
        return
    rows: list[tuple[str, str]] = []
    _flatten("", result, rows)
    width = max((len(key) for key, _ in rows), default=0)
    for key, value in rows:
        click.echo(f"{key.ljust(width)}  {value}")


@main.command()
@client_options
def routes(data_dir: Path, socket_path: Path | None, as_json: bool) -> None:
    """List the routing table: every known node with its state, failures and round-trip time.

    Nodes are sorted by XOR distance from this node's ID, closest first.

    \b
    Example:
      kadnode routes --data-dir /tmp/kn-a
    """
    result = call_daemon(data_dir, socket_path, "routes")
    if as_json:
        emit_json(result)
        return
    nodes = result["nodes"]
    if not nodes:
        click.echo(f"routing table of {result['node_id']} is empty (no node has answered yet)")
        return
    click.echo(
        table(
            ["ID", "ADDRESS", "STATE", "FAILURES", "RTT"],
            [[n["id"], f"{n['host']}:{n['port']}", n["state"], n["failures"], ms(n["rtt"])] for n in nodes],
        )
    )
    click.echo(f"{plural(result['count'], 'node')} in the routing table of {result['node_id']}")


@main.command()
@click.argument("endpoint", metavar="HOST:PORT")
@client_options
def ping(endpoint: str, data_dir: Path, socket_path: Path | None, as_json: bool) -> None:
    """Ask the daemon to ping a DHT node, and show its ID and the round-trip time.

    Exits with status 1 when the node does not answer.

    \b
    Example:
      kadnode ping 127.0.0.3:6881 --data-dir /tmp/kn-a
    """
    host, port = parse_host_port(endpoint)
    result = call_daemon(data_dir, socket_path, "ping", host=host, port=port)
    if as_json:
        emit_json(result)
    elif result["ok"]:
        click.echo(f"pong from {result['addr']}: node id {result['node_id']}, rtt {ms(result['rtt'])}")
    if not result["ok"]:
        raise click.ClickException(f"no answer from {result['addr']}: {result['error']}")


@main.command()
@click.argument("target", metavar="ID")
@client_options
def lookup(target: str, data_dir: Path, socket_path: Path | None, as_json: bool) -> None:
    """Find the k nodes closest to ID (an iterative find_node lookup) and show their XOR distances.

    ID is 40 hex characters: a node ID or an info-hash. A lookup takes milliseconds on a LAN and
    up to a minute on a large network.

    \b
    Example:
      kadnode lookup 5fbfbff10c5d6a4ec8a88e4c6ab4c28b95eeb19e --data-dir /tmp/kn-a
    """
    target_hex = parse_hex_id(target, "ID", "a 160-bit node ID or info-hash")
    result = call_daemon(data_dir, socket_path, "lookup", target=target_hex)
    if as_json:
        emit_json(result)
        return
    _print_lookup_summary("lookup", result)
    closest = result["closest"]
    if not closest:
        raise click.ClickException("the lookup found no node; is the daemon bootstrapped? see `kadnode status`")
    click.echo(
        table(
            ["#", "ID", "ADDRESS", "DISTANCE", "LOG2"],
            [
                [i, n["id"], n["addr"], n["distance"], int(n["distance"], 16).bit_length()]
                for i, n in enumerate(closest, 1)
            ],
        )
    )


def _print_lookup_summary(what: str, lookup_result: dict[str, Any]) -> None:
    timed_out = ", timed out" if lookup_result.get("timed_out") else ""
    click.echo(
        f"{what} {lookup_result['target']}: queried {lookup_result['queried']}, "
        f"responded {lookup_result['responded']}, failed {lookup_result['failed']}, "
        f"{ms(lookup_result['duration'])}{timed_out}"
    )


@main.command()
@click.argument("info_hash", metavar="INFOHASH")
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    help="TCP/uTP port your client serves the torrent on. Without it the DHT nodes record the "
    "daemon's UDP source port (implied_port).",
)
@client_options
def announce(info_hash: str, port: int | None, data_dir: Path, socket_path: Path | None, as_json: bool) -> None:
    """Announce that this host has the torrent INFOHASH (get_peers lookup, then announce_peer).

    The nodes closest to INFOHASH store this host as a peer for about 30 minutes. The daemon keeps the
    announce alive: it announces again every 15 minutes, also after a restart, until
    `kadnode unannounce INFOHASH`. Exits with status 1 when no node accepted the announce (the daemon
    still retries at the next interval).

    \b
    Example:
      kadnode announce 5fbfbff10c5d6a4ec8a88e4c6ab4c28b95eeb19e --port 51413 --data-dir /tmp/kn-a
    """
    ih = parse_hex_id(info_hash, "INFOHASH", "a 20-byte SHA-1")
    result = call_daemon(data_dir, socket_path, "announce", info_hash=ih, port=port)
    if as_json:
        emit_json(result)
    else:
        how = f"port {result['port']}" if result["port"] is not None else "implied port"
        click.echo(
            f"announced {result['info_hash']} ({how}) to {result['stored_at']} of "
            f"{plural(result['attempted'], 'node')}; {plural(len(result['peers']), 'other peer')} already listed"
        )
        interval = result.get("reannounce_interval")
        if interval:
            click.echo(f"the daemon re-announces it every {duration(interval)} until `kadnode unannounce {ih}`")
    if result["stored_at"] == 0:
        raise click.ClickException(
            f"no node stored the announce ({result['attempted']} tried); is the daemon bootstrapped? "
            "see `kadnode status`"
        )


@main.command()
@click.argument("info_hash", metavar="INFOHASH")
@client_options
def peers(info_hash: str, data_dir: Path, socket_path: Path | None, as_json: bool) -> None:
    """Find peers announced for the torrent INFOHASH (an iterative get_peers lookup).

    Prints one peer per line; with --json a list of "host:port" strings. Finding no peer is not an
    error: the exit status is 0 and the output says "no peers found".

    \b
    Example:
      kadnode peers 5fbfbff10c5d6a4ec8a88e4c6ab4c28b95eeb19e --data-dir /tmp/kn-b
    """
    ih = parse_hex_id(info_hash, "INFOHASH", "a 20-byte SHA-1")
    result = call_daemon(data_dir, socket_path, "peers", info_hash=ih)
    found: list[str] = result["peers"]
    if as_json:
        emit_json(found)
        return
    if not found:
        click.echo(f"no peers found for {ih}")
    else:
        rows = [peer.rpartition(":")[::2] for peer in found]
        click.echo(table(["HOST", "PORT"], rows))
        click.echo(f"{plural(len(found), 'peer')} for {ih}")
    lookup_result = result["lookup"]
    click.echo(
        f"(lookup: queried {lookup_result['queried']}, responded {lookup_result['responded']}, "
        f"{ms(lookup_result['duration'])})",
        err=True,
    )


@main.command()
@click.argument("info_hash", metavar="INFOHASH")
@client_options
def unannounce(info_hash: str, data_dir: Path, socket_path: Path | None, as_json: bool) -> None:
    """Stop announcing the torrent INFOHASH (undoes `kadnode announce`).

    The daemon no longer renews the announce; the nodes that list this host as a peer drop it when
    the entry expires (about 30 minutes). Exits with status 1 if INFOHASH was not being announced.

    \b
    Example:
      kadnode unannounce 5fbfbff10c5d6a4ec8a88e4c6ab4c28b95eeb19e --data-dir /tmp/kn-a
    """
    ih = parse_hex_id(info_hash, "INFOHASH", "a 20-byte SHA-1")
    result = call_daemon(data_dir, socket_path, "unannounce", info_hash=ih)
    if as_json:
        emit_json(result)
    elif result["was_announced"]:
        click.echo(f"stopped announcing {ih}; nodes forget this host when their entry expires")
    if not result["was_announced"]:
        raise click.ClickException(f"{ih} is not being announced by this daemon")


def _read_value(args: list[str], file: Path | None) -> bytes:
    """VALUE from the command line (as UTF-8), from --file, or from stdin (VALUE or --file `-`)."""
    if file is not None and args:
        raise click.UsageError("give VALUE or --file, not both")
    if file is None and not args:
        raise click.UsageError("missing VALUE: give it as an argument, with --file PATH, or `-` to read stdin")
    source = str(file) if file is not None else None
    if source is None and args[0] != "-":
        try:
            return args[0].encode()
        except UnicodeEncodeError:
            raise click.UsageError("VALUE is not valid UTF-8; pass bytes with --file") from None
    try:
        if source is None or source == "-":
            data = sys.stdin.buffer.read(MAX_READ + 1)
        else:
            with open(source, "rb") as handle:
                data = handle.read(MAX_READ + 1)
    except OSError as exc:
        raise click.ClickException(f"cannot read {source}: {exc.strerror or exc}") from None
    if len(data) > MAX_READ:
        raise click.ClickException(
            f"value is more than {MAX_READ} bytes; BEP 44 items hold at most {MAX_VALUE_SIZE} bytes bencoded"
        )
    return data


def _bencoded_size(raw: bytes, bencoded: bool) -> int:
    return len(raw) if bencoded else len(str(len(raw))) + 1 + len(raw)


def _refusals(result: dict[str, Any]) -> str:
    """'2 refused it (302 sequence number less than current), 1 did not answer' (empty if none)."""
    errors: dict[str, int] = result.get("errors", {})
    refused = sum(errors.values())
    silent = result["attempted"] - result["stored_at"] - refused
    parts = []
    if refused:
        reasons = ", ".join(f"{n}x {code} {ERROR_NAMES.get(int(code), 'error')}" for code, n in errors.items())
        parts.append(f"{refused} refused it ({reasons})")
    if silent:
        parts.append(f"{silent} did not answer")
    return ", ".join(parts)


@main.command()
@click.argument("args", nargs=-1, metavar="NAME VALUE | --immutable VALUE")
@click.option("--immutable", is_flag=True, help="Store an immutable item: no NAME, its target is the value's SHA-1.")
@click.option(
    "--file",
    type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
    help="Read VALUE from this file ('-': stdin), as bytes.",
)
@click.option("--bencoded", is_flag=True, help="VALUE is already bencoded (a list, dict, ...) and is stored as is.")
@click.option(
    "--cas",
    type=click.IntRange(0),
    help="Compare-and-swap: store only where the item still has this seq (nodes answer 301 otherwise).",
)
@client_options
def put(
    args: tuple[str, ...],
    immutable: bool,
    file: Path | None,
    bencoded: bool,
    cas: int | None,
    data_dir: Path,
    socket_path: Path | None,
    as_json: bool,
) -> None:
    """Store a value in the DHT (BEP 44) and keep it there: the daemon republishes it every hour.

    `kadnode put NAME VALUE` stores a mutable item signed with the daemon's key and salted with
    NAME; it prints the item's target and its address PUBKEY/NAME, which anyone can pass to
    `kadnode get`. Putting NAME again replaces the value (with the next seq). `kadnode put
    --immutable VALUE` stores VALUE under the SHA-1 of its bencoded form (the printed target), forever the same.

    VALUE is stored as a byte string; `-` (or --file -) reads it from stdin, --file from a file.
    At most 1000 bytes bencoded. Without other nodes the item is stored locally and put to the
    network once the daemon has joined one.

    \b
    Examples:
      kadnode put greeting 'hello, world' --data-dir /tmp/kn-a
      kadnode put --immutable --file notes.txt --data-dir /tmp/kn-a
      echo 'v2' | kadnode put greeting - --data-dir /tmp/kn-a
    """
    rest = list(args)
    name: str | None = None
    if immutable:
        if cas is not None:
            raise click.UsageError("--cas applies to mutable items only")
    else:
        if not rest:
            raise click.UsageError("missing NAME: `kadnode put NAME VALUE`, or `kadnode put --immutable VALUE`")
        name = rest.pop(0)
        try:
            size = len(name.encode())
        except UnicodeEncodeError:
            raise click.UsageError("NAME is not valid UTF-8") from None
        if not name or size > MAX_NAME_BYTES:
            raise click.UsageError(f"NAME must be 1 to {MAX_NAME_BYTES} bytes of UTF-8, got {size} bytes")
    if len(rest) > 1:
        raise click.UsageError(
            f"too many arguments: {' '.join(rest[1:])!r:.60} (quote a VALUE that contains spaces)"
        )
    raw = _read_value(rest, file)
    size = _bencoded_size(raw, bencoded)
    if size > MAX_VALUE_SIZE:
        raise click.ClickException(
            f"value is {size} bytes when bencoded ({len(raw)} bytes of data); "
            f"BEP 44 items hold at most {MAX_VALUE_SIZE} bytes"
        )
    request: dict[str, Any] = {"value_b64": base64.b64encode(raw).decode(), "immutable": immutable}
    if name is not None:
        request["name"] = name
    if bencoded:
        request["bencoded"] = True
    if cas is not None:
        request["cas"] = cas
    result = call_daemon(data_dir, socket_path, "put", **request)
    if as_json:
        emit_json(result)
    else:
        what = f"{name} (seq {result['seq']}" if name is not None else "immutable item ("
        what += f"{', ' if name is not None else ''}{result['size']} bytes bencoded)"
        if result["attempted"] == 0:
            click.echo(f"stored {what} locally; no other node reached (the daemon puts it once it joins a network)")
        elif result["stored_at"] > 0:
            refusals = _refusals(result)
            click.echo(
                f"stored {what} on {result['stored_at']} of {plural(result['attempted'], 'node')}"
                + (f"; {refusals}" if refusals else "")
            )
        click.echo(f"target   {result['target']}")
        if name is not None:
            click.echo(f"address  {result['address']}")
    if result["attempted"] > 0 and result["stored_at"] == 0:
        raise click.ClickException(
            f"no node stored the item: {_refusals(result)}; it is kept locally and put again at the next republish"
        )


@main.command()
@click.argument("target", metavar="TARGET|PUBKEY/NAME")
@click.option("--local", is_flag=True, help="Only look in this daemon's own store; no lookup.")
@client_options
def get(target: str, local: bool, data_dir: Path, socket_path: Path | None, as_json: bool) -> None:
    """Fetch a BEP 44 item by its TARGET (40 hex) or its address PUBKEY/NAME, and print its value.

    A byte-string value is printed as its exact bytes (`kadnode get X > file` restores what
    `kadnode put --file` stored); other values (lists, dicts, integers) as JSON. For a mutable item
    the lookup returns the highest seq whose signature is valid. With --json: value, seq, public key,
    signature check, holders and the nodes that answered. Exits with status 1 if nothing is found.

    \b
    Examples:
      kadnode get a7f7f76437cc648ab09724928b192eec693bc5a8 --data-dir /tmp/kn-b
      kadnode get 59b75317e0882556038e0a3ee2a5dd1f1f2dd72cfab142a78b720455dbbe920d/greeting --json
    """
    try:
        parse_item_address(target)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    result = call_daemon(data_dir, socket_path, "get", target=target, local=local)
    if result["item"] is None:
        same = target.lower() == result["target"]
        also = "" if same else f"target {result['target']}; "
        if local:
            named = target if same else f"{target} (target {result['target']})"
            raise click.ClickException(f"this daemon holds no item under {named}")
        hint = ""
        if result["queried"] == 0:
            hint = "; the daemon knows no other node yet (see `kadnode status`)"
        elif result["invalid"]:
            hint = (
                f"; {plural(result['invalid'], 'answer')} failed verification (a salted mutable item "
                "looked up by its raw target cannot be checked: use its address PUBKEY/NAME)"
            )
        raise click.ClickException(
            f"no item found under {target} ({also}asked {plural(result['queried'], 'node')}){hint}"
        )
    item = result["item"]
    raw = base64.b64decode(item["value_b64"])
    try:
        value: Bencoded | None = bdecode(raw, max_depth=64, max_items=4 * len(raw) + 4)
    except BencodeError:
        value = None  # never stored by a node (values arrive decoded), but print what we have
    mutable = item["kind"] == "mutable"
    if as_json:
        emit_json({
            "value": bencoded_to_json(value) if value is not None else {"hex": raw.hex()},
            "kind": item["kind"],
            "seq": item.get("seq"),
            "public_key": item.get("public_key"),
            "address": item.get("address"),
            "signature_valid": True if mutable else None,
            "target": result["target"],
            "holders": result["holders"],
            "nodes_answered": result["nodes_answered"],
            "local": result["local"],
        })
        return
    if isinstance(value, bytes) or value is None:
        data = value if value is not None else raw
        out = sys.stdout.buffer
        out.write(data)
        if sys.stdout.isatty() and not data.endswith(b"\n"):
            out.write(b"\n")
        out.flush()
    else:
        click.echo(json.dumps(bencoded_to_json(value)))
    if result["local"]:
        where = "held by this daemon"
    elif result["holders"] == 0:
        where = f"from this daemon's store; none of the {plural(result['nodes_answered'], 'node')} that answered had it"
    else:
        where = f"held by {result['holders']} of {plural(result['nodes_answered'], 'node')} that answered"
    if result["invalid"]:
        where += f"; {plural(result['invalid'], 'answer')} failed verification"
    check = f"seq {item['seq']}, signature valid" if mutable else "immutable, hash valid"
    click.echo(f"({check}; {where})", err=True)


@main.command()
@click.option(
    "--nodes",
    "-n",
    type=click.IntRange(2, 2000),
    default=20,
    show_default=True,
    help="How many nodes to start.",
)
@click.option("--seed", type=int, help="Seed for the random choices (targets, info-hashes, nodes).")
@click.option(
    "--lookups",
    type=click.IntRange(0, 1000),
    default=5,
    show_default=True,
    help="find_node lookups to check against the brute-force k closest.",
)
@click.option(
    "--announces",
    type=click.IntRange(0, 1000),
    default=5,
    show_default=True,
    help="Info-hashes to announce and look up again from another node.",
)
def demo(nodes: int, seed: int | None, lookups: int, announces: int) -> None:
    """Start a small DHT on loopback in this process and check that it works.

    Starts N real nodes on 127.0.0.10, 127.0.0.11, ... (ephemeral UDP ports), bootstraps them all
    from the first, runs find_node lookups from random nodes and compares them with the true k
    closest, announces random info-hashes and finds them from other nodes, then prints a summary.
    Nothing leaves 127.0.0.0/8. Exits with status 0 only if every check passed.

    \b
    Example:
      kadnode demo --nodes 50 --seed 7
    """
    from kadnode.demo import main as demo_main

    raise SystemExit(demo_main(nodes, seed=seed, lookups=lookups, announces=announces))


@main.command()
@click.option("--nodes", "-n", type=click.IntRange(2, 200_000), default=1000, show_default=True,
              help="Simulated nodes.")
@click.option("--churn", type=click.FloatRange(0.0, 0.9), default=0.0, show_default=True,
              help="Fraction of nodes crashed (and as many new ones joined) before the second lookup batch.")
@click.option("--loss", type=click.FloatRange(0.0, 0.9), default=0.0, show_default=True,
              help="Datagram loss during the second lookup batch.")
@click.option("--seed", type=int, default=1, show_default=True, help="Seed: the same seed gives the same run.")
@click.option("--lookups", type=click.IntRange(0, 1_000_000), default=1000, show_default=True,
              help="find_node lookups per batch, each compared with the brute-force k closest.")
@click.option("--json", "json_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the report as JSON to this file.")
def sim(nodes: int, churn: float, loss: float, seed: int, lookups: int, json_file: Path | None) -> None:
    """Run a simulated DHT of real node cores in this process, on a virtual clock, and report.

    Grows the network in waves, runs lookups from random nodes and compares each with the true k
    closest live nodes; with --churn/--loss, crashes that fraction of nodes, joins as many new ones,
    drops that fraction of datagrams and runs the lookups again. Nothing touches the real network.
    Progress goes to stderr, the report to stdout.

    \b
    Example:
      kadnode sim --nodes 10000 --churn 0.3 --loss 0.1 --seed 7
    """
    from kadnode.sim.report import format_report, run_sim

    bars: list[Any] = []

    def progress(label: str, total: int) -> Callable[[int], None]:
        """One bar per phase; the previous one is finished when the next begins."""
        while bars:
            bars.pop().render_finish()
        bar = click.progressbar(length=total, label=f"{label:<30}", file=sys.stderr)
        bar.render_progress()
        bars.append(bar)
        return bar.update

    report = run_sim(nodes, seed=seed, churn_fraction=churn, loss=loss, lookups=lookups, progress=progress)
    while bars:
        bars.pop().render_finish()
    click.echo(format_report(report))
    if json_file is not None:
        json_file.write_text(json.dumps(report.to_json(), indent=2) + "\n")


# The file locator's commands live in their own module; importing it registers them on `main`.
import kadnode.cli_files  # noqa: E402, F401
