"""`tome` on every family: exact at ratio 0, shapes kept, Flux rotary rows, stacking, errors."""

from __future__ import annotations

import pytest
import torch

import accel
from accel.caching import IntervalCacheConfig
from accel.testing import FAMILIES, run_tiny, tiny_transformer, transformer_inputs
from accel.tokens import TomeConfig
from accel.tokens.merge import match_grid, merge, unmerge
from accel.tokens.tome import step_seed


def _state(model):
    return {n: sorted(m.__dict__) for n, m in model.named_modules()}


def _all_mergeable(family: str) -> TomeConfig:
    return TomeConfig(ratio=0.5, merge_crossattn=True if family in ("pixart", "sana") else None,
                      merge_mlp=None if family == "sana" else True)


def test_ratio0_is_bit_identical_and_remove_restores(tiny_pipes, family):
    pipe = tiny_pipes[family]
    reference = run_tiny(pipe, family, steps=2)
    state = _state(pipe.transformer)
    with accel.apply(pipe, TomeConfig(ratio=0.0, merge_mlp=None if family == "sana" else True)) as handle:
        assert torch.equal(run_tiny(pipe, family, steps=2), reference)
        stats = handle.stats()["tome"]["total"]
        assert stats["flops_ratio"] == 1.0 and stats["attention.tokens_in"] == stats["attention.tokens_out"] > 0
    with accel.apply(pipe, _all_mergeable(family)) as handle:
        merged = run_tiny(pipe, family, steps=2)
        stats = handle.stats()["tome"]
    assert merged.shape == reference.shape and torch.isfinite(merged).all()
    assert not torch.equal(merged, reference)  # it did merge
    total = stats["total"]
    assert total["attention.tokens_out"] < total["attention.tokens_in"]
    assert 0 < total["flops_ratio"] < 1
    assert stats["merged_sublayers"] == (["attention", "cross_attention"] if family == "sana"
                                         else ["attention", "cross_attention", "mlp"] if family == "pixart"
                                         else ["attention", "mlp"])
    assert set(stats["per_block"]) == set(range(len(pipe.transformer.transformer_blocks)
                                                 + len(getattr(pipe.transformer, "single_transformer_blocks", []))))
    assert _state(pipe.transformer) == state
    assert torch.equal(run_tiny(pipe, family, steps=2), reference)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_shape_dtype_device_preserved_on_every_family(dtype):
    for family in FAMILIES:
        model = tiny_transformer(family, num_layers=2).to(dtype)
        kw = transformer_inputs(family, model, batch=2)
        kw = {k: v.to(dtype) if isinstance(v, torch.Tensor) and v.is_floating_point() else v for k, v in kw.items()}
        with torch.no_grad():
            ref = model(**kw)[0]
            with accel.apply(model, _all_mergeable(family)):
                out = model(**kw)[0]
        assert out.shape == ref.shape and out.dtype == ref.dtype == dtype and out.device == ref.device, family
        assert torch.isfinite(out.float()).all(), family


def test_matching_computed_once_per_block_call(monkeypatch):
    from accel.tokens import tome

    model = tiny_transformer("pixart", num_layers=3)
    calls = []
    original = tome.Tome.match
    monkeypatch.setattr(tome.Tome, "match", lambda self, call, x: calls.append(call.ref.global_index)
                        or original(self, call, x))
    with torch.no_grad(), accel.apply(model, TomeConfig(ratio=0.5, merge_crossattn=True, merge_mlp=True)) as h:
        model(**transformer_inputs("pixart", model))
        per_block = h.stats()["tome"]["per_block"]
    assert calls == [0, 1, 2]  # three merged sub-layers per block, one matching
    assert per_block[0]["mlp"] == {"tokens_in": 32, "tokens_out": 16}


def _capture(module):
    seen = {}

    def pre(mod, args, kwargs):
        seen["kwargs"] = dict(kwargs)

    def post(mod, args, kwargs, out):
        seen["out"] = out

    return seen, module.register_forward_pre_hook(pre, with_kwargs=True), module.register_forward_hook(
        post, with_kwargs=True)


