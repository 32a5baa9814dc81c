"""The file locator's commands (issue 6): share, shares, unshare, locate, fetch.

share/shares/unshare/locate ask the running daemon; fetch runs here, in the command's own process: it
asks the daemon's DHT for peers, downloads from them directly, and writes under the output directory.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import click

from kadnode.cli import call_daemon, client_options, emit_json, main, plural, table
from kadnode.types import Addr


def human_size(size: float) -> str:
    """Binary units, as piece lengths are: 16384 -> '16.0 KiB'."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def parse_target_arg(text: str) -> Any:
    """INFOHASH|MAGNET as a Magnet, or a usage error that says what is wrong."""
    from kadnode.torrent.magnet import MagnetError, parse_target

    try:
        return parse_target(text)
    except MagnetError as exc:
        raise click.BadParameter(
            f"{exc}; give a 40-hex-digit info-hash or a magnet:?xt=urn:btih:... link", param_hint="'TARGET'"
        ) from None


@main.command()
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--torrent", "torrent_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Share PATH as the content of this .torrent (its pieces are verified) instead of "
                   "making new metadata.")
@client_options
def share(path: Path, torrent_file: Path | None, data_dir: Path, socket_path: Path | None, as_json: bool) -> None:
    """Share the file or directory PATH: the daemon hashes it into BitTorrent v1 metadata, keeps that in
    its data directory, serves the content over TCP and announces it on the DHT (again every 15 minutes,
    and after restarts) until `kadnode unshare`.

    Prints the info-hash and a magnet link that `kadnode fetch` and BitTorrent clients understand. The
    daemon reads PATH in place: leave it where it is while it is shared.

    \b
    Examples:
      kadnode share ~/videos/talk.mp4
      kadnode share ./dataset/ --data-dir /tmp/kn-a
      kadnode share ./ubuntu.iso --torrent ./ubuntu.iso.torrent
    """
    args: dict[str, Any] = {"path": str(path.resolve())}
    if torrent_file is not None:
        args["torrent"] = str(torrent_file.resolve())
    result = call_daemon(data_dir, socket_path, "share", **args)
    if as_json:
        emit_json(result)
        return
    click.echo(f"info-hash  {result['info_hash']}")
    click.echo(f"magnet     {result['magnet']}")
    pieces = f"{result['pieces']} pieces of {human_size(result['piece_length'])}"
    click.echo(f"content    {result['name']}: {human_size(result['size'])}, {plural(result['files'], 'file')}, "
               f"{pieces}", err=True)
    if result["verified"] < result["pieces"]:
        click.echo(f"warning: only {result['verified']} of {result['pieces']} pieces match the torrent; "
                   "the others are not served", err=True)
    stored = result["announced_to"]
    where = f"announced to {plural(stored, 'node')}" if stored else "not announced yet (no node answered; retried)"
    click.echo(f"served on TCP port {result['port']}; {where}", err=True)


@main.command()
@client_options
def shares(data_dir: Path, socket_path: Path | None, as_json: bool) -> None:
    """List what the daemon shares: info-hash, size, verified pieces and path.

    \b
    Example:
      kadnode shares --data-dir /tmp/kn-a
    """
    result = call_daemon(data_dir, socket_path, "shares")
    if as_json:
        emit_json(result)
        return
    rows = []
    for row in result["shares"]:
        if row.get("missing"):
            rows.append([row["info_hash"], "-", "missing", row["path"]])
        else:
            rows.append([row["info_hash"], human_size(row["size"]), f"{row['verified']}/{row['pieces']}", row["path"]])
    if not rows:
        click.echo("nothing shared; share a file with `kadnode share PATH`")
        return
    click.echo(table(["INFO-HASH", "SIZE", "PIECES", "PATH"], rows))
    served = human_size(result["server"].get("bytes_served", 0))
    connections = plural(result["server"].get("connections", 0), "connection")
    click.echo(f"{plural(len(rows), 'share')} on TCP port {result['port']}; served {served} to {connections}",
               err=True)


