"""One self-contained ``report.html`` for a benchmark or tuning run, readable offline.

Everything is inside the file: inline CSS, no JavaScript, no fonts or links to fetch, the
plots (matplotlib, rendered to PNG) and the images embedded as ``data:image/png;base64``
URIs. Sections: title and meta (command line, git commit, versions, machine), the results
table (the columns ``accel bench`` prints, from ``report.table_cells``), speed–quality
curves (speedup vs PSNR and vs FD, one numbered marker per record, the Pareto front
ringed), image rows (the same seeds in the same columns, the reference row first, with
the absolute differences to it), notes, each record's configuration and any extra
sections. Every string from records, meta, notes or labels is HTML-escaped, so a label
such as ``<script>`` shows as text; user text never reaches matplotlib (points are
numbered; the numbers are the table's ``#`` column), so ``$`` in a label cannot turn into
mathtext either.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
import platform
import shlex
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from .pareto import pareto_front
from .report import table_cells

MAX_IMAGE_SIDE = 256  # embedded images are downscaled to this (keeps large-model reports small)
DIFF_GAIN = 4.0  # |method - reference| is amplified this much in the difference rows

_META_ORDER = ("command", "git_commit", "versions", "machine", "model", "scheduler", "device", "threads",
               "world_size", "num_images", "steps", "seed", "seed_sets", "guidance", "batch_size",
               "timing_images", "repeats", "warmup", "memory_kind")
_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:1.5rem auto;max-width:1200px;
 padding:0 1rem;color:#222;background:#fff}
h1{font-size:1.5rem;margin-bottom:.3rem}h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #ddd}
dl.meta{display:grid;grid-template-columns:max-content 1fr;gap:.15rem 1rem;font-size:.85rem}
dl.meta dt{font-weight:600;color:#555}dl.meta dd{margin:0;font-family:ui-monospace,monospace;word-break:break-all}
table{border-collapse:collapse;font-size:.85rem}
table.results th,table.results td{border:1px solid #ddd;padding:.25rem .5rem;text-align:right;white-space:nowrap}
table.results td.label,table.results th.label{text-align:left;white-space:normal;max-width:28rem}
table.results tr.reference{background:#f3f3f3}table.results tr.front td.fr{color:#b00;font-weight:600}
table.images td{padding:2px;vertical-align:middle}table.images td.label{font-size:.8rem;padding-right:.5rem;
 max-width:16rem}
img.cell{display:block}img.pix{image-rendering:pixelated;image-rendering:crisp-edges}
img.plot{max-width:100%;height:auto}pre{background:#f6f6f6;padding:.5rem;overflow-x:auto;font-size:.8rem}
.muted{color:#777;font-size:.85rem}.keys{font-size:.8rem}.key{margin-right:1rem;white-space:nowrap}
.sw{display:inline-block;width:.7rem;height:.7rem;border-radius:50%;margin-right:.25rem;vertical-align:middle}
"""


def _e(x: Any) -> str:
    """HTML-escaped text of anything (quotes included, so it is safe in attributes too)."""
    return html.escape(str(x), quote=True)


def _png_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _label(rec: Mapping, i: int) -> str:
    m = rec.get("method")
    return m if isinstance(m, str) and m else f"record {i + 1}"


def _finite(x: Any) -> float | None:
    if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x):
        return float(x)
    return None


def front_members(records: Sequence[Mapping], key: str, lower_is_better: bool) -> set[int]:
    """Indices of the records on the speedup-vs-``key`` Pareto front (records lacking either value,
    or with a non-finite one such as the baseline's infinite PSNR, take no part)."""
    sign = -1.0 if lower_is_better else 1.0
    quality = lambda i: None if (q := _finite(records[i].get(key))) is None else sign * q  # noqa: E731
    return set(pareto_front(range(len(records)), lambda i: _finite(records[i].get("speedup")), quality))


# ---------------------------------------------------------------------------------------------- images

