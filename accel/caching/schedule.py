"""Calibrated step schedules: which steps to compute for a budget of computed steps.

A calibration (`schedule_cache.calibrate_schedule`, a few images) first computes every
step and records each step's whole-stack offset Δ_s; `reuse_errors` gives R[i][j] (i < j),
the relative L1 change from Δ_i to Δ_j. Then, for each step j, one more call reuses Δ_{j-1}
at step j alone and measures the final images' MSE: the step's sensitivity. How much the
offset changes is a poor guide on its own (on the default model the early steps change
it least but matter most: errors made there steer the whole trajectory), so
`sensitivity_errors` turns both into E[i][j], the predicted image error of using Δ_i at
step j. A schedule computes a set C of steps (step 0 always) and reuses the last
computed Δ on the others; its predicted error is

    cost(C) = Σ_{j ∉ C} E[last computed step before j][j]

(MagCache accumulates per-step errors the same way). `best_schedule` finds the C of a
given size with the least cost exactly, by dynamic programming over (steps chosen, last
computed step) in O(K·N²); `tests/` checks it against brute force.

Calibrations are saved as JSON keyed by model, scheduler and step count
(`CalibrationKey`); one for another key is refused with an error that says what differs.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

FORMAT = "accel.schedule-calibration/1"


def reuse_errors(deltas: Sequence[torch.Tensor]) -> list[list[float]]:
    """E[i][j] = mean|Δ_j − Δ_i| / mean|Δ_j| for i < j (0 elsewhere); deltas[s] is step s's Δ."""
    n = len(deltas)
    flat = [d.detach().double().flatten() for d in deltas]
    errors = [[0.0] * n for _ in range(n)]
    for j in range(n):
        scale = flat[j].abs().mean().clamp_min(1e-12)
        for i in range(j):
            errors[i][j] = float((flat[j] - flat[i]).abs().mean() / scale)
    return errors


def sensitivity_errors(reuse: Sequence[Sequence[float]], sensitivity: Sequence[float]) -> list[list[float]]:
    """Predicted final-image error of using step i's Δ at step j, from measured sensitivities.

    sensitivity[j] is the final-image MSE when step j alone reuses step j-1's Δ. Reusing an
    older Δ scales that by how much staler it is (reuse[i][j] / reuse[j-1][j]) and by the
    gap j - i, since an error made earlier also steers the steps in between (without the
    gap the sum under-counts long reuse runs and the DP picks them).
    """
    n = len(reuse)
    out = [[0.0] * n for _ in range(n)]
    for j in range(1, n):
        unit = sensitivity[j] / max(reuse[j - 1][j], 1e-12)
        for i in range(j):
            out[i][j] = unit * reuse[i][j] * (j - i)
    return out


def schedule_cost(errors: Sequence[Sequence[float]], computed: Sequence[int]) -> float:
    """Predicted error of computing exactly `computed` (must contain 0) and reusing elsewhere."""
    chosen = set(computed)
    if 0 not in chosen:
        raise ValueError("a schedule must compute step 0 (nothing is cached before it)")
    cost, last = 0.0, 0
    for j in range(len(errors)):
        if j in chosen:
            last = j
        else:
            cost += errors[last][j]
    return cost


def best_schedule(errors: Sequence[Sequence[float]], budget: int) -> list[int]:
    """The `budget` steps to compute (step 0 among them) with the least predicted error."""
    n = len(errors)
    if not 1 <= budget <= n:
        raise ValueError(f"budget must be between 1 and the {n} steps, got {budget}")
    # seg[i][j]: error of the steps i+1 .. j-1 reusing step i's Δ (j = n: to the end)
    seg = [[0.0] * (n + 1) for _ in range(n)]
    for i in range(n):
        acc = 0.0
        for j in range(i + 1, n + 1):
            seg[i][j] = acc
            if j < n:
                acc += errors[i][j]
    inf = math.inf
    best = [[inf] * n for _ in range(budget + 1)]  # best[c][j]: c steps computed, the last at j
    back = [[-1] * n for _ in range(budget + 1)]
    best[1][0] = 0.0
    for c in range(2, budget + 1):
        for j in range(c - 1, n):
            for i in range(c - 2, j):
                value = best[c - 1][i] + seg[i][j]
                if value < best[c][j]:
                    best[c][j], back[c][j] = value, i
    last = min(range(n), key=lambda j: best[budget][j] + seg[j][n])
    steps = [last]
    for c in range(budget, 1, -1):
        steps.append(back[c][steps[-1]])
    return sorted(steps)


