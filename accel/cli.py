"""The ``accel`` command line: ``accel bench ...`` (more subcommands plug in the same way).

Each subcommand registers itself with ``_add_<name>(subparsers)`` and sets ``func`` to a
callable taking the parsed args and returning the exit code.
"""

from __future__ import annotations

import argparse
import sys

from .argtypes import (keep_amount, nonneg_float, nonneg_int, one_line_errors, open_unit_interval, positive_float, positive_int,
                       seed_int, set_types, unit_interval)


def add_pipeline_arguments(p: argparse.ArgumentParser) -> None:
    """The model, sampler, device and prompt flags that `accel bench` and `accel tune` share."""
    p.add_argument("--model", default="default", help="'default' (embedded digits DiT), 'flow' (embedded digits SD3 MMDiT), a local path or hub id")
    p.add_argument("--scheduler", default=None, help="ddim, dpm++, ddpm or euler (default: the model's)")
    p.add_argument("--guidance", type=nonneg_float, default=None, help="guidance scale (default: the model's)")
    p.add_argument("--threads", type=positive_int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--dtype", default="float32", help="float32 (default), float16, bfloat16")
    p.add_argument("--inception-weights", default=None, metavar="PATH",
                   help="local FID Inception-v3 weights: Inception FID vs the baseline (needs torch-fidelity)")
    p.add_argument("--features", default=None, metavar="MODULE:FACTORY",
                   help="custom feature extractor factory (module exposing num_features): FD vs the baseline")
    p.add_argument("--reference-images", default=None, metavar="DIR",
                   help="FD against a folder of real images instead of the baseline (statistics cached "
                        "in $ACCEL_CACHE_DIR or ~/.cache/accel, keyed by extractor + image data)")
    p.add_argument("--prompts", default=None, metavar="FILE",
                   help="text-to-image prompts: .txt (one per line), .csv/.tsv with a header, .json/.jsonl "
                        "(COCO captions, PartiPrompts); cycled over the images")
    p.add_argument("--prompt-column", default=None, metavar="NAME",
                   help="caption column of a CSV/TSV/JSON prompt file (default: caption, prompt or text)")
    p.add_argument("--height", type=positive_int, default=None, help="image height (default: the pipeline's)")
    p.add_argument("--width", type=positive_int, default=None, help="image width (default: the pipeline's)")
    p.add_argument("--num-frames", type=positive_int, default=None,
                   help="frames per video of a video pipeline (default: the pipeline's)")
    p.add_argument("--negative-prompt", default=None, help="negative prompt of every image")
    p.add_argument("--pipeline-kwargs", default=None, metavar="JSON",
                   help="JSON object merged into every pipeline call, e.g. '{\"max_sequence_length\": 120}'")


def _add_bench(sub) -> None:
    p = sub.add_parser(
        "bench",
        help="paired quality/fidelity/speed/memory benchmark of acceleration methods",
        description=(
            "Run the baseline and every requested method on the same seeds and classes/prompts; "
            "write DIR/results.json, results.csv, pareto.png, grid.png and report.html. Several processes: "
            "`torchrun --nproc_per_node N -m accel.cli bench ...` or "
            "`accelerate launch --multi_gpu --num_processes N -m accel.cli bench ...` (on CPU add "
            "--device cpu); each rank generates whole batches, rank 0 gathers and writes."
        ),
    )
    add_pipeline_arguments(p)
    p.add_argument("--methods", default=None,
                   help="comma list: baseline,NAME[:key=val,...],A+B (stacked); default: baseline "
                        "plus every method of accel.methods() at default settings")
    p.add_argument("--config", action="append", default=None, metavar="FILE",
                   help="add the chosen config of an `accel tune` result (tune.json) as a row; repeatable")
    p.add_argument("--steps", type=positive_int, default=None,
                   help="sampling steps (default: 20 on the embedded model, which keeps the no-flag run "
                        "within 10 minutes on 2 CPU cores; its full sampler uses 50; 50 for other models)")
    p.add_argument("--num-images", type=positive_int, default=200, help="images per method and seed set (default 200)")
    p.add_argument("--seed", type=seed_int, default=0, help="first seed; image i gets seed+i")
    p.add_argument("--seed-sets", type=positive_int, default=1,
                   help="repeat over K disjoint seed sets and report FD's spread")
    p.add_argument("--out", default="bench-out", help="output directory (default ./bench-out)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace results.json, report.html, ... of an earlier run in --out (only those files)")
    p.add_argument("--batch-size", type=positive_int, default=100, help="images per pipeline call (default 100)")
    p.add_argument("--repeats", type=positive_int, default=3, help="timed repeats per method (default 3)")
    p.add_argument("--warmup", type=nonneg_int, default=1, help="untimed warm-up rounds (default 1)")
    p.add_argument("--timing-images", type=positive_int, default=8,
                   help="images per timed call (default 8; timing uses this smaller batch)")
    p.add_argument("--no-fd", action="store_true", help="skip the Fréchet distance")
    p.add_argument("--lpips", action="store_true", help="also LPIPS, if its backend and weights are local")
    p.add_argument("--quiet", action="store_true", help="no progress bars")

    def run(args) -> int:
        from accel.eval.bench import bench_command

        return bench_command(args)

    plain_help = p.format_help
    p.format_help = lambda: plain_help() + "\n" + methods_help()  # type: ignore[method-assign]
    p.set_defaults(func=run)


def methods_help() -> str:
    """Every registered method with its options and defaults (the `accel bench --help` epilog; read
    from the config dataclasses, so a new option appears here without editing this file)."""
    import dataclasses

    import accel

    lines = ["methods (--methods NAME:option=value,...; defaults shown; tuned settings marked *):"]
    for name, cls in sorted(accel.methods().items()):
        tun = getattr(cls, "tunable", {}) or {}
        opts = ", ".join(f"{f.name}={f.default!r}{'*' if f.name in tun else ''}" for f in dataclasses.fields(cls)
                         if f.init and f.default is not dataclasses.MISSING)
        lines.append(f"  {name}: {opts or '(no options)'}")
    lines.append("each option is explained in its config's docstring (accel.methods()[NAME]) and in README.md")
    return "\n".join(lines) + "\n"


def _add_prune(sub) -> None:
    from accel.pruning.prune import SELECTORS

    p = sub.add_parser(
        "prune",
        help="remove transformer blocks (LAPTOP-Diff scores, knapsack / evolutionary selection)",
        description=(
            "Score every transformer block on calibration calls drawn from the pipeline's own sampling, "
            "choose the blocks to keep and write DIR: the full pipeline with a smaller transformer of the "
            "same diffusers class (loads with plain diffusers) plus DIR/pruning.json."
        ),
    )
    p.add_argument("--model", default="default", help="'default' (embedded digits DiT), 'flow' (embedded digits SD3 MMDiT), a pipeline folder or hub id")
    p.add_argument("--keep", required=True, type=keep_amount,
                   help="blocks to keep: a count (6) or a fraction (0.5) of the blocks, or of the total --cost")
    p.add_argument("--selector", default="laptop", choices=SELECTORS,
                   help="laptop (default): one-shot output-loss scores + exact knapsack; evo: evolutionary "
                        "search on calibration error; cosine (ShortGPT); first; last; uniform; random")
    p.add_argument("--cost", default="count", choices=("count", "params", "flops", "latency"),
                   help="per-block cost the --keep fraction budgets (default: count of blocks)")
    p.add_argument("--out", required=True, help="output pipeline folder (must be new or empty)")
    p.add_argument("--calib-images", type=positive_int, default=20, help="calibration images (default 20)")
    p.add_argument("--calib-steps", type=positive_int, default=20, help="sampling steps of the calibration runs (default 20)")
    p.add_argument("--calib-calls", type=positive_int, default=32,
                   help="transformer calls kept for scoring, strided over all steps (default 32)")
    p.add_argument("--evo-evaluations", type=positive_int, default=100, help="fitness evaluations of --selector evo")
    p.add_argument("--seed", type=seed_int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=positive_int, default=None, help="torch.set_num_threads")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a pipeline folder an earlier `accel prune` wrote at --out (never other folders)")
    p.add_argument("--quiet", action="store_true")

    def run(args) -> int:
        from accel.pruning.cli import prune_command

        return prune_command(args)

    p.set_defaults(func=run)


def _add_distill(sub) -> None:
    p = sub.add_parser(
        "distill",
        help="distill a pruned student (from `accel prune`) towards its teacher",
        description=(
            "Train the pruned student's transformer towards the teacher (task + output + feature "
            "losses); write OUT (pipeline folder + distill.json, losses.jsonl, checkpoints/)."
        ),
    )
    p.add_argument("--teacher", default="default", help="'default' (embedded digits DiT), 'flow' (embedded digits SD3 MMDiT), a local path or hub id")
    p.add_argument("--student", required=True, help="pipeline folder written by `accel prune`")
    p.add_argument("--out", required=True, help="output folder (new, or the folder of a run to --resume)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoints")
    p.add_argument("--data", default=None, metavar="DIR", help="image folder to train on")
    p.add_argument("--teacher-samples", type=nonneg_int, default=0,
                   help="train on N images sampled by the teacher (recorded transformer calls)")
    p.add_argument("--sample-steps", type=positive_int, default=20, help="sampling steps of --teacher-samples")
    p.add_argument("--steps", type=positive_int, default=None, help="optimizer steps")
    p.add_argument("--minutes", type=positive_float, default=None, help="wall-clock budget in minutes")
    p.add_argument("--batch-size", type=positive_int, default=32)
    p.add_argument("--lr", type=positive_float, default=1e-4)
    p.add_argument("--lambda-task", type=nonneg_float, default=1.0)
    p.add_argument("--lambda-out", type=nonneg_float, default=1.0)
    p.add_argument("--lambda-feat", type=nonneg_float, default=0.1)
    p.add_argument("--grad-accum", type=positive_int, default=1)
    p.add_argument("--ema-decay", type=unit_interval, default=0.999, help="EMA decay of the weights, in [0, 1]")
    p.add_argument("--mixed-precision", default="auto", help="auto, no, fp16, bf16")
    p.add_argument("--save-every", type=positive_int, default=100)
    p.add_argument("--raw-weights", dest="ema_weights", action="store_false",
                   help="write the raw student weights instead of the EMA")
    p.add_argument("--seed", type=seed_int, default=0)
    p.add_argument("--threads", type=positive_int, default=None)
    p.add_argument("--quiet", action="store_true", help="no progress bars")

    def run(args) -> int:
        from accel.pruning.cli import distill_command

        return distill_command(args)

    p.set_defaults(func=run)


def _add_diffrate(sub) -> None:
    p = sub.add_parser(
        "diffrate",
        help="learn per-block kept-token rates (DiffRate) for `diffrate:rates=FILE`",
        description=(
            "Record the model's own sampling calls, then train per-block kept-token rates by "
            "self-distillation with a FLOPs target (only the rate logits train). Resumable: "
            "re-running with the same settings continues from OUT.ckpt.safetensors."
        ),
    )
    from accel.tokens.diffrate_train import add_arguments

    add_arguments(p)
    set_types(p, {"--flops": open_unit_interval, "--iters": positive_int, "--rows": positive_int,
                  "--lr": positive_float, "--lam": nonneg_float, "--steps": positive_int,
                  "--calibration-images": positive_int, "--calibration-runs": positive_int, "--seed": seed_int,
                  "--threads": positive_int})
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")

    def run(args) -> int:
        from accel.tokens.diffrate_train import diffrate_command

        return diffrate_command(args)

    p.set_defaults(func=run)


def _add_tune(sub) -> None:
    p = sub.add_parser(
        "tune",
        help="find the fastest stack of methods inside a quality budget (--budget-fd / --budget-psnr)",
        description=(
            "Successive halving over the joint space of every method's declared tunable settings (one "
            "block cache x one token method x optional --pruned models) on paired calibration images, "
            "then the front re-measured on held-out images; writes --out (tune.json) and report.html. "
            "Use the result with `accel bench --config tune.json` or "
            "`accel.apply(pipe, *accel.load_configs('tune.json'))`. Exit 1 when no candidate meets the budget."
        ),
    )
    from accel.tune.run import add_arguments

    add_arguments(p)

    def run(args) -> int:
        from accel.tune.run import tune_command

        return tune_command(args)

    p.set_defaults(func=run)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="accel", description="accelerate diffusers diffusion transformers")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_bench(sub)
    _add_diffrate(sub)
    _add_prune(sub)
    _add_distill(sub)
    _add_tune(sub)
    for p in sub.choices.values():
        one_line_errors(p)  # one error line and exit 2, no usage block, for every subcommand
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.command_line = ["accel", *(sys.argv[1:] if argv is None else argv)]
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
