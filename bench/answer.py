"""CPU per answered query inside the core, without sockets: what `throughput` measures, minus the kernel.

    python -m bench.answer [--queries 200000] [--profile]

A `NodeCore` over SQLite storage is set up like the throughput benchmark's daemon (a routing table of
104 helpers that answered, stored peers and BEP 44 items), then fed the load generator's query mix
(`bench.loadgen.build_templates`) through `datagram_received`, taking the replies as a driver would.
It prints microseconds of process CPU per query, per method and overall, and writes JSON. Use it to
see what a change to the answer path saves before running the full `throughput` benchmark, which
needs a quiet machine.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import random
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.loadgen import METHODS, Stored, Template, build_templates
from bench.throughput import BUCKET_FILL, DEFAULT_HELPERS, helper_ids
from kadnode.core.bep44 import SigningKey, make_immutable, make_mutable
from kadnode.core.node import NodeCore
from kadnode.settings import Settings
from kadnode.storage.sqlite import SqliteStorage
from kadnode.types import NodeInfo
from kadnode.wire import bencode as bencode_module
from kadnode.wire.bencode import bencode
from kadnode.wire.compact import id_to_bytes
from kadnode.wire.krpc import decode_message, encode_response

LOADGEN_ADDR = ("127.0.77.9", 40000)
DAEMON_ADDR = ("127.0.77.1", 6881)
INFO_HASHES = 64
ITEMS = 128
PEERS_PER_HASH = 12


def build_core(workdir: Path, rng: random.Random) -> tuple[NodeCore, Stored]:
    """A core with a full-looking routing table and stored peers and items, at time 0."""
    settings = Settings()
    storage = SqliteStorage.open(workdir / "kadnode.db", settings, rng, wall_offset=0.0)
    node_id = rng.getrandbits(160)
    core = NodeCore(node_id, settings, rng, 0.0, storage)
    for n, helper in enumerate(helper_ids(node_id, DEFAULT_HELPERS, rng)):
        core.routing_table.heard_from(NodeInfo(helper, (f"127.0.78.{n // BUCKET_FILL + 1}", 7000 + n)), 0.0,
                                      responded=True, rtt=0.001)
    hashes = [rng.randbytes(20) for _ in range(INFO_HASHES)]
    for n, info_hash in enumerate(hashes):
        for peer in range(50 if n % 4 == 0 else PEERS_PER_HASH):
            storage.add_peer(info_hash, (f"127.0.79.{peer + 1}", 6881), 0.0)
    targets: list[bytes] = []
    for n in range(ITEMS):
        value = bencode(rng.randbytes(rng.choice((16, 64, 200, 500, 900))))
        if n % 4:
            item: Any = make_immutable(value)
        else:
            item = make_mutable(SigningKey(rng.randbytes(32)), value, seq=n, salt=b"")
        storage.put_item(item, 0.0, source_ip=f"127.0.79.{n % 50 + 1}")
        targets.append(item.target)
    core.take_outgoing()
    # One answered ping tells the core its own address (BEP 42 `ip`), which starts its liveness gossip,
    # as in the daemon: every query from a table member then also goes through it.
    first = next(iter(core.routing_table.entries()))
    core.ping(first.addr, 0.0, lambda _result: None)
    (data, _), = core.take_outgoing()
    tid = decode_message(data).tid
    core.datagram_received(encode_response(tid, {b"id": id_to_bytes(first.id)}, None, DAEMON_ADDR), first.addr, 0.0)
    core.take_outgoing()
    return core, Stored(tuple(hashes), tuple(targets))


def datagrams(templates: list[Template], count: int, rng: random.Random) -> list[tuple[int, bytes]]:
    out = []
    for n in range(count):
        template = templates[n % len(templates)]
        out.append((template.method, template.prefix + rng.randbytes(4) + template.suffix))
    return out


def run(queries: int, seed: int, profile: Path | None) -> dict[str, Any]:
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="kadnode-answer-") as tmp:
        core, stored = build_core(Path(tmp), rng)
        sender = id_to_bytes(rng.getrandbits(160))
        templates = build_templates(rng, sender, stored)
        work = datagrams(templates, queries, rng)
        receive, take = core.datagram_received, core.take_outgoing
        now = 1.0
        for _, data in work[:2000]:  # warm the caches and the querier's routing entry
            receive(data, LOADGEN_ADDR, now)
            take()
        answered_before = core.counters["responses_out"]
        per_method: dict[str, list[float]] = {name: [0.0, 0.0] for name in METHODS}  # CPU seconds, queries
        profiler = cProfile.Profile() if profile else None
        if profiler:
            profiler.enable()
        clock = time.process_time
        start = clock()
        for method, data in work:
            t0 = clock()
            receive(data, LOADGEN_ADDR, now)
            take()
            slot = per_method[METHODS[method]]
            slot[0] += clock() - t0
            slot[1] += 1
        total = clock() - start
        if profiler:
            profiler.disable()
            assert profile is not None
            profiler.dump_stats(str(profile))
        answered = core.counters["responses_out"] - answered_before
        core.storage.close()
    return {
        "gossip": core.liveness is not None,
        "queries": queries,
        "answered": answered,
        "codec": "compiled" if bencode_module.__file__ and not bencode_module.__file__.endswith(".py") else "pure",
        "us_per_query": total / queries * 1e6,
        "us_per_method": {name: (t / n * 1e6 if n else None) for name, (t, n) in per_method.items()},
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--queries", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--profile", type=Path, help="write cProfile stats here and print the top 25")
    parser.add_argument("--json", type=Path, default=Path("bench/results/answer.json"))
    args = parser.parse_args(argv)
    report = run(args.queries, args.seed, args.profile)
    print(f"codec: {report['codec']}; {report['answered']:,} answers to {report['queries']:,} queries")
    print(f"CPU per query: {report['us_per_query']:.2f} µs (timer overhead included)")
    for name, value in report["us_per_method"].items():
        print(f"  {name:10} {value:.2f} µs")
    if args.profile:
        pstats.Stats(str(args.profile)).sort_stats("tottime").print_stats(25)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
