"""Depth pruning on the embedded default model: every selector at two depths, then distillation.

    python benchmarks/pruning.py [--keeps 9,6] [--num-images 100] [--distill-minutes 20] [--threads 1]

One process, paired seeds and classes throughout:
  1. calibration calls from the default pipeline's own sampling (fit set) and a disjoint
     held-out set (other seeds);
  2. for each kept depth and selector (laptop, evo, cosine, learned, first, last, uniform, random):
     the kept blocks, calibration output error on the fit and held-out sets, then the real
     pruned model's images: FD-digits, class agreement with the teacher's images (digit
     classifier), PSNR to the teacher's images;
  3. transformer-call and end-to-end speedup per depth (interleaved medians);
  4. distillation at each `--distill-keeps` depth (default: `--distill-keep`) of the LAPTOP
     selection and of the best other selection (lowest held-out error), or of every
     `--distill-selectors` selection, for the same budget each (`--distill-steps` optimizer
     steps, or `--distill-minutes`), then the same quality metrics after distillation.

The selector comparison of issue 33 (every selector distilled for the same number of optimizer steps):

    python benchmarks/pruning.py --keeps 9,6 --selectors laptop,evo,cosine,learned,first \
        --distill-keeps 9,6 --distill-selectors laptop,evo,cosine,learned,first --distill-steps 300 \
        --distill-minutes 1000 --out benchmarks/results/pruning-selectors-default.json
Writes benchmarks/results/pruning.json (incrementally, so a stopped run keeps what it measured).
Targets (issue 11): 6/12 kept -> >= 1.8x transformer speedup; after distillation FD-digits within
15% of the teacher; LAPTOP or evo beats first/last-k and uniform before distillation.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import interleaved_medians, machine, median, write_json  # noqa: E402
from accel.eval.fid import feature_stats, frechet_distance  # noqa: E402
from accel.eval.fidelity import psnr  # noqa: E402
from accel.models import (  # noqa: E402
    DEFAULT_SAMPLER,
    classifier_features,
    load_default_pipeline,
    load_digits_classifier,
    load_reference_stats,
)
from accel.pipelines.calls import class_inputs  # noqa: E402
from accel.pruning.distill import DistillConfig, digits_data, distill, ema_model  # noqa: E402
from accel.pruning.importance import (  # noqa: E402
    MaskEvaluator,
    collect_calibration,
    cosine_scores,
    first_scores,
    last_scores,
    laptop_scores,
    random_scores,
)
from accel.pruning.prune import prune_model  # noqa: E402
from accel.pruning.select import (  # noqa: E402
    Budget,
    evolutionary_search,
    forced_blocks,
    select_by_scores,
    uniform_keep,
)

SELECTORS = ("laptop", "evo", "cosine", "learned", "first", "last", "uniform", "random")


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--keeps", default="9,6", help="kept depths (of 12), comma list")
    p.add_argument("--selectors", default=",".join(SELECTORS))
    p.add_argument("--learned-steps", type=int, default=200, help="optimisation steps of the learned selector")
    p.add_argument("--learned-group", type=int, default=None,
                   help="the learned selector's N:M group size (default: learned.default_group_size, 2:4 at 6/12)")
    p.add_argument("--num-images", type=int, default=100, help="images per model (paired seeds/classes)")
    p.add_argument("--steps", type=int, default=20, help="sampling steps (DPM-Solver++, guidance 2.0)")
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--calib-images", type=int, default=10)
    p.add_argument("--calib-steps", type=int, default=20)
    p.add_argument("--calib-calls", type=int, default=24)
    p.add_argument("--held-out-images", type=int, default=10)
    p.add_argument("--evo-evaluations", type=int, default=40)
    p.add_argument("--evo-calls", type=int, default=12, help="calibration calls per evo fitness evaluation")
    p.add_argument("--distill-keep", type=int, default=6)
    p.add_argument("--distill-keeps", default=None, help="comma list of depths to distil at (default: --distill-keep)")
    p.add_argument("--distill-selectors", default=None,
                   help="comma list to distil (default: laptop and the best other selector by held-out error)")
    p.add_argument("--distill-minutes", type=float, default=20.0)
    p.add_argument("--distill-steps", type=int, default=None, help="cap on steps (default: time budget only)")
    p.add_argument("--distill-batch", type=int, default=32)
    p.add_argument("--distill-lr", type=float, default=3e-4)
    p.add_argument("--timing-images", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "pruning.json"))
    return p.parse_args()


class Quality:
    """Paired image metrics against the teacher's images."""

    def __init__(self, teacher_images: torch.Tensor):
        self.classifier = load_digits_classifier()
        self.reference = load_reference_stats()
        self.teacher_images = teacher_images
        self.teacher_feats, self.teacher_preds = classifier_features(self.classifier, teacher_images)

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> dict:
        feats, preds = classifier_features(self.classifier, images)
        fd = frechet_distance(*feature_stats(feats), *self.reference)
        return {
            "fd_digits": fd,
            "class_agreement": float((preds == self.teacher_preds).float().mean()),
            "accuracy_vs_requested": float((preds == labels).float().mean()),
            "psnr_to_teacher": psnr(images, self.teacher_images),
        }


