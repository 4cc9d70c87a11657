"""The transformer(s) behind what a user hands over: a pipeline (`transformer`, then `transformer_2`, ...)
or a bare transformer, each checked to be one accel knows (`family_of`)."""

from __future__ import annotations

from typing import Any

import torch

from ..errors import UnsupportedModelError
from .registry import family_of


def resolve(pipe_or_model: Any) -> tuple[Any | None, torch.nn.Module]:
    """(pipeline or None, transformer) of what the user handed over."""
    if isinstance(pipe_or_model, torch.nn.Module):
        family_of(pipe_or_model)
        return None, pipe_or_model
    model = getattr(pipe_or_model, "transformer", None)
    if isinstance(model, torch.nn.Module):
        for _, m in transformers_of(pipe_or_model):
            family_of(m)
        return pipe_or_model, model
    raise UnsupportedModelError(
        f"{type(pipe_or_model).__name__} is neither a diffusion transformer nor a pipeline with a "
        "`.transformer`; accel accelerates DiT-style pipelines (UNet pipelines are not supported)."
    )


def transformers_of(pipe: Any) -> list[tuple[str, torch.nn.Module]]:
    """(attribute, model) of every transformer a pipeline calls: `transformer`, then `transformer_2`, ...
    (Wan 2.2's high- and low-noise experts)."""
    out = []
    for name in ["transformer", *sorted(k for k in vars(pipe) if k.startswith("transformer_") and k[12:].isdigit())]:
        model = getattr(pipe, name, None)
        if isinstance(model, torch.nn.Module) and all(model is not m for _, m in out):
            out.append((name, model))
    return out
