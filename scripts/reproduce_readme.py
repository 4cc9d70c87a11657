"""Re-run the documented `accel bench` results (docs/results.md) and print measured vs written numbers.

What it does: reads docs/results.md (or the Markdown file given by --readme), finds every Markdown results table (`| method | speedup | ... |`)
and the `accel bench ...` command shown above it in the same section (in a code block or in
backticks), re-runs that command in this process (`accel.cli.main`, the same code and flags,
output into --out/table-N/), and prints each written cell next to the measured value and their
ratio. Rows are matched by the table's first column (the method label of `results.json`),
columns by name: speedup, ideal, FD-digits/FD/FID, PSNR, SSIM, LPIPS, time, peak MB, block evals.
Without such a table it runs the main job, the no-flag `accel bench` (the embedded default
model, baseline + every method), and prints the measured table with the written column empty.

    python scripts/reproduce_readme.py                 # docs/results.md's own workloads, as written
    python scripts/reproduce_readme.py --quick         # smoke version: 8 images, 10 steps, 1 repeat, no FD
    python scripts/reproduce_readme.py --list          # show the tables and commands found, run nothing
    python scripts/reproduce_readme.py --bench-args "--threads 2 --device cuda"   # appended to every command

On a machine shared with other jobs add `--bench-args "--threads 1"`: two OpenMP threads on two
busy cores made a quick-sized run ~10x slower here (6 min with 2 threads at load 5, 31 s with 1
thread at load 9).
Wall-clock speedups depend on the machine and its load (both are recorded in
comparison.json): expect them to move; FD/PSNR on the same seeds and device should repeat
closely. Tables produced by other commands (`python benchmarks/...`) are listed, not re-run.

Real weights: the documented tables are for the embedded models; to measure your own
checkpoint use `accel bench --model DIR ...` directly, or put a table under such a command in
a Markdown file of your own and pass `--readme FILE`. A command whose --model is missing fails
with accel bench's one-line error and exit code 2, as does a missing --readme.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _demo_common as C  # noqa: E402

PROG = "reproduce_readme.py"
DEFAULT_README = Path(__file__).resolve().parent.parent / "docs" / "results.md"
# 10 steps: the fixed-schedule caches compute every step of calls with fewer than their min_steps=8
QUICK_FLAGS = ["--num-images", "8", "--steps", "10", "--repeats", "1", "--warmup", "0", "--timing-images", "2",
               "--batch-size", "8", "--no-fd"]
# README column name (lower case, units stripped) -> results.json field
COLUMNS = {"speedup": "speedup", "ideal": "ideal_speedup", "ideal speedup": "ideal_speedup", "fd-digits": "fd",
           "fd": "fd", "fid": "fd", "psnr": "psnr", "ssim": "ssim", "lpips": "lpips", "time": "time_s",
           "time s": "time_s", "peak mb": "peak_mem_mb", "peak memory": "peak_mem_mb", "block evals": "block_evals",
           "blocks": "block_evals", "ach/ideal": "achieved_over_ideal"}


@dataclass
class Table:
    """A Markdown table of the README and the command found above it."""

    line: int  # 1-based line of its header
    section: str
    header: list[str]
    rows: list[list[str]]
    command: list[str] | None = None  # shlex tokens, e.g. ["accel", "bench", "--steps", "50"]
    fields: dict[int, str] = field(default_factory=dict)  # column index -> results.json field

    @property
    def runnable(self) -> bool:
        return self.command is not None and self.command[:2] == ["accel", "bench"]


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _commands_in(line: str, in_code: bool) -> list[str]:
    """Commands on one README line: the whole line in a code block, backtick spans in prose."""
    if in_code:
        text = line.strip().removeprefix("$ ").strip()
        return [text] if text.startswith(("accel ", "python ", "torchrun ")) or text == "accel" else []
    return [m.strip() for m in re.findall(r"`([^`]*)`", line) if m.strip().startswith(("accel bench", "python "))]


def _column_field(name: str) -> str | None:
    key = re.sub(r"[`*_]", "", name).strip().lower()
    key = re.sub(r"\s*\((.*?)\)\s*", " ", key).strip()  # "PSNR (dB)" -> "psnr"
    key = re.sub(r"\s+(db|x|×|%)$", "", key).strip()
    return COLUMNS.get(key)


def find_tables(text: str) -> list[Table]:
    """Every Markdown table, with the last command shown above it in the same section (code blocks first)."""
    lines = text.splitlines()
    tables, section, fenced = [], "", False
    candidates: list[str] = []  # commands seen in the current section so far
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.strip().startswith("```"):
            fenced = not fenced
        elif not fenced and line.startswith("#"):
            section, candidates = line.lstrip("#").strip(), []
        elif not fenced and line.strip().startswith("|") and i + 1 < len(lines) and \
                re.fullmatch(r"\s*\|?\s*:?-{2,}:?\s*(\|\s*:?-{2,}:?\s*)*\|?\s*", lines[i + 1]):
            j = i + 2
            rows = []
            while j < len(lines) and lines[j].strip().startswith("|"):
                rows.append(_cells(lines[j]))
                j += 1
            t = Table(i + 1, section, _cells(line), rows)
            t.command = shlex.split(candidates[-1], comments=True) if candidates else None
            t.fields = {k: f for k, h in enumerate(t.header) if k > 0 and (f := _column_field(h))}
            tables.append(t)
            i = j
            continue
        else:
            code = fenced or line.startswith(("    ", "\t"))
            joined = line
            while joined.rstrip().endswith("\\") and i + 1 < len(lines):  # continued command lines
                i += 1
                joined = joined.rstrip()[:-1] + " " + lines[i].strip()
            candidates += _commands_in(joined, code)
        i += 1
    return tables


def number(cell: str) -> float | None:
    """The leading number of a README cell ("1.83 ±0.2", "2.1x", "31.5 dB", "inf"), None if there is none."""
    s = cell.replace("×", "x").replace("−", "-").strip().strip("`*")
    if s.lower().startswith("inf"):
        return math.inf
    m = re.match(r"[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?", s)
    return float(m.group()) if m else None


def bench_argv(command: list[str], out: Path, quick: bool, extra: list[str]) -> list[str]:
    """`accel bench` flags of a README command, with --out replaced and the --quick / extra flags appended."""
    flags, skip = [], False
    for tok in command[2:]:
        if skip:
            skip = False
            continue
        if tok == "--out":
            skip = True
            continue
        if tok.startswith("--out="):
            continue
        flags.append(tok)
    return ["bench", *flags, *(quick_flags(flags) if quick else []), *extra, "--out", str(out), "--overwrite"]


def quick_flags(flags: list[str]) -> list[str]:
    """QUICK_FLAGS, except a number the README command already sets lower (it only ever shrinks the run)."""
    out = []
    for k in range(0, len(QUICK_FLAGS)):
        flag = QUICK_FLAGS[k]
        if not flag.startswith("--"):
            continue
        value = QUICK_FLAGS[k + 1] if k + 1 < len(QUICK_FLAGS) and not QUICK_FLAGS[k + 1].startswith("--") else None
        given = next((flags[i + 1] for i in range(len(flags) - 1) if flags[i] == flag), None)
        if value is not None and given is not None and given.isdigit() and int(given) <= int(value):
            continue
        out += [flag] if value is None else [flag, value]
    return out


def run_bench(argv: list[str]) -> tuple[int, dict | None]:
    """`accel bench` in this process; (exit code, results.json or None)."""
    from accel.cli import main as accel_main

    code = accel_main(argv)
    out = Path(argv[argv.index("--out") + 1])
    if code != 0 or not (out / "results.json").is_file():
        return code, None
    return code, json.loads((out / "results.json").read_text())


def compare(table: Table | None, results: dict) -> tuple[list[str], list[list[str]], list[dict]]:
    """(head, rows, records) of README vs measured per method and column."""
    records = {r["method"]: r for r in results["records"]}
    if table is None or not table.fields:
        fields = {"speedup": "speedup", "FD": "fd", "PSNR": "psnr", "SSIM": "ssim", "ideal": "ideal_speedup"}
        cols = list(fields.items())
        readme_rows: dict[str, list[str]] = {}
    else:
        cols = [(table.header[k], f) for k, f in table.fields.items()]
        readme_rows = {r[0].strip("` "): r for r in table.rows if r}
    parts = ("README", "measured", "ratio") if readme_rows else ("measured",)
    head = ["method"] + [f"{name} {part}" if readme_rows else name for name, _ in cols for part in parts]
    rows, out = [], []
    labels = list(readme_rows) if readme_rows else list(records)
    for label in labels:
        rec = records.get(label)
        row, item = [label], {"method": label, "measured_found": rec is not None, "columns": {}}
        for name, f in cols:
            k = next((k for k, ff in (table.fields.items() if table else []) if ff == f), None)
            readme = number(readme_rows[label][k]) if (label in readme_rows and k is not None
                                                      and k < len(readme_rows[label])) else None
            meas = rec.get(f) if rec is not None else None
            if f == "psnr" and rec is not None and meas is None:
                meas = math.inf  # strict JSON writes an infinite PSNR (images identical to the baseline) as null
            ratio = meas / readme if (isinstance(meas, (int, float)) and readme not in (None, 0)
                                      and math.isfinite(meas) and math.isfinite(readme)) else None
            row += [C.fmt(readme, ".3g"), C.fmt(meas, ".3g"), C.fmt(ratio, ".2f")] if readme_rows else [C.fmt(meas, ".3g")]
            item["columns"][name] = {"field": f, "readme": readme, "measured": meas, "ratio": ratio}
        rows.append(row)
        out.append(item)
    return head, rows, out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--readme", default=str(DEFAULT_README), help="Markdown file to reproduce (default: docs/results.md)")
    p.add_argument("--quick", action="store_true", help="smoke version: " + " ".join(QUICK_FLAGS))
    p.add_argument("--bench-args", default="", help="extra accel bench flags appended to every command")
    p.add_argument("--list", action="store_true", help="print the tables and commands found; run nothing")
    p.add_argument("--out", default="demo-out/reproduce", help="output folder (default demo-out/reproduce)")
    return p


def run(args: argparse.Namespace) -> tuple[int, dict]:
    readme = Path(args.readme)
    if not readme.is_file():
        raise C.DemoInputError(f"--readme {readme}: no such file")
    try:
        extra = shlex.split(args.bench_args)
    except ValueError as exc:
        raise C.DemoInputError(f"--bench-args {args.bench_args!r}: {exc}") from None
    tables = find_tables(readme.read_text())
    runnable = [t for t in tables if t.runnable and t.fields]
    doc: dict[str, Any] = {"readme": str(readme), "quick": args.quick, "bench_args": extra, "tables": [],
                           "skipped": [], "notes": []}
    for t in tables:
        if t not in runnable:
            why = ("no `accel bench` command above it in its section" if not t.runnable
                   else "no column accel bench measures")
            doc["skipped"].append({"line": t.line, "section": t.section, "header": t.header,
                                   "command": " ".join(t.command) if t.command else None, "why": why})
    jobs: list[tuple[Table | None, list[str]]] = [(t, t.command) for t in runnable]  # type: ignore[misc]
    if not jobs:
        doc["notes"].append(f"{readme.name} has no results table under an `accel bench` command: running "
                            "the main job, the no-flag `accel bench`, with nothing to compare against")
        jobs = [(None, ["accel", "bench"])]
    if args.list:
        for t, cmd in jobs:
            where = f"line {t.line} ({t.section})" if t else "(no table)"
            print(f"{where}: {' '.join(cmd)}")
        for s in doc["skipped"]:
            print(f"line {s['line']} ({s['section']}): not re-run: {s['why']}")
        return 0, doc
    out = Path(args.out)
    code = 0
    for n, (t, cmd) in enumerate(jobs, 1):
        argv = bench_argv(cmd, out / f"table-{n}", args.quick, extra)
        print(f"[{n}/{len(jobs)}] accel {' '.join(argv)}", file=sys.stderr)
        load = C.machine_load()
        rc, results = run_bench(argv)
        entry: dict[str, Any] = {"line": t.line if t else None, "section": t.section if t else None,
                                 "readme_command": " ".join(cmd), "run": ["accel", *argv], "exit_code": rc,
                                 "machine_before": load, "machine_after": C.machine_load()}
        if results is None:
            code = rc or 1
            doc["tables"].append(entry)
            continue
        head, rows, items = compare(t, results)
        entry.update(rows=items, text=C.format_table(head, rows),
                     measured_with={k: results["records"][0].get(k) for k in
                                    ("num_images", "steps", "repeats", "threads", "device")})
        doc["tables"].append(entry)
    out.mkdir(parents=True, exist_ok=True)
    from accel.eval.provenance import run_meta

    doc["meta"] = run_meta([PROG, *args.argv])
    C.write_json(out / "comparison.json", doc)
    (out / "comparison.txt").write_text("\n\n".join(e.get("text", "(failed)") for e in doc["tables"]) + "\n")
    return code, doc


def main(argv: list[str] | None = None) -> int:
    failed, result = C.run_cli(PROG, build_parser(), run, argv)
    if result is None:
        return failed
    args, (code, doc) = result
    if args.list:
        return 0
    for e in doc["tables"]:
        where = f"line {e['line']} ({e['section']})" if e["line"] else "no README table"
        print(f"\n{where}: {e['readme_command']}  ->  {' '.join(e['run'])}")
        if "text" in e:
            mw, load = e["measured_with"], e["machine_before"]
            print(e["text"])
            print(f"measured with {mw['num_images']} images, {mw['steps']} steps, {mw['repeats']} repeats, "
                  f"{mw['threads']} thread(s) on {mw['device']}; load average {load.get('loadavg_1m')} on "
                  f"{load.get('cpus')} CPUs")
        else:
            print(f"accel bench exited with code {e['exit_code']}")
    for s in doc["skipped"]:
        print(f"not re-run: line {s['line']} ({s['section']}): {s['why']}")
    for n in doc["notes"]:
        print(f"note: {n}")
    print(f"wrote {args.out}/comparison.json, comparison.txt")
    return code


if __name__ == "__main__":
    sys.exit(main())
