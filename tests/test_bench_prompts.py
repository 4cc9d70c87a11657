"""`accel bench` on text-to-image pipelines saved to disk: --prompts FILE, --height/--width,
--negative-prompt, --pipeline-kwargs; and the prompt-file formats (txt, CSV/TSV, JSON, JSONL).

The pipelines are tiny random PixArt and SD3 with tiny random T5/CLIP text encoders and a
word-level tokenizer built offline (`accel.testing.tiny_text_pipeline`): nothing downloads.
"""

from __future__ import annotations

import json

import pytest

import accel.pipelines
from accel.cli import main
from accel.eval import report
from accel.eval.methods import BenchInputError
from accel.eval.prompts import load_prompts
from accel.testing import tiny_text_pipeline

PROMPTS = ["a red fox in the snow", "a watercolor painting of a lighthouse at dawn", "a cat on a wooden table"]
IC = "interval-cache:interval=2,warmup=1"  # of 8 steps: computes 0, 1, 3, 5, 7, reuses 2, 4, 6


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("t2i")
    for family in ("pixart", "sd3"):
        tiny_text_pipeline(family).save_pretrained(str(root / family))
    (root / "prompts.csv").write_text("id,caption,source\n" + "".join(f"{i},\"{p}\",test\n"
                                                                      for i, p in enumerate(PROMPTS)))
    (root / "parti.tsv").write_text("Prompt\tCategory\n" + "".join(f"{p}\tAnimals\n" for p in PROMPTS))
    return root


# pixart: PixArt's resolution binning only knows its real sample sizes, so it is switched off
# through --pipeline-kwargs; sd3: shorter T5 prompts, also a real call kwarg
CASES = {"pixart": ("prompts.csv", '{"use_resolution_binning": false}'),
         "sd3": ("parti.tsv", '{"max_sequence_length": 12}')}


@pytest.mark.parametrize("family", sorted(CASES))
def test_text_to_image_bench_end_to_end(saved, tmp_path, monkeypatch, family):
    prompt_file, extra_kwargs = CASES[family]
    seen = {"prompts": [], "negative": set(), "latent_hw": set()}
    real_loader = accel.pipelines.load_pipeline

    def spying_loader(*args, **kwargs):  # the real loader; spies on what reaches the pipeline
        pipe = real_loader(*args, **kwargs)
        encode = pipe.encode_prompt

        def encode_prompt(prompt, *a, **kw):
            seen["prompts"].append(list(prompt))
            seen["negative"].add(kw.get("negative_prompt"))
            return encode(prompt, *a, **kw)

        pipe.encode_prompt = encode_prompt
        pipe.transformer.register_forward_pre_hook(
            lambda mod, args, kw: seen["latent_hw"].add(tuple((args[0] if args else kw["hidden_states"]).shape[-2:])),
            with_kwargs=True)
        return pipe

    monkeypatch.setattr(accel.pipelines.loader, "load_pipeline", spying_loader)  # what the one loader calls
    out = tmp_path / "out"
    argv = ["bench", "--model", str(saved / family), "--no-fd", "--prompts", str(saved / prompt_file),
            "--height", "16", "--width", "24", "--negative-prompt", "blurry", "--pipeline-kwargs", extra_kwargs,
            "--num-images", "4", "--steps", "8", "--methods", f"baseline,{IC}", "--repeats", "1", "--warmup", "0",
            "--timing-images", "2", "--threads", "1", "--device", "cpu", "--quiet", "--out", str(out)]
    assert main(argv) == 0
    doc = json.loads((out / "results.json").read_text())
    report.validate_results(doc)
    base, ic = doc["records"]
    assert base["psnr"] is None and ic["psnr"] > 0 and ic["ssim"] <= 1
    assert base["fd"] is None and ic["fd_name"] is None  # --no-fd
    n_blocks = 2
    assert (base["block_evals"], base["block_total"]) == (8 * n_blocks, 8 * n_blocks)
    assert ic["block_evals"] == 5 * n_blocks  # the cache reused steps 2, 4, 6
    assert doc["meta"]["command"][-2:] == ["--out", str(out)]
    # the file's prompts, cycled over 4 images, with the negative prompt, at 16 x 24 (VAE factor 1)
    assert seen["prompts"][0] == [PROMPTS[0]]  # the probe call: one image with the run's kwargs
    assert seen["prompts"][1] == [PROMPTS[0], PROMPTS[1], PROMPTS[2], PROMPTS[0]]
    assert seen["negative"] == {"blurry"}
    assert seen["latent_hw"] == {(16, 24)}  # the transformer's input is the latent grid
    assert any("prompts: 3 in" in n for n in doc["notes"])


def test_unknown_pipeline_kwarg_names_the_pipeline(saved, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["bench", "--model", str(saved / "sd3"), "--no-fd", "--methods", "baseline",
               "--pipeline-kwargs", '{"num_frames": 8}',
               "--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "StableDiffusion3Pipeline.__call__ takes no 'num_frames'" in err and not out.exists()


def test_size_the_pipeline_rejects_is_bad_input(saved, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["bench", "--model", str(saved / "sd3"), "--no-fd", "--height", "17", "--steps", "2",
               "--num-images", "2", "--methods", "baseline", "--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "accel bench: error: StableDiffusion3Pipeline rejected the call:" in err and "17" in err
    assert "Traceback" not in err and not out.exists()


def _write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_prompt_file_formats(tmp_path):
    assert load_prompts(_write(tmp_path, "p.txt", "  a fox \n\na cat\n")) == ["a fox", "a cat"]
    coco = {"images": [], "annotations": [{"image_id": 1, "id": 9, "caption": "A dog. "}, {"caption": "a cat"}]}
    assert load_prompts(_write(tmp_path, "coco.json", json.dumps(coco))) == ["A dog.", "a cat"]
    assert load_prompts(_write(tmp_path, "list.json", json.dumps(["x", "y"]))) == ["x", "y"]
    rows = [{"text": "one", "n": 1}, {"text": "two", "n": 2}]
    assert load_prompts(_write(tmp_path, "rows.jsonl", "\n".join(map(json.dumps, rows)))) == ["one", "two"]
    csv_text = "Prompt,Note\nalpha,x\nbeta,y\n"
    assert load_prompts(_write(tmp_path, "a.csv", csv_text)) == ["alpha", "beta"]  # case-insensitive column
    assert load_prompts(_write(tmp_path, "b.csv", csv_text), column="Note") == ["x", "y"]


@pytest.mark.parametrize("name, text, column, msg", [
    ("none.csv", "id,label\n1,x\n", None, "no a caption/prompt/text column"),
    ("col.csv", "caption\nx\n", "desc", "no column 'desc'; columns: caption"),
    ("bad.json", "{nope", None, "not valid JSON"),
    ("obj.json", '{"items": []}', None, "needs a list under one of"),
    ("mixed.json", '[{"caption": "a"}, {"other": 1}]', None, "entry 1 has no text in column 'caption'"),
    ("bad.jsonl", '{"caption": "a"}\nnot json\n', None, "line 2: not valid JSON"),
    ("empty.txt", "\n \n", None, "no prompts found"),
    ("p.txt", "a\n", "caption", "prompt_column needs a .csv"),  # the command prints --prompt-column
])
def test_bad_prompt_files(tmp_path, name, text, column, msg):
    with pytest.raises(BenchInputError, match=msg):
        load_prompts(_write(tmp_path, name, text), column=column)
    with pytest.raises(BenchInputError, match="cannot be read"):
        load_prompts(tmp_path / "missing.txt")
