"""From `accel bench` / `accel tune` settings (:class:`PrepareSettings`) to what a run needs: checked
values, model, methods, workload settings, feature extractor and reference statistics.

Everything here raises :class:`SettingError` naming the setting (or another ``AccelError`` /
:class:`BenchInputError`) on bad input before any image is generated, so a bad flag costs seconds and writes nothing.
"""

from __future__ import annotations

import importlib
import inspect
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..bounds import check_images, check_steps, check_threads
from ..pipelines.calls import pipeline_kind
from ..pipelines.loader import check_scheduler
from ..readers import ReadError, parse_json
from . import fid as fidmod
from .bench import check_total_images
from .methods import BenchInputError, BenchSettingError, MethodSpec, default_methods, parse_methods
from .prompts import load_prompts
from .runtime import parse_dtype, resolve_device
from .video import is_video_pipeline, video_features
from .workload import infer_num_classes

# The embedded model's sampler uses 50 steps; `accel bench --full` without --steps uses 20 (baseline +
# every method, 200 images: 11 minutes on 2 quiet CPU cores). FD-digits of this model barely moves
# between 10 and 50 steps (see accel/models/weights/MODEL_CARD.md).
BENCH_DEFAULT_STEPS = 20
# The quick no-flag run (`accel bench` without --full) samples the embedded default model with 10 steps:
# FD-digits barely moves between 10 and 50 steps, and with 72 images per method the whole run (every method,
# paired FD noise, timing) stays within 3 minutes on 2 CPU cores (accel/eval/bench.py QUICK).
QUICK_STEPS = 10
OTHER_MODEL_STEPS = 50
# call kwargs the bench sets itself (from which setting)
RESERVED_KWARGS = {"prompt": "prompts", "class_labels": "(the workload)", "generator": "seed",
                   "num_inference_steps": "steps", "guidance_scale": "guidance", "output_type": "(the bench)",
                   "return_dict": "(the bench)", "num_images_per_prompt": "num_images (one image per seed)",
                   "num_videos_per_prompt": "num_images (one video per seed)"}


@dataclass
class Prepared:
    """Everything `run_bench` needs, resolved from the flags."""

    pipe: Any
    methods: list[MethodSpec]
    steps: int
    guidance: float | None
    device: torch.device
    model_name: str
    scheduler: str | None
    num_classes: int | None = None
    prompts: list[str] | None = None
    call_kwargs: dict = field(default_factory=dict)
    extractor: Any = None
    reference_stats: Any = None
    fd_name: str | None = None
    notes: list[str] = field(default_factory=list)

    def bench_fields(self) -> dict[str, Any]:
        """The fields of `accel.eval.bench.BenchSettings` this model and its settings decide."""
        return dict(steps=self.steps, guidance=self.guidance, extractor=self.extractor,
                    reference_stats=self.reference_stats, fd_name=self.fd_name, device=self.device,
                    num_classes=self.num_classes, prompts=self.prompts, call_kwargs=self.call_kwargs,
                    meta={"model": self.model_name, "scheduler": self.scheduler})


@dataclass
class PrepareSettings:
    """What :func:`prepare` reads: the pipeline settings `accel bench` and `accel tune` share, the methods,
    and the workload sizes it range-checks (None: not given, not checked). The commands build it from
    their flags of the same names (accel.commands._shared.prepare_settings)."""

    model: str = "default"
    scheduler: str | None = None
    guidance: float | None = None
    threads: int | None = None
    device: str = "auto"
    dtype: str = "float32"
    inception_weights: str | None = None
    features: str | None = None
    reference_images: str | None = None
    prompts: str | None = None
    prompt_column: str | None = None
    height: int | None = None
    width: int | None = None
    num_frames: int | None = None
    negative_prompt: str | None = None
    pipeline_kwargs: str | None = None
    methods: str | None = None  # `--methods`; None: the default set (or only the baseline with config rows)
    config_rows: list[tuple[str, MethodSpec]] = field(default_factory=list)  # (--config FILE, its row), read
    no_fd: bool = False
    steps: int | None = None
    num_images: int | None = None
    batch_size: int | None = None
    repeats: int | None = None
    seed_sets: int | None = None
    warmup: int | None = None
    timing_images: int | None = None
    seed: int | None = None
    out: str = "."  # the output directory (checked: not a file)
    quick: bool = False  # the quick no-flag run: QUICK_STEPS on the embedded default model



