"""Stacking: pruned model + block cache + token method vs the best single methods.

    python benchmarks/stack.py [--part stack] [--workload default20|flow28] [--num-images 100] [--keep 10] [--selector first]
        [--distill-minutes 3] [--settings full|quick] [--only A|B] [--repeats 3] [--timing-images 8]
        [--threads 2] [--out benchmarks/results/stack.json]

One run, the workload of a no-flag `accel bench` on the embedded model: DPM-Solver++ 20 steps,
guidance 2.0, classes cycling 0-9, image i on seed i. Every row is generated on the same seeds
and classes through accel.eval's paired machinery (generate_paired, time_methods, build_records):
FD-digits over all `--num-images` images, PSNR to the baseline's image of the same seed, and
speed from interleaved repeats of one batch (`--timing-images`), the block evaluations counted in
those same timed calls.

The pruned model is made in the run: `--keep` of the 12 blocks chosen by `--selector` (first:
the leading blocks, no calibration; laptop / cosine: scored on a few calibration calls),
optionally distilled for `--distill-minutes` (accel.pruning.distill on the digits training set,
EMA weights), saved as a pipeline folder (accel.pruning.save_pipeline, what `accel prune` writes)
and loaded back from that folder with plain diffusers. `--student DIR` uses a folder written by
`accel prune` / `accel distill` instead (its pruning.json / distill.json go into the JSON). A row "on the pruned model" swaps the
pipeline's transformer for it before `accel.apply` and back after `.remove()`.

Rows: baseline; single methods (interval-cache, delta-cache, schedule-cache, toca, tome, the
pruned model alone), a few settings each; stacks (pruned + cache, cache + tokens, pruned + cache
+ tokens). schedule-cache is calibrated on disjoint seeds (for the pruned model on the pruned
model itself: its fingerprint differs). `ideal_speedup` is rewritten against the baseline's
block work (block evaluations x token FLOPs ratio over the baseline's 12 x 20 per call), so a
pruned row's ideal includes its missing blocks.

Target (issue 13): the best stack >= 3x faster than the baseline at <= 10% FD-digits increase,
and faster at that budget than the best single method.

`--workload flow28`: the embedded flow model at its default sampler (28 FlowMatchEuler steps, its
guidance and 6 text tokens; image i asks for digit i % 10 with `digit_prompt`), the pruned model a
folder `accel prune --model flow` / `accel distill --teacher flow` wrote (`--student DIR`, required
there), rows pruned + schedule-/interval-cache (forecast 0 and 1) beside the caches alone. Target
(issue 33): >= 5x at <= +5% FD-digits, judged on `ideal_speedup` (block work; the measured speedup
is beside it):

    accel prune --model flow --keep 0.5 --out flow-p6
    accel distill --teacher flow --student flow-p6 --data digits --lr 3e-4 --minutes 40 --threads 1 --out flow-p6-data
    python benchmarks/stack.py --workload flow28 --student flow-p6-data --keep 6 --num-images 200 --threads 1 \
        --out benchmarks/results/prune-cache-stack-flow28.json The JSON keeps one section per part
(`stack`; the lead's `--part tune`, the tune-vs-exhaustive comparison, adds `tune`).
"""

from __future__ import annotations

import argparse
import json
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
from _common import machine, write_json  # noqa: E402
from accel.config import MethodConfig  # noqa: E402
from accel.eval.methods import MethodSpec  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
FD_BUDGET_PCT = 10.0
TARGET_SPEEDUP = 3.0
STEPS, SCHEDULER = 20, "dpm++"  # the no-flag `accel bench` workload on the embedded model
# per workload: model, steps, FD budget (%), target speedup, which speedup the target is judged on
WORKLOADS = {"default20": ("default", STEPS, FD_BUDGET_PCT, TARGET_SPEEDUP, "speedup"),
             "flow28": ("flow", 28, 5.0, 5.0, "ideal_speedup")}


