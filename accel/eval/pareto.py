"""The speed-quality Pareto front, one algorithm for `accel bench`'s plot and report, `accel tune`'s
search and the caching benchmark's curves.

An item is on the front when no other item is at least as fast and at least as good and better in
one of the two. Both keys are "higher is better" (pass ``lambda r: -r["fd"]`` for a lower-is-better
quality); items whose speed or quality is None take no part. Equal points are all kept (neither
dominates the other).
"""

from __future__ import annotations

import math
from typing import Callable, Iterable, TypeVar

T = TypeVar("T")


def pareto_front(items: Iterable[T], speed: Callable[[T], float | None],
                 quality: Callable[[T], float | None]) -> list[T]:
    """The items on the front, by increasing speed (ties in input order).

    >>> pareto_front([(2, 30), (1.5, 28), (1, 35)], lambda p: p[0], lambda p: p[1])
    [(1, 35), (2, 30)]
    """
    pts = [(s, q, i, x) for i, x in enumerate(items)
           if (s := speed(x)) is not None and (q := quality(x)) is not None]
    pts.sort(key=lambda p: (-p[0], -p[1], p[2]))  # fastest first
    out: list[tuple] = []
    best = -math.inf
    for p in pts:  # keep a point only if it has more quality than every faster one (or equals a kept one)
        if p[1] > best or (out and p[:2] == out[-1][:2]):
            out.append(p)
            best = max(best, p[1])
    out.sort(key=lambda p: (p[0], p[2]))
    return [p[3] for p in out]
