"""One results record per method: FD, fidelity, speed, memory and block counts, plus notes.

The speed fields and the block counts both describe the timed calls (see paired.py):
``ideal_speedup = block_total / (block_evals * flops_ratio)`` of those calls (``flops_ratio``:
the token methods' FLOPs in the evaluated blocks over their full FLOPs, 1 without one), and
``achieved_over_ideal`` above :data:`NOISE_RATIO` means the measured speedup exceeds what
the saved block compute can give, i.e. the timing is noise: the notes say so.
"""

from __future__ import annotations

import statistics
from typing import Any, Sequence

import torch

from . import fid as fidmod
from .methods import MethodSpec
from .paired import MethodImages, TimedMethod
from .fidelity import psnr_from_mse
from .timing import IDEAL_BOUNDS, OVERHEAD, speedup, timing_verdict

NOISE_RATIO = IDEAL_BOUNDS[1]


def _fd(images: MethodImages, base: MethodImages, reference_stats) -> tuple[list[float], list[float]]:
    """(FD, independent FD check) per seed set, to the reference statistics or the baseline's features."""
    vals, checks = [], []
    for k, fake in enumerate(images.features):
        if reference_stats is not None:
            v, c = fidmod.fd_with_check(fake, real_stats=reference_stats)
        else:
            v, c = fidmod.fd_with_check(fake, base.features[k])
        vals.append(v)
        checks.append(c)
    return vals, checks


def method_record(
    spec: MethodSpec,
    images: MethodImages,
    timed: TimedMethod,
    *,
    base_images: MethodImages,
    base_timed: TimedMethod,
    base_fd: list[float] | None,
    reference_stats=None,
    fd_name: str | None = None,
) -> dict[str, Any]:
    fd_vals, fd_checks = _fd(images, base_images, reference_stats)
    sp, sp_spread = speedup(base_timed.timing, timed.timing)
    ev, tot = timed.block_evals, timed.block_total
    ideal = (tot / ev / (timed.flops_ratio or 1.0)) if (ev and tot) else None
    rec = {
        "method": spec.label,
        "config": spec.config_record(),
        "fd": statistics.fmean(fd_vals) if fd_vals else None,
        "fd_name": fd_name if fd_vals else None,
        "fd_check": statistics.fmean(fd_checks) if fd_checks else None,
        "fd_per_set": fd_vals or None,
        "fd_spread": statistics.stdev(fd_vals) if len(fd_vals) >= 2 else None,
        "psnr": psnr_from_mse(torch.cat(images.mse)),
        "ssim": float(torch.cat(images.ssim).mean()),
        "lpips": float(torch.cat(images.lpips).mean()) if images.lpips else None,
        "speedup": sp,
        "speedup_spread": sp_spread,
        "time_s": timed.timing.median,
        "time_spread_s": timed.timing.spread,
        "peak_mem_mb": timed.peak_mb,
        "block_evals": ev,
        "block_total": tot,
        "flops_ratio": timed.flops_ratio,
        "ideal_speedup": ideal,
        "achieved_over_ideal": (sp / ideal) if ideal else None,
    }
    rec["timing_verdict"], rec["timing_warning"] = timing_verdict(base_timed.timing, timed.timing, ideal)
    if len(fd_vals) >= 2 and base_fd:
        deltas = [a - b for a, b in zip(fd_vals, base_fd)]
        rec["fd_delta"] = statistics.fmean(deltas)
        rec["fd_delta_spread"] = statistics.stdev(deltas)
    if fd_vals and base_fd and images is not base_images:
        # paired bootstrap over the images of the first seed set: the noise the FD change must beat
        rec["fd_delta_noise"] = fidmod.paired_fd_noise(images.features[0], base_images.features[0], reference_stats)
    return rec


def build_records(
    methods: Sequence[MethodSpec],
    images: dict[str, MethodImages],
    timed: dict[str, TimedMethod],
    *,
    reference_stats=None,
    fd_name: str | None = None,
    common: dict | None = None,
) -> tuple[list[dict], list[str]]:
    """(records, notes): one record per method, the baseline first; ``common`` fields copied into each."""
    base = methods[0].label
    records: list[dict] = []
    for m in methods:
        rec = method_record(m, images[m.label], timed[m.label], base_images=images[base],
                            base_timed=timed[base], base_fd=records[0]["fd_per_set"] if records else None,
                            reference_stats=reference_stats, fd_name=fd_name)
        rec.update(common or {})
        records.append(rec)
    return records, timing_notes(records, timed)


def timing_notes(records: Sequence[dict], timed: dict[str, TimedMethod]) -> list[str]:
    """Flags: achieved/ideal above NOISE_RATIO (noise), block counts that differed between timed calls, what a
    method said it could not do here (its `.stats()` warnings), FD changes beyond the paired noise."""
    notes = []
    unreliable = [r["method"] for r in records if r.get("timing_verdict") == "unreliable"
                  and OVERHEAD not in (r.get("timing_warning") or "")]
    overhead = [r["method"] for r in records if OVERHEAD in (r.get("timing_warning") or "")]
    if overhead:
        notes.append(
            f"timing (speedup marked '!'): {', '.join(overhead)}: {OVERHEAD}, not a busy machine: the repeats were "
            "steady but the speedup is under half of what the skipped blocks allow, because this model is small "
            "and its call spends much of its time outside the blocks; a larger model gains more"
        )
    if unreliable:
        notes.append(
            f"timing unreliable (speedup marked '!'): {', '.join(unreliable)}: the repeats spread too much or the "
            "speedup does not match the saved compute, as on a busy machine; re-run on a quiet machine "
            "(no other heavy process) for a meaningful speedup"
        )
    for r in records:
        if r.get("timing_warning"):
            notes.append(f"{r['method']}: timing: {r['timing_warning']}")
        ratio = r.get("achieved_over_ideal")
        if ratio is not None and ratio > NOISE_RATIO:
            notes.append(
                f"{r['method']}: achieved/ideal speedup {ratio:.2f} > {NOISE_RATIO}: faster than its saved block "
                "compute allows, so this speedup is timing noise (raise the repeats or timing images: "
                "`accel bench --repeats N --timing-images N`)"
            )
        if timed[r["method"]].counts_vary:
            notes.append(f"{r['method']}: block evaluations differed between timed calls; the mean is reported")
        notes += [f"{r['method']}: {w}" for w in timed[r["method"]].warnings]
    notes += quality_notes(records)
    return notes


def quality_notes(records: Sequence[dict]) -> list[str]:
    """Methods whose FD rose by more than twice its paired noise (bootstrap over the images of the first seed
    set; the change is the mean over seed sets when there are several): a loss the run tells apart from noise."""
    notes = []
    base = records[0].get("fd") if records else None
    for r in records[1:]:
        change = r.get("fd_delta")
        if change is None and r.get("fd") is not None and base is not None:
            change = r["fd"] - base
        noise = r.get("fd_delta_noise")
        if change is None or noise is None:
            continue
        if change > 2 * noise:
            notes.append(f"{r['method']}: {r['fd_name'] or 'FD'} {change:+.2f} over the baseline, more than twice its "
                         f"paired noise ({noise:.2f}, bootstrap over the images): a loss, not noise")
    return notes