# ----------------------------------------------------------------------------- rows
@dataclass
class StackSpec(MethodSpec):
    """A row: configs applied together, optionally on the pruned model instead of the original."""

    group: str = "single"  # baseline | single | stack
    pruned: bool = False

    @property
    def is_baseline(self) -> bool:
        return not self.configs and not self.pruned


def _row(label: str, group: str, configs: list, pruned: bool = False, quick: bool = False) -> tuple[StackSpec, bool]:
    comps = [(c.cli_name, {}) for c in configs]
    return StackSpec(label, comps, configs, group=group, pruned=pruned), quick


def rows(keep: int, workload: str = "default20") -> list[tuple[StackSpec, bool]]:
    """(row, part of --settings quick). Settings bracket ~2-4x so the 10% FD budget falls inside each line."""
    if workload == "flow28":
        return flow_rows(keep)
    m = accel.methods()
    I, D, S = m["interval-cache"], m["delta-cache"], m["schedule-cache"]
    C, T = m["toca"], m["tome"]
    P = f"pruned{keep}"
    out = [
        _row("interval-cache:interval=3", "single", [I(interval=3)], quick=True),
        _row("interval-cache:interval=4", "single", [I(interval=4)]),
        _row("delta-cache:interval=3,cached_blocks=1.0", "single", [D(interval=3, cached_blocks=1.0)]),
        _row("schedule-cache:budget=0.4", "single", [S(budget=0.4)]),
        _row("schedule-cache:budget=0.35", "single", [S(budget=0.35)], quick=True),
        _row("schedule-cache:budget=0.3", "single", [S(budget=0.3)]),
        _row("schedule-cache:budget=0.25", "single", [S(budget=0.25)]),
        _row("schedule-cache:budget=0.2", "single", [S(budget=0.2)]),
        _row("toca:interval=3,recompute=0.3", "single", [C(interval=3, recompute=0.3)], quick=True),
        _row("tome:ratio=0.25,prop_attn=True", "single", [T(ratio=0.25, prop_attn=True)]),
        _row(P, "single", [], pruned=True, quick=True),
        # pruned + cache
        _row(f"{P}+schedule-cache:budget=0.4", "stack", [S(budget=0.4)], pruned=True),
        _row(f"{P}+schedule-cache:budget=0.35", "stack", [S(budget=0.35)], pruned=True, quick=True),
        _row(f"{P}+schedule-cache:budget=0.3", "stack", [S(budget=0.3)], pruned=True),
        _row(f"{P}+schedule-cache:budget=0.25", "stack", [S(budget=0.25)], pruned=True),
        _row(f"{P}+interval-cache:interval=3", "stack", [I(interval=3)], pruned=True),
        # cache + tokens
        _row("schedule-cache:budget=0.35+toca:interval=2,recompute=0.5", "stack",
             [S(budget=0.35), C(interval=2, recompute=0.5, warmup=1)]),
        # all three
        _row(f"{P}+schedule-cache:budget=0.4+toca:interval=2,recompute=0.5", "stack",
             [S(budget=0.4), C(interval=2, recompute=0.5, warmup=1)], pruned=True, quick=True),
        _row(f"{P}+schedule-cache:budget=0.35+toca:interval=2,recompute=0.5", "stack",
             [S(budget=0.35), C(interval=2, recompute=0.5, warmup=1)], pruned=True),
    ]
    return out


