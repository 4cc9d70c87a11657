"""Every CLI body lives in accel/commands/ (issue 29): below it, no module parses argv, names a flag in a
message or ends the process. The library raises typed errors naming the *setting* (`SettingError`), and
the command layer turns them into one line naming the flag (commands/_shared.flag_line).

Read from the source (AST), so a docstring or comment may mention a flag; a message string may not, except
inside a quoted command line (`accel prune --out DIR`), which tells the user what to run.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "accel"
COMMAND_LAYER = ("commands/", "cli.py", "argtypes.py")
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
QUOTED = re.compile(r"`[^`]*`|^(python|accel) .*")  # a command line to run, quoted or whole
# Modules of other work in flight (issue 28's reading sweep): still naming flags. Strict xfail, so whoever
# converts one is told to take it off this list.
PENDING = {
}


def _library_modules() -> list[Path]:
    return sorted(p for p in ROOT.rglob("*.py")
                  if not str(p.relative_to(ROOT)).startswith(COMMAND_LAYER))


def _docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                ids.add(id(first.value))
    return ids


def _text(node: ast.AST) -> str | None:
    """A string literal's text; an f-string's with {} where values go (so quoting spans its parts)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)
    return None


def violations(path: Path) -> list[str]:
    """What in `path` belongs to the command layer: argparse, sys.exit, `return 2`, a flag in a message
    (not in the argv list of a subprocess: ["git", "status", "--porcelain"])."""
    tree = ast.parse(path.read_text(), str(path))
    docs, inner = _docstrings(tree), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            inner.update(id(v) for v in node.values)
        if isinstance(node, (ast.List, ast.Tuple)) and node.elts and isinstance(node.elts[0], ast.Constant) \
                and isinstance(node.elts[0].value, str) and re.fullmatch(r"[\w.-]+", node.elts[0].value) \
                and not node.elts[0].value.startswith("-"):
            inner.update(id(v) for v in node.elts)  # a program's argv
    out = []
    for node in ast.walk(tree):
        line = getattr(node, "lineno", 0)
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) else [])
            if "argparse" in names:
                out.append(f"{line}: imports argparse")
        elif isinstance(node, ast.Attribute) and node.attr == "exit" and getattr(node.value, "id", "") == "sys":
            out.append(f"{line}: sys.exit")
        elif isinstance(node, ast.Return) and isinstance(node.value, ast.Constant) and node.value.value == 2:
            out.append(f"{line}: return 2 (an exit code)")
        elif id(node) not in docs and id(node) not in inner:
            text = _text(node)
            flags = FLAG.findall(QUOTED.sub("", text)) if text else []
            if flags:
                out.append(f"{line}: names {', '.join(flags)} in {text[:60]!r}")
    return out


def _cases() -> list:
    out = []
    for p in _library_modules():
        rel = str(p.relative_to(ROOT))
        marks = [pytest.mark.xfail(reason=PENDING[rel], strict=True)] if rel in PENDING else []
        out.append(pytest.param(p, id=rel, marks=marks))
    return out


@pytest.mark.parametrize("path", _cases())
def test_no_cli_code_below_the_command_layer(path: Path) -> None:
    assert violations(path) == []


def test_pending_modules_exist() -> None:
    assert all((ROOT / rel).is_file() for rel in PENDING), "a pending module moved: update PENDING"


