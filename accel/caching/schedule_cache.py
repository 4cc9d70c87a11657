"""`schedule-cache`: the best set of steps to compute for a budget, from a calibration.

Like `interval-cache` it computes whole steps and reuses the whole-stack offset Δ in
between, but *which* steps it computes comes from a calibration of the user's own model
and sampler (`schedule.py`): `calibrate_schedule(pipe, run)` runs the pipeline on a few
calibration inputs (1 + (N-1) calls for N steps) and saves the predicted error of every
reuse to the cache directory (`$ACCEL_CACHE_DIR/schedules`), keyed by model, scheduler and
step count. Every call then computes the `budget` steps with the least predicted error
(exact DP). `schedule=FILE` names a saved calibration instead; one made for another
model, scheduler or step count is refused with an error that says which differs.
`accel bench` calibrates on its own calibration images (`MethodConfig.prepare`).
Needs a pipeline: the step count comes from its scheduler.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..api import Target, apply
from ..config import MethodConfig, check_int, check_range, register_method
from ..context import StepInfo, tensor_bytes
from ._runs import BranchState, Plan, Run, RunCache, check_forecast
from .schedule import (
    CalibrationKey, best_schedule, cache_dir, load_calibration, model_fingerprint, reuse_errors,
    save_calibration, scheduler_fingerprint, sensitivity_errors,
)

_RECORD_ELEMENTS = 1 << 14  # per image row: a strided sample of Δ bounds calibration memory


@register_method("schedule-cache")
@dataclass(frozen=True)
class ScheduleCacheConfig(MethodConfig):
    """budget: steps to compute; int = count, float = fraction of the step count in (0, 1]
        (0.4 of 20 steps = 8 computed: 2.5x fewer block evaluations).
    schedule: a calibration JSON; None = the cache directory's entry for this model, scheduler
        and step count (made by `calibrate_schedule`, or by `accel bench` before it measures).
    forecast: order of the Δ forecast from the last computed steps (0 = reuse). Default 0: at
        budget 0.4 on the default model, 1 is better at 20 DPM++ steps (32.7 vs 31.1 dB, 200
        images) but worse at 8-15 (23.6 vs 27.2 dB at 15) and within about 1.5 dB either way at 30,
        depending on the calibration (16 images, benchmarks/forecast_steps.py).
    """

    budget: int | float = 0.4
    schedule: str | None = None
    forecast: int = 0

    kind = "cache"
    tunable = {"budget": (0.7, 0.5, 0.4, 0.3, 0.25, 0.2), "forecast": (0, 1)}

    def validate(self) -> None:
        if isinstance(self.budget, int) and not isinstance(self.budget, bool):
            check_int("budget", self.budget, 1)
        else:
            check_range("budget", self.budget, 0.0, 1.0, lo_open=True)
        if self.schedule is not None and not Path(self.schedule).is_file():
            raise ValueError(f"schedule={self.schedule!r}: no such calibration file")
        check_forecast(self.forecast)

    def install(self, target: Target) -> "ScheduleCache":
        _require_pipeline(target)
        return ScheduleCache(target, self)

    def prepare(self, pipe: Any, run: Callable[[], Any]) -> None:
        """Calibrate for the step count `run()` samples with, unless a calibration exists."""
        if self.schedule is None:
            calibrate_schedule(pipe, run, reuse_existing=True)


def _require_pipeline(target: Target) -> None:
    if target.pipeline is None or getattr(target.pipeline, "scheduler", None) is None:
        raise ValueError("schedule-cache needs a pipeline (its scheduler tells the step count); "
                         "apply it to the pipeline, not the bare transformer")


class ScheduleCache(RunCache):
    """Computes the steps in `computed(num_steps)`, reuses (or forecasts) Δ on the others."""

    def __init__(self, target: Target, config: ScheduleCacheConfig | None, hook_name: str = "accel.schedule-cache"):
        self.pipeline = target.pipeline
        self._model_key = model_fingerprint(target.model)
        super().__init__(target, hook_name)
        self.config = config
        self.forecast = config.forecast if config is not None else 0
        self.all: Run = (0, self.num_blocks)
        self.store_plan = Plan(self.num_blocks, store=[self.all])
        self.skip_plan = Plan(self.num_blocks, skip=[self.all])
        self._call_setup: int | None = None
        self._computed: frozenset[int] = frozenset()
        self.key: CalibrationKey | None = None
        self.calibration_file: Path | None = None

    def computed(self, key: CalibrationKey) -> frozenset[int]:
        path = Path(self.config.schedule) if self.config.schedule else cache_dir() / key.filename()
        if not self.config.schedule and not path.is_file():
            raise ValueError(
                f"schedule-cache: no calibration for this model and sampler at {key.steps} steps in "
                f"{path.parent}. Run accel.caching.calibrate_schedule(pipe, lambda: pipe(...)) once with "
                "this sampler and step count (accel bench does it for you), or pass schedule=FILE"
            )
        self.calibration_file = path
        b = self.config.budget
        count = b if isinstance(b, int) else int(b * key.steps + 0.5)
        return frozenset(best_schedule(load_calibration(path, key), max(1, min(key.steps, count))))

    def choose(self, info: StepInfo, state: BranchState) -> Plan:
        if info.call != self._call_setup:
            steps = self.tracker.num_steps
            if steps is None:
                raise ValueError("schedule-cache: the pipeline's scheduler does not tell its step count")
            key = CalibrationKey(self._model_key, scheduler_fingerprint(self.pipeline.scheduler), steps)
            if key != self.key:
                self._computed = self.computed(key)
            self._call_setup, self.key = info.call, key
        if info.step not in self._computed and self.all in state.deltas:
            return self.skip_plan
        return self.store_plan

    def stats(self) -> dict[str, Any]:
        out = super().stats()
        if self.config is not None:
            out.update(budget=self.config.budget, forecast=self.config.forecast)
        out["computed_steps"] = sorted(self._computed) if self.key is not None else None
        out["calibration_file"] = None if self.calibration_file is None else str(self.calibration_file)
        return out


# -- calibration --------------------------------------------------------------------------------

class _Calibrating(ScheduleCache):
    """Computes every step except `reuse_at`; records each step's (sampled) Δ of branch 0."""

    def __init__(self, target: Target, reuse_at: frozenset[int]):
        super().__init__(target, None, "accel.schedule-calibration")
        self.reuse_at = reuse_at
        self.recorded: dict[int, torch.Tensor] = {}

    def computed(self, key: CalibrationKey) -> frozenset[int]:
        return frozenset(range(key.steps)) - self.reuse_at

    def finished(self, run: Run, dh: torch.Tensor, de: torch.Tensor | None) -> None:
        super().finished(run, dh, de)
        if self.info.branch == 0 and not self.reuse_at:
            rows = dh.reshape(dh.shape[0], -1)
            stride = max(1, rows.shape[1] // _RECORD_ELEMENTS)
            self.recorded[self.info.step] = rows[:, ::stride].float().clone()

    def held_bytes(self) -> int:
        return super().held_bytes() + tensor_bytes(list(self.recorded.values()))


@dataclass(frozen=True)
class _CalibrationConfig(MethodConfig):
    reuse_at: frozenset = field(default_factory=frozenset)

    kind = "cache"

    def install(self, target: Target) -> _Calibrating:
        _require_pipeline(target)
        return _Calibrating(target, self.reuse_at)


def _images(out: Any) -> torch.Tensor:
    """A pipeline output's images as one float tensor (pt / np / PIL outputs)."""
    images = out.images if hasattr(out, "images") else out[0] if isinstance(out, tuple) else out
    if isinstance(images, torch.Tensor):
        return images.detach().float().cpu()
    if isinstance(images, list):
        images = np.stack([np.asarray(im, dtype=np.float32) for im in images])
    return torch.as_tensor(np.asarray(images, dtype=np.float32))


def calibrate_schedule(pipe: Any, run: Callable[[], Any], path: str | Path | None = None,
                       reuse_existing: bool = False, progress: bool = True) -> Path:
    """Calibrate `schedule-cache` for `pipe`'s model and scheduler at the step count `run()` uses.

    `run` makes one pipeline call on a few calibration inputs (fixed seeds), e.g.
    `lambda: pipe(class_labels=[1, 3], num_inference_steps=20, generator=..., output_type="np")`.
    It is called 1 + (N-1) times: once computing everything (the reference images and the
    per-step offsets), then once per step j reusing Δ_{j-1} at j alone (that step's
    sensitivity). Writes the calibration to `path` (default: the cache directory) and
    returns where; with `reuse_existing`, an existing cache-directory entry is kept.
    """
    from tqdm.auto import tqdm

    with apply(pipe, _CalibrationConfig()) as handle:
        cache: _Calibrating = handle._installed[0][1]
        reference = _images(run())
        key = cache.key
    if key is None:
        raise ValueError("calibrate_schedule: run() made no pipeline call through this pipeline's transformer")
    target = Path(path) if path is not None else cache_dir() / key.filename()
    if reuse_existing and path is None and target.is_file():
        return target
    steps = key.steps
    deltas = [cache.recorded[s] for s in range(steps)]
    sensitivity = [0.0]
    bar_off = None if progress else True  # None: a bar only on a terminal (quiet in logs and `--quiet` runs)
    for j in tqdm(range(1, steps), desc="calibrating schedule", disable=bar_off, unit="call"):
        with apply(pipe, _CalibrationConfig(frozenset({j}))):
            sensitivity.append(float(((_images(run()) - reference) ** 2).mean()))
    reuse = reuse_errors(deltas)
    errors = sensitivity_errors(reuse, sensitivity)
    return save_calibration(target, key, errors, images=int(reference.shape[0]),
                            sensitivity=sensitivity, reuse=reuse)
