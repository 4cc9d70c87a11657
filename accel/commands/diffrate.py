"""`accel diffrate`: learn per-block kept-token rates (accel.tokens.diffrate_train) on the model's own
sampling calls, and write the rates file `diffrate:rates=FILE` reads."""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch

from ..argtypes import (image_count, nonneg_float, open_unit_interval, positive_float, positive_int, seed_int,
                        set_types, step_count, thread_count)
from ..bounds import MAX_IMAGES
from ..errors import AccelError, InputError
from ._shared import add_model_argument, fail


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "diffrate",
        help="learn per-block kept-token rates (DiffRate) for `diffrate:rates=FILE`",
        description=(
            "Record the model's own sampling calls, then train per-block kept-token rates by "
            "self-distillation with a FLOPs target (only the rate logits train). Resumable: "
            "re-running with the same settings continues from OUT.ckpt.safetensors."
        ),
    )
    add_model_argument(p)
    p.add_argument("--flops", type=float, required=True, help="target FLOPs ratio of the blocks, e.g. 0.6")
    p.add_argument("--out", default="rates.json", help="rates file to write (default rates.json)")
    p.add_argument("--iters", type=int, default=150, help="training iterations (default 150)")
    p.add_argument("--rows", type=int, default=4, help="batch rows of one recorded call per iteration (default 4)")
    p.add_argument("--lr", type=float, default=0.02, help="Adam learning rate of the rate logits")
    p.add_argument("--lam", type=float, default=5.0, help="weight of the FLOPs penalty (DiffRate: 5)")
    p.add_argument("--steps", type=int, default=20, help="sampling steps of the calibration runs")
    p.add_argument("--calibration-images", type=int, default=8, help="images per calibration run")
    p.add_argument("--calibration-runs", type=int, default=2, help="calibration sampling runs")
    p.add_argument("--sublayers", default="attention,mlp",
                   help="comma list of the sub-layers that run on the kept tokens (default attention,mlp)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    set_types(p, {"--flops": open_unit_interval, "--iters": positive_int, "--rows": image_count,
                  "--lr": positive_float, "--lam": nonneg_float, "--steps": step_count,
                  "--calibration-images": image_count, "--calibration-runs": positive_int, "--seed": seed_int,
                  "--threads": thread_count})
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """`accel diffrate`: calibrate on the model's own samples, train, write the rates JSON."""
    try:
        return _diffrate(args)
    except AccelError as exc:  # bad --out, --model or checkpoint: one line, exit 2
        return fail("diffrate", exc)


def _diffrate(args: argparse.Namespace) -> int:
    from ..errors import ModelNotFoundError
    from ..outputs import check_file_output, record_written, write_json_atomic
    from ..pipelines import load_model
    from ..pipelines.calls import calibration_inputs, record_calls
    from ..families import SUBLAYERS
    from ..tokens.diffrate_train import check_checkpoint, remove_checkpoint, train_rates

    if args.threads:
        torch.set_num_threads(args.threads)
    if not 0 < args.flops <= 1:
        return fail("diffrate", f"--flops must be in (0, 1], got {args.flops}")
    sublayers = tuple(k.strip() for k in args.sublayers.split(",") if k.strip())
    bad = [k for k in sublayers if k not in SUBLAYERS]
    if bad or not sublayers:
        return fail("diffrate", f"--sublayers: unknown {bad[0] if bad else args.sublayers!r}; "
                                f"choose from {', '.join(SUBLAYERS)}")
    if args.calibration_images * args.calibration_runs > MAX_IMAGES:  # recorded calls grow with both
        return fail("diffrate", f"--calibration-images {args.calibration_images} x --calibration-runs "
                                f"{args.calibration_runs} is more than the limit of {MAX_IMAGES:,} images")
    out = check_file_output(args.out, overwrite=getattr(args, "overwrite", False), writer="diffrate")
    ckpt = out.with_name(out.name + ".ckpt.safetensors")
    try:
        check_checkpoint(ckpt)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    t0 = time.perf_counter()
    try:
        loaded = load_model(args.model)  # an embedded model, a folder derived from one, any supported pipeline
    except (ModelNotFoundError, OSError, ValueError) as exc:
        raise InputError(f"--model {args.model}: {exc}") from None
    pipe = loaded.pipe
    # --calibration-runs pipeline calls of --calibration-images images each (classes or prompts cycled)
    inputs = calibration_inputs(pipe, args.calibration_images * args.calibration_runs, args.steps, args.seed,
                                digits=loaded.digits, prompts=loaded.prompts, batch_size=args.calibration_images)
    calls = record_calls(pipe, inputs, outputs=True)
    print(f"calibration: {len(calls)} transformer calls recorded in {time.perf_counter() - t0:.1f}s")
    out.parent.mkdir(parents=True, exist_ok=True)  # the resumable checkpoint is saved next to --out while training
    result = train_rates(pipe.transformer, calls, args.flops, iters=args.iters, lr=args.lr, lam=args.lam,
                         rows=args.rows, sublayers=sublayers, seed=args.seed, checkpoint=ckpt,
                         progress=not args.quiet, log=print)
    result["model"] = args.model
    result["transformer"] = type(pipe.transformer).__name__  # checked when the file is applied
    result["seconds"] = round(time.perf_counter() - t0, 1)
    write_json_atomic(out, result, allow_nan=True)
    record_written([out], "diffrate")  # what a later --overwrite may replace
    remove_checkpoint(ckpt)  # the finished run's own checkpoint, through the deletion door
    print(f"wrote {out}: FLOPs ratio {result['flops_ratio']:.3f} (target {args.flops}), rates {result['rates']}")
    return 0
