"""schedule-cache: one calibration for many calls — a calibration made at 50 steps, resampled, against
one made at the call's own step count.

    python benchmarks/schedule_resample.py [--num-images 20] [--steps 28,40] [--budgets 0.5,0.4]
        [--strength 0.6] [--threads 1] [--out benchmarks/results/schedule-resample.json]

Default model (DPM-Solver++, guidance 2.0): `calibrate_schedule(pipe, num_inference_steps=50, ...)` once,
then at each of `--steps` schedule-cache (each budget, forecast 0 and 1) with that calibration
resampled at the call's timesteps, and with `calibrate_schedule` run at that step count. Flow model
(its sampler, 28 steps): img2img at `--strength` (StableDiffusion3Img2ImgPipeline.from_pipe; the call
executes the tail of the schedule), served by the 28-step text-to-image calibration resampled at the
executed timesteps, against one made by img2img calls at that strength. Calibrations use 8 images of
the even digits (seeds 10000+i, the documented default); measured images are held out: odd digits,
seeds 20000+i. PSNR is to the uncached images of the same seeds and call.

Cost: a calibration at N steps is N pipeline calls of N steps (8 images), so the one 50-step
calibration (made once, resampled at every `--steps`) outweighs the measured calls at 20 images.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import accel  # noqa: E402
from _common import machine, write_json  # noqa: E402
from accel.caching import ScheduleCacheConfig, calibrate_schedule  # noqa: E402

CAL_LABELS, HELD_OUT = [0, 2, 4, 6, 8], [1, 3, 5, 7, 9]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(((a - b) ** 2).mean())
    return 10 * np.log10(1 / mse) if mse > 0 else float("inf")


def measure(pipe, call, budgets, forecasts) -> list[dict]:
    """PSNR to the uncached call for each (budget, forecast), with the calibration in the cache dir."""
    base = call()
    rows = []
    for b in budgets:
        for f in forecasts:
            with accel.apply(pipe, ScheduleCacheConfig(budget=b, forecast=f)) as h:
                out = call()
                st = h.stats()
            s = st["schedule-cache"]
            rows.append({"budget": b, "forecast": f, "psnr": psnr(out, base),
                         "ideal_speedup": st["total"]["block_total"] / st["total"]["block_evals"],
                         "computed_steps": s["computed_steps"],
                         "resampled_from": s.get("calibration_resampled_from_steps")})
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--num-images", type=int, default=20)
    ap.add_argument("--steps", default="28,40")
    ap.add_argument("--budgets", default="0.5,0.4")
    ap.add_argument("--strength", type=float, default=0.6)
    ap.add_argument("--cal-steps", type=int, default=50, help="the default model's one calibration")
    ap.add_argument("--flow-steps", type=int, default=28, help="the flow model's img2img call (and its calibration)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--parts", default="default,flow", help="which workloads: default (step counts), flow (img2img)")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "schedule-resample.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    budgets = [float(b) for b in args.budgets.split(",")]
    n = args.num_images
    seeds = [20_000 + i for i in range(n)]
    labels = [HELD_OUT[i % len(HELD_OUT)] for i in range(n)]
    rows: list[dict] = []
    t0 = time.time()

    def fresh_cache() -> str:
        d = tempfile.mkdtemp(prefix="accel-resample-")
        os.environ["ACCEL_CACHE_DIR"] = d
        return d

    # -- default model: 50-step calibration at 28 / 40 steps ------------------------------------------------------
    from accel import models as M

    pipe = M.load_default_pipeline(scheduler="dpm++")
    g = float(M.DEFAULT_SAMPLER["guidance_scale"])
    shared: str | None = None  # the one --cal-steps calibration every step count resamples (N calls of N steps)
    for steps in (int(s) for s in args.steps.split(",")) if "default" in args.parts else ():
        def call(steps=steps):
            gens = [torch.Generator().manual_seed(s) for s in seeds]
            with torch.inference_mode():
                return pipe(class_labels=labels, num_inference_steps=steps, guidance_scale=g, generator=gens,
                            output_type="np").images
        for source in (f"resampled from {args.cal_steps}", "made there"):
            if source.startswith("resampled") and shared is not None:
                os.environ["ACCEL_CACHE_DIR"] = shared
            else:
                made = fresh_cache()
                cal_steps = args.cal_steps if source.startswith("resampled") else steps
                calibrate_schedule(pipe, num_inference_steps=cal_steps, guidance_scale=g, class_labels=CAL_LABELS,
                                   progress=False)
                shared = made if source.startswith("resampled") else shared
            for r in measure(pipe, call, budgets, (0, 1)):
                rows.append({"workload": f"default dpm{steps}", "calibration": source, **r})
                print(f"default dpm{steps:<3} {source:<18} budget {r['budget']} f{r['forecast']}: "
                      f"{r['ideal_speedup']:.2f}x {r['psnr']:.2f} dB", flush=True)

    # -- flow model: img2img at --strength, served by the 28-step text-to-image calibration -------------------------
    from diffusers import StableDiffusion3Img2ImgPipeline

    if "flow" not in args.parts:
        return finish(args, rows, n, t0)

    flow = M.load_flow_pipeline()
    fg = float(M.FLOW_SAMPLER["guidance_scale"])
    kw = {"max_sequence_length": M.FLOW_SAMPLER["max_sequence_length"]}
    prompts = [M.digit_prompt(y) for y in labels]
    with torch.inference_mode():
        init = flow(prompt=[M.digit_prompt((y + 1) % 10) for y in labels], num_inference_steps=args.flow_steps, guidance_scale=fg,
                    generator=[torch.Generator().manual_seed(s + 1) for s in seeds], output_type="pt", **kw).images
    i2i = StableDiffusion3Img2ImgPipeline.from_pipe(flow, vae=flow.vae)  # the identity VAE, kept

    def i2i_call(images=init, prompt=prompts, gen_seeds=seeds):
        gens = [torch.Generator().manual_seed(s) for s in gen_seeds]
        with torch.inference_mode():
            return i2i(prompt=prompt, image=images, strength=args.strength, num_inference_steps=args.flow_steps, guidance_scale=fg,
                       generator=gens, output_type="np", **kw).images

    cal_prompts = [M.digit_prompt(y) for y in CAL_LABELS] * 2
    for source in (f"resampled from text2img {args.flow_steps}", "made there"):
        fresh_cache()
        if source.startswith("resampled"):
            calibrate_schedule(flow, num_inference_steps=args.flow_steps, guidance_scale=fg, prompt=cal_prompts, progress=False, **kw)
        else:
            cal_init = init[:8] if len(init) >= 8 else init.repeat(8, 1, 1, 1)[:8]
            calibrate_schedule(i2i, lambda: i2i_call(cal_init, cal_prompts[:8], [10_000 + i for i in range(8)]),
                               progress=False)
        for r in measure(i2i, i2i_call, budgets, (0, 1)):
            rows.append({"workload": f"flow img2img strength {args.strength} ({args.flow_steps} steps)", "calibration": source, **r})
            print(f"flow img2img {source:<27} budget {r['budget']} f{r['forecast']}: "
                  f"{r['ideal_speedup']:.2f}x {r['psnr']:.2f} dB", flush=True)

    return finish(args, rows, n, t0)


def finish(args, rows: list[dict], n: int, t0: float) -> int:
    write_json(args.out, {"title": "schedule-cache: a resampled calibration vs one made at the call's steps",
                          "num_images": n, "rows": rows, "machine": machine(),
                          "minutes": round((time.time() - t0) / 60, 1)})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
