"""Peer block caches (diffusers' hooks, cache-dit) wrapped as accel method configs, for benchmarks only.

Wrapping them as `MethodConfig`s lets `accel.eval.bench.run_bench` run peers and accel's own
methods through exactly the same paired loop (same seeds, same counters: accel's block
counters sit innermost on every block, so blocks a peer skips are not counted).

Stock DiT/PixArt/SD3/Sana pipelines set no diffusers cache context, which diffusers'
hooks need; the adapter sets one per transformer call from accel's step tracker
(named after the branch) and resets the peer's state at each new pipeline call.

cache-dit is an optional, benchmark-only dependency (`pip install cache-dit==1.5.3`, or the
`bench` extra), imported lazily; it is enabled on the pipeline before accel's hooks
(`apply_with_peers`), see `CacheDitDBCache`.
"""

from __future__ import annotations

import ast
import contextlib
import io
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from accel.config import Target
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
    """diffusers TaylorSeer on whole blocks (its default regex matches nothing on DiT/PixArt).

    SD3's last block (`context_pre_only`) returns `(None, hidden_states)`, which TaylorSeer's hook
    cannot store ("AttributeError: 'NoneType' object has no attribute 'dtype'"): such blocks are
    left out of `cache_identifiers` (they always run), unless `all_blocks` asks for every block.
    """

    cache_interval: int = 3
    disable_cache_before_step: int = 3
    max_order: int = 1
    all_blocks: bool = False
    cli_name = "diffusers-taylorseer"
    kind = "cache"

    def install(self, target: Target) -> Installed:
        from diffusers.hooks import TaylorSeerCacheConfig, apply_taylorseer_cache

        cfg = TaylorSeerCacheConfig(
            cache_interval=self.cache_interval, disable_cache_before_step=self.disable_cache_before_step,
            max_order=self.max_order, taylor_factors_dtype=torch.float32,
            cache_identifiers=[taylorseer_block_regex(target, self.all_blocks)],
        )
        return _DiffusersHooks(target, apply_taylorseer_cache, cfg, ("taylorseer_cache",))


def taylorseer_block_regex(target: Target, all_blocks: bool = False) -> str:
    """A regex matching every block name of the model's stacks, except (unless `all_blocks`) blocks
    with `context_pre_only` set, which return no text stream (SD3's last block)."""
    import re

    stacks = "|".join(s.attr for s in target.family.stacks)
    pre_only = [f"{r.stack.attr}.{r.index}" for r in target.blocks if getattr(r.module, "context_pre_only", False)]
    if all_blocks or not pre_only:
        return rf"^({stacks})\.\d+$"
    return rf"^(?!({'|'.join(re.escape(n) for n in pre_only)})$)({stacks})\.\d+$"


def docs_call_errors(pipe: Any) -> dict[str, str]:
    """What diffusers' documented call, `pipe.transformer.enable_cache(<Config>(...))`, does on this
    pipeline's transformer, per config class: "ok", or the exact error (models without diffusers' `CacheMixin`
    have no `enable_cache`). Enabled and disabled again at once; nothing is run."""
    from diffusers import FirstBlockCacheConfig, MagCacheConfig, TaylorSeerCacheConfig

    out = {}
    for cfg in (FirstBlockCacheConfig(threshold=0.1), TaylorSeerCacheConfig(cache_interval=3, disable_cache_before_step=3),
                MagCacheConfig(calibrate=True, num_inference_steps=8)):
        name = type(cfg).__name__
        try:
            pipe.transformer.enable_cache(cfg)
        except Exception as exc:  # noqa: BLE001 - the error is the result
            out[name] = f"{type(exc).__name__}: {exc}"
            continue
        pipe.transformer.disable_cache()
        out[name] = "ok"
    return out


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


def cache_dit_available() -> bool:
    """Whether the optional peer cache-dit is installed (`pip install cache-dit==1.5.3`)."""
    import importlib.util

    return importlib.util.find_spec("cache_dit") is not None


def stock_dit_pipeline(pipe: Any) -> Any:
    """The same components in a plain `diffusers.DiTPipeline`.

    cache-dit recognises pipelines by class name and refuses subclasses such as the default
    model's `DigitsDiTPipeline` ("DigitsDiTPipeline is not officially supported by cache-dit,
    please set BlockAdapter instead!"). Calls that pass guidance and steps explicitly (every
    benchmark call does) give identical images in both.
    """
    from diffusers import DiTPipeline

    id2label = {int(v): k for k, v in getattr(pipe, "labels", {}).items()} or None
    stock = DiTPipeline(transformer=pipe.transformer, vae=pipe.vae, scheduler=pipe.scheduler, id2label=id2label)
    stock.set_progress_bar_config(disable=True)
    return stock


