"""`accel tune`: the fastest stack of methods that keeps quality inside a budget, on your model.

1. Build the joint space from the methods' declared ``tunable`` settings (one block cache x
   one token method x the original or a ``--pruned`` model folder).
2. Successive halving on a calibration set of paired images (seed set 1): many candidates
   on few images, the best third on three times as many, up to ``--calibration-images``.
3. Re-measure the front of the last rung on held-out images (seed set 0, the seeds `accel
   bench` uses), and choose the fastest candidate inside the budget there.
4. Write ``--out`` (tune.json: chosen config, front, every evaluation) and report.html next
   to it; exit 1 (and say so) when no candidate meets the budget.

Evaluations are cached per candidate and workload (`$ACCEL_CACHE_DIR/tune`), so a re-run
with the same model, sampler and seeds resumes instead of starting over.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from .files import write_tune_json
from .search import QualityBudget, exhaustive, front, rung_plan, successive_halving
from .space import Candidate, build_space


def _prepare_settings(args: argparse.Namespace) -> Any:
    """What `accel.eval.prepare` needs from tune's flags: the shared pipeline flags, the baseline only,
    FD only with an FD budget, --out's folder (checked there: not a file)."""
    from accel.eval.prepare import PrepareSettings

    return PrepareSettings.from_args(args, methods="baseline", no_fd=args.budget_fd is None,
                                     out=str(Path(args.out).resolve().parent))


def _workload_key(prep: Any, args: argparse.Namespace, n: int, seed_set: int) -> str:
    from accel.fingerprints import model_fingerprint, scheduler_fingerprint

    return json.dumps({
        "model": model_fingerprint(prep.pipe.transformer), "scheduler": scheduler_fingerprint(prep.pipe.scheduler),
        "steps": prep.steps, "guidance": prep.guidance, "seed": args.seed, "seed_set": seed_set, "images": n,
        "batch": args.batch_size, "kwargs": prep.call_kwargs, "prompts": prep.prompts, "fd": prep.fd_name,
        "device": str(prep.device), "dtype": args.dtype, "threads": __import__("torch").get_num_threads(),
    }, sort_keys=True, default=str)


def _loader(prep: Any, args: argparse.Namespace):
    """Folder -> pipeline on the same device/dtype/scheduler as the original (accel.pipelines.load_model)."""
    def load(folder: str) -> Any:
        from accel.eval.runtime import parse_dtype
        from accel.pipelines import load_model

        # prep.scheduler: --scheduler, else a digits model's own sampler's (as `accel bench` loads the original)
        return load_model(folder, device=prep.device, dtype=parse_dtype(args.dtype), scheduler=prep.scheduler).pipe
    return load


def _row(r: dict) -> str:
    fd = "" if r.get("fd_pct") is None else f"{r['fd_pct']:+7.1f}%"
    psnr = "inf" if r.get("psnr") is None else f"{r['psnr']:.1f}"
    return f"{r['speedup']:6.2f}x  {psnr:>6} dB  {fd:>8}  n={r['n']:<4} {r['key']}"


