"""The registry: class name -> `Family` (filled by `register`, the table in `table.py` and users), and
`family_of`, which falls back to auto-detection (`detection.py`) for a class with no entry."""

from __future__ import annotations

import warnings

import torch

from .detection import detect
from .types import Family

_FAMILIES: dict[str, Family] = {}
_DETECTED: dict[type, Family] = {}


def register(family: Family) -> Family:
    """Add a family; its `class_name` is matched against the model's class and bases."""
    _FAMILIES[family.class_name] = family
    return family


def supported_classes() -> list[str]:
    return sorted({f.class_name for f in _FAMILIES.values()})


def registered_families() -> list[Family]:
    """Every registered family once, sorted by class name."""
    return sorted({id(f): f for f in _FAMILIES.values()}.values(), key=lambda f: f.class_name)


def family_of(model: torch.nn.Module) -> Family:
    """The registered family of `model`, else one `detect` reads from it (with a one-line notice),
    else `UnsupportedModelError` saying what could not be determined."""
    for cls in type(model).__mro__:
        if cls.__name__ in _FAMILIES:
            return _FAMILIES[cls.__name__]
    fam = _DETECTED.get(type(model))
    if fam is None:
        fam = detect(model)
        _DETECTED[type(model)] = fam
        names = ", ".join(f"{s.attr}[{len(getattr(model, s.attr))}]" for s in fam.stacks)
        warnings.warn(
            f"accel: {type(model).__name__} is not registered; auto-detected blocks {names}, run in that "
            "order; each block's return pattern is learned on its first call. Block caches only; register "
            "it for token methods and pruning (accel.families.register, see its docstring).", stacklevel=3)
    return fam
