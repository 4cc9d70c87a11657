"""`toca`: token-wise feature caching (ToCa) inside every transformer block.

A full step every `interval` steps (after `warmup` full steps) computes every
sub-layer (attention, cross-attention, token-wise MLP) on all image tokens and keeps
its output per CFG branch. On the steps between, each block recomputes only the
`recompute` fraction of its image tokens with the highest score: the sub-layer runs on
those tokens alone (with all text tokens; Flux rotary rows follow them) and their
fresh outputs overwrite the cached ones; the other tokens reuse their cached output.
The block's gate and residual always run on the fresh step (only sub-layer outputs
are cached), so the timestep modulation stays current. Recomputed self-attention
queries attend to all current tokens (keys/values from every token, through the
family's `attention_kv_arg`: DiT, PixArt, Sana); where the attention has no such
argument (SD3/Flux joint attention) it is computed in full every step and only the
MLP (and cross-attention) are cached token-wise.

Score of a token = staleness + importance:
* staleness: steps since the token was last recomputed, divided by `interval`;
* importance: how much the token's attention output changed between its last two
  computations (relative L2), normalised to mean 1 per sample, times `importance`.
  Chosen over "attention received" because it needs no attention map (SDPA, flash
  and Sana's linear attention never materialise one; computing q·k again would cost
  an extra N² pass) and it measures directly what reusing a token gets wrong: how
  fast its feature drifts.
Selection is spread over the image: a `spread` share of the recomputed tokens is the
best-scoring token of each window of a uniform grid of windows, the rest the
best-scoring tokens anywhere, so no region goes stale.

State is per CFG branch and dropped at every new pipeline call; `interval=1` computes
every step in full and is bit-identical to the model. The full/partial schedule counts,
per block, the steps on which the block is computed: alone that is every step; stacked
with a block cache the steps the cache skips the block do not count, so each block
still gets a full step every `interval` of its computed steps (counting denoising steps
instead, a cache that skips the full steps would leave the token cache stale for good).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from ..config import MethodConfig, Target, check_int, check_range, register_method
from ..context import StepInfo
from ..families import SUBLAYERS, BlockRef, mergeable
from ._sublayers import BlockCall, SublayerHook, TokenCompressor
from .merge import Matching


@register_method("toca")
@dataclass(frozen=True)
class TocaConfig(MethodConfig):
    """`toca`: token-wise feature caching; between full steps recompute only the stalest, fastest-changing tokens.

    Example::

        import accel

        pipe = accel.default_pipeline()
        with accel.apply(pipe, accel.TocaConfig(interval=3, recompute=0.3, warmup=2, spread=0.5)) as handle:
            images = pipe(class_labels=[3, 7], num_inference_steps=20).images
            print(handle.stats()["toca"]["total"])

    interval: a full step every `interval` steps (1 = always full: identical model).
    recompute: fraction of image tokens recomputed per block on the steps between, (0, 1].
    warmup: leading steps that are always full.
    importance: weight of the change-based importance term next to staleness (0 = staleness only).
    spread: share of the recomputed tokens picked one per window of a uniform grid, [0, 1].
    """

    interval: int = 3
    recompute: float = 0.3
    warmup: int = 2
    importance: float = 1.0
    spread: float = 0.5

    kind = "tokens"
    tunable = {"interval": (2, 3, 4), "recompute": (0.2, 0.3, 0.5)}

    def validate(self) -> None:
        check_int("interval", self.interval, 1)
        check_range("recompute", self.recompute, 0, 1, lo_open=True)
        check_int("warmup", self.warmup, 0)
        check_range("importance", self.importance, 0)
        check_range("spread", self.spread, 0, 1)

    def install(self, target: Target) -> "Toca":
        kinds = {ref.global_index: tuple(k for k in SUBLAYERS if mergeable(ref, k) is None
                                         and (k != "attention" or ref.stack.attention_kv_arg))
                 for ref in target.blocks}
        return Toca(target, self, kinds)


class _BlockCache:
    """One block's cached sub-layer outputs and per-token bookkeeping, for one branch."""

    __slots__ = ("outputs", "age", "change", "step", "computed")

    def __init__(self) -> None:
        self.step: int | None = None  # the last step on which the block was computed
        self.computed = 0  # steps on which the block was computed so far (this call and branch)
        self.outputs: dict[str, torch.Tensor] = {}
        self.age: torch.Tensor | None = None  # (B, N) steps since last recomputed
        self.change: torch.Tensor | None = None  # (B, N) relative change at the last recompute


