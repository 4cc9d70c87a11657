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


# The step count a fraction-of-steps setting (delta-cache's `boundary=0.6`) resolves against on the first
# call of a bare transformer, which no scheduler tells: diffusers' most common `num_inference_steps`.
UNKNOWN_STEPS = 50


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
    """Counts pipeline calls, steps, branches and block evaluations for one accelerated transformer.

    `listeners` hear every transformer call (its `StepInfo`); `end_listeners` hear the end
    of a scheduler-driven pipeline call (its last `scheduler.step`), where methods drop
    what they cached for that call. The transformer's call arguments are held only while
    the transformer runs (for `token_grid`).
    """

    def __init__(self, model: torch.nn.Module, family: Family, num_blocks: int):
        self.model = model
        self.family = family
        self.num_blocks = num_blocks
        self.info: StepInfo | None = None
        self.num_steps: int | None = None  # scheduler steps of the current call, when a pipeline tells
        self.last_steps: int | None = None  # steps the previous call ran (counted as its calls came)
        self._schedule: torch.Tensor | None = None  # the scheduler's timesteps, while its begin index is unknown
        self.schedule_steps: int | None = None  # length of the scheduler's whole schedule (> num_steps: partial)
        self.calls: list[dict[str, int]] = []  # per pipeline call counters (since the last reset_stats)
        self.listeners: list[Callable[[StepInfo], None]] = []
        self.end_listeners: list[Callable[[], None]] = []
        self.scheduler_driven = False
        self._call, self._step, self._branch = -1, -1, -1
        self._entry: dict[str, int] | None = None  # counters of the current call, made on first use
        self._last_t: float | None = None
        self._args: tuple = ()
        self._kwargs: dict = {}
        params = list(inspect.signature(type(model).forward).parameters)[1:]
        self._t_pos = params.index(family.timestep_arg) if family.timestep_arg in params else None
        # diffusers' cache_context() sets names on stateful hooks' StateManagers.
        self.names = StateManager(_NoState)

    # -- events -----------------------------------------------------------------------------
    def begin_call(self) -> None:
        """A new pipeline call: step 0 starts, per-call state of every method resets."""
        if self._call >= 0 and self._step >= 0:  # bare: _step is the last step's index; scheduler: steps done
            self.last_steps = self._step + (0 if self.scheduler_driven else 1) or self.last_steps
        self._call += 1
        self._step, self._branch = 0, -1
        self._last_t = None
        self.num_steps = None
        self._entry = None

    def read_schedule(self, scheduler: Any) -> None:
        """Steps this call runs: the scheduler's timesteps from its begin index (img2img truncates them).

        Pipelines that cut the schedule without `set_begin_index` (CogVideoX and Wan
        video-to-video) are caught at the first transformer call: see `_locate_start`.
        """
        timesteps = getattr(scheduler, "timesteps", None)
        if timesteps is None:
            self.num_steps, self._schedule, self.schedule_steps = None, None, None
            return
        self.schedule_steps = len(timesteps)
        begin = getattr(scheduler, "begin_index", None)
        self.num_steps = len(timesteps) - (begin if isinstance(begin, int) else 0)
        self._schedule = None if isinstance(begin, int) else timesteps

    def _locate_start(self, args: tuple, kwargs: dict) -> None:
        """The executed step count from where the first call's timestep sits in the schedule."""
        schedule, self._schedule = self._schedule, None
        t = self._timestep(args, kwargs)
        if t is None or not isinstance(schedule, torch.Tensor) or schedule.ndim != 1 or not len(schedule):
            return
        ts = schedule.detach().float().cpu()
        for value in (t, t * 1000.0):  # flow pipelines pass t / 1000
            hits = torch.nonzero((ts - value).abs() <= 1e-3 * max(1.0, abs(value))).flatten()
            if len(hits):
                self.num_steps = len(ts) - int(hits[0])
                return

    def end_step(self) -> None:
        """The scheduler finished a denoising step; after the last one the pipeline call is over."""
        if self._call < 0:
            return
        self._step += 1
        self._branch = -1
        if self._entry is not None:
            self._entry["steps"] += 1
        if self.num_steps is not None and self._step == self.num_steps:
            for listener in self.end_listeners:
                listener()

    def on_transformer_call(self, args: tuple, kwargs: dict) -> StepInfo:
        stepped = False
        if self._schedule is not None and self.scheduler_driven and self._step == 0 and self._branch == -1:
            self._locate_start(args, kwargs)
        if not self.scheduler_driven or self._call < 0:
            stepped = self._advance_from_timestep(args, kwargs)
        self._branch += 1
        ctx = self.names._context
        name = ctx.name if ctx is not None else "batch"
        self.info = StepInfo(self._call, self._step, self._branch, name)
        counters = self._counters()
        counters["transformer_calls"] += 1
        counters["block_total"] += self.num_blocks
        if stepped and not self.scheduler_driven:  # else scheduler.step counts it
            counters["steps"] += 1
        self._args, self._kwargs = args, kwargs
        for listener in self.listeners:
            listener(self.info)
        return self.info

    def after_transformer_call(self) -> None:
        self._args, self._kwargs = (), {}

    def _timestep(self, args: tuple, kwargs: dict) -> float | None:
        t = kwargs.get(self.family.timestep_arg)
        if t is None and self._t_pos is not None and self._t_pos < len(args):
            t = args[self._t_pos]
        return float(t.flatten()[0]) if isinstance(t, torch.Tensor) else (None if t is None else float(t))

    def _advance_from_timestep(self, args: tuple, kwargs: dict) -> bool:
        """Read the step from the timestep; True when this call starts a new step."""
        t = self._timestep(args, kwargs)
        stepped = True
        if self._call < 0 or (t is not None and self._last_t is not None and t > self._last_t):
            self.begin_call()  # timesteps only go down within a call: a rise starts a new one
        elif t is None or self._last_t is None or t < self._last_t:
            self._step += 1
            self._branch = -1
        else:
            stepped = False
        self._last_t = t
        return stepped

    def count_block(self) -> None:
        self._counters()["block_evals"] += 1

    def _counters(self) -> dict[str, int]:
        if self._entry is None:
            self._entry = {"transformer_calls": 0, "steps": 0, "block_evals": 0, "block_total": 0}
            self.calls.append(self._entry)
        return self._entry

    # -- queries ----------------------------------------------------------------------------
    def steps_for_fractions(self) -> int:
        """The step count a fraction of the steps resolves against: the scheduler's for this call; else
        (a bare transformer, a scheduler that does not tell) the steps of the previous call, counted
        from the timesteps the transformer was called with; else, on the first call, UNKNOWN_STEPS."""
        return self.num_steps or self.last_steps or UNKNOWN_STEPS

    def token_grid(self) -> tuple[int, ...]:
        """(rows, cols), or (frames, rows, cols) for video, of the image tokens in the current transformer call."""
        if not self._args and not self._kwargs:
            raise RuntimeError("token_grid() is known only during a transformer call (read from its arguments)")
        return self.family.token_grid(self.model, self._args, self._kwargs)

    def held_bytes(self) -> int:
        """Bytes of tensors the tracker still references (the running call's arguments)."""
        return tensor_bytes((self._args, self._kwargs))

    def totals(self) -> dict[str, int]:
        keys = ("transformer_calls", "steps", "block_evals", "block_total")
        total = {k: sum(c[k] for c in self.calls) for k in keys}
        total["pipeline_calls"] = len(self.calls)
        return total

    def reset_stats(self) -> None:
        """Forget all counters; a call in progress counts on in a fresh entry."""
        self.calls = []
        self._entry = None


