"""Tiny random-init instances of every registered diffusers transformer class, and their call arguments.

The configs and call arguments in tests/data/tiny_models.json (+ tiny_inputs.safetensors for the
integer / structured tensors; random tensors are stored as shapes) were taken once from diffusers'
own model tests (tests/models/transformers/*, get_init_dict / get_dummy_inputs), so they are
the smallest settings each class is known to accept. `MiniPipe` drives a bare transformer like a
pipeline: a real scheduler sets the steps (accel's step context follows it) and each step is
one transformer call at a falling timestep.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import diffusers
import torch
from safetensors.torch import load_file

from accel.families import family_of, registered_families

DATA = Path(__file__).parent / "data"
DEPTH = {"HunyuanDiT2DModel": {"num_layers": 4}, "LatteTransformer3DModel": {"num_layers": 2},
         "OmniGenTransformer2DModel": {"num_layers": 2}, "ConsisIDTransformer3DModel": {"num_layers": 2},
         "HiDreamImageTransformer2DModel": {"num_single_layers": 2, "llama_layers": [0, 1, 1]},
         "ChromaTransformer2DModel": {"num_single_layers": 2}, "BriaFiboTransformer2DModel": {"num_single_layers": 2}}

INIT = {  # the padding-mask resize needs torchvision (not installed here); PRX's reference config is 300M
    "CosmosTransformer3DModel": {"concat_padding_mask": False},
    "PRXTransformer2DModel": {"hidden_size": 32, "num_heads": 2, "axes_dim": [8, 8], "context_in_dim": 16, "depth": 2},
}
BATCH_AXIS = {"HiDreamImageTransformer2DModel": {"encoder_hidden_states_llama3": 1}}  # (layers, B, ...)
KEEP = {"HunyuanDiT2DModel": ("image_rotary_emb",), "GlmImageTransformer2DModel": ("prior_token_id", "prior_token_drop"),
        "MiniMaxH3Transformer3DModel": ("timestep",)}  # inputs that are not per sample


@lru_cache(maxsize=1)
def _data() -> tuple[dict, dict]:
    return json.loads((DATA / "tiny_models.json").read_text()), load_file(str(DATA / "tiny_inputs.safetensors"))


def _hunyuan_image(b: int, g: torch.Generator) -> dict:
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    return dict(hidden_states=r(b, 4, 4, 4), timestep=torch.full((b,), 500.0), encoder_hidden_states=r(b, 6, 32),
                encoder_attention_mask=torch.ones(b, 6), encoder_hidden_states_2=r(b, 5, 32),
                encoder_attention_mask_2=torch.ones(b, 5), return_dict=False)


def _kandinsky5(b: int, g: torch.Generator) -> dict:
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    return dict(hidden_states=r(b, 2, 4, 4, 16), encoder_hidden_states=r(b, 6, 32), timestep=torch.full((b,), 500.0),
                pooled_projections=r(b, 32), visual_rope_pos=[torch.arange(2), torch.arange(2), torch.arange(2)],
                text_rope_pos=torch.arange(6), return_dict=False)


def _qwen_image21(b: int, g: torch.Generator) -> dict:
    mask = torch.zeros(b, 10, dtype=torch.bool)
    mask[:, 6:] = True  # 6 text slots, then the target image's 4 slots (2x2 latent tokens each)
    return dict(hidden_states=torch.randn(b, 16, 16, generator=g), encoder_hidden_states=torch.randn(b, 6, 16, generator=g),
                timestep=torch.full((b,), 0.5), img_shapes=[[(1, 4, 4)]] * b, img_mask=mask, return_dict=False)


def _stable_audio(b: int, g: torch.Generator) -> dict:
    from diffusers.models.embeddings import get_1d_rotary_pos_embed

    rotary = get_1d_rotary_pos_embed(2, 4 + 1, use_real=True, repeat_interleave_real=False)  # 4 latents + 1 global
    return dict(hidden_states=torch.randn(b, 3, 4, generator=g), timestep=torch.full((b,), 0.5),
                encoder_hidden_states=torch.randn(b, 3, 4, generator=g),
                global_hidden_states=torch.randn(b, 1, 8, generator=g), rotary_embedding=rotary, return_dict=False)


def _flux3(b: int, g: torch.Generator) -> dict:
    ids = torch.zeros(16, 4)
    ids[:, 1], ids[:, 2] = torch.arange(4).repeat_interleave(4), torch.arange(4).repeat(4)
    return dict(hidden_states=torch.randn(b, 16, 4, generator=g), encoder_hidden_states=torch.randn(b, 6, 16, generator=g),
                timestep=torch.full((b,), 0.5), img_ids=ids, txt_ids=torch.zeros(6, 4), return_dict=False)


# Classes diffusers' model tests have no tiny config for: configs from its pipeline tests, inputs by hand.
HAND = {
    "HunyuanImageTransformer2DModel": (dict(
        in_channels=4, out_channels=4, num_attention_heads=4, attention_head_dim=8, num_layers=2, num_single_layers=2,
        num_refiner_layers=1, patch_size=(1, 1), guidance_embeds=False, text_embed_dim=32, text_embed_2_dim=32,
        rope_axes_dim=(4, 4)), _hunyuan_image),
    "Kandinsky5Transformer3DModel": (dict(
        in_visual_dim=16, in_text_dim=32, in_text_dim2=32, time_dim=16, out_visual_dim=16, patch_size=(1, 2, 2),
        model_dim=16, ff_dim=32, num_text_blocks=1, num_visual_blocks=2, axes_dims=(1, 1, 2), visual_cond=False,
        attention_type="regular"), _kandinsky5),
    "QwenImage21Transformer2DModel": (dict(
        in_channels=16, out_channels=16, num_layers=2, attention_head_dim=16, num_attention_heads=2, context_in_dim=16,
        axes_dims_rope=(4, 6, 6)), _qwen_image21),
    "StableAudioDiTModel": (dict(
        sample_size=4, in_channels=3, num_layers=2, attention_head_dim=4, num_key_value_attention_heads=2,
        out_channels=3, cross_attention_dim=4, time_proj_dim=8, global_states_input_dim=8,
        cross_attention_input_dim=4), _stable_audio),
    "Flux3Transformer2DModel": (dict(
        in_channels=4, cond_in_channels=4, num_layers=2, num_single_layers=2, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=16, timestep_channels=16, axes_dims_rope=(4, 4, 4, 4)), _flux3),
}


def tiny_classes() -> list[str]:
    """Registered classes with a tiny spec (all of them, checked by test_every_registered_class_has_a_spec)."""
    specs, _ = _data()
    return [f.class_name for f in registered_families() if f.class_name in specs or f.class_name in HAND]


def build(name: str, seed: int = 0) -> torch.nn.Module:
    """The class with its tiny config; every stack at least 2 blocks deep where one config entry sets it."""
    specs, _ = _data()
    init = dict(HAND[name][0] if name in HAND else specs[name]["init"])
    cls = getattr(diffusers, name)
    for stack in next(f for f in registered_families() if f.class_name == name).stacks:
        if stack.config_key and init.get(stack.config_key, 2) < 2:
            init[stack.config_key] = 2
    init.update(DEPTH.get(name, {}))
    init.update(INIT.get(name, {}))
    torch.manual_seed(seed)
    model = cls(**init).eval()
    with torch.no_grad():  # zero-initialised gates make blocks identities: give them small weights
        for p in model.parameters():
            if p.is_floating_point() and p.numel() and not p.any():
                p.normal_(0, 0.02)
    return model


def _decode(node: dict, tensors: dict, g: torch.Generator) -> Any:
    if "tensor" in node:
        return tensors[node["tensor"]].clone()
    if "randn" in node:
        return torch.randn(*node["randn"], generator=g).to(getattr(torch, node["dtype"]))
    if "list" in node or "tuple" in node:
        items = [_decode(v, tensors, g) for v in node.get("list", node.get("tuple"))]
        return items if "list" in node else tuple(items)
    if "dict" in node:
        return {(int(k) if node["int_keys"] else k): _decode(v, tensors, g) for k, v in node["dict"].items()}
    return node["value"]


def inputs(name: str, batch: int | None = None, seed: int = 0) -> dict:
    """Call kwargs of the tiny `name`; `batch` resizes every batch-shaped input (rows beyond the
    stored batch are a CFG-like second half: the first rows scaled by 0.9)."""
    if name in HAND:
        return HAND[name][1](batch or 1, torch.Generator().manual_seed(seed))
    specs, tensors = _data()
    kw = _decode(specs[name]["inputs"], tensors, torch.Generator().manual_seed(seed))
    model_cls = getattr(diffusers, name)
    if "return_dict" in model_cls.forward.__code__.co_varnames:
        kw["return_dict"] = False
    if name == "BriaFiboTransformer2DModel":  # one text-encoder layer per block (1 + 2 blocks)
        kw["text_encoder_layers"] = (list(kw["text_encoder_layers"]) * 2)[:3]
    if name == "CosmosTransformer3DModel":
        kw.pop("padding_mask")
    if name == "PRXTransformer2DModel":
        kw["encoder_hidden_states"] = kw["encoder_hidden_states"][..., :16].contiguous()
    ids = kw.get("img_ids")
    if isinstance(ids, torch.Tensor) and ids.ndim == 2 and ids.shape[1] == 3:  # (row, col) of a square grid
        side = int(ids.shape[0] ** 0.5)
        if side * side == ids.shape[0]:
            grid = torch.zeros(side, side, 3)
            grid[..., 1], grid[..., 2] = torch.arange(side)[:, None], torch.arange(side)[None, :]
            kw["img_ids"] = grid.reshape(-1, 3).to(ids.dtype)
    if batch is None:
        return kw
    fam = next(f for f in registered_families() if f.class_name == name)
    main = kw[fam.stacks[0].hidden_arg] if fam.stacks[0].hidden_arg in kw else kw["hidden_states"]
    b0 = len(main) if isinstance(main, list) else main.shape[0]
    axes = BATCH_AXIS.get(name, {})
    return {k: _rebatch(v, b0, batch, axes.get(k, 0)) if k not in KEEP.get(name, ()) else v for k, v in kw.items()}


def _rebatch(v: Any, b0: int, b: int, axis: int = 0) -> Any:
    if isinstance(v, torch.Tensor) and v.ndim > axis and v.shape[axis] == b0:
        v = v.movedim(axis, 0)
        if b <= b0:
            out = v[:b].clone()
        else:
            extra = v if not v.is_floating_point() else v * 0.9
            out = torch.cat([v] + [extra] * (b // b0 - 1) + [v[: b % b0]], dim=0)
        return out.movedim(0, axis)
    if isinstance(v, list) and len(v) == b0:  # one entry per sample (Z-Image's latents, size lists)
        return (v * (b // b0 + 1))[:b] if b > b0 else v[:b]
    if isinstance(v, (list, tuple)):
        return type(v)(_rebatch(x, b0, b, axis) for x in v)
    return v


def prediction(out: Any) -> torch.Tensor:
    """The transformer's main output as one tensor."""
    if isinstance(out, (tuple, list)) and not isinstance(out, torch.Tensor):
        out = out[0]
    out = getattr(out, "sample", out)
    if isinstance(out, (list, tuple)):
        out = torch.stack([o for o in out])
    return out


class MiniPipe:
    """A pipeline-shaped driver of one bare transformer: `pipe(kw, steps)` runs `steps` denoising steps."""

    def __init__(self, model: torch.nn.Module):
        self.transformer = model
        self.scheduler = diffusers.FlowMatchEulerDiscreteScheduler()

    def __call__(self, kw: dict, steps: int = 4) -> torch.Tensor:
        t_arg = family_of(self.transformer).timestep_arg
        self.scheduler.set_timesteps(steps)
        outs = []
        for k, t in enumerate(self.scheduler.timesteps):
            call = dict(kw)
            t0 = kw.get(t_arg)
            if isinstance(t0, torch.Tensor):  # a falling timestep in the input's own scale and dtype
                frac = 1 - k / steps
                value = frac * (0.9 if t0.is_floating_point() and float(t0.abs().max()) <= 1 else 900)
                call[t_arg] = torch.full_like(t0, value if t0.is_floating_point() else int(value))
            with torch.no_grad():
                outs.append(prediction(self.transformer(**call)))
            self.scheduler.step(torch.zeros(1), t, torch.zeros(1))
        return torch.stack(outs)
