"""accel.apply / Handle.remove: exact undo, refusal of bad input, no shared state."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import accel
from accel.config import Target
from accel.config import Installed, MethodConfig
from accel.testing import run_tiny, tiny_pipeline, tiny_transformer


def _snapshot(pipe) -> dict:
    """Everything `remove()` must restore: parameters, module tree, instance attributes."""
    model = pipe.transformer
    return {
        "params": {k: v.clone() for k, v in model.state_dict().items()},
        "modules": [(n, type(m), id(m)) for n, m in model.named_modules()],
        "attrs": {n: sorted(m.__dict__) for n, m in model.named_modules()},
        "sched_attrs": sorted(pipe.scheduler.__dict__),
        "processors": {n: id(m.processor) for n, m in model.named_modules() if hasattr(m, "processor")},
    }


def _assert_same(before: dict, after: dict) -> None:
    assert before["params"].keys() == after["params"].keys()
    for k in before["params"]:
        assert torch.equal(before["params"][k], after["params"][k]), k
    for key in ("modules", "attrs", "sched_attrs", "processors"):
        assert before[key] == after[key], key


def test_noop_apply_then_remove_is_bit_identical(tiny_pipes, family):
    pipe = tiny_pipes[family]
    reference = run_tiny(pipe, family)
    before = _snapshot(pipe)
    handle = accel.apply(pipe, accel.TraceConfig(), accel.AttentionConfig("sdpa"))
    assert torch.equal(run_tiny(pipe, family), reference)
    handle.remove()
    handle.remove()  # idempotent
    assert torch.equal(run_tiny(pipe, family), reference)
    _assert_same(before, _snapshot(pipe))


def test_context_manager_removes(tiny_pipes):
    pipe = tiny_pipes["dit"]
    before = _snapshot(pipe)
    with accel.apply(pipe, accel.TraceConfig()) as handle:
        assert handle.active
    assert not handle.active
    _assert_same(before, _snapshot(pipe))


def test_apply_twice_is_refused_and_first_handle_survives(tiny_pipes):
    pipe = tiny_pipes["pixart"]
    reference = run_tiny(pipe, "pixart")
    before = _snapshot(pipe)
    handle = accel.apply(pipe, accel.TraceConfig())
    with pytest.raises(accel.AlreadyAcceleratedError, match="already accelerated"):
        accel.apply(pipe, accel.TraceConfig())
    with pytest.raises(accel.AlreadyAcceleratedError):
        accel.apply(pipe.transformer)  # same model reached directly
    run_tiny(pipe, "pixart", steps=2)
    assert handle.stats()["total"]["pipeline_calls"] == 1  # counted once, not twice
    handle.remove()
    _assert_same(before, _snapshot(pipe))
    assert torch.equal(run_tiny(pipe, "pixart"), reference)
    accel.apply(pipe).remove()  # after remove, applying again is fine


def test_unsupported_model_refusal_is_one_short_line_saying_how_to_register():
    with pytest.raises(accel.UnsupportedModelError) as err:
        accel.apply(torch.nn.Linear(2, 2))
    msg = str(err.value)
    assert len(msg) < 400 and "\n" not in msg and "DiTTransformer2DModel" not in msg  # not the 59 classes
    assert msg.startswith("Linear: not registered") and "Lists found: none" in msg
    assert "accel.register(Family(name='mine', class_name='Linear'" in msg
    with pytest.raises(accel.UnsupportedModelError, match="pipeline"):
        accel.apply(object())


def test_bad_config_values_name_the_field():
    with pytest.raises(ValueError, match="backend"):
        accel.AttentionConfig(backend="flash9")
    with pytest.raises(TypeError, match="method configs"):  # a string names configs (tests/test_user_path.py)
        accel.apply(tiny_transformer("dit"), accel.TraceConfig)


def test_same_kind_twice_is_refused():
    with pytest.raises(ValueError, match="kind 'attention'"):
        accel.apply(tiny_transformer("dit"), accel.AttentionConfig(), accel.AttentionConfig())


def test_missing_xformers_is_a_clear_error_and_model_untouched(tiny_pipes):
    try:
        import xformers  # noqa: F401
        pytest.skip("xformers installed here")
    except Exception:
        pass
    pipe = tiny_pipes["dit"]
    before = _snapshot(pipe)
    with pytest.raises(accel.BackendUnavailableError, match="accel\\[xformers\\]"):
        accel.apply(pipe, accel.TraceConfig(), accel.AttentionConfig("xformers"))
    _assert_same(before, _snapshot(pipe))
    accel.apply(pipe).remove()  # the failed apply left no live handle behind


@dataclasses.dataclass(frozen=True)
class _Exploding(MethodConfig):
    kind = "test"

    def install(self, target: Target) -> Installed:
        raise RuntimeError("boom")


def test_failure_during_install_leaves_model_untouched(tiny_pipes):
    pipe = tiny_pipes["sd3"]
    before = _snapshot(pipe)
    with pytest.raises(RuntimeError, match="boom"):
        accel.apply(pipe, accel.TraceConfig(), _Exploding())
    _assert_same(before, _snapshot(pipe))


def test_two_pipelines_do_not_share_state():
    a, b, c = (tiny_pipeline("dit", seed=s) for s in (0, 1, 2))
    ref_c = run_tiny(c, "dit")
    ha = accel.apply(a, accel.TraceConfig())
    hb = accel.apply(b, accel.TraceConfig())
    run_tiny(a, "dit", steps=3)
    run_tiny(b, "dit", steps=2)
    run_tiny(b, "dit", steps=2)
    assert ha.stats()["total"] == {"transformer_calls": 3, "steps": 3, "block_evals": 9, "block_total": 9,
                                   "pipeline_calls": 1}
    assert hb.stats()["total"]["pipeline_calls"] == 2
    assert hb.stats()["total"]["transformer_calls"] == 4
    # nothing at class level: the third, untouched pipeline sees no hooks and the same outputs
    assert "forward" not in c.transformer.__dict__ and "_diffusers_hook" not in c.transformer.__dict__
    assert torch.equal(run_tiny(c, "dit"), ref_c)
    ha.remove()
    hb.remove()


def test_shared_transformer_is_refused():
    pipe = tiny_pipeline("dit")
    twin = type(pipe)(**pipe.components)  # shares the transformer module
    with accel.apply(pipe):
        with pytest.raises(accel.AlreadyAcceleratedError):
            accel.apply(twin)


def test_stats_count_blocks_per_call(tiny_pipes):
    pipe = tiny_pipes["flux"]
    with accel.apply(pipe) as handle:
        run_tiny(pipe, "flux", cfg=True, steps=2)
        run_tiny(pipe, "flux", cfg=False, steps=3)
        stats = handle.stats()
    n_blocks = 6  # 3 double + 3 single blocks
    assert [c["transformer_calls"] for c in stats["calls"]] == [4, 3]
    assert [c["steps"] for c in stats["calls"]] == [2, 3]
    assert [c["block_evals"] for c in stats["calls"]] == [4 * n_blocks, 3 * n_blocks]
    assert stats["total"]["block_total"] == stats["total"]["block_evals"] == 7 * n_blocks
    handle.reset_stats()
    assert handle.stats()["total"]["block_evals"] == 0


def test_methods_registry():
    registry = accel.methods()
    assert registry["trace"] is accel.TraceConfig
    assert registry["attention"] is accel.AttentionConfig
    for name, cls in registry.items():
        assert cls.cli_name == name
        cls()  # every method constructs with its defaults
