"""Tiny random-init instances of the supported diffusers transformers and their stock pipelines.

Used by the test-suite and by benchmarks that need a second model family; nothing
downloads: text encoders are left out and prompts are given as embeddings
(`pipeline_inputs` builds them).
"""

from __future__ import annotations

from typing import Any, Callable

import torch

FAMILIES = ("dit", "pixart", "sd3", "flux", "sana")

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
