"""Tiny random-init instances of the supported diffusers transformers and their stock pipelines.

Used by the test-suite and by benchmarks that need a second model family; nothing
downloads: text encoders are left out and prompts are given as embeddings
(`pipeline_inputs` builds them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

FAMILIES = ("dit", "pixart", "sd3", "flux", "sana")


@dataclass(frozen=True)
class MethodSettings:
    """How the tests make one accelerating method do real work, and the fidelity it must keep.

    tiny: settings under which it saves work on the tiny random models at 2-6 steps (the defaults
        compute such short calls in full: `min_steps`, warm-ups): a cache reuses every cached block
        at the second step, a token method merges or skips about half the tokens.
    floor_db: PSNR floor (dB) to the unaccelerated images at the method's DEFAULT settings, per
        embedded model: "default" (tests/test_methods_quality.py's workload) and "flow"
        (tests/test_flow_model.py's), about 3 dB under the value measured there.
    """

    tiny: dict[str, Any]
    floor_db: dict[str, float]


# One row per accelerating method: a new method adds its row here (tests check the table is complete).
# Measured PSNR (dB), default / flow model: delta 28.2 / 47.1, interval 21.4 / 30.7, residual 34.0 / 41.5,
# schedule 20.4 / 31.9, tome 16.8 / 21.0, toca 25.9 / 41.7, diffrate 21.9 / 27.3 (2-core CPU, torch 2.13).
METHOD_SETTINGS: dict[str, MethodSettings] = {
    "delta-cache": MethodSettings(dict(interval=2, boundary=0, cached_blocks=1.0, min_steps=0),
                                  {"default": 25.0, "flow": 44.1}),
    "interval-cache": MethodSettings(dict(interval=2, warmup=0, min_steps=0), {"default": 18.0, "flow": 27.7}),
    "residual-cache": MethodSettings(dict(threshold=1e9, warmup=0), {"default": 30.0, "flow": 38.5}),
    "schedule-cache": MethodSettings(dict(budget=1), {"default": 17.0, "flow": 28.9}),
    "tome": MethodSettings(dict(ratio=0.5), {"default": 14.0, "flow": 18.0}),
    "toca": MethodSettings(dict(interval=2, warmup=1), {"default": 23.0, "flow": 38.7}),
    "diffrate": MethodSettings(dict(rates="0.5"), {"default": 19.0, "flow": 24.3}),
}


def working_config(name: str, **overrides: Any) -> Any:
    """The config of method `name` at its `METHOD_SETTINGS` tiny settings (`overrides` win)."""
    import accel

    return accel.methods()[name](**{**METHOD_SETTINGS[name].tiny, **overrides})


def saved_work(name: str, stats: dict) -> bool:
    """Whether method `name` saved work, read from `handle.stats()`: a cache evaluated fewer blocks
    than the calls hold (but some), a token method ran at a FLOPs ratio in (0, 1)."""
    import accel

    kind = accel.methods()[name].kind
    if kind == "cache":
        return 0 < stats["total"]["block_evals"] < stats["total"]["block_total"]
    if kind == "tokens":  # every block runs, on fewer tokens
        return 0 < stats[name]["total"]["flops_ratio"] < 1
    raise ValueError(f"say how a {kind!r} method ({name}) shows that it saved work")

_TEXT_DIM = 16  # width of the fake text-encoder embeddings
_TEXT_LEN = 6  # prompt length in tokens
_POOLED_DIM = 12  # width of the pooled text embedding (SD3, Flux)


def tiny_transformer(family: str, num_layers: int = 3, seed: int = 0) -> torch.nn.Module:
    """A random-init transformer of `family` with `num_layers` blocks (Flux: that many of each kind)."""
    from diffusers import (
        DiTTransformer2DModel,
        FluxTransformer2DModel,
        PixArtTransformer2DModel,
        SanaTransformer2DModel,
        SD3Transformer2DModel,
    )

    torch.manual_seed(seed)
    if family == "dit":
        model = DiTTransformer2DModel(
            num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=8,
            num_layers=num_layers, sample_size=8, patch_size=2, num_embeds_ada_norm=1000,
            norm_type="ada_norm_zero",
        )
    elif family == "pixart":
        model = PixArtTransformer2DModel(
            num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=8,
            num_layers=num_layers, sample_size=8, patch_size=2, cross_attention_dim=16,
            caption_channels=_TEXT_DIM, norm_type="ada_norm_single", num_embeds_ada_norm=1000,
            use_additional_conditions=False,
        )
    elif family == "sd3":
        model = SD3Transformer2DModel(
            sample_size=8, patch_size=2, in_channels=4, out_channels=4, num_layers=num_layers,
            attention_head_dim=8, num_attention_heads=2, joint_attention_dim=_TEXT_DIM,
            caption_projection_dim=16, pooled_projection_dim=_POOLED_DIM, pos_embed_max_size=32,
        )
    elif family == "flux":
        model = FluxTransformer2DModel(
            patch_size=1, in_channels=16, num_layers=num_layers, num_single_layers=num_layers,
            attention_head_dim=8, num_attention_heads=2, joint_attention_dim=_TEXT_DIM,
            pooled_projection_dim=_POOLED_DIM, guidance_embeds=False, axes_dims_rope=(2, 2, 4),
        )
    elif family == "sana":
        model = SanaTransformer2DModel(
            in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=8,
            num_layers=num_layers, num_cross_attention_heads=2, cross_attention_head_dim=8,
            cross_attention_dim=16, caption_channels=_TEXT_DIM, sample_size=8, patch_size=1,
        )
    else:
        raise ValueError(f"unknown tiny family {family!r}; choose from {FAMILIES}")
    return model.eval()


def _tiny_vae(latent_channels: int, seed: int) -> torch.nn.Module:
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3, out_channels=3, block_out_channels=(8,), layers_per_block=1,
        latent_channels=latent_channels, norm_num_groups=4, sample_size=16, shift_factor=0.0,
        down_block_types=("DownEncoderBlock2D",), up_block_types=("UpDecoderBlock2D",),
    ).eval()


def _tiny_dc_ae(seed: int) -> torch.nn.Module:
    from diffusers import AutoencoderDC

    torch.manual_seed(seed)
    return AutoencoderDC(
        in_channels=3, latent_channels=4, attention_head_dim=2,
        encoder_block_types=("ResBlock", "EfficientViTBlock"),
        decoder_block_types=("ResBlock", "EfficientViTBlock"),
        encoder_block_out_channels=(8, 8), decoder_block_out_channels=(8, 8),
        encoder_qkv_multiscales=((), (5,)), decoder_qkv_multiscales=((), (5,)),
        encoder_layers_per_block=(1, 1), decoder_layers_per_block=[1, 1],
        downsample_block_type="conv", upsample_block_type="interpolate",
        decoder_norm_types="rms_norm", decoder_act_fns="silu", scaling_factor=0.41407,
    ).eval()


def tiny_pipeline(family: str, num_layers: int = 3, seed: int = 0) -> Any:
    """The stock diffusers pipeline of `family` around a tiny transformer (no text encoders)."""
    import diffusers as d

    transformer = tiny_transformer(family, num_layers=num_layers, seed=seed)
    if family == "dit":
        pipe = d.DiTPipeline(transformer=transformer, vae=_tiny_vae(4, seed), scheduler=d.DDIMScheduler())
    elif family == "pixart":
        pipe = d.PixArtAlphaPipeline(
            tokenizer=None, text_encoder=None, vae=_tiny_vae(4, seed), transformer=transformer,
            scheduler=d.DPMSolverMultistepScheduler(),
        )
    elif family == "sd3":
        pipe = d.StableDiffusion3Pipeline(
            transformer=transformer, scheduler=d.FlowMatchEulerDiscreteScheduler(), vae=_tiny_vae(4, seed),
            text_encoder=None, tokenizer=None, text_encoder_2=None, tokenizer_2=None,
            text_encoder_3=None, tokenizer_3=None,
        )
    elif family == "flux":
        pipe = d.FluxPipeline(
            scheduler=d.FlowMatchEulerDiscreteScheduler(), vae=_tiny_vae(4, seed), text_encoder=None,
            tokenizer=None, text_encoder_2=None, tokenizer_2=None, transformer=transformer,
        )
    elif family == "sana":
        pipe = d.SanaPipeline(
            tokenizer=None, text_encoder=None, vae=_tiny_dc_ae(seed), transformer=transformer,
            scheduler=d.DPMSolverMultistepScheduler(),
        )
    else:
        raise ValueError(f"unknown tiny family {family!r}; choose from {FAMILIES}")
    pipe.set_progress_bar_config(disable=True)
    return pipe


def pipeline_inputs(family: str, batch: int = 1, cfg: bool = True, steps: int = 3, seed: int = 0) -> dict:
    """Call kwargs for `tiny_pipeline(family)`: embeddings instead of prompts, fixed generator."""
    g = torch.Generator().manual_seed(1234)
    text = lambda: torch.randn(batch, _TEXT_LEN, _TEXT_DIM, generator=g)  # noqa: E731
    kw: dict[str, Any] = {
        "num_inference_steps": steps,
        "generator": torch.Generator().manual_seed(seed),
        "output_type": "pt",
    }
    if family == "dit":
        kw.update(class_labels=list(range(batch)), guidance_scale=4.0 if cfg else 1.0)
        kw["output_type"] = "np"
    elif family in ("pixart", "sana"):
        mask = torch.ones(batch, _TEXT_LEN, dtype=torch.long)
        kw.update(
            prompt_embeds=text(), prompt_attention_mask=mask, negative_prompt=None, negative_prompt_embeds=text(),
            negative_prompt_attention_mask=mask, guidance_scale=4.5 if cfg else 1.0,
            height=16 if family == "pixart" else 64, width=16 if family == "pixart" else 64,
        )
        kw["use_resolution_binning"] = False
    elif family == "sd3":
        pooled = lambda: torch.randn(batch, _POOLED_DIM, generator=g)  # noqa: E731
        kw.update(
            prompt_embeds=text(), pooled_prompt_embeds=pooled(), negative_prompt_embeds=text(),
            negative_pooled_prompt_embeds=pooled(), guidance_scale=5.0 if cfg else 1.0, height=16, width=16,
        )
    elif family == "flux":
        pooled = lambda: torch.randn(batch, _POOLED_DIM, generator=g)  # noqa: E731
        kw.update(prompt_embeds=text(), pooled_prompt_embeds=pooled(), height=16, width=16)
        if cfg:  # Flux has no batched CFG; "true CFG" runs two transformer calls per step
            kw.update(negative_prompt_embeds=text(), negative_pooled_prompt_embeds=pooled(), true_cfg_scale=3.0)
    else:
        raise ValueError(f"unknown tiny family {family!r}; choose from {FAMILIES}")
    return kw


def run_tiny(pipe: Any, family: str, **kw: Any) -> torch.Tensor:
    """Call the pipeline with `pipeline_inputs(family, **kw)` and return its images as a tensor."""
    out = pipe(**pipeline_inputs(family, **kw)).images
    return torch.as_tensor(out)


def transformer_inputs(family: str, model: torch.nn.Module, batch: int = 2, seed: int = 0) -> dict:
    """Direct forward kwargs for `tiny_transformer(family)` (one denoising call, fixed seed)."""
    g = torch.Generator().manual_seed(seed)
    r: Callable[..., torch.Tensor] = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    t = torch.full((batch,), 500, dtype=torch.long)
    if family == "dit":
        return dict(hidden_states=r(batch, 4, 8, 8), timestep=t, class_labels=torch.arange(batch), return_dict=False)
    if family == "pixart":
        return dict(
            hidden_states=r(batch, 4, 8, 8), encoder_hidden_states=r(batch, _TEXT_LEN, _TEXT_DIM), timestep=t,
            added_cond_kwargs={"resolution": None, "aspect_ratio": None}, return_dict=False,
        )
    if family == "sd3":
        return dict(
            hidden_states=r(batch, 4, 8, 8), encoder_hidden_states=r(batch, _TEXT_LEN, _TEXT_DIM),
            pooled_projections=r(batch, _POOLED_DIM), timestep=t, return_dict=False,
        )
    if family == "flux":
        h = w = 4
        ids = torch.zeros(h, w, 3)
        ids[..., 1] = torch.arange(h)[:, None]
        ids[..., 2] = torch.arange(w)[None, :]
        return dict(
            hidden_states=r(batch, h * w, 16), encoder_hidden_states=r(batch, _TEXT_LEN, _TEXT_DIM),
            pooled_projections=r(batch, _POOLED_DIM), timestep=t.float() / 1000, img_ids=ids.reshape(-1, 3),
            txt_ids=torch.zeros(_TEXT_LEN, 3), return_dict=False,
        )
    if family == "sana":
        return dict(
            hidden_states=r(batch, 4, 8, 8), encoder_hidden_states=r(batch, _TEXT_LEN, _TEXT_DIM), timestep=t,
            return_dict=False,
        )
    raise ValueError(f"unknown tiny family {family!r}; choose from {FAMILIES}")


def tiny_class_pipeline(num_layers: int = 2, seed: int = 0) -> Any:
    """A 1-channel, 10-class stock DiTPipeline (8x8 pixels): the embedded model's shape, tiny and random."""
    import diffusers as d

    torch.manual_seed(seed)
    model = d.DiTTransformer2DModel(
        num_attention_heads=2, attention_head_dim=8, in_channels=1, out_channels=1, num_layers=num_layers,
        sample_size=8, patch_size=2, norm_type="ada_norm_zero", num_embeds_ada_norm=1000,
    ).eval()
    vae = d.AutoencoderKL(
        in_channels=1, out_channels=1, latent_channels=1, block_out_channels=(8,),
        down_block_types=("DownEncoderBlock2D",), up_block_types=("UpDecoderBlock2D",),
        layers_per_block=1, norm_num_groups=4, sample_size=8,
    )
    pipe = d.DiTPipeline(transformer=model, vae=vae, scheduler=d.DDIMScheduler(clip_sample=False),
                         id2label={i: str(i) for i in range(10)})
    pipe.set_progress_bar_config(disable=True)
    return pipe


_WORDS = ("a photo of the red blue green fox cat dog in on snow sea city at night painting house tree "
          "watercolor lighthouse dawn bowl ramen wooden table astronaut riding horse digital art street rain").split()


def tiny_tokenizer(max_length: int = 16) -> Any:
    """A word-level fast tokenizer built offline (lowercase words; unknown words map to [UNK])."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "</s>", *_WORDS])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", eos_token="</s>",
                                   model_max_length=max_length)


def _tiny_t5(seed: int) -> torch.nn.Module:
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(seed)
    return T5EncoderModel(T5Config(vocab_size=len(_WORDS) + 3, d_model=_TEXT_DIM, d_kv=8, d_ff=32, num_layers=1,
                                   num_heads=2, relative_attention_num_buckets=8)).eval()


def _tiny_clip(seed: int, hidden: int, projection: int) -> torch.nn.Module:
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    return CLIPTextModelWithProjection(CLIPTextConfig(
        vocab_size=len(_WORDS) + 3, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=1,
        num_attention_heads=2, max_position_embeddings=16, projection_dim=projection,
        pad_token_id=0, bos_token_id=1, eos_token_id=2,
    )).eval()


def tiny_text_pipeline(family: str, with_text_encoders: bool = True, num_layers: int = 2, seed: int = 0) -> Any:
    """`tiny_pipeline(family)` for "pixart" or "sd3" with tiny random text encoders and an offline
    word-level tokenizer, so that it takes plain-text prompts (and round-trips `save_pretrained`)."""
    pipe = tiny_pipeline(family, num_layers=num_layers, seed=seed)
    if not with_text_encoders:
        return pipe
    if family == "pixart":
        pipe.register_modules(tokenizer=tiny_tokenizer(), text_encoder=_tiny_t5(seed))
    elif family == "sd3":
        half = _TEXT_DIM // 2  # the two CLIP widths concatenated fill the T5 width
        pipe.register_modules(
            tokenizer=tiny_tokenizer(), text_encoder=_tiny_clip(seed, half, _POOLED_DIM // 2),
            tokenizer_2=tiny_tokenizer(), text_encoder_2=_tiny_clip(seed + 1, half, _POOLED_DIM // 2),
            tokenizer_3=tiny_tokenizer(), text_encoder_3=_tiny_t5(seed + 2),
        )
    else:
        raise ValueError(f"tiny text pipelines exist for 'pixart' and 'sd3', not {family!r}")
    return pipe


def tiny_wan22_pipeline(num_layers: int = 2, seed: int = 0) -> Any:
    """A stock Wan 2.2 `WanPipeline` with two tiny random experts (`transformer` for the high-noise
    steps, `transformer_2` after `boundary_ratio`), a tiny Wan VAE and no text encoder: call it with
    `wan_inputs()` (prompt embeddings instead of prompts)."""
    import diffusers as d

    def expert(s: int) -> torch.nn.Module:
        torch.manual_seed(s)
        return d.WanTransformer3DModel(
            patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=16, out_channels=16,
            text_dim=_TEXT_DIM, freq_dim=256, ffn_dim=32, num_layers=num_layers, cross_attn_norm=True,
            qk_norm="rms_norm_across_heads", rope_max_seq_len=32,
        ).eval()

    torch.manual_seed(seed)
    vae = d.AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                             temperal_downsample=[False, True, True]).eval()
    scheduler = d.UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)
    pipe = d.WanPipeline(tokenizer=None, text_encoder=None, vae=vae, scheduler=scheduler,
                         transformer=expert(seed), transformer_2=expert(seed + 1), boundary_ratio=0.875)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def wan_inputs(steps: int = 6, num_frames: int = 5, cfg: bool = True, seed: int = 0) -> dict:
    """Call kwargs for `tiny_wan22_pipeline()`: 16x16 pixels, `num_frames` frames, fixed generator."""
    g = torch.Generator().manual_seed(1234)
    kw: dict[str, Any] = dict(
        prompt_embeds=torch.randn(1, _TEXT_LEN, _TEXT_DIM, generator=g), height=16, width=16,
        num_frames=num_frames, num_inference_steps=steps, guidance_scale=4.0 if cfg else 1.0,
        guidance_scale_2=3.0 if cfg else 1.0, generator=torch.Generator().manual_seed(seed), output_type="pt",
    )
    if cfg:
        kw["negative_prompt_embeds"] = torch.randn(1, _TEXT_LEN, _TEXT_DIM, generator=g)
    return kw


def _tiny_umt5(seed: int) -> torch.nn.Module:
    from transformers import UMT5Config, UMT5EncoderModel

    torch.manual_seed(seed)
    return UMT5EncoderModel(UMT5Config(vocab_size=len(_WORDS) + 3, d_model=_TEXT_DIM, d_kv=8, d_ff=32, num_layers=1,
                                       num_heads=2, relative_attention_num_buckets=8)).eval()


def _tiny_qwen25vl(seed: int) -> torch.nn.Module:
    """A 1-layer Qwen2.5-VL text encoder (diffusers' QwenImage pipeline test settings, tiny vocabulary)."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    torch.manual_seed(seed)
    config = Qwen2_5_VLConfig(
        text_config={"hidden_size": _TEXT_DIM, "intermediate_size": 16, "num_hidden_layers": 1,
                     "num_attention_heads": 2, "num_key_value_heads": 2, "vocab_size": len(_WORDS) + 3,
                     "rope_scaling": {"mrope_section": [1, 1, 2], "rope_type": "default", "type": "default"},
                     "rope_theta": 1000000.0, "bos_token_id": None, "eos_token_id": 2, "pad_token_id": 0},
        vision_config={"depth": 1, "hidden_size": 16, "intermediate_size": 16, "num_heads": 2, "out_hidden_size": 16},
        hidden_size=_TEXT_DIM, vocab_size=len(_WORDS) + 3, bos_token_id=None, eos_token_id=2, pad_token_id=0,
    )
    return Qwen2_5_VLForConditionalGeneration(config).eval()


TEXT_PIPELINES = ("wan22", "cogvideox", "qwen-image")


def tiny_cogvideox_vae() -> torch.nn.Module:
    """A tiny AutoencoderKLCogVideoX (4 latent channels, 4x temporal compression)."""
    import diffusers as d

    return d.AutoencoderKLCogVideoX(
        in_channels=3, out_channels=3, down_block_types=("CogVideoXDownBlock3D",) * 4,
        up_block_types=("CogVideoXUpBlock3D",) * 4, block_out_channels=(8, 8, 8, 8), latent_channels=4,
        layers_per_block=1, norm_num_groups=2, temporal_compression_ratio=4,
    ).eval()


def tiny_prompt_pipeline(name: str, num_layers: int = 2, seed: int = 0) -> Any:
    """A stock text-to-video / text-to-image pipeline with a tiny random transformer, text encoder,
    offline tokenizer and VAE, so that it takes plain-text prompts and round-trips `save_pretrained`:
    "wan22" (WanPipeline, two experts: 16x16 pixels, frames 4k+1), "cogvideox" (16x16, frames 4k+1),
    "qwen-image" (QwenImagePipeline, 32x32 pixels)."""
    import diffusers as d

    if name == "wan22":
        pipe = tiny_wan22_pipeline(num_layers=num_layers, seed=seed)
        pipe.register_modules(tokenizer=tiny_tokenizer(), text_encoder=_tiny_umt5(seed))
        return pipe
    torch.manual_seed(seed)
    if name == "cogvideox":
        transformer = d.CogVideoXTransformer3DModel(
            num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=4, time_embed_dim=2,
            text_embed_dim=_TEXT_DIM, num_layers=num_layers, sample_width=2, sample_height=2, sample_frames=5,
            patch_size=2, temporal_compression_ratio=4, max_text_seq_length=226,  # the pipeline default
        ).eval()
        vae = tiny_cogvideox_vae()
        pipe = d.CogVideoXPipeline(tokenizer=tiny_tokenizer(), text_encoder=_tiny_t5(seed), vae=vae,
                                   transformer=transformer, scheduler=d.CogVideoXDDIMScheduler())
    elif name == "qwen-image":
        transformer = d.QwenImageTransformer2DModel(
            patch_size=2, in_channels=16, out_channels=4, num_layers=num_layers, attention_head_dim=16,
            num_attention_heads=2, joint_attention_dim=_TEXT_DIM, guidance_embeds=False, axes_dims_rope=(8, 4, 4),
        ).eval()
        vae = d.AutoencoderKLQwenImage(base_dim=24, z_dim=4, dim_mult=[1, 2, 4], num_res_blocks=1,
                                       temperal_downsample=[False, True], latents_mean=[0.0] * 4,
                                       latents_std=[1.0] * 4).eval()
        pipe = d.QwenImagePipeline(scheduler=d.FlowMatchEulerDiscreteScheduler(), vae=vae,
                                   text_encoder=_tiny_qwen25vl(seed), tokenizer=tiny_tokenizer(),
                                   transformer=transformer)
    else:
        raise ValueError(f"unknown tiny prompt pipeline {name!r}; choose from {TEXT_PIPELINES}")
    pipe.set_progress_bar_config(disable=True)
    return pipe
