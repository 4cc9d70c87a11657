"""Bad and hostile input to every command: exit 2, exactly one stderr line, the user's files untouched.

Each case runs `accel.cli.main` in-process from a working folder that holds files of the user's
(and is refused as an output); the sha256 of every file there is compared before and after.
Every case fails before any heavy work, on tiny random-init models.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import shutil
from pathlib import Path

import pytest

from accel.cli import main


def _hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(root.rglob("*"))}


@pytest.fixture
def work(tmp_path, monkeypatch):
    """The working folder: the user's notes.txt, data/a.bin and bench-out/results.json (the user's own)."""
    w = tmp_path / "work"
    (w / "data").mkdir(parents=True)
    (w / "notes.txt").write_text("my notes\n")
    (w / "data" / "a.bin").write_bytes(b"\x00\x01user data")
    (w / "taken").mkdir()
    (w / "taken" / "results.json").write_text('{"mine": true}\n')
    (w / "taken" / "report.html").write_text("<p>mine</p>\n")
    monkeypatch.chdir(w)
    return w


def _run(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exc:  # argparse errors exit from inside parse_args
        return int(exc.code)


def _expect_refusal(capsys, work: Path, argv: list[str], message: str, extra_root: Path | None = None) -> str:
    roots = [work] + ([extra_root] if extra_root else [])
    before = [_hashes(r) for r in roots]
    capsys.readouterr()
    rc = _run(argv)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert rc == 2, (argv, err)
    assert len(lines) == 1, err
    assert message in lines[0], (message, lines[0])
    assert [_hashes(r) for r in roots] == before, "the command changed files it must not touch"
    return lines[0]


# ----------------------------------------------------------------------------- models (tiny, on disk)
@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """teacher/ (3-block tiny class DiT), student/ and student-last/ (accel prune --keep 2), digits-student/ (the
    embedded model pruned to 4 blocks), run/ (2 distill steps of student/, a checkpoint each)."""
    from accel.testing import tiny_class_pipeline

    root = tmp_path_factory.mktemp("models")
    tiny_class_pipeline(num_layers=3).save_pretrained(root / "teacher")
    assert main(["prune", "--model", str(root / "teacher"), "--keep", "2", "--selector", "first",
                 "--out", str(root / "student"), "--quiet"]) == 0
    assert main(["prune", "--model", str(root / "teacher"), "--keep", "2", "--selector", "last",
                 "--out", str(root / "student-last"), "--quiet"]) == 0
    assert main(["prune", "--model", "default", "--keep", "4", "--selector", "first",
                 "--out", str(root / "digits-student"), "--quiet"]) == 0
    assert main(["distill", "--teacher", str(root / "teacher"), "--student", str(root / "student"),
                 "--out", str(root / "run"), "--teacher-samples", "1", "--sample-steps", "2", "--steps", "2",
                 "--save-every", "1", "--batch-size", "2", "--quiet"]) == 0
    return root


# ----------------------------------------------------------------------------- bench
BENCH = [
    (["--out", "."], "working directory"),
    (["--out", ".", "--overwrite"], "working directory"),
    (["--out", "..", "--overwrite"], "parent of the working directory"),
    (["--out", "notes.txt"], "not a folder"),
    (["--out", "/proc/x"], "cannot write"),
    (["--out", "taken"], "results.json exists"),
    (["--out", "data/a.bin/x"], "not a folder"),
    (["--steps", "0"], "--steps"),
    (["--num-images", "-1"], "--num-images"),
    (["--repeats", "0"], "--repeats"),
    (["--warmup", "-1"], "--warmup"),
    (["--timing-images", "0"], "--timing-images"),
    (["--batch-size", "0"], "--batch-size"),
    (["--seed-sets", "0"], "--seed-sets"),
    (["--seed", "-1"], "--seed"),
    (["--guidance", "nan"], "--guidance"),
    (["--guidance", "-inf"], "--guidance"),
    (["--threads", "0"], "--threads"),
    (["--height", "0"], "--height"),
    (["--width", "x"], "--width"),
]


@pytest.mark.parametrize("extra, message", BENCH, ids=[" ".join(c[0]) for c in BENCH])
def test_bench_bad_input(work, capsys, extra, message):
    _expect_refusal(capsys, work, ["bench", "--methods", "baseline", "--num-images", "2", *extra], message)


# ----------------------------------------------------------------------------- prune
PRUNE = [
    (["--out", ".", "--overwrite"], "working directory"),  # issue 18 item 1: this emptied the folder
    (["--out", "."], "working directory"),
    (["--out", "..", "--overwrite"], "parent of the working directory"),
    (["--out", "data", "--overwrite"], "did not write"),
    (["--out", "data"], "not empty"),
    (["--out", "notes.txt"], "not a folder"),
    (["--out", "/proc/x"], "cannot write"),
    (["--out", "new", "--threads", "-1"], "--threads"),
    (["--out", "new", "--calib-images", "0"], "--calib-images"),
    (["--out", "new", "--calib-steps", "0"], "--calib-steps"),
    (["--out", "new", "--calib-calls", "0"], "--calib-calls"),
    (["--out", "new", "--evo-evaluations", "-3"], "--evo-evaluations"),
    (["--out", "new", "--seed", "nan"], "--seed"),
    (["--out", "new", "--keep", "nan"], "--keep"),
    (["--out", "new", "--keep", "0"], "--keep"),
    (["--out", "new", "--model", "/no/such/model"], "--model"),
    (["--keep", "2"], "required: --out"),
]


@pytest.mark.parametrize("extra, message", PRUNE, ids=[" ".join(c[0]) for c in PRUNE])
def test_prune_bad_input(work, capsys, models, extra, message):
    argv = ["prune", "--model", str(models / "teacher"), "--selector", "first", "--quiet"]
    if "--keep" not in extra:
        argv += ["--keep", "2"]
    _expect_refusal(capsys, work, [*argv, *extra], message)
    assert not (work / "new").exists()


def test_prune_overwrite_replaces_only_its_own_files(work, models, capsys):
    out = work / "pruned"
    argv = ["prune", "--model", str(models / "teacher"), "--selector", "first", "--keep", "2", "--out", "pruned",
            "--quiet"]
    assert _run(argv) == 0
    (out / "my-notes.txt").write_text("keep me")
    _expect_refusal(capsys, work, argv, "not empty")  # exists: refused without --overwrite
    assert _run([*argv[:-3], "--keep", "1", "--out", "pruned", "--overwrite", "--quiet"]) == 0
    assert json.loads((out / "pruning.json").read_text())["keep"] == [0]
    assert (out / "my-notes.txt").read_text() == "keep me"
    assert not [p for p in work.iterdir() if p.name.startswith(".")]  # no staging folder left behind


# ----------------------------------------------------------------------------- distill
DISTILL = [
    (["--minutes", "nan"], "--minutes"),
    (["--minutes", "inf"], "--minutes"),
    (["--minutes", "0"], "--minutes"),
    (["--ema-decay", "5"], "--ema-decay"),
    (["--ema-decay", "-1"], "--ema-decay"),
    (["--lr", "nan"], "--lr"),
    (["--lr", "0"], "--lr"),
    (["--steps", "0"], "--steps"),
    (["--batch-size", "0"], "--batch-size"),
    (["--grad-accum", "0"], "--grad-accum"),
    (["--save-every", "-1"], "--save-every"),
    (["--lambda-out", "-1"], "--lambda-out"),
    (["--lambda-feat", "nan"], "--lambda-feat"),
    (["--teacher-samples", "-1"], "--teacher-samples"),
    (["--sample-steps", "0"], "--sample-steps"),
    (["--threads", "0"], "--threads"),
    (["--out", "."], "working directory"),
    (["--out", "data"], "not empty"),
    (["--out", "notes.txt"], "not a folder"),
    (["--out", "/proc/x"], "cannot write"),
    (["--student", "data"], "--student data: no pruning.json"),
    (["--student", "/no/such/student"], "--student"),
    (["--teacher", "/no/such/teacher"], "--teacher"),
]


def _distill_argv(models: Path, *extra: str) -> list[str]:
    argv = ["distill", "--teacher", str(models / "teacher"), "--student", str(models / "student"), "--out", "new",
            "--teacher-samples", "1", "--sample-steps", "2", "--steps", "2", "--batch-size", "2", "--quiet"]
    for i in range(0, len(extra), 2):  # later flags override; keep the argv short and explicit
        if extra[i] in argv:
            j = argv.index(extra[i])
            argv[j + 1] = extra[i + 1]
        else:
            argv += list(extra[i:i + 2])
    return argv


@pytest.mark.parametrize("extra, message", DISTILL, ids=[" ".join(c[0]) for c in DISTILL])
def test_distill_bad_input(work, capsys, models, extra, message):
    _expect_refusal(capsys, work, _distill_argv(models, *extra), message)
    assert not (work / "new").exists()


def _student_copy(models: Path, work: Path, edit) -> Path:
    s = work.parent / "student-copy"
    shutil.copytree(models / "student", s)
    edit(s)
    return s


def _set_block_map(value):
    def edit(s: Path) -> None:
        doc = json.loads((s / "pruning.json").read_text())
        doc["block_map"] = value
        (s / "pruning.json").write_text(json.dumps(doc))
    return edit


@pytest.mark.parametrize("edit, message", [
    (_set_block_map([1, 0]), "strictly increasing"),  # permuted: would train towards the wrong teacher blocks
    (_set_block_map([0, 0]), "strictly increasing"),
    (_set_block_map([0, 7]), "outside the teacher"),
    (_set_block_map([0]), "block_map has 1 entries"),
    (_set_block_map("01"), "list of block indices"),
    (_set_block_map([0.0, 1.5]), "list of block indices"),
    (lambda s: (s / "scheduler" / "scheduler_config.json").write_text("{not json"), "--student"),
    (lambda s: (s / "transformer" / "config.json").write_text("[]"), "--student"),
], ids=["permuted", "repeated", "out-of-range", "short", "string", "floats", "scheduler-json", "transformer-config"])
def test_distill_refuses_a_tampered_student(work, capsys, models, edit, message):
    s = _student_copy(models, work, edit)
    _expect_refusal(capsys, work, _distill_argv(models, "--student", str(s)), message, extra_root=s)
    assert not (work / "new").exists()


@pytest.mark.parametrize("config", ['{"_class_name": "os"}', '{"_class_name": "DDIMScheduler", "beta_schedule": 7}',
                                    "[1, 2]", "{not json"], ids=["not-a-scheduler", "bad-field", "a-list", "not-json"])
def test_distill_refuses_a_digits_student_with_a_tampered_scheduler_config(work, capsys, models, config):
    s = work.parent / "digits-student"
    shutil.copytree(models / "digits-student", s)
    (s / "scheduler" / "scheduler_config.json").write_text(config)
    argv = _distill_argv(models, "--teacher", "default", "--student", str(s))
    _expect_refusal(capsys, work, argv, f"--student {s}: {s / 'scheduler' / 'scheduler_config.json'}", extra_root=s)


# ----------------------------------------------------------------------------- distill --resume
def _run_copy(models: Path, work: Path) -> Path:
    run = work.parent / "run"
    shutil.copytree(models / "run", run)
    return run


def _resume_argv(models: Path, run: Path, *extra: str) -> list[str]:
    return [*_distill_argv(models, "--out", str(run), "--steps", "3", "--save-every", "1", *extra), "--resume"]


def _last_step(run: Path) -> Path:
    return sorted((run / "checkpoints").glob("step_*"))[-1]


class _Payload:
    """Unpickling this writes the marker file: what a crafted checkpoint would do on resume."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


