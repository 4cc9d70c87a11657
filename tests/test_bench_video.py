"""`accel bench --model DIR` on saved tiny text-to-video (Wan 2.2 with two experts, CogVideoX) and
text-to-image (Qwen-Image) pipeline folders: stock calls with text prompts, PSNR/SSIM per video,
FD null with a note, methods a family cannot run skipped with its reason.

`interval-cache:interval=2,warmup=1,min_steps=0` at 6 steps computes steps 0, 1, 3, 5 and reuses 2
and 4 (on Wan 2.2 each expert computes its own first step), so it really saves block evaluations.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from accel.cli import main
from accel.eval import report
from accel.eval.video import FD_NOTE, frames_tensor, per_video
from accel.eval.fidelity import per_image_mse, per_image_ssim
from accel.testing import tiny_prompt_pipeline

IC = "interval-cache:interval=2,warmup=1,min_steps=0"


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("prompt-pipes")
    for name in ("wan22", "cogvideox", "qwen-image"):
        tiny_prompt_pipeline(name).save_pretrained(str(root / name))
    return root


def _bench(folder, out, methods, *extra) -> dict:
    argv = ["bench", "--model", str(folder), "--methods", methods, "--num-images", "2", "--steps", "6",
            "--batch-size", "2", "--repeats", "1", "--warmup", "0", "--timing-images", "1", "--threads", "1",
            "--device", "cpu", "--quiet", "--out", str(out), *extra]
    assert main(argv) == 0
    doc = json.loads((out / "results.json").read_text())
    report.validate_results(doc)
    assert (out / "grid.png").is_file() and (out / "report.html").is_file()
    return doc


@pytest.mark.parametrize("name, frames", [("wan22", 5), ("cogvideox", 9)])
def test_bench_video_folder(folders, tmp_path, name, frames):
    doc = _bench(folders / name, tmp_path / "out", f"baseline,{IC},tome", "--num-frames", str(frames), "--height", "32",
                 "--width", "32")
    base, ic, tome = doc["records"]
    assert [r["method"] for r in doc["records"]] == ["baseline", IC, "tome"]
    assert FD_NOTE in doc["notes"]
    for r in doc["records"]:
        assert r["fd"] is None and r["fd_name"] is None
        assert r["num_frames"] == frames and r["media"] == "video"
    assert doc["meta"]["num_frames"] == frames
    assert base["psnr"] is None and base["ssim"] == pytest.approx(1.0)  # identical to itself
    assert math.isfinite(ic["psnr"]) and ic["ssim"] < 1  # the cache really changed the videos
    assert 0 < ic["block_evals"] < ic["block_total"] == base["block_total"] == base["block_evals"]
    assert tome["flops_ratio"] is not None and 0 < tome["flops_ratio"] < 1  # token merging over frames


def test_wan22_counts_both_experts_and_calibrates_schedule_cache(folders, tmp_path):
    one_file = tmp_path / "calibration.json"
    one_file.write_text(json.dumps({"format": "accel.schedule-calibration/1", "model": "m", "scheduler": "s",
                                    "steps": 6, "errors": [[0.0] * 6] * 6}))  # well-formed, for another model
    sc_file = f"schedule-cache:schedule={one_file}"
    doc = _bench(folders / "wan22", tmp_path / "out", f"baseline,{IC},schedule-cache,{sc_file}",
                 "--num-frames", "5", "--height", "16", "--width", "16")
    assert [r["method"] for r in doc["records"]] == ["baseline", IC, "schedule-cache"]
    skipped = [n for n in doc["notes"] if n.startswith(f"{sc_file} skipped:")]
    assert len(skipped) == 1 and "transformer, transformer_2" in skipped[0]  # one file covers one expert
    assert any(n.startswith("method preparation (calibration)") for n in doc["notes"])
    base, ic, sc = doc["records"]
    # 2 blocks x 6 steps x 2 CFG calls (Wan calls the transformer once per branch), over both experts
    assert base["block_total"] == base["block_evals"] == 2 * 6 * 2
    assert ic["block_evals"] < base["block_total"] and sc["block_evals"] < base["block_total"]
    assert math.isfinite(sc["psnr"])


def test_bench_qwen_image_folder_skips_token_methods(folders, tmp_path):
    doc = _bench(folders / "qwen-image", tmp_path / "out", f"baseline,{IC},tome,toca", "--height", "32",
                 "--width", "32", "--negative-prompt", "blurry")
    assert [r["method"] for r in doc["records"]] == ["baseline", IC]
    for method in ("tome", "toca"):
        note = next(n for n in doc["notes"] if n.startswith(f"{method} skipped:"))
        assert "QwenImageTransformer2DModel" in note and "image-token grid" in note
    assert all(r["fd"] is None and "num_frames" not in r for r in doc["records"])
    assert any(n.startswith("FD skipped") for n in doc["notes"])
    ic = doc["records"][1]
    assert math.isfinite(ic["psnr"]) and ic["block_evals"] < ic["block_total"]


def test_video_bad_input_is_one_line(folders, tmp_path, capsys):
    common = ["bench", "--methods", "baseline", "--num-images", "1", "--steps", "1", "--device", "cpu",
              "--quiet", "--out"]
    assert main([*common, str(tmp_path / "a"), "--model", str(folders / "qwen-image"), "--num-frames", "5"]) == 2
    assert "takes no 'num_frames'" in capsys.readouterr().err
    assert main([*common, str(tmp_path / "b"), "--model", str(folders / "wan22"), "--features", "x:y"]) == 2
    assert "FD is not measured on video pipelines" in capsys.readouterr().err
    # the tiny Wan's rotary table is too short for the pipeline's default 480x832: the probe call says so
    assert main([*common, str(tmp_path / "d"), "--model", str(folders / "wan22"), "--num-frames", "5"]) == 2
    assert "WanPipeline rejected the call" in capsys.readouterr().err
    assert main([*common, str(tmp_path / "e"), "--model", str(folders / "wan22"), "--pipeline-kwargs",
                 '{"num_videos_per_prompt": 2}']) == 2  # one video per seed: the bench's
    assert "'num_videos_per_prompt' is set by the bench" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:  # argparse's range check: exit 2, one line
        main([*common, str(tmp_path / "c"), "--model", str(folders / "wan22"), "--num-frames", "0"])
    assert exit_info.value.code == 2 and "--num-frames must be >= 1" in capsys.readouterr().err
    assert not any((tmp_path / d).exists() for d in "abcde")


def test_per_video_metrics_are_frame_means():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(2, 3, 3, 8, 8, generator=g)
    b = a.clone()
    b[1, 2] = torch.rand(3, 8, 8, generator=g)  # one frame of the second video differs
    mse = per_video(per_image_mse, b, a)
    assert mse[0] == 0 and mse[1] == pytest.approx(float(per_image_mse(b[1, 2:], a[1, 2:])) / 3)
    ssim = per_video(per_image_ssim, b, a)
    assert ssim[0] == pytest.approx(1.0) and ssim[1] < 1
    frames = frames_tensor(a.permute(0, 1, 3, 4, 2).numpy())  # np (N, F, H, W, C) as pipelines return
    assert torch.equal(frames, a)
    with pytest.raises(ValueError, match="N, F, H, W, C"):
        frames_tensor(a[0].numpy())


def test_tune_on_a_video_folder(folders, tmp_path):
    """`accel tune` shares the workload and fidelity code: PSNR per video, a budget on it."""
    out = tmp_path / "tune.json"
    argv = ["tune", "--model", str(folders / "cogvideox"), "--num-frames", "9", "--height", "32", "--width", "32",
            "--budget-psnr", "20", "--evals", "2", "--calibration-images", "4", "--holdout-images", "2",
            "--steps", "8", "--methods", "interval-cache", "--threads", "1", "--device", "cpu", "--quiet",
            "--no-cache", "--out", str(out)]
    assert main(argv) == 0
    chosen = json.loads(out.read_text())["chosen"]
    assert chosen["methods"][0]["name"] == "interval-cache"
    assert chosen["holdout"]["psnr"] >= 20 and chosen["holdout"]["fd"] is None


def test_pipeline_handle_reports_held_bytes_of_both_experts():
    """What the bench reads from a `PipelineHandle`: cached tensors held during a call, freed after it."""
    import accel
    from accel.testing import tiny_wan22_pipeline, wan_inputs

    pipe = tiny_wan22_pipeline()
    held = []
    with accel.apply(pipe, accel.methods()["interval-cache"](interval=2, warmup=1, min_steps=0)) as handle:
        pipe(**wan_inputs(), callback_on_step_end=lambda p, i, t, kw: held.append(handle.held_bytes()) or kw)
        assert handle.held_bytes() == 0  # both experts' caches are freed when the call ends
        parts = handle.stats()["models"]
    assert max(held) > 0 and len(held) == 6
    assert all(p["total"]["block_evals"] > 0 for p in parts.values())
