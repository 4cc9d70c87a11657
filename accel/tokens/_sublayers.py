"""Shared machinery of the token methods (`tome`, `diffrate`, `toca`): hooks that compress a block's
image tokens on the way into its attention / cross-attention / MLP and restore them on the way out
(tome and diffrate merge tokens; toca recomputes a subset and reuses its cache for the rest).

Per block, a `BlockHook` opens a `BlockCall` (text length, token grid, step) and asks
the method how many tokens to merge (`TokenCompressor.tokens_to_merge`). The first hooked
sub-layer that merges computes the `Matching` (`TokenCompressor.match`) from the tokens
it receives; every later sub-layer of the same block call reuses it. A sub-layer hook
replaces only its module's call: merge the image part of the input (after adaLN
modulation, since the block modulates before calling the sub-layer), call the module
on the shorter sequence, unmerge the image part of the output (before the block's
gate and residual). Text tokens (SD3/Flux joint attention, the [text, image] prefix
of Flux single blocks) pass untouched; Flux's rotary rows are cut to the kept tokens.

Every existing sub-layer is hooked, merged or not, so `.stats()` can give the FLOPs
ratio over all of them; `block_calls` counts the block calls whose sub-layers ran (in a
stack with a block cache: the blocks it computed, see `accel.handles.install_order`).
"""

from __future__ import annotations

import functools
import inspect
from collections import defaultdict
from typing import Any

import torch
from diffusers.hooks import ModelHook

from ..compiling import split_regions
from ..config import CallCounters, Installed, Target
from ..context import StepInfo
from ..families import BlockRef, sublayers_of
from ..hooks import HookSet
from .flops import SublayerCost
from .merge import Matching, follow, merge, size_bias, unmerge

OPTION = {"attention": "merge_attn", "cross_attention": "merge_crossattn", "mlp": "merge_mlp"}


class BlockCall:
    """State of one block call shared by its sub-layers."""

    __slots__ = ("ref", "info", "text_len", "r", "matching", "counted")

    def __init__(self, ref: BlockRef, info: StepInfo | None, text_len: int, r: int):
        self.ref, self.info, self.text_len, self.r = ref, info, text_len, r
        self.matching: Matching | None = None
        self.counted = False  # this block call is in the `block_calls` counter


class BlockHook(ModelHook):
    """On a block: opens its `BlockCall` before the block runs, closes it after."""

    def __init__(self, method: "TokenCompressor", ref: BlockRef):
        super().__init__()
        self.method, self.ref = method, ref

    @torch.compiler.disable  # host-side bookkeeping: never traced (see accel/compiling.py)
    def pre_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any):
        hidden, encoder = self.ref.io.inputs(args, kwargs)
        if self.ref.stack.returns_pair and encoder is None:  # Flux passes it as keyword, SD3 too
            encoder = kwargs.get("encoder_hidden_states")
        text_len = int(encoder.shape[1]) if encoder is not None else 0
        info = self.method.tracker.info
        r = self.method.tokens_to_merge(self.ref, info, int(hidden.shape[1]))
        self.method.calls[self.ref.global_index] = BlockCall(self.ref, info, text_len, r)
        return args, kwargs

    @torch.compiler.disable
    def post_forward(self, module: torch.nn.Module, output: Any) -> Any:
        self.method.calls.pop(self.ref.global_index, None)
        return output


