"""accel's own distillation checkpoints: safetensors + JSON under a hash manifest, never a pickle.

A checkpoint is the folder `checkpoints/step_NNNNNNN` holding exactly

    model.safetensors      the student's weights          ema.safetensors   the EMA weights
    optimizer.safetensors  the optimizer's state tensors  rng.safetensors   torch's RNG states
    state.json             step, elapsed time, losses, settings, block map, optimizer groups, grad scaler
    manifest.json          written last: the format and the sha256 of each file above

A folder without manifest.json is half-written and never read. Before anything is loaded the
manifest is checked: every file it names must be there with its hash, and nothing else may be
(a planted `.pkl` is refused, not ignored). Tensors load with safetensors, the rest with json:
resuming never runs code from a file.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch

from ..outputs import sha256_file

FORMAT = "accel-distill-checkpoint/1"
MANIFEST = "manifest.json"
FILES = ("model.safetensors", "ema.safetensors", "optimizer.safetensors", "rng.safetensors", "state.json")
# settings a resume must share with the run it continues (steps / minutes may grow), with their flags
RESUME_SETTINGS = {"lr": "--lr", "batch_size": "--batch-size", "lambda_task": "--lambda-task",
                   "lambda_out": "--lambda-out", "lambda_feat": "--lambda-feat", "grad_accum": "--grad-accum",
                   "ema_decay": "--ema-decay", "mixed_precision": "--mixed-precision", "seed": "--seed",
                   "num_processes": "the number of processes", "data": "the data (--data, --teacher-samples)"}
_STEP = re.compile(r"step_(\d+)")


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed from (half-written, modified, foreign, other settings)."""


def _cpu(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in sd.items()}


