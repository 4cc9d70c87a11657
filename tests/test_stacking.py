"""Stacking: a pruned pipeline folder, one block cache and one token method through one `accel.apply`.

Each stack equals the composition of its parts where that is defined (a cache that never
skips + tokens == tokens alone; a no-op token setting + a cache == the cache alone; the
same stack on a pruned folder loaded by accel and by plain diffusers), its counters add
up (blocks the tracker saw run == blocks the cache computed == block calls the token
method counted), and `.remove()` restores outputs, state dict and module attributes.
"""

from __future__ import annotations

import diffusers
import pytest
import torch

import accel
from accel.caching import DeltaCacheConfig, IntervalCacheConfig
from accel.pipelines import load_pipeline
from accel.pruning import prune_model, save_pipeline
from accel.testing import run_tiny
from accel.tokens import TocaConfig, TomeConfig

STEPS = 6
ROWS = 2  # one image, CFG as one doubled batch
KEEP = [0, 1, 2, 3, 5, 6, 7, 9, 10, 11]  # 10 of the default model's 12 blocks (interior ones removed)
TOKENS = 256  # image tokens of the default model (32x32, patch 2)


def _state(model: torch.nn.Module) -> dict:
    return {n: sorted(m.__dict__) for n, m in model.named_modules()}


def _weights(model: torch.nn.Module) -> dict:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same_weights(model: torch.nn.Module, weights: dict) -> bool:
    now = model.state_dict()
    return now.keys() == weights.keys() and all(torch.equal(now[k], weights[k]) for k in weights)


def run(pipe, steps: int = STEPS) -> torch.Tensor:
    """One class-conditional image (CFG as one doubled batch: `ROWS` rows per transformer call)."""
    out = pipe(class_labels=[7], num_inference_steps=steps, guidance_scale=2.0,
               generator=torch.Generator().manual_seed(0), output_type="np").images
    return torch.as_tensor(out)


def stacked(pipe, *configs) -> tuple[torch.Tensor, dict]:
    with accel.apply(pipe, *configs) as handle:
        out = run(pipe)
        return out, handle.stats()


def check_adds_up(stats: dict, blocks: int, cache: str | None, tokens: str | None) -> None:
    """Blocks run (tracker) == blocks the cache computed == block calls of the token method."""
    total = stats["total"]
    assert total["block_total"] == blocks * STEPS
    evals = total["block_evals"]
    if cache:
        c = stats[cache]["total"]
        assert c["blocks_computed"] == evals and c["blocks_computed"] + c["blocks_reused"] == total["block_total"]
    if tokens:
        t = stats[tokens]
        assert t["total"]["block_calls"] == evals
        assert sorted(t["per_block"]) == list(range(blocks))
        assert t["total"]["attention.tokens_in"] == evals * ROWS * TOKENS  # only computed blocks


def check_removed(pipe, reference: torch.Tensor, state: dict, weights: dict) -> None:
    assert torch.equal(run(pipe), reference)
    assert _state(pipe.transformer) == state
    assert _same_weights(pipe.transformer, weights)


@pytest.fixture(scope="module")
def digits():
    pipe = accel.default_pipeline()
    return pipe, run(pipe)


@pytest.fixture(scope="module")
def pruned_dir(digits, tmp_path_factory):
    """A pipeline folder of the default model with blocks 4 and 8 removed (what `accel prune` writes)."""
    pipe, _ = digits
    return save_pipeline(pipe, prune_model(pipe.transformer, KEEP), tmp_path_factory.mktemp("stack") / "pruned10")


@pytest.fixture(scope="module")
def pruned(pruned_dir):
    pipe = load_pipeline(str(pruned_dir))
    pipe.set_progress_bar_config(disable=True)
    assert len(pipe.transformer.transformer_blocks) == len(KEEP)
    return pipe, run(pipe)


