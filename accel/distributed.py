"""Adaptive decisions under diffusers' context parallelism: every rank decides the same.

With `transformer.enable_parallelism(config=ContextParallelConfig(ring_degree=.. or
ulysses_degree=..))` (families with a `_cp_plan`: Flux, Wan, Qwen-Image...) each rank of
the context-parallel mesh holds a slice of the token sequence between the blocks. A cache
that decides from data (residual-cache's relative residual change) would measure only its
own slice, so the ranks could skip different blocks, and the collectives inside the next
attention would then pair computed blocks with skipped ones (wrong images, or a hang).
As cache-dit does, the measured sums are all-reduced over the context-parallel group before
the decision, so every rank takes the decision of the whole sequence (the single-process
decision, up to float summation order).

Host-side like the rest of the decisions: `torch.compiler.disable`d (see accel/compiling.py).
"""

from __future__ import annotations

from typing import Any

import torch


def context_parallel_group(model: torch.nn.Module) -> Any | None:
    """The process group of `model`'s context-parallel mesh, or None when it runs in one process.

    Read at each decision (not at install), so `enable_parallelism` may come before or after
    `accel.apply`.
    """
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return None
    config = getattr(model, "_parallel_config", None)
    cp = getattr(config, "context_parallel_config", None)
    mesh = getattr(cp, "_flattened_mesh", None)
    if mesh is None or mesh.size() < 2:
        return None
    return mesh.get_group()


@torch.compiler.disable
def sum_across_ranks(model: torch.nn.Module, values: torch.Tensor) -> torch.Tensor:
    """`values` summed over the ranks of `model`'s context-parallel group (unchanged without one).

    One small all-reduce per decision; `values` (e.g. [sum|r - r_prev|, sum|r_prev|]) must be
    sums, not means, so that unequal slices weigh by their token count.
    """
    group = context_parallel_group(model)
    if group is None:
        return values
    total = values.detach().clone()
    torch.distributed.all_reduce(total, op=torch.distributed.ReduceOp.SUM, group=group)
    return total
