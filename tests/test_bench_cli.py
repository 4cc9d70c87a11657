"""`accel bench` end to end on a tiny random-init DiT pipeline, bad input, and 2 processes.

The method registry is a small stand-in (``$ACCEL_BENCH_FOUNDATION``) that drops every
other transformer block and counts block evaluations, so these tests do not depend on
which methods exist; test_bench_real_foundation exercises the real ``accel.methods()``.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from accel.cli import main
from accel.testing import tiny_class_pipeline
from accel.eval import report

STANDIN = textwrap.dedent(
    '''
    import dataclasses
    import torch


    @dataclasses.dataclass
    class SkipBlocks:
        every: int = 2

        def __post_init__(self):
            if self.every < 2:
                raise ValueError(f"every must be >= 2, got {self.every}")


    def methods():
        return {"skip-blocks": SkipBlocks}


    class Handle:
        def __init__(self, pipe, configs):
            tr = pipe.transformer
            self.tr = tr
            self.orig_list = tr.transformer_blocks
            self.orig = list(self.orig_list)
            keep = list(range(len(self.orig)))
            for c in configs:
                keep = [i for i in keep if i % c.every != c.every - 1]
            self.evals = self.total = 0
            self.blocks = torch.nn.ModuleList([self.orig[i] for i in keep])
            tr.transformer_blocks = self.blocks
            n = len(self.orig)

            def count_total(mod, args):
                self.total += n

            def count_eval(mod, args):
                self.evals += 1

            self.hooks = [tr.register_forward_pre_hook(count_total)]
            self.hooks += [b.register_forward_pre_hook(count_eval) for b in self.blocks]

        def stats(self):
            return {"total": {"block_evals": self.evals, "block_total": self.total}}

        def reset_stats(self):
            self.evals = self.total = 0

        def remove(self):
            for h in self.hooks:
                h.remove()
            self.tr.transformer_blocks = self.orig_list


    def apply(pipe, *configs):
        return Handle(pipe, configs)
    '''
)

FEATURES = textwrap.dedent(
    '''
    import torch


    class TinyFeatures(torch.nn.Module):
        num_features = 6

        def __init__(self):
            super().__init__()
            g = torch.Generator().manual_seed(0)
            self.w = torch.nn.Parameter(torch.randn(6, 1, 3, 3, generator=g), requires_grad=False)

        def forward(self, x):
            y = torch.nn.functional.conv2d(x.double(), self.w.double(), stride=2)
            return torch.cat([y.mean(dim=(2, 3))[:, :3], y.std(dim=(2, 3))[:, :3]], 1)


    def make():
        return TinyFeatures().eval()
    '''
)


def build_tiny_pipeline(path: Path) -> None:
    tiny_class_pipeline(num_layers=2).save_pretrained(str(path))


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    (root / "standin_foundation.py").write_text(STANDIN)
    (root / "tiny_features.py").write_text(FEATURES)
    build_tiny_pipeline(root / "tiny-dit")
    return root


@pytest.fixture
def use_standin(env, monkeypatch):
    monkeypatch.setenv("ACCEL_BENCH_FOUNDATION", "standin_foundation")
    monkeypatch.syspath_prepend(str(env))
    return env


def _args(env, out, *extra):
    return ["bench", "--model", str(env / "tiny-dit"), "--steps", "3", "--num-images", "16",
            "--batch-size", "4", "--guidance", "2.0", "--repeats", "2", "--timing-images", "2",
            "--threads", "1", "--device", "cpu", "--quiet", "--out", str(out), *extra]


def test_bench_end_to_end(use_standin, tmp_path, capsys):
    env = use_standin
    out = tmp_path / "out"
    rc = main(_args(env, out, "--methods", "baseline,skip-blocks", "--features",
                    "tiny_features:make", "--seed-sets", "2", "--lpips"))
    assert rc == 0
    assert sorted(p.name for p in out.iterdir()) == ["grid.png", "pareto.png", "results.csv", "results.json"]
    doc = json.loads((out / "results.json").read_text())
    report.validate_results(doc)
    base, skip = doc["records"]
    assert [base["method"], skip["method"]] == ["baseline", "skip-blocks"]
    assert base["psnr"] == "inf" and base["ssim"] == pytest.approx(1.0)
    assert base["fd"] == pytest.approx(0.0, abs=1e-9) and skip["fd"] > 0
    assert skip["fd_name"] == "FD-vs-baseline" and len(skip["fd_per_set"]) == 2
    assert skip["fd_spread"] is not None and skip["fd_check"] == pytest.approx(skip["fd"], rel=1e-3)
    assert math.isfinite(skip["psnr"]) and skip["ssim"] < 1
    assert skip["config"] == [{"name": "skip-blocks", "params": {"every": 2}}]
    # 2 blocks, 1 evaluated, 3 steps, CFG batch: counts are exact
    assert skip["block_total"] == 2 * skip["block_evals"] and skip["ideal_speedup"] == pytest.approx(2.0)
    assert base["ideal_speedup"] == pytest.approx(1.0)
    assert base["block_evals"] == 2 * 3 * (16 // 4) * 2  # blocks*steps*batches*seed_sets
    assert skip["speedup"] > 0 and skip["time_s"] > 0
    assert base["num_images"] == 16 and base["steps"] == 3 and base["threads"] == 1
    if sys.platform == "linux":
        assert skip["peak_mem_mb"] > 0
    stdout = capsys.readouterr().out
    assert "skip-blocks" in stdout and "FD-vs-baseline" in stdout and "timing" in stdout
    assert (out / "results.csv").read_text().count("\n") == 3
    notes = " ".join(doc["notes"])
    assert "timing:" in notes
    if skip["lpips"] is None:  # no local LPIPS backend: said so, nothing downloaded
        assert "LPIPS unavailable" in notes
    assert not list(tmp_path.glob(".out.tmp-*"))


def _bad(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        sys.exit(main(argv))
    return exc.value.code, capsys.readouterr().err


@pytest.mark.parametrize(
    "extra, msg",
    [
        (["--methods", "baseline,warp-drive"], "unknown method 'warp-drive'"),
        (["--methods", "skip-blocks:every"], "key=value"),
        (["--methods", "skip-blocks:every=1"], "every must be >= 2"),
        (["--methods", "skip-blocks:speed=3"], "no option 'speed'"),
        (["--features", "tiny_features:make", "--num-images", "4"], "at least 7 images"),
        (["--steps", "nope"], "invalid int"),
    ],
)
def test_bad_input_exits_2_and_writes_nothing(use_standin, tmp_path, capsys, extra, msg):
    out = tmp_path / "out"
    args = _args(use_standin, out)
    # later flags win in argparse, so appended extras override the defaults above
    code, err = _bad(args + extra, capsys)
    assert code == 2 and msg in err
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_bad_model_path_exits_2(use_standin, tmp_path, capsys):
    bad = tmp_path / "not-a-model"
    bad.mkdir()
    (bad / "readme.txt").write_text("hi")
    out = tmp_path / "out"
    args = _args(use_standin, out)
    args[args.index("--model") + 1] = str(bad)
    code, err = _bad(args, capsys)
    assert code == 2 and "not-a-model" in err
    assert not out.exists()


def test_two_processes_same_fd_as_one(use_standin, tmp_path):
    env = use_standin
    common = ["--methods", "baseline,skip-blocks", "--features", "tiny_features:make",
              "--num-images", "12", "--batch-size", "3"]
    out1, out2 = tmp_path / "one", tmp_path / "two"
    assert main(_args(env, out1, *common)) == 0
    penv = dict(os.environ, PYTHONPATH=os.pathsep.join([str(env), os.environ.get("PYTHONPATH", "")]),
                ACCEL_BENCH_FOUNDATION="standin_foundation", OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--standalone", "-m", "accel.cli", *_args(env, out2, *common)]
    # own session, so that a timeout can end the launcher *and* its worker processes
    proc = subprocess.Popen(cmd, env=penv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parents[1], start_new_session=True)
    try:
        _, err = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        _, err = proc.communicate()
        pytest.fail("2-process bench timed out:\n" + err[-3000:])
    assert proc.returncode == 0, err[-3000:]
    r1 = json.loads((out1 / "results.json").read_text())["records"]
    r2 = json.loads((out2 / "results.json").read_text())["records"]
    assert r2[0]["world_size"] == 2 and r1[0]["world_size"] == 1
    for a, b in zip(r1, r2):
        assert a["method"] == b["method"]
        assert b["fd"] == pytest.approx(a["fd"], rel=1e-9, abs=1e-12)
        assert b["psnr"] == a["psnr"] or b["psnr"] == pytest.approx(a["psnr"], rel=1e-9)
        assert b["block_evals"] == a["block_evals"]
    assert r1[1]["fd"] > 0


def test_reference_images_folder_is_cached(use_standin, tmp_path, monkeypatch, capsys):
    import numpy as np
    from PIL import Image

    ref = tmp_path / "ref"
    ref.mkdir()
    rng = np.random.default_rng(0)
    for i in range(10):
        Image.fromarray((rng.random((8, 8)) * 255).astype(np.uint8), mode="L").save(ref / f"{i}.png")
    cache = tmp_path / "cache"
    monkeypatch.setenv("ACCEL_CACHE_DIR", str(cache))
    extra = ["--methods", "baseline", "--features", "tiny_features:make", "--reference-images", str(ref),
             "--num-images", "8", "--repeats", "1"]
    fds = []
    for k in range(2):
        out = tmp_path / f"out{k}"
        assert main(_args(use_standin, out, *extra)) == 0
        rec = json.loads((out / "results.json").read_text())["records"][0]
        assert rec["fd_name"] == "FD" and rec["fd"] > 0
        fds.append(rec["fd"])
        assert len(list((cache / "fd_stats").glob("*.safetensors"))) == 1
    assert fds[0] == pytest.approx(fds[1], rel=1e-12)
    # too few reference images for the feature size: exit 2, nothing written
    for p in list(ref.iterdir())[4:]:
        p.unlink()
    out = tmp_path / "few"
    assert main(_args(use_standin, out, *extra)) == 2
    assert "at least 7" in capsys.readouterr().err and not out.exists()
