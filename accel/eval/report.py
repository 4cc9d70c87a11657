"""Outputs of `accel bench`: results.json (+ schema check), results.csv, pareto.png, grid.png,
and the table printed on stdout (report.html: html_report.py).

JSON is strict (``json.dumps(allow_nan=False)``): a non-finite float, such as the PSNR of
images identical to the baseline, is written as ``null`` and a note says so ("psnr null =
identical to baseline (infinite)"). ``meta`` carries the command line, the git commit and
package versions (see provenance.py). The stdout table still prints ``inf``.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any, Sequence

import torch

from .pareto import pareto_front
from .provenance import strict_json

SCHEMA_VERSION = 2

_NUM = "number"  # a finite int/float (non-finite ones are written as null)
# field -> (allowed types, required)
RECORD_SCHEMA: dict[str, tuple[tuple[str, ...], bool]] = {
    "method": (("str",), True),
    "config": (("list",), True),
    "fd": ((_NUM, "null"), True),
    "fd_name": (("str", "null"), True),
    "fd_check": ((_NUM, "null"), False),
    "fd_per_set": (("list", "null"), False),
    "fd_spread": ((_NUM, "null"), False),
    "fd_delta": ((_NUM, "null"), False),
    "fd_delta_spread": ((_NUM, "null"), False),
    "fd_delta_noise": ((_NUM, "null"), False),  # paired bootstrap noise of the FD change (accel.eval.fid.paired_fd_noise)
    "psnr": ((_NUM, "null"), True),
    "ssim": ((_NUM, "null"), True),
    "lpips": ((_NUM, "null"), False),
    "speedup": ((_NUM, "null"), True),
    "speedup_spread": ((_NUM, "null"), False),
    "time_s": ((_NUM, "null"), True),
    "time_spread_s": ((_NUM, "null"), False),
    "peak_mem_mb": ((_NUM, "null"), True),
    "block_evals": (("int", "null"), True),
    "block_total": (("int", "null"), False),
    "flops_ratio": ((_NUM, "null"), False),
    "ideal_speedup": ((_NUM, "null"), True),
    "achieved_over_ideal": ((_NUM, "null"), False),
    "timing_verdict": (("str",), False),  # "ok" or "unreliable" (accel.eval.timing.timing_verdict)
    "timing_warning": (("str", "null"), False),
    "device": (("str",), True),
    "torch_version": (("str",), True),
    "diffusers_version": (("str", "null"), True),
    "num_images": (("int",), True),
    "steps": (("int",), True),
    "seed": (("int",), True),
    "seed_sets": (("int",), False),
    "threads": (("int",), False),
    "memory_kind": (("str", "null"), False),
    # `accel bench --compile` (compiled.py)
    "compile": (("str",), False),
    "compile_backend": (("str",), False),
    "compile_s": ((_NUM, "null"), False),
    "recompiles": (("int", "null"), False),
    "graph_breaks": (("int", "null"), False),
}


META_SCHEMA: dict[str, tuple[str, ...]] = {
    "command": ("list",),
    "git_commit": ("str", "null"),
    "versions": ("dict",),
}


def _type_ok(v: Any, t: str) -> bool:
    if t == "null":
        return v is None
    if t == "str":
        return isinstance(v, str)
    if t == "int":
        return isinstance(v, int) and not isinstance(v, bool)
    if t == "list":
        return isinstance(v, list)
    if t == "dict":
        return isinstance(v, dict)
    if t == _NUM:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    raise AssertionError(t)


def validate_results(obj: Any) -> None:
    """Raise ValueError listing every schema violation of a parsed results.json."""
    errs: list[str] = []
    if not isinstance(obj, dict):
        raise ValueError("results.json must hold an object")
    if obj.get("schema_version") != SCHEMA_VERSION:
        errs.append(f"schema_version must be {SCHEMA_VERSION}, got {obj.get('schema_version')!r}")
    recs = obj.get("records")
    if not isinstance(recs, list) or not recs:
        errs.append("records must be a non-empty list")
        recs = []
    if not isinstance(obj.get("notes", []), list):
        errs.append("notes must be a list")
    meta = obj.get("meta")
    if not isinstance(meta, dict):
        errs.append("meta must be an object")
        meta = {}
    for key, types in META_SCHEMA.items():
        if key not in meta:
            errs.append(f"meta: missing {key!r}")
        elif not any(_type_ok(meta[key], t) for t in types):
            errs.append(f"meta.{key} = {meta[key]!r}: expected {' or '.join(types)}")
    for i, r in enumerate(recs):
        if not isinstance(r, dict):
            errs.append(f"records[{i}] is not an object")
            continue
        for key, (types, required) in RECORD_SCHEMA.items():
            if key not in r:
                if required:
                    errs.append(f"records[{i}] ({r.get('method')}): missing {key!r}")
                continue
            if not any(_type_ok(r[key], t) for t in types):
                errs.append(f"records[{i}].{key} = {r[key]!r}: expected {' or '.join(types)}")
        for j, c in enumerate(r.get("config") or []):
            if not (isinstance(c, dict) and isinstance(c.get("name"), str)
                    and isinstance(c.get("params"), dict)):
                errs.append(f"records[{i}].config[{j}] must be {{name: str, params: object}}")
    if recs and isinstance(recs[0], dict):
        if recs[0].get("method") != "baseline":
            errs.append("records[0] must be the baseline")
        if recs[0].get("config") not in ([], None):
            errs.append("the baseline record's config must be []")
    if errs:
        raise ValueError("results.json schema violations:\n  " + "\n  ".join(errs))


def _null_note(where: str, records: Sequence[dict]) -> str:
    """Why a value is null, e.g. "psnr null = identical to baseline (infinite): baseline"."""
    path, _, value = where.partition(" = ")
    if path.startswith("records[") and path.endswith("].psnr") and value == "inf":
        method = records[int(path[len("records["):-len("].psnr")])].get("method")
        return f"psnr null = identical to baseline (infinite): {method}"
    return f"{path} null = {value} (not a JSON number)"


def results_document(records: Sequence[dict], notes: Sequence[str] = (), meta: dict | None = None) -> dict:
    """The results.json object; non-finite numbers become null with a note each."""
    doc, replaced = strict_json({"schema_version": SCHEMA_VERSION, "records": list(records),
                                 "notes": list(notes), "meta": dict(meta or {})})
    doc["notes"] += [_null_note(w, records) for w in replaced]
    return doc


def write_json(path: Path, doc: dict) -> None:
    validate_results(doc)
    Path(path).write_text(json.dumps(doc, indent=2, allow_nan=False) + "\n")


CSV_COLUMNS = [
    "method", "fd", "fd_name", "fd_spread", "fd_delta", "fd_delta_noise", "psnr", "ssim", "lpips", "speedup",
    "speedup_spread", "time_s", "time_spread_s", "peak_mem_mb", "block_evals", "block_total", "flops_ratio",
    "ideal_speedup", "achieved_over_ideal", "num_images", "steps", "seed", "seed_sets",
    "device", "threads", "torch_version", "diffusers_version", "compile", "compile_backend", "compile_s",
    "recompiles", "graph_breaks", "config",
]


def write_csv(path: Path, records: Sequence[dict]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        w.writeheader()
        for r in records:
            row = dict(r)
            row["config"] = json.dumps(r.get("config", []))
            w.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in CSV_COLUMNS})


def plot_pareto(path: Path, records: Sequence[dict]) -> None:
    """Quality vs speedup: FD (lower is better) if measured, and PSNR to the baseline."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    has_fd = any(r.get("fd") is not None for r in records)
    panels = (["fd"] if has_fd else []) + ["psnr"]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.2), squeeze=False)
    for ax, key in zip(axes[0], panels):
        pts, labels = [], []
        for r in records:
            s, q = r.get("speedup"), r.get(key)
            if s is None or q is None:
                continue
            if key == "psnr" and not math.isfinite(q):
                continue  # the baseline (identical images) has no finite PSNR
            pts.append((float(s), float(q)))
            labels.append(r["method"])
        if key == "fd":
            err = [r.get("fd_spread") or 0.0 for r in records if r.get("speedup") is not None
                   and r.get("fd") is not None]
            ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=err, fmt="o", capsize=3)
            name = next((r.get("fd_name") for r in records if r.get("fd_name")), "FD")
            ax.set_ylabel(f"{name} (lower is better)")
        else:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "o")
            ax.set_ylabel("PSNR to baseline, dB (higher is better)")
        for (x, y), lab in zip(pts, labels):
            ax.annotate(lab, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
        if len(pts) >= 2:
            sign = -1.0 if key == "fd" else 1.0
            front = pareto_front(range(len(pts)), lambda i: pts[i][0], lambda i: sign * pts[i][1])
            ax.plot([pts[i][0] for i in front], [pts[i][1] for i in front], "--", alpha=0.5,
                    label="Pareto front")
            ax.legend(fontsize=7)
        ax.axvline(1.0, color="grey", lw=0.5)
        ax.set_xlabel("speedup vs baseline (measured)")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_grid(path: Path, grid: dict[str, torch.Tensor]) -> None:
    """One row per method, the same seeds in the same columns."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(grid)
    if not labels:
        labels = ["(no images)"]
    cols = max((g.shape[0] for g in grid.values()), default=1)
    fig, axes = plt.subplots(len(labels), cols, figsize=(1.3 * cols + 1.6, 1.3 * len(labels)),
                             squeeze=False)
    for r, lab in enumerate(labels):
        imgs = grid.get(lab)
        for c in range(cols):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if imgs is not None and c < imgs.shape[0]:
                im = imgs[c].clamp(0, 1).permute(1, 2, 0).numpy()
                if im.shape[2] == 1:
                    ax.imshow(im[..., 0], cmap="gray", vmin=0, vmax=1)
                else:
                    ax.imshow(im[..., :3])
            if c == 0:
                ax.set_ylabel(lab, rotation=0, ha="right", va="center", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _fmt(x, spec=".3g"):
    if x is None:
        return "-"
    if isinstance(x, str):
        return x
    if isinstance(x, float) and math.isinf(x):
        return "inf"
    return format(x, spec)


def table_cells(records: Sequence[dict]) -> tuple[list[str], list[list[str]]]:
    """(header, one row of formatted cells per record): the stdout table's content, also used
    by html_report.py so that both show the same numbers."""
    fd_name = next((r.get("fd_name") for r in records if r.get("fd_name")), "FD")
    noisy = any(r.get("fd_delta_noise") is not None for r in records)
    head = ["method", fd_name + (" (change ±paired noise)" if noisy else ""), "PSNR dB", "SSIM", "speedup", "ideal",
            "ach/ideal", "time s", "peak MB", "block evals"]
    rows = []
    base_fd = records[0].get("fd") if records else None
    for r in records:
        fd = _fmt(r.get("fd"))
        if r.get("fd_spread") is not None:
            fd += f" ±{_fmt(r['fd_spread'], '.2g')}"
        fd += fd_change(r.get("fd"), base_fd, r.get("fd_delta_noise"))
        sp = _fmt(r.get("speedup"), ".2f")
        if r.get("speedup_spread"):
            sp += f" ±{_fmt(r['speedup_spread'], '.2f')}"
        if r.get("timing_verdict") == "unreliable":
            sp += " !"  # the notes say why and to re-run on a quiet machine
        t = _fmt(r.get("time_s"), ".3g")
        if r.get("time_spread_s"):
            t += f" ±{_fmt(r['time_spread_s'], '.1g')}"
        rows.append([
            r["method"], fd, _fmt(r.get("psnr"), ".1f"), _fmt(r.get("ssim"), ".3f"), sp,
            _fmt(r.get("ideal_speedup"), ".2f"), _fmt(r.get("achieved_over_ideal"), ".2f"), t,
            _fmt(r.get("peak_mem_mb"), ".0f"), _fmt(r.get("block_evals"), "d"),
        ])
    if any(r.get("compile") for r in records):  # `accel bench --compile`
        head += ["compile s", "recompiles"]
        for r, row in zip(records, rows):
            row += [_fmt(r.get("compile_s"), ".3g"), _fmt(r.get("recompiles"), "d")]
    return head, rows


def fd_change(fd: float | None, base: float | None, noise: float | None) -> str:
    """" (+1.2% ±0.8%)": a method's FD change from the baseline's and its paired bootstrap noise (percent of
    the baseline's FD; absolute where the baseline's FD is 0, as when FD is to the baseline's own images)."""
    if fd is None or base is None or noise is None:
        return ""
    if base > 0:
        return f" ({(fd - base) / base:+.1%} ±{noise / base:.1%})"
    return f" ({fd - base:+.3g} ±{noise:.2g})"


def format_table(records: Sequence[dict]) -> str:
    head, rows = table_cells(records)
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths))  # noqa: E731
    return "\n".join([line(head), line(["-" * w for w in widths])] + [line(r) for r in rows])
