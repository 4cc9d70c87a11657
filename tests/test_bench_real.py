"""`accel bench` against the real method registry and the embedded default model.

Skips cleanly while those parts are missing; the stand-in tests in test_bench_cli.py
cover the bench machinery itself.
"""

from __future__ import annotations

import json

import pytest
import torch

from accel.cli import main
from accel.testing import tiny_class_pipeline
from accel.eval import report
from accel.eval.bench import MethodSpec, parse_methods, run_bench


def _real_registry():
    try:
        import accel

        reg = accel.methods()
        assert callable(accel.apply)
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"accel foundation not available: {exc}")
    return accel, reg


def _tiny_pipe():
    return tiny_class_pipeline(num_layers=4)


class _Feats(torch.nn.Module):
    num_features = 4

    def forward(self, x):
        return torch.stack([x.mean((1, 2, 3)), x.std((1, 2, 3)), x[..., :4, :].mean((1, 2, 3)),
                            x[..., 4:, :].mean((1, 2, 3))], 1)


def test_real_registry_on_tiny_dit():
    accel, reg = _real_registry()
    accelerating = [n for n, c in reg.items() if getattr(c, "accelerates", True)]
    if not accelerating:
        pytest.skip("no accelerating method registered yet")
    methods = parse_methods(accelerating[0], reg)
    res = run_bench(_tiny_pipe(), methods, num_images=10, steps=4, guidance=2.0, batch_size=5,
                    repeats=1, timing_images=2, extractor=_Feats(), fd_name="FD-test",
                    progress=False, found=accel)
    doc = report.results_document(res.records, res.notes, res.meta)
    report.validate_results(json.loads(json.dumps(doc, allow_nan=False)))
    base = res.records[0]
    assert base["block_evals"] == base["block_total"] > 0 and base["ideal_speedup"] == 1.0
    for r in res.records[1:]:
        assert 0 < r["block_evals"] <= r["block_total"] == base["block_total"]
        assert r["ideal_speedup"] >= 1.0 and r["fd"] >= 0
    assert set(res.grid) == {m.label for m in methods}


def test_default_model_bench_or_clear_error(tmp_path, capsys):
    _real_registry()
    try:
        from accel.models.default import GENERATOR_WEIGHTS, WEIGHTS_DIR
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"accel.models not available: {exc}")
    out = tmp_path / "out"
    argv = ["bench", "--methods", "baseline", "--num-images", "70", "--steps", "2", "--batch-size", "35",
            "--repeats", "1", "--timing-images", "2", "--quiet", "--device", "cpu", "--out", str(out)]
    rc = main(argv)
    if not (WEIGHTS_DIR / GENERATOR_WEIGHTS).is_file():
        assert rc == 2 and "default model" in capsys.readouterr().err and not out.exists()
        return
    assert rc == 0
    doc = json.loads((out / "results.json").read_text())
    report.validate_results(doc)
    assert doc["records"][0]["fd_name"] == "FD-digits" and doc["records"][0]["fd"] > 0
    # too few images for the classifier's feature size -> exit 2, names the number needed
    rc = main(argv[:4] + ["10"] + argv[5:-1] + [str(tmp_path / "few")])
    assert rc == 2 and "at least" in capsys.readouterr().err and not (tmp_path / "few").exists()


def test_method_spec_labels_are_stable():
    _, reg = _real_registry()
    specs = parse_methods(None, reg)
    assert specs[0].label == "baseline" and isinstance(specs[0], MethodSpec)
    assert all(s.label in reg for s in specs[1:])


def test_conflicting_stack_is_bad_input_before_generation():
    accel, reg = _real_registry()
    by_kind: dict = {}
    for n, c in reg.items():
        if getattr(c, "accelerates", True) and getattr(c, "kind", "probe") != "probe":
            by_kind.setdefault(c.kind, []).append(n)
    pair = next((v[:2] for v in by_kind.values() if len(v) >= 2), None)
    if pair is None:
        pytest.skip("no two stackable-conflicting methods registered")
    from accel.eval.bench import BenchInputError

    with pytest.raises(BenchInputError, match="cannot be applied"):
        run_bench(_tiny_pipe(), parse_methods("+".join(pair), reg), num_images=4, steps=2,
                  progress=False, found=accel)
