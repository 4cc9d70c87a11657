"""`residual-cache`: adaptive caching decided by the first blocks' residual (FirstBlockCache / DBCache).

Every transformer call computes the first `front_blocks` (Fn) blocks. Their residual

    r = output of block Fn-1 − input of block 0        (image stream)

is compared with r_prev, the same branch's residual at the last *computed* step (the
step whose middle offset is cached; comparing with it, as diffusers' FirstBlockCache
and cache-dit do, lets slow drift accumulate until it forces a recompute):

    diff = mean|r − r_prev| / mean|r_prev|

If diff < `threshold` the middle blocks Fn .. N−Bn−1 are skipped and their stored
offset Δ_mid (hidden and encoder stream) is added to their fresh input; otherwise they
are computed and Δ_mid is refreshed. The last `back_blocks` (Bn) blocks always run.
The first `warmup` steps are always computed, and at most `max_consecutive` steps in a
row reuse. One host sync per transformer call for the decision; under diffusers' context
parallelism its sums are all-reduced over the ranks first (`accel.distributed`).

`forecast=1` replaces plain reuse by a first-order extrapolation of Δ_mid from the
last two computed steps, Δ(s) = Δ1 + (Δ1 − Δ0)·(s − s1)/(s1 − s0); `forecast=2` adds
the second-order term from the last three (`forecast.extrapolate`; one or two more stored
offsets per branch).

Works on every family through `families.BlockIO` (it needs no cache context from the
pipeline, unlike diffusers' FirstBlockCache, which fails on DiT, PixArt and SD3).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..config import MethodConfig, Target, check_int, check_range, register_method
from ..context import StepInfo
from ..distributed import sum_across_ranks
from .forecast import Forecast, check_forecast
from ._runs import BranchState, Plan, Run, RunCache


@register_method("residual-cache")
@dataclass(frozen=True)
class ResidualCacheConfig(MethodConfig):
    """`residual-cache`: reuse the middle blocks while the first blocks' residual barely changes (adaptive).

    Example::

        import accel

        pipe = accel.default_pipeline()
        with accel.apply(pipe, accel.ResidualCacheConfig(threshold=0.1)) as handle:
            images = pipe(class_labels=[3, 7], num_inference_steps=20).images
            print(handle.stats()["total"])  # the first blocks decide, step by step, what is computed

    threshold: relative L1 change of the first blocks' residual below which the middle blocks are
        reused (0 = never reuse; FirstBlockCache uses 0.05, cache-dit 0.08).
    front_blocks: Fn, blocks always computed first; their residual drives the decision (>= 1).
    back_blocks: Bn, last blocks always computed (refine the reused features; may be 0).
    warmup: leading steps always computed (cache-dit uses 8 of 28-50 steps; 2 suits 20-25).
    max_consecutive: cap on consecutive reused steps per branch (None = no cap).
    forecast: order of the middle offset's forecast from the last computed steps (0 = reuse it,
        1 = linear, 2 = quadratic, "exp" = exponential fit, "pc" = predictor-corrector: forecast.py).
    Defaults (threshold 0.1, forecast 1) are the point of this cache's own 200-image curve on the
    default model's 20 DPM++ steps with the best FD-digits near 1.6x: 1.64x, 30.4 dB, -3.4% in the
    caching benchmark (calls of 25 images), 1.56x, 34.5 dB, 0.0% in the no-flag `accel bench`
    (calls of 100: the skip decision is per call, so it depends on the batch), where the former
    0.08 without forecast gave 1.57x, 31.4 dB, +6.6%. On that model the fixed-schedule
    caches (interval-, schedule-cache) are ahead of every residual-cache setting in PSNR; at 8
    steps it computes nearly every step (1.13x), and forecast 1 costs PSNR there (26.0 vs 32.9 dB;
    benchmarks/forecast_steps.py).
    """

    threshold: float = 0.1
    front_blocks: int = 1
    back_blocks: int = 0
    warmup: int = 2
    max_consecutive: int | None = 3
    forecast: Forecast = 1

    kind = "cache"
    tunable = {"threshold": (0.05, 0.08, 0.12, 0.2, 0.35), "max_consecutive": (2, 4), "forecast": (0, 1)}

    def validate(self) -> None:
        check_range("threshold", self.threshold, 0.0)
        check_int("front_blocks", self.front_blocks, 1)
        check_int("back_blocks", self.back_blocks, 0)
        check_int("warmup", self.warmup, 0)
        if self.max_consecutive is not None:
            check_int("max_consecutive", self.max_consecutive, 1)
        check_forecast(self.forecast)

    def install(self, target: Target) -> "ResidualCache":
        n = len(target.blocks)
        if self.front_blocks + self.back_blocks >= n:
            raise ValueError(
                f"front_blocks + back_blocks must be < the model's {n} blocks (something must be cached), "
                f"got front_blocks={self.front_blocks}, back_blocks={self.back_blocks}"
            )
        return ResidualCache(target, self)


class ResidualCache(RunCache):
    # its irregular gaps: the horizon cap measured worse for the default at 20 DPM++ steps (29.1 vs
    # 33.9 dB, 16 images), so this cache forecasts uncapped, as before
    forecast_cap = False

    def __init__(self, target: Target, config: ResidualCacheConfig):
        super().__init__(target, "accel.residual-cache")
        self.model = target.model
        self.config = config
        self.forecast = config.forecast
        n = self.num_blocks
        self.head: Run = (0, config.front_blocks)
        self.middle: Run = (config.front_blocks, n - config.back_blocks)
        # identical ops on the head blocks, so the plan can switch once the head has run
        self.compute_plan = Plan(n, store=[self.head, self.middle])
        self.reuse_plan = Plan(n, skip=[self.middle], store=[self.head])
        self._smallest: float | None = None  # smallest relative change measured in this pipeline call

    def choose(self, info: StepInfo, state: BranchState) -> Plan:
        return self.compute_plan  # the decision comes in finished(head)

    @torch.compiler.disable  # the reuse decision syncs with the host (`.item()`): never traced
    def finished(self, run: Run, dh: torch.Tensor, de: torch.Tensor | None) -> None:
        if run != self.head:
            return super().finished(run, dh, de)
        cfg, state = self.config, self.state
        prev = state.head
        reuse = (
            cfg.threshold > 0
            and prev is not None
            and self.info.step >= cfg.warmup
            and self.middle in state.deltas
            and (cfg.max_consecutive is None or state.consecutive < cfg.max_consecutive)
        )
        if reuse and prev.shape != dh.shape:  # the batch changed within the call: compute, re-store
            self.counters.add(self.info.call, "shape_recomputes")
            reuse = False
        if reuse:
            change = self._relative_change(dh, prev)
            self._smallest = change if self._smallest is None else min(self._smallest, change)
            reuse = change < cfg.threshold
        if reuse:
            state.consecutive += 1
            self.switch(self.reuse_plan)
        else:
            state.consecutive = 0
            state.head = dh

    def _relative_change(self, r: torch.Tensor, prev: torch.Tensor) -> float:
        """mean|r - r_prev| / mean|r_prev| in float32 (bf16 safe), over the whole sequence: under context
        parallelism the sums are all-reduced over the ranks, so every rank decides the same."""
        sums = torch.stack([(r.float() - prev.float()).abs().sum(), prev.float().abs().sum()])
        num, den = sum_across_ranks(self.model, sums).tolist()
        return num / den if den else float("inf")

    def _on_end(self) -> None:
        """A call that reused nothing says so (few-step sampling changes more per step than the threshold)."""
        call, smallest, self._smallest = self._call, self._smallest, None
        if call is not None and smallest is not None and self.counters.get(call, "blocks_reused") == 0:
            steps = self.counters.get(call, "steps")
            self._warn(f"threshold {self.config.threshold} never met in {steps} steps (smallest relative change "
                       f"{smallest:.2f}): nothing reused, no speedup; at few steps use a higher threshold, or "
                       "delta-cache / schedule-cache")
        super()._on_end()

    def stats(self) -> dict[str, Any]:
        return {**super().stats(), "threshold": self.config.threshold}
