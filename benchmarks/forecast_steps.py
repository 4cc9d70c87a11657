"""Forecast vs reuse across step counts: each cache's default with forecast=0 and forecast=1.

    python benchmarks/forecast_steps.py [--steps 8,10,12,15,20,30] [--num-images 16] [--threads 1]
    python benchmarks/forecast_steps.py --min-steps-off --methods delta-cache,interval-cache --steps 4,6,8,12

The evidence behind the caches' `forecast` defaults (their docstrings quote it): on the embedded
default model with DPM-Solver++ and guidance 2.0, PSNR to the uncached images of the same seeds
and the ideal speedup (block evaluations), per step count. schedule-cache is calibrated first on
4 images of disjoint seeds for each step count. `--min-steps-off` sets `min_steps=0`, to see
what the fixed schedules would do below their few-step guard. No timing: the block counts are
the same for both forecast orders. Writes benchmarks/results/forecast_steps.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import accel  # noqa: E402
from _common import machine, write_json  # noqa: E402
from accel.eval.fidelity import psnr  # noqa: E402

CACHES = ("delta-cache", "interval-cache", "residual-cache", "schedule-cache")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", default="8,10,12,15,20,30", help="comma list of step counts")
    ap.add_argument("--methods", default=",".join(CACHES), help="comma list of caches (their defaults)")
    ap.add_argument("--num-images", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--min-steps-off", action="store_true", help="min_steps=0 for the caches that have it")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "forecast_steps.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("ACCEL_CACHE_DIR", tempfile.mkdtemp(prefix="accel-forecast-steps-"))
    registry = accel.methods()
    names = args.methods.split(",")
    unknown = [n for n in names if n not in registry]
    if unknown:
        ap.error(f"--methods: unknown {unknown}; choose from {', '.join(CACHES)}")
    pipe = accel.default_pipeline()
    n = args.num_images

    def run(steps: int, seed: int = 0, count: int = n) -> torch.Tensor:
        gens = [torch.Generator().manual_seed(seed + i) for i in range(count)]
        out = pipe(class_labels=[i % 10 for i in range(count)], num_inference_steps=steps, guidance_scale=2.0,
                   generator=gens, output_type="np").images
        return torch.from_numpy(out).permute(0, 3, 1, 2)

    rows = []
    for steps in (int(s) for s in args.steps.split(",")):
        base = run(steps)
        if "schedule-cache" in names:
            from accel.caching import calibrate_schedule

            calibrate_schedule(pipe, lambda: run(steps, seed=10_000, count=4))
        for name in names:
            cls = registry[name]
            extra = {"min_steps": 0} if args.min_steps_off and "min_steps" in cls.__dataclass_fields__ else {}
            row = {"steps": steps, "method": name, **extra}
            for f in (0, 1):
                handle = accel.apply(pipe, cls(forecast=f, **extra))
                try:
                    out = run(steps)
                    t = handle.stats()["total"]
                finally:
                    handle.remove()
                row[f"psnr_f{f}"] = psnr(out, base)
                row["ideal_speedup"] = t["block_total"] / max(1, t["block_evals"])
            rows.append(row)
            print(f"{steps:3d} steps  {name:<15} {row['ideal_speedup']:.2f}x  forecast 0: {row['psnr_f0']:5.1f} dB"
                  f"  forecast 1: {row['psnr_f1']:5.1f} dB", flush=True)
    write_json(args.out, {"title": f"forecast 0 vs 1 per step count, default model, DPM-Solver++, guidance 2.0, "
                                   f"{n} images", "rows": rows, "machine": machine()})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
