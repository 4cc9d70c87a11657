"""`accel.compile`: torch.compile a pipeline's transformer(s) so that accel's hooks stay outside the graphs.

accel's block and context hooks make host-side decisions (step and branch bookkeeping,
schedules, thresholds with `.item()`, Python counters). Traced by Dynamo, every such
Python int becomes a guard that changes with the step, so each pipeline call recompiles
(measured: `benchmarks/compile.py`). So:

* `regional=True` (default) compiles each transformer block's *own* forward, below every
  hook on the block (accel's, and any other diffusers hook such as group offloading): the
  blocks are the compiled regions, the decisions between them run in Python. Blocks of
  one class share their graph (Dynamo inlines module parameters as inputs), so a model
  compiles one graph per block class and input shape. This is diffusers'
  `compile_repeated_blocks` without its `_repeated_blocks` attribute, which DiT, PixArt,
  SD3 and Sana lack (`accel.families` knows where every family's blocks are). Token methods
  hook the attention / MLP inside blocks, so with one installed the regions are those
  sub-layers and the block's own code between them runs eagerly.
* `regional=False` compiles the whole transformer (`model.compile(...)`, hooks included).
  accel's hook decisions are `torch.compiler.disable`d, so Dynamo breaks the graph at the
  hooked blocks and compiles the pieces: same images and no retracing on later calls, but
  5-18 graph breaks and, on the 12-block default model, Dynamo's recompile limit reached once
  with every cache (diffusers' hook frame is shared by all hooked modules; past the limit it
  runs uncompiled). Prefer `regional=True`.

Order does not matter: `accel.compile` before or after `accel.apply` (the compiled
forward sits at the bottom of the module's hook chain either way). `.remove()` on the
returned handle restores the uncompiled forwards.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch

from .families import BlockRef, blocks_of, resolve, sublayers_of, transformers_of
from .hooks import COMPILED as _MARK
from .hooks import COMPILED_WHOLE


def _bottom(module: torch.nn.Module) -> tuple[Any, str, Any]:
    """(holder, attribute, forward) of the innermost forward of `module`: below all diffusers hooks."""
    registry = module.__dict__.get("_diffusers_hook")
    refs = getattr(registry, "_fn_refs", None) if registry is not None else None
    if refs:
        ref = refs[0]
        attr = "original_forward" if ref.original_forward is not None else "forward"
        return ref, attr, getattr(ref, attr)
    return module, "forward", module.forward


def _compile_below_hooks(module: torch.nn.Module, kwargs: dict, owner: "Compiled") -> None:
    """Replace the innermost forward of `module` (under its hooks) by its torch.compile'd version."""
    if _MARK in module.__dict__:
        return
    holder, attr, forward = _bottom(module)
    compiled = torch.compile(forward, **kwargs)
    setattr(holder, attr, compiled)
    module.__dict__[_MARK] = (forward, compiled, kwargs, owner)
    owner.modules.append(module)


def _uncompile(module: torch.nn.Module) -> None:
    """Undo `_compile_below_hooks` wherever the compiled forward now sits in the hook chain."""
    mark = module.__dict__.pop(_MARK, None)
    if mark is None:
        return
    original, compiled = mark[0], mark[1]
    registry = module.__dict__.get("_diffusers_hook")
    for ref in getattr(registry, "_fn_refs", None) or []:
        for attr in ("original_forward", "forward"):
            if getattr(ref, attr) is compiled:
                setattr(ref, attr, original)
    if module.__dict__.get("forward") is compiled:
        if getattr(original, "__self__", None) is module and getattr(original, "__func__", None) is type(module).forward:
            del module.__dict__["forward"]  # it was the class's own forward
        else:
            module.forward = original


def _hooked(module: torch.nn.Module) -> bool:
    registry = module.__dict__.get("_diffusers_hook")
    return registry is not None and bool(registry._hook_order)


def _regions(ref: BlockRef) -> list[torch.nn.Module]:
    """What to compile in one block: the block, or its sub-layers when hooks sit on them (token methods).

    A compiled block that calls hooked sub-layers would guard on each block's own hook
    objects and recompile once per block; compiling below the sub-layers' hooks does not.
    """
    subs = list(sublayers_of(ref).values())
    return subs if any(_hooked(m) for m in subs) else [ref.module]


def split_regions(blocks: list[BlockRef]) -> None:
    """After hooks were added to the sub-layers of compiled blocks: compile the sub-layers instead.

    Called by the token methods at install, so `accel.compile` then `accel.apply` gives the
    same regions as the other order.
    """
    for ref in blocks:
        mark = ref.module.__dict__.get(_MARK)
        if mark is None or _regions(ref) == [ref.module]:
            continue
        kwargs, owner = mark[2], mark[3]
        _uncompile(ref.module)
        owner.modules.remove(ref.module)
        for module in _regions(ref):
            _compile_below_hooks(module, kwargs, owner)


class Compiled:
    """What `accel.compile` changed; `.remove()` restores the uncompiled model(s).

    models: every transformer compiled (a Wan 2.2 pipeline: `transformer` and `transformer_2`);
    `model` is the first of them.
    """

    def __init__(self, models: list[torch.nn.Module], regional: bool):
        self.models, self.regional = list(models), regional
        self.model = self.models[0]
        self.modules: list[torch.nn.Module] = []  # the compiled regions

    def remove(self) -> None:
        if not self.regional:
            for model in self.models:
                model._compiled_call_impl = None
                model.__dict__.pop(COMPILED_WHOLE, None)
        for module in self.modules:
            _uncompile(module)
        self.modules = []

    def __enter__(self) -> "Compiled":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.remove()

    def __repr__(self) -> str:
        how = f"regional, {len(self.modules)} regions" if self.regional else "whole model"
        return f"<accel.Compiled {', '.join(type(m).__name__ for m in self.models)} ({how})>"


def compile(pipe_or_model: Any, regional: bool = True, **torch_compile_kwargs: Any) -> Compiled:  # noqa: A001
    """torch.compile every transformer `accel.apply` would accelerate (a pipeline's `transformer`,
    `transformer_2`, ..., or the transformer itself); see the module docstring.

    `torch_compile_kwargs` go to `torch.compile` (backend, mode, dynamic, fullgraph...).
    Returns a handle whose `.remove()` restores the uncompiled forwards. Compiling again what is
    already compiled changes nothing and says so (a warning).
    """
    pipeline, model = resolve(pipe_or_model)
    models = [m for _, m in transformers_of(pipeline)] if pipeline is not None else [model]
    handle = Compiled(models, regional)
    done = [m for m in models if _compiled(m)]
    if done:
        names = ", ".join(type(m).__name__ for m in done)
        warnings.warn(f"accel.compile: {names} already compiled by an earlier accel.compile, left as it is "
                      "(call .remove() on that handle to compile it again with other settings)", stacklevel=2)
    for m in models:
        if m in done:
            continue
        if not regional:
            m.compile(**torch_compile_kwargs)
            m.__dict__[COMPILED_WHOLE] = True  # not the user's habitual compile (hooks.habitual_compile)
            continue
        for ref in blocks_of(m):
            for module in _regions(ref):
                _compile_below_hooks(module, dict(torch_compile_kwargs), handle)
    if not regional:  # the handle undoes only what it compiled
        handle.models = [m for m in models if m not in done]
    return handle


def _compiled(model: torch.nn.Module) -> bool:
    """`model` (or one of its blocks' regions) is compiled by an `accel.compile` that was not removed."""
    if getattr(model, "_compiled_call_impl", None) is not None:
        return True
    return any(_MARK in m.__dict__ for m in model.modules())
