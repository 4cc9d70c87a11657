"""Planted files: a user's files at every depth of every output accel writes survive `--overwrite` / `--resume`.

Issue 28: deletion has one door (`accel.outputs.remove_own`), which removes only files accel recorded
writing (size + sha256) and keeps the rest. Each test plants files of the user's inside an output of one
command (prune, distill with its checkpoints, diffrate, tune, bench, schedule calibrations), runs the command
again over it, and checks every planted file byte for byte and that accel's own files were replaced. The
issue's reproducers (data loss 1-3, a diverging distill, long paths, a bad ACCEL_CACHE_DIR) each have a test.
Tiny random-init models; every command runs with its smallest settings.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from accel.cli import main
from accel.outputs import MANIFEST, OutputError, is_own, publish_dir, read_manifest, remove_own, staged_dir


def _run(argv: list[str]) -> int:
    try:
        return main([str(a) for a in argv])
    except SystemExit as exc:  # argparse refusals exit from inside parse_args
        return int(exc.code)


def _plant(root: Path, rels: list[str]) -> dict[Path, bytes]:
    """Write a user's file at each of `rels` (distinct bytes each); returns path -> bytes."""
    planted = {}
    for i, rel in enumerate(rels):
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(f"user file {i}: {rel}\n".encode())
        planted[p] = p.read_bytes()
    return planted


def _every_depth(root: Path) -> list[str]:
    """A user's file in every folder of `root` (and in a new folder of theirs beside each)."""
    dirs = [d for d in [root, *sorted(root.rglob("*"))] if d.is_dir()]
    rels = []
    for d in dirs:
        rel = d.relative_to(root)
        rels += [str(rel / "mine.txt"), str(rel / "notes" / "n.txt")]
    return rels


def _intact(planted: dict[Path, bytes]) -> None:
    changed = [str(p) for p, b in planted.items() if not p.is_file() or p.read_bytes() != b]
    assert not changed, f"planted files lost or changed: {changed}"


def _inodes(root: Path) -> dict[str, int]:
    return {rel: (root / rel).stat().st_ino for rel in read_manifest(root)}


def _replaced(root: Path, before: dict[str, int]) -> None:
    """Every file accel recorded is on disk as recorded, and each earlier one was written anew."""
    records = read_manifest(root)
    assert records and all(is_own(root / rel, rec) for rel, rec in records.items())
    assert all((root / rel).stat().st_ino != ino for rel, ino in before.items() if rel in records)


def _one_line(capsys, *needles: str) -> str:
    """The one error line on stderr (progress bars and `accel tune`'s settings line aside) holds `needles`."""
    err = [ln for ln in capsys.readouterr().err.strip().splitlines() if "error" in ln]
    assert len(err) == 1, err
    assert all(n in err[0] for n in needles), (needles, err[0])
    return err[0]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """teacher/ (a 3-block tiny class DiT) and student/ (`accel prune --keep 2` of it)."""
    from accel.testing import tiny_class_pipeline

    root = tmp_path_factory.mktemp("planted-models")
    tiny_class_pipeline(num_layers=3).save_pretrained(root / "teacher")
    assert _run(["prune", "--model", root / "teacher", "--keep", "2", "--selector", "first",
                 "--out", root / "student", "--quiet"]) == 0
    return root


