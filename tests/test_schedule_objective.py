"""schedule-cache's DP objective: the total predicted error ("sum") or the worst step's ("max",
LeMiCa's minimax), each the exact optimum (brute force) with and without forecasting."""

from __future__ import annotations

import itertools
import random

import pytest

import accel
from accel.caching.schedule import best_schedule, schedule_cost


def _errors(n: int, rng: random.Random) -> list[list[float]]:
    return [[rng.random() * (j - i) if i < j else 0.0 for j in range(n)] for i in range(n)]


def _forecast(n: int, rng: random.Random) -> list:
    return [[[rng.random() * (j - i) if p < i < j else 0.0 for j in range(n)] for i in range(n)] for p in range(n)]


def _brute(errors, k, forecast, objective):
    """(worst, total) lexicographic optimum for "max", the total for "sum"."""
    n = len(errors)
    schedules = [(0, *rest) for rest in itertools.combinations(range(1, n), k - 1)]
    if objective == "sum":
        return min(schedule_cost(errors, s, forecast) for s in schedules)
    return min((schedule_cost(errors, s, forecast, "max"), schedule_cost(errors, s, forecast)) for s in schedules)


@pytest.mark.parametrize("with_forecast", [False, True])
@pytest.mark.parametrize("seed", range(10))
def test_minimax_dp_equals_brute_force(seed, with_forecast):
    rng = random.Random(500 + seed)
    n = rng.randint(2, 8)
    errors = _errors(n, rng)
    forecast = _forecast(n, rng) if with_forecast else None
    for k in range(1, n + 1):
        chosen = best_schedule(errors, k, forecast, objective="max")
        assert len(chosen) == k and chosen[0] == 0
        worst, total = _brute(errors, k, forecast, "max")
        assert schedule_cost(errors, chosen, forecast, "max") == pytest.approx(worst, abs=1e-12)
        assert schedule_cost(errors, chosen, forecast) == pytest.approx(total, abs=1e-12)


def test_the_two_objectives_choose_differently_where_they_should():
    """4 steps, 2 computed: computing step 1 leaves one large error (2.5) for the least total (2.55);
    computing step 2 leaves two medium ones (1.4 + 1.5): "sum" takes the first, "max" the second."""
    errors = [[0.0] * 4 for _ in range(4)]
    errors[0][1], errors[0][2] = 1.4, 1.8
    errors[1][2], errors[1][3] = 0.05, 2.5
    errors[2][3] = 1.5
    assert best_schedule(errors, 2, objective="sum") == [0, 1]
    assert best_schedule(errors, 2, objective="max") == [0, 2]
    assert schedule_cost(errors, [0, 1]) == pytest.approx(2.55)
    assert schedule_cost(errors, [0, 2], objective="max") == pytest.approx(1.5)


def test_objective_is_validated_and_reported():
    with pytest.raises(ValueError, match="objective"):
        accel.ScheduleCacheConfig(objective="mean")
    with pytest.raises(ValueError, match="objective"):
        best_schedule(_errors(4, random.Random(0)), 2, objective="mean")
    assert accel.ScheduleCacheConfig(objective="max").objective == "max"
