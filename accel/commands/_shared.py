"""What several subcommands share: the pipeline flags (`accel bench`, `accel tune`), loading `--model`
for a command, and the one error line."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import torch

from ..argtypes import nonneg_float, positive_int, thread_count
from ..errors import InputError, SettingError, one_line


MODEL_HELP = ("'default' (embedded digits DiT), 'flow' (embedded text-to-digits SD3 MMDiT), a local pipeline "
              "folder or hub id")


def add_model_argument(p: argparse.ArgumentParser, flag: str = "--model") -> None:
    """The model flag every command takes (`accel distill` calls it --teacher): any model load_model reads."""
    p.add_argument(flag, default="default", help=MODEL_HELP)


def add_pipeline_arguments(p: argparse.ArgumentParser) -> None:
    """The model, sampler, device and prompt flags that `accel bench` and `accel tune` share."""
    add_model_argument(p)
    p.add_argument("--scheduler", default=None, help="ddim, dpm++, ddpm or euler (default: the model's)")
    p.add_argument("--guidance", type=nonneg_float, default=None, help="guidance scale (default: the model's)")
    p.add_argument("--threads", type=thread_count, default=None,
                   help="torch.set_num_threads, at most the CPU cores (default: torch's)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--dtype", default="float32", help="float32 (default), float16, bfloat16")
    p.add_argument("--inception-weights", default=None, metavar="PATH",
                   help="local FID Inception-v3 weights: Inception FID vs the baseline (needs torch-fidelity)")
    p.add_argument("--features", default=None, metavar="MODULE:FACTORY",
                   help="custom feature extractor factory (module exposing num_features): FD vs the baseline")
    p.add_argument("--reference-images", default=None, metavar="DIR",
                   help="FD against a folder of real images instead of the baseline (statistics cached "
                        "in $ACCEL_CACHE_DIR or ~/.cache/accel, keyed by extractor + image data)")
    p.add_argument("--prompts", default=None, metavar="FILE",
                   help="text-to-image prompts: .txt (one per line), .csv/.tsv with a header, .json/.jsonl "
                        "(COCO captions, PartiPrompts); cycled over the images")
    p.add_argument("--prompt-column", default=None, metavar="NAME",
                   help="caption column of a CSV/TSV/JSON prompt file (default: caption, prompt or text)")
    p.add_argument("--height", type=positive_int, default=None, help="image height (default: the pipeline's)")
    p.add_argument("--width", type=positive_int, default=None, help="image width (default: the pipeline's)")
    p.add_argument("--num-frames", type=positive_int, default=None,
                   help="frames per video of a video pipeline (default: the pipeline's)")
    p.add_argument("--negative-prompt", default=None, help="negative prompt of every image")
    p.add_argument("--pipeline-kwargs", default=None, metavar="JSON",
                   help="JSON object merged into every pipeline call, e.g. '{\"max_sequence_length\": 120}'")


def settings_of(cls: type, args: argparse.Namespace, **overrides: Any) -> Any:
    """A library settings dataclass `cls` from the parsed flags of the same names (others ignored);
    `overrides` give or replace fields."""
    import dataclasses

    names = {f.name for f in dataclasses.fields(cls) if f.init}
    return cls(**{**{k: v for k, v in vars(args).items() if k in names}, **overrides})


def prepare_settings(args: argparse.Namespace, **overrides: Any) -> Any:
    """The pipeline settings (accel.eval.prepare.PrepareSettings) of the parsed flags of the same names."""
    from ..eval.prepare import PrepareSettings

    return settings_of(PrepareSettings, args, **overrides)


def flag_line(exc: BaseException, flags: dict[str, str] | None = None) -> str:
    """An error as one line; a SettingError names the flag of its setting (``flags[setting]``, else
    ``--`` + the setting with dashes: num_images -> --num-images; a setting that is not a name, as it is)."""
    if isinstance(exc, SettingError):
        import re

        def flag(name: str) -> str:
            return (flags or {}).get(name) or ("--" + name.replace("_", "-") if name.isidentifier() else name)

        detail = exc.detail
        for name in exc.also:  # the other settings it names, as whole words (not a part of a path)
            detail = re.sub(rf"(?<![\w/.-]){re.escape(name)}(?![\w/.-])", flag(name), detail)
        if not exc.setting:
            return " ".join(detail.split())
        return " ".join(f"{flag(exc.setting)}{'' if detail.startswith(':') else ' '}{detail}".split())
    return one_line(exc)


def fail(command: str, exc: BaseException | str, flags: dict[str, str] | None = None) -> int:
    """Print ``accel COMMAND: error: <one line>`` on stderr (a setting named by its flag, see `flag_line`);
    the exit code of bad input (2)."""
    text = exc if isinstance(exc, str) else flag_line(exc, flags)
    print(f"accel {command}: error: {text}", file=sys.stderr)
    return 2


def load_source(model: str, device: Any = "cpu", dtype: torch.dtype = torch.float32, flag: str = "--model") -> Any:
    """`accel.pipelines.load_model` for a command: the LoadedModel, or an InputError naming `flag`.
    diffusers' loading bars are hidden, so the command's stderr stays its own."""
    from ..pipelines import load_model

    try:
        return load_model(model, device=device, dtype=dtype, progress_bars=False)
    except (ValueError, OSError, KeyError, TypeError, AttributeError) as exc:
        kind = f"{type(exc).__name__}: " if isinstance(exc, (KeyError, TypeError, AttributeError)) else ""
        raise InputError(f"{flag} {model}: {kind}{exc}") from None
