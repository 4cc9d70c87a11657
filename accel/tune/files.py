"""`tune.json`: what `accel tune` writes, and how a tuned config is loaded back.

    {"schema": "accel-tune/1", "budget": {...}, "workload": {...},
     "chosen": {"model": null | "PRUNED_DIR", "methods": [{"name": "interval-cache", "params": {...}}],
                "key": "...", "calibration": {...}, "holdout": {...}} | null,
     "front": [...], "history": [...], "notes": [...], "meta": {...}}

``accel.load_configs(path)`` turns ``chosen`` (or any ``{"methods": [...]}`` document, e.g. a
preset written out) into method configs for ``accel.apply(pipe, *configs)``; ``accel bench
--config tune.json`` adds it as a row.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..config import MethodConfig

SCHEMA = "accel-tune/1"


class ConfigFileError(ValueError):
    """A tune/config file that cannot be read into method configs (the message says why)."""


def read_choice(path: str | Path) -> dict[str, Any]:
    """The chosen ``{"model", "methods"}`` of a tune.json (or a bare ``{"methods": [...]}`` file)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigFileError(f"config file {p} does not exist (write one with `accel tune ... --out {p}`)")
    try:
        doc = json.loads(p.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigFileError(f"config file {p} is not valid JSON ({exc.msg}, line {exc.lineno})") from None
    if not isinstance(doc, dict):
        raise ConfigFileError(f"config file {p}: expected a JSON object")
    choice = doc.get("chosen", doc) if "chosen" in doc else doc
    if choice is None:
        raise ConfigFileError(f"{p}: the tune run found no config inside its budget (chosen is null); see its front")
    if not isinstance(choice, dict) or not isinstance(choice.get("methods"), list):
        raise ConfigFileError(f"{p}: expected {{'chosen': {{'methods': [{{'name', 'params'}}, ...]}}}}")
    return choice


def configs_from_choice(choice: dict[str, Any], where: str = "config") -> list[MethodConfig]:
    import accel

    registry = accel.methods()
    out = []
    for m in choice["methods"]:
        name = m.get("name") if isinstance(m, dict) else None
        if name not in registry:
            raise ConfigFileError(f"{where}: unknown method {name!r}; available: {', '.join(sorted(registry))}")
        try:
            out.append(registry[name](**dict(m.get("params") or {})))
        except (TypeError, ValueError) as exc:
            raise ConfigFileError(f"{where}: invalid settings for {name!r}: {exc}") from None
    return out


def load_configs(path: str | Path) -> list[MethodConfig]:
    """Method configs of a tune.json's chosen config: ``accel.apply(pipe, *accel.load_configs(path))``.

    When the tune run chose a pruned model (``chosen["model"]``), apply them to that folder's
    pipeline (`accel.pipelines.load_pipeline`); `read_choice` gives the folder.
    """
    return configs_from_choice(read_choice(path), str(path))


def write_tune_json(path: str | Path, doc: dict[str, Any]) -> Path:
    """Strict JSON (non-finite numbers become null), written atomically."""
    import math
    import os

    def clean(x: Any) -> Any:
        if isinstance(x, float) and not math.isfinite(x):
            return None
        if isinstance(x, dict):
            return {str(k): clean(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [clean(v) for v in x]
        return x

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp")
    tmp.write_text(json.dumps(clean({"schema": SCHEMA, **doc}), indent=2, allow_nan=False) + "\n")
    os.replace(tmp, p)
    return p
