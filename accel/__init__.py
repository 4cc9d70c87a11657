"""accel: measured acceleration for diffusers diffusion transformers.

    handle = accel.apply(pipe, "balanced")   # a preset, "delta-cache", "delta-cache:interval=3", a config object
    images = pipe(...)                        # the pipeline is called exactly as before
    handle.stats(); handle.remove()
"""

from __future__ import annotations

from typing import Any

from . import _omp  # noqa: F401  (first: the CLI's OpenMP wait policy must be set before torch loads)
from .api import apply
from .attention import AttentionConfig
from .compiling import Compiled, compile
from .config import MethodConfig, registered_methods
from .errors import (
    AccelError,
    AlreadyAcceleratedError,
    BackendUnavailableError,
    ModelNotFoundError,
    UnsupportedMethodError,
    UnsupportedModelError,
)
from .families import BlockStack, Family, register
from .handles import Handle, PipelineHandle
from .trace import TraceConfig

__version__ = "0.1.0"


def methods() -> dict[str, type[MethodConfig]]:
    """CLI name -> config class of every method (utilities have `accelerates = False`)."""
    _load_methods()
    return registered_methods()


def _load_methods() -> None:
    """Import the method subpackages so their `@register_method` runs."""
    import importlib

    for mod in ("accel.caching", "accel.tokens"):
        importlib.import_module(mod)


def preset(name: str, pipe_or_model: Any) -> list[MethodConfig]:
    """Configs of a named preset ("fast", "balanced", "quality") for this model's family (accel/presets.py)."""
    from .presets import preset as _preset

    return _preset(name, pipe_or_model)


def load_configs(path: Any) -> list[MethodConfig]:
    """Method configs of an `accel tune` result (tune.json's chosen config) for `accel.apply`."""
    from .tune.files import load_configs as _load

    return _load(path)


def default_pipeline(**kwargs: Any):
    """The embedded default model's stock `DiTPipeline` (see `accel.models`)."""
    from .models import load_default_pipeline

    return load_default_pipeline(**kwargs)


# Method configs of the subpackages, reachable as `accel.TomeConfig` etc. without importing them
# (and torch-heavy code) at `import accel`: loaded on first use.
_LAZY = {
    "DeltaCacheConfig": "accel.caching", "IntervalCacheConfig": "accel.caching",
    "ResidualCacheConfig": "accel.caching", "ScheduleCacheConfig": "accel.caching",
    "calibrate_schedule": "accel.caching",
    "DiffRateConfig": "accel.tokens", "TocaConfig": "accel.tokens", "TomeConfig": "accel.tokens",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'accel' has no attribute {name!r}")


__all__ = [
    "apply", "compile", "Compiled", "methods", "preset", "load_configs", "default_pipeline", "Handle",
    "PipelineHandle", "register", "Family", "BlockStack",
    "MethodConfig", "AttentionConfig", "TraceConfig", "DeltaCacheConfig", "IntervalCacheConfig",
    "ResidualCacheConfig", "ScheduleCacheConfig", "calibrate_schedule", "DiffRateConfig", "TocaConfig", "TomeConfig",
    "AccelError", "AlreadyAcceleratedError", "BackendUnavailableError", "ModelNotFoundError",
    "UnsupportedMethodError", "UnsupportedModelError",
]