def _to_uint8_stack(images: Any) -> np.ndarray:
    """(G, H, W, C) uint8 from (G, C, H, W) or (G, H, W, C) or (G, H, W); floats are in [0, 1]."""
    if hasattr(images, "detach"):  # a torch tensor; bf16/fp16 go through float32
        images = images.detach().cpu()
        images = images.float() if images.is_floating_point() else images
        images = images.numpy()
    a = np.asarray(images)
    if a.ndim == 3:
        a = a[..., None]
    if a.ndim != 4:
        raise ValueError(f"images must be (G, C, H, W), (G, H, W, C) or (G, H, W); got shape {a.shape}")
    if a.shape[1] in (1, 3, 4) and a.shape[-1] not in (1, 3, 4):
        a = a.transpose(0, 2, 3, 1)  # channels first (what accel bench keeps)
    elif a.shape[1] in (1, 3, 4) and a.shape[-1] in (1, 3, 4) and a.shape[1] < a.shape[-1]:
        a = a.transpose(0, 2, 3, 1)  # ambiguous tiny images: take the smaller axis as channels
    if a.shape[-1] not in (1, 3, 4):
        raise ValueError(f"images need 1, 3 or 4 channels; got shape {a.shape}")
    if a.dtype == np.uint8:
        return a
    if np.issubdtype(a.dtype, np.floating):
        return (np.clip(np.nan_to_num(a.astype(np.float64)), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return np.clip(a, 0, 255).astype(np.uint8)


def _png(img: np.ndarray, max_side: int) -> bytes:
    """PNG bytes of one (H, W, C) uint8 image, downscaled so that its longer side is <= ``max_side``."""
    from PIL import Image

    im = Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img)
    if max(im.size) > max_side:
        s = max_side / max(im.size)
        im = im.resize((max(1, round(im.width * s)), max(1, round(im.height * s))), Image.LANCZOS)
    buf = io.BytesIO()
    im.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def _img_tag(img: np.ndarray, max_side: int, alt: str) -> str:
    h, w = img.shape[:2]
    scale = min(max_side, max(h, w)) / max(h, w)  # the embedded size
    eh, ew = round(h * scale), round(w * scale)
    shown = 96 if max(eh, ew) <= 64 else min(192, max(eh, ew))  # small images are enlarged
    f = shown / max(eh, ew)
    cls = "cell pix" if f > 1 else "cell"
    return (f'<img class="{cls}" src="{_png_uri(_png(img, max_side))}" width="{round(ew * f)}" '
            f'height="{round(eh * f)}" alt="{_e(alt)}">')


def _image_section(images: Mapping[str, Any], records: Sequence[Mapping], max_side: int) -> str:
    stacks = {lab: _to_uint8_stack(v) for lab, v in images.items()}
    if not stacks:
        return ""
    ref_label = next(iter(stacks))
    ref = stacks[ref_label]
    cols = max(s.shape[0] for s in stacks.values())

    numbers = {r["method"]: i + 1 for i, r in enumerate(records)}
    by_label = {r["method"]: r for r in records}

    def label_cell(lab: str, suffix: str = "", summary: bool = False) -> str:
        n, r = numbers.get(lab), by_label.get(lab, {})
        facts = [f"{_finite(r.get('speedup')):.2f}&times;" if _finite(r.get("speedup")) is not None else "",
                 f"PSNR {_finite(r.get('psnr')):.1f} dB" if _finite(r.get("psnr")) is not None else ""]
        facts = " &middot; ".join(f for f in facts if f)
        small = f'<br><span class="muted">{facts}</span>' if summary and facts else ""
        return f'<td class="label">{f"#{n} " if n else ""}{_e(lab)}{suffix}{small}</td>'

    rows, diff_rows = [], []
    for lab, s in stacks.items():
        cells = "".join(f"<td>{_img_tag(s[c], max_side, f'{lab}, column {c + 1}')}</td>" if c < s.shape[0]
                        else "<td></td>" for c in range(cols))
        rows.append(f"<tr>{label_cell(lab, ' (reference)' if lab == ref_label else '', True)}{cells}</tr>")
        if lab != ref_label and s.shape[1:3] == ref.shape[1:3]:
            k = min(s.shape[0], ref.shape[0])
            d = np.abs(s[:k, ..., :3].astype(np.int16) - ref[:k, ..., :3].astype(np.int16)).max(-1, keepdims=True)
            d = np.clip(d * DIFF_GAIN, 0, 255).astype(np.uint8)
            dcells = "".join(f"<td>{_img_tag(d[c], max_side, f'{lab} difference, column {c + 1}')}</td>"
                             for c in range(k))
            diff_rows.append(f"<tr>{label_cell(lab)}{dcells}</tr>")
    out = [
        "<h2>Images</h2>",
        f'<p class="muted">The same seeds in the same columns; the first row ({_e(ref_label)}) is the reference.</p>',
        f'<table class="images">{"".join(rows)}</table>',
    ]
    if diff_rows:
        out += [f"<details><summary>Differences to {_e(ref_label)} (|&Delta;| &times; {DIFF_GAIN:g}, "
                "max over channels; black = identical)</summary>",
                f'<table class="images">{"".join(diff_rows)}</table></details>']
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------- plots

def _plot_png(records: Sequence[Mapping]) -> tuple[bytes | None, list[str]]:
    """Speedup vs PSNR and vs FD as one PNG (no pyplot: no global backend change); and what was left out."""
    from matplotlib.figure import Figure

    panels = [("psnr", "PSNR to baseline, dB (higher is better)", False)]
    if any(_finite(r.get("fd")) is not None for r in records):
        fd_name = next((r.get("fd_name") for r in records if isinstance(r.get("fd_name"), str)), None) or "FD"
        panels.append(("fd", f"{fd_name} (lower is better)", True))
    left_out = [f"#{i + 1} {_label(r, i)}: PSNR {r['psnr']}" for i, r in enumerate(records)
                if r.get("psnr") == math.inf]
    fig = Figure(figsize=(5.6 * len(panels), 4.3))
    plotted = False
    colors = [f"C{k % 10}" for k in range(len(records))]
    for p, (key, ylabel, lower) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), p + 1)
        front = front_members(records, key, lower)
        pts = [(i, _finite(r.get("speedup")), _finite(r.get(key))) for i, r in enumerate(records)]
        pts = [(i, x, y) for i, x, y in pts if x is not None and y is not None]
        for i, x, y in pts:
            r = records[i]
            xerr = _finite(r.get("speedup_spread"))
            yerr = _finite(r.get("fd_spread")) if key == "fd" else None
            if xerr or yerr:
                ax.errorbar([x], [y], xerr=xerr, yerr=yerr, fmt="none", ecolor=colors[i], alpha=0.5, capsize=2)
            on = i in front
            ax.scatter([x], [y], s=70 if on else 36, color=colors[i], edgecolors="black" if on else "none",
                       linewidths=1.5 if on else 0, zorder=3)
            ax.annotate(str(i + 1), (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
        fr = sorted((x, y) for i, x, y in pts if i in front)
        if len(fr) >= 2:
            ax.plot([a for a, _ in fr], [b for _, b in fr], "--", color="black", alpha=0.5, lw=1,
                    label="Pareto front (ringed)")
            ax.legend(fontsize=7, loc="best")
        plotted |= bool(pts)
        if not pts:
            ax.text(0.5, 0.5, f"no records with speedup and {key}", ha="center", va="center",
                    transform=ax.transAxes, fontsize=9)
        ax.axvline(1.0, color="grey", lw=0.5)
        ax.set_xlabel("speedup vs baseline (measured)")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    if not plotted:
        return None, left_out
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return buf.getvalue(), left_out


def _colour_key(records: Sequence[Mapping]) -> str:
    """#n and label in the colour of its marker (the plot itself carries numbers only)."""
    from matplotlib.colors import to_hex

    items = [f'<span class="key"><span class="sw" style="background:{to_hex(f"C{i % 10}")}"></span>'
             f"{i + 1} {_e(r['method'])}</span>" for i, r in enumerate(records)]
    return f'<p class="keys">{" ".join(items)}</p>'


# ---------------------------------------------------------------------------------------------- meta

def _meta_value(key: str, v: Any) -> str:
    if key == "command" and isinstance(v, (list, tuple)):
        return shlex.join(str(a) for a in v)
    if key == "versions" and isinstance(v, Mapping):
        return ", ".join(f"{k} {ver if ver is not None else '(absent)'}" for k, ver in v.items())
    if isinstance(v, (dict, list, tuple)):
        return json.dumps(v, default=str)
    return "-" if v is None else str(v)


def _meta_section(meta: Mapping[str, Any]) -> str:
    meta = dict(meta)
    if "machine" not in meta:
        meta["machine"] = (f"{platform.platform()}, {platform.machine() or '?'}, {os.cpu_count()} CPUs, "
                           f"Python {platform.python_version()} (where this report was written)")
    keys = [k for k in _META_ORDER if k in meta] + [k for k in meta if k not in _META_ORDER]
    items = "".join(f"<dt>{_e(k)}</dt><dd>{_e(_meta_value(k, meta[k]))}</dd>" for k in keys)
    return f'<dl class="meta">{items}</dl>'


# ---------------------------------------------------------------------------------------------- page

def _results_table(records: Sequence[Mapping]) -> str:
    head, rows = table_cells(records)
    f_psnr = front_members(records, "psnr", lower_is_better=False)
    f_fd = front_members(records, "fd", lower_is_better=True)
    has_fd = any(_finite(r.get("fd")) is not None for r in records)
    lab = lambda j: ' class="label"' if j == 0 else ""  # noqa: E731
    ths = ['<th>#</th>'] + [f"<th{lab(j)}>{_e(h)}</th>" for j, h in enumerate(head)]
    ths.append('<th title="on the speedup-vs-quality Pareto front">front</th>')
    trs = []
    for i, (r, cells) in enumerate(zip(records, rows)):
        fronts = (["PSNR"] if i in f_psnr else []) + (["FD"] if has_fd and i in f_fd else [])
        cls = " ".join((["reference"] if i == 0 and r.get("method") == "baseline" else []) +
                       (["front"] if fronts else []))
        tds = [f"<td>{i + 1}</td>"] + [f"<td{lab(j)}>{_e(c)}</td>" for j, c in enumerate(cells)]
        tds.append(f'<td class="fr">{_e(", ".join(fronts))}</td>')
        attr = f' class="{cls}"' if cls else ""
        trs.append(f"<tr{attr}>{''.join(tds)}</tr>")
    return f'<table class="results"><thead><tr>{"".join(ths)}</tr></thead><tbody>{"".join(trs)}</tbody></table>'


def _configs_section(records: Sequence[Mapping]) -> str:
    rows = [f"#{i + 1} {_label(r, i)}: {json.dumps(r['config'], default=str)}"
            for i, r in enumerate(records) if "config" in r]
    if not rows:
        return ""
    return ("<details><summary>Configurations (as in results.json)</summary><pre>"
            + _e("\n".join(rows)) + "</pre></details>")


def render_html_report(
    *,
    title: str,
    records: Sequence[Mapping[str, Any]],
    meta: Mapping[str, Any],
    images: Mapping[str, Any] | None = None,
    notes: Iterable[str] = (),
    extra_sections: Iterable[tuple[str, str]] = (),
    max_image_side: int = MAX_IMAGE_SIDE,
) -> str:
    """The report's HTML text; see :func:`write_html_report`."""
    records = [{**r, "method": _label(r, i)} for i, r in enumerate(records)]
    if not records:
        raise ValueError("records must hold at least one record")
    png, left_out = _plot_png(records)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        _meta_section(meta),
        "<h2>Results</h2>",
        _results_table(records),
        '<p class="muted">Quality is paired: every method ran on the baseline\'s seeds. '
        "&ldquo;front&rdquo;: not beaten in both speedup and that quality by another record.</p>",
        "<h2>Speed&ndash;quality</h2>",
    ]
    if png is not None:
        parts.append(f'<img class="plot" src="{_png_uri(png)}" alt="speedup vs PSNR and FD">')
        parts.append(_colour_key(records))
        parts.append('<p class="muted">Numbers are the table\'s # column; ringed markers and the dashed line are '
                     "the Pareto front; bars are the spreads where measured.</p>")
    else:
        parts.append('<p class="muted">No record has both a speedup and a quality value to plot.</p>')
    if left_out:
        parts.append(f'<p class="muted">Not plotted on the PSNR axis (identical to the baseline): '
                     f'{_e("; ".join(left_out))}.</p>')
    if images:
        parts.append(_image_section(images, records, max_image_side))
    notes = [str(n) for n in notes]
    if notes:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{_e(n)}</li>" for n in notes) + "</ul>")
    cfg = _configs_section(records)
    if cfg:
        parts += ["<h2>Configurations</h2>", cfg]
    for heading, body in extra_sections:
        parts.append(f"<h2>{_e(heading)}</h2><pre>{_e(body)}</pre>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_html_report(
    path: str | Path,
    *,
    title: str,
    records: Sequence[Mapping[str, Any]],
    meta: Mapping[str, Any],
    images: Mapping[str, Any] | None = None,
    notes: Iterable[str] = (),
    extra_sections: Iterable[tuple[str, str]] = (),
    max_image_side: int = MAX_IMAGE_SIDE,
) -> Path:
    """Write one self-contained HTML report (opens offline: no links, scripts or fonts) to ``path``.

    ``records``: one dict per row, in ``accel bench``'s record style (records.py). Used fields,
    all optional except that rows are labelled by ``method`` (str; "record N" if absent):
    ``speedup`` (measured, x baseline), ``psnr`` (dB to the baseline; inf = identical),
    ``fd`` and ``fd_name``, ``ssim``, ``speedup_spread``, ``fd_spread``, ``ideal_speedup``,
    ``achieved_over_ideal``, ``time_s``, ``time_spread_s``, ``peak_mem_mb``, ``block_evals``,
    ``config`` (any JSON-able value, shown under "Configurations"). Missing or None values
    show as "-". A first record labelled "baseline" is shaded as the reference.

    ``meta``: shown as key/value pairs: ``command`` (argv list), ``git_commit``, ``versions``
    (name -> version) first, then any other keys; ``machine`` defaults to this platform.

    ``images``: label -> a stack of images, (G, C, H, W) (what ``accel bench`` keeps), (G, H, W, C)
    or (G, H, W), numpy or torch, floats in [0, 1] or uint8. One row per label, columns = the
    same seeds; the first label is the reference that difference rows are taken to. Images are
    downscaled to ``max_image_side`` pixels.

    ``notes``: plain-text lines. ``extra_sections``: (heading, plain text) pairs, shown
    preformatted. All text is HTML-escaped; the page contains no script.
    """
    path = Path(path)
    text = render_html_report(title=title, records=records, meta=meta, images=images, notes=notes,
                              extra_sections=extra_sections, max_image_side=max_image_side)
    path.write_text(text, encoding="utf-8")
    return path
