"""Prune -> distill as two library calls: what `accel prune` / `accel distill`, the end-to-end demo
(scripts/demo_end_to_end.py) and benchmarks/stack.py run, written once.

    from accel.pipelines import load_model
    from accel.pruning.distill import DistillConfig
    from accel.pruning.workflow import distill_data, distill_pipeline, prune_pipeline

    src = load_model("default")
    pruned = prune_pipeline(src.pipe, keep=9, digits=src.digits)   # .model, .keep, .info (pruning.json)
    data, data_info = distill_data(src.pipe, digits=src.digits)    # the digits set; else --data / teacher samples
    student, result = distill_pipeline(src.pipe, pruned.model, pruned.info["block_map"], data,
                                       DistillConfig(minutes=2), "work-dir")

Bad settings (keep out of range, an unknown selector, no data for this teacher) raise ValueError
before any expensive work; the commands turn it into one error line.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from ..errors import SettingError
from ..families import blocks_of
from ..pipelines.calls import calibration_inputs, record_calls
from ..provenance import git_commit
from .distill import DistillConfig, RecordedCallData, digits_data, distill, ema_model, image_folder_data
from .importance import collect_calibration
from .prune import SELECTORS, block_map, prune_model, select_keep
from .select import Budget, block_costs, forced_blocks, resolve_keep

CALIBRATING_SELECTORS = ("laptop", "evo", "cosine", "learned")  # the selectors that score blocks on calibration calls
CALIBRATING_COSTS = ("flops", "latency")  # the costs measured on a recorded call


@dataclass
class PruneResult:
    """The smaller transformer (same diffusers class, config updated) and its pruning.json content."""

    model: torch.nn.Module
    keep: list[int]
    budget: Budget
    info: dict[str, Any]


def prune_pipeline(pipe: Any, keep: int | float | str, *, digits: bool = False, selector: str = "laptop",
                   cost: str = "count", calib_images: int = 20, calib_steps: int = 20, calib_calls: int = 32,
                   seed: int = 0, calib_seed: int | None = None, evo_evaluations: int = 100, learned_steps: int = 200,
                   learned_group: int | None = None, prompts: list[str] | None = None, source: str | None = None,
                   progress: bool | None = None) -> PruneResult:
    """Score `pipe.transformer`'s blocks on calibration calls of the pipeline's own sampling (when the
    selector or cost needs them), keep `keep` of them (a count, or a fraction of the blocks / of the
    total `cost`) and build the smaller model.

    `digits`: the model is an embedded digits model or derived from one (its classes and guidance for
    calibration). `prompts`: a text-to-image model's calibration prompts (default
    `accel.pipelines.calls.DEFAULT_PROMPTS`). `calib_seed` (default `seed`) seeds the calibration images,
    `seed` the selector. `learned_group`: the learned selector's N:M group size (`learned.local_groups`).
    `source` is recorded as ``source_model``; `progress` True/False shows/hides the sampling bar during
    calibration (None leaves the pipeline's setting).
    """
    if selector not in SELECTORS:
        raise SettingError("selector", f"{selector!r} is unknown; choose one of {', '.join(SELECTORS)}")
    model = pipe.transformer
    n = len(blocks_of(model))
    resolve_keep(keep, [1.0] * n, "count" if cost == "count" else cost)  # a bad keep fails before calibration
    if selector == "learned" and cost != "count":
        raise SettingError("selector", "'learned' takes a block count (cost count)", also=("cost",))
    if learned_group is not None:  # a group size that cannot work fails before calibration
        from .learned import local_groups

        if selector != "learned":
            raise SettingError("learned_group", f"is for selector 'learned', not {selector!r}", also=("selector",))
        try:
            local_groups(n, int(resolve_keep(keep, [1.0] * n, "count").value), forced_blocks(model), learned_group)
        except ValueError as exc:
            raise SettingError("learned_group", f"{learned_group}: {str(exc).removeprefix('learned: ')}") from None
    calib_seed = seed if calib_seed is None else calib_seed
    t0 = time.perf_counter()
    calibration = None
    if selector in CALIBRATING_SELECTORS or cost in CALIBRATING_COSTS:
        settings = dict(images=calib_images, steps=calib_steps, seed=calib_seed, max_calls=calib_calls,
                        source="the pipeline's own sampling (its scheduler, conditions and CFG batching)")
        inputs = calibration_inputs(pipe, calib_images, calib_steps, calib_seed, digits=digits, prompts=prompts)
        if progress is not None:
            pipe.set_progress_bar_config(disable=not progress, desc="calibration", leave=False)
        try:
            calibration = collect_calibration(pipe, inputs, max_calls=calib_calls, settings=settings)
        finally:
            if progress is not None:
                pipe.set_progress_bar_config(disable=True)
    first_call = calibration.calls[0] if calibration is not None else None
    costs = block_costs(model, cost, first_call)
    budget = resolve_keep(keep, costs, cost)
    chosen = select_keep(model, selector, budget, calibration, seed=seed, evo_evaluations=evo_evaluations,
                         learned_steps=learned_steps, learned_group=learned_group)
    pruned = prune_model(model, chosen["keep"])
    kept = chosen["keep"]
    info = {
        "selector": selector,
        "source_model": source,
        "model_class": type(model).__name__,
        "num_blocks": n,
        "keep": kept,
        "removed": [i for i in range(n) if i not in kept],
        "block_map": block_map(kept),
        "budget": {"keep": str(keep), "cost": cost, "value": budget.value, "total": budget.total},
        "block_costs": costs,
        "scores": chosen.get("scores"),
        "calibration": dict(calibration.settings) if calibration is not None else None,
        "selection_seconds": round(time.perf_counter() - t0, 2),
        "accel_commit": git_commit(),
    }
    info.update({k: v for k, v in chosen.items() if k not in info and k != "selector"})
    return PruneResult(pruned, kept, budget, info)


def distill_data(teacher_pipe: Any, *, digits: bool = False, data_dir: str | os.PathLike | None = None,
                 teacher_samples: int = 0, sample_steps: int = 20, seed: int = 0,
                 prompts: list[str] | None = None, fd_digits: bool = False,
                 data_weight: float | None = None, progress: bool | None = None) -> tuple[Any, dict[str, Any]]:
    """(training data, its description for distill.json).

    `data_dir`: "digits" (the embedded models' own training set: class labels for the default model,
    its prompts for the flow model) or a folder (class subfolders for a DiT; images + prompts.json(l)
    for a flow text-to-image pipeline: accel.pruning.data). `teacher_samples`: the transformer calls
    of that many images the teacher samples itself (`prompts` as in prune_pipeline). Both given: each
    step draws from the data with probability `data_weight` (default 0.5), else from the samples.
    Neither: the digits set for digits models. `progress` True/False shows/hides the teacher's sampling
    bar (None: as the pipeline is set)."""
    from .data import MixedData, digits_flow_data, is_flow_text_pipeline, prompt_folder_data

    if data_weight is not None and not 0.0 <= data_weight <= 1.0:
        raise SettingError("data_weight", f"must be in [0, 1], got {data_weight}")
    if data_weight is not None and (data_dir is None or not teacher_samples):
        raise SettingError("data_weight", "mixes data_dir with teacher_samples: give both", also=("data_dir", "teacher_samples"))
    real, info = None, None
    if data_dir is None and not teacher_samples and digits:
        data_dir = "digits"
    if str(data_dir) == "digits":
        if digits and not is_flow_text_pipeline(teacher_pipe):
            real = digits_data()
            info = {"kind": "digits", "conditioning": "class labels", "images": len(real)}
        elif fd_digits and is_flow_text_pipeline(teacher_pipe):
            real = digits_flow_data(teacher_pipe)
            info = {"kind": "digits", "conditioning": "the flow model's prompt templates", "images": len(real),
                    "task_loss": "velocity (flow matching)"}
        else:
            raise SettingError("data_dir", "digits: only for the embedded models and folders derived from them")
    elif data_dir is not None:
        if is_flow_text_pipeline(teacher_pipe):
            real = prompt_folder_data(data_dir, teacher_pipe)
            info = {"kind": "image-prompt-folder", "path": str(data_dir), "images": len(real),
                    "task_loss": "velocity (flow matching)"}
        else:
            real = image_folder_data(data_dir, teacher_pipe)
            info = {"kind": "image-folder", "path": str(data_dir), "images": len(real)}
    samples = None
    if teacher_samples:
        inputs = calibration_inputs(teacher_pipe, teacher_samples, sample_steps, seed, digits=digits, prompts=prompts)
        if progress is not None:
            teacher_pipe.set_progress_bar_config(disable=not progress, desc="teacher samples", leave=False)
        try:
            samples = RecordedCallData(record_calls(teacher_pipe, inputs))
        finally:
            if progress is not None:
                teacher_pipe.set_progress_bar_config(disable=True)
        s_info = {"kind": "teacher-samples", "samples": teacher_samples, "calls": len(samples)}
        if real is None:
            return samples, s_info
        w = 0.5 if data_weight is None else data_weight
        return MixedData(real, samples, w), {"kind": "mixed", "data_weight": w, "data": info, "teacher": s_info}
    if real is None:
        raise SettingError("data_dir", ": this teacher has no built-in data set: give data_dir DIR or teacher_samples N",
                       also=("data_dir", "teacher_samples"))
    return real, info


def distill_pipeline(teacher_pipe: Any, student: torch.nn.Module, mapping: Sequence[int], data: Any,
                     cfg: DistillConfig, workdir: str | os.PathLike, *, resume: bool = False,
                     ema_weights: bool = True) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Train `student` (a pruned copy; `mapping`: its blocks' teacher indices) towards `teacher_pipe`'s
    transformer; checkpoints go to `workdir`/checkpoints. Returns (the final student: its EMA weights,
    or the raw ones in eval mode with `ema_weights=False`; distill()'s result dict)."""
    result = distill(teacher_pipe.transformer, student, mapping, data, cfg, workdir, resume=resume)
    final = ema_model(student, result["ema"]) if ema_weights else student.eval()
    return final, result