def tensor_bytes(obj: Any) -> int:
    """Total bytes of the tensors in nested tuples / lists / dicts (each tensor once)."""
    seen: set[int] = set()

    def walk(x: Any) -> int:
        if isinstance(x, torch.Tensor):
            if id(x) in seen:
                return 0
            seen.add(id(x))
            return x.numel() * x.element_size()
        if isinstance(x, dict):
            return sum(walk(v) for v in x.values())
        if isinstance(x, (list, tuple)):
            return sum(walk(v) for v in x)
        return 0

    return walk(obj)


class ContextHook(ModelHook):
    """On the transformer: tells the tracker about every call (and reads diffusers' cache-context name)."""

    _is_stateful = True  # so diffusers' cache_context() reaches `tracker.names`

    def __init__(self, tracker: StepTracker, before_call: Callable[[], None] | None = None,
                 handle: Any = None):
        super().__init__()
        self.tracker = tracker
        self.state_manager = tracker.names
        self.before_call = before_call
        self.handle = handle  # the accel.Handle that owns this model's hooks (see api.handle_of)

    @torch.compiler.disable
    def pre_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any):
        if self.handle is not None:  # compiled the usual ways after accel.apply: say what to call instead
            self.handle.check_compiled()
        if self.before_call is not None:
            self.before_call()
        self.tracker.on_transformer_call(args, kwargs)
        return args, kwargs

    @torch.compiler.disable
    def post_forward(self, module: torch.nn.Module, output: Any) -> Any:
        self.tracker.after_transformer_call()
        return output

    def reset_state(self, module: torch.nn.Module) -> torch.nn.Module:
        return module


class CountHook(ModelHook):
    """On each block, innermost: counts blocks actually evaluated."""

    def __init__(self, tracker: StepTracker):
        super().__init__()
        self.tracker = tracker

    @torch.compiler.disable
    def pre_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any):
        self.tracker.count_block()
        return args, kwargs


class SchedulerProbe:
    """Wraps one scheduler *instance*'s `set_timesteps` and `step` to mark calls and steps."""

    def __init__(self, scheduler: Any, tracker: StepTracker):
        self.scheduler = scheduler
        self._saved: dict[str, Any] = {}
        read = functools.partial(tracker.read_schedule, scheduler)
        wraps = [("set_timesteps", tracker.begin_call, read), ("step", None, tracker.end_step)]
        if hasattr(scheduler, "set_begin_index"):  # img2img pipelines start part-way into the schedule
            wraps.append(("set_begin_index", None, read))
        for name, before, after in wraps:
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
