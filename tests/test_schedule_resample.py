"""A calibration made at N steps serves calls of fewer steps (another step count, img2img's partial
schedule) by resampling at the executed timesteps."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from diffusers import DPMSolverMultistepScheduler

import accel
from accel.caching import ScheduleCacheConfig, calibrate_schedule
from accel.caching.schedule import (
    can_resample, nearest_steps, resample, sensitivity_errors, sensitivity_forecast_errors,
)
from accel.caching.schedule_cache import executed_timesteps
from accel.testing import run_tiny, tiny_pipeline


def _doc(n: int, seed: int = 0) -> dict:
    rng = random.Random(seed)
    reuse = [[rng.random() * (j - i) if i < j else 0.0 for j in range(n)] for i in range(n)]
    sens = [0.0] + [rng.random() for _ in range(n - 1)]
    forecast = [[[rng.random() if p < i < j else 0.0 for j in range(n)] for i in range(n)] for p in range(n)]
    ts = list(np.linspace(999, 0, n))
    return {"steps": n, "reuse": reuse, "sensitivity": sens, "forecast": forecast, "timesteps": ts,
            "errors": sensitivity_errors(reuse, sens)}


def test_resampling_at_the_calibrated_timesteps_is_the_calibration():
    doc = _doc(7)
    errors, forecast = resample(doc, doc["timesteps"], with_forecast=True)
    np.testing.assert_allclose(errors, doc["errors"], rtol=1e-12)
    want = sensitivity_forecast_errors(doc["forecast"], doc["reuse"], doc["sensitivity"])
    np.testing.assert_allclose(forecast, want, rtol=1e-12)


def test_resampling_picks_the_nearest_calibrated_steps_and_counts_gaps_in_the_calls_steps():
    doc = _doc(9)
    ts = doc["timesteps"][::2]  # every other calibrated timestep: calibrated steps 0, 2, 4, 6, 8
    assert nearest_steps(doc["timesteps"], ts) == [0, 2, 4, 6, 8]
    errors, _ = resample(doc, ts, with_forecast=False)
    unit = [0.0] + [doc["sensitivity"][j] / doc["reuse"][j - 1][j] for j in range(1, 9)]
    assert errors[1][3] == pytest.approx(unit[6] * doc["reuse"][2][6] * 2)  # gap 2 of the call's steps
    # a partial schedule (img2img): the tail of the calibrated range
    tail = doc["timesteps"][4:]
    assert nearest_steps(doc["timesteps"], tail) == [4, 5, 6, 7, 8] and can_resample(doc, tail)


def test_a_coarser_calibration_or_one_without_timesteps_cannot_serve():
    doc = _doc(4)
    assert not can_resample(doc, list(np.linspace(999, 0, 6)))  # more steps than calibrated
    with pytest.raises(ValueError, match="cannot serve"):
        nearest_steps(doc["timesteps"], list(np.linspace(999, 0, 6)))
    del doc["timesteps"]
    assert not can_resample(doc, [999.0, 0.0])


def test_executed_timesteps_start_at_the_begin_index():
    sched = DPMSolverMultistepScheduler()
    sched.set_timesteps(10)
    assert executed_timesteps(sched, 10) == [float(t) for t in sched.timesteps]
    sched.set_begin_index(4)
    assert executed_timesteps(sched, 6) == [float(t) for t in sched.timesteps[4:]]
    assert executed_timesteps(sched, 10) is None  # the count does not match what it lists


@torch.no_grad()
def test_a_call_of_fewer_steps_uses_the_finer_calibration_from_the_cache_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("ACCEL_CACHE_DIR", str(tmp_path))
    pipe = tiny_pipeline("dit", num_layers=2)
    calibrate_schedule(pipe, images=2, num_inference_steps=8, class_labels=[1, 2], progress=False)
    for forecast in (0, 1):
        with accel.apply(pipe, ScheduleCacheConfig(budget=3, forecast=forecast)) as handle:
            out = run_tiny(pipe, "dit", steps=5)
            stats = handle.stats()
        assert stats["schedule-cache"]["calibration_resampled_from_steps"] == 8
        assert len(stats["schedule-cache"]["computed_steps"]) == 3
        assert stats["total"]["block_evals"] == 3 * 2  # 3 computed steps x 2 blocks
        assert np.isfinite(np.asarray(out)).all()
    # at its own step count the calibration is used as made (no resampling)
    with accel.apply(pipe, ScheduleCacheConfig(budget=3)) as handle:
        run_tiny(pipe, "dit", steps=8)
        assert "calibration_resampled_from_steps" not in handle.stats()["schedule-cache"]
    # more steps than any calibration: the one-line error says how to calibrate
    with accel.apply(pipe, ScheduleCacheConfig(budget=3)):
        with pytest.raises(ValueError, match="calibrate_schedule"):
            run_tiny(pipe, "dit", steps=12)


def test_resample_table_pairs_each_setting_and_marks_the_rows_outside_half_a_db():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
    import resample_table  # noqa: E402

    def row(cal, budget, psnr):
        return {"workload": "default dpm28", "calibration": cal, "budget": budget, "forecast": 1, "psnr": psnr,
                "ideal_speedup": 1 / budget}

    doc = {"rows": [row("resampled from 50", 0.5, 37.0), row("made there", 0.5, 39.0),
                    row("resampled from 50", 0.4, 34.8), row("made there", 0.4, 35.0)]}
    lines = resample_table.table(doc).splitlines()
    assert len(lines) == 4
    assert lines[2] == "| default dpm28 (from 50) | 0.5 | 1 | 2.00 | 37.0 | 39.0 | -2.0 | **no** |"
    assert lines[3].endswith("| 34.8 | 35.0 | -0.2 | yes |")
