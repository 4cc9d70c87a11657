"""`accel inspect MODEL`: which transformer(s) a model has and what accel can do with them, without running it."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ._shared import fail


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "inspect",
        help="which transformers a model has, whether accel supports them, which methods and presets apply",
        description=(
            "Read MODEL's model_index.json and transformer config.json (the transformer is built on the meta "
            "device: no weights loaded, no image generated, about a second) and print, per transformer: "
            "registered / auto-detected / unsupported, the blocks accel acts on, the methods that apply and "
            "where its presets were measured. MODEL: a pipeline folder, a transformer folder, a hub id already "
            "in the Hugging Face cache (never downloaded), or an embedded model (default, flow)."
        ),
    )
    p.add_argument("model", metavar="MODEL", help="pipeline folder, hub id in the local cache, 'default' or 'flow'")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """`accel inspect`; exit code 2 with one line on stderr when MODEL cannot be read."""
    from ..errors import AccelError
    from ..pipelines.inspect import format_report, inspect_model

    try:
        report = inspect_model(args.model)
    except (AccelError, OSError, ValueError) as exc:
        return fail("inspect", exc)
    if args.json:
        print(json.dumps(report.as_dict(), indent=1))
        return 0
    print(format_report(report))
    if any(t.support != "unsupported" for t in report.transformers):
        print(f"next: accel bench --model {report.name}  (or accel.apply(pipe, \"balanced\") in Python)")
    return 0
