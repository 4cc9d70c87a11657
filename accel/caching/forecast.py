"""Forecasters of a cached offset Δ: what a skipped run adds to its fresh input, from the offsets
of the steps that were computed (every cache's `forecast=` option; one home for all of them).

* ``0``: reuse the last Δ (FORA, Δ-DiT).
* ``1`` / ``2``: the Taylor (Newton) polynomial of that order through the last 2 / 3 stored Δ,
  step-distance aware (TaylorSeer's idea; exact for a Δ that is linear / quadratic in the step).
* ``"exp"``: an exponential-basis fit (a rank-one DMD / Prony fit of the offset stream): the last
  three Δ as ``a + b·rᵗ`` with one ratio ``r`` for the whole tensor (least squares over its
  elements), continued to the step. ``r → 1`` is the linear forecast, ``r → 0`` holds the last Δ, a
  sign change between the two differences (an oscillating stream) holds it too. Exact on such a
  stream at even or uneven steps; with two stored Δ it is the linear forecast, with one it holds.
* ``"pc"``: a predictor-corrector in the spirit of FoCa (forecast then calibrate: the feature
  stream as an ODE). From the last computed Δ it advances by the trapezoid of two slopes: the slope
  between the last two computed Δ, and the slope between the last two values this run *used*
  (computed or forecast), so a run skipped several times in a row continues from its own forecasts
  and a new computed step corrects the drift of the forecasts before it. Exact on a linear stream.

Every forecaster works in float32 (differences of bf16/fp16 offsets cancel most of their bits)
and returns the offset's own dtype. ``"exp"`` reads one scalar back from the device per skipped
run and step (its ratio); the others run without a sync.
"""

from __future__ import annotations

import math
from typing import Sequence, Union

import torch

Forecast = Union[int, str]  # 0, 1, 2, "exp" or "pc"
FORECASTS: tuple[Forecast, ...] = (0, 1, 2, "exp", "pc")
_R_MAX = 4.0  # largest per-step ratio "exp" fits (a faster-growing stream is continued at this rate)


def check_forecast(value: object) -> None:
    """`forecast` is 0 (reuse), 1 (linear), 2 (quadratic), "exp" (exponential fit) or "pc"
    (predictor-corrector)."""
    if isinstance(value, bool) or value not in FORECASTS or type(value) not in (int, str):
        raise ValueError("forecast must be one of 0 (reuse), 1 (linear), 2 (quadratic), 'exp' (exponential fit), "
                         f"'pc' (predictor-corrector), got {value!r}")


def history_kept(forecast: Forecast) -> int:
    """How many computed offsets before the last one a forecaster needs."""
    return {0: 0, 1: 1, 2: 2, "exp": 2, "pc": 1}[forecast]


def extrapolate(points: Sequence[tuple[int, torch.Tensor]], step: int) -> torch.Tensor:
    """Value at `step` of the polynomial through (step_i, value_i) (Newton's divided differences).

    Steps may be unevenly spaced (a cached run is refreshed at irregular steps), so the
    forecast is step-distance aware: order 1 continues a Δ that changes linearly in the
    step exactly, order 2 a quadratic one.
    """
    xs = [float(x) for x, _ in points]
    dtype = points[-1][1].dtype
    coeffs = [v.float() for _, v in points]
    n = len(points)
    for level in range(1, n):  # in place: coeffs[i] becomes f[x_{i-level} .. x_i]
        for i in range(n - 1, level - 1, -1):
            coeffs[i] = (coeffs[i] - coeffs[i - 1]) / (xs[i] - xs[i - level])
    out = coeffs[-1]
    for i in range(n - 2, -1, -1):
        out = coeffs[i] + (step - xs[i]) * out
    return out.to(dtype)


def _ratio_of_differences(r: float, h1: float, h2: float) -> float:
    """(x2 − x1) / (x1 − x0) of ``a + b·rᵗ`` sampled at spacings h1, h2 (its limit h2/h1 at r = 1)."""
    if abs(r - 1.0) < 1e-9:
        return h2 / h1
    return r ** h1 * (r ** h2 - 1.0) / (r ** h1 - 1.0)