class Toca(TokenCompressor):
    observes = True
    full_keys = True

    def __init__(self, target: Target, config: TocaConfig, kinds: dict[int, tuple[str, ...]]):
        self.config = config
        self._call = -1
        self._branches: dict[int, dict[int, _BlockCache]] = {}
        super().__init__(target, "accel.toca", kinds)

    # -- schedule ---------------------------------------------------------------------------
    def full_step(self, step: int) -> bool:
        c = self.config
        return c.interval == 1 or step < c.warmup or (step - c.warmup) % c.interval == 0

    def _cache(self, info: StepInfo | None, block: int) -> _BlockCache:
        call, branch = (info.call, info.branch) if info is not None else (0, 0)
        if call != self._call:  # a new pipeline call: nothing carries over
            self._branches.clear()
            self._call = call
        return self._branches.setdefault(branch, {}).setdefault(block, _BlockCache())

    def tokens_to_merge(self, ref: BlockRef, info: StepInfo | None, n: int) -> int:
        cache = self._cache(info, ref.global_index)  # resets state on a new pipeline call
        step = info.step if info is not None else 0
        if step != cache.step:  # only computed blocks get here (block caches wrap token methods)
            cache.step = step
            cache.computed += 1
        if self.full_step(cache.computed - 1) or not self.merge_kinds.get(ref.global_index):
            return 0
        return n - max(1, math.ceil(self.config.recompute * n))

    # -- selection --------------------------------------------------------------------------
    def match(self, call: BlockCall, tokens: torch.Tensor) -> Matching:
        cache = self._cache(call.info, call.ref.global_index)
        b, n, _ = tokens.shape
        kinds = self.merge_kinds[call.ref.global_index]
        fits = cache.age is not None and cache.age.shape == (b, n) and all(
            k in cache.outputs and cache.outputs[k].shape[:2] == (b, n) for k in kinds)
        arange = torch.arange(n, device=tokens.device).expand(b, n)
        if not fits:  # no cache for this batch yet: compute in full (and cache it)
            return Matching(arange, arange, torch.ones_like(arange))
        k = n - call.r
        keep = self.select(cache, k, self.token_grid())
        cache.age += 1
        cache.age.scatter_(1, keep, 0)
        return Matching(keep, arange, torch.ones_like(keep))

    def select(self, cache: _BlockCache, k: int, grid: tuple[int, ...]) -> torch.Tensor:
        """(B, k) indices, ascending, of the tokens to recompute."""
        c = self.config
        score = (cache.age.float() + 1) / c.interval
        if c.importance and cache.change is not None:
            change = cache.change / cache.change.mean(dim=1, keepdim=True).clamp_min(1e-12)
            score = score + c.importance * change
        b, n = score.shape
        chosen = torch.zeros(b, n, dtype=torch.bool, device=score.device)
        rows, cols = grid if len(grid) == 2 else (grid[0] * grid[1], grid[2])  # video: frames' rows stacked
        k_spread = int(k * c.spread)
        if k_spread > 0 and rows * cols == n:
            w = max(1, math.ceil(math.sqrt(n / k_spread)))
            hs, ws = rows // w, cols // w
            if hs and ws:
                win = score.view(b, rows, cols)[:, : hs * w, : ws * w].reshape(b, hs, w, ws, w)
                win = win.permute(0, 1, 3, 2, 4).reshape(b, hs * ws, w * w)
                arg = win.argmax(dim=-1)  # (B, windows) best token of each window
                wr = torch.arange(hs, device=score.device).repeat_interleave(ws) * w + arg // w
                wc = torch.arange(ws, device=score.device).repeat(hs) * w + arg % w
                chosen.scatter_(1, wr * cols + wc, True)
        rest = k - int(chosen[0].sum())
        if rest > 0:
            extra = score.masked_fill(chosen, float("-inf")).topk(rest, dim=1).indices
            chosen.scatter_(1, extra, True)
        return chosen.nonzero()[:, 1].reshape(b, k)

    # -- outputs ----------------------------------------------------------------------------
    def extra_kwargs(self, hook: SublayerHook, tokens: torch.Tensor) -> dict[str, Any]:
        """Recomputed self-attention queries attend to all current tokens, not just each other."""
        arg = hook.ref.stack.attention_kv_arg if hook.kind == "attention" else None
        return {arg: tokens} if arg else {}

    def compress(self, tokens: torch.Tensor, m: Matching) -> torch.Tensor:
        return tokens.gather(1, m.keep.unsqueeze(-1).expand(*m.keep.shape, tokens.shape[-1]))

    def restore(self, call: BlockCall, hook: SublayerHook, out: torch.Tensor, m: Matching) -> torch.Tensor:
        cache = self._cache(call.info, call.ref.global_index)
        old = cache.outputs[hook.kind]
        idx = m.keep.unsqueeze(-1).expand(*m.keep.shape, out.shape[-1])
        if hook.kind == self.merge_kinds[call.ref.global_index][0]:
            prev = old.gather(1, idx)
            rel = (out - prev).float().norm(dim=-1) / prev.float().norm(dim=-1).clamp_min(1e-12)
            cache.change = rel.new_zeros(old.shape[:2]) if cache.change is None else cache.change
            cache.change.scatter_(1, m.keep, rel)
        new = old.scatter(1, idx, out.to(old.dtype))
        cache.outputs[hook.kind] = new
        return new

    def observe(self, call: BlockCall, hook: SublayerHook, out: torch.Tensor) -> None:
        if not hook.merges or self.config.interval == 1:
            return
        cache = self._cache(call.info, call.ref.global_index)
        old = cache.outputs.get(hook.kind)
        if hook.kind == self.merge_kinds[call.ref.global_index][0]:
            if old is not None and old.shape == out.shape:
                cache.change = (out - old).float().norm(dim=-1) / old.float().norm(dim=-1).clamp_min(1e-12)
            else:
                cache.change = None
            cache.age = torch.zeros(out.shape[:2], dtype=torch.long, device=out.device)
        cache.outputs[hook.kind] = out.detach()

    def remove(self) -> None:
        super().remove()
        self._branches.clear()

    def stats(self) -> dict[str, Any]:
        out = super().stats()
        total = out["total"]
        tin = sum(v for k, v in total.items() if k.endswith(".tokens_in"))
        tout = sum(v for k, v in total.items() if k.endswith(".tokens_out"))
        out.update(interval=self.config.interval, recompute=self.config.recompute,
                   recomputed_tokens=tout, reused_tokens=tin - tout)
        return out
