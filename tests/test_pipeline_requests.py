"""One handle, changing requests (issue 31): every call gives the images a fresh handle gives.

Step count, resolution, batch size, num_images_per_prompt, guidance on/off, strength and the
pipeline class (text-to-image -> img2img through `from_pipe`, sharing the transformer) change
from call to call on one `accel.apply` handle; nothing planned or cached for one call may leak
into the next. Also: the step count a cache plans for is the executed one.
"""

from __future__ import annotations

import pytest
import torch

import accel
from accel.testing import pipeline_inputs, tiny_pipeline
from accel.testing_pipelines import case


def _requests():
    image = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    sd3 = lambda **kw: {**pipeline_inputs("sd3", **{k: kw.pop(k) for k in ("batch", "cfg", "steps") if k in kw}), **kw}  # noqa: E731
    return [
        ("t2i", sd3(steps=10)),
        ("t2i", sd3(steps=12)),
        ("t2i", sd3(steps=10, height=32, width=32)),
        ("t2i", sd3(steps=10, batch=2)),
        ("t2i", sd3(steps=10, cfg=False, num_images_per_prompt=2)),  # SD3 repeats no given negative pooled embeds
        ("t2i", sd3(steps=10, cfg=False)),
        ("i2i", sd3(steps=10, image=image, strength=0.8)),
        ("i2i", sd3(steps=14, image=image, strength=0.6)),
        ("t2i", sd3(steps=10)),
    ]


@pytest.mark.parametrize("method", ["delta-cache", "interval-cache", "residual-cache"])
def test_one_handle_changing_requests_matches_fresh_handles(method):
    from diffusers import StableDiffusion3Img2ImgPipeline

    t2i = tiny_pipeline("sd3")
    i2i = StableDiffusion3Img2ImgPipeline.from_pipe(t2i)
    assert i2i.transformer is t2i.transformer
    pipes = {"t2i": t2i, "i2i": i2i}
    config = accel.methods()[method](**({"threshold": 1.0} if method == "residual-cache" else {}))
    shared_out = []
    handle = accel.apply(t2i, config)
    try:
        for which, kw in _requests():
            shared_out.append(pipes[which](**kw).images)
        total = handle.stats()["total"]
    finally:
        handle.remove()
    for (which, kw), shared in zip(_requests(), shared_out):
        pipe = pipes[which]
        with accel.apply(pipe, config):
            fresh = pipe(**kw).images
        assert torch.equal(shared, fresh), f"{which} {sorted(kw)}"
    assert 0 < total["block_evals"] < total["block_total"]  # the shared handle did reuse blocks


@pytest.mark.parametrize("name,steps,strength,executed", [
    ("StableDiffusion3Img2ImgPipeline", 28, 0.6, 17),  # scheduler.set_begin_index tells it
    ("CogVideoXVideoToVideoPipeline", 28, 0.6, 16),  # cuts the schedule without set_begin_index
    ("WanVideoToVideoPipeline", 28, 0.6, 16),
])
def test_caches_plan_for_the_executed_steps(name, steps, strength, executed):
    c = case(name)
    pipe = c.build()
    seen = []
    with accel.apply(pipe, accel.IntervalCacheConfig()) as handle:
        tracker = handle.target.tracker
        tracker.listeners.append(lambda info: seen.append(tracker.num_steps))
        pipe(**c.inputs(steps=steps, strength=strength))
        total = handle.stats()["total"]
    assert total["steps"] == executed
    assert set(seen) == {executed}


def test_schedule_cache_on_a_partial_schedule_says_what_to_run_in_one_line():
    c = case("StableDiffusion3Img2ImgPipeline")
    pipe = c.build()
    with accel.apply(pipe, accel.ScheduleCacheConfig()):
        with pytest.raises(ValueError, match=r"partial schedule \(its last 17 of 28 steps") as err:
            pipe(**c.inputs(steps=28, strength=0.6))
    assert "\n" not in str(err.value) and "calibrate_schedule" in str(err.value)
    config = accel.ScheduleCacheConfig()  # calibrated on the same kind of call, it runs and reuses steps
    config.prepare(pipe, lambda: pipe(**c.inputs(steps=28, strength=0.6, seed=5)))
    with accel.apply(pipe, config) as handle:
        pipe(**c.inputs(steps=28, strength=0.6))
        total = handle.stats()["total"]
    assert total["steps"] == 17 and total["block_evals"] < total["block_total"]
