"""Shared machinery of the block caches: runs of blocks passed through with a stored offset.

A *run* is a half-open range `[start, stop)` of global block indices (`blocks_of`
order, all stacks). For one transformer call a `Plan` says, per block, what happens:

* computed (fast path: the hook calls the block and nothing else),
* computed and recorded: a run that starts here remembers the block's input, a run
  that ends here turns `output - recorded input` into its offset Δ (hidden and, for
  pair blocks, encoder stream) and hands it to `RunCache.finished`,
* skipped: the block is not evaluated; inside a skipped run the input is passed on
  unchanged and the run's last block returns `recorded input + Δ` in the block's own
  return format (`BlockIO.pack`), so the fresh input of this step still flows through.

Blocks are only ever called through their own forward (the hook chain); a skipped
block's inner hooks (the step counter) do not run, so `block_evals` counts real work.

`RunCache` is the `Installed` every cache method subclasses: it keeps one
`BranchState` per CFG branch (`tracker.info.branch`), drops all state when the
pipeline call ends (its last scheduler step) or a new one starts, picks a plan per
transformer call (`choose`) and keeps the per-call counters. Per block the only Python
work is a list lookup and, for blocks that start or end a run, a subtraction or addition.

The batch may change within a call (diffusers' `SD3CFGCutoffCallback` drops the
unconditional half part-way): a skipped run whose stored Δ no longer has the shape of
its fresh input is computed instead (counted as `shape_recomputes`) and its Δ
re-stored, never broadcast.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

import torch
from diffusers.hooks import ModelHook

from ..config import CallCounters, Installed, Target
from ..context import StepInfo, tensor_bytes
from ..hooks import HookSet
from .forecast import Forecast, forecast_step, forecast_value, history_kept
from .verify import HEAD, Verifier

Run = tuple[int, int]  # [start, stop) in global block indices
Delta = tuple[torch.Tensor, "torch.Tensor | None"]  # (hidden, encoder) offsets


@dataclass(frozen=True)
class BlockOp:
    """What one block does in a plan (None in `Plan.ops` means: just compute)."""

    skip: bool = False
    starts: tuple[Run, ...] = ()  # runs whose input is recorded at this block's input
    ends: tuple[Run, ...] = ()  # runs whose offset is formed (computed) or applied (skipped) here


class Plan:
    """Per-block operations of one transformer call.

    skip: runs replaced by `fresh input + stored Δ`; store/watch: runs that are
    computed and whose Δ goes to `RunCache.finished` (the method decides what to keep).
    """

    def __init__(self, num_blocks: int, skip: Iterable[Run] = (), store: Iterable[Run] = ()):
        self.skip = tuple(skip)
        self.store = tuple(store)
        runs = self.skip + self.store
        for start, stop in runs:
            if not 0 <= start < stop <= num_blocks:
                raise ValueError(f"run [{start}, {stop}) is outside the model's {num_blocks} blocks")
        skipped = [any(a <= i < b for a, b in self.skip) for i in range(num_blocks)]
        self.reused = sum(skipped)
        self.ops: list[BlockOp | None] = []
        for i in range(num_blocks):
            starts = tuple(r for r in runs if r[0] == i)
            ends = tuple(r for r in runs if r[1] - 1 == i)
            if skipped[i] and len([r for r in ends if r in self.skip]) > 1:
                raise ValueError(f"two skipped runs end at block {i}")
            if skipped[i] and any(r in self.store for r in starts + ends):
                raise ValueError(f"block {i} is skipped but also computed for a stored run")
            self.ops.append(BlockOp(skipped[i], starts, ends) if skipped[i] or starts or ends else None)


Stored = tuple[int, torch.Tensor, "torch.Tensor | None"]  # (step, dh, de) of one computed step


class BranchState:
    """Offsets kept for one CFG branch during one pipeline call."""

    def __init__(self) -> None:
        self.deltas: dict[Run, Stored] = {}  # run -> its offset at the last computed step
        self.older: dict[Run, list[Stored]] = {}  # run -> earlier offsets, oldest first (forecasting)
        self.window: dict[Run, list[Stored]] = {}  # run -> the last two offsets used, computed or forecast ("pc")
        self.head: torch.Tensor | None = None  # residual-cache: head residual of the last computed step
        self.consecutive = 0  # residual-cache: reuses since the last computed step

    def store(self, run: Run, step: int, dh: torch.Tensor, de: torch.Tensor | None, keep: int = 0) -> None:
        """Make (step, dh, de) the run's offset, keeping up to `keep` earlier ones of the same shape."""
        old = self.deltas.get(run)
        history = self.older.pop(run, [])
        if keep and old is not None and old[0] != step and old[1].shape == dh.shape:
            self.older[run] = (history + [old])[-keep:]  # a forecast needs offsets of one shape
        self.deltas[run] = (step, dh, de)

    def used(self, run: Run, value: Stored) -> None:
        """Record the offset a run used at a step (computed or forecast): the "pc" forecaster's window."""
        window = [w for w in self.window.get(run, ()) if w[0] < value[0] and w[1].shape == value[1].shape]
        self.window[run] = (window + [value])[-2:]

    def drop(self, run: Run) -> None:
        self.deltas.pop(run, None)
        self.older.pop(run, None)
        self.window.pop(run, None)

    def history(self, run: Run) -> list[Stored]:
        """The run's stored offsets, oldest first, the latest last."""
        return self.older.get(run, []) + [self.deltas[run]]

    def fits(self, run: Run, h: torch.Tensor, e: torch.Tensor | None) -> bool:
        """Whether the stored offset of `run` can be added to a fresh input (h, e)."""
        _, dh, de = self.deltas[run]
        return dh.shape == h.shape and (de is None or e is None or de.shape == e.shape)

    def held_bytes(self) -> int:
        return tensor_bytes((list(self.deltas.values()), list(self.older.values()), list(self.window.values()),
                             self.head))


