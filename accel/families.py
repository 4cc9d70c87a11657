"""The one place that knows diffusers model classes.

Each supported transformer class gets a `Family` entry: where its block lists are,
how a block is called and what it returns, how to read the image-token grid, and
where attention and the adaLN-modulated norm sit inside a block. Methods never
import a model class; they ask `family_of(model)` and work with `BlockIO`.

Adding a family is one `register(Family(...))` call, e.g. for a transformer whose
`blocks` take `(hidden_states, encoder_hidden_states, temb)` and return
`(hidden_states, encoder_hidden_states)`:

    from accel.families import BlockStack, Family, register
    register(Family(name="mymodel", class_name="MyTransformer3DModel",
                    stacks=(BlockStack("blocks", returns="HE"),)))

That gives every block cache; token methods also need `token_grid` (and the sub-layer
names of `BlockStack`), depth pruning a `config_key` per stack. A class with no entry
is read by `detect` (block lists, signatures, return pattern from the first call).
"""

from __future__ import annotations

import inspect
import warnings
from dataclasses import dataclass
from typing import Any, Callable

import torch

from .errors import UnsupportedMethodError, UnsupportedModelError

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


# ----------------------------------------------------------------------------- token grids
def _latent(args: tuple, kwargs: dict, name: str = "hidden_states") -> torch.Tensor:
    return kwargs[name] if name in kwargs else args[0]


def _patch(model: torch.nn.Module) -> tuple[int, int, int]:
    """(frames, rows, cols) patch size from `patch_size` (int or (t, h, w)) and `patch_size_t`."""
    p = model.config.patch_size or 1
    if isinstance(p, (list, tuple)):
        return tuple(int(v) for v in p)  # type: ignore[return-value]
    return int(getattr(model.config, "patch_size_t", None) or 1), int(p), int(p)


def _grid_from_latents(model: torch.nn.Module, args: tuple, kwargs: dict) -> tuple[int, int]:
    """(H/p, W/p) of a (B, C, H, W) latent input patchified with `config.patch_size`."""
    x = _latent(args, kwargs)
    _, ph, pw = _patch(model)
    return x.shape[-2] // ph, x.shape[-1] // pw


def _grid_video(frame_axis: int) -> GridFn:
    """(F/pt, H/ph, W/pw) of a 5-D video latent whose frames sit on `frame_axis`."""
    def grid(model: torch.nn.Module, args: tuple, kwargs: dict) -> tuple[int, int, int]:
        x = _latent(args, kwargs)
        pt, ph, pw = _patch(model)
        return x.shape[frame_axis] // pt, x.shape[-2] // ph, x.shape[-1] // pw
    return grid


def _grid_ltx(model: torch.nn.Module, args: tuple, kwargs: dict) -> tuple[int, int, int]:
    """LTX-Video packs latents into tokens; the call names the latent frames, height and width."""
    pt, ph, pw = _patch(model)
    return kwargs["num_frames"] // pt, kwargs["height"] // ph, kwargs["width"] // pw


def _grid_from_img_ids(model: torch.nn.Module, args: tuple, kwargs: dict) -> tuple[int, int]:
    """Flux packs latents into a token sequence; `img_ids[:, 1:]` hold (row, col) of each token."""
    ids = kwargs.get("img_ids")
    if ids is None:
        raise ValueError(f"{type(model).__name__} call without img_ids: cannot read the token grid")
    if ids.ndim == 3:
        ids = ids[0]
    return int(ids[:, 1].max().item()) + 1, int(ids[:, 2].max().item()) + 1


_FAMILIES: dict[str, Family] = {}
_DETECTED: dict[type, Family] = {}


def register(family: Family) -> Family:
    """Add a family; its `class_name` is matched against the model's class and bases."""
    _FAMILIES[family.class_name] = family
    return family


def _reg(name: str, cls: str, *stacks: BlockStack, **kw: Any) -> None:
    register(Family(name=name, class_name=cls, stacks=stacks, **kw))


S = BlockStack
# -- image, blocks return H ---------------------------------------------------------------------
_reg("dit", "DiTTransformer2DModel",
     S("transformer_blocks", attention_bias=True, keep_blocks=(0,), attention_kv_arg="encoder_hidden_states"),
     token_grid=_grid_from_latents)
_reg("pixart", "PixArtTransformer2DModel",
     S("transformer_blocks", cross_attention="attn2", attention_bias=True, attention_kv_arg="encoder_hidden_states"),
     token_grid=_grid_from_latents)
