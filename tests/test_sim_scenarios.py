"""The issue's scenarios, each in a simulated network from a fixed seed, sized for CI.

Every failed check raises through `fail`, so its message says which seed replays it.
"""

from __future__ import annotations

import random

import pytest

from kadnode.sim.links import LinkModel
from kadnode.sim.network import SimNetwork
from kadnode.sim.scenarios import build, check, find_node, grow, run_lookups
from tests.test_sim_items import get, make_items, put


def test_bootstrap_converges() -> None:
    """Grown in waves, every node has a table, is known to others, and finds its own neighbours."""
    net = build(seed=401, size=400)
    live = net.live_nodes()
    known: set[int] = set()
    for node in live:
        table = node.core.routing_table
        check(net, len(table) >= net.settings.k, f"{node.addr} has only {len(table)} nodes in its table")
        known.update(e.id for e in table.entries())
    unknown = [n.addr for n in live if n.core.node_id not in known]
    check(net, not unknown, f"{len(unknown)} nodes are in nobody's table: {unknown[:5]}")
    # Each node's lookup of its own ID (what a joining node does) finds its true neighbours.
    stats = run_lookups(net, 40, random.Random(1))
    check(net, stats.exact == stats.total, f"{stats.total - stats.exact} of {stats.total} lookups inexact")


def test_lookups_agree_with_brute_force() -> None:
    net = build(seed=402, size=800)
    stats = run_lookups(net, 100, random.Random(2))
    check(net, stats.exact == stats.total,
          f"{stats.total - stats.exact} of {stats.total} lookups missed a true closest node "
          f"(mean overlap {stats.mean_overlap:.3f})")
    # Kademlia's O(log n): at 800 nodes a lookup needs few referral hops and requests.
    check(net, max(stats.hops) <= 5, f"a lookup took {max(stats.hops)} hops")
    check(net, sum(stats.queried) / stats.total <= 30, f"{sum(stats.queried) / stats.total:.1f} requests per lookup")


# (loss, minimum mean overlap, minimum exact share, minimum mean nodes returned). A request and its
# reply both arrive with probability (1 - loss)^2 (0.81 at 10%, 0.49 at 30%); a lookup retries a slow
# node among its k closest once, which lifts that to 0.96 and 0.74 for the nodes that matter. Seeds
# 403/404 measure an overlap of 0.971 / 0.740, 80% / 12% exact, and 8 / 7.97 nodes returned per
# lookup (at 30% loss a few lookups run out of answering candidates). The thresholds sit just below;
# without the retry the overlap was 0.785 / 0.458 and 12% / 0% exact.
LOSS_CASES = [(0.10, 0.95, 0.60, 8.0), (0.30, 0.70, 0.08, 7.5)]
"""At 10% loss, exact lookups over seeds 403, 410-413 (60 lookups each): 0.73 0.70 0.72 0.70 0.72 (mean
0.714) with liveness gossip on, 0.80 0.72 0.78 0.78 0.63 (mean 0.742) with it off; mean overlap 0.95-0.96
either way. The gap is smaller than the spread between seeds; a lookup that loses both tries at one of
the k closest gives it up, gossip or not."""


@pytest.mark.parametrize(("loss", "min_overlap", "min_exact", "min_returned"), LOSS_CASES,
                         ids=["loss10", "loss30"])
def test_lookups_under_loss(loss: float, min_overlap: float, min_exact: float, min_returned: float) -> None:
    seed = 403 if loss < 0.2 else 404
    net = build(seed=seed, size=300)
    net.set_links(LinkModel(net.links.median, net.links.spread, net.links.jitter, loss))
    lost, sent = net.lost, net.sent
    stats = run_lookups(net, 60, random.Random(3))
    lost, sent = net.lost - lost, net.sent - sent
    check(net, stats.mean_overlap >= min_overlap, f"mean overlap {stats.mean_overlap:.3f} < {min_overlap}")
    check(net, stats.exact_ratio >= min_exact, f"exact {stats.exact_ratio:.3f} < {min_exact}")
    returned = sum(stats.returned) / stats.total
    check(net, returned >= min_returned, f"lookups returned {returned:.2f} nodes on average < {min_returned}")
    check(net, lost > 0.8 * loss * sent, f"only {lost} of {sent} datagrams lost")


