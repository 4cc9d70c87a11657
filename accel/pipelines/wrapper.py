"""`AcceleratedPipeline`: a diffusers pipeline with accel methods applied, called exactly like it."""

from __future__ import annotations

from typing import Any

import torch

from ..api import apply
from ..config import MethodConfig
from ..handles import Handle, PipelineHandle
from .loader import load_pipeline


class AcceleratedPipeline:
    """Wraps an existing pipeline; `__call__` forwards unchanged and returns the pipeline's own output.

    Attribute access falls through to the wrapped pipeline (`.transformer`, `.scheduler`, ...).
    `remove()` undoes the acceleration and returns the untouched pipeline.
    """

    def __init__(self, pipe: Any, *configs: MethodConfig):
        self.pipe = pipe
        self.handle: Handle | PipelineHandle = apply(pipe, *configs)

    @classmethod
    def from_pretrained(cls, path_or_id: str, *configs: MethodConfig, device: str | torch.device = "cpu",
                        dtype: torch.dtype | None = None, **kwargs: Any) -> "AcceleratedPipeline":
        """Load from a local folder or cached hub id (never downloads), then accelerate."""
        return cls(load_pipeline(path_or_id, device=device, dtype=dtype, **kwargs), *configs)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.pipe(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        if name in ("pipe", "handle"):  # not set yet (failed __init__): avoid recursion
            raise AttributeError(name)
        return getattr(self.pipe, name)

    def stats(self) -> dict[str, Any]:
        return self.handle.stats()

    def remove(self) -> Any:
        self.handle.remove()
        return self.pipe

    def __repr__(self) -> str:
        return f"AcceleratedPipeline({type(self.pipe).__name__}, {self.handle!r})"
