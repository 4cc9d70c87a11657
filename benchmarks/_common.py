"""Helpers shared by the on-demand benchmarks: machine description, interleaved median timing,
and the JSON every benchmark writes (strict, with ``meta``: command line, git commit,
package versions, machine)."""

from __future__ import annotations

import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import torch

from accel.eval.provenance import run_meta, strict_json


def machine() -> str:
    """A one-line description of where the numbers were measured."""
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name()} (CUDA), torch {torch.__version__}"
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {torch.get_num_threads()} torch threads, torch {torch.__version__}"


def null_note(where: str) -> str:
    """Why a value was written as null: "a.b.psnr = inf" -> "psnr null = identical to baseline (infinite): a.b"."""
    path, _, value = where.partition(" = ")
    if path.endswith(".psnr") and value == "inf":
        return f"psnr null = identical to baseline (infinite): {path[:-len('.psnr')]}"
    return f"{path} null = {value} (not a JSON number)"


def write_json(path: str | Path, doc: dict[str, Any]) -> None:
    """Write ``doc`` as strict JSON (``allow_nan=False``): non-finite numbers become null, each with a
    note in ``doc["notes"]``; ``doc["meta"]`` gets the command line, git commit, versions and machine."""
    doc = dict(doc)
    doc["meta"] = {**run_meta(), "machine": machine(), **doc.get("meta", {})}
    clean, replaced = strict_json(doc)
    if replaced:
        clean["notes"] = list(clean.get("notes") or []) + [null_note(w) for w in replaced]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(clean, indent=2, allow_nan=False, default=str) + "\n")


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def interleaved_medians(fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 1) -> dict[str, list[float]]:
    """Run every fn `warmup` times, then `repeats` rounds in alternating order; return all timings."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    names = list(fns)
    for r in range(repeats):
        for name in (names if r % 2 == 0 else names[::-1]):
            sync()
            t0 = time.perf_counter()
            fns[name]()
            sync()
            times[name].append(time.perf_counter() - t0)
    return times


def median(xs: list[float]) -> float:
    return statistics.median(xs)
