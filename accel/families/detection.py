"""Auto-detection: a `Family` read from a transformer class that has no registry entry.

The rules, in order:

1. Blocks: every *direct* child of the model that is an `nn.ModuleList` of one block class
   whose first block has a sub-module with `attn` or `attention` in its name (e.g. `attn`,
   `attn1`, `self_attention`) is a stack, in the order the children were defined (which
   must be the order the model calls them). Lists nested deeper, lists of mixed classes
   and lists without attention are not blocks.
2. Arguments: the block's `forward` parameter that carries the hidden states is the first
   of `hidden_states`, `x`, `hidden`, `h` it has (no such parameter: refused); the text
   states are the first of `encoder_hidden_states`, `context`, `cond`, `encoder_states`,
   `text_states`. The model's timestep parameter is `timestep`, `timesteps` or `t`.
3. Returns: learned on each block class's first call (`BlockIO`): one tensor is "H"; a pair
   of tensors is "HE" or "EH", told apart by matching shapes with the inputs (refused when
   the shapes cannot tell them apart).

A detected family gets block caches only (no token grid, no pruning key). When the rules
do not fit, register the class: `accel.register(Family(name=..., class_name=...,
stacks=(BlockStack("trunk", returns="HE", hidden_arg="x", encoder_arg="ctx"),)))`; the
refusal prints that line for the model's own block lists (`accel.register`, `accel.Family`
and `accel.BlockStack` are `accel.families`' own).
"""

from __future__ import annotations

import inspect

import torch

from ..errors import UnsupportedModelError
from .types import BlockStack, Family

HIDDEN_NAMES = ("hidden_states", "x", "hidden", "h")
ENCODER_NAMES = ("encoder_hidden_states", "context", "cond", "encoder_states", "text_states")


def forward_params(module: torch.nn.Module) -> list[str]:
    """The names of `type(module).forward`'s parameters after `self`."""
    return list(inspect.signature(type(module).forward).parameters)[1:]


def guess_args(params: list[str]) -> tuple[str, str | None]:
    """(hidden_arg, encoder_arg) of a block with these parameters: the detection names, else the first
    parameters in order (encoder None for a block with one parameter)."""
    hidden = next((p for p in HIDDEN_NAMES if p in params), params[0] if params else "hidden_states")
    rest = [p for p in params if p != hidden]
    encoder = next((p for p in ENCODER_NAMES if p in params), rest[0] if rest else None)
    return hidden, encoder


def stack_line(attr: str, block: torch.nn.Module | None, returns: str = "H") -> str:
    """`BlockStack('trunk', returns='H', hidden_arg='x', encoder_arg='ctx')` for the given block list."""
    args = [repr(attr), f"returns={returns!r}"]
    if block is not None:
        hidden, encoder = guess_args(forward_params(block))
        if hidden != "hidden_states":
            args.append(f"hidden_arg={hidden!r}")
        if encoder is not None and encoder != "encoder_hidden_states":
            args.append(f"encoder_arg={encoder!r}")
    return f"BlockStack({', '.join(args)})"


def _refuse(model: torch.nn.Module, what: str) -> UnsupportedModelError:
    """A short refusal naming the model's own `nn.ModuleList`s and the line that registers the class."""
    name = type(model).__name__
    lists = [(attr, child) for attr, child in model.named_children()
             if isinstance(child, torch.nn.ModuleList) and len(child)]
    found = ", ".join(f"{a}[{len(c)}] of {type(c[0]).__name__}" for a, c in lists[:3]) or "none"
    attr, block = (lists[0][0], lists[0][1][0]) if lists else ("blocks", None)
    return UnsupportedModelError(
        f"{name}: not registered, not auto-detected: {what}. Lists found: {found}. Register: "
        f"accel.register(Family(name='mine', class_name='{name}', stacks=({stack_line(attr, block)},))) "
        "(returns='HE'/'EH' for (hidden, text)/(text, hidden); rules: accel.families.detection)")


def detect(model: torch.nn.Module) -> Family:
    """A `Family` read from an unregistered model by the rules of this module's docstring."""
    if not isinstance(model, torch.nn.Module):
        raise UnsupportedModelError(f"{type(model).__name__} is not a torch.nn.Module: accel accelerates "
                                    "diffusion transformers and the pipelines that call them")
    stacks = []
    for attr, child in model.named_children():
        if not isinstance(child, torch.nn.ModuleList) or len(child) == 0:
            continue
        kinds = {type(b) for b in child}
        if len(kinds) != 1 or not any("attn" in n.lower() or "attention" in n.lower()
                                      for n, _ in child[0].named_modules() if n):
            continue  # not a list of identical transformer blocks
        params = forward_params(child[0])
        hidden = next((p for p in HIDDEN_NAMES if p in params), None)
        if hidden is None:
            raise _refuse(model, f"{type(child[0]).__name__}.forward({', '.join(params)}) has no "
                                 "hidden-states parameter")
        encoder = next((p for p in ENCODER_NAMES if p in params), "encoder_hidden_states")
        stacks.append(BlockStack(attr, returns="auto", hidden_arg=hidden, encoder_arg=encoder, config_key=None))
    if not stacks:
        raise _refuse(model, "no direct nn.ModuleList of blocks with an attn/attention sub-module")
    params = forward_params(model)
    t_arg = next((p for p in ("timestep", "timesteps", "t") if p in params), "timestep")
    return Family(name=f"auto:{type(model).__name__}", class_name=type(model).__name__, stacks=tuple(stacks),
                  timestep_arg=t_arg, detected=True)
