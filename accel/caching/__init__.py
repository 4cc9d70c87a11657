"""Block caches: reuse what transformer blocks computed on earlier denoising steps.

* `delta-cache` (DeltaCacheConfig): Δ-DiT's stage-aware cache of a run's offset.
* `interval-cache` (IntervalCacheConfig): fixed schedule, whole-stack residual reuse.
* `residual-cache` (ResidualCacheConfig): adaptive, decided by the first blocks' residual.

All three are of kind "cache" (at most one per model) and share `_runs.RunCache`.
"""

from .delta_cache import DeltaCacheConfig
from .interval_cache import IntervalCacheConfig
from .residual_cache import ResidualCacheConfig

__all__ = ["DeltaCacheConfig", "IntervalCacheConfig", "ResidualCacheConfig"]