def flow_rows(keep: int) -> list[tuple[StackSpec, bool]]:
    """flow28: the pruned model (2x at 6/12) with the caches that lead on flow28 (schedule-cache forecast 0/1,
    interval-cache forecast 1) at 2-3.3x more, so the stacks span ~4-6.7x; the caches alone at 3-5x beside them."""
    m = accel.methods()
    I, S = m["interval-cache"], m["schedule-cache"]
    P = f"pruned{keep}"
    out = [_row(P, "single", [], pruned=True, quick=True)]
    for b in (0.3, 0.25, 0.2):
        out.append(_row(f"schedule-cache:budget={b},forecast=1", "single", [S(budget=b, forecast=1)], quick=b == 0.25))
    out.append(_row("interval-cache:interval=4,forecast=1", "single", [I(interval=4, forecast=1)]))
    for b in (0.5, 0.4, 0.35, 0.3):
        for f in (0, 1):
            out.append(_row(f"{P}+schedule-cache:budget={b},forecast={f}", "stack", [S(budget=b, forecast=f)],
                            pruned=True, quick=(b, f) == (0.4, 1)))
    for k in (2, 3):
        out.append(_row(f"{P}+interval-cache:interval={k},forecast=1", "stack", [I(interval=k, forecast=1)],
                        pruned=True))
    return out


class RowHandle:
    """A row applied: the pipeline's transformer swapped for the pruned one (pruned rows), accel on top.
    `.remove()` removes accel and puts the original transformer back."""

    def __init__(self, pipe: Any, spec: StackSpec, pruned: torch.nn.Module):
        self.pipe, self.original = pipe, pipe.transformer
        if spec.pruned:
            pipe.transformer = pruned
        try:
            self.handle = accel.apply(pipe, *spec.configs)
        except BaseException:
            pipe.transformer = self.original
            raise

    def stats(self) -> dict:
        return self.handle.stats()

    def remove(self) -> None:
        try:
            self.handle.remove()
        finally:
            self.pipe.transformer = self.original


# ----------------------------------------------------------------------------- the pruned model
def make_pruned(pipe: Any, args: argparse.Namespace, folder: Path, info: dict) -> torch.nn.Module:
    """Prune (and optionally distil) the default model, save the pipeline folder, load its transformer back."""
    from accel.pruning import save_pipeline
    from accel.pruning.distill import DistillConfig
    from accel.pruning.workflow import distill_data, distill_pipeline, prune_pipeline

    teacher = pipe.transformer
    n = len(teacher.transformer_blocks)
    if args.student:  # a folder `accel prune` / `accel distill` wrote: use it as it is
        folder = Path(args.student)
        for name in ("pruning.json", "distill.json"):
            if (folder / name).is_file():
                data = json.loads((folder / name).read_text())  # long lists (losses, scores history) left out
                info[name.removesuffix(".json")] = {k: v for k, v in data.items()
                                                    if not isinstance(v, list) or len(v) <= 32}
        loaded = type(teacher).from_pretrained(folder / "transformer").eval()  # plain diffusers
        info.update(folder=str(folder), blocks=len(loaded.transformer_blocks),
                    keep=info.get("pruning", {}).get("keep"), selector=info.get("pruning", {}).get("selector"),
                    params=sum(p.numel() for p in loaded.parameters()),
                    params_original=sum(p.numel() for p in teacher.parameters()))
        return loaded
    if args.workload != "default20":
        raise SystemExit(f"--workload {args.workload}: give the pruned model with --student DIR (a folder written "
                         "by accel prune / accel distill on that model)")
    t0 = time.perf_counter()
    # 10 calibration images on seeds disjoint from the measured ones, 16 calls kept
    pruned = prune_pipeline(pipe, args.keep, digits=True, selector=args.selector, calib_images=10, calib_steps=STEPS,
                            calib_calls=16, calib_seed=10_000, evo_evaluations=args.evo_evaluations)
    keep, student = pruned.keep, pruned.model
    info.update(keep=keep, removed=[i for i in range(n) if i not in keep], selector=args.selector,
                select_seconds=round(time.perf_counter() - t0, 1))
    if args.distill_minutes > 0:
        cfg = DistillConfig(minutes=args.distill_minutes, batch_size=args.distill_batch, lr=args.distill_lr,
                            save_every=10**9, seed=args.seed, progress=False)
        with tempfile.TemporaryDirectory() as work:
            student, res = distill_pipeline(pipe, student, keep, distill_data(pipe, digits=True)[0], cfg, work)
        losses = res["losses"]
        info["distill"] = {
            "minutes": args.distill_minutes, "steps": res["steps"], "train_seconds": round(res["elapsed_s"], 1),
            "seconds_per_step": res["elapsed_s"] / max(1, res["steps"]), "batch_size": args.distill_batch,
            "lr": args.distill_lr,
            "loss_first10": sum(p["loss"] for p in losses[:10]) / max(1, len(losses[:10])),
            "loss_last10": sum(p["loss"] for p in losses[-10:]) / max(1, len(losses[-10:])),
        }
        print(f"distilled {res['steps']} steps in {res['elapsed_s']:.0f}s "
              f"({info['distill']['seconds_per_step']:.2f} s/step)", flush=True)
    teacher.requires_grad_(False)
    save_pipeline(pipe, student.eval().requires_grad_(False), folder)
    loaded = type(teacher).from_pretrained(folder / "transformer").eval()  # plain diffusers
    info.update(folder=str(folder), blocks=len(loaded.transformer_blocks),
                params=sum(p.numel() for p in loaded.parameters()),
                params_original=sum(p.numel() for p in teacher.parameters()))
    return loaded


