"""accel across processes: adaptive caches under diffusers' context parallelism, and `accel distill`
with accelerate (issue 21, item 6). Both launch real process groups (gloo, CPU) in subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import accel.distributed as accel_dist

ROOT = Path(__file__).resolve().parent.parent


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {**os.environ, **(extra or {})}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return env


def _launch(args: list[str], timeout: int, env: dict[str, str] | None = None) -> None:
    proc = subprocess.run(args, cwd=ROOT, env=_env(env), capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]


def test_no_group_outside_context_parallelism() -> None:
    model = torch.nn.Linear(2, 2)
    values = torch.tensor([1.0, 2.0])
    assert accel_dist.context_parallel_group(model) is None
    assert accel_dist.sum_across_ranks(model, values) is values


@pytest.mark.slow
def test_residual_cache_decides_the_same_on_every_context_parallel_rank(tmp_path: Path) -> None:
    """Tiny Flux pipeline, Ulysses degree 2 (diffusers' ring attention needs an attention backend that
    returns the log-sum-exp, which the native CPU backend does not): each rank holds half of the tokens."""
    _launch([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
             str(ROOT / "tests" / "_cp_worker.py"), str(tmp_path), "ulysses"], timeout=240)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    images = [load_file(tmp_path / f"rank{r}.safetensors") for r in (0, 1)]
    threshold = ranks[0]["threshold"]

    # the data makes the ranks' own slices disagree: alone, some rank would reuse where the other computes
    local = [[d["local"] < threshold for d in r["parallel"]["decisions"]] for r in ranks]
    assert local[0] != local[1], local

    # with the all-reduce: one decision on every rank, the single-process one
    changes = [[d["change"] for d in r["parallel"]["decisions"]] for r in ranks]
    assert changes[0] == changes[1]
    alone = [d["change"] for d in ranks[0]["alone"]["decisions"]]
    assert changes[0] == pytest.approx(alone, rel=1e-4)
    totals = [r["parallel"]["stats"]["residual-cache"]["total"] for r in ranks]
    assert totals[0] == totals[1] == ranks[0]["alone"]["stats"]["residual-cache"]["total"]
    assert totals[0]["blocks_reused"] > 0  # it did cache

    torch.testing.assert_close(images[0]["parallel"], images[1]["parallel"], rtol=0, atol=0)
    torch.testing.assert_close(images[0]["parallel"], images[0]["alone"], rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------- distillation with accelerate
def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def distill_folders(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from PIL import Image

    from accel.cli import main
    from accel.testing import tiny_class_pipeline

    root = tmp_path_factory.mktemp("distill2")
    tiny_class_pipeline(num_layers=3).save_pretrained(root / "teacher")
    assert main(["prune", "--model", str(root / "teacher"), "--keep", "2", "--selector", "first",
                 "--out", str(root / "student"), "--quiet"]) == 0
    g = torch.Generator().manual_seed(0)
    for c in (0, 1):
        (root / "images" / str(c)).mkdir(parents=True)
        for i in range(3):
            pixels = (torch.rand(12, 12, generator=g) * 255).byte().numpy()
            Image.fromarray(pixels, mode="L").save(root / "images" / str(c) / f"{i}.png")
    return root


def _distill_args(root: Path, out: Path, steps: int) -> list[str]:
    return ["distill", "--teacher", str(root / "teacher"), "--student", str(root / "student"), "--data",
            str(root / "images"), "--out", str(out), "--steps", str(steps), "--batch-size", "8", "--save-every", "2",
            "--lr", "1e-3", "--quiet"]


def _losses(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "losses.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_distill_in_two_processes_matches_one_and_resumes(distill_folders: Path, tmp_path: Path) -> None:
    """`--batch-size` is the global batch: 2 processes of 4 samples give the losses of 1 process of 8, and a
    2-process run stopped at step 2 resumes in 2 processes. The launch form is docs/composition.md's:
    `ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes 2 -m accel.cli distill ...`
    (accelerate 1.16's `--cpu --num_processes 2` starts a single process)."""
    from accel.cli import main

    one = tmp_path / "one"
    assert main(_distill_args(distill_folders, one, 4)) == 0
    two = tmp_path / "two"
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--main_process_port", str(_free_port()), "--mixed_precision", "no", "--dynamo_backend", "no",
              "-m", "accel.cli"]
    env = {"ACCELERATE_USE_CPU": "true"}
    _launch([*launch, *_distill_args(distill_folders, two, 2)], timeout=180, env=env)
    first = _losses(two)
    _launch([*launch, *_distill_args(distill_folders, two, 4), "--resume"], timeout=180, env=env)
    info = json.loads((two / "distill.json").read_text())
    assert info["num_processes"] == 2 and info["steps"] == 4
    resumed, single = _losses(two), _losses(one)
    assert resumed[:2] == first  # the resume continued the 2-process run from its step-2 checkpoint
    assert [s["step"] for s in resumed] == [1, 2, 3, 4]
    for a, b in zip(single, resumed):
        for key in ("loss", "task", "out", "feat"):
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-7), (key, a, b)


def test_batch_shard_slices_the_global_batch() -> None:
    from accel.pruning.distill import Batch

    x, t = torch.arange(8.0).view(8, 1), torch.arange(8)
    batch = Batch((x,), {"timestep": t, "return_dict": False}, x + 1)
    part = batch.shard(1, 2)
    assert part.args[0].flatten().tolist() == [4, 5, 6, 7] and part.kwargs["timestep"].tolist() == [4, 5, 6, 7]
    assert part.noise.flatten().tolist() == [5, 6, 7, 8] and part.kwargs["return_dict"] is False
    assert batch.shard(0, 1) is batch
    with pytest.raises(ValueError, match="divisible by the 3 processes"):
        batch.shard(0, 3)
