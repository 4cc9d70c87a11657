"""`accel.apply` and the `Handle` it returns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .config import Installed, MethodConfig
from .context import ContextHook, CountHook, SchedulerProbe, StepTracker
from .errors import AlreadyAcceleratedError, UnsupportedMethodError, UnsupportedModelError
from .families import BlockRef, Family, blocks_of, family_of
from .hooks import HookSet, habitual_compile

CONTEXT_HOOK = "accel.context"
COUNT_HOOK = "accel.count"


@dataclass
class Target:
    """What a method installs onto: the transformer, its family, its blocks and the step tracker."""

    model: torch.nn.Module
    family: Family
    blocks: list[BlockRef]
    tracker: StepTracker
    pipeline: Any | None = None


def resolve(pipe_or_model: Any) -> tuple[Any | None, torch.nn.Module]:
    """(pipeline or None, transformer) of what the user handed over."""
    for m in (pipe_or_model, getattr(pipe_or_model, "transformer", None)):
        if type(m).__name__ == "OptimizedModule":  # torch.compile(transformer): the model sits in _orig_mod
            raise UnsupportedMethodError(habitual_compile(m, []))
    if isinstance(pipe_or_model, torch.nn.Module):
        family_of(pipe_or_model)
        return None, pipe_or_model
    model = getattr(pipe_or_model, "transformer", None)
    if isinstance(model, torch.nn.Module):
        for _, m in transformers_of(pipe_or_model):
            family_of(m)
        return pipe_or_model, model
    raise UnsupportedModelError(
        f"{type(pipe_or_model).__name__} is neither a diffusion transformer nor a pipeline with a "
        "`.transformer`; accel accelerates DiT-style pipelines (UNet pipelines are not supported)."
    )


def transformers_of(pipe: Any) -> list[tuple[str, torch.nn.Module]]:
    """(attribute, model) of every transformer a pipeline calls: `transformer`, then `transformer_2`, ...
    (Wan 2.2's high- and low-noise experts)."""
    out = []
    for name in ["transformer", *sorted(k for k in vars(pipe) if k.startswith("transformer_") and k[12:].isdigit())]:
        model = getattr(pipe, name, None)
        if isinstance(model, torch.nn.Module) and all(model is not m for _, m in out):
            out.append((name, model))
    return out


class Handle:
    """The accelerations applied to one model. `remove()` restores it exactly; usable as a context manager.

    A live handle is found again through the model's own context hook (`handle_of`), not a
    global table, so a pipeline the user drops is freed with its handle (hooks, model and
    handle form one garbage-collectable cycle). A handle is not thread-safe: one model
    with one handle runs one pipeline call at a time (the step context and cached tensors
    are per model); use one pipeline copy per thread.
    """

    def __init__(self, model: torch.nn.Module, pipeline: Any | None, configs: tuple[MethodConfig, ...]):
        self.model = model
        self.pipeline = pipeline
        self.configs = configs
        family = family_of(model)
        blocks = blocks_of(model)
        self._tracker = StepTracker(model, family, len(blocks))
        self.target = Target(model, family, blocks, self._tracker, pipeline)
        self._hooks = HookSet(model)
        self._scheduler_probe: SchedulerProbe | None = None
        self._installed: list[tuple[MethodConfig, Installed]] = []
        self._removed = False

    # -- installation -----------------------------------------------------------------------
    def check_compiled(self) -> None:
        """Refuse, in one line, a transformer compiled outside `accel.compile` (see `hooks.habitual_compile`)."""
        message = habitual_compile(self.model, [r.module for r in self.target.blocks], self.pipeline)
        if message is not None:
            raise UnsupportedMethodError(message)

    def _install(self) -> None:
        self.check_compiled()
        tracker = self._tracker
        for ref in self.target.blocks:  # innermost: counts only blocks that really run
            self._hooks.add(ref.module, CountHook(tracker), COUNT_HOOK)
        before = self._follow_scheduler if self.pipeline is not None else None
        self._hooks.add(self.model, ContextHook(tracker, before, handle=self), CONTEXT_HOOK)
        if self.pipeline is not None:
            self._follow_scheduler()
        for config in install_order(self.configs):
            self._installed.append((config, config.install(self.target)))

    def _follow_scheduler(self) -> None:
        """Keep the step probe on the pipeline's current scheduler (users swap schedulers)."""
        scheduler = getattr(self.pipeline, "scheduler", None)
        probe = self._scheduler_probe
        if probe is not None and probe.scheduler is scheduler:
            return
        if probe is not None:
            probe.remove()
        self._scheduler_probe = None
        if scheduler is None or not (hasattr(scheduler, "set_timesteps") and hasattr(scheduler, "step")):
            self._tracker.scheduler_driven = False  # fall back to reading timesteps
            return
        self._scheduler_probe = SchedulerProbe(scheduler, self._tracker)
        self._tracker.scheduler_driven = True
        if probe is not None:  # swapped in mid-life: its set_timesteps for this call already ran
            self._tracker.begin_call()
            self._tracker.read_schedule(scheduler)

    # -- public -----------------------------------------------------------------------------
    def remove(self) -> None:
        """Undo everything, in reverse order. Idempotent."""
        if self._removed:
            return
        self._removed = True
        try:
            for _, installed in reversed(self._installed):
                installed.remove()
            self._installed.clear()
        finally:
            if self._scheduler_probe is not None:
                self._scheduler_probe.remove()
                self._scheduler_probe = None
            self._hooks.remove()

    @property
    def active(self) -> bool:
        return not self._removed

    def stats(self) -> dict[str, Any]:
        """Counters per pipeline call and in total, plus each method's own counters under its CLI name."""
        tracker = self._tracker
        out: dict[str, Any] = {"calls": [dict(c, call=i) for i, c in enumerate(tracker.calls)],
                               "total": tracker.totals()}
        for config, installed in self._installed:
            out[config.cli_name] = installed.stats()
        return out

    def held_bytes(self) -> int:
        """Bytes of tensors accel holds for this model right now (cached offsets, call arguments).

        0 between pipeline calls of a pipeline (everything is freed after its last step); a
        bare transformer cannot say when a call ends, so its caches are freed at the next call.
        """
        return self._tracker.held_bytes() + sum(i.held_bytes() for _, i in self._installed)

    def reset_stats(self) -> None:
        self._tracker.reset_stats()
        for _, installed in self._installed:
            installed.reset_stats()

    def __enter__(self) -> "Handle":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.remove()

    def __repr__(self) -> str:
        return handle_repr(self, type(self.model).__name__)


def handle_repr(handle: Any, where: str) -> str:
    """`<accel.Handle interval-cache+tome on DiTTransformer2DModel (active)>` (also for PipelineHandle)."""
    names = "+".join(c.cli_name for c in handle.configs) or "baseline"
    state = "active" if handle.active else "removed"
    return f"<accel.{type(handle).__name__} {names} on {where} ({state})>"


def install_order(configs: tuple[MethodConfig, ...]) -> list[MethodConfig]:
    """Configs in the order their hooks are added: block caches last.

    A hook added later wraps the earlier ones on the same module, so a cache's block hook
    is the outermost: a block it skips never reaches the hooks of the methods that work
    inside blocks (token methods neither run nor count there), whatever the order of
    the configs given to `apply`.
    """
    return sorted(configs, key=lambda c: c.kind == "cache")


def apply(pipe_or_model: Any, *configs: MethodConfig) -> Handle:
    """Accelerate a diffusers pipeline (or its transformer) with the given method configs.

    With no configs only the counters are installed (the baseline of `accel bench`).
    Two configs of the same kind (e.g. two block caches) are refused; so is a model
    that already carries a live handle, and so is a method the model's family cannot run
    (`Family.check`). A pipeline that calls several transformers (Wan 2.2: `transformer`,
    `transformer_2`) gets one handle per transformer, returned together as an
    `accel.multi.PipelineHandle`. On any error the model is left untouched.
    """
    for c in configs:
        if not isinstance(c, MethodConfig):
            raise TypeError(f"accel.apply takes method configs (see accel.methods()), got {type(c).__name__}")
    kinds = [c.kind for c in configs if c.kind != "probe"]
    for kind in set(kinds):
        if kinds.count(kind) > 1:
            names = [c.cli_name for c in configs if c.kind == kind]
            raise ValueError(f"configs {names} are all of kind {kind!r}; stack at most one of each kind")
    pipeline, model = resolve(pipe_or_model)
    models = [m for _, m in transformers_of(pipeline)] if pipeline is not None else [model]
    for m in models:
        existing = handle_of(m)
        if existing is not None and existing.active:
            raise AlreadyAcceleratedError(
                f"{type(m).__name__} is already accelerated ({existing!r}). Call .remove() on that handle "
                "first, or pass all configs to one accel.apply(...) call to stack them."
            )
        for c in configs:  # what a family cannot do is refused before anything is installed
            family_of(m).check(c.kind, c.cli_name)
    handles: list[Handle] = []
    try:
        for m in models:  # one handle (step context, caches) per transformer the pipeline calls
            handles.append(Handle(m, pipeline, configs))
            handles[-1]._install()
    except BaseException:
        for h in reversed(handles):
            h.remove()
        raise
    if len(handles) == 1:
        return handles[0]
    from .multi import PipelineHandle

    return PipelineHandle(pipeline, handles)  # type: ignore[return-value]


def handle_of(model: torch.nn.Module) -> Handle | None:
    """The live accel handle on `model`, read from its context hook (None if not accelerated)."""
    registry = model.__dict__.get("_diffusers_hook")
    hook = registry.get_hook(CONTEXT_HOOK) if registry is not None else None
    return getattr(hook, "handle", None)
