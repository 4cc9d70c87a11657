"""`accel prune` and `accel distill`: argument handling on top of accel.pruning (argparse lives in accel/cli.py).

Bad input (keep out of range, unknown selector, a student that is not a pruned copy of the
teacher, a missing data folder, an occupied --out) prints one clear line and returns 2
before anything is written.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from .lineage import digits_marker, is_digits_model, load_digits_model, MARKER_FILE
from .prune import PRUNING_FILE, SELECTORS, block_map, prune_model, save_pipeline, select_keep

DEFAULT_PROMPTS = (
    "a photo of a cat", "a red car on a street", "a bowl of fruit on a table", "a mountain lake at sunrise",
    "a portrait of an old man", "a city skyline at night", "a wooden house in a forest", "a dog on a beach",
)


class InputError(ValueError):
    """Bad command-line input: reported on one line, exit code 2."""


def load_source(model: str, device: Any = "cpu", dtype: torch.dtype = torch.float32) -> tuple[Any, bool]:
    """(pipeline, is_digits) for `default`, a digits-derived folder, or any supported pipeline folder / hub id."""
    try:
        if model == "default":
            from accel.models import load_default_pipeline

            return load_default_pipeline(device=device, dtype=dtype), True
        if is_digits_model(model):
            return load_digits_model(model, device=device, dtype=dtype), True
        from accel.pipelines import load_pipeline

        return load_pipeline(model, device=device, dtype=dtype), False
    except (ValueError, OSError) as exc:
        raise InputError(f"--model {model!r}: {exc}") from None


def calibration_inputs(pipe: Any, digits: bool, images: int, steps: int, seed: int,
                       prompts: list[str] | None = None, batch_size: int = 10) -> list[dict]:
    """Pipeline kwargs for the calibration runs: digit classes, ImageNet-style classes or prompts."""
    from diffusers import DiTPipeline

    from .importance import class_inputs

    if digits:
        from accel.models import DEFAULT_SAMPLER

        return class_inputs(images, 10, steps, DEFAULT_SAMPLER["guidance_scale"], seed, batch_size)
    if isinstance(pipe, DiTPipeline):
        classes = min(1000, int(getattr(pipe.transformer.config, "num_embeds_ada_norm", 1000) or 1000))
        return class_inputs(images, classes, steps, 4.0, seed, batch_size)
    prompts = list(prompts or DEFAULT_PROMPTS)
    out = []
    for b, start in enumerate(range(0, images, batch_size)):
        batch = [prompts[(start + i) % len(prompts)] for i in range(min(batch_size, images - start))]
        out.append(dict(prompt=batch, num_inference_steps=steps, generator=torch.Generator().manual_seed(seed + b)))
    return out


def _git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                              cwd=Path(__file__).resolve().parent).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def prune_command(args: Any) -> int:
    """`accel prune`: score, select, build the smaller model, write DIR (pipeline + pruning.json)."""
    try:
        return _prune(args)
    except InputError as exc:
        print(f"accel prune: error: {exc}", file=sys.stderr)
        return 2


def _prune(args: Any) -> int:
    from ..families import blocks_of
    from .importance import collect_calibration
    from .select import block_costs, resolve_keep

    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not args.overwrite:
        raise InputError(f"--out {out} exists and is not empty; choose a new folder (or --overwrite)")
    if args.selector not in SELECTORS:
        raise InputError(f"--selector {args.selector!r} is unknown; choose one of {', '.join(SELECTORS)}")
    pipe, digits = load_source(args.model, device=args.device)
    model = pipe.transformer
    n = len(blocks_of(model))
    # validate --keep against the depth before any expensive work
    try:
        resolve_keep(args.keep, [1.0] * n, "count" if args.cost == "count" else args.cost)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    t0 = time.perf_counter()
    settings = dict(images=args.calib_images, steps=args.calib_steps, seed=args.seed, max_calls=args.calib_calls,
                    source="the pipeline's own sampling (its scheduler, conditions and CFG batching)")
    calibration = None
    if args.selector in ("laptop", "evo", "cosine") or args.cost in ("flops", "latency"):
        inputs = calibration_inputs(pipe, digits, args.calib_images, args.calib_steps, args.seed)
        calibration = collect_calibration(pipe, inputs, max_calls=args.calib_calls, settings=settings)
    first_call = calibration.calls[0] if calibration is not None else None
    try:
        costs = block_costs(model, args.cost, first_call)
        budget = resolve_keep(args.keep, costs, args.cost)
        chosen = select_keep(model, args.selector, budget, calibration, seed=args.seed,
                             evo_evaluations=args.evo_evaluations)
        pruned = prune_model(model, chosen["keep"])
    except ValueError as exc:
        raise InputError(str(exc)) from None
    keep = chosen["keep"]
    info = {
        "selector": args.selector,
        "source_model": args.model,
        "model_class": type(model).__name__,
        "num_blocks": n,
        "keep": keep,
        "removed": [i for i in range(n) if i not in keep],
        "block_map": block_map(model, keep),
        "budget": {"keep": str(args.keep), "cost": args.cost, "value": budget.value, "total": budget.total},
        "block_costs": costs,
        "scores": chosen.get("scores"),
        "calibration": dict(calibration.settings) if calibration is not None else None,
        "selection_seconds": round(time.perf_counter() - t0, 2),
        "accel_commit": _git_commit(),
    }
    info.update({k: v for k, v in chosen.items() if k not in info and k != "selector"})
    files = {PRUNING_FILE: info}
    if digits:
        files[MARKER_FILE] = digits_marker(derived_from=str(args.model))
    try:
        save_pipeline(pipe, pruned, out, files, overwrite=args.overwrite)
    except FileExistsError as exc:
        raise InputError(str(exc)) from None
    print(f"pruned {type(model).__name__}: kept {len(keep)}/{n} blocks {keep} ({args.selector}); wrote {out}")
    if not args.quiet:
        print(json.dumps({k: info[k] for k in ("keep", "removed", "scores")}, default=str))
    return 0
