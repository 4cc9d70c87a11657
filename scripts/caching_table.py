"""Print the caching table of the README and docs/results.md from the caching benchmark's JSON files.

    python scripts/caching_table.py [--prefix benchmarks/results/caching2-] [--prefix benchmarks/results/caching-]
        [--workloads dpm20,dpm50,ddim50,flow28,flow8] [--rule matched|at-least] [--speed ideal|measured]

Each workload's row comes from the first PREFIX (in the order given) whose file exists, the held-out
run (PREFIX<workload>.json) before its 20-image screen (PREFIX<workload>-20img.json, whose row says
"(20)"); a held-out run's companions, more lines run apart on its own images (PREFIX<workload>-phase.json:
interval-cache's phase twins; -dmd.json: cache-dit's DMD line; -cooldown.json: interval-cache with the
last step computed), join its row's curves. With `--speed measured` every setting's speed comes from
PREFIX<workload>-timing.json instead: benchmarks/caching.py run on 2 images with 5 timed repeats on one
quiet thread, the same settings (`on_measured_speed`). The notes under the table name the files of
each row.

One row per workload (PREFIX<workload>.json, written by benchmarks/caching.py): at each matched speed the
best accel line's PSNR against the best peer line's, and the margin (bold where accel is not >= 1.0 dB
ahead); the last column sets accel's 4x against the best peer at 3x (the issue-32 target). Lines and
FD-digits per cell are in each JSON's `matched_speed`; the footnote row names the winning lines.

Two rules for "accel's best at speed s": `matched` (default) credits each line with its best mix of two
measured settings at s, the baseline among them (two settings run on shares of the images: recomputed
from each JSON's `curves` with benchmarks/_curves.py, so every file follows today's rule, whatever rule
its stored `matched_speed` was written with; a file without `curves` keeps its stored rows); `at-least`
is issue 32's own rule, the best PSNR among the measured settings at least s times faster (each JSON's
`curves`), which never credits a point that was not run but rewards the side whose settings sit just
above s.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))
from _curves import matched_speed_table  # noqa: E402
SPEEDS = (1.5, 2.0, 2.5, 3.0)
MARGIN = 1.0  # dB: the issue-32 target
SCREEN = "-20img"  # the suffix of a workload's 20-image screen (benchmarks/caching.py --contenders)
COMPANIONS = ("-phase", "-dmd", "-cooldown")  # more lines run on a held-out run's own images: join its row
TIMING = "-timing"  # a workload's quiet timing run of the same settings (--speed measured)


def _row(doc: dict, speed: float) -> dict | None:
    return next((r for r in doc["matched_speed"] if abs(r["speedup"] - speed) < 1e-9), None)


def _base_fd(doc: dict) -> float | None:
    return next((r["fd"] for r in doc["records"] if r["method"] == "baseline"), None)


def matched_rows(doc: dict, speeds: tuple[float, ...] = SPEEDS + (4.0,)) -> list[dict]:
    """`matched_speed` by today's rule (benchmarks/_curves.py) from the JSON's `curves` and baseline FD."""
    curves = doc["curves"]
    lines = {n: [(p["speedup"], p["psnr"], p.get("fd")) for p in c["points"]] for n, c in curves.items()}
    return matched_speed_table(lines, {n: c["side"] for n, c in curves.items()}, speeds, _base_fd(doc))


def at_least_rows(doc: dict, speeds: tuple[float, ...] = SPEEDS + (4.0,)) -> list[dict]:
    """`matched_speed`-shaped rows by the at-least rule: per side, the measured point of highest PSNR
    among those at least `speed` times faster (ties in PSNR go to the faster point)."""
    rows = []
    for s in speeds:
        row: dict = {"speedup": s}
        for side in ("accel", "peer"):
            pts = [(p["psnr"], p["speedup"], name, p.get("fd")) for name, c in doc["curves"].items() if c["side"] == side
                   for p in c["points"] if p["psnr"] is not None and p["speedup"] >= s - 1e-9]
            best = max(pts, default=None)
            row[f"best_{side}"] = None if best is None else {"line": best[2], "psnr": best[0], "fd": best[3]}
        rows.append(row)
    return rows


def cell(doc: dict, speed: float) -> str:
    r = _row(doc, speed)
    a, p = (None, None) if r is None else (r["best_accel"], r["best_peer"])
    if a is None:
        return "accel: not reached"
    if p is None:
        return f"{a['psnr']:.1f} vs not reached"
    d = a["psnr"] - p["psnr"]
    text = f"{a['psnr']:.1f} vs {p['psnr']:.1f} ({d:+.1f})"
    return text if d >= MARGIN else f"**{text}**"


def four_x(doc: dict) -> str:
    r4, r3 = _row(doc, 4.0), _row(doc, 3.0)
    if r4 is None:  # a file from before TARGET_SPEEDS had 4.0
        return "no 4x row"
    a = r4["best_accel"]
    p = None if r3 is None else r3["best_peer"]
    if a is None:
        return "accel: 4x not reached"
    if p is None:
        return f"{a['psnr']:.1f} (no peer reaches 3x)"
    text = f"{a['psnr']:.1f} vs {p['psnr']:.1f}"
    return text if a["psnr"] >= p["psnr"] else f"**{text}**"


def fd_change(doc: dict) -> str:
    """The largest |FD-digits change| of accel's best line over the matched speeds, vs the baseline."""
    base = _base_fd(doc)
    worst = None
    for s in SPEEDS + (4.0,):
        r = _row(doc, s)
        a = None if r is None else r["best_accel"]
        if a is not None and a.get("fd") is not None:
            c = 100 * (a["fd"] / base - 1)
            worst = c if worst is None or abs(c) > abs(worst) else worst
    return "-" if worst is None else f"{worst:+.1f}%"


