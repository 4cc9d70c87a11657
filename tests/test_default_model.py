"""Tests of the embedded default model (tiny digits DiT), the FD-digits classifier and
the training script. Fast: a few seconds of sampling on CPU."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("sklearn")

from accel.eval.fid import feature_stats, frechet_distance  # noqa: E402
from accel.models import (  # noqa: E402
    DEFAULT_SAMPLER,
    WEIGHTS_DIR,
    classifier_features,
    load_default_pipeline,
    load_digits_classifier,
    load_digits_split,
    load_reference_stats,
    to_classifier_input,
)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def classifier():
    return load_digits_classifier()


def _sample(pipe, labels, seed0=0, steps=10, guidance=None):
    gens = [torch.Generator().manual_seed(seed0 + i) for i in range(len(labels))]
    g = DEFAULT_SAMPLER["guidance_scale"] if guidance is None else guidance
    return pipe(labels, guidance_scale=g, generator=gens, num_inference_steps=steps, output_type="np").images


def test_weights_are_small_safetensors():
    files = sorted(WEIGHTS_DIR.glob("*.safetensors"))
    names = {f.name for f in files}
    assert {"generator.safetensors", "classifier.safetensors", "reference_stats.safetensors"} <= names
    assert sum(f.stat().st_size for f in WEIGHTS_DIR.iterdir() if f.is_file()) <= 20 * 2**20


def test_pipeline_is_stock_and_deterministic():
    from diffusers import DiTPipeline, DiTTransformer2DModel

    pipe = load_default_pipeline("ddim")
    # the stock DiTPipeline; the subclass only sets the model's own sampler defaults on __call__
    assert type(pipe).__bases__ == (DiTPipeline,) and type(pipe.transformer) is DiTTransformer2DModel
    assert {k for k, v in vars(type(pipe)).items() if callable(v)} == {"__call__"}
    cfg = pipe.transformer.config
    assert cfg.num_layers >= 12 and cfg.patch_size == 2 and cfg.sample_size == 32
    assert cfg.num_embeds_ada_norm == 1000 and cfg.in_channels == 1
    assert pipe.scheduler.config.clip_sample is False
    assert pipe.get_label_ids(["3", "7"]) == [3, 7]
    a = _sample(pipe, [1, 4], steps=4)
    b = _sample(load_default_pipeline("ddim"), [1, 4], steps=4)
    assert a.shape == (2, 32, 32, 1) and a.dtype == np.float32
    assert 0.0 <= a.min() and a.max() <= 1.0
    np.testing.assert_array_equal(a, b)


def test_quick_sample_class_agreement(classifier):
    pipe = load_default_pipeline(DEFAULT_SAMPLER["scheduler"])
    labels = [c for c in range(10) for _ in range(3)]
    images = _sample(pipe, labels, seed0=123, steps=10)
    _, preds = classifier_features(classifier, images)
    agreement = (preds == torch.tensor(labels)).float().mean().item()
    assert agreement >= 0.8, agreement


def test_classifier_heldout_accuracy_and_features(classifier):
    x, y = load_digits_split("heldout")
    assert x.shape == (400, 1, 32, 32)
    with torch.no_grad():
        acc = (classifier(x).argmax(1) == y).float().mean().item()
        feats = classifier.features(x)
    assert acc >= 0.97
    assert feats.shape == (400, classifier.num_features) and 32 <= classifier.num_features <= 64
    # pre-activation features: no dead (constant) dimensions
    assert (feats.std(0) > 1e-3).all()
    mu, sigma = load_reference_stats()
    assert mu.dtype == torch.float64 and sigma.shape == (classifier.num_features,) * 2
    # held-out images reproduce the shipped reference statistics
    assert frechet_distance(*feature_stats(feats), mu, sigma) < 1e-6
    # the same images as pipeline output (np, [0, 1]) and torch [0, 1] map back to x
    as_np = ((x + 1) / 2).permute(0, 2, 3, 1).numpy()
    torch.testing.assert_close(to_classifier_input(as_np), x)
    torch.testing.assert_close(to_classifier_input((x + 1) / 2), x)


def _copy_weights(tmp_path: Path) -> Path:
    d = tmp_path / "weights"
    shutil.copytree(WEIGHTS_DIR, d, ignore=shutil.ignore_patterns("*.png", "*.md"))
    return d


@pytest.mark.parametrize(
    "fname,loader",
    [
        ("generator.safetensors", lambda d: load_default_pipeline(weights_dir=d)),
        ("generator.json", lambda d: load_default_pipeline(weights_dir=d)),
        ("classifier.safetensors", lambda d: load_digits_classifier(weights_dir=d)),
        ("reference_stats.safetensors", lambda d: load_reference_stats(weights_dir=d)),
    ],
)
def test_missing_or_corrupted_weights_raise_clear_errors(tmp_path, fname, loader):
    d = _copy_weights(tmp_path)
    path = d / fname
    data = path.read_bytes()

    # truncated file
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="scripts/train_") as exc:
        loader(d)
    assert str(path) in str(exc.value)

    # same length, a few bytes flipped in the middle (tensor data or JSON text)
    flipped = bytearray(data)
    mid = len(flipped) // 2
    flipped[mid : mid + 8] = bytes(b ^ 0xFF for b in flipped[mid : mid + 8])
    path.write_bytes(bytes(flipped))
    with pytest.raises(ValueError) as exc:
        loader(d)
    assert str(path) in str(exc.value)

    # missing file
    path.unlink()
    with pytest.raises(FileNotFoundError, match="scripts/train_") as exc:
        loader(d)
    assert str(path) in str(exc.value)


def _load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"_script_{name}", REPO / "scripts" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow
def test_training_script_runs_and_resumes(tmp_path):
    train = _load_script("train_default_model")
    out = tmp_path / "run"
    common = ["--out", str(out), "--batch-size", "4", "--no-progress", "--checkpoint-every", "2"]
    assert train.main(["--steps", "2", *common]) == 0
    meta = json.loads((out / "generator.json").read_text())
    assert meta["training"]["steps"] == 2
    ckpts = sorted((out / "checkpoint").glob("step_*"))
    assert [c.name for c in ckpts] == ["step_0000002"]  # the older one (step 0) is replaced
    assert (ckpts[0] / "manifest.json").is_file()
    assert not list(out.rglob("*.pkl")) and not list(out.rglob("*.bin"))  # nothing to unpickle
    assert (out / "loss_curve.png").is_file()
    assert len(json.loads((out / "loss_curve.json").read_text())["step_loss"]) == 2

    assert train.main(["--steps", "3", "--resume", *common]) == 0
    meta = json.loads((out / "generator.json").read_text())
    assert meta["training"]["steps"] == 3
    assert len(json.loads((out / "loss_curve.json").read_text())["step_loss"]) == 3
    # a resume from a checkpoint holding a file accel did not write is refused
    latest = sorted((out / "checkpoint").glob("step_*"))[-1]
    (latest / "extra.pkl").write_bytes(b"x")
    with pytest.raises(SystemExit, match="did not write"):
        train.main(["--steps", "4", "--resume", *common])
    # the exported weights load into the stock pipeline
    shutil.copy(WEIGHTS_DIR / "classifier.json", out / "classifier.json")
    pipe = load_default_pipeline("ddim", weights_dir=out)
    assert _sample(pipe, [0], steps=2).shape == (1, 32, 32, 1)