def _fit_ratio(q: float, h1: float, h2: float) -> float:
    """The per-step ratio r > 0 whose stream has difference ratio `q` (bisection: it grows with r)."""
    lo, hi = 1e-6, _R_MAX
    if q <= _ratio_of_differences(lo, h1, h2):
        return 0.0
    if q >= _ratio_of_differences(hi, h1, h2):
        return hi
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if _ratio_of_differences(mid, h1, h2) < q:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def exponential(points: Sequence[tuple[int, torch.Tensor]], step: int) -> torch.Tensor:
    """Value at `step` of ``a + b·rᵗ`` through the last three points (one scalar r, least squares);
    fewer points: the linear forecast, or the one value held."""
    if len(points) < 3:
        return extrapolate(points[-2:], step) if len(points) == 2 else points[-1][1]
    (t0, x0), (t1, x1), (t2, x2) = points[-3:]
    dtype = x2.dtype
    x0, x1, x2 = x0.float(), x1.float(), x2.float()
    d1, d2 = x1 - x0, x2 - x1
    den = float((d1 * d1).sum())
    if not math.isfinite(den) or den == 0.0:  # no change between the first two: hold the last
        return x2.to(dtype)
    q = float((d2 * d1).sum()) / den
    if not math.isfinite(q):
        return x2.to(dtype)
    h1, h2, u = float(t1 - t0), float(t2 - t1), float(step - t2)
    r = _fit_ratio(q, h1, h2)
    if r == 0.0:
        return x2.to(dtype)
    # x(step) − x2 = d2 · r^h2 (r^u − 1) / (r^h2 − 1), u / h2 in the linear limit r → 1
    scale = u / h2 if abs(r - 1.0) < 1e-9 else r ** h2 * (r ** u - 1.0) / (r ** h2 - 1.0)
    return (x2 + scale * d2).to(dtype)


def predictor_corrector(anchors: Sequence[tuple[int, torch.Tensor]], window: Sequence[tuple[int, torch.Tensor]],
                        step: int) -> torch.Tensor:
    """FoCa-style forecast at `step` from the last computed values `anchors` (oldest first) and the
    last two values used `window` (computed or forecast): the last computed value advanced by the
    mean of the anchors' slope and the window's slope. One anchor: the value held."""
    ta, xa = anchors[-1]
    if len(anchors) < 2:
        return xa
    tp, xp = anchors[-2]
    dtype = xa.dtype
    slope = (xa.float() - xp.float()) / float(ta - tp)
    if len(window) >= 2 and window[-1][0] > window[-2][0]:
        (k1, w1), (k2, w2) = window[-2], window[-1]
        slope = 0.5 * (slope + (w2.float() - w1.float()) / float(k2 - k1))
    return (xa.float() + float(step - ta) * slope).to(dtype)


def forecast_step(steps: Sequence[int], step: int) -> int:
    """Where a forecast from offsets stored at `steps` (increasing) is evaluated for `step`: no farther
    than one spacing of the last two (the horizon cap). Past it the extrapolation's error grows faster
    than reuse's on the default model (the DP's long gaps, residual-cache's irregular ones); the
    forecast then holds the value one spacing ahead."""
    if len(steps) < 2:
        return step
    return min(step, steps[-1] + (steps[-1] - steps[-2]))


def forecast_value(kind: Forecast, history: Sequence[tuple[int, torch.Tensor]],
                   window: Sequence[tuple[int, torch.Tensor]], step: int) -> torch.Tensor:
    """The forecast of kind `kind` at `step` from the computed `history` (oldest first, the last
    computed value last) and, for "pc", the `window` of the last values used."""
    if kind == 0 or len(history) < 2:
        return history[-1][1]
    if kind == "exp":
        return exponential(history, step)
    if kind == "pc":
        return predictor_corrector(history, window, step)
    return extrapolate(history[-(int(kind) + 1):], step)