def test_the_scan_finds_what_it_looks_for(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text('"""Mentions --steps in a docstring: fine."""\nimport argparse\nimport sys\n\n\n'
                   'def f(n):\n    if n:\n        raise ValueError(f"--steps must be >= 1, got {n}")\n'
                   '    sys.exit(3)\n    return 2\n\n\n'
                   'def g(d):\n    raise ValueError(f"run `accel prune --out {d}` first")  # a quoted command: fine\n'
                   'ARGV = ["git", "status", "--porcelain"]  # a subprocess argv: fine\n')
    found = violations(bad)
    assert len(found) == 4, found
    assert any("argparse" in v for v in found) and any("sys.exit" in v for v in found)
    assert any("return 2" in v for v in found) and any("--steps" in v for v in found)
    assert not any("--out" in v or "--porcelain" in v for v in found)


def test_library_errors_name_the_setting_and_commands_the_flag(tmp_path: Path) -> None:
    import copy

    from accel.commands._shared import flag_line
    from accel.errors import SettingError
    from accel.eval.prepare import PrepareSettings
    from accel.pipelines import set_scheduler
    from accel.testing import tiny_class_pipeline
    from accel.tune.run import TuneSettings, setup_tune

    with pytest.raises(SettingError) as info:  # typed settings in, a typed error naming the setting out
        setup_tune(TuneSettings(PrepareSettings(), budget_psnr=20.0, evals=0, out=str(tmp_path / "t.json")))
    assert (info.value.setting, str(info.value)) == ("evals", "evals must be >= 1, got 0")
    assert flag_line(info.value) == "--evals must be >= 1, got 0"
    with pytest.raises(SettingError, match="^scheduler 'warp': choose one of") as info:
        set_scheduler(tiny_class_pipeline(), "warp")
    assert flag_line(info.value).startswith("--scheduler 'warp': choose one of")
    err = SettingError("prompt_column", "needs prompts FILE", also=("prompts",))
    assert str(err) == "prompt_column needs prompts FILE"
    assert flag_line(err) == "--prompt-column needs --prompts FILE"
    assert flag_line(SettingError("data_dir", "x"), {"data_dir": "--data"}) == "--data x"
    again = copy.deepcopy(err)  # rebuilt from __reduce__, as when it crosses processes (accelerate gathers)
    assert (again.setting, again.detail, again.also) == (err.setting, err.detail, err.also)


def test_loader_keeps_the_embedded_models_extras_in_their_own_place(tmp_path: Path) -> None:
    from accel.pipelines import Embedded, load_model
    from accel.testing import tiny_class_pipeline

    tiny_class_pipeline().save_pretrained(tmp_path / "tiny")
    plain = load_model(str(tmp_path / "tiny"))
    assert plain.embedded is None and (plain.digits, plain.prompts, plain.sampler, plain.fd_digits) == (False, None, {}, False)
    default = load_model("default")
    assert isinstance(default.embedded, Embedded) and default.embedded.digits and default.embedded.fd_digits
    assert default.digits and default.sampler == default.embedded.sampler and default.sampler


def test_output_checkpoint_and_training_errors_name_the_setting(tmp_path: Path) -> None:
    from accel.commands._shared import flag_line
    from accel.errors import SettingError
    from accel.outputs import OutputError, check_new_dir, check_not_input
    from accel.pruning.checkpoint import CheckpointError, latest_checkpoint
    from accel.pruning.distill import DistillConfig

    spelled = tmp_path / "overwrite"  # a path that spells a setting stays a path in the command's line
    spelled.mkdir()
    (spelled / "notes.txt").write_text("the user's")
    with pytest.raises(OutputError) as info:
        check_new_dir(spelled, overwrite=True, writer="prune")
    assert info.value.setting == "out" and "--" not in str(info.value)
    assert flag_line(info.value) == (f"--out {spelled} holds files accel did not write (no .accel-manifest.json of "
                                     "an `accel prune` run there); --overwrite replaces only a folder accel wrote: "
                                     "choose a new folder")
    with pytest.raises(OutputError) as info:
        check_not_input(spelled, {"model": spelled})
    assert flag_line(info.value) == f"--out {spelled} is the --model folder this command reads; write to a new folder"
    with pytest.raises(CheckpointError) as info:
        latest_checkpoint(tmp_path / "none")
    assert str(info.value).startswith("resume: no finished checkpoint")
    assert flag_line(info.value) == f"--resume: no finished checkpoint under {tmp_path / 'none'} (none); start a new --out"
    with pytest.raises(SettingError) as info:
        DistillConfig(steps=None).validate()
    assert (str(info.value), flag_line(info.value)) == ("give steps N or minutes M", "give --steps N or --minutes M")
    with pytest.raises(SettingError) as info:
        DistillConfig(steps=3, lambda_task=0, lambda_out=0, lambda_feat=0).validate()
    assert flag_line(info.value).startswith("--lambda-task, --lambda-out and --lambda-feat are all 0")
