"""Block caching: accel's caches vs diffusers' and cache-dit's, full speed-fidelity curves per workload.

    python benchmarks/caching.py --workload dpm20|dpm50|ddim50|flow28|flow8 [--num-images 200] [--repeats 5]
        [--settings full|quick|matched|frontier] [--lines LINE,...] [--contenders SCREEN.json] [--batch-size 50] [--timing-images N] [--out PREFIX]
        [--speed measured|ideal] [--labels 1,3,5,7,9] [--calibration-labels 0,2,4,6,8] [--probe]
        [--flow-weights DIR]

One run = one workload on the embedded default model, guidance 2.0 (dpm20: 20 DPM-Solver++
steps, dpm50: 50 DPM-Solver++ steps, ddim50: 50 DDIM steps), or on the embedded flow model
at its default sampler (FlowMatchEuler, its shift, guidance and text length; flow28: 28 steps,
flow8: 8 steps; each image's prompt names its digit, `digit_prompt(d)`, as in
`accel bench --model flow`). Every method runs on the same seeds and conditions in the same
process, through accel.eval's paired machinery (generate_paired, time_methods, build_records),
on a stock diffusers pipeline: `DiTPipeline` holding the default model (cache-dit refuses the
`DigitsDiTPipeline` subclass by name; explicit guidance and steps make the images identical),
`StableDiffusion3Pipeline` for the flow model (already stock). Labels below are digits either way.

Lines (one curve each, >= 4 settings spanning about 1.3-4x with --settings full):
accel's delta-cache, interval-cache, residual-cache (forecast 0 and 1; interval-cache also 2;
delta-, interval- and schedule-cache also the exponential fit `+fexp` and the predictor-corrector `+fpc`;
interval-cache also forecast 1 with the last step always computed, `+f1+cd1`, `cooldown=1`) and
schedule-cache (forecast 0 and 1; with the DP's minimax objective, `objective="max"`, `+f1+max` and
`+fpc+max`; also forecast 1 with per-sample verify-then-reuse, `+f1+verify`,
`verify=0.13|0.2`, whose speed is measured, not set). The fixed-schedule caches get one setting per target speed
(1.5, 2, 2.5, 3, 4x ideal within 0.15x, from their budgets arithmetic: `schedule_budgets`,
`interval_grid`, `delta_grid`; what whole steps cannot reach is bracketed instead: 2.5 and 3x at 8
steps, 4x at 50 steps, where 3.85x and 4.17x run); residual-cache's thresholds come from 2-image probes.
Peers: diffusers FirstBlockCache / TaylorSeer / MagCache (benchmarks/peers.py adapters) and
cache-dit 1.5.3 (optional: skipped with a note when not installed), each enabled as cache-dit's docs
do, `cache_dit.enable_cache(pipe, cache_config=DBCacheConfig(...), calibrator_config=...)`: DBCache
F1B0, F8B0 (cache-dit's default Fn), F1B0 + `TaylorSeerCalibratorConfig(taylorseer_order=1)`,
F1B0 + `DMDCalibratorConfig()` (exponential / Prony fit), F1B0 + `FoCaCalibratorConfig()`
(forecast-then-calibrate), and F1B0 with `steps_computation_mask=cache_dit.steps_mask(mask_policy=
"slow"|"medium"|"fast"|"ultra", total_steps=steps)` under `steps_computation_policy="static"` and
`"dynamic"` (one line each, the four masks as its settings). Each peer line is first run once on one
image; a line whose hooks fail inside the model is dropped with its exact error in the notes
(on SD3 at diffusers 0.42: FirstBlockCache, and TaylorSeer hooking the last block; cache-dit's
calibrators with their documented text-stream default, so the flow workloads add `-noenc` lines with
`enable_encoder_calibrator=False`; the flow workloads also note what diffusers' documented
`pipe.transformer.enable_cache(...)` does). cache-dit's F1B0 lines stop near 3-3.2x (its warm-up and
block 0 always run; the calibrator lines add their top threshold at warm-up 1 to go further).

`--settings frontier` (the held-out run per workload, issue 32): only accel's best lines,
schedule-cache +f1/+fpc/+f1+verify, interval-cache +f1/+f2, residual-cache +f1 and delta-cache +fpc
(36-47 settings), and every peer setting (58-69), 104-115 settings per workload.
`--contenders SCREEN.json [--margin 2]` makes the held-out run two-stage: SCREEN.json is an earlier run of
the same workload (e.g. `--num-images 20`); a line more than `--margin` dB behind the best line of its own
side at every matched speed there is not run again (its numbers stay in SCREEN.json; the notes list it),
a line SCREEN.json lacks is run. A 100-image frontier run is 1-2+ h on one CPU thread; this spends that
time on the lines that decide the table.

Held out: schedule-cache is calibrated the documented way, `calibrate_schedule(pipe,
num_inference_steps=..., guidance_scale=...)` (its own 8 images, generator seeds 1000000+i),
but on the even digits only (`--calibration-labels`, default 0,2,4,6,8), and MagCache's ratios
on those labels too (10 images, seed 10000); the measured images have other seeds (`--seed`,
default 20000, never used to calibrate or to choose a default) and, by default, the odd digits
only (`--labels`, default 1,3,5,7,9). The cache defaults were chosen on seeds 0..9 (labels
0..9) and on the calibration seeds, so neither the calibrations nor the choices saw them.

Timing honesty: speed is timed on one batch (by default the whole first quality batch, so
adaptive caches, which decide per batch, take the decisions they took on those quality images;
`--timing-images N` times only its first N) with `--repeats` interleaved repeats after a warm-up
round; the block evaluations are counted during those same timed calls and achieved/ideal > 1.05
is flagged. Each record also carries `quality_ideal_speedup` (block counts over all quality
images), and a note names every method whose timed batch skipped > 5% differently.
Quality: PSNR to the baseline's images of the same seeds and FD-digits over all `--num-images`.

Output: PREFIX.json (records, curves, matched-speed table, notes, meta), PREFIX.png (PSNR and
FD-digits vs measured speedup, one line per method) and the tables on stdout. The matched-speed
table credits each line at 1.5/2/2.5/3/4x with its best mix of two measured settings, the baseline
among them (benchmarks/_curves.py: two settings run on shares of the images), and compares the best
accel line with the best peer line ('not reached' where none is that fast).
"""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import accel  # noqa: E402
from _common import write_json  # noqa: E402
from _curves import format_matched, matched_speed_table  # noqa: E402
from accel.caching.interval_cache import computes_step  # noqa: E402
from accel.eval.methods import MethodSpec  # noqa: E402
from peers import (  # noqa: E402
    CacheDitDBCache, DiffusersFBC, DiffusersMagCache, DiffusersTaylorSeer, apply_with_peers, cache_dit_available,
    calibrate_magcache, docs_call_errors, stock_dit_pipeline,
)

