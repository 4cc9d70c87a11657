"""Peer block caches (diffusers' hooks, cache-dit) wrapped as accel method configs, for benchmarks only.

Wrapping them as `MethodConfig`s lets `accel.eval.bench.run_bench` run peers and accel's own
methods through exactly the same paired loop (same seeds, same counters: accel's block
counters sit innermost on every block, so blocks a peer skips are not counted).

Stock DiT/PixArt/SD3/Sana pipelines set no diffusers cache context, which diffusers'
hooks need; the adapter sets one per transformer call from accel's step tracker
(named after the branch) and resets the peer's state at each new pipeline call.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import io
from dataclasses import dataclass
from typing import Any

import torch

from accel.api import Target
from accel.config import Installed, MethodConfig


class _DiffusersHooks(Installed):
    """Peer hooks installed by a diffusers `apply_*` function, with the cache context they need."""

    def __init__(self, target: Target, apply_fn, config, hook_names: tuple[str, ...]):
        from diffusers.hooks import HookRegistry
        from diffusers.hooks.hooks import CacheContext, _set_cache_context

        self.model = target.model
        self.hook_names = hook_names
        self._listeners = target.tracker.listeners
        apply_fn(self.model, config)
        self.registry = HookRegistry.check_if_exists_or_initialize(self.model)
        self.registry.invalidate_child_registries_cache()
        self._call = None

        def on_call(info) -> None:
            if info.call != self._call:  # new pipeline call: fresh peer state
                self._call = info.call
                self.registry.reset_stateful_hooks(recurse=True)
            _set_cache_context(self.model, CacheContext(info.branch_name))

        self._on_call = on_call
        self._listeners.append(on_call)

    def remove(self) -> None:
        from diffusers.hooks.hooks import _set_cache_context

        if self._on_call in self._listeners:
            self._listeners.remove(self._on_call)
            _set_cache_context(self.model, None)
            for name in self.hook_names:
                self.registry.remove_hook(name, recurse=True)
            self.registry.invalidate_child_registries_cache()


@dataclass(frozen=True)
class DiffusersFBC(MethodConfig):
    """diffusers FirstBlockCache: block 0's residual change below `threshold` -> reuse the rest."""

    threshold: float = 0.05
    cli_name = "diffusers-fbc"
    kind = "cache"

    def install(self, target: Target) -> Installed:
        from diffusers.hooks import FirstBlockCacheConfig, apply_first_block_cache

        return _DiffusersHooks(target, apply_first_block_cache, FirstBlockCacheConfig(threshold=self.threshold),
                               ("fbc_leader_block_hook", "fbc_block_hook"))


@dataclass(frozen=True)
class DiffusersTaylorSeer(MethodConfig):
    """diffusers TaylorSeer on whole blocks (its default regex matches nothing on DiT/PixArt)."""

    cache_interval: int = 3
    disable_cache_before_step: int = 3
    max_order: int = 1
    cli_name = "diffusers-taylorseer"
    kind = "cache"

    def install(self, target: Target) -> Installed:
        from diffusers.hooks import TaylorSeerCacheConfig, apply_taylorseer_cache

        stacks = "|".join(s.attr for s in target.family.stacks)
        cfg = TaylorSeerCacheConfig(
            cache_interval=self.cache_interval, disable_cache_before_step=self.disable_cache_before_step,
            max_order=self.max_order, taylor_factors_dtype=torch.float32,
            cache_identifiers=[rf"^({stacks})\.\d+$"],
        )
        return _DiffusersHooks(target, apply_taylorseer_cache, cfg, ("taylorseer_cache",))


@dataclass(frozen=True)
class DiffusersMagCache(MethodConfig):
    """diffusers MagCache; `mag_ratios` come from its own calibration run (see `calibrate_magcache`)."""

    threshold: float = 0.06
    max_skip_steps: int = 3
    retention_ratio: float = 0.2
    num_inference_steps: int = 50
    mag_ratios: tuple = ()
    cli_name = "diffusers-magcache"
    kind = "cache"

    def install(self, target: Target) -> Installed:
        from diffusers.hooks import MagCacheConfig, apply_mag_cache

        cfg = MagCacheConfig(
            threshold=self.threshold, max_skip_steps=self.max_skip_steps, retention_ratio=self.retention_ratio,
            num_inference_steps=self.num_inference_steps, mag_ratios=list(self.mag_ratios) or None,
            calibrate=not self.mag_ratios,
        )
        return _DiffusersHooks(target, apply_mag_cache, cfg, ("mag_cache_leader_block_hook", "mag_cache_block_hook"))

    def as_dict(self) -> dict[str, Any]:
        d = super().as_dict()
        d["mag_ratios"] = f"{len(self.mag_ratios)} calibrated ratios"
        return d


def calibrate_magcache(pipe: Any, run_once, steps: int) -> tuple:
    """Run diffusers' MagCache calibration once (no skipping) and parse the ratios it prints."""
    import accel

    buf = io.StringIO()
    with accel.apply(pipe, DiffusersMagCache(num_inference_steps=steps)), contextlib.redirect_stdout(buf):
        run_once()
    lines = [ln for ln in buf.getvalue().splitlines() if ln.startswith("[")]
    if not lines:
        raise RuntimeError("MagCache calibration printed no ratios")
    return tuple(float(x) for x in ast.literal_eval(lines[-1]))


class _AsMethod:
    """Lets cache-dit's `_original_forward.__get__(model)` work when that forward is the
    `functools.partial` that diffusers' HookRegistry (accel's step context) installed."""

    def __init__(self, fn: Any):
        self.fn = fn

    def __get__(self, obj: Any, cls: Any = None) -> Any:
        return self.fn


class _CacheDiT(Installed):
    def __init__(self, pipeline: Any, config):
        import cache_dit

        self.pipeline = pipeline
        cache_dit.enable_cache(pipeline, cache_config=config)

    def remove(self) -> None:
        import cache_dit

        if self.pipeline is not None:
            model = self.pipeline.transformer
            original = model.__dict__.get("_original_forward")
            if isinstance(original, functools.partial):
                model._original_forward = _AsMethod(original)
            cache_dit.disable_cache(self.pipeline)
            self.pipeline = None


@dataclass(frozen=True)
class CacheDitDBCache(MethodConfig):
    """cache-dit DBCache: compute the first Fn and last Bn blocks, reuse the middle below a threshold."""

    Fn: int = 1
    Bn: int = 0
    threshold: float = 0.08
    warmup: int = 8
    max_continuous_cached_steps: int = -1
    cli_name = "cache-dit-dbcache"
    kind = "cache"

    def install(self, target: Target) -> Installed:
        from cache_dit import DBCacheConfig

        if target.pipeline is None:
            raise ValueError("cache-dit patches a pipeline: pass the pipeline to accel.apply")
        cfg = DBCacheConfig(
            Fn_compute_blocks=self.Fn, Bn_compute_blocks=self.Bn, residual_diff_threshold=self.threshold,
            max_warmup_steps=self.warmup, max_continuous_cached_steps=self.max_continuous_cached_steps,
        )
        return _CacheDiT(target.pipeline, cfg)
