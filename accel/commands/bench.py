"""`accel bench`: the paired benchmark (accel.eval) of the baseline and every requested method."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..argtypes import image_count, positive_int, repeat_count, repeat_count_or_zero, seed_int, step_count
from ._shared import add_pipeline_arguments, fail, settings_of

# defaults of the quick no-flag run and of --full (the table the docs cite); flags given explicitly win
QUICK = {"num_images": 72, "timing_images": 4, "batch_size": 24}
FULL = {"num_images": 200, "timing_images": 8, "batch_size": 100}


def quick_note(args: argparse.Namespace, steps: int) -> str:
    """The note of a run without --full: what the quick run is and how it differs from the docs' table."""
    from ..eval.prepare import BENCH_DEFAULT_STEPS, QUICK_STEPS

    note = (f"quick run ({args.num_images} images, {steps} steps): each FD change is shown with its paired noise; "
            f"`accel bench --full` gives the {FULL['num_images']}-image table the docs cite")
    if args.steps is None and steps == QUICK_STEPS:
        note += (f" (at {BENCH_DEFAULT_STEPS} steps there: a skipped step spans less of the sampling trajectory, "
                 "so the quality losses of caches are smaller than here)")
    return note


def resolve_run_size(args: argparse.Namespace) -> None:
    """Fill --num-images / --timing-images / --batch-size left unset from QUICK or (--full) FULL."""
    sizes = FULL if getattr(args, "full", False) else QUICK
    for name, value in sizes.items():
        if getattr(args, name, None) is None:
            setattr(args, name, value)


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "bench",
        help="paired quality/fidelity/speed/memory benchmark of acceleration methods",
        description=(
            "Run the baseline and every requested method on the same seeds and classes/prompts; "
            "write DIR/results.json, results.csv, pareto.png, grid.png and report.html. Several processes: "
            "`torchrun --nproc_per_node N -m accel.cli bench ...` or "
            "`accelerate launch --multi_gpu --num_processes N -m accel.cli bench ...` (on CPU add "
            "--device cpu); each rank generates whole batches, rank 0 gathers and writes."
        ),
    )
    add_pipeline_arguments(p)
    p.add_argument("--methods", default=None,
                   help="comma list: baseline,NAME[:key=val,...],A+B (stacked); default: baseline "
                        "plus every method of accel.methods() at default settings")
    p.add_argument("--config", action="append", default=None, metavar="FILE",
                   help="add the chosen config of an `accel tune` result (tune.json) as a row; repeatable")
    p.add_argument("--full", action="store_true",
                   help="the full table the docs cite: 200 images per method, 20 steps on the embedded default "
                        "model, 8 timing images (11 minutes on 2 CPU cores); without it a quick run: 72 images, "
                        "10 steps, 4 timing images (2.5 minutes of CPU time with --threads 1)")
    p.add_argument("--steps", type=step_count, default=None,
                   help="sampling steps (default on the embedded default model: 10, 20 with --full; its full "
                        "sampler uses 50; the flow model: its few-step sampler; 50 for other models)")
    p.add_argument("--num-images", type=image_count, default=None,
                   help=f"images per method and seed set (default {QUICK['num_images']}, {FULL['num_images']} "
                        "with --full)")
    p.add_argument("--seed", type=seed_int, default=0, help="first seed; image i gets seed+i")
    p.add_argument("--seed-sets", type=positive_int, default=1,
                   help="repeat over K disjoint seed sets and report FD's spread")
    p.add_argument("--out", default="bench-out", help="output directory (default ./bench-out)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace results.json, report.html, ... of an earlier run in --out (only those files)")
    p.add_argument("--batch-size", type=image_count, default=None,
                   help=f"images per pipeline call (default {QUICK['batch_size']}, {FULL['batch_size']} with --full)")
    p.add_argument("--repeats", type=repeat_count, default=3, help="timed repeats per method (default 3)")
    p.add_argument("--warmup", type=repeat_count_or_zero, default=1, help="untimed warm-up rounds (default 1)")
    p.add_argument("--timing-images", type=image_count, default=None,
                   help=f"images per timed call (default {QUICK['timing_images']}, {FULL['timing_images']} with "
                        "--full; timing uses this smaller batch)")
    p.add_argument("--no-fd", action="store_true", help="skip the Fréchet distance")
    p.add_argument("--lpips", action="store_true", help="also LPIPS, if its backend and weights are local")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--compile", nargs="?", const="regional", default=None, choices=("regional", "whole"),
                   help="torch.compile every row, the baseline too (accel.compile; regional by default): "
                        "adds compile seconds and recompiles on a second call to the results")
    p.add_argument("--compile-backend", default="inductor", metavar="NAME",
                   help="torch.compile backend of --compile (default inductor; eager / aot_eager only trace)")
    plain_help = p.format_help
    p.format_help = lambda: plain_help() + "\n" + methods_help()  # type: ignore[method-assign]
    p.set_defaults(func=run)


