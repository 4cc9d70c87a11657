"""Shared pieces of the demo scripts (demo_preset.py, demo_end_to_end.py, reproduce_readme.py).

Loading goes through accel's one loader (`accel.pipelines.load_model`; `accel.testing` for tiny
models); timing, fidelity and provenance through `accel.eval`. What is here is only what a demo adds on top: one paired image source for
every kind of model, a labelled side-by-side grid PNG, strict JSON and the one-line error.
"""

from __future__ import annotations

import json
import math
import os
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

TINY_STEPS = 8  # tiny random-init pipelines: enough steps for caches to have something to skip
DEFAULT_MODEL_STEPS = 20  # the embedded model at `accel bench`'s default
OTHER_MODEL_STEPS = 28  # a real checkpoint (a common default of SD3 / Flux samplers)


class DemoInputError(ValueError):
    """Bad input to a demo script: one line on stderr, exit code 2."""


def fail(prog: str, exc: BaseException | str) -> int:
    """Print `prog: error: <one line>` on stderr and return exit code 2."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    print(f"{prog}: error: {text}", file=sys.stderr)
    return 2


def input_errors() -> tuple[type[BaseException], ...]:
    """Exception types that mean bad user input (accel's own errors, bench input errors, ours)."""
    from accel.errors import AccelError
    from accel.eval.methods import BenchInputError

    return (DemoInputError, AccelError, BenchInputError)


def run_cli(prog: str, parser: Any, run: Any, argv: list[str] | None) -> tuple[int | None, Any]:
    """Parse ``argv`` with one-line errors (exit 2) and call ``run(args)``: ``(exit code, None)`` when
    parsing or the run failed (or --help), else ``(None, run's result)``. ``args.argv`` is the argv."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser.error = lambda message: sys.exit(fail(prog, message))
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a bad flag (2, one line already printed)
        return int(exc.code or 0), None
    args.argv = argv
    try:
        return None, (args, run(args))
    except input_errors() as exc:
        return fail(prog, exc), None


# ----------------------------------------------------------------------------- models and images
@dataclass
class DemoModel:
    """A pipeline and how to make paired images with it."""

    pipe: Any
    name: str  # "tiny-pixart", "default", or the --model path
    kind: str  # "tiny" | "digits" | "pipeline"
    family: str | None = None  # tiny models only
    digits: bool = False  # FD-digits applies
    prompts: list[str] = field(default_factory=list)


def resolve_device(name: str) -> torch.device:
    from accel.eval.runtime import resolve_device as _resolve

    return _resolve(name)


def parse_dtype(name: str) -> torch.dtype:
    from accel.eval.runtime import parse_dtype as _parse

    return _parse(name)


def load_model(model: str | None, family: str = "pixart", device: Any = "cpu",
               dtype: torch.dtype = torch.float32, num_layers: int = 3) -> DemoModel:
    """`None` -> a tiny random-init stock pipeline of `family` (accel.testing); `"default"` -> the
    embedded digits model; a folder pruned/distilled from it -> that digits model; anything else ->
    a pipeline folder or cached hub id: `accel.pipelines.load_model`, the loader every accel command uses
    (local files only; its ModelNotFoundError / UnsupportedModelError say how to bring weights over)."""
    from accel.errors import AccelError

    if model is None:
        from accel.testing import FAMILIES, tiny_pipeline

        if family not in FAMILIES:
            raise DemoInputError(f"--family {family!r}: choose one of {', '.join(FAMILIES)}")
        pipe = tiny_pipeline(family, num_layers=num_layers).to(device)
        if dtype != torch.float32:
            pipe = pipe.to(dtype=dtype)
        return DemoModel(pipe, f"tiny-{family}", "tiny", family=family)
    from accel.pipelines import load_model as load

    try:
        loaded = load(model, device=device, dtype=dtype)
    except AccelError:
        raise  # ModelNotFoundError / UnsupportedModelError: their messages say what to do
    except (ValueError, OSError) as exc:
        raise DemoInputError(f"--model {model!r} could not be loaded: {exc}") from None
    if loaded.digits:
        return DemoModel(loaded.pipe, model, "digits", digits=True)
    if hasattr(loaded.pipe, "set_progress_bar_config"):
        loaded.pipe.set_progress_bar_config(disable=True)
    return DemoModel(loaded.pipe, model, "pipeline")


def default_steps(m: DemoModel) -> int:
    return {"tiny": TINY_STEPS, "digits": DEFAULT_MODEL_STEPS}.get(m.kind, OTHER_MODEL_STEPS)


def to_nchw(images: Any) -> torch.Tensor:
    """Pipeline images (tensor NCHW/NHWC, numpy NHWC or PIL list) -> float (N, C, H, W) in [0, 1] on the CPU."""
    import numpy as np

    if isinstance(images, list):
        images = np.stack([np.asarray(im, dtype=np.float32) / 255.0 for im in images])
    if isinstance(images, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
        x = x[..., None] if x.ndim == 3 else x
        x = x.permute(0, 3, 1, 2)
    else:
        x = torch.as_tensor(images).detach().float().cpu()
        if x.ndim == 4 and x.shape[1] not in (1, 3, 4) and x.shape[-1] in (1, 3, 4):
            x = x.permute(0, 3, 1, 2)
    return x.contiguous().clamp(0, 1)


class PairedImages:
    """Image i always gets the same seed and condition, whatever is applied to the pipeline.

    Tiny pipelines have no text encoders: they are called with `accel.testing.pipeline_inputs`
    (fixed embeddings), one generator per batch. Every other pipeline goes through
    `accel.eval.workload` (`accel bench`'s seeds, classes 0..9 / prompts cycled, one generator per image).
    """

    def __init__(self, m: DemoModel, num_images: int, steps: int, seed: int = 0, batch_size: int = 8,
                 guidance: float | None = None, prompts: Sequence[str] | None = None,
                 extra_kwargs: dict | None = None):
        if num_images < 1:
            raise DemoInputError(f"--num-images must be >= 1, got {num_images}")
        if steps < 1:
            raise DemoInputError(f"--steps must be >= 1, got {steps}")
        if batch_size < 1:
            raise DemoInputError(f"--batch-size must be >= 1, got {batch_size}")
        self.m, self.num_images, self.steps, self.seed, self.batch_size = m, num_images, steps, seed, batch_size
        self.workload = None
        if m.kind != "tiny":
            from accel.eval.workload import make_workload

            if m.digits and guidance is None:
                from accel.models import DEFAULT_SAMPLER

                guidance = DEFAULT_SAMPLER["guidance_scale"]
            self.workload = make_workload(m.pipe, num_images, seed, steps, guidance=guidance, batch_size=batch_size,
                                          num_classes=10 if m.digits else None, prompts=prompts,
                                          extra_kwargs=extra_kwargs)

    def batches(self, limit: int | None = None) -> list[list[int]]:
        n = self.num_images if limit is None else min(limit, self.num_images)
        return [list(range(i, min(i + self.batch_size, n))) for i in range(0, n, self.batch_size)]

    def generate(self, pipe: Any, indices: Sequence[int]) -> torch.Tensor:
        """Images (len(indices), C, H, W) in [0, 1] for these image indices."""
        if self.workload is not None:
            from accel.eval.workload import generate

            return generate(pipe, self.workload, indices)
        from accel.testing import pipeline_inputs

        # one generator per batch: the batch is identified by its first index
        kw = pipeline_inputs(self.m.family, batch=len(indices), steps=self.steps, seed=self.seed + indices[0])
        with torch.inference_mode():
            out = pipe(**kw)
        return to_nchw(out.images if hasattr(out, "images") else out[0])

    def generate_all(self, pipe: Any, limit: int | None = None, bar: Any = None) -> torch.Tensor:
        out = []
        for idx in self.batches(limit):
            out.append(self.generate(pipe, idx))
            if bar is not None:
                bar.update(len(idx))
        return torch.cat(out)


def prepare_configs(configs: Sequence[Any], pipe: Any, run: Callable[[], Any]) -> None:
    """Each config's one-off `prepare(pipe, run)` (e.g. schedule-cache's calibration), as `accel bench` does."""
    for cfg in configs:
        prep = getattr(cfg, "prepare", None)
        if callable(prep):
            prep(pipe, run)


# ----------------------------------------------------------------------------- metrics and timing
def psnr_to(images: torch.Tensor, reference: torch.Tensor) -> float:
    """PSNR in dB of a set to the baseline's images of the same seeds (inf when identical)."""
    from accel.eval.fidelity import psnr

    return psnr(images, reference)


def timed_call(pipe: Any, configs: Sequence[Any], fn: Callable[[], Any], device: Any = "cpu",
               stats: list | None = None) -> float:
    """Seconds of `fn()` with `configs` applied to `pipe` through one `accel.apply` (none: the baseline).

    Applying and removing happen outside the timed region; `stats` collects the handle's block counts."""
    import accel
    from accel.eval.timing import timed

    handle = accel.apply(pipe, *configs) if configs else None
    try:
        _, secs = timed(fn, device)
        if handle is not None and stats is not None:
            stats.append(handle.stats().get("total", {}))
    finally:
        if handle is not None:
            handle.remove()
    return secs


def block_work(stats: dict) -> dict:
    """Block evaluations of a handle's calls and the token methods' FLOPs ratio inside them (as `accel bench`)."""
    total = stats.get("total", {})
    ratio = None
    for section in stats.values():
        sub = section.get("total") if isinstance(section, dict) else None
        if isinstance(sub, dict) and sub.get("flops_full"):
            ratio = (1.0 if ratio is None else ratio) * sub["flops"] / sub["flops_full"]
    return {"block_evals": total.get("block_evals"), "block_total": total.get("block_total"), "flops_ratio": ratio}


def check_applies(pipe: Any, configs: Sequence[Any], label: str) -> None:
    """Apply and remove once, so a stack this pipeline refuses is bad input before any image is made."""
    import accel

    try:
        accel.apply(pipe, *configs).remove()
    except (ValueError, TypeError, NotImplementedError) as exc:  # AccelErrors are ValueErrors / RuntimeErrors
        raise DemoInputError(f"{label} cannot be applied to this pipeline: {exc}") from None


def time_side_by_side(runs: dict[str, Callable[[], float]], repeats: int = 3, warmup: int = 1,
                      progress: bool = True) -> dict[str, dict[str, Any]]:
    """Interleaved, warmed-up repeats of every run (`accel.eval.timing.interleaved`; each run returns its
    seconds); per name: median seconds, spread, speedup vs the first name (ratio of medians) and the
    spread of the per-round paired ratios."""
    from tqdm.auto import tqdm

    from accel.eval.timing import interleaved, speedup

    bar = tqdm(total=(warmup + repeats) * len(runs), desc="timing", unit="call", disable=not progress)

    def run(name: str) -> float:
        secs = runs[name]()
        bar.update(1)
        return secs

    try:
        timings = interleaved(list(runs), run, repeats=repeats, warmup=warmup)
    finally:
        bar.close()
    base = timings[next(iter(runs))]
    out = {}
    for name, t in timings.items():
        sp, spread = speedup(base, t)
        out[name] = {"median_s": t.median, "spread_s": t.spread, "speedup": sp, "speedup_spread": spread,
                     "times_s": list(t.times)}
    return out


def machine_load() -> dict[str, Any]:
    """Load averages and CPU count, recorded next to every timing (the machine may be shared)."""
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return {"cpus": os.cpu_count()}
    return {"loadavg_1m": round(one, 2), "loadavg_5m": round(five, 2), "loadavg_15m": round(fifteen, 2),
            "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads()}


# ----------------------------------------------------------------------------- files
def write_json(path: Path, doc: dict) -> list[str]:
    """Strict JSON (non-finite floats -> null; returns where that happened), via accel.eval.provenance."""
    from accel.eval.provenance import strict_json

    clean, replaced = strict_json(doc)
    if replaced:
        clean.setdefault("notes", []).append("null = not finite: " + ", ".join(replaced))
    path.write_text(json.dumps(clean, indent=2, allow_nan=False) + "\n")
    return replaced


GRID_PAD = 4
GRID_HEADER = 30  # two lines of PIL's default font


def grid_cell(height: int, width: int, min_cell: int = 128) -> tuple[int, int, int]:
    """(scale, cell height, cell width): images are upscaled by an integer factor to >= min_cell px."""
    scale = max(1, math.ceil(min_cell / max(height, width)))
    return scale, height * scale, width * scale


def grid_size(columns: int, rows: int, height: int, width: int, min_cell: int = 128) -> tuple[int, int]:
    """(width, height) in pixels of :func:`save_grid`'s PNG."""
    _, ch, cw = grid_cell(height, width, min_cell)
    return columns * cw + (columns + 1) * GRID_PAD, GRID_HEADER + rows * ch + (rows + 1) * GRID_PAD


def save_grid(path: Path, columns: dict[str, torch.Tensor], min_cell: int = 128) -> tuple[int, int]:
    """One labelled column per variant, the same seed in the same row; returns the PNG's (width, height).

    Images are (N, C, H, W) in [0, 1], upscaled by nearest neighbour so that tiny models stay visible.
    """
    from PIL import Image, ImageDraw

    tensors = list(columns.values())
    n, c, h, w = tensors[0].shape
    if any(t.shape != tensors[0].shape for t in tensors):
        raise ValueError(f"grid columns differ in shape: {[tuple(t.shape) for t in tensors]}")
    scale, ch, cw = grid_cell(h, w, min_cell)
    size = grid_size(len(columns), n, h, w, min_cell)
    canvas = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(canvas)
    for j, (label, imgs) in enumerate(columns.items()):
        x = GRID_PAD + j * (cw + GRID_PAD)
        lines = textwrap.wrap(label, max(4, cw // 6)) or [""]
        if len(lines) > 2:
            lines = [lines[0], lines[1][: max(1, cw // 6 - 3)] + "..."]
        for k, line in enumerate(lines):
            draw.text((x, 3 + 12 * k), line, fill="black")
        for i in range(n):
            im = imgs[i, :3] if c >= 3 else imgs[i, :1].expand(3, h, w)
            arr = (im.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype("uint8")
            tile = Image.fromarray(arr, "RGB").resize((cw, ch), Image.NEAREST)
            canvas.paste(tile, (x, GRID_HEADER + GRID_PAD + i * (ch + GRID_PAD)))
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return size


def format_table(head: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain fixed-width text table."""
    cells = [[str(x) for x in head]] + [[str(x) for x in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(head))]
    line = lambda r: "  ".join(x.ljust(w) for x, w in zip(r, widths)).rstrip()  # noqa: E731
    return "\n".join([line(cells[0]), line(["-" * w for w in widths])] + [line(r) for r in cells[1:]])


def fmt(x: Any, spec: str = ".2f") -> str:
    if x is None:
        return "-"
    if isinstance(x, float) and math.isinf(x):
        return "inf"
    if isinstance(x, float) and math.isnan(x):
        return "nan"
    return format(x, spec) if isinstance(x, (int, float)) else str(x)