def check_args(args: "PrepareSettings") -> None:
    """Range checks of the numeric and named settings (before anything is loaded)."""
    for name, lo in (("steps", 1), ("num_images", 1), ("batch_size", 1), ("repeats", 1), ("seed_sets", 1),
                     ("warmup", 0), ("timing_images", 1), ("threads", 1), ("seed", 0), ("height", 1),
                     ("width", 1), ("num_frames", 1)):
        value = getattr(args, name, None)
        if value is not None and value < lo:
            raise BenchSettingError(name, f"must be >= {lo}, got {value}")
    for name in ("num_images", "batch_size", "timing_images"):  # upper bounds, before any list is built
        if getattr(args, name) is not None:
            check_images(name, getattr(args, name))
    if args.num_images is not None and args.seed_sets is not None:
        check_total_images(args.num_images, args.seed_sets)
    if args.steps is not None:
        check_steps("steps", args.steps)
    check_threads(args.threads)
    if args.guidance is not None and not math.isfinite(args.guidance):
        raise BenchSettingError("guidance", f"must be a finite number, got {args.guidance}")
    check_scheduler(args.scheduler)
    parse_dtype(args.dtype)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise BenchSettingError("out", f"{out} exists and is not a directory")
    if getattr(args, "prompt_column", None) and not getattr(args, "prompts", None):
        raise BenchSettingError("prompt_column", "needs prompts FILE", also=("prompts",))


class DigitsFeatures(torch.nn.Module):
    """FD-digits extractor: pipeline images in [0, 1] -> the default classifier's features."""

    def __init__(self, classifier, to_input) -> None:
        super().__init__()
        self.classifier = classifier
        self.to_input = to_input
        self.num_features = int(classifier.num_features)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        dev = next(self.classifier.parameters()).device
        return self.classifier.features(self.to_input(images.cpu()).to(dev))


def _digits_fd(device) -> tuple[Any, Any]:
    """The FD-digits extractor and the digits reference statistics."""
    from accel import models as M

    return DigitsFeatures(M.load_digits_classifier(device=device), M.to_classifier_input), M.load_reference_stats()


def load_model(args, device, dtype) -> Prepared:
    """The pipeline (accel.pipelines.load_model) and its sampler defaults (steps, guidance, scheduler, classes)."""
    from accel.errors import AccelError
    from accel.models import embedded_root, is_embedded, sampler_defaults
    from accel.models.lineage import bench_settings
    from accel.pipelines import load_model as load

    ours = embedded_root(args.model) is not None  # shipped with accel, or derived from it
    sampler = sampler_defaults(args.model)
    scheduler = args.scheduler or sampler.get("scheduler")
    try:
        m = load(args.model, device=device, dtype=dtype, scheduler=scheduler)
        digits_fd = m.fd_digits and not args.no_fd and args.inception_weights is None and args.features is None
        extractor, reference = _digits_fd(device) if digits_fd else (None, None)
    except Exception as exc:  # noqa: BLE001 - missing weights, a folder diffusers cannot read and the like
        if ours:
            what = (f"the embedded {args.model} model" if is_embedded(args.model)
                    else f"{args.model} (derived from the embedded {embedded_root(args.model)} model)")
            raise BenchInputError(f"{what} could not be loaded: {exc}") from None
        if isinstance(exc, AccelError):  # ModelNotFoundError / UnsupportedModelError: their messages say what to do
            raise
        raise BenchSettingError("model", f"{args.model!r} could not be loaded: {type(exc).__name__}: {exc}") from None
    if ours:
        bench_steps, model_kwargs = bench_settings(args.model)
        return Prepared(
            m.pipe, [], args.steps or bench_steps or (QUICK_STEPS if args.quick else BENCH_DEFAULT_STEPS),
            args.guidance if args.guidance is not None else sampler.get("guidance_scale"), device, args.model,
            scheduler, num_classes=infer_num_classes(m.pipe, default=10) if m.digits else None, prompts=m.prompts,
            extractor=extractor, reference_stats=reference, fd_name="FD-digits" if extractor is not None else None,
            call_kwargs=model_kwargs,
        )
    return Prepared(m.pipe, [], args.steps or OTHER_MODEL_STEPS, args.guidance, device, args.model, args.scheduler)


