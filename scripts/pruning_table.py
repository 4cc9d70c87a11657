"""Print the selector table of docs/results.md (selector x keep x distillation data) from the pruning JSONs.

    python scripts/pruning_table.py [--default benchmarks/results/pruning-selectors-default.json]
        [--flow benchmarks/results/pruning-selectors-flow28-keep6.json --flow ...-keep9.json]

--default: benchmarks/pruning.py's file (default model: per-depth selections and their distillations).
--flow: benchmarks/flow_pruning.py's files (flow model: one row per pruned or distilled folder, its
selector and distillation read from the folder's own `lineage`). Every cell is FD-digits change vs the
teacher of the same file, class agreement and PSNR to the teacher's images; per depth the best selector
after distillation (lowest FD-digits) is bold. A missing file or a selector not yet distilled prints as such.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"


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
            out.append({"model": "default", "keep": int(k), "selector": sel, "blocks": r["keep"], "before": r,
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
        row = by_sel.setdefault((r["blocks"], lin["selector"]), {
            "model": "flow", "keep": r["blocks"], "selector": lin["selector"], "blocks": lin["keep"],
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


def table(files: list[tuple[str, Path]]) -> str:
    lines = ["| model | keep | selector | kept blocks | pruned: FD-digits, agreement, PSNR | distilled (steps, data) |"
             " distilled: FD-digits, agreement, PSNR |", "|---|---|---|---|---|---|---|"]
    notes = []
    for kind, path in files:
        if not path.is_file():
            notes.append(f"{path.name}: not run")
            continue
        doc = json.loads(path.read_text())
        rows = default_rows(doc) if kind == "default" else flow_rows(doc)
        t = teacher_fd(doc)
        for k in sorted({r["keep"] for r in rows}, reverse=True):
            group = [r for r in rows if r["keep"] == k]
            done = [r for r in group if r["after"] is not None]
            best = min(done, key=lambda r: r["after"]["fd_digits"])["selector"] if done else None
            for r in group:
                after = _cell(r["after"], t)
                if r["selector"] == best:
                    after = f"**{after}**"
                dist = "—" if r["steps"] is None else f"{r['steps']}, {r['data']}"
                lines.append(f"| {r['model']} | {k}/12 | {r['selector']} | {r['blocks']} | {_cell(r['before'], t)} | "
                             f"{dist} | {after} |")
        notes.append(f"{kind} model: `{path.relative_to(REPO) if path.is_relative_to(REPO) else path}`, "
                     f"teacher FD-digits {t:.2f}")
    return "\n".join(lines) + "\n\n" + "; ".join(notes)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--default", type=Path, default=RESULTS / "pruning-selectors-default.json")
    ap.add_argument("--flow", type=Path, action="append", default=None,
                    help="flow_pruning.py files (repeatable; default: pruning-selectors-flow28-keep6/9.json)")
    args = ap.parse_args()
    flows = args.flow or [RESULTS / "pruning-selectors-flow28-keep6.json", RESULTS / "pruning-selectors-flow28-keep9.json"]
    print(table([("default", args.default)] + [("flow", f) for f in flows]))


if __name__ == "__main__":
    main()