@pytest.mark.parametrize("stack,block", [("transformer_blocks", 0), ("single_transformer_blocks", 1)])
def test_flux_rotary_rows_follow_the_tokens(stack, block):
    """The hooked attention equals the same module run on hand-merged tokens with hand-gathered rotary rows."""
    model = tiny_transformer("flux", num_layers=2)
    kw = transformer_inputs("flux", model, batch=2)
    attn = getattr(model, stack)[block].attn
    global_index = block + (len(model.transformer_blocks) if stack == "single_transformer_blocks" else 0)
    seen, *handles = _capture(attn)
    with torch.no_grad():
        with accel.apply(model, TomeConfig(ratio=0.5, blocks=str(global_index))):
            model(**kw)
        for h in handles:
            h.remove()
        x = seen["kwargs"]["hidden_states"]
        text = kw["encoder_hidden_states"].shape[1]
        prefix = text if stack == "single_transformer_blocks" else 0
        gen = torch.Generator().manual_seed(step_seed(0, 0, global_index))
        m = match_grid(x[:, prefix:], x.shape[1] // 2 if not prefix else (x.shape[1] - prefix) // 2, (4, 4), 2, 2, gen)
        assert not m.same_for_batch()  # exercises the per-sample path
        cos, sin = seen["kwargs"]["image_rotary_emb"]
        expected = []
        for i in range(2):
            mi = m.select(i)
            rows = torch.cat([torch.arange(text), mi.keep[0] + text])
            xi = x[i:i + 1]
            xi = torch.cat([xi[:, :prefix], merge(xi[:, prefix:], mi)], dim=1)
            extra = {k: v[i:i + 1] for k, v in seen["kwargs"].items() if k == "encoder_hidden_states"}
            out = attn(hidden_states=xi, image_rotary_emb=(cos[rows], sin[rows]), **extra)
            img = out[0] if isinstance(out, tuple) else out
            expected.append(torch.cat([img[:, :prefix], unmerge(img[:, prefix:], mi)], dim=1))
        got = seen["out"][0] if isinstance(seen["out"], tuple) else seen["out"]
        assert torch.allclose(got, torch.cat(expected), atol=1e-5)
        # and it is not what the wrong rows (the first N - r image rows) would give
        wrong = attn(hidden_states=torch.cat([x[:1, :prefix], merge(x[:1, prefix:], m.select(0))], 1),
                     image_rotary_emb=(cos[: text + m.num_kept], sin[: text + m.num_kept]),
                     **{k: v[:1] for k, v in seen["kwargs"].items() if k == "encoder_hidden_states"})
        wrong = wrong[0] if isinstance(wrong, tuple) else wrong
        assert not torch.allclose(wrong[:, prefix:], merge(got[:1, prefix:], m.select(0)), atol=1e-4)


def test_stacks_with_a_cache_and_undoes_exactly(tiny_pipes):
    pipe = tiny_pipes["pixart"]
    reference = run_tiny(pipe, "pixart", steps=4)
    state = _state(pipe.transformer)
    cache_only = accel.apply(pipe, IntervalCacheConfig(interval=2, warmup=1, min_steps=0))
    cached = run_tiny(pipe, "pixart", steps=4)
    cache_only.remove()
    with accel.apply(pipe, IntervalCacheConfig(interval=2, warmup=1, min_steps=0), TomeConfig(ratio=0.5)) as handle:
        both = run_tiny(pipe, "pixart", steps=4)
        stats = handle.stats()
    assert stats["interval-cache"]["total"]["blocks_reused"] > 0
    computed = stats["interval-cache"]["total"]["blocks_computed"]
    assert stats["tome"]["total"]["attention.tokens_in"] == computed * 2 * 64  # only computed blocks merge (8x8 tokens)
    assert not torch.equal(both, cached)
    assert _state(pipe.transformer) == state
    assert torch.equal(run_tiny(pipe, "pixart", steps=4), reference)


def test_steps_and_blocks_select_where_to_merge():
    model = tiny_transformer("dit", num_layers=4)
    kw = transformer_inputs("dit", model)
    with torch.no_grad(), accel.apply(model, TomeConfig(ratio=0.5, blocks="1-2", start_step=1)) as h:
        for t in (900, 600):  # two steps of one call (bare transformer: timestep-driven)
            model(**{**kw, "timestep": torch.full((2,), t)})
        stats = h.stats()["tome"]
    per_block = stats["per_block"]
    assert per_block[0]["attention"]["tokens_in"] == per_block[0]["attention"]["tokens_out"] == 64
    assert per_block[1]["attention"] == {"tokens_in": 64, "tokens_out": 48}  # step 0 full, step 1 half
    assert stats["total"]["mlp.tokens_in"] == stats["total"]["mlp.tokens_out"]


def test_proportional_attention_and_key_similarity_run():
    model = tiny_transformer("dit", num_layers=2)
    kw = transformer_inputs("dit", model)
    outs = {}
    with torch.no_grad():
        for name, cfg in {"plain": TomeConfig(ratio=0.5), "prop": TomeConfig(ratio=0.5, prop_attn=True),
                          "keys": TomeConfig(ratio=0.5, similarity="keys")}.items():
            with accel.apply(model, cfg):
                outs[name] = model(**kw)[0]
    assert not torch.equal(outs["plain"], outs["prop"])
    assert not torch.equal(outs["plain"], outs["keys"])


@pytest.mark.parametrize("kwargs,field", [
    ({"ratio": -0.1}, "ratio"), ({"ratio": 1.0}, "ratio"), ({"merge_mlp": "yes"}, "merge_mlp"),
    ({"stop_step": 0}, "stop_step"), ({"sx": 1, "sy": 1}, "sx"), ({"similarity": "values"}, "similarity"),
    ({"blocks": "a-b"}, "blocks"),
])
def test_bad_settings_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        TomeConfig(**kwargs)


@pytest.mark.parametrize("family,kwargs,field", [
    ("sana", {"merge_mlp": True}, "merge_mlp"),
    ("dit", {"merge_crossattn": True}, "merge_crossattn"),
    ("flux", {"merge_crossattn": True}, "merge_crossattn"),
    ("sd3", {"prop_attn": True}, "prop_attn"),
    ("dit", {"blocks": "0-7"}, "blocks"),
    ("dit", {"blocks": (5,)}, "blocks"),
])
def test_impossible_requests_raise_at_apply_with_nothing_installed(family, kwargs, field):
    model = tiny_transformer(family, num_layers=2)
    state = _state(model)
    with pytest.raises(ValueError, match=field):
        accel.apply(model, TomeConfig(**kwargs))
    assert _state(model) == state
    accel.apply(model).remove()  # no live handle left behind


def test_parse_blocks_forms():
    from accel.tokens.tome import parse_blocks

    assert parse_blocks(None, 4) == (0, 1, 2, 3)
    assert parse_blocks("1-2;0", 4) == (0, 1, 2)
    assert parse_blocks(0.5, 12) == tuple(range(6)) and parse_blocks("0.25", 12) == (0, 1, 2)
    assert parse_blocks((3, 1), 4) == (1, 3) and parse_blocks(2, 4) == (2,)
    for bad in ("4", -1, 1.5, "x"):
        with pytest.raises(ValueError, match="blocks"):
            parse_blocks(bad, 4)
