"""Child process of tests/test_storage_durability.py: writes to a SqliteStorage until it is killed.

Usage: python tests/storage_writer.py DBPATH SEED

Prints `ready` once the database is open, then one line per write, right after the call returned
(that is the acknowledgement the node would send):

    i <target hex>                 put_item of an immutable item
    m <key index> <seq>            put_item of mutable item `key index` at `seq`
    p <info-hash hex> <port>       add_peer of 127.0.0.1:<port>
    a <info-hash hex> <port>       save_own_announce

Every value carries its own check (`item_signature`), so the parent can tell a torn write from an
intact one without knowing which values this run drew.
"""

from __future__ import annotations

import hashlib
import random
import sys
import time
from pathlib import Path

from kadnode.settings import Settings
from kadnode.storage.base import ImmutableItem, MutableItem
from kadnode.storage.sqlite import SqliteStorage

MUTABLE_KEYS = 8
SETTINGS = Settings().with_changes(
    max_items=10**6,
    max_items_per_ip=10**6,
    max_item_bytes=10**9,
    item_ttl=10**6,
    peer_ttl=10**6,
    max_info_hashes=10**6,
    max_peers_per_info_hash=10**6,
)
SOURCE_IP = "127.0.0.2"


def public_key(key: int) -> bytes:
    return hashlib.sha256(b"key %d" % key).digest()


def mutable_target(key: int) -> bytes:
    return hashlib.sha1(public_key(key)).digest()


def item_signature(pk: bytes, seq: int, value: bytes) -> bytes:
    """A stand-in for the ed25519 signature (the storage never checks it): 64 bytes that depend on
    every other field, so any torn or mixed-up row fails the parent's check."""
    return hashlib.sha512(pk + seq.to_bytes(8, "big", signed=True) + value).digest()


def bencoded(rng: random.Random) -> bytes:
    body = rng.randbytes(rng.randint(0, 990))
    return b"%d:%s" % (len(body), body)


def main() -> None:
    path, seed = Path(sys.argv[1]), int(sys.argv[2])
    rng = random.Random(seed)
    storage = SqliteStorage.open(path, SETTINGS, rng, wall_offset=time.time() - time.monotonic())
    now = time.monotonic()
    seqs = {}
    for key in range(MUTABLE_KEYS):
        held = storage.get_item(mutable_target(key), now)
        seqs[key] = held.seq if isinstance(held, MutableItem) else 0
    out = sys.stdout
    out.write("ready\n")
    out.flush()
    while True:
        now = time.monotonic()
        roll = rng.random()
        if roll < 0.5:
            value = bencoded(rng)
            target = hashlib.sha1(value).digest()
            storage.put_item(ImmutableItem(target, value), now, source_ip=SOURCE_IP)
            line = f"i {target.hex()}\n"
        elif roll < 0.75:
            key = rng.randrange(MUTABLE_KEYS)
            seq = seqs[key] + 1
            pk, value = public_key(key), bencoded(rng)
            item = MutableItem(mutable_target(key), pk, b"", seq, item_signature(pk, seq, value), value)
            storage.put_item(item, now, source_ip=SOURCE_IP)
            seqs[key] = seq
            line = f"m {key} {seq}\n"
        elif roll < 0.95:
            info_hash, port = rng.randbytes(20), rng.randint(1, 65535)
            storage.add_peer(info_hash, ("127.0.0.1", port), now)
            line = f"p {info_hash.hex()} {port}\n"
        else:
            info_hash, port = rng.randbytes(20), rng.randint(1, 65535)
            storage.save_own_announce(info_hash, port)
            line = f"a {info_hash.hex()} {port}\n"
        out.write(line)
        out.flush()


if __name__ == "__main__":
    main()