class SublayerHook(ModelHook):
    """On one attention / cross-attention / MLP module: merge in, unmerge out."""

    def __init__(self, method: "TokenCompressor", ref: BlockRef, kind: str, module: torch.nn.Module, merges: bool):
        super().__init__()
        self.method, self.ref, self.kind, self.merges = method, ref, kind, merges
        self.cost = SublayerCost(module, kind)
        self.prefix = ref.stack.text_prefix
        self.rotary = ref.stack.rotary_arg if kind == "attention" else None
        params = list(inspect.signature(type(module).forward).parameters)[1:]
        self.rotary_pos = params.index(self.rotary) if self.rotary in params else None
        self.bias = kind == "attention" and ref.stack.attention_bias and method.proportional

    @torch.compiler.disable  # matching and counters run eagerly; `accel.compile` compiles the module below
    def new_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        fwd = self.fn_ref.original_forward
        call = self.method.calls.get(self.ref.global_index)
        if args:
            x = args[0]
        else:
            x = kwargs.get("hidden_states")
        if call is None or not isinstance(x, torch.Tensor) or x.ndim != 3:
            return fwd(*args, **kwargs)
        prefix = call.text_len if self.prefix else 0
        n = x.shape[1] - prefix
        m = None
        if self.merges and call.r > 0:
            if call.matching is None:
                call.matching = self.method.match(call, x[:, prefix:])
            m = call.matching if call.matching.r > 0 and call.matching.num_tokens == n else None
        self._count(call, x, n, m, kwargs)
        if m is None:
            out = fwd(*args, **kwargs)
            if self.method.observes:
                self.method.observe(call, self, _first(out)[:, prefix:])
            return out
        img = self.method.compress(x[:, prefix:], m)
        xm = torch.cat([x[:, :prefix], img], dim=1) if prefix else img
        extra = self.method.extra_kwargs(self, x[:, prefix:])
        if extra:
            kwargs = {**kwargs, **extra}
        rows = kwargs.get(self.rotary) if self.rotary else None
        if rows is not None and x.shape[0] > 1 and not m.same_for_batch():
            # one rotary table per call: run sample by sample with its own rows
            b = x.shape[0]
            out = _cat([self._call(fwd, xm[i:i + 1], _rows(args, b, i), _rows(kwargs, b, i), m.select(i),
                                   call.text_len) for i in range(b)])
        else:
            out = self._call(fwd, xm, args, kwargs, m, call.text_len)
        return self._unmerge(out, m, prefix)

    def _call(self, fwd, xm: torch.Tensor, args: tuple, kwargs: dict, m: Matching, text_len: int) -> Any:
        """The module on merged tokens, with rotary rows / size bias cut to the kept tokens."""
        kw = dict(kwargs)
        if self.rotary:
            text = text_len if self.ref.stack.rotary_text else 0  # rows over [text, image] or image only
            keep = torch.cat([torch.arange(text, device=m.keep.device), m.keep[0] + text])
            cut = functools.partial(_follow_rows, keep=keep, rows=text + m.num_tokens)
            if kw.get(self.rotary) is not None:
                kw[self.rotary] = cut(kw[self.rotary])
            elif self.rotary_pos is not None and len(args) > self.rotary_pos:  # passed positionally (Wan)
                args = (*args[:self.rotary_pos], cut(args[self.rotary_pos]), *args[self.rotary_pos + 1:])
        if self.bias and kw.get("attention_mask") is None:
            kw["attention_mask"] = size_bias(m, xm.dtype)
        if args:
            return fwd(xm, *args[1:], **kw)
        kw["hidden_states"] = xm
        return fwd(**kw)

    def _unmerge(self, out: Any, m: Matching, prefix: int) -> Any:
        if isinstance(out, tuple):
            return (self._unmerge(out[0], m, prefix), *out[1:])
        call = self.method.calls.get(self.ref.global_index)
        if prefix:
            return torch.cat([out[:, :prefix], self.method.restore(call, self, out[:, prefix:], m)], dim=1)
        return self.method.restore(call, self, out, m)

    def _count(self, call: BlockCall, x: torch.Tensor, n: int, m: Matching | None, kwargs: dict) -> None:
        text = call.text_len if (self.prefix or (self.kind == "attention" and call.ref.stack.returns_pair)) else 0
        keys = None
        if self.kind == "cross_attention":
            enc = kwargs.get("encoder_hidden_states")
            keys = int(enc.shape[1]) if isinstance(enc, torch.Tensor) else n
        elif self.kind == "attention" and m is not None and self.method.full_keys:
            keys = n  # a subset of queries against all keys (token caching)
        after = n - m.r if m is not None else n
        b = x.shape[0]
        full, done = self.cost(n, text, keys) * b, self.cost(after, text, keys) * b
        self.method.record(call, self.kind, n * b, after * b, full, done)


def _follow_rows(table: Any, keep: torch.Tensor, rows: int) -> Any:
    """A rotary table (or tuple of them) cut to the kept rows, on its first axis of length `rows`."""
    if isinstance(table, (tuple, list)):
        return type(table)(_follow_rows(t, keep, rows) for t in table)
    if not isinstance(table, torch.Tensor) or rows not in table.shape:
        return table
    axis = list(table.shape).index(rows)
    return follow(table, keep) if axis == 0 else table.index_select(axis, keep)


def _first(out: Any) -> torch.Tensor:
    return out[0] if isinstance(out, tuple) else out


def _rows(container: Any, b: int, i: int) -> Any:
    """Sample `i` of every batch-shaped tensor in an args tuple or kwargs dict."""
    pick = lambda v: v[i:i + 1] if isinstance(v, torch.Tensor) and v.ndim and v.shape[0] == b else v  # noqa: E731
    if isinstance(container, dict):
        return {k: pick(v) for k, v in container.items()}
    return tuple(pick(v) for v in container)


