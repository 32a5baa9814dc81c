"""The simulator runs real node cores at scale, deterministically from a seed."""

from __future__ import annotations

import random

import pytest

from kadnode.core.node import NodeCore
from kadnode.core.results import BootstrapResult, LookupResult
from kadnode.sim.network import SimNetwork


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
    return net.run_op(addr, lambda c, now, done: c.find_node(target, now, done))


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
