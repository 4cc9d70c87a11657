"""The one place that knows diffusers model classes.

Each supported transformer class gets a `Family` entry: where its block lists are,
how a block is called and what it returns, how to read the image-token grid, and
where attention and the adaLN-modulated norm sit inside a block. Methods never
import a model class; they ask `family_of(model)` and work with `BlockIO`.
Adding a family is one `register(Family(...))` call.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from .errors import UnsupportedModelError

GridFn = Callable[[torch.nn.Module, tuple, dict], "tuple[int, int]"]


@dataclass(frozen=True)
class BlockStack:
    """One `nn.ModuleList` of transformer blocks and how its blocks talk.

    returns_pair: the block returns `(encoder_hidden_states, hidden_states)` instead of
        a single hidden-states tensor.
    attention / cross_attention / norm / mlp: attribute names inside a block of the
        self (or joint) attention, the text cross-attention, the adaLN-modulated norm
        before attention and the feed-forward (None where the block has none).
    tokenwise_mlp: the feed-forward acts on each token alone (False for Sana's conv
        over the token grid: token methods must not merge or drop its tokens).
    text_prefix: the attention/MLP sub-layers see [text, image] tokens concatenated
        (Flux single blocks); the text length is the block's encoder_hidden_states length.
    rotary_arg: keyword of the attention call carrying per-token rotary rows over
        [text, image] tokens (Flux), which must follow merged image tokens.
    attention_bias: the self-attention honours an additive `attention_mask` over keys
        (used for ToMe's proportional attention).
    attention_kv_arg: keyword through which the self-attention takes a separate key/value
        sequence while the queries stay `hidden_states` (token caching recomputes a subset of
        queries against all keys); None where that keyword means text (joint attention).
    config_key: the model-config entry holding this stack's depth (what depth pruning rewrites).
    keep_blocks: blocks of this stack depth pruning must keep (negative: from the end):
        SD3's last block is built differently (`context_pre_only`); DiT's output head
        reads block 0's conditioning embedding.
    """

    attr: str
    returns_pair: bool = False
    attention: str = "attn1"
    cross_attention: str | None = None
    norm: str = "norm1"
    mlp: str | None = "ff"
    tokenwise_mlp: bool = True
    text_prefix: bool = False
    rotary_arg: str | None = None
    attention_bias: bool = False
    attention_kv_arg: str | None = None
    config_key: str = "num_layers"
    keep_blocks: tuple[int, ...] = ()


@dataclass(frozen=True)
class Family:
    """Model knowledge for one diffusers transformer class, as data."""

    name: str
    class_name: str
    stacks: tuple[BlockStack, ...]
    token_grid: GridFn
    timestep_arg: str = "timestep"
    aliases: tuple[str, ...] = field(default_factory=tuple)


def _grid_from_latents(model: torch.nn.Module, args: tuple, kwargs: dict) -> tuple[int, int]:
    """(H/p, W/p) of a (B, C, H, W) latent input patchified with `config.patch_size`."""
    x = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
    p = model.config.patch_size or 1
    return x.shape[-2] // p, x.shape[-1] // p


def _grid_from_img_ids(model: torch.nn.Module, args: tuple, kwargs: dict) -> tuple[int, int]:
    """Flux packs latents into a token sequence; `img_ids[:, 1:]` hold (row, col) of each token."""
    ids = kwargs.get("img_ids")
    if ids is None:
        raise ValueError("Flux transformer call without img_ids: cannot read the token grid")
    if ids.ndim == 3:
        ids = ids[0]
    return int(ids[:, 1].max().item()) + 1, int(ids[:, 2].max().item()) + 1


_FAMILIES: dict[str, Family] = {}


def register(family: Family) -> Family:
    """Add a family; its `class_name` is matched against the model's class and bases."""
    _FAMILIES[family.class_name] = family
    return family


register(Family(
    name="dit", class_name="DiTTransformer2DModel", token_grid=_grid_from_latents,
    stacks=(BlockStack("transformer_blocks", attention_bias=True, keep_blocks=(0,),
                       attention_kv_arg="encoder_hidden_states"),),
))
register(Family(
    name="pixart", class_name="PixArtTransformer2DModel", token_grid=_grid_from_latents,
    stacks=(BlockStack("transformer_blocks", cross_attention="attn2", attention_bias=True,
                       attention_kv_arg="encoder_hidden_states"),),
))
register(Family(
    name="sd3", class_name="SD3Transformer2DModel", token_grid=_grid_from_latents,
    stacks=(BlockStack("transformer_blocks", returns_pair=True, attention="attn", keep_blocks=(-1,)),),
))
register(Family(
    name="flux", class_name="FluxTransformer2DModel", token_grid=_grid_from_img_ids,
    stacks=(
        BlockStack("transformer_blocks", returns_pair=True, attention="attn", rotary_arg="image_rotary_emb"),
        BlockStack("single_transformer_blocks", returns_pair=True, attention="attn", norm="norm", mlp="proj_mlp",
                   text_prefix=True, rotary_arg="image_rotary_emb",
                   config_key="num_single_layers"),
    ),
))
register(Family(
    name="sana", class_name="SanaTransformer2DModel", token_grid=_grid_from_latents,
    stacks=(BlockStack("transformer_blocks", cross_attention="attn2", tokenwise_mlp=False,
                       attention_kv_arg="encoder_hidden_states"),),
))


def supported_classes() -> list[str]:
    return sorted(_FAMILIES)


def family_of(model: torch.nn.Module) -> Family:
    """The registered family of `model`, or `UnsupportedModelError` listing the supported classes."""
    for cls in type(model).__mro__:
        if cls.__name__ in _FAMILIES:
            return _FAMILIES[cls.__name__]
    raise UnsupportedModelError(
        f"{type(model).__name__} is not a supported diffusion transformer. "
        f"Supported classes: {', '.join(supported_classes())}. "
        "Pass a diffusers pipeline whose `.transformer` is one of these, or the transformer itself."
    )


class BlockIO:
    """Reads and writes the hidden states of one block class's calls and returns.

    Blocks are called with a mix of positional and keyword arguments (Sana passes all
    positionally); the signature is bound once per block class.
    """

    def __init__(self, block: torch.nn.Module, stack: BlockStack):
        self.returns_pair = stack.returns_pair
        params = list(inspect.signature(type(block).forward).parameters)[1:]
        self._pos = {name: i for i, name in enumerate(params)}

    def _get(self, name: str, args: tuple, kwargs: dict) -> Any:
        if name in kwargs:
            return kwargs[name]
        i = self._pos.get(name)
        return args[i] if i is not None and i < len(args) else None

    def inputs(self, args: tuple, kwargs: dict) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(hidden_states, encoder_hidden_states) the block was called with; the latter only for pair blocks."""
        hidden = self._get("hidden_states", args, kwargs)
        encoder = self._get("encoder_hidden_states", args, kwargs) if self.returns_pair else None
        return hidden, encoder

    def outputs(self, out: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(hidden_states, encoder_hidden_states) from a block's return value."""
        if self.returns_pair:
            return out[1], out[0]
        return out, None

    def pack(self, hidden: torch.Tensor, encoder: torch.Tensor | None) -> Any:
        """A return value in the block's own format."""
        return (encoder, hidden) if self.returns_pair else hidden


@dataclass
class BlockRef:
    """One block of a model: its stack, index in the stack and global index over all stacks."""

    module: torch.nn.Module
    stack: BlockStack
    index: int
    global_index: int
    io: BlockIO


def blocks_of(model: torch.nn.Module) -> list[BlockRef]:
    """Every transformer block of `model`, in execution order (all stacks, front to back)."""
    fam = family_of(model)
    refs: list[BlockRef] = []
    io_by_class: dict[tuple[type, str], BlockIO] = {}
    for stack in fam.stacks:
        for i, block in enumerate(getattr(model, stack.attr)):
            key = (type(block), stack.attr)
            if key not in io_by_class:  # bind each block class's signature once
                io_by_class[key] = BlockIO(block, stack)
            io = io_by_class[key]
            refs.append(BlockRef(block, stack, i, len(refs), io))
    return refs
