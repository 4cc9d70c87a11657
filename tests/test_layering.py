"""Imports run one way: commands -> (eval, tune) -> methods (caching, tokens, pruning) -> core.

Methods know nothing of measurement, eval knows nothing of tune or the command line, and no library
package imports the commands layer; checked on the import statements of every module. And no module
of accel, top-level ones included, imports itself back through others (no import circle), counting
the imports inside functions too: a lazy import that closes a circle still ties the modules together."""

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


def _module_name(path: Path, root: Path = ROOT) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _module_imports(path: Path, modules: set[str], root: Path = ROOT) -> set[str]:
    """The accel modules `path` imports anywhere in its body (top level, functions, TYPE_CHECKING),
    each as the most specific module among `modules` (`from .families import BlockRef` -> accel.families,
    `from . import fid` -> accel.eval.fid). A module's own packages (`accel`, `accel.models` for
    accel.models.lineage) are not counted: Python runs them before the module, so a lazy
    `import accel` there to call `accel.methods()` closes no circle."""
    name = _module_name(path, root)
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            mod = ".".join(base + ([node.module] if node.module else []))
            names = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in modules else mod for a in node.names]
        else:
            continue
        for full in names:
            parts = full.split(".")
            for i in range(len(parts), 0, -1):  # the longest prefix that is a module of accel
                if ".".join(parts[:i]) in modules:
                    out.add(".".join(parts[:i]))
                    break
    parts = name.split(".")
    return out - {".".join(parts[:i]) for i in range(1, len(parts) + 1)}


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    paths = sorted(root.rglob("*.py"))
    modules = {_module_name(p, root) for p in paths}
    return {_module_name(p, root): _module_imports(p, modules, root) for p in paths}


def import_circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan), each as one circle through them."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [_circle(graph, set(g)) + (["(group: " + ", ".join(g) + ")"] if len(g) > 2 else []) for g in groups]


def _circle(graph: dict[str, set[str]], group: set[str]) -> list[str]:
    """A shortest path from the group's first module back to itself, inside the group."""
    start = min(group)
    paths = {start: [start]}
    todo = [start]
    while todo:
        v = todo.pop(0)
        for w in sorted(graph[v] & group):
            if w == start:
                return paths[v] + [start]
            if w not in paths:
                paths[w] = paths[v] + [w]
                todo.append(w)
    return sorted(group)


def test_no_import_circle_among_all_accel_modules():
    circles = import_circles(import_graph())
    assert not circles, "import circles: " + "; ".join(" -> ".join(c) for c in circles)


def test_the_circle_finder_sees_a_lazy_import_between_top_level_modules(tmp_path):
    pkg = tmp_path / "accel"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from .a import f\n")
    (pkg / "a.py").write_text("from .b import g\n")
    (pkg / "b.py").write_text("def g():\n    from .a import f\n")  # lazy: still a circle
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "c.py").write_text("from ..a import f\nfrom . import d\n")
    (pkg / "sub" / "d.py").write_text("import accel.b\ndef f():\n    import accel\n    from accel import sub\n")
    graph = import_graph(pkg)
    assert graph["accel.sub.c"] == {"accel.a", "accel.sub.d"} and graph["accel.sub.d"] == {"accel.b"}
    assert import_circles(graph) == [["accel.a", "accel.b", "accel.a"]]
    (pkg / "b.py").write_text("def g():\n    pass\n")
    assert import_circles(import_graph(pkg)) == []


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
