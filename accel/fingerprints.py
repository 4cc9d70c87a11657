"""Short, stable identities of a model's weights and a scheduler's settings.

A calibration or evaluation made on one model must not be reused on another: schedule-cache keys
its saved calibrations by them (`accel.caching.schedule.CalibrationKey`) and `accel tune` its
evaluation cache. They are model utilities, not any one method's.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import torch


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def model_fingerprint(model: torch.nn.Module) -> str:
    """Class, config and a sample of the weights (first and last values of a few tensors)."""
    config = {k: v for k, v in dict(getattr(model, "config", {})).items() if not k.startswith("_")}
    # by name, not registration order: libraries that re-register modules (cache-dit) keep the key
    params = [p for _, p in sorted(model.named_parameters())]
    sample = [_plain(p).flatten()[:: max(1, p.numel() // 64)][:64].float().cpu().tolist()
              for p in params[:2] + params[-2:]]
    return f"{type(model).__name__}:{_digest(config)}:{_digest(sample)}"


def _plain(p: torch.Tensor) -> torch.Tensor:
    """A parameter as a plain tensor (quantized weights, e.g. torchao's, dequantized)."""
    t = p.detach()
    return t.dequantize() if type(t) is not torch.Tensor and hasattr(t, "dequantize") else t


def scheduler_fingerprint(scheduler: Any) -> str:
    """Class and config of a diffusers scheduler."""
    config = {k: v for k, v in dict(getattr(scheduler, "config", {})).items() if not k.startswith("_")}
    return f"{type(scheduler).__name__}:{_digest(config)}"
