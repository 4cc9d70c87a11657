"""Tiny stock diffusers pipelines beside text-to-image (img2img, inpaint, control, edit, video), as data.

`CASES` declares each tested pipeline class once: its kind, family, a builder (random-init
transformer / VAE / control model of the real diffusers classes, no text encoders: prompts
are given as embeddings) and its call arguments. tests/test_pipeline_matrix.py runs every
case with every method it lists, and scripts/pipelines_table.py writes docs/pipelines.md
from the same table, so the page lists exactly what is tested.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

KINDS = ("img2img", "inpaint", "control", "edit", "image-to-video", "video-to-video")
CACHES = ("delta-cache", "interval-cache", "residual-cache", "schedule-cache")
_TEXT_DIM, _TEXT_LEN, _POOLED_DIM = 16, 6, 12
# settings that differ from a method's defaults here, and why: at 8 steps of a random tiny model the
# residual-cache's adaptive threshold 0.1 reuses no step (it says so in its stats' warnings)
SETTINGS: dict[str, dict[str, Any]] = {"residual-cache": {"threshold": 1.0}}
# PSNR (dB) to the same pipeline's uncached output that every case keeps: 3 dB under the lowest value
# measured over the table (2-core CPU, torch 2.13, 10 steps): delta-cache 27.0 (CogVideoX i2v),
# interval-cache 29.5 and schedule-cache 29.0 (Z-Image inpaint), residual-cache 26.4 (CogVideoX i2v),
# tome 42.5 (Flux Control inpaint), toca 59.0 (SD3 img2img)
PSNR_FLOOR_DB = {"delta-cache": 24.0, "interval-cache": 26.0, "residual-cache": 23.0, "schedule-cache": 26.0,
                 "tome": 39.0, "toca": 56.0}


@dataclass(frozen=True)
class PipelineCase:
    """One diffusers pipeline class under test: what it is, how to build and call it tiny."""

    pipeline: str  # diffusers class name
    kind: str  # one of KINDS
    family: str  # the transformer family, as docs/pipelines.md names it
    build: Callable[[], Any] = field(repr=False, compare=False)
    inputs: Callable[..., dict] = field(repr=False, compare=False)  # inputs(seed=0, steps=STEPS, **over)
    tokens: tuple[str, ...] = ()  # token methods tested here (the family offers them)
    refused: tuple[tuple[str, str], ...] = ()  # (method, the one-line reason accel refuses it here)
    controlled: bool = False  # has a control input: the test also runs it without (closer-to-controlled check)
    note: str = ""  # what is not tested here and why (shown in docs/pipelines.md)

    @property
    def methods(self) -> tuple[str, ...]:
        return CACHES + self.tokens


def _g(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _image(seed: int, size: int = 16, batch: int = 1) -> torch.Tensor:
    """A smooth random RGB image in [0, 1] (B, 3, size, size)."""
    low = torch.rand(batch, 3, 4, 4, generator=_g(seed + 99))
    return torch.nn.functional.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)


def _mask(size: int = 16) -> torch.Tensor:
    m = torch.zeros(1, 1, size, size)
    m[..., size // 4: 3 * size // 4, size // 4: 3 * size // 4] = 1.0
    return m


def _frames(n: int, size: int, seed: int = 0) -> list:
    from PIL import Image

    return [Image.fromarray((_image(seed + i, size)[0].permute(1, 2, 0) * 255).byte().numpy()) for i in range(n)]


def _live(controlnet: torch.nn.Module, seed: int) -> torch.nn.Module:
    """A control model with its zero-initialised output layers drawn at random (else it adds nothing)."""
    g = _g(seed)
    with torch.no_grad():
        for p in controlnet.parameters():
            if not p.any():
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
    return controlnet


def _assemble(cls_name: str, **components: Any) -> Any:
    """`cls_name(**components)` with every other component of its constructor left None."""
    import diffusers

    cls = getattr(diffusers, cls_name)
    params = inspect.signature(cls.__init__).parameters
    kw = {n: None for n, p in list(params.items())[1:] if p.default is inspect.Parameter.empty}
    kw.update(components)
    pipe = cls(**kw)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _tiny_vae(latent_channels: int = 4, seed: int = 0) -> torch.nn.Module:
    """accel.testing's tiny AutoencoderKL, 4 latent channels unless told."""
    from .testing import _tiny_vae as vae

    return vae(latent_channels, seed)


