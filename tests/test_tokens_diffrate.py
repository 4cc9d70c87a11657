"""`diffrate`: importance + keep-top matching, rates files, STE gradients, FLOPs term, CLI."""

from __future__ import annotations

import json

import pytest
import torch

import accel
import accel.models
from accel.testing import run_tiny, tiny_class_pipeline, tiny_transformer, transformer_inputs
from accel.tokens import DiffRateConfig
from accel.pipelines.calls import record_calls
from accel.tokens.diffrate_train import RateTrainer, train_rates
from accel.tokens.merge import keep_top, merge, unmerge


def test_keep_top_keeps_the_most_important_and_merges_into_nearest():
    x = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [0.9, 0.1], [0.1, 0.9]]])
    m = keep_top(x, torch.tensor([[5.0, 4.0, 1.0, 0.0]]), 2)
    assert m.keep.tolist() == [[0, 1]] and m.index.tolist() == [[0, 1, 0, 1]]
    assert torch.allclose(unmerge(merge(x, m), m)[0, 2], (x[0, 0] + x[0, 2]) / 2)
    full = keep_top(x, torch.zeros(1, 4), 4)
    assert full.r == 0 and merge(x, full) is x


def test_all_rates_one_is_bit_identical_on_every_family(tiny_pipes, family):
    pipe = tiny_pipes[family]
    reference = run_tiny(pipe, family, steps=2)
    depth = len(pipe.transformer.transformer_blocks) + len(getattr(pipe.transformer, "single_transformer_blocks", []))
    with accel.apply(pipe, DiffRateConfig(rates=";".join(["1"] * depth))) as h:
        assert torch.equal(run_tiny(pipe, family, steps=2), reference)
        assert h.stats()["diffrate"]["total"]["flops_ratio"] == 1.0
    with accel.apply(pipe, DiffRateConfig(rates=";".join(["0.5"] * depth))) as h:
        out = run_tiny(pipe, family, steps=2)
        total = h.stats()["diffrate"]["total"]
    assert out.shape == reference.shape and torch.isfinite(out).all() and not torch.equal(out, reference)
    assert total["attention.tokens_out"] * 2 == total["attention.tokens_in"]
    assert torch.equal(run_tiny(pipe, family, steps=2), reference)


def test_rates_file_for_another_depth_and_bad_values_are_refused(tmp_path):
    model = tiny_transformer("dit", num_layers=3)
    path = tmp_path / "rates.json"
    path.write_text(json.dumps({"rates": [1.0, 0.5], "sublayers": ["attention", "mlp"]}))
    state = {n: sorted(m.__dict__) for n, m in model.named_modules()}
    with pytest.raises(ValueError, match="rates: 2 rates for a model with 3 blocks"):
        accel.apply(model, DiffRateConfig(rates=str(path)))
    assert {n: sorted(m.__dict__) for n, m in model.named_modules()} == state
    for bad in ("1;1.5;1", "1;0;1", str(tmp_path / "missing.json"), None, "abc"):
        with pytest.raises(ValueError, match="rates"):
            DiffRateConfig(rates=bad)
    path.write_text(json.dumps({"rates": [1.0, 0.5, 0.5], "sublayers": ["attention", "feedforward"]}))
    with pytest.raises(ValueError, match="unknown sub-layer 'feedforward'"):
        accel.apply(model, DiffRateConfig(rates=str(path)))


def test_ste_gives_gradients_to_the_rate_logits():
    model = tiny_transformer("dit", num_layers=2)
    for p in model.parameters():
        p.requires_grad_(False)
    kw = transformer_inputs("dit", model)
    with torch.no_grad():
        target = model(**kw)[0]
    trainer = RateTrainer(model)
    try:
        out = model(**kw)[0]
        assert torch.equal(out, target)  # starts at keep-all: forward is the uncompressed model
        loss = torch.mean((out - target) ** 2) + 5 * (trainer.flops_ratio(16) - 0.5) ** 2
        loss.backward()
        grad = trainer.logits.grad
        assert grad is not None and grad.abs().sum() > 0 and torch.isfinite(grad).all()
        assert (grad[:, 1:].abs().sum(-1) > 0).all()  # every block's non-argmax candidates get gradient
    finally:
        trainer.remove()
    assert "forward" not in model.transformer_blocks[0].attn1.__dict__


def test_flops_term_moves_the_kept_fraction_toward_the_target(tmp_path):
    pipe = tiny_class_pipeline(num_layers=2)
    calls = record_calls(pipe, [dict(class_labels=[1, 2], num_inference_steps=3, output_type="np",
                                     generator=torch.Generator().manual_seed(0))], outputs=True)
    assert len(calls) == 3 and all(len(c) == 3 and c[2].shape[0] == c[0][0].shape[0] for c in calls)
    result = train_rates(pipe.transformer, calls, flops=0.5, iters=40, lr=0.1, rows=None, progress=False,
                         checkpoint=tmp_path / "r.ckpt.safetensors")
    assert abs(result["flops_ratio"] - 0.5) < 0.2 and min(result["rates"]) < 1.0
    assert all(p.requires_grad for p in pipe.transformer.parameters())  # flags restored
    assert "forward" not in pipe.transformer.transformer_blocks[0].attn1.__dict__


def test_cli_writes_a_rates_file_that_applies(tmp_path, monkeypatch):
    from accel.cli import main

    pipe = tiny_class_pipeline(num_layers=2)
    monkeypatch.setattr(accel.models, "load_default_pipeline", lambda **kw: pipe)  # what --model default loads
    out = tmp_path / "rates.json"
    argv = ["diffrate", "--model", "default", "--flops", "0.6", "--out", str(out), "--iters", "6", "--steps", "2",
            "--calibration-images", "2", "--calibration-runs", "1", "--quiet"]
    assert main(argv) == 0
    data = json.loads(out.read_text())
    assert data["depth"] == 2 and len(data["rates"]) == 2 and data["flops_target"] == 0.6
    assert data["transformer"] == type(pipe.transformer).__name__  # checked at apply
    assert not (tmp_path / "rates.json.ckpt.safetensors").exists()
    with accel.apply(pipe, accel.methods()["diffrate"](rates=str(out))) as h:
        run = pipe(class_labels=[3], num_inference_steps=2, output_type="np")
        assert run.images.shape[0] == 1 and h.stats()["diffrate"]["rates"] == data["rates"]
    with pytest.raises(SystemExit) as exc:  # refused at parse time
        main(["diffrate", "--flops", "1.5", "--out", str(out)])
    assert exc.value.code == 2
    assert main(["diffrate", "--flops", "0.6", "--sublayers", "attention,ffn", "--out", str(out)]) == 2
    assert main([*argv, "--sublayers", "attention"]) == 2  # rates.json exists: refused without --overwrite
    assert main([*argv, "--sublayers", "attention", "--overwrite"]) == 0
    assert json.loads(out.read_text())["sublayers"] == ["attention"]


def test_single_rate_applies_to_every_block():
    model = tiny_transformer("dit", num_layers=3)
    with torch.no_grad(), accel.apply(model, DiffRateConfig()) as h:  # default: uniform 0.85, attention only
        model(**transformer_inputs("dit", model))
        stats = h.stats()["diffrate"]
    assert stats["rates"] == [0.85] * 3 and stats["total"]["attention.tokens_out"] == 3 * 2 * 14  # of 16
    assert stats["total"]["mlp.tokens_out"] == stats["total"]["mlp.tokens_in"]
