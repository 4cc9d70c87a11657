"""Print the forecasters table of docs/results.md from a caching benchmark JSON with +f1/+fexp/+fpc lines.

    python scripts/forecasters_table.py [benchmarks/results/caching-dpm50-forecasters.json]

One row per cache setting (the same schedule, so the same block evaluations for every forecaster), one
PSNR column per forecaster, the best of the row in bold.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

DEFAULT = Path(__file__).resolve().parent.parent / "benchmarks" / "results" / "caching-dpm50-forecasters.json"
COLUMNS = ("f0", "f1", "f2", "fexp", "fpc")
NAMES = {"f0": "reuse", "f1": "Taylor 1", "f2": "Taylor 2", "fexp": "exp", "fpc": "pc"}


def table(doc: dict) -> str:
    rows: dict[tuple[str, str], dict] = {}
    for r in doc["records"]:
        if r["method"] == "baseline":
            continue
        line, _, setting = r["method"].partition(":")
        cache, _, f = line.partition("+")
        rows.setdefault((cache, setting), {"speed": r["ideal_speedup"]})[f or "f0"] = r["psnr"]
    out = ["| cache | setting | ideal speedup | " + " | ".join(NAMES[c] for c in COLUMNS) + " |",
           "|---|---|---|" + "---|" * len(COLUMNS)]
    for (cache, setting), row in sorted(rows.items(), key=lambda kv: (kv[0][0], kv[1]["speed"])):
        best = max(row.get(c, float("-inf")) for c in COLUMNS)
        cells = ["-" if c not in row else (f"**{row[c]:.1f}**" if row[c] == best else f"{row[c]:.1f}") for c in COLUMNS]
        out.append(f"| {cache} | {setting} | {row['speed']:.2f} | " + " | ".join(cells) + " |")
    return "\n".join(out)


if __name__ == "__main__":
    print(table(json.loads(Path(sys.argv[1] if len(sys.argv) > 1 else DEFAULT).read_text())))