def tune_command(args: argparse.Namespace) -> int:
    """`accel tune`; exit 0 with a config, 1 when none meets the budget, 2 on bad input."""
    from tqdm.auto import tqdm

    import accel
    from accel.errors import AccelError
    from accel.errors import one_line
    from accel.eval.methods import BenchInputError
    from accel.eval.prepare import prepare
    from accel.eval.runtime import pin_threads
    from accel.eval.workload import make_workload

    from .evaluate import Evaluator, timing_note

    def fail(msg: str) -> int:
        print(f"accel tune: error: {msg}", file=sys.stderr)
        return 2

    from accel.outputs import check_file_output

    t0 = time.perf_counter()
    try:
        budget = QualityBudget(args.budget_fd, args.budget_psnr)
        if budget.fd_pct is None and args.calibration_images is not None and args.calibration_images < 4:
            raise BenchInputError(f"--calibration-images {args.calibration_images} is too few for a search: at least 4")
        for flag, v, lo in (("--evals", args.evals, 1), ("--holdout-images", args.holdout_images, 0),
                            ("--front-max", args.front_max, 1), ("--eta", args.eta, 2),
                            ("--batch-size", args.batch_size, 1)):
            if v < lo:
                raise BenchInputError(f"{flag} must be >= {lo}, got {v}")
        for d in args.pruned:
            if not Path(d).is_dir():
                raise BenchInputError(f"--pruned {d}: no such folder (write one with `accel prune --out {d}`)")
        check_file_output(args.out, overwrite=args.overwrite, companions=("report.html",))
        threads = pin_threads(args.threads)
        registry = dict(accel.methods())
        names = [n.strip() for n in args.methods.split(",")] if args.methods else None
        space = build_space(registry, names, models=[None, *args.pruned])
        prep = prepare(_prepare_settings(args))
        if budget.fd_pct is not None and prep.extractor is None:
            raise BenchInputError("--budget-fd needs an FD extractor (the default model has FD-digits; else "
                                  "--inception-weights PATH or --features MODULE:FACTORY), or use --budget-psnr")
    except (BenchInputError, AccelError, ValueError) as exc:
        return fail(one_line(exc))
    if hasattr(prep.pipe, "set_progress_bar_config"):
        prep.pipe.set_progress_bar_config(disable=True)
    from accel.eval import fid as fidmod

    fd_min = fidmod.min_images_for_fd(prep.extractor.num_features) if budget.fd_pct is not None else 4
    final = args.calibration_images or (192 if budget.fd_pct is not None else 64)
    if final < fd_min:  # PSNR-only budgets were checked above, before the model loaded
        return fail(f"--calibration-images {final} is too few for the FD budget: at least {fd_min}")
    min_images = min(8, final)  # early rungs too small for FD rank by the speed-PSNR front (search.rank)

    def workload(n: int, seed_set: int):
        return make_workload(prep.pipe, n, args.seed, prep.steps, guidance=prep.guidance, batch_size=args.batch_size,
                             seed_set=seed_set, num_classes=prep.num_classes, prompts=prep.prompts,
                             extra_kwargs=prep.call_kwargs)

    def evaluator(n: int, seed_set: int) -> Evaluator:
        key = None if args.no_cache else _workload_key(prep, args, n, seed_set)
        return Evaluator(prep.pipe, workload(n, seed_set), registry, load_model=_loader(prep, args),
                         extractor=prep.extractor, reference_stats=prep.reference_stats, device=prep.device,
                         workload_key=key, notify=lambda m: tqdm.write(f"accel tune: note: {m}", file=sys.stderr))

    print(f"accel tune: model={prep.model_name} steps={prep.steps} scheduler={prep.scheduler} "
          f"guidance={prep.guidance} threads={threads} space={space.size() - 1} candidates "
          f"budget={budget.as_dict()} evals={'all' if args.exhaustive else args.evals}", file=sys.stderr)
    calib = evaluator(final, 1)
    planned = space.size() - 1 if args.exhaustive else sum(
        min(c, space.size() - 1) for _, c in rung_plan(args.evals, final, eta=args.eta, min_images=min_images))
    bar = tqdm(total=planned, desc="tuning", unit="eval", disable=args.quiet)

    def progress(r: dict) -> None:
        bar.update(1)
        bar.set_postfix_str(f"{r['speedup']:.2f}x {r['key'][:40]}")

    try:  # baseline images are generated when a candidate first needs them (a resumed run may need none)
        if args.exhaustive:
            res = exhaustive(space, calib.evaluate, budget, images=final, progress=progress)
        else:
            res = successive_halving(space, calib.evaluate, budget, evals=args.evals, final_images=final,
                                     min_images=min_images, eta=args.eta, seed=args.seed, progress=progress)
    except (AccelError, ValueError) as exc:
        bar.close()
        return fail(one_line(exc))
    bar.close()
    quality = "fd_pct" if budget.fd_pct is not None else "psnr"
    latest: dict[str, dict] = {}  # each candidate at the most images it was evaluated on
    for r in res.history:
        if r["key"] not in latest or r["n"] >= latest[r["key"]]["n"]:
            latest[r["key"]] = r
    pts = front(list(latest.values()), quality)
    inside = [r for r in res.finals if budget.meets(r)]
    # held-out re-measure: the front (fastest first) and the fastest inside the budget
    near = [r for r in pts if budget.meets(r, fd_slack=3.0, psnr_slack=1.0)]  # inside or near the budget
    picks = sorted(near, key=lambda r: -r["speedup"])[: args.front_max]
    if len(picks) < args.front_max:  # the front's best-quality points beyond it, so the table shows the trade-off
        picks += sorted((r for r in pts if r not in near), key=lambda r: budget.shortfall(r))[: args.front_max - len(picks)]
    for r in inside[:2]:
        if all(r["key"] != p["key"] for p in picks):
            picks.append(r)
    held: list[dict] = []
    if args.holdout_images:
        hold = evaluator(args.holdout_images, 0)
        for r in tqdm(picks, desc="held-out", unit="eval", disable=args.quiet):
            held.append(dict(hold.evaluate(Candidate.from_record(r["candidate"]), args.holdout_images),
                             calibration={k: r.get(k) for k in ("speedup", "psnr", "fd_pct", "n")}))
    final_pool = held if args.holdout_images else picks
    ok = sorted((r for r in final_pool if budget.meets(r)), key=lambda r: -r["speedup"])
    chosen = ok[0] if ok else None
    doc = {
        "budget": budget.as_dict(),
        "workload": {"model": prep.model_name, "steps": prep.steps, "scheduler": prep.scheduler,
                     "guidance": prep.guidance, "calibration_images": final, "holdout_images": args.holdout_images,
                     "seed": args.seed, "batch_size": args.batch_size, "threads": threads,
                     "device": str(prep.device), "pruned": list(args.pruned)},
        "search": {"strategy": "exhaustive" if args.exhaustive else "successive-halving+front-bisection", "eta": args.eta,
                   "space_size": space.size() - 1, "evaluations": res.evaluations,
                   "image_evaluations": res.image_evaluations, "new_evaluations": calib.evaluations},
        "chosen": None if chosen is None else {**chosen["candidate"], "key": chosen["key"],
                                               "holdout": {k: chosen.get(k) for k in ("speedup", "psnr", "fd", "fd_pct", "n")},
                                               "calibration": chosen.get("calibration")},
        "front": held or picks, "calibration_front": pts, "history": res.history,
        "notes": [], "meta": _meta(args, t0),
    }
    if args.holdout_images:
        doc["notes"].append(timing_note(args.batch_size, threads))
    out = write_tune_json(args.out, doc)
    _report(out, doc)
    print(f"\nfront ({'held-out' if held else 'calibration'} images; quality budget {budget.as_dict()}):")
    for r in sorted(final_pool, key=lambda r: r["speedup"]):
        mark = "*" if chosen is not None and r["key"] == chosen["key"] else " "
        print(f" {mark} {_row(r)}")
    print(f"search: {res.evaluations} evaluations ({res.image_evaluations} image-evaluations) of a "
          f"{space.size() - 1}-candidate space; wrote {out}")
    if chosen is None:
        print("accel tune: no candidate meets the budget "
              f"{budget.as_dict()} (see the front above); loosen the budget or add methods", file=sys.stderr)
        return 1
    print(f"chosen: {chosen['key']}  ->  accel bench --config {out}   /   "
          f"accel.apply(pipe, *accel.load_configs({str(out)!r}))")
    return 0


