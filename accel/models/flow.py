"""The second embedded model: a tiny text-to-image rectified-flow MMDiT on 32x32 digits.

It is the STOCK ``diffusers.StableDiffusion3Pipeline`` (no subclass) around

* a small ``SD3Transformer2DModel`` (12 joint blocks, width 64, 1 pixel channel,
  32x32 pixels with patch 2 -> 256 image tokens; velocity prediction);
* two tiny ``CLIPTextModelWithProjection`` encoders and a word-level tokenizer built
  offline (no download), trained jointly with the transformer and then frozen;
  ``text_encoder_3`` / ``tokenizer_3`` are ``None`` (the pipeline then pads the text with
  a block of zeros of length ``max_sequence_length``);
* a pixel-space identity "VAE" (:class:`FlowIdentityVAE`) and ``FlowMatchEulerDiscreteScheduler``.

Prompts name a digit ("a handwritten seven", "the digit 7, bold"; see :func:`digit_prompt`).
Everything ships in ``accel/models/weights_flow/`` in ``save_pretrained`` layout
(safetensors + JSON, no pickle) with a ``flow.json`` manifest of sha256 hashes, and is
reproduced by ``scripts/train_flow_model.py``. See ``weights_flow/MODEL_CARD.md``.

The model was trained with zero "T5" blocks of length 6 (mostly), 256 (the stock default) and
in between, so a plain ``pipe(prompt)`` works; accel calls it with
``max_sequence_length=FLOW_SAMPLER["max_sequence_length"]`` (6: 16 text tokens, not 266, so
about twice as fast). :func:`flow_call_kwargs` gives the default sampler as keyword arguments.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin

from accel.models.default import IdentityCodec
from accel.outputs import sha256_file
from accel.quiet import hf_quiet
from accel.readers import ReadError, read_json

if TYPE_CHECKING:  # importing the pipeline class imports transformers: only where a pipeline is built
    from diffusers import StableDiffusion3Pipeline

WEIGHTS_FLOW_DIR = Path(__file__).resolve().parent / "weights_flow"
MANIFEST_FILE = "flow.json"
TRAIN_FLOW_CMD = "python scripts/train_flow_model.py --out accel/models/weights_flow"

NUM_CLASSES = 10
TOKENIZER_MAX_LENGTH = 10  # CLIP tokens per prompt (BOS + up to 8 words + EOS, padded)
T5_ZERO_TOKENS = 6  # the zero block the pipeline appends when text_encoder_3 is None
# Training draws the zero block's length per batch (mostly T5_ZERO_TOKENS, sometimes the stock
# default 256 or anything between), so a plain `pipe(prompt)` call works as well as the fast one.
STOCK_MAX_SEQUENCE_LENGTH = 256

TRANSFORMER_CONFIG: dict[str, Any] = {
    "sample_size": 32,
    "patch_size": 2,
    "in_channels": 1,
    "out_channels": 1,
    "num_layers": 12,
    "attention_head_dim": 32,
    "num_attention_heads": 2,
    "joint_attention_dim": 64,  # = 2 x CLIP hidden size (32): the two encoders side by side
    "caption_projection_dim": 64,
    "pooled_projection_dim": 64,  # = 2 x CLIP projection dim (32)
    "pos_embed_max_size": 16,
    "qk_norm": "rms_norm",
}

SCHEDULER_CONFIG: dict[str, Any] = {"num_train_timesteps": 1000, "shift": 1.0}

NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
# Prompt templates; {w} is the number word, {d} the numeral. Each fits TOKENIZER_MAX_LENGTH.
PROMPT_TEMPLATES = (
    "a handwritten {w}",
    "the digit {d}",
    "the digit {d}, bold",
    "number {w}",
    "the number {d}",
    "a {w}",
    "{d}",
    "digit {w}",
    "a handwritten digit {d}",
    "a drawing of a {w}",
    "the digit {w}, thin",
    "{w}",
)
EXTRA_WORDS = ("small", "large", "written", "image", "picture", "of", "an", "black", "white")
PAD, BOS, UNK, EOS = "[PAD]", "[BOS]", "[UNK]", "[EOS]"

# Default sampler, chosen by measurement (benchmarks/flow_model_quality.py, MODEL_CARD.md).
FLOW_SAMPLER: dict[str, Any] = {
    "scheduler": "flow-euler",
    "steps": 28,
    "shift": 1.0,
    "guidance_scale": 1.5,
    "max_sequence_length": T5_ZERO_TOKENS,
}
# The few-step second workload.
FLOW_FEW_STEP_SAMPLER: dict[str, Any] = {**FLOW_SAMPLER, "steps": 8}
# `accel bench --model flow` without --steps runs the few-step workload, so that the no-flag run
# (baseline + every method, 200 images, CFG) fits 10 minutes on 2 CPU cores; --steps 28 is the
# default sampler (the default model's bench does the same: 20 of its 50 steps).
FLOW_BENCH_STEPS = FLOW_FEW_STEP_SAMPLER["steps"]


# ----------------------------------------------------------------------------- prompts
def digit_prompt(digit: int, template: int = 0) -> str:
    """Prompt ``template`` (index into :data:`PROMPT_TEMPLATES`) for ``digit`` (0..9)."""
    t = PROMPT_TEMPLATES[template % len(PROMPT_TEMPLATES)]
    return t.format(w=NUMBER_WORDS[digit], d=digit)


def digit_prompts(labels, seed: int = 0) -> list[str]:
    """One prompt per label, templates drawn reproducibly (``random.Random(seed)``)."""
    rng = random.Random(seed)
    return [digit_prompt(int(y), rng.randrange(len(PROMPT_TEMPLATES))) for y in labels]


def flow_prompts() -> list[str]:
    """The flow model's own prompts (bench and calibration): one per digit, image i asks for i % 10."""
    return [digit_prompt(d) for d in range(10)]


