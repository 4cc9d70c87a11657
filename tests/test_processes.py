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


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return env


def _launch(args: list[str], timeout: int) -> None:
    proc = subprocess.run(args, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]


def test_no_group_outside_context_parallelism() -> None:
    model = torch.nn.Linear(2, 2)
    values = torch.tensor([1.0, 2.0])
    assert accel_dist.context_parallel_group(model) is None
    assert accel_dist.sum_across_ranks(model, values) is values


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
