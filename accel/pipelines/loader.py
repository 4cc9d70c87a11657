"""Load a diffusers pipeline from a local folder or a hub id already in the local cache.

This never downloads: accel runs on machines without internet, so a missing model
is an error that says how to bring the weights over.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from ..api import resolve
from ..errors import ModelNotFoundError, UnsupportedModelError


def load_pipeline(path_or_id: str, device: str | torch.device = "cpu", dtype: torch.dtype | None = None,
                  **from_pretrained_kwargs: Any) -> Any:
    """A stock diffusers pipeline for a supported diffusion transformer, from local files only.

    Raises ModelNotFoundError when the weights are not on this machine and
    UnsupportedModelError when the pipeline has no supported `.transformer`.
    """
    from diffusers import DiffusionPipeline

    local = os.path.isdir(path_or_id)
    if local and not os.path.isfile(os.path.join(path_or_id, "model_index.json")):
        raise UnsupportedModelError(
            f"{path_or_id} is a folder but not a diffusers pipeline (no model_index.json). "
            "Save one with `pipe.save_pretrained(DIR)` or download a full pipeline repository."
        )
    if not local and (path_or_id.startswith((".", "/", "~")) or path_or_id.count("/") > 1):
        raise ModelNotFoundError(f"no such folder: {path_or_id} (a hub id looks like 'org/name')")
    if local:
        _import_accel_components(path_or_id)
    kwargs = dict(from_pretrained_kwargs)
    if local:
        kwargs = {**_saved_none_components(path_or_id), **kwargs}
    if dtype is not None:
        kwargs["dtype"] = dtype
    try:
        pipe = DiffusionPipeline.from_pretrained(path_or_id, local_files_only=True, **kwargs)
    except (OSError, EnvironmentError, ValueError) as exc:
        if local:
            raise UnsupportedModelError(f"could not load a diffusers pipeline from {path_or_id}: {exc}") from exc
        raise ModelNotFoundError(
            f"{path_or_id!r} is not a local folder and is not in the Hugging Face cache "
            f"({os.environ.get('HF_HOME', '~/.cache/huggingface')}); accel never downloads weights. "
            f"On a machine with internet run `huggingface-cli download {path_or_id} --local-dir DIR`, "
            "copy DIR here and pass its path (e.g. `accel bench --model DIR`)."
        ) from exc
    resolve(pipe)  # UnsupportedModelError unless pipe.transformer is a supported family
    return pipe.to(device)


def _import_accel_components(folder: str) -> None:
    """Import accel's own component modules a saved folder names (e.g. the default model's identity
    VAE in a pruned copy), so diffusers can resolve them; other libraries are left to diffusers."""
    import importlib
    import json

    try:
        with open(os.path.join(folder, "model_index.json")) as f:
            index = json.load(f)
    except (OSError, ValueError):
        return
    for value in index.values():
        if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str):
            if value[0] == "accel" or value[0].startswith("accel."):
                importlib.import_module(value[0])


def _saved_none_components(folder: str) -> dict[str, None]:
    """``{name: None}`` for the components a saved folder stored as ``[null, null]`` (an SD3 pipeline
    without T5, like the embedded flow model): diffusers saves them so but will not load the folder
    unless they are passed again as None. Optional components (image_encoder, ...) are left out."""
    import json

    try:
        with open(os.path.join(folder, "model_index.json")) as f:
            index = json.load(f)
    except (OSError, ValueError):
        return {}
    if not isinstance(index, dict):
        return {}
    import diffusers

    cls = getattr(diffusers, str(index.get("_class_name")), None)
    optional = set(getattr(cls, "_optional_components", []) or [])
    return {k: None for k, v in index.items()
            if not k.startswith("_") and v == [None, None] and k not in optional}
