"""`schedule-cache`: the best set of steps to compute for a budget, from a calibration.

Like `interval-cache` it computes whole steps and reuses (or forecasts) the whole-stack
offset Δ in between, but *which* steps it computes comes from a calibration of the user's
own model and sampler (`schedule.py`): `calibrate_schedule(pipe, num_inference_steps=N,
...)` runs the pipeline on its own 8 calibration images (1 + (N-1) calls) and saves the
predicted error of every reuse and of every order-1 forecast to the cache directory
(`$ACCEL_CACHE_DIR/schedules`), keyed by model, scheduler and step count. Every call then
computes the `budget` steps with the least predicted error of what it will do (exact DP:
over reuse errors with `forecast=0`, over forecast errors otherwise). `schedule=FILE` names
a saved calibration instead: it is checked completely when the config is made (finite,
non-negative matrices of the right shapes) and against the model and sampler at `apply`;
the step count is checked at a call's first step, before any block runs (`prepare`, which
`accel bench` calls before measuring, makes that check and stops the call there).
Needs a pipeline: the step count comes from its scheduler.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..api import apply
from ..bounds import MAX_CALIBRATION_IMAGES, check_images, check_steps
from ..config import MethodConfig, Target, check_choice, register_method
from ..context import StepInfo, tensor_bytes
from ..errors import AccelError, InputError, SettingError, UnsupportedMethodError, one_line
from ..families import transformers_of
from .forecast import Forecast, check_forecast
from ._runs import BranchState, Plan, Run, RunCache
from .verify import check_verify
from ..fingerprints import model_fingerprint, scheduler_fingerprint
from .schedule import (
    OBJECTIVES, CalibrationKey, best_schedule, cache_dir, can_resample, check_key, forecast_errors, forecast_matrix,
    read_calibration, resample, reuse_errors, save_calibration, sensitivity_errors,
)

_RECORD_ELEMENTS = 1 << 14  # per image row: a strided sample of Δ bounds calibration memory


def computed_step_count(budget: int | float, steps: int) -> int:
    """Steps a `budget` computes in a call of `steps`: an int is a count, a fraction of the steps rounds half
    up; at least 1, at most all."""
    return max(1, min(steps, budget if isinstance(budget, int) else int(budget * steps + 0.5)))


@register_method("schedule-cache")
@dataclass(frozen=True)
class ScheduleCacheConfig(MethodConfig):
    """`schedule-cache`: compute the `budget` steps a calibration of this model and sampler says matter most.

    Example::

        import accel

        pipe = accel.default_pipeline()
        accel.calibrate_schedule(pipe, num_inference_steps=20, progress=False)  # once per model, sampler, steps
        with accel.apply(pipe, accel.ScheduleCacheConfig(budget=0.4)) as handle:
            images = pipe(class_labels=[3, 7], num_inference_steps=20).images
            print(handle.stats()["total"])  # 8 of 20 steps computed

    budget: steps to compute; int = count, float = fraction of the step count in (0, 1]
        (0.4 of 20 steps = 8 computed: 2.5x fewer block evaluations).
    schedule: a calibration JSON; None = the cache directory's entry for this model, scheduler
        and step count (made by `calibrate_schedule`, or by `accel bench` before it measures).
    forecast: the Δ forecaster (0 = reuse, 1, 2, "exp", "pc": forecast.py); with any but 0 the
        schedule is the DP over the calibrated order-1 forecast errors.
    objective: what the schedule's DP minimises over the skipped steps' predicted errors: "sum" (their
        total, as MagCache accumulates) or "max" (the worst one, LeMiCa's minimax; ties by the total). Default 0: at budget 0.4
        on the default model, 1 is better at 20 DPM++ steps (32.7 vs 31.1 dB, 200 images) but
        worse at 8-15 (23.6 vs 27.2 dB at 15) and within about 1.5 dB either way at 30, depending
        on the calibration (16 images, benchmarks/forecast_steps.py; before the forecast DP). At 50
        steps use 1: budget 33/25/20 gave 44.4/41.2/39.0 dB against 43.3/39.5/35.4 without
        forecast, and 40.9/41.0/39.3 with the reuse DP and no horizon cap as before (8-image
        calibration, 10 images; benchmarks/schedule_calibration.py variants).
    verify: verify-then-reuse per sample (`verify.py`): on each step the schedule reuses, block 0 runs and
        the batch rows whose block-0 residual changed by more than this relative L1 amount since the last
        computed step compute the remaining blocks (alone); the others reuse. None (default) = off.
    """

    budget: int | float = 0.4
    schedule: str | None = None
    forecast: Forecast = 0
    objective: str = "sum"
    verify: float | None = None

    kind = "cache"
    tunable = {"budget": (0.7, 0.5, 0.4, 0.3, 0.25, 0.2), "forecast": (0, 1)}

    def validate(self) -> None:
        b = self.budget
        count = isinstance(b, int) and not isinstance(b, bool) and b >= 1
        fraction = isinstance(b, float) and math.isfinite(b) and 0 < b <= 1
        if not (count or fraction):
            raise ValueError(f"budget must be a step count >= 1 or a fraction in (0, 1], got {b!r}")
        check_forecast(self.forecast)
        check_choice("objective", self.objective, OBJECTIVES)
        check_verify(self.verify)
        if self.schedule is not None:
            if not isinstance(self.schedule, (str, os.PathLike)):  # nested data in place of a file: no repr of it
                raise ValueError(f"schedule= must be the path of a calibration JSON file (from calibrate_schedule), "
                                 f"got a {type(self.schedule).__name__}")
            if not Path(self.schedule).is_file():
                raise ValueError(f"schedule={self.schedule!r}: no such calibration file")
            doc = read_calibration(Path(self.schedule))  # the whole file, before any work
            if self.forecast:
                forecast_matrix(doc, Path(self.schedule))

    def install(self, target: Target) -> "ScheduleCache":
        _require_pipeline(target)
        names = [n for n, _ in transformers_of(target.pipeline)]
        if self.schedule is not None and len(names) > 1:  # a calibration file is keyed by one model
            raise UnsupportedMethodError(
                f"schedule-cache:schedule=FILE is not available for {type(target.pipeline).__name__} calling "
                f"{len(names)} transformers ({', '.join(names)}): a calibration file covers one transformer; "
                "leave out schedule= and each one is calibrated into the cache directory")
        cache = ScheduleCache(target, self)
        if self.schedule is not None:  # model and sampler now; the step count at the call's first step
            key = CalibrationKey(cache._model_key, scheduler_fingerprint(target.pipeline.scheduler), 0)
            try:
                check_key(read_calibration(Path(self.schedule)), Path(self.schedule), key, ("model", "scheduler"))
            except ValueError:
                cache.remove()
                raise
        return cache

    def prepare(self, pipe: Any, run: Callable[[], Any]) -> None:
        """Calibrate for the step count `run()` samples with, unless a calibration exists; with
        `schedule=FILE`, check the file against that step count (the call stops at its first step)."""
        if self.schedule is None:
            calibrate_schedule(pipe, run, reuse_existing=True)
            return
        with apply(pipe, _KeyCheckConfig(self.schedule, self.forecast)):
            try:
                run()
            except _Checked:
                pass


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
        self.store_plan, self.skip_plan = self.whole_stack_plans(getattr(config, "verify", None))
        self._call_setup: int | None = None
        self._computed: frozenset[int] = frozenset()
        self.key: CalibrationKey | None = None
        self.calibration_file: Path | None = None
        self.resampled_from: int | None = None  # the calibration's step count when it was resampled
        self._timesteps: list[float] | None = None

    def computed(self, key: CalibrationKey, timesteps: list[float] | None = None) -> frozenset[int]:
        """The steps to compute for this call: from the calibration at its step count, or else one made at
        more steps of the same model and sampler, resampled at the executed `timesteps` (`resample`)."""
        path = Path(self.config.schedule) if self.config.schedule else cache_dir() / key.filename()
        doc = None
        if path.is_file():
            doc = read_calibration(path)
            check_key(doc, path, key, ("model", "scheduler"))
            if not _serves(doc, key, timesteps):
                if self.config.schedule:
                    check_key(doc, path, key)  # says the step counts differ
                    raise ValueError(f"schedule file {path} was calibrated at other timesteps than this call runs "
                                     "and cannot be resampled at them; calibrate at this call's steps (and strength)")
                doc = None  # the cache directory's entry for this step count is of another schedule (img2img)
        if doc is None and not self.config.schedule:
            path, doc = self._donor(key, timesteps)
        total = self.tracker.schedule_steps
        if doc is None and total and key.steps < total:
            raise ValueError(
                f"schedule-cache: no calibration covers this call's partial schedule (its last {key.steps} of "
                f"{total} steps: img2img / inpaint strength) in {path.parent}; run "
                "accel.caching.calibrate_schedule(pipe, lambda: pipe(...)) once with this sampler at "
                f"{total} steps or more (it serves the partial schedules), or on a call with this strength, "
                "or pass schedule=FILE")
        if doc is None:
            raise ValueError(
                f"schedule-cache: no calibration for this model and sampler at {key.steps} steps in "
                f"{path.parent}. Run accel.caching.calibrate_schedule(pipe, lambda: pipe(...)) once with "
                "this sampler and step count, or at more steps (it then serves fewer: another step count, "
                "img2img's partial schedule); accel bench does it for you; or pass schedule=FILE"
            )
        self.calibration_file = path
        b = self.config.budget
        count = computed_step_count(b, key.steps)
        if count >= key.steps:
            self._warn(f"budget {b} computes all {key.steps} steps: nothing reused, no speedup; use a budget "
                       f"below {key.steps} steps (or a fraction below 1)")
        objective = self.config.objective
        # the DP predicts the error of what this cache does: reuse, or the (capped) order-1 forecast
        if doc["steps"] == key.steps and (timesteps is None or "timesteps" not in doc
                                          or _same(doc["timesteps"], timesteps)):
            self.resampled_from = None
            forecast = forecast_matrix(doc, path) if self.forecast else None
            return frozenset(best_schedule(doc["errors"], count, forecast, objective))
        if self.forecast:
            forecast_matrix(doc, path)  # says when the file has no forecast errors
        errors, forecast = resample(doc, timesteps, bool(self.forecast))
        self.resampled_from = doc["steps"]
        return frozenset(best_schedule(errors, count, forecast, objective))

    def _donor(self, key: CalibrationKey, timesteps: list[float] | None) -> tuple[Path, dict | None]:
        """The cache directory's calibration of this model and sampler with the most steps that covers the
        executed timesteps, or (the exact path, None) when there is none."""
        exact = cache_dir() / key.filename()
        if not timesteps:
            return exact, None
        best: tuple[Path, dict] | None = None
        for candidate in sorted(cache_dir().glob(key.pattern())):
            try:
                doc = read_calibration(candidate)
                check_key(doc, candidate, key, ("model", "scheduler"))
            except ValueError:
                continue  # another key's file, or a broken one: never this call's
            if can_resample(doc, timesteps) and (best is None or doc["steps"] > best[1]["steps"]):
                best = (candidate, doc)
        return best if best is not None else (exact, None)

    def choose(self, info: StepInfo, state: BranchState) -> Plan:
        if info.call != self._call_setup:
            steps = self.tracker.num_steps
            if steps is None:
                raise ValueError("schedule-cache: the pipeline's scheduler does not tell its step count")
            key = CalibrationKey(self._model_key, scheduler_fingerprint(self.pipeline.scheduler), steps)
            timesteps = executed_timesteps(self.pipeline.scheduler, steps)
            if key != self.key or timesteps != self._timesteps:
                self._computed = self.computed(key, timesteps)
            self._call_setup, self.key, self._timesteps = info.call, key, timesteps
        if info.step not in self._computed and self.all in state.deltas:
            return self.skip_plan
        return self.store_plan

    def stats(self) -> dict[str, Any]:
        out = super().stats()
        if self.config is not None:
            out.update(budget=self.config.budget, forecast=self.config.forecast, objective=self.config.objective)
            if getattr(self.config, "verify", None) is not None:
                out["verify"] = self.config.verify
        out["computed_steps"] = sorted(self._computed) if self.key is not None else None
        out["calibration_file"] = None if self.calibration_file is None else str(self.calibration_file)
        if self.resampled_from is not None:
            out["calibration_resampled_from_steps"] = self.resampled_from
        return out


def executed_timesteps(scheduler: Any, steps: int) -> list[float] | None:
    """The timesteps this call executes (from the scheduler's begin index: img2img starts part-way), or
    None when the scheduler does not list one per step (e.g. second-order schedulers)."""
    timesteps = getattr(scheduler, "timesteps", None)
    if timesteps is None:
        return None
    begin = getattr(scheduler, "begin_index", None)
    tail = timesteps[begin if isinstance(begin, int) else 0:]
    out = [float(t) for t in (tail.tolist() if isinstance(tail, torch.Tensor) else tail)]  # one read per call
    return out if len(out) == steps else None


def _serves(doc: dict[str, Any], key: CalibrationKey, timesteps: list[float] | None) -> bool:
    """Whether a checked calibration serves a call: made at its steps (and timesteps, when both are known),
    or resampled at its executed timesteps."""
    if doc["steps"] == key.steps and (timesteps is None or "timesteps" not in doc or _same(doc["timesteps"], timesteps)):
        return True
    return bool(timesteps) and can_resample(doc, timesteps)


def _same(a: list[float], b: list[float]) -> bool:
    return len(a) == len(b) and all(abs(x - y) <= 1e-3 * max(1.0, abs(x)) for x, y in zip(a, b))


class _Checked(Exception):
    """The schedule file matched the call's key: stop the call (`ScheduleCacheConfig.prepare`)."""


class _KeyCheck(ScheduleCache):
    def choose(self, info: StepInfo, state: BranchState) -> Plan:
        super().choose(info, state)  # loads and checks the file for this call's key
        raise _Checked


@dataclass(frozen=True)
class _KeyCheckConfig(MethodConfig):
    schedule: str
    forecast: Forecast = 0
    budget: int = 1
    objective: str = "sum"

    kind = "cache"

    def install(self, target: Target) -> _KeyCheck:
        _require_pipeline(target)
        return _KeyCheck(target, self, "accel.schedule-check")


# -- calibration --------------------------------------------------------------------------------

class _Calibrating(ScheduleCache):
    """Computes every step except `reuse_at`; records each step's (sampled) Δ of branch 0."""

    def __init__(self, target: Target, reuse_at: frozenset[int]):
        super().__init__(target, None, "accel.schedule-calibration")
        self.reuse_at = reuse_at
        self.recorded: dict[int, torch.Tensor] = {}

    def computed(self, key: CalibrationKey, timesteps: list[float] | None = None) -> frozenset[int]:
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
    images = (out.images if hasattr(out, "images") else out.frames if hasattr(out, "frames")
              else out[0] if isinstance(out, tuple) else out)
    if isinstance(images, torch.Tensor):
        return images.detach().float().cpu()
    if isinstance(images, list):
        images = np.stack([np.asarray(im, dtype=np.float32) for im in images])
    return torch.as_tensor(np.asarray(images, dtype=np.float32))


CALIBRATION_IMAGES = 8  # see calibrate_schedule
CALIBRATION_SEED = 10_000  # generators seed+i: away from the seeds people (and accel bench) measure on


def _default_run(pipe: Any, images: int, seed: int, kwargs: dict[str, Any]) -> Callable[[], Any]:
    """One call on `images` calibration inputs: class labels (or prompts) cycled, one generator per image."""
    import inspect

    params = inspect.signature(pipe.__call__).parameters
    kwargs = dict(kwargs)
    if "class_labels" in params:
        field = "class_labels"
        labels = getattr(pipe, "labels", None)
        pool = kwargs.pop(field, None) or (sorted(set(labels.values())) if isinstance(labels, dict) else None)
    elif "prompt" in params:
        field, pool = "prompt", kwargs.pop("prompt", None)
    else:
        raise ValueError(f"calibrate_schedule: {type(pipe).__name__} takes neither class_labels nor prompt; pass run=")
    if isinstance(pool, (str, int)):
        pool = [pool]
    if not pool:
        raise ValueError(f"calibrate_schedule: pass {field}=[...] (what to calibrate on) or run=")
    pool = list(pool)

    def run() -> Any:
        gens = [torch.Generator().manual_seed(seed + i) for i in range(images)]
        call = {"output_type": "np", **kwargs, field: [pool[i % len(pool)] for i in range(images)], "generator": gens}
        with torch.inference_mode():
            return pipe(**call)

    return run


def calibrate_schedule(pipe: Any, run: Callable[[], Any] | None = None, path: str | Path | None = None,
                       reuse_existing: bool = False, progress: bool = True, *, images: int = CALIBRATION_IMAGES,
                       seed: int = CALIBRATION_SEED, **call_kwargs: Any) -> Path:
    """Calibrate `schedule-cache` for `pipe`'s model and scheduler at one step count.

    The documented call, `calibrate_schedule(pipe, num_inference_steps=50, guidance_scale=2.0)`,
    makes its own inputs: `images` (default 8) images, one generator per image seeded from
    `seed` + i, class labels cycled over the pipeline's classes (or `class_labels=[...]`; a
    text pipeline needs `prompt=[...]`); every other keyword goes to each pipeline call. Why 8:
    on the default model at 50 DPM-Solver++ steps (budget 25, forecast 1, 10 images), schedules
    from two different single images gave 36.9 and 39.1 dB, from two pairs 39.2 and 41.6, from
    two sets of 4 41.9 and 42.3, from all 8 41.2 (benchmarks/schedule_calibration.py sizes): the
    spread, up to 5 dB below the best with 1-2 images, is gone from 4 on; 8 keeps a margin and
    covers more labels for twice the one-off cost. `run` instead makes one pipeline call of your
    own (fixed seeds; use >= 8 images).

    The pipeline is called 1 + (N-1) times for N steps: once computing everything (the
    reference images, the per-step offsets, the reuse and forecast errors), then once per step
    j reusing Δ_{j-1} at j alone (that step's sensitivity). Writes the calibration to `path`
    (default: the cache directory) and returns where; with `reuse_existing`, a complete
    existing cache-directory entry is kept. A pipeline calling several transformers (Wan 2.2's
    experts, each running some of the steps) gets one pipeline-level calibration, saved under
    each transformer's key in the cache directory (an expert's first step is always computed:
    it has no offset of its own to reuse yet).
    """
    from tqdm.auto import tqdm

    if path is not None:
        check_calibration_path(Path(path))  # before the calibration's pipeline calls
    if run is None:
        check_images("images", images, MAX_CALIBRATION_IMAGES)  # one pipeline batch holds them all
        _check_call(call_kwargs)
        run = _default_run(pipe, images, seed, call_kwargs)
    elif call_kwargs:
        raise ValueError(f"calibrate_schedule: pass {sorted(call_kwargs)} inside run, or leave run out")
    with apply(pipe, _CalibrationConfig()) as handle:
        caches = _calibrating(handle)
        reference = _images(_call(run))
        keys = [c.key for c in caches if c.key is not None]  # an expert that ran no step needs none
        timesteps = next((c._timesteps for c in caches if c._timesteps is not None), None)
    if not keys:
        raise ValueError("calibrate_schedule: run() made no pipeline call through this pipeline's transformer")
    if path is not None and len(keys) > 1:
        raise ValueError(f"calibrate_schedule: path= holds one transformer's calibration, and run() called "
                         f"{len(keys)}; leave path out (each is written to the cache directory)")
    targets = [Path(path) if path is not None else cache_dir() / key.filename() for key in keys]
    if reuse_existing and path is None and all(t.is_file() and _complete(t, k) for t, k in zip(targets, keys)):
        return targets[0]
    steps = keys[0].steps
    recorded = {s: d for c in caches for s, d in c.recorded.items()}  # Wan 2.2: each step ran on one expert
    deltas = [recorded[s] for s in range(steps)]
    sensitivity = [0.0]
    bar_off = None if progress else True  # None: a bar only on a terminal (quiet in logs and `--quiet` runs)
    for j in tqdm(range(1, steps), desc="calibrating schedule", disable=bar_off, unit="call"):
        with apply(pipe, _CalibrationConfig(frozenset({j}))):
            sensitivity.append(float(((_images(_call(run)) - reference) ** 2).mean()))
    reuse = reuse_errors(deltas)
    errors = sensitivity_errors(reuse, sensitivity)
    forecast = forecast_errors(deltas)
    extra = {"timesteps": timesteps} if timesteps is not None else {}  # lets it serve fewer steps (`resample`)
    for target, key in zip(targets, keys):  # the same pipeline-level errors under each transformer's key
        save_calibration(target, key, errors, images=int(reference.shape[0]), sensitivity=sensitivity,
                         reuse=reuse, forecast=forecast, **extra)
    return targets[0]


def _check_call(kwargs: dict[str, Any]) -> None:
    """The step count and guidance of the calibration call, checked before any call (0 steps fails
    inside diffusers with ZeroDivisionError; a NaN guidance would be stored under the shared key)."""
    if "num_inference_steps" in kwargs:
        check_steps("num_inference_steps", kwargs["num_inference_steps"])
    g = kwargs.get("guidance_scale")
    if g is not None and (isinstance(g, bool) or not isinstance(g, (int, float)) or not math.isfinite(g)):
        raise SettingError("guidance_scale", f"must be a finite number, got {g!r}")
    bad = next((k for k, v in kwargs.items() if isinstance(v, float) and not math.isfinite(v)), None)
    if bad is not None:  # any other non-finite number would be calibrated on too
        raise SettingError(bad, f"must be a finite number, got {kwargs[bad]!r}")


def _call(run: Callable[[], Any]) -> Any:
    """`run()`, with an error of torch / diffusers / Python inside the pipeline call as one InputError
    that says what to check."""
    try:
        return run()
    except AccelError:
        raise
    except (ValueError, TypeError, RuntimeError, ArithmeticError, IndexError, KeyError) as exc:
        raise InputError(f"calibrate_schedule: the pipeline call failed ({type(exc).__name__}: {one_line(exc)}); "
                         "check its keywords (num_inference_steps, guidance_scale, class_labels or prompt, "
                         "height, width) or your run=") from exc


def check_calibration_path(path: Path) -> None:
    """OutputError (one line) unless calibrate_schedule may write `path`: a new file in a writable folder, or a
    schedule calibration accel wrote (replaced); any other existing file is the user's and is never replaced."""
    from ..outputs import OutputError, check_file_output

    check_file_output(path, overwrite=True, setting="calibrate_schedule: path=")
    if path.exists():
        try:
            read_calibration(path)
        except ValueError:
            raise OutputError("", f"calibrate_schedule: path={path} exists and is not a schedule calibration accel "
                              "wrote; give a new file name (only accel's own calibrations are replaced)") from None


def _calibrating(handle: Any) -> list[_Calibrating]:
    """The calibration cache of every transformer the handle covers (a `PipelineHandle`: one per expert)."""
    handles = list(handle.handles.values()) if hasattr(handle, "handles") else [handle]
    return [h._installed[0][1] for h in handles]


def _complete(path: Path, key: CalibrationKey) -> bool:
    """Whether `path` is a valid calibration for `key` with forecast errors (else it is redone)."""
    try:
        doc = read_calibration(path)
        check_key(doc, path, key)
        forecast_matrix(doc, path)
    except ValueError:
        return False
    return True
