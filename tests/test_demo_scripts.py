"""The demo scripts in scripts/ run end to end on the smallest settings and write real outputs;
a missing or unsupported --model is one error line and exit code 2."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import accel

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


def _load(name: str):
    if str(SCRIPTS) not in sys.path:
        sys.path.insert(0, str(SCRIPTS))
    spec = importlib.util.spec_from_file_location(f"demo_{name}", SCRIPTS / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses resolve their annotations through sys.modules
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(autouse=True)
def _one_thread():
    """One torch thread: these tiny calls are dominated by thread start-up on shared cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def preset_mod():
    return _load("demo_preset")


@pytest.fixture(scope="module")
def common():
    _load("demo_preset")  # puts scripts/ on sys.path
    import _demo_common

    return _demo_common


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def _png(path: Path) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(path).convert("RGB"))


SMALL = ["--num-images", "2", "--batch-size", "2", "--repeats", "1", "--warmup", "0", "--quiet"]


# ----------------------------------------------------------------------------- demo_preset.py
@pytest.mark.slow
def test_preset_demo_with_methods_on_tiny_pixart(preset_mod, common, tmp_path):
    from accel.testing import pipeline_inputs, tiny_pipeline

    rc = preset_mod.main(["--methods", "interval-cache:interval=2,min_steps=0+tome:ratio=0.5", "--steps", "4",
                          *SMALL, "--out", str(tmp_path)])
    assert rc == 0
    doc = json.loads((tmp_path / "result.json").read_text())
    assert [c["name"] for c in doc["configs"]] == ["interval-cache", "tome"]
    assert doc["configs"][0]["params"]["interval"] == 2
    assert _finite(doc["speedup"]) and doc["speedup"] > 0 and _finite(doc["baseline_s"])
    assert _finite(doc["psnr"]) and doc["psnr"] > 0  # accelerated images differ from the baseline, finitely
    assert doc["block_evals"] < doc["block_total"] == 4 * 3  # steps x blocks (CFG batched in one call)
    grid = _png(tmp_path / "grid.png")
    assert (grid.shape[1], grid.shape[0]) == common.grid_size(2, 2, 16, 16) == tuple(doc["grid"]["size"])
    # the left column is the stock pipeline's own image 0, untouched by the acceleration
    scale, ch, cw = common.grid_cell(16, 16)
    base = tiny_pipeline("pixart")(**pipeline_inputs("pixart", batch=2, steps=4, seed=0)).images[0]
    want = (base.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    want = want.repeat(scale, 0).repeat(scale, 1)
    y, x = common.GRID_HEADER + common.GRID_PAD, common.GRID_PAD
    assert np.array_equal(grid[y:y + ch, x:x + cw], want)
    assert not np.array_equal(grid[y:y + ch, x + cw + common.GRID_PAD:x + 2 * cw + common.GRID_PAD], want)


@pytest.mark.slow
def test_preset_demo_calls_accel_preset_with_the_pipeline(preset_mod, tmp_path, monkeypatch):
    """The preset path, against a stand-in `accel.preset` (the contract: name and pipeline in, configs out)."""
    from accel.caching import DeltaCacheConfig

    seen = []

    def fake_preset(name, pipe):
        seen.append((name, type(pipe).__name__))
        return [DeltaCacheConfig(min_steps=0)]

    monkeypatch.setattr(accel, "preset", fake_preset, raising=False)
    rc = preset_mod.main(["--family", "sd3", "--preset", "fast", "--steps", "4", *SMALL, "--out", str(tmp_path)])
    assert rc == 0 and seen == [("fast", "StableDiffusion3Pipeline")]
    doc = json.loads((tmp_path / "result.json").read_text())
    assert doc["preset"] == "fast" and doc["configs"][0]["name"] == "delta-cache"
    assert doc["block_evals"] < doc["block_total"] and _finite(doc["speedup"])


@pytest.mark.slow
def test_preset_demo_with_the_real_presets(preset_mod, tmp_path, capsys):
    """With accel.preset: a real preset runs on a tiny Flux; without it: one clear error line, exit 2."""
    rc = preset_mod.main(["--family", "flux", "--preset", "balanced", "--steps", "4", *SMALL, "--out", str(tmp_path)])
    if hasattr(accel, "preset"):
        assert rc == 0
        doc = json.loads((tmp_path / "result.json").read_text())
        assert doc["preset"] == "balanced" and doc["configs"] and _finite(doc["speedup"])
    else:
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and "accel.preset" in err[0] and "--methods" in err[0]


@pytest.mark.slow
def test_preset_demo_on_a_local_pipeline_folder_with_prompts(preset_mod, tmp_path):
    from accel.testing import tiny_text_pipeline

    folder = tmp_path / "pixart"
    tiny_text_pipeline("pixart").save_pretrained(folder)
    rc = preset_mod.main(["--model", str(folder), "--methods", "tome:ratio=0.5", "--prompt", "a red fox",
                          "--prompt", "a city at night", "--height", "16", "--width", "16", "--steps", "3",
                          "--pipeline-kwargs", '{"use_resolution_binning": false}',
                          *SMALL, "--out", str(tmp_path / "out")])
    assert rc == 0
    doc = json.loads((tmp_path / "out" / "result.json").read_text())
    assert doc["kind"] == "pipeline" and doc["pipeline"] == "PixArtAlphaPipeline" and _finite(doc["psnr"])


@pytest.mark.parametrize("script", ["demo_preset", "demo_end_to_end"])
def test_missing_or_unsupported_model_is_one_line_exit_2(script, tmp_path, capsys):
    mod = _load(script)
    rc = mod.main(["--model", str(tmp_path / "no-such-model"), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith(f"{script}.py: error:") and "no-such-model" in err[0]
    (tmp_path / "not-a-pipeline").mkdir()
    rc = mod.main(["--model", str(tmp_path / "not-a-pipeline"), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "model_index.json" in err[0]
    assert not (tmp_path / "out").exists()


def test_preset_demo_rejects_bad_methods(preset_mod, tmp_path, capsys):
    assert preset_mod.main(["--methods", "no-such-method", "--out", str(tmp_path)]) == 2
    assert "unknown method" in capsys.readouterr().err
    assert preset_mod.main(["--methods", "delta-cache,tome", "--out", str(tmp_path)]) == 2  # two rows, not a stack
    assert "one method or one stack" in capsys.readouterr().err
    assert preset_mod.main(["--family", "sana", "--methods", "tome:merge_mlp=true", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot be applied" in err[0] and "convolution" in err[0]
    assert not (tmp_path / "o").exists()


# ----------------------------------------------------------------------------- demo_end_to_end.py
@pytest.mark.slow
def test_end_to_end_demo_on_the_default_model(common, tmp_path):
    e2e = _load("demo_end_to_end")
    rc = e2e.main(["--calib-images", "2", "--calib-steps", "3", "--calib-calls", "4", "--max-steps", "2",
                   "--distill-batch-size", "4", "--num-images", "2", "--batch-size", "2", "--steps", "10",
                   "--timing-images", "2", "--repeats", "1", "--warmup", "0", "--cache", "interval-cache:interval=2",
                   "--quiet", "--out", str(tmp_path)])
    assert rc == 0
    doc = json.loads((tmp_path / "results.json").read_text())
    stages = {s["stage"]: s for s in doc["stages"]}
    assert list(stages) == ["baseline", "pruned 9/12", "+distilled", "+cache interval-cache:interval=2",
                            "+tokens toca:interval=2,recompute=0.3"]
    assert doc["distillation"]["steps"] == 2 and len(doc["pruning"]["keep"]) == 9
    for s in doc["stages"]:
        assert _finite(s["speedup"]) and _finite(s["fd_digits"]) and 0 <= s["class_agreement"] <= 1
        assert s["psnr"] is None if s["stage"] == "baseline" else _finite(s["psnr"])  # null = identical
    assert stages["pruned 9/12"]["block_total"] == 9 * 10 * 1  # blocks x steps (CFG batched in one call)
    assert stages["pruned 9/12"]["ideal_speedup"] == pytest.approx(12 / 9)
    cache = stages["+cache interval-cache:interval=2"]
    assert cache["block_evals"] < cache["block_total"] and cache["ideal_speedup"] > 12 / 9
    assert stages["+tokens toca:interval=2,recompute=0.3"]["flops_ratio"] < 1
    grid = _png(tmp_path / "grid.png")
    assert (grid.shape[1], grid.shape[0]) == common.grid_size(5, 2, 32, 32)
    from accel.models.lineage import load_digits_model

    pipe = load_digits_model(tmp_path / "distilled")
    assert len(pipe.transformer.transformer_blocks) == 9
    assert "baseline" in (tmp_path / "table.txt").read_text()


def test_end_to_end_demo_on_a_text_to_image_folder(tmp_path):
    """A folder that is not a digits model: distilled on its own sampled calls, no FD, PSNR and speed still."""
    from accel.testing import tiny_text_pipeline

    tiny_text_pipeline("sd3", num_layers=4).save_pretrained(tmp_path / "sd3")
    e2e = _load("demo_end_to_end")
    rc = e2e.main(["--model", str(tmp_path / "sd3"), "--keep", "3", "--calib-images", "2", "--calib-steps", "2",
                   "--calib-calls", "2", "--max-steps", "1", "--teacher-samples", "1", "--distill-batch-size", "2",
                   "--num-images", "1", "--steps", "4", "--timing-images", "1", "--repeats", "1", "--warmup", "0",
                   "--cache", "delta-cache:min_steps=0", "--tokens", "tome", "--no-save-models", "--quiet",
                   "--out", str(tmp_path / "out")])
    assert rc == 0
    doc = json.loads((tmp_path / "out" / "results.json").read_text())
    assert doc["fd_name"] is None and doc["distillation"]["data"]["kind"] == "teacher-samples"
    assert [s["block_total"] for s in doc["stages"]] == [16, 12, 12, 12, 12]  # 4 steps x blocks
    assert all(_finite(s["speedup"]) and s["fd_digits"] is None for s in doc["stages"])
    assert not (tmp_path / "out" / "pruned").exists()


def test_end_to_end_demo_rejects_a_token_method_as_cache(tmp_path, capsys):
    e2e = _load("demo_end_to_end")
    assert e2e.main(["--cache", "tome", "--out", str(tmp_path / "o")]) == 2
    assert "kind 'tokens', not 'cache'" in capsys.readouterr().err
    assert e2e.main(["--keep", "12", "--out", str(tmp_path / "o")]) == 2
    assert "keep must be in 1..11" in capsys.readouterr().err


# ----------------------------------------------------------------------------- reproduce_readme.py
README = """# demo

## Results

```bash
accel bench --methods baseline,interval-cache:interval=2,min_steps=0 \\
    --steps 4 --out somewhere   # the table below
```

| method | FD-digits | PSNR dB | speedup |
|---|---:|---:|---:|
| baseline | 10.0 | inf | 1.00 |
| interval-cache:interval=2,min_steps=0 | 12.5 | 30.5 dB | 1.8× |

## Other

| a | b |
|---|---|
| 1 | 2 |
"""


def test_readme_tables_and_commands_are_found():
    rr = _load("reproduce_readme")
    tables = rr.find_tables(README)
    assert len(tables) == 2
    t = tables[0]
    assert t.runnable and t.section == "Results"
    assert t.command == ["accel", "bench", "--methods", "baseline,interval-cache:interval=2,min_steps=0",
                         "--steps", "4", "--out", "somewhere"]
    assert t.fields == {1: "fd", 2: "psnr", 3: "speedup"}
    assert [rr.number(c) for c in t.rows[1][1:]] == [12.5, 30.5, 1.8]
    assert not tables[1].runnable
    assert rr.bench_argv(t.command, Path("o"), False, ["--threads", "1"])[-6:] == ["4", "--threads", "1", "--out", "o",
                                                                                "--overwrite"]
    quick = rr.bench_argv(t.command, Path("o"), True, [])
    assert "--num-images" in quick and quick.count("--steps") == 1  # the README's 4 steps are no more than quick's


@pytest.mark.slow
def test_reproduce_readme_reruns_the_table_and_compares(tmp_path):
    rr = _load("reproduce_readme")
    (tmp_path / "README.md").write_text(README)
    rc = rr.main(["--readme", str(tmp_path / "README.md"), "--quick", "--out", str(tmp_path / "out"),
                  "--bench-args", "--num-images 2 --batch-size 2 --threads 1 --quiet"])
    assert rc == 0
    doc = json.loads((tmp_path / "out" / "comparison.json").read_text())
    (table,) = doc["tables"]
    assert table["exit_code"] == 0 and table["line"] == 10
    assert table["run"][:4] == ["accel", "bench", "--methods", "baseline,interval-cache:interval=2,min_steps=0"]
    rows = {r["method"]: r["columns"] for r in table["rows"]}
    cache = rows["interval-cache:interval=2,min_steps=0"]
    assert cache["speedup"]["readme"] == 1.8 and _finite(cache["speedup"]["measured"])
    assert cache["PSNR dB"]["readme"] == 30.5 and _finite(cache["PSNR dB"]["measured"])
    assert cache["FD-digits"]["measured"] is None  # --quick skips FD
    assert (tmp_path / "out" / "table-1" / "results.json").is_file()
    assert doc["skipped"] and doc["skipped"][0]["why"].startswith("no `accel bench` command")


def test_reproduce_readme_defaults_and_errors(tmp_path, capsys):
    rr = _load("reproduce_readme")
    assert rr.main(["--list"]) == 0  # the repo's own docs/results.md parses
    assert "accel bench" in capsys.readouterr().out
    assert rr.main(["--readme", str(tmp_path / "missing.md")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing.md" in err[0]
    (tmp_path / "R.md").write_text(README.replace("--steps 4", f"--model {tmp_path / 'gone'} --steps 4"))
    assert rr.main(["--readme", str(tmp_path / "R.md"), "--out", str(tmp_path / "o")]) == 2
    assert "gone" in capsys.readouterr().err
