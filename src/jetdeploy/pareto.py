"""The Pareto front of (accuracy, cost) points: the ones no other point beats on both."""

from __future__ import annotations

from typing import Callable, Sequence, TypeVar

T = TypeVar("T")


def front(points: Sequence[T], accuracy: Callable[[T], float], cost: Callable[[T], float | None]) -> list[T]:
    """Points not beaten by another with >= accuracy and <= cost, one of them strictly (ties kept); points without
    a cost are left out. Sorted by cost. For a figure where more is better (throughput), pass its negative."""
    have = [p for p in points if cost(p) is not None]
    out = []
    for p in have:
        a, c = accuracy(p), cost(p)
        beaten = any(q is not p and accuracy(q) >= a and cost(q) <= c and (accuracy(q) > a or cost(q) < c)
                     for q in have)
        if not beaten:
            out.append(p)
    return sorted(out, key=cost)
