"""`accel prune` and `accel distill`: argument handling on top of accel.pruning (argparse lives in accel/cli.py).

Bad input (keep out of range, unknown selector, a student that is not a pruned copy of the
teacher, a missing data folder, an occupied --out) prints one clear line and returns 2
before anything is written.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

from ..eval.provenance import git_commit
from .lineage import digits_marker, is_digits_model, load_digits_model, MARKER_FILE
from .prune import PRUNING_FILE, SELECTORS, block_map, prune_model, save_pipeline, select_keep

DEFAULT_PROMPTS = (
    "a photo of a cat", "a red car on a street", "a bowl of fruit on a table", "a mountain lake at sunrise",
    "a portrait of an old man", "a city skyline at night", "a wooden house in a forest", "a dog on a beach",
)


class InputError(ValueError):
    """Bad command-line input: reported on one line, exit code 2."""


def load_source(model: str, device: Any = "cpu", dtype: torch.dtype = torch.float32,
                flag: str = "--model") -> tuple[Any, bool]:
    """(pipeline, is_digits) for `default`, a digits-derived folder, or any supported pipeline folder / hub id;
    InputError naming `flag` when it cannot be loaded."""
    from diffusers.utils import logging as dlog

    bars = dlog.is_progress_bar_enabled()
    dlog.disable_progress_bar()  # no "Loading pipeline components" bars: the command's stderr stays its own
    try:
        if model == "default":
            from accel.models import load_default_pipeline

            return load_default_pipeline(device=device, dtype=dtype), True
        if is_digits_model(model):
            return load_digits_model(model, device=device, dtype=dtype), True
        from accel.pipelines import load_pipeline

        return load_pipeline(model, device=device, dtype=dtype), False
    except (ValueError, OSError, KeyError, TypeError, AttributeError) as exc:
        raise InputError(f"{flag} {model}: {type(exc).__name__ + ': ' if isinstance(exc, (KeyError, TypeError, AttributeError)) else ''}{exc}") from None
    finally:
        if bars:
            dlog.enable_progress_bar()


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


def _fail(command: str, exc: BaseException) -> int:
    print(f"accel {command}: error: {' '.join(str(exc).split())}", file=sys.stderr)
    return 2


def prune_command(args: Any) -> int:
    """`accel prune`: score, select, build the smaller model, write DIR (pipeline + pruning.json)."""
    from ..errors import AccelError

    try:
        return _prune(args)
    except (InputError, AccelError) as exc:  # OutputError, ModelNotFoundError, ... : one line
        return _fail("prune", exc)


def _prune(args: Any) -> int:
    from ..families import blocks_of
    from .importance import collect_calibration
    from .select import block_costs, resolve_keep

    from ..outputs import check_new_dir

    if args.threads:
        torch.set_num_threads(args.threads)
    out = check_new_dir(args.out, overwrite=args.overwrite, own=("model_index.json", PRUNING_FILE),
                        hint=" (or --overwrite to replace a folder `accel prune` wrote)")
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
        "block_map": block_map(keep),
        "budget": {"keep": str(args.keep), "cost": args.cost, "value": budget.value, "total": budget.total},
        "block_costs": costs,
        "scores": chosen.get("scores"),
        "calibration": dict(calibration.settings) if calibration is not None else None,
        "selection_seconds": round(time.perf_counter() - t0, 2),
        "accel_commit": git_commit(),
    }
    info.update({k: v for k, v in chosen.items() if k not in info and k != "selector"})
    files = {PRUNING_FILE: info}
    if digits:
        files[MARKER_FILE] = digits_marker(derived_from=str(args.model))
    save_pipeline(pipe, pruned, out, files, overwrite=args.overwrite)
    print(f"pruned {type(model).__name__}: kept {len(keep)}/{n} blocks {keep} ({args.selector}); wrote {out}")
    if not args.quiet:
        print(json.dumps({k: info[k] for k in ("keep", "removed", "scores")}, default=str))
    return 0


# ----------------------------------------------------------------------------- distill
def distill_command(args: Any) -> int:
    """`accel distill`: train the pruned student towards the teacher; write DIR2 (pipeline + distill.json)."""
    from ..errors import AccelError
    from .checkpoint import CheckpointError

    try:
        return _distill(args)
    except (InputError, AccelError, CheckpointError) as exc:
        return _fail("distill", exc)


def _student_map(student_dir: Path) -> list[int]:
    """pruning.json's block_map: a list of teacher block indices, strictly increasing (checked again, against
    both models' depths, by check_student)."""
    f = student_dir / PRUNING_FILE
    if not f.is_file():
        raise InputError(f"--student {student_dir}: no {PRUNING_FILE} (make the student with `accel prune`)")
    try:
        doc = json.loads(f.read_text())
        mapping = doc["block_map"] if isinstance(doc, dict) else None
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(f"--student {student_dir}: {PRUNING_FILE} has no valid block_map ({exc})") from None
    if not isinstance(mapping, list) or not mapping or any(isinstance(i, bool) or not isinstance(i, int) or i < 0
                                                           for i in mapping):
        raise InputError(f"--student {student_dir}: {PRUNING_FILE} block_map must be a list of block indices, "
                         f"got {mapping!r}")
    if any(b <= a for a, b in zip(mapping, mapping[1:])):
        raise InputError(f"--student {student_dir}: {PRUNING_FILE} block_map {mapping} must be strictly increasing")
    return mapping


