"""Imports run one way: commands -> (eval, tune) -> methods (caching, tokens, pruning) -> core.

Methods know nothing of measurement, eval knows nothing of tune or the command line, and no library
package imports the commands layer; checked on the import statements of every module."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "accel"

# package -> packages of accel it must never import
FORBIDDEN = {
    "caching": ("eval", "tune", "commands", "cli"),
    "tokens": ("eval", "tune", "commands", "cli"),
    "pruning": ("eval", "tune", "commands", "cli"),
    "pipelines": ("eval", "tune", "commands", "cli"),
    "models": ("tune", "commands", "cli"),  # fd_digits (FD-digits of the embedded model) uses accel.eval.fid
    "eval": ("caching", "tokens", "pruning", "tune", "commands", "cli"),
    "tune": ("commands", "cli"),
}


def _imported(path: Path, root: Path = ROOT) -> set[str]:
    """The accel subpackages a module imports (absolute `accel.x` or relative `..x`), at any depth."""
    package = path.relative_to(root.parent).with_suffix("").parts  # ("accel", "eval", "prepare")
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the module's package
                base = list(package[: len(package) - node.level])
                names = [".".join(base + ([node.module] if node.module else []))]
                names += [f"{names[0]}.{a.name}" for a in node.names] if not node.module else []
            else:
                names = [node.module or ""]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "accel" and len(parts) > 1:
                out.add(parts[1])
    return out


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_run_one_way(package):
    bad = []
    for path in sorted((ROOT / package).glob("*.py")):
        hit = _imported(path) & set(FORBIDDEN[package])
        bad += [f"{path.relative_to(ROOT.parent)} imports accel.{p}" for p in sorted(hit)]
    assert not bad, bad


def test_the_checker_sees_relative_and_absolute_imports(tmp_path):
    mod = tmp_path / "accel" / "eval" / "probe.py"
    mod.parent.mkdir(parents=True)
    mod.write_text("def f():\n    from ..tune import files\nimport accel.cli\nfrom .. import commands\nfrom . import fid\n")
    assert _imported(mod, root=tmp_path / "accel") == {"tune", "cli", "commands", "eval"}


def test_the_command_line_lists_token_methods_before_caches():
    """`accel bench`'s default rows (and `accel tune`'s space) follow the registry's order, which the
    commands layer fixes: token methods, then caches, as on the command line before it existed."""
    import subprocess
    import sys

    code = ("from accel.cli import build_parser; build_parser(); import accel; "
            "print(','.join(n for n, c in accel.methods().items() if getattr(c, 'accelerates', True)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=ROOT.parent).stdout.strip().split(",")
    kinds = [accel_kind(n) for n in out]
    assert kinds == sorted(kinds, key=["tokens", "cache"].index) and set(kinds) == {"tokens", "cache"}, out


def accel_kind(name: str) -> str:
    import accel

    return accel.methods()[name].kind