def winners(doc: dict) -> str:
    names = []
    for s in SPEEDS + (4.0,):
        r = _row(doc, s)
        if r is not None and r["best_accel"] is not None:
            peer = r["best_peer"]["line"] if r["best_peer"] else "-"
            names.append(f"{s:g}x {r['best_accel']['line']} / {peer}")
    return "; ".join(names)


def _num_images(doc: dict) -> str:
    n = doc.get("workload", {}).get("num_images")  # every file has it; older ones have no meta.command
    if n is not None:
        return str(n)
    cmd = doc.get("meta", {}).get("command") or []
    return next((cmd[i + 1] for i, a in enumerate(cmd[:-1]) if a == "--num-images"), "200")  # the script's default


def _images(doc: dict) -> tuple:
    """What makes two runs' images the same: the workload block and the measured seeds and labels."""
    cmd = doc.get("meta", {}).get("command") or []
    flag = {a: cmd[i + 1] for i, a in enumerate(cmd[:-1]) if a in ("--seed", "--labels")}
    return (json.dumps(doc.get("workload"), sort_keys=True), flag.get("--seed", "20000"), flag.get("--labels", "1,3,5,7,9"))


def merged(doc: dict, companions: list[dict]) -> dict:
    """`doc` with the curve points of companion runs on the same images (same workload block, seeds and
    labels; a line's points appended, repeats dropped): e.g. interval-cache's phase twins, or a peer line
    run apart. A companion on other images is refused."""
    curves = {n: {**c, "points": list(c["points"])} for n, c in doc["curves"].items()}
    records = list(doc["records"])
    for other in companions:
        if _images(other) != _images(doc):
            raise ValueError("a companion run measured other images than the held-out run it would join")
        for n, c in other["curves"].items():
            line = curves.setdefault(n, {"side": c["side"], "points": []})
            line["points"] += [p for p in c["points"] if p not in line["points"]]
        seen = {r["method"] for r in records}
        records += [r for r in other["records"] if r["method"] not in seen]
    return {**doc, "curves": curves, "records": records}


