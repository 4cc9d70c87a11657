"""Print the selector table of docs/results.md (selector x keep x distillation data) from the pruning JSONs.

    python scripts/pruning_table.py [--default FILE ...] [--flow FILE ...]

--default: benchmarks/pruning.py's files (default model: per-depth selections and their distillations).
--flow: benchmarks/flow_pruning.py's files (flow model: one row per pruned or distilled folder, its
selector and distillation read from the folder's own `lineage`). Without them: issue 33's committed files
(DEFAULT_FILES, FLOW_FILES); a selection in several files shows once, distilled where one file distilled
it. Every cell is FD-digits change vs the teacher of the same file, class agreement and PSNR to the
teacher's images; per depth the best selector after distillation (lowest FD-digits) is bold. A missing file or a selector not yet distilled prints as such.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
DEFAULT_FILES = ("", "-learned", "-keep9", "-learned4")  # issue 33's runs, in the order they were made
FLOW_FILES = ("keep6", "keep6-learned4", "keep9")


def label(selector: str, row: dict, num_blocks: int = 12) -> str:
    """The selector's name; `learned` with its sampling: "learned (2:4 groups)" from the recorded groups (files
    from before `learned_groups` was recorded used the smallest groups that fit `num_blocks`; files from before
    the groups have no mode: global top-k)."""
    if selector != "learned":
        return selector
    if row.get("learned_mode") != "local":
        return "learned (global top-k)"
    k, groups = len(row["keep"]), row.get("learned_groups")
    m = len(groups[0][0]) if groups else num_blocks // math.gcd(num_blocks, k)
    return f"learned ({k * m // num_blocks}:{m} groups)"


def _cell(q: dict | None, teacher_fd: float) -> str:
    if q is None:
        return "not run"
    return (f"{100 * (q['fd_digits'] / teacher_fd - 1):+.1f}%, {q['class_agreement']:.3f}, "
            f"{q['psnr_to_teacher']:.1f} dB")


def default_rows(doc: dict) -> list[dict]:
    """One row per (keep, selector) of benchmarks/pruning.py's file."""
    distilled = doc.get("distill", {})
    if distilled and not all(k.isdigit() for k in distilled):  # files from before --distill-keeps: one depth
        distilled = {str(doc["config"]["distill_keep"]): distilled}
    out = []
    for k, rows in doc["selection"].items():
        for sel, r in rows.items():
            d = distilled.get(k, {}).get(sel)
            out.append({"model": "default", "keep": int(k), "selector": label(sel, r), "blocks": r["keep"], "before": r,
                        "after": None if d is None else d["after"],
                        "steps": None if d is None else d["steps"], "data": "digits (class labels)"})
    return out


def flow_rows(doc: dict) -> list[dict]:
    """One row per selector of a flow_pruning.py file: its pruned folder and its distilled folder."""
    by_sel: dict[tuple, dict] = {}
    for r in doc["models"].values():
        lin = r.get("lineage")
        if lin is None:
            continue
        name = label(lin["selector"], lin)
        row = by_sel.setdefault((r["blocks"], name), {
            "model": "flow", "keep": r["blocks"], "selector": name, "blocks": lin["keep"],
            "before": None, "after": None, "steps": None, "data": None})
        if lin["distill"] is None:
            row["before"] = r
        else:
            row.update(after=r, steps=lin["distill"]["steps"], data=f"{lin['distill']['data']} (prompts)")
    return list(by_sel.values())


def teacher_fd(doc: dict) -> float:
    if "teacher" in doc:
        return doc["teacher"]["fd_digits"]
    return next(r["fd_digits"] for r in doc["models"].values() if r.get("lineage") is None)


def _unique(rows: list[dict]) -> list[dict]:
    """One row per (model, depth, selector, kept blocks): a later file's row replaces an earlier one unless the
    earlier one is distilled and the later one is not (a file that re-measures a selection before distilling it)."""
    out: dict[tuple, dict] = {}
    for r in rows:
        key = (r["model"], r["keep"], r["selector"], tuple(r["blocks"]))
        if key not in out or r["after"] is not None or out[key]["after"] is None:
            out[key] = r
    return list(out.values())


def table(files: list[tuple[str, Path]]) -> str:
    """Rows of every file grouped by model and depth (several files may add rows to one group; each row's
    percentages are against its own file's teacher), the best distilled selector of each group bold."""
    lines = ["| model | keep | selector | kept blocks | pruned: FD-digits, agreement, PSNR | distilled (steps, data) |"
             " distilled: FD-digits, agreement, PSNR |", "|---|---|---|---|---|---|---|"]
    notes, rows = [], []
    for kind, path in files:
        shown = path.relative_to(REPO) if path.is_relative_to(REPO) else path
        if not path.is_file():
            notes.append(f"`{shown}`: not run")
            continue
        doc = json.loads(path.read_text())
        t = teacher_fd(doc)
        rows += [dict(r, teacher_fd=t) for r in (default_rows(doc) if kind == "default" else flow_rows(doc))]
        notes.append(f"{kind} model: `{shown}`, teacher FD-digits {t:.2f}")
    rows = _unique(rows)
    for model, k in sorted({(r["model"], r["keep"]) for r in rows}, key=lambda mk: (mk[0], -mk[1])):
        group = [r for r in rows if (r["model"], r["keep"]) == (model, k)]
        done = [r for r in group if r["after"] is not None]
        best = min(done, key=lambda r: r["after"]["fd_digits"] / r["teacher_fd"]) if done else None
        for r in group:
            after = _cell(r["after"], r["teacher_fd"])
            dist = "—" if r["steps"] is None else f"{r['steps']}, {r['data']}"
            lines.append(f"| {model} | {k}/12 | {r['selector']} | {r['blocks']} | {_cell(r['before'], r['teacher_fd'])} | "
                         f"{dist} | {f'**{after}**' if r is best else after} |")
    return "\n".join(lines) + "\n\n" + "; ".join(notes)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--default", type=Path, action="append", default=None,
                    help="benchmarks/pruning.py files (repeatable; default: the committed pruning-selectors-default*.json)")
    ap.add_argument("--flow", type=Path, action="append", default=None,
                    help="flow_pruning.py files (repeatable; default: the committed pruning-selectors-flow28-*.json)")
    args = ap.parse_args()
    flows = args.flow or [RESULTS / f"pruning-selectors-flow28-{name}.json" for name in FLOW_FILES]
    defaults = args.default or [RESULTS / f"pruning-selectors-default{name}.json" for name in DEFAULT_FILES]
    print(table([("default", f) for f in defaults] + [("flow", f) for f in flows]))


if __name__ == "__main__":
    main()