# ----------------------------------------------------------------------------------------- Flux
def _flux_transformer(in_channels: int = 16, seed: int = 0, layers: int = 3) -> torch.nn.Module:
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(seed)
    return FluxTransformer2DModel(
        patch_size=1, in_channels=in_channels, out_channels=16, num_layers=layers, num_single_layers=layers,
        attention_head_dim=8, num_attention_heads=2, joint_attention_dim=_TEXT_DIM,
        pooled_projection_dim=_POOLED_DIM, guidance_embeds=False, axes_dims_rope=(2, 2, 4),
    ).eval()


def _flux_controlnet(seed: int = 1) -> torch.nn.Module:
    from diffusers import FluxControlNetModel

    torch.manual_seed(seed)
    model = FluxControlNetModel(
        patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=8,
        num_attention_heads=2, joint_attention_dim=_TEXT_DIM, pooled_projection_dim=_POOLED_DIM,
        axes_dims_rope=(2, 2, 4),
    )
    return _live(model.eval(), seed)


def _flux(cls_name: str, in_channels: int = 16, controlnet: bool = False) -> Callable[[], Any]:
    def build() -> Any:
        from diffusers import FlowMatchEulerDiscreteScheduler

        extra = {"controlnet": _flux_controlnet()} if controlnet else {}
        return _assemble(cls_name, transformer=_flux_transformer(in_channels), vae=_tiny_vae(),
                         scheduler=FlowMatchEulerDiscreteScheduler(), **extra)
    return build


STEPS = 10  # a full schedule of 10 steps; strength 0.8 executes 8 (the caches' default min_steps)


def _text(g: torch.Generator, batch: int, dim: int = _TEXT_DIM) -> torch.Tensor:
    return torch.randn(batch, _TEXT_LEN, dim, generator=g)


def _prompts(style: str, batch: int, cfg: bool) -> dict:
    """Prompt embeddings in the form the family's pipelines take (fixed seed; CFG by negatives)."""
    g = _g(1234)
    if style == "flux":  # Flux has no batched CFG: true_cfg_scale runs two calls per step when negatives come
        kw = dict(prompt_embeds=_text(g, batch), pooled_prompt_embeds=torch.randn(batch, _POOLED_DIM, generator=g))
        return kw
    if style == "sd3":
        kw = dict(prompt_embeds=_text(g, batch), pooled_prompt_embeds=torch.randn(batch, _POOLED_DIM, generator=g),
                  negative_prompt_embeds=_text(g, batch),
                  negative_pooled_prompt_embeds=torch.randn(batch, _POOLED_DIM, generator=g))
        return {**kw, "guidance_scale": 5.0 if cfg else 1.0}
    if style == "masked":  # Chroma, Sana: embeddings and attention masks
        mask = torch.ones(batch, _TEXT_LEN, dtype=torch.long)
        return dict(prompt_embeds=_text(g, batch), prompt_attention_mask=mask, negative_prompt=None,
                    negative_prompt_embeds=_text(g, batch),
                    negative_prompt_attention_mask=mask, guidance_scale=4.5 if cfg else 1.0)
    if style == "qwen":
        mask = torch.ones(batch, _TEXT_LEN, dtype=torch.long)
        kw = dict(prompt_embeds=_text(g, batch), prompt_embeds_mask=mask)
        if cfg:
            kw.update(negative_prompt_embeds=_text(g, batch), negative_prompt_embeds_mask=mask, true_cfg_scale=4.0)
        return kw
    if style == "z-image":  # one (tokens, dim) tensor per prompt
        kw = dict(prompt_embeds=[torch.randn(_TEXT_LEN, _TEXT_DIM, generator=g) for _ in range(batch)])
        kw["negative_prompt_embeds"] = [torch.randn(_TEXT_LEN, _TEXT_DIM, generator=g) for _ in range(batch)]
        return {**kw, "guidance_scale": 4.0 if cfg else 1.0}
    if style == "video":  # CogVideoX, Wan
        kw = dict(prompt_embeds=_text(g, batch), negative_prompt_embeds=_text(g, batch))
        return {**kw, "guidance_scale": 5.0 if cfg else 1.0}
    raise ValueError(f"unknown prompt style {style!r}")


