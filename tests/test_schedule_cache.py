"""`schedule-cache`: exact DP schedules, calibration files keyed by model/sampler/steps, end to end."""

from __future__ import annotations

import itertools
import json
import random

import pytest
import torch

import accel
from accel.caching import ScheduleCacheConfig, calibrate_schedule
from accel.caching.schedule import (
    CalibrationKey, best_schedule, forecast_errors, load_calibration, reuse_errors, save_calibration, schedule_cost,
    sensitivity_errors, sensitivity_forecast_errors,
)
from accel.testing import pipeline_inputs, run_tiny, tiny_pipeline


def _random_errors(n: int, rng: random.Random) -> list[list[float]]:
    return [[rng.random() * (j - i) if i < j else 0.0 for j in range(n)] for i in range(n)]


@pytest.mark.parametrize("seed", range(12))
def test_dp_equals_brute_force(seed):
    rng = random.Random(seed)
    n = rng.randint(2, 8)
    errors = _random_errors(n, rng)
    for k in range(1, n + 1):
        brute = min(schedule_cost(errors, (0, *rest)) for rest in itertools.combinations(range(1, n), k - 1))
        chosen = best_schedule(errors, k)
        assert len(chosen) == k and chosen[0] == 0
        assert schedule_cost(errors, chosen) == pytest.approx(brute, abs=1e-12)


def test_budget_outside_the_steps_is_refused():
    with pytest.raises(ValueError, match="budget"):
        best_schedule(_random_errors(4, random.Random(0)), 5)
    with pytest.raises(ValueError, match="step 0"):
        schedule_cost(_random_errors(4, random.Random(0)), [1, 2])


def test_reuse_errors_are_relative_l1():
    d = [torch.ones(2, 3), 2 * torch.ones(2, 3), 4 * torch.ones(2, 3)]
    e = reuse_errors(d)
    assert e[0][1] == pytest.approx(0.5) and e[0][2] == pytest.approx(0.75) and e[1][2] == pytest.approx(0.5)
    assert e[1][0] == e[2][2] == 0.0


def test_calibration_file_for_another_key_is_refused(tmp_path):
    key = CalibrationKey("DiT:abc:def", "DDIMScheduler:123", 4)
    path = save_calibration(tmp_path / "cal.json", key, _random_errors(4, random.Random(1)), images=2)
    assert load_calibration(path, key) == json.loads(path.read_text())["errors"]
    with pytest.raises(ValueError, match="step count"):
        load_calibration(path, CalibrationKey(key.model, key.scheduler, 8))
    with pytest.raises(ValueError, match="another model"):
        load_calibration(path, CalibrationKey("DiT:abc:xyz", key.scheduler, 4))
    with pytest.raises(ValueError, match="another scheduler"):
        load_calibration(path, CalibrationKey(key.model, "DPMSolverMultistepScheduler:1", 4))


def test_a_calibration_read_before_is_not_parsed_again_until_its_bytes_change(tmp_path):
    from accel.caching.schedule import read_calibration

    key = CalibrationKey("DiT:abc:def", "DDIMScheduler:123", 4)
    path = save_calibration(tmp_path / "cal.json", key, _random_errors(4, random.Random(1)), images=2)
    first = read_calibration(path)
    assert read_calibration(path) is first  # the same checked document, not a second parse
    doc = json.loads(path.read_text())
    doc["errors"][0][1] = 0.25  # same path, other bytes: read and checked again
    path.write_text(json.dumps(doc))
    assert read_calibration(path) is not first and read_calibration(path)["errors"][0][1] == 0.25
    doc["errors"][0][1] = -1.0  # an invalid file is never served from what was read before
    path.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="finite numbers >= 0"):
        read_calibration(path)


