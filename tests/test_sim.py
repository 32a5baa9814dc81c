"""The simulator runs real node cores at scale, deterministically from a seed."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from kadnode.cli import main
from kadnode.core.bep44 import make_immutable
from kadnode.core.node import NodeCore
from kadnode.core.results import BootstrapResult, LookupResult, PingResult
from kadnode.sim.links import LinkLatency, LinkModel
from kadnode.sim.network import LEAVE_GRACE, SimNetwork, SimNode, SimulationStalled
from kadnode.sim.scenarios import ScenarioFailure, check, grow, run_lookups
from kadnode.types import Addr
from kadnode.wire.bencode import bencode


def build_network(seed: int, size: int, **kwargs: object) -> SimNetwork:
    """`size` nodes; each joins through the first one, one every 50 ms of virtual time."""
    net = SimNetwork(seed, **kwargs)  # type: ignore[arg-type]
    seed_core = net.add_node()
    seed_addr = next(iter(net.nodes))
    for _ in range(size - 1):
        net.join([seed_addr])
        net.run_until(net.now + 0.05)
    net.run_until(net.now + 60)
    assert len(seed_core.routing_table) > 0
    return net


def brute_force_closest(net: SimNetwork, target: int, k: int) -> list[int]:
    return sorted((n.core.node_id for n in net.live_nodes()), key=lambda i: i ^ target)[:k]


def find_node(net: SimNetwork, core: NodeCore, target: int) -> LookupResult:
    addr = next(a for a, n in net.nodes.items() if n.core is core)
    result: LookupResult = net.run_op(addr, lambda c, now, done: c.find_node(target, now, done))
    return result


@pytest.mark.slow
def test_lookups_in_500_node_network_match_brute_force() -> None:
    net = build_network(seed=20261125, size=500)
    rng = random.Random(7)
    k = net.settings.k
    nodes = net.live_nodes()
    for _ in range(60):
        target = rng.getrandbits(160)
        origin = rng.choice(nodes)
        result = find_node(net, origin.core, target)
        expected = brute_force_closest(net, target, k + 1)
        # The origin never returns itself, so compare against the k closest *other* nodes.
        expected = [i for i in expected if i != origin.core.node_id][:k]
        assert [n.id for n in result.closest] == expected, f"seed {net.seed}, target {target:040x}"


def test_same_seed_same_trace() -> None:
    hashes = []
    for _ in range(2):
        net = build_network(seed=99, size=60)
        rng = random.Random(1)
        for _ in range(10):
            origin = rng.choice(net.live_nodes())
            find_node(net, origin.core, rng.getrandbits(160))
        hashes.append(net.trace_hash())
    assert hashes[0] == hashes[1]
    other = build_network(seed=100, size=60)
    assert other.trace_hash() != hashes[0]


def test_bootstrap_reports_when_no_seed_answers() -> None:
    net = SimNetwork(seed=3)
    core = net.add_node()
    addr = next(iter(net.nodes))
    result: BootstrapResult = net.run_op(addr, lambda c, now, done: c.bootstrap([("127.9.9.9", 6881)], now, done))
    assert result.seeds_answered == 0
    assert result.table_size == 0
    assert result.lookup is None
    assert core.counters["rpc.timeouts"] == 1


def test_lookups_survive_crashed_nodes() -> None:
    """Right after 30% crash, lookups still find nearly all true closest nodes; once the survivors'
    maintenance has noticed the dead (their own failed pings, within ~20 virtual minutes), they are
    exact again."""
    net = build_network(seed=5, size=200)
    rng = random.Random(11)
    for node in rng.sample(net.live_nodes(), 60):
        net.crash(node.addr)
    k = net.settings.k

    def overlap_of_lookups(count: int) -> float:
        found = 0
        for _ in range(count):
            target = rng.getrandbits(160)
            origin = rng.choice(net.live_nodes())
            result = find_node(net, origin.core, target)
            expected = [i for i in brute_force_closest(net, target, k + 1) if i != origin.core.node_id][:k]
            found += len({n.id for n in result.closest} & set(expected))
        return found / (count * k)

    assert overlap_of_lookups(20) >= 0.9
    net.run_until(net.now + 20 * 60)
    assert overlap_of_lookups(20) == 1.0, f"seed {net.seed}"


# ---------------------------------------------------------------------------- links, partitions, churn


def two_nodes(**links: float) -> tuple[SimNetwork, SimNode, SimNode]:
    net = SimNetwork(seed=8, links=LinkModel(**links))
    net.add_node()
    net.add_node()
    a, b = net.nodes.values()
    return net, a, b


def ping(net: SimNetwork, src: SimNode, dst: SimNode) -> PingResult:
    result: PingResult = net.run_op(src.addr, lambda c, now, done: c.ping(dst.addr, now, done))
    return result


def test_link_latency_is_fixed_symmetric_and_lognormal() -> None:
    model = LinkModel(median=0.04, spread=0.5)
    latency = LinkLatency(model, seed=1)
    assert latency(3, 9) == latency(9, 3) == LinkLatency(model, seed=1)(3, 9)
    samples = sorted(latency(a, b) for a in range(1, 200) for b in range(a + 1, 200))
    median = samples[len(samples) // 2]
    assert 0.037 < median < 0.043
    # Lognormal: the 90th percentile is exp(1.2816 * spread) times the median.
    p90 = samples[int(0.9 * len(samples))]
    assert p90 / median == pytest.approx(math.exp(1.2816 * 0.5), rel=0.05)
    other = LinkLatency(model, seed=2)
    assert sum(latency(1, b) != other(1, b) for b in range(2, 100)) > 90


def test_loss_and_duplication_rates() -> None:
    net, a, b = two_nodes(loss=0.2, duplicate=0.1)
    results = [ping(net, a, b) for _ in range(400)]
    assert net.sent >= 700  # 400 queries and the replies that arrive, some twice
    assert net.lost / net.sent == pytest.approx(0.2, abs=0.04)
    assert net.duplicated / net.sent == pytest.approx(0.1, abs=0.03)
    # A ping succeeds when its query and its reply both arrive: 0.8 * 0.8.
    assert sum(r.ok for r in results) / len(results) == pytest.approx(0.64, abs=0.07)
    # Duplicate replies find no transaction left: the node counts them and moves on.
    assert a.core.counters["dropped.unsolicited"] > 0


def test_jitter_reorders_datagrams() -> None:
    net, a, b = two_nodes(jitter=0.05)
    received: list[bytes] = []

    class Recording:
        """b's core, noting what arrives (a wrapper: a compiled NodeCore's methods cannot be replaced)."""

        def __init__(self, core: NodeCore) -> None:
            self.core = core

        def __getattr__(self, name: str) -> Any:
            return getattr(self.core, name)

        def datagram_received(self, data: bytes, addr: Addr, now: float) -> None:
            received.append(data)
            self.core.datagram_received(data, addr, now)

    b.core = Recording(b.core)  # type: ignore[assignment]
    for _ in range(50):
        a.core.ping(b.addr, net.now, lambda _r: None)
    sent = [data for data, _ in a.core._outgoing]
    net.run_op(a.addr, lambda c, now, done: c.ping(b.addr, now, done))
    wanted = set(sent)
    got = [data for data in received if data in wanted]
    assert sorted(got) == sorted(sent) and got != sent
    net2, a2, b2 = two_nodes(jitter=0.0)
    assert ping(net2, a2, b2).ok


def test_isolate_partition_and_heal() -> None:
    net = build_network(seed=9, size=12)
    nodes = net.live_nodes()
    net.isolate(nodes[0].addr)
    assert not ping(net, nodes[0], nodes[1]).ok
    assert ping(net, nodes[1], nodes[2]).ok
    net.partition([{n.addr for n in nodes[:6]}])  # the rest form the second group
    assert ping(net, nodes[0], nodes[5]).ok
    assert not ping(net, nodes[5], nodes[6]).ok
    assert not net.connected(nodes[0].addr, nodes[11].addr)
    net.heal()
    assert ping(net, nodes[5], nodes[6]).ok and net.connected(nodes[0].addr, nodes[11].addr)


def test_restart_with_and_without_state() -> None:
    net = build_network(seed=10, size=40)
    node = net.live_nodes()[5]
    old_core = node.core
    item = make_immutable(bencode(b"kept"))
    assert net.run_op(node.addr, lambda c, now, done: c.put(item, now, done)).stored_at > 0
    with pytest.raises(ValueError):
        net.add_node(addr=node.addr, node_id=1)  # the address is taken while it runs
    net.crash(node.addr)
    net.run_until(net.now + 60)
    warm = net.restart(node.addr, keep_state=True)
    assert warm.core is not old_core and warm.core.node_id == old_core.node_id
    assert warm.core.storage is old_core.storage and warm.index == node.index
    net.run_until(net.now + 30)
    assert len(warm.core.routing_table) >= net.settings.k
    assert warm.core.counters["items.republished"] >= 1  # after_join republishes its own items at once
    net.crash(node.addr)
    cold = net.restart(node.addr, keep_state=False)
    net.run_until(net.now + 30)
    assert cold.core.node_id != old_core.node_id and not cold.core.storage.own_items()
    assert len(cold.core.routing_table) >= net.settings.k
    with pytest.raises(ValueError):
        net.restart(node.addr, keep_state=True)  # it is running


def test_leave_finishes_in_flight_work_then_stops() -> None:
    net = build_network(seed=11, size=40)
    node = net.live_nodes()[3]
    results: list[LookupResult] = []
    node.core.find_node(12345, net.now, results.append)
    net._flush(node)
    net.leave(node.addr)
    assert node.alive  # a lookup is in flight
    net.run_until(net.now + LEAVE_GRACE + 10)
    assert len(results) == 1 and results[0].responded >= net.settings.k
    assert not node.alive
    other = net.live_nodes()[4]
    net.leave(other.addr)
    net.run_until(net.now + LEAVE_GRACE)  # stops when idle, or at the grace limit at the latest
    assert not other.alive
    assert not ping(net, net.live_nodes()[0], other).ok


def chaotic_run(seed: int) -> str:
    """Everything on: lognormal links, jitter, loss, duplication, waves, crash, warm and cold restart,
    leave, partition and heal, lookups."""
    net = SimNetwork(seed, links=LinkModel(jitter=0.02, loss=0.05, duplicate=0.02))
    grow(net, 60)
    rng = random.Random(seed)
    live = net.live_nodes()
    for node in live[:5]:
        net.crash(node.addr)
    net.leave(live[5].addr)
    net.partition([{n.addr for n in live[10:30]}])
    run_lookups(net, 5, rng)
    net.restart(live[0].addr, keep_state=True)
    net.restart(live[1].addr, keep_state=False)
    net.isolate(live[40].addr)
    run_lookups(net, 5, rng, origins=net.live_nodes()[10:30])
    net.heal()
    run_lookups(net, 5, rng)
    return net.trace_hash()


def test_same_seed_same_trace_with_everything_on() -> None:
    first = chaotic_run(12)
    assert chaotic_run(12) == first
    assert chaotic_run(13) != first


def test_failures_name_their_seed() -> None:
    net = SimNetwork(seed=4242)
    with pytest.raises(ScenarioFailure, match=r"\(replay with seed 4242\)"):
        check(net, False, "boom")
    net.add_node()
    with pytest.raises(SimulationStalled, match="seed 4242"):
        net.run_op(next(iter(net.nodes)), lambda c, now, done: c.ping(("127.9.9.9", 6881), now, done), limit=0.1)


def test_sim_command_reports_and_is_reproducible(tmp_path: Path) -> None:
    args = ["sim", "--nodes", "60", "--lookups", "10", "--churn", "0.2", "--loss", "0.1", "--seed", "3"]
    runs = []
    for name in ("a.json", "b.json"):
        done = CliRunner().invoke(main, [*args, "--json", str(tmp_path / name)])
        assert done.exit_code == 0, done.output
        runs.append(json.loads((tmp_path / name).read_text()))
    assert "exact       10 / 10" in done.output and "trace hash" in done.output
    first, second = runs
    assert first["trace_hash"] == second["trace_hash"]
    assert [p["lookups"] for p in first["phases"]] == [10, 10]
    assert first["phases"][0]["exact"] == 10 and first["nodes"] == 60 and first["datagrams"] > 0


def test_concurrent_lookups_are_exact_and_share_virtual_time() -> None:
    net = build_network(seed=14, size=150)
    start = net.now
    one_by_one = run_lookups(net, 20, random.Random(4))
    sequential = net.now - start
    start = net.now
    batched = run_lookups(net, 20, random.Random(4), concurrency=20)
    assert one_by_one.exact == batched.exact == 20
    assert net.now - start < sequential / 5
    with pytest.raises(SimulationStalled):
        net.run_ops([(net.live_nodes()[0].addr, lambda c, now, done: c.ping(("127.9.9.9", 6881), now, done))],
                    limit=0.1)


def test_a_join_refreshes_only_the_buckets_it_left_empty() -> None:
    from kadnode.settings import Settings
    from kadnode.types import NodeInfo
    from kadnode.wire.compact import id_from_bytes
    from kadnode.wire.krpc import FindNode, Query, decode_message

    core = NodeCore(0, Settings(), random.Random(3), 0.0)
    table = core.routing_table
    top = 1 << 159
    for i in range(8):  # a full far bucket and nodes sharing 9 or 10 bits with us: buckets 1..8 stay empty
        table.heard_from(NodeInfo(top + i, (f"127.0.0.{i + 1}", 6881)), 0.0, responded=True)
        table.heard_from(NodeInfo((1 << 150) + i, (f"127.0.1.{i + 1}", 6881)), 0.0, responded=True)
    table.heard_from(NodeInfo(1 << 149, ("127.0.2.1", 6881)), 0.0, responded=True)  # splits down to bucket 10
    empty = {i for i in range(table.bucket_count - 1) if table.bucket_size(i) == 0}
    assert empty and 0 not in empty
    core.take_outgoing()
    core.fill_buckets(0.0)
    assert core.counters["refresh_lookups"] == len(empty)
    refreshed = set()
    for data, _addr in core.take_outgoing():
        query = decode_message(data)
        assert isinstance(query, Query) and isinstance(query.body, FindNode)
        target = id_from_bytes(query.body.target)
        refreshed |= {i for i in empty if table.bucket_range(i)[0] <= target < table.bucket_range(i)[1]}
    assert refreshed == empty


def test_run_sim_pauses_the_cyclic_collector_and_restores_it() -> None:
    import gc

    from kadnode.sim.report import cyclic_gc_paused

    assert gc.isenabled()
    with cyclic_gc_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    gc.disable()
    try:
        with cyclic_gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # left as the caller had it
    finally:
        gc.enable()
