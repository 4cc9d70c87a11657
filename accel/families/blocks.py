"""Runtime block I/O: `blocks_of(model)` lists the blocks accel acts on (`BlockRef`), and `BlockIO`
reads and writes a block's hidden states in its own calling convention."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import UnsupportedModelError
from .detection import forward_params, guess_args
from .registry import family_of
from .types import BlockStack


def check_args(block: torch.nn.Module, stack: BlockStack) -> None:
    """UnsupportedModelError (one line) when the stack names a hidden-states (or, for pair blocks, text)
    argument the block's `forward` does not have, naming the parameters it has and what to pass.

    Checked when accel first reads a model's blocks (`accel.apply`, `accel.compile`), not at the first
    call, where a wrong name would surface as a TypeError deep inside a cache. A `forward(**kwargs)`
    could take any name: not checked."""
    if stack.returns == "auto" or any(p.kind is inspect.Parameter.VAR_KEYWORD
                                      for p in inspect.signature(type(block).forward).parameters.values()):
        return
    params = forward_params(block)
    needed = {"hidden_arg": stack.hidden_arg}
    if stack.returns_pair:
        needed["encoder_arg"] = stack.encoder_arg
    missing = {k: v for k, v in needed.items() if v not in params}
    if not missing:
        return
    hidden, encoder = guess_args(params)
    fix = ", ".join(f"{k}={v!r}" for k, v in (("hidden_arg", hidden), ("encoder_arg", encoder)) if k in missing)
    raise UnsupportedModelError(
        f"BlockStack({stack.attr!r}, returns={stack.returns!r}) does not fit {type(block).__name__}.forward"
        f"({', '.join(params)}): it has no parameter " + " or ".join(f"{v!r} ({k})" for k, v in missing.items())
        + f"; pass BlockStack({stack.attr!r}, ..., {fix}) naming the block's own parameters")


class BlockIO:
    """Reads and writes the hidden states of one block class's calls and returns.

    Blocks are called with a mix of positional and keyword arguments (Sana passes all
    positionally); the signature is bound once per block class. For `returns="auto"` the
    pattern is learned from the first return value, by matching shapes with the inputs.
    """

    def __init__(self, block: torch.nn.Module, stack: BlockStack):
        self.returns = stack.returns
        self.hidden_arg, self.encoder_arg = stack.hidden_arg, stack.encoder_arg
        self.rotary_arg = stack.rotary_arg  # per-token, not per-sample: never cut to rows
        self.where = f"{type(block).__name__} in {stack.attr!r}"
        params = list(inspect.signature(type(block).forward).parameters)[1:]
        self._pos = {name: i for i, name in enumerate(params)}
        self._seen: tuple[Any, Any] | None = None
        check_args(block, stack)

    @property
    def returns_pair(self) -> bool:
        return self.returns in ("EH", "HE")

    def _get(self, name: str, args: tuple, kwargs: dict) -> Any:
        if name in kwargs:
            return kwargs[name]
        i = self._pos.get(name)
        return args[i] if i is not None and i < len(args) else None

    def inputs(self, args: tuple, kwargs: dict) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(hidden_states, encoder_hidden_states) the block was called with; the latter only for pair blocks."""
        hidden = self._get(self.hidden_arg, args, kwargs)
        if self.returns == "auto":
            encoder = self._get(self.encoder_arg, args, kwargs)
            self._seen = (hidden, encoder)
            return hidden, encoder if isinstance(encoder, torch.Tensor) else None
        encoder = self._get(self.encoder_arg, args, kwargs) if self.returns_pair else None
        return hidden, encoder

    def outputs(self, out: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(hidden_states, encoder_hidden_states) from a block's return value."""
        if self.returns == "auto":
            self._learn(out)
        if self.returns == "EH":
            return out[1], out[0]
        if self.returns == "HE":
            return out[0], out[1]
        return out, None

    def pack(self, hidden: torch.Tensor, encoder: torch.Tensor | None) -> Any:
        """A return value in the block's own format."""
        if self.returns == "EH":
            return encoder, hidden
        if self.returns == "HE":
            return hidden, encoder
        return hidden

    def select_rows(self, args: tuple, kwargs: dict, rows: torch.Tensor, batch: int) -> tuple[tuple, dict]:
        """The block's call arguments for the batch rows `rows` (an index tensor) alone: every tensor with
        `batch` leading rows (hidden and text states, temb, timestep, labels, masks), also inside a tuple,
        list or dict argument, is index-selected; the rotary table (per token) and anything else pass as they are."""
        rotary = self._pos.get(self.rotary_arg) if self.rotary_arg else None
        new_args = tuple(a if i == rotary else _rows(a, rows, batch) for i, a in enumerate(args))
        new_kwargs = {k: v if k == self.rotary_arg else _rows(v, rows, batch) for k, v in kwargs.items()}
        return new_args, new_kwargs

    def _learn(self, out: Any) -> None:
        h, e = self._seen if self._seen is not None else (None, None)
        if isinstance(out, torch.Tensor):
            self.returns = "H"
            return
        if isinstance(out, (tuple, list)) and len(out) == 2 and all(isinstance(o, torch.Tensor) for o in out) \
                and isinstance(h, torch.Tensor) and isinstance(e, torch.Tensor):
            he = out[0].shape == h.shape and out[1].shape == e.shape
            eh = out[0].shape == e.shape and out[1].shape == h.shape
            if he != eh:
                self.returns = "HE" if he else "EH"
                return
        got = type(out).__name__ if not isinstance(out, (tuple, list)) else \
            f"{type(out).__name__} of {len(out)} ({', '.join(type(o).__name__ for o in out)})"
        raise UnsupportedModelError(
            f"auto-detection: cannot tell the return pattern of {self.where}: it returned a {got} that is "
            "not one hidden-states tensor nor a (hidden, text) pair told apart by shape. Register the class "
            "with BlockStack(..., returns='H' | 'HE' | 'EH') (accel.families.register).")


def _rows(value: Any, rows: torch.Tensor, batch: int, depth: int = 0) -> Any:
    """`value` cut to `rows` where it is a per-sample tensor (leading dim `batch`); containers one level deep."""
    if isinstance(value, torch.Tensor):
        return value.index_select(0, rows) if value.ndim and value.shape[0] == batch else value
    if depth == 0 and isinstance(value, (tuple, list)):
        return type(value)(_rows(v, rows, batch, 1) for v in value)
    if depth == 0 and isinstance(value, dict):
        return {k: _rows(v, rows, batch, 1) for k, v in value.items()}
    return value


@dataclass
class BlockRef:
    """One block of a model: its stack, index in the stack and global index over all stacks."""

    module: torch.nn.Module
    stack: BlockStack
    index: int
    global_index: int
    io: BlockIO


def blocks_of(model: torch.nn.Module) -> list[BlockRef]:
    """Every transformer block of `model` accel acts on, in execution order (all stacks, front to back)."""
    fam = family_of(model)
    refs: list[BlockRef] = []
    io_by_class: dict[tuple[type, str], BlockIO] = {}
    for stack in fam.stacks:
        for i, block in enumerate(getattr(model, stack.attr)):
            if i < stack.start(model):
                continue
            key = (type(block), stack.attr)
            if key not in io_by_class:  # bind each block class's signature once
                io_by_class[key] = BlockIO(block, stack)
            io = io_by_class[key]
            refs.append(BlockRef(block, stack, i, len(refs), io))
    return refs
