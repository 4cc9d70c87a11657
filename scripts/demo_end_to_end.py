"""Prune, distil, cache and compress tokens on one model, end to end, and measure every stage.

What it does, all in this process through accel's own APIs (the functions behind
`accel prune` and `accel distill`, then one `accel.apply`):

 1. prune: calibrate on the pipeline's own sampling, score blocks (LAPTOP-Diff by default),
    keep `--keep` of them (default 9 of the embedded model's 12), build the smaller model;
 2. distil: train the pruned copy towards the original for `--minutes` (default 2) or
    `--max-steps` optimizer steps (EMA weights are kept, as `accel distill` does);
 3. stack one block cache (`--cache`, default delta-cache) and one token method (`--tokens`,
    default toca:interval=2,recompute=0.3) on the distilled model through one `accel.apply`.

Then the same seeds and classes go through baseline | pruned | +distilled | +cache | +tokens,
timed side by side (interleaved warmed-up repeats, ratio of medians) and compared with the
baseline (PSNR) and, for digits models, with real digits (FD-digits, paired seeds, and the
digits classifier's class agreement). Written into --out:

    table.txt, results.json   the table, every setting, machine load and provenance
    grid.png                  one column per stage, the same seeds in the same rows
    pruned/, distilled/       pipeline folders (`accel bench --model OUT/distilled` loads them)

Run it (offline; 8 minutes with --threads 1 on 2 shared CPU cores at load ~7: calibration and
block scores 3 min, distillation 2 min, 5 x 100 images and the timing 3 min):

    python scripts/demo_end_to_end.py
    python scripts/demo_end_to_end.py --keep 6 --minutes 10 --cache interval-cache:interval=2 --tokens toca

One such run (defaults, 20 DPM-Solver++ steps, 102 distillation steps): speedup 1.35x pruned,
1.32x +distilled, 2.12x +delta-cache, 2.59x +toca; FD-digits 27.2 baseline, 48.1 pruned,
29.3 +distilled, 30.0 +cache, 38.1 +tokens (the token methods cost the most quality on this
256-token model; tome:ratio=0.5 instead of toca gave 87.9).

Real weights: pass a local diffusers pipeline folder (accel never downloads; see
`scripts/demo_preset.py` for fetching one). A folder that is not derived from the embedded
digits model has no built-in training set: it is distilled on `--teacher-samples` of its own
sampled calls, and FD-digits is left out (PSNR and speed still apply):

    python scripts/demo_end_to_end.py --model ./pixart --keep 0.75 --teacher-samples 64 \\
        --minutes 30 --device cuda --num-images 16

A missing or unsupported --model is one `demo_end_to_end.py: error: ...` line, exit code 2.
"""

from __future__ import annotations

import argparse
import copy
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _demo_common as C  # noqa: E402

PROG = "demo_end_to_end.py"


