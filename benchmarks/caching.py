"""Block caching: accel's caches vs diffusers' and cache-dit's on the same model, seeds and counters.

    python benchmarks/caching.py [--num-images 100] [--methods core|full] [--skip dpm20] [--out bench-out/caching]

Workloads (one process, every method paired on the same seeds and classes):
  1. embedded default model, 50 DDIM steps, CFG (the issue's targets are judged here);
  2. embedded default model, 20 DPM-Solver++ steps, CFG;
  3. a tiny random-init PixArt (speed and block counts only: random weights carry no quality).
Peers run through the adapters in benchmarks/peers.py (they get the cache context stock
DiT/PixArt pipelines do not set). Prints one table per workload and writes caching.json.
Targets (workload 1): delta-cache >= 1.6x and residual-cache >= 2.0x with FD-digits within 5%
of the baseline; at matched speedup accel's best >= the best peer on FD-digits and PSNR.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import accel  # noqa: E402
from _common import machine, median, write_json  # noqa: E402
from accel.eval.bench import run_bench  # noqa: E402
from accel.eval.methods import MethodSpec  # noqa: E402
from accel.eval.prepare import DigitsFeatures  # noqa: E402
from accel.eval.fidelity import psnr  # noqa: E402
from accel.eval.report import format_table  # noqa: E402
from peers import (  # noqa: E402
    CacheDitDBCache, DiffusersFBC, DiffusersMagCache, DiffusersTaylorSeer, calibrate_magcache,
)


def accel_specs(steps: int) -> list[MethodSpec]:
    m = accel.methods()
    D, R, I = m["delta-cache"], m["residual-cache"], m["interval-cache"]
    specs = [
        ("delta-cache", D()),
        ("delta-cache:interval=3", D(interval=3)),
        ("delta-cache:cached_blocks=0.9", D(cached_blocks=0.9)),
        ("interval-cache:interval=2", I(interval=2)),
        ("interval-cache:interval=3", I(interval=3)),
        ("residual-cache:threshold=0.08", R(threshold=0.08)),
        ("residual-cache:threshold=0.15", R(threshold=0.15)),
        ("residual-cache:threshold=0.25,max_consecutive=4", R(threshold=0.25, max_consecutive=4)),
    ]
    return [MethodSpec(label, [(label.split(":")[0], {})], [cfg]) for label, cfg in specs]


def peer_specs(steps: int, mag_ratios: tuple) -> list[MethodSpec]:
    specs = [
        ("diffusers-fbc:threshold=0.05", DiffusersFBC(0.05)),
        ("diffusers-fbc:threshold=0.15", DiffusersFBC(0.15)),
        ("diffusers-taylorseer:cache_interval=3", DiffusersTaylorSeer(cache_interval=3)),
        ("diffusers-magcache:threshold=0.06", DiffusersMagCache(0.06, num_inference_steps=steps, mag_ratios=mag_ratios)),
        ("diffusers-magcache:threshold=0.15", DiffusersMagCache(0.15, num_inference_steps=steps, mag_ratios=mag_ratios)),
        ("cache-dit-dbcache:F1B0,threshold=0.08", CacheDitDBCache(threshold=0.08, warmup=min(8, steps // 4))),
        ("cache-dit-dbcache:F1B0,threshold=0.24", CacheDitDBCache(threshold=0.24, warmup=min(8, steps // 4))),
    ]
    return [MethodSpec(label, [(label.split(":")[0], {})], [cfg]) for label, cfg in specs]


CORE = (  # the settings run by default: two speed levels per method, CPU time is scarce
    "delta-cache", "delta-cache:interval=3", "interval-cache:interval=3",
    "residual-cache:threshold=0.15", "residual-cache:threshold=0.25,max_consecutive=4",
    "diffusers-fbc:threshold=0.15", "diffusers-taylorseer:cache_interval=3", "diffusers-magcache:threshold=0.15",
)
# cache-dit 1.5.3 DBCache crashes on DiTTransformer2DModel: it swaps `transformer_blocks` for its
# own CachedBlocks module, and DiT's forward then reads `transformer_blocks[0].norm1`
# (AttributeError). Run it with `--methods full` on other families.


def _select(specs: list[MethodSpec], args) -> list[MethodSpec]:
    if args.methods == "full":
        return specs
    if args.methods == "core":
        return [s for s in specs if s.label in CORE]
    wanted = args.methods.split(";")
    return [s for s in specs if s.label in wanted]


def _ideal_from_baseline(records: list[dict]) -> None:
    """Ideal speedup = baseline block evaluations / the method's, on the same seeds and steps.

    (cache-dit runs the blocks from its own loop, bypassing the transformer's forward where
    accel counts transformer calls, so a per-handle `block_total` is not available for it.)
    """
    base = records[0]["block_evals"]
    for rec in records:
        rec["ideal_speedup"] = base / rec["block_evals"] if rec.get("block_evals") else None


def default_model_workload(scheduler: str, steps: int, args) -> dict:
    from accel import models as M

    pipe = M.load_default_pipeline(scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    guidance = M.DEFAULT_SAMPLER["guidance_scale"]
    classes = list(range(10))
    mag_ratios = calibrate_magcache(
        pipe, lambda: pipe(class_labels=classes, num_inference_steps=steps, guidance_scale=guidance,
                           generator=torch.Generator().manual_seed(0), output_type="np"), steps)
    methods = [MethodSpec("baseline")] + _select(accel_specs(steps) + peer_specs(steps, mag_ratios), args)
    extractor = DigitsFeatures(M.load_digits_classifier(), M.to_classifier_input)
    result = run_bench(
        pipe, methods, num_images=args.num_images, steps=steps, seed=args.seed, guidance=guidance,
        batch_size=args.batch_size, repeats=args.repeats, timing_images=args.timing_images,
        extractor=extractor, reference_stats=M.load_reference_stats(), fd_name="FD-digits", num_classes=10,
    )
    _ideal_from_baseline(result.records)
    base_fd = result.records[0]["fd"]
    for rec in result.records:
        rec["fd_vs_baseline_pct"] = None if rec["fd"] is None else 100 * (rec["fd"] / base_fd - 1)
    title = f"default model, {scheduler} {steps} steps, guidance {guidance}, {args.num_images} images"
    return {"title": title, "records": result.records, "notes": result.notes, "meta": result.meta}


def tiny_pixart_workload(args) -> dict:
    """Speed and block counts on a random PixArt (12 blocks, 256 tokens), PSNR to its baseline."""
    from accel.testing import pipeline_inputs, tiny_pipeline

    pipe = tiny_pipeline("pixart", num_layers=12)
    steps = 20
    kw = pipeline_inputs("pixart", batch=4, steps=steps)
    kw.update(height=32, width=32)

    def run():
        return pipe(**{**kw, "generator": torch.Generator().manual_seed(0)}).images

    mag = calibrate_magcache(pipe, run, steps)
    methods = [MethodSpec("baseline")] + _select(accel_specs(steps) + peer_specs(steps, mag), args)
    records, outs, handles, times = [], {}, {}, {}
    for spec in methods:  # apply once per method; time only generation (warm-up run first)
        with accel.apply(pipe, *spec.configs) as h:
            outs[spec.label] = run()
            handles[spec.label] = h.stats()["total"]
            times[spec.label] = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                run()
                times[spec.label].append(time.perf_counter() - t0)
    base_t = median(times["baseline"])
    for spec in methods:
        tot = handles[spec.label]
        records.append({
            "method": spec.label, "speedup": base_t / median(times[spec.label]),
            "block_evals": tot["block_evals"],
            "psnr": psnr(outs[spec.label], outs["baseline"]), "fd": None, "fd_name": None, "ssim": None,
            "time_s": median(times[spec.label]), "peak_mem_mb": None,
        })
    _ideal_from_baseline(records)
    return {"title": f"tiny random PixArt, 12 blocks, 256 tokens, DPM-Solver++ {steps} steps, CFG",
            "records": records, "notes": ["random weights: PSNR shows fidelity only, not quality"], "meta": {}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--num-images", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--timing-images", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--methods", default="core",
                    help="core (default: 2 settings per method), full, or ';'-separated labels")
    ap.add_argument("--skip", default="", help="comma list of workloads to skip: ddim50,dpm20,pixart")
    ap.add_argument("--out", type=Path, default=Path("bench-out/caching"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    skip = set(filter(None, args.skip.split(",")))
    report = {"machine": machine(), "workloads": []}
    if "ddim50" not in skip:
        report["workloads"].append(default_model_workload("ddim", 50, args))
    if "dpm20" not in skip:
        report["workloads"].append(default_model_workload("dpm++", 20, args))
    if "pixart" not in skip:
        report["workloads"].append(tiny_pixart_workload(args))
    print(f"machine: {report['machine']}")
    for w in report["workloads"]:
        print(f"\n== {w['title']}\n{format_table(w['records'])}")
        for rec in w["records"]:
            if rec.get("fd_vs_baseline_pct") is not None:
                print(f"  {rec['method']:<48} FD vs baseline {rec['fd_vs_baseline_pct']:+.1f}%")
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "caching.json", report)
    print(f"\nwrote {args.out / 'caching.json'}")


if __name__ == "__main__":
    main()
