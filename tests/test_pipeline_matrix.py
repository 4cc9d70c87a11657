"""Every declared pipeline beside text-to-image (accel.testing_pipelines.CASES) x every method it lists.

Per case and method: it runs, saves work (a cache evaluates fewer blocks, a token method
fewer FLOPs), the output is finite with the uncached shape, PSNR to the uncached output of
the same pipeline is above `PSNR_FLOOR_DB`, and `.remove()` restores it bit for bit.
Control cases: the accelerated image is closer to the controlled baseline than to the
uncontrolled one. Floors: `accel.testing_pipelines.PSNR_FLOOR_DB`, 3 dB under the lowest value
measured on this table (10 steps; strength 0.8 executes 8; 2-core CPU, torch 2.13).
"""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch

import accel
from accel.testing_pipelines import CASES, KINDS, PSNR_FLOOR_DB, SETTINGS, case, docs_page

PAIRS = [(c.pipeline, m) for c in CASES for m in c.methods]
VIDEO = {"CogVideoX", "LTX", "Wan"}  # 3-D VAEs: the slowest cases, marked slow


def _params(rows: list[tuple]) -> list:
    return [pytest.param(*r, id="-".join(r[:2]), marks=[pytest.mark.slow] if case(r[0]).family in VIDEO else [])
            for r in rows]


def _images(out) -> torch.Tensor:
    x = out.images if hasattr(out, "images") else out.frames
    return torch.as_tensor(x).float()


def _run(pipe, c, **over) -> torch.Tensor:
    """One call; the global RNG is seeded too (SD3 / Qwen-Image ControlNet sample their control latent from it)."""
    torch.manual_seed(0)
    return _images(pipe(**c.inputs(**over)))


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a - b) ** 2).mean())
    return float("inf") if mse == 0 else 10 * torch.log10(torch.tensor(1.0 / mse)).item()


@functools.lru_cache(maxsize=4)
def _baseline(name: str) -> tuple:
    c = case(name)
    pipe = c.build()
    base = _run(pipe, c)
    free = None
    if c.controlled:
        free = _run(pipe, c, controlnet_conditioning_scale=0.0)
    return pipe, base, free


def _config(c, pipe, method: str):
    config = accel.methods()[method](**SETTINGS.get(method, {}))
    config.prepare(pipe, lambda: pipe(**c.inputs(seed=7)))  # schedule-cache calibrates on another seed
    return config


def _saved_work(config, stats: dict, method: str) -> bool:
    if config.kind == "cache":
        return 0 < stats["total"]["block_evals"] < stats["total"]["block_total"]
    return 0 < stats[method]["total"]["flops_ratio"] < 1


@pytest.mark.parametrize("name,method", _params(PAIRS))
def test_pipeline_method(name, method):
    c = case(name)
    pipe, base, free = _baseline(name)
    config = _config(c, pipe, method)
    handle = accel.apply(pipe, config)
    try:
        out = _run(pipe, c)
        stats = handle.stats()
    finally:
        handle.remove()
    assert _saved_work(config, stats, method), stats
    assert out.shape == base.shape and torch.isfinite(out).all()
    psnr = _psnr(out, base)
    print(f"PSNR {name} {method} {psnr:.1f} evals {stats.get('total', {}).get('block_evals')}")  # shown with -s
    assert psnr >= PSNR_FLOOR_DB[method], f"{name} {method}: {psnr:.1f} dB"
    if free is not None:
        assert ((out - base) ** 2).mean() < ((out - free) ** 2).mean(), "closer to the uncontrolled image"
    assert torch.equal(_run(pipe, c), base), ".remove() did not restore the pipeline"


REFUSED = [(c.pipeline, m, reason) for c in CASES for m, reason in c.refused]


@pytest.mark.parametrize("name,method,reason", REFUSED, ids=[f"{p}-{m}" for p, m, _ in REFUSED])
def test_refused_in_one_line(name, method, reason):
    """Where a method cannot keep its promise (tome would merge reference-image tokens into the
    generated ones), it stops with one line saying why, and the pipeline is left as it was."""
    c = case(name)
    pipe, base, _ = _baseline(name)
    with accel.apply(pipe, accel.methods()[method]()):
        with pytest.raises(accel.UnsupportedMethodError, match=reason) as err:
            _run(pipe, c)
    assert "\n" not in str(err.value)
    assert torch.equal(_run(pipe, c), base)


def test_table_covers_every_kind_and_the_docs_page_is_generated():
    assert {c.kind for c in CASES} == set(KINDS)
    assert len({c.pipeline for c in CASES}) == len(CASES)
    page = (Path(__file__).resolve().parent.parent / "docs" / "pipelines.md").read_text()
    assert page == docs_page(), "docs/pipelines.md out of date: run `python scripts/pipelines_table.py --write`"