def _load_features_factory(spec: str, device) -> Any:
    mod_name, _, fn_name = spec.partition(":")
    if not mod_name or not fn_name:
        raise BenchSettingError("features", f"{spec!r}: expected MODULE:FACTORY")
    try:
        ext = getattr(importlib.import_module(mod_name), fn_name)()
    except Exception as exc:  # noqa: BLE001 - any failure of user code is a bad features factory
        raise BenchSettingError("features", f"{spec!r}: {type(exc).__name__}: {exc}") from None
    if not hasattr(ext, "num_features"):
        raise BenchSettingError("features", f"{spec!r}: the extractor must expose num_features")
    return ext.to(device) if isinstance(ext, torch.nn.Module) else ext


def choose_features(args, prep: Prepared) -> None:
    """Extractor, reference statistics and FD name from --no-fd/--inception-weights/--features/--reference-images."""
    if args.no_fd:
        prep.extractor = prep.reference_stats = prep.fd_name = None
    elif args.inception_weights is not None:
        try:
            prep.extractor = fidmod.InceptionFeatures(args.inception_weights).to(prep.device)
        except fidmod.FeatureBackendError as exc:
            raise BenchSettingError("inception_weights", f": {exc}") from None
        prep.reference_stats, prep.fd_name = None, "FID-Inception-vs-baseline"
    elif args.features is not None:
        prep.extractor = _load_features_factory(args.features, prep.device)
        prep.reference_stats, prep.fd_name = None, "FD-vs-baseline"
    elif prep.extractor is None:
        prep.notes.append(
            "FD skipped: no feature extractor for this model (FD-digits is for the default model; give "
            "Inception-v3 weights (`accel bench --inception-weights PATH`) for Inception FID vs the baseline)"
        )
    if args.reference_images is not None:
        if prep.extractor is None:
            raise BenchSettingError("reference_images", "needs a feature extractor: inception_weights PATH or features",
                               also=("inception_weights", "features"))
        prep.reference_stats = _reference_from_folder(prep, args.reference_images)
        prep.fd_name = (prep.fd_name or "FD").replace("-vs-baseline", "")


def _image_channels(pipe) -> int:
    """Channels of the pipeline's output images (VAE out_channels; 1 for 1-channel pixel DiTs)."""
    vae_cfg = getattr(getattr(pipe, "vae", None), "config", None)
    ch = getattr(vae_cfg, "out_channels", None) if vae_cfg is not None else None
    if isinstance(ch, int):
        return 1 if ch == 1 else 3
    tr_cfg = getattr(getattr(pipe, "transformer", None), "config", None)
    return 1 if getattr(tr_cfg, "in_channels", 3) == 1 else 3


def _reference_from_folder(prep: Prepared, folder) -> tuple[torch.Tensor, torch.Tensor]:
    """(μ, Σ) of a folder of real images through the extractor, cached on disk."""
    ext = prep.extractor
    try:
        paths, data_key = fidmod.image_folder_key(folder)
    except ValueError as exc:
        raise BenchSettingError("reference_images", f": {exc}") from None
    need = fidmod.min_images_for_fd(ext.num_features)
    if len(paths) < need:
        raise BenchSettingError(
            "reference_images", f"{folder}: {len(paths)} images are too few for a stable covariance "
            f"of {ext.num_features}-dim features; at least {need} are required"
        )
    channels = _image_channels(prep.pipe)
    ext_key = f"{type(ext).__name__}-{fidmod.extractor_fingerprint(ext)}"
    try:
        mu, sigma, n = fidmod.cached_reference_stats(
            ext_key, data_key, lambda: fidmod.folder_features(ext, paths, channels, device=prep.device)
        )
    except (ValueError, OSError) as exc:  # an unreadable image, a size the extractor cannot take
        raise BenchSettingError("reference_images", f"{folder}: {exc}") from None
    prep.notes.append(f"reference: {n} images from {folder} (statistics cached as {ext_key}/{data_key})")
    return mu, sigma


