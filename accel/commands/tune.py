"""`accel tune`: the fastest stack of methods inside a quality budget (the search: accel.tune.run); the flags,
messages, printing and exit codes are here, the library takes TuneSettings and raises typed errors."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..argtypes import (finite_float, image_count, image_count_or_zero, int_at_least, nonneg_float, positive_int,
                        seed_int, step_count)
from ._shared import add_pipeline_arguments, fail


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "tune",
        help="find the fastest stack of methods inside a quality budget (--budget-fd / --budget-psnr)",
        description=(
            "Successive halving over the joint space of every method's declared tunable settings (one "
            "block cache x one token method x optional --pruned models) on paired calibration images, "
            "then the front re-measured on held-out images; writes --out (tune.json) and report.html. "
            "Use the result with `accel bench --config tune.json` or "
            "`accel.apply(pipe, *accel.load_configs('tune.json'))`. Exit 1 when no candidate meets the budget."
        ),
    )
    add_pipeline_arguments(p)
    p.add_argument("--budget-fd", type=finite_float, default=None, metavar="PCT",
                   help="largest FD increase over the baseline, in percent (paired; needs an FD extractor)")
    p.add_argument("--budget-psnr", type=nonneg_float, default=None, metavar="DB",
                   help="smallest PSNR to the baseline's images, in dB")
    p.add_argument("--evals", type=positive_int, default=40,
                   help="search compute in full evaluations: EVALS x --calibration-images images in all, split "
                        "over the rungs (default 40)")
    p.add_argument("--methods", default=None,
                   help="comma list of methods to search over (default: every method that declares tunable "
                        "settings; see each config's `tunable`)")
    p.add_argument("--pruned", action="append", default=[], metavar="DIR",
                   help="a pruned pipeline folder (`accel prune` / `accel distill`) to search as a variant of "
                        "the model; repeatable")
    p.add_argument("--steps", type=step_count, default=None, help="sampling steps (default: as accel bench)")
    p.add_argument("--calibration-images", type=image_count, default=None,
                   help="images of the last search rung (default 192 with --budget-fd, 64 without)")
    p.add_argument("--holdout-images", type=image_count_or_zero, default=200,
                   help="held-out images the front is re-measured on (default 200; 0 = skip)")
    p.add_argument("--front-max", type=positive_int, default=8, help="front candidates re-measured on held-out images")
    p.add_argument("--eta", type=int_at_least(2), default=3, help="successive halving: keep 1/eta per rung (default 3)")
    p.add_argument("--exhaustive", action="store_true",
                   help="evaluate the whole grid on the calibration images instead of searching")
    p.add_argument("--batch-size", type=image_count, default=32, help="images per pipeline call (default 32)")
    p.add_argument("--seed", type=seed_int, default=0, help="first seed (calibration and held-out sets are disjoint)")
    p.add_argument("--out", default="tune.json", help="output JSON (report.html is written next to it)")
    p.add_argument("--overwrite", action="store_true", help="replace --out and the report.html next to it")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the evaluation cache")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def settings(args: argparse.Namespace) -> Any:
    """The typed settings of the parsed flags (accel.tune.run.TuneSettings)."""
    from ..tune.run import TuneSettings
    from ._shared import prepare_settings

    names = [n.strip() for n in args.methods.split(",")] if args.methods is not None else None
    return TuneSettings(
        prepare_settings(args), budget_fd=args.budget_fd, budget_psnr=args.budget_psnr, evals=args.evals,
        methods=names, pruned=list(args.pruned), calibration_images=args.calibration_images,
        holdout_images=args.holdout_images, front_max=args.front_max, eta=args.eta, exhaustive=args.exhaustive,
        batch_size=args.batch_size, seed=args.seed, out=args.out, overwrite=args.overwrite, cache=not args.no_cache,
        progress=not args.quiet, command=getattr(args, "command_line", None))


def _row(r: dict) -> str:
    fd = "" if r.get("fd_pct") is None else f"{r['fd_pct']:+7.1f}%"
    psnr = "inf" if r.get("psnr") is None else f"{r['psnr']:.1f}"
    return f"{r['speedup']:6.2f}x  {psnr:>6} dB  {fd:>8}  n={r['n']:<4} {r['key']}"


def run(args: argparse.Namespace) -> int:
    """`accel tune`; exit 0 with a config, 1 when none meets the budget, 2 on bad input."""
    from tqdm.auto import tqdm

    from ..errors import AccelError
    from ..eval.methods import BenchInputError
    from ..tune.run import planned_evaluations, run_tune, setup_tune

    if args.budget_fd is None and args.budget_psnr is None:
        return fail("tune", "give a quality budget: --budget-fd PCT and/or --budget-psnr DB")
    try:
        setup = setup_tune(settings(args))
    except (BenchInputError, AccelError, ValueError) as exc:
        return fail("tune", exc)
    prep, budget = setup.prep, setup.budget
    print(f"accel tune: model={prep.model_name} steps={prep.steps} scheduler={prep.scheduler} "
          f"guidance={prep.guidance} threads={setup.threads} space={setup.space.size() - 1} candidates "
          f"budget={budget.as_dict()} evals={'all' if args.exhaustive else args.evals}", file=sys.stderr)
    bar = tqdm(total=planned_evaluations(setup), desc="tuning", unit="eval", disable=args.quiet)

    def progress(r: dict) -> None:
        bar.update(1)
        bar.set_postfix_str(f"{r['speedup']:.2f}x {r['key'][:40]}")

    try:
        outcome = run_tune(setup, progress, notify=lambda m: tqdm.write(f"accel tune: note: {m}", file=sys.stderr))
    except (AccelError, ValueError) as exc:
        return fail("tune", exc)
    finally:
        bar.close()
    chosen, out = outcome.chosen, outcome.out
    print(f"\nfront ({'held-out' if outcome.held else 'calibration'} images; quality budget {budget.as_dict()}):")
    for r in sorted(outcome.final_pool, key=lambda r: r["speedup"]):
        mark = "*" if chosen is not None and r["key"] == chosen["key"] else " "
        print(f" {mark} {_row(r)}")
    res = outcome.search
    print(f"search: {res.evaluations} evaluations ({res.image_evaluations} image-evaluations) of a "
          f"{setup.space.size() - 1}-candidate space; wrote {out}")
    if chosen is None:
        print("accel tune: no candidate meets the budget "
              f"{budget.as_dict()} (see the front above); loosen the budget or add methods", file=sys.stderr)
        return 1
    print(f"chosen: {chosen['key']}  ->  accel bench --config {out}   /   "
          f"accel.apply(pipe, *accel.load_configs({str(out)!r}))")
    return 0

