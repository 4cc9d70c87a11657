"""accel.readers, the one bounded reader (issue 28), and the audit's reproducers at each read site:
deeply nested JSON is one line (never RecursionError), `/dev/zero` as a prompt file stops at the size
limit, NaN and tampered markers are refused, corrupt or edited tune cache entries are recomputed with a
notice, a resumed checkpoint with NaN EMA weights is refused."""

from __future__ import annotations

import hashlib
import json
import time
import tracemalloc
from pathlib import Path

import pytest
import torch

from accel.cli import main
from accel.errors import InputError
from accel.readers import (
    Field, ReadError, check_fields, check_nesting, nesting_depth, parse_json, read_bytes, read_json, read_lines,
    read_safetensors,
)

DEEP = "[" * 100_000 + "]" * 100_000


def _cli(capsys, argv: list[str]) -> str:
    """The one stderr line of a command that must exit 2."""
    capsys.readouterr()
    try:
        rc = main(argv)
    except SystemExit as exc:
        rc = int(exc.code)
    lines = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(lines) == 1, (rc, lines)
    return lines[0]


# ----------------------------------------------------------------------------- the reader itself
def test_deep_nesting_is_one_line_without_recursion_error():
    for text in (DEEP, '{"a": ' * 50_000 + "1" + "}" * 50_000, "[" * 10_000_000):
        with pytest.raises(ReadError, match="nested too deeply") as info:
            parse_json(text, where="x.json")
        assert "\n" not in str(info.value) and str(info.value).startswith("x.json: ")
    assert parse_json("[" * 64 + "]" * 64, where="x") == eval("[" * 64 + "]" * 64)  # the limit itself is read


def test_brackets_inside_strings_do_not_count():
    assert nesting_depth('["[[[[", {"k]": "\\"[[["}, [[]]]') == 3
    assert parse_json(json.dumps({"s": "[" * 1000}), where="x") == {"s": "[" * 1000}


@pytest.mark.parametrize("text, token", [("[1, NaN]", "NaN"), ('{"a": Infinity}', "Infinity"),
                                         ("[-Infinity]", "-Infinity"), ('{"g":\n 1e999}', "1e999")])
def test_non_finite_numbers_are_refused_with_their_place(text, token):
    with pytest.raises(ReadError, match=f"non-finite number {token} at line") as info:
        parse_json(text, where="m.json")
    assert isinstance(info.value, InputError) and isinstance(info.value, ValueError)
    assert parse_json('["NaN", "Infinity"]', where="m") == ["NaN", "Infinity"]  # strings are fine
    assert parse_json('{"x": -Infinity}', where="m", finite=False) == {"x": float("-inf")}  # third-party files


def test_size_is_bounded_while_reading(tmp_path):
    t0 = time.perf_counter()
    tracemalloc.start()
    try:
        with pytest.raises(ReadError, match="larger than 1 MiB"):
            read_bytes("/dev/zero", max_bytes=1 << 20)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20 and time.perf_counter() - t0 < 5
    f = tmp_path / "a.json"
    f.write_text('{"a": 1}')
    assert read_json(f) == {"a": 1}
    with pytest.raises(ReadError, match="larger than 7 bytes"):
        read_json(f, max_bytes=7)
    with pytest.raises(ReadError, match="is a directory"):
        read_json(tmp_path)
    with pytest.raises(ReadError, match="no such file"):
        read_json(tmp_path / "missing.json", what="schedule file")
    (tmp_path / "b.json").write_bytes(b'{"a": "\xff"}')
    with pytest.raises(ReadError, match="not UTF-8"):
        read_json(tmp_path / "b.json")


def test_line_limit_is_checked_before_splitting(tmp_path):
    f = tmp_path / "p.txt"
    f.write_text("a\rb\nc\n")
    assert read_lines(f, max_lines=3) == ["a", "b", "c"]
    with pytest.raises(ReadError, match="more than 2 lines"):
        read_lines(f, max_lines=2)