def on_measured_speed(doc: dict, timing: dict) -> dict:
    """`doc` with its curves rebuilt on measured speed: each setting's speedup timed in the `timing` run
    (the same settings, on a quiet thread), scaled by this run's block counts over the timed batch's where
    an adaptive setting skipped differently there; PSNR and FD stay this run's. Settings the timing run
    lacks are left out and named in `untimed`."""
    timed = {r["method"]: r for r in timing["records"]}
    curves: dict = {}
    untimed = []
    for r in doc["records"]:
        if r["method"] == "baseline" or r.get("psnr") is None:
            continue
        t = timed.get(r["method"])
        if t is None or t.get("speedup") is None:
            untimed.append(r["method"])
            continue
        qi, ti = r.get("quality_ideal_speedup"), t.get("ideal_speedup")
        speed = t["speedup"] * (qi / ti if qi and ti else 1.0)
        line = curves.setdefault(r["line"], {"side": r["side"], "points": []})
        line["points"].append({"speedup": speed, "psnr": r["psnr"], "fd": r["fd"]})
    return {**doc, "curves": curves, "untimed": untimed}


def table(prefixes: str | list[str], workloads: list[str], rule: str = "matched", speed: str = "ideal") -> str:
    head = "| workload (images) | " + " | ".join(f"{s:g}x" for s in SPEEDS) + " | accel 4x vs peer 3x | FD-digits, worst |"
    out = [head, "|---" * (len(SPEEDS) + 3) + "|"]
    notes = []
    for w in workloads:
        paths = [Path(f"{p}{w}{s}.json") for p in ([prefixes] if isinstance(prefixes, str) else prefixes)
                 for s in ("", SCREEN)]
        path = next((p for p in paths if p.exists()), None)
        if path is None:
            out.append(f"| {w} | " + " | ".join(["not run"] * (len(SPEEDS) + 2)) + " |")
            continue
        doc = json.loads(path.read_text())
        extra = [path.with_name(path.stem + c + ".json") for c in COMPANIONS] if not path.stem.endswith(SCREEN) else []
        extra = [p for p in extra if p.exists()]
        if extra and "curves" in doc:
            doc = merged(doc, [json.loads(p.read_text()) for p in extra])
        if speed == "measured":
            timing = path.with_name(path.stem + TIMING + ".json")
            if not timing.exists():
                out.append(f"| {w} | " + " | ".join(["no timing run"] * (len(SPEEDS) + 2)) + " |")
                continue
            doc = on_measured_speed(doc, json.loads(timing.read_text()))
            extra.append(timing)
        if rule == "at-least":
            doc = {**doc, "matched_speed": at_least_rows(doc)}
        elif "curves" in doc:
            doc = {**doc, "matched_speed": matched_rows(doc)}
        n = _num_images(doc)
        out.append(f"| {w} ({n}) | " + " | ".join(cell(doc, s) for s in SPEEDS)
                   + f" | {four_x(doc)} | {fd_change(doc)} |")
        names = ", ".join(f"`{p.name}`" for p in [path] + extra)
        untimed = f" (untimed, left out: {', '.join(doc['untimed'])})" if doc.get("untimed") else ""
        notes.append(f"- {w} ({names}): {winners(doc)}{untimed}")
    return "\n".join(out + [""] + notes)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prefix", action="append", help="file prefix, repeatable: the first whose file exists is used "
                    "(default: benchmarks/results/caching2-)")
    ap.add_argument("--workloads", default="dpm20,dpm50,ddim50,flow28,flow8")
    ap.add_argument("--rule", choices=("matched", "at-least"), default="matched",
                    help="matched: each line's front interpolated at the speed; at-least: the best measured setting "
                         "at least that fast (issue 32's rule)")
    ap.add_argument("--speed", choices=("ideal", "measured"), default="ideal",
                    help="ideal: each run's own speed axis (block evaluations); measured: the speedups of "
                         "PREFIX<workload>-timing.json, a quiet one-thread timing run of the same settings")
    args = ap.parse_args()
    print(table(args.prefix or [str(REPO / "benchmarks" / "results" / "caching2-")], args.workloads.split(","),
                args.rule, args.speed))
