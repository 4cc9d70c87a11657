"""The registry table: one `register(Family(...))` entry per supported diffusers transformer class
(59), and the classes of diffusers that have none, with why (`NOT_REGISTERED`)."""

from __future__ import annotations

from typing import Any

from . import grids
from .registry import register
from .types import BlockStack, Family


def _reg(name: str, cls: str, *stacks: BlockStack, **kw: Any) -> None:
    register(Family(name=name, class_name=cls, stacks=stacks, **kw))


S = BlockStack
# -- image, blocks return H ---------------------------------------------------------------------
_reg("dit", "DiTTransformer2DModel",
     S("transformer_blocks", attention_bias=True, keep_blocks=(0,), attention_kv_arg="encoder_hidden_states"),
     token_grid=grids.from_latents)
_reg("pixart", "PixArtTransformer2DModel",
     S("transformer_blocks", cross_attention="attn2", attention_bias=True, attention_kv_arg="encoder_hidden_states"),
     token_grid=grids.from_latents)
_reg("sana", "SanaTransformer2DModel",
     S("transformer_blocks", cross_attention="attn2", tokenwise_mlp=False, attention_kv_arg="encoder_hidden_states"),
     token_grid=grids.from_latents)
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
     token_grid=grids.from_latents)
_reg("qwen-image", "QwenImageTransformer2DModel", S("transformer_blocks", returns="EH"))
_reg("qwen-image21", "QwenImage21Transformer2DModel", S("transformer_blocks"))  # one joint [text, image] sequence
_reg("cogview4", "CogView4Transformer2DModel", S("transformer_blocks", returns="HE"))  # ff runs twice a block
_reg("cogview3plus", "CogView3PlusTransformer2DModel", S("transformer_blocks", returns="HE"),
     token_grid=grids.from_latents)
_reg("glm-image", "GlmImageTransformer2DModel", S("transformer_blocks", returns="HE"))
_reg("joyimage-edit", "JoyImageEditTransformer3DModel", S("double_blocks", returns="HE"))
_reg("joyimage-edit-plus", "JoyImageEditPlusTransformer3DModel", S("double_blocks", returns="HE"))
# -- image, dual stream + single stream ---------------------------------------------------------
_FLUX_DOUBLE = S("transformer_blocks", returns="EH", attention="attn", rotary_arg="image_rotary_emb")
_FLUX_SINGLE = S("single_transformer_blocks", returns="EH", attention="attn", norm="norm", mlp="proj_mlp",
                 text_prefix=True, rotary_arg="image_rotary_emb", config_key="num_single_layers")
for _name, _cls in (("flux", "FluxTransformer2DModel"), ("bria", "BriaTransformer2DModel"),
                    ("longcat-image", "LongCatImageTransformer2DModel"), ("ovis-image", "OvisImageTransformer2DModel")):
    _reg(_name, _cls, _FLUX_DOUBLE, _FLUX_SINGLE, token_grid=grids.from_img_ids)
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
    _reg(_name, _cls, S("blocks", **_WAN), token_grid=grids.video(frame_axis=2), media="video")
for _name, _cls in (("helios", "HeliosTransformer3DModel"), ("anyflow", "AnyFlowTransformer3DModel")):
    _reg(_name, _cls, S("blocks"), media="video")  # history / flow tokens share the sequence with the video
_reg("wan-vace", "WanVACETransformer3DModel", S("blocks", config_key=None, **_WAN),  # vace_layers index the blocks
     fixed=("vace_blocks",), token_grid=grids.video(frame_axis=2), media="video")
_reg("wan-animate", "WanAnimateTransformer3DModel", S("blocks", config_key=None),  # face adapter every k blocks
     fixed=("face_adapter",), media="video")
_reg("cosmos", "CosmosTransformer3DModel", S("transformer_blocks"), media="video")
_reg("ltx-video", "LTXVideoTransformer3DModel",
     S("transformer_blocks", cross_attention="attn2", rotary_arg="image_rotary_emb", rotary_text=False),
     token_grid=grids.ltx, media="video")
_reg("allegro", "AllegroTransformer3DModel", S("transformer_blocks"), media="video")
_reg("sana-video", "SanaVideoTransformer3DModel", S("transformer_blocks", tokenwise_mlp=False), media="video")
_reg("minimax-h3", "MiniMaxH3Transformer3DModel", S("transformer_blocks"), media="video")
_reg("latte", "LatteTransformer3DModel",  # spatial blocks (per frame); temporal blocks always run
     S("transformer_blocks", cross_attention="attn2", config_key=None), fixed=("temporal_transformer_blocks",),
     token_grid=grids.from_latents, media="video")
# -- video, blocks return (H, E) ----------------------------------------------------------------
_reg("cogvideox", "CogVideoXTransformer3DModel",
     S("transformer_blocks", returns="HE", rotary_arg="image_rotary_emb", rotary_text=False),
     token_grid=grids.video(frame_axis=1), media="video")
_reg("consisid", "ConsisIDTransformer3DModel", S("transformer_blocks", returns="HE", config_key=None),
     fixed=("perceiver_cross_attention",), media="video")  # perceiver blocks interleave at fixed block indices
_reg("mochi", "MochiTransformer3DModel",
     S("transformer_blocks", returns="HE", rotary_arg="image_rotary_emb", rotary_text=False,
       keep_blocks=(-1,)),  # the last block is context_pre_only
     token_grid=grids.video(frame_axis=2), media="video")
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
