"""`accel tune`: the fastest stack of methods inside a quality budget (the search: accel.tune.run)."""

from __future__ import annotations

import argparse
from typing import Any

from ..argtypes import (finite_float, image_count, image_count_or_zero, int_at_least, nonneg_float, positive_int,
                        seed_int, step_count)
from ._shared import add_pipeline_arguments


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


def run(args: argparse.Namespace) -> int:
    """`accel tune`; exit 0 with a config, 1 when none meets the budget, 2 on bad input."""
    from ..tune.run import tune_command

    return tune_command(args)
