"""Named presets: ``accel.apply(pipe, "balanced")`` (or ``accel.apply(pipe, *accel.preset("balanced", pipe))``).

A preset is a stack of method settings per model family, read off `accel tune`'s exhaustive
comparison on the default model (benchmarks/tune_search.py, results in
``benchmarks/results/tune_search.json``; the numbers each preset achieved are in the README):
``fast`` is the fastest setting inside a +10% FD-digits budget, ``balanced`` inside +5% (and
30 dB PSNR), ``quality`` the fastest above 35 dB PSNR to the uncached images. On that model no
token method improved a stack at any budget, so the presets are block-cache settings, which
carry over between architectures; PixArt, Flux and Sana have no real weights offline to tune on and
get the same settings. SD3-family models get the settings measured on the embedded flow model (an
SD3 transformer), where delta-cache with forecast is ahead of interval-cache. Tune on your own model for more (`accel tune --model PATH`).

Only methods that need no calibration are used, so a preset works with ``accel.apply`` alone,
on a pipeline or a bare transformer. Every family gets presets; where they were measured is
said by `provenance` and shows in the handle's repr and ``.stats()["preset"]``: "tuned on:
embedded digits DiT (DiT blocks)", "tuned on: embedded flow model (SD3 blocks)", or, for every
other family, "generic cache settings".
"""

from __future__ import annotations

from typing import Any, Sequence

from .config import MethodConfig
from .families import family_of, resolve

NAMES = ("fast", "balanced", "quality")

# family -> preset -> [(method cli name, settings)]; measured numbers: README "Stacking, accel tune and presets"
_CACHE_ONLY: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "fast": [("interval-cache", {"interval": 4, "warmup": 1, "forecast": 0})],
    "balanced": [("interval-cache", {"interval": 3, "warmup": 1, "forecast": 1})],
    "quality": [("interval-cache", {"interval": 2, "warmup": 1, "forecast": 1})],
}
# SD3 (MMDiT) blocks, read off the embedded flow model's caching frontiers (benchmarks/caching.py --workload
# flow8 / flow28, 200 paired images; README "Stacking"): delta-cache with forecast 1 is ahead of interval-cache
# there at every speed (flow8: 2.67x 32.1 dB FD-digits +1.5% vs interval 3 + forecast 1: 2.0x 30.0 dB +3.6%)
_SD3: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "fast": [("delta-cache", {"interval": 4, "cached_blocks": 0.9, "forecast": 1})],
    "balanced": [("delta-cache", {"interval": 3, "cached_blocks": 1.0, "forecast": 1})],
    "quality": [("delta-cache", {"interval": 2, "cached_blocks": 0.75, "forecast": 1})],
}
# family -> (its presets, where they were measured); every other family: GENERIC
PRESETS: dict[str, tuple[dict[str, list[tuple[str, dict[str, Any]]]], str]] = {
    # benchmarks/tune_search.py on the default model (20 DPM-Solver++ steps): every stack with a token
    # method was slower or worse than the cache alone at each budget, so the presets are cache-only
    "dit": (_CACHE_ONLY, "tuned on: embedded digits DiT (DiT blocks)"),
    "sd3": (_SD3, "tuned on: embedded flow model (SD3 blocks)"),
}
GENERIC = (_CACHE_ONLY, "generic cache settings (measured on the embedded digits DiT, not on this family; "
                        "`accel tune --model PATH` tunes them on yours)")


def provenance(family: str) -> str:
    """Where the presets of ``family`` (a family name, e.g. "flux") were measured, in one line."""
    return PRESETS.get(family, GENERIC)[1]


def describe(family: str, configs: Sequence[MethodConfig]) -> str | None:
    """"preset NAME, <provenance>" when ``configs`` are exactly a preset of ``family``, else None."""
    import accel

    registry = accel.methods()
    table = PRESETS.get(family, GENERIC)[0]
    for name in NAMES:
        if list(configs) == [registry[m](**params) for m, params in table[name]]:
            return f"preset {name}, {provenance(family)}"
    return None


def preset(name: str, pipe_or_model: Any) -> list[MethodConfig]:
    """The method configs of preset ``name`` ("fast", "balanced", "quality") for this model's family
    (a registered, auto-detected or unknown-to-the-table family: the generic settings)."""
    import accel

    if name not in NAMES:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(NAMES)}")
    _, model = resolve(pipe_or_model)
    fam = family_of(model).name
    registry = accel.methods()
    return [registry[m](**params) for m, params in PRESETS.get(fam, GENERIC)[0][name]]