def test_field_checks():
    fields = {"kind": Field(str, required=True, choices=("a", "b")), "g": Field(float, low=0, high=10),
              "n": Field(int, low=1), "s": Field((dict, type(None)))}
    assert check_fields({"kind": "a", "g": 2, "n": 3, "s": None, "other": [1]}, fields, where="w")
    for doc, message in [([1], "expected a JSON object"), ({}, "no 'kind'"), ({"kind": "c"}, "is not one of"),
                         ({"kind": "a", "g": 11}, r"g = 11 is outside \[0, 10\]"),
                         ({"kind": "a", "g": float("nan")}, "not a finite number"),
                         ({"kind": "a", "n": True}, "n must be int, got True"),
                         ({"kind": "a", "g": "2"}, "g must be float/int"), ({"kind": "a", "s": [1]}, "s must be dict/null")]:
        with pytest.raises(ReadError, match=message):
            check_fields(doc, fields, where="w")


def test_in_memory_nesting_is_walked_without_recursion():
    deep: list = []
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(ReadError, match="nested more than 64 deep"):
        check_nesting(deep, where="schedule=")
    check_nesting({"a": [[1, 2], {"b": 3}]}, where="x")


def test_safetensors_finiteness(tmp_path):
    from safetensors.torch import save_file

    save_file({"w": torch.tensor([1.0, float("nan")]), "i": torch.tensor([1])}, str(tmp_path / "m.safetensors"))
    with pytest.raises(ReadError, match="tensor 'w' holds NaN"):
        read_safetensors(tmp_path / "m.safetensors", what="checkpoint")
    assert read_safetensors(tmp_path / "m.safetensors", finite=False)["i"].item() == 1
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ReadError, match="not a readable safetensors file"):
        read_safetensors(tmp_path / "bad.safetensors")


# ----------------------------------------------------------------------------- read sites: deeply nested JSON
def test_deep_pipeline_kwargs_is_one_line_exit_2(tmp_path, capsys):
    line = _cli(capsys, ["bench", "--methods", "baseline", "--num-images", "2", "--steps", "2", "--no-fd",
                         "--out", str(tmp_path / "o"), "--pipeline-kwargs", DEEP])
    assert "--pipeline-kwargs: JSON nested too deeply" in line
    assert not (tmp_path / "o").exists()


def test_deep_schedule_file_and_nested_schedule_data_are_one_line(tmp_path):
    from accel.caching import ScheduleCacheConfig

    f = tmp_path / "schedule.json"
    f.write_text(DEEP)
    with pytest.raises(ValueError, match="schedule file .*: JSON nested too deeply") as info:
        ScheduleCacheConfig(schedule=str(f))
    assert "\n" not in str(info.value)
    deep: list = []
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(ValueError, match=r"ScheduleCacheConfig\(schedule=...\): nested more than 16 deep"):
        ScheduleCacheConfig(schedule=deep)
    with pytest.raises(ValueError, match="schedule= must be the path of a calibration JSON file .*, got a list"):
        ScheduleCacheConfig(schedule=[[0.0, 1.0]])


def test_every_method_config_refuses_deeply_nested_data_in_one_line():
    import dataclasses

    import accel

    deep: list = []
    for _ in range(100_000):
        deep = [deep]
    for cls in accel.methods().values():
        for f in dataclasses.fields(cls):
            with pytest.raises(ValueError, match=rf"{cls.__name__}\({f.name}=...\): nested more than 16 deep"):
                cls(**{f.name: deep})  # used to raise RecursionError from the validators' repr


def test_calibrate_schedule_refuses_a_non_finite_guidance():
    from accel.caching import calibrate_schedule

    with pytest.raises(ValueError, match="guidance_scale must be a finite number, got nan"):
        calibrate_schedule(object(), num_inference_steps=4, guidance_scale=float("nan"))


def test_prompt_files_deep_and_dev_zero(tmp_path):
    from accel.eval.methods import BenchInputError
    from accel.eval.prompts import load_prompts

    (tmp_path / "p.json").write_text(DEEP)
    with pytest.raises(BenchInputError, match="prompts .*p.json: JSON nested too deeply"):
        load_prompts(tmp_path / "p.json")
    (tmp_path / "p.jsonl").write_text('"a"\n' + DEEP + "\n")
    with pytest.raises(BenchInputError, match="line 2: JSON nested too deeply"):
        load_prompts(tmp_path / "p.jsonl")
    t0 = time.perf_counter()
    tracemalloc.start()
    try:  # used to fill 23 GB in 14 s
        with pytest.raises(BenchInputError, match="prompts /dev/zero: larger than 128 MiB"):
            load_prompts("/dev/zero")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 160 << 20 and time.perf_counter() - t0 < 30
    (tmp_path / "many.txt").write_text("a\n" * 2_000_001)
    with pytest.raises(BenchInputError, match="more than 2,000,000 lines"):
        load_prompts(tmp_path / "many.txt")


