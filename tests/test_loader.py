"""The one model loader (accel.pipelines.load_model): embedded names, digits folders, any pipeline folder."""

from __future__ import annotations

import json

import pytest

import accel
import accel.models as M
from accel.errors import InputError
from accel.models import lineage
from accel.pipelines import load_model
from accel.testing import tiny_class_pipeline, tiny_pipeline


def test_default_is_the_embedded_digits_model_with_its_sampler():
    loaded = load_model("default")
    assert isinstance(loaded.pipe, M.DigitsDiTPipeline) and loaded.digits and loaded.name == "default"
    assert loaded.sampler == M.DEFAULT_SAMPLER and loaded.sampler is not M.DEFAULT_SAMPLER
    assert type(loaded.pipe.scheduler).__name__ == "DPMSolverMultistepScheduler"
    assert type(load_model("default", scheduler="ddim").pipe.scheduler).__name__ == "DDIMScheduler"


def test_a_second_embedded_model_is_one_table_entry(monkeypatch):
    """Every command resolves embedded names through EMBEDDED_MODELS: one entry makes `--model toy` work."""
    toy = tiny_class_pipeline()
    seen = {}

    def load_toy(scheduler=None, device="cpu", dtype=None):
        seen.update(scheduler=scheduler, device=device)
        return toy

    monkeypatch.setattr(M, "load_toy_pipeline", load_toy, raising=False)
    monkeypatch.setattr(M, "TOY_SAMPLER", {"scheduler": "ddim", "guidance_scale": 1.5}, raising=False)
    monkeypatch.setitem(lineage.EMBEDDED_MODELS, "toy", lineage.EmbeddedModel("load_toy_pipeline", "TOY_SAMPLER"))
    loaded = load_model("toy", scheduler="euler")
    assert loaded.pipe is toy and loaded.digits and seen == {"scheduler": "euler", "device": "cpu"}
    assert loaded.sampler == {"scheduler": "ddim", "guidance_scale": 1.5}
    assert M.is_digits_model("toy") and M.digits_marker("toy")["sampler"] == loaded.sampler
    assert loaded.fd_digits and loaded.prompts is None


def test_an_embedded_text_to_image_model_brings_its_prompts_and_scheduler(monkeypatch):
    """A prompt-conditioned embedded model (not a digits DiT): FD-digits applies, its prompts come along,
    and a loader without a `scheduler` parameter refuses --scheduler in one line."""
    text = tiny_pipeline("pixart")
    monkeypatch.setattr(M, "load_toy_text", lambda device="cpu", dtype=None: text, raising=False)
    monkeypatch.setattr(M, "TOY_TEXT_SAMPLER", {"steps": 8, "guidance_scale": 3.0}, raising=False)
    monkeypatch.setattr(M, "toy_prompts", lambda: ["zero", "one"], raising=False)
    monkeypatch.setitem(lineage.EMBEDDED_MODELS, "toytext",
                        lineage.EmbeddedModel("load_toy_text", "TOY_TEXT_SAMPLER", digits_dit=False,
                                              prompts="toy_prompts"))
    loaded = load_model("toytext")
    assert loaded.pipe is text and loaded.fd_digits and not loaded.digits and loaded.prompts == ["zero", "one"]
    assert not M.is_digits_model("toytext") and loaded.sampler["steps"] == 8
    with pytest.raises(InputError, match="toytext model samples with its own scheduler"):
        load_model("toytext", scheduler="ddim")


def test_a_digits_folder_and_a_plain_folder(tmp_path):
    from accel.pruning.prune import save_pipeline

    default = M.load_default_pipeline()
    save_pipeline(default, default.transformer, tmp_path / "digits",
                  {M.MARKER_FILE: M.digits_marker(derived_from="default")})
    loaded = load_model(str(tmp_path / "digits"))
    assert loaded.digits and loaded.sampler == M.DEFAULT_SAMPLER
    assert type(loaded.pipe).__name__ == "DigitsDiTPipeline"
    tiny_pipeline("dit").save_pretrained(tmp_path / "dit")
    plain = load_model(str(tmp_path / "dit"), scheduler="ddim")
    assert not plain.digits and plain.sampler == {}
    assert type(plain.pipe.scheduler).__name__ == "DDIMScheduler"
    with pytest.raises(InputError, match="scheduler 'nope'"):
        load_model(str(tmp_path / "dit"), scheduler="nope")
    with pytest.raises(accel.ModelNotFoundError, match="never downloads"):
        load_model("nobody-org/not-a-model")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / M.MARKER_FILE).write_text(json.dumps({"kind": "something-else"}))
    with pytest.raises(InputError, match="kind = 'something-else' is not one of"):  # refused, not ignored
        M.is_digits_model(tmp_path / "bad")


def test_scheduler_names_agree():
    """The default model's own scheduler builders and the loader's swap table name the same schedulers."""
    from accel.models import SCHEDULERS
    from accel.pipelines.loader import SCHEDULER_CLASSES

    assert set(SCHEDULERS) == set(SCHEDULER_CLASSES)
