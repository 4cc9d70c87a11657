"""Verify-then-reuse, per sample: on a step the schedule reuses, block 0 checks which rows may.

A whole-stack cache (schedule-cache, interval-cache) with `verify=τ` turns each step its
schedule would reuse into a checked one. Block 0 runs for the whole batch; its residual
r = output − input (image stream) is compared per batch row with the same branch's r at the
last *scheduled* computed step:

    change[row] = mean|r − r_prev| / mean|r_prev|        (float32, over the row's elements)

Rows with change > τ compute the remaining blocks on those rows alone (every per-sample block
argument index-selected by `BlockIO.select_rows`, the result scattered back); the others get the
recorded input + the cache's Δ (or its forecast), exactly as an unchecked reuse. With CFG as one
doubled batch the two halves of a sample have equal block-0 inputs (recognised from the data:
the halves are equal, tested on the device); their decisions are OR-ed, so a sample's cond and uncond rows
compute together: mixing a fresh and a reused half would feed the guidance difference one
fresh and one stale prediction.

A checked step refreshes nothing: the stored Δ, its forecast history and r_prev stay those of the
schedule's computed steps. So each sample's output is the one it gets when run alone, whatever
else is in the batch (a row that computes never changes what another row reuses). Cost: block 0
on every checked step (counted in `block_evals`), all other blocks counted as evaluated on a step
where any row computes (`verify_rows_computed` / `verify_rows` say which fraction of rows did),
and one host sync per checked step (reading back which rows compute).
"""

from __future__ import annotations

from typing import Any

import torch

from ..config import check_range
from ..distributed import sum_across_ranks

# the cache, its hooks and plans are `_runs.RunCache` / `RunHook` / `Plan`; typed Any here because _runs imports
# this module (no import circle, TYPE_CHECKING ones included: tests/test_layering.py)

HEAD = (0, 1)  # the check's run: block 0, whose residual is stored on scheduled computed steps


def check_verify(value: object) -> None:
    """`verify` is None (off) or a finite relative-change threshold > 0."""
    if value is not None:
        check_range("verify", value, 0.0, lo_open=True)


class Verifier:
    """Runs the checked skip plan of one whole-stack `RunCache` (`cache.verify_plan`)."""

    def __init__(self, cache: Any, threshold: float):
        self.cache = cache
        self.threshold = float(threshold)
        self.rows: torch.Tensor | None = None  # rows computing in the current call (None: none)
        self.batch = 0

    def block(self, hook: Any, args: tuple, kwargs: dict, store_plan: Any) -> Any:
        """One block of a checked call: block 0 checks, the others compute the chosen rows."""
        cache, io = self.cache, hook.io
        h, e = io.inputs(args, kwargs)
        last = hook.index == cache.num_blocks - 1
        if hook.index == 0:
            run = (0, cache.num_blocks)
            head = cache.state.head
            if head is None or head.shape != h.shape or not cache.state.fits(run, h, e):
                if head is not None:  # the batch changed within the call (CFG cut-off): compute, re-store
                    cache.counters.add(cache.info.call, "shape_recomputes")
                cache.switch(store_plan)
                return cache.run_block(hook, store_plan.ops[0], args, kwargs)
            cache._inputs[run] = (h, e)
            out = hook.fn_ref.original_forward(*args, **kwargs)
            ho, _ = io.outputs(out)
            self._decide(ho - h, head, h)
            if not last:
                return out
            return self._finish(io, h, e, out)
        if self.rows is None:
            return self._finish(io, h, e, None) if last else io.pack(h, e)
        if len(self.rows) == self.batch:  # every row computes: the block as it is
            out = hook.fn_ref.original_forward(*args, **kwargs)
        else:
            sub_args, sub_kwargs = io.select_rows(args, kwargs, self.rows, self.batch)
            sub_h, sub_e = io.outputs(hook.fn_ref.original_forward(*sub_args, **sub_kwargs))
            full_e = None if e is None or sub_e is None else e.index_copy(0, self.rows, sub_e.to(e.dtype))
            out = io.pack(h.index_copy(0, self.rows, sub_h.to(h.dtype)), full_e)
        return self._finish(io, h, e, out) if last else out

    @torch.compiler.disable  # the decision reads the rows back to the host
    def _decide(self, r: torch.Tensor, prev: torch.Tensor, h: torch.Tensor) -> None:
        """Which rows compute: relative L1 change of block 0's residual above the threshold (CFG halves OR-ed)."""
        cache, b = self.cache, r.shape[0]
        sums = torch.stack([(r.float() - prev.float()).abs().flatten(1).sum(1), prev.float().abs().flatten(1).sum(1)])
        num, den = sum_across_ranks(cache.model, sums)
        over = num > self.threshold * den
        if b % 2 == 0 and b > 1:  # CFG doubled batch (equal halves): one decision a sample, decided on the device
            paired = (h[: b // 2] == h[b // 2:]).all()
            half = over[: b // 2] | over[b // 2:]
            over = torch.where(paired, torch.cat([half, half]), over)
        rows = torch.nonzero(over).flatten()  # the one host sync of a checked step
        k = len(rows)
        self.batch, self.rows = b, rows if k else None
        c, n = cache.info.call, cache.num_blocks
        cache.counters.add(c, "verify_checks")
        cache.counters.add(c, "verify_rows", b)
        cache.counters.add(c, "verify_rows_computed", k)
        computed = n if k else 1  # block 0 always; the rest too when any row computes
        cache.counters.add(c, "blocks_computed", computed)
        cache.counters.add(c, "blocks_reused", -computed)
        if k == b:
            cache.counters.add(c, "cached_calls", -1)

    def _finish(self, io: Any, h: torch.Tensor, e: torch.Tensor | None, out: Any) -> Any:
        """The last block: recorded input + Δ (or its forecast) on reusing rows, the computed output on the others."""
        cache = self.cache
        run = (0, cache.num_blocks)
        h0, e0 = cache._inputs.pop(run)
        dh, de = cache.delta(run)  # always: the "pc" window must not depend on the other rows' decisions
        full_h = h0 + dh
        full_e = None if de is None or e0 is None else e0 + de
        if self.rows is not None:
            oh, oe = io.outputs(out)
            full_h = full_h.index_copy(0, self.rows, oh.index_select(0, self.rows).to(full_h.dtype))
            if full_e is not None and oe is not None:
                full_e = full_e.index_copy(0, self.rows, oe.index_select(0, self.rows).to(full_e.dtype))
        self.rows = None
        return io.pack(full_h, full_e)
