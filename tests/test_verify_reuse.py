"""Verify-then-reuse (`verify=`): per-sample decisions, independence of the batch, cost counted, undo."""

from __future__ import annotations

from typing import Any

import pytest
import torch

import accel
from accel.caching import IntervalCacheConfig, ScheduleCacheConfig
from accel.specs import build_config, parse_component
from accel.testing import tiny_pipeline

STEPS = 8
CACHE = dict(min_steps=0, interval=4, warmup=1, forecast=1)  # steps 1 and 5 compute, 2-4 and 6-7 reuse


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline("dit", num_layers=4)


def _call(pipe, labels: list[int], seeds: list[int]) -> torch.Tensor:
    """Images for `labels`, one generator per image (so a sample's noise does not depend on the batch)."""
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    out = pipe(class_labels=labels, num_inference_steps=STEPS, guidance_scale=4.0, generator=gens, output_type="np")
    return torch.as_tensor(out.images)


def _record(handle: accel.Handle, record: list) -> None:
    """Append (computing rows or None, per-row relative change) of each check to `record` (this instance only)."""
    verifier = handle._installed[0][1].verifier
    decide = verifier._decide

    def recorded(r, prev, h):
        decide(r, prev, h)
        change = ((r - prev).abs().flatten(1).sum(1) / prev.abs().flatten(1).sum(1)).tolist()
        record.append((None if verifier.rows is None else verifier.rows.tolist(), change))

    verifier._decide = recorded


def _run(pipe, config, labels, seeds, record: list | None = None) -> tuple[torch.Tensor, dict[str, Any]]:
    with accel.apply(pipe, config) as handle:
        if record is not None:
            _record(handle, record)
        images = _call(pipe, labels, seeds)
        return images, handle.stats()


def _per_sample(rows: list[int] | None, sample: int, batch: int) -> bool:
    """Whether `sample`'s rows computed in a check (rows [cond..., uncond...] of a CFG batch)."""
    return rows is not None and sample in rows and sample + batch in rows


def test_one_sample_computes_the_other_reuses_each_as_alone(pipe):
    """A threshold between the two samples' changes: one sample's rows compute, the other's reuse, and each
    sample decides and ends as it does alone. Not bitwise: the uncached pipeline itself gives a sample
    ~6e-6 apart in a batch of 2 and alone on CPU (batched conv/GEMM), so the images agree to 5e-5."""
    labels, seeds = [1, 7], [3, 11]
    probe: list = []
    _run(pipe, IntervalCacheConfig(**CACHE, verify=1e-9), labels, seeds, probe)
    _, change = probe[0]  # rows: [cond 0, cond 1, uncond 0, uncond 1]
    per_sample = [max(change[0], change[2]), max(change[1], change[3])]
    assert per_sample[0] != per_sample[1]
    config = IntervalCacheConfig(**CACHE, verify=sum(per_sample) / 2)
    record: list = []
    both, stats = _run(pipe, config, labels, seeds, record)
    high = per_sample.index(max(per_sample))
    assert record[0][0] == [high, high + 2]  # the sample over the threshold, both its CFG rows, alone
    cache = stats["interval-cache"]["total"]
    assert cache["verify_checks"] == 5 and 0 < cache["verify_rows_computed"] < cache["verify_rows"]
    for i in range(2):
        alone_record: list = []
        alone, _ = _run(pipe, config, labels[i:i + 1], seeds[i:i + 1], alone_record)
        assert [_per_sample(r, i, 2) for r, _ in record] == [_per_sample(r, 0, 1) for r, _ in alone_record]
        torch.testing.assert_close(both[i], alone[0], rtol=0, atol=5e-5)
    plain = _call(pipe, labels, seeds)
    assert (both[1 - high] - plain[1 - high]).abs().max() > 1e-3  # the other sample did reuse


def test_huge_threshold_is_the_cache_without_verify(pipe):
    base, base_stats = _run(pipe, IntervalCacheConfig(**CACHE), [1, 7], [3, 11])
    checked, stats = _run(pipe, IntervalCacheConfig(**CACHE, verify=1e9), [1, 7], [3, 11])
    assert torch.equal(checked, base)
    reused = 5  # steps 2-4, 6-7
    cache, base_cache = stats["interval-cache"]["total"], base_stats["interval-cache"]["total"]
    assert cache["verify_checks"] == reused and cache["verify_rows_computed"] == 0
    # the check's cost: block 0 on every checked call, in block_evals (and the cache's own count)
    assert stats["total"]["block_evals"] == base_stats["total"]["block_evals"] + reused
    assert cache["blocks_computed"] == base_cache["blocks_computed"] + reused


def test_tiny_threshold_computes_every_sample_as_uncached(pipe):
    plain = _call(pipe, [1, 7], [3, 11])
    checked, stats = _run(pipe, IntervalCacheConfig(**CACHE, verify=1e-9), [1, 7], [3, 11])
    cache = stats["interval-cache"]["total"]
    assert cache["verify_rows_computed"] == cache["verify_rows"] > 0 and cache["cached_calls"] == 0
    assert stats["total"]["block_evals"] == stats["total"]["block_total"]
    assert torch.equal(checked, plain)


