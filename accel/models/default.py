"""The embedded default model: a tiny class-conditional DiT on 32x32 digits, in pixel space.

Everything needed ships in ``accel/models/weights/`` as safetensors + JSON (no pickle):

* ``generator.safetensors`` / ``generator.json`` – a stock ``diffusers.DiTTransformer2DModel``
  (1 channel, 32x32, patch 2 -> 256 tokens, 12 layers, width 64), EMA weights,
  trained by ``scripts/train_default_model.py``;
* ``classifier.safetensors`` / ``classifier.json`` – a small CNN digit classifier whose
  penultimate pre-activation features define FD-digits;
* ``reference_stats.safetensors`` – float64 mean/covariance of those features on the
  400 held-out digits, both written by ``scripts/train_digits_classifier.py``.

The generator runs in the STOCK ``diffusers.DiTPipeline`` through an identity "VAE".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DiTPipeline,
    DiTTransformer2DModel,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
)
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput

from ..outputs import sha256_file
from ..readers import ReadError, read_json, read_safetensors

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"

GENERATOR_WEIGHTS = "generator.safetensors"
GENERATOR_CONFIG_FILE = "generator.json"
CLASSIFIER_WEIGHTS = "classifier.safetensors"
CLASSIFIER_CONFIG_FILE = "classifier.json"
REFERENCE_STATS = "reference_stats.safetensors"

TRAIN_GENERATOR_CMD = (
    "python scripts/train_default_model.py --out accel/models/weights"
)
TRAIN_CLASSIFIER_CMD = (
    "python scripts/train_digits_classifier.py --out accel/models/weights"
)

NUM_CLASSES = 10
NULL_CLASS = 1000  # stock DiTPipeline hard-codes class 1000 as the unconditional label

# Architecture of the shipped generator (stock DiTTransformer2DModel arguments).
GENERATOR_CONFIG: dict[str, Any] = {
    "num_attention_heads": 2,
    "attention_head_dim": 32,
    "in_channels": 1,
    "out_channels": 1,
    "num_layers": 12,
    "dropout": 0.0,
    "norm_num_groups": 32,
    "attention_bias": True,
    "sample_size": 32,
    "patch_size": 2,
    "activation_fn": "gelu-approximate",
    "num_embeds_ada_norm": 1000,
    "upcast_attention": False,
    "norm_type": "ada_norm_zero",
    "norm_elementwise_affine": False,
    "norm_eps": 1e-5,
}

# Noise schedule used for training (and shared by every inference scheduler).
TRAIN_SCHEDULER_CONFIG: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_schedule": "linear",
    "beta_start": 0.0001,
    "beta_end": 0.02,
    "prediction_type": "epsilon",
    "clip_sample": False,
}

ID2LABEL = {i: str(i) for i in range(NUM_CLASSES)}

# the schedulers built on the model's noise schedule (the same names as accel.pipelines.loader.SCHEDULER_CLASSES,
# which swaps them on any pipeline; these carry the settings the digits model was measured with)
SCHEDULERS = ("dpm++", "ddim", "ddpm", "euler")

# Chosen by FD-digits (benchmarks/default_model_quality.py), see weights/MODEL_CARD.md.
DEFAULT_SAMPLER: dict[str, Any] = {"scheduler": "dpm++", "steps": 50, "guidance_scale": 2.0}


# ----------------------------------------------------------------------------- helpers
def _require(path: Path, regen: str) -> Path:
    if not path.is_file():
        raise FileNotFoundError(
            f"default-model file missing: {path}. Regenerate it with `{regen}` "
            "(or reinstall accel)."
        )
    return path


def _read_json(path: Path, regen: str) -> dict:
    _require(path, regen)
    try:
        return read_json(path)
    except ReadError as exc:
        raise ValueError(
            f"default-model config {path} is corrupted ({exc.problem}). Regenerate it with `{regen}`."
        ) from None


def _load_safetensors(path: Path, regen: str, sha256: str | None) -> dict[str, torch.Tensor]:
    _require(path, regen)
    if sha256 is not None and sha256_file(path) != sha256:
        raise ValueError(
            f"default-model weights {path} are corrupted (sha256 mismatch with its JSON "
            f"config). Regenerate them with `{regen}`."
        )
    try:
        return read_safetensors(path, finite=True)
    except ReadError as exc:
        raise ValueError(
            f"default-model weights {path} could not be read ({exc.problem}). "
            f"Regenerate them with `{regen}`."
        ) from None


def _load_state(module: nn.Module, state: dict[str, torch.Tensor], path: Path, regen: str):
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ValueError(
            f"default-model weights {path} do not match the architecture ({exc}). "
            f"Regenerate them with `{regen}`."
        ) from exc


# ----------------------------------------------------------------------------- identity VAE
class IdentityVAEOutput(BaseOutput):
    sample: torch.Tensor


class IdentityCodec:
    """encode / decode / forward of a pixel-space VAE stand-in (the embedded models' VAEs share them)."""

    def encode(self, x: torch.Tensor, return_dict: bool = True):
        return IdentityVAEOutput(sample=x) if return_dict else (x,)

    def decode(self, z: torch.Tensor, return_dict: bool = True):
        return IdentityVAEOutput(sample=z) if return_dict else (z,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class IdentityVAE(IdentityCodec, ModelMixin, ConfigMixin):
    """Pixel-space stand-in for the VAE of ``DiTPipeline``: ``decode(z).sample is z``."""

    @register_to_config
    def __init__(self, scaling_factor: float = 1.0):
        super().__init__()
        # an empty buffer so ModelMixin.device/.dtype work without any parameters
        self.register_buffer("_anchor", torch.zeros(0), persistent=False)



# ----------------------------------------------------------------------------- generator
def build_generator(config: dict[str, Any] | None = None) -> DiTTransformer2DModel:
    """A freshly initialised generator with the shipped architecture."""
    return DiTTransformer2DModel.from_config(dict(config or GENERATOR_CONFIG))


def make_scheduler(name: str, scheduler_config: dict[str, Any] | None = None):
    """Inference scheduler ``name`` on the training noise schedule.

    ``"ddim"`` uses ``clip_sample=False``: clipping the early x0 predictions to [-1, 1]
    at every step ruins 50-step sampling of this model (see MODEL_CARD.md).
    """
    cfg = dict(scheduler_config or TRAIN_SCHEDULER_CONFIG)
    base = {
        "num_train_timesteps": cfg["num_train_timesteps"],
        "beta_schedule": cfg["beta_schedule"],
        "beta_start": cfg["beta_start"],
        "beta_end": cfg["beta_end"],
        "prediction_type": cfg.get("prediction_type", "epsilon"),
    }
    key = name.lower()
    if key == "ddim":
        return DDIMScheduler(**base, clip_sample=False, set_alpha_to_one=True)
    if key in ("dpm++", "dpmpp", "dpm", "dpm-solver++"):
        return DPMSolverMultistepScheduler(
            **base, algorithm_type="dpmsolver++", solver_order=2, lower_order_final=True
        )
    if key == "ddpm":
        return DDPMScheduler(**base, clip_sample=False)
    if key == "euler":
        return EulerDiscreteScheduler(**base)
    raise ValueError(f"unknown scheduler {name!r}; choose one of {SCHEDULERS}")


def load_generator(
    weights_dir: str | Path | None = None, device="cpu", dtype=torch.float32
) -> DiTTransformer2DModel:
    wdir = Path(weights_dir) if weights_dir is not None else WEIGHTS_DIR
    meta = _read_json(wdir / GENERATOR_CONFIG_FILE, TRAIN_GENERATOR_CMD)
    try:
        config = meta["transformer"]
    except (KeyError, TypeError) as exc:
        raise ValueError(
            f"default-model config {wdir / GENERATOR_CONFIG_FILE} lacks 'transformer'. "
            f"Regenerate it with `{TRAIN_GENERATOR_CMD}`."
        ) from exc
    state = _load_safetensors(wdir / GENERATOR_WEIGHTS, TRAIN_GENERATOR_CMD, meta.get("sha256"))
    model = build_generator(config)
    _load_state(model, state, wdir / GENERATOR_WEIGHTS, TRAIN_GENERATOR_CMD)
    model = model.to(device)
    if dtype != torch.float32:
        model = model.to(dtype)
    return model.eval()


class DigitsDiTPipeline(DiTPipeline):
    """The stock ``DiTPipeline`` with the embedded model's own sampler defaults.

    ``DiTPipeline`` defaults to guidance 4.0, which collapses each digit class to nearly
    one image; this model's guidance was chosen by FD-digits (2.0, see MODEL_CARD.md).
    Only the defaults of ``__call__`` differ; sampling is ``DiTPipeline``'s own.
    """

    def __call__(
        self,
        class_labels: list[int],
        guidance_scale: float = DEFAULT_SAMPLER["guidance_scale"],
        generator: torch.Generator | list[torch.Generator] | None = None,
        num_inference_steps: int = DEFAULT_SAMPLER["steps"],
        output_type: str | None = "pil",
        return_dict: bool = True,
    ):
        return super().__call__(
            class_labels, guidance_scale=guidance_scale, generator=generator,
            num_inference_steps=num_inference_steps, output_type=output_type, return_dict=return_dict,
        )


def load_default_pipeline(
    scheduler: str | None = None,
    device="cpu",
    dtype=torch.float32,
    weights_dir: str | Path | None = None,
) -> DigitsDiTPipeline:
    """A ``diffusers.DiTPipeline`` (``DigitsDiTPipeline``: the model's own sampler defaults,
    guidance 2.0 and 50 steps) around the shipped generator (pixel space).

    ``scheduler``: one of ``"dpm++"`` (default, ``DEFAULT_SAMPLER``), ``"ddim"``,
    ``"ddpm"``, ``"euler"``. Class labels are 0..9 (``pipe.get_label_ids(["7"])``);
    ``pipe(class_labels, guidance_scale=..., num_inference_steps=..., output_type="np")``
    returns (N, 32, 32, 1) images in [0, 1].
    """
    wdir = Path(weights_dir) if weights_dir is not None else WEIGHTS_DIR
    meta = _read_json(wdir / GENERATOR_CONFIG_FILE, TRAIN_GENERATOR_CMD)
    transformer = load_generator(wdir, device=device, dtype=dtype)
    sched = make_scheduler(scheduler or DEFAULT_SAMPLER["scheduler"], meta.get("scheduler"))
    id2label = {int(k): v for k, v in meta.get("id2label", ID2LABEL).items()}
    pipe = DigitsDiTPipeline(
        transformer=transformer, vae=IdentityVAE(), scheduler=sched, id2label=id2label
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


# ----------------------------------------------------------------------------- classifier
class DigitsClassifier(nn.Module):
    """Small CNN on (N, 1, 32, 32) digits in [-1, 1] (use :func:`to_classifier_input`).

    ``forward`` returns logits (N, 10); ``features`` returns the penultimate
    *pre-activation* features (N, num_features) used for FD-digits.
    """

    def __init__(self, channels: tuple[int, int, int] = (32, 64, 64), num_features: int = 64):
        super().__init__()
        c1, c2, c3 = channels
        self.channels = tuple(channels)
        self.num_features = int(num_features)
        self.conv = nn.Sequential(
            nn.Conv2d(1, c1, 3, padding=1), nn.BatchNorm2d(c1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 3, padding=1), nn.BatchNorm2d(c2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c2, c3, 3, padding=1), nn.BatchNorm2d(c3), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.fc = nn.Linear(c3 * 4 * 4, self.num_features)
        self.dropout = nn.Dropout(0.3)
        self.head = nn.Linear(self.num_features, NUM_CLASSES)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        x = self.conv(images)
        return self.fc(x.flatten(1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(torch.relu(self.features(images))))


def to_classifier_input(images) -> torch.Tensor:
    """Pipeline outputs -> classifier input (N, 1, 32, 32) float32 in [-1, 1].

    Accepts ``DiTPipeline(..., output_type="np")`` arrays (N, 32, 32, 1) in [0, 1],
    torch tensors (N, 1, 32, 32) in [0, 1] (``output_type="pt"``), or a list of PIL images.
    """
    if isinstance(images, list):
        images = np.stack([np.asarray(im, dtype=np.float32) / 255.0 for im in images])
        if images.ndim == 3:
            images = images[..., None]
    if isinstance(images, np.ndarray):
        t = torch.from_numpy(np.ascontiguousarray(images)).to(torch.float32)
        if t.ndim == 3:
            t = t[..., None]
        t = t.permute(0, 3, 1, 2)
    elif isinstance(images, torch.Tensor):
        t = images.to(torch.float32)
        if t.ndim == 3:
            t = t[:, None]
    else:
        raise TypeError(f"unsupported image type {type(images)!r}")
    if t.shape[1] != 1:
        t = t.mean(dim=1, keepdim=True)
    return t.clamp(0, 1) * 2 - 1


def load_digits_classifier(
    device="cpu", weights_dir: str | Path | None = None
) -> DigitsClassifier:
    """The shipped FD-digits classifier, in eval mode. Input: (N, 1, 32, 32) in [-1, 1]."""
    wdir = Path(weights_dir) if weights_dir is not None else WEIGHTS_DIR
    meta = _read_json(wdir / CLASSIFIER_CONFIG_FILE, TRAIN_CLASSIFIER_CMD)
    try:
        model = DigitsClassifier(
            channels=tuple(meta["channels"]), num_features=int(meta["num_features"])
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(
            f"default-model config {wdir / CLASSIFIER_CONFIG_FILE} is invalid ({exc}). "
            f"Regenerate it with `{TRAIN_CLASSIFIER_CMD}`."
        ) from exc
    state = _load_safetensors(
        wdir / CLASSIFIER_WEIGHTS, TRAIN_CLASSIFIER_CMD, meta.get("sha256", {}).get(CLASSIFIER_WEIGHTS)
    )
    _load_state(model, state, wdir / CLASSIFIER_WEIGHTS, TRAIN_CLASSIFIER_CMD)
    return model.to(device).eval()


def load_reference_stats(weights_dir: str | Path | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(mu, sigma) float64 classifier-feature statistics of the 400 held-out digits."""
    wdir = Path(weights_dir) if weights_dir is not None else WEIGHTS_DIR
    sha = None
    cfg_path = wdir / CLASSIFIER_CONFIG_FILE
    if cfg_path.is_file():
        sha = _read_json(cfg_path, TRAIN_CLASSIFIER_CMD).get("sha256", {}).get(REFERENCE_STATS)
    state = _load_safetensors(wdir / REFERENCE_STATS, TRAIN_CLASSIFIER_CMD, sha)
    try:
        mu, sigma = state["mu"], state["sigma"]
    except KeyError as exc:
        raise ValueError(
            f"default-model reference stats {wdir / REFERENCE_STATS} lack {exc}. "
            f"Regenerate them with `{TRAIN_CLASSIFIER_CMD}`."
        ) from exc
    return mu.to(torch.float64), sigma.to(torch.float64)


@torch.no_grad()
def classifier_features(
    classifier: DigitsClassifier, images, batch_size: int = 500
) -> tuple[torch.Tensor, torch.Tensor]:
    """(features float64 (N, D), predicted labels (N,)) of pipeline outputs in [0, 1]."""
    x = to_classifier_input(images)
    dev = next(classifier.parameters()).device
    feats, preds = [], []
    for i in range(0, len(x), batch_size):
        xb = x[i : i + batch_size].to(dev)
        f = classifier.features(xb)
        logits = classifier.head(torch.relu(f))
        feats.append(f.double().cpu())
        preds.append(logits.argmax(1).cpu())
    return torch.cat(feats), torch.cat(preds)


def fd_digits(images, classifier: DigitsClassifier | None = None, reference=None) -> float:
    """FD-digits of pipeline outputs (in [0, 1]) against the held-out reference stats."""
    from accel.eval.fid import feature_stats, frechet_distance

    classifier = classifier or load_digits_classifier()
    mu_r, sigma_r = reference if reference is not None else load_reference_stats()
    feats, _ = classifier_features(classifier, images)
    return frechet_distance(*feature_stats(feats), mu_r, sigma_r)
