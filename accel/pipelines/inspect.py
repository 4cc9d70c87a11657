"""What accel would do with a model, read without running it (`accel inspect MODEL`).

For a pipeline folder, a hub id already in the local Hugging Face cache (never downloaded), a
folder of one transformer, or an embedded model (``default``, ``flow``): which transformer(s) the
pipeline calls, whether each is registered, auto-detected or unsupported, which methods apply to
it and which presets it gets. Only ``model_index.json`` and each transformer's ``config.json`` are
read; the transformer is built on the meta device (no weights, no memory), so this takes about a
second and generates nothing.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import ModelNotFoundError, UnsupportedModelError
from ..readers import ReadError, read_json

MAX_CONFIG_BYTES = 1 << 20  # a model_index.json / config.json is a few KiB; anything larger is not one


@dataclass
class TransformerReport:
    """One transformer a pipeline calls, as accel sees it."""

    attr: str  # the pipeline attribute: transformer, transformer_2, ...
    class_name: str
    support: str  # "registered", "auto-detected" or "unsupported"
    why: str | None = None  # what could not be determined (unsupported)
    family: str | None = None
    blocks: list[tuple[str, int]] = field(default_factory=list)  # (block list, count) accel acts on
    methods: dict[str, str | None] = field(default_factory=dict)  # method -> None (applies) or why not
    presets: str | None = None  # where its presets were measured (accel.presets.provenance)

    def as_dict(self) -> dict[str, Any]:
        return {"attr": self.attr, "class": self.class_name, "support": self.support, "why": self.why,
                "family": self.family, "blocks": [{"attr": a, "count": n} for a, n in self.blocks],
                "methods": self.methods, "presets": self.presets}


@dataclass
class ModelReport:
    name: str
    source: str  # the folder read, or "embedded"
    pipeline: str | None  # the pipeline class, None for a transformer folder
    transformers: list[TransformerReport]

    def as_dict(self) -> dict[str, Any]:
        return {"model": self.name, "source": self.source, "pipeline": self.pipeline,
                "transformers": [t.as_dict() for t in self.transformers]}


def _read_json(path: Path) -> dict:
    """A diffusers config through accel's one bounded reader (size, depth; diffusers' own files may hold
    -Infinity, so non-finite numbers are allowed here)."""
    try:
        doc = read_json(path, what="config", max_bytes=MAX_CONFIG_BYTES, finite=False)
    except ReadError as exc:
        raise UnsupportedModelError(str(exc)) from None
    if not isinstance(doc, dict):
        raise UnsupportedModelError(f"{path} is not a JSON object")
    return doc


def find_folder(name: str) -> Path:
    """The local folder of ``name``: a path as given, else a hub id's snapshot in the Hugging Face cache
    (never downloaded); ModelNotFoundError when neither is on this machine."""
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise UnsupportedModelError(f"{name} is a file; give a pipeline folder, a transformer folder or a hub id")
    if name.startswith((".", "/", "~")) or name.count("/") != 1:
        raise ModelNotFoundError(f"no such folder: {name} (a hub id looks like 'org/name')")
    from huggingface_hub import try_to_load_from_cache

    for file in ("model_index.json", "config.json"):
        hit = try_to_load_from_cache(name, file)
        if isinstance(hit, str):
            return Path(hit).parent
    raise ModelNotFoundError(
        f"{name!r} is not a local folder and is not in the Hugging Face cache "
        f"({os.environ.get('HF_HOME', '~/.cache/huggingface')}); accel never downloads. On a machine with "
        f"internet run `huggingface-cli download {name} --local-dir DIR`, copy DIR here and pass its path.")


def meta_transformer(folder: Path) -> torch.nn.Module:
    """The transformer of ``folder/config.json`` built on the meta device (its modules, no weights)."""
    import diffusers

    config = _read_json(folder / "config.json")
    cls_name = config.get("_class_name")
    cls = getattr(diffusers, str(cls_name), None)
    if not isinstance(cls, type) or not issubclass(cls, torch.nn.Module):
        raise UnsupportedModelError(f"{folder / 'config.json'}: {cls_name!r} is not a diffusers model class")
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cls.from_config(config)


def describe_transformer(attr: str, model: torch.nn.Module) -> TransformerReport:
    """Support, blocks, methods and presets of one transformer module (meta or real)."""
    import accel

    from ..families import blocks_of, family_of
    from ..presets import provenance

    name = type(model).__name__
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # family_of's auto-detection notice: said in `support` instead
            fam = family_of(model)
            refs = blocks_of(model)
    except (UnsupportedModelError, ValueError, TypeError, AttributeError) as exc:
        text = " ".join(str(exc).split())
        return TransformerReport(attr, name, "unsupported", why=text.split(". Supported classes")[0])
    counts: dict[str, int] = {}
    for ref in refs:
        counts[ref.stack.attr] = counts.get(ref.stack.attr, 0) + 1
    methods: dict[str, str | None] = {}
    for method, cls in accel.methods().items():
        if not getattr(cls, "accelerates", True):
            continue
        try:
            fam.check(cls.kind, method)
            methods[method] = None
        except ValueError as exc:
            methods[method] = " ".join(str(exc).split())
    methods["prune"] = None if fam.prunable else (
        "auto-detected models cannot be pruned" if fam.detected else "its block lists have no depth key in the config")
    return TransformerReport(attr, name, "auto-detected" if fam.detected else "registered", family=fam.name,
                             blocks=list(counts.items()), methods=methods, presets=provenance(fam.name))


def inspect_model(name: str) -> ModelReport:
    """What accel would do with ``name`` (see the module docstring); raises ModelNotFoundError /
    UnsupportedModelError with a one-line reason for what it cannot read."""
    from ..api import transformers_of
    from ..models.lineage import is_embedded, load_embedded

    if is_embedded(name):
        pipe = load_embedded(name)
        reports = [describe_transformer(attr, m) for attr, m in transformers_of(pipe)]
        return ModelReport(name, "embedded", type(pipe).__name__, reports)
    folder = find_folder(name)
    if (folder / "model_index.json").is_file():
        index = _read_json(folder / "model_index.json")
        attrs = sorted(k for k, v in index.items() if (k == "transformer" or (k.startswith("transformer_")
                       and k[12:].isdigit())) and isinstance(v, list) and v and v[0] is not None)
        if not attrs:
            raise UnsupportedModelError(f"{folder}: the pipeline {index.get('_class_name')} has no transformer "
                                        "(a UNet pipeline?); accel accelerates diffusion transformers")
        reports = []
        for attr in attrs:
            try:
                reports.append(describe_transformer(attr, meta_transformer(folder / attr)))
            except (UnsupportedModelError, OSError, TypeError, ValueError) as exc:
                cls = index[attr][1] if isinstance(index[attr], list) and len(index[attr]) > 1 else "?"
                reports.append(TransformerReport(attr, str(cls), "unsupported", why=" ".join(str(exc).split())))
        return ModelReport(name, str(folder), str(index.get("_class_name")), reports)
    if (folder / "config.json").is_file():
        return ModelReport(name, str(folder), None, [describe_transformer("(folder)", meta_transformer(folder))])
    raise UnsupportedModelError(f"{folder} has neither model_index.json (a pipeline) nor config.json (a transformer)")


def format_report(report: ModelReport) -> str:
    """The text `accel inspect` prints."""
    from ..presets import NAMES

    lines = [f"{report.name}: " + (f"{report.pipeline} " if report.pipeline else "a transformer folder ")
             + f"({report.source})"]
    for t in report.transformers:
        lines.append(f"  {t.attr}: {t.class_name}: {t.support}" + (f" as family {t.family!r}" if t.family else ""))
        if t.why:
            lines.append(f"    why: {t.why}")
            continue
        lines.append("    blocks: " + ", ".join(f"{a}[{n}]" for a, n in t.blocks))
        ok = [m for m, why in t.methods.items() if why is None]
        lines.append(f"    methods: {', '.join(ok) or '(none)'}")
        for m, why in t.methods.items():
            if why is not None:
                lines.append(f"    not {m}: {why}")
        lines.append(f"    presets {', '.join(NAMES)}: {t.presets}")
    return "\n".join(lines)
