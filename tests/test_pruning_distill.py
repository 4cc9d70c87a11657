"""Distillation of a pruned student: the loss falls, a killed run resumes with identical losses, bad input exits 2."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from accel.cli import main
from accel.pruning.distill import ClassImageData, DistillConfig, RecordedCallData, check_student, distill
from accel.pruning.prune import prune_model
from accel.testing import tiny_class_pipeline, tiny_pipeline, tiny_transformer, transformer_inputs


def _pair(layers: int = 4, keep=(0, 1)):
    teacher = tiny_transformer("dit", num_layers=layers)
    return teacher, prune_model(teacher, keep), list(keep)


@pytest.mark.slow
def test_distillation_loss_decreases(tmp_path):
    teacher, student, mapping = _pair()
    data = RecordedCallData([((), transformer_inputs("dit", teacher, batch=4))])
    cfg = DistillConfig(steps=10, lr=1e-3, save_every=100, progress=False)
    res = distill(teacher, student, mapping, data, cfg, tmp_path)
    losses = [p["loss"] for p in res["losses"]]
    assert len(losses) == 10 and "task" not in res["losses"][0]
    assert sum(losses[-3:]) / 3 < 0.5 * losses[0]
    assert not hasattr(student, "_diffusers_hook") or not student._diffusers_hook._hook_order


def test_task_loss_on_class_images(tmp_path):
    teacher, student, mapping = _pair(3, (0, 2))
    g = torch.Generator().manual_seed(0)
    data = ClassImageData(torch.randn(16, 4, 8, 8, generator=g), torch.arange(16) % 10,
                          torch.linspace(0.99, 0.01, 1000))
    res = distill(teacher, student, mapping, data, DistillConfig(steps=2, batch_size=4, progress=False), tmp_path)
    assert {"task", "out", "feat", "loss"} <= set(res["losses"][0]) and res["steps"] == 2
    assert (tmp_path / "checkpoints" / "step_0000002" / "manifest.json").exists()


def test_killed_run_resumes_with_identical_losses(tmp_path):
    teacher, student, mapping = _pair()
    data = RecordedCallData([((), transformer_inputs("dit", teacher, batch=2, seed=s)) for s in range(3)])
    cfg = DistillConfig(steps=6, lr=1e-3, save_every=2, progress=False, seed=3)
    full = distill(teacher, copy.deepcopy(student), mapping, data, cfg, tmp_path / "a")
    killed = distill(teacher, copy.deepcopy(student), mapping, data, cfg, tmp_path / "b", stop_after=3)
    assert killed["killed"] and killed["steps"] == 3  # step 3 ran but was never saved: at most one interval lost
    resumed = distill(teacher, copy.deepcopy(student), mapping, data, cfg, tmp_path / "b", resume=True)
    assert resumed["steps"] == 6
    assert [p["loss"] for p in resumed["losses"]] == [p["loss"] for p in full["losses"]]
    assert all(torch.equal(resumed["ema"][k], v) for k, v in full["ema"].items())


def test_check_student_refuses_a_foreign_student():
    teacher, student, mapping = _pair()
    check_student(teacher, student, mapping)
    other = prune_model(tiny_transformer("pixart", num_layers=4), [0, 1])
    with pytest.raises(ValueError, match="PixArt"):
        check_student(teacher, other, mapping)
    wide = tiny_class_pipeline(num_layers=4).transformer  # 1 channel: non-block shapes differ
    with pytest.raises(ValueError, match="not a pruned copy"):
        check_student(teacher, prune_model(wide, [0, 1]), mapping)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("distill")
    tiny_class_pipeline(num_layers=3).save_pretrained(root / "teacher")
    tiny_pipeline("dit", num_layers=3).save_pretrained(root / "other")  # 4-channel latents: other shapes
    assert main(["prune", "--model", str(root / "teacher"), "--keep", "2", "--selector", "first",
                 "--out", str(root / "student"), "--quiet"]) == 0
    return root


@pytest.mark.slow
def test_distill_cli_writes_the_distilled_pipeline(folders, tmp_path):
    out = tmp_path / "d"
    base = ["distill", "--teacher", str(folders / "teacher"), "--student", str(folders / "student"), "--out",
            str(out), "--teacher-samples", "2", "--sample-steps", "2", "--save-every", "2", "--quiet"]
    assert main([*base, "--steps", "3"]) == 0
    info = json.loads((out / "distill.json").read_text())
    assert info["steps"] == 3 and info["data"]["kind"] == "teacher-samples" and info["weights"] == "ema"
    assert json.loads((out / "pruning.json").read_text())["block_map"] == info["block_map"]
    from diffusers import DiTTransformer2DModel

    assert DiTTransformer2DModel.from_pretrained(out / "transformer").config.num_layers == 2
    assert len((out / "losses.jsonl").read_text().splitlines()) == 3
    assert main([*base, "--steps", "4", "--resume"]) == 0  # continues from the step-3 checkpoint
    info = json.loads((out / "distill.json").read_text())
    assert info["steps"] == 4 and info["first_losses"][0] == json.loads((out / "losses.jsonl").read_text()
                                                                          .splitlines()[0])


def test_distill_quiet_prints_no_bar_while_sampling_the_teacher(folders, tmp_path, capfd):
    """`--quiet`: the teacher's sampling (--teacher-samples) shows no progress bar either."""
    assert main(["distill", "--teacher", str(folders / "teacher"), "--student", str(folders / "student"), "--out",
                 str(tmp_path / "q"), "--teacher-samples", "2", "--sample-steps", "2", "--steps", "1",
                 "--quiet"]) == 0
    err = capfd.readouterr().err
    assert "it/s" not in err and "s/it" not in err and "%|" not in err, err[-500:]


@pytest.mark.parametrize("extra, message", [
    (["--data", "/nonexistent/folder"], "--data"),
    (["--resume"], "--resume"),
    ([], "--data DIR or --teacher-samples"),
])
def test_distill_bad_input_exits_2(folders, tmp_path, capsys, extra, message):
    out = tmp_path / "never"
    argv = ["distill", "--teacher", str(folders / "teacher"), "--student", str(folders / "student"),
            "--out", str(out), "--steps", "2", "--quiet", *extra]
    assert main(argv) == 2
    assert message in capsys.readouterr().err and not out.exists()


def test_distill_refuses_student_of_another_teacher(folders, tmp_path, capsys):
    other_student = tmp_path / "s"
    assert main(["prune", "--model", str(folders / "other"), "--keep", "1", "--selector", "first",
                 "--out", str(other_student), "--quiet"]) == 0
    out = tmp_path / "never"
    assert main(["distill", "--teacher", str(folders / "teacher"), "--student", str(other_student), "--out",
                 str(out), "--steps", "2", "--teacher-samples", "1", "--quiet"]) == 2
    assert "not a pruned copy" in capsys.readouterr().err and not out.exists()


def test_distill_on_an_image_folder(folders, tmp_path):
    from PIL import Image

    data = tmp_path / "images"
    for c in (0, 1):
        (data / str(c)).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(((torch.rand(12, 12) * 255).byte()).numpy(), mode="L").save(data / str(c) / f"{i}.png")
    out = tmp_path / "d"
    assert main(["distill", "--teacher", str(folders / "teacher"), "--student", str(folders / "student"),
                 "--out", str(out), "--steps", "2", "--data", str(data), "--batch-size", "2", "--quiet"]) == 0
    info = json.loads((out / "distill.json").read_text())
    assert info["data"] == {"kind": "image-folder", "path": str(data), "images": 4}
    assert "task" in info["first_losses"][0]
