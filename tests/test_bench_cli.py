"""`accel bench` end to end on a tiny random-init DiT pipeline with the real method registry,
bad input (every one: one line on stderr, exit 2, nothing written), and 2 processes.

`interval-cache:interval=2,warmup=1` is the method of choice here because its block
counts are exact: of 8 steps it computes steps 0, 1, 3, 5, 7 and reuses 2, 4, 6, so with
2 blocks a pipeline call evaluates 10 of 16 blocks (ideal speedup 1.6).
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

import accel
from accel.cli import main
from accel.eval import report
from accel.testing import tiny_class_pipeline

IC = "interval-cache:interval=2,warmup=1"

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


def _strict_load(text: str):
    def refuse(token):
        raise AssertionError(f"non-standard JSON token {token}")

    return json.loads(text, parse_constant=refuse)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    (root / "tiny_features.py").write_text(FEATURES)
    tiny_class_pipeline(num_layers=2).save_pretrained(str(root / "tiny-dit"))
    (root / "prompts.txt").write_text("a red fox\n")
    return root


@pytest.fixture
def features_on_path(env, monkeypatch):
    monkeypatch.syspath_prepend(str(env))
    return env


def _args(env, out, *extra):
    return ["bench", "--model", str(env / "tiny-dit"), "--steps", "8", "--num-images", "16",
            "--batch-size", "4", "--guidance", "2.0", "--repeats", "2", "--timing-images", "2",
            "--threads", "1", "--device", "cpu", "--quiet", "--out", str(out), *extra]


def test_bench_end_to_end(features_on_path, tmp_path, capsys):
    env = features_on_path
    out = tmp_path / "out"
    argv = _args(env, out, "--methods", f"baseline,{IC}", "--features", "tiny_features:make", "--seed-sets", "2",
                 "--lpips")
    assert main(argv) == 0
    assert sorted(p.name for p in out.iterdir()) == [".accel-manifest.json", "grid.png", "pareto.png", "report.html",
                                                     "results.csv", "results.json"]  # the manifest: what accel wrote
    doc = _strict_load((out / "results.json").read_text())
    report.validate_results(doc)
    base, ic = doc["records"]
    assert [base["method"], ic["method"]] == ["baseline", IC]
    # identical images: infinite PSNR, written as null with a note
    assert base["psnr"] is None and base["ssim"] == pytest.approx(1.0)
    assert "psnr null = identical to baseline (infinite): baseline" in doc["notes"]
    assert base["fd"] == pytest.approx(0.0, abs=1e-9) and ic["fd"] > 0
    assert ic["fd_name"] == "FD-vs-baseline" and len(ic["fd_per_set"]) == 2
    assert ic["fd_spread"] is not None and ic["fd_check"] == pytest.approx(ic["fd"], rel=1e-3)
    assert math.isfinite(ic["psnr"]) and ic["ssim"] < 1
    assert [c["name"] for c in ic["config"]] == ["interval-cache"]
    assert {k: ic["config"][0]["params"][k] for k in ("interval", "warmup")} == {"interval": 2, "warmup": 1}
    # block counts of one timed call (2 blocks x 8 steps), exact: the cache really reuses
    assert (base["block_evals"], base["block_total"], base["ideal_speedup"]) == (16, 16, 1.0)
    assert (ic["block_evals"], ic["block_total"]) == (10, 16) and ic["ideal_speedup"] == pytest.approx(1.6)
    assert ic["achieved_over_ideal"] == pytest.approx(ic["speedup"] / 1.6)
    assert ic["speedup"] > 0 and ic["time_s"] > 0
    assert base["num_images"] == 16 and base["steps"] == 8 and base["threads"] == 1
    if sys.platform == "linux":
        assert ic["peak_mem_mb"] > 0
    meta = doc["meta"]
    assert meta["command"] == ["accel", *argv]
    assert set(meta["versions"]) >= {"torch", "diffusers", "accelerate", "torchmetrics", "accel"}
    assert meta["versions"]["accel"] == accel.__version__
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                          cwd=Path(accel.__file__).parent).stdout.strip()
    assert (meta["git_commit"] or "").startswith(head) if head else meta["git_commit"] is None
    stdout = capsys.readouterr().out
    assert IC in stdout and "FD-vs-baseline" in stdout and "inf" in stdout  # the table keeps "inf"
    assert (out / "results.csv").read_text().count("\n") == 3
    notes = " ".join(doc["notes"])
    assert "timing:" in notes and "per timed call" in notes
    assert "fd_delta_noise" not in base and ic["fd_delta_noise"] > 0  # paired bootstrap over the images
    if ic["lpips"] is None:  # no local LPIPS backend: said so, nothing downloaded
        assert "LPIPS unavailable" in notes
    assert not list(tmp_path.glob(".out.tmp-*"))


def test_a_method_that_cannot_do_its_work_says_so_in_the_notes(features_on_path, tmp_path):
    """What a method puts in its .stats() warnings (here: a residual threshold never met) reaches the notes."""
    out = tmp_path / "out"
    argv = _args(features_on_path, out, "--methods", "baseline,residual-cache:threshold=1e-9", "--features",
                 "tiny_features:make")
    argv[argv.index("--num-images") + 1] = "8"
    assert main(argv) == 0
    doc = _strict_load((out / "results.json").read_text())
    said = [n for n in doc["notes"] if "never met" in n]
    assert len(said) == 1
    assert said[0].startswith("residual-cache:threshold=1e-9: residual-cache: threshold 1e-09 never met in 8 steps")
    assert doc["records"][1]["block_evals"] == doc["records"][0]["block_evals"]


def _error_lines(err: str) -> list[str]:
    """stderr without the run header and the loaders' progress bars: what must be one error line."""
    return [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("accel bench: model=")
            and "it/s]" not in ln]