@main.command()
@click.argument("target", metavar="INFOHASH|MAGNET")
@client_options
def unshare(target: str, data_dir: Path, socket_path: Path | None, as_json: bool) -> None:
    """Stop sharing INFOHASH: it is no longer served or announced (DHT nodes forget the announce within
    30 minutes). The content itself is left alone.

    \b
    Example:
      kadnode unshare 5fbfbff10c5d6a4ec8a88e4c6ab4c28b95eeb19e
    """
    info_hash = parse_target_arg(target).info_hash.hex()
    result = call_daemon(data_dir, socket_path, "unshare", info_hash=info_hash)
    if as_json:
        emit_json(result)
    elif result["was_shared"]:
        click.echo(f"stopped sharing {info_hash}")
    else:
        click.echo(f"{info_hash} was not shared; nothing changed")


@main.command()
@click.argument("target", metavar="INFOHASH|MAGNET")
@click.option("--no-check", is_flag=True, help="Only list what the DHT says; do not contact the peers.")
@client_options
def locate(target: str, no_check: bool, data_dir: Path, socket_path: Path | None, as_json: bool) -> None:
    """Find who has INFOHASH: the peers announced on the DHT, each then contacted with a BitTorrent
    handshake to show how quickly it answered, how many pieces it has and whether it offers the metadata
    (enough to fetch with only a magnet link).

    \b
    Example:
      kadnode locate 'magnet:?xt=urn:btih:5fbfbff10c5d6a4ec8a88e4c6ab4c28b95eeb19e'
    """
    magnet = parse_target_arg(target)
    info_hash = magnet.info_hash.hex()
    result = call_daemon(data_dir, socket_path, "locate", info_hash=info_hash, check=not no_check)
    if as_json:
        emit_json(result)
        return
    if not result["peers"]:
        click.echo(f"no peers found for {info_hash}")
    elif no_check:
        click.echo(table(["PEER"], [[peer] for peer in result["peers"]]))
    else:
        rows = []
        for check in result["checked"]:
            answered = f"{check['handshake_ms']:.1f} ms" if check["handshake_ms"] is not None else check["error"]
            pieces = "-" if check["pieces"] is None else str(check["pieces"])
            rows.append([check["addr"], answered, pieces, "yes" if check["metadata"] else "no", check["client"] or "-"])
        click.echo(table(["PEER", "ANSWERED IN", "PIECES", "METADATA", "CLIENT"], rows))
        alive = sum(1 for c in result["checked"] if c["handshake_ms"] is not None)
        click.echo(f"{plural(len(result['peers']), 'peer')} announced, {alive} answering", err=True)
    click.echo(f"(lookup: {result['nodes_answered']} nodes answered in {result['lookup_ms']:.0f} ms)", err=True)


