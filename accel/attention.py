"""`attention`: choose the attention kernel (PyTorch SDPA or xformers) through diffusers' own switch."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .config import Installed, MethodConfig, Target, check_choice, register_method
from .errors import BackendUnavailableError


@register_method("attention")
@dataclass(frozen=True)
class AttentionConfig(MethodConfig):
    """`attention`: choose the attention kernel; stacks with every other method.

    Example::

        import accel

        pipe = accel.default_pipeline()
        with accel.apply(pipe, accel.AttentionConfig(backend="sdpa")):
            images = pipe(class_labels=[3, 7], num_inference_steps=20).images

    backend: "sdpa" (PyTorch scaled-dot-product attention, diffusers' default; leaves the
    model as it is) or "xformers" (memory-efficient attention; needs `pip install accel[xformers]`
    with a CUDA build of xformers that matches the installed torch)."""

    backend: str = "sdpa"

    kind = "attention"
    accelerates = False

    def validate(self) -> None:
        check_choice("backend", self.backend, ("sdpa", "xformers"))

    def install(self, target: Target) -> Installed:
        if self.backend == "sdpa":
            return _Restore(None)
        try:
            import xformers.ops  # noqa: F401
        except Exception as exc:  # absent, or a wheel built for another torch/CUDA
            raise BackendUnavailableError(
                f"attention backend 'xformers' is unavailable ({type(exc).__name__}: {exc}). "
                "Install it with `pip install accel[xformers]` on a CUDA machine whose torch matches the "
                "xformers wheel, or use backend='sdpa'."
            ) from exc
        saved = attention_processors(target.model)
        try:
            target.model.enable_xformers_memory_efficient_attention()
        except Exception:
            _restore(saved)
            raise
        return _Restore(saved)


def attention_processors(model: torch.nn.Module) -> dict[torch.nn.Module, object]:
    """attention module -> its current processor (DiT has no `attn_processors` property)."""
    return {m: m.processor for m in model.modules() if hasattr(m, "set_processor") and hasattr(m, "processor")}


def _restore(saved: dict) -> None:
    for module, processor in saved.items():
        if module.processor is not processor:
            module.set_processor(processor)


class _Restore(Installed):
    def __init__(self, saved: dict | None):
        self.saved = saved

    def remove(self) -> None:
        if self.saved is not None:
            _restore(self.saved)
            self.saved = None
