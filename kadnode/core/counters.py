"""Named event counters: every dropped datagram, error and request bumps one.

A plain ``collections.Counter[str]`` keeps the hot path cheap; names are dotted (``dropped.oversized``)
so that `grouped` can present them by family.
"""

from __future__ import annotations

from collections import Counter

Counters = Counter[str]


def new_counters() -> Counters:
    return Counter()


def grouped(counters: Counters) -> dict[str, dict[str, int] | int]:
    """``{"dropped.oversized": 2, "datagrams_in": 9}`` -> ``{"dropped": {"oversized": 2}, "datagrams_in": 9}``."""
    out: dict[str, dict[str, int] | int] = {}
    for name in sorted(counters):
        family, dot, rest = name.partition(".")
        if dot:
            group = out.setdefault(family, {})
            if isinstance(group, dict):
                group[rest] = counters[name]
        else:
            out[name] = counters[name]
    return out
