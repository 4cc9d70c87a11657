"""What a benchmark generates: seeds, conditions (class ids or prompts), sampler settings.

Every method in a run uses the same workload, so its images are paired with the
baseline's: image ``i`` always gets seed ``seeds[i]`` through its own
``torch.Generator`` (created on the CPU so the noise is device-independent) and
condition ``conditions[i]``. Images are generated in fixed global batches; under
several processes whole batches are dealt out round-robin, so a batch holds the same
images whatever the process count.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from ..bounds import check_images, check_steps
from ..pipelines.calls import DEFAULT_PROMPTS, pipeline_kind


@dataclass
class Workload:
    seeds: list[int]
    conditions: list[Any]
    kind: str  # "class" or "prompt"
    steps: int
    guidance: float | None = None
    batch_size: int = 50
    extra_kwargs: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.seeds)

    def batches(self, rank: int = 0, world_size: int = 1, limit: int | None = None) -> list[list[int]]:
        """Index batches of this process: global batches dealt round-robin over ranks."""
        n = len(self) if limit is None else min(limit, len(self))
        all_b = [list(range(i, min(i + self.batch_size, n))) for i in range(0, n, self.batch_size)]
        return all_b[rank::world_size]


def infer_num_classes(pipe, default: int = 1000) -> int:
    labels = getattr(pipe, "labels", None)
    if isinstance(labels, dict) and labels:
        return len(set(labels.values()))
    return default


def make_workload(
    pipe,
    num_images: int,
    seed: int,
    steps: int,
    *,
    guidance: float | None = None,
    batch_size: int = 50,
    seed_set: int = 0,
    num_classes: int | None = None,
    prompts: Sequence[str] | None = None,
    extra_kwargs: dict | None = None,
) -> Workload:
    """Seeds ``seed + seed_set*num_images + i``; classes ``i % num_classes`` or prompts cycled.

    ``extra_kwargs`` (height, width, negative_prompt, ...) go into every pipeline call.
    """
    check_images("num_images", num_images)  # before a seed list of that length is built
    check_steps("steps", steps)
    check_images("batch_size", batch_size)
    kind = pipeline_kind(pipe)
    base = seed + seed_set * num_images
    seeds = [base + i for i in range(num_images)]
    if kind == "class":
        k = num_classes or infer_num_classes(pipe)
        conds: list[Any] = [i % k for i in range(num_images)]
    else:
        ps = list(prompts or DEFAULT_PROMPTS)
        conds = [ps[i % len(ps)] for i in range(num_images)]
    return Workload(seeds, conds, kind, steps, guidance, batch_size, dict(extra_kwargs or {}))


def _to_nchw(images) -> torch.Tensor:
    if isinstance(images, torch.Tensor):
        x = images.detach().float().cpu()
        return x if x.shape[1] in (1, 3, 4) and x.ndim == 4 else x.permute(0, 3, 1, 2)
    if isinstance(images, list):  # PIL images
        images = np.stack([np.asarray(im, dtype=np.float32) / 255.0 for im in images])
        if images.ndim == 3:
            images = images[..., None]
    x = torch.from_numpy(np.asarray(images, dtype=np.float32))
    if x.ndim == 3:
        x = x[..., None]
    return x.permute(0, 3, 1, 2).contiguous()


def generate(pipe, workload: Workload, indices: Sequence[int]) -> torch.Tensor:
    """Images (len(indices), C, H, W) float32 in [0, 1] on the CPU, called exactly as stock; a video
    pipeline's videos as (len(indices), F, C, H, W)."""
    gens = [torch.Generator().manual_seed(int(workload.seeds[i])) for i in indices]
    conds = [workload.conditions[i] for i in indices]
    kwargs: dict[str, Any] = dict(
        num_inference_steps=workload.steps, generator=gens, output_type="np", **workload.extra_kwargs
    )
    if workload.guidance is not None:
        kwargs["guidance_scale"] = workload.guidance
    if workload.kind == "class":
        kwargs["class_labels"] = conds
    else:
        kwargs["prompt"] = conds
    with torch.inference_mode():
        out = pipe(**kwargs)
    if hasattr(out, "frames"):  # video pipelines
        from .video import frames_tensor

        return frames_tensor(out.frames).clamp(0, 1)
    images = out.images if hasattr(out, "images") else out[0]
    return _to_nchw(images).clamp(0, 1)