def _plant(kind: str, run: Path, marker: Path) -> None:
    payload = pickle.dumps(_Payload(marker))
    last = _last_step(run)
    if kind == "extra-pkl":  # accelerate's file name, next to a valid checkpoint
        (last / "custom_checkpoint_0.pkl").write_bytes(payload)
    elif kind == "replaced-weights":  # a pickle in place of a listed file
        (last / "model.safetensors").write_bytes(payload)
    elif kind == "accelerate-format":  # an old accelerate checkpoint as the newest step, and no manifest anywhere
        for p in (run / "checkpoints").glob("step_*"):
            (p / "manifest.json").unlink()
        (last / "custom_checkpoint_0.pkl").write_bytes(payload)
        (last / "done").write_text("2")
    elif kind == "forged-manifest":  # a manifest naming the pickle
        (last / "custom_checkpoint_0.pkl").write_bytes(payload)
        doc = json.loads((last / "manifest.json").read_text())
        doc["files"]["custom_checkpoint_0.pkl"] = hashlib.sha256(payload).hexdigest()
        (last / "manifest.json").write_text(json.dumps(doc))


@pytest.mark.parametrize("kind, message", [
    ("extra-pkl", "custom_checkpoint_0.pkl, a file accel did not write"),
    ("replaced-weights", "does not match its manifest"),
    ("accelerate-format", "no finished checkpoint"),
    ("forged-manifest", "not the files accel writes"),
])
def test_resume_never_unpickles_a_planted_payload(work, capsys, models, kind, message):
    run = _run_copy(models, work)
    marker = work.parent / "PWNED"
    _plant(kind, run, marker)
    _expect_refusal(capsys, work, _resume_argv(models, run), message, extra_root=run)
    assert not marker.exists()
    # the library entry point refuses too (not only the command's early check)
    import torch

    from accel.pipelines import load_pipeline
    from accel.pruning.checkpoint import CheckpointError
    from accel.pruning.distill import DistillConfig, RecordedCallData, distill

    teacher = load_pipeline(str(models / "teacher")).transformer
    student = load_pipeline(str(models / "student")).transformer
    data = RecordedCallData([((), dict(hidden_states=torch.zeros(1, 1, 8, 8), timestep=torch.tensor([1]),
                                       class_labels=torch.tensor([1])))])
    with pytest.raises(CheckpointError):
        distill(teacher, student, [0, 1], data, DistillConfig(steps=3, batch_size=2, progress=False), run, resume=True)
    assert not marker.exists()


