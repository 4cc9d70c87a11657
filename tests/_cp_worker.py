"""Worker of tests/test_processes.py: residual-cache on a tiny Flux pipeline under diffusers' context
parallelism, one process per rank (`torchrun --nproc_per_node 2 tests/_cp_worker.py OUT_DIR [ring|ulysses]`).

Each rank first runs the pipeline alone (no parallelism: the single-process reference), then with
`enable_parallelism(ContextParallelConfig(...))`, where its transformer holds half of the token
sequence between the blocks. It records every residual-cache decision: the global relative change the
cache decided from, and the change of the rank's own slice alone (what it would have decided from
without `accel.distributed`'s all-reduce). Writes OUT_DIR/rank{R}.json and OUT_DIR/rank{R}.safetensors.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import torch
import torch.distributed as dist

os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)

import accel  # noqa: E402
from accel.caching import ResidualCacheConfig  # noqa: E402
from accel.caching.residual_cache import ResidualCache  # noqa: E402
from accel.testing import pipeline_inputs, tiny_pipeline  # noqa: E402

THRESHOLD = 0.2
STEPS = 8


def _record_decisions(log: list[dict[str, Any]]) -> Any:
    """Wrap ResidualCache._relative_change to log (step, branch, global change, this rank's own change)."""
    original = ResidualCache._relative_change

    def logged(self: ResidualCache, r: torch.Tensor, prev: torch.Tensor) -> float:
        value = original(self, r, prev)
        local = float((r.float() - prev.float()).abs().sum() / prev.float().abs().sum())
        log.append({"step": self.info.step, "branch": self.info.branch, "change": value, "local": local})
        return value

    ResidualCache._relative_change = logged
    return original


def _enable_context_parallelism(model: torch.nn.Module, kind: str) -> None:
    """`model.enable_parallelism` on CPU. diffusers 0.42's `ModelMixin._resolve_parallel_config` computes the
    rank's device as `torch.device(device_type, rank % torch.accelerator.device_count())`, and a CPU-only torch
    reports 0 accelerators: ZeroDivisionError. The count is 1 here for that call only (CPU has one device);
    accel itself is not patched."""
    from diffusers import ContextParallelConfig

    config = ContextParallelConfig(ring_degree=2) if kind == "ring" else ContextParallelConfig(ulysses_degree=2)
    count = torch.accelerator.device_count
    torch.accelerator.device_count = lambda: max(1, count())
    try:
        model.enable_parallelism(config=config)
    finally:
        torch.accelerator.device_count = count


def _latents() -> torch.Tensor:
    """Packed initial latents of a 16x16 image (8x8 tokens): the top half (rank 0's slice under context
    parallelism) nearly blank, the bottom half noise, so the two slices change at different rates."""
    latents = torch.randn(1, 64, 16, generator=torch.Generator().manual_seed(3))
    latents[:, :32] *= 0.05
    return latents


def _run(pipe: Any) -> torch.Tensor:
    # no true CFG: one transformer call per step
    return torch.as_tensor(pipe(**pipeline_inputs("flux", cfg=False, steps=STEPS), latents=_latents()).images)


def main() -> None:
    out_dir, kind = sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "ring"
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    pipe = tiny_pipeline("flux", num_layers=3, seed=0)
    handle = accel.apply(pipe, ResidualCacheConfig(threshold=THRESHOLD, warmup=1, forecast=0))
    log: list[dict[str, Any]] = []
    _record_decisions(log)

    alone = _run(pipe)  # single-process reference (every rank computes the same)
    alone_stats, alone_log = handle.stats(), list(log)
    handle.reset_stats()
    log.clear()

    _enable_context_parallelism(pipe.transformer, kind)
    parallel = _run(pipe)
    result = {
        "rank": rank, "kind": kind, "threshold": THRESHOLD,
        "alone": {"stats": alone_stats, "decisions": alone_log},
        "parallel": {"stats": handle.stats(), "decisions": list(log)},
    }
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump(result, f, indent=1, default=str)
    from safetensors.torch import save_file

    save_file({"alone": alone.contiguous(), "parallel": parallel.contiguous()},
              os.path.join(out_dir, f"rank{rank}.safetensors"))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
