"""The one model loader: `--model NAME` of every command, script and benchmark goes through here.

:func:`load_model` resolves, in this order: a named embedded model (``"default"``;
`accel.models.lineage.EMBEDDED_MODELS`), a folder pruned / distilled from one
(``accel_model.json``: a digits DiT folder, or a stock pipeline folder from the flow model), then any diffusers pipeline folder or hub id already in the local
cache (:func:`load_pipeline`).

This never downloads: accel runs on machines without internet, so a missing model
is an error that says how to bring the weights over.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import torch

from ..bounds import check_device
from ..errors import ModelNotFoundError, SettingError, UnsupportedModelError
from ..families import resolve
from ..quiet import hf_quiet
from ..readers import ReadError, read_json

SCHEDULER_CLASSES = {"ddim": "DDIMScheduler", "dpm++": "DPMSolverMultistepScheduler", "ddpm": "DDPMScheduler",
                     "euler": "EulerDiscreteScheduler"}


@dataclass
class Embedded:
    """What an embedded model (or a folder derived from one) brings beyond any pipeline."""

    digits: bool  # an embedded digits DiT or a folder derived from one: 10 digit classes, the digits training set
    sampler: dict = field(default_factory=dict)  # its own sampler defaults (scheduler, guidance_scale)
    fd_digits: bool = True  # it generates 32x32 digits (every embedded model and folders derived from one): FD-digits
    prompts: list[str] | None = None  # an embedded text-to-image model's own prompts (also of its derived folders)


@dataclass
class LoadedModel:
    """A loaded pipeline, its name, and the extras of an embedded model (None for any other model).
    `digits`, `sampler`, `fd_digits` and `prompts` read those extras (False / {} / None without)."""

    pipe: Any
    name: str  # as given: "default", a folder or a hub id
    embedded: Embedded | None = None

    @property
    def digits(self) -> bool:
        return self.embedded is not None and self.embedded.digits

    @property
    def sampler(self) -> dict:
        return dict(self.embedded.sampler) if self.embedded is not None else {}

    @property
    def fd_digits(self) -> bool:
        return self.embedded is not None and self.embedded.fd_digits

    @property
    def prompts(self) -> list[str] | None:
        return self.embedded.prompts if self.embedded is not None else None


def load_model(model: str, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
               scheduler: str | None = None, progress_bars: bool = True) -> LoadedModel:
    """Any model accel accepts as ``--model``: an embedded model's name, a folder derived from one, or a
    supported diffusers pipeline folder / cached hub id.

    `scheduler`: None keeps the model's own (a folder's saved scheduler); ``ddim``, ``dpm++``, ``ddpm``
    or ``euler`` builds that one (on the model's noise schedule). `progress_bars=False` hides diffusers'
    "Loading pipeline components" bars. Raises ModelNotFoundError / UnsupportedModelError / SettingError
    (scheduler, device; their messages say what to do) and, for a digits folder that does not load, ValueError / OSError.
    """
    from ..models.lineage import embedded_prompts, embedded_root, is_digits_model, is_embedded, load_digits_model
    from ..models.lineage import load_embedded, sampler_defaults

    check_device(device)  # a device this machine lacks: one line now, not an AssertionError inside torch
    # progress_bars=False: no diffusers "Loading pipeline components" / transformers "Loading weights" bars
    with hf_quiet(bars=not progress_bars, warnings=False):
        if is_embedded(model):
            pipe = load_embedded(str(model), scheduler=scheduler, device=device, dtype=dtype)
            return LoadedModel(pipe, str(model), Embedded(is_digits_model(model), sampler_defaults(model), True,
                                                          embedded_prompts(model)))
        if is_digits_model(model):
            pipe = load_digits_model(model, scheduler=scheduler, device=device, dtype=dtype)
            return LoadedModel(pipe, str(model), Embedded(True, sampler_defaults(model), True))
        derived = embedded_root(model) is not None  # a stock pipeline folder derived from an embedded model (flow)
        if derived and scheduler is not None and scheduler == sampler_defaults(model).get("scheduler"):
            scheduler = None  # its own sampler's scheduler is the one saved in the folder
        # derived: its identity VAE is on purpose: no "Expected types for vae: AutoencoderKL" warning
        with hf_quiet(bars=False, warnings=derived):
            pipe = load_pipeline(model, device=device, dtype=dtype)
        set_scheduler(pipe, scheduler)
        if derived:
            pipe.set_progress_bar_config(disable=True)
            return LoadedModel(pipe, str(model), Embedded(False, sampler_defaults(model), True, embedded_prompts(model)))
        return LoadedModel(pipe, str(model))


def set_scheduler(pipe: Any, name: str | None) -> None:
    """Swap the pipeline's scheduler for ``ddim``, ``dpm++``, ``ddpm`` or ``euler`` (same config); None keeps it."""
    if name is None:
        return
    import diffusers

    check_scheduler(name)
    try:
        pipe.scheduler = getattr(diffusers, SCHEDULER_CLASSES[name]).from_config(pipe.scheduler.config)
    except Exception as exc:  # noqa: BLE001 - any failure means this scheduler does not fit the pipeline
        raise SettingError("scheduler", f"{name}: cannot be used with this pipeline ({exc})") from None


def check_scheduler(name: str | None) -> None:
    """SettingError unless `name` is None or one of SCHEDULER_CLASSES."""
    if name is not None and name not in SCHEDULER_CLASSES:
        raise SettingError("scheduler", f"{name!r}: choose one of {', '.join(SCHEDULER_CLASSES)}")


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

    try:
        index = read_json(os.path.join(folder, "model_index.json"), finite=False)
    except ReadError:  # diffusers reports an unreadable index when it loads the folder
        return
    if not isinstance(index, dict):
        return
    for value in index.values():
        if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str):
            if value[0] == "accel" or value[0].startswith("accel."):
                importlib.import_module(value[0])


def _saved_none_components(folder: str) -> dict[str, None]:
    """``{name: None}`` for the components a saved folder stored as ``[null, null]`` (an SD3 pipeline
    without T5, like the embedded flow model): diffusers saves them so but will not load the folder
    unless they are passed again as None. Optional components (image_encoder, ...) are left out."""
    try:
        index = read_json(os.path.join(folder, "model_index.json"), finite=False)
    except ReadError:
        return {}
    if not isinstance(index, dict):
        return {}
    import diffusers

    cls = getattr(diffusers, str(index.get("_class_name")), None)
    optional = set(getattr(cls, "_optional_components", []) or [])
    return {k: None for k, v in index.items()
            if not k.startswith("_") and v == [None, None] and k not in optional}