# ----------------------------------------------------------------------------- markers
@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A saved tiny class-conditional pipeline (a plain folder, no marker)."""
    from accel.testing import tiny_class_pipeline

    root = tmp_path_factory.mktemp("marker") / "model"
    tiny_class_pipeline(num_layers=2).save_pretrained(root)
    return root


GOOD_MARKER = {"kind": "accel-digits", "embedded": "default", "image_size": 32, "num_classes": 10,
               "sampler": {"scheduler": "dpm++", "steps": 50, "guidance_scale": 2.0}, "derived_from": "default"}


@pytest.mark.parametrize("content, message", [
    (json.dumps(GOOD_MARKER).replace("2.0", "NaN"), "non-finite number NaN at line 1"),
    (json.dumps({**GOOD_MARKER, "embedded": "../../etc/passwd"}), "embedded = '../../etc/passwd' is not one of"),
    (json.dumps({**GOOD_MARKER, "kind": "accel-something"}), "kind = 'accel-something' is not one of"),
    (json.dumps({**GOOD_MARKER, "embedded": "flow"}), "kind 'accel-digits' is not what the embedded flow model"),
    (json.dumps({**GOOD_MARKER, "sampler": {"steps": 0}}), r"sampler: steps = 0 is outside \[1, 10000\]"),
    (json.dumps({**GOOD_MARKER, "sampler": {"guidance_scale": 1e300}}), r"guidance_scale = 1e\+300 is outside"),
    ("{not json", "not valid JSON"),
    (None, "is a directory"),
])
def test_a_bad_marker_is_refused_in_one_line(folder, tmp_path, capsys, content, message):
    import shutil

    from accel.models import is_digits_model, sampler_defaults

    model = tmp_path / "model"
    shutil.copytree(folder, model)
    if content is None:
        (model / "accel_model.json").mkdir()
    else:
        (model / "accel_model.json").write_text(content)
    with pytest.raises(InputError, match=message):
        is_digits_model(model)
    with pytest.raises(InputError, match=message):
        sampler_defaults(model)
    line = _cli(capsys, ["bench", "--model", str(model), "--methods", "baseline", "--num-images", "2", "--steps", "2",
                         "--no-fd", "--out", str(tmp_path / "o")])
    assert "model marker" in line and "accel_model.json" in line and message.replace("\\", "") in line
    assert not (tmp_path / "o").exists()


def test_a_good_marker_and_no_marker_still_read(folder):
    from accel.models import read_marker

    assert read_marker(folder) is None
    assert read_marker(Path("nobody-org/not-a-model")) is None


# ----------------------------------------------------------------------------- tune cache entries
def _evaluator(cache: Path, notices: list):
    import accel
    from accel.eval.workload import make_workload
    from accel.testing import tiny_class_pipeline
    from accel.tune.evaluate import Evaluator

    pipe = tiny_class_pipeline(num_layers=2)
    pipe.set_progress_bar_config(disable=True)
    wl = make_workload(pipe, 2, 0, 3, guidance=1.0, batch_size=2, num_classes=10)
    return Evaluator(pipe, wl, accel.methods(), workload_key="w", cache_path=cache, repeats=1,
                     notify=notices.append)


def test_tune_cache_corrupt_file_and_edited_entries_are_recomputed_with_a_notice(tmp_path):
    from accel.tune.space import Candidate

    c = Candidate((("interval-cache", (("forecast", 0), ("interval", 2), ("warmup", 1))),))
    cache = tmp_path / "cache.json"
    cache.write_text("{bad")
    notices: list[str] = []
    ev = _evaluator(cache, notices)
    assert len(notices) == 1 and "tune cache" in notices[0] and "not valid JSON" in notices[0]
    good = ev.evaluate(c, 2)
    assert ev.evaluations == 1 and json.loads(cache.read_text())["results"]  # rewritten with the result
    for edit, message in [({"speedup": 1e9}, "speedup = 1000000000.0 is outside"),
                          ({"psnr": 1e9}, "psnr = 1000000000.0 is outside"),
                          ({"fd_pct": -200}, "fd_pct = -200 is outside"), ({"speedup": "nanx"}, "speedup must be"),
                          ({"n": 3}, "is of"), ({"seconds": None}, "seconds must be float")]:
        doc = json.loads(cache.read_text())
        doc["results"][f"{c.key}|2"] = {**good, **edit}
        cache.write_text(json.dumps(doc))
        notices.clear()
        ev = _evaluator(cache, notices)
        again = ev.evaluate(c, 2)
        assert ev.evaluations == 1 and len(notices) == 1 and message in notices[0] and "recomputing" in notices[0]
        assert again["speedup"] < 1e4 and again["psnr"] == good["psnr"]
    doc = json.loads(cache.read_text())
    doc["results"][f"{c.key}|2"]["psnr"] = float("nan")  # written as a NaN token: the whole file is refused
    cache.write_text(json.dumps(doc))
    notices.clear()
    ev = _evaluator(cache, notices)
    assert "non-finite number NaN" in notices[0]
    ev.evaluate(c, 2)
    assert ev.evaluations == 1
    notices.clear()
    ev = _evaluator(cache, notices)  # a valid entry is served from the cache, without a notice
    assert ev.evaluate(c, 2) and ev.evaluations == 0 and notices == []


# ----------------------------------------------------------------------------- distill checkpoints
@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """teacher/, student/ (accel prune --keep 1) and run/ (2 distill steps, a checkpoint each)."""
    from accel.testing import tiny_class_pipeline

    root = tmp_path_factory.mktemp("ckpt")
    tiny_class_pipeline(num_layers=2).save_pretrained(root / "teacher")
    assert main(["prune", "--model", str(root / "teacher"), "--keep", "1", "--selector", "first",
                 "--out", str(root / "student"), "--quiet"]) == 0
    assert main(_distill(root, root / "run", "--steps", "2")) == 0
    return root


def _distill(root: Path, out: Path, *extra: str) -> list[str]:
    return ["distill", "--teacher", str(root / "teacher"), "--student", str(root / "student"), "--out", str(out),
            "--teacher-samples", "1", "--sample-steps", "2", "--save-every", "1", "--batch-size", "2", "--quiet",
            *extra]


def _tampered_copy(run: Path, tmp_path: Path, name: str, write) -> tuple[Path, Path]:
    """A copy of the run whose last checkpoint's `name` is rewritten by `write(path)`, its manifest hash updated
    (a forged checkpoint that passes the hash check)."""
    import shutil

    out = tmp_path / "run"
    shutil.copytree(run / "run", out)
    last = sorted((out / "checkpoints").glob("step_*"))[-1]
    write(last / name)
    manifest = json.loads((last / "manifest.json").read_text())
    manifest["files"][name] = hashlib.sha256((last / name).read_bytes()).hexdigest()
    (last / "manifest.json").write_text(json.dumps(manifest))
    return out, last


def _files(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("name", ["ema.safetensors", "model.safetensors"])
def test_resume_with_nan_weights_is_refused(run, tmp_path, capsys, name):
    from safetensors.torch import load_file, save_file

    def poison(f: Path) -> None:
        sd = load_file(str(f))
        key = sorted(k for k, v in sd.items() if v.is_floating_point())[0]
        sd[key] = torch.full_like(sd[key], float("nan"))
        save_file(sd, str(f))

    out, last = _tampered_copy(run, tmp_path, name, poison)
    before = _files(out)
    line = _cli(capsys, _distill(run, out, "--steps", "2", "--resume"))  # used to write a transformer of NaNs, exit 0
    assert f"--resume: checkpoint {last / name}: tensor" in line and "holds NaN or infinite values" in line
    assert _files(out) == before


def test_resume_with_deep_state_json_is_one_line(run, tmp_path, capsys):
    out, last = _tampered_copy(run, tmp_path, "state.json", lambda f: f.write_text(DEEP))
    line = _cli(capsys, _distill(run, out, "--steps", "3", "--resume"))
    assert f"checkpoint state {last / 'state.json'}: JSON nested too deeply" in line