def generate(pipe, n: int, steps: int, batch: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(images (N, 1, 32, 32) in [0, 1], requested labels): batch b uses generator seed + b, classes cycle."""
    images, labels = [], []
    for kw in class_inputs(n, 10, steps, DEFAULT_SAMPLER["guidance_scale"], seed, batch):
        kw["output_type"] = "np"
        with torch.no_grad():
            out = pipe(**kw).images
        images.append(torch.from_numpy(out).permute(0, 3, 1, 2).float())
        labels.append(torch.tensor(kw["class_labels"]))
    return torch.cat(images), torch.cat(labels)


def with_transformer(pipe, transformer):
    """The same pipeline class, VAE and scheduler around another transformer."""
    q = type(pipe)(transformer=transformer, vae=pipe.vae, scheduler=pipe.scheduler)
    q.set_progress_bar_config(disable=True)
    return q


def main() -> None:
    args = parse()
    torch.set_num_threads(args.threads)
    keeps = [int(k) for k in args.keeps.split(",")]
    selectors = [s for s in args.selectors.split(",") if s]
    doc: dict = {"config": vars(args), "notes": [], "selection": {}, "timing": {}, "distill": {}}
    out = Path(args.out)
    t_start = time.perf_counter()

    def save() -> None:
        doc["wall_seconds"] = round(time.perf_counter() - t_start, 1)
        write_json(out, doc)

    pipe = load_default_pipeline()
    teacher = pipe.transformer
    n = len(teacher.transformer_blocks)
    forced = forced_blocks(teacher)
    g = DEFAULT_SAMPLER["guidance_scale"]
    fit = collect_calibration(pipe, class_inputs(args.calib_images, 10, args.calib_steps, g, args.seed),
                              max_calls=args.calib_calls)
    held = collect_calibration(pipe, class_inputs(args.held_out_images, 10, args.calib_steps, g, args.seed + 1000),
                               max_calls=args.calib_calls)
    doc["calibration"] = {"fit": fit.settings, "held_out": held.settings}
    print(f"[{machine()}] calibration: {len(fit)} fit calls, {len(held)} held-out calls", flush=True)

    t0 = time.perf_counter()
    scores = {"laptop": laptop_scores(teacher, fit)}
    doc["score_seconds"] = {"laptop": round(time.perf_counter() - t0, 1)}
    t0 = time.perf_counter()
    scores["cosine"] = cosine_scores(teacher, fit)
    doc["score_seconds"]["cosine"] = round(time.perf_counter() - t0, 1)
    scores.update(first=first_scores(n), last=last_scores(n), random=random_scores(n, args.seed))
    doc["scores"] = scores

    teacher_images, labels = generate(pipe, args.num_images, args.steps, args.batch_size, args.seed)
    quality = Quality(teacher_images)
    doc["teacher"] = quality(teacher_images, labels)
    save()
    print(f"teacher: {doc['teacher']}", flush=True)

    fit_eval = MaskEvaluator(teacher, fit)
    held_eval = MaskEvaluator(teacher, held)
    evo_idx = torch.linspace(0, len(fit) - 1, min(args.evo_calls, len(fit))).round().long().unique().tolist()
    models: dict[tuple[int, str], list[int]] = {}
    for k in keeps:
        budget = Budget("count", k, (1.0,) * n)
        rows = doc["selection"].setdefault(str(k), {})
        for sel in selectors:
            t0 = time.perf_counter()
            extra: dict = {}
            if sel == "uniform":
                keep = uniform_keep(n, k, forced)
            elif sel == "learned":  # TinyFusion-style masks on the fit calls (accel/pruning/learned.py)
                from accel.pruning.learned import learned_keep

                res = learned_keep(teacher, fit, k, forced, steps=args.learned_steps, seed=args.seed,
                                   group=args.learned_group)
                keep = res["keep"]
                extra = {"learned_steps": res["learned_steps"], "learned_scores": res["scores"],
                         "keep_frequency": res["keep_frequency"], "learned_mode": res["learned_mode"],
                         "learned_groups": res.get("learned_groups")}
            elif sel == "evo":
                init = select_by_scores(scores["laptop"], budget, forced)
                res = evolutionary_search(lambda m: fit_eval.error(m, evo_idx), n, budget, forced=forced,
                                          init=[init], evaluations=args.evo_evaluations, seed=args.seed)
                keep = res.keep
                extra = {"evo_evaluations": res.evaluations, "evo_history": res.history, "knapsack_init": init}
            else:
                keep = select_by_scores(scores[sel], budget, forced)
            seconds = time.perf_counter() - t0
            models[(k, sel)] = keep
            row = {"keep": keep, "select_seconds": round(seconds, 1), **extra,
                   "fit_error": fit_eval.error(keep), "held_out_error": held_eval.error(keep),
                   "sum_of_scores_removed": sum(scores["laptop"][i] for i in range(n) if i not in keep)}
            t0 = time.perf_counter()
            pruned = prune_model(teacher, keep)
            images, _ = generate(with_transformer(pipe, pruned), args.num_images, args.steps, args.batch_size,
                                 args.seed)
            row.update(quality(images, labels), eval_seconds=round(time.perf_counter() - t0, 1))
            rows[sel] = row
            save()
            print(f"keep {k} {sel:8s} {keep} held-out err {row['held_out_error']:.4f} "
                  f"FD {row['fd_digits']:.2f} agree {row['class_agreement']:.2f} PSNR {row['psnr_to_teacher']:.2f}",
                  flush=True)
    fit_eval.close()
    held_eval.close()

    # speed: one transformer call (CFG batch of timing_images) and one pipeline call, per depth
    x = torch.randn(2 * args.timing_images, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    ts = torch.full((2 * args.timing_images,), 500)
    ys = torch.arange(2 * args.timing_images) % 10
    fns, e2e = {}, {}
    small = {k: prune_model(teacher, models.get((k, "laptop")) or uniform_keep(n, k, forced)) for k in keeps}
    for name, model in [("teacher", teacher), *[(f"keep{k}", m) for k, m in small.items()]]:
        fns[name] = (lambda m: lambda: m(x, timestep=ts, class_labels=ys))(model)
        q = with_transformer(pipe, model)
        e2e[name] = (lambda q: lambda: q(list(range(args.timing_images)), num_inference_steps=args.steps,
                                         guidance_scale=g, generator=torch.Generator().manual_seed(0),
                                         output_type="np"))(q)
    with torch.no_grad():
        tt = interleaved_medians(fns, args.repeats)
        te = interleaved_medians(e2e, args.repeats)
    for name in fns:
        doc["timing"][name] = {
            "transformer_s": median(tt[name]), "end_to_end_s": median(te[name]),
            "transformer_speedup": median(tt["teacher"]) / median(tt[name]),
            "end_to_end_speedup": median(te["teacher"]) / median(te[name]),
        }
    save()
    print("timing:", {k: (round(v["transformer_speedup"], 2), round(v["end_to_end_speedup"], 2))
                      for k, v in doc["timing"].items()}, flush=True)

    # distillation: LAPTOP and the best other selector (or --distill-selectors) at each depth, same budget each
    data = digits_data()
    depths = [int(x) for x in args.distill_keeps.split(",")] if args.distill_keeps else [args.distill_keep]
    doc["distill_targets"] = {}
    for k in depths:
        targets = distill_targets(doc, k, args.distill_selectors)
        doc["distill_targets"][str(k)] = targets
        rows = doc["selection"].get(str(k), {})
        for sel in targets:
            keep = rows[sel]["keep"]
            twin = next((t for t, r in doc["distill"].get(str(k), {}).items() if r["keep"] == keep), None)
            if twin is not None:  # same blocks, same seed and data: the same distillation, not run twice
                doc["distill"][str(k)][sel] = {**doc["distill"][str(k)][twin], "same_as": twin}
                doc["notes"].append(f"at keep {k} {sel} chose {twin}'s blocks: its distillation is {twin}'s")
                save()
                continue
            student = prune_model(teacher, keep)
            cfg = DistillConfig(steps=args.distill_steps, minutes=args.distill_minutes, batch_size=args.distill_batch,
                                lr=args.distill_lr, save_every=10**9, seed=args.seed, progress=False)
            with tempfile.TemporaryDirectory() as work:
                res = distill(teacher, student, keep, data, cfg, work)
            final = ema_model(student, res["ema"])
            images, _ = generate(with_transformer(pipe, final), args.num_images, args.steps, args.batch_size,
                                 args.seed)
            losses = res["losses"]
            doc["distill"].setdefault(str(k), {})[sel] = {
                "keep": keep, "steps": res["steps"], "train_seconds": round(res["elapsed_s"], 1),
                "loss_first10": sum(p["loss"] for p in losses[:10]) / max(1, len(losses[:10])),
                "loss_last10": sum(p["loss"] for p in losses[-10:]) / max(1, len(losses[-10:])),
                "before": {m: rows[sel][m] for m in ("fd_digits", "class_agreement", "psnr_to_teacher")},
                "after": quality(images, labels),
            }
            save()
            print(f"distilled keep {k} {sel}: {doc['distill'][str(k)][sel]}", flush=True)
    print_table(doc)
    save()


def distill_targets(doc: dict, k: int, wanted: str | None) -> list[str]:
    """The selections distilled at depth k: `wanted` (a comma list) when given, else LAPTOP and the other
    selector with the lowest held-out error among those that chose different blocks (noted when some chose
    LAPTOP's own)."""
    rows = doc["selection"].get(str(k), {})
    if wanted is not None:
        return [s for s in wanted.split(",") if s in rows]
    targets = ["laptop"] if "laptop" in rows else []
    laptop_keep = rows.get("laptop", {}).get("keep")
    others = {s: r for s, r in rows.items() if s != "laptop"}
    same = sorted(s for s, r in others.items() if r["keep"] == laptop_keep)
    if same:
        doc["notes"].append(f"at keep {k} {', '.join(same)} chose LAPTOP's blocks; the best-other distillation "
                            "takes the best selector with a different keep set")
    differ = {s: r for s, r in others.items() if r["keep"] != laptop_keep}
    if differ:
        targets.append(min(differ, key=lambda s: differ[s]["held_out_error"]))
    return targets


def print_table(doc: dict) -> None:
    t = doc["teacher"]
    print(f"\nteacher: FD-digits {t['fd_digits']:.2f}")
    print(f"{'keep':>4} {'selector':8} {'held-out err':>12} {'FD-digits':>9} {'agree':>6} {'PSNR':>6}")
    for k, rows in doc["selection"].items():
        for sel, r in rows.items():
            print(f"{k:>4} {sel:8} {r['held_out_error']:12.4f} {r['fd_digits']:9.2f} {r['class_agreement']:6.2f} "
                  f"{r['psnr_to_teacher']:6.2f}")
    for name, v in doc["timing"].items():
        print(f"{name}: transformer {v['transformer_speedup']:.2f}x, end-to-end {v['end_to_end_speedup']:.2f}x")
    for k, sel, d in ((k, sel, d) for k, rows in doc["distill"].items() for sel, d in rows.items()):
        b, a = d["before"], d["after"]
        print(f"distilled keep {k} {sel} ({d['steps']} steps): FD {b['fd_digits']:.2f} -> {a['fd_digits']:.2f}, agree "
              f"{b['class_agreement']:.2f} -> {a['class_agreement']:.2f}, PSNR {b['psnr_to_teacher']:.2f} -> "
              f"{a['psnr_to_teacher']:.2f}")


if __name__ == "__main__":
    main()