@pytest.mark.parametrize("edit, extra, message", [
    (None, ["--lr", "0.001"], "--lr 0.001 differs"),
    (None, ["--batch-size", "4"], "--batch-size 4 differs"),
    (None, ["--ema-decay", "0.5"], "--ema-decay 0.5 differs"),
    (None, ["--seed", "7"], "--seed 7 differs"),
    ("half-written", [], "half-written"),
    ("other-student", [], "another student"),
    ("no-checkpoints", [], "nothing to resume"),
])
def test_resume_refusals(work, capsys, models, edit, extra, message):
    run = _run_copy(models, work)
    argv = _resume_argv(models, run, *extra)
    if edit == "half-written":  # killed during the first save: no manifest anywhere
        for p in (run / "checkpoints").glob("step_*"):
            (p / "manifest.json").unlink()
    elif edit == "other-student":
        argv[argv.index("--student") + 1] = str(models / "student-last")
    elif edit == "no-checkpoints":
        shutil.rmtree(run / "checkpoints")
    _expect_refusal(capsys, work, argv, message, extra_root=run)


def test_resume_from_the_last_finished_checkpoint_after_a_killed_save(work, models, capsys):
    run = _run_copy(models, work)
    scratch = run / "checkpoints" / ".step_0000003.tmp-killed"  # a save is staged here, renamed when complete
    scratch.mkdir()
    (scratch / "model.safetensors").write_bytes(b"half")  # killed mid-save: no step_0000003 at all
    assert _run(_resume_argv(models, run)) == 0
    assert json.loads((run / "distill.json").read_text())["steps"] == 3
    assert (run / "checkpoints" / "step_0000003" / "manifest.json").is_file()
    assert (scratch / "model.safetensors").read_bytes() == b"half"  # not recorded by this process: left alone
    # an unfinished step_N folder (older accel, or anyone's) where this run saves is refused, never replaced
    run = _run_copy(models, work / "again")
    half = run / "checkpoints" / "step_0000003"
    half.mkdir()
    (half / "model.safetensors").write_bytes(b"half")
    _expect_refusal(capsys, work, _resume_argv(models, run), "step_0000003 is where this run saves", extra_root=run)