def test_partition_and_heal() -> None:
    """Split in two halves: lookups stay on their side and, once the tables have caught up, find
    their side's true closest; after healing they find the true closest of the whole network.

    Measured with this seed: in the first minutes a lookup finds ~0.83 of its side's closest (its
    referrals still name unreachable nodes, which time out); exact from the bucket refresh (15 min)
    on; exact again within a minute of healing (the other side's entries were failing, not evicted).
    """
    net = build(seed=405, size=300)
    rng = random.Random(5)
    live = net.live_nodes()
    rng.shuffle(live)
    sides = [live[: len(live) // 2], live[len(live) // 2:]]
    net.partition([{n.addr for n in side} for side in sides])
    net.run_until(net.now + 60)
    for side in sides:
        stats = run_lookups(net, 20, rng, origins=side, among=side)
        check(net, stats.mean_overlap >= 0.7,
              f"right after the partition, lookups found {stats.mean_overlap:.3f} of their side's closest")
    net.run_until(net.now + 20 * 60)
    for side in sides:
        members = {n.core.node_id for n in side}
        stats = run_lookups(net, 20, rng, origins=side, among=side)
        check(net, stats.exact == stats.total,
              f"20 min into the partition, {stats.total - stats.exact} lookups missed their side's closest")
        strays = [n.id for n in _results(net, side, rng, 10) if n.id not in members]
        check(net, not strays, f"a lookup returned {len(strays)} nodes across the partition")
    net.heal()
    net.run_until(net.now + 5 * 60)
    stats = run_lookups(net, 40, rng)
    check(net, stats.exact == stats.total,
          f"after heal, {stats.total - stats.exact} of {stats.total} lookups missed nodes of the other side")


def _results(net: SimNetwork, side: list, rng: random.Random, count: int) -> list:  # type: ignore[type-arg]
    found = []
    for _ in range(count):
        found += find_node(net, rng.choice(side), rng.getrandbits(160)).closest
    return found


def test_items_survive_churn_with_restarts_and_leaves() -> None:
    """Items put; then 20% crash for good, 10% restart with their state, 10% restart as new nodes,
    10% leave gracefully and as many new nodes join. After one republish interval every item is
    found, at its latest version, from anywhere."""
    net = build(seed=406, size=200)
    rng = random.Random(6)
    items = make_items(rng, 20)
    for item in items:
        check(net, put(net, rng.choice(net.live_nodes()).addr, item).stored_at > 0, "a put stored nowhere")
    live = net.live_nodes()
    rng.shuffle(live)
    fifth, tenth = len(live) // 5, len(live) // 10
    crashed, warm, cold, leaving = (live[:fifth], live[fifth:fifth + tenth],
                                    live[fifth + tenth:fifth + 2 * tenth], live[fifth + 2 * tenth:fifth + 3 * tenth])
    for node in crashed + warm + cold:
        net.crash(node.addr)
    for node in leaving:
        net.leave(node.addr)
    net.run_until(net.now + 60)
    check(net, all(not n.alive for n in leaving), "a leaving node is still running after a minute")
    for node in warm:
        restarted = net.restart(node.addr, keep_state=True)
        check(net, restarted.core.node_id == node.core.node_id, "a warm restart changed the node ID")
    for node in cold:
        net.restart(node.addr, keep_state=False)
    grow(net, len(live))
    net.run_until(net.now + net.settings.republish_interval + 5 * 60)
    missing = [item.target.hex() for item in items
               if get(net, rng.choice(net.live_nodes()).addr, item).item != item]
    check(net, not missing, f"{len(missing)} of {len(items)} items lost: {missing[:3]}")
