"""`accel bench`: paired quality / fidelity / speed / memory comparison of methods.

One run = one pipeline, one workload (seeds + classes/prompts), the baseline and every
requested method on exactly those seeds. Per method:

* quality: Fréchet distance of its images' features to reference statistics (FD-digits
  for the embedded default model, Inception FID with user-supplied weights, or a custom
  extractor), via torchmetrics, checked against ``accel.eval.fid``; with
  ``seed_sets=K`` repeated over K disjoint seed sets and the spread reported;
* fidelity: PSNR / SSIM (optionally LPIPS) against the baseline images of the same seeds;
* speed: interleaved, warmed-up repeats on a (smaller) timing batch; median time, the
  ratio to the baseline, and the block evaluations of those same timed calls;
* memory: peak per method (CUDA allocator or the CPU high-water mark, see memory.py).

Generation for quality/fidelity can be sharded over processes (``accelerate``'s
``PartialState``; whole batches per rank, per-image results gathered on rank 0).
Timing runs on rank 0 only, while the other ranks wait.

The command itself (flags, output checks, the printed table) is accel/commands/bench.py.
Modules: methods.py (``--methods``), prepare.py (settings -> model, workload, extractor),
runtime.py (processes, device), paired.py (generation and timing), records.py (results),
report.py (files and table). Methods are looked up through ``accel.methods()`` and applied
with ``accel.apply``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from ..bounds import MAX_IMAGES, check_memory
from ..errors import one_line
from . import fid as fidmod
from .compiled import CompileSetting, compile_fields, compile_note, compiled_apply, measure_compile
from .fidelity import try_lpips
from .memory import memory_kind
from .methods import BenchInputError, BenchSettingError, MethodSpec
from .paired import generate_paired, time_methods
from .provenance import package_versions, run_meta
from .records import build_records
from .runtime import SingleProcess
from .workload import generate, make_workload


@dataclass
class BenchResult:
    records: list[dict]
    grid: dict[str, torch.Tensor]  # label -> (G, C, H, W)
    notes: list[str]
    meta: dict


def apply_spec(pipe: Any, spec: MethodSpec) -> Any:
    """``accel.apply(pipe, *spec.configs)``: the baseline gets the counters only."""
    import accel

    return accel.apply(pipe, *spec.configs)


def check_applicable(pipe: Any, methods: Sequence[MethodSpec]) -> tuple[list[MethodSpec], list[str]]:
    """Apply and remove every spec once, so that conflicts surface before any image is made.

    Returns (methods to run, notes): a method the pipeline's model cannot run (its family's or the
    pipeline's reason, `UnsupportedMethodError`, e.g. token methods on Qwen-Image) is left out and
    listed as skipped; any other failure is bad input."""
    from accel.errors import AccelError, UnsupportedMethodError

    kept, notes = [], []
    for m in methods:
        try:
            apply_spec(pipe, m).remove()
        except UnsupportedMethodError as exc:
            notes.append(f"{m.label} skipped: {one_line(exc)}")
            continue
        except (AccelError, ValueError, TypeError, NotImplementedError) as exc:
            raise BenchInputError(f"method {m.label!r} cannot be applied to this pipeline: {exc}") from None
        kept.append(m)
    return kept, notes


def _check_run(methods: Sequence[MethodSpec], num_images: int, seed_sets: int, extractor) -> None:
    if not methods or not methods[0].is_baseline:
        raise ValueError("methods[0] must be the baseline")
    if seed_sets < 1:
        raise BenchSettingError("seed_sets", f"must be >= 1, got {seed_sets}")
    check_total_images(num_images, seed_sets)
    if extractor is not None and num_images < fidmod.min_images_for_fd(extractor.num_features):
        raise BenchSettingError(
            "num_images", f"{num_images} is too few for a stable covariance of {extractor.num_features}-dim "
            f"features: at least {fidmod.min_images_for_fd(extractor.num_features)} images are required "
            "(several times more for a low-noise FD), or measure no FD (`accel bench --no-fd`)"
        )


def check_total_images(num_images: int, seed_sets: int) -> None:
    """SettingError when the images of all seed sets (per method) exceed accel.bounds.MAX_IMAGES."""
    if num_images * seed_sets > MAX_IMAGES:
        raise BenchSettingError("num_images", f"{num_images} x {seed_sets} seed sets = {num_images * seed_sets:,} images "
                                         f"per method is more than the limit of {MAX_IMAGES:,}")


def probe_call(pipe: Any, workload: Any) -> torch.Tensor:
    """One image with the run's call kwargs, so that a call the pipeline rejects (e.g. a height
    it cannot take) is bad input before any method runs; returns it (a video: (1, F, C, H, W))."""
    try:
        return generate(pipe, workload, [0])
    except (ValueError, TypeError, RuntimeError) as exc:  # RuntimeError: e.g. a size the model cannot take
        raise BenchInputError(f"{type(pipe).__name__} rejected the call: {exc}") from None


def prepare_methods(pipe: Any, methods: Sequence[MethodSpec], workload: Any, indices: list[int], state: Any) -> str | None:
    """Each config's one-off ``prepare(pipe, run)`` (e.g. a calibration); ``run()`` is one call on
    ``workload`` (seeds disjoint from the measured ones) with nothing applied. Rank 0 goes first, so
    that what it stores on disk is there for the other ranks. Returns a note if any call was made."""
    from accel.errors import AccelError

    calls = []

    def run() -> Any:
        calls.append(1)
        return generate(pipe, workload, indices)

    for turn in (True, False):
        if state.is_main_process == turn:
            for m in methods:
                for cfg in m.configs:
                    try:
                        getattr(cfg, "prepare", lambda pipe, run: None)(pipe, run)
                    except (AccelError, ValueError, TypeError) as exc:
                        raise BenchInputError(f"method {m.label!r} could not be prepared: {exc}") from None
        if turn:
            state.wait_for_everyone()
    seeds = [workload.seeds[i] for i in indices]
    return (f"method preparation (calibration): {len(calls)} call(s) of {len(indices)} image(s) on seeds "
            f"{seeds[0]}..{seeds[-1]}, disjoint from the measured ones, before anything was measured") if calls else None


def _timing_note(t_imgs: int, num_images: int, repeats: int, warmup: int, seeds: list[int]) -> str:
    return (
        f"timing: {repeats} interleaved repeats after {warmup} warm-up round(s) on one batch of {t_imgs} "
        f"image(s) (seeds {seeds[0]}..{seeds[t_imgs - 1]}) of the {num_images} used for quality; "
        "block_evals, block_total and ideal_speedup are per timed call, so they describe the timed work"
    )


def run_bar(workloads: Sequence[Any], methods: Sequence[MethodSpec], t_imgs: int, repeats: int, warmup: int,
            state: Any, progress: bool) -> Any:
    """One progress bar over the whole run, in images (generated for quality, then timed), with its ETA."""
    from tqdm.auto import tqdm

    rank, world = state.process_index, state.num_processes
    generated = sum(len(i) for w in workloads for i in w.batches(rank, world)) * len(methods)
    timed = (warmup + repeats) * len(methods) * t_imgs if state.is_main_process else 0
    return tqdm(total=generated + timed, desc="accel bench", unit="img", disable=not (progress and state.is_main_process))


@dataclass
class BenchSettings:
    """What one bench run measures and how (`run_bench`).

    ``extractor`` maps images (N, C, H, W) in [0, 1] to features (N, D) and exposes
    ``num_features``. With ``reference_stats=(μ, Σ)`` the FD is to those statistics;
    without, to the baseline's images of the same seeds ("vs baseline"). No extractor:
    no FD. ``call_kwargs`` go into every pipeline call (height, width, negative_prompt, ...).
    ``compile``: every row (baseline included) compiled that way after its method is applied
    (compiled.py); the records gain compile_s, recompiles and graph_breaks.
    """

    num_images: int
    steps: int
    seed: int = 0
    guidance: float | None = None
    batch_size: int = 50
    seed_sets: int = 1
    repeats: int = 3
    warmup: int = 1
    timing_images: int | None = None
    extractor: torch.nn.Module | None = None
    reference_stats: tuple[torch.Tensor, torch.Tensor] | None = None
    fd_name: str | None = None
    device: str | torch.device = "cpu"
    state: Any = None  # accelerate's PartialState with several processes; None: this one
    num_classes: int | None = None
    prompts: Sequence[str] | None = None
    call_kwargs: dict | None = None
    lpips: bool = False
    grid_cols: int = 8
    progress: bool = True
    meta: dict | None = None
    command: Sequence[str] | None = None
    compile: CompileSetting | None = None


def run_bench(pipe: Any, methods: Sequence[MethodSpec], settings: BenchSettings | None = None,
              **fields: Any) -> BenchResult | None:
    """Run the paired benchmark; returns the result on the main process, None elsewhere.

    `settings` (:class:`BenchSettings`), or its fields as keywords (which also replace fields of `settings`).
    """
    import dataclasses

    s = BenchSettings(**fields) if settings is None else dataclasses.replace(settings, **fields)
    num_images, steps, seed, guidance, batch_size = s.num_images, s.steps, s.seed, s.guidance, s.batch_size
    seed_sets, repeats, warmup, timing_images = s.seed_sets, s.repeats, s.warmup, s.timing_images
    extractor, reference_stats, fd_name, device = s.extractor, s.reference_stats, s.fd_name, s.device
    num_classes, prompts, call_kwargs, lpips = s.num_classes, s.prompts, s.call_kwargs, s.lpips
    grid_cols, progress, meta, command, compile = s.grid_cols, s.progress, s.meta, s.command, s.compile  # noqa: A001
    state, methods, notes = s.state or SingleProcess(), list(methods), []
    provenance = run_meta(command)  # the code as it was when the run started
    _check_run(methods, num_images, seed_sets, extractor)
    methods, skipped = check_applicable(pipe, methods)
    notes += skipped
    lpips_metric, why = try_lpips(device) if lpips else (None, None)
    notes += [why] if why else []
    if hasattr(pipe, "set_progress_bar_config"):
        pipe.set_progress_bar_config(disable=True)
    workloads = [
        make_workload(pipe, num_images, seed, steps, guidance=guidance, batch_size=batch_size, seed_set=k,
                      num_classes=num_classes, prompts=prompts, extra_kwargs=call_kwargs)
        for k in range(seed_sets)
    ]
    probe = probe_call(pipe, workloads[0])
    # the baseline's images of a seed set are held until every method has been compared with them
    check_memory("num_images", num_images, num_images * probe[0].numel() * 4, "the baseline images of one seed set")
    t_imgs = min(timing_images or batch_size, batch_size, num_images)
    calibration = make_workload(pipe, num_images, seed, steps, guidance=guidance, batch_size=batch_size,
                                seed_set=seed_sets, num_classes=num_classes, prompts=prompts, extra_kwargs=call_kwargs)
    note = prepare_methods(pipe, methods, calibration, list(range(t_imgs)), state)
    notes += [note] if note else []
    apply = compiled_apply(apply_spec, compile) if compile else apply_spec
    bar = run_bar(workloads, methods, t_imgs, repeats, warmup, state, progress)
    images = generate_paired(pipe, methods, workloads, apply, state=state, extractor=extractor, device=device,
                             lpips_metric=lpips_metric, grid_cols=grid_cols, progress=progress, bar=bar)
    costs: dict = {}
    if state.is_main_process:
        if compile:
            costs = measure_compile(pipe, methods, workloads[0], list(range(t_imgs)), apply, device=device)
            warmup = max(1, warmup)  # measure_compile left only the last method's graphs in Dynamo's cache
        timed = time_methods(pipe, methods, workloads[0], list(range(t_imgs)), apply, repeats=repeats,
                             warmup=warmup, device=device, progress=progress, bar=bar)
    bar.close()
    state.wait_for_everyone()
    if not state.is_main_process:
        return None
    common = dict(meta or {})
    common.update(
        num_images=num_images, steps=steps, seed=seed, seed_sets=seed_sets, guidance=guidance,
        batch_size=batch_size, timing_images=t_imgs, repeats=repeats, warmup=warmup,
        world_size=state.num_processes, device=str(device), threads=torch.get_num_threads(),
        torch_version=torch.__version__, diffusers_version=package_versions(["diffusers"])["diffusers"],
        memory_kind=memory_kind(device),
    )
    if compile:
        common.update(compile=compile.mode, compile_backend=compile.backend)
    if probe.ndim == 5:  # a video pipeline: frames per video, as generated
        common.update(media="video", num_frames=int(probe.shape[1]))
    records, flags = build_records(methods, images, timed, reference_stats=reference_stats, fd_name=fd_name,
                                   common=common)
    if compile:
        for rec in records:
            rec.update(compile_fields(costs.get(rec["method"])))
        notes.append(compile_note(compile, costs))
    notes += [_timing_note(t_imgs, num_images, repeats, warmup, workloads[0].seeds)] + flags
    grid = {label: im.grid for label, im in images.items() if im.grid is not None}
    return BenchResult(records, grid, notes, {**common, **provenance})


BENCH_FILES = ("results.json", "results.csv", "pareto.png", "grid.png", "report.html")


def write_outputs(out: Path, result: BenchResult) -> Path:
    """Write BENCH_FILES into a hidden folder next to ``out``, then move them in (other files in ``out`` stay)."""
    from accel.outputs import staged_dir

    from . import html_report, report

    out = Path(out)
    with staged_dir(out, writer="bench") as tmp:
        doc = report.results_document(result.records, result.notes, result.meta)
        report.write_json(tmp / "results.json", doc)
        report.write_csv(tmp / "results.csv", result.records)
        report.plot_pareto(tmp / "pareto.png", result.records)
        report.plot_grid(tmp / "grid.png", result.grid)
        html_report.write_html_report(tmp / "report.html", title=f"accel bench: {result.meta.get('model') or 'run'}",
                                      records=result.records, meta=result.meta, images=result.grid, notes=result.notes)
    return out
