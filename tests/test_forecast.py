"""The Δ forecasters (accel/caching/forecast.py): exact where their model holds, finite when history
is short, and selectable on every cache as `forecast=`."""

from __future__ import annotations

import pytest
import torch

import accel
from accel.caching.forecast import (
    check_forecast, exponential, forecast_value, history_kept, predictor_corrector,
)
from accel.eval.methods import parse_methods
from accel.testing import run_tiny, tiny_pipeline

A = torch.linspace(-1.0, 1.0, 24).reshape(2, 3, 4)
B = torch.cos(torch.arange(24.0)).reshape(2, 3, 4)


def exp_stream(t: float, r: float = 0.7) -> torch.Tensor:
    return A + B * r ** t


def linear(t: float) -> torch.Tensor:
    return A + 0.3 * t * B


@pytest.mark.parametrize("steps,target", [((2, 4, 6), 8), ((2, 4, 6), 7), ((1, 3, 4), 6), ((0, 5, 6), 9)])
@pytest.mark.parametrize("r", [0.7, 0.95, 1.2])
def test_exponential_is_exact_on_an_exponential_stream_at_even_and_uneven_steps(steps, target, r):
    points = [(s, exp_stream(s, r)) for s in steps]
    torch.testing.assert_close(exponential(points, target), exp_stream(target, r), rtol=1e-4, atol=1e-4)
    # the linear forecast through the last two is not: the fit earns its place
    lin = forecast_value(1, points, [], target)
    assert (lin - exp_stream(target, r)).abs().max() > 1e-3


def test_exponential_is_the_linear_forecast_on_a_linear_stream():
    points = [(s, linear(s)) for s in (1, 3, 4)]
    torch.testing.assert_close(exponential(points, 7), linear(7), rtol=1e-4, atol=1e-4)


def test_exponential_holds_an_oscillating_or_constant_stream_and_falls_back_when_history_is_short():
    osc = [(s, A + B * (-1) ** s) for s in (1, 2, 3)]
    torch.testing.assert_close(exponential(osc, 5), osc[-1][1])
    const = [(s, A.clone()) for s in (1, 2, 3)]
    torch.testing.assert_close(exponential(const, 5), A)
    two = [(s, linear(s)) for s in (2, 5)]
    torch.testing.assert_close(exponential(two, 9), linear(9), rtol=1e-5, atol=1e-5)
    one = [(4, linear(4))]
    torch.testing.assert_close(exponential(one, 9), linear(4))
    assert torch.isfinite(exponential([(s, exp_stream(s, 0.5)) for s in (1, 2, 3)], 40)).all()


def test_exponential_keeps_the_offsets_dtype():
    points = [(s, exp_stream(s).to(torch.bfloat16)) for s in (1, 2, 3)]
    assert exponential(points, 4).dtype == torch.bfloat16


def test_predictor_corrector_is_exact_on_a_linear_stream_from_its_own_forecasts():
    anchors = [(0, linear(0)), (3, linear(3))]
    window = [(3, linear(3))]
    for step in (4, 5, 6):  # a run skipped three times in a row continues from its own forecasts
        pred = predictor_corrector(anchors, window, step)
        torch.testing.assert_close(pred, linear(step), rtol=1e-5, atol=1e-5)
        window = (window + [(step, pred)])[-2:]


def test_predictor_corrector_corrects_with_the_last_used_values():
    """The trapezoid of the anchors' slope and the window's: a window that bends the stream moves the
    forecast half-way, unlike the linear forecast."""
    anchors = [(0, A), (2, A + 2 * B)]  # slope B
    window = [(1, A + 2 * B - 3 * B), (2, A + 2 * B)]  # last two used values: slope 3B
    pred = predictor_corrector(anchors, window, 3)
    torch.testing.assert_close(pred, A + 2 * B + 2 * B)  # + 1 step x mean slope 2B
    torch.testing.assert_close(predictor_corrector(anchors[-1:], window, 3), A + 2 * B)  # one anchor: held


def test_forecast_values_are_checked():
    for ok in (0, 1, 2, "exp", "pc"):
        check_forecast(ok)
        assert history_kept(ok) >= 0
    for bad in (3, -1, True, 1.0, "taylor", None):
        with pytest.raises(ValueError, match="forecast must be one of"):
            check_forecast(bad)
    with pytest.raises(ValueError, match="forecast must be one of"):
        accel.DeltaCacheConfig(forecast="taylor")


def test_forecast_names_parse_from_a_method_spec():
    (_, spec) = parse_methods("delta-cache:forecast=exp", accel.methods())
    assert spec.configs[0].forecast == "exp"
    (_, spec) = parse_methods("interval-cache:forecast=pc,interval=3", accel.methods())
    assert spec.configs[0].forecast == "pc" and spec.configs[0].interval == 3
    (_, spec) = parse_methods("interval-cache:forecast=1", accel.methods())
    assert spec.configs[0].forecast == 1


CACHES = {
    "interval-cache": dict(interval=2, warmup=1),
    "delta-cache": dict(interval=2, cached_blocks=1.0, min_steps=0),
    "residual-cache": dict(threshold=10.0, warmup=1, max_consecutive=2),
}


@torch.no_grad()
@pytest.mark.parametrize("forecast", ["exp", "pc"])
@pytest.mark.parametrize("name", sorted(CACHES))
def test_every_cache_runs_the_new_forecasters_and_undoes_them(name, forecast):
    pipe = tiny_pipeline("pixart", num_layers=3)
    kw = dict(steps=8, cfg=True)
    ref = run_tiny(pipe, "pixart", **kw)
    cfg = accel.methods()[name](**CACHES[name], forecast=forecast)
    with accel.apply(pipe, cfg) as handle:
        out = run_tiny(pipe, "pixart", **kw)
        total = handle.stats()["total"]
        held_after = handle.held_bytes()
    assert torch.isfinite(out).all() and out.shape == ref.shape
    assert total["block_evals"] < total["block_total"]  # it reused something
    with accel.apply(pipe, accel.methods()[name](**CACHES[name], forecast=0)):
        reused = run_tiny(pipe, "pixart", **kw)
    assert not torch.equal(out, reused)  # the forecaster, not plain reuse, made the skipped offsets
    assert held_after == 0  # the call's cached offsets (and the "pc" window) are freed at its end
    again = run_tiny(pipe, "pixart", **kw)
    assert torch.equal(again, ref)  # removed: bit for bit the uncached output
