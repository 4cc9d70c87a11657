"""Paired evaluation, shared by `accel bench` and `accel tune`: methods on the baseline's seeds, then timed.

Generation (quality and fidelity): per seed set, per method, each process generates its
whole batches; per image it keeps one :class:`ImageRow` (MSE/SSIM/LPIPS to the baseline
image of the same seed, features for the FD); rows are gathered on rank 0 into one
:class:`MethodImages` per method.

Timing (speed, memory, block counts): rank 0 only, interleaved repeats of one batch of
the first seed set's images. The block evaluations are counted *during the timed calls*,
so the ideal speedup describes exactly the work that was timed (adaptive caches decide
per batch, and the timing batch is not the quality batch).

`accel tune` (accel/tune/evaluate.py) measures each candidate with the same pieces:
:func:`image_rows` against the baseline's images and :func:`time_methods` on the baseline and
the candidate, so a tuned speedup and a bench speedup are the same measurement.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch

from .fidelity import per_image_lpips, per_image_mse, per_image_ssim
from .memory import PeakMemory
from .methods import MethodSpec
from .runtime import gather
from .timing import Timing, interleaved, timed
from .video import grid_frame, per_sample
from .workload import Workload, generate


@dataclass
class ImageRow:
    """One generated image of one method: what is gathered across processes."""

    index: int
    mse: float
    ssim: float
    lpips: float | None = None
    features: torch.Tensor | None = None  # (D,) float64
    image: torch.Tensor | None = None  # (C, H, W), kept for the grid only (a video's middle frame)


@dataclass
class MethodImages:
    """Per-image results of one method, one entry per seed set (rank 0)."""

    features: list[torch.Tensor] = field(default_factory=list)  # (N, D) per seed set
    mse: list[torch.Tensor] = field(default_factory=list)  # (N,) per seed set
    ssim: list[torch.Tensor] = field(default_factory=list)
    lpips: list[torch.Tensor] = field(default_factory=list)
    grid: torch.Tensor | None = None  # (G, C, H, W) of seed set 0

    def add(self, rows: list[ImageRow], first_set: bool) -> None:
        f64 = lambda xs: torch.tensor(xs, dtype=torch.float64)  # noqa: E731
        if rows[0].features is not None:
            self.features.append(torch.stack([r.features for r in rows]))
        self.mse.append(f64([r.mse for r in rows]))
        self.ssim.append(f64([r.ssim for r in rows]))
        if rows[0].lpips is not None:
            self.lpips.append(f64([r.lpips for r in rows]))
        grid = [r.image for r in rows if r.image is not None]
        if first_set and grid:
            self.grid = torch.stack(grid)


@dataclass
class TimedMethod:
    """Timed calls of one method: wall times, peak memory, block evaluations per timed call."""

    timing: Timing
    peak_mb: float | None
    block_evals: int | None
    block_total: int | None
    counts_vary: bool = False  # the timed calls did not all evaluate the same number of blocks
    flops_ratio: float | None = None  # token methods: FLOPs of the evaluated blocks / their full FLOPs
    warnings: list[str] = field(default_factory=list)  # what the methods said they could not do here (.stats())


Apply = Callable[[Any, MethodSpec], Any]  # (pipe, spec) -> handle with .remove() and .stats()


def features_of(extractor: Any, images: torch.Tensor, device: str | torch.device) -> torch.Tensor:
    """(N, D) float64 features of a batch of images (on the CPU)."""
    with torch.inference_mode():
        f = extractor(images.to(device))
    return f.detach().to("cpu", torch.float64).reshape(images.shape[0], -1)


def image_rows(imgs: torch.Tensor, ref: torch.Tensor, idx: Sequence[int], *, extractor: Any = None,
               device: str | torch.device = "cpu", lpips_metric: Any = None,
               keep_image: Callable[[int], bool] = lambda i: False) -> list[ImageRow]:
    """One row per image, or per video for (N, F, C, H, W) videos (metrics: mean over frames; no features)."""
    video = imgs.ndim == 5
    feats = features_of(extractor, imgs, device) if extractor is not None and not video else None
    mse, ssim = per_sample(per_image_mse, imgs, ref), per_sample(per_image_ssim, imgs, ref)
    lp = None
    if lpips_metric is not None:
        lp = per_sample(lambda p, t: per_image_lpips(lpips_metric, p, t), imgs, ref)
    shown = lambda j: grid_frame(imgs[j]) if video else imgs[j]  # noqa: E731
    return [
        ImageRow(i, float(mse[j]), float(ssim[j]), None if lp is None else float(lp[j]),
                 None if feats is None else feats[j], shown(j) if keep_image(i) else None)
        for j, i in enumerate(idx)
    ]


def generate_paired(
    pipe: Any,
    methods: Sequence[MethodSpec],
    workloads: Sequence[Workload],
    apply: Apply,
    *,
    state: Any,
    extractor: torch.nn.Module | None = None,
    device: str | torch.device = "cpu",
    lpips_metric: Any = None,
    grid_cols: int = 8,
    progress: bool = True,
    bar: Any = None,
) -> dict[str, MethodImages]:
    """Generate every method on every workload; per-image rows gathered on rank 0 (empty elsewhere).
    ``bar``: a tqdm over the whole run to advance by one per image (else a bar of its own, per batch)."""
    from tqdm.auto import tqdm

    rank, world, main = state.process_index, state.num_processes, state.is_main_process
    results = {m.label: MethodImages() for m in methods}
    total = sum(len(w.batches(rank, world)) for w in workloads) * len(methods)
    own = bar is None
    if own:
        bar = tqdm(total=total, desc="generating", disable=not (progress and main), unit="batch")
    for k, wl in enumerate(workloads):
        base_imgs: dict[int, torch.Tensor] = {}
        for m in methods:
            rows: list[ImageRow] = []
            handle = apply(pipe, m)
            try:
                for idx in wl.batches(rank, world):
                    bar.set_postfix_str(f"set {k + 1}/{len(workloads)} {m.label}")
                    imgs = generate(pipe, wl, idx)
                    if m.is_baseline:
                        base_imgs.update(zip(idx, imgs))
                    ref = torch.stack([base_imgs[i] for i in idx])
                    rows += image_rows(imgs, ref, idx, extractor=extractor, device=device, lpips_metric=lpips_metric,
                                  keep_image=lambda i: k == 0 and i < grid_cols)
                    bar.update(1 if own else len(idx))
            finally:
                handle.remove()
            parts = gather(state, rows)
            if main:
                rows = sorted((r for part in parts for r in part), key=lambda r: r.index)
                if [r.index for r in rows] != list(range(len(wl))):
                    raise RuntimeError("gathered image indices are incomplete or duplicated")
                results[m.label].add(rows, first_set=k == 0)
    if own:
        bar.close()
    return results if main else {}


def _block_counts(handle: Any) -> tuple[int, int, float | None] | None:
    """(block_evals, block_total, FLOPs ratio of the token methods or None) of a handle's calls."""
    stats = handle.stats() if callable(getattr(handle, "stats", None)) else {}
    total = stats.get("total")
    if not total or "block_evals" not in total:
        return None
    ratio = None
    for section in stats.values():  # per-method sections; token methods count their FLOPs
        sub = section.get("total") if isinstance(section, dict) else None
        if isinstance(sub, dict) and sub.get("flops_full"):
            ratio = (1.0 if ratio is None else ratio) * sub["flops"] / sub["flops_full"]
    return int(total["block_evals"]), int(total["block_total"]), ratio


