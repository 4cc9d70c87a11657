"""Calibrated step schedules: which steps to compute for a budget of computed steps.

A calibration (`schedule_cache.calibrate_schedule`, a few images) first computes every
step and records each step's whole-stack offset Δ_s; `reuse_errors` gives R[i][j] (i < j),
the relative L1 change from Δ_i to Δ_j. Then, for each step j, one more call reuses Δ_{j-1}
at step j alone and measures the final images' MSE: the step's sensitivity. How much the
offset changes is a poor guide on its own (on the default model the early steps change
it least but matter most: errors made there steer the whole trajectory), so
`sensitivity_errors` turns both into E[i][j], the predicted image error of using Δ_i at
step j. A schedule computes a set C of steps (step 0 always) and reuses the last
computed Δ on the others; its predicted error is

    cost(C) = Σ_{j ∉ C} E[last computed step before j][j]

(MagCache accumulates per-step errors the same way). `best_schedule` finds the C of a
given size with the least cost exactly, by dynamic programming over (steps chosen, last
computed step) in O(K·N²); `tests/` checks it against brute force.

With `forecast` on, a skipped step j after computed steps p < i gets the order-1 forecast
of Δ from (p, Δ_p), (i, Δ_i), extrapolated no farther than i + (i − p) (`forecast.forecast_step`),
not Δ_i: `forecast_errors` measures that forecast's relative error F[p][i][j] on the same
calibration, and the DP then runs over (last two computed steps) in O(K·N³) (numpy), so the
schedule minimises the predicted error of what the cache will actually do.

Calibrations are saved as JSON keyed by model, scheduler and step count
(`CalibrationKey`); one for another key is refused with an error that says what differs.
A calibration records its timesteps, so one made at N steps also serves a call that runs
fewer (another step count, or img2img's partial schedule): `resample` maps each executed
timestep to the nearest calibrated one and rebuilds E (and F) from the calibrated reuse errors,
sensitivities and forecast errors at those steps, the gap counted in the call's own steps.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import OrderedDict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..outputs import cache_dir as _cache_root, write_text_atomic
from ..readers import MiB, read_json
from .forecast import forecast_step

MAX_SCHEDULE_BYTES = 128 * MiB

FORMAT = "accel.schedule-calibration/2"
FORMATS = ("accel.schedule-calibration/1", FORMAT)  # /1: no forecast errors
_FORECAST_ELEMENTS = 8192  # per step: a strided sample of Δ bounds the O(N³) forecast errors


def reuse_errors(deltas: Sequence[torch.Tensor]) -> list[list[float]]:
    """E[i][j] = mean|Δ_j − Δ_i| / mean|Δ_j| for i < j (0 elsewhere); deltas[s] is step s's Δ."""
    n = len(deltas)
    flat = [d.detach().double().flatten() for d in deltas]
    errors = [[0.0] * n for _ in range(n)]
    for j in range(n):
        scale = flat[j].abs().mean().clamp_min(1e-12)
        for i in range(j):
            errors[i][j] = float((flat[j] - flat[i]).abs().mean() / scale)
    return errors


def sensitivity_errors(reuse: Sequence[Sequence[float]], sensitivity: Sequence[float]) -> list[list[float]]:
    """Predicted final-image error of using step i's Δ at step j, from measured sensitivities.

    sensitivity[j] is the final-image MSE when step j alone reuses step j-1's Δ. Reusing an
    older Δ scales that by how much staler it is (reuse[i][j] / reuse[j-1][j]) and by the
    gap j - i, since an error made earlier also steers the steps in between (without the
    gap the sum under-counts long reuse runs and the DP picks them).
    """
    n = len(reuse)
    out = [[0.0] * n for _ in range(n)]
    for j in range(1, n):
        unit = sensitivity[j] / max(reuse[j - 1][j], 1e-12)
        for i in range(j):
            out[i][j] = unit * reuse[i][j] * (j - i)
    return out


