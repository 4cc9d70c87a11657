"""The step context: (pipeline call, step, CFG branch) of every transformer call, exactly."""

from __future__ import annotations

import pytest
import torch

import accel
from accel.testing import run_tiny, tiny_transformer, transformer_inputs


def _trace(pipe, family: str, runs: list[dict]) -> list[tuple]:
    with accel.apply(pipe, accel.TraceConfig()) as handle:
        for kw in runs:
            run_tiny(pipe, family, **kw)
        return handle.stats()["trace"]["events"]


def _expected(calls: list[tuple[int, tuple[str, ...]]]) -> list[tuple]:
    """[(steps, branch names)] per pipeline call -> the event list."""
    return [(c, s, b, name) for c, (steps, names) in enumerate(calls)
            for s in range(steps) for b, name in enumerate(names)]


@pytest.mark.parametrize("family", ["dit", "pixart", "sd3"])
@pytest.mark.parametrize("cfg", [True, False])
def test_single_call_per_step_families(tiny_pipes, family, cfg):
    # CFG as one doubled batch (or no CFG): one transformer call, branch 0, per step
    events = _trace(tiny_pipes[family], family, [dict(cfg=cfg, steps=3), dict(cfg=cfg, steps=2)])
    assert events == _expected([(3, ("batch",)), (2, ("batch",))])


def test_flux_true_cfg_two_calls_per_step_and_without_cfg(tiny_pipes):
    events = _trace(tiny_pipes["flux"], "flux", [dict(cfg=True, steps=2), dict(cfg=False, steps=3)])
    assert events == _expected([(2, ("cond", "uncond")), (3, ("cond",))])


def test_state_resets_between_calls_with_same_step_count(tiny_pipes):
    events = _trace(tiny_pipes["dit"], "dit", [dict(steps=2), dict(steps=2), dict(steps=2)])
    assert [(c, s) for c, s, _, _ in events] == [(0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (2, 1)]


def test_swapped_scheduler_is_followed(tiny_pipes):
    from diffusers import DPMSolverMultistepScheduler

    pipe = tiny_pipes["dit"]
    original = pipe.scheduler
    with accel.apply(pipe, accel.TraceConfig()) as handle:
        run_tiny(pipe, "dit", steps=2)
        pipe.scheduler = DPMSolverMultistepScheduler.from_config(original.config)
        run_tiny(pipe, "dit", steps=3)
        events = handle.stats()["trace"]["events"]
    assert "step" not in pipe.scheduler.__dict__ and "step" not in original.__dict__
    pipe.scheduler = original
    assert events == _expected([(2, ("batch",)), (3, ("batch",))])


def test_bare_transformer_reads_timesteps():
    model = tiny_transformer("dit")
    inputs = transformer_inputs("dit", model)
    # two calls per step (two-call CFG), then a rise in timestep = a new pipeline call
    schedule = [900, 900, 600, 600, 300, 300, 900, 500]
    with accel.apply(model, accel.TraceConfig()) as handle:
        for t in schedule:
            model(**{**inputs, "timestep": torch.full((2,), t)})
        events = handle.stats()["trace"]["events"]
    assert [(c, s, b) for c, s, b, _ in events] == [
        (0, 0, 0), (0, 0, 1), (0, 1, 0), (0, 1, 1), (0, 2, 0), (0, 2, 1), (1, 0, 0), (1, 1, 0)]