# ----------------------------------------------------------------------------- the stack part
def run_stack(args: argparse.Namespace) -> dict:
    from accel import models as M
    from accel.eval.paired import generate_paired, time_methods
    from accel.eval.prepare import DigitsFeatures
    from accel.eval.records import build_records, timing_notes
    from accel.eval.runtime import SingleProcess
    from accel.eval.workload import generate, make_workload

    t_start = time.perf_counter()
    model, steps, fd_budget, target, judged_on = WORKLOADS[args.workload]
    wl_kwargs: dict[str, Any] = {"num_classes": 10}
    if model == "flow":
        guidance = float(M.FLOW_SAMPLER["guidance_scale"])
        pipe = M.load_flow_pipeline()
        wl_kwargs = {"prompts": [M.digit_prompt(d) for d in range(10)],
                     "extra_kwargs": {"max_sequence_length": M.FLOW_SAMPLER["max_sequence_length"]}}
    else:
        guidance = float(M.DEFAULT_SAMPLER["guidance_scale"])
        pipe = M.load_default_pipeline(scheduler=SCHEDULER)
    pipe.set_progress_bar_config(disable=True)
    pipe.transformer.requires_grad_(False)
    notes: list[str] = []
    pruned_info: dict = {}
    work = Path(tempfile.mkdtemp(prefix="accel-stack-bench-"))
    try:
        folder = Path(args.pruned_dir) if args.pruned_dir else work / f"pruned{args.keep}"
        pruned = make_pruned(pipe, args, folder, pruned_info)
        if pruned_info["blocks"] != args.keep:
            raise SystemExit(f"--keep {args.keep}: the pruned model has {pruned_info['blocks']} blocks")
        print(f"pruned model: {pruned_info['blocks']} blocks, kept {pruned_info['keep']}, folder {pruned_info['folder']}",
              flush=True)
        specs = [s for s, quick in rows(args.keep, args.workload) if args.settings == "full" or quick]
        if args.only:
            specs = [s for s in specs if any(o in s.label for o in args.only.split("|"))]
        specs = [StackSpec("baseline", group="baseline")] + specs

        def apply_fn(p: Any, spec: MethodSpec) -> RowHandle:
            return RowHandle(p, spec, pruned)

        wl = make_workload(pipe, args.num_images, args.seed, steps, guidance=guidance, batch_size=args.batch_size,
                           **wl_kwargs)
        calib = make_workload(pipe, args.num_images, args.seed, steps, guidance=guidance,
                              batch_size=args.batch_size, seed_set=1, **wl_kwargs)
        cal_idx = list(range(min(args.calibration_images, args.num_images)))
        t0 = time.perf_counter()
        for spec in specs:  # one-off preparation (schedule-cache calibration) on the model the row runs on
            prep = [c for c in spec.configs if type(c).prepare is not MethodConfig.prepare]
            if not prep:
                continue
            original = pipe.transformer
            pipe.transformer = pruned if spec.pruned else original
            try:
                for cfg in prep:
                    cfg.prepare(pipe, lambda: generate(pipe, calib, cal_idx))
            finally:
                pipe.transformer = original
        notes.append(f"schedule-cache calibrated (original and pruned model each) on {len(cal_idx)} images of "
                     f"seeds {calib.seeds[0]}.., disjoint from the measured ones ({time.perf_counter() - t0:.0f}s)")

        extractor = DigitsFeatures(M.load_digits_classifier(), M.to_classifier_input)
        quality_counts: dict[str, dict] = {}

        def apply_counting(p: Any, spec: MethodSpec) -> Any:
            h = apply_fn(p, spec)
            remove = h.remove

            def remove_and_count() -> None:
                quality_counts[spec.label] = dict(h.stats()["total"])
                remove()

            h.remove = remove_and_count
            return h

        state = SingleProcess()
        t0 = time.perf_counter()
        images = generate_paired(pipe, specs, [wl], apply_counting, state=state, extractor=extractor,
                                 progress=not args.quiet)
        quality_s = time.perf_counter() - t0
        t_imgs = min(args.timing_images, args.num_images)
        t0 = time.perf_counter()
        timed = time_methods(pipe, specs, wl, list(range(t_imgs)), apply_fn, repeats=args.repeats,
                             warmup=args.warmup, progress=not args.quiet)
        timing_s = time.perf_counter() - t0
        records, _ = build_records(specs, images, timed, reference_stats=M.load_reference_stats(),
                                   fd_name="FD-digits")  # its timing flags are redone below (ideal vs the baseline)
    finally:
        if not args.pruned_dir:
            shutil.rmtree(work, ignore_errors=True)

    base = records[0]
    base_work = base["block_total"]
    by_label = {s.label: s for s in specs}
    for r in records:
        s = by_label[r["method"]]
        r["group"], r["pruned"] = s.group, s.pruned
        r["fd_vs_baseline_pct"] = 100 * (r["fd"] / base["fd"] - 1)
        ev, ratio = r["block_evals"], r["flops_ratio"] or 1.0
        r["ideal_speedup"] = base_work / (ev * ratio) if ev else None  # against the baseline's 12-block work
        r["achieved_over_ideal"] = r["speedup"] / r["ideal_speedup"] if r["ideal_speedup"] else None
        q = quality_counts.get(r["method"]) or {}
        r["quality_block_evals"] = q.get("block_evals")
    notes += timing_notes(records, timed)
    best = {g: best_under_budget([r for r in records if r["group"] == g], fd_budget, judged_on)
            for g in ("single", "stack")}
    verdict = judge(best, target, judged_on)
    loadavg = os.getloadavg()
    notes.append(f"timing: {args.repeats} interleaved repeats after {args.warmup} warm-up round(s) of images "
                 f"0..{t_imgs - 1}; ideal_speedup = the baseline's block evaluations / (this row's x its token "
                 "FLOPs ratio), per timed call")
    notes.append(f"load average at the end of the run {loadavg[0]:.1f}/{loadavg[1]:.1f}/{loadavg[2]:.1f} (1/5/15 min) "
                 f"on {os.cpu_count()} cores shared with other jobs: wall-clock speedups are noisy; "
                 "ideal_speedup is exact")
    notes.append("FD-digits over 100 images moves by a few % between seed sets; rows are paired (same seeds), "
                 "so differences between rows are less noisy than the FD values themselves")
    return {
        "command": " ".join(["python", *sys.argv]),
        "workload": {"name": args.workload, "model": model, "scheduler": "flow-euler" if model == "flow" else SCHEDULER,
                     "steps": steps, "guidance": guidance,
                     "num_images": args.num_images, "batch_size": args.batch_size, "timing_images": t_imgs,
                     "repeats": args.repeats, "warmup": args.warmup, "threads": torch.get_num_threads(),
                     "seed": args.seed},
        "pruned_model": pruned_info,
        "records": records,
        "best_under_budget": best,
        "target": {"fd_budget_pct": fd_budget, "speedup": target, "judged_on": judged_on, **verdict},
        "notes": notes,
        "seconds": {"quality": round(quality_s, 1), "timing": round(timing_s, 1),
                    "total": round(time.perf_counter() - t_start, 1)},
        "load_average_end": list(loadavg),
    }


