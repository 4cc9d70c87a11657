"""`tune.json`: what `accel tune` writes, and how a tuned config is loaded back.

    {"schema": "accel-tune/1", "budget": {...}, "workload": {...},
     "chosen": {"model": null | "PRUNED_DIR", "methods": [{"name": "interval-cache", "params": {...}}],
                "key": "...", "calibration": {...}, "holdout": {...}} | null,
     "front": [...], "history": [...], "notes": [...], "meta": {...}}

``accel.load_configs(path)`` turns ``chosen`` (or any ``{"methods": [...]}`` document, e.g. a
preset written out) into method configs (a ``schema`` other than ``accel-tune/1`` is refused:
a file of another format version is not read as if it were this one) for ``accel.apply(pipe, *configs)``; ``accel bench
--config tune.json`` adds it as a row.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..config import MethodConfig
from ..outputs import write_json_atomic
from ..readers import ReadError, read_json

SCHEMA = "accel-tune/1"


class ConfigFileError(ValueError):
    """A tune/config file that cannot be read into method configs (the message says why)."""


def read_choice(path: str | Path) -> dict[str, Any]:
    """The chosen ``{"model", "methods"}`` of a tune.json (or a bare ``{"methods": [...]}`` file)."""
    p = Path(path)
    if p.is_dir():
        raise ConfigFileError(f"config file {p} is a directory; give the tune.json inside it")
    if not p.is_file():
        raise ConfigFileError(f"config file {p} does not exist (write one with `accel tune ... --out {p}`)")
    try:
        doc = read_json(p, what="config file")
    except ReadError as exc:
        raise ConfigFileError(str(exc)) from None
    if not isinstance(doc, dict):
        raise ConfigFileError(f"config file {p}: expected a JSON object")
    if "schema" in doc and doc["schema"] != SCHEMA:
        raise ConfigFileError(f"config file {p}: schema {_short(repr(doc['schema']))} is not {SCHEMA!r}, the "
                              "only format this accel reads (written by another accel version? re-run `accel tune`)")
    choice = doc.get("chosen", doc) if "chosen" in doc else doc
    if choice is None:
        raise ConfigFileError(f"{p}: the tune run found no config inside its budget (chosen is null); see its front")
    if not isinstance(choice, dict) or not isinstance(choice.get("methods"), list):
        raise ConfigFileError(f"{p}: expected {{'chosen': {{'methods': [{{'name', 'params'}}, ...]}}}}")
    if choice.get("model") is not None and not isinstance(choice["model"], str):
        raise ConfigFileError(f"{p}: chosen model must be a folder name or null, got {_short(choice['model'])}")
    return choice


def configs_from_choice(choice: dict[str, Any], where: str = "config") -> list[MethodConfig]:
    import accel

    registry = accel.methods()
    out = []
    for i, m in enumerate(choice["methods"]):
        if not isinstance(m, dict):
            raise ConfigFileError(f"{where}: methods[{i}] must be an object {{'name': ..., 'params': {{...}}}}, "
                                  f"got {_short(m)}")
        name = m.get("name")
        if not isinstance(name, str) or name not in registry:
            raise ConfigFileError(f"{where}: methods[{i}]: unknown method {_short(repr(name))}; "
                                  f"available: {', '.join(sorted(registry))}")
        params = m.get("params") or {}
        if not isinstance(params, dict):
            raise ConfigFileError(f"{where}: methods[{i}] ({name}): params must be an object, got {_short(params)}")
        try:
            out.append(registry[name](**params))
        except (TypeError, ValueError, RecursionError) as exc:
            raise ConfigFileError(f"{where}: invalid settings for {name!r}: {_short(str(exc), 200)}") from None
    return out


def _short(x: Any, n: int = 60) -> str:
    """One line of at most ~n characters naming a bad value (a file may hold a huge one)."""
    try:
        text = " ".join((x if isinstance(x, str) else repr(x)).split())
    except RecursionError:
        text = f"a deeply nested {type(x).__name__}"
    return text if len(text) <= n else text[: n - 3] + "..."


def load_configs(path: str | Path) -> list[MethodConfig]:
    """Method configs of a tune.json's chosen config: ``accel.apply(pipe, *accel.load_configs(path))``.

    When the tune run chose a pruned model (``chosen["model"]``), apply them to that folder's
    pipeline (`accel.pipelines.load_pipeline`); `read_choice` gives the folder.
    """
    return configs_from_choice(read_choice(path), str(path))


def write_tune_json(path: str | Path, doc: dict[str, Any]) -> Path:
    """Strict JSON (non-finite numbers become null), written atomically."""
    import math

    def clean(x: Any) -> Any:
        if isinstance(x, float) and not math.isfinite(x):
            return None
        if isinstance(x, dict):
            return {str(k): clean(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [clean(v) for v in x]
        return x

    return write_json_atomic(path, clean({"schema": SCHEMA, **doc}))