def methods_help() -> str:
    """Every registered method with its options and defaults (the `accel bench --help` epilog; read
    from the config dataclasses, so a new option appears here without editing this file)."""
    import dataclasses

    import accel

    lines = ["methods (--methods NAME:option=value,...; defaults shown; tuned settings marked *):"]
    for name, cls in sorted(accel.methods().items()):
        tun = getattr(cls, "tunable", {}) or {}
        opts = ", ".join(f"{f.name}={f.default!r}{'*' if f.name in tun else ''}" for f in dataclasses.fields(cls)
                         if f.init and f.default is not dataclasses.MISSING)
        lines.append(f"  {name}: {opts or '(no options)'}")
    lines.append("each option is explained in its config's docstring (accel.methods()[NAME]) and in README.md")
    return "\n".join(lines) + "\n"


def config_rows(paths: list[str], model: str) -> list[tuple[str, Any]]:
    """``(FILE, row)`` per ``--config FILE`` (an `accel tune` result): its chosen stack, labelled by its settings."""
    from ..eval.methods import BenchInputError, MethodSpec
    from ..tune.files import ConfigFileError, configs_from_choice, read_choice
    from ..tune.space import Candidate

    out = []
    for path in paths:
        try:
            choice = read_choice(path)
            configs = configs_from_choice(choice, path)
        except ConfigFileError as exc:
            raise BenchInputError(f"--config: {exc}") from None
        chosen_model = choice.get("model")
        if chosen_model and Path(chosen_model).resolve() != Path(model).resolve():
            raise BenchInputError(
                f"--config {path} was tuned on the pruned model {chosen_model}; run "
                f"`accel bench --model {chosen_model} --config {path}` (its baseline is then that folder)")
        label = "config:" + Candidate.from_record({"methods": choice["methods"]}).methods_key
        out.append((path, MethodSpec(label, [(m["name"], {}) for m in choice["methods"]], configs)))
    return out


def run(args: argparse.Namespace) -> int:
    """`accel bench`; returns the exit code (2 on bad input: one line on stderr, nothing written)."""
    from ..errors import AccelError
    from ..eval import report
    from ..eval.bench import BENCH_FILES, BenchSettings, run_bench, write_outputs
    from ..eval.compiled import CompileSetting
    from ..eval.methods import BenchInputError
    from ..eval.prepare import PrepareSettings, prepare
    from ..eval.runtime import distributed_state, pin_threads
    from ..outputs import check_dir_output

    try:
        check_dir_output(args.out, BENCH_FILES, overwrite=getattr(args, "overwrite", False))
        threads = pin_threads(args.threads)
        state = distributed_state(args.device)
        rows = config_rows(args.config or [], args.model)
        resolve_run_size(args)
        prep = prepare(settings_of(PrepareSettings, args, config_rows=rows, quick=not getattr(args, "full", False)),
                       state)
        mode = getattr(args, "compile", None)
        setting = CompileSetting(mode, getattr(args, "compile_backend", "inductor")) if mode else None
        if state.is_main_process:
            print(
                f"accel bench: model={prep.model_name} device={prep.device} threads={threads} "
                f"processes={state.num_processes} images={args.num_images} steps={prep.steps} seed={args.seed} "
                f"seed_sets={args.seed_sets} guidance={prep.guidance} "
                f"{'(--full)' if getattr(args, 'full', False) else '(quick run; --full for the 200-image table)'} "
                f"methods={', '.join(m.label for m in prep.methods)}",
                file=sys.stderr,
            )
        settings = settings_of(BenchSettings, args, **prep.bench_fields(), state=state, progress=not args.quiet,
                               command=getattr(args, "command_line", None), compile=setting)
        result = run_bench(prep.pipe, prep.methods, settings)
    except (BenchInputError, AccelError) as exc:
        return fail("bench", exc)
    if result is None:  # non-main process
        return 0
    result.notes[:0] = prep.notes + ([quick_note(args, prep.steps)] if not getattr(args, "full", False) else [])
    write_outputs(Path(args.out), result)
    print(report.format_table(result.records))
    for n in result.notes:
        print(f"note: {n}")
    print(f"peak memory: {result.meta.get('memory_kind') or 'unavailable'}; threads: {result.meta['threads']}; "
          f"wrote {args.out}/results.json, results.csv, pareto.png, grid.png, report.html")
    return 0
