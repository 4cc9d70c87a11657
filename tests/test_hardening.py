"""Reliability edges: freed handles, batch changes mid-call, memory held after a call,
step-context edges (scheduler swap, reset_stats, img2img schedules), default sampler settings."""

from __future__ import annotations

import gc
import inspect
import weakref

import pytest
import torch

import accel
from accel.caching import DeltaCacheConfig, IntervalCacheConfig
from accel.testing import METHOD_SETTINGS, pipeline_inputs, run_tiny, tiny_pipeline, working_config

# The caches, each at its tiny settings: the second of two steps reuses every cached block.
CACHES = [n for n in METHOD_SETTINGS if accel.methods()[n].kind == "cache"]


def _prepared(pipe, family: str, steps: int, config):
    """accel.apply after the config's one-off preparation (schedule-cache calibrates)."""
    config.prepare(pipe, lambda: pipe(**pipeline_inputs(family, steps=steps, seed=7)))
    return accel.apply(pipe, config)


# -- 1. a dropped pipeline is freed -------------------------------------------------------------
@pytest.mark.parametrize("remove", [False, True])
def test_dropped_pipeline_with_handle_is_garbage_collected(remove):
    pipe = tiny_pipeline("dit", num_layers=2)
    handle = accel.apply(pipe, IntervalCacheConfig(min_steps=0, interval=2))
    run_tiny(pipe, "dit", steps=2)
    if remove:
        handle.remove()
    refs = [weakref.ref(pipe), weakref.ref(pipe.transformer), weakref.ref(pipe.vae), weakref.ref(handle)]
    del pipe, handle
    gc.collect()
    assert [r() is None for r in refs] == [True] * 4


def test_live_handle_is_found_through_the_model(tiny_pipes):
    pipe = tiny_pipes["dit"]
    handle = accel.apply(pipe)
    try:
        assert accel.handles.handle_of(pipe.transformer) is handle
        with pytest.raises(accel.AlreadyAcceleratedError):
            accel.apply(pipe.transformer)
    finally:
        handle.remove()
    assert accel.handles.handle_of(pipe.transformer) is None


# -- 2. the batch changes mid-call (SD3CFGCutoffCallback) ---------------------------------------
def _sd3_with_cutoff(pipe, cutoff: int) -> torch.Tensor:
    from diffusers.callbacks import SD3CFGCutoffCallback

    kw = pipeline_inputs("sd3", steps=2)
    out = pipe(**kw, callback_on_step_end=SD3CFGCutoffCallback(cutoff_step_ratio=None, cutoff_step_index=cutoff)).images
    return torch.as_tensor(out)


@pytest.mark.parametrize("name", CACHES)
def test_cfg_cutoff_mid_call_recomputes_instead_of_broadcasting(tiny_pipes, name):
    pipe = tiny_pipes["sd3"]
    reference = _sd3_with_cutoff(pipe, cutoff=0)  # step 0 with CFG (batch 2), step 1 without (batch 1)
    with _prepared(pipe, "sd3", 2, working_config(name)) as handle:
        out = _sd3_with_cutoff(pipe, cutoff=0)
        stats = handle.stats()[name]["total"]
        assert stats["shape_recomputes"] == 1
        assert stats["blocks_reused"] == 0
        assert handle.stats()["total"]["block_evals"] == handle.stats()["total"]["block_total"]
        # without the cutoff the same setting does reuse: the test exercises the cache
        handle.reset_stats()
        run_tiny(pipe, "sd3", steps=2)
        assert handle.stats()[name]["total"]["blocks_reused"] > 0
    # every step computed in full, so the images are the uncached ones exactly
    assert torch.equal(out, reference)


def test_forecast_drops_an_offset_of_another_shape():
    from accel.caching._runs import BranchState

    state = BranchState()
    run = (0, 2)
    state.store(run, 0, torch.ones(2, 4, 8), None, keep=2)
    state.store(run, 1, torch.ones(1, 4, 8), None, keep=2)
    assert [s for s, _, _ in state.history(run)] == [1]  # offsets of batch 2 and 1 would broadcast
    state.store(run, 2, torch.ones(1, 4, 8), None, keep=2)
    assert [s for s, _, _ in state.history(run)] == [1, 2]
    assert not state.fits(run, torch.ones(2, 4, 8), None) and state.fits(run, torch.ones(1, 4, 8), None)


# -- 3. memory held after a call ----------------------------------------------------------------
@pytest.mark.parametrize("name", CACHES)
def test_cached_tensors_are_freed_when_the_call_ends(tiny_pipes, name):
    pipe = tiny_pipes["sd3"]
    held_during: list[int] = []
    with _prepared(pipe, "sd3", 3, working_config(name)) as handle:
        def probe(p, i, t, kw):
            held_during.append(handle.held_bytes())
            return kw

        pipe(**pipeline_inputs("sd3", steps=3), callback_on_step_end=probe)
        assert min(held_during[:-1]) > 0  # the cache does hold offsets between steps
        assert held_during[-1] == 0  # the callback of the last step runs after its scheduler.step
        assert handle.held_bytes() == 0
        assert handle._tracker.held_bytes() == 0


