"""`accel tune` against an exhaustive search of the same grid, on the default model.

    python benchmarks/tune_search.py [--images 96] [--holdout 200] [--evals-frac 0.25] [--seeds 0,1,2,3,4,5]
    python benchmarks/stack.py --part tune      # the same, into stack.json's "tune" section
        [--steps 20] [--threads 2] [--out benchmarks/results/tune_search]

One run: every candidate of a grid (one block cache x one token method, each at a few settings) is
evaluated on the same calibration images (paired, seed set 1: speed against the baseline timed right
before and after, PSNR, FD-digits change); then successive halving (`accel.tune`) with at most
``--evals-frac`` of the exhaustive run's compute (images generated), once per search seed, for each budget (FD-digits +5%
and +10%, PSNR 30 dB). The searches share the exhaustive run's evaluation cache, so a candidate
both evaluate at the same image count has the same measured numbers (the comparison is of the search,
not of timing noise); what a search spends is counted as evaluations and image-evaluations requested.
Finally the exhaustive best and every search's choice are re-measured side by side on held-out
images (seed set 0).

Output: PREFIX.json (grid, every result, per budget and seed: the choices, their evaluation counts,
speed ratio to the exhaustive best) and the table on stdout. The presets in accel/presets.py are read
off this run (`--budget` choices on the default model).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_json  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
METHODS = ["interval-cache", "toca", "tome"]
GRID = {  # narrowed from each config's declared `tunable` so that the exhaustive run fits a shared 2-core CPU
    "interval-cache": {"interval": (2, 3, 4), "forecast": (0, 1), "warmup": 1},
    "toca": {"interval": (2, 3), "recompute": (0.3,)},
    "tome": {"ratio": (0.25, 0.5), "prop_attn": True},
}
BUDGETS = {"fd+5%": dict(fd_pct=5.0), "fd+10%": dict(fd_pct=10.0), "psnr>=30": dict(psnr=30.0)}


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=96, help="calibration images of the exhaustive run / last rung")
    ap.add_argument("--holdout", type=int, default=200, help="held-out images for the side-by-side re-measure")
    ap.add_argument("--evals-frac", type=float, default=0.25, help="search compute as a share of the exhaustive run's (images generated)")
    ap.add_argument("--seeds", default="0,1,2,3,4,5", help="search seeds")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cache-dir", type=Path, default=None,
                    help="evaluation caches of an earlier run to reuse (default: a fresh temporary directory)")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "tune_search")
    return ap


def run(args: argparse.Namespace) -> dict:
    """The whole comparison; writes PREFIX.json and returns its document."""
    torch.set_num_threads(args.threads)
    from tqdm.auto import tqdm

    import accel
    from accel import models as M
    from accel.eval.prepare import DigitsFeatures
    from accel.eval.workload import make_workload
    from accel.tune import QualityBudget, Candidate, build_space, exhaustive, successive_halving
    from accel.tune.evaluate import Evaluator

    t0 = time.perf_counter()
    pipe = M.load_default_pipeline(scheduler="dpm++")
    pipe.set_progress_bar_config(disable=True)
    guidance = float(M.DEFAULT_SAMPLER["guidance_scale"])
    extractor = DigitsFeatures(M.load_digits_classifier(), M.to_classifier_input)
    reg = accel.methods()
    space = build_space(reg, METHODS, values=GRID)
    grid = space.grid()

    def evaluator(n: int, seed_set: int, cache: Path) -> Evaluator:
        wl = make_workload(pipe, n, 0, args.steps, guidance=guidance, batch_size=args.batch_size, seed_set=seed_set,
                           num_classes=10)
        return Evaluator(pipe, wl, reg, extractor=extractor, reference_stats=M.load_reference_stats(),
                         workload_key=f"tune_search:{n}:{seed_set}:{args.steps}", cache_path=cache)

    tmp = args.cache_dir or Path(tempfile.mkdtemp(prefix="tune-search-"))
    calib = evaluator(args.images, 1, tmp / "calib.json")  # baselines are generated when first needed
    bar = tqdm(total=len(grid), desc="exhaustive", unit="eval")
    full = {}
    ex = exhaustive(space, calib.evaluate, QualityBudget(psnr=0.0), images=args.images, progress=lambda r: bar.update(1))
    bar.close()
    results = ex.history
    n_evals = max(1, int(args.evals_frac * len(grid)))
    searches = []
    for bname, b in BUDGETS.items():
        budget = QualityBudget(**b)
        best = next((r for r in sorted(results, key=lambda r: -r["speedup"]) if budget.meets(r)), None)
        full[bname] = best
        for seed in [int(s) for s in args.seeds.split(",")]:
            sh = successive_halving(space, calib.evaluate, budget, evals=n_evals, final_images=args.images,
                                    min_images=8, seed=seed)
            searches.append({"budget": bname, "seed": seed, "choice": sh.best, "evaluations": sh.evaluations,
                             "image_evaluations": sh.image_evaluations})
            print(f"{bname} seed {seed}: {sh.evaluations} evals ({sh.image_evaluations} image-evals) -> "
                  f"{sh.best and sh.best['key']} {sh.best and round(sh.best['speedup'], 2)}x; exhaustive best "
                  f"{best and best['key']} {best and round(best['speedup'], 2)}x", flush=True)
    # held-out, side by side: every distinct choice and exhaustive best
    keys = {r["key"]: r for r in list(full.values()) + [s["choice"] for s in searches] if r}
    hold = evaluator(args.holdout, 0, tmp / "hold.json")
    held = {k: hold.evaluate(Candidate.from_record(r["candidate"]), args.holdout)
            for k, r in tqdm(keys.items(), desc="held-out", unit="eval")}
    from accel.presets import PRESETS

    presets = {}  # accel/presets.py's DiT presets, held out like the choices
    for name, comps in PRESETS["dit"][0].items():
        c = Candidate(tuple((m, tuple(sorted(p.items()))) for m, p in comps))
        presets[name] = {**hold.evaluate(c, args.holdout), "calibration": calib.cached(c, args.images)}
    rows = []
    for s in searches:
        best = full[s["budget"]]
        c = s["choice"]
        rows.append({**s, "exhaustive_best": best and best["key"],
                     "speed_ratio_calibration": (c["speedup"] / best["speedup"]) if c and best else None,
                     "speed_ratio_holdout": (held[c["key"]]["speedup"] / held[best["key"]]["speedup"]) if c and best else None,
                     "evaluation_share": s["evaluations"] / len(grid),
                     "image_evaluation_share": s["image_evaluations"] / ex.image_evaluations})
    print(f"\ngrid: {len(grid)} candidates x {args.images} images; search budget {n_evals} evaluations")
    print(f"{'budget':<9} {'seed':>4} {'evals':>5} {'img-ev %':>8}  {'choice':<58} {'speed/best calib':>16} {'held-out':>9}")
    for r in rows:
        c = r["choice"]
        print(f"{r['budget']:<9} {r['seed']:>4} {r['evaluations']:>5} {100 * r['image_evaluation_share']:>7.1f}%  "
              f"{(c['key'] if c else 'none'):<58} {r['speed_ratio_calibration'] or float('nan'):>16.3f} "
              f"{r['speed_ratio_holdout'] or float('nan'):>9.3f}")
    print("\npresets (accel/presets.py, held-out):")
    for name, r in presets.items():
        print(f"  {name:<9} {r['speedup']:5.2f}x  PSNR {r['psnr']:5.1f}  FD-digits {r['fd_pct']:+6.1f}%  {r['key']}")
    print("\nheld-out (seed set 0):")
    for k, r in sorted(held.items(), key=lambda kv: -kv[1]["speedup"]):
        print(f"  {r['speedup']:5.2f}x  PSNR {r['psnr']:5.1f}  FD-digits {r['fd_pct']:+6.1f}%  {k}")
    doc = {"grid": {m: {k: list(v) if isinstance(v, tuple) else v for k, v in g.items()} for m, g in GRID.items()},
           "grid_size": len(grid), "images": args.images, "holdout_images": args.holdout, "steps": args.steps,
           "search_evaluations": n_evals, "exhaustive": results, "exhaustive_best": full, "searches": rows,
           "holdout": held, "presets": presets, "threads": args.threads, "batch_size": args.batch_size,
           "wall_s": time.perf_counter() - t0}
    write_json(args.out.with_suffix(".json"), doc)
    print(f"wrote {args.out.with_suffix('.json')}")
    return doc


def main() -> None:
    run(build_parser().parse_args())


if __name__ == "__main__":
    main()
