"""The bench's timing verdict on synthetic timings: a speedup from repeats that spread too much, or
one that does not match the saved compute, is marked unreliable (table '!', a note, results.json)."""

from __future__ import annotations

import pytest

from accel.eval import records, report
from accel.eval.timing import IDEAL_BOUNDS, SPREAD_LIMIT, Timing, relative_spread, timing_verdict


def T(*times: float) -> Timing:
    return Timing(list(times))


QUIET_BASE = T(2.0, 2.02, 1.98, 2.01, 1.99)


def test_relative_spread():
    assert relative_spread(T(1.0)) == 0.0
    assert relative_spread(T(1.0, 1.0, 1.0)) == 0.0
    assert relative_spread(T(1.0, 2.0, 3.0)) == pytest.approx(0.5 / 2.0)  # half IQR 0.5, median 2


def test_quiet_timings_at_the_ideal_are_ok():
    assert timing_verdict(QUIET_BASE, T(1.0, 1.01, 0.99, 1.0, 1.0), ideal=2.1) == ("ok", None)
    assert timing_verdict(QUIET_BASE, QUIET_BASE, ideal=None) == ("ok", None)  # the baseline itself


def test_spread_above_the_limit_is_unreliable():
    busy = T(1.0, 2.5, 1.2, 4.0, 1.1)  # one core taken for part of the run
    assert relative_spread(busy) > SPREAD_LIMIT
    verdict, why = timing_verdict(QUIET_BASE, busy, ideal=None)
    assert verdict == "unreliable" and "method repeats spread" in why
    verdict, why = timing_verdict(busy, T(1.0, 1.0, 1.0), ideal=None)
    assert verdict == "unreliable" and "baseline repeats spread" in why


@pytest.mark.parametrize("speedup,ok", [(2.25, False), (1.6, True), (0.85, True), (0.7, False)])
def test_achieved_over_ideal_bounds(speedup, ok):
    ideal = 1.67  # e.g. tome 2.25x on a busy machine (issue 18): faster than the saved compute allows
    base = T(2.0, 2.0, 2.0)
    other = T(*(2.0 / speedup,) * 3)
    verdict, why = timing_verdict(base, other, ideal)
    lo, hi = IDEAL_BOUNDS
    assert (lo <= speedup / ideal <= hi) == ok
    assert verdict == ("ok" if ok else "unreliable")
    assert ok or "achieved/ideal" in why


def _timed(timing: Timing):
    from accel.eval.paired import TimedMethod

    return TimedMethod(timing, None, 10, 20, counts_vary=False, flops_ratio=None)


def test_table_marks_and_notes():
    recs = [
        {"method": "baseline", "speedup": 1.0, "timing_verdict": "ok", "timing_warning": None},
        {"method": "good", "speedup": 1.9, "timing_verdict": "ok", "timing_warning": None,
         "achieved_over_ideal": 0.95},
        {"method": "busy", "speedup": 2.25, "timing_verdict": "unreliable", "timing_warning": "x",
         "achieved_over_ideal": 1.35},
    ]
    _, rows = report.table_cells(recs)
    assert rows[1][4] == "1.90" and rows[2][4] == "2.25 !"
    timed = {r["method"]: _timed(QUIET_BASE) for r in recs}
    notes = records.timing_notes(recs, timed)
    assert any("busy" in n and "quiet machine" in n and "good" not in n for n in notes)
    assert not records.timing_notes(recs[:2], timed)


@pytest.mark.parametrize("argv,cli", [
    (["/venv/bin/python", "/venv/bin/accel", "bench"], True),
    (["python", "-m", "accel.cli", "bench"], True),
    (["python", "-u", "-m", "accel.cli", "tune"], True),
    (["python", "-m", "pytest", "-q"], False),
    (["python", "train.py", "--accel"], False),
    (["python", "-c", "import accel"], False),
])
def test_cli_wait_policy_only_for_the_accel_command(argv, cli, monkeypatch):
    import sys

    from accel import _omp

    monkeypatch.delitem(sys.modules, "torch")  # as before torch loads
    env: dict = {}
    assert _omp.set_cli_wait_policy(env, argv) is cli
    assert env == ({"OMP_WAIT_POLICY": "PASSIVE"} if cli else {})
    theirs = {"OMP_WAIT_POLICY": ""}  # set by the user (even empty): left alone
    assert not _omp.set_cli_wait_policy(theirs, argv) and theirs == {"OMP_WAIT_POLICY": ""}


def test_cli_wait_policy_not_set_once_torch_is_loaded():
    from accel import _omp

    env: dict = {}
    assert not _omp.set_cli_wait_policy(env, ["python", "-m", "accel.cli"]) and env == {}