def _cat(outs: list[Any]) -> Any:
    if isinstance(outs[0], tuple):
        return tuple(_cat([o[i] for o in outs]) if isinstance(outs[0][i], torch.Tensor) else outs[0][i]
                     for i in range(len(outs[0])))
    return torch.cat(outs, dim=0)


class TokenCompressor(Installed):
    """Base `Installed` of the token methods: hooks, per-call counters, stats.

    Subclasses decide `tokens_to_merge(ref, info, n)` (how many tokens the block's sub-layers
    do not see; 0 = leave the block alone) and `match(call, tokens)` (the Matching for that block
    call); `compress` / `restore` default to merge / unmerge (toca overrides both).
    """

    proportional = False
    observes = False  # call `observe` with the output of every uncompressed sub-layer call
    full_keys = False  # compressed self-attention still attends to every token (extra_kwargs passes them)

    def __init__(self, target: Target, name: str, merge_kinds: dict[int, tuple[str, ...]]):
        self.target = target
        self.tracker = target.tracker
        self.name = name
        self.calls: dict[int, BlockCall] = {}
        self.counters = CallCounters()
        self.per_block: dict[int, dict[str, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
        self._hooks = HookSet(target.model)
        self._grid: tuple[int, ...] | None = None
        self._grid_info: object = None
        self.merge_kinds = merge_kinds
        try:
            for ref in target.blocks:
                kinds = merge_kinds.get(ref.global_index, ())
                for kind, module in sublayers_of(ref).items():
                    self._hooks.add(module, SublayerHook(self, ref, kind, module, kind in kinds), f"{name}.{kind}")
                self._hooks.add(ref.module, BlockHook(self, ref), f"{name}.block")
        except BaseException:
            self._hooks.remove()
            raise
        split_regions(target.blocks)  # blocks `accel.compile`d before: compile below the new hooks instead

    def token_grid(self) -> tuple[int, ...]:
        """The image-token grid of the transformer call in progress, read once per call."""
        info = self.tracker.info
        if self._grid is None or self._grid_info is not info:
            self._grid, self._grid_info = self.tracker.token_grid(), info
        return self._grid

    def tokens_to_merge(self, ref: BlockRef, info: StepInfo | None, n: int) -> int:
        raise NotImplementedError

    def match(self, call: BlockCall, tokens: torch.Tensor) -> Matching:
        raise NotImplementedError

    def compress(self, tokens: torch.Tensor, m: Matching) -> torch.Tensor:
        """Image tokens -> the fewer tokens the sub-layer sees (default: merge)."""
        return merge(tokens, m)

    def extra_kwargs(self, hook: "SublayerHook", tokens: torch.Tensor) -> dict[str, Any]:
        """Extra keyword arguments of a compressed sub-layer call, given its full image tokens."""
        return {}

    def restore(self, call: BlockCall, hook: "SublayerHook", out: torch.Tensor, m: Matching) -> torch.Tensor:
        """The sub-layer's output on the fewer tokens -> all image tokens (default: unmerge)."""
        return unmerge(out, m)

    def observe(self, call: BlockCall, hook: "SublayerHook", out: torch.Tensor) -> None:
        """The image part of an uncompressed sub-layer output (only when `observes`)."""

    def record(self, call: BlockCall, kind: str, before: int, after: int, full: int, done: int) -> None:
        c = call.info.call if call.info is not None else 0
        if not call.counted:  # once per block call whose sub-layers ran (a block a cache skips never gets here)
            call.counted = True
            self.counters.add(c, "block_calls")
        self.counters.add(c, f"{kind}.tokens_in", before)
        self.counters.add(c, f"{kind}.tokens_out", after)
        self.counters.add(c, "flops_full", full)
        self.counters.add(c, "flops", done)
        slot = self.per_block[call.ref.global_index][kind]
        slot[0] += before
        slot[1] += after

    def remove(self) -> None:
        self._hooks.remove()
        self.calls.clear()

    def stats(self) -> dict[str, Any]:
        out = self.counters.as_dict()
        for part in [*out["calls"], out["total"]]:
            full = part.get("flops_full", 0)
            part["flops_ratio"] = part.get("flops", 0) / full if full else 1.0
        out["merged_sublayers"] = sorted({k for ks in self.merge_kinds.values() for k in ks})
        out["per_block"] = {i: {k: {"tokens_in": v[0], "tokens_out": v[1]} for k, v in kinds.items()}
                            for i, kinds in sorted(self.per_block.items())}
        return out

    def reset_stats(self) -> None:
        self.counters.clear()
        self.per_block.clear()