def best_under_budget(records: list[dict], fd_budget: float = FD_BUDGET_PCT, by: str = "speedup") -> dict | None:
    """The fastest row (by `by`: measured or ideal speedup) whose FD-digits is at most `fd_budget` % above the
    baseline's."""
    ok = [r for r in records if r["fd_vs_baseline_pct"] <= fd_budget and r[by] is not None]
    if not ok:
        return None
    r = max(ok, key=lambda r: r[by])
    return {k: r[k] for k in ("method", "speedup", "ideal_speedup", "fd", "fd_vs_baseline_pct", "psnr")}


def judge(best: dict, target: float = TARGET_SPEEDUP, by: str = "speedup") -> dict:
    stack, single = best.get("stack"), best.get("single")
    out: dict[str, Any] = {"stack_speedup": stack and stack[by], "single_speedup": single and single[by]}
    out["met_speedup"] = bool(stack and stack[by] >= target)
    out["met_beats_single"] = bool(stack and (single is None or stack[by] > single[by]))
    out["met"] = out["met_speedup"] and out["met_beats_single"]
    if stack and not out["met_speedup"]:
        out["speedup_shortfall"] = target - stack[by]
    return out


def print_table(part: dict) -> None:
    t = part["target"]
    budget, target = t["fd_budget_pct"], t["speedup"]
    print(f"\n{'row':62s} {'speedup':>7s} {'ideal':>6s} {'FD':>7s} {'dFD%':>6s} {'PSNR':>5s}")
    for r in part["records"]:
        ok = "*" if r["fd_vs_baseline_pct"] <= budget else " "
        psnr = f"{r['psnr']:5.1f}" if r["psnr"] is not None and r["psnr"] != float("inf") else "  inf"
        print(f"{r['method'][:62]:62s} {r['speedup']:6.2f}x {r['ideal_speedup'] or 0:5.2f}x {r['fd']:7.2f} "
              f"{r['fd_vs_baseline_pct']:+6.1f}{ok}{psnr}")
    print(f"(* = within the {budget:g}% FD-digits budget)")
    for g, b in part["best_under_budget"].items():
        print(f"best {g} within budget: " + (f"{b['method']} {b['speedup']:.2f}x (ideal {b['ideal_speedup']:.2f}x), "
                                             f"FD {b['fd_vs_baseline_pct']:+.1f}%" if b else "none"))
    print(f"target: best stack >= {target:g}x ({t['judged_on']}) at <= {budget:g}% FD and faster than the best single: "
          f"{'MET' if t['met'] else 'NOT MET'} (speedup {'ok' if t['met_speedup'] else 'short'}, "
          f"beats single {'yes' if t['met_beats_single'] else 'no'})")