def test_calibration_then_the_best_schedule_for_each_budget(tmp_path, monkeypatch):
    monkeypatch.setenv("ACCEL_CACHE_DIR", str(tmp_path))
    pipe = tiny_pipeline("dit", num_layers=2)
    reference = run_tiny(pipe, "dit", steps=6)
    with pytest.raises(ValueError, match="calibrate_schedule"):  # nothing calibrated yet: say how
        with accel.apply(pipe, ScheduleCacheConfig(budget=3)):
            run_tiny(pipe, "dit", steps=6)
    path = calibrate_schedule(pipe, lambda: pipe(**pipeline_inputs("dit", steps=6, seed=99)), progress=False)
    assert path.parent == tmp_path / "schedules"
    doc = json.loads(path.read_text())
    assert doc["steps"] == 6 and len(doc["sensitivity"]) == 6 and doc["sensitivity"][0] == 0.0
    assert all(v > 0 for v in doc["sensitivity"][1:])  # every single reuse changes the images
    assert doc["errors"] == sensitivity_errors(doc["reuse"], doc["sensitivity"])
    for budget in (1, 3, 6):
        with accel.apply(pipe, ScheduleCacheConfig(budget=budget)) as handle:
            out = run_tiny(pipe, "dit", steps=6)
            stats = handle.stats()
        want = best_schedule(doc["errors"], budget)
        assert stats["schedule-cache"]["computed_steps"] == want
        assert stats["total"]["block_evals"] == budget * 2  # computed steps x 2 blocks
        assert stats["schedule-cache"]["calibration_file"] == str(path)
        assert torch.equal(out, reference) == (budget == 6)
    # the saved file for 6 steps serves a 4-step call, resampled at its timesteps ...
    with accel.apply(pipe, ScheduleCacheConfig(budget=2, schedule=str(path))) as handle:
        run_tiny(pipe, "dit", steps=4)
        stats = handle.stats()["schedule-cache"]
    assert stats["calibration_resampled_from_steps"] == 6 and len(stats["computed_steps"]) == 2
    # ... but is refused for a call of more steps than it has
    with accel.apply(pipe, ScheduleCacheConfig(budget=2, schedule=str(path))):
        with pytest.raises(ValueError, match="step count"):
            run_tiny(pipe, "dit", steps=8)
    # ... and for another model already at apply, before any work
    other = tiny_pipeline("dit", num_layers=2, seed=1)
    with pytest.raises(ValueError, match="another model"):
        accel.apply(other, ScheduleCacheConfig(budget=2, schedule=str(path)))
    with accel.apply(other, ScheduleCacheConfig(budget=6)):  # nothing of the refused one is left installed
        pass
    # prepare() (what accel bench calls) keeps an existing calibration
    mtime = path.stat().st_mtime_ns
    ScheduleCacheConfig().prepare(pipe, lambda: pipe(**pipeline_inputs("dit", steps=6, seed=98)))
    assert path.stat().st_mtime_ns == mtime


def test_sensitivity_errors_scale_by_staleness_and_gap():
    reuse = [[0.0, 0.1, 0.4], [0.0, 0.0, 0.2], [0.0, 0.0, 0.0]]
    e = sensitivity_errors(reuse, [0.0, 3.0, 5.0])
    assert e[0][1] == pytest.approx(3.0) and e[1][2] == pytest.approx(5.0)
    assert e[0][2] == pytest.approx(5.0 * (0.4 / 0.2) * 2)


def test_bad_settings_name_the_field(tmp_path):
    for kwargs, field in (({"budget": 0}, "budget"), ({"budget": 1.5}, "budget"),
                          ({"schedule": str(tmp_path / "missing.json")}, "schedule"), ({"forecast": 3}, "forecast")):
        with pytest.raises(ValueError, match=field):
            ScheduleCacheConfig(**kwargs)
    from accel.testing import tiny_transformer

    with pytest.raises(ValueError, match="pipeline"):
        accel.apply(tiny_transformer("dit"), ScheduleCacheConfig())


# -- forecast-aware schedules --------------------------------------------------------------------

def _random_forecast(n: int, rng: random.Random) -> list:
    return [[[rng.random() * (j - i) if p < i < j else 0.0 for j in range(n)] for i in range(n)] for p in range(n)]


@pytest.mark.parametrize("seed", range(8))
def test_forecast_dp_equals_brute_force(seed):
    rng = random.Random(100 + seed)
    n = rng.randint(2, 8)
    errors, forecast = _random_errors(n, rng), _random_forecast(n, rng)
    for k in range(1, n + 1):
        brute = min(schedule_cost(errors, (0, *rest), forecast)
                    for rest in itertools.combinations(range(1, n), k - 1))
        chosen = best_schedule(errors, k, forecast)
        assert len(chosen) == k and chosen[0] == 0
        assert schedule_cost(errors, chosen, forecast) == pytest.approx(brute, abs=1e-12)


def test_forecast_errors_are_those_of_the_capped_linear_forecast():
    d = [s * torch.ones(2, 3) for s in (1.0, 2.0, 3.0, 4.0, 8.0)]  # linear up to step 3, then a jump
    f = forecast_errors(d)
    assert f[0][1][2] == pytest.approx(0.0) and f[0][1][3] == pytest.approx(1 / 4)  # capped at step 2's 3.0
    assert f[1][2][3] == pytest.approx(0.0) and f[0][2][4] == pytest.approx(3 / 8)  # spacing 2: 3 + 2 = 5 at step 4
    assert f[2][3][4] == pytest.approx(3 / 8) and f[1][0][3] == 0.0  # only p < i < j
    e = sensitivity_forecast_errors(f, reuse_errors(d), [0.0, 1.0, 1.0, 2.0, 1.0])
    assert e[0][1][3] == pytest.approx(2.0 / (1 / 4) * (1 / 4) * 2)  # unit x relative error x gap


# -- schedule files: checked completely before any work -----------------------------------------

def _doc(tmp_path, key, **changes):
    path = save_calibration(tmp_path / "cal.json", key, _random_errors(key.steps, random.Random(2)), images=2)
    doc = {**json.loads(path.read_text()), **changes}
    path.write_text(json.dumps(doc))
    return path