def json_object(text: str, setting: str = "pipeline_kwargs") -> dict:
    """A JSON object given as text; a one-line SettingError naming `setting` otherwise."""
    try:
        obj = parse_json(text, where=setting)
    except ReadError as exc:
        raise BenchSettingError(setting, f": {exc.problem}") from None
    if not isinstance(obj, dict):
        raise BenchSettingError(setting, f"must be a JSON object such as '{{\"key\": 1}}', got {text[:80]}")
    return obj


def call_kwargs(args, pipe) -> dict:
    """Extra pipeline-call kwargs from the height / width / negative_prompt / num_frames / pipeline_kwargs
    settings, checked against the pipeline's ``__call__`` signature."""
    kwargs = json_object(args.pipeline_kwargs) if args.pipeline_kwargs else {}
    given = {k: getattr(args, k, None) for k in ("height", "width", "negative_prompt", "num_frames")}
    for key, value in given.items():
        if value is None:
            continue
        if key in kwargs:
            raise BenchSettingError(key, f"and pipeline_kwargs both set {key!r}; give it once", also=("pipeline_kwargs",))
        kwargs[key] = value
    # only named parameters: a pipeline's **kwargs swallows (and mostly ignores) a misspelt key
    params = {k: p for k, p in inspect.signature(pipe.__call__).parameters.items()
              if p.kind not in (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL)}
    name = f"{type(pipe).__name__}.__call__"
    for key in kwargs:
        setting = key if given.get(key) is not None else "pipeline_kwargs"
        if key in RESERVED_KWARGS:
            raise BenchSettingError(setting, f": {key!r} is set by the bench; use {RESERVED_KWARGS[key]}",
                               also=(RESERVED_KWARGS[key].split()[0],))
        if key not in params:
            known = ", ".join(p for p in params if p not in RESERVED_KWARGS and p not in ("self", "kwargs"))
            raise BenchSettingError(setting, f": {name} takes no {key!r}; it takes: {known}")
    return kwargs


def prepare(args: "PrepareSettings", state: Any = None) -> Prepared:
    """Check the settings, load the model, parse the methods; BenchInputError/AccelError on bad input."""
    import accel

    check_args(args)
    registry, notes = dict(accel.methods()), []
    if args.methods is None:  # with --config only: the baseline and the tuned rows
        methods = parse_methods("baseline", registry) if args.config_rows else default_methods(registry, notes)
    else:
        methods = parse_methods(args.methods, registry)
    taken = {m.label for m in methods}
    for path, row in args.config_rows:
        if row.label in taken:
            raise BenchSettingError("config", f"{path}: the row {row.label!r} is listed twice")
        taken.add(row.label)
        methods.append(row)
    prompts = load_prompts(args.prompts, args.prompt_column) if args.prompts is not None else None
    prep = load_model(args, resolve_device(args.device, state), parse_dtype(args.dtype))
    prep.methods, prep.notes = methods, notes
    prep.prompts = prompts if prompts is not None else prep.prompts  # an embedded text-to-image model's own
    if prompts is not None:
        if pipeline_kind(prep.pipe) != "prompt":
            raise BenchSettingError("prompts", f": {type(prep.pipe).__name__} is class-conditional and takes no prompts")
        if len(prompts) < args.num_images:
            notes.append(f"prompts: {len(prompts)} in {args.prompts}, cycled over {args.num_images} images")
    prep.call_kwargs = {**prep.call_kwargs, **call_kwargs(args, prep.pipe)}
    if is_video_pipeline(prep.pipe):
        video_features(args, prep)  # FD does not apply to videos: null, with a note
    else:
        choose_features(args, prep)
    return prep