def _bad(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        sys.exit(main(argv))
    return exc.value.code, capsys.readouterr().err


BAD_FLAGS = [
    (["--methods", "baseline,warp-drive"], "unknown method 'warp-drive'"),
    (["--methods", "interval-cache:interval"], "key=value"),
    (["--methods", "interval-cache:interval=0"], "interval must be"),
    (["--methods", "interval-cache:speed=3"], "no option 'speed'"),
    (["--methods", "delta-cache:boundary=soon"], "delta-cache:boundary: expected int or float, got 'soon'"),
    (["--methods", "residual-cache:max_consecutive=1.5"], "residual-cache:max_consecutive: expected int or none"),
    (["--methods", "delta-cache+interval-cache"], "cannot be applied"),
    (["--methods", "attention:backend=xformers"], "xformers"),  # BackendUnavailableError (not installed here)
    (["--features", "tiny_features:make", "--num-images", "4"], "at least 7 images"),
    (["--steps", "nope"], "invalid int"),
    (["--steps", "-1"], "--steps must be >= 1"),
    (["--steps", "0"], "--steps must be >= 1"),
    (["--num-images", "0"], "--num-images must be >= 1"),
    (["--batch-size", "0"], "--batch-size must be >= 1"),
    (["--repeats", "0"], "--repeats must be >= 1"),
    (["--seed-sets", "0"], "--seed-sets must be >= 1"),
    (["--warmup", "-1"], "--warmup must be >= 0"),
    (["--timing-images", "0"], "--timing-images must be >= 1"),
    (["--threads", "0"], "--threads must be >= 1"),
    (["--seed", "-3"], "--seed must be >= 0"),
    (["--height", "0"], "--height must be >= 1"),
    (["--guidance", "nan"], "--guidance must be a finite number"),
    (["--dtype", "float64"], "--dtype 'float64'"),
    (["--device", "tpu"], "--device 'tpu'"),
    (["--device", "not-a-device"], "--device 'not-a-device'"),
    (["--device", "cuda:99"], "--device cuda:99"),
    (["--scheduler", "warp"], "--scheduler 'warp'"),
    (["--prompt-column", "caption"], "--prompt-column needs --prompts"),
    (["--prompts", "{env}/prompts.txt"], "class-conditional"),
    (["--negative-prompt", "blurry"], "--negative-prompt: DiTPipeline.__call__ takes no 'negative_prompt'"),
    (["--width", "16"], "DiTPipeline.__call__ takes no 'width'"),
    (["--pipeline-kwargs", "{bad"], "--pipeline-kwargs: not valid JSON"),
    (["--pipeline-kwargs", "[1, 2]"], "--pipeline-kwargs must be a JSON object"),
    (["--pipeline-kwargs", '{"foo": 1}'], "DiTPipeline.__call__ takes no 'foo'"),
    (["--pipeline-kwargs", '{"num_inference_steps": 3}'], "'num_inference_steps' is set by the bench; use --steps"),
]


@pytest.mark.parametrize("extra, msg", BAD_FLAGS, ids=[" ".join(e) for e, _ in BAD_FLAGS])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(features_on_path, tmp_path, capsys, extra, msg):
    out = tmp_path / "out"
    extra = [e.replace("{env}", str(features_on_path)) for e in extra]
    # later flags win in argparse, so appended extras override the defaults above
    code, err = _bad(_args(features_on_path, out, *extra), capsys)
    lines = _error_lines(err)
    assert code == 2 and len(lines) == 1 and lines[0].startswith("accel bench: error: "), err
    assert msg in lines[0] and "Traceback" not in err
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_model_errors_exit_2(features_on_path, tmp_path, capsys, monkeypatch):
    """ModelNotFoundError, UnsupportedModelError (a folder, a pipeline without a transformer),
    AlreadyAcceleratedError (the loaded model already carries a handle)."""
    import diffusers as d

    unet = tmp_path / "unet-pipe"
    d.DDPMPipeline(unet=d.UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8,),
                                      layers_per_block=1, norm_num_groups=4, down_block_types=("DownBlock2D",),
                                      up_block_types=("UpBlock2D",)),
                   scheduler=d.DDPMScheduler()).save_pretrained(str(unet))
    folder = tmp_path / "not-a-model"
    folder.mkdir()
    (folder / "readme.txt").write_text("hi")
    cases = [(str(tmp_path / "missing" / "dir"), "no such folder"), (str(folder), "no model_index.json"),
             (str(unet), "UNet pipelines are not supported")]
    for model, msg in cases:
        args = _args(features_on_path, tmp_path / "out")
        args[args.index("--model") + 1] = model
        code, err = _bad(args, capsys)
        assert code == 2 and len(_error_lines(err)) == 1 and msg in err and "Traceback" not in err, err
    import accel.pipelines.loader

    held = []

    def accelerated(path, device="cpu", dtype=None):
        pipe = tiny_class_pipeline(num_layers=2)
        held.append(accel.apply(pipe))
        return pipe

    monkeypatch.setattr(accel.pipelines.loader, "load_pipeline", accelerated)  # what the one loader calls
    code, err = _bad(_args(features_on_path, tmp_path / "out"), capsys)
    assert code == 2 and "already accelerated" in err and len(_error_lines(err)) == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_two_processes_same_fd_as_one(features_on_path, tmp_path):
    env = features_on_path
    common = ["--methods", f"baseline,{IC}", "--features", "tiny_features:make", "--num-images", "12",
              "--batch-size", "3"]
    out1, out2 = tmp_path / "one", tmp_path / "two"
    assert main(_args(env, out1, *common)) == 0
    penv = dict(os.environ, PYTHONPATH=os.pathsep.join([str(env), os.environ.get("PYTHONPATH", "")]),
                OMP_NUM_THREADS="1")
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
    assert r1[1]["fd"] > 0 and r1[1]["block_evals"] < r1[1]["block_total"]


def test_reference_images_folder_is_cached(features_on_path, tmp_path, monkeypatch, capsys):
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
        assert main(_args(features_on_path, out, *extra)) == 0
        rec = json.loads((out / "results.json").read_text())["records"][0]
        assert rec["fd_name"] == "FD" and rec["fd"] > 0
        fds.append(rec["fd"])
        assert len(list((cache / "fd_stats").glob("*.safetensors"))) == 1
    assert fds[0] == pytest.approx(fds[1], rel=1e-12)
    # too few reference images for the feature size: exit 2, nothing written
    for p in list(ref.iterdir())[4:]:
        p.unlink()
    out = tmp_path / "few"
    assert main(_args(features_on_path, out, *extra)) == 2
    assert "at least 7" in capsys.readouterr().err and not out.exists()