# ----------------------------------------------------------------------------- pruned + cache
def test_pruned_plus_cache(pruned):
    pipe, reference = pruned
    state, weights = _state(pipe.transformer), _weights(pipe.transformer)
    never, _ = stacked(pipe, IntervalCacheConfig(interval=1, min_steps=0))
    assert torch.equal(never, reference)
    out, stats = stacked(pipe, DeltaCacheConfig(interval=2, cached_blocks=0.5, min_steps=0))
    check_adds_up(stats, len(KEEP), "delta-cache", None)
    reused = stats["delta-cache"]["total"]["blocks_reused"]
    assert reused == 5 * (STEPS // 2)  # half of the 10 kept blocks (not of 12) on every other step
    assert not torch.equal(out, reference) and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="cached_blocks=11 exceeds the model's 10 blocks"):
        accel.apply(pipe, TomeConfig(ratio=0.5), DeltaCacheConfig(cached_blocks=11))
    check_removed(pipe, reference, state, weights)  # nothing half-installed either


# ----------------------------------------------------------------------------- pruned + tokens
def test_pruned_plus_tokens(pruned):
    pipe, reference = pruned
    state, weights = _state(pipe.transformer), _weights(pipe.transformer)
    noop, _ = stacked(pipe, TomeConfig(ratio=0.0))
    assert torch.equal(noop, reference)
    out, stats = stacked(pipe, TomeConfig(ratio=0.5, blocks="5-9"))
    check_adds_up(stats, len(KEEP), None, "tome")
    per_block = stats["tome"]["per_block"]
    assert all(per_block[i]["attention"]["tokens_out"] < per_block[i]["attention"]["tokens_in"] for i in range(5, 10))
    assert all(per_block[i]["attention"]["tokens_out"] == per_block[i]["attention"]["tokens_in"] for i in range(5))
    assert not torch.equal(out, reference)
    with pytest.raises(ValueError, match="blocks: block index 10 out of range; the model has 10 blocks"):
        accel.apply(pipe, TomeConfig(blocks="0-11"))
    check_removed(pipe, reference, state, weights)


# ----------------------------------------------------------------------------- cache + tokens
def test_cache_plus_tokens_composes(digits):
    pipe, reference = digits
    state, weights = _state(pipe.transformer), _weights(pipe.transformer)
    toca = TocaConfig(interval=2, warmup=1)
    alone, alone_stats = stacked(pipe, toca)
    for never in (IntervalCacheConfig(interval=1, min_steps=0), DeltaCacheConfig(interval=1, min_steps=0)):
        out, stats = stacked(pipe, never, toca)  # a cache that never skips + tokens == tokens alone
        assert torch.equal(out, alone)
        assert stats["toca"]["total"] == alone_stats["toca"]["total"]
    cache = IntervalCacheConfig(interval=3, warmup=1, min_steps=0)
    cached, cached_stats = stacked(pipe, cache)
    for noop in (TomeConfig(ratio=0.0), TocaConfig(interval=1)):  # no-op tokens + a cache == the cache alone
        out, stats = stacked(pipe, cache, noop)
        assert torch.equal(out, cached)
        assert stats["interval-cache"]["total"] == cached_stats["interval-cache"]["total"]
        check_adds_up(stats, 12, "interval-cache", noop.cli_name)
    check_removed(pipe, reference, state, weights)


def test_skipped_blocks_never_reach_the_token_method(digits):
    """Whatever the order given to apply, the cache wraps the token method: same images, same counters."""
    pipe, reference = digits
    cache, tome = DeltaCacheConfig(interval=2, cached_blocks=0.5, min_steps=0), TomeConfig(ratio=0.5)
    a, sa = stacked(pipe, cache, tome)
    b, sb = stacked(pipe, tome, cache)
    assert torch.equal(a, b)
    assert sa["tome"]["total"] == sb["tome"]["total"] and sa["total"] == sb["total"]
    check_adds_up(sa, 12, "delta-cache", "tome")
    assert sa["total"]["block_evals"] < sa["total"]["block_total"]
    assert torch.equal(run(pipe), reference)


