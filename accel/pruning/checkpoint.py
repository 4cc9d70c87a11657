"""accel's own distillation checkpoints: safetensors + JSON under a hash manifest, never a pickle.

A checkpoint is the folder `checkpoints/step_NNNNNNN` holding exactly

    model.safetensors      the student's weights          ema.safetensors   the EMA weights
    optimizer.safetensors  the optimizer's state tensors  rng.safetensors   torch's RNG states
    state.json             step, elapsed time, losses, settings, block map, optimizer groups, grad scaler
    manifest.json          written last: the format and the sha256 of each file above

A checkpoint is written in a hidden scratch folder and renamed to `step_N` when its manifest is
written, so a kill leaves no half-written `step_N`; a folder without manifest.json (from older
accel) is never read. Old checkpoints go through the deletion door (`accel.outputs.remove_own`):
only the files the manifest lists, unchanged, are removed; a file the user put in one stays. Before anything is loaded the
manifest is checked: every file it names must be there with its hash, and nothing else may be
(a planted `.pkl` is refused, not ignored). Tensors load with safetensors, the rest with json:
resuming never runs code from a file.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import torch

from ..errors import SettingError
from ..outputs import file_record, notice, remove_own, sha256_file
from ..readers import ReadError, read_json, read_safetensors

FORMAT = "accel-distill-checkpoint/1"
MANIFEST = "manifest.json"
FILES = ("model.safetensors", "ema.safetensors", "optimizer.safetensors", "rng.safetensors", "state.json")
# settings a resume must share with the run it continues (steps / minutes may grow), as a message names them
RESUME_SETTINGS = {"lr": "lr", "batch_size": "batch_size", "lambda_task": "lambda_task", "lambda_out": "lambda_out",
                   "lambda_feat": "lambda_feat", "grad_accum": "grad_accum", "ema_decay": "ema_decay",
                   "mixed_precision": "mixed_precision", "seed": "seed", "num_processes": "the number of processes",
                   "data": "data"}
_STEP = re.compile(r"step_(\d+)")


class CheckpointError(SettingError):
    """A checkpoint that cannot be resumed from (half-written, modified, foreign, other settings): a SettingError
    naming `resume` (a command prints ``--resume: ...``), or no setting ("") for a checkpoint this run writes."""


def _cpu(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in sd.items()}


def save_checkpoint(path: Path, model: torch.nn.Module, ema: dict[str, torch.Tensor], optimizer: Any,
                    state: dict[str, Any], scaler: Any = None) -> None:
    """Write the checkpoint folder `path` (new): staged in a hidden scratch folder next to it, manifest.json
    last, then renamed into place, so a kill or an error leaves no `step_N` folder at all."""
    from ..outputs import _scratch

    if path.exists() or path.is_symlink():
        raise CheckpointError("", f"{path} exists and is not a checkpoint this run wrote; move it out of {path.parent}")
    path.parent.mkdir(parents=True, exist_ok=True)
    stage = _scratch(f".{path.name}.tmp-", path.parent)
    try:
        _write_checkpoint(stage, model, ema, optimizer, state, scaler)
        os.replace(stage, path)
    except BaseException:
        remove_own(stage, None)
        raise


def _write_checkpoint(path: Path, model: torch.nn.Module, ema: dict[str, torch.Tensor], optimizer: Any,
                      state: dict[str, Any], scaler: Any = None) -> None:
    from safetensors.torch import save_file

    from ..outputs import write_json_atomic

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
    (path / "state.json").write_text(json.dumps(doc, allow_nan=False))  # finite or ValueError: no NaN in JSON
    write_json_atomic(path / MANIFEST, {"format": FORMAT, "step": state["step"],
                                        "files": {n: sha256_file(path / n) for n in FILES}})


def latest_checkpoint(root: Path) -> Path:
    """The highest-numbered checkpoint under `root` that has a manifest; CheckpointError if none."""
    steps = sorted((int(m.group(1)), p) for p in root.glob("step_*") if (m := _STEP.fullmatch(p.name)) and p.is_dir())
    for _, p in reversed(steps):
        if (p / MANIFEST).is_file():
            return p
    what = f"{len(steps)} half-written (no {MANIFEST})" if steps else "none"
    raise CheckpointError("resume", f": no finished checkpoint under {root} ({what}); start a new out", also=("out",))


def checkpoints(root: Path) -> list[Path]:
    """accel's checkpoint folders under `root` (`step_NNNNNNN` with a manifest), oldest first; any other
    name (a user's `step_0000000_mine/`) is not one."""
    found = [(int(m.group(1)), p) for p in root.glob("step_*")
             if (m := _STEP.fullmatch(p.name)) and p.is_dir() and not p.is_symlink() and (p / MANIFEST).is_file()]
    return [p for _, p in sorted(found)]


def remove_checkpoint(path: Path) -> list[Path]:
    """Remove the checkpoint `path` through the deletion door: the files its manifest lists with their hashes,
    then the manifest and the folder once nothing else is left. A file the user added, or changed, stays
    (named in a notice); returns what stayed. A folder without an accel manifest is left whole."""
    try:
        manifest = json.loads((path / MANIFEST).read_text())
        listed = manifest["files"] if manifest.get("format") == FORMAT else None
    except (OSError, ValueError, AttributeError, KeyError, TypeError, RecursionError):
        listed = None
    if not isinstance(listed, dict) or not all(isinstance(v, str) for v in listed.values()):
        return [path]
    kept = remove_own(path, {n: {"sha256": h} for n, h in listed.items() if n in FILES}, names=FILES)
    if kept:
        return kept
    remove_own(path, {MANIFEST: file_record(path / MANIFEST)}, names=[MANIFEST])  # what listed the removed files
    others = sorted(path.iterdir())
    if others:
        notice(f"kept {path}: it holds {len(others)} file(s) accel did not write ({', '.join(p.name for p in others[:5])})")
        return others
    path.rmdir()
    return []


def verify_checkpoint(path: Path) -> dict[str, Any]:
    """The checkpoint's state.json after checking the folder against its manifest and its weights, EMA weights
    and optimizer state for NaN / infinity (CheckpointError naming the file and tensor otherwise)."""
    try:
        manifest = read_json(path / MANIFEST, what="checkpoint manifest")
    except ReadError as exc:
        raise CheckpointError("resume", f": {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or not isinstance(manifest.get("files"), dict):
        raise CheckpointError("resume", f": {path / MANIFEST} is not an accel checkpoint manifest ({FORMAT})")
    listed = manifest["files"]
    if sorted(listed) != sorted(FILES):
        raise CheckpointError("resume", f": {path / MANIFEST} lists {sorted(listed)}, not the files accel writes")
    for entry in path.iterdir():
        if entry.name != MANIFEST and entry.name not in listed:
            raise CheckpointError("resume", f": {path} holds {entry.name}, a file accel did not write; refusing to "
                                  "resume from it")
        if entry.is_symlink() or not entry.is_file():
            raise CheckpointError("resume", f": {entry} is not a plain file; refusing to resume from it")
    for name, digest in listed.items():
        f = path / name
        if not f.is_file() or sha256_file(f) != digest:
            raise CheckpointError("resume", f": {f} {'is missing' if not f.is_file() else 'does not match its manifest'}"
                                  " (modified or corrupt); refusing to resume from it")
    for name in FILES[:3]:  # weights, EMA weights, optimizer state: a NaN would be trained on or written out
        _tensors(path / name, finite=True)
    try:
        state = read_json(path / "state.json", what="checkpoint state")
    except ReadError as exc:
        raise CheckpointError("resume", f": {exc}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError("resume", f": {path / 'state.json'} is not an accel checkpoint state")
    return state


def _tensors(file: Path, finite: bool) -> dict[str, torch.Tensor]:
    """A checkpoint's safetensors file, with `finite` its float tensors checked for NaN / infinity."""
    try:
        return read_safetensors(file, what="checkpoint", finite=finite)
    except ReadError as exc:
        raise CheckpointError("resume", f": {exc}; refusing to resume from it") from None


def check_resume(state: dict[str, Any], settings: dict[str, Any], block_map: list[int]) -> None:
    """CheckpointError naming the setting when this run's settings or student differ from the checkpoint's."""
    saved = state.get("settings") or {}
    for key, name in RESUME_SETTINGS.items():
        if key in settings and saved.get(key) != settings[key] and (key != "data" or key in saved):
            # (runs from before the data was recorded resume as they were)
            raise CheckpointError("resume", f": {name} {settings[key]} differs from the run's {saved.get(key)} (a "
                                  "resume continues the same training; use a new out to change it)", also=(name, "out"))
    if list(state.get("block_map") or []) != list(block_map):
        raise CheckpointError("resume", f": the checkpoint is of another student (block_map {state.get('block_map')}, "
                              f"this student has {list(block_map)})")


def load_checkpoint(path: Path, model: torch.nn.Module, optimizer: Any, scaler: Any = None) -> tuple[dict, dict]:
    """Load a verified checkpoint into `model` / `optimizer` / `scaler` and torch's RNG; returns (state, ema).
    Weights, EMA weights and optimizer state must be finite (checked by `verify_checkpoint`)."""
    state = verify_checkpoint(path)
    weights, ema, tensors, rng = (_tensors(path / name, finite=False) for name in FILES[:4])  # verified above
    own = model.state_dict()
    if {k: tuple(v.shape) for k, v in weights.items()} != {k: tuple(v.shape) for k, v in own.items()}:
        raise CheckpointError("resume", f": {path} holds the weights of another student (names or shapes differ)")
    model.load_state_dict(weights)
    opt_state: dict[int, dict[str, Any]] = {}
    for key, v in [*tensors.items(), *state["optimizer_scalars"].items()]:
        idx, name = key.split(".", 1)
        opt_state.setdefault(int(idx), {})[name] = v
    optimizer.load_state_dict({"state": opt_state, "param_groups": state["param_groups"]})
    if scaler is not None and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    torch.set_rng_state(rng["cpu"])
    cuda = [rng[k] for k in sorted((k for k in rng if k.startswith("cuda.")), key=lambda k: int(k[5:]))]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    return state, ema
