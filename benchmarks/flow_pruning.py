"""Depth pruning on the embedded flow model: the pruned and distilled folders against the teacher.

    accel prune --model flow --keep 0.5 --out runs/flow-keep6 --threads 1
    accel distill --teacher flow --student runs/flow-keep6 --out runs/flow-keep6-distilled \\
        --teacher-samples 400 --sample-steps 28 --lr 3e-4 --minutes 30 --threads 1
    python benchmarks/flow_pruning.py --students runs/flow-keep6,runs/flow-keep6-distilled \\
        [--num-images 200] [--steps 28] [--threads 1] [--out benchmarks/results/pruning-flow.json]

The folders are the user-facing commands' outputs (stock `StableDiffusion3Pipeline` folders whose
`accel_model.json` names the flow model); this script only measures them, in one process on paired
seeds and prompts: image i asks for digit i % 10 (`digit_prompt`) with generator seed `--seed` + i,
at the flow model's default sampler (guidance, shift, 6 text tokens) and `--steps` steps.

Per model: FD-digits over all images, class agreement (the digits classifier's label is the digit
asked for), PSNR to the teacher's images of the same seeds; transformer-call time (one recorded
call of the teacher's sampling, batch of `--timing-images` with CFG) and end-to-end time of a
`--timing-images` pipeline call, interleaved medians of `--repeats`. Targets (issue 22): 6/12
blocks >= 1.8x per transformer call; distilled FD-digits within 15% of the teacher's.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import interleaved_medians, machine, median, write_json  # noqa: E402
from accel.eval.fidelity import per_image_mse, psnr_from_mse  # noqa: E402
from accel.eval.workload import generate, make_workload  # noqa: E402
from accel.models import (  # noqa: E402
    FLOW_SAMPLER,
    classifier_features,
    digit_prompt,
    fd_digits,
    load_digits_classifier,
    read_marker,
)
from accel.pipelines import load_model  # noqa: E402
from accel.pipelines.calls import record_calls  # noqa: E402
from accel.readers import read_json  # noqa: E402


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--teacher", default="flow", help="the embedded flow model, or a folder derived from it")
    p.add_argument("--students", required=True, help="comma list of pipeline folders (accel prune / distill outputs)")
    p.add_argument("--num-images", type=int, default=200)
    p.add_argument("--steps", type=int, default=FLOW_SAMPLER["steps"])
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--timing-images", type=int, default=8)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--seed", type=int, default=40_000, help="first image seed (not used by prune/distill: 0..)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "pruning-flow.json")
    return p.parse_args()


def lineage(folder: str) -> dict | None:
    """How a folder was made, from its own JSON files: the selector and kept blocks (pruning.json) and,
    for a distilled folder, the optimizer steps, training seconds and data (distill.json); None for the embedded model."""
    root = Path(folder)
    if not (root / "pruning.json").is_file():
        return None
    pr = read_json(root / "pruning.json", what="pruning.json")
    out = {"selector": pr.get("selector"), "keep": pr.get("block_map") or pr.get("keep"), "distill": None,
           "learned_mode": pr.get("learned_mode"), "learned_groups": pr.get("learned_groups")}
    if (root / "distill.json").is_file():
        d = read_json(root / "distill.json", what="distill.json")
        out["distill"] = {"steps": d.get("steps"), "train_seconds": d.get("train_seconds"),
                          "data": (d.get("data") or {}).get("kind", "teacher samples")}
    return out


def main() -> None:
    args = parse()
    torch.set_num_threads(args.threads)
    names = [args.teacher] + [s for s in args.students.split(",") if s]
    models = {n: load_model(n, progress_bars=False) for n in names}
    for n, m in models.items():
        if not m.fd_digits or m.prompts is None:
            raise SystemExit(f"{n}: not the flow model or a folder derived from it (no accel_model.json naming it)")
    teacher = models[args.teacher].pipe
    prompts = [digit_prompt(d) for d in range(10)]
    work = make_workload(teacher, args.num_images, args.seed, args.steps, guidance=FLOW_SAMPLER["guidance_scale"],
                         batch_size=args.batch_size, prompts=prompts,
                         extra_kwargs={"max_sequence_length": FLOW_SAMPLER["max_sequence_length"]})
    asked = torch.tensor([i % 10 for i in range(args.num_images)])
    classifier = load_digits_classifier()
    rows: dict[str, dict] = {}
    images: dict[str, torch.Tensor] = {}
    t0 = time.perf_counter()
    for n, m in models.items():
        batches = [generate(m.pipe, work, range(i, min(i + args.batch_size, args.num_images)))
                   for i in range(0, args.num_images, args.batch_size)]
        images[n] = torch.cat(batches)
        _, preds = classifier_features(classifier, images[n])
        tr = m.pipe.transformer
        rows[n] = {"blocks": len(tr.transformer_blocks), "params_m": sum(p.numel() for p in tr.parameters()) / 1e6,
                   "fd_digits": fd_digits(images[n], classifier),
                   "class_agreement": float((preds == asked).float().mean()),
                   "marker": read_marker(n) if n != args.teacher else None, "lineage": lineage(n)}
        print(f"{n}: FD-digits {rows[n]['fd_digits']:.2f}, agreement {rows[n]['class_agreement']:.3f}", flush=True)
    base = images[args.teacher]
    for n in names:
        rows[n]["psnr_to_teacher"] = None if n == args.teacher else psnr_from_mse(per_image_mse(images[n], base))
        rows[n]["fd_vs_teacher_pct"] = 100 * (rows[n]["fd_digits"] / rows[args.teacher]["fd_digits"] - 1)

    # timing: one recorded transformer call of the teacher's sampling, and a whole pipeline call
    k = args.timing_images
    call_args, call_kwargs = record_calls(teacher, lambda: generate(teacher, work, range(k)))[args.steps // 2][:2]

    def per_call(tr):
        return lambda: tr(*call_args, **call_kwargs)

    with torch.no_grad():
        t_call = interleaved_medians({n: per_call(m.pipe.transformer) for n, m in models.items()}, args.repeats)
    t_e2e = interleaved_medians({n: (lambda p: lambda: generate(p, work, range(k)))(m.pipe)
                                 for n, m in models.items()}, args.repeats)
    for n in names:
        rows[n]["transformer_s"] = median(t_call[n])
        rows[n]["end_to_end_s"] = median(t_e2e[n])
        rows[n]["transformer_speedup"] = median(t_call[args.teacher]) / median(t_call[n])
        rows[n]["end_to_end_speedup"] = median(t_e2e[args.teacher]) / median(t_e2e[n])
    doc = {"config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
           "machine": machine(), "wall_s": round(time.perf_counter() - t0, 1), "models": rows,
           "notes": ["image i: prompt digit_prompt(i % 10), seed --seed + i; PSNR to the teacher's images of the "
                     "same seeds (null for the teacher itself); transformer call: the teacher's recorded call at "
                     f"step {args.steps // 2} (batch {k} x 2 with CFG)"]}
    write_json(args.out, doc)
    print(f"\n{'model':<48} {'blocks':>6} {'FD-digits':>9} {'vs teacher':>10} {'agree':>6} {'PSNR':>6} "
          f"{'call x':>6} {'e2e x':>6}")
    for n in names:
        r = rows[n]
        ps = "-" if r["psnr_to_teacher"] is None else f"{r['psnr_to_teacher']:.1f}"
        print(f"{n[-48:]:<48} {r['blocks']:>6} {r['fd_digits']:9.2f} {r['fd_vs_teacher_pct']:+9.1f}% "
              f"{r['class_agreement']:6.3f} {ps:>6} {r['transformer_speedup']:6.2f} {r['end_to_end_speedup']:6.2f}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
