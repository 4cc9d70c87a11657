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


def test_objective_table_pairs_sum_and_max_at_each_budget_and_bolds_the_better():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
    import objective_table  # noqa: E402

    def rec(method, psnr, fd=0.0, speed=2.0):
        return {"method": method, "psnr": psnr, "fd_vs_baseline_pct": fd, "ideal_speedup": speed}

    run_max = {"records": [rec("baseline", None), rec("schedule-cache+f1:budget=0.5", 34.7),
                           rec("schedule-cache+f1+max:budget=0.5,objective=max", 32.7, 1.6),
                           rec("schedule-cache+f1+verify:budget=0.5,verify=0.13", 30.0)]}
    run_sum = {"records": [rec("schedule-cache+f1:budget=0.5", 99.0), rec("schedule-cache+fpc:budget=0.5", 34.9)]}
    lines = objective_table.table([run_max, run_sum]).splitlines()
    assert len(lines) == 3  # the verify line is not a sum/max pair; the first file's f1 record wins
    assert lines[2] == "| 0.5 | 2.00 | **34.7 (+0.0%)** | 32.7 (+1.6%) | **34.9 (+0.0%)** | - |"
