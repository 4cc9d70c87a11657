"""`accel distill`: train a pruned student (from `accel prune`) towards its teacher and write the
result (accel.pruning.workflow.distill_pipeline). Bad input (a student that is not a pruned copy of the
teacher, a missing data folder, an occupied --out, a --resume that does not match) prints one line
and returns 2 before anything is written."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

from ..argtypes import (image_count, image_count_or_zero, nonneg_float, positive_float, positive_int, seed_int,
                        step_count, thread_count, unit_interval)
from ..errors import AccelError, InputError, SettingError
from ..models.lineage import MARKER_FILE, lineage_marker
from ..provenance import git_commit
from ..pruning.prune import PRUNING_FILE
from ..readers import ReadError, read_json
from ._shared import add_model_argument, fail, load_source


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "distill",
        help="distill a pruned student (from `accel prune`) towards its teacher",
        description=(
            "Train the pruned student's transformer towards the teacher (task + output + feature "
            "losses); write OUT (pipeline folder + distill.json, losses.jsonl, checkpoints/)."
        ),
    )
    add_model_argument(p, "--teacher")
    p.add_argument("--student", required=True, help="pipeline folder written by `accel prune`")
    p.add_argument("--out", required=True, help="output folder (new, or the folder of a run to --resume)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoints")
    p.add_argument("--data", default=None, metavar="digits|DIR",
                   help="real data to train on: 'digits' (the embedded models' own training set: class labels "
                        "for the default model, its prompts for the flow model; the default for digits DiTs), or "
                        "DIR: class subfolders 0/, 1/, ... of images for a class-conditional DiT, or PNG/JPEG "
                        "images + prompts.json ({\"file.png\": \"prompt\"}) or prompts.jsonl ({\"file\": ..., "
                        "\"prompt\": ...} per line) for a flow text-to-image pipeline (SD3-style)")
    p.add_argument("--teacher-samples", type=image_count_or_zero, default=0,
                   help="train on N images sampled by the teacher (recorded transformer calls); with --data, "
                        "mixed by --data-weight")
    p.add_argument("--data-weight", type=unit_interval, default=None,
                   help="with --data and --teacher-samples: the share of steps drawn from --data (default 0.5), "
                        "the rest from the teacher samples")
    p.add_argument("--sample-steps", type=step_count, default=20, help="sampling steps of --teacher-samples")
    p.add_argument("--steps", type=positive_int, default=None, help="optimizer steps")
    p.add_argument("--minutes", type=positive_float, default=None, help="wall-clock budget in minutes")
    p.add_argument("--batch-size", type=image_count, default=32,
                   help="global batch: split over the processes of `accelerate launch` (must divide evenly)")
    p.add_argument("--lr", type=positive_float, default=1e-4)
    p.add_argument("--lambda-task", type=nonneg_float, default=1.0,
                   help="weight of the task loss on real data: noise prediction (DiT), or the true velocity "
                        "(flow matching) for flow models; no task loss on teacher samples")
    p.add_argument("--lambda-out", type=nonneg_float, default=1.0,
                   help="weight of the output loss: the student's prediction against the teacher's")
    p.add_argument("--lambda-feat", type=nonneg_float, default=0.1,
                   help="weight of the per-block feature loss against the teacher's blocks")
    p.add_argument("--grad-accum", type=positive_int, default=1)
    p.add_argument("--ema-decay", type=unit_interval, default=0.999, help="EMA decay of the weights, in [0, 1]")
    p.add_argument("--mixed-precision", default="auto", help="auto, no, fp16, bf16")
    p.add_argument("--save-every", type=positive_int, default=100)
    p.add_argument("--raw-weights", dest="ema_weights", action="store_false",
                   help="write the raw student weights instead of the EMA")
    p.add_argument("--seed", type=seed_int, default=0)
    p.add_argument("--threads", type=thread_count, default=None)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


FLAGS = {"data_dir": "--data"}  # settings whose flag is not `--` + the name with dashes


def run(args: argparse.Namespace) -> int:
    """`accel distill`: train the pruned student towards the teacher; write DIR2 (pipeline + distill.json)."""
    from ..pruning.checkpoint import CheckpointError

    try:
        return _distill(args)
    except (AccelError, CheckpointError) as exc:
        return fail("distill", exc, FLAGS)


def _student_map(student_dir: Path) -> list[int]:
    """pruning.json's block_map: a list of teacher block indices, strictly increasing (checked again, against
    both models' depths, by check_student)."""
    f = student_dir / PRUNING_FILE
    if not f.is_file():
        raise InputError(f"--student {student_dir}: no {PRUNING_FILE} (make the student with `accel prune`)")
    try:
        doc = read_json(f)
        mapping = doc["block_map"] if isinstance(doc, dict) else None
    except ReadError as exc:
        raise InputError(f"--student {student_dir}: {PRUNING_FILE} has no valid block_map ({exc.problem})") from None
    except KeyError as exc:
        raise InputError(f"--student {student_dir}: {PRUNING_FILE} has no valid block_map (no {exc})") from None
    if not isinstance(mapping, list) or not mapping or any(isinstance(i, bool) or not isinstance(i, int) or i < 0
                                                           for i in mapping):
        raise InputError(f"--student {student_dir}: {PRUNING_FILE} block_map must be a list of block indices, "
                         f"got {mapping!r}")
    if any(b <= a for a, b in zip(mapping, mapping[1:])):
        raise InputError(f"--student {student_dir}: {PRUNING_FILE} block_map {mapping} must be strictly increasing")
    return mapping