class ProgressLine:
    """One status line on stderr: redrawn in place on a terminal, every 10% otherwise (logs stay short)."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self._last_decile = -1
        self._drawn = False

    def __call__(self, progress: Any) -> None:
        if not progress.total:  # no metadata yet
            if self.tty:
                click.echo(f"\rgetting the metadata from {plural(progress.peers, 'peer')}...\x1b[K", nl=False, err=True)
                self._drawn = True
            return
        total = progress.total
        share = progress.bytes_done / total
        text = (f"{share:6.1%} {human_size(progress.bytes_done)}/{human_size(progress.total)}  "
                f"{progress.verified}/{progress.pieces} pieces  {plural(progress.peers, 'peer')}  "
                f"{human_size(progress.rate)}/s")
        if self.tty:
            filled = int(share * 30)
            click.echo(f"\r[{'#' * filled}{'.' * (30 - filled)}] {text}\x1b[K", nl=False, err=True)
            self._drawn = True
        elif int(share * 10) > self._last_decile:
            self._last_decile = int(share * 10)
            click.echo(text, err=True)

    def done(self) -> None:
        if self._drawn:
            click.echo("", err=True)
            self._drawn = False


@main.command()
@click.argument("target", metavar="INFOHASH|MAGNET")
@click.option("-o", "--output", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("."),
              show_default=True, help="Directory to write the file (or the torrent's directory) into.")
@click.option("--seed", is_flag=True, help="When the download is complete, have the daemon share it.")
@click.option("--torrent", "torrent_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Take the metadata from this .torrent instead of from the peers.")
@click.option("--timeout", type=click.FloatRange(min=1), default=300.0, show_default=True,
              help="Give up after this many seconds without any peer to download from.")
@client_options
def fetch(target: str, out_dir: Path, seed: bool, torrent_file: Path | None, timeout: float, data_dir: Path,
          socket_path: Path | None, as_json: bool) -> None:
    """Download INFOHASH (or a magnet link) from the peers the DHT lists: the metadata first (from the
    peers, BEP 9), then pieces from several peers at once, each piece checked against its SHA-1. A peer
    that sends bad data is dropped and its pieces are fetched from others; a peer that stalls or goes
    away is replaced.

    Interrupted (Ctrl-C), the verified pieces stay on disk: run the same command again and it resumes.
    File names from the metadata cannot escape the output directory.

    \b
    Examples:
      kadnode fetch 'magnet:?xt=urn:btih:5fbfbff10c5d6a4ec8a88e4c6ab4c28b95eeb19e&dn=talk.mp4' -o ~/Downloads
      kadnode fetch 5fbfbff10c5d6a4ec8a88e4c6ab4c28b95eeb19e --seed
    """
    from kadnode.torrent.fetch import FetchError
    from kadnode.torrent.metainfo import MetainfoError, parse_torrent_file
    from kadnode.torrent.metainfo import torrent_file as encode_torrent

    magnet = parse_target_arg(target)
    meta = None
    if torrent_file is not None:
        try:
            meta = parse_torrent_file(torrent_file.read_bytes())
        except MetainfoError as exc:
            raise click.ClickException(f"{torrent_file} is not a usable torrent: {exc}") from None
        if meta.info_hash != magnet.info_hash:
            raise click.ClickException(f"{torrent_file} is for {meta.info_hash.hex()}, not {magnet.info_hash.hex()}")
    call_daemon(data_dir, socket_path, "status")  # fails early, with advice, when no daemon runs
    progress = ProgressLine()
    started = time.monotonic()
    try:
        result = asyncio.run(_fetch(magnet, out_dir, meta, timeout, data_dir, socket_path, progress))
    except KeyboardInterrupt:
        progress.done()
        click.echo(f"interrupted; verified pieces are kept in {out_dir}: run the same command to resume", err=True)
        raise SystemExit(130) from None
    except FetchError as exc:
        progress.done()
        raise click.ClickException(str(exc)) from None
    progress.done()
    elapsed = time.monotonic() - started
    summary = {
        "info_hash": result.meta.info_hash.hex(), "name": result.meta.name, "path": str(result.path),
        "size": result.meta.total_length, "downloaded": result.downloaded, "reused_pieces": result.reused,
        "peers_used": result.peers_used, "banned": [f"{h}:{p}" for h, p in result.banned],
        "seconds": round(elapsed, 2),
    }
    if seed:
        with tempfile.NamedTemporaryFile(dir=data_dir, suffix=".torrent") as handle:
            handle.write(encode_torrent(result.meta))
            handle.flush()
            shared = call_daemon(data_dir, socket_path, "share", path=str(result.path.resolve()),
                                 torrent=handle.name)
        summary["seeding"] = shared["announced_to"]
    if as_json:
        emit_json(summary)
        return
    rate = human_size(result.downloaded / elapsed) if elapsed > 0 else "-"
    click.echo(f"{result.path}  ({human_size(result.meta.total_length)}, every piece verified)")
    click.echo(f"downloaded {human_size(result.downloaded)} in {elapsed:.1f} s ({rate}/s) from "
               f"{plural(result.peers_used, 'peer')}; {result.reused} pieces were already on disk", err=True)
    if result.banned:
        click.echo(f"dropped for bad data: {', '.join(summary['banned'])}", err=True)
    if seed:
        click.echo("now shared by the daemon (`kadnode shares` lists it)", err=True)


async def _fetch(magnet: Any, out_dir: Path, meta: Any, timeout: float, data_dir: Path, socket_path: Path | None,
                 progress: ProgressLine) -> Any:
    from kadnode.torrent.fetch import fetch as run_fetch
    from kadnode.torrent.peerid import new_peer_id

    info_hash_hex = magnet.info_hash.hex()

    async def find_peers() -> list[Addr]:
        result = await asyncio.to_thread(call_daemon, data_dir, socket_path, "peers", info_hash=info_hash_hex)
        found: list[Addr] = list(magnet.peers)
        for text in result["peers"]:
            host, _, port = text.rpartition(":")
            found.append((host, int(port)))
        return found

    return await run_fetch(magnet.info_hash, out_dir, find_peers=find_peers, peer_id=new_peer_id(), meta=meta,
                           on_progress=progress, timeout=timeout)
