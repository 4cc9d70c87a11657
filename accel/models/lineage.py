"""The named models shipped inside accel, and self-describing folders derived from them.

``EMBEDDED_MODELS`` is the one place where a name such as ``"default"`` (``--model default``)
resolves to a loader in :mod:`accel.models`; adding a second embedded model is one entry there.

A pruned or distilled copy of an embedded model still draws 32x32 digits: FD-digits applies
to it as to its source. `accel prune` / `accel distill` write `DIR/accel_model.json` saying so
(:func:`lineage_marker`), with the embedded model it comes from (``"embedded"``) and that model's
sampler. A folder from the default model is a 10-class digits DiT: `is_digits_model(DIR)` reads
the marker and `load_digits_model(DIR)` loads it the way `load_default_pipeline` loads the
embedded weights. A folder from the flow model is a stock SD3 pipeline folder that loads with
plain diffusers; :func:`embedded_root` names its source, so the bench asks it for digits with the
flow model's prompts, text length and steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..readers import Field, ReadError, check_fields, read_json

MARKER_FILE = "accel_model.json"
DIGITS_KIND = "accel-digits"  # a class-conditional digits DiT (from the default model)
TEXT_DIGITS_KIND = "accel-text-digits"  # a text-to-digits pipeline (from the flow model)


@dataclass(frozen=True)
class EmbeddedModel:
    """A model whose weights ship with accel, by the names of its pieces in `accel.models`.

    Every embedded model generates 32x32 digits, so FD-digits applies to all of them.
    `loader`: called as ``loader(device=..., dtype=...)``, plus ``scheduler=NAME`` when one is asked
    for (a loader without that parameter keeps its own scheduler and refuses --scheduler).
    `sampler`: a dict of its sampler defaults (``steps``, ``guidance_scale``, optionally ``scheduler``).
    `digits_dit`: a class-conditional digits DiT; folders pruned from it stay digits models
    (``accel_model.json``) and the digits training set distils them.
    `prompts`: for a text-to-image model, a function returning its own prompts (used for
    calibration and by the bench when no --prompts is given).
    `bench_steps`: an int constant giving the steps of `accel bench` without --steps (None: the
    bench's default, 20), so that the no-flag run fits 10 minutes on 2 CPU cores.
    `call_keys`: sampler entries passed to every pipeline call (e.g. the flow model's short
    ``max_sequence_length``).
    """

    loader: str
    sampler: str
    digits_dit: bool = True
    prompts: str | None = None
    bench_steps: str | None = None
    call_keys: tuple[str, ...] = ()


# --model NAME -> the embedded model it names; a new embedded model is one entry here
EMBEDDED_MODELS: dict[str, EmbeddedModel] = {
    "default": EmbeddedModel("load_default_pipeline", "DEFAULT_SAMPLER"),
    "flow": EmbeddedModel("load_flow_pipeline", "FLOW_SAMPLER", digits_dit=False, prompts="flow_prompts",
                          bench_steps="FLOW_BENCH_STEPS", call_keys=("max_sequence_length",)),
}


def is_embedded(name: Any) -> bool:
    """True when `name` names a model shipped with accel (``"default"``, ...)."""
    return isinstance(name, (str, Path)) and str(name) in EMBEDDED_MODELS


def load_embedded(name: str, scheduler: str | None = None, device: Any = "cpu",
                  dtype: torch.dtype = torch.float32) -> Any:
    """The pipeline of an embedded model (``scheduler=None``: its own sampler's)."""
    import inspect

    from accel import models as M
    from accel.errors import SettingError

    entry = EMBEDDED_MODELS[str(name)]
    loader = getattr(M, entry.loader)
    kwargs: dict[str, Any] = {"device": device, "dtype": dtype}
    takes = "scheduler" in inspect.signature(loader).parameters
    if scheduler is not None and (takes or scheduler != getattr(M, entry.sampler).get("scheduler")):
        if not takes:
            raise SettingError("scheduler", f"{scheduler!r}: the {name} model samples with its own scheduler; "
                                            "leave the scheduler out")
        kwargs["scheduler"] = scheduler
    return loader(**kwargs)


def embedded_root(model: Any) -> str | None:
    """The embedded model `model` is or was pruned / distilled from (``"default"``, ``"flow"``); None otherwise.

    Markers written before the flow model existed name no ``"embedded"``: their kind says "default"."""
    if is_embedded(model):
        return str(model)
    if not isinstance(model, (str, Path)):
        return None
    marker = read_marker(model)
    if marker is None:
        return None
    root = marker.get("embedded", "default" if marker.get("kind") == DIGITS_KIND else None)
    return root if isinstance(root, str) and root in EMBEDDED_MODELS else None


def embedded_prompts(name: Any) -> list[str] | None:
    """The own prompts of an embedded text-to-image model, or of a folder derived from one; None otherwise."""
    from accel import models as M

    root = embedded_root(name)
    entry = EMBEDDED_MODELS[root] if root is not None else None
    return list(getattr(M, entry.prompts)()) if entry is not None and entry.prompts else None


def bench_settings(name: Any) -> tuple[int | None, dict[str, Any]]:
    """(steps of a no-flag `accel bench`, extra pipeline-call kwargs) of an embedded model or a folder derived
    from one; (None, {}) otherwise."""
    from accel import models as M

    root = embedded_root(name)
    if root is None:
        return None, {}
    entry = EMBEDDED_MODELS[root]
    sampler = sampler_defaults(name)
    steps = int(getattr(M, entry.bench_steps)) if entry.bench_steps else None
    return steps, {k: sampler[k] for k in entry.call_keys if k in sampler}


def lineage_marker(derived_from: str) -> dict[str, Any] | None:
    """Content of `accel_model.json` for a folder pruned / distilled from `derived_from` (an embedded model or
    a folder derived from one); None when `derived_from` is neither (the folder is then a plain pipeline).
    The sampler is the source's (the default model's for an old marker that names none)."""
    from accel.models import DEFAULT_SAMPLER

    root = embedded_root(derived_from)
    if root is None:
        return None
    sampler = sampler_defaults(derived_from) or dict(DEFAULT_SAMPLER)
    kind = DIGITS_KIND if EMBEDDED_MODELS[root].digits_dit else TEXT_DIGITS_KIND
    out = {"kind": kind, "embedded": root, "image_size": 32, "sampler": sampler, "derived_from": derived_from}
    if kind == DIGITS_KIND:
        out["num_classes"] = 10
    return out


def digits_marker(derived_from: str) -> dict[str, Any]:
    """`lineage_marker` of a folder derived from the default digits DiT (or from a folder derived from it)."""
    out = lineage_marker(derived_from)
    if out is None or out["kind"] != DIGITS_KIND:
        raise ValueError(f"{derived_from} is not the default digits model or a folder derived from it")
    return out


def _marker_fields() -> dict[str, Field]:
    return {"kind": Field(str, required=True, choices=(DIGITS_KIND, TEXT_DIGITS_KIND)),
            "embedded": Field(str, choices=tuple(EMBEDDED_MODELS)), "derived_from": Field(str),
            "image_size": Field(int, low=1, high=4096), "num_classes": Field(int, low=1, high=1_000_000),
            "sampler": Field(dict)}


# what a marker's sampler may hold: the keys of the embedded models' samplers, each in a sane range
SAMPLER_FIELDS = {"scheduler": Field(str), "steps": Field(int, low=1, high=10_000),
                  "guidance_scale": Field(float, low=0, high=1000), "shift": Field(float, low=1e-3, high=1000),
                  "max_sequence_length": Field(int, low=1, high=100_000)}


def read_marker(path: str | Path) -> dict[str, Any] | None:
    """The folder's `accel_model.json` checked against its schema (kind, embedded model, sampler values
    finite and in range), or None when the folder has none. A marker that is there but unreadable, of
    an unknown kind or tampered with raises ReadError (one line naming the file) rather than being
    ignored: the folder would otherwise load as some other model."""
    f = Path(path) / MARKER_FILE
    if not f.exists():
        return None
    where = f"model marker {f}"
    doc = read_json(f, what="model marker", fields=_marker_fields())
    if "sampler" in doc:
        check_fields(doc["sampler"], SAMPLER_FIELDS, where=f"{where}: sampler")
    root = doc.get("embedded")
    if root is not None and EMBEDDED_MODELS[root].digits_dit != (doc["kind"] == DIGITS_KIND):
        raise ReadError(where, f"kind {doc['kind']!r} is not what the embedded {root} model makes")
    return doc


def sampler_defaults(model: str | Path) -> dict[str, Any]:
    """The sampler an embedded model or a folder derived from one was made for (the folder's
    `accel_model.json` ``sampler``); {} for any other model."""
    from accel import models as M

    if is_embedded(model):
        return dict(getattr(M, EMBEDDED_MODELS[str(model)].sampler))
    root = embedded_root(model)
    if root is None:
        return {}
    sampler = (read_marker(model) or {}).get("sampler")
    return dict(sampler) if isinstance(sampler, dict) and sampler else dict(getattr(M, EMBEDDED_MODELS[root].sampler))


def is_digits_model(path: str | Path) -> bool:
    """True when `path` names an embedded digits DiT or a pipeline folder derived from one (a 10-class digits DiT)."""
    if not isinstance(path, (str, Path)) or is_embedded(path):
        return is_embedded(path) and EMBEDDED_MODELS[str(path)].digits_dit
    marker = read_marker(path)
    return marker is not None and marker.get("kind") == DIGITS_KIND


def load_digits_model(path: str | Path, scheduler: str | None = None, device: Any = "cpu",
                      dtype: torch.dtype = torch.float32) -> Any:
    """A digits pipeline folder as `accel.models.load_default_pipeline` would build it.

    `scheduler`: None keeps the folder's own scheduler; "dpm++", "ddim", "ddpm" or
    "euler" builds that scheduler on the training noise schedule. An embedded model's name
    (`path="default"`) loads that model itself, so callers can treat every digits model
    alike: `if is_digits_model(m): pipe = load_digits_model(m, ...)`.
    """
    from diffusers import DiTPipeline, DiTTransformer2DModel

    from accel import models as M

    if is_embedded(path):
        return load_embedded(str(path), scheduler=scheduler, device=device, dtype=dtype)
    path = Path(path)
    if not is_digits_model(path):
        raise ValueError(f"{path} is not a pipeline folder derived from the default digits model "
                         f"(no {MARKER_FILE} with kind {DIGITS_KIND!r})")
    transformer = DiTTransformer2DModel.from_pretrained(path / "transformer", dtype=dtype).eval()
    if scheduler is None:  # the folder's own scheduler
        import diffusers

        f = path / "scheduler" / "scheduler_config.json"
        try:
            cfg = read_json(f, finite=False)  # diffusers writes e.g. lambda_min_clipped: -Infinity
            cls = getattr(diffusers, str(cfg["_class_name"]), None) if isinstance(cfg, dict) else None
        except ReadError as exc:
            raise ValueError(f"{f}: not a readable scheduler config ({exc.problem})") from None
        except KeyError as exc:
            raise ValueError(f"{f}: not a readable scheduler config (no {exc})") from None
        if not (isinstance(cls, type) and issubclass(cls, diffusers.SchedulerMixin)):
            name = cfg.get("_class_name") if isinstance(cfg, dict) else None
            raise ValueError(f"{f}: _class_name {name!r} is not a diffusers scheduler")
        try:
            sched = cls.from_config(cfg)
        except (TypeError, ValueError, KeyError, NotImplementedError) as exc:
            raise ValueError(f"{f}: {type(exc).__name__}: {exc}") from None
    else:
        sched = M.make_scheduler(scheduler)
    cls = getattr(M, "DigitsDiTPipeline", DiTPipeline)
    pipe = cls(transformer=transformer, vae=M.IdentityVAE(), scheduler=sched,
               id2label={i: str(i) for i in range(10)})
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)
