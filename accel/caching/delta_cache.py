"""`delta-cache`: Δ-DiT's stage-aware Δ-Cache.

A run of N_c consecutive blocks is replaced, on cached steps, by its stored offset

    Δ = h_out(t_prev) − h_in(t_prev)        (on the last full step, per CFG branch)
    h_out(t) ≈ h_in(t) + Δ                  (on a cached step: the run is skipped)

so the fresh input of the current step still flows through (plain feature caching
would reuse h_out(t_prev) and drop it). Pair blocks (SD3, Flux) get a Δ for both the
image and the text stream; a run ending in a block that returns no text stream (SD3's
last block) returns none.

Stage-aware schedule (Δ-DiT): front blocks shape the outline, which early steps
decide; rear blocks add detail, which late steps refine. So

* steps s < b (outline stage) cache the REAR N_c blocks (the front keeps computing),
* steps s >= b (detail stage) cache the FRONT N_c blocks,
* every `interval`-th step (s % interval == 0) is a full step that refreshes Δ
  (interval = 2: compute, reuse, compute, ...). A full step stores the Δ of exactly
  the run(s) the cached steps up to the next full step will use.

Scaling rule (how the paper's PixArt-α setting carries to other depths and step
counts): the paper uses b = 12 of 20 steps and N_c = 21 of 28 blocks, i.e.
`boundary = 0.6` of the step count and `cached_blocks = 0.75` of the depth (all
stacks together, in execution order: for Flux "front" starts in the double-stream
blocks, "rear" ends in the single-stream blocks). A float is such a fraction,
resolved as round-half-up(fraction × total) (N_c at least 1); an int is an explicit
step index / block count. The step count is the scheduler's for the current pipeline
call. A bare transformer (or a pipeline whose scheduler does not tell) resolves a
fractional `boundary` against the steps of its previous call, counted from the
timesteps it is called with, and on its first call against 50 steps
(`accel.context.UNKNOWN_STEPS`); give an int step index for an exact boundary there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..config import MethodConfig, Target, check_int, check_range, register_method
from ..context import StepInfo
from .forecast import Forecast, check_forecast
from ._runs import BranchState, Plan, Run, RunCache, resolve_count


def _check_int_or_fraction(name: str, value: Any, int_lo: int, frac_lo_open: bool) -> None:
    if isinstance(value, int) and not isinstance(value, bool):
        check_int(name, value, int_lo)
    elif isinstance(value, float):
        check_range(name, value, 0.0, 1.0, lo_open=frac_lo_open)
    else:
        raise ValueError(f"{name} must be an int (absolute) or a float fraction in [0, 1], got {value!r}")


@register_method("delta-cache")
@dataclass(frozen=True)
class DeltaCacheConfig(MethodConfig):
    """`delta-cache`: Δ-DiT's stage-aware cache of a block run's offset.

    Example::

        import accel

        pipe = accel.default_pipeline()
        with accel.apply(pipe, accel.DeltaCacheConfig(interval=2), accel.TomeConfig(ratio=0.3)) as handle:  # stacked
            images = pipe(class_labels=[3, 7], num_inference_steps=20).images
            print(handle.stats()["total"])

    interval: a full step every `interval` steps, Δ reused in between (paper: 2; 1 = no caching).
    boundary: first step of the detail stage; float = fraction of the step count (paper: 12/20 = 0.6),
        int = step index. A bare transformer counts its steps: the fraction is of its previous call's
        steps, of 50 on its first call (see the module docstring).
    cached_blocks: N_c, blocks in the cached run; float = fraction of the depth, in (0, 1]
        (paper: 21/28 = 0.75), int = block count (1 .. depth).
    forecast: order of the Δ forecast from the run's last computed steps (0 = reuse Δ as the
        paper does, 1 = linear, 2 = quadratic, "exp" / "pc": forecast.py). Default 1: on the default model's 20 DPM++ steps
        (200 paired images) it gives 36.1 dB / -1.1% FD-digits where reuse gives 33.9 dB / -0.6% at
        the same 1.6x (benchmarks/results/caching-dpm20.json), and +0.3 to +2.3 dB from 10 to 30
        steps (16 images, benchmarks/forecast_steps.py); at 8 steps reuse is better (26.7 vs 24.2 dB).
    min_steps: pipeline calls with fewer scheduler steps are computed in full, with a warning in
        `.stats()` (on the default model the defaults give 10.8 dB PSNR at 4 DPM++ steps, 19.2 at 6,
        24.2 at 8, 29.8 at 12: `benchmarks/forecast_steps.py --min-steps-off`).
    """

    # int first: `accel bench --methods delta-cache:boundary=12` parses "12" as a step, "0.6" as a fraction
    interval: int = 2
    boundary: int | float = 0.6
    cached_blocks: int | float = 0.75
    forecast: Forecast = 1
    min_steps: int = 8

    kind = "cache"
    tunable = {"interval": (2, 3, 4), "cached_blocks": (0.5, 0.75, 1.0), "forecast": (0, 1)}

    def validate(self) -> None:
        check_int("interval", self.interval, 1)
        _check_int_or_fraction("boundary", self.boundary, 0, frac_lo_open=False)
        _check_int_or_fraction("cached_blocks", self.cached_blocks, 1, frac_lo_open=True)
        check_forecast(self.forecast)
        check_int("min_steps", self.min_steps, 0)

    def install(self, target: Target) -> "DeltaCache":
        return DeltaCache(target, self)


class DeltaCache(RunCache):
    def __init__(self, target: Target, config: DeltaCacheConfig):
        n = len(target.blocks)
        n_c = resolve_count("cached_blocks", config.cached_blocks, n, "blocks")
        super().__init__(target, "accel.delta-cache")
        self.config = config
        self.forecast = config.forecast
        self.min_steps = config.min_steps
        self.n_c = n_c
        self.front: Run = (0, n_c)
        self.rear: Run = (n - n_c, n)
        self._skip = {run: Plan(n, skip=[run]) for run in (self.front, self.rear)}
        self._store: dict[frozenset, Plan] = {}

    def boundary_step(self) -> float:
        b = self.config.boundary
        if isinstance(b, int):
            return b
        return int(b * self.tracker.steps_for_fractions() + 0.5)

    def run_at(self, step: int, b: float) -> Run:
        return self.rear if step < b else self.front

    def choose(self, info: StepInfo, state: BranchState) -> Plan:
        k, s = self.config.interval, info.step
        if k == 1:
            return self.plain
        b = self.boundary_step()
        if s % k != 0:
            run = self.run_at(s, b)
            if run in state.deltas:
                return self._skip[run]
        # full step (or a cached step without a Δ yet): store what the cached steps before the next refresh use
        next_full = (s // k + 1) * k
        num_steps = self.tracker.num_steps
        last = next_full if num_steps is None else min(next_full, num_steps)
        need = frozenset(self.run_at(t, b) for t in range(s + 1, last))
        for run in [r for r in state.deltas if r not in need]:  # the other stage's Δ is stale now
            state.drop(run)
        plan = self._store.get(need)
        if plan is None:
            plan = self._store[need] = Plan(self.num_blocks, store=sorted(need))
        return plan

    def stats(self) -> dict[str, Any]:
        return {**super().stats(), "cached_blocks": self.n_c, "interval": self.config.interval}