# ----------------------------------------------------------------------------- diffrate
DIFFRATE = [
    (["--iters", "-1"], "--iters"),
    (["--iters", "0"], "--iters"),
    (["--rows", "0"], "--rows"),
    (["--steps", "0"], "--steps"),
    (["--flops", "nan"], "--flops"),
    (["--flops", "0"], "--flops"),
    (["--lr", "nan"], "--lr"),
    (["--lam", "-1"], "--lam"),
    (["--calibration-images", "0"], "--calibration-images"),
    (["--calibration-runs", "0"], "--calibration-runs"),
    (["--threads", "-2"], "--threads"),
    (["--out", "notes.txt"], "notes.txt exists"),
    (["--out", "data"], "is a folder"),
    (["--out", "/proc/x/rates.json"], "cannot write"),
    (["--out", "r.json", "--model", "/no/such/model"], "--model"),
]


@pytest.mark.parametrize("extra, message", DIFFRATE, ids=[" ".join(c[0]) for c in DIFFRATE])
def test_diffrate_bad_input(work, capsys, extra, message):
    argv = ["diffrate", "--flops", "0.6", "--quiet"]
    for i in range(0, len(extra), 2):
        if extra[i] in argv:
            argv[argv.index(extra[i]) + 1] = extra[i + 1]
        else:
            argv += extra[i:i + 2]
    _expect_refusal(capsys, work, argv, message)


def test_diffrate_missing_flops_is_one_line(work, capsys):
    _expect_refusal(capsys, work, ["diffrate", "--out", "r.json"], "required: --flops")


