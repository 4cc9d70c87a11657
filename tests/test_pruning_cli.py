"""`accel prune`: a complete, loadable pipeline folder + pruning.json; bad input exits 2 and writes nothing."""

from __future__ import annotations

import json

import pytest
import torch
from diffusers import DiTTransformer2DModel

from accel.cli import main
from accel.pipelines import load_pipeline
from accel.pruning.importance import BlockProbe, prediction
from accel.models.lineage import MARKER_FILE, is_digits_model, load_digits_model
from accel.testing import tiny_class_pipeline


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny") / "pipe"
    tiny_class_pipeline(num_layers=3).save_pretrained(d)
    return d


def _prune(model, out, *extra):
    return main(["prune", "--model", str(model), "--out", str(out), "--calib-images", "2", "--calib-steps", "2",
                 "--quiet", *extra])


def test_prune_writes_a_loadable_pipeline_folder(tiny_dir, tmp_path):
    out = tmp_path / "pruned"
    assert _prune(tiny_dir, out, "--keep", "2", "--selector", "laptop") == 0
    info = json.loads((out / "pruning.json").read_text())
    assert info["selector"] == "laptop" and len(info["keep"]) == 2 and 0 in info["keep"]
    assert len(info["scores"]) == 3 and info["calibration"]["steps"] == 2
    assert info["block_map"] == info["keep"] and info["num_blocks"] == 3
    pipe = load_pipeline(str(out))
    assert pipe.transformer.config.num_layers == 2 and type(pipe.vae).__name__ == "AutoencoderKL"
    plain = DiTTransformer2DModel.from_pretrained(out / "transformer")
    assert plain.config.num_layers == 2
    assert not (out / MARKER_FILE).exists() and not is_digits_model(out)
    images = pipe([1], num_inference_steps=2, output_type="np").images
    assert images.shape == (1, 8, 8, 1)


def test_prune_evo_and_cost_budget(tiny_dir, tmp_path):
    assert _prune(tiny_dir, tmp_path / "evo", "--keep", "2", "--selector", "evo", "--evo-evaluations", "4") == 0
    info = json.loads((tmp_path / "evo" / "pruning.json").read_text())
    assert info["evo_evaluations"] <= 4 and len(info["keep"]) == 2
    assert _prune(tiny_dir, tmp_path / "flops", "--keep", "0.7", "--cost", "flops", "--selector", "last") == 0
    info = json.loads((tmp_path / "flops" / "pruning.json").read_text())
    costs = info["block_costs"]
    assert sum(costs[i] for i in info["keep"]) <= 0.7 * sum(costs) and all(c > 0 for c in costs)


@pytest.mark.parametrize("extra, message", [
    (["--keep", "3"], "keep must be in 1..2"),
    (["--keep", "0"], "--keep must be >= 1"),
    (["--keep", "1.5"], "fraction in (0, 1)"),
    (["--keep", "1", "--selector", "uniform", "--cost", "flops"], "fraction"),
])
def test_prune_bad_input_exits_2_and_writes_nothing(tiny_dir, tmp_path, capsys, extra, message):
    out = tmp_path / "never"
    try:
        rc = _prune(tiny_dir, out, *extra)
    except SystemExit as exc:  # a --keep that is no count or fraction at all is refused at parse time
        rc = exc.code
    assert rc == 2
    assert message in capsys.readouterr().err
    assert not out.exists() and not any(p.name.startswith(".never") for p in tmp_path.iterdir())


def test_prune_unknown_selector_missing_model_and_occupied_out(tiny_dir, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        _prune(tiny_dir, tmp_path / "x", "--keep", "2", "--selector", "magic")
    assert exc.value.code == 2 and not (tmp_path / "x").exists()
    assert _prune(tmp_path / "missing", tmp_path / "y", "--keep", "2") == 2
    assert "--model" in capsys.readouterr().err and not (tmp_path / "y").exists()
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "keep.txt").write_text("mine")
    assert _prune(tiny_dir, occupied, "--keep", "2") == 2
    assert [p.name for p in occupied.iterdir()] == ["keep.txt"]


def test_pruned_default_model_stays_a_digits_model(tmp_path):
    out = tmp_path / "digits6"
    assert main(["prune", "--model", "default", "--keep", "6", "--selector", "uniform", "--out", str(out),
                 "--quiet"]) == 0
    assert is_digits_model(out) and json.loads((out / MARKER_FILE).read_text())["num_classes"] == 10
    assert is_digits_model("default") and not is_digits_model(tmp_path)
    info = json.loads((out / "pruning.json").read_text())
    assert info["keep"] == [0, 2, 4, 7, 9, 11] and info["source_model"] == "default"
    generic = load_pipeline(str(out))  # accel.pipelines accepts the folder (identity VAE included)
    digits = load_digits_model(out)
    assert generic.transformer.config.num_layers == 6 == digits.transformer.config.num_layers
    assert type(digits.scheduler).__name__ == "DPMSolverMultistepScheduler"
    # the folder's transformer is the default model with the other six blocks bypassed
    from accel.models import load_default_pipeline

    teacher = load_default_pipeline().transformer
    kw = dict(hidden_states=torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(0)),
              timestep=torch.tensor([500, 20]), class_labels=torch.tensor([3, 1000]), return_dict=False)
    with BlockProbe(teacher) as probe, probe.bypassing(info["removed"]), torch.no_grad():
        expected = prediction(teacher, ((), kw))
    with torch.no_grad():
        assert torch.equal(prediction(digits.transformer, ((), kw)), expected)


@pytest.mark.slow
def test_bench_reports_fd_digits_for_a_pruned_default_model(tmp_path):
    from accel.eval import report

    out = tmp_path / "digits10"
    assert main(["prune", "--model", "default", "--keep", "10", "--selector", "last", "--out", str(out),
                 "--quiet"]) == 0
    res = tmp_path / "bench"
    assert main(["bench", "--model", str(out), "--methods", "baseline", "--num-images", "70", "--steps", "2",
                 "--batch-size", "35", "--repeats", "1", "--timing-images", "2", "--quiet", "--device", "cpu",
                 "--out", str(res)]) == 0
    doc = json.loads((res / "results.json").read_text())
    report.validate_results(doc)
    rec = doc["records"][0]
    assert rec["fd_name"] == "FD-digits" and rec["fd"] > 0
    assert rec["block_total"] == 10 * 2  # per timed call: 10 kept blocks x 2 steps (CFG is one doubled batch)
    assert doc["meta"]["guidance"] == 2.0 and doc["meta"]["model"] == str(out)


def test_prune_quiet_hushes_the_save(tmp_path, capfd):
    """`--quiet`: no "Writing model shards" bars nor "tokenizer_3=None cannot be saved" notices from the save
    (they came from transformers' and diffusers' loggers on the flow model's folder, which has no third encoder)."""
    assert main(["prune", "--model", "flow", "--keep", "6", "--selector", "first", "--out", str(tmp_path / "p"),
                 "--quiet"]) == 0
    captured = capfd.readouterr()
    assert "wrote" in captured.out
    assert "Writing model shards" not in captured.err and "cannot be saved" not in captured.err