def _meta(args: argparse.Namespace, t0: float) -> dict:
    from accel.eval.provenance import run_meta

    return {**run_meta(getattr(args, "command_line", None)), "wall_s": time.perf_counter() - t0}


def _report(out: Path, doc: dict) -> None:
    """report.html next to the JSON: the front as a table and curves, the chosen config, the search."""
    from accel.eval.html_report import write_html_report
    from accel.outputs import atomic_path

    chosen = doc["chosen"]
    records = [{"method": ("* " if chosen and r["key"] == chosen["key"] else "") + r["key"],
                "speedup": r.get("speedup"), "psnr": r.get("psnr"), "fd": r.get("fd"),
                "num_images": r.get("n"), "config": r["candidate"]["methods"]} for r in doc["front"]]
    records.insert(0, {"method": "baseline", "speedup": 1.0, "psnr": float("inf")})
    sections = [("chosen config", json.dumps(chosen, indent=2) if chosen else "none inside the budget"),
                ("search", json.dumps({**doc["search"], "budget": doc["budget"], "workload": doc["workload"]}, indent=2))]
    with atomic_path(out.with_name("report.html")) as tmp:
        write_html_report(tmp, title=f"accel tune: {doc['workload']['model']}", records=records,
                          meta=doc["meta"], notes=doc["notes"], extra_sections=sections)
