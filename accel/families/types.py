"""What accel knows of one transformer class, as data: `BlockStack` (one list of blocks and how they
talk) and `Family` (the class's stacks, token grid, always-run lists)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from ..errors import UnsupportedMethodError

GridFn = Callable[[torch.nn.Module, tuple, dict], "tuple[int, ...]"]
RETURNS = ("H", "EH", "HE", "auto")


@dataclass(frozen=True)
class BlockStack:
    """One `nn.ModuleList` of transformer blocks and how its blocks talk.

    returns: what a block returns: "H" (hidden states), "EH" (`(encoder_hidden_states,
        hidden_states)`: SD3, Flux), "HE" (`(hidden_states, encoder_hidden_states)`:
        CogVideoX, HunyuanVideo) or "auto" (learned from the first call, see `detect`).
    hidden_arg / encoder_arg: names of the block's hidden-states and text-states arguments
        (Z-Image calls them `x`; StableAudio3 its text `context`).
    first: blocks before this index (an int, or a function of the model config) always run
        and stay outside accel's view (HunyuanDiT's long-skip producers: skipping them
        would hand stale skips to the blocks that consume them).
    attention / cross_attention / norm / mlp: attribute names inside a block of the
        self (or joint) attention, the text cross-attention, the adaLN-modulated norm
        before attention and the feed-forward (None where the block has none).
    tokenwise_mlp: the feed-forward acts on each token alone (False for Sana's conv
        over the token grid: token methods must not merge or drop its tokens).
    text_prefix: the attention/MLP sub-layers see [text, image] tokens concatenated
        (Flux single blocks); the text length is the block's encoder_hidden_states length.
    rotary_arg: keyword of the attention call carrying per-token rotary rows, which must
        follow merged image tokens; rotary_text: those rows cover [text, image] (Flux),
        not the image tokens alone (CogVideoX).
    attention_bias: the self-attention honours an additive `attention_mask` over keys
        (used for ToMe's proportional attention).
    attention_kv_arg: keyword through which the self-attention takes a separate key/value
        sequence while the queries stay `hidden_states` (token caching recomputes a subset of
        queries against all keys); None where that keyword means text (joint attention).
    config_key: the model-config entry holding this stack's depth (what depth pruning
        rewrites); None where the depth is not one config entry of this stack alone
        (pruning is refused).
    keep_blocks: blocks of this stack depth pruning must keep (negative: from the end):
        SD3's last block is built differently (`context_pre_only`); DiT's output head
        reads block 0's conditioning embedding.
    """

    attr: str
    returns: str = "H"
    hidden_arg: str = "hidden_states"
    encoder_arg: str = "encoder_hidden_states"
    first: int | Callable[[Any], int] = 0
    attention: str = "attn1"
    cross_attention: str | None = None
    norm: str = "norm1"
    mlp: str | None = "ff"
    tokenwise_mlp: bool = True
    text_prefix: bool = False
    rotary_arg: str | None = None
    rotary_text: bool = True
    attention_bias: bool = False
    attention_kv_arg: str | None = None
    config_key: str | None = "num_layers"
    keep_blocks: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.returns not in RETURNS:
            raise ValueError(f"BlockStack({self.attr!r}).returns must be one of {RETURNS}, got {self.returns!r}")

    @property
    def returns_pair(self) -> bool:
        """The block returns (and takes) both the image and the text stream."""
        return self.returns in ("EH", "HE")

    def start(self, model: torch.nn.Module) -> int:
        return self.first(model.config) if callable(self.first) else self.first


@dataclass(frozen=True)
class Family:
    """Model knowledge for one diffusers transformer class, as data.

    token_grid: reads the image-token grid, (rows, cols) or for video (frames, rows, cols), from
        the transformer's call arguments; None where the tokens entering the blocks are not one
        image grid that token methods can merge (those methods are refused at `apply`).
    fixed: block lists that always run in full and stay outside accel's view (refiners,
        VACE / face-adapter blocks, Latte's temporal blocks): caches never skip them and
        methods do not count them.
    media: "image", "video" or "audio" (for the support table).
    """

    name: str
    class_name: str
    stacks: tuple[BlockStack, ...]
    token_grid: GridFn | None = None
    timestep_arg: str = "timestep"
    fixed: tuple[str, ...] = ()
    media: str = "image"
    detected: bool = False  # built by `detect`, not registered

    @property
    def prunable(self) -> bool:
        return all(s.config_key is not None for s in self.stacks) and not self.detected

    def capabilities(self) -> dict[str, bool]:
        """What the method kinds can do on this family (the README support table)."""
        return {"cache": True, "tokens": self.token_grid is not None, "pruning": self.prunable}

    def check(self, kind: str, method: str) -> None:
        """UnsupportedMethodError (a ValueError) unless methods of `kind` ("cache", "tokens", ...) can work
        on this family."""
        if kind == "tokens" and self.token_grid is None:
            why = ("auto-detected models have no known token grid" if self.detected else
                   "its blocks do not see one image-token grid that accel can read (rotary tables or "
                   "packed [image, text] sequences it does not cut)")
            raise UnsupportedMethodError(f"{method} is not available for {self.class_name}: {why}. "
                                         "Block caches work on it (see README, Supported models).")
