"""What a pipeline is called with, and what its transformer saw: the calibration inputs of pruning,
distillation and `accel diffrate`, and the one recorder of transformer calls.

    from accel.pipelines.calls import calibration_inputs, record_calls
    calls = record_calls(pipe, calibration_inputs(pipe, images=8, steps=20, seed=0, digits=True))
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Iterable

import torch
from diffusers.hooks import ModelHook

from ..hooks import HookSet

RECORD_HOOK = "accel.record"
# the prompts of every prompt-conditioned run accel makes itself (bench without --prompts, calibration)
DEFAULT_PROMPTS = (
    "a photo of a red fox in the snow",
    "a watercolor painting of a lighthouse at dawn",
    "a bowl of ramen on a wooden table",
    "an astronaut riding a horse, digital art",
    "a city street at night in the rain",
    "a close-up of a sunflower",
    "a cozy cabin in a pine forest",
    "a sailing boat on a calm lake",
)


def pipeline_kind(pipe: Any) -> str:
    """"class" for class-conditional pipelines (DiT), "prompt" for text-to-image ones."""
    params = inspect.signature(pipe.__call__).parameters
    if "class_labels" in params:
        return "class"
    if "prompt" in params:
        return "prompt"
    raise ValueError(
        f"{type(pipe).__name__} takes neither class_labels nor prompt; not a supported pipeline"
    )


def class_inputs(num_images: int, num_classes: int, steps: int, guidance: float, seed: int = 0,
                 batch_size: int = 10) -> list[dict]:
    """Pipeline kwargs for a class-conditional pipeline (DiTPipeline): classes cycle 0..num_classes-1,
    one generator per batch (seed + batch index)."""
    out = []
    for b, start in enumerate(range(0, num_images, batch_size)):
        labels = [(start + i) % num_classes for i in range(min(batch_size, num_images - start))]
        out.append(dict(class_labels=labels, num_inference_steps=steps, guidance_scale=guidance,
                        generator=torch.Generator().manual_seed(seed + b), output_type="np"))
    return out


def calibration_inputs(pipe: Any, images: int, steps: int, seed: int, *, digits: bool = False,
                       prompts: list[str] | None = None, batch_size: int = 10) -> list[dict]:
    """Pipeline kwargs of `images` calibration images: digit classes (with the embedded model's guidance),
    ImageNet-style classes (guidance 4.0) or prompts (`DEFAULT_PROMPTS` unless given) cycled."""
    if digits:
        from accel.models import DEFAULT_SAMPLER

        return class_inputs(images, 10, steps, DEFAULT_SAMPLER["guidance_scale"], seed, batch_size)
    if pipeline_kind(pipe) == "class":
        classes = min(1000, int(getattr(pipe.transformer.config, "num_embeds_ada_norm", 1000) or 1000))
        return class_inputs(images, classes, steps, 4.0, seed, batch_size)
    prompts = list(prompts or DEFAULT_PROMPTS)
    out = []
    for b, start in enumerate(range(0, images, batch_size)):
        batch = [prompts[(start + i) % len(prompts)] for i in range(min(batch_size, images - start))]
        out.append(dict(prompt=batch, num_inference_steps=steps, generator=torch.Generator().manual_seed(seed + b)))
    return out


def _detach(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return x.detach().clone()
    if isinstance(x, tuple):
        return tuple(_detach(v) for v in x)
    if isinstance(x, list):
        return [_detach(v) for v in x]
    if isinstance(x, dict):
        return {k: _detach(v) for k, v in x.items()}
    return x


class _Recorder(ModelHook):
    def __init__(self, sink: list[tuple], outputs: bool):
        super().__init__()
        self.sink, self.outputs = sink, outputs

    def pre_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any):
        self.sink.append((_detach(args), _detach(kwargs)))
        return args, kwargs

    def post_forward(self, module: torch.nn.Module, output: Any) -> Any:
        if self.outputs:
            first = output[0] if isinstance(output, tuple) else getattr(output, "sample", output)
            self.sink[-1] = (*self.sink[-1], first.detach())
        return output


def record_calls(pipe: Any, inputs: Iterable[dict] | Callable[[], Any], outputs: bool = False) -> list[tuple]:
    """Every transformer call made while sampling: ``pipe(**kw)`` for each kw of `inputs` (or ``inputs()``
    when it is a callable). Each call is ``(args, kwargs)`` (detached copies), with ``outputs=True``
    ``(args, kwargs, output)`` (the first output tensor, detached)."""
    calls: list[tuple] = []
    hooks = HookSet(pipe.transformer)
    hooks.add(pipe.transformer, _Recorder(calls, outputs), RECORD_HOOK)
    try:
        with torch.no_grad():
            if callable(inputs):
                inputs()
            else:
                for kw in inputs:
                    pipe(**kw)
    finally:
        hooks.remove()
    return calls
