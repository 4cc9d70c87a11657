"""accel.eval.pareto: the one speed-quality front (bench plot and report, tune, caching curves)."""

from __future__ import annotations

import random

from accel.eval.pareto import pareto_front


def _brute(pts):
    def dominated(p):
        return any(q[0] >= p[0] and q[1] >= p[1] and (q[0] > p[0] or q[1] > p[1]) for q in pts)
    return sorted((p for p in pts if not dominated(p)), key=lambda p: p[0])


def test_front_equals_the_definition_on_random_points_with_ties():
    rng = random.Random(0)
    for _ in range(200):
        pts = [(rng.choice([1.0, 1.5, 2.0, 3.0]), rng.choice([20.0, 25.0, 30.0])) for _ in range(rng.randint(1, 8))]
        got = pareto_front(pts, lambda p: p[0], lambda p: p[1])
        assert sorted(got) == sorted(_brute(pts))  # equal points are all kept
        assert [p[0] for p in got] == sorted(p[0] for p in got)


def test_missing_values_take_no_part():
    rows = [{"s": 2.0, "q": None}, {"s": None, "q": 40.0}, {"s": 1.0, "q": 30.0}]
    assert pareto_front(rows, lambda r: r["s"], lambda r: r["q"]) == [rows[2]]
