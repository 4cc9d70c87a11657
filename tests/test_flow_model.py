"""The embedded flow model (`--model flow`): offline loading, determinism, the stock pipeline
class, exact undo of every method, and a PSNR floor per method at its defaults.

Workload of the method checks: 8 paired images, one prompt per digit 0-7 ("a handwritten
zero", ...), the default sampler's guidance and shift at STEPS steps, 6 zero T5 tokens.
Floors were measured on the shipped weights (see MEASURED_DB) and sit ~3 dB below.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from diffusers import SD3Transformer2DModel, StableDiffusion3Pipeline

import accel
from accel.eval.fidelity import per_image_mse, psnr_from_mse
from accel.eval.workload import generate, make_workload
from accel.models import (
    FLOW_SAMPLER,
    WEIGHTS_FLOW_DIR,
    classifier_features,
    digit_prompt,
    flow_call_kwargs,
    load_digits_classifier,
    load_flow_pipeline,
)
from accel.models.flow import MANIFEST_FILE, TRAIN_FLOW_CMD
from accel.testing import METHOD_SETTINGS, saved_work

STEPS, IMAGES = 16, 8
PROMPTS = [digit_prompt(d) for d in range(10)]
# PSNR floors (dB) to the unaccelerated images on this workload, from accel.testing.METHOD_SETTINGS
# (measured on the shipped 1,700-step weights, guidance 1.5, 2-core CPU, torch 2.13, minus 3 dB; token
# methods' own FLOPs ratios: tome 0.60, toca 0.85, diffrate 0.86; caches' block evals of 192: delta 120,
# interval 72, residual 159, schedule 72)
PSNR_FLOOR_DB = {name: row.floor_db["flow"] for name, row in METHOD_SETTINGS.items()}


def _workload(pipe, n: int, seed: int):
    return make_workload(pipe, n, seed, STEPS, guidance=FLOW_SAMPLER["guidance_scale"], batch_size=n,
                         prompts=PROMPTS, extra_kwargs={"max_sequence_length": FLOW_SAMPLER["max_sequence_length"]})


@pytest.fixture(scope="module")
def paired():
    pipe = load_flow_pipeline()
    workload = _workload(pipe, IMAGES, 0)
    return pipe, workload, generate(pipe, workload, range(IMAGES))


def test_stock_pipeline_and_architecture(paired):
    pipe, _, _ = paired
    assert type(pipe) is StableDiffusion3Pipeline  # not a subclass: cache-dit / diffusers accept it by name
    tr = pipe.transformer
    assert type(tr) is SD3Transformer2DModel
    assert len(tr.transformer_blocks) >= 12
    assert (tr.config.sample_size // tr.config.patch_size) ** 2 >= 256
    assert pipe.text_encoder_3 is None and pipe.tokenizer_3 is None
    assert not any(p.requires_grad for m in (tr, pipe.text_encoder, pipe.text_encoder_2) for p in m.parameters())
    size = sum(f.stat().st_size for f in WEIGHTS_FLOW_DIR.rglob("*") if f.is_file())
    assert size <= 8 * 2**20 + 2**20  # weights (<= 8 MB) + card, curves, samples


def test_samples_deterministically_offline_and_draws_the_asked_digit(paired):
    pipe, workload, baseline = paired
    again = generate(pipe, workload, range(IMAGES))
    assert torch.equal(again, baseline)
    _, preds = classifier_features(load_digits_classifier(), baseline)
    assert int((preds == torch.arange(IMAGES) % 10).sum()) >= IMAGES - 2


def test_plain_from_pretrained_gives_the_same_images(paired):
    pipe, workload, baseline = paired
    import accel.models.flow  # noqa: F401  (diffusers resolves the identity VAE from this module)

    plain = StableDiffusion3Pipeline.from_pretrained(WEIGHTS_FLOW_DIR, text_encoder_3=None, tokenizer_3=None,
                                                     local_files_only=True)
    plain.set_progress_bar_config(disable=True)
    assert torch.equal(generate(plain, workload, range(IMAGES)), baseline)


def test_default_call_kwargs_run_the_default_sampler(paired):
    pipe, _, _ = paired
    kw = flow_call_kwargs({"steps": 2})
    out = pipe([PROMPTS[3]], generator=torch.Generator().manual_seed(0), output_type="np", **kw).images
    assert out.shape == (1, 32, 32, 1) and 0 <= out.min() and out.max() <= 1


@pytest.mark.parametrize("damage", ["missing", "corrupt"])
def test_missing_or_corrupt_file_names_it_and_the_training_command(tmp_path, damage):
    wdir = tmp_path / "w"
    shutil.copytree(WEIGHTS_FLOW_DIR, wdir)
    target = wdir / "transformer" / "diffusion_pytorch_model.safetensors"
    if damage == "missing":
        target.unlink()
    else:
        data = bytearray(target.read_bytes())
        data[len(data) // 2] ^= 0xFF
        target.write_bytes(bytes(data))
    with pytest.raises((FileNotFoundError, ValueError)) as exc:
        load_flow_pipeline(weights_dir=wdir)
    assert str(target) in str(exc.value) and TRAIN_FLOW_CMD in str(exc.value)


def test_manifest_lists_every_shipped_weight_file():
    listed = set(json.loads((WEIGHTS_FLOW_DIR / MANIFEST_FILE).read_text())["files"])
    shipped = {str(p.relative_to(WEIGHTS_FLOW_DIR)) for p in WEIGHTS_FLOW_DIR.glob("*/*") if p.is_file()}
    assert shipped <= listed


@pytest.mark.parametrize("name", sorted(accel.methods()))
def test_every_method_undoes_exactly_and_keeps_a_floor(paired, name):
    pipe, workload, baseline = paired
    state = {k: v.clone() for k, v in pipe.transformer.state_dict().items()}
    config = accel.methods()[name]()
    calibration = _workload(pipe, 2, 10**6)
    config.prepare(pipe, lambda: generate(pipe, calibration, range(2)))  # e.g. schedule-cache calibrates
    handle = accel.apply(pipe, config)
    images = generate(pipe, workload, range(IMAGES))
    stats = handle.stats()
    handle.remove()
    assert torch.equal(generate(pipe, workload, range(IMAGES)), baseline), "remove() must undo exactly"
    after = pipe.transformer.state_dict()
    assert after.keys() == state.keys() and all(torch.equal(after[k], v) for k, v in state.items())
    if not config.accelerates:
        return
    assert saved_work(name, stats)
    psnr = psnr_from_mse(per_image_mse(images, baseline))
    assert name in PSNR_FLOOR_DB, f"measure a PSNR floor for {name} on the flow model"
    assert PSNR_FLOOR_DB[name] <= psnr < float("inf")


def test_bench_model_flow_brings_its_sampler_prompts_and_fd_digits(tmp_path):
    from accel.cli import build_parser
    from accel.commands._shared import prepare_settings
    from accel.eval.prepare import prepare
    from accel.eval.workload import make_workload as mk
    from accel.models import FLOW_BENCH_STEPS

    args = build_parser().parse_args(["bench", "--model", "flow", "--out", str(tmp_path / "b")])
    prep = prepare(prepare_settings(args))
    assert type(prep.pipe) is StableDiffusion3Pipeline and prep.fd_name == "FD-digits"
    assert (prep.steps, prep.guidance) == (FLOW_BENCH_STEPS, FLOW_SAMPLER["guidance_scale"])
    assert prep.call_kwargs == {"max_sequence_length": FLOW_SAMPLER["max_sequence_length"]}
    work = mk(prep.pipe, 20, 0, prep.steps, prompts=prep.prompts)
    assert work.conditions[:10] == PROMPTS and work.conditions[17] == digit_prompt(7)  # image i asks for i % 10


def test_pruned_flow_folder_keeps_its_lineage(tmp_path):
    """`accel prune --model flow` writes a stock SD3 folder whose accel_model.json names the flow model, so
    `accel bench --model DIR` asks it for digits with the flow model's prompts, text length and FD-digits."""
    from accel.cli import build_parser, main
    from accel.commands._shared import prepare_settings
    from accel.eval.prepare import prepare
    from accel.models import FLOW_BENCH_STEPS, MARKER_FILE, embedded_root, flow_prompts, is_digits_model

    out = tmp_path / "pruned"
    rc = main(["prune", "--model", "flow", "--keep", "0.5", "--out", str(out), "--calib-images", "2",
               "--calib-steps", "2", "--calib-calls", "2", "--quiet"])
    assert rc == 0
    marker = json.loads((out / MARKER_FILE).read_text())
    assert marker["embedded"] == "flow" and marker["sampler"] == FLOW_SAMPLER and marker["derived_from"] == "flow"
    assert embedded_root(out) == "flow" and not is_digits_model(out)  # not a class-conditional DiT folder
    plain = StableDiffusion3Pipeline.from_pretrained(out, text_encoder_3=None, tokenizer_3=None)  # plain diffusers
    assert len(plain.transformer.transformer_blocks) == 6
    args = build_parser().parse_args(["bench", "--model", str(out), "--out", str(tmp_path / "b")])
    prep = prepare(prepare_settings(args))
    assert type(prep.pipe) is StableDiffusion3Pipeline and prep.fd_name == "FD-digits"
    assert prep.prompts == flow_prompts() and prep.steps == FLOW_BENCH_STEPS
    assert prep.call_kwargs == {"max_sequence_length": FLOW_SAMPLER["max_sequence_length"]}
    # a folder pruned from this one keeps the root; a marker from before the flow model reads as the default's
    from accel.models import lineage_marker

    assert lineage_marker(str(out))["embedded"] == "flow" and lineage_marker(str(tmp_path)) is None
    old = tmp_path / "old"
    old.mkdir()
    (old / MARKER_FILE).write_text(json.dumps({"kind": "accel-digits", "num_classes": 10, "sampler": {}}))
    assert embedded_root(old) == "default" and is_digits_model(old)