@dataclass(frozen=True)
class CacheDitDBCache(MethodConfig):
    """cache-dit DBCache: compute the first Fn and last Bn blocks, reuse the middle below a threshold;
    optionally with one of cache-dit's calibrators (forecasting the reused residual) and a steps-computation
    mask (SCM).

    - `taylorseer_order` > 0 (or `calibrator="taylorseer"`): `TaylorSeerCalibratorConfig(taylorseer_order=...)`;
    - `calibrator="dmd"`: `DMDCalibratorConfig()` (its exponential-basis / Prony fit, documented defaults:
      history 6, rank from the spectrum, falls back to Taylor below 4 snapshots);
    - `calibrator="foca"`: `FoCaCalibratorConfig()` (forecast-then-calibrate; no hyper-parameters);
    - `scm` ("slow", "medium", "fast", "ultra"): `steps_computation_mask=cache_dit.steps_mask(mask_policy=scm,
      total_steps=steps)` with `steps_computation_policy=scm_policy`: steps marked 1 always compute; steps marked
      0 reuse always ("static") or when the residual is below the threshold ("dynamic"). cache-dit truncates its
      warm-up to the mask's first compute run.

    Enabled the way cache-dit's docs do it, on the whole pipeline:
    `cache_dit.enable_cache(pipe, cache_config=DBCacheConfig(...), calibrator_config=...)`.
    That must happen BEFORE accel's hooks wrap the transformer's forward: cache-dit's DiT patch
    functor replaces that forward, and a forward captured earlier by a hook would still read
    `transformer_blocks[0].norm1` from cache-dit's `CachedBlocks` (AttributeError). So this is
    not installed by `accel.apply`: use `apply_with_peers`, which enables it first and then
    puts accel's counters (innermost on every block, so skipped blocks are not counted) on top.
    """

    Fn: int = 1
    Bn: int = 0
    threshold: float = 0.08
    warmup: int = 8
    max_continuous_cached_steps: int = -1
    taylorseer_order: int = 0
    # cache-dit's calibrators also forecast the text stream by default; SD3's last block
    # (context_pre_only) returns no text, and that default fails on the first reused step (AssertionError:
    # State 'transformer_blocks_Bn_residual' not found). False is its documented switch for that stream.
    encoder_calibrator: bool = True
    calibrator: str = ""  # "", "taylorseer", "dmd", "foca"
    scm: str = ""  # steps_mask's mask_policy: "", "slow", "medium", "fast", "ultra"
    scm_policy: str = "dynamic"  # steps_computation_policy: "dynamic" or "static"
    steps: int = 0  # total_steps of the mask (the workload's steps; needed with `scm`)
    cli_name = "cache-dit-dbcache"
    kind = "cache"
    enable_before_accel = True

    def install(self, target: Target) -> Installed:
        raise ValueError("cache-dit must be enabled before accel's hooks: use peers.apply_with_peers(pipe, configs)")

    def configs(self) -> tuple[Any, dict]:
        """cache-dit's documented config objects: `(DBCacheConfig, {"calibrator_config": ...} or {})`."""
        import cache_dit

        mask = {}
        if self.scm:
            if self.steps <= 0:
                raise ValueError("CacheDitDBCache: scm needs steps (the mask's total_steps)")
            mask = dict(steps_computation_mask=cache_dit.steps_mask(mask_policy=self.scm, total_steps=self.steps),
                        steps_computation_policy=self.scm_policy)
        cfg = cache_dit.DBCacheConfig(
            Fn_compute_blocks=self.Fn, Bn_compute_blocks=self.Bn, residual_diff_threshold=self.threshold,
            max_warmup_steps=self.warmup, max_continuous_cached_steps=self.max_continuous_cached_steps, **mask,
        )
        kind = self.calibrator or ("taylorseer" if self.taylorseer_order else "")
        enc = dict(enable_encoder_calibrator=self.encoder_calibrator)
        calibrators = {
            "taylorseer": lambda: cache_dit.TaylorSeerCalibratorConfig(
                taylorseer_order=self.taylorseer_order or 1, **enc),
            "dmd": lambda: cache_dit.DMDCalibratorConfig(**enc),
            "foca": lambda: cache_dit.FoCaCalibratorConfig(**enc),
        }
        if kind and kind not in calibrators:
            raise ValueError(f"CacheDitDBCache: unknown calibrator {kind!r}; known: {sorted(calibrators)}")
        return cfg, ({"calibrator_config": calibrators[kind]()} if kind else {})

    def enable(self, pipe: Any) -> Callable[[], None]:
        """Enable cache-dit on `pipe`; returns the undo (`cache_dit.disable_cache(pipe)`)."""
        import cache_dit

        _quiet_cache_dit()
        cfg, extra = self.configs()
        model = pipe.transformer
        order = list(model._modules)
        cache_dit.enable_cache(pipe, cache_config=cfg, **extra)

        def undo() -> None:
            cache_dit.disable_cache(pipe)
            # cache-dit's DiT patch (kept after disable) registers `_norm1_emb` (block 0's norm1.emb) and
            # re-registers `transformer_blocks` last: same modules and weights, but `parameters()` order
            # changes, and with it schedule-cache's model fingerprint. Put the original modules first again.
            mods = model._modules
            keys = [k for k in order if k in mods] + [k for k in mods if k not in order]
            if list(mods) != keys:
                items = [(k, mods.pop(k)) for k in keys]
                mods.update(items)

        return undo


def _quiet_cache_dit() -> None:
    """cache-dit logs every enable/disable at INFO (and "already patched" at WARNING) through one shared handler; keep errors."""
    import logging

    from cache_dit import logger as cd_logger

    handler = getattr(cd_logger, "_default_handler", None)
    if handler is not None:
        handler.setLevel(logging.ERROR)


class PeerHandle:
    """accel's handle plus the undo of peers enabled before it (removed in reverse order)."""

    def __init__(self, handle: Any, undo: list[Callable[[], None]]):
        self.handle, self.undo = handle, undo

    def stats(self) -> dict:
        return self.handle.stats()

    def remove(self) -> None:
        try:
            self.handle.remove()
        finally:
            while self.undo:
                self.undo.pop()()


def apply_with_peers(pipe: Any, configs: Sequence[Any]) -> PeerHandle:
    """`accel.apply(pipe, *configs)`, except that configs with `enable_before_accel` (cache-dit)
    are enabled on the pipeline first; accel's block counters then count what really runs."""
    import accel

    undo = []
    try:
        for c in configs:
            if getattr(c, "enable_before_accel", False):
                undo.append(c.enable(pipe))
        handle = accel.apply(pipe, *[c for c in configs if not getattr(c, "enable_before_accel", False)])
    except BaseException:
        while undo:
            undo.pop()()
        raise
    return PeerHandle(handle, undo)
