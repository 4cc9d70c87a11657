"""Family registry facts and the pipeline wrapper / loader."""

from __future__ import annotations

import pytest
import torch

import accel
from accel.families import blocks_of, family_of
from accel.pipelines import AcceleratedPipeline, load_pipeline
from accel.testing import FAMILIES, pipeline_inputs, run_tiny, tiny_pipeline, tiny_transformer, transformer_inputs

# family -> (number of blocks with 3 layers, token grid of transformer_inputs)
EXPECTED = {
    "dit": (3, (4, 4)), "pixart": (3, (4, 4)), "sd3": (3, (4, 4)), "flux": (6, (4, 4)), "sana": (3, (8, 8)),
}


def _tensors(x) -> list[int]:
    """Identities of the tensors in a block's return value, in order."""
    return [id(t) for t in (x if isinstance(x, (tuple, list)) else [x])]


@pytest.mark.parametrize("name", FAMILIES)
def test_blocks_grid_and_io(name):
    model = tiny_transformer(name)
    fam = family_of(model)
    assert fam.name == name
    refs = blocks_of(model)
    assert len(refs) == EXPECTED[name][0]
    assert [r.global_index for r in refs] == list(range(len(refs)))
    seen = []

    def probe(ref):
        def hook(module, args, kwargs, out):
            hidden, encoder = ref.io.inputs(args, kwargs)
            out_hidden, out_encoder = ref.io.outputs(out)
            seen.append((hidden.shape, out_hidden.shape, encoder is None, out_encoder is None))
            packed = ref.io.pack(out_hidden, out_encoder)  # the block's own return format, the same tensors
            assert type(packed) is type(out) and _tensors(packed) == _tensors(out)
        return hook

    handles = [r.module.register_forward_hook(probe(r), with_kwargs=True) for r in refs]
    with accel.apply(model) as h:
        grids = []  # the grid is read from the call's arguments, held only while the call runs
        h.target.tracker.listeners.append(lambda info: grids.append(h.target.tracker.token_grid()))
        model(**transformer_inputs(name, model))
        assert grids == [EXPECTED[name][1]]
        with pytest.raises(RuntimeError, match="during a transformer call"):
            h.target.tracker.token_grid()
    for hd in handles:
        hd.remove()
    rows, cols = EXPECTED[name][1]
    for hidden_shape, out_shape, enc_none, _ in seen:
        assert hidden_shape == out_shape and hidden_shape[1] == rows * cols  # image tokens only
        assert enc_none == (not refs[0].stack.returns_pair)
    # where token compression will look: attention and norm exist in every block
    for r in refs:
        assert hasattr(r.module, r.stack.attention) and hasattr(r.module, r.stack.norm)
        if r.stack.cross_attention:
            assert hasattr(r.module, r.stack.cross_attention)


def test_wrapper_is_called_like_the_pipeline_and_returns_its_output_type():
    pipe = tiny_pipeline("pixart")
    reference = pipe(**pipeline_inputs("pixart"))
    wrapped = AcceleratedPipeline(pipe, accel.TraceConfig())
    out = wrapped(**pipeline_inputs("pixart"))
    assert type(out) is type(reference)
    assert torch.equal(out.images, reference.images)
    assert wrapped.transformer is pipe.transformer  # attributes fall through
    assert wrapped.stats()["total"]["pipeline_calls"] == 1
    assert wrapped.remove() is pipe
    assert "forward" not in pipe.transformer.__dict__


def test_loader_round_trip_and_clear_errors(tmp_path):
    pipe = tiny_pipeline("dit")
    reference = run_tiny(pipe, "dit")
    pipe.save_pretrained(tmp_path / "dit")
    wrapped = AcceleratedPipeline.from_pretrained(str(tmp_path / "dit"), accel.TraceConfig())
    wrapped.set_progress_bar_config(disable=True)
    assert torch.allclose(run_tiny(wrapped.pipe, "dit"), reference, atol=1e-6)
    with pytest.raises(accel.ModelNotFoundError, match="never downloads"):
        load_pipeline("nobody-org/not-a-model")
    with pytest.raises(accel.ModelNotFoundError, match="no such folder"):
        load_pipeline(str(tmp_path / "missing" / "dir"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(accel.UnsupportedModelError, match="model_index.json"):
        load_pipeline(str(tmp_path / "empty"))
