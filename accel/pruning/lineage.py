"""Self-describing pipeline folders derived from the embedded default (digits) model.

A pruned or distilled copy of the default model is still a 10-class 32x32 digits model:
FD-digits and class agreement apply to it as to the default. `accel prune` /
`accel distill` write `DIR/accel_model.json` saying so; `is_digits_model(DIR)` reads it
and `load_digits_model(DIR)` loads the folder the way `load_default_pipeline` loads the
embedded weights (same pipeline class, sampler defaults and scheduler choices).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

MARKER_FILE = "accel_model.json"
DIGITS_KIND = "accel-digits"


def digits_marker(derived_from: str) -> dict[str, Any]:
    """Content of `accel_model.json` for a folder derived from the default model."""
    from accel.models import DEFAULT_SAMPLER

    return {"kind": DIGITS_KIND, "num_classes": 10, "image_size": 32, "sampler": dict(DEFAULT_SAMPLER),
            "derived_from": derived_from}


def read_marker(path: str | Path) -> dict[str, Any] | None:
    """The folder's `accel_model.json`, or None when absent or unreadable."""
    f = Path(path) / MARKER_FILE
    if not f.is_file():
        return None
    try:
        data = json.loads(f.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def is_digits_model(path: str | Path) -> bool:
    """True when `path` is a pipeline folder derived from the embedded digits model (FD-digits applies)."""
    if not isinstance(path, (str, Path)) or str(path) == "default":
        return str(path) == "default"
    marker = read_marker(path)
    return marker is not None and marker.get("kind") == DIGITS_KIND


def load_digits_model(path: str | Path, scheduler: str | None = None, device: Any = "cpu",
                      dtype: torch.dtype = torch.float32) -> Any:
    """A digits pipeline folder as `accel.models.load_default_pipeline` would build it.

    `scheduler`: None keeps the folder's own scheduler; "dpm++", "ddim", "ddpm" or
    "euler" builds that scheduler on the training noise schedule. `path="default"` is the
    embedded model itself (`load_default_pipeline`), so callers can treat every digits
    model alike: `if is_digits_model(m): pipe = load_digits_model(m, ...)`.
    """
    from diffusers import DiTPipeline, DiTTransformer2DModel

    from accel import models as M

    if str(path) == "default":
        return M.load_default_pipeline(scheduler=scheduler, device=device, dtype=dtype)
    path = Path(path)
    if not is_digits_model(path):
        raise ValueError(f"{path} is not a pipeline folder derived from the default digits model "
                         f"(no {MARKER_FILE} with kind {DIGITS_KIND!r})")
    transformer = DiTTransformer2DModel.from_pretrained(path / "transformer", dtype=dtype).eval()
    if scheduler is None:  # the folder's own scheduler
        import diffusers

        f = path / "scheduler" / "scheduler_config.json"
        try:
            cfg = json.loads(f.read_text())
            cls = getattr(diffusers, str(cfg["_class_name"]), None) if isinstance(cfg, dict) else None
        except (OSError, ValueError, KeyError) as exc:
            raise ValueError(f"{f}: not a readable scheduler config ({type(exc).__name__}: {exc})") from None
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