class RunHook(ModelHook):
    """On one block: run the current plan's operation for this block."""

    def __init__(self, cache: "RunCache", index: int, io: Any):
        super().__init__()
        self.cache = cache
        self.index = index
        self.io = io

    def new_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        op = self.cache.plan.ops[self.index]
        if op is None:
            return self.fn_ref.original_forward(*args, **kwargs)
        return self.cache.run_block(self, op, args, kwargs)


class RunCache(Installed):
    """Base of the cache methods: hooks on every block, per-branch state, plans and counters.

    Subclasses implement `choose(info, state) -> Plan` (called once per transformer call,
    before its blocks run) and may override `finished(run, dh, de)` (a computed run's
    offset; default: store it for the branch). `switch(plan)` changes the plan mid-call
    (residual-cache decides after its first blocks).
    """

    forecast: Forecast = 0  # the Δ forecaster (`forecast.py`): 0 reuses the last Δ
    min_steps = 0  # calls with fewer scheduler steps are computed in full (fixed schedules break there)
    forecast_cap = True  # extrapolate no farther than one spacing of the fitted steps (`forecast_step`)

    verifier: Verifier | None = None  # verify-then-reuse (`verify.py`) on whole-stack skips
    verify_plan: Plan | None = None

    def __init__(self, target: Target, hook_name: str):
        self.tracker = target.tracker
        self.model = target.model
        self.num_blocks = len(target.blocks)
        self.plain = Plan(self.num_blocks)
        self.plan = self.plain
        self.counters = CallCounters()
        self.warnings: list[str] = []
        self.info: StepInfo | None = None
        self.state = BranchState()
        self._states: dict[int, BranchState] = {}
        self._call: int | None = None
        self._inputs: dict[Run, tuple[torch.Tensor, torch.Tensor | None]] = {}
        self._hooks = HookSet(target.model)
        try:
            for ref in target.blocks:
                self._hooks.add(ref.module, RunHook(self, ref.global_index, ref.io), hook_name)
        except BaseException:
            self._hooks.remove()
            raise
        self.tracker.listeners.append(self._on_call)
        self.tracker.end_listeners.append(self._on_end)

    # -- per transformer call -------------------------------------------------------------
    def _on_call(self, info: StepInfo) -> None:
        if info.call != self._call:  # a new pipeline call: nothing carries over
            self._states.clear()
            self._call = info.call
        state = self._states.get(info.branch)
        if state is None:
            state = self._states[info.branch] = BranchState()
        self.info, self.state = info, state
        self._inputs.clear()
        self.plan = self.plain  # in case choose() raises
        steps = self.tracker.num_steps
        if steps is not None and steps < self.min_steps:
            plan = self.plain
            self._warn(f"{steps} steps < min_steps={self.min_steps}: every step computed (a fixed cache "
                       "schedule at so few steps loses too much quality; lower min_steps to force it)")
        else:
            plan = self.choose(info, state)
        c, counters = info.call, self.counters
        counters.add(c, "transformer_calls")
        counters.add(c, "steps", int(info.branch == 0))
        counters.add(c, "cached_calls", int(plan.reused > 0))
        counters.add(c, "blocks_computed", self.num_blocks - plan.reused)
        counters.add(c, "blocks_reused", plan.reused)
        self.plan = plan

    def _on_end(self) -> None:
        """The pipeline call is over: free every cached tensor (the next call starts afresh)."""
        self._states.clear()
        self._inputs.clear()
        self.state = BranchState()

    def held_bytes(self) -> int:
        """Bytes of cached tensors this cache still holds (0 between pipeline calls)."""
        return sum(s.held_bytes() for s in self._states.values()) + tensor_bytes(list(self._inputs.values()))

    def _warn(self, message: str) -> None:
        """Say once (in `.stats()["warnings"]`) that a setting cannot do what it was asked here."""
        if message not in self.warnings:
            self.warnings.append(message)

    def switch(self, plan: Plan) -> None:
        """Replace the current call's plan for the blocks still to come (counters follow)."""
        old, c = self.plan, self.info.call
        if (old.reused > 0) != (plan.reused > 0):
            self.counters.add(c, "cached_calls", 1 if plan.reused else -1)
        self.counters.add(c, "blocks_computed", old.reused - plan.reused)
        self.counters.add(c, "blocks_reused", plan.reused - old.reused)
        self.plan = plan

    def choose(self, info: StepInfo, state: BranchState) -> Plan:
        raise NotImplementedError

    def whole_stack_plans(self, verify: float | None = None) -> tuple[Plan, Plan]:
        """(compute, reuse) plans of the whole stack as one run; with `verify` the compute plan also stores
        block 0's residual and the reuse plan is checked per sample (`verify.py`)."""
        whole = (0, self.num_blocks)
        if verify is None:
            return Plan(self.num_blocks, store=[whole]), Plan(self.num_blocks, skip=[whole])
        if self.num_blocks < 2:
            raise ValueError(f"verify needs a model of >= 2 blocks (block 0 is the check), this one has "
                             f"{self.num_blocks}")
        self.verifier = Verifier(self, verify)
        self.verify_store = Plan(self.num_blocks, store=[whole, HEAD])
        self.verify_plan = Plan(self.num_blocks, skip=[whole])
        return self.verify_store, self.verify_plan

    def finished(self, run: Run, dh: torch.Tensor, de: torch.Tensor | None) -> None:
        if run == HEAD and self.verifier is not None:  # the check's reference: block 0's residual
            self.state.head = dh
            return
        self.state.store(run, self.info.step, dh, de, history_kept(self.forecast))
        if self.forecast == "pc":
            self.state.used(run, (self.info.step, dh, de))

    def delta(self, run: Run) -> Delta:
        """The offset applied to a skipped run: the stored one, or its forecast (`forecast`) at the
        current step (the last stored one while fewer offsets are stored than the forecaster needs)."""
        _, dh, de = self.state.deltas[run]
        if not self.forecast:
            return dh, de
        history = self.state.history(run)
        if len(history) < 2:
            return dh, de
        s = forecast_step([t for t, _, _ in history], self.info.step) if self.forecast_cap else self.info.step
        window = self.state.window.get(run, [])
        fh = forecast_value(self.forecast, [(t, h) for t, h, _ in history], [(t, h) for t, h, _ in window], s)
        fe = None
        if de is not None and all(e is not None for _, _, e in history):
            fe = forecast_value(self.forecast, [(t, e) for t, _, e in history],
                                [(t, e) for t, _, e in window if e is not None], s)
        if self.forecast == "pc":
            self.state.used(run, (s, fh, fe))
        return fh, fe

    # -- per block --------------------------------------------------------------------------
    def run_block(self, hook: RunHook, op: BlockOp, args: tuple, kwargs: dict) -> Any:
        if self.plan is self.verify_plan:
            return self.verifier.block(hook, args, kwargs, self.verify_store)
        io = hook.io
        h, e = io.inputs(args, kwargs)
        for run in op.starts:
            if op.skip and run in self.plan.skip and not self.state.fits(run, h, e):
                return self._recompute(hook, run, args, kwargs)
            self._inputs[run] = (h, e)
        if op.skip:
            if not op.ends:
                return io.pack(h, e)  # inside a skipped run: pass the input on
            run = op.ends[0]
            h0, e0 = self._inputs.pop(run, (h, e))
            dh, de = self.delta(run)
            return io.pack(h0 + dh, None if de is None or e0 is None else e0 + de)
        out = hook.fn_ref.original_forward(*args, **kwargs)
        if op.ends:
            ho, eo = io.outputs(out)
            for run in op.ends:
                if run not in self._inputs:  # the run's first block was not called (e.g. SD3 skip_layers)
                    continue
                h0, e0 = self._inputs.pop(run)
                self.finished(run, ho - h0, None if eo is None or e0 is None else eo - e0)
        return out

    def _recompute(self, hook: RunHook, run: Run, args: tuple, kwargs: dict) -> Any:
        """The stored Δ of `run` no longer fits its input (the batch changed): compute and re-store it."""
        plan = self.plan
        self.counters.add(self.info.call, "shape_recomputes")
        self.switch(Plan(self.num_blocks, skip=[r for r in plan.skip if r != run], store=[*plan.store, run]))
        op = self.plan.ops[hook.index]
        if op is None:
            return hook.fn_ref.original_forward(*args, **kwargs)
        return self.run_block(hook, op, args, kwargs)

    # -- Installed --------------------------------------------------------------------------
    def remove(self) -> None:
        if self._on_call in self.tracker.listeners:
            self.tracker.listeners.remove(self._on_call)
        if self._on_end in self.tracker.end_listeners:
            self.tracker.end_listeners.remove(self._on_end)
        self._hooks.remove()
        self._states.clear()
        self._inputs.clear()
        self.state = BranchState()
        self.plan = self.plain

    def stats(self) -> dict[str, Any]:
        out = self.counters.as_dict()
        if self.warnings:
            out["warnings"] = list(self.warnings)
        return out

    def reset_stats(self) -> None:
        self.counters.clear()


def resolve_count(name: str, value: float | int, total: int, what: str) -> int:
    """An int is a count (must be <= total); a float in (0, 1] a fraction of `total`, rounded half up, >= 1."""
    if isinstance(value, int):
        if value > total:
            raise ValueError(f"{name}={value} exceeds the model's {total} {what}")
        return value
    return max(1, min(total, int(value * total + 0.5)))
