"""`accel prune`: score the transformer's blocks, keep the best set, write the smaller pipeline folder
(accel.pruning.workflow.prune_pipeline). Bad input (keep out of range, unknown selector, an occupied
--out) prints one line and returns 2 before anything is written."""

from __future__ import annotations

import argparse
import json
from typing import Any

import torch

from ..argtypes import image_count, keep_amount, positive_int, seed_int, step_count, thread_count
from ..errors import AccelError, InputError, SettingError
from ..models.lineage import MARKER_FILE, lineage_marker
from ..pruning.prune import PRUNING_FILE, SELECTORS, save_pipeline
from ._shared import add_model_argument, fail, load_source


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "prune",
        help="remove transformer blocks (LAPTOP-Diff scores, knapsack / evolutionary selection)",
        description=(
            "Score every transformer block on calibration calls drawn from the pipeline's own sampling, "
            "choose the blocks to keep and write DIR: the full pipeline with a smaller transformer of the "
            "same diffusers class (loads with plain diffusers) plus DIR/pruning.json."
        ),
    )
    add_model_argument(p)
    p.add_argument("--keep", required=True, type=keep_amount,
                   help="blocks to keep: a count (6) or a fraction (0.5) of the blocks, or of the total --cost")
    p.add_argument("--selector", default="laptop", choices=SELECTORS,
                   help="laptop (default): one-shot output-loss scores + exact knapsack; evo: evolutionary "
                        "search on calibration error; cosine (ShortGPT); learned: TinyFusion-style differentiable "
                        "masks (N of every M consecutive blocks, e.g. 2 of 4 at half depth, else top-k) trained "
                        "with a recoverability term (--learned-steps; --cost count); first; "
                        "last; uniform; random")
    p.add_argument("--cost", default="count", choices=("count", "params", "flops", "latency"),
                   help="per-block cost the --keep fraction budgets (default: count of blocks)")
    p.add_argument("--out", required=True, help="output pipeline folder (must be new or empty)")
    p.add_argument("--calib-images", type=image_count, default=20, help="calibration images (default 20)")
    p.add_argument("--calib-steps", type=step_count, default=20, help="sampling steps of the calibration runs (default 20)")
    p.add_argument("--calib-calls", type=positive_int, default=32,
                   help="transformer calls kept for scoring, strided over all steps (default 32)")
    p.add_argument("--evo-evaluations", type=positive_int, default=100, help="fitness evaluations of --selector evo")
    p.add_argument("--learned-steps", type=positive_int, default=200,
                   help="optimisation steps of --selector learned (one calibration call each)")
    p.add_argument("--learned-group", type=positive_int, default=None, metavar="M",
                   help="--selector learned: keep the same share of every M consecutive blocks (default: the "
                        "smallest M >= 4 that fits: 2 of 4 at half depth; 2 gives 1 of 2)")
    p.add_argument("--seed", type=seed_int, default=0)
    p.add_argument("--device", default="cpu", help="cpu (default), auto, cuda, cuda:N")
    p.add_argument("--threads", type=thread_count, default=None, help="torch.set_num_threads")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a pipeline folder an earlier `accel prune` wrote at --out (never other folders)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """`accel prune`: score, select, build the smaller model, write DIR (pipeline + pruning.json)."""
    try:
        return _prune(args)
    except AccelError as exc:  # InputError, OutputError, ModelNotFoundError, ... : one line
        return fail("prune", exc)


def _prune(args: argparse.Namespace) -> int:
    from ..eval.runtime import resolve_device
    from ..outputs import check_new_dir, check_not_input
    from ..pruning.workflow import prune_pipeline

    if args.threads:
        torch.set_num_threads(args.threads)
    check_not_input(args.out, {"model": args.model})  # before the folder checks: say why, not "not empty"
    out = check_new_dir(args.out, overwrite=args.overwrite, writer="prune",
                        hint=" (or --overwrite to replace a folder `accel prune` wrote)")
    if args.selector not in SELECTORS:
        raise InputError(f"--selector {args.selector!r} is unknown; choose one of {', '.join(SELECTORS)}")
    device = resolve_device(args.device)  # as `accel bench`: one line for a device this machine lacks
    source = load_source(args.model, device=device)
    pipe, digits = source.pipe, source.digits
    try:
        result = prune_pipeline(pipe, args.keep, digits=digits, selector=args.selector, cost=args.cost,
                                calib_images=args.calib_images, calib_steps=args.calib_steps,
                                calib_calls=args.calib_calls, seed=args.seed, evo_evaluations=args.evo_evaluations,
                                learned_steps=args.learned_steps, learned_group=args.learned_group,
                                prompts=source.prompts, source=args.model)
    except SettingError:
        raise  # names the setting (keep, selector, cost): run() prints its flag
    except ValueError as exc:
        raise InputError(str(exc)) from None
    info, keep, n = result.info, result.keep, result.info["num_blocks"]
    files = {PRUNING_FILE: info}
    marker = lineage_marker(str(args.model))  # from an embedded model: the folder says so (FD-digits, prompts)
    if marker is not None:
        files[MARKER_FILE] = marker
    save_pipeline(pipe, result.model, out, files, overwrite=args.overwrite)
    print(f"pruned {info['model_class']}: kept {len(keep)}/{n} blocks {keep} ({args.selector}); wrote {out}")
    if not args.quiet:
        print(json.dumps({k: info[k] for k in ("keep", "removed", "scores")}, default=str))
    return 0