def forecast_errors(deltas: Sequence[torch.Tensor]) -> list[list[list[float]]]:
    """F[p][i][j] = mean|Δ_j − Δ̂| / mean|Δ_j| for p < i < j, Δ̂ the order-1 forecast from steps p and i
    at `forecast_step` (0 elsewhere); computed on a strided sample of each Δ."""
    n = len(deltas)
    flat = torch.stack([d.detach().double().flatten() for d in deltas]) if n else torch.zeros(0, 1)
    flat = flat[:, :: max(1, flat.shape[1] // _FORECAST_ELEMENTS)]
    scale = flat.abs().mean(1).clamp_min(1e-12)
    out = np.zeros((n, n, n))
    for i in range(1, n - 1):
        later = flat[i + 1:]
        for p in range(i):
            slope = (flat[i] - flat[p]) / (i - p)
            reach = torch.tensor([forecast_step([p, i], j) - i for j in range(i + 1, n)], dtype=flat.dtype)
            err = (later - flat[i] - reach[:, None] * slope).abs().mean(1) / scale[i + 1:]
            out[p, i, i + 1:] = err.numpy()
    return out.tolist()


def sensitivity_forecast_errors(forecast: Sequence, reuse: Sequence[Sequence[float]],
                                sensitivity: Sequence[float]) -> np.ndarray:
    """Predicted final-image error of forecasting step j from computed steps p < i (as
    `sensitivity_errors` does for reuse: the step's sensitivity per unit of relative Δ error,
    times the gap j - i)."""
    f = np.asarray(forecast, dtype=np.float64)
    n = f.shape[0]
    unit = np.array([0.0] + [sensitivity[j] / max(reuse[j - 1][j], 1e-12) for j in range(1, n)])
    gap = np.arange(n)[None, :] - np.arange(n)[:, None]  # [i][j] = j - i
    return f * unit[None, None, :] * np.clip(gap, 0, None)[None, :, :]


OBJECTIVES = ("sum", "max")  # total predicted error (MagCache), or the worst step's (LeMiCa's minimax)


def _step_errors(errors: Sequence[Sequence[float]], computed: Sequence[int], forecast: Any) -> list[float]:
    """The predicted error of every skipped step of a schedule (reuse, or with `forecast` the forecast
    once two steps are computed)."""
    chosen = set(computed)
    if 0 not in chosen:
        raise ValueError("a schedule must compute step 0 (nothing is cached before it)")
    out, prev, last = [], None, 0
    for j in range(len(errors)):
        if j in chosen:
            prev, last = (last if j else None), j
        elif forecast is None or prev is None:
            out.append(errors[last][j])
        else:
            out.append(float(forecast[prev][last][j]))
    return out


def schedule_cost(errors: Sequence[Sequence[float]], computed: Sequence[int], forecast: Any = None,
                  objective: str = "sum") -> float:
    """Predicted error of computing exactly `computed` (must contain 0) and reusing elsewhere, or,
    with `forecast` (F[p][i][j] of `sensitivity_forecast_errors`), forecasting once two steps are computed:
    the sum over the skipped steps, or with objective "max" the largest of them."""
    steps = _step_errors(errors, computed, forecast)
    return (max(steps, default=0.0) if objective == "max" else float(sum(steps)))


def best_schedule(errors: Sequence[Sequence[float]], budget: int, forecast: Any = None,
                  objective: str = "sum") -> list[int]:
    """The `budget` steps to compute (step 0 among them) with the least predicted error
    (`forecast`: F[p][i][j] of `sensitivity_forecast_errors`, for a cache that forecasts). `objective`
    "sum" minimises the total over the skipped steps; "max" the worst skipped step (ties broken by the
    total), so no single reuse is allowed a large error to save several small ones."""
    n = len(errors)
    if not 1 <= budget <= n:
        raise ValueError(f"budget must be between 1 and the {n} steps, got {budget}")
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    worst = objective == "max"
    if forecast is not None and budget >= 2:
        return _best_forecast_schedule(np.asarray(errors, dtype=np.float64), np.asarray(forecast), budget, worst)
    # seg[i][j]: (worst, total) error of the steps i+1 .. j-1 reusing step i's Δ (j = n: to the end)
    seg = [[(0.0, 0.0)] * (n + 1) for _ in range(n)]
    for i in range(n):
        top, acc = 0.0, 0.0
        for j in range(i + 1, n + 1):
            seg[i][j] = (top, acc)
            if j < n:
                top, acc = max(top, errors[i][j]), acc + errors[i][j]

    def join(a: tuple[float, float], b: tuple[float, float]) -> tuple[float, float]:
        return (max(a[0], b[0]), a[1] + b[1]) if worst else (0.0, a[1] + b[1])

    inf = (math.inf, math.inf)
    best = [[inf] * n for _ in range(budget + 1)]  # best[c][j]: c steps computed, the last at j
    back = [[-1] * n for _ in range(budget + 1)]
    best[1][0] = (0.0, 0.0)
    for c in range(2, budget + 1):
        for j in range(c - 1, n):
            for i in range(c - 2, j):
                value = join(best[c - 1][i], seg[i][j])
                if value < best[c][j]:
                    best[c][j], back[c][j] = value, i
    last = min(range(n), key=lambda j: join(best[budget][j], seg[j][n]))
    steps = [last]
    for c in range(budget, 1, -1):
        steps.append(back[c][steps[-1]])
    return sorted(steps)


def _lexmin(worst: np.ndarray, total: np.ndarray, axis: int = 0) -> np.ndarray:
    """Index along `axis` of the least `worst`, ties (to 1e-12 relative) broken by the least `total`."""
    low = worst.min(axis=axis, keepdims=True)
    tied = worst <= low + 1e-12 * np.abs(low)
    return np.argmin(np.where(tied, total, np.inf), axis=axis)


def _best_forecast_schedule(errors: np.ndarray, forecast: np.ndarray, budget: int, worst: bool = False) -> list[int]:
    """`best_schedule` when skipped steps are forecast from the last two computed steps p < i:
    DP over (count, p, i), vectorised over the previous step; O(budget·N³). With `worst`, the
    objective is (largest step error, total) in that order."""
    n = errors.shape[0]
    # seg[p][i][k]: the steps i+1 .. k-1 forecast from (p, i) (k = n: to the end); segmax: their largest
    idx = np.arange(n)
    later = idx[None, None, :] > idx[None, :, None]
    seg = np.zeros((n, n, n + 1))
    seg[:, :, 1:] = np.cumsum(forecast * later, axis=2)
    segmax = np.zeros((n, n, n + 1))
    segmax[:, :, 1:] = np.maximum.accumulate(np.where(later, forecast, 0.0), axis=2)
    valid = (np.arange(n + 1)[None, None, :] > idx[None, :, None]) & (idx[:, None, None] < idx[None, :, None])
    seg = np.where(valid, seg, np.inf)
    segmax = np.where(valid, segmax, np.inf)
    # steps 1 .. i-1 reuse step 0: first[i - 1] (their total) and firstmax[i - 1] (their largest)
    first = np.concatenate([[0.0], np.cumsum(errors[0, 1:])])
    firstmax = np.concatenate([[0.0], np.maximum.accumulate(errors[0, 1:])])
    best = np.full((n, n), np.inf)  # best[p][i]: the last two computed steps are p < i
    best[0, 1:] = first[:-1]
    bestmax = np.full((n, n), np.inf) if worst else np.zeros((n, n))
    if worst:
        bestmax[0, 1:] = firstmax[:-1]
    backs = []
    for _ in range(3, budget + 1):
        total = best[:, :, None] + seg[:, :, :n]  # [q][p][i]
        top = np.maximum(bestmax[:, :, None], segmax[:, :, :n]) if worst else np.zeros_like(total)
        back = _lexmin(top, total) if worst else np.argmin(total, axis=0)
        best = np.take_along_axis(total, back[None], axis=0)[0]
        bestmax = np.take_along_axis(top, back[None], axis=0)[0]
        backs.append(back)
    end = best + seg[:, :, n]
    if worst:
        flat = _lexmin(np.maximum(bestmax, segmax[:, :, n]).ravel(), end.ravel())
    else:
        flat = np.argmin(end)
    p, i = np.unravel_index(flat, end.shape)
    steps = [int(i), int(p)]
    for back in reversed(backs):
        steps.append(int(back[steps[-1], steps[-2]]))
    return sorted(steps)


# -- calibration files ------------------------------------------------------------------------

@dataclass(frozen=True)
class CalibrationKey:
    """What a calibration is valid for: one model (class, config, weights), one sampler, one step count."""

    model: str
    scheduler: str
    steps: int

    def filename(self) -> str:
        return f"schedule-{self._digest()}-{self.steps}steps.json"

    def pattern(self) -> str:
        """A glob matching this model's and sampler's calibrations at every step count."""
        return f"schedule-{self._digest()}-*steps.json"

    def _digest(self) -> str:
        return hashlib.sha256(f"{self.model}|{self.scheduler}".encode()).hexdigest()[:16]


def cache_dir() -> Path:
    """`$ACCEL_CACHE_DIR/schedules` (default `~/.cache/accel/schedules`)."""
    return _cache_root("schedules")


def save_calibration(path: Path, key: CalibrationKey, errors: list[list[float]], images: int,
                     **extra: Any) -> Path:
    """Write the calibration JSON atomically (`extra`: what it was made from, for people)."""
    doc = {"format": FORMAT, **asdict(key), "images": images, "errors": errors, **extra}
    return write_text_atomic(path, json.dumps(doc, allow_nan=False, separators=(",", ":")))


def _matrix(value: Any, shape: tuple[int, ...]) -> bool:
    """Whether `value` is nested lists of finite numbers >= 0 of exactly `shape`."""
    if not shape:
        return (isinstance(value, (int, float)) and not isinstance(value, bool)
                and math.isfinite(value) and value >= 0)
    return isinstance(value, list) and len(value) == shape[0] and all(_matrix(v, shape[1:]) for v in value)


_READ: OrderedDict[tuple, dict[str, Any]] = OrderedDict()  # the last few checked files, by path and content hash
_READ_KEPT = 8


def read_calibration(path: Path) -> dict[str, Any]:
    """The calibration JSON in `path`, checked completely (format, key fields, every matrix's shape,
    finite non-negative values), or a one-line ValueError saying what is wrong. Read-only: a file whose
    bytes were read and checked before is not parsed again (at 50 steps the parse takes about 0.15 s,
    which every `apply` of schedule-cache paid on its first call; hashing the bytes about 1 ms)."""
    try:
        p = Path(path)
        data = p.read_bytes() if p.stat().st_size <= MAX_SCHEDULE_BYTES else None
        key: tuple | None = None if data is None else (str(p.resolve()), hashlib.sha256(data).hexdigest())
    except OSError:
        key = None  # read_json says what is wrong with the path
    if key in _READ:
        _READ.move_to_end(key)
        return _READ[key]
    doc = _read_calibration(path)
    if key is not None:
        _READ[key] = doc
        while len(_READ) > _READ_KEPT:
            _READ.popitem(last=False)
    return doc


def _read_calibration(path: Path) -> dict[str, Any]:
    # ReadError (a ValueError) when too large, too deep, not JSON or non-finite; the limit holds the n x n x n
    # forecast errors of a calibration up to about 180 steps
    doc = read_json(path, what="schedule file", max_bytes=MAX_SCHEDULE_BYTES)
    if not isinstance(doc, dict) or doc.get("format") not in FORMATS:
        raise ValueError(f"schedule file {path} is not an accel schedule calibration ({FORMAT})")
    steps = doc.get("steps")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"schedule file {path}: steps must be an integer >= 1, got {steps!r}")
    for field in ("model", "scheduler"):
        if not isinstance(doc.get(field), str):
            raise ValueError(f"schedule file {path}: {field} must be a string")
    n = steps
    for field, shape, required in (("errors", (n, n), True), ("reuse", (n, n), False),
                                   ("sensitivity", (n,), False), ("forecast", (n, n, n), False),
                                   ("timesteps", (n,), False)):
        if (required or field in doc) and not _matrix(doc.get(field), shape):
            raise ValueError(f"schedule file {path}: {field} must be a {'x'.join(map(str, shape))} array of "
                             "finite numbers >= 0 (recalibrate with accel.caching.calibrate_schedule)")
    return doc


def check_key(doc: dict[str, Any], path: Path, key: CalibrationKey, fields: Sequence[str] = ("model", "scheduler", "steps")) -> None:
    """ValueError saying how the calibration `doc` (from `path`) differs from `key`, if it does."""
    for field, want, what in (("model", key.model, "model (class, config or weights)"),
                              ("scheduler", key.scheduler, "scheduler (class or config)"),
                              ("steps", key.steps, "step count")):
        if field in fields and doc.get(field) != want:
            raise ValueError(
                f"schedule file {path} was calibrated for another {what}: {doc.get(field)!r}, this call "
                f"has {want!r}. Calibrate for this model and sampler: leave out schedule= and the first "
                "call calibrates into the cache directory"
            )


def load_calibration(path: Path, key: CalibrationKey) -> list[list[float]]:
    """The error matrix in `path`, or ValueError saying how its key differs from `key` (or what is invalid)."""
    doc = read_calibration(path)
    check_key(doc, path, key)
    return doc["errors"]


def forecast_matrix(doc: dict[str, Any], path: Path) -> np.ndarray:
    """The predicted errors of forecasting (`sensitivity_forecast_errors`) from a checked calibration."""
    if not all(f in doc for f in ("forecast", "reuse", "sensitivity")):
        raise ValueError(f"schedule file {path} has no forecast errors (made before accel calibrated them): "
                         "recalibrate with accel.caching.calibrate_schedule, or use forecast=0")
    return sensitivity_forecast_errors(doc["forecast"], doc["reuse"], doc["sensitivity"])


def nearest_steps(calibrated: Sequence[float], timesteps: Sequence[float]) -> list[int]:
    """For each executed timestep, the index of the nearest calibrated one, strictly increasing (two
    executed steps never share a calibrated step); ValueError when the calibration is too coarse."""
    cal = np.asarray(calibrated, dtype=np.float64)
    out: list[int] = []
    for t in timesteps:
        i = int(np.argmin(np.abs(cal - float(t))))
        if out and i <= out[-1]:
            i = out[-1] + 1
        if i >= len(cal):
            raise ValueError(f"a calibration of {len(cal)} steps cannot serve a call of {len(timesteps)} steps")
        out.append(i)
    return out


def can_resample(doc: dict[str, Any], timesteps: Sequence[float]) -> bool:
    """Whether a checked calibration has what `resample` needs for these executed timesteps."""
    if not all(f in doc for f in ("timesteps", "reuse", "sensitivity")) or len(timesteps) > doc["steps"]:
        return False
    lo, hi = min(doc["timesteps"]), max(doc["timesteps"])
    slack = max(hi - lo, 1e-9) / max(1, doc["steps"] - 1)  # a calibrated step's spacing at either end
    if not all(lo - slack <= float(t) <= hi + slack for t in timesteps):
        return False
    try:
        nearest_steps(doc["timesteps"], timesteps)
    except ValueError:
        return False
    return True


def resample(doc: dict[str, Any], timesteps: Sequence[float], with_forecast: bool) -> tuple[list, Any]:
    """(E, F) for a call executing `timesteps`, from a calibration made at its own timesteps: step a of
    the call stands for calibrated step m_a (`nearest_steps`); E[a][b] = unit[m_b] · reuse[m_a][m_b] ·
    (b − a), as `sensitivity_errors` builds it, the gap in the call's steps (F likewise from the
    calibrated forecast errors, None without `with_forecast`)."""
    m = nearest_steps(doc["timesteps"], timesteps)
    reuse, sens = doc["reuse"], doc["sensitivity"]
    unit = [0.0] + [sens[j] / max(reuse[j - 1][j], 1e-12) for j in range(1, doc["steps"])]
    n = len(m)
    errors = [[unit[m[b]] * reuse[m[a]][m[b]] * (b - a) if a < b else 0.0 for b in range(n)] for a in range(n)]
    if not with_forecast:
        return errors, None
    f = np.asarray(doc["forecast"], dtype=np.float64)[np.ix_(m, m, m)]
    gap = np.clip(np.arange(n)[None, :] - np.arange(n)[:, None], 0, None)
    forecast = f * np.asarray([unit[j] for j in m])[None, None, :] * gap[None, :, :]
    return errors, forecast
