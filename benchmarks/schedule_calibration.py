"""schedule-cache's calibration: how many images, and which DP for forecast (issue 23).

    python benchmarks/schedule_calibration.py collect --out POOL.safetensors        # one 8-image calibration pass
    python benchmarks/schedule_calibration.py sizes --pool POOL.safetensors         # schedules from 1/2/4/8 of them
    python benchmarks/schedule_calibration.py variants --pool POOL.safetensors      # f0, f1 old (reuse DP, uncapped), f1 new

`collect` runs exactly what `calibrate_schedule(pipe, num_inference_steps=50, guidance_scale=2.0,
class_labels=[0, 2, 4, 6, 8])` runs (8 images, generator seeds 10000+i), on the embedded default
model at 50 DPM-Solver++ steps, but keeps each image's sensitivity and offsets, so that the
calibration of any subset of the 8 images can be formed afterwards without re-running it (the
mean of the per-image MSEs is the batch MSE). `sizes` and `variants` build those calibrations
and measure schedule-cache's PSNR to the uncached images on the development images (seeds
0..9, labels 0..9: the first 10 of the earlier benchmark runs; not held out: the defaults are
chosen on them) at budget 25 of 50 steps with forecast 1 (`sizes`, ideal 2x) and 25/20/33
(`variants`, ideal 2/2.5/1.5x). `--old` semantics = the code before this
change: the reuse DP for every forecast, and the forecast extrapolated without the horizon cap.
Results: benchmarks/results/schedule_calibration-{sizes,variants}.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
import accel  # noqa: E402
import accel.caching._runs as runs  # noqa: E402
import accel.caching.schedule_cache as sc  # noqa: E402
from accel.caching import ScheduleCacheConfig  # noqa: E402
from accel.caching.schedule import (  # noqa: E402
    CalibrationKey, forecast_errors, reuse_errors, save_calibration, sensitivity_errors,
)

REPO = Path(__file__).resolve().parent.parent
STEPS, GUIDANCE = 50, 2.0


def images(pipe, labels, seeds, steps=STEPS) -> np.ndarray:
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    with torch.inference_mode():
        return pipe(class_labels=list(labels), num_inference_steps=steps, guidance_scale=GUIDANCE, generator=gens,
                    output_type="np").images


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(((a - b) ** 2).mean())
    return 10 * np.log10(1 / mse) if mse > 0 else float("inf")


def collect(pipe, n: int, seed: int, labels: list[int], out: Path) -> None:
    from accel.caching.schedule_cache import _CalibrationConfig, _images

    def run():
        return pipe(class_labels=[labels[i % len(labels)] for i in range(n)], num_inference_steps=STEPS,
                    guidance_scale=GUIDANCE, generator=[torch.Generator().manual_seed(seed + i) for i in range(n)],
                    output_type="np")

    with torch.inference_mode(), accel.apply(pipe, _CalibrationConfig()) as h:
        cache = h._installed[0][1]
        ref = _images(run())
        key = cache.key
    deltas = torch.stack([cache.recorded[s] for s in range(STEPS)])
    sens = [torch.zeros(n)]
    for j in range(1, STEPS):
        with torch.inference_mode(), accel.apply(pipe, _CalibrationConfig(frozenset({j}))):
            sens.append(((_images(run()) - ref) ** 2).flatten(1).mean(1))
        print(f"step {j}", flush=True)
    meta = {"key": dataclasses.asdict(key), "labels": labels, "seed0": seed, "n": n}
    save_file({"ref": ref.contiguous(), "deltas": deltas.contiguous(), "sens": torch.stack(sens).contiguous()}, str(out),
              metadata={"pool": json.dumps(meta)})


def load_pool(path: Path) -> dict:
    """A pool written by `collect`: tensors from safetensors, the rest from its JSON metadata (no pickle)."""
    with safe_open(str(path), framework="pt") as f:
        meta = json.loads(f.metadata()["pool"])
        pool = {name: f.get_tensor(name) for name in f.keys()}
    return {**pool, **meta, "key": CalibrationKey(**meta["key"])}


def calibration(pool: dict, subset, path: Path) -> str:
    """The calibration file `calibrate_schedule` would write for these images of the pool."""
    n = pool["n"]
    rows = list(subset) + [n + i for i in subset]  # CFG: image i is rows i (conditional) and n + i
    deltas = [pool["deltas"][s][rows] for s in range(STEPS)]
    sens = [float(pool["sens"][s][list(subset)].mean()) for s in range(STEPS)]
    reuse = reuse_errors(deltas)
    save_calibration(path, pool["key"], sensitivity_errors(reuse, sens), images=len(subset), sensitivity=sens,
                     reuse=reuse, forecast=forecast_errors(deltas))
    return str(path)


def evaluate(pipe, cfg, ref, labels, seeds, old: bool = False):
    saved = runs.forecast_step, sc.forecast_matrix
    if old:  # before this change: reuse DP for every forecast, no horizon cap
        runs.forecast_step = lambda steps, step: step
        sc.forecast_matrix = lambda doc, path: None
    try:
        with accel.apply(pipe, cfg) as h:
            out = images(pipe, labels, seeds)
            stats = h.stats()
    finally:
        runs.forecast_step, sc.forecast_matrix = saved
    t = stats["total"]
    return psnr(out, ref), t["block_total"] / t["block_evals"], stats["schedule-cache"]["computed_steps"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mode", choices=("collect", "sizes", "variants"))
    ap.add_argument("--pool", type=Path, default=Path("schedule-pool.safetensors"))
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    pipe = accel.default_pipeline()
    pipe.set_progress_bar_config(disable=True)
    if args.mode == "collect":
        collect(pipe, 8, sc.CALIBRATION_SEED, [0, 2, 4, 6, 8], args.out or args.pool)
        return
    pool = load_pool(args.pool)
    work = Path(args.pool).with_suffix("")
    work.mkdir(exist_ok=True)
    labels, seeds = list(range(10)), list(range(10))
    t0 = time.perf_counter()
    ref = images(pipe, labels, seeds)
    rows: list[dict] = []
    out = args.out or REPO / "benchmarks" / "results" / f"schedule_calibration-{args.mode}.json"

    def row(name: str, cfg, old: bool = False) -> None:
        p, speed, computed = evaluate(pipe, cfg, ref, labels, seeds, old)
        rows.append(dict(name=name, ideal_speedup=speed, psnr=p, computed_steps=computed))
        print(f"{name:<45} ideal {speed:.2f}x  PSNR {p:6.2f} dB  ({time.perf_counter() - t0:.0f} s)", flush=True)
        out.write_text(json.dumps({"rows": rows, "meta": {"command": sys.argv, "pool": str(args.pool),
                                   "pool_labels": pool["labels"], "pool_seed0": pool["seed0"],
                                   "dev_images": "seeds 0..9, labels 0..9"}}, indent=1))

    if args.mode == "variants":
        c8 = calibration(pool, range(8), work / "all8.json")
        for b in (25, 20, 33):
            row(f"8 images, budget {b}, f0", ScheduleCacheConfig(budget=b, schedule=c8))
            row(f"8 images, budget {b}, f1 new (forecast DP, cap)", ScheduleCacheConfig(budget=b, schedule=c8, forecast=1))
            row(f"8 images, budget {b}, f1 old (reuse DP, no cap)", ScheduleCacheConfig(budget=b, schedule=c8, forecast=1),
                old=True)
    else:
        # all 8 at budget 25: the `variants` rows
        for name, sub in (("1a", [0]), ("1b", [1]), ("2a", [0, 1]), ("2b", [2, 3]), ("4a", [0, 1, 2, 3]),
                          ("4b", [4, 5, 6, 7])):
            c = calibration(pool, sub, work / f"s{name}.json")
            row(f"images {name} ({len(sub)}), budget 25, f1", ScheduleCacheConfig(budget=25, schedule=c, forecast=1))


if __name__ == "__main__":
    main()
