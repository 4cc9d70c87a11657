"""`accel bench`: paired quality / fidelity / speed / memory comparison of methods.

One run = one pipeline, one workload (seeds + classes/prompts), the baseline and every
requested method on exactly those seeds. Per method:

* quality: Fréchet distance of its images' features to reference statistics (FD-digits
  for the embedded default model, Inception FID with user-supplied weights, or a custom
  extractor), via torchmetrics, checked against ``accel.eval.fid``; with
  ``seed_sets=K`` repeated over K disjoint seed sets and the spread reported;
* fidelity: PSNR / SSIM (optionally LPIPS) against the baseline images of the same seeds;
* speed: interleaved, warmed-up repeats on a (smaller) timing batch; median time, the
  ratio to the baseline, and the hardware-independent block-evaluation counts;
* memory: peak per method (CUDA allocator or the CPU high-water mark, see memory.py).

Generation for quality/fidelity can be sharded over processes (``accelerate``'s
``PartialState``; whole batches per rank, per-image results gathered on rank 0).
Timing runs on rank 0 only, while the other ranks wait.

Methods are looked up only through ``accel.methods()`` and applied with ``accel.apply``.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import os
import statistics
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from . import fid as fidmod
from .fidelity import per_image_lpips, per_image_mse, per_image_ssim, psnr_from_mse, try_lpips
from .memory import PeakMemory, memory_kind
from .timing import interleaved, speedup, timed
from .workload import Workload, generate, make_workload

BASELINE = "baseline"
FOUNDATION_ENV = "ACCEL_BENCH_FOUNDATION"


# The embedded model's sampler uses 50 steps; `accel bench` without --steps uses 20 so that the
# no-flag run (baseline + every method, 200 images) fits 10 minutes on 2 CPU cores. FD-digits of
# this model barely moves between 10 and 50 steps (see accel/models/weights/MODEL_CARD.md).
BENCH_DEFAULT_STEPS = 20


class BenchInputError(ValueError):
    """Bad user input (exit code 2, nothing written)."""


# ---------------------------------------------------------------------------
# foundation access (methods registry + apply)
# ---------------------------------------------------------------------------


def foundation():
    """The module providing ``methods()`` and ``apply()``: ``accel`` itself.

    ``$ACCEL_BENCH_FOUNDATION=some.module`` substitutes another module with the same two
    functions (used by the tests' stand-in; also a hook for out-of-tree method sets).
    """
    name = os.environ.get(FOUNDATION_ENV) or "accel"
    mod = importlib.import_module(name)
    missing = [f for f in ("methods", "apply") if not callable(getattr(mod, f, None))]
    if missing:
        raise BenchInputError(
            f"{name} does not provide {', '.join(missing)}(); this install of accel lacks the "
            "method registry that `accel bench` needs"
        )
    return mod


# ---------------------------------------------------------------------------
# method specs
# ---------------------------------------------------------------------------


@dataclass
class MethodSpec:
    label: str
    components: list[tuple[str, dict]] = field(default_factory=list)
    configs: list[Any] = field(default_factory=list)

    @property
    def is_baseline(self) -> bool:
        return not self.configs

    def config_record(self) -> list[dict]:
        out = []
        for (name, _), cfg in zip(self.components, self.configs):
            params = dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else dict(vars(cfg))
            out.append({"name": name, "params": _jsonable(params)})
        return out


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (str, int, float, bool)) or x is None:
        return x
    return str(x)


def _literal(text: str):
    low = text.lower()
    if low in ("true", "yes", "on"):
        return True
    if low in ("false", "no", "off"):
        return False
    if low in ("none", "null"):
        return None
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    return text


def _convert(value: str, annotation, where: str):
    """Convert the string ``value`` to the field type ``annotation``."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation in (typing.Any, None) or annotation is dataclasses.MISSING:
        return _literal(value)
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        if value.lower() in ("none", "null") and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _convert(value, a, where)
            except BenchInputError as exc:
                errors.append(str(exc))
        raise BenchInputError(errors[0] if errors else f"{where}: cannot parse {value!r}")
    if origin is typing.Literal:
        for a in args:
            if str(a) == value or (not isinstance(a, str) and _literal(value) == a):
                return a
        raise BenchInputError(f"{where}: {value!r} is not one of {list(args)}")
    if origin in (list, tuple) or annotation in (list, tuple):
        items = [v for v in value.replace(";", " ").replace("|", " ").split() if v]
        inner = args[0] if args else typing.Any
        conv = [_convert(v, inner, where) for v in items]
        return tuple(conv) if (origin or annotation) is tuple else conv
    if annotation is bool:
        lit = _literal(value)
        if isinstance(lit, bool):
            return lit
        if lit in (0, 1):
            return bool(lit)
        raise BenchInputError(f"{where}: expected true/false, got {value!r}")
    if annotation is int:
        try:
            return int(value)
        except ValueError:
            raise BenchInputError(f"{where}: expected an integer, got {value!r}") from None
    if annotation is float:
        try:
            return float(value)
        except ValueError:
            raise BenchInputError(f"{where}: expected a number, got {value!r}") from None
    if annotation is str:
        return value
    return _literal(value)


def build_config(name: str, cls: type, raw: dict[str, str]):
    """``cls(**kwargs)`` with each ``key=val`` string converted to the field's type."""
    if dataclasses.is_dataclass(cls):
        try:
            hints = typing.get_type_hints(cls)
        except Exception:  # noqa: BLE001 - unresolved annotations: fall back to literals
            hints = {}
        fields = {f.name: hints.get(f.name, typing.Any) for f in dataclasses.fields(cls) if f.init}
    else:
        fields = {k: typing.Any for k in inspect_params(cls)}
    kwargs = {}
    for key, val in raw.items():
        if key not in fields:
            raise BenchInputError(
                f"method {name!r} has no option {key!r}; valid options: "
                f"{', '.join(sorted(fields)) or '(none)'}"
            )
        kwargs[key] = _convert(val, fields[key], f"{name}:{key}")
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as exc:
        raise BenchInputError(f"invalid settings for method {name!r}: {exc}") from None


def inspect_params(cls) -> list[str]:
    import inspect

    return [p for p in inspect.signature(cls).parameters if p != "self"]


def _component(text: str, registry: dict[str, type]) -> tuple[str, dict]:
    name, _, rest = text.partition(":")
    name = name.strip()
    if not name:
        raise BenchInputError(f"empty method name in {text!r}")
    if name != BASELINE and name not in registry:
        raise BenchInputError(
            f"unknown method {name!r}; available: {', '.join([BASELINE, *sorted(registry)])}"
        )
    kw: dict[str, str] = {}
    if rest.strip():
        for item in rest.split(","):
            _kv(item, kw, name)
    return name, kw


def _kv(item: str, kw: dict, name: str) -> None:
    key, eq, val = item.partition("=")
    key, val = key.strip(), val.strip()
    if not eq or not key or not val:
        raise BenchInputError(f"bad option {item!r} for method {name!r}: expected key=value")
    if key in kw:
        raise BenchInputError(f"option {key!r} given twice for method {name!r}")
    kw[key] = val


def parse_methods(spec: str | None, registry: dict[str, type]) -> list[MethodSpec]:
    """Parse ``baseline,NAME[:key=val,...][+NAME2[:...]],...``.

    Commas separate methods and also ``key=val`` options: an item holding ``=`` but no
    ``:`` continues the options of the method before it. ``+`` stacks configs into one
    method. The baseline is always included (first). ``None`` means baseline + every
    registered method at default settings.
    """
    if spec is None or not spec.strip():
        groups: list[list[tuple[str, dict]]] = [[(n, {})] for n in registry]
    else:
        groups = []
        for tok in spec.split(","):
            tok = tok.strip()
            if not tok:
                raise BenchInputError(f"empty entry in --methods {spec!r}")
            pieces = tok.split("+")
            first = pieces[0].strip()
            if "=" in first and ":" not in first:
                if not groups:
                    raise BenchInputError(f"option {first!r} comes before any method in --methods")
                name, kw = groups[-1][-1]
                _kv(first, kw, name)
            else:
                groups.append([_component(first, registry)])
            for p in pieces[1:]:
                groups[-1].append(_component(p.strip(), registry))
    out: list[MethodSpec] = [MethodSpec(BASELINE)]
    seen = {BASELINE}
    for comps in groups:
        if [n for n, _ in comps] == [BASELINE]:
            if comps[0][1]:
                raise BenchInputError("the baseline takes no options")
            continue
        if any(n == BASELINE for n, _ in comps):
            raise BenchInputError("'baseline' cannot be stacked with other methods")
        configs = [build_config(n, registry[n], kw) for n, kw in comps]
        label = "+".join(
            n + (":" + ",".join(f"{k}={v}" for k, v in kw.items()) if kw else "") for n, kw in comps
        )
        if label in seen:
            raise BenchInputError(f"method {label!r} listed twice")
        seen.add(label)
        out.append(MethodSpec(label, comps, configs))
    return out


# ---------------------------------------------------------------------------
# distributed helpers
# ---------------------------------------------------------------------------


class _Single:
    process_index = 0
    num_processes = 1
    is_main_process = True

    def wait_for_everyone(self):
        pass


def _gather(state, obj):
    if state.num_processes == 1:
        return [obj]
    from accelerate.utils import gather_object

    return gather_object([obj])


# ---------------------------------------------------------------------------
# the benchmark
# ---------------------------------------------------------------------------


@dataclass
class BenchResult:
    records: list[dict]
    grid: dict[str, torch.Tensor]  # label -> (G, C, H, W)
    notes: list[str]
    meta: dict


def _apply(found, pipe, spec: MethodSpec):
    return found.apply(pipe, *spec.configs)


def _stats_counts(handle) -> tuple[int | None, int | None]:
    try:
        tot = handle.stats()["total"]
        return int(tot["block_evals"]), int(tot["block_total"])
    except Exception:  # noqa: BLE001 - counts are optional extras
        return None, None


def _features(extractor, images: torch.Tensor, device) -> torch.Tensor:
    with torch.inference_mode():
        f = extractor(images.to(device))
    return f.detach().to("cpu", torch.float64).reshape(images.shape[0], -1)


def run_bench(
    pipe,
    methods: Sequence[MethodSpec],
    *,
    num_images: int,
    steps: int,
    seed: int = 0,
    guidance: float | None = None,
    batch_size: int = 50,
    seed_sets: int = 1,
    repeats: int = 3,
    warmup: int = 1,
    timing_images: int | None = None,
    extractor: torch.nn.Module | None = None,
    reference_stats: tuple[torch.Tensor, torch.Tensor] | None = None,
    fd_name: str | None = None,
    device: str | torch.device = "cpu",
    state=None,
    num_classes: int | None = None,
    prompts: Sequence[str] | None = None,
    lpips: bool = False,
    grid_cols: int = 8,
    progress: bool = True,
    found=None,
    meta: dict | None = None,
) -> BenchResult | None:
    """Run the paired benchmark; returns the result on the main process, None elsewhere.

    ``extractor`` maps images (N, C, H, W) in [0, 1] to features (N, D) and exposes
    ``num_features``. With ``reference_stats=(μ, Σ)`` the FD is to those statistics;
    without, to the baseline's images of the same seeds ("vs baseline"). No extractor:
    no FD.
    """
    from tqdm.auto import tqdm

    found = found or foundation()
    state = state or _Single()
    rank, world = state.process_index, state.num_processes
    main = state.is_main_process
    methods = list(methods)
    if not methods or not methods[0].is_baseline:
        raise ValueError("methods[0] must be the baseline")
    notes: list[str] = []
    if seed_sets < 1:
        raise BenchInputError(f"--seed-sets must be >= 1, got {seed_sets}")
    if extractor is not None:
        need = fidmod.min_images_for_fd(extractor.num_features)
        if num_images < need:
            raise BenchInputError(
                f"--num-images {num_images} is too few for a stable covariance of "
                f"{extractor.num_features}-dim features: at least {need} images are required "
                f"(several times more for a low-noise FD), or pass --no-fd"
            )
    for m in methods[1:]:  # stacking conflicts etc. surface now, before any image is made
        try:
            _apply(found, pipe, m).remove()
        except (ValueError, TypeError, NotImplementedError) as exc:
            raise BenchInputError(f"method {m.label!r} cannot be applied to this pipeline: {exc}") from None
    lp_metric = None
    if lpips:
        lp_metric, why = try_lpips(device)
        if lp_metric is None:
            notes.append(why)
    if hasattr(pipe, "set_progress_bar_config"):
        pipe.set_progress_bar_config(disable=True)

    # per method, per seed set: gathered lists
    feats: dict[str, list[torch.Tensor]] = {m.label: [] for m in methods}
    mse: dict[str, list[torch.Tensor]] = {m.label: [] for m in methods}
    ssim_v: dict[str, list[torch.Tensor]] = {m.label: [] for m in methods}
    lp_v: dict[str, list[torch.Tensor]] = {m.label: [] for m in methods}
    counts: dict[str, list[int | None]] = {m.label: [0, 0] for m in methods}
    grid: dict[str, torch.Tensor] = {}

    workloads = [
        make_workload(
            pipe, num_images, seed, steps, guidance=guidance, batch_size=batch_size, seed_set=k,
            num_classes=num_classes, prompts=prompts,
        )
        for k in range(seed_sets)
    ]
    total_batches = sum(len(w.batches(rank, world)) for w in workloads) * len(methods)
    bar = tqdm(total=total_batches, desc="generating", disable=not (progress and main), unit="batch")
    for k, wl in enumerate(workloads):
        my_batches = wl.batches(rank, world)
        base_imgs: dict[int, torch.Tensor] = {}
        for m in methods:
            handle = _apply(found, pipe, m)
            try:
                if hasattr(handle, "reset_stats"):
                    handle.reset_stats()
                rows: list[tuple[int, Any]] = []
                for idx in my_batches:
                    bar.set_postfix_str(f"set {k + 1}/{seed_sets} {m.label}")
                    imgs = generate(pipe, wl, idx)
                    f = _features(extractor, imgs, device) if extractor is not None else None
                    if m.is_baseline:
                        for j, i in enumerate(idx):
                            base_imgs[i] = imgs[j]
                    ref = torch.stack([base_imgs[i] for i in idx])
                    e = per_image_mse(imgs, ref)
                    s = per_image_ssim(imgs, ref)
                    lpv = per_image_lpips(lp_metric, imgs, ref) if lp_metric is not None else None
                    for j, i in enumerate(idx):
                        rows.append((i, (
                            None if f is None else f[j],
                            float(e[j]), float(s[j]),
                            None if lpv is None else float(lpv[j]),
                            imgs[j] if (k == 0 and i < grid_cols) else None,
                        )))
                    bar.update(1)
                ev, tot = _stats_counts(handle)
            finally:
                handle.remove()
            gathered = _gather(state, (rows, ev, tot))
            if main:
                allrows = sorted((r for part in gathered for r in part[0]), key=lambda r: r[0])
                if [r[0] for r in allrows] != list(range(len(wl))):
                    raise RuntimeError("gathered image indices are incomplete or duplicated")
                if extractor is not None:
                    feats[m.label].append(torch.stack([r[1][0] for r in allrows]))
                mse[m.label].append(torch.tensor([r[1][1] for r in allrows], dtype=torch.float64))
                ssim_v[m.label].append(torch.tensor([r[1][2] for r in allrows], dtype=torch.float64))
                if lp_metric is not None:
                    lp_v[m.label].append(torch.tensor([r[1][3] for r in allrows], dtype=torch.float64))
                if k == 0:
                    g = [r[1][4] for r in allrows if r[1][4] is not None]
                    if g:
                        grid[m.label] = torch.stack(g)
                for part in gathered:
                    if part[1] is None or counts[m.label][0] is None:
                        counts[m.label] = [None, None]
                    else:
                        counts[m.label][0] += part[1]
                        counts[m.label][1] += part[2]
    bar.close()

    # ---- timing + memory, rank 0 only ------------------------------------
    timings = peaks = None
    t_imgs = min(timing_images or batch_size, batch_size, num_images)
    if main:
        wl0 = workloads[0]
        tidx = list(range(t_imgs))
        peaks = {m.label: None for m in methods}
        by_label = {m.label: m for m in methods}
        tbar = tqdm(total=(warmup + repeats) * len(methods), desc="timing", disable=not progress,
                    unit="call")

        def run_one(label: str) -> float:
            spec = by_label[label]
            handle = _apply(found, pipe, spec)
            try:
                with PeakMemory(device) as pm:
                    _, secs = timed(lambda: generate(pipe, wl0, tidx), device)
            finally:
                handle.remove()
            if pm.peak_mb is not None:
                peaks[label] = max(peaks[label] or 0.0, pm.peak_mb)
            tbar.update(1)
            return secs

        timings = interleaved([m.label for m in methods], run_one, repeats=repeats, warmup=warmup)
        tbar.close()
        if t_imgs < num_images:
            notes.append(
                f"timing: {repeats} interleaved repeats after {warmup} warm-up round(s) on a batch "
                f"of {t_imgs} image(s) (seeds {wl0.seeds[0]}..{wl0.seeds[t_imgs - 1]}), smaller than "
                f"the {num_images} used for quality"
            )
    state.wait_for_everyone()
    if not main:
        return None

    # ---- assemble records -------------------------------------------------
    base = methods[0].label
    meta = dict(meta or {})
    meta.update(
        num_images=num_images, steps=steps, seed=seed, seed_sets=seed_sets, guidance=guidance,
        batch_size=batch_size, timing_images=t_imgs, repeats=repeats, warmup=warmup,
        world_size=world, device=str(device), threads=torch.get_num_threads(),
        torch_version=torch.__version__, diffusers_version=_version("diffusers"),
        memory_kind=memory_kind(device),
    )
    records = []
    for m in methods:
        lab = m.label
        fd_vals, fd_checks = [], []
        if extractor is not None:
            for k in range(seed_sets):
                fake = feats[lab][k]
                if reference_stats is not None:
                    tm, ref = fidmod.fd_with_check(fake, real_stats=reference_stats)
                else:
                    tm, ref = fidmod.fd_with_check(fake, feats[base][k])
                fd_vals.append(tm)
                fd_checks.append(ref)
        all_mse = torch.cat(mse[lab])
        t_med = timings[lab].median
        sp, sp_spread = speedup(timings[base], timings[lab])
        ev, tot = counts[lab]
        ideal = (tot / ev) if (ev and tot) else None
        rec = {
            "method": lab,
            "config": m.config_record(),
            "fd": statistics.fmean(fd_vals) if fd_vals else None,
            "fd_name": fd_name if fd_vals else None,
            "fd_check": statistics.fmean(fd_checks) if fd_checks else None,
            "fd_per_set": fd_vals if fd_vals else None,
            "fd_spread": statistics.stdev(fd_vals) if len(fd_vals) >= 2 else None,
            "psnr": psnr_from_mse(all_mse),
            "ssim": float(torch.cat(ssim_v[lab]).mean()),
            "lpips": float(torch.cat(lp_v[lab]).mean()) if lp_v[lab] else None,
            "speedup": sp,
            "speedup_spread": sp_spread,
            "time_s": t_med,
            "time_spread_s": timings[lab].spread,
            "peak_mem_mb": peaks[lab],
            "block_evals": ev,
            "block_total": tot,
            "ideal_speedup": ideal,
            "achieved_over_ideal": (sp / ideal) if ideal else None,
        }
        if len(fd_vals) >= 2 and feats.get(base):
            base_fd = records[0]["fd_per_set"] if records else fd_vals
            deltas = [a - b for a, b in zip(fd_vals, base_fd)]
            rec["fd_delta"] = statistics.fmean(deltas)
            rec["fd_delta_spread"] = statistics.stdev(deltas)
        rec.update(meta)
        records.append(rec)
    return BenchResult(records, grid, notes, meta)


def _version(pkg: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(pkg)
    except Exception:  # noqa: BLE001
        return None


def nan_to_none(x):
    return None if isinstance(x, float) and math.isnan(x) else x


# ---------------------------------------------------------------------------
# CLI orchestration: resolve model / extractor / reference, run, write atomically
# ---------------------------------------------------------------------------


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


def resolve_device(name: str | None, state=None) -> torch.device:
    if state is not None and getattr(state, "num_processes", 1) > 1 and name in (None, "auto"):
        return torch.device(state.device)
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as exc:
        raise BenchInputError(f"--device {name!r}: {exc}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise BenchInputError(f"--device {name}: CUDA is not available on this machine")
    if dev.type == "cuda" and state is not None and getattr(state, "num_processes", 1) > 1:
        return torch.device(state.device)
    return dev


def _dtype(name: str) -> torch.dtype:
    table = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16,
             "fp16": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
    if name not in table:
        raise BenchInputError(f"--dtype {name!r}: choose one of float32, float16, bfloat16")
    return table[name]


def _load_any_pipeline(path_or_id: str, device, dtype):
    """Load a non-default pipeline through accel.pipelines.load_pipeline (the foundation).

    Falls back to ``DiffusionPipeline.from_pretrained(local_files_only=True)`` only while
    the foundation loader is absent.
    """
    try:
        from accel.pipelines import load_pipeline  # type: ignore[attr-defined]
    except ImportError:
        load_pipeline = None
    if load_pipeline is not None:
        try:
            return load_pipeline(path_or_id, device=device, dtype=dtype)
        except ValueError as exc:  # ModelNotFoundError / UnsupportedModelError
            raise BenchInputError(str(exc)) from None
        except Exception as exc:  # noqa: BLE001 - any other loader failure is a bad --model too
            raise BenchInputError(
                f"--model {path_or_id!r} could not be loaded: {type(exc).__name__}: {exc}"
            ) from None
    # TODO(foundation): remove this fallback once accel.pipelines.load_pipeline is everywhere.
    from diffusers import DiffusionPipeline

    try:
        pipe = DiffusionPipeline.from_pretrained(path_or_id, local_files_only=True, torch_dtype=dtype)
    except Exception as exc:  # noqa: BLE001 - any loader failure is a bad --model
        raise BenchInputError(
            f"--model {path_or_id!r} is not a loadable diffusers pipeline (local files only): "
            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        ) from None
    if getattr(pipe, "transformer", None) is None:
        raise BenchInputError(
            f"--model {path_or_id!r} is a {type(pipe).__name__} without a diffusion transformer; "
            "accel supports transformer pipelines (DiT, PixArt, SD3, Flux, Sana)"
        )
    return pipe.to(device)


def _set_scheduler(pipe, name: str | None):
    if name is None:
        return
    from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler

    table = {"ddim": DDIMScheduler, "dpm++": DPMSolverMultistepScheduler, "ddpm": DDPMScheduler,
             "euler": EulerDiscreteScheduler}
    if name not in table:
        raise BenchInputError(f"--scheduler {name!r}: choose one of {', '.join(table)}")
    try:
        pipe.scheduler = table[name].from_config(pipe.scheduler.config)
    except Exception as exc:  # noqa: BLE001
        raise BenchInputError(f"--scheduler {name}: cannot be used with this pipeline ({exc})") from None


def _load_features_factory(spec: str):
    mod_name, _, fn_name = spec.partition(":")
    if not mod_name or not fn_name:
        raise BenchInputError(f"--features {spec!r}: expected MODULE:FACTORY")
    try:
        fn = getattr(importlib.import_module(mod_name), fn_name)
        ext = fn()
    except Exception as exc:  # noqa: BLE001
        raise BenchInputError(f"--features {spec!r}: {type(exc).__name__}: {exc}") from None
    if not hasattr(ext, "num_features"):
        raise BenchInputError(f"--features {spec!r}: the extractor must expose num_features")
    return ext


@dataclass
class Prepared:
    pipe: Any
    methods: list[MethodSpec]
    extractor: Any
    reference_stats: Any
    fd_name: str | None
    steps: int
    guidance: float | None
    device: torch.device
    num_classes: int | None
    notes: list[str]
    model_name: str
    scheduler: str | None


def prepare(args, state=None) -> Prepared:
    """Validate everything and load the model; raises BenchInputError on bad input."""
    found = foundation()
    registry = dict(found.methods())
    if args.methods is None:
        # default list: every registered method that accelerates (utilities left out)
        registry_default = {k: v for k, v in registry.items() if getattr(v, "accelerates", True)}
        methods = parse_methods(",".join(["baseline", *registry_default]), registry)
    else:
        methods = parse_methods(args.methods, registry)
    device = resolve_device(args.device, state)
    dtype = _dtype(args.dtype)
    notes: list[str] = []
    extractor = reference = fd_name = None
    num_classes = None
    steps, guidance, scheduler = args.steps, args.guidance, args.scheduler
    if args.model == "default":
        try:
            from accel import models as M

            sampler = dict(M.DEFAULT_SAMPLER)
            scheduler = scheduler or sampler.get("scheduler")
            pipe = M.load_default_pipeline(scheduler=scheduler, device=device, dtype=dtype)
            if not args.no_fd and args.inception_weights is None and args.features is None:
                extractor = DigitsFeatures(M.load_digits_classifier(device=device), M.to_classifier_input)
                reference = M.load_reference_stats()
                fd_name = "FD-digits"
            num_classes = getattr(M, "NUM_CLASSES", None) or 10
        except BenchInputError:
            raise
        except Exception as exc:  # noqa: BLE001 - missing weights, bad scheduler, ...
            raise BenchInputError(f"the embedded default model could not be loaded: {exc}") from None
        steps = steps if steps is not None else BENCH_DEFAULT_STEPS
        guidance = guidance if guidance is not None else sampler.get("guidance_scale")
    else:
        pipe = _load_any_pipeline(args.model, device, dtype)
        _set_scheduler(pipe, scheduler)
        steps = steps if steps is not None else 50
    ref_images = getattr(args, "reference_images", None)
    if ref_images is not None and (args.no_fd or (extractor is None and args.inception_weights is None
                                                  and args.features is None)):
        raise BenchInputError(
            "--reference-images needs a feature extractor: --inception-weights PATH or --features"
        )
    if not args.no_fd:
        if args.inception_weights is not None:
            try:
                extractor = fidmod.InceptionFeatures(args.inception_weights).to(device)
            except fidmod.FeatureBackendError as exc:
                raise BenchInputError(str(exc)) from None
            reference, fd_name = None, "FID-Inception-vs-baseline"
        elif args.features is not None:
            extractor = _load_features_factory(args.features)
            if isinstance(extractor, torch.nn.Module):
                extractor = extractor.to(device)
            reference, fd_name = None, "FD-vs-baseline"
        elif extractor is None:
            notes.append(
                "FD skipped: no feature extractor for this model (FD-digits is for the default "
                "model; pass --inception-weights PATH for Inception FID vs the baseline)"
            )
    if ref_images is not None and extractor is not None:
        reference, fd_name = _reference_from_folder(extractor, ref_images, pipe, device, fd_name, notes)
    return Prepared(pipe, methods, extractor, reference, fd_name, steps, guidance, device,
                    num_classes, notes, args.model, scheduler)


def _image_channels(pipe) -> int:
    """Channels of the pipeline's output images (VAE out_channels; 1 for 1-channel pixel DiTs)."""
    vae_cfg = getattr(getattr(pipe, "vae", None), "config", None)
    ch = getattr(vae_cfg, "out_channels", None) if vae_cfg is not None else None
    if isinstance(ch, int):
        return 1 if ch == 1 else 3
    tr_cfg = getattr(getattr(pipe, "transformer", None), "config", None)
    return 1 if getattr(tr_cfg, "in_channels", 3) == 1 else 3


def _reference_from_folder(extractor, folder, pipe, device, fd_name, notes):
    """(μ, Σ) of a folder of real images through the extractor, cached on disk."""
    try:
        paths, data_key = fidmod.image_folder_key(folder)
    except ValueError as exc:
        raise BenchInputError(f"--reference-images: {exc}") from None
    need = fidmod.min_images_for_fd(extractor.num_features)
    if len(paths) < need:
        raise BenchInputError(
            f"--reference-images {folder}: {len(paths)} images are too few for a stable covariance "
            f"of {extractor.num_features}-dim features; at least {need} are required"
        )
    channels = _image_channels(pipe)
    ext_key = f"{type(extractor).__name__}-{fidmod.extractor_fingerprint(extractor)}"
    mu, sigma, n = fidmod.cached_reference_stats(
        ext_key, data_key, lambda: fidmod.folder_features(extractor, paths, channels, device=device)
    )
    notes.append(f"reference: {n} images from {folder} (statistics cached as {ext_key}/{data_key})")
    name = (fd_name or "FD").replace("-vs-baseline", "")
    return (mu, sigma), name



def _commit_outputs(tmp: Path, out: Path) -> None:
    """Move a finished temp dir into place: rename if possible, else replace file by file."""
    if not out.exists():
        os.rename(tmp, out)
        return
    if out.is_dir() and not any(out.iterdir()):
        out.rmdir()
        os.rename(tmp, out)
        return
    if not out.is_dir():
        raise BenchInputError(f"--out {out} exists and is not a directory")
    for f in tmp.iterdir():
        os.replace(f, out / f.name)
    tmp.rmdir()


def write_outputs(out: Path, result: BenchResult) -> Path:
    """Write results.json/.csv, pareto.png, grid.png into a temp dir next to ``out``, then move."""
    import shutil
    import tempfile

    from . import report

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        doc = report.results_document(result.records, result.notes, result.meta)
        report.write_json(tmp / "results.json", doc)
        report.write_csv(tmp / "results.csv", result.records)
        report.plot_pareto(tmp / "pareto.png", result.records)
        report.plot_grid(tmp / "grid.png", result.grid)
        _commit_outputs(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _distributed_state(device_arg: str | None):
    """accelerate's PartialState when launched with several processes, else a stub."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return _Single()
    from accelerate import PartialState

    cpu = device_arg == "cpu" or (device_arg in (None, "auto") and not torch.cuda.is_available())
    return PartialState(cpu=cpu)


def bench_command(args) -> int:
    """`accel bench`; returns the exit code (2 on bad input, nothing written then)."""
    import sys

    from . import report
    from .timing import pin_threads

    try:
        out = Path(args.out)
        if out.exists() and not out.is_dir():
            raise BenchInputError(f"--out {out} exists and is not a directory")
        threads = pin_threads(args.threads)
        state = _distributed_state(args.device)
        prep = prepare(args, state)
        if args.num_images < 1 or args.batch_size < 1 or args.repeats < 1 or args.seed_sets < 1:
            raise BenchInputError("--num-images, --batch-size, --repeats and --seed-sets must be >= 1")
        main = state.is_main_process
        if main:
            print(
                f"accel bench: model={prep.model_name} device={prep.device} threads={threads} "
                f"processes={state.num_processes} images={args.num_images} steps={prep.steps} "
                f"seed={args.seed} seed_sets={args.seed_sets} guidance={prep.guidance} "
                f"methods={', '.join(m.label for m in prep.methods)}",
                file=sys.stderr,
            )
        result = run_bench(
            prep.pipe, prep.methods, num_images=args.num_images, steps=prep.steps, seed=args.seed,
            guidance=prep.guidance, batch_size=args.batch_size, seed_sets=args.seed_sets,
            repeats=args.repeats, warmup=args.warmup, timing_images=args.timing_images,
            extractor=prep.extractor, reference_stats=prep.reference_stats, fd_name=prep.fd_name,
            device=prep.device, state=state, num_classes=prep.num_classes, lpips=args.lpips,
            progress=not args.quiet,
            meta={"model": prep.model_name, "scheduler": prep.scheduler},
        )
    except BenchInputError as exc:
        print(f"accel bench: error: {exc}", file=sys.stderr)
        return 2
    if result is None:  # non-main process
        return 0
    result.notes[:0] = prep.notes
    write_outputs(Path(args.out), result)
    print(report.format_table(result.records))
    for n in result.notes:
        print(f"note: {n}")
    print(f"peak memory: {result.meta.get('memory_kind') or 'unavailable'}; "
          f"threads: {result.meta['threads']}; wrote {args.out}/results.json, results.csv, "
          "pareto.png, grid.png")
    return 0