CALIBRATION_SEED_OTHER = 30_000  # other methods' one-off preparation (none at present)
WORKLOADS = {"dpm20": ("dpm++", 20), "dpm50": ("dpm++", 50), "ddim50": ("ddim", 50),
             "flow28": ("flow-euler", 28), "flow8": ("flow-euler", 8)}
TARGET_SPEEDS = (1.5, 2.0, 2.5, 3.0, 4.0)
DENSITY_TOLERANCE = 0.15  # every accel grid has an ideal speedup within this of each target speed
BLOCKS = 12  # transformer blocks of both embedded models
REPO = Path(__file__).resolve().parent.parent


@dataclass
class Setting:
    line: str  # the curve this point belongs to
    label: str  # row label, unique in a run
    config: Any
    side: str  # "accel" or "peer"
    quick: bool = False  # part of --settings quick


@dataclass
class Model:
    """The pipeline a workload runs on and how every call of this benchmark makes its images."""

    pipe: Any
    name: str  # "default model" or "flow model"
    guidance: float
    prompts: bool  # conditions are text prompts (one per digit), not class labels
    call_kwargs: dict  # extra keyword arguments of every pipeline call

    def conditions(self, labels: list[int]) -> list:
        """Each image's condition: its class label, or on the flow model the prompt naming its digit
        (`digit_prompt(d)`, as `accel bench --model flow` asks for digit i % 10)."""
        from accel.models import digit_prompt

        return [digit_prompt(y) for y in labels] if self.prompts else list(labels)

    def condition_kwargs(self, labels: list[int]) -> dict:
        return {"prompt" if self.prompts else "class_labels": self.conditions(labels)}

    def images(self, labels: list[int], steps: int, generator: Any) -> Any:
        """One pipeline call as numpy images."""
        return self.pipe(**self.condition_kwargs(labels), num_inference_steps=steps, guidance_scale=self.guidance,
                         generator=generator, output_type="np", **self.call_kwargs).images


def is_flow(workload: str) -> bool:
    return WORKLOADS[workload][0] == "flow-euler"


def load_model(workload: str, device: torch.device, flow_weights: Path | None = None) -> Model:
    """The default model in a stock `DiTPipeline` (its guidance), or for flow workloads the flow model,
    already a stock `StableDiffusion3Pipeline`, at its default sampler's shift, guidance and text length."""
    from accel import models as M

    scheduler, _ = WORKLOADS[workload]
    if is_flow(workload):
        pipe = M.load_flow_pipeline(device=device, weights_dir=flow_weights)
        return Model(pipe, "flow model", float(M.FLOW_SAMPLER["guidance_scale"]), True,
                     {"max_sequence_length": M.FLOW_SAMPLER["max_sequence_length"]})
    if flow_weights is not None:
        raise SystemExit("--flow-weights: only for the flow workloads (flow28, flow8)")
    pipe = stock_dit_pipeline(M.load_default_pipeline(scheduler=scheduler, device=device))
    return Model(pipe, "default model", float(M.DEFAULT_SAMPLER["guidance_scale"]), False, {})


def _grid(line: str, side: str, items: list[tuple[str, Any]], quick: tuple[int, ...] = (1, 3)) -> list[Setting]:
    return [Setting(line, f"{line}:{label}", cfg, side, i in quick) for i, (label, cfg) in enumerate(items)]


def _long(steps: int) -> bool:
    """50-step workloads: each setting costs 2.5x more there, so each peer line keeps the 4 settings (3 for
    cache-dit F8B0) that span about 1.3-3.5x in an 8-image `--probe` of dpm50 and ddim50 and drops the
    rest; MagCache, the closest peer there, keeps all 6. The residual changes less per step there (lower
    thresholds)."""
    return steps >= 40


def _few(steps: int) -> bool:
    """Few-step workloads (flow8): a step is 1/8 of the work, so settings are whole steps. From an 8-image
    `--probe` of flow8: intervals 4 and 5 both stop at 2.67x (5 is dropped), schedule-cache budgets are step
    counts (fractions 0.3 and 0.25 both round to 2 of 8), residual thresholds 0.07/0.1 and MagCache's
    0.01/0.02 skip nothing at 8 steps (higher ones replace them), TaylorSeer's warm-ups start earlier."""
    return steps <= 10


def schedule_computed(steps: int, budget: int | float) -> int:
    """Steps schedule-cache computes for `budget` (its own rule, `computed_step_count`)."""
    from accel.caching.schedule_cache import computed_step_count

    return computed_step_count(budget, steps)


def interval_computed(steps: int, interval: int, warmup: int, cooldown: int = 0) -> int:
    """Steps interval-cache computes: every step below `warmup`, then every `interval`-th, and the last
    `cooldown`."""
    return sum(computes_step(s, interval, warmup, cooldown, steps) for s in range(steps))


