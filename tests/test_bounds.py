"""Bounds before work (issue 28): image counts, steps, threads, devices, method lists and budgets are
refused up front, in one line naming the flag (exit 2) or as a typed `SettingError` naming the setting
(API), before anything is allocated in proportion to them; raw errors inside calibration calls are wrapped.
"""

from __future__ import annotations

import math
import os

import pytest
import torch

import accel
from accel import bounds
from accel.cli import main
from accel.errors import InputError, SettingError
from accel.testing import tiny_class_pipeline

TOO_MANY_THREADS = str((os.cpu_count() or 1) + 1)
NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")


def _refused(capsys, argv: list[str], message: str) -> str:
    """`accel ARGV` exits 2 with exactly one stderr line that holds `message`."""
    capsys.readouterr()
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse errors exit from inside parse_args
        rc = int(exc.code)
    lines = capsys.readouterr().err.strip().splitlines()
    assert rc == 2, (argv, lines)
    assert len(lines) == 1, lines
    assert message in lines[0], (message, lines[0])
    return lines[0]


CLI = [  # each was a crash, an OOM kill or a silent accept before
    (["bench", "--num-images", "1000000000"], "--num-images 1000000000 is more than the limit of 100,000"),
    (["bench", "--num-images", "60000", "--seed-sets", "2"], "--num-images 60000 x 2 seed sets"),
    (["bench", "--steps", "1000000000"], "--steps 1000000000 is more than the limit"),
    (["bench", "--repeats", "1000000000"], "--repeats 1000000000 is more than the limit"),
    (["bench", "--threads", TOO_MANY_THREADS], f"--threads {TOO_MANY_THREADS} is more than the limit"),
    (["bench", "--methods", ""], "--methods is empty"),
    (["bench", "--methods", " "], "--methods is empty"),
    (["tune", "--budget-psnr", "20", "--methods", ""], "--methods is empty"),
    (["tune", "--budget-psnr", "20", "--methods", "delta-cache,delta-cache"], "--methods lists delta-cache twice"),
    (["tune", "--budget-psnr", "-1"], "--budget-psnr must be >= 0"),
    (["tune", "--budget-psnr", "20", "--calibration-images", "1000000000"], "--calibration-images 1000000000 is"),
    (["tune", "--budget-psnr", "20", "--holdout-images", "1000000000"], "--holdout-images 1000000000 is"),
    (["tune", "--budget-psnr", "20", "--threads", TOO_MANY_THREADS], "--threads"),
    (["prune", "--keep", "2", "--out", "p", "--threads", TOO_MANY_THREADS], "--threads"),
    (["prune", "--keep", "2", "--out", "p", "--calib-images", "1000000000"], "--calib-images"),
    (["distill", "--student", "s", "--out", "d", "--threads", TOO_MANY_THREADS], "--threads"),
    (["distill", "--student", "s", "--out", "d", "--teacher-samples", "1000000000"], "--teacher-samples"),
    (["diffrate", "--flops", "0.5", "--threads", TOO_MANY_THREADS], "--threads"),
    (["diffrate", "--flops", "0.5", "--calibration-images", "1000", "--calibration-runs", "1000"],
     "--calibration-images 1000 x --calibration-runs 1000"),
]


