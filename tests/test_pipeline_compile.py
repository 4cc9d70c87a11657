"""The habitual compile (issue 31): torch.compile(pipe.transformer), pipe.transformer.compile() and
diffusers' compile_repeated_blocks() with accel on are refused in one line naming accel.compile,
before or after accel.apply, instead of recompiling at every step past Dynamo's limit; undone,
the pipeline runs accelerated again. accel.compile itself: tests/test_bench_compile.py."""

from __future__ import annotations

import pytest
import torch

import accel
from accel.testing import pipeline_inputs, tiny_pipeline


def _compile(pipe, form: str) -> None:
    if form == "torch.compile":
        pipe.transformer = torch.compile(pipe.transformer)
    elif form == "module.compile":
        pipe.transformer.compile()
    else:
        pipe.transformer.compile_repeated_blocks()


def _undo(pipe, form: str) -> None:
    if form == "torch.compile":
        pipe.transformer = pipe.transformer._orig_mod
    elif form == "module.compile":
        pipe.transformer._compiled_call_impl = None
    else:
        for block in pipe.transformer.modules():
            block._compiled_call_impl = None


@pytest.mark.parametrize("form", ["torch.compile", "module.compile", "compile_repeated_blocks"])
def test_habitual_compile_is_refused_in_one_line(form):
    pipe = tiny_pipeline("flux", num_layers=1)
    kw = lambda: pipeline_inputs("flux", cfg=False, steps=2)  # noqa: E731
    reference = pipe(**kw()).images
    _compile(pipe, form)  # before accel.apply
    with pytest.raises(accel.UnsupportedMethodError, match=r"accel\.compile\(pipe\)") as err:
        accel.apply(pipe, accel.DeltaCacheConfig())
    assert "\n" not in str(err.value)
    _undo(pipe, form)
    handle = accel.apply(pipe, accel.TraceConfig())
    _compile(pipe, form)  # after accel.apply: the first call says it (before any graph runs the hooks)
    with pytest.raises(accel.UnsupportedMethodError, match=r"accel\.compile\(pipe\)"):
        pipe(**kw())
    _undo(pipe, form)
    assert torch.equal(pipe(**kw()).images, reference)
    handle.remove()