def build_parser() -> argparse.ArgumentParser:
    from accel.pruning.prune import SELECTORS

    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="default",
                   help="'default' (embedded digits DiT), a folder derived from it, or a local pipeline folder")
    g = p.add_argument_group("pruning (accel prune)")
    g.add_argument("--keep", default="9", help="blocks to keep: a count (9) or a fraction (0.75); default 9")
    g.add_argument("--selector", default="laptop", choices=SELECTORS, help="block selector (default laptop)")
    g.add_argument("--calib-images", type=int, default=20, help="calibration images (default 20)")
    g.add_argument("--calib-steps", type=int, default=20, help="calibration sampling steps (default 20)")
    g.add_argument("--calib-calls", type=int, default=32, help="transformer calls kept for scoring (default 32)")
    g = p.add_argument_group("distillation (accel distill)")
    g.add_argument("--minutes", type=float, default=2.0, help="training budget in minutes (default 2)")
    g.add_argument("--max-steps", type=int, default=None, help="stop after this many optimizer steps")
    g.add_argument("--distill-batch-size", type=int, default=32, help="training batch (default 32)")
    g.add_argument("--lr", type=float, default=1e-4, help="learning rate (default 1e-4, as accel distill)")
    g.add_argument("--teacher-samples", type=int, default=16,
                   help="non-digits models: train on the transformer calls of N teacher-sampled images")
    g = p.add_argument_group("cache and tokens (one accel.apply)")
    g.add_argument("--cache", default="delta-cache", help="one cache method, `accel bench --methods` syntax")
    g.add_argument("--tokens", default="toca:interval=2,recompute=0.3",
                   help="one token method (default toca:interval=2,recompute=0.3: on the distilled 9-block model "
                        "the least FD-digits damage of the token methods tried on top of delta-cache)")
    g = p.add_argument_group("measurement")
    g.add_argument("--num-images", type=int, default=100, help="paired images per stage (default 100)")
    g.add_argument("--steps", type=int, default=None,
                   help=f"sampling steps (default {C.DEFAULT_MODEL_STEPS} for digits models, "
                        f"{C.OTHER_MODEL_STEPS} otherwise)")
    g.add_argument("--batch-size", type=int, default=25, help="images per pipeline call (default 25)")
    g.add_argument("--timing-images", type=int, default=8, help="images per timed call (default 8)")
    g.add_argument("--repeats", type=int, default=3, help="timed repeats per stage (default 3)")
    g.add_argument("--warmup", type=int, default=1, help="untimed warm-up rounds (default 1)")
    g.add_argument("--grid-images", type=int, default=8, help="rows of grid.png (default 8)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N (default cpu)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--no-save-models", dest="save_models", action="store_false",
                   help="do not write the pruned/ and distilled/ pipeline folders")
    p.add_argument("--out", default="demo-out/end-to-end", help="output folder (default demo-out/end-to-end)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def one_method(spec: str, kind: str, flag: str) -> tuple[str, Any]:
    """(label, config) of exactly one method of `kind` from `--cache` / `--tokens`."""
    import accel
    from accel.eval.methods import parse_methods

    specs = [s for s in parse_methods(spec, accel.methods()) if not s.is_baseline]
    if len(specs) != 1 or len(specs[0].configs) != 1:
        raise C.DemoInputError(f"{flag} {spec!r}: give exactly one method")
    cfg = specs[0].configs[0]
    if getattr(cfg, "kind", None) != kind:
        raise C.DemoInputError(f"{flag} {spec!r}: {specs[0].label} is of kind {getattr(cfg, 'kind', None)!r}, "
                               f"not {kind!r}")
    return specs[0].label, cfg


def check_args(args: argparse.Namespace) -> None:
    positive = ("calib_images", "calib_steps", "calib_calls", "distill_batch_size", "num_images", "batch_size",
                "timing_images", "repeats", "grid_images")
    for name in positive:
        if getattr(args, name) < 1:
            raise C.DemoInputError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    for name in ("max_steps", "threads", "steps"):
        v = getattr(args, name)
        if v is not None and v < 1:
            raise C.DemoInputError(f"--{name.replace('_', '-')} must be >= 1, got {v}")
    if args.minutes is not None and args.minutes <= 0:
        raise C.DemoInputError(f"--minutes must be positive, got {args.minutes}")
    if args.warmup < 0:
        raise C.DemoInputError(f"--warmup must be >= 0, got {args.warmup}")


def with_transformer(pipe: Any, transformer: torch.nn.Module) -> Any:
    """The same pipeline class around another transformer (own scheduler copy, shared VAE / encoders)."""
    comps = dict(pipe.components)
    comps["transformer"] = transformer
    comps["scheduler"] = type(pipe.scheduler).from_config(pipe.scheduler.config)
    labels = getattr(pipe, "labels", None)
    if isinstance(labels, dict) and labels:  # DiTPipeline keeps its class names outside its components
        id2label: dict[int, str] = {}
        for name, i in labels.items():
            id2label[i] = f"{id2label[i]}, {name}" if i in id2label else name
        comps["id2label"] = id2label
    out = type(pipe)(**comps)
    out.set_progress_bar_config(disable=True)
    return out


def prune_stage(args: argparse.Namespace, m: C.DemoModel) -> tuple[torch.nn.Module, dict]:
    """Calibrate, score, select and build the pruned transformer (`accel prune`'s prune_pipeline, in memory)."""
    from accel.pruning.workflow import prune_pipeline

    try:  # a bad --keep fails before the calibration runs
        result = prune_pipeline(m.pipe, args.keep, digits=m.digits, selector=args.selector,
                                calib_images=args.calib_images, calib_steps=args.calib_steps,
                                calib_calls=args.calib_calls, seed=args.seed, source=m.name, progress=not args.quiet)
    except ValueError as exc:
        raise C.DemoInputError(str(exc)) from None
    return result.model.eval(), result.info


def distill_stage(args: argparse.Namespace, m: C.DemoModel, pruned: torch.nn.Module, mapping: list[int],
                  workdir: Path) -> tuple[torch.nn.Module, dict]:
    """Train a copy of the pruned transformer towards the original (`accel distill`'s distill_pipeline)."""
    from accel.pruning.distill import DistillConfig
    from accel.pruning.workflow import distill_data, distill_pipeline

    data, data_info = distill_data(m.pipe, digits=m.digits, teacher_samples=0 if m.digits else args.teacher_samples,
                                   sample_steps=args.calib_steps, seed=args.seed + 1)
    cfg = DistillConfig(steps=args.max_steps, minutes=args.minutes, batch_size=args.distill_batch_size,
                        lr=args.lr, save_every=10**9, seed=args.seed, progress=not args.quiet)
    student, res = distill_pipeline(m.pipe, copy.deepcopy(pruned), mapping, data, cfg, workdir)
    losses = res["losses"]
    info = {"steps": res["steps"], "train_seconds": round(res["elapsed_s"], 1), "data": data_info,
            "batch_size": args.distill_batch_size, "lr": args.lr, "minutes": args.minutes,
            "max_steps": args.max_steps, "weights": "ema",
            "first_loss": losses[0]["loss"] if losses else None, "last_loss": losses[-1]["loss"] if losses else None}
    return student.requires_grad_(False), info


def quality(images: torch.Tensor, base: torch.Tensor, conditions: list, digits: bool, fd_tools: Any) -> dict:
    """PSNR to the baseline; for digits models FD-digits and the classifier's agreement with the class asked for."""
    out: dict[str, Any] = {"psnr": C.psnr_to(images, base), "fd_digits": None, "class_agreement": None}
    if digits:
        from accel.eval.fid import feature_stats, frechet_distance
        from accel.models import classifier_features

        classifier, (mu, sigma) = fd_tools
        feats, preds = classifier_features(classifier, images)
        out["fd_digits"] = frechet_distance(*feature_stats(feats), mu, sigma)
        out["class_agreement"] = float((preds == torch.tensor(conditions)).double().mean())
    return out


def run(args: argparse.Namespace) -> dict:
    import accel
    from tqdm.auto import tqdm

    from accel.eval.paired import method_warnings

    check_args(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = C.resolve_device(args.device)
    cache_label, cache_cfg = one_method(args.cache, "cache", "--cache")
    tokens_label, tokens_cfg = one_method(args.tokens, "tokens", "--tokens")
    m = C.load_model(args.model, device=device)
    steps = args.steps or C.default_steps(m)
    images = C.PairedImages(m, args.num_images, steps, seed=args.seed, batch_size=args.batch_size)
    C.check_applies(m.pipe, [cache_cfg, tokens_cfg], f"{cache_label}+{tokens_label}")  # before any work
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()

    print(f"[1/4] pruning {m.name}: keep {args.keep} blocks ({args.selector})", file=sys.stderr)
    pruned, prune_info = prune_stage(args, m)
    print(f"      kept {prune_info['keep']} of {prune_info['num_blocks']}", file=sys.stderr)
    print(f"[2/4] distilling for {args.minutes} min" + (f" / {args.max_steps} steps" if args.max_steps else ""),
          file=sys.stderr)
    workdir = Path(tempfile.mkdtemp(prefix=".distill-", dir=out))
    try:
        distilled, distill_info = distill_stage(args, m, pruned, prune_info["block_map"], workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    pruned_pipe, distilled_pipe = with_transformer(m.pipe, pruned), with_transformer(m.pipe, distilled)
    n_kept = len(prune_info["keep"])
    stages = [  # (label, pipeline, configs applied through one accel.apply)
        ("baseline", m.pipe, []),
        (f"pruned {n_kept}/{prune_info['num_blocks']}", pruned_pipe, []),
        ("+distilled", distilled_pipe, []),
        (f"+cache {cache_label}", distilled_pipe, [cache_cfg]),
        (f"+tokens {tokens_label}", distilled_pipe, [cache_cfg, tokens_cfg]),
    ]
    calib = C.PairedImages(m, min(args.timing_images, args.num_images), steps, seed=args.seed + 100_000,
                           batch_size=args.timing_images)
    for _, pipe, configs in stages:  # one-off calibrations (schedule-cache) on seeds not measured
        C.prepare_configs(configs, pipe, lambda pipe=pipe: calib.generate(pipe, calib.batches()[0]))

    print(f"[3/4] generating {args.num_images} paired images per stage ({steps} steps)", file=sys.stderr)
    bar = tqdm(total=args.num_images * len(stages), desc="generating", unit="img", disable=args.quiet)
    made: dict[str, torch.Tensor] = {}
    stats: dict[str, dict] = {}
    said: list[str] = []  # what a method could not do here (min_steps, nothing merged), one line each
    for label, pipe, configs in stages:
        handle = accel.apply(pipe, *configs)
        try:
            made[label] = images.generate_all(pipe, bar=bar)
            stats[label] = C.block_work(handle.stats())
            said += [f"{label}: {w}" for w in method_warnings(handle)]
        finally:
            handle.remove()
    bar.close()
    conditions = images.workload.conditions if images.workload is not None else []
    fd_tools = None
    if m.digits:
        from accel.models import load_digits_classifier, load_reference_stats

        fd_tools = (load_digits_classifier(), load_reference_stats())
    base = made["baseline"]
    rows = {label: quality(made[label], base, conditions, m.digits, fd_tools) for label, _, _ in stages}

    print(f"[4/4] timing {len(stages)} stages side by side ({args.repeats} repeats)", file=sys.stderr)
    idx = list(range(min(args.timing_images, args.num_images)))
    timing_batch = C.PairedImages(m, len(idx), steps, seed=args.seed, batch_size=len(idx))
    load_before = C.machine_load()
    timing = C.time_side_by_side(
        {label: (lambda pipe=pipe, configs=configs:
                 C.timed_call(pipe, configs, lambda: timing_batch.generate(pipe, idx), device))
         for label, pipe, configs in stages},
        repeats=args.repeats, warmup=args.warmup, progress=not args.quiet)
    base_total = stats["baseline"]["block_total"]
    for label, _, _ in stages:
        st = stats[label]
        work = st["block_evals"] * (st["flops_ratio"] or 1.0) if st["block_evals"] else None
        rows[label].update(
            speedup=timing[label]["speedup"], speedup_spread=timing[label]["speedup_spread"],
            time_s=timing[label]["median_s"], **st,
            ideal_speedup=(base_total / work) if (work and base_total) else None)

    g = min(args.grid_images, args.num_images)
    grid_size = C.save_grid(out / "grid.png", {label: made[label][:g] for label, _, _ in stages})
    models = {}
    if args.save_models:
        models = save_models(out, m, pruned, distilled, prune_info, distill_info)
    base_fd = rows["baseline"]["fd_digits"]
    for r in rows.values():
        r["fd_increase"] = (r["fd_digits"] / base_fd - 1) if (r["fd_digits"] is not None and base_fd) else None
    doc = {
        "model": m.name, "steps": steps, "num_images": args.num_images, "seeds": [args.seed, args.seed +
                                                                                   args.num_images - 1],
        "device": str(device), "stages": [{"stage": label, **rows[label]} for label, _, _ in stages],
        "pruning": prune_info, "distillation": distill_info,
        "cache": {"method": cache_label, "config": _asdict(cache_cfg)},
        "tokens": {"method": tokens_label, "config": _asdict(tokens_cfg)},
        "timing": {"images_per_call": len(idx), "repeats": args.repeats, "warmup": args.warmup,
                   "interleaved": True, "rounds": timing},
        "fd_name": "FD-digits" if m.digits else None,
        "grid": {"file": "grid.png", "size": list(grid_size), "rows": g}, "models": models,
        "total_seconds": round(time.perf_counter() - t_start, 1),
        "machine": {"before_timing": load_before, "after_timing": C.machine_load()},
        "notes": said,
    }
    if m.digits and args.num_images <= 64:
        doc["notes"].append(f"FD-digits on {args.num_images} images: fewer than the 65 a full-rank covariance of "
                            "64 features needs; compare stages with each other, not with other runs")
    from accel.eval.provenance import run_meta

    doc["meta"] = run_meta([PROG, *args.argv])
    doc["table"] = table(doc)
    C.write_json(out / "results.json", doc)
    (out / "table.txt").write_text(doc["table"] + "\n")
    return doc


def _asdict(cfg: Any) -> dict:
    import dataclasses

    from accel.eval.methods import jsonable

    return jsonable(dataclasses.asdict(cfg))


def save_models(out: Path, m: C.DemoModel, pruned: torch.nn.Module, distilled: torch.nn.Module,
                prune_info: dict, distill_info: dict) -> dict:
    """pruned/ and distilled/ pipeline folders as `accel prune` / `accel distill` write them."""
    from accel.models.lineage import MARKER_FILE, digits_marker
    from accel.pruning.prune import PRUNING_FILE, save_pipeline

    marker = {MARKER_FILE: digits_marker(derived_from=m.name)} if m.digits else {}
    save_pipeline(m.pipe, pruned, out / "pruned", {PRUNING_FILE: prune_info, **marker}, overwrite=True)
    save_pipeline(m.pipe, distilled, out / "distilled",
                  {PRUNING_FILE: prune_info, "distill.json": distill_info, **marker}, overwrite=True)
    return {"pruned": str(out / "pruned"), "distilled": str(out / "distilled")}


def table(doc: dict) -> str:
    fd = doc["fd_name"] or "FD"
    head = ["stage", "speedup", "ideal", "time s", "blocks", f"{fd}", f"{fd} +%", "class acc", "PSNR dB"]
    rows = []
    for r in doc["stages"]:
        rows.append([
            r["stage"], C.fmt(r["speedup"]) + f" ±{C.fmt(r['speedup_spread'])}", C.fmt(r["ideal_speedup"]),
            C.fmt(r["time_s"], ".3f"),
            f"{r['block_evals']}/{r['block_total']}", C.fmt(r["fd_digits"], ".2f"),
            C.fmt(None if r["fd_increase"] is None else 100 * r["fd_increase"], "+.1f"),
            C.fmt(r["class_agreement"], ".3f"), C.fmt(r["psnr"], ".1f")])
    return C.format_table(head, rows)


def main(argv: list[str] | None = None) -> int:
    failed, result = C.run_cli(PROG, build_parser(), run, argv)
    if result is None:
        return failed
    args, doc = result
    print(doc["table"])
    load = doc["machine"]["before_timing"]
    print(f"{doc['num_images']} paired images x {doc['steps']} steps per stage; distilled "
          f"{doc['distillation']['steps']} steps; load average {load.get('loadavg_1m')} on {load.get('cpus')} "
          f"CPUs, {load.get('torch_threads')} torch thread(s); wrote {args.out}/results.json, table.txt, grid.png")
    for n in doc["notes"]:
        print(f"note: {n}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
