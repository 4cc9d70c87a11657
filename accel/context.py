"""Denoising-step context: which pipeline call, step and CFG branch a transformer call is.

Stock DiT/PixArt/SD3/Sana pipelines set no cache context, so accel tracks it itself:

* with a pipeline, from its scheduler: `set_timesteps` starts a pipeline call and
  each `scheduler.step` ends a denoising step; every transformer call in between is
  one branch (branch 0, 1, ...). This covers CFG as one doubled batch (one call per
  step: branch 0 holds both halves, each keeping its own rows of any cached tensor),
  CFG as two calls per step (branches 0 and 1) and no CFG.
* with a bare transformer, from the timestep it is called with: a repeated timestep
  is another branch of the same step, a smaller one the next step, a larger one a
  new pipeline call.

When a pipeline names its branches through diffusers' `cache_context("cond")`, the
name is kept in `StepInfo.branch_name`.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from typing import Any, Callable

import torch
from diffusers.hooks import ModelHook
from diffusers.hooks.hooks import StateManager

from .families import Family


@dataclass(frozen=True)
class StepInfo:
    """Where the current transformer call sits: pipeline call, denoising step, branch within the step."""

    call: int
    step: int
    branch: int
    branch_name: str


class _NoState:
    def reset(self) -> None:  # pragma: no cover - diffusers' StateManager interface
        pass


class StepTracker:
    """Counts pipeline calls, steps, branches and block evaluations for one accelerated transformer."""

    def __init__(self, model: torch.nn.Module, family: Family, num_blocks: int):
        self.model = model
        self.family = family
        self.num_blocks = num_blocks
        self.info: StepInfo | None = None
        self.num_steps: int | None = None  # scheduler steps of the current call, when a pipeline tells
        self.calls: list[dict[str, int]] = []  # per pipeline call counters
        self.listeners: list[Callable[[StepInfo], None]] = []
        self.scheduler_driven = False
        self._call, self._step, self._branch = -1, -1, -1
        self._last_t: float | None = None
        self._last_args: tuple = ()
        self._last_kwargs: dict = {}
        params = list(inspect.signature(type(model).forward).parameters)[1:]
        self._t_pos = params.index(family.timestep_arg) if family.timestep_arg in params else None
        # diffusers' cache_context() sets names on stateful hooks' StateManagers.
        self.names = StateManager(_NoState)

    # -- events -----------------------------------------------------------------------------
    def begin_call(self) -> None:
        """A new pipeline call: step 0 starts, per-call state of every method resets."""
        self._call += 1
        self._step, self._branch = 0, -1
        self._last_t = None
        self.num_steps = None
        self.calls.append({"transformer_calls": 0, "steps": 0, "block_evals": 0, "block_total": 0})

    def end_step(self) -> None:
        """The scheduler finished a denoising step."""
        if self._call >= 0:
            self._step += 1
            self._branch = -1
            self.calls[-1]["steps"] = self._step

    def on_transformer_call(self, args: tuple, kwargs: dict) -> StepInfo:
        if not self.scheduler_driven or self._call < 0:
            self._advance_from_timestep(args, kwargs)
        self._branch += 1
        ctx = self.names._context
        name = ctx.name if ctx is not None else "batch"
        self.info = StepInfo(self._call, self._step, self._branch, name)
        counters = self.calls[-1]
        counters["transformer_calls"] += 1
        counters["block_total"] += self.num_blocks
        if not self.scheduler_driven:
            counters["steps"] = self._step + 1
        self._last_args, self._last_kwargs = args, kwargs
        for listener in self.listeners:
            listener(self.info)
        return self.info

    def _advance_from_timestep(self, args: tuple, kwargs: dict) -> None:
        t = kwargs.get(self.family.timestep_arg)
        if t is None and self._t_pos is not None and self._t_pos < len(args):
            t = args[self._t_pos]
        t = float(t.flatten()[0]) if isinstance(t, torch.Tensor) else (None if t is None else float(t))
        if self._call < 0 or (t is not None and self._last_t is not None and t > self._last_t):
            self.begin_call()  # timesteps only go down within a call: a rise starts a new one
        elif t is None or self._last_t is None or t < self._last_t:
            self._step += 1
            self._branch = -1
        self._last_t = t

    def count_block(self) -> None:
        self.calls[-1]["block_evals"] += 1

    # -- queries ----------------------------------------------------------------------------
    def token_grid(self) -> tuple[int, int]:
        """(rows, cols) of the image tokens in the current transformer call."""
        return self.family.token_grid(self.model, self._last_args, self._last_kwargs)

    def totals(self) -> dict[str, int]:
        keys = ("transformer_calls", "steps", "block_evals", "block_total")
        total = {k: sum(c[k] for c in self.calls) for k in keys}
        total["pipeline_calls"] = len(self.calls)
        return total

    def reset_stats(self) -> None:
        self.calls = [dict.fromkeys(self.calls[-1], 0)] if self.calls else []


class ContextHook(ModelHook):
    """On the transformer: tells the tracker about every call (and reads diffusers' cache-context name)."""

    _is_stateful = True  # so diffusers' cache_context() reaches `tracker.names`

    def __init__(self, tracker: StepTracker, before_call: Callable[[], None] | None = None):
        super().__init__()
        self.tracker = tracker
        self.state_manager = tracker.names
        self.before_call = before_call

    def pre_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any):
        if self.before_call is not None:
            self.before_call()
        self.tracker.on_transformer_call(args, kwargs)
        return args, kwargs

    def reset_state(self, module: torch.nn.Module) -> torch.nn.Module:
        return module


class CountHook(ModelHook):
    """On each block, innermost: counts blocks actually evaluated."""

    def __init__(self, tracker: StepTracker):
        super().__init__()
        self.tracker = tracker

    def pre_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any):
        self.tracker.count_block()
        return args, kwargs


class SchedulerProbe:
    """Wraps one scheduler *instance*'s `set_timesteps` and `step` to mark calls and steps."""

    def __init__(self, scheduler: Any, tracker: StepTracker):
        self.scheduler = scheduler
        self._saved: dict[str, Any] = {}
        def after_set_timesteps() -> None:
            timesteps = getattr(scheduler, "timesteps", None)
            tracker.num_steps = len(timesteps) if timesteps is not None else None

        for name, before, after in (("set_timesteps", tracker.begin_call, after_set_timesteps),
                                    ("step", None, tracker.end_step)):
            self._saved[name] = scheduler.__dict__.get(name, _MISSING)
            setattr(scheduler, name, _wrap(getattr(scheduler, name), before, after))

    def remove(self) -> None:
        for name, old in self._saved.items():
            if old is _MISSING:
                self.scheduler.__dict__.pop(name, None)
            else:
                setattr(self.scheduler, name, old)
        self._saved.clear()


_MISSING = object()


def _wrap(fn: Callable, before: Callable[[], None] | None, after: Callable[[], None] | None) -> Callable:
    @functools.wraps(fn)  # keeps the signature visible to diffusers' retrieve_timesteps()
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if before is not None:
            before()
        out = fn(*args, **kwargs)
        if after is not None:
            after()
        return out

    return wrapper