def test_bare_transformer_holds_no_call_arguments_after_the_call():
    from accel.testing import tiny_transformer, transformer_inputs

    model = tiny_transformer("dit")
    with accel.apply(model) as handle:
        model(**transformer_inputs("dit", model))
        assert handle.held_bytes() == 0


# -- 4. step-context edges ----------------------------------------------------------------------
def _num_steps_seen(handle) -> list:
    seen: list = []
    handle._tracker.listeners.append(lambda info: seen.append((info.step, handle._tracker.num_steps)))
    return seen


def test_swapped_scheduler_knows_its_step_count_on_the_first_call(tiny_pipes):
    from diffusers import DPMSolverMultistepScheduler

    pipe = tiny_pipes["dit"]
    original = pipe.scheduler
    try:
        with accel.apply(pipe) as handle:
            seen = _num_steps_seen(handle)
            run_tiny(pipe, "dit", steps=2)
            pipe.scheduler = DPMSolverMultistepScheduler.from_config(original.config)
            run_tiny(pipe, "dit", steps=3)
    finally:
        pipe.scheduler = original
    assert seen == [(0, 2), (1, 2), (0, 3), (1, 3), (2, 3)]


def test_delta_cache_boundary_after_scheduler_swap(tiny_pipes):
    from diffusers import DDIMScheduler

    pipe = tiny_pipes["dit"]
    original = pipe.scheduler
    config = DeltaCacheConfig(min_steps=0, interval=2, boundary=0.5, cached_blocks=1)
    try:
        with accel.apply(pipe, config) as handle:
            pipe.scheduler = DDIMScheduler.from_config(original.config)
            seen: list = []
            hooks = handle._installed[0][1]
            handle._tracker.listeners.append(lambda info: seen.append(hooks.plan.skip))
            run_tiny(pipe, "dit", steps=4)
    finally:
        pipe.scheduler = original
    # boundary 0.5 of 4 steps = step 2: step 1 caches the rear block, step 3 the front one
    assert seen == [(), ((2, 3),), (), ((0, 1),)]


def test_reset_stats_then_one_call_counts_one_call(tiny_pipes):
    pipe = tiny_pipes["dit"]
    with accel.apply(pipe) as handle:
        run_tiny(pipe, "dit", steps=2)
        handle.reset_stats()
        assert handle.stats()["total"]["pipeline_calls"] == 0
        run_tiny(pipe, "dit", steps=3)
        total = handle.stats()["total"]
    assert total["pipeline_calls"] == 1 and total["steps"] == 3 and total["transformer_calls"] == 3
    assert total["block_evals"] == total["block_total"] == 3 * 3


def test_img2img_truncated_schedule_counts_the_steps_it_runs(tiny_pipes):
    from diffusers import StableDiffusion3Img2ImgPipeline

    pipe = StableDiffusion3Img2ImgPipeline(**tiny_pipes["sd3"].components)
    pipe.set_progress_bar_config(disable=True)
    kw = pipeline_inputs("sd3", steps=4)
    kw.pop("height"), kw.pop("width")
    image = torch.rand(1, 3, 16, 16)
    with accel.apply(pipe, DeltaCacheConfig(min_steps=0, interval=2, boundary=0.5, cached_blocks=1)) as handle:
        seen = _num_steps_seen(handle)
        pipe(**kw, image=image, strength=0.5)
        total = handle.stats()["total"]
        assert handle.held_bytes() == 0  # the call's end was recognised after its 2nd step
    assert seen == [(0, 2), (1, 2)]
    assert total["steps"] == 2


# -- 5. the default pipeline's own sampler settings ---------------------------------------------
def test_default_pipeline_defaults_are_the_models_sampler():
    from accel.models import DEFAULT_SAMPLER

    pipe = accel.default_pipeline()
    params = inspect.signature(pipe.__call__).parameters
    assert params["guidance_scale"].default == DEFAULT_SAMPLER["guidance_scale"] == 2.0
    assert params["num_inference_steps"].default == DEFAULT_SAMPLER["steps"]
    bare = pipe([3, 7], generator=torch.Generator().manual_seed(0), num_inference_steps=2, output_type="np")
    explicit = pipe([3, 7], guidance_scale=2.0, generator=torch.Generator().manual_seed(0),
                    num_inference_steps=2, output_type="np")
    stock = pipe([3, 7], guidance_scale=4.0, generator=torch.Generator().manual_seed(0),
                 num_inference_steps=2, output_type="np")
    assert (bare.images == explicit.images).all()
    assert not (bare.images == stock.images).all()
