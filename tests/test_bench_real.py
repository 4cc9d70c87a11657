"""`accel bench`'s paired run against the real method registry and the embedded default model."""

from __future__ import annotations

import json

import pytest
import torch

import accel
from accel.cli import main
from accel.eval import report
from accel.eval.bench import run_bench
from accel.eval.methods import BenchInputError, MethodSpec, default_methods, parse_methods
from accel.models.default import GENERATOR_WEIGHTS, WEIGHTS_DIR
from accel.testing import tiny_class_pipeline


@pytest.fixture(autouse=True)
def _one_thread():
    """One torch thread: on 2 shared, oversubscribed cores, 2 spinning OpenMP threads make these
    tiny models up to ~200x slower (measured: 7.8 s vs 0.04 s for one 10-image call)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class _Feats(torch.nn.Module):
    num_features = 4

    def forward(self, x):
        return torch.stack([x.mean((1, 2, 3)), x.std((1, 2, 3)), x[..., :4, :].mean((1, 2, 3)),
                            x[..., 4:, :].mean((1, 2, 3))], 1)


def test_every_registered_method_runs_on_tiny_dit():
    reg = accel.methods()
    methods = default_methods(reg)
    assert len(methods) >= 4  # baseline + the caches
    res = run_bench(tiny_class_pipeline(num_layers=4), methods, num_images=10, steps=8, guidance=2.0,
                    batch_size=10, repeats=1, warmup=0, timing_images=2, extractor=_Feats(), fd_name="FD-test",
                    progress=False, num_classes=10)
    doc = report.results_document(res.records, res.notes, res.meta)
    report.validate_results(json.loads(json.dumps(doc, allow_nan=False)))
    base = res.records[0]
    assert base["block_evals"] == base["block_total"] == 4 * 8 and base["ideal_speedup"] == 1.0
    for r in res.records[1:]:
        assert 0 < r["block_evals"] <= r["block_total"] == base["block_total"], r["method"]
        assert r["ideal_speedup"] >= 1.0 and r["fd"] >= 0
    by = {r["method"]: r for r in res.records}
    assert by["interval-cache"]["block_evals"] == 4 * 4  # interval 3, warmup 1: steps 0, 1, 4, 7
    for r in res.records:  # token methods' FLOPs count in the ideal speedup, block skipping in all
        ideal = r["block_total"] / r["block_evals"] / (r["flops_ratio"] or 1.0)
        assert r["ideal_speedup"] == pytest.approx(ideal)
    assert 0 < by["tome"]["flops_ratio"] < 1 and by["tome"]["ideal_speedup"] > 1
    assert set(by) == {"baseline", *(n for n, c in reg.items() if c.accelerates)}  # none left out
    # schedule-cache: calibrated once through MethodConfig.prepare, before measuring
    assert any(n.startswith("method preparation (calibration):") for n in res.notes)
    assert by["schedule-cache"]["block_evals"] < base["block_total"]
    assert set(res.grid) == {m.label for m in methods}


@pytest.mark.slow
def test_default_model_bench(tmp_path, capsys):
    assert (WEIGHTS_DIR / GENERATOR_WEIGHTS).is_file()
    out = tmp_path / "out"
    argv = ["bench", "--methods", "baseline", "--num-images", "70", "--steps", "2", "--batch-size", "35",
            "--repeats", "1", "--timing-images", "2", "--quiet", "--device", "cpu", "--out", str(out)]
    assert main(argv) == 0
    doc = json.loads((out / "results.json").read_text())
    report.validate_results(doc)
    assert doc["records"][0]["fd_name"] == "FD-digits" and doc["records"][0]["fd"] > 0
    # too few images for the classifier's feature size -> exit 2, names the number needed
    rc = main(argv[:4] + ["10"] + argv[5:-1] + [str(tmp_path / "few")])
    assert rc == 2 and "at least" in capsys.readouterr().err and not (tmp_path / "few").exists()


def test_method_spec_labels_are_stable():
    reg = accel.methods()
    specs = default_methods(reg)
    assert specs[0].label == "baseline" and isinstance(specs[0], MethodSpec)
    assert {"delta-cache", "interval-cache", "residual-cache"} <= {s.label for s in specs[1:]}
    assert all(reg[s.label].accelerates for s in specs[1:])


def test_conflicting_stack_is_bad_input_before_generation():
    pipe = tiny_class_pipeline(num_layers=2)
    calls = []
    pipe.transformer.register_forward_pre_hook(lambda *a: calls.append(1))
    with pytest.raises(BenchInputError, match="cannot be applied"):
        run_bench(pipe, parse_methods("delta-cache+residual-cache", accel.methods()), num_images=4, steps=2,
                  progress=False)
    assert not calls  # not one transformer call was made