# -- calibration files ------------------------------------------------------------------------

@dataclass(frozen=True)
class CalibrationKey:
    """What a calibration is valid for: one model (class, config, weights), one sampler, one step count."""

    model: str
    scheduler: str
    steps: int

    def filename(self) -> str:
        digest = hashlib.sha256(f"{self.model}|{self.scheduler}".encode()).hexdigest()[:16]
        return f"schedule-{digest}-{self.steps}steps.json"


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def model_fingerprint(model: torch.nn.Module) -> str:
    """Class, config and a sample of the weights (first and last values of a few tensors)."""
    config = {k: v for k, v in dict(getattr(model, "config", {})).items() if not k.startswith("_")}
    # by name, not registration order: libraries that re-register modules (cache-dit) keep the key
    params = [p for _, p in sorted(model.named_parameters())]
    sample = [_plain(p).flatten()[:: max(1, p.numel() // 64)][:64].float().cpu().tolist()
              for p in params[:2] + params[-2:]]
    return f"{type(model).__name__}:{_digest(config)}:{_digest(sample)}"


def _plain(p: torch.Tensor) -> torch.Tensor:
    """A parameter as a plain tensor (quantized weights, e.g. torchao's, dequantized)."""
    t = p.detach()
    return t.dequantize() if type(t) is not torch.Tensor and hasattr(t, "dequantize") else t


def scheduler_fingerprint(scheduler: Any) -> str:
    config = {k: v for k, v in dict(getattr(scheduler, "config", {})).items() if not k.startswith("_")}
    return f"{type(scheduler).__name__}:{_digest(config)}"


def cache_dir() -> Path:
    """`$ACCEL_CACHE_DIR/schedules` (default `~/.cache/accel/schedules`)."""
    root = os.environ.get("ACCEL_CACHE_DIR") or Path.home() / ".cache" / "accel"
    return Path(root) / "schedules"


def save_calibration(path: Path, key: CalibrationKey, errors: list[list[float]], images: int,
                     **extra: Any) -> Path:
    """Write the calibration JSON atomically (`extra`: what it was made from, for people)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"format": FORMAT, **asdict(key), "images": images, "errors": errors, **extra}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, allow_nan=False))
    os.replace(tmp, path)
    return path


def load_calibration(path: Path, key: CalibrationKey) -> list[list[float]]:
    """The error matrix in `path`, or ValueError saying how its key differs from `key`."""
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"schedule file {path} cannot be read: {exc}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ValueError(f"schedule file {path} is not an accel schedule calibration ({FORMAT})")
    for field, want, what in (("model", key.model, "model (class, config or weights)"),
                              ("scheduler", key.scheduler, "scheduler (class or config)"),
                              ("steps", key.steps, "step count")):
        if doc.get(field) != want:
            raise ValueError(
                f"schedule file {path} was calibrated for another {what}: {doc.get(field)!r}, this call "
                f"has {want!r}. Calibrate for this model and sampler: leave out schedule= and the first "
                "call calibrates into the cache directory"
            )
    errors = doc.get("errors")
    if not (isinstance(errors, list) and len(errors) == key.steps and all(len(r) == key.steps for r in errors)):
        raise ValueError(f"schedule file {path}: errors must be a {key.steps}x{key.steps} matrix")
    return errors