@pytest.mark.parametrize("changes, match", [
    ({"errors": [[0.0, float("nan"), 0.1, 0.2]] + [[0.0] * 4] * 3}, "non-finite number NaN at line 1"),
    ({"errors": [[0.0] * 4] * 3}, "errors must be a 4x4"),
    ({"errors": [[0.0, -1.0, 0.0, 0.0]] + [[0.0] * 4] * 3}, "finite numbers >= 0"),
    ({"steps": "4"}, "steps must be an integer"),
    ({"format": "something/1"}, "not an accel schedule calibration"),
    ({"sensitivity": [0.0, 1.0]}, "sensitivity must be a 4 array"),
])
def test_a_bad_schedule_file_is_refused_on_construction_in_one_line(tmp_path, changes, match):
    path = _doc(tmp_path, CalibrationKey("DiT:abc:def", "DDIMScheduler:123", 4), **changes)
    with pytest.raises(ValueError, match=match) as info:
        ScheduleCacheConfig(budget=2, schedule=str(path))
    assert "\n" not in str(info.value)


def test_a_file_without_forecast_errors_is_refused_for_forecast(tmp_path):
    path = _doc(tmp_path, CalibrationKey("DiT:abc:def", "DDIMScheduler:123", 4), format="accel.schedule-calibration/1")
    ScheduleCacheConfig(budget=2, schedule=str(path))  # a /1 file still serves reuse
    with pytest.raises(ValueError, match="no forecast errors"):
        ScheduleCacheConfig(budget=2, schedule=str(path), forecast=1)


def test_forecast_schedule_is_the_forecast_dp_and_steps_are_checked_before_work(tmp_path, monkeypatch):
    monkeypatch.setenv("ACCEL_CACHE_DIR", str(tmp_path))
    pipe = tiny_pipeline("dit", num_layers=2)
    path = calibrate_schedule(pipe, images=2, num_inference_steps=6, class_labels=[1, 2], progress=False)
    doc = json.loads(path.read_text())
    assert doc["images"] == 2 and len(doc["forecast"]) == 6
    forecast = sensitivity_forecast_errors(doc["forecast"], doc["reuse"], doc["sensitivity"])
    with accel.apply(pipe, ScheduleCacheConfig(budget=3, forecast=1)) as handle:
        run_tiny(pipe, "dit", steps=6)
        stats = handle.stats()
    assert stats["schedule-cache"]["computed_steps"] == best_schedule(doc["errors"], 3, forecast)
    # prepare() (accel bench, before measuring) refuses a file for a step count it cannot serve (more steps
    # than it has) at the first step, and accepts its own and fewer (resampled)
    calls = []
    pipe.transformer.register_forward_pre_hook(lambda *a: calls.append(1))
    with pytest.raises(ValueError, match="step count"):
        ScheduleCacheConfig(budget=2, schedule=str(path)).prepare(pipe, lambda: run_tiny(pipe, "dit", steps=8))
    ScheduleCacheConfig(budget=2, schedule=str(path)).prepare(pipe, lambda: run_tiny(pipe, "dit", steps=6))
    ScheduleCacheConfig(budget=2, schedule=str(path)).prepare(pipe, lambda: run_tiny(pipe, "dit", steps=4))
    assert len(calls) == 3  # each check stopped at the first transformer call


def test_the_cli_refuses_a_nan_schedule_file_before_any_work(tmp_path, capsys):
    from accel.cli import main

    bad = [[0.0, float("nan")], [0.0, 0.0]]
    path = _doc(tmp_path, CalibrationKey("DiT:abc:def", "DDIMScheduler:123", 2), errors=bad)
    out = tmp_path / "out"
    rc = main(["bench", "--methods", f"schedule-cache:schedule={path}", "--out", str(out), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and not out.exists()
    assert len(err) == 1 and "non-finite number NaN" in err[0] and str(path) in err[0]


def test_calibrate_schedule_makes_its_own_inputs():
    from accel.caching.schedule_cache import CALIBRATION_IMAGES, CALIBRATION_SEED, _default_run

    seen = {}

    class ClassPipe:
        labels = {"zero": 0, "one": 1, "two": 2}

        def __call__(self, class_labels, generator=None, num_inference_steps=50, output_type="pil"):
            seen.update(labels=class_labels, seeds=[g.initial_seed() for g in generator], steps=num_inference_steps,
                        output_type=output_type)

    _default_run(ClassPipe(), 5, CALIBRATION_SEED, {"num_inference_steps": 7})()
    assert seen == {"labels": [0, 1, 2, 0, 1], "seeds": [CALIBRATION_SEED + i for i in range(5)], "steps": 7,
                    "output_type": "np"}
    _default_run(ClassPipe(), 2, 0, {"class_labels": [9]})()
    assert seen["labels"] == [9, 9]

    class PromptPipe:
        def __call__(self, prompt, generator=None, output_type="pil"):
            seen.update(prompt=prompt)

    _default_run(PromptPipe(), 3, 0, {"prompt": ["a", "b"]})()
    assert seen["prompt"] == ["a", "b", "a"]
    with pytest.raises(ValueError, match="prompt="):
        _default_run(PromptPipe(), 3, 0, {})
    assert CALIBRATION_IMAGES == 8