_reg("sana", "SanaTransformer2DModel",
     S("transformer_blocks", cross_attention="attn2", tokenwise_mlp=False, attention_kv_arg="encoder_hidden_states"),
     token_grid=_grid_from_latents)
_reg("hunyuandit", "HunyuanDiT2DModel",  # blocks < L/2-1 feed long skips to the last blocks
     S("blocks", first=lambda c: max(0, c.num_layers // 2 - 1), config_key=None))
_reg("nucleusmoe-image", "NucleusMoEImageTransformer2DModel", S("transformer_blocks"))
_reg("z-image", "ZImageTransformer2DModel", S("layers", hidden_arg="x", config_key="n_layers"),
     timestep_arg="t", fixed=("noise_refiner", "context_refiner"))
_reg("lumina2", "Lumina2Transformer2DModel", S("layers"), fixed=("noise_refiner", "context_refiner"))
_reg("ernie-image", "ErnieImageTransformer2DModel", S("layers", hidden_arg="x"))
_reg("omnigen", "OmniGenTransformer2DModel", S("layers"))
_reg("prx", "PRXTransformer2DModel", S("blocks", config_key="depth"))
_reg("krea2", "Krea2Transformer2DModel", S("transformer_blocks"))
_reg("ideogram4", "Ideogram4Transformer2DModel", S("layers"))
# -- image, blocks return (E, H) or (H, E) ------------------------------------------------------
_reg("sd3", "SD3Transformer2DModel", S("transformer_blocks", returns="EH", attention="attn", keep_blocks=(-1,)),
     token_grid=_grid_from_latents)
_reg("qwen-image", "QwenImageTransformer2DModel", S("transformer_blocks", returns="EH"))
_reg("qwen-image21", "QwenImage21Transformer2DModel", S("transformer_blocks"))  # one joint [text, image] sequence
_reg("cogview4", "CogView4Transformer2DModel", S("transformer_blocks", returns="HE"))  # ff runs twice a block
_reg("cogview3plus", "CogView3PlusTransformer2DModel", S("transformer_blocks", returns="HE"),
     token_grid=_grid_from_latents)
_reg("glm-image", "GlmImageTransformer2DModel", S("transformer_blocks", returns="HE"))
_reg("joyimage-edit", "JoyImageEditTransformer3DModel", S("double_blocks", returns="HE"))
_reg("joyimage-edit-plus", "JoyImageEditPlusTransformer3DModel", S("double_blocks", returns="HE"))
# -- image, dual stream + single stream ---------------------------------------------------------
_FLUX_DOUBLE = S("transformer_blocks", returns="EH", attention="attn", rotary_arg="image_rotary_emb")
_FLUX_SINGLE = S("single_transformer_blocks", returns="EH", attention="attn", norm="norm", mlp="proj_mlp",
                 text_prefix=True, rotary_arg="image_rotary_emb", config_key="num_single_layers")
for _name, _cls in (("flux", "FluxTransformer2DModel"), ("bria", "BriaTransformer2DModel"),
                    ("longcat-image", "LongCatImageTransformer2DModel"), ("ovis-image", "OvisImageTransformer2DModel")):
    _reg(_name, _cls, _FLUX_DOUBLE, _FLUX_SINGLE, token_grid=_grid_from_img_ids)
# Single-stream blocks that take [text, image] as one hidden-states tensor: a cached run cannot
# span from the two-stream blocks (image tokens only) into them, so the (fewer) two-stream
# blocks always run and accel acts on the single-stream ones.
_reg("flux2", "Flux2Transformer2DModel", S("single_transformer_blocks", config_key="num_single_layers"),
     fixed=("transformer_blocks",))
_reg("chroma", "ChromaTransformer2DModel",  # the approximator's modulations are indexed by block
     S("single_transformer_blocks", config_key=None), fixed=("transformer_blocks",))
_reg("bria-fibo", "BriaFiboTransformer2DModel",  # one caption projection per block
     S("single_transformer_blocks", config_key=None), fixed=("transformer_blocks",))
_reg("flux3", "Flux3Transformer2DModel",  # per-mode (image / condition / text) blocks run first
     S("single_transformer_blocks", returns="EH", config_key="num_single_layers"),
     fixed=("mode_blocks", "txt_mode_blocks"))
_reg("auraflow", "AuraFlowTransformer2DModel", S("single_transformer_blocks", config_key="num_single_dit_layers"),
     fixed=("joint_transformer_blocks",))
_reg("hidream-image", "HiDreamImageTransformer2DModel",  # [image, text] single blocks; llama_layers: one per block
     S("single_stream_blocks", config_key=None), fixed=("double_stream_blocks",), timestep_arg="timesteps")
# -- video, blocks return H ---------------------------------------------------------------------
_WAN = dict(cross_attention="attn2", mlp="ffn", rotary_arg="rotary_emb", rotary_text=False)
for _name, _cls in (("wan", "WanTransformer3DModel"), ("skyreels-v2", "SkyReelsV2Transformer3DModel"),
                    ("chronoedit", "ChronoEditTransformer3DModel")):
    _reg(_name, _cls, S("blocks", **_WAN), token_grid=_grid_video(frame_axis=2), media="video")
for _name, _cls in (("helios", "HeliosTransformer3DModel"), ("anyflow", "AnyFlowTransformer3DModel")):
    _reg(_name, _cls, S("blocks"), media="video")  # history / flow tokens share the sequence with the video
_reg("wan-vace", "WanVACETransformer3DModel", S("blocks", config_key=None, **_WAN),  # vace_layers index the blocks
     fixed=("vace_blocks",), token_grid=_grid_video(frame_axis=2), media="video")
_reg("wan-animate", "WanAnimateTransformer3DModel", S("blocks", config_key=None),  # face adapter every k blocks
     fixed=("face_adapter",), media="video")
_reg("cosmos", "CosmosTransformer3DModel", S("transformer_blocks"), media="video")
_reg("ltx-video", "LTXVideoTransformer3DModel",
     S("transformer_blocks", cross_attention="attn2", rotary_arg="image_rotary_emb", rotary_text=False),
     token_grid=_grid_ltx, media="video")
_reg("allegro", "AllegroTransformer3DModel", S("transformer_blocks"), media="video")
_reg("sana-video", "SanaVideoTransformer3DModel", S("transformer_blocks", tokenwise_mlp=False), media="video")
_reg("minimax-h3", "MiniMaxH3Transformer3DModel", S("transformer_blocks"), media="video")
_reg("latte", "LatteTransformer3DModel",  # spatial blocks (per frame); temporal blocks always run
     S("transformer_blocks", cross_attention="attn2", config_key=None), fixed=("temporal_transformer_blocks",),
     token_grid=_grid_from_latents, media="video")
# -- video, blocks return (H, E) ----------------------------------------------------------------
_reg("cogvideox", "CogVideoXTransformer3DModel",
     S("transformer_blocks", returns="HE", rotary_arg="image_rotary_emb", rotary_text=False),
     token_grid=_grid_video(frame_axis=1), media="video")
_reg("consisid", "ConsisIDTransformer3DModel", S("transformer_blocks", returns="HE", config_key=None),
     fixed=("perceiver_cross_attention",), media="video")  # perceiver blocks interleave at fixed block indices
_reg("mochi", "MochiTransformer3DModel",
     S("transformer_blocks", returns="HE", rotary_arg="image_rotary_emb", rotary_text=False,
       keep_blocks=(-1,)),  # the last block is context_pre_only
     token_grid=_grid_video(frame_axis=2), media="video")
_reg("easyanimate", "EasyAnimateTransformer3DModel",  # the first mmdit_layers blocks are built differently
     S("transformer_blocks", returns="HE", config_key=None), media="video")
_reg("ltx2-video", "LTX2VideoTransformer3DModel",  # the audio stream rides along as the second stream
     S("transformer_blocks", returns="HE", encoder_arg="audio_hidden_states"), media="video")
_reg("hunyuan-video15", "HunyuanVideo15Transformer3DModel", S("transformer_blocks", returns="HE"), media="video")
_reg("hunyuan-image", "HunyuanImageTransformer2DModel", S("transformer_blocks", returns="HE"),
     S("single_transformer_blocks", returns="HE", config_key="num_single_layers"))
_reg("kandinsky5", "Kandinsky5Transformer3DModel",  # text blocks encode the prompt once per call
     S("visual_transformer_blocks", hidden_arg="visual_embed", encoder_arg="text_embed", config_key="num_visual_blocks"),
     fixed=("text_transformer_blocks",), media="video")
for _name, _cls in (("hunyuan-video", "HunyuanVideoTransformer3DModel"),
                    ("hunyuan-video-framepack", "HunyuanVideoFramepackTransformer3DModel"),
                    ("motif-video", "MotifVideoTransformer3DModel")):
    _reg(_name, _cls, S("transformer_blocks", returns="HE"),
         S("single_transformer_blocks", returns="HE", config_key="num_single_layers"), media="video")
# -- audio ----------------------------------------------------------------------------------------
_reg("stable-audio", "StableAudioDiTModel", S("transformer_blocks"), media="audio")
_reg("stable-audio3", "StableAudio3DiTModel", S("transformer_blocks", encoder_arg="context", config_key="depth"),
     media="audio")
_reg("longcat-audio-dit", "LongCatAudioDiTTransformer", S("blocks", encoder_arg="cond", config_key="dit_depth"),
     media="audio")
_reg("ace-step", "AceStepTransformer1DModel", S("layers", config_key="num_hidden_layers"), media="audio")
_reg("minimax-music3", "MiniMaxMusic3Transformer1DModel", S("transformer_blocks"), media="audio")
del S

# Classes of diffusers 0.42's models/transformers that have no entry, and why (the README lists them).
NOT_REGISTERED = {
    "AnyFlowFARTransformer3DModel": "not yet: its tiny config takes 2 s a call on CPU (flex-attention block masks), "
                                    "too slow for the per-class test; auto-detection applies",
    "BriaFibo2Transformer2DModel": "not yet: no tiny reference config to test it with; auto-detection applies",
    "Cosmos3OmniTransformer": "a multimodal language model over text and vision token sequences, not a denoiser "
                              "called once per step on latents",
    "DreamLiteTransformer2DModel": "the transformer layer inside DreamLite's UNet (like Transformer2DModel), not a DiT",
    "Kandinsky6SRTransformer3DModel": "not yet: no tiny reference config to test it with; auto-detection applies",
    "Kandinsky6Transformer3DModel": "not yet: no tiny reference config to test it with; auto-detection applies",
    "LuminaNextDiT2DModel": "superseded by Lumina2; its caller passes a precomputed complex rotary table",
    "MiniMaxMusic3RVQDepthDecoder": "an RVQ token decoder, not a diffusion transformer",
    "PriorTransformer": "the UnCLIP prior (one embedding sequence, no image-token blocks)",
    "RFD4ProteinaTransformer": "a protein-structure model, not an image / video / audio denoiser",
    "SanaWMLTX2RefinerTransformer3DModel": "not yet: no tiny reference config to test it with",
    "SanaWMTransformer3DModel": "not yet: no tiny reference config to test it with; auto-detection applies",
    "T5FilmDecoder": "a spectrogram decoder of the music pipeline, not a DiT",
    "Transformer2DModel": "the generic transformer layer inside UNets (DiT and PixArt have their own classes)",
    "TransformerTemporalModel": "the temporal layer inside UNet video models, not a DiT",
    "WanAnimate2Transformer3DModel": "its call carries a streaming KV-cache object between calls, which a block "
                                     "cache would bypass",
}


def support_table() -> str:
    """The README's "Supported models" table, generated from the registry (scripts/support_table.py)."""
    yes = lambda ok: "yes" if ok else "-"  # noqa: E731
    fams = registered_families()
    rows = [f"{len(fams)} classes registered, {sum(f.media == 'video' for f in fams)} of them video.", "",
            "| class | media | blocks accel acts on | always run | caches | tokens | pruning |",
            "|---|---|---|---|---|---|---|"]
    for fam in fams:
        caps = fam.capabilities()
        stacks = ", ".join(f"`{s.attr}` ({s.returns})" + (" from block L/2-1" if s.first else "")
                           for s in fam.stacks)
        fixed = ", ".join(f"`{f}`" for f in fam.fixed) or "-"
        rows.append(f"| {fam.class_name} | {fam.media} | {stacks} | {fixed} | {yes(caps['cache'])} | "
                    f"{yes(caps['tokens'])} | {yes(caps['pruning'])} |")
    rows += ["", "Not registered (auto-detection still tries every unregistered class):", ""]
    rows += [f"- {name}: {why}" for name, why in sorted(NOT_REGISTERED.items())]
    return "\n".join(rows) + "\n"


def supported_classes() -> list[str]:
    return sorted({f.class_name for f in _FAMILIES.values()})


def registered_families() -> list[Family]:
    """Every registered family once, sorted by class name."""
    return sorted({id(f): f for f in _FAMILIES.values()}.values(), key=lambda f: f.class_name)


def family_of(model: torch.nn.Module) -> Family:
    """The registered family of `model`, else one `detect` reads from it (with a one-line notice),
    else `UnsupportedModelError` saying what could not be determined."""
    for cls in type(model).__mro__:
        if cls.__name__ in _FAMILIES:
            return _FAMILIES[cls.__name__]
    fam = _DETECTED.get(type(model))
    if fam is None:
        fam = detect(model)
        _DETECTED[type(model)] = fam
        names = ", ".join(f"{s.attr}[{len(getattr(model, s.attr))}]" for s in fam.stacks)
        warnings.warn(
            f"accel: {type(model).__name__} is not registered; auto-detected blocks {names}, run in that "
            "order; each block's return pattern is learned on its first call. Block caches only; register "
            "it for token methods and pruning (accel.families.register, see its docstring).", stacklevel=3)
    return fam


# ----------------------------------------------------------------------------- auto-detection
_HIDDEN_NAMES = ("hidden_states", "x", "hidden", "h")
_ENCODER_NAMES = ("encoder_hidden_states", "context", "cond", "encoder_states", "text_states")


def _refuse(model: torch.nn.Module, what: str) -> UnsupportedModelError:
    name = type(model).__name__
    return UnsupportedModelError(
        f"{name} is not a supported diffusion transformer and auto-detection failed: {what}. "
        f"Supported classes: {', '.join(supported_classes())}. Pass a diffusers pipeline whose "
        "`.transformer` is one of these, or register the class in a few lines: "
        f"accel.families.register(Family(name='mine', class_name='{name}', "
        "stacks=(BlockStack('blocks', returns='H'),))) (see accel.families' docstring).")


def detect(model: torch.nn.Module) -> Family:
    """A `Family` read from an unregistered model: its `nn.ModuleList`s of identical blocks that
    contain attention, each block's hidden-states / text arguments from its signature, and the
    return pattern (H, (H, E) or (E, H)) learned from the first call (`BlockIO`)."""
    if not isinstance(model, torch.nn.Module):
        raise _refuse(model, "it is not a torch.nn.Module")
    stacks = []
    for attr, child in model.named_children():
        if not isinstance(child, torch.nn.ModuleList) or len(child) == 0:
            continue
        kinds = {type(b) for b in child}
        if len(kinds) != 1 or not any("attn" in n.lower() or "attention" in n.lower()
                                      for n, _ in child[0].named_modules() if n):
            continue  # not a list of identical transformer blocks
        params = list(inspect.signature(type(child[0]).forward).parameters)[1:]
        hidden = next((p for p in _HIDDEN_NAMES if p in params), None)
        if hidden is None:
            raise _refuse(model, f"the blocks of {attr!r} ({type(child[0]).__name__}.forward{tuple(params)}) have "
                                 f"no hidden-states argument (looked for {', '.join(_HIDDEN_NAMES)})")
        encoder = next((p for p in _ENCODER_NAMES if p in params), "encoder_hidden_states")
        stacks.append(BlockStack(attr, returns="auto", hidden_arg=hidden, encoder_arg=encoder, config_key=None))
    if not stacks:
        raise _refuse(model, "no nn.ModuleList of transformer blocks (identical modules with attention) "
                             "among its direct children")
    params = list(inspect.signature(type(model).forward).parameters)[1:]
    t_arg = next((p for p in ("timestep", "timesteps", "t") if p in params), "timestep")
    return Family(name=f"auto:{type(model).__name__}", class_name=type(model).__name__, stacks=tuple(stacks),
                  timestep_arg=t_arg, detected=True)


class BlockIO:
    """Reads and writes the hidden states of one block class's calls and returns.

    Blocks are called with a mix of positional and keyword arguments (Sana passes all
    positionally); the signature is bound once per block class. For `returns="auto"` the
    pattern is learned from the first return value, by matching shapes with the inputs.
    """

    def __init__(self, block: torch.nn.Module, stack: BlockStack):
        self.returns = stack.returns
        self.hidden_arg, self.encoder_arg = stack.hidden_arg, stack.encoder_arg
        self.where = f"{type(block).__name__} in {stack.attr!r}"
        params = list(inspect.signature(type(block).forward).parameters)[1:]
        self._pos = {name: i for i, name in enumerate(params)}
        self._seen: tuple[Any, Any] | None = None

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
