"""Named presets: ``accel.apply(pipe, *accel.preset("balanced", pipe))``.

A preset is a stack of method settings per model family, taken from `accel tune` runs
(the runs, their budgets and the numbers each preset achieved are in
``benchmarks/results/presets.json`` and the README). ``fast`` is the fastest setting found
inside a 10% FD-digits budget on the default model, ``balanced`` inside 5%, ``quality``
inside 30 dB PSNR to the uncached images. Families the tune runs could not measure on real
weights (PixArt, SD3, Flux, Sana: only tiny random-init instances exist offline) get the same
block-cache settings, which do not depend on the architecture, and no token method, whose
effect on quality does; tune on your own model for more (`accel tune --model PATH`).

Only methods that need no calibration are used, so a preset works with ``accel.apply`` alone.
"""

from __future__ import annotations

from typing import Any

from .config import MethodConfig
from .families import family_of

NAMES = ("fast", "balanced", "quality")

# family -> preset -> [(method cli name, settings)]
_CACHE_ONLY: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "fast": [("interval-cache", {"interval": 3, "warmup": 1, "forecast": 1})],
    "balanced": [("interval-cache", {"interval": 2, "warmup": 1, "forecast": 1})],
    "quality": [("delta-cache", {"interval": 2, "cached_blocks": 0.75, "forecast": 0})],
}
PRESETS: dict[str, dict[str, list[tuple[str, dict[str, Any]]]]] = {
    "dit": {
        "fast": [("interval-cache", {"interval": 3, "warmup": 1, "forecast": 1})],
        "balanced": [("interval-cache", {"interval": 2, "warmup": 1, "forecast": 1})],
        "quality": [("delta-cache", {"interval": 2, "cached_blocks": 0.75, "forecast": 0})],
    },
    "pixart": _CACHE_ONLY,
    "sd3": _CACHE_ONLY,
    "flux": _CACHE_ONLY,
    "sana": _CACHE_ONLY,
}


def preset(name: str, pipe_or_model: Any) -> list[MethodConfig]:
    """The method configs of preset ``name`` ("fast", "balanced", "quality") for this model's family."""
    import accel
    from .api import resolve

    if name not in NAMES:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(NAMES)}")
    _, model = resolve(pipe_or_model)
    fam = family_of(model).name
    registry = accel.methods()
    return [registry[m](**params) for m, params in PRESETS.get(fam, _CACHE_ONLY)[name]]
