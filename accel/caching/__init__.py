"""Block caches: reuse what transformer blocks computed on earlier denoising steps.

* `delta-cache` (DeltaCacheConfig): Δ-DiT's stage-aware cache of a run's offset.
* `interval-cache` (IntervalCacheConfig): fixed schedule, whole-stack residual reuse.
* `residual-cache` (ResidualCacheConfig): adaptive, decided by the first blocks' residual.
* `schedule-cache` (ScheduleCacheConfig): the best steps to compute for a budget, from a
  calibration of the user's model and sampler.

Every one of them can forecast its offsets (`forecast=1|2`) instead of reusing them.

All are of kind "cache" (at most one per model) and share `_runs.RunCache`.
"""

from .delta_cache import DeltaCacheConfig
from .interval_cache import IntervalCacheConfig
from .residual_cache import ResidualCacheConfig
from .schedule_cache import ScheduleCacheConfig, calibrate_schedule

__all__ = ["DeltaCacheConfig", "IntervalCacheConfig", "ResidualCacheConfig", "ScheduleCacheConfig",
           "calibrate_schedule"]