def plot(part: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(14, 6))
    style = {"baseline": ("k", "*"), "single": ("C0", "o"), "stack": ("C3", "s")}
    for r in part["records"]:
        c, mk = style[r["group"]]
        if r["pruned"] and r["group"] == "single":
            c = "C2"
        for ax, y in ((axes[0], r["fd_vs_baseline_pct"]), (axes[1], r["psnr"])):
            if y is None:
                continue
            ax.plot(r["speedup"], y, mk, color=c)
            ax.annotate(r["method"].replace("prop_attn=True", "prop").replace("recompute", "rc"), (r["speedup"], y),
                        fontsize=5.5, xytext=(3, 2), textcoords="offset points")
    axes[0].axhline(part["target"]["fd_budget_pct"], color="0.5", linestyle="--", linewidth=0.8)
    for ax in axes:
        ax.axvline(part["target"]["speedup"], color="0.5", linestyle=":", linewidth=0.8)
        ax.set_xlabel("measured speedup vs baseline (x)")
    axes[0].set(ylabel="FD-digits increase over the baseline (%)",
                title=f"quality (dashed: {part['target']['fd_budget_pct']:g}% budget)")
    axes[1].set(ylabel="PSNR to the baseline's images (dB)", title="fidelity")
    handles = [plt.Line2D([], [], color=c, marker=m, linestyle="") for c, m in
               (style["single"], ("C2", "o"), style["stack"])]
    axes[0].legend(handles, ["single cache / token method", "pruned model alone", "stack"], fontsize=8)
    w = part["workload"]
    fig.suptitle(f"{w['model']} model, {w['scheduler']} {w['steps']} steps, guidance {w['guidance']}, "
                 f"{w['num_images']} paired images, {w['threads']} torch thread(s); pruned: "
                 f"{part['pruned_model'].get('blocks')}/12 blocks", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------- main
def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--part", choices=("stack", "tune"), default="stack",
                   help="stack: the table above; tune: `accel tune` vs an exhaustive search of the same grid "
                        "(benchmarks/tune_search.py at its defaults, written into the JSON's 'tune' section)")
    p.add_argument("--workload", choices=tuple(WORKLOADS), default="default20",
                   help="default20: the default model, 20 DPM++ steps (issue 13); flow28: the flow model, 28 steps "
                        "(issue 33; needs --student)")
    p.add_argument("--num-images", type=int, default=100, help="quality images per row (paired seeds)")
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--timing-images", type=int, default=8, help="images of the timed batch")
    p.add_argument("--repeats", type=int, default=3, help="interleaved timing repeats")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--calibration-images", type=int, default=4, help="schedule-cache calibration images")
    p.add_argument("--keep", type=int, default=10, help="blocks of 12 the pruned model keeps")
    p.add_argument("--selector", default="first", help="accel prune selector (first, laptop, cosine, ...)")
    p.add_argument("--evo-evaluations", type=int, default=40)
    p.add_argument("--distill-minutes", type=float, default=3.0, help="distillation of the pruned model (0 = none)")
    p.add_argument("--distill-batch", type=int, default=32)
    p.add_argument("--distill-lr", type=float, default=3e-4)
    p.add_argument("--pruned-dir", default=None, help="keep the pruned pipeline folder here (default: temporary)")
    p.add_argument("--student", default=None, metavar="DIR",
                   help="use this pipeline folder from `accel prune` / `accel distill` as the pruned model instead of "
                        "pruning (and distilling) in the run; --keep must match its depth")
    p.add_argument("--settings", choices=("full", "quick"), default="full", help="quick: a few rows (smoke test)")
    p.add_argument("--only", default=None, help="rows whose label contains one of A|B|... (baseline always)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--out", default=str(RESULTS / "stack.json"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    calib_dir = tempfile.mkdtemp(prefix="accel-stack-calib-")  # this run's own schedule-cache calibrations
    os.environ["ACCEL_CACHE_DIR"] = calib_dir
    out = Path(args.out)
    doc = json.loads(out.read_text()) if out.exists() else {}  # other parts' sections are kept
    doc.pop("meta", None)
    doc["machine"] = machine()
    try:
        if args.part == "stack":
            doc["stack"] = run_stack(args)
            write_json(out, doc)
            plot(doc["stack"], out.with_suffix(".png"))
            print_table(doc["stack"])
        elif args.part == "tune":
            import tune_search

            targs = tune_search.build_parser().parse_args(["--threads", str(args.threads)])
            tdoc = tune_search.run(targs)
            doc["tune"] = {k: v for k, v in tdoc.items() if k not in ("exhaustive", "meta")}
            write_json(out, doc)
    finally:
        shutil.rmtree(calib_dir, ignore_errors=True)
    print(f"wrote {out}" + (f" and {out.with_suffix('.png')}" if args.part == "stack" else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
