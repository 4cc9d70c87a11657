"""torch.compile with accel's methods: compile time, graphs traced per call, steady-state speed.

    python benchmarks/compile.py [--backend inductor] [--steps 20] [--batch 4] [--repeats 3]
                                 [--methods interval-cache,tome] [--out benchmarks/results/compile.json]

On the embedded default model (DiT, 12 blocks, 256 tokens, DPM++ 20 steps), 1 thread by
default. Per method (and the bare pipeline):

* eager: median seconds per pipeline call (interleaved repeats);
* regional (`accel.compile(pipe, backend=...)`): the first call's extra seconds (compile
  time), graphs Dynamo traced on calls 1, 2 and 3 (0 on calls 2 and 3 = no recompiles),
  median seconds per call afterwards, the speedup over the *compiled* bare pipeline and
  over the eager bare pipeline, and max |images - eager images of the same method|;
* whole (`pipe.transformer.compile(backend="eager")`, only traced, hooks inside): graphs
  traced on calls 1-3, graph breaks and how often Dynamo hit its recompile limit (default
  8; the frame then runs uncompiled): what whole-model compilation does with accel's hooks.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import accel  # noqa: E402
from _common import interleaved_medians, machine, median, write_json  # noqa: E402

DEFAULT_METHODS = "interval-cache,delta-cache,residual-cache,schedule-cache,tome,toca,diffrate"


def _graphs() -> int:
    return int(torch._dynamo.utils.counters["stats"]["unique_graphs"])


class _LimitHits(logging.Handler):
    """Counts Dynamo's "hit config.recompile_limit" warnings (the frame then runs uncompiled)."""

    def __init__(self) -> None:
        super().__init__()
        self.hits = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "recompile_limit" in record.getMessage():
            self.hits += 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", default="inductor")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--methods", default=DEFAULT_METHODS, help="comma-separated accel method names (defaults)")
    ap.add_argument("--out", type=Path, default=None, help="write the numbers as JSON here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    pipe = accel.default_pipeline()
    pipe.set_progress_bar_config(disable=True)
    labels = [i % 10 for i in range(args.batch)]

    def run() -> np.ndarray:
        with torch.no_grad():
            return pipe(class_labels=labels, num_inference_steps=args.steps, generator=torch.Generator().manual_seed(0),
                        output_type="np").images

    limit = _LimitHits()
    logging.getLogger("torch._dynamo").addHandler(limit)
    rows = []
    for name in ["baseline", *[m for m in args.methods.split(",") if m]]:
        configs = [] if name == "baseline" else [accel.methods()[name]()]
        for c in configs:
            c.prepare(pipe, run)
        row: dict = {"method": name}
        # whole model, traced only: what Dynamo does with the hooks inside
        torch._dynamo.reset()
        torch._dynamo.utils.counters.clear()
        limit.hits = 0
        with accel.apply(pipe, *configs):
            pipe.transformer.compile(backend="eager")
            per_call = []
            for _ in range(3):
                g = _graphs()
                run()
                per_call.append(_graphs() - g)
            pipe.transformer._compiled_call_impl = None
        row["whole_eager_graphs_per_call"] = per_call
        row["whole_eager_graph_breaks"] = int(sum(torch._dynamo.utils.counters["graph_break"].values()))
        row["whole_eager_recompile_limit_hits"] = limit.hits
        # eager vs regional compile
        torch._dynamo.reset()
        torch._dynamo.utils.counters.clear()
        limit.hits = 0
        with accel.apply(pipe, *configs):
            eager_images = run()
            eager = median(interleaved_medians({"eager": run}, args.repeats, warmup=0)["eager"])
            compiled = accel.compile(pipe, backend=args.backend)
            per_call, first = [], 0.0
            for i in range(3):
                g = _graphs()
                t0 = time.perf_counter()
                images = run()
                if i == 0:
                    first = time.perf_counter() - t0
                per_call.append(_graphs() - g)
            steady = median(interleaved_medians({"compiled": run}, args.repeats, warmup=0)["compiled"])
            compiled.remove()
        row.update(eager_s=eager, compile_s=first - steady, regional_graphs_per_call=per_call, compiled_s=steady,
                   max_abs_diff_vs_eager=float(np.abs(images - eager_images).max()), regional_recompile_limit_hits=limit.hits)
        rows.append(row)
        print(row, flush=True)
    base = rows[0]
    for row in rows:
        row["speedup_vs_compiled_baseline"] = base["compiled_s"] / row["compiled_s"]
        row["speedup_vs_eager_baseline"] = base["eager_s"] / row["compiled_s"]
    print(f"\n{machine()}; backend {args.backend}; {args.steps} steps, batch {args.batch}")
    print(f"{'method':16s} {'eager s':>8s} {'compile s':>9s} {'graphs/call':>12s} {'compiled s':>10s} "
          f"{'x comp. base':>12s} {'x eager base':>12s} {'whole graphs':>12s} {'limit hits':>10s}")
    for r in rows:
        print(f"{r['method']:16s} {r['eager_s']:8.2f} {r['compile_s']:9.1f} {str(r['regional_graphs_per_call']):>12s} "
              f"{r['compiled_s']:10.2f} {r['speedup_vs_compiled_baseline']:12.2f} {r['speedup_vs_eager_baseline']:12.2f} "
              f"{str(r['whole_eager_graphs_per_call']):>12s} {r['whole_eager_recompile_limit_hits']:10d}")
    if args.out:
        write_json(args.out, {"backend": args.backend, "steps": args.steps, "batch": args.batch,
                              "repeats": args.repeats, "rows": rows})


if __name__ == "__main__":
    main()