def _inputs(style: str, *needs: str, size: int = 16, frames: int = 0) -> Callable[..., dict]:
    """inputs(seed, steps, batch, cfg, **over): call kwargs of one declared case."""
    def inputs(seed: int = 0, steps: int = STEPS, batch: int = 1, cfg: bool = True, **over: Any) -> dict:
        kw: dict[str, Any] = dict(_prompts(style, batch, cfg), height=size, width=size, num_inference_steps=steps,
                                  generator=_g(seed), output_type="pt")
        _add_needs(kw, needs, size, frames)
        kw.update(over)
        return kw
    return inputs


def _add_needs(kw: dict, needs: tuple[str, ...], size: int, frames: int = 0) -> None:
    """The image-side inputs a pipeline kind takes, fixed by name."""
    for need in needs:
        if need == "image":
            kw["image"] = _image(0, size)
        elif need == "num_frames":
            kw["num_frames"] = frames
        elif need == "strength":
            kw["strength"] = 0.8
        elif need == "kontext":  # Kontext resizes to a 1024² area unless told the area
            kw.update(max_area=size * size, _auto_resize=False)
        elif need == "video":  # a list of PIL frames, the pipelines' usual video input
            kw["video"] = _frames(frames, size)
        elif need == "control_mask":
            kw["control_mask"] = _mask(size)
        elif need == "no_binning":
            kw["use_resolution_binning"] = False
        elif need == "control_video":
            kw["control_video"] = _frames(frames, size, seed=7)
        elif need == "mask_image":
            kw["mask_image"] = _mask(size)
        elif need == "control_image":
            kw["control_image"] = _image(7, size)
        elif need == "image_reference":
            kw["image_reference"] = _image(3, size)
        else:  # pragma: no cover - a typo in the table
            raise ValueError(f"unknown input {need!r}")


_FLUX_TOKENS = ("tome", "toca")
# toca recomputes a subset of tokens in place and never mixes positions; tome would merge across them
_TOME_KONTEXT = (("tome", "reference-image tokens"),)

CASES: list[PipelineCase] = [
    PipelineCase("FluxImg2ImgPipeline", "img2img", "Flux", _flux("FluxImg2ImgPipeline"),
                 _inputs("flux", "image", "strength"), _FLUX_TOKENS),
    PipelineCase("FluxInpaintPipeline", "inpaint", "Flux", _flux("FluxInpaintPipeline"),
                 _inputs("flux", "image", "mask_image", "strength"), _FLUX_TOKENS),
    PipelineCase("FluxFillPipeline", "inpaint", "Flux", _flux("FluxFillPipeline", in_channels=36),
                 _inputs("flux", "image", "mask_image"), _FLUX_TOKENS),
    PipelineCase("FluxControlNetPipeline", "control", "Flux", _flux("FluxControlNetPipeline", controlnet=True),
                 _inputs("flux", "control_image"), _FLUX_TOKENS, controlled=True),
    PipelineCase("FluxControlNetImg2ImgPipeline", "control", "Flux",
                 _flux("FluxControlNetImg2ImgPipeline", controlnet=True),
                 _inputs("flux", "image", "control_image", "strength"), _FLUX_TOKENS, controlled=True),
    PipelineCase("FluxControlNetInpaintPipeline", "control", "Flux",
                 _flux("FluxControlNetInpaintPipeline", controlnet=True),
                 _inputs("flux", "image", "mask_image", "control_image", "strength"), _FLUX_TOKENS, controlled=True),
    PipelineCase("FluxControlPipeline", "control", "Flux", _flux("FluxControlPipeline", in_channels=32),
                 _inputs("flux", "control_image"), _FLUX_TOKENS),
    PipelineCase("FluxControlImg2ImgPipeline", "control", "Flux", _flux("FluxControlImg2ImgPipeline", in_channels=32),
                 _inputs("flux", "image", "control_image", "strength"), _FLUX_TOKENS),
    PipelineCase("FluxControlInpaintPipeline", "control", "Flux",
                 _flux("FluxControlInpaintPipeline", in_channels=32),
                 _inputs("flux", "image", "mask_image", "control_image", "strength"), _FLUX_TOKENS),
    PipelineCase("FluxKontextPipeline", "edit", "Flux", _flux("FluxKontextPipeline"), _inputs("flux", "image", "kontext"),
                 ("toca",), _TOME_KONTEXT),
    PipelineCase("FluxKontextInpaintPipeline", "edit", "Flux", _flux("FluxKontextInpaintPipeline"),
                 _inputs("flux", "image", "mask_image", "image_reference", "strength", "kontext"), ("toca",),
                 _TOME_KONTEXT),
]


