"""Distillation on real (image, prompt) pairs and the learned selector: bit-for-bit resume, exactly k blocks kept,
plain-diffusers loading, and the data folder's bounds and one-line errors."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from accel.cli import main
from accel.pruning import data as pdata
from accel.pruning import images as pimages
from accel.pruning.data import FlowPairData, MixedData, prompt_folder_data, read_prompts
from accel.pruning.distill import DistillConfig, RecordedCallData, distill
from accel.pruning.prune import prune_model
from accel.testing import tiny_class_pipeline, tiny_text_pipeline, tiny_transformer, transformer_inputs


@pytest.fixture(scope="module")
def sd3(tmp_path_factory):
    from diffusers import StableDiffusion3Pipeline

    folder = tmp_path_factory.mktemp("sd3") / "teacher"
    tiny_text_pipeline("sd3", num_layers=3).save_pretrained(folder)
    return StableDiffusion3Pipeline.from_pretrained(folder)  # as a user's folder loads (tokenizer lengths set)


def _flow_data(pipe, n: int = 6) -> FlowPairData:
    g = torch.Generator().manual_seed(1)
    latents = torch.randn(n, 4, 8, 8, generator=g)
    prompts = [["a red fox", "a fox in snow"] if i % 2 else ["a cat on a table"] for i in range(n)]
    return FlowPairData(pipe, latents, prompts)


@pytest.mark.parametrize("mixed", [False, True])
def test_distill_on_data_resumes_bit_for_bit(sd3, tmp_path, mixed):
    teacher = sd3.transformer
    student, mapping = prune_model(teacher, [0, 2]), [0, 2]  # SD3 keeps its last block
    data = _flow_data(sd3)
    if mixed:  # real pairs half of the steps, recorded teacher calls the other half
        data = MixedData(data, RecordedCallData([((), transformer_inputs("sd3", teacher, batch=2))]), 0.5)
    cfg = DistillConfig(steps=6, batch_size=3, lr=1e-3, save_every=3, progress=False, seed=5, data="test")
    straight = copy.deepcopy(student)
    full = distill(teacher, straight, mapping, data, cfg, tmp_path / "a")
    half = copy.deepcopy(student)
    first = distill(teacher, half, mapping, data, DistillConfig(**{**vars(cfg), "steps": 3}), tmp_path / "b")
    assert first["steps"] == 3
    resumed_model = copy.deepcopy(student)  # a fresh process: nothing carried over but the checkpoint
    resumed = distill(teacher, resumed_model, mapping, data, cfg, tmp_path / "b", resume=True)
    assert resumed["steps"] == 6
    assert [p["loss"] for p in resumed["losses"]] == [p["loss"] for p in full["losses"]]
    for k, v in straight.state_dict().items():
        assert torch.equal(resumed_model.state_dict()[k], v), k
    assert all(torch.equal(resumed["ema"][k], v) for k, v in full["ema"].items())
    kinds = {"task" in p for p in full["losses"]}
    assert kinds == ({True, False} if mixed else {True})  # the velocity loss only on real pairs


def test_flow_pairs_are_rectified_flow_with_the_true_velocity(sd3, monkeypatch):
    data = _flow_data(sd3, n=4)
    b = data.batch(torch.Generator().manual_seed(0), 5, torch.device("cpu"))
    monkeypatch.setattr(pdata, "MAX_CACHED_PROMPTS", 1)  # more prompts than that: encoded per batch, same values
    per_batch = _flow_data(sd3, n=4)
    assert per_batch.embeds is None
    b2 = per_batch.batch(torch.Generator().manual_seed(0), 5, torch.device("cpu"))
    assert torch.allclose(b2.kwargs["encoder_hidden_states"], b.kwargs["encoder_hidden_states"], atol=1e-6)
    assert torch.equal(b2.args[0], b.args[0]) and torch.equal(b2.noise, b.noise)
    s = b.kwargs["timestep"] / 1000
    assert b.args[0].shape == (5, 4, 8, 8) and bool(((s > 0) & (s < 1)).all())
    # x_s = (1 - s) x0 + s eps and v = eps - x0  =>  x0 = x_s - s v is one of the data's latents
    x0 = b.args[0] - s.view(-1, 1, 1, 1) * b.noise
    assert all(min(float((x - z).abs().max()) for z in data.latents) < 1e-5 for x in x0)
    assert b.kwargs["encoder_hidden_states"].shape[0] == 5 and b.kwargs["pooled_projections"].shape[0] == 5


def _folder(tmp_path, n: int = 3, fmt: str = "PNG"):
    from PIL import Image

    d = tmp_path / "pairs"
    d.mkdir()
    rows = []
    for i in range(n):
        name = f"{i}.{'png' if fmt == 'PNG' else 'jpg'}"
        Image.fromarray((torch.rand(20, 20, 3) * 255).byte().numpy(), mode="RGB").save(d / name, format=fmt)
        rows.append({"file": name, "prompt": "a red fox" if i % 2 else "a cat"})
    (d / "prompts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return d


def test_prompt_folder_is_read_and_encoded(sd3, tmp_path):
    data = prompt_folder_data(_folder(tmp_path, fmt="JPEG"), sd3)
    assert len(data) == 3 and data.latents.shape == (3, 4, 8, 8) and torch.isfinite(data.latents).all()
    assert data.prompts[1] == ("a red fox",)


@pytest.mark.parametrize("content, message", [
    (None, "exactly one of"),
    ('{"0.png": 3}', "must be a string"),
    ('{"../0.png": "x"}', "file name in the folder"),
    ('{"9.png": "x"}', "is not in"),
    ('{"0.png": "x"', "prompts.json"),
    ('[1, 2]', "expected an object"),
    ('{"0.png": "' + "w" * 3000 + '"}', "at most"),
    ('{}', "no images listed"),
])
def test_prompt_file_errors_are_one_line(tmp_path, content, message):
    d = _folder(tmp_path, n=1)
    (d / "prompts.jsonl").unlink()
    if content is not None:
        (d / "prompts.json").write_text(content)
    with pytest.raises(ValueError, match=message) as err:
        read_prompts(d)
    assert "\n" not in str(err.value)


def test_data_bounds(sd3, tmp_path, monkeypatch):
    d = _folder(tmp_path, n=2)
    monkeypatch.setattr(pdata, "MAX_PROMPTS_BYTES", 10)
    with pytest.raises(ValueError, match="larger than"):
        read_prompts(d)
    monkeypatch.setattr(pdata, "MAX_PROMPTS_BYTES", 2**20)
    monkeypatch.setattr(pdata, "MAX_IMAGES", 1)
    with pytest.raises(ValueError, match="more than 1"):
        read_prompts(d)
    monkeypatch.setattr(pdata, "MAX_IMAGES", 10)
    monkeypatch.setattr(pimages, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(ValueError, match="pixels, more than 100"):
        prompt_folder_data(d, sd3)
    monkeypatch.setattr(pimages, "MAX_IMAGE_PIXELS", 4096 * 4096)
    (d / "0.png").write_text("not an image")
    with pytest.raises(ValueError, match="not a readable image") as err:
        prompt_folder_data(d, sd3)
    assert "\n" not in str(err.value)
    from PIL import Image

    Image.new("L", (8, 8)).save(d / "0.png", format="GIF")  # a GIF under a .png name
    with pytest.raises(ValueError, match="PNG or JPEG"):
        prompt_folder_data(d, sd3)
    with pytest.raises(ValueError, match="flow-matching text-to-image"):
        prompt_folder_data(d, tiny_class_pipeline(num_layers=2))


@pytest.fixture(scope="module")
def flow_folders(tmp_path_factory, sd3):
    root = tmp_path_factory.mktemp("flowdistill")
    sd3.save_pretrained(root / "teacher")
    assert main(["prune", "--model", str(root / "teacher"), "--keep", "2", "--selector", "first",
                 "--out", str(root / "student"), "--quiet"]) == 0
    return root


def test_distill_cli_on_a_prompt_folder(flow_folders, tmp_path):
    pairs = _folder(tmp_path)
    out = tmp_path / "d"
    base = ["distill", "--teacher", str(flow_folders / "teacher"), "--student", str(flow_folders / "student"),
            "--out", str(out), "--data", str(pairs), "--batch-size", "2", "--save-every", "2", "--quiet"]
    assert main([*base, "--steps", "2"]) == 0
    info = json.loads((out / "distill.json").read_text())
    assert info["data"]["kind"] == "image-prompt-folder" and info["data"]["images"] == 3
    assert "task" in info["first_losses"][0]
    assert main([*base, "--steps", "3", "--resume", "--data-weight", "0.5", "--teacher-samples", "1"]) == 2  # other data


@pytest.mark.parametrize("extra, message", [
    (["--data", "digits"], "--data digits: only for the embedded models"),
    (["--data-weight", "0.5", "--data", "digits"], "--data-weight mixes"),
    (["--data", "{folder}"], "exactly one of"),
])
def test_distill_cli_bad_data_exits_2(flow_folders, tmp_path, capsys, extra, message):
    folder = tmp_path / "empty"
    folder.mkdir()
    out = tmp_path / "never"
    argv = ["distill", "--teacher", str(flow_folders / "teacher"), "--student", str(flow_folders / "student"),
            "--out", str(out), "--steps", "1", "--quiet", *[e.format(folder=folder) for e in extra]]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and not out.exists()


# ----------------------------------------------------------------------------- learned selector
def test_learned_selector_finds_the_only_working_block():
    from accel.pruning.importance import Calibration
    from accel.pruning.learned import learned_keep

    model = tiny_transformer("dit", num_layers=4)
    with torch.no_grad():  # adaLN-Zero gates 0: blocks 2 and 3 are identities, block 1 the only free block that acts
        for i in (2, 3):
            model.transformer_blocks[i].norm1.linear.weight.zero_()
            model.transformer_blocks[i].norm1.linear.bias.zero_()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cal = Calibration([((), transformer_inputs("dit", model, batch=2, seed=s)) for s in range(3)])
    res = learned_keep(model, cal, 2, forced=[0], steps=30, seed=0, mode="global")
    assert res["keep"] == [0, 1] and res["learned_mode"] == "global"  # exactly k, the forced block included
    assert res["scores"][1] > max(res["scores"][2], res["scores"][3])
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())  # the model is untouched
    assert not getattr(model, "_diffusers_hook", None) or not model._diffusers_hook._hook_order


def test_learned_local_mode_keeps_n_of_every_m_and_finds_the_working_blocks():
    from accel.pruning.importance import Calibration
    from accel.pruning.learned import learned_keep, local_groups

    assert [len(c) for _, c in local_groups(12, 6)] == [6] * 3  # 2 of 4 by default: may keep neighbours together
    assert [len(c) for _, c in local_groups(12, 6, size=2)] == [2] * 6  # 1 of 2
    assert [len(c) for _, c in local_groups(12, 9)] == [4] * 3  # 3 of 4
    assert [len(c) for _, c in local_groups(12, 8)] == [15] * 2 and len(local_groups(10, 5)) == 1  # 4 of 6; 5 of 10
    assert local_groups(12, 6, forced=[11])[-1][1] == [(8, 11), (9, 11), (10, 11)]  # the forced block is in each
    assert local_groups(12, 6, forced=[11], size=2)[-1][1] == [(11,)]
    assert local_groups(12, 7) is None and local_groups(4, 2, forced=[0, 1], size=2) is None  # 792; overfull
    assert (0, 1) in local_groups(12, 6)[0][1] and (0, 1) not in local_groups(12, 6, size=2)[0][1]
    assert [len(c) for _, c in local_groups(12, 9, size=12)] == [220]  # 9 of 12: one group
    for size, message in ((5, "do not split"), (3, "do not split"), (0, "do not split")):  # 6/12: 1.5 of 3
        with pytest.raises(ValueError, match=message):
            local_groups(12, 6, size=size)
    with pytest.raises(ValueError, match="924 candidate"):
        local_groups(12, 6, size=12)
    model = tiny_transformer("dit", num_layers=4)
    with torch.no_grad():  # blocks 1 and 2 are identities: of the groups (0, 1) and (2, 3), 0 and 3 act
        for i in (1, 2):
            model.transformer_blocks[i].norm1.linear.weight.zero_()
            model.transformer_blocks[i].norm1.linear.bias.zero_()
    cal = Calibration([((), transformer_inputs("dit", model, batch=2, seed=s)) for s in range(3)])
    res = learned_keep(model, cal, 2, steps=30, seed=0, group=2)
    assert res["learned_mode"] == "local" and res["keep"] == [0, 3]
    assert res["scores"][0] > res["scores"][1] and res["scores"][3] > res["scores"][2]
    assert all(abs(res["keep_frequency"][a] + res["keep_frequency"][b] - 1) < 1e-9 for a, b in ((0, 1), (2, 3)))
    with pytest.raises(ValueError, match="mode"):
        learned_keep(model, cal, 2, mode="tiny")
    res4 = learned_keep(model, cal, 2, steps=30, seed=0)  # the default: one group of 4, 2 of 4, six candidates
    assert res4["learned_groups"] == [[[0, 1, 2, 3], 6]] and res4["keep"] == [0, 3]
    with pytest.raises(ValueError, match="group size needs mode 'local'"):
        learned_keep(model, cal, 2, mode="global", group=4)


def test_prune_learned_keeps_k_and_loads_with_plain_diffusers(tmp_path):
    from diffusers import DiTPipeline, DiTTransformer2DModel

    tiny_class_pipeline(num_layers=4).save_pretrained(tmp_path / "m")
    out = tmp_path / "p"
    assert main(["prune", "--model", str(tmp_path / "m"), "--keep", "2", "--selector", "learned",
                 "--learned-steps", "6", "--calib-images", "2", "--calib-steps", "2", "--out", str(out),
                 "--quiet"]) == 0
    info = json.loads((out / "pruning.json").read_text())
    assert info["selector"] == "learned" and len(info["keep"]) == 2 and 0 in info["keep"]
    assert info["learned_steps"] == 6 and len(info["keep_frequency"]) == 4
    assert DiTTransformer2DModel.from_pretrained(out / "transformer").config.num_layers == 2
    pipe = DiTPipeline.from_pretrained(out)
    assert len(pipe.transformer.transformer_blocks) == 2


@pytest.mark.parametrize("extra, message", [
    (["--selector", "learned", "--learned-group", "3"], "--learned-group 3: groups of 3 blocks do not split 4"),
    (["--selector", "laptop", "--learned-group", "2"], "--learned-group is for --selector 'learned', not 'laptop'"),
])
def test_prune_learned_group_refused_before_calibrating(tmp_path, capsys, extra, message):
    tiny_class_pipeline(num_layers=4).save_pretrained(tmp_path / "m")
    assert main(["prune", "--model", str(tmp_path / "m"), "--keep", "2", *extra, "--calib-images", "2",
                 "--out", str(tmp_path / "p"), "--quiet"]) == 2
    assert message in capsys.readouterr().err and not (tmp_path / "p").exists()


def test_prune_learned_refuses_a_cost_budget_before_calibrating(tmp_path, capsys):
    tiny_class_pipeline(num_layers=4).save_pretrained(tmp_path / "m")
    assert main(["prune", "--model", str(tmp_path / "m"), "--keep", "0.5", "--cost", "params", "--selector",
                 "learned", "--out", str(tmp_path / "p"), "--quiet"]) == 2
    assert "--cost count" in capsys.readouterr().err and not (tmp_path / "p").exists()