@pytest.mark.parametrize("bad", [0.0, -0.1, float("nan"), float("inf"), "0.1", True])
def test_bad_verify_values_are_refused(bad):
    for make in (IntervalCacheConfig, ScheduleCacheConfig):
        with pytest.raises(ValueError, match="verify"):
            make(verify=bad)


def _parse(text: str) -> Any:
    name, raw = parse_component(text, accel.methods())
    return build_config(name, accel.methods()[name], raw)


def test_method_string_sets_verify():
    assert _parse("schedule-cache:budget=0.3,forecast=1,verify=0.05") == ScheduleCacheConfig(
        budget=0.3, forecast=1, verify=0.05)
    assert _parse("interval-cache:verify=none") == IntervalCacheConfig()
    with pytest.raises(ValueError, match="verify"):
        _parse("schedule-cache:verify=0")


def test_remove_restores_the_model(pipe):
    plain = _call(pipe, [1, 7], [3, 11])
    handle = accel.apply(pipe, IntervalCacheConfig(**CACHE, verify=1e9))
    cached = _call(pipe, [1, 7], [3, 11])
    handle.remove()
    assert not torch.equal(cached, plain)  # it did reuse
    assert torch.equal(_call(pipe, [1, 7], [3, 11]), plain)


def test_pair_blocks_text_stream_and_temb_cut_to_rows():
    """SD3 (blocks return (text, image), take temb): a mixed check cuts every per-sample argument to the
    computing rows and scatters both streams back; each sample's latents are the ones it gets alone."""
    from accel.testing import pipeline_inputs

    sd3 = tiny_pipeline("sd3", num_layers=3)
    full = pipeline_inputs("sd3", batch=2, steps=STEPS)
    full["output_type"] = "latent"
    per_sample = ("prompt_embeds", "pooled_prompt_embeds", "negative_prompt_embeds", "negative_pooled_prompt_embeds")

    def run(config, i: int | None, record: list | None = None) -> torch.Tensor:
        kw = dict(full)
        if i is not None:
            kw.update({k: full[k][i:i + 1] for k in per_sample}, generator=[torch.Generator().manual_seed((5, 9)[i])])
        else:
            kw["generator"] = [torch.Generator().manual_seed(s) for s in (5, 9)]
        with accel.apply(sd3, config) as handle:
            if record is not None:
                _record(handle, record)
            return torch.as_tensor(sd3(**kw).images)

    probe: list = []
    run(IntervalCacheConfig(**CACHE, verify=1e-9), None, probe)
    change = probe[0][1]
    per = [max(change[0], change[2]), max(change[1], change[3])]
    assert per[0] != per[1]
    config = IntervalCacheConfig(**CACHE, verify=sum(per) / 2)
    record: list = []
    both = run(config, None, record)
    assert len(record[0][0]) == 2  # one sample's two rows computed at the first check
    for i in range(2):
        torch.testing.assert_close(both[i], run(config, i)[0], rtol=0, atol=5e-5)


def test_batch_change_mid_call_computes_instead_of_checking():
    """SD3's CFG cut-off halves the batch after step 0: the checked step computes and re-stores (no check
    against a residual of another shape), and the images are the uncached ones."""
    from diffusers.callbacks import SD3CFGCutoffCallback

    from accel.testing import pipeline_inputs

    sd3 = tiny_pipeline("sd3", num_layers=3)

    def call() -> torch.Tensor:
        cut = SD3CFGCutoffCallback(cutoff_step_ratio=None, cutoff_step_index=0)
        return torch.as_tensor(sd3(**pipeline_inputs("sd3", steps=2), callback_on_step_end=cut).images)

    reference = call()
    with accel.apply(sd3, IntervalCacheConfig(min_steps=0, interval=2, warmup=0, verify=1e9)) as handle:
        out = call()
        stats = handle.stats()["interval-cache"]["total"]
    assert stats["shape_recomputes"] == 1 and stats["blocks_reused"] == 0 and "verify_checks" not in stats
    assert torch.equal(out, reference)


def test_select_rows_cuts_per_sample_arguments_and_keeps_the_rotary_table():
    """Per-sample tensors (also inside a tuple/dict) are cut to the rows; the rotary table is per token and
    passes whole even when its length equals the batch; other values pass as they are."""
    from accel.families import blocks_of
    from accel.testing import tiny_transformer

    io = blocks_of(tiny_transformer("flux", num_layers=1))[0].io
    assert io.rotary_arg == "image_rotary_emb"
    b, rows = 3, torch.tensor([0, 2])
    h, temb = torch.randn(b, 5, 4), torch.randn(b, 4)
    rotary = (torch.randn(b, 2), torch.randn(b, 2))  # as many token rows as batch rows: must stay whole
    args, kwargs = io.select_rows((h,), {"temb": temb, "image_rotary_emb": rotary, "extra": {"m": torch.ones(b)},
                                         "scale": 1.0}, rows, b)
    assert torch.equal(args[0], h[[0, 2]]) and torch.equal(kwargs["temb"], temb[[0, 2]])
    assert kwargs["image_rotary_emb"] is rotary and kwargs["scale"] == 1.0
    assert kwargs["extra"]["m"].shape == (2,)
