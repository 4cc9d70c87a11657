"""Print the sum-vs-minimax table of docs/results.md: schedule-cache's DP objective at the same budgets.

    python scripts/objective_table.py [FILE.json ...]
        (default: benchmarks/results/caching2-dpm20-objective.json benchmarks/results/caching2-dpm20.json)

Reads the records of benchmarks/caching.py runs on the same seeds and calibration (a record in several
files is the same measurement: the first file's is kept) and prints, per budget, the PSNR of schedule-cache with forecast 1
and "pc" under `objective="sum"` (lines `+f1`, `+fpc`) and `"max"` (`+f1+max`, `+fpc+max`), the best
of each forecast's pair in bold, and the FD-digits change of each in brackets.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent.parent / "benchmarks" / "results"
DEFAULT = [RESULTS / "caching2-dpm20-objective.json", RESULTS / "caching2-dpm20.json"]
COLUMNS = (("f1", "sum"), ("f1", "max"), ("fpc", "sum"), ("fpc", "max"))


def table(docs: list[dict]) -> str:
    cells: dict[float, dict] = {}
    for doc in docs:
        for r in doc["records"]:
            line, _, setting = r["method"].partition(":")
            parts = line.split("+")
            if parts[0] != "schedule-cache" or len(parts) < 2 or parts[1] not in ("f1", "fpc"):
                continue
            if parts[2:] not in ([], ["max"]):
                continue
            budget = float(dict(kv.split("=") for kv in setting.split(","))["budget"])
            row = cells.setdefault(budget, {"speed": r["ideal_speedup"]})
            row.setdefault((parts[1], "max" if parts[2:] else "sum"), (r["psnr"], r["fd_vs_baseline_pct"]))
    out = ["| budget | ideal speedup | f1, sum | f1, max | pc, sum | pc, max |", "|---|---|---|---|---|---|"]
    for budget, row in sorted(cells.items(), reverse=True):
        shown = []
        for f, obj in COLUMNS:
            if (f, obj) not in row:
                shown.append("-")
                continue
            psnr, fd = row[(f, obj)]
            best = max(row.get((f, o), (float("-inf"),))[0] for o in ("sum", "max"))
            text = f"{psnr:.1f} ({fd:+.1f}%)"
            shown.append(f"**{text}**" if psnr == best else text)
        out.append(f"| {budget:g} | {row['speed']:.2f} | " + " | ".join(shown) + " |")
    return "\n".join(out)


if __name__ == "__main__":
    paths = [Path(p) for p in sys.argv[1:]] or DEFAULT
    print(table([json.loads(p.read_text()) for p in paths]))