def _check_resume(out: Path, cfg: Any, mapping: list[int]) -> None:
    """Refuse, before any model loads, a --resume whose checkpoint is missing, half-written, modified, of
    another student or of other settings (checkpoint.py)."""
    from .checkpoint import check_resume, latest_checkpoint, verify_checkpoint
    from .distill import _mixed_precision, resume_settings

    state = verify_checkpoint(latest_checkpoint(out / "checkpoints"))
    saved = state.get("settings") or {}
    settings = resume_settings(cfg, _mixed_precision(cfg.mixed_precision), saved.get("num_processes", 1))
    check_resume(state, settings, mapping)


def _distill(args: Any) -> int:
    from .distill import DistillConfig, RecordedCallData, check_student, digits_data, distill, ema_model
    from .distill import image_folder_data
    from .importance import record_calls

    from ..outputs import check_new_dir, check_writable

    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    if args.resume:
        if not (out / "checkpoints").is_dir():
            raise InputError(f"--resume: {out}/checkpoints does not exist (nothing to resume)")
        check_writable(out, "--out", out)
    else:
        check_new_dir(out, hint=" (or --resume a run there)")
    if args.data is not None and not Path(args.data).is_dir():
        raise InputError(f"--data {args.data}: no such folder")
    if args.data is not None and args.teacher_samples:
        raise InputError("--data and --teacher-samples exclude each other")
    cfg = DistillConfig(steps=args.steps, minutes=args.minutes, batch_size=args.batch_size, lr=args.lr,
                        lambda_task=args.lambda_task, lambda_out=args.lambda_out, lambda_feat=args.lambda_feat,
                        grad_accum=args.grad_accum, ema_decay=args.ema_decay, mixed_precision=args.mixed_precision,
                        save_every=args.save_every, seed=args.seed, progress=not args.quiet)
    try:
        cfg.validate()
    except ValueError as exc:
        raise InputError(str(exc)) from None
    student_dir = Path(args.student)
    if not student_dir.is_dir():
        raise InputError(f"--student {student_dir}: no such folder")
    mapping = _student_map(student_dir)
    if args.resume:
        _check_resume(out, cfg, mapping)
    teacher_pipe, digits = load_source(args.teacher, flag="--teacher")
    student_pipe, student_digits = load_source(str(student_dir), flag="--student")
    try:
        check_student(teacher_pipe.transformer, student_pipe.transformer, mapping)
    except ValueError as exc:
        raise InputError(f"--student {student_dir}: {exc}") from None
    try:
        if args.data is not None:
            data = image_folder_data(args.data, teacher_pipe)
            data_info = {"kind": "image-folder", "path": str(args.data), "images": len(data)}
        elif args.teacher_samples:
            inputs = calibration_inputs(teacher_pipe, digits, args.teacher_samples, args.sample_steps, args.seed)
            data = RecordedCallData(record_calls(teacher_pipe, inputs))
            data_info = {"kind": "teacher-samples", "samples": args.teacher_samples, "calls": len(data)}
        elif digits:
            data = digits_data()
            data_info = {"kind": "digits", "images": len(data)}
        else:
            raise InputError("this teacher has no built-in data set: give --data DIR or --teacher-samples N")
    except ValueError as exc:
        raise InputError(str(exc)) from None
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    try:
        result = distill(teacher_pipe.transformer, student_pipe.transformer, mapping, data, cfg, out,
                         resume=args.resume)  # CheckpointError (one line) if the checkpoint changed since the check
    except BaseException:
        if created and not any(out.iterdir()):  # failed before its first checkpoint: leave no empty folder
            out.rmdir()
        raise
    final = ema_model(student_pipe.transformer, result["ema"]) if args.ema_weights else \
        student_pipe.transformer.eval()
    losses = result["losses"]
    info = {
        "teacher": args.teacher, "student": str(student_dir), "block_map": mapping, "data": data_info,
        "config": {k: v for k, v in vars(cfg).items()}, "steps": result["steps"],
        "train_seconds": round(result["elapsed_s"], 1), "wall_seconds_this_run": round(time.perf_counter() - t0, 1),
        "mixed_precision": result["mixed_precision"], "num_processes": result["num_processes"],
        "device": result["device"], "weights": "ema" if args.ema_weights else "raw",
        "first_losses": losses[:5], "last_losses": losses[-5:],
        "accel_commit": git_commit(),
    }
    files = {"distill.json": info, PRUNING_FILE: json.loads((student_dir / PRUNING_FILE).read_text())}
    if student_digits or digits:
        files[MARKER_FILE] = digits_marker(derived_from=str(student_dir))
    _publish(student_pipe, final, out, files, losses)
    print(f"distilled {result['steps']} steps ({result['elapsed_s'] / 60:.1f} min); wrote {out}")
    return 0


def _publish(pipe: Any, transformer: torch.nn.Module, out: Path, files: dict, losses: list[dict]) -> None:
    """Write the final pipeline and losses.jsonl into `out` next to the run's checkpoints: staged in a hidden
    sibling folder, then each name moved in (accel.outputs.staged_dir); checkpoints/ stays."""
    from ..outputs import staged_dir
    from .prune import write_pipeline

    with staged_dir(out) as stage:
        write_pipeline(pipe, transformer, stage, files)
        (stage / "losses.jsonl").write_text("".join(json.dumps(l) + "\n" for l in losses))