# ----------------------------------------------------------------------------- the door itself
def test_remove_own_deletes_only_recorded_unchanged_files(tmp_path, capsys):
    root = tmp_path / "out"
    with staged_dir(root, writer="t") as stage:
        (stage / "sub").mkdir()
        for rel in ("a.txt", "sub/b.txt", "sub/c.txt"):
            (stage / rel).write_text(rel)
    records = read_manifest(root)
    assert sorted(records) == ["a.txt", "sub/b.txt", "sub/c.txt"] and records["a.txt"]["by"] == "t"
    (root / "sub" / "c.txt").write_text("edited by the user")
    planted = _plant(root, ["sub/mine.txt", "unrecorded.txt"])
    kept = remove_own(root, records, ["a.txt", "sub/b.txt", "sub/c.txt", "sub/mine.txt", "unrecorded.txt"])
    assert not (root / "a.txt").exists() and not (root / "sub" / "b.txt").exists()
    assert sorted(p.name for p in kept) == ["c.txt", "mine.txt", "unrecorded.txt"]
    _intact(planted)
    assert (root / "sub" / "c.txt").read_text() == "edited by the user"
    assert "kept 3 file(s)" in capsys.readouterr().err
    with pytest.raises(ValueError, match="not a scratch folder"):  # a whole folder only if it is accel's stage
        remove_own(root, None)
    assert (root / "sub").is_dir()


def test_publish_replaces_accels_files_removes_its_stale_ones_and_keeps_the_users(tmp_path, capsys):
    out = tmp_path / "out"
    with staged_dir(out, writer="t") as stage:
        for rel in ("a.txt", "sub/b.txt", "sub/stale.txt", "old/x.txt"):
            (stage / rel).parent.mkdir(parents=True, exist_ok=True)
            (stage / rel).write_text("first " + rel)
    planted = _plant(out, _every_depth(out))
    stage = tmp_path / ".stage"
    (stage / "sub").mkdir(parents=True)
    (stage / "a.txt").write_text("second")
    (stage / "sub" / "b.txt").write_text("second")
    publish_dir(stage, out, "t")
    _intact(planted)
    assert (out / "a.txt").read_text() == "second" and (out / "sub" / "b.txt").read_text() == "second"
    assert not (out / "sub" / "stale.txt").exists() and not (out / "old" / "x.txt").exists()
    assert (out / "old" / "mine.txt").is_file()  # the folder stays for the user's file in it
    assert sorted(read_manifest(out)) == ["a.txt", "sub/b.txt"]
    assert "kept" in capsys.readouterr().err and not stage.exists()
    # a user's file where accel writes one (not recorded) stops the publish before anything moves
    (out / "a.txt").write_text("now the user's")
    stage.mkdir()
    (stage / "a.txt").write_text("third")
    (stage / "new.txt").write_text("third")
    with pytest.raises(OutputError, match="a.txt is not a file accel wrote"):
        publish_dir(stage, out, "t")
    assert (out / "a.txt").read_text() == "now the user's" and not (out / "new.txt").exists()


# ----------------------------------------------------------------------------- prune (data loss 1)
def test_prune_overwrite_keeps_user_files_at_every_depth(models, tmp_path, capsys):
    out = tmp_path / "pruned"
    argv = ["prune", "--model", models / "teacher", "--selector", "first", "--out", out, "--quiet"]
    assert _run([*argv, "--keep", "2"]) == 0
    planted = _plant(out, [*_every_depth(out), "transformer/my_lora.safetensors", "scheduler/notes/n.txt"])
    before = _inodes(out)
    capsys.readouterr()
    assert _run([*argv, "--keep", "1", "--overwrite"]) == 0
    _intact(planted)
    _replaced(out, before)
    assert json.loads((out / "pruning.json").read_text())["keep"] == [0]
    assert json.loads((out / "transformer" / "config.json").read_text())["num_layers"] == 1
    err = capsys.readouterr().err
    assert f"kept {len(planted)} file(s) accel did not write" in err and "transformer/my_lora.safetensors" in err
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no stage left


def test_prune_overwrite_refuses_a_folder_that_only_looks_like_accels(models, tmp_path, capsys):
    out = tmp_path / "users"
    planted = _plant(out, ["model_index.json", "transformer/weights.bin"])
    (out / "pruning.json").write_text("{}")
    planted[out / "pruning.json"] = b"{}"
    capsys.readouterr()
    assert _run(["prune", "--model", models / "teacher", "--keep", "1", "--selector", "first", "--out", out,
                 "--overwrite", "--quiet"]) == 2
    _one_line(capsys, "did not write", MANIFEST)
    _intact(planted)
    assert sorted(p.name for p in out.iterdir()) == ["model_index.json", "pruning.json", "transformer"]


