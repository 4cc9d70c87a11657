"""`accel bench --compile`: every row compiled (regional by default), compile seconds and recompiles in the
results, no recompile on a second call, images equal to the uncompiled bench. Backend aot_eager (traced,
no code generation) keeps it fast; the inductor numbers are benchmarks/compile.py's and docs/results.md's."""

from __future__ import annotations

import json

import pytest
import torch

import accel
from accel.cli import main
from accel.eval import report
from accel.eval.bench import run_bench
from accel.eval.compiled import CompileSetting
from accel.eval.methods import BenchInputError, parse_methods
from accel.testing import tiny_class_pipeline

# every test here runs a compiled bench (tracing each method, minutes in all): long benches
pytestmark = pytest.mark.slow

METHODS = "baseline,interval-cache:interval=2,residual-cache,tome"


def _bench(compile_setting: CompileSetting | None):
    torch.manual_seed(0)
    pipe = tiny_class_pipeline(num_layers=3)
    return run_bench(pipe, parse_methods(METHODS, accel.methods()), num_images=4, steps=6, guidance=2.0,
                     batch_size=4, repeats=1, warmup=0, timing_images=2, progress=False, num_classes=10,
                     compile=compile_setting)


@pytest.mark.parametrize("mode", ["regional", "whole"])
def test_compiled_bench_matches_eager_and_does_not_recompile(mode: str) -> None:
    eager = _bench(None)
    compiled = _bench(CompileSetting(mode, "aot_eager"))
    doc = report.results_document(compiled.records, compiled.notes, compiled.meta)
    report.validate_results(json.loads(json.dumps(doc, allow_nan=False)))
    assert [r["method"] for r in compiled.records] == [r["method"] for r in eager.records]
    for e, c in zip(eager.records, compiled.records):
        assert c["compile"] == mode and c["compile_backend"] == "aot_eager"
        assert c["recompiles"] == 0, c["method"]  # the second call traced nothing new
        assert c["compile_s"] > 0, c["method"]  # the first call traced: slower than the second
        assert c["block_evals"] == e["block_evals"], c["method"]  # the same decisions, compiled
        assert "compile_s" not in e
    for label, images in eager.grid.items():
        torch.testing.assert_close(compiled.grid[label], images, rtol=1e-4, atol=1e-4)
    if mode == "regional":  # the blocks are the compiled regions: accel's hooks break no graph
        assert all(r["graph_breaks"] == 0 for r in compiled.records)
    else:  # the whole transformer, hooks inside: their host-side decisions (compiler.disable) break it
        assert all(r["graph_breaks"] > 0 for r in compiled.records), [r["graph_breaks"] for r in compiled.records]
    assert any(n.startswith(f"compiled: every row {mode}") and "no method recompiled" in n for n in compiled.notes)


def test_bench_compile_flags(tmp_path, capsys) -> None:
    tiny_class_pipeline(num_layers=2).save_pretrained(tmp_path / "tiny")
    out = tmp_path / "out"
    argv = ["bench", "--model", str(tmp_path / "tiny"), "--steps", "4", "--num-images", "2", "--batch-size", "2",
            "--repeats", "1", "--timing-images", "2", "--threads", "1", "--device", "cpu", "--quiet", "--no-fd",
            "--methods", "baseline,interval-cache:interval=2", "--compile", "--compile-backend", "eager",
            "--out", str(out)]
    assert main(argv) == 0
    doc = json.loads((out / "results.json").read_text())
    assert [(r["compile"], r["compile_backend"], r["recompiles"]) for r in doc["records"]] == \
        [("regional", "eager", 0)] * 2
    header = capsys.readouterr().out.splitlines()[0]
    assert "compile s" in header and "recompiles" in header
    assert "compile_s" in (out / "results.csv").read_text().splitlines()[0]
    with pytest.raises(BenchInputError, match="compile_backend"):
        CompileSetting("regional", "no-such-backend")