@pytest.mark.parametrize("argv,message", CLI, ids=[" ".join(a) for a, _ in CLI])
def test_cli_bounds_one_line(capsys, tmp_path, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    _refused(capsys, argv, message)
    assert not any(tmp_path.iterdir()), "a refused command wrote something"


@NO_CUDA
def test_prune_device_cuda_on_cpu_build_is_one_line(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # was an AssertionError traceback ("Torch not compiled with CUDA enabled")
    _refused(capsys, ["prune", "--keep", "2", "--out", "p", "--device", "cuda"],
             "--device cuda: CUDA is not available on this machine")


@NO_CUDA
def test_load_model_on_a_missing_device_is_typed():
    from accel.pipelines import load_model

    with pytest.raises(SettingError, match="device cuda: CUDA is not available") as info:
        load_model("default", device="cuda")
    assert info.value.setting == "device"


def test_threads_above_the_cores_refused_by_the_library():
    from accel.eval.timing import pin_threads

    before = torch.get_num_threads()
    with pytest.raises(SettingError, match="threads .* is more than the limit") as info:
        pin_threads(bounds.cpu_count() + 1)
    assert info.value.setting == "threads" and torch.get_num_threads() == before


def test_workload_refuses_a_huge_image_count_before_building_seeds():
    from accel.eval.workload import make_workload

    pipe = tiny_class_pipeline()
    with pytest.raises(SettingError, match="num_images 1000000000 is more than the limit") as info:
        make_workload(pipe, 10**9, 0, 4)
    assert info.value.setting == "num_images"
    with pytest.raises(SettingError, match="steps must be >= 1, got 0"):
        make_workload(pipe, 2, 0, 0)
    assert len(make_workload(pipe, bounds.MAX_IMAGES, 0, 4)) == bounds.MAX_IMAGES  # the limit itself runs


def test_bench_refuses_images_the_memory_cannot_hold(monkeypatch):
    from accel.eval.bench import run_bench
    from accel.eval.methods import parse_methods

    monkeypatch.setattr(bounds, "available_memory", lambda: 1000)  # 1000 bytes free: 2 images of 8x8x1 floats need 512
    pipe = tiny_class_pipeline()
    methods = parse_methods("baseline", accel.methods())
    with pytest.raises(SettingError, match="num_images 4: the baseline images of one seed set need"):
        run_bench(pipe, methods, num_images=4, steps=1, batch_size=4, repeats=1, warmup=0, progress=False,
                  num_classes=10)
    result = run_bench(pipe, methods, num_images=2, steps=1, batch_size=2, repeats=1, warmup=0, progress=False,
                       num_classes=10)
    assert result.records[0]["num_images"] == 2


@pytest.mark.parametrize("kwargs,setting,message", [
    ({"images": 10**9}, "images", "images 1000000000 is more than the limit of 1,024"),
    ({"num_inference_steps": 0}, "num_inference_steps", "num_inference_steps must be >= 1, got 0"),
    ({"num_inference_steps": 10**9}, "num_inference_steps", "is more than the limit"),
    ({"num_inference_steps": 2, "guidance_scale": math.nan}, "guidance_scale", "must be a finite number"),
])
def test_calibrate_schedule_bounds(tmp_path, monkeypatch, kwargs, setting, message):
    monkeypatch.setenv("ACCEL_CACHE_DIR", str(tmp_path))
    with pytest.raises(SettingError, match=message) as info:
        accel.calibrate_schedule(tiny_class_pipeline(), progress=False, **kwargs)
    assert info.value.setting == setting
    assert not any(tmp_path.rglob("*.json")), "a refused calibration was saved"


def test_calibrate_schedule_wraps_a_raw_error_of_the_pipeline_call(tmp_path, monkeypatch):
    monkeypatch.setenv("ACCEL_CACHE_DIR", str(tmp_path))
    pipe = tiny_class_pipeline()
    with pytest.raises(InputError, match=r"pipeline call failed \(\w+Error: .*\); check its keywords") as info:
        accel.calibrate_schedule(pipe, lambda: pipe(class_labels=[1], num_inference_steps=2, height=-8), progress=False)
    assert info.value.__cause__ is not None  # the raw error stays attached for debugging


def test_schedule_budget_messages_and_warning(tmp_path, monkeypatch):
    for bad in (0, -1, 1.5, math.nan, True):
        with pytest.raises(ValueError, match=r"budget must be a step count >= 1 or a fraction in \(0, 1\]"):
            accel.ScheduleCacheConfig(budget=bad)
    monkeypatch.setenv("ACCEL_CACHE_DIR", str(tmp_path))
    pipe = tiny_class_pipeline()
    accel.calibrate_schedule(pipe, num_inference_steps=4, progress=False)
    for budget, warned in ((1000, True), (1.0, True), (2, False)):
        with accel.apply(pipe, accel.ScheduleCacheConfig(budget=budget)) as handle:
            pipe(class_labels=[1], num_inference_steps=4)
            section = handle.stats()["schedule-cache"]
        reused = section["total"]["blocks_reused"]
        assert (reused == 0) == warned, (budget, section)
        assert any("nothing reused" in w for w in section.get("warnings", [])) == warned, (budget, section)


def test_tune_space_refuses_empty_and_repeated_methods():
    from accel.tune.space import build_space

    registry = dict(accel.methods())
    for names, message in (([], "is empty"), ([""], "is empty"), (["delta-cache", ""], "empty name"),
                           (["delta-cache", "delta-cache"], "lists delta-cache twice")):
        with pytest.raises(SettingError, match=message):
            build_space(registry, names)
    assert build_space(registry, ["delta-cache"]).size() == build_space(registry, ["delta-cache"]).size() > 1
