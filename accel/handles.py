"""The handles `accel.apply` returns: `Handle` (the accelerations of one transformer) and
`PipelineHandle` (those of a pipeline that calls several transformers).

Wan 2.2 runs a high-noise expert (`pipe.transformer`) on the first steps and a low-noise
expert (`pipe.transformer_2`) on the rest. Each transformer gets its own `Handle`: its own
step tracker (steps are the pipeline's, read from the shared scheduler, so the second
expert's first call is at step k, not 0), its own caches and counters. A `PipelineHandle`
removes, resets and reports them together.
"""

from __future__ import annotations

from typing import Any

import torch

from .config import Installed, MethodConfig, Target
from .context import ContextHook, CountHook, SchedulerProbe, StepTracker
from .families import blocks_of, family_of, transformers_of
from .errors import UnsupportedMethodError
from .hooks import HookSet, habitual_compile

CONTEXT_HOOK = "accel.context"
COUNT_HOOK = "accel.count"


class _Removable:
    """A context manager that calls `self.remove()` on exit."""

    def remove(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.remove()


class Handle(_Removable):
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
        note = preset_note(self)
        if note:
            out["preset"] = note
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

    def __repr__(self) -> str:
        return handle_repr(self, type(self.model).__name__)


def handle_repr(handle: Any, where: str) -> str:
    """`<accel.Handle interval-cache+tome on DiTTransformer2DModel (active)>` (also for PipelineHandle)."""
    names = "+".join(c.cli_name for c in handle.configs) or "baseline"
    state = "active" if handle.active else "removed"
    note = preset_note(handle)
    return f"<accel.{type(handle).__name__} {names} on {where} ({state}{'; ' + note if note else ''})>"


def preset_note(handle: Any) -> str | None:
    """"preset balanced, tuned on: ..." when a handle's configs are one of its family's presets."""
    if not handle.configs:
        return None
    from .presets import describe

    return describe(handle.target.family.name, handle.configs)


def install_order(configs: tuple[MethodConfig, ...]) -> list[MethodConfig]:
    """Configs in the order their hooks are added: block caches last.

    A hook added later wraps the earlier ones on the same module, so a cache's block hook
    is the outermost: a block it skips never reaches the hooks of the methods that work
    inside blocks (token methods neither run nor count there), whatever the order of
    the configs given to `apply`.
    """
    return sorted(configs, key=lambda c: c.kind == "cache")


def handle_of(model: torch.nn.Module) -> Handle | None:
    """The live accel handle on `model`, read from its context hook (None if not accelerated)."""
    registry = model.__dict__.get("_diffusers_hook")
    hook = registry.get_hook(CONTEXT_HOOK) if registry is not None else None
    return getattr(hook, "handle", None)


def _sum_totals(parts: list[dict]) -> dict:
    out: dict[str, Any] = {}
    for part in parts:
        for k, v in part.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                out[k] = max(out.get(k, 0), v) if k in ("pipeline_calls", "steps") else out.get(k, 0) + v
    return out


class PipelineHandle(_Removable):
    """The per-transformer handles of one pipeline; `remove()` restores every transformer exactly."""

    def __init__(self, pipeline: Any, handles: list[Handle]):
        self.pipeline = pipeline
        names = {id(m): n for n, m in transformers_of(pipeline)}
        self.handles = {names[id(h.model)]: h for h in handles}
        first = handles[0]
        self.model, self.configs, self.target = first.model, first.configs, first.target

    @property
    def active(self) -> bool:
        return any(h.active for h in self.handles.values())

    def remove(self) -> None:
        """Undo everything, last transformer first (their scheduler probes nest). Idempotent."""
        for h in reversed(list(self.handles.values())):
            h.remove()

    def stats(self) -> dict[str, Any]:
        """Per transformer under "models"; "total" and each method's "total" summed over them (steps and
        pipeline calls: the most any transformer saw, as they share the scheduler)."""
        per = {name: h.stats() for name, h in self.handles.items()}
        out: dict[str, Any] = {"models": per, "total": _sum_totals([s["total"] for s in per.values()])}
        for config in self.configs:
            parts = [s[config.cli_name] for s in per.values() if isinstance(s.get(config.cli_name), dict)]
            if parts and all(isinstance(p.get("total"), dict) for p in parts):
                out[config.cli_name] = {"total": _sum_totals([p["total"] for p in parts])}
        note = preset_note(self)
        if note:
            out["preset"] = note
        return out

    def held_bytes(self) -> int:
        return sum(h.held_bytes() for h in self.handles.values())

    def reset_stats(self) -> None:
        for h in self.handles.values():
            h.reset_stats()

    def __repr__(self) -> str:
        return handle_repr(self, ", ".join(self.handles))