def save_checkpoint(path: Path, model: torch.nn.Module, ema: dict[str, torch.Tensor], optimizer: Any,
                    state: dict[str, Any], scaler: Any = None) -> None:
    """Write the checkpoint folder `path` (new); manifest.json last, so a kill leaves no readable half."""
    from safetensors.torch import save_file

    from ..outputs import write_json_atomic

    path.mkdir(parents=True, exist_ok=False)
    save_file(_cpu(model.state_dict()), str(path / "model.safetensors"))
    save_file(_cpu(ema), str(path / "ema.safetensors"))
    opt = optimizer.state_dict()
    tensors, scalars = {}, {}
    for idx, st in opt["state"].items():
        for name, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"{idx}.{name}"] = v
            else:
                scalars[f"{idx}.{name}"] = v
    save_file(_cpu(tensors), str(path / "optimizer.safetensors"))
    rng = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng.update({f"cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    save_file(_cpu(rng), str(path / "rng.safetensors"))
    doc = {"format": FORMAT, **state, "param_groups": opt["param_groups"], "optimizer_scalars": scalars,
           "scaler": scaler.state_dict() if scaler is not None else None}
    (path / "state.json").write_text(json.dumps(doc, allow_nan=False))
    write_json_atomic(path / MANIFEST, {"format": FORMAT, "step": state["step"],
                                        "files": {n: sha256_file(path / n) for n in FILES}})


def latest_checkpoint(root: Path) -> Path:
    """The highest-numbered checkpoint under `root` that has a manifest; CheckpointError if none."""
    steps = sorted((int(m.group(1)), p) for p in root.glob("step_*") if (m := _STEP.fullmatch(p.name)) and p.is_dir())
    for _, p in reversed(steps):
        if (p / MANIFEST).is_file():
            return p
    what = f"{len(steps)} half-written (no {MANIFEST})" if steps else "none"
    raise CheckpointError(f"--resume: no finished checkpoint under {root} ({what}); start a new --out")


def remove_checkpoint(path: Path) -> None:
    """Delete a checkpoint folder only if it is exactly what accel wrote (its manifest's files), else keep it."""
    try:
        listed = json.loads((path / MANIFEST).read_text()).get("files", {})
    except (OSError, ValueError, AttributeError):
        return
    names = {e.name for e in path.iterdir()}
    if names != {*listed, MANIFEST}:
        return
    for name in names:
        (path / name).unlink()
    path.rmdir()


def verify_checkpoint(path: Path) -> dict[str, Any]:
    """The checkpoint's state.json after checking the folder against its manifest (CheckpointError otherwise)."""
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"--resume: {path / MANIFEST} is unreadable ({type(exc).__name__})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or not isinstance(manifest.get("files"), dict):
        raise CheckpointError(f"--resume: {path / MANIFEST} is not an accel checkpoint manifest ({FORMAT})")
    listed = manifest["files"]
    if sorted(listed) != sorted(FILES):
        raise CheckpointError(f"--resume: {path / MANIFEST} lists {sorted(listed)}, not the files accel writes")
    for entry in path.iterdir():
        if entry.name != MANIFEST and entry.name not in listed:
            raise CheckpointError(f"--resume: {path} holds {entry.name}, a file accel did not write; refusing to "
                                  "resume from it")
        if entry.is_symlink() or not entry.is_file():
            raise CheckpointError(f"--resume: {entry} is not a plain file; refusing to resume from it")
    for name, digest in listed.items():
        f = path / name
        if not f.is_file() or sha256_file(f) != digest:
            raise CheckpointError(f"--resume: {f} {'is missing' if not f.is_file() else 'does not match its manifest'}"
                                  " (modified or corrupt); refusing to resume from it")
    try:
        state = json.loads((path / "state.json").read_text())
    except ValueError as exc:
        raise CheckpointError(f"--resume: {path / 'state.json'}: {exc}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"--resume: {path / 'state.json'} is not an accel checkpoint state")
    return state


def check_resume(state: dict[str, Any], settings: dict[str, Any], block_map: list[int]) -> None:
    """CheckpointError naming the flag when this run's settings or student differ from the checkpoint's."""
    saved = state.get("settings") or {}
    for key, flag in RESUME_SETTINGS.items():
        if key in settings and saved.get(key) != settings[key] and (key != "data" or key in saved):  # runs before
            # --data was recorded resume as they were
            raise CheckpointError(f"--resume: {flag} {settings[key]} differs from the run's {saved.get(key)} (a resume "
                                  "continues the same training; use a new --out to change it)")
    if list(state.get("block_map") or []) != list(block_map):
        raise CheckpointError(f"--resume: the checkpoint is of another student (block_map {state.get('block_map')}, "
                              f"this --student has {list(block_map)})")


def load_checkpoint(path: Path, model: torch.nn.Module, optimizer: Any, scaler: Any = None) -> tuple[dict, dict]:
    """Load a verified checkpoint into `model` / `optimizer` / `scaler` and torch's RNG; returns (state, ema)."""
    from safetensors.torch import load_file

    state = verify_checkpoint(path)
    weights = load_file(str(path / "model.safetensors"))
    own = model.state_dict()
    if {k: tuple(v.shape) for k, v in weights.items()} != {k: tuple(v.shape) for k, v in own.items()}:
        raise CheckpointError(f"--resume: {path} holds the weights of another student (names or shapes differ)")
    model.load_state_dict(weights)
    ema = load_file(str(path / "ema.safetensors"))
    tensors = load_file(str(path / "optimizer.safetensors"))
    opt_state: dict[int, dict[str, Any]] = {}
    for key, v in [*tensors.items(), *state["optimizer_scalars"].items()]:
        idx, name = key.split(".", 1)
        opt_state.setdefault(int(idx), {})[name] = v
    optimizer.load_state_dict({"state": opt_state, "param_groups": state["param_groups"]})
    if scaler is not None and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    rng = load_file(str(path / "rng.safetensors"))
    torch.set_rng_state(rng["cpu"])
    cuda = [rng[k] for k in sorted((k for k in rng if k.startswith("cuda.")), key=lambda k: int(k[5:]))]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    return state, ema