def test_toca_schedule_counts_the_steps_a_block_is_computed(digits):
    """interval-cache 2 (warmup 1) computes steps 0, 1, 3, 5 of 6; toca 2 (warmup 1) over those 4
    computed steps is full, full, partial, full. Counting denoising steps instead, every computed
    step would be a full one (0, 1, 3, 5 are all toca full steps): no compression at all."""
    pipe, _ = digits
    toca = TocaConfig(interval=2, warmup=1, recompute=0.25)
    _, stats = stacked(pipe, IntervalCacheConfig(interval=2, warmup=1, min_steps=0), toca)
    check_adds_up(stats, 12, "interval-cache", "toca")
    rows = ROWS * 12  # rows per transformer call x blocks
    partial = TOKENS // 4  # recompute 0.25 of 256 tokens
    assert stats["total"]["block_evals"] == 4 * 12
    assert stats["toca"]["total"]["attention.tokens_out"] == rows * (3 * TOKENS + partial)
    assert stats["toca"]["total"]["mlp.tokens_out"] == rows * (3 * TOKENS + partial)


# ----------------------------------------------------------------------------- all three
def test_pruned_folder_plus_cache_plus_tokens(pruned_dir, pruned):
    pipe, reference = pruned
    state, weights = _state(pipe.transformer), _weights(pipe.transformer)
    plain = diffusers.DiTPipeline.from_pretrained(pruned_dir)  # no accel loader
    plain.set_progress_bar_config(disable=True)
    cache, toca = IntervalCacheConfig(interval=3, warmup=1, min_steps=0), TocaConfig(interval=2, warmup=1)
    out, stats = stacked(pipe, cache, toca)
    plain_out, plain_stats = stacked(plain, cache, toca)
    assert torch.equal(out, plain_out)
    assert {k: stats[k]["total"] for k in ("interval-cache", "toca")} == \
           {k: plain_stats[k]["total"] for k in ("interval-cache", "toca")} and stats["total"] == plain_stats["total"]
    check_adds_up(stats, len(KEEP), "interval-cache", "toca")
    assert stats["total"]["block_evals"] < stats["total"]["block_total"]
    assert not torch.equal(out, reference)
    # parts: never-skipping cache -> pruned + tokens; no-op tokens -> pruned + cache
    tokens_only, _ = stacked(pipe, toca)
    assert torch.equal(stacked(pipe, IntervalCacheConfig(interval=1, min_steps=0), toca)[0], tokens_only)
    cache_only, _ = stacked(pipe, cache)
    assert torch.equal(stacked(pipe, cache, TomeConfig(ratio=0.0))[0], cache_only)
    check_removed(pipe, reference, state, weights)


# ----------------------------------------------------------------------------- every family
def test_cache_plus_tokens_on_every_family(tiny_pipes, family):
    pipe = tiny_pipes[family]
    reference = run_tiny(pipe, family, steps=6)
    state, weights = _state(pipe.transformer), _weights(pipe.transformer)
    toca = TocaConfig(interval=2, warmup=1)
    with accel.apply(pipe, toca):
        alone = run_tiny(pipe, family, steps=6)
    with accel.apply(pipe, IntervalCacheConfig(interval=1, min_steps=0), toca):
        assert torch.equal(run_tiny(pipe, family, steps=6), alone)
    cache = DeltaCacheConfig(interval=2, cached_blocks=0.5, min_steps=0)
    with accel.apply(pipe, cache):
        cached = run_tiny(pipe, family, steps=6)
    with accel.apply(pipe, TomeConfig(ratio=0.0), cache):
        assert torch.equal(run_tiny(pipe, family, steps=6), cached)
    with accel.apply(pipe, cache, TomeConfig(ratio=0.5)) as handle:
        out = run_tiny(pipe, family, steps=6)
        stats = handle.stats()
    assert torch.isfinite(out).all() and not torch.equal(out, cached)
    evals = stats["total"]["block_evals"]
    assert 0 < evals == stats["delta-cache"]["total"]["blocks_computed"] == stats["tome"]["total"]["block_calls"]
    assert evals < stats["total"]["block_total"]
    assert torch.equal(run_tiny(pipe, family, steps=6), reference)
    assert _state(pipe.transformer) == state and _same_weights(pipe.transformer, weights)