# ------------------------------------------------------------------------------------------ SD3
def _sd3(cls_name: str, controlnet: bool = False, extra_conditioning: int = 0, in_channels: int = 4,
         latent: int = 4) -> Callable[[], Any]:
    def build() -> Any:
        from diffusers import FlowMatchEulerDiscreteScheduler, SD3ControlNetModel, SD3Transformer2DModel

        torch.manual_seed(0)
        transformer = SD3Transformer2DModel(
            sample_size=8, patch_size=2, in_channels=in_channels, out_channels=latent, num_layers=3,
            attention_head_dim=8, num_attention_heads=2, joint_attention_dim=_TEXT_DIM, caption_projection_dim=16,
            pooled_projection_dim=_POOLED_DIM, pos_embed_max_size=32,
        ).eval()
        extra = {}
        if controlnet:
            torch.manual_seed(1)
            extra["controlnet"] = SD3ControlNetModel(
                sample_size=8, patch_size=2, in_channels=4, num_layers=1, attention_head_dim=8, num_attention_heads=2,
                joint_attention_dim=_TEXT_DIM, caption_projection_dim=16, pooled_projection_dim=_POOLED_DIM,
                out_channels=4, pos_embed_max_size=32, extra_conditioning_channels=extra_conditioning,
            )
            extra["controlnet"] = _live(extra["controlnet"].eval(), 1)
        return _assemble(cls_name, transformer=transformer, vae=_tiny_vae(latent),
                         scheduler=FlowMatchEulerDiscreteScheduler(), **extra)
    return build


# --------------------------------------------------------------------------------------- Chroma
def _chroma(cls_name: str) -> Callable[[], Any]:
    def build() -> Any:
        from diffusers import ChromaTransformer2DModel, FlowMatchEulerDiscreteScheduler

        torch.manual_seed(0)
        transformer = ChromaTransformer2DModel(
            patch_size=1, in_channels=16, num_layers=2, num_single_layers=2, attention_head_dim=8,
            num_attention_heads=2, joint_attention_dim=_TEXT_DIM, axes_dims_rope=(2, 2, 4),
            approximator_num_channels=8, approximator_hidden_dim=16, approximator_layers=1,
        ).eval()
        return _assemble(cls_name, transformer=transformer, vae=_tiny_vae(), scheduler=FlowMatchEulerDiscreteScheduler())
    return build


# ----------------------------------------------------------------------------------- Qwen-Image
def _qwen_vae() -> torch.nn.Module:
    from diffusers import AutoencoderKLQwenImage

    torch.manual_seed(0)
    return AutoencoderKLQwenImage(base_dim=24, z_dim=4, dim_mult=[1, 2, 4], num_res_blocks=1,
                                  temperal_downsample=[False, True], latents_mean=[0.0] * 4, latents_std=[1.0] * 4).eval()