def method_warnings(handle: Any) -> list[str]:
    """The warnings each method of a handle put in its `.stats()` section ("8 steps < min_steps=...")."""
    stats = handle.stats() if callable(getattr(handle, "stats", None)) else {}
    sections = [(name, s) for name, s in stats.items() if name != "models"]
    for per in (stats.get("models") or {}).values():  # a pipeline of several transformers (Wan 2.2)
        sections += [(name, s) for name, s in per.items()]
    out: list[str] = []
    for name, section in sections:
        if isinstance(section, dict):
            out += [f"{name}: {w}" for w in section.get("warnings", ()) if f"{name}: {w}" not in out]
    return out


def time_methods(
    pipe: Any,
    methods: Sequence[MethodSpec],
    workload: Workload,
    indices: Sequence[int],
    apply: Apply,
    *,
    repeats: int,
    warmup: int,
    device: str | torch.device = "cpu",
    progress: bool = True,
    pipe_of: Callable[[MethodSpec], Any] | None = None,
    bar: Any = None,
) -> dict[str, TimedMethod]:
    """Interleaved timing of one batch per method; peak memory and block counts of the timed calls.

    ``pipe_of(spec)``: the pipeline a method runs on when not ``pipe`` (`accel tune`'s candidates
    on a pruned model folder). ``bar``: a tqdm over the whole run, advanced by one per image.
    """
    from tqdm.auto import tqdm

    by_label = {m.label: m for m in methods}
    calls: dict[str, list[tuple[float, float | None, tuple | None]]] = {m.label: [] for m in methods}
    warned: dict[str, list[str]] = {m.label: [] for m in methods}
    own = bar is None
    if own:
        bar = tqdm(total=(warmup + repeats) * len(methods), desc="timing", disable=not progress, unit="call")

    def run_one(label: str) -> float:
        spec = by_label[label]
        on = pipe if pipe_of is None else pipe_of(spec)
        handle = apply(on, spec)
        try:
            with PeakMemory(device) as pm:
                _, secs = timed(lambda: generate(on, workload, indices), device)
            counts = _block_counts(handle)
            said = [w for w in method_warnings(handle) if w not in warned[label]]
            warned[label] += said
        finally:
            handle.remove()
        calls[label].append((secs, pm.peak_mb, counts))
        bar.update(1 if own else len(indices))
        return secs

    timings = interleaved(list(by_label), run_one, repeats=repeats, warmup=warmup)
    if own:
        bar.close()
    out = {}
    for label, timing in timings.items():
        timed_calls = calls[label][warmup:]  # run_one's first `warmup` calls per label were the warm-up
        peaks = [p for _, p, _ in calls[label] if p is not None]
        counts = [c for _, _, c in timed_calls]
        evals = total = ratio = None
        if counts and all(c is not None for c in counts):
            evals = round(sum(c[0] for c in counts) / len(counts))
            total = round(sum(c[1] for c in counts) / len(counts))
            ratios = [c[2] for c in counts if c[2] is not None]
            ratio = sum(ratios) / len(ratios) if ratios else None
        out[label] = TimedMethod(timing, max(peaks) if peaks else None, evals, total,
                                 counts_vary=len(set(counts)) > 1, flops_ratio=ratio, warnings=warned[label])
    return out
