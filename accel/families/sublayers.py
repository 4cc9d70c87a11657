"""Sub-layers: which attention / cross-attention / MLP modules a block has (named by its `BlockStack`),
and whether token methods may compress the tokens they see."""

from __future__ import annotations

import torch

from .blocks import BlockRef

SUBLAYERS = ("attention", "cross_attention", "mlp")


def sublayers_of(ref: BlockRef) -> dict[str, torch.nn.Module]:
    """The sub-layer modules the family names for this block (those that exist)."""
    out = {}
    for kind in SUBLAYERS:
        name = getattr(ref.stack, kind)
        module = getattr(ref.module, name, None) if name else None
        if isinstance(module, torch.nn.Module):
            out[kind] = module
    return out


def mergeable(ref: BlockRef, kind: str) -> str | None:
    """None if `kind` can be merged in this block, else the reason why not."""
    if kind not in sublayers_of(ref):
        return f"{type(ref.module).__name__} has no {kind.replace('_', '-')} sub-layer"
    if kind == "mlp" and not ref.stack.tokenwise_mlp:
        return f"the MLP of {type(ref.module).__name__} is not token-wise (a convolution over the token grid)"
    return None