def _qwen(cls_name: str, controlnet: bool = False) -> Callable[[], Any]:
    def build() -> Any:
        from diffusers import FlowMatchEulerDiscreteScheduler, QwenImageControlNetModel, QwenImageTransformer2DModel

        cfg = dict(patch_size=2, in_channels=16, out_channels=4, num_layers=3, attention_head_dim=16,
                   num_attention_heads=2, joint_attention_dim=_TEXT_DIM, axes_dims_rope=(8, 4, 4))
        torch.manual_seed(0)
        extra = {}
        transformer = QwenImageTransformer2DModel(guidance_embeds=False, **cfg).eval()
        if controlnet:
            torch.manual_seed(1)
            extra["controlnet"] = QwenImageControlNetModel(**{**cfg, "num_layers": 1}, extra_condition_channels=(
                4 if "Inpaint" in cls_name else 0))
            extra["controlnet"] = _live(extra["controlnet"].eval(), 1)
        return _assemble(cls_name, transformer=transformer, vae=_qwen_vae(),
                         scheduler=FlowMatchEulerDiscreteScheduler(), **extra)
    return build


# -------------------------------------------------------------------------------------- Z-Image
def _zimage(cls_name: str, controlnet: bool = False) -> Callable[[], Any]:
    def build() -> Any:
        from diffusers import FlowMatchEulerDiscreteScheduler, ZImageControlNetModel, ZImageTransformer2DModel

        torch.manual_seed(0)
        transformer = ZImageTransformer2DModel(
            all_patch_size=(2,), all_f_patch_size=(1,), in_channels=16, dim=16, n_layers=3, n_refiner_layers=1,
            n_heads=1, n_kv_heads=1, cap_feat_dim=_TEXT_DIM, axes_dims=[8, 4, 4], axes_lens=[256, 32, 32],
            rope_theta=256.0, t_scale=1000.0, qk_norm=True,
        ).eval()
        extra = {}
        if controlnet:
            torch.manual_seed(1)
            model = ZImageControlNetModel(control_layers_places=[0, 2], control_refiner_layers_places=[0],
                                          control_in_dim=16, dim=16, n_refiner_layers=1, n_heads=1, n_kv_heads=1)
            extra["controlnet"] = _live(ZImageControlNetModel.from_transformer(model, transformer).eval(), 1)
        return _assemble(cls_name, transformer=transformer, vae=_tiny_vae(16),
                         scheduler=FlowMatchEulerDiscreteScheduler(), **extra)
    return build


# ---------------------------------------------------------------------------------------- Sana
def _sana_controlnet() -> Any:
    from diffusers import DPMSolverMultistepScheduler, SanaControlNetModel

    from .testing import _tiny_dc_ae, tiny_transformer

    torch.manual_seed(1)
    controlnet = SanaControlNetModel(
        in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=8, num_layers=1,
        num_cross_attention_heads=2, cross_attention_head_dim=8, cross_attention_dim=16, caption_channels=_TEXT_DIM,
        sample_size=8, patch_size=1,
    )
    controlnet = _live(controlnet.eval(), 1)
    return _assemble("SanaControlNetPipeline", transformer=tiny_transformer("sana"), vae=_tiny_dc_ae(0),
                     controlnet=controlnet, scheduler=DPMSolverMultistepScheduler())


# ------------------------------------------------------------------------------------ CogVideoX
def _cogvideox(cls_name: str, in_channels: int = 4) -> Callable[[], Any]:
    def build() -> Any:
        import diffusers as d

        from .testing import tiny_cogvideox_vae

        torch.manual_seed(0)
        transformer = d.CogVideoXTransformer3DModel(
            num_attention_heads=2, attention_head_dim=16, in_channels=in_channels, out_channels=4, time_embed_dim=2,
            text_embed_dim=_TEXT_DIM, num_layers=3, sample_width=2, sample_height=2, sample_frames=5, patch_size=2,
            temporal_compression_ratio=4, max_text_seq_length=_TEXT_LEN, use_rotary_positional_embeddings=True,
        ).eval()
        vae = tiny_cogvideox_vae()
        return _assemble(cls_name, transformer=transformer, vae=vae, scheduler=d.CogVideoXDDIMScheduler())
    return build


