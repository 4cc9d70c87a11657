"""accel.pruning.workflow: prune_pipeline / distill_data / distill_pipeline, the calls behind `accel prune`,
`accel distill`, the end-to-end demo and benchmarks/stack.py."""

from __future__ import annotations

import pytest
import torch

from accel.pipelines.calls import DEFAULT_PROMPTS, calibration_inputs, record_calls
from accel.pruning.distill import DistillConfig
from accel.pruning.workflow import distill_data, distill_pipeline, prune_pipeline
from accel.testing import tiny_class_pipeline, tiny_pipeline


@pytest.mark.slow
def test_prune_then_distill_in_memory(tmp_path):
    pipe = tiny_class_pipeline(num_layers=3)
    pruned = prune_pipeline(pipe, 2, selector="laptop", calib_images=2, calib_steps=2, source="tiny")
    assert len(pruned.keep) == 2 and pruned.model.config.num_layers == 2
    info = pruned.info
    assert info["source_model"] == "tiny" and info["keep"] == pruned.keep and info["num_blocks"] == 3
    assert info["calibration"]["images"] == 2 and info["calibration"]["num_calls"] >= 1
    assert info["removed"] == [i for i in range(3) if i not in pruned.keep]
    with pytest.raises(ValueError, match="no built-in data set"):
        distill_data(pipe)
    data, data_info = distill_data(pipe, teacher_samples=2, sample_steps=2)
    assert data_info == {"kind": "teacher-samples", "samples": 2, "calls": len(data)} and len(data) >= 2
    before = [p.detach().clone() for p in pruned.model.parameters()]
    student, result = distill_pipeline(pipe, pruned.model, info["block_map"], data,
                                       DistillConfig(steps=2, batch_size=2, progress=False), tmp_path,
                                       ema_weights=False)
    assert result["steps"] == 2 and student is pruned.model and not student.training
    assert any(not torch.equal(a, b) for a, b in zip(before, student.parameters()))


def test_bad_settings_fail_before_any_calibration():
    pipe = tiny_class_pipeline(num_layers=3)
    calls = []
    pipe.transformer.register_forward_pre_hook(lambda *a: calls.append(1))
    with pytest.raises(ValueError, match="keep must be in 1..2"):
        prune_pipeline(pipe, 3)
    with pytest.raises(ValueError, match="unknown"):
        prune_pipeline(pipe, 2, selector="best")
    assert calls == []


def test_one_calibration_builder_and_recorder():
    text = tiny_pipeline("pixart")
    inputs = calibration_inputs(text, images=10, steps=2, seed=3, batch_size=4)
    assert [len(kw["prompt"]) for kw in inputs] == [4, 4, 2]
    assert [p for kw in inputs for p in kw["prompt"]] == [DEFAULT_PROMPTS[i % len(DEFAULT_PROMPTS)] for i in range(10)]
    digits = calibration_inputs(tiny_class_pipeline(), images=3, steps=2, seed=0, digits=True)
    assert digits[0]["class_labels"] == [0, 1, 2] and digits[0]["guidance_scale"] == 2.0
    pipe = tiny_class_pipeline()
    plain = record_calls(pipe, [dict(class_labels=[1], num_inference_steps=2, output_type="np")])
    with_out = record_calls(pipe, lambda: pipe(class_labels=[1], num_inference_steps=2, output_type="np"),
                            outputs=True)
    assert len(plain) == len(with_out) == 2 and len(plain[0]) == 2 and len(with_out[0]) == 3
    assert not pipe.transformer._forward_hooks and not pipe.transformer._forward_pre_hooks
    assert "forward" not in pipe.transformer.__dict__  # the recorder's hook is gone