def _data_tag(args: argparse.Namespace) -> str:
    """What the run trains on, as the checkpoint records it: a resume must draw the same data."""
    return json.dumps({"data": args.data, "teacher_samples": args.teacher_samples,
                       "sample_steps": args.sample_steps if args.teacher_samples else None,
                       "data_weight": args.data_weight}, sort_keys=True)


def _check_resume(out: Path, cfg: Any, mapping: list[int]) -> None:
    """Refuse, before any model loads, a --resume whose checkpoint is missing, half-written, modified, of
    another student or of other settings (checkpoint.py)."""
    from ..pruning.checkpoint import check_resume, latest_checkpoint, verify_checkpoint
    from ..pruning.distill import _mixed_precision, check_ahead, resume_settings

    state = verify_checkpoint(latest_checkpoint(out / "checkpoints"))
    step = state.get("step")
    check_ahead(out / "checkpoints", step if isinstance(step, int) else 0)
    saved = state.get("settings") or {}
    settings = resume_settings(cfg, _mixed_precision(cfg.mixed_precision), saved.get("num_processes", 1))
    check_resume(state, settings, mapping)


def _distill(args: argparse.Namespace) -> int:
    """Under `accelerate launch` every process runs this: all check the input before any writes (a barrier
    between), and only the main process writes (checkpoints, the final pipeline, the summary line)."""
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    from ..outputs import check_new_dir, check_writable
    from ..pruning.distill import DistillConfig, check_student
    from ..pruning.workflow import distill_data, distill_pipeline

    # the processes of `accelerate launch` (one otherwise); as `Accelerator` does, ACCELERATE_USE_CPU=true means
    # CPU processes over gloo (a bare PartialState() would see no GPU and run each process alone)
    procs = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    if args.resume:
        check_writable(out, "out", out)  # first: a name too long for the file system is one line, not OSError 36
        if not (out / "checkpoints").is_dir():
            raise InputError(f"--resume: {out}/checkpoints does not exist (nothing to resume)")
    else:
        check_new_dir(out, hint=" (or --resume a run there)")
    if args.data is not None and args.data != "digits" and not Path(args.data).is_dir():
        raise InputError(f"--data {args.data}: no such folder (give 'digits' or a folder)")
    if args.data_weight is not None and (args.data is None or not args.teacher_samples):
        raise InputError("--data-weight mixes --data with --teacher-samples: give both")
    cfg = DistillConfig(steps=args.steps, minutes=args.minutes, batch_size=args.batch_size, lr=args.lr,
                        lambda_task=args.lambda_task, lambda_out=args.lambda_out, lambda_feat=args.lambda_feat,
                        grad_accum=args.grad_accum, ema_decay=args.ema_decay, mixed_precision=args.mixed_precision,
                        save_every=args.save_every, seed=args.seed, progress=not args.quiet,
                        data=_data_tag(args))
    try:
        cfg.validate()
    except SettingError:
        raise  # names the setting (steps, lr, ...): run() prints its flag
    except ValueError as exc:
        raise InputError(str(exc)) from None
    if args.teacher_samples and cfg.lambda_out == cfg.lambda_feat == 0:
        raise InputError("--lambda-out and --lambda-feat are 0 and --teacher-samples has no task loss: nothing "
                         "would train; give --lambda-out or --lambda-feat a positive weight")
    student_dir = Path(args.student)
    if not student_dir.is_dir():
        raise InputError(f"--student {student_dir}: no such folder")
    mapping = _student_map(student_dir)
    if args.resume:
        _check_resume(out, cfg, mapping)
    teacher = load_source(args.teacher, flag="--teacher")
    teacher_pipe, digits = teacher.pipe, teacher.digits
    student = load_source(str(student_dir), flag="--student")
    student_pipe = student.pipe
    try:
        check_student(teacher_pipe.transformer, student_pipe.transformer, mapping)
    except ValueError as exc:
        raise InputError(f"--student {student_dir}: {exc}") from None
    try:
        data, data_info = distill_data(teacher_pipe, digits=digits, data_dir=args.data,
                                       teacher_samples=args.teacher_samples, sample_steps=args.sample_steps,
                                       seed=args.seed, prompts=teacher.prompts, fd_digits=teacher.fd_digits,
                                       data_weight=args.data_weight, progress=not args.quiet)
    except SettingError:
        raise  # names the setting (data_dir, teacher_samples): run() prints its flag
    except ValueError as exc:
        raise InputError(str(exc)) from None
    if getattr(data, "shardable", False) and cfg.batch_size % procs.num_processes:
        raise InputError(f"--batch-size {cfg.batch_size} is the global batch: it must be divisible by the "
                         f"{procs.num_processes} processes")
    procs.wait_for_everyone()  # every process has checked --out before the main one creates it
    created = not out.exists()
    if procs.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    try:
        # CheckpointError (one line) if the checkpoint changed since the check
        final, result = distill_pipeline(teacher_pipe, student_pipe.transformer, mapping, data, cfg, out,
                                         resume=args.resume, ema_weights=args.ema_weights)
    except BaseException:
        if created and procs.is_main_process and not any(out.iterdir()):  # failed before its first checkpoint:
            out.rmdir()  # leave no empty folder
        raise
    if not procs.is_main_process:
        return 0
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
    files = {"distill.json": info, PRUNING_FILE: read_json(student_dir / PRUNING_FILE)}
    marker = lineage_marker(str(student_dir))  # a student pruned from an embedded model keeps its lineage
    if marker is not None:
        files[MARKER_FILE] = marker
    _publish(student_pipe, final, out, files, losses)
    print(f"distilled {result['steps']} steps ({result['elapsed_s'] / 60:.1f} min); wrote {out}")
    return 0


def _publish(pipe: Any, transformer: torch.nn.Module, out: Path, files: dict, losses: list[dict]) -> None:
    """Write the final pipeline and losses.jsonl into `out` next to the run's checkpoints: staged in a hidden
    sibling folder, then each name moved in (accel.outputs.staged_dir); checkpoints/ stays."""
    from ..outputs import staged_dir
    from ..pruning.distill import CHECKPOINTS
    from ..pruning.prune import write_pipeline

    with staged_dir(out, writer="distill", quiet=(CHECKPOINTS,)) as stage:
        write_pipeline(pipe, transformer, stage, files)
        (stage / "losses.jsonl").write_text("".join(json.dumps(l) + "\n" for l in losses))