# ------------------------------------------------------------------------------------------ Wan
def _wan(cls_name: str, in_channels: int = 16, two_experts: bool = False) -> Callable[[], Any]:
    def build() -> Any:
        import diffusers as d

        def expert(s: int) -> torch.nn.Module:
            torch.manual_seed(s)
            return d.WanTransformer3DModel(
                patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=in_channels,
                out_channels=16, text_dim=_TEXT_DIM, freq_dim=256, ffn_dim=32, num_layers=3, cross_attn_norm=True,
                qk_norm="rms_norm_across_heads", rope_max_seq_len=32,
            ).eval()

        torch.manual_seed(0)
        vae = d.AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                                 temperal_downsample=[False, True, True]).eval()
        scheduler = d.UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)
        extra = dict(transformer_2=expert(1), boundary_ratio=0.5) if two_experts else {}
        return _assemble(cls_name, transformer=expert(0), vae=vae, scheduler=scheduler, **extra)
    return build


def _ltx(cls_name: str) -> Callable[[], Any]:
    def build() -> Any:
        import diffusers as d

        torch.manual_seed(0)
        vae = d.AutoencoderKLLTXVideo(
            in_channels=3, out_channels=3, latent_channels=8, block_out_channels=(8, 8, 8, 8),
            decoder_block_out_channels=(8, 8, 8, 8), layers_per_block=(1, 1, 1, 1, 1),
            decoder_layers_per_block=(1, 1, 1, 1, 1), spatio_temporal_scaling=(True, True, False, False),
            decoder_spatio_temporal_scaling=(True, True, False, False), decoder_inject_noise=(False,) * 5,
            upsample_residual=(False,) * 4, upsample_factor=(1,) * 4, timestep_conditioning=False, patch_size=1,
            patch_size_t=1, encoder_causal=True, decoder_causal=False,
        ).eval()
        torch.manual_seed(0)
        transformer = d.LTXVideoTransformer3DModel(
            in_channels=8, out_channels=8, patch_size=1, patch_size_t=1, num_attention_heads=2, attention_head_dim=8,
            cross_attention_dim=16, num_layers=3, caption_channels=_TEXT_DIM,
        ).eval()
        return _assemble(cls_name, transformer=transformer, vae=vae, scheduler=d.FlowMatchEulerDiscreteScheduler())
    return build


_SD3_TOKENS = ("tome", "toca")
_VIDEO_TOKENS = ("toca",)

