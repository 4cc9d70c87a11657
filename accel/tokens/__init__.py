"""Token compression inside transformer blocks: fewer image tokens through attention/MLP,
the full token set restored before each block's residual.

* `tome` (TomeConfig): ToMe/ToMeSD bipartite merging with unmerge.
* `diffrate` (DiffRateConfig): per-block kept-token rates learned by `accel diffrate`, merged like `tome`.
* `toca` (TocaConfig): token-wise feature caching, recompute the stalest / fastest-changing tokens.

Methods here are of kind "tokens": they stack with one block cache through one `accel.apply`.
"""

from .diffrate import DiffRateConfig
from .toca import TocaConfig
from .tome import TomeConfig

__all__ = ["DiffRateConfig", "TocaConfig", "TomeConfig"]
