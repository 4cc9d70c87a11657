"""Print the resampled-calibration table of docs/results.md from benchmarks/schedule_resample.py's JSON.

    python scripts/resample_table.py [benchmarks/results/schedule-resample.json]

One row per workload, budget and forecast: PSNR (dB, to the uncached images of the same seeds) with the
calibration resampled from another step count (or from text-to-image, for img2img) and with one made
at the call itself, the difference, and whether it meets the issue-32 target (within 0.5 dB, or ahead).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

DEFAULT = Path(__file__).resolve().parent.parent / "benchmarks" / "results" / "schedule-resample.json"
TOLERANCE = 0.5  # dB


def table(doc: dict) -> str:
    pairs: dict[tuple, dict] = {}
    for r in doc["rows"]:
        made = r["calibration"] == "made there"
        key = (r["workload"], r["budget"], r["forecast"])
        pairs.setdefault(key, {"speed": r["ideal_speedup"]})["made" if made else "resampled"] = r
    out = ["| workload | budget | forecast | ideal speedup | resampled | made there | difference | within 0.5 dB |",
           "|---|---|---|---|---|---|---|---|"]
    for (workload, budget, forecast), p in pairs.items():
        if "made" not in p or "resampled" not in p:
            continue
        a, b = p["resampled"]["psnr"], p["made"]["psnr"]
        ok = "yes" if a >= b - TOLERANCE else "**no**"
        out.append(f"| {workload} (from {p['resampled']['calibration'].removeprefix('resampled from ')}) | {budget} "
                   f"| {forecast} | {p['speed']:.2f} | {a:.1f} | {b:.1f} | {a - b:+.1f} | {ok} |")
    return "\n".join(out)


if __name__ == "__main__":
    print(table(json.loads(Path(sys.argv[1] if len(sys.argv) > 1 else DEFAULT).read_text())))
