"""`interval-cache`: recompute every k-th step, reuse the whole-stack residual in between (FORA-style).

On a computed step the offset of all blocks together, Δ = output of the last block −
input of the first block (hidden and, for pair blocks, encoder stream), is stored per
CFG branch; on the steps in between every block is skipped and the last block returns
the *fresh* input of the first block + Δ, so the embedding/timestep path and the
output head still run on the current step.

Schedule (step s of a pipeline call of N scheduler steps):
    computed  if s < warmup or s >= N - cooldown or (s - warmup) % interval == 0, else reused.
The first step of every pipeline call (and of every branch) is always computed. `cooldown`
needs N, which a pipeline's scheduler tells; on a bare transformer it is ignored with a
warning in `.stats()`.

Per-block residuals are not offered: skipping every block and adding each block's own
Δ telescopes to exactly this whole-stack Δ (up to rounding) at N times the memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..config import MethodConfig, Target, check_int, register_method
from ..context import StepInfo
from .forecast import Forecast, check_forecast
from ._runs import BranchState, Plan, RunCache
from .verify import check_verify


def computes_step(step: int, interval: int, warmup: int, cooldown: int = 0, steps: int | None = None) -> bool:
    """Whether interval-cache's schedule computes `step` (of a call of `steps`; None = unknown, when
    `cooldown` cannot apply). The one statement of the rule: the cache and the benchmarks' arithmetic use it."""
    return step < warmup or (step - warmup) % interval == 0 or (steps is not None and step >= steps - cooldown)


@register_method("interval-cache")
@dataclass(frozen=True)
class IntervalCacheConfig(MethodConfig):
    """`interval-cache`: compute every `interval`-th step, reuse (or forecast) the whole-stack residual between.

    Example::

        import accel

        pipe = accel.default_pipeline()
        with accel.apply(pipe, accel.IntervalCacheConfig(interval=3, warmup=1)) as handle:
            images = pipe(class_labels=[3, 7], num_inference_steps=20).images
            print(handle.stats()["total"])  # block_evals: 8 of 20 steps computed

    interval: compute every `interval`-th step, reuse the residual in between (1 = no caching;
        3 with warmup 1 computes 8 of 20 steps: 2.5x fewer block evaluations).
    warmup: leading steps that are always computed (the first steps change the latent most).
    cooldown: trailing steps that are always computed. On the default model the last steps are
        the most sensitive of all to a reuse (schedule-cache's calibration: at 20 DPM++ steps the
        last is 9x the median step), so skipping them costs most. At 20 DPM++ steps (100 held-out
        images, forecast 1) interval 2 from step 0 gave 36.2 dB at 2.0x and with cooldown 1 38.6 dB
        at 1.82x (diffusers' TaylorSeer, interval 2: 36.7 dB at 1.82x); interval 3 after 1 step with
        cooldown 1 34.1 dB at 2.5x, against 29.8 for interval 3 after 2 steps. Default 0.
    forecast: order of the residual's forecast from the last computed steps (0 = reuse it,
        1 = linear, 2 = quadratic; FORA reuses, TaylorSeer forecasts; "exp" / "pc": the exponential
        fit and the predictor-corrector of accel/caching/forecast.py). Default 0: with the default
        interval 3 on the default model, 1 is better at 20 steps (32.1 vs 30.4 dB, 200 images) but
        much worse at 8-15 (16.7 vs 23.8 dB at 8, 24.0 vs 27.5 at 15; 16 images,
        benchmarks/forecast_steps.py), and worse at interval >= 4. At 50 DPM++ steps forecast 1
        is the better choice: interval 2 after warmup 3 gave 44.9 vs 42.6 dB (1.85x), interval 3
        38.7 dB at 2.63x (10 images of issue 23, with the horizon cap).
    min_steps: pipeline calls with fewer scheduler steps are computed in full, with a warning in
        `.stats()` (on the default model the defaults give 6.5 dB PSNR at 4 DPM++ steps, 14.6 at 6,
        23.8 at 8, 26.8 at 12).
    verify: verify-then-reuse per sample on the reused steps, as schedule-cache's `verify` (`verify.py`);
        None (default) = off.
    """

    interval: int = 3
    warmup: int = 1
    cooldown: int = 0
    forecast: Forecast = 0
    min_steps: int = 8
    verify: float | None = None

    kind = "cache"
    tunable = {"interval": (2, 3, 4, 5), "warmup": (1, 3), "forecast": (0, 1, 2)}

    def validate(self) -> None:
        check_int("interval", self.interval, 1)
        check_int("warmup", self.warmup, 0)
        check_int("cooldown", self.cooldown, 0)
        check_forecast(self.forecast)
        check_int("min_steps", self.min_steps, 0)
        check_verify(self.verify)

    def install(self, target: Target) -> "IntervalCache":
        return IntervalCache(target, self)


class IntervalCache(RunCache):
    def __init__(self, target: Target, config: IntervalCacheConfig):
        super().__init__(target, "accel.interval-cache")
        self.config = config
        self.forecast = config.forecast
        self.min_steps = config.min_steps
        self.all = (0, self.num_blocks)
        self.store_plan, self.skip_plan = self.whole_stack_plans(config.verify)

    def choose(self, info: StepInfo, state: BranchState) -> Plan:
        c = self.config
        if c.interval == 1:
            return self.plain
        steps = self.tracker.num_steps
        if c.cooldown and steps is None:
            self._warn(f"cooldown={c.cooldown} ignored: the call's step count is unknown (no pipeline scheduler)")
        if not computes_step(info.step, c.interval, c.warmup, c.cooldown, steps) and self.all in state.deltas:
            return self.skip_plan
        return self.store_plan

    def stats(self) -> dict[str, Any]:
        out = {**super().stats(), "interval": self.config.interval, "warmup": self.config.warmup,
               **({"cooldown": self.config.cooldown} if self.config.cooldown else {})}
        return out if self.config.verify is None else {**out, "verify": self.config.verify}
