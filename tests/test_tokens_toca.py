"""`toca`: exact at interval 1, schedule and token counts, per-call reset, selection spread/staleness."""

from __future__ import annotations

import math

import pytest
import torch

import accel
from accel.caching import IntervalCacheConfig
from accel.testing import run_tiny, tiny_transformer, transformer_inputs
from accel.tokens import TocaConfig
from accel.tokens.toca import Toca, _BlockCache


def test_interval1_is_bit_identical_and_defaults_cache(tiny_pipes, family):
    pipe = tiny_pipes[family]
    reference = run_tiny(pipe, family, steps=6)
    state = {n: sorted(m.__dict__) for n, m in pipe.transformer.named_modules()}
    with accel.apply(pipe, TocaConfig(interval=1)) as handle:
        assert torch.equal(run_tiny(pipe, family, steps=6), reference)
        assert handle.stats()["toca"]["reused_tokens"] == 0
    with accel.apply(pipe, TocaConfig()) as handle:
        first = run_tiny(pipe, family, steps=6)
        second = run_tiny(pipe, family, steps=6)  # state resets per pipeline call
        stats = handle.stats()["toca"]
    assert torch.equal(first, second)
    assert first.shape == reference.shape and torch.isfinite(first).all()
    assert not torch.equal(first, reference)
    assert stats["reused_tokens"] > 0 and 0 < stats["total"]["flops_ratio"] < 1
    assert ("mlp" in stats["merged_sublayers"]) == (family != "sana")  # Sana's conv MLP is never cached
    assert {n: sorted(m.__dict__) for n, m in pipe.transformer.named_modules()} == state
    assert torch.equal(run_tiny(pipe, family, steps=6), reference)


def test_schedule_and_recomputed_counts():
    model = tiny_transformer("dit", num_layers=2)
    kw = transformer_inputs("dit", model)  # batch 2, 4x4 = 16 tokens
    config = TocaConfig(interval=3, warmup=1, recompute=0.25)
    with torch.no_grad(), accel.apply(model, config) as h:
        for t in range(900, 200, -100):  # 7 steps: full at 0, 1, 4; partial at 2, 3, 5, 6
            model(**{**kw, "timestep": torch.full((2,), t)})
        total = h.stats()["toca"]["total"]
    n, k, b, blocks = 16, math.ceil(0.25 * 16), 2, 2
    assert total["attention.tokens_in"] == 7 * n * b * blocks
    assert total["attention.tokens_out"] == (3 * n + 4 * k) * b * blocks
    assert total["mlp.tokens_out"] == total["attention.tokens_out"]


@pytest.mark.parametrize("sub", ["ff", "attn1"])
def test_recomputed_tokens_are_fresh_and_the_rest_reused(sub):
    """On a partial step the output of recomputed tokens equals a fresh full call (self-attention:
    the recomputed queries attend to every token); the other tokens keep the cached output."""
    model = tiny_transformer("dit", num_layers=1)
    kw = transformer_inputs("dit", model)
    ff = getattr(model.transformer_blocks[0], sub)
    seen = []
    handle_in = ff.register_forward_pre_hook(lambda m, a: seen.append(("in", a[0])))
    handle_out = ff.register_forward_hook(lambda m, a, o: seen.append(("out", o)))
    with torch.no_grad(), accel.apply(model, TocaConfig(interval=2, warmup=1, recompute=0.25)):
        for t in (900, 800, 700):  # full, full, partial
            model(**{**kw, "timestep": torch.full((2,), t)})
        handle_in.remove()
        handle_out.remove()
        (_, x0), (_, y0), (_, x1), (_, y1) = seen[2:]
        fresh = ff(x1)
    same = (y1 == y0).all(-1)  # reused tokens: bit-equal to the step before
    assert same.sum() == 2 * (16 - 4)
    assert torch.allclose(y1[~same], fresh[~same], atol=1e-6)


def _toca(config: TocaConfig):
    toca = Toca.__new__(Toca)
    toca.config = config
    return toca


def test_selection_spreads_over_the_grid_and_refreshes_every_token():
    toca = _toca(TocaConfig(interval=100, recompute=0.25, importance=0.0, spread=1.0))
    cache = _BlockCache()
    cache.age = torch.zeros(1, 64, dtype=torch.long)
    keep = toca.select(cache, 16, (8, 8))
    windows = {(int(i) // 8 // 2, int(i) % 8 // 2) for i in keep[0]}
    assert len(windows) == 16  # one per 2x2 window
    seen = set()
    for _ in range(4):  # staleness alone: every token comes back within 1/recompute partial steps
        keep = toca.select(cache, 16, (8, 8))
        cache.age += 1
        cache.age.scatter_(1, keep, 0)
        seen |= set(keep[0].tolist())
    assert seen == set(range(64))


def test_importance_prefers_changing_tokens():
    toca = _toca(TocaConfig(recompute=0.25, importance=10.0, spread=0.0))
    cache = _BlockCache()
    cache.age = torch.zeros(2, 16, dtype=torch.long)
    cache.change = torch.full((2, 16), 0.01)
    cache.change[0, [3, 5, 9, 12]] = 1.0
    cache.change[1, [0, 1, 2, 15]] = 1.0
    keep = toca.select(cache, 4, (4, 4))
    assert keep.tolist() == [[3, 5, 9, 12], [0, 1, 2, 15]]  # per sample


def test_stacks_with_interval_cache_and_undoes_exactly(tiny_pipes):
    pipe = tiny_pipes["dit"]
    reference = run_tiny(pipe, "dit", steps=6)
    with accel.apply(pipe, IntervalCacheConfig(interval=2, min_steps=0), TocaConfig(interval=3, warmup=1)) as handle:
        out = run_tiny(pipe, "dit", steps=6)
        stats = handle.stats()
    assert stats["interval-cache"]["total"]["blocks_reused"] > 0 and stats["toca"]["reused_tokens"] > 0
    assert torch.isfinite(out).all()
    assert torch.equal(run_tiny(pipe, "dit", steps=6), reference)


@pytest.mark.parametrize("kwargs,field", [
    ({"interval": 0}, "interval"), ({"recompute": 0}, "recompute"), ({"recompute": 1.5}, "recompute"),
    ({"warmup": -1}, "warmup"), ({"importance": -1}, "importance"), ({"spread": 2}, "spread"),
])
def test_bad_settings_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        TocaConfig(**kwargs)