@pytest.mark.parametrize("content, message", [
    (b"garbage, not safetensors", "not a readable checkpoint"),
    (None, "not an `accel diffrate` checkpoint"),
])
def test_diffrate_refuses_a_corrupt_checkpoint(work, capsys, content, message):
    ckpt = work / "r.json.ckpt.safetensors"
    if content is None:
        import torch
        from safetensors.torch import save_file

        save_file({"logits": torch.zeros(3)}, str(ckpt))
    else:
        ckpt.write_bytes(content)
    _expect_refusal(capsys, work, ["diffrate", "--flops", "0.6", "--out", "r.json"], message)


# ----------------------------------------------------------------------------- tune
TUNE = [
    (["--out", "notes.txt"], "notes.txt exists"),
    (["--out", "taken/tune.json"], "report.html exists"),  # the report next to it is the user's
    (["--out", "data"], "is a folder"),
    (["--out", "/proc/x.json"], "cannot write"),
    (["--evals", "0"], "--evals"),
    (["--eta", "1"], "--eta"),
    (["--holdout-images", "-1"], "--holdout-images"),
    (["--calibration-images", "0"], "--calibration-images"),
    (["--calibration-images", "2"], "too few for a search"),
    (["--budget-psnr", "nan"], "--budget-psnr"),
    (["--budget-fd", "inf"], "--budget-fd"),
    (["--batch-size", "0"], "--batch-size"),
    (["--front-max", "0"], "--front-max"),
    (["--threads", "-1"], "--threads"),
    (["--steps", "0"], "--steps"),
]


@pytest.mark.parametrize("extra, message", TUNE, ids=[" ".join(c[0]) for c in TUNE])
def test_tune_bad_input(work, capsys, extra, message):
    line = _expect_refusal(capsys, work, ["tune", "--budget-psnr", "20", "--quiet", *extra], message)
    assert "FD" not in line  # only a PSNR budget was given


# ----------------------------------------------------------------------------- outputs.py
def test_atomic_json_write_leaves_the_old_file_and_no_temp_on_error(tmp_path):
    from accel.outputs import write_json_atomic

    f = tmp_path / "r.json"
    f.write_text('{"old": 1}\n')
    with pytest.raises(ValueError):
        write_json_atomic(f, {"x": float("nan")})
    assert f.read_text() == '{"old": 1}\n' and [p.name for p in tmp_path.iterdir()] == ["r.json"]
    write_json_atomic(f, {"new": 2})
    assert json.loads(f.read_text()) == {"new": 2} and [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_staged_dir_error_leaves_no_folder_and_no_parents(tmp_path):
    from accel.outputs import staged_dir

    out = tmp_path / "a" / "b" / "out"
    with pytest.raises(RuntimeError):
        with staged_dir(out) as stage:
            (stage / "results.json").write_text("{}")
            raise RuntimeError("failed half-way")
    assert list(tmp_path.iterdir()) == []


def test_bench_overwrite_replaces_only_its_own_files(work, models, capsys):
    argv = ["bench", "--model", str(models / "teacher"), "--methods", "baseline", "--num-images", "2", "--steps", "2",
            "--batch-size", "2", "--repeats", "1", "--warmup", "0", "--no-fd", "--quiet", "--out", "taken"]
    _expect_refusal(capsys, work, argv, "results.json exists")
    # taken/results.json is the user's (accel recorded no such file there): --overwrite refuses it too
    _expect_refusal(capsys, work, [*argv, "--overwrite"], "results.json is not a file accel wrote")
    argv[-1] = "mine"
    assert _run(argv) == 0
    assert "records" in json.loads((work / "mine" / "results.json").read_text())
    (work / "mine" / "my-notes.txt").write_text("keep me")
    assert _run([*argv, "--overwrite"]) == 0
    assert (work / "mine" / "my-notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in (work / "mine").iterdir()) == sorted(
        [".accel-manifest.json", "my-notes.txt", "results.json", "results.csv", "pareto.png", "grid.png", "report.html"])
    assert not [p for p in work.iterdir() if p.name.startswith(".")]  # no staging folder left behind


def test_outputs_get_plain_permissions(tmp_path):
    import os

    from accel.outputs import staged_dir, write_json_atomic

    mask = os.umask(0o022)
    try:
        write_json_atomic(tmp_path / "r.json", {"a": 1})
        with staged_dir(tmp_path / "out") as stage:
            (stage / "x.txt").write_text("x")
    finally:
        os.umask(mask)
    assert (tmp_path / "r.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "out").stat().st_mode & 0o777 == 0o755