CASES += [
    PipelineCase("StableDiffusion3Img2ImgPipeline", "img2img", "SD3", _sd3("StableDiffusion3Img2ImgPipeline"),
                 _inputs("sd3", "image", "strength"), _SD3_TOKENS),
    PipelineCase("StableDiffusion3InpaintPipeline", "inpaint", "SD3", _sd3("StableDiffusion3InpaintPipeline", in_channels=33, latent=16),
                 _inputs("sd3", "image", "mask_image", "strength"), _SD3_TOKENS),
    PipelineCase("StableDiffusion3ControlNetPipeline", "control", "SD3",
                 _sd3("StableDiffusion3ControlNetPipeline", controlnet=True), _inputs("sd3", "control_image"),
                 _SD3_TOKENS, controlled=True),
    PipelineCase("StableDiffusion3ControlNetInpaintingPipeline", "control", "SD3",
                 _sd3("StableDiffusion3ControlNetInpaintingPipeline", controlnet=True, extra_conditioning=1),
                 _inputs("sd3", "control_image", "control_mask"), _SD3_TOKENS, controlled=True),
    PipelineCase("StableDiffusion3PAGImg2ImgPipeline", "img2img", "SD3", _sd3("StableDiffusion3PAGImg2ImgPipeline"),
                 _inputs("sd3", "image", "strength"), _SD3_TOKENS),
    PipelineCase("ChromaImg2ImgPipeline", "img2img", "Chroma", _chroma("ChromaImg2ImgPipeline"),
                 _inputs("masked", "image", "strength")),
    PipelineCase("QwenImageImg2ImgPipeline", "img2img", "Qwen-Image", _qwen("QwenImageImg2ImgPipeline"),
                 _inputs("qwen", "image", "strength", size=32)),
    PipelineCase("QwenImageInpaintPipeline", "inpaint", "Qwen-Image", _qwen("QwenImageInpaintPipeline"),
                 _inputs("qwen", "image", "mask_image", "strength", size=32)),
    PipelineCase("QwenImageControlNetPipeline", "control", "Qwen-Image",
                 _qwen("QwenImageControlNetPipeline", controlnet=True), _inputs("qwen", "control_image", size=32),
                 controlled=True),
    PipelineCase("QwenImageControlNetInpaintPipeline", "control", "Qwen-Image",
                 _qwen("QwenImageControlNetInpaintPipeline", controlnet=True),
                 _inputs("qwen", "control_image", "control_mask", size=32), controlled=True),
    PipelineCase("ZImageImg2ImgPipeline", "img2img", "Z-Image", _zimage("ZImageImg2ImgPipeline"),
                 _inputs("z-image", "image", "strength", size=32)),
    PipelineCase("ZImageInpaintPipeline", "inpaint", "Z-Image", _zimage("ZImageInpaintPipeline"),
                 _inputs("z-image", "image", "mask_image", "strength", size=32)),
    PipelineCase("ZImageControlNetPipeline", "control", "Z-Image", _zimage("ZImageControlNetPipeline", controlnet=True),
                 _inputs("z-image", "control_image", size=32), controlled=True),
    PipelineCase("SanaControlNetPipeline", "control", "Sana", _sana_controlnet,
                 _inputs("masked", "control_image", "no_binning", size=64), controlled=True),
    PipelineCase("CogVideoXImageToVideoPipeline", "image-to-video", "CogVideoX",
                 _cogvideox("CogVideoXImageToVideoPipeline", in_channels=8), _inputs("video", "image", "num_frames", frames=5),
                 _VIDEO_TOKENS),
    PipelineCase("CogVideoXVideoToVideoPipeline", "video-to-video", "CogVideoX",
                 _cogvideox("CogVideoXVideoToVideoPipeline"), _inputs("video", "video", "strength", frames=5),
                 _VIDEO_TOKENS),
    PipelineCase("CogVideoXFunControlPipeline", "control", "CogVideoX",
                 _cogvideox("CogVideoXFunControlPipeline", in_channels=8), _inputs("video", "control_video", frames=5),
                 _VIDEO_TOKENS),
    PipelineCase("WanImageToVideoPipeline", "image-to-video", "Wan",
                 _wan("WanImageToVideoPipeline", in_channels=36, two_experts=True), _inputs("video", "image", "num_frames", frames=5),
                 note="toca saved no FLOPs on this two-expert (Wan 2.2) split at 10 steps; not yet investigated"),
    PipelineCase("LTXImageToVideoPipeline", "image-to-video", "LTX", _ltx("LTXImageToVideoPipeline"),
                 _inputs("masked", "image", "num_frames", size=32, frames=9), _VIDEO_TOKENS),
    PipelineCase("LTXConditionPipeline", "video-to-video", "LTX", _ltx("LTXConditionPipeline"),
                 _inputs("masked", "video", "num_frames", size=32, frames=9),
                 note="toca fails: this pipeline calls the transformer with video_coords, not num_frames / height / "
                      "width, so the LTX token grid is unread (KeyError in families' _grid_ltx); not fixed yet"),
    PipelineCase("WanVideoToVideoPipeline", "video-to-video", "Wan", _wan("WanVideoToVideoPipeline"),
                 _inputs("video", "video", "strength", frames=5), _VIDEO_TOKENS),
]


def case(name: str) -> PipelineCase:
    """The declared case of diffusers pipeline class `name`."""
    for c in CASES:
        if c.pipeline == name:
            return c
    raise KeyError(f"no pipeline case {name!r}")