def delta_evals(steps: int, interval: int, cached_blocks: int, blocks: int = BLOCKS) -> int:
    """Block evaluations of delta-cache: every `interval`-th step computes all blocks, the others skip
    `cached_blocks` of them (the cached run)."""
    full = -(-steps // interval)
    return steps * blocks - (steps - full) * cached_blocks


def ideal(kind: str, steps: int, *args: Any) -> float:
    """The ideal speedup (block evaluations uncached / cached) of a deterministic accel cache setting:
    kind "schedule" (budget), "interval" (interval, warmup[, cooldown]) or "delta" (interval, cached_blocks)."""
    if kind == "schedule":
        return steps / schedule_computed(steps, *args)
    if kind == "interval":
        return steps / interval_computed(steps, *args)
    if kind == "delta":
        return steps * BLOCKS / delta_evals(steps, *args)
    raise ValueError(kind)


def setting_ideal(s: Setting, steps: int) -> float | None:
    """The arithmetic ideal speedup of an accel setting whose schedule is fixed in advance (schedule-,
    interval-, delta-cache); None for adaptive ones (residual-cache) and peers."""
    c, name = s.config, type(s.config).__name__
    if name == "ScheduleCacheConfig":
        return ideal("schedule", steps, c.budget)
    if name == "IntervalCacheConfig":
        return ideal("interval", steps, c.interval, c.warmup, c.cooldown)
    if name == "DeltaCacheConfig" and isinstance(c.cached_blocks, int):
        return ideal("delta", steps, c.interval, c.cached_blocks)
    return None


def schedule_budgets(steps: int) -> tuple:
    """1/speed for 1.5, 2, 2.5, 3, 4x: 0.667, 0.5, 0.4, 0.333, 0.25 of the steps (at 20, 28 and 50 steps all
    within 0.15x: 13/10/8/7/5 of 20 = 1.54/2/2.5/2.86/4x, 19/14/11/9/7 of 28, 33/25/20/17/13 of 50). At 8
    steps budgets are step counts and only 8/6, 8/5, 8/4, 8/3, 8/2 = 1.33/1.6/2/2.67/4x exist: 1.5, 2 and 4x
    are reached, 2.5 and 3x are not (2.67x lies between, 0.17x and 0.33x off). At 50 steps 4x is 3.85x (13
    steps) and 4.17x (12 steps, budget 0.24): both run. Budget 0.7 (1.43x) where 0.667 gives more than 1.5x."""
    if _few(steps):
        return 6, 5, 4, 3, 2
    # the slow end must reach 1.5x (13 of 20 steps are 1.54x, 33 of 50 1.52x): 0.7 too where 0.667 is above it;
    # 4x at 50 steps: 13 computed steps are 3.85x (0.154x off), so 12 (4.17x) brackets it too
    slow = (0.7,) if ideal("schedule", steps, 0.667) > TARGET_SPEEDS[0] else ()
    return slow + (0.667, 0.5, 0.4, 0.333, 0.25) + ((0.24,) if _long(steps) else ())


def _nearest(targets: tuple, candidates: list[tuple[float, tuple]]) -> list[tuple]:
    """Per target the candidate (speed, key) nearest to it, among those with the smallest first key field
    (the interval) that come within DENSITY_TOLERANCE (ties: larger later fields); a target none comes that
    near is bracketed instead by the nearest candidate below and above it (4x at 50 steps: whole steps give
    50/13 = 3.85x or 50/12 = 4.17x). The result spans the first and last target (a 1.54x point alone would
    leave 1.5x 'not reached')."""
    out: list[tuple] = []

    def add(key: tuple) -> None:
        if key not in out:
            out.append(key)

    def beyond(t: float, side: int) -> None:  # the nearest candidate at or past t on that side
        c = [(abs(v - t), k[0], k) for v, k in candidates if (v - t) * side >= 0]
        if c:
            add(min(c)[2])

    for t in targets:
        near = [(k[0], abs(v - t), tuple(-x for x in k[1:]), k)
                for v, k in candidates if abs(v - t) <= DENSITY_TOLERANCE]
        if near:
            add(min(near)[3])
        else:
            beyond(t, -1)
            beyond(t, 1)
    # the matched table interpolates inside a line's span only: the ends must reach the first and last target
    speed = {k: v for v, k in candidates}
    if min(speed[k] for k in out) > targets[0]:
        beyond(targets[0], -1)
    if max(speed[k] for k in out) < targets[-1]:
        beyond(targets[-1], 1)
    return out


def interval_grid(steps: int, cooldown: int = 0) -> list[tuple[int, int]]:
    """(interval, warmup) per target speed: the smallest interval that reaches it, with the warm-up (>= 1)
    that comes nearest (ties: the longer warm-up); at 8 steps warm-up 0 too, else 4x is out of reach.
    Beside them, per target, the smallest interval that reaches it from step 0 (warm-up 0), TaylorSeer's
    uniform kind of schedule: at dpm20, 100 held-out images, interval 2 from step 0 gave 36.2 dB at 2x
    against 30.9 dB for interval 3 after 5 steps (forecast 1). And beside each warm-up (>= 1) its
    `phase_twin`: the same cost, the other way at the last step. With `cooldown` (the last steps always
    computed: no phase twins, the last step is computed either way) the same rule with that cooldown, and
    every interval 2-6 (at 8 steps 2-7) from step 0: at dpm20, 100 held-out images, interval 2 from step 0
    with the last step computed gave 38.6 dB at 1.82x, TaylorSeer's interval 2 36.7."""
    lo = 0 if _few(steps) else 1
    grid = _nearest(TARGET_SPEEDS, [(ideal("interval", steps, k, w, cooldown), (k, w))
                                    for k in range(2, 7) for w in range(lo, steps // 2 + 1)])
    for t in TARGET_SPEEDS:
        k = next((k for k in range(2, 7) if abs(ideal("interval", steps, k, 0, cooldown) - t) <= DENSITY_TOLERANCE),
                 None)
        if k is not None and (k, 0) not in grid:
            grid.append((k, 0))
    for k in range(2, max(7, steps if _few(steps) else 0)) if cooldown else []:  # 8 steps: {0, 7} is 4x
        if (k, 0) not in grid:
            grid.append((k, 0))
    for k, w in list(grid) if not cooldown else []:  # each warm-up's twin at the other phase, same cost
        v = phase_twin(steps, k, w)
        if v is not None and (k, v) not in grid:
            grid.append((k, v))
    return grid


def computes_last(steps: int, interval: int, warmup: int) -> bool:
    """Whether interval-cache computes the last step (rather than reusing or forecasting it)."""
    return computes_step(steps - 1, interval, warmup)


def phase_twin(steps: int, interval: int, warmup: int) -> int | None:
    """The warm-up (>= 1) nearest `warmup` that computes as many steps but the other way at the last
    step, or None. The phase moved PSNR by 2-3 dB at 50 steps, each way: interval 2 after 17 steps
    (last step computed, 1.47x) against after 16 (not, 1.52x) was 46.3 vs 43.6 dB at dpm50 and 45.0
    vs 47.4 at ddim50 (forecast 1, the 20-image screens)."""
    if warmup < 1:
        return None
    n, last = interval_computed(steps, interval, warmup), computes_last(steps, interval, warmup)
    twins = [v for v in range(1, steps) if interval_computed(steps, interval, v) == n
             and computes_last(steps, interval, v) != last]
    return min(twins, key=lambda v: (abs(v - warmup), v), default=None)


def delta_grid(steps: int) -> list[tuple[int, int]]:
    """(interval, cached_blocks) per target speed: the smallest interval that reaches it, with the
    cached-run length nearest (ties: the longer run)."""
    return _nearest(TARGET_SPEEDS, [(ideal("delta", steps, k, c), (k, c))
                                    for k in range(2, 7) for c in range(1, BLOCKS + 1)])


def accel_settings(steps: int) -> list[Setting]:
    """accel's caches. The deterministic ones (delta-, interval-, schedule-cache) get one setting per target
    speed (`TARGET_SPEEDS`, ideal within `DENSITY_TOLERANCE`, see `delta_grid`, `interval_grid`,
    `schedule_budgets`); residual-cache's thresholds come from 2-image `--probe`s of each workload."""
    m = accel.methods()
    D, I, R, S = m["delta-cache"], m["interval-cache"], m["residual-cache"], m["schedule-cache"]
    out: list[Setting] = []
    # forecasters: f1/f2 Taylor, fexp the exponential fit, fpc the predictor-corrector (caching/forecast.py)
    for f in (0, 1, "exp", "pc"):
        sfx = f"+f{f}" if f else ""
        out += _grid(f"delta-cache{sfx}", "accel", [
            (f"interval={k},cached_blocks={c}", D(interval=k, cached_blocks=c, forecast=f))
            for k, c in delta_grid(steps)])
    for f in (0, 1, 2, "exp", "pc"):
        sfx = f"+f{f}" if f else ""
        out += _grid(f"interval-cache{sfx}", "accel", [
            (f"interval={k},warmup={w}", I(interval=k, warmup=w, forecast=f)) for k, w in interval_grid(steps)])
    # the last step always computed (cooldown 1): at dpm20 it carries the most error of any step
    out += _grid("interval-cache+f1+cd1", "accel", [
        (f"interval={k},warmup={w},cooldown=1", I(interval=k, warmup=w, cooldown=1, forecast=1))
        for k, w in interval_grid(steps, cooldown=1)])
    for f in (0, 1):
        sfx = f"+f{f}" if f else ""
        out += _grid(f"residual-cache{sfx}", "accel", [
            (f"threshold={t},max_consecutive={mc}" + (f",warmup={w}" if w != 2 else ""),
             R(threshold=t, max_consecutive=mc, warmup=w, forecast=f)) for t, mc, w in residual_grid(steps)])
    for f in (0, 1, "exp", "pc"):
        sfx = f"+f{f}" if f else ""
        out += _grid(f"schedule-cache{sfx}", "accel", [
            (f"budget={b}", S(budget=b, forecast=f)) for b in schedule_budgets(steps)])
    # the DP's minimax objective (LeMiCa): the worst skipped step's predicted error, not their total
    for f in (1, "pc"):
        out += _grid(f"schedule-cache+f{f}+max", "accel", [
            (f"budget={b},objective=max", S(budget=b, forecast=f, objective="max")) for b in schedule_budgets(steps)])
    # verify-then-reuse per sample (accel/caching/verify.py): block 0 checks every reused step; rows whose
    # residual moved more than `verify` compute. 0.13 at budget 0.4 was the one point on the front in a
    # 10-image dpm50 probe (45.2 dB at 1.98x, budget 0.5 alone 45.1 dB at 2.00x); faster budgets beside it
    vb = (4, 3, 2) if _few(steps) else (0.4, 0.333, 0.25)
    out += _grid("schedule-cache+f1+verify", "accel", [
        (f"budget={b},verify={v}", S(budget=b, forecast=1, verify=v))
        for b, v in ((vb[0], 0.13), (vb[1], 0.13), (vb[2], 0.13), (vb[2], 0.2))])
    return out


def residual_grid(steps: int) -> tuple:
    """(threshold, max_consecutive, warmup) of residual-cache: adaptive, so chosen from 2-image `--probe`s
    (forecast 1; ideal speedups in the comments) to span 1.5-4x. The residual changes less per step at 50
    steps (lower thresholds) and more at 8; warm-up 1 (default 2) for the fast end, which the warm-up caps
    near 3.2x at 8 and 20 steps."""
    if _few(steps):  # flow8: 0.2 1.13x, 0.3 1.52x, 0.45 1.85x, 0.6 2.34x, 1.0/8 3.2x, at warm-up 1 5.05x
        return (0.2, 4, 2), (0.3, 4, 2), (0.45, 4, 2), (0.6, 4, 2), (1.0, 8, 2), (1.0, 8, 1)
    if _long(steps):  # dpm50: 0.05 1.45x, 0.1 2.79x, 0.2 3.3x; ddim50: 1.35/2.65/3.11x; 0.3/8: 4.35x both
        return (0.05, 4, 2), (0.07, 4, 2), (0.085, 4, 2), (0.1, 4, 2), (0.2, 4, 2), (0.3, 8, 2)
    if steps >= 25:  # flow28: 1.24/1.56/1.96/2.43/3.20/4.05x
        return (0.07, 3, 2), (0.1, 4, 2), (0.15, 4, 2), (0.2, 4, 2), (0.3, 4, 2), (0.45, 8, 2)
    # dpm20: 1.30/1.85/2.47/2.79/3.2/3.75x, at warm-up 1 4.53x
    return (0.07, 3, 2), (0.13, 4, 2), (0.2, 4, 2), (0.3, 4, 2), (0.45, 8, 2), (0.6, 8, 2), (1.0, 8, 1)


def peer_settings(steps: int, mag_ratios: tuple | None, taylorseer_all_blocks: bool = False) -> list[Setting]:
    """diffusers' and cache-dit's caches, >= 4 settings per line (cache-dit only when installed).

    `taylorseer_all_blocks` (the flow model): one more TaylorSeer line hooking every block, SD3's
    `context_pre_only` last block included, so the run records what that does (an error, at diffusers 0.42)."""
    # residual-driven caches skip more per threshold at 50 steps (smaller per-step change): lower thresholds there
    long = _long(steps)
    fbc = (0.05, 0.065, 0.08, 0.1) if long else (0.08, 0.1, 0.15, 0.2, 0.35)
    dbc = (0.05, 0.08, 0.16, 0.24) if long else (0.08, 0.16, 0.24, 0.4, 0.8)
    if _few(steps):  # 8-image --probe of flow8: 0.08 and 0.16 reuse nothing at 8 steps (cache-dit's warm-up 2)
        dbc = (0.24, 0.4, 0.6, 0.8, 1.2)
    dbc_f8 = (0.08, 0.16, 0.4) if long else dbc  # Fn=8 of 12 blocks tops out near 1.35x
    out = _grid("diffusers-fbc", "peer", [(f"threshold={t}", DiffusersFBC(t)) for t in fbc])
    taylor = ((2, 2 * steps // 5), (2, 3), (3, 3), (4, 3)) + (() if long else ((6, 2),))  # the first ~1.4x
    if _few(steps):
        taylor = ((2, 3), (2, 1), (3, 1), (4, 1), (6, 1))
    out += _grid("diffusers-taylorseer", "peer", [
        (f"cache_interval={k},disable_cache_before_step={b}", DiffusersTaylorSeer(cache_interval=k, disable_cache_before_step=b))
        for k, b in taylor])
    if taylorseer_all_blocks:
        k, b = taylor[1]
        out += _grid("diffusers-taylorseer-allblocks", "peer", [
            (f"cache_interval={k},disable_cache_before_step={b}",
             DiffusersTaylorSeer(cache_interval=k, disable_cache_before_step=b, all_blocks=True))], quick=(0,))
    if mag_ratios is not None:
        out += _grid("diffusers-magcache", "peer", [
            (f"threshold={t},max_skip_steps={k}",
             DiffusersMagCache(t, max_skip_steps=k, num_inference_steps=steps, mag_ratios=mag_ratios))
            for t, k in (((0.06, 3), (0.1, 3), (0.15, 3), (0.3, 5), (0.6, 8)) if _few(steps) else
                         ((0.01, 2), (0.02, 3), (0.06, 3), (0.15, 3), (0.3, 5), (0.6, 8)))])
    if cache_dit_available():
        warmup = min(8, steps // 4)  # cache-dit's default is 8 warm-up steps; 8 of 20 would cap it near 2x
        lines = [("cache-dit-F1B0", 1, 0, True), ("cache-dit-F8B0", 8, 0, True), ("cache-dit-F1B0+taylorseer", 1, 1, True)]
        if taylorseer_all_blocks:  # SD3: the documented calibrator default fails there (noted); its text-stream switch off
            lines.append(("cache-dit-F1B0+taylorseer-noenc", 1, 1, False))
        for line, fn, order, enc in lines:
            out += _grid(line, "peer", [
                (f"threshold={t}", CacheDitDBCache(Fn=fn, Bn=0, threshold=t, warmup=warmup, taylorseer_order=order,
                                                   encoder_calibrator=enc))
                for t in (dbc_f8 if fn == 8 else dbc)])
        out += cache_dit_calibrator_settings(steps, dbc, warmup, taylorseer_all_blocks)
    return out


SCM_POLICIES = ("slow", "medium", "fast", "ultra")  # cache_dit.steps_mask's predefined masks


def cache_dit_calibrator_settings(steps: int, dbc: tuple, warmup: int, noenc: bool = False) -> list[Setting]:
    """cache-dit's newer lines, each as its docs call it (`cache_dit.enable_cache(pipe, cache_config=DBCacheConfig(
    ...), calibrator_config=...)`): DBCache F1B0 + `DMDCalibratorConfig()`, + `FoCaCalibratorConfig()` (thresholds
    `dbc`, as the other F1B0 lines, plus the top threshold with warm-up 1: cache-dit's warm-up otherwise caps
    F1B0 near 3.2x; 2-image probe, DMD at dpm20: 1.38/1.85/2.22/2.47/3.20x, 4.53x at warm-up 2), and F1B0
    with `steps_computation_mask=cache_dit.steps_mask(mask_policy=P, total_steps=steps)` for P in
    slow/medium/fast/ultra, `steps_computation_policy` "static" (masked steps always reuse) or "dynamic"
    (they reuse when the residual is below the line's middle threshold `dbc[2]`; the 0.12 of cache-dit's
    SCM example reuses nothing at 8 steps). `noenc` (SD3) adds the calibrator lines with
    `enable_encoder_calibrator=False` too: the documented default fails there (its error is noted)."""
    out: list[Setting] = []
    for cal in ("dmd", "foca"):
        for enc in (True, False) if noenc else (True,):
            out += _grid(f"cache-dit-F1B0+{cal}{'' if enc else '-noenc'}", "peer", [
                (f"threshold={t}" + (f",warmup={w}" if w != warmup else ""),
                 CacheDitDBCache(Fn=1, Bn=0, threshold=t, warmup=w, calibrator=cal, encoder_calibrator=enc))
                for t, w in [(t, warmup) for t in dbc] + [(dbc[-1], 1)]])
    for policy in ("static", "dynamic"):
        t = dbc[2]
        out += _grid(f"cache-dit-F1B0+scm-{policy}", "peer", [
            (f"mask_policy={m}" + (f",threshold={t}" if policy == "dynamic" else ""),
             CacheDitDBCache(Fn=1, Bn=0, threshold=t, warmup=warmup, scm=m, scm_policy=policy, steps=steps))
            for m in SCM_POLICIES])
    return out


def _matched(s: Setting) -> bool:
    """--settings matched: the settings whose ideal speedups bracket 1.5-2.5x (schedule-cache budgets
    0.667/0.5/0.4; interval-cache the grid's points up to 2.5x; TaylorSeer all but interval 4)."""
    label = s.label.split(":", 1)[1]
    if s.line.startswith("schedule-cache"):
        return label in ("budget=0.667", "budget=0.5", "budget=0.4", "budget=5", "budget=4")
    if s.line == "diffusers-taylorseer":
        return not label.startswith("cache_interval=4")
    if s.line.startswith("interval-cache"):
        return label.startswith(("interval=2,", "interval=3,"))
    return True


# --settings frontier: accel's best lines (issue 32), each with one setting per target speed, and every peer line
FRONTIER_LINES = ("schedule-cache+f1", "schedule-cache+fpc", "interval-cache+f1", "interval-cache+f1+cd1",
                  "interval-cache+f2", "residual-cache+f1", "delta-cache+fpc", "schedule-cache+f1+verify")


def _frontier(s: Setting) -> bool:
    return s.side == "peer" or s.line in FRONTIER_LINES


def contenders(doc: dict, margin: float) -> tuple[set[str], set[str]]:
    """(lines to run, lines screened out) from an earlier run's JSON: a line stays when, at some matched
    speed, its PSNR is within `margin` dB of the best line of its own side there (accel's or the peers')."""
    sides = {n: c["side"] for n, c in doc["curves"].items()}
    keep: set[str] = set()
    for row in doc["matched_speed"]:
        for side in ("accel", "peer"):
            best = row[f"best_{side}"]
            keep |= {n for n, v in row["lines"].items()
                     if best and v and sides.get(n) == side and v["psnr"] >= best["psnr"] - margin}
    return keep, set(sides) - keep


def select(settings: list[Setting], args) -> list[Setting]:
    keep = {"full": lambda s: True, "quick": lambda s: s.quick, "matched": _matched,
            "frontier": _frontier}[args.settings]
    out = [s for s in settings if keep(s)]
    if args.lines:
        wanted = set(args.lines.split(","))
        unknown = wanted - {s.line for s in settings}
        if unknown:
            raise SystemExit(f"--lines: unknown {sorted(unknown)}; known: {sorted({s.line for s in settings})}")
        out = [s for s in out if s.line in wanted]
    if getattr(args, "screened_out", None):  # --contenders; a line the screening run lacked is kept
        out = [s for s in out if s.line not in args.screened_out]
    return out


def read_contenders(args, notes: list[str]) -> None:
    """--contenders FILE: the lines FILE screens out (`args.screened_out`), FILE checked to be this workload's."""
    from accel.readers import read_json

    doc = read_json(args.contenders, what="--contenders")
    wl = (doc.get("workload") or {}).get("workload")
    if wl != args.workload or "curves" not in doc:
        raise SystemExit(f"--contenders {args.contenders}: a caching.py result of workload {wl!r}, not {args.workload!r}")
    kept, args.screened_out = contenders(doc, args.margin)
    notes.append(f"--contenders {args.contenders} ({doc['workload'].get('num_images')} images) --margin {args.margin}: "
                 f"lines run {sorted(kept)}; screened out (more than {args.margin} dB behind their side's best at "
                 f"every matched speed there) {sorted(args.screened_out)}; lines it lacked run too")


def spec(s: Setting) -> MethodSpec:
    return MethodSpec(s.label, [(getattr(s.config, "cli_name", None) or s.line.split("+")[0], {})], [s.config])


def apply_fn(pipe: Any, m: MethodSpec) -> Any:
    return apply_with_peers(pipe, m.configs)


def applicable(pipe: Any, settings: list[Setting], notes: list[str], smoke: Any = None) -> list[Setting]:
    """Apply and remove each setting once; a failing one is dropped, its exact error printed and noted.

    `smoke()` (one small pipeline call) also runs under the first setting of each peer line: a peer
    whose hooks install but fail inside the model (diffusers' FirstBlockCache on SD3's last block)
    drops its whole line, with the exact error."""
    ok = []
    failed_lines: dict[str, str] = {}
    for s in settings:
        if s.line in failed_lines:
            continue
        try:
            h = apply_fn(pipe, spec(s))
            try:
                if smoke is not None and s.side == "peer" and not any(o.line == s.line for o in ok):
                    smoke()
            finally:
                h.remove()
            ok.append(s)
        except Exception as exc:  # noqa: BLE001 - a peer failing is a result to report, not a crash
            msg = f"{s.label}: could not be applied: {type(exc).__name__}: {exc}"
            if smoke is not None and s.side == "peer":
                failed_lines[s.line] = msg
                msg = f"{msg} (line {s.line} dropped)"
            print(f"note: {msg}", file=sys.stderr)
            notes.append(msg)
    return ok


def probe(model: Model, settings: list[Setting], steps: int, n: int) -> None:
    """Ideal speedups (block evaluations of the baseline / the setting) on n images, no timing."""
    import numpy as np

    pipe = model.pipe

    def run():
        return model.images([i % 10 for i in range(n)], steps, [torch.Generator().manual_seed(i) for i in range(n)])

    base = run()
    for s in settings:
        h = apply_fn(pipe, spec(s))
        try:
            out = run()
            t = h.stats()["total"]
        finally:
            h.remove()
        mse = float(((out - base) ** 2).mean())
        psnr = 10 * np.log10(1 / mse) if mse > 0 else float("inf")
        print(f"{s.label:<60} ideal {t['block_total'] / t['block_evals']:5.2f}x  PSNR {psnr:5.1f} dB", flush=True)


def plot(path: Path, records: list[dict], lines: dict[str, list], sides: dict[str, str], title: str,
         base_fd: float | None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(15, 6))
    cmap = plt.get_cmap("tab20")
    for i, (name, pts) in enumerate(sorted(lines.items())):
        pts = sorted(p for p in pts if p[0] is not None)
        style = dict(color=cmap(i % 20), marker="o" if sides[name] == "accel" else "s",
                     linestyle="-" if sides[name] == "accel" else "--", label=name, markersize=4)
        axes[0].plot([p[0] for p in pts], [p[1] for p in pts], **style)
        axes[1].plot([p[0] for p in pts], [p[2] for p in pts], **style)
    for x in TARGET_SPEEDS:
        for ax in axes:
            ax.axvline(x, color="0.85", linewidth=0.8, zorder=0)
    if base_fd is not None:
        axes[1].axhline(base_fd, color="k", linewidth=0.8, label="baseline")
    fd_name = next((r.get("fd_name") for r in records if r.get("fd_name")), "FD")
    axes[0].set(xlabel="speedup (x)", ylabel="PSNR to uncached (dB)", title="fidelity")
    axes[1].set(xlabel="speedup (x)", ylabel=f"{fd_name} (lower is better, log scale)", title="quality",
                yscale="log")
    axes[1].legend(fontsize=7, loc="upper left", ncol=2)
    fig.suptitle(title + "\naccel: solid lines / circles, peers: dashed / squares", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _loadavg() -> str | None:
    """/proc/loadavg (the machine's load, recorded with every run), None where there is none."""
    try:
        return Path("/proc/loadavg").read_text().strip()
    except OSError:
        return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workload", choices=sorted(WORKLOADS), default="dpm20")
    ap.add_argument("--num-images", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=50)
    ap.add_argument("--timing-images", type=int, default=None,
                    help="the timed batch: the first images of the quality set (default: the whole first quality "
                         "batch, so adaptive caches decide on the same images as in the quality run); block "
                         "counts are of these calls")
    ap.add_argument("--repeats", type=int, default=5, help="interleaved timing repeats (>= 5 for a result)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--calibration-images", type=int, default=None,
                    help="images for schedule-cache's one-off calibration (default: calibrate_schedule's own choice)")
    ap.add_argument("--calibration-labels", default="0,2,4,6,8",
                    help="class labels schedule-cache and MagCache calibrate on (default: the even digits)")
    ap.add_argument("--labels", default="1,3,5,7,9",
                    help="class labels of the measured images, cycled (default: the odd digits, held out)")
    ap.add_argument("--calibration-dir", type=Path, default=None,
                    help="ACCEL_CACHE_DIR for schedule-cache's calibration (default: a fresh temporary directory, "
                         "so the schedule comes from this run's own calibration seeds, never from an older file); "
                         "a complete calibration already there for this model/sampler/steps is kept")
    ap.add_argument("--seed", type=int, default=20_000,
                    help="first seed of the measured images (default 20000: held out from calibrations and from "
                         "choosing the defaults)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda, cuda:N")
    ap.add_argument("--settings", choices=("full", "quick", "matched", "frontier"), default="full",
                    help="full: >= 4 settings per line; quick: 2 per line (smoke test); matched: only the schedule-cache "
                         "and TaylorSeer settings that bracket 1.5-2.5x ideal (a held-out run with --speed ideal on a "
                         "loaded machine); frontier: accel's best lines (FRONTIER_LINES, one setting per target speed "
                         "1.5-4x) and every peer line (the held-out run per workload)")
    ap.add_argument("--lines", default="", help="comma list of lines to run (default: all)")
    ap.add_argument("--contenders", type=Path, default=None,
                    help="an earlier run's JSON (e.g. a 20-image screening of the same workload): run only the lines "
                         "within --margin dB of their side's best at some matched speed there, plus lines it lacks")
    ap.add_argument("--margin", type=float, default=2.0, help="dB, with --contenders")
    ap.add_argument("--out", type=Path, default=None,
                    help="output prefix (default benchmarks/results/caching-WORKLOAD -> .json and .png)")
    ap.add_argument("--probe", action="store_true",
                    help="only print each setting's ideal speedup and PSNR on --num-images images (no timing, no files)")
    ap.add_argument("--speed", choices=("measured", "ideal"), default="measured",
                    help="the speed axis of the curves and the matched-speed table: measured (timed) or ideal (block "
                         "evaluations; deterministic, for a loaded machine)")
    ap.add_argument("--flow-weights", type=Path, default=None,
                    help="flow workloads: a flow-model folder to load instead of the shipped accel/models/weights_flow "
                         "(e.g. a training export; its flow.json hashes are checked)")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    loadavg_start = _loadavg()
    if args.calibration_dir is None:
        tmp = tempfile.mkdtemp(prefix="accel-caching-bench-")
        atexit.register(shutil.rmtree, tmp, ignore_errors=True)
    os.environ["ACCEL_CACHE_DIR"] = str(args.calibration_dir or tmp)

    from accel import models as M
    from accel.eval.bench import prepare_methods
    from accel.eval.paired import generate_paired, time_methods
    from accel.eval.prepare import DigitsFeatures
    from accel.eval.records import NOISE_RATIO, build_records
    from accel.eval.report import format_table
    from accel.eval.runtime import SingleProcess
    from accel.eval.workload import make_workload

    scheduler, steps = WORKLOADS[args.workload]
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)
    model = load_model(args.workload, device, args.flow_weights)
    pipe, guidance = model.pipe, model.guidance
    notes: list[str] = []
    if args.contenders:
        read_contenders(args, notes)
    weights: dict = {}
    if model.prompts:
        from accel.models.flow import verify_flow_weights

        manifest = verify_flow_weights(args.flow_weights)
        training = manifest.get("training") or {}
        weights = {"dir": str(args.flow_weights or M.WEIGHTS_FLOW_DIR), "training_steps": training.get("steps"),
                   "final": training.get("final"),
                   "transformer_sha256": manifest["files"].get("transformer/diffusion_pytorch_model.safetensors")}
        notes.append(f"flow model: stock {type(pipe).__name__}, FlowMatchEuler shift {pipe.scheduler.config.shift}, "
                     f"guidance {guidance}, call kwargs {model.call_kwargs}; image i asks for its digit with "
                     f"digit_prompt(d) ('{model.conditions([7])[0]}' for 7); weights {weights}")
        docs = docs_call_errors(pipe)
        notes += [f"diffusers' documented call pipe.transformer.enable_cache({n}(...)) on "
                  f"{type(pipe.transformer).__name__}: {r}" for n, r in docs.items()]
        notes.append("the diffusers peers run through their apply_* functions instead (benchmarks/peers.py, with the "
                     "cache context the SD3 pipeline does not set); FirstBlockCache's tail hook and TaylorSeer's block "
                     "hook read the text stream of every hooked block, which SD3's last block (context_pre_only) "
                     "returns as None: the errors of those lines are noted below; diffusers-taylorseer leaves that "
                     "block out of cache_identifiers (it always runs)")
    if not cache_dit_available():
        msg = "cache-dit not installed (pip install cache-dit==1.5.3): its DBCache lines are skipped"
        print(f"note: {msg}", file=sys.stderr)
        notes.append(msg)
    cal_labels = [int(x) for x in args.calibration_labels.split(",")]
    labels = [int(x) for x in args.labels.split(",")]
    classes = [cal_labels[i % len(cal_labels)] for i in range(10)]
    t0 = time.perf_counter()
    mag_ratios = None
    screened_magcache = "diffusers-magcache" in getattr(args, "screened_out", set())
    if (not args.lines or "diffusers-magcache" in args.lines.split(",")) and not screened_magcache:
        mag_ratios = calibrate_magcache(
            pipe, lambda: model.images(classes, steps, torch.Generator().manual_seed(10_000)), steps)
        notes.append(f"diffusers-magcache: mag_ratios from its own calibration run (10 images, labels {cal_labels}, "
                     "seed 10000, disjoint from the measured seeds)")
    settings = select(accel_settings(steps) + peer_settings(steps, mag_ratios, taylorseer_all_blocks=model.prompts),
                      args)
    settings = applicable(pipe, settings, notes,
                          smoke=lambda: model.images(cal_labels[:1], steps, torch.Generator().manual_seed(CALIBRATION_SEED_OTHER)))
    methods = [MethodSpec("baseline")] + [spec(s) for s in settings]
    state = SingleProcess()
    wl = make_workload(pipe, args.num_images, args.seed, steps, guidance=guidance, batch_size=args.batch_size,
                       num_classes=10, extra_kwargs=model.call_kwargs)
    wl.conditions = model.conditions([labels[i % len(labels)] for i in range(args.num_images)])
    if any(s.line.startswith("schedule-cache") for s in settings):  # the documented call, on held-out labels
        from accel.caching import calibrate_schedule
        from accel.caching.schedule_cache import CALIBRATION_IMAGES, CALIBRATION_SEED

        n_cal = args.calibration_images or CALIBRATION_IMAGES
        started = time.time()
        cond = model.condition_kwargs(cal_labels)
        path = calibrate_schedule(pipe, images=n_cal, num_inference_steps=steps, guidance_scale=guidance,
                                  **cond, **model.call_kwargs, progress=not args.quiet,
                                  reuse_existing=args.calibration_dir is not None)
        kept = path.stat().st_mtime < started
        cond_text = ", ".join(f"{k}={v}" for k, v in {**cond, **model.call_kwargs}.items())
        notes.append(f"schedule-cache: calibrate_schedule(pipe, num_inference_steps={steps}, guidance_scale={guidance}, "
                     f"{cond_text}) ({n_cal} images, seeds {CALIBRATION_SEED}..), "
                     f"{'an existing calibration kept' if kept else 'calibrated'} in {path}; measured images: labels "
                     f"{labels}, seeds {args.seed}..{args.seed + args.num_images - 1}")
    calib = make_workload(pipe, 4, CALIBRATION_SEED_OTHER, steps, guidance=guidance, batch_size=4, num_classes=10,
                          extra_kwargs=model.call_kwargs)
    calib.conditions = model.conditions([cal_labels[i % len(cal_labels)] for i in range(4)])
    others = [m for m in methods if not any(type(c).__name__ == "ScheduleCacheConfig" for c in m.configs)]
    note = prepare_methods(pipe, others, calib, list(range(4)), state)  # schedule-cache: calibrated above
    notes += [note] if note else []
    if args.probe:
        probe(model, settings, steps, args.num_images)
        return

    extractor = DigitsFeatures(M.load_digits_classifier(device=device), M.to_classifier_input)
    quality_counts: dict[str, dict] = {}

    def apply_counting(pipe: Any, m: MethodSpec) -> Any:  # keeps each method's block counts of the quality run
        h = apply_fn(pipe, m)
        remove = h.remove

        def remove_and_count() -> None:
            quality_counts[m.label] = dict(h.stats()["total"])
            remove()

        h.remove = remove_and_count
        return h

    images = generate_paired(pipe, methods, [wl], apply_counting, state=state, extractor=extractor, device=device,
                             progress=not args.quiet)
    t_imgs = min(args.timing_images or args.batch_size, args.batch_size, args.num_images)
    timed = time_methods(pipe, methods, wl, list(range(t_imgs)), apply_fn, repeats=args.repeats,
                         warmup=args.warmup, device=device, progress=not args.quiet)
    common = dict(workload=args.workload, scheduler=scheduler, steps=steps, guidance=guidance,
                  num_images=args.num_images, timing_images=t_imgs, repeats=args.repeats, warmup=args.warmup,
                  threads=torch.get_num_threads(), device=str(device))
    records, flags = build_records(methods, images, timed, reference_stats=M.load_reference_stats(),
                                   fd_name="FD-digits", common=None)
    notes += flags
    notes.append(f"timing: {args.repeats} interleaved repeats after {args.warmup} warm-up round(s) on images "
                 f"0..{t_imgs - 1} of the {args.num_images} used for quality; block_evals and ideal_speedup "
                 "are counted in those same timed calls")
    by_label = {s.label: s for s in settings}
    base_fd = records[0]["fd"]
    for r in records:
        s = by_label.get(r["method"])
        r["line"], r["side"] = (s.line, s.side) if s else ("baseline", "baseline")
        r["fd_vs_baseline_pct"] = None if r["fd"] is None or not base_fd else 100 * (r["fd"] / base_fd - 1)
        ratio = r.get("achieved_over_ideal")
        r["timing_flag"] = bool(ratio is not None and ratio > NOISE_RATIO)
        q = quality_counts.get(r["method"]) or {}
        r["quality_ideal_speedup"] = q["block_total"] / q["block_evals"] if q.get("block_evals") else None
        qi, ti = r["quality_ideal_speedup"], r.get("ideal_speedup")
        if qi and ti and abs(ti / qi - 1) > 0.05:
            notes.append(f"{r['method']}: the timed batch skipped differently from the quality run (ideal "
                         f"{ti:.2f}x timed vs {qi:.2f}x over all {args.num_images} images): its speed and "
                         "fidelity describe different schedules")
    lines: dict[str, list] = {}
    sides: dict[str, str] = {}
    xkey = "quality_ideal_speedup" if args.speed == "ideal" else "speedup"
    if args.speed == "ideal":
        notes.append("matched speed on the ideal speedup (block evaluations of the baseline / the method's, over all "
                     "quality images); each record's measured speedup and achieved/ideal are the timed ratio")
    for r in records[1:]:
        lines.setdefault(r["line"], []).append((r[xkey], r["psnr"], r["fd"]))
        sides[r["line"]] = r["side"]
    matched = matched_speed_table(lines, sides, TARGET_SPEEDS, base_fd)
    title = (f"{model.name}, {scheduler} {steps} steps, guidance {guidance}, {args.num_images} images, "
             f"timing {t_imgs} images x {args.repeats} repeats, {args.speed} speedup")

    print(f"\n== {title}\n{format_table(records)}")
    print("\nflagged (achieved/ideal > %.2f): %s" % (NOISE_RATIO, ", ".join(r["method"] for r in records if r["timing_flag"]) or "none"))
    print(f"\nmatched speed (PSNR interpolated on each line's measured front; FD-digits baseline {base_fd:.2f}):")
    print(format_matched(matched, "FD-digits"))
    for n in notes:
        print(f"note: {n}")

    prefix = args.out or REPO / "benchmarks" / "results" / f"caching-{args.workload}"
    prefix.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "title": title, "workload": common, "records": records,
        "curves": {n: {"side": sides[n], "points": [{"speedup": s, "psnr": p, "fd": f} for s, p, f in pts]}
                   for n, pts in lines.items()},
        "matched_speed": matched, "notes": notes,
        "meta": {"command": ["python", "benchmarks/caching.py", *sys.argv[1:]],
                 "wall_s": time.perf_counter() - t0, "loadavg_start": loadavg_start, "loadavg_end": _loadavg(),
                 **({"flow_weights": weights} if weights else {})},
    }
    write_json(prefix.with_suffix(".json"), doc)
    plot(prefix.with_suffix(".png"), records, lines, sides, title, base_fd)
    print(f"\nwrote {prefix.with_suffix('.json')} and {prefix.with_suffix('.png')}")


if __name__ == "__main__":
    main()
