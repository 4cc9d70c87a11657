"""Every registered transformer class, tiny and random: what its family says it can do, it does.

One row per class (tests/_tiny_classes.py builds it from diffusers' own tiny test configs and
drives it like a pipeline: a real scheduler, 4 steps, a falling timestep):
* `.remove()` restores bit-identical outputs;
* every block cache, at its tiny settings, evaluates fewer blocks and keeps shape and dtype, at
  batch 1 and at a CFG-like doubled batch;
* where tokens apply: ratio-0 token methods are bit-identical, and at their tiny settings
  (accel.testing.METHOD_SETTINGS) every token method saves FLOPs;
  where they do not: `apply` refuses them with a ValueError and installs nothing;
* where depth pruning applies: pruned -> saved -> reloaded with plain diffusers equals the
  original with those blocks bypassed; where it does not, `prune_model` refuses.
"""

from __future__ import annotations

import diffusers
import pytest
import torch

import accel
from accel.caching import calibrate_schedule
from accel.families import blocks_of, family_of, registered_families
from accel.pruning import BlockProbe
from accel.pruning.prune import prune_model
from accel.pruning.select import forced_blocks
from accel.testing import METHOD_SETTINGS, working_config

from _tiny_classes import MiniPipe, build, inputs, prediction, tiny_classes

M = accel.methods()
CACHES = [n for n in METHOD_SETTINGS if M[n].kind == "cache"]  # each at its tiny settings
RATIO0 = {"tome": dict(ratio=0.0), "toca": dict(interval=1), "diffrate": dict(rates="1")}
MERGING = [n for n in METHOD_SETTINGS if M[n].kind == "tokens"]
CLASSES = tiny_classes()


def test_every_registered_class_has_a_tiny_spec_and_there_are_at_least_40():
    registered = [f.class_name for f in registered_families() if not f.detected]
    assert sorted(CLASSES) == sorted(registered)
    assert len(registered) >= 40


@pytest.fixture(scope="module")
def built():
    cache: dict[str, MiniPipe] = {}

    def get(name: str) -> MiniPipe:
        if name not in cache:
            cache[name] = MiniPipe(build(name))
        return cache[name]

    return get


@pytest.mark.parametrize("name", CLASSES)
def test_caches_save_blocks_keep_shape_and_remove_exactly(name, built):
    pipe = built(name)
    for attr in family_of(pipe.transformer).fixed:  # the block lists named as always run exist
        assert isinstance(getattr(pipe.transformer, attr), torch.nn.Module), attr
    calibrate_schedule(pipe, lambda: pipe(inputs(name, batch=1)), progress=False)
    for batch in (1, 2):
        kw = inputs(name, batch=batch)
        reference = pipe(kw)
        for cli in CACHES:
            handle = accel.apply(pipe, working_config(cli))
            out = pipe(kw)
            total = handle.stats()["total"]
            handle.remove()
            assert out.shape == reference.shape and out.dtype == reference.dtype, cli
            assert total["block_evals"] < total["block_total"], (cli, batch, total)
        assert torch.equal(pipe(kw), reference)  # every hook gone: bit-identical


@pytest.mark.parametrize("name", CLASSES)
def test_token_methods_where_the_grid_is_known_and_refused_elsewhere(name, built):
    pipe = built(name)
    fam = family_of(pipe.transformer)
    if fam.token_grid is None:
        for cli in RATIO0:
            with pytest.raises(ValueError, match="not available"):
                accel.apply(pipe, M[cli](**RATIO0[cli]))
            assert "_diffusers_hook" not in pipe.transformer.__dict__  # nothing installed
        return
    for batch in (1, 2):
        kw = inputs(name, batch=batch)
        reference = pipe(kw)
        for cli, settings in RATIO0.items():
            with accel.apply(pipe, M[cli](**settings)):
                assert torch.equal(pipe(kw), reference), cli
        for cli in MERGING:
            with accel.apply(pipe, working_config(cli)) as handle:
                out = pipe(kw)
                ratio = handle.stats()[cli]["total"]["flops_ratio"]
            assert out.shape == reference.shape and torch.isfinite(out).all(), cli
            assert ratio < 1.0, (cli, ratio)


def _drop_one(model: torch.nn.Module) -> list[int]:
    """Keep every block but one that pruning may drop, leaving each stack at least one block."""
    refs = blocks_of(model)
    forced = set(forced_blocks(model))
    for r in reversed(refs):
        same = [x for x in refs if x.stack is r.stack]
        if r.global_index not in forced and len(same) > 1:
            return [x.global_index for x in refs if x is not r]
    raise AssertionError("no droppable block")


@pytest.mark.parametrize("name", CLASSES)
def test_pruned_model_reloads_with_plain_diffusers_where_depth_is_one_config_key(name, tmp_path):
    model = build(name)
    kw = inputs(name)
    if not family_of(model).prunable:
        with pytest.raises(ValueError, match="depth pruning is not available"):
            prune_model(model, [0])
        return
    keep = _drop_one(model)
    dropped = [i for i in range(len(blocks_of(model))) if i not in keep]
    with BlockProbe(model) as probe, probe.bypassing(dropped), torch.no_grad():
        bypassed = prediction(model(**kw))
    pruned = prune_model(model, keep)
    with torch.no_grad():
        assert torch.equal(prediction(pruned(**kw)), bypassed)
    pruned.save_pretrained(tmp_path / "transformer")
    loaded = getattr(diffusers, name).from_pretrained(tmp_path / "transformer").eval()
    assert len(blocks_of(loaded)) == len(keep)
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in pruned.state_dict().items())  # the same weights
    with torch.no_grad():  # ... computing the same up to float rounding: safetensors' memory-mapped weights may
        # take other CPU kernels than the in-memory ones (4e-7 apart on ChronoEdit), so not bit for bit
        torch.testing.assert_close(prediction(loaded(**kw)), bypassed, rtol=1e-5, atol=1e-5)


def test_video_destinations_are_strided_over_frames(built):
    from accel.tokens.merge import grid_destinations

    frames, rows, cols = 4, 4, 6
    for seed in range(3):
        dst = grid_destinations(rows, cols, 2, 2, torch.Generator().manual_seed(seed), frames=frames, st=2)
        f, r, c = dst // (rows * cols), dst // cols % rows, dst % cols
        windows = (f // 2) * 100 + (r // 2) * 10 + c // 2
        assert len(dst) == (frames // 2) * (rows // 2) * (cols // 2) == len(set(windows.tolist()))  # one per window
    assert torch.equal(grid_destinations(rows, cols, frames=1), grid_destinations(rows, cols))
    pipe = built("WanTransformer3DModel")
    kw = inputs("WanTransformer3DModel", batch=2)
    reference = pipe(kw)
    ratios = {}
    for st in (1, 2):
        with accel.apply(pipe, M["tome"](ratio=0.85, st=st)) as handle:
            out = pipe(kw)
            ratios[st] = handle.stats()["tome"]["total"]["flops_ratio"]
        assert out.shape == reference.shape and torch.isfinite(out).all()
    assert ratios[2] < ratios[1] < 1.0  # across frames, more tokens find a destination