_RESIDUALS = """\
## What the caches do with inputs that change between steps

- **Masked / concatenated latents** (inpaint, Fill, Control, image-to-video's first frame) enter
  through the transformer's input projection, before the first block: a skipped run adds its
  stored offset to this step's fresh input, so they reach every step.
- **Control residuals added between blocks** (ControlNet: Flux double and single blocks, SD3,
  Qwen-Image, Sana, Z-Image): every computed step adds this step's residuals at every block. A
  skipped run's stored offset includes the residuals added *inside* the run at the step it was
  computed (block contribution and residual stay consistent); on a reused step the residual the
  control model computes now is added only where the pipeline adds it after the run's last block.
  All four block caches (delta-, interval-, residual-, schedule-cache) share this. Adding the fresh
  residuals inside the run too (offset of the blocks alone) was tried and measured on this table:
  Flux ControlNet 43-49 dB instead of 49-65, SD3 ControlNet interval / schedule 37-39 instead of
  51-52, Qwen-Image interval / schedule 51-53 instead of 61-62, Sana 47-61 instead of 36-53 (random
  tiny control models); kept as it is until a real control model says otherwise.
- **Reference-image tokens** (Flux Kontext): the offset covers the whole sequence, reference
  tokens included, and is recomputed whenever the sequence length changes. toca recomputes a
  subset of tokens in place and never mixes positions; tome refuses in one line (it would merge
  reference tokens into generated ones).
- **Partial schedules** (img2img / inpaint / video-to-video `strength`): caches plan for the steps
  the call executes (strength 0.8 of 10 steps: 8), read from the scheduler's begin index or, where
  a pipeline cuts the schedule without it (CogVideoX, Wan video-to-video), from where the first
  timestep sits in the schedule. schedule-cache needs a calibration made on the same kind of call;
  without one it stops with one line naming `calibrate_schedule` (tests/test_pipeline_requests.py).

## Compile

`torch.compile(pipe.transformer)`, `pipe.transformer.compile()` and diffusers'
`compile_repeated_blocks()` put accel's per-step hook decisions inside the compiled code (Dynamo
recompiles at each step, then runs uncompiled past its limit). accel refuses them in one line,
at `accel.apply` or at the first call after, naming what to call instead: `accel.compile(pipe)`
(tests/test_pipeline_compile.py).
"""


def docs_page() -> str:
    """docs/pipelines.md: every tested pipeline class x method, from `CASES` (scripts/pipelines_table.py)."""
    families = sorted({c.family for c in CASES})
    lines = [
        "# Pipelines beside text-to-image",
        "",
        "<!-- generated by scripts/pipelines_table.py from accel/testing_pipelines.py; do not edit -->",
        "",
        f"tests/test_pipeline_matrix.py runs {len(CASES)} diffusers pipeline classes in {len(families)} families "
        "(tiny random-init transformers, VAEs and control models; prompts as embeddings) with every method "
        "listed. Each run must save work, give a finite output of the uncached shape, keep the PSNR floor "
        "below to the same pipeline's uncached output, and `.remove()` must restore the pipeline bit for "
        "bit; control pipelines must stay closer to the controlled image than to the uncontrolled one.",
        "",
        "Floors (dB): " + ", ".join(f"{m} {v:g}" for m, v in PSNR_FLOOR_DB.items()) + ".",
        "Settings other than the defaults: "
        + "; ".join(f"{m} {', '.join(f'{k}={v}' for k, v in kw.items())}" for m, kw in SETTINGS.items())
        + " (at 8 steps of a random tiny model the default threshold reuses no step, and says so).",
        "",
        "| kind | " + " | ".join(families) + " |",
        "|---|" + "---|" * len(families),
    ]
    for kind in KINDS:
        counts = [sum(c.kind == kind and c.family == f for c in CASES) for f in families]
        lines.append(f"| {kind} | " + " | ".join(str(n) if n else "" for n in counts) + " |")
    lines += ["", "| pipeline | kind | family | tested with | refused (one line) | note |", "|---|---|---|---|---|---|"]
    for c in sorted(CASES, key=lambda c: (KINDS.index(c.kind), c.family, c.pipeline)):
        refused = ", ".join(m for m, _ in c.refused)
        lines.append(f"| {c.pipeline} | {c.kind} | {c.family} | {', '.join(c.methods)} | {refused} | {c.note} |")
    return "\n".join(lines) + "\n\n" + _RESIDUALS