def prompt_vocabulary() -> list[str]:
    words = {PAD: 0, BOS: 1, UNK: 2, EOS: 3}
    vocab = list(words)
    for t in PROMPT_TEMPLATES:
        for d in range(NUM_CLASSES):
            for tok in t.replace(",", " , ").format(w=NUMBER_WORDS[d], d=d).split():
                if tok not in vocab:
                    vocab.append(tok)
    vocab += [w for w in EXTRA_WORDS if w not in vocab]
    return vocab


def build_tokenizer(max_length: int = TOKENIZER_MAX_LENGTH):
    """A word-level ``PreTrainedTokenizerFast`` (lower-case, whitespace/punctuation split), built offline."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(prompt_vocabulary())}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A {EOS}", special_tokens=[(BOS, vocab[BOS]), (EOS, vocab[EOS])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=EOS, unk_token=UNK, pad_token=PAD,
        model_max_length=max_length, padding_side="right",
    )


def text_encoder_config(vocab_size: int, max_length: int = TOKENIZER_MAX_LENGTH):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=vocab_size, hidden_size=32, intermediate_size=64, projection_dim=32,
        num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=max_length,
        hidden_act="quick_gelu", pad_token_id=0, bos_token_id=1, eos_token_id=3,
    )


def build_text_encoder(vocab_size: int, seed: int):
    from transformers import CLIPTextModelWithProjection

    torch.manual_seed(seed)
    return CLIPTextModelWithProjection(text_encoder_config(vocab_size))


# ----------------------------------------------------------------------------- identity VAE
class FlowIdentityVAE(IdentityCodec, ModelMixin, ConfigMixin):
    """Pixel-space stand-in for the SD3 VAE: ``decode(z).sample is z``.

    ``block_out_channels`` has one entry so the pipeline's ``vae_scale_factor`` is 1
    (latents are the 32x32 pixels); scaling 1 and shift 0 leave the latents unchanged.
    """

    @register_to_config
    def __init__(self, scaling_factor: float = 1.0, shift_factor: float = 0.0,
                 block_out_channels: tuple[int, ...] = (1,), latent_channels: int = 1):
        super().__init__()
        # one persistent (unused) value, so save_pretrained writes a weights file that
        # StableDiffusion3Pipeline.from_pretrained can load (it refuses a weightless model)
        self.register_buffer("identity", torch.ones(1))


# ----------------------------------------------------------------------------- pipeline
def build_transformer(config: dict[str, Any] | None = None) -> SD3Transformer2DModel:
    """A freshly initialised transformer with the shipped architecture."""
    return SD3Transformer2DModel.from_config(dict(config or TRANSFORMER_CONFIG))


def make_flow_scheduler(shift: float = 1.0) -> FlowMatchEulerDiscreteScheduler:
    return FlowMatchEulerDiscreteScheduler(**{**SCHEDULER_CONFIG, "shift": float(shift)})


def build_flow_pipeline(seed: int = 0) -> StableDiffusion3Pipeline:
    """A freshly initialised pipeline (what training starts from)."""
    from diffusers import StableDiffusion3Pipeline

    tokenizer = build_tokenizer()
    torch.manual_seed(seed)
    transformer = build_transformer()
    pipe = StableDiffusion3Pipeline(
        transformer=transformer, scheduler=make_flow_scheduler(), vae=FlowIdentityVAE(),
        text_encoder=build_text_encoder(len(tokenizer), seed + 1), tokenizer=tokenizer,
        text_encoder_2=build_text_encoder(len(tokenizer), seed + 2), tokenizer_2=build_tokenizer(),
        text_encoder_3=None, tokenizer_3=None,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def encode_prompts(pipe: StableDiffusion3Pipeline, prompts: list[str],
                   max_sequence_length: int = T5_ZERO_TOKENS) -> tuple[torch.Tensor, torch.Tensor]:
    """(prompt_embeds, pooled) exactly as the pipeline computes them (gradients flow)."""
    embeds, _, pooled, _ = pipe.encode_prompt(
        prompt=prompts, prompt_2=None, prompt_3=None, do_classifier_free_guidance=False,
        max_sequence_length=max_sequence_length, device=pipe.transformer.device,
    )
    return embeds, pooled


def flow_call_kwargs(sampler: dict[str, Any] | None = None) -> dict[str, Any]:
    """Pipeline keyword arguments of a sampler dict (default :data:`FLOW_SAMPLER`)."""
    s = {**FLOW_SAMPLER, **(sampler or {})}
    return {"num_inference_steps": int(s["steps"]), "guidance_scale": float(s["guidance_scale"]),
            "max_sequence_length": int(s["max_sequence_length"]), "height": 32, "width": 32}



def _portable_tokenizer_names(out: Path) -> None:
    """transformers 5 saves the tokenizer class as ``TokenizersBackend``, which transformers 4 lacks;
    ``PreTrainedTokenizerFast`` names the same class in 5 (an alias) and the fast tokenizer in 4."""
    for f in [out / "model_index.json", *out.glob("tokenizer*/tokenizer_config.json")]:
        doc = read_json(f, finite=False)  # files diffusers / transformers just wrote
        for k, v in doc.items():
            if v == "TokenizersBackend":
                doc[k] = "PreTrainedTokenizerFast"
            elif v == ["transformers", "TokenizersBackend"]:
                doc[k] = ["transformers", "PreTrainedTokenizerFast"]
        f.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")


def save_flow_pipeline(pipe: StableDiffusion3Pipeline, out: Path, training: dict[str, Any]) -> None:
    """Write ``pipe`` in ``save_pretrained`` layout plus the ``flow.json`` sha256 manifest (last)."""
    out = Path(out)
    pipe.save_pretrained(str(out), safe_serialization=True)
    _portable_tokenizer_names(out)
    parts = [out / "model_index.json", *(p for p in out.glob("*/*") if p.is_file())]
    hashes = {str(p.relative_to(out)): sha256_file(p) for p in sorted(parts)}
    doc = {"format": "accel-flow-model/1", "files": hashes, "sampler": FLOW_SAMPLER, "training": training}
    tmp = out / (MANIFEST_FILE + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    tmp.replace(out / MANIFEST_FILE)


def _manifest(wdir: Path) -> dict[str, Any]:
    path = wdir / MANIFEST_FILE
    if not path.is_file():
        raise FileNotFoundError(f"flow-model file missing: {path}. Regenerate it with `{TRAIN_FLOW_CMD}` "
                                "(or reinstall accel).")
    try:
        doc = read_json(path)
        files = doc["files"]
        assert isinstance(files, dict) and files
    except (ValueError, KeyError, TypeError, AssertionError) as exc:  # ReadError is a ValueError
        why = exc.problem if isinstance(exc, ReadError) else type(exc).__name__
        raise ValueError(f"flow-model manifest {path} is corrupted ({why}). "
                         f"Regenerate it with `{TRAIN_FLOW_CMD}`.") from None
    return doc


def verify_flow_weights(weights_dir: str | Path | None = None) -> dict[str, Any]:
    """The ``flow.json`` manifest after checking every file it names against its sha256."""
    wdir = Path(weights_dir) if weights_dir is not None else WEIGHTS_FLOW_DIR
    doc = _manifest(wdir)
    for name, digest in doc["files"].items():
        f = wdir / name
        if not f.is_file():
            raise FileNotFoundError(f"flow-model file missing: {f}. Regenerate it with `{TRAIN_FLOW_CMD}` "
                                    "(or reinstall accel).")
        if sha256_file(f) != digest:
            raise ValueError(f"flow-model file {f} is corrupted (sha256 mismatch with {MANIFEST_FILE}). "
                             f"Regenerate it with `{TRAIN_FLOW_CMD}`.")
    return doc


def load_flow_pipeline(
    shift: float | None = None,
    device="cpu",
    dtype=torch.float32,
    weights_dir: str | Path | None = None,
) -> StableDiffusion3Pipeline:
    """The embedded flow model as a stock ``diffusers.StableDiffusion3Pipeline`` (pixel space).

    Every shipped file is checked against the sha256 in ``weights_flow/flow.json`` first
    (a missing or corrupt file raises, naming the file and the training command).
    ``shift``: the FlowMatchEuler shift (default ``FLOW_SAMPLER["shift"]``). Prompts name a
    digit (:func:`digit_prompt`); call it with the default sampler's arguments::

        pipe = load_flow_pipeline()
        images = pipe(["a handwritten seven"], output_type="np", **flow_call_kwargs()).images

    which returns (N, 32, 32, 1) images in [0, 1]. Text encoders are frozen (eval mode).
    """
    from diffusers import StableDiffusion3Pipeline

    import accel.models.flow as _this  # noqa: F401  (diffusers loads FlowIdentityVAE from this module)

    wdir = Path(weights_dir) if weights_dir is not None else WEIGHTS_FLOW_DIR
    verify_flow_weights(wdir)
    with hf_quiet():  # no loading bars, no "Expected types for vae: AutoencoderKL" (the identity VAE is on purpose)
        try:
            pipe = StableDiffusion3Pipeline.from_pretrained(
                str(wdir), local_files_only=True, dtype=dtype, text_encoder_3=None, tokenizer_3=None
            )
        except (OSError, ValueError, RuntimeError, KeyError) as exc:
            raise ValueError(f"flow-model weights in {wdir} could not be loaded ({exc}). "
                             f"Regenerate them with `{TRAIN_FLOW_CMD}`.") from exc
    pipe.scheduler = make_flow_scheduler(FLOW_SAMPLER["shift"] if shift is None else shift)
    for m in (pipe.transformer, pipe.text_encoder, pipe.text_encoder_2):
        m.requires_grad_(False).eval()
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)