def test_prune_refuses_to_write_over_the_model_it_reads(models, tmp_path, capsys):
    pp = tmp_path / "pp"
    shutil.copytree(models / "student", pp)
    before = {p: p.read_bytes() for p in pp.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert _run(["prune", "--model", pp, "--keep", "1", "--selector", "first", "--out", pp, "--overwrite",
                 "--quiet"]) == 2
    _one_line(capsys, "--model folder this command reads")
    _intact(before)


# ----------------------------------------------------------------------------- distill (data loss 2, divergence)
def _distill(models: Path, out: Path, *extra) -> list:
    return ["distill", "--teacher", models / "teacher", "--student", models / "student", "--out", out,
            "--teacher-samples", "1", "--sample-steps", "2", "--batch-size", "2", "--save-every", "1", "--quiet",
            *extra]


@pytest.fixture(scope="module")
def run2(models, tmp_path_factory):
    """A 2-step distill run (a checkpoint each step), copied by the tests that change it."""
    out = tmp_path_factory.mktemp("planted-distill") / "run"
    assert _run(_distill(models, out, "--steps", "2")) == 0
    return out


def test_distill_resume_keeps_user_files_and_user_checkpoints(models, run2, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(run2, out)
    ck = out / "checkpoints"
    assert sorted(p.name for p in ck.iterdir()) == ["step_0000001", "step_0000002"]
    latest = "checkpoints/step_0000002/"  # resumed from: must stay exactly accel's (a planted file is refused)
    planted = _plant(out, [*(r for r in _every_depth(out) if not r.startswith(latest)),
                           "checkpoints/step_0000000_mine/weights.bin", "checkpoints/step_0000001/NOTE.txt",
                           "transformer/my_lora.safetensors"])
    before = _inodes(out)
    capsys.readouterr()
    assert _run([*_distill(models, out, "--steps", "4"), "--resume"]) == 0
    _intact(planted)
    _replaced(out, before)
    assert json.loads((out / "distill.json").read_text())["steps"] == 4
    # accel's old checkpoints went file by file: step 1 keeps only the user's files, step 2 is gone
    assert sorted(p.name for p in (ck / "step_0000001").iterdir()) == ["NOTE.txt", "mine.txt", "notes"]
    assert not (ck / "step_0000002").exists()
    assert (ck / "step_0000003" / "manifest.json").is_file() and (ck / "step_0000004" / "manifest.json").is_file()
    assert "kept" in capsys.readouterr().err


def test_distill_divergence_stops_with_one_line_and_the_last_good_checkpoint(models, tmp_path, capsys):
    from accel.pruning.checkpoint import checkpoints, verify_checkpoint

    out = tmp_path / "lr"
    capsys.readouterr()
    assert _run(_distill(models, out, "--steps", "6", "--lr", "1e30")) == 2
    line = _one_line(capsys, "diverged at step", "--lr")
    done = checkpoints(out / "checkpoints")
    assert done and str(done[-1]) in line  # named, and whole: its manifest checks out
    assert all(verify_checkpoint(p)["format"] for p in done)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [p.name for p in done]  # nothing half-written
    assert not (out / "distill.json").exists()


@pytest.mark.parametrize("extra, message", [
    (["--lambda-task", "0", "--lambda-out", "0", "--lambda-feat", "0"], "all 0: nothing would train"),
    (["--lambda-out", "0", "--lambda-feat", "0"], "no task loss: nothing would train"),
])
def test_distill_refuses_loss_weights_that_train_nothing(models, tmp_path, capsys, extra, message):
    out = tmp_path / "zero"
    capsys.readouterr()
    assert _run(_distill(models, out, "--steps", "2", *extra)) == 2
    _one_line(capsys, message)
    assert not out.exists()


@pytest.mark.parametrize("kind", ["file", "unfinished folder"])
def test_distill_resume_refuses_a_step_path_it_did_not_write(models, run2, tmp_path, capsys, kind):
    out = tmp_path / "run"
    shutil.copytree(run2, out)
    blocker = out / "checkpoints" / "step_0000003"
    planted = _plant(out, ["checkpoints/step_0000003" if kind == "file" else "checkpoints/step_0000003/x.bin"])
    capsys.readouterr()
    assert _run([*_distill(models, out, "--steps", "4"), "--resume"]) == 2
    _one_line(capsys, f"{blocker} is where this run saves")
    _intact(planted)


# ----------------------------------------------------------------------------- diffrate, tune, bench
def test_diffrate_overwrite_keeps_files_beside_its_output(models, tmp_path):
    out = tmp_path / "rates" / "rates.json"
    argv = ["diffrate", "--model", models / "teacher", "--flops", "0.6", "--out", out, "--iters", "2", "--steps", "2",
            "--calibration-images", "1", "--calibration-runs", "1", "--quiet"]
    assert _run(argv) == 0
    planted = _plant(out.parent, ["mine.txt", "notes/n.txt", "rates.json.bak"])
    ino = out.stat().st_ino
    assert _run([*argv, "--overwrite"]) == 0
    _intact(planted)
    assert out.stat().st_ino != ino and json.loads(out.read_text())["depth"] == 3
    assert sorted(p.name for p in out.parent.iterdir()) == [MANIFEST, "mine.txt", "notes", "rates.json",
                                                            "rates.json.bak"]
    assert sorted(read_manifest(out.parent)) == ["rates.json"]


@pytest.mark.parametrize("command, users", [("diffrate", ["rates.json"]), ("tune", ["report.html"]),
                                            ("tune", ["tune.json"])])
def test_file_outputs_overwrite_only_files_accel_recorded(models, tmp_path, capsys, command, users):
    """`--overwrite` of a file output (and of report.html, written next to tune.json) replaces only a file
    accel recorded writing there; a user's file of that name is refused in one line, before any work."""
    planted = _plant(tmp_path, users)
    out = tmp_path / ("rates.json" if command == "diffrate" else "tune.json")
    argv = {"diffrate": ["diffrate", "--model", models / "teacher", "--flops", "0.6"],
            "tune": ["tune", "--model", models / "teacher", "--budget-psnr", "20"]}[command]
    capsys.readouterr()
    assert _run([*argv, "--out", out, "--overwrite"]) == 2
    _one_line(capsys, f"{users[0]} is not a file accel wrote")
    _intact(planted)
    assert sorted(p.name for p in tmp_path.iterdir()) == users


def test_tune_overwrite_keeps_files_beside_its_output_and_in_the_cache(models, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("ACCEL_CACHE_DIR", str(cache))
    out = tmp_path / "t" / "tune.json"
    argv = ["tune", "--model", models / "teacher", "--methods", "interval-cache", "--steps", "4", "--evals", "2",
            "--calibration-images", "4", "--holdout-images", "0", "--batch-size", "4", "--budget-psnr", "5",
            "--quiet", "--out", out]
    assert _run(argv) == 0
    planted = _plant(out.parent, ["mine.txt", "notes/n.txt"]) | _plant(cache, _every_depth(cache))
    inodes = {p: p.stat().st_ino for p in (out, out.parent / "report.html")}
    assert _run([*argv, "--overwrite"]) == 0
    _intact(planted)
    assert all(p.stat().st_ino != ino for p, ino in inodes.items())
    assert sorted(read_manifest(out.parent)) == ["report.html", "tune.json"]


def test_bench_overwrite_keeps_user_files_at_every_depth(models, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "b"
    argv = ["bench", "--model", models / "teacher", "--methods", "baseline", "--num-images", "2", "--steps", "2",
            "--batch-size", "2", "--repeats", "1", "--warmup", "0", "--no-fd", "--quiet", "--out", out]
    assert _run(argv) == 0
    planted = _plant(out, _every_depth(out))
    before = _inodes(out)
    assert _run([*argv, "--overwrite"]) == 0
    _intact(planted)
    _replaced(out, before)


# ----------------------------------------------------------------------------- calibrations (data loss 3)
def test_calibrate_schedule_never_replaces_a_users_file(tmp_path, monkeypatch):
    from accel.caching import calibrate_schedule
    from accel.testing import tiny_pipeline

    monkeypatch.setenv("ACCEL_CACHE_DIR", str(tmp_path / "cache"))
    pipe = tiny_pipeline("dit", num_layers=2)
    kw = dict(images=1, num_inference_steps=3, class_labels=[1], progress=False)
    notes = tmp_path / "user_notes.json"
    planted = _plant(tmp_path, ["user_notes.json", "cache/mine.txt", "cache/notes/n.txt"])
    calls = []
    pipe.transformer.register_forward_pre_hook(lambda *a: calls.append(1))
    with pytest.raises(OutputError, match="user_notes.json exists and is not a schedule calibration accel wrote"):
        calibrate_schedule(pipe, path=notes, **kw)
    assert not calls  # refused before any pipeline call
    mine = tmp_path / "calib.json"
    assert calibrate_schedule(pipe, path=mine, **kw) == mine
    ino = mine.stat().st_ino
    assert calibrate_schedule(pipe, path=mine, **kw) == mine and mine.stat().st_ino != ino  # its own: replaced
    default = calibrate_schedule(pipe, **kw)  # the cache folder, next to the user's files
    assert default.is_relative_to(tmp_path / "cache") and json.loads(default.read_text())["steps"] == 3
    _intact(planted)


# ----------------------------------------------------------------------------- long paths, ACCEL_CACHE_DIR
@pytest.mark.parametrize("command", ["bench", "tune", "prune", "distill", "diffrate"])
def test_a_300_character_out_is_one_line_in_every_command(models, tmp_path, capsys, monkeypatch, command):
    monkeypatch.chdir(tmp_path)
    argv = {"bench": ["bench", "--model", models / "teacher", "--methods", "baseline", "--num-images", "2"],
            "tune": ["tune", "--model", models / "teacher", "--budget-psnr", "20"],
            "prune": ["prune", "--model", models / "teacher", "--keep", "1"],
            "distill": _distill(models, "x", "--steps", "1")[:-2],
            "diffrate": ["diffrate", "--model", models / "teacher", "--flops", "0.6"]}[command]
    capsys.readouterr()
    assert _run([*argv, "--out", "x" * 300]) == 2
    _one_line(capsys, f"accel {command}: error: --out", "300 bytes long", "shorter name")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("where, message", [("file", "is a file, not a folder"), ("under-file", "is a file"),
                                            ("proc", "cannot write in /proc")])
def test_an_unusable_accel_cache_dir_is_one_line(models, tmp_path, capsys, monkeypatch, where, message):
    from accel.outputs import cache_dir

    (tmp_path / "cachefile").write_text("mine")
    root = {"file": tmp_path / "cachefile", "under-file": tmp_path / "cachefile" / "sub",
            "proc": Path("/proc/accel-cache")}[where]
    monkeypatch.setenv("ACCEL_CACHE_DIR", str(root))
    with pytest.raises(OutputError, match=f"ACCEL_CACHE_DIR .*{message}"):
        cache_dir("tune")
    capsys.readouterr()
    assert _run(["tune", "--model", models / "teacher", "--methods", "interval-cache", "--steps", "4", "--evals", "2",
                 "--calibration-images", "4", "--holdout-images", "0", "--budget-psnr", "5", "--quiet",
                 "--out", tmp_path / "t.json"]) == 2
    _one_line(capsys, "accel tune: error: ACCEL_CACHE_DIR", message)
    assert (tmp_path / "cachefile").read_text() == "mine" and not (tmp_path / "t.json").exists()
