"""Recover a pruned model's quality by distillation from the original (LAPTOP-Diff's loss), on accelerate.

Loss per batch (student S = the pruned model, teacher T = the original, frozen):

    L = L_task + λ_out ‖ε_T − ε_S‖² + λ_feat Σ_l ‖F_T^{m(l)} − F_S^l‖² / ‖F_T^{m(l)}‖²

L_task is the usual ε-prediction loss on real data (digits or an image folder), for flow models the
flow-matching velocity loss on real image + prompt pairs (accel/pruning/data.py); F^l is the
hidden-state output of block l, and m(l) the teacher block student block l was copied
from (pruning.json's `block_map`). Normalising each layer by the teacher's feature norm
keeps a few large layers from dominating.

The same code runs on one CPU, one or several GPUs and several nodes (`accelerate launch`):
mixed precision where the device has it, gradient accumulation, EMA of the student, a
checkpoint every N steps (accel's own format, safetensors + JSON under a hash manifest:
checkpoint.py; resuming never unpickles) and resume from the latest one (losing at most one
interval), refused when the settings or the student differ. Every batch is drawn from a generator seeded by
(seed, step), so a resumed run computes exactly the losses an uninterrupted one would.

Several processes (`accelerate launch`, see the README): `batch_size` is the GLOBAL batch. Each
process draws the same global batch and trains on its slice of it (`Batch.shard`), DDP averages
the gradients, the feature loss's per-layer teacher norm is summed over the processes, and the
logged losses are averaged over them, so N processes compute the losses and updates of one process
with the same global batch (up to float summation order). Recorded teacher calls
(`--teacher-samples`) cannot be split by sample: there each process draws its own call.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from diffusers.hooks import ModelHook

from ..errors import SettingError
from ..families import blocks_of
from ..hooks import HookSet
from .checkpoint import (_STEP, CheckpointError, check_resume, checkpoints, latest_checkpoint, load_checkpoint,
                         remove_checkpoint, save_checkpoint, verify_checkpoint)

CHECKPOINTS = "checkpoints"


class DivergedError(SettingError):
    """Training produced a non-finite loss or weight; the message names the step, the setting to change (lr,
    a command prints its flag) and the last good checkpoint (nothing is saved after the divergence)."""


# ----------------------------------------------------------------------------- settings and state
@dataclass
class DistillConfig:
    """Training settings. Stop at `steps` optimizer steps or after `minutes` of training, whichever first."""

    steps: int | None = None
    minutes: float | None = None
    batch_size: int = 32
    lr: float = 1e-4
    lambda_task: float = 1.0
    lambda_out: float = 1.0
    lambda_feat: float = 0.1
    grad_accum: int = 1
    ema_decay: float = 0.999
    mixed_precision: str = "auto"  # auto | no | fp16 | bf16
    save_every: int = 100
    seed: int = 0
    log_every: int = 10
    progress: bool = True
    data: str | None = None  # what the run trains on (the command's --data settings); a resume must match

    def validate(self) -> None:
        if self.steps is None and self.minutes is None:
            raise SettingError("", "give steps N or minutes M", also=("steps", "minutes"))
        if self.steps is not None and self.steps <= 0:
            raise SettingError("steps", f"must be positive, got {self.steps}")
        if self.minutes is not None and not (math.isfinite(self.minutes) and self.minutes > 0):
            raise SettingError("minutes", f"must be a positive finite number, got {self.minutes}")
        for name in ("batch_size", "grad_accum", "save_every"):
            if getattr(self, name) <= 0:
                raise SettingError(name, f"must be positive, got {getattr(self, name)}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise SettingError("lr", f"must be a positive finite number, got {self.lr}")
        if not (math.isfinite(self.ema_decay) and 0 <= self.ema_decay <= 1):
            raise SettingError("ema_decay", f"must be in [0, 1], got {self.ema_decay}")
        for name in ("lambda_task", "lambda_out", "lambda_feat"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise SettingError(name, f"must be a finite number >= 0, got {v}")
        if self.lambda_task == self.lambda_out == self.lambda_feat == 0:
            raise SettingError("", "lambda_task, lambda_out and lambda_feat are all 0: nothing would train; give at "
                               "least one a positive weight", also=("lambda_task", "lambda_out", "lambda_feat"))
        if self.mixed_precision not in ("auto", "no", "fp16", "bf16"):
            raise ValueError(f"mixed precision {self.mixed_precision!r}: choose auto, no, fp16 or bf16")


class TrainState:
    """Step counter, loss history, elapsed time and the EMA weights; checkpointed with the run (checkpoint.py)."""

    def __init__(self, model: torch.nn.Module):
        self.step = 0
        self.elapsed_s = 0.0
        self.losses: list[dict[str, float]] = []
        self.ema = {k: v.detach().float().clone() for k, v in model.state_dict().items()}

    def update_ema(self, model: torch.nn.Module, decay: float) -> None:
        d = min(decay, (1 + self.step) / (10 + self.step))  # warm-up: early weights are not averaged in forever
        with torch.no_grad():
            for k, v in model.state_dict().items():
                e = self.ema[k]
                if e.device != v.device:
                    self.ema[k] = e = e.to(v.device)
                if v.dtype.is_floating_point:
                    e.mul_(d).add_(v.detach().float(), alpha=1 - d)
                else:
                    e.copy_(v)

    def as_json(self) -> dict[str, Any]:
        return {"step": self.step, "elapsed_s": self.elapsed_s, "losses": self.losses}

    def restore(self, doc: dict[str, Any], ema: dict[str, torch.Tensor]) -> None:
        if set(ema) != set(self.ema) or any(ema[k].shape != v.shape for k, v in self.ema.items()):
            from .checkpoint import CheckpointError

            raise CheckpointError("resume", ": the checkpoint's EMA weights are of another student")
        self.step = int(doc["step"])
        self.elapsed_s = float(doc["elapsed_s"])
        self.losses = list(doc["losses"])
        self.ema = {k: v.to(self.ema[k].device).clone() for k, v in ema.items()}


# ----------------------------------------------------------------------------- data
@dataclass
class Batch:
    """One micro-batch: the transformer call and the task target: the true noise, or for flow models the true
    velocity (accel/pruning/data.py); None: no task loss."""

    args: tuple
    kwargs: dict
    noise: torch.Tensor | None

    def shard(self, index: int, count: int) -> "Batch":
        """Slice `index` of `count` equal slices along the batch (every tensor sized like the batch is cut)."""
        if count == 1:
            return self
        size = self.args[0].shape[0]
        if size % count:
            raise SettingError("batch_size", f"{size} is the global batch: it must be divisible by the {count} "
                               "processes")
        lo, hi = index * size // count, (index + 1) * size // count
        cut = lambda x: x[lo:hi] if isinstance(x, torch.Tensor) and x.ndim and x.shape[0] == size else x  # noqa: E731
        return Batch(tuple(cut(a) for a in self.args), {k: cut(v) for k, v in self.kwargs.items()},
                     None if self.noise is None else cut(self.noise))


class ClassImageData:
    """Real images with class labels (the digits set, or an image folder), noised on the fly.

    x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε at t ~ U{0..T−1} on the pipeline's training noise schedule;
    a `label_dropout` share of labels becomes the null class (CFG training).
    """

    shardable = True  # a batch of independent samples: processes split the global batch (`Batch.shard`)

    def __init__(self, latents: torch.Tensor, labels: torch.Tensor, alphas_cumprod: torch.Tensor,
                 null_class: int = 1000, label_dropout: float = 0.1):
        self.latents, self.labels = latents, labels
        self.alphas_cumprod = alphas_cumprod
        self.null_class, self.label_dropout = null_class, label_dropout

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, g: torch.Generator, size: int, device: torch.device) -> Batch:
        n, T = len(self.labels), len(self.alphas_cumprod)
        idx = torch.randint(0, n, (size,), generator=g)
        t = torch.randint(0, T, (size,), generator=g)
        x0 = self.latents[idx]
        noise = torch.randn(x0.shape, generator=g)
        drop = torch.rand(size, generator=g) < self.label_dropout
        y = torch.where(drop, torch.full_like(self.labels[idx], self.null_class), self.labels[idx])
        a = self.alphas_cumprod[t].view(-1, *([1] * (x0.ndim - 1)))
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        kwargs = dict(timestep=t.to(device), class_labels=y.to(device), return_dict=False)
        return Batch((xt.to(device),), kwargs, noise.to(device))


class RecordedCallData:
    """Transformer calls recorded while the teacher sampled (`--teacher-samples`): any family.

    There is no ground-truth noise on the teacher's own trajectories, so the task loss
    is off and the teacher's prediction is the target (λ_out and λ_feat terms).
    """

    shardable = False  # one recorded call per micro-batch, whatever its size: each process draws its own
    has_task_loss = False  # no true noise: only the output and feature losses train

    def __init__(self, calls: Sequence[tuple[tuple, dict]]):
        if not calls:
            raise ValueError("no recorded teacher calls to distil on")
        self.calls = list(calls)

    def __len__(self) -> int:
        return len(self.calls)

    def batch(self, g: torch.Generator, size: int, device: torch.device) -> Batch:
        args, kwargs = self.calls[int(torch.randint(0, len(self.calls), (1,), generator=g))]
        move = lambda x: x.to(device) if isinstance(x, torch.Tensor) else x  # noqa: E731
        return Batch(tuple(move(a) for a in args), {k: move(v) for k, v in kwargs.items()}, None)


def digits_data(label_dropout: float = 0.1) -> ClassImageData:
    """The default model's own training data: sklearn digits (train split), 32x32 in [-1, 1]."""
    from diffusers import DDPMScheduler

    from accel.models import load_digits_split
    from accel.models.default import TRAIN_SCHEDULER_CONFIG

    images, labels = load_digits_split("train")
    return ClassImageData(images, labels, DDPMScheduler(**TRAIN_SCHEDULER_CONFIG).alphas_cumprod, 1000,
                          label_dropout)


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def image_folder_data(folder: str | os.PathLike, pipe: Any, label_dropout: float = 0.1) -> ClassImageData:
    """`--data DIR` for a class-conditional DiT pipeline: DIR/<class id>/*.png, resized to the model's
    resolution, encoded by the pipeline's VAE (identity for the pixel-space default model)."""
    from diffusers import DDPMScheduler, DiTPipeline

    folder = Path(folder)
    if not folder.is_dir():
        raise SettingError("data_dir", f"{folder}: no such folder")
    if not isinstance(pipe, DiTPipeline):
        raise SettingError("data_dir", f"needs a class-conditional DiT pipeline (got {type(pipe).__name__}); "
                           "use teacher_samples N for text-conditioned models", also=("teacher_samples",))
    subdirs = sorted(p for p in folder.iterdir() if p.is_dir() and p.name.isdigit())
    files = [(f, int(d.name)) for d in subdirs for f in sorted(d.iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise SettingError("data_dir", f"{folder}: expected class subfolders named by class id (0/, 1/, ...) "
                           f"holding {', '.join(IMAGE_SUFFIXES)} images; found none")
    from .images import encode_images

    latents = encode_images(pipe, [f for f, _ in files], formats=("PNG", "JPEG", "BMP", "WEBP"))
    labels = torch.tensor([c for _, c in files], dtype=torch.long)
    alphas = DDPMScheduler.from_config(pipe.scheduler.config).alphas_cumprod
    return ClassImageData(latents, labels, alphas, 1000, label_dropout)


# ----------------------------------------------------------------------------- features
class _Features(ModelHook):
    def __init__(self, sink: dict[int, torch.Tensor], index: int, io: Any):
        super().__init__()
        self.sink, self.index, self.io = sink, index, io

    def post_forward(self, module: torch.nn.Module, output: Any) -> Any:
        self.sink[self.index] = self.io.outputs(output)[0]
        return output


def capture_features(model: torch.nn.Module, indices: Sequence[int] | None = None) -> tuple[HookSet, dict]:
    """Hooks storing each block's hidden-state output (by global index) into the returned dict."""
    sink: dict[int, torch.Tensor] = {}
    hooks = HookSet(model)
    wanted = None if indices is None else set(indices)
    for ref in blocks_of(model):
        if wanted is None or ref.global_index in wanted:
            hooks.add(ref.module, _Features(sink, ref.global_index, ref.io), "accel.pruning.features")
    return hooks, sink


def check_student(teacher: torch.nn.Module, student: torch.nn.Module, mapping: Sequence[int]) -> None:
    """ValueError unless `student` is `teacher` with blocks removed: same class, non-block weights of the
    same shapes, and student block l shaped like teacher block m(l)."""
    if type(student) is not type(teacher):
        raise ValueError(f"the student is a {type(student).__name__}, the teacher a {type(teacher).__name__}")
    t_blocks, s_blocks = blocks_of(teacher), blocks_of(student)
    if any(isinstance(m, bool) or not isinstance(m, int) for m in mapping):
        raise ValueError(f"block_map {list(mapping)} must be a list of block indices (integers)")
    if any(b <= a for a, b in zip(mapping, mapping[1:])):
        raise ValueError(f"block_map {list(mapping)} must be strictly increasing (pruning keeps the blocks' order)")
    if len(mapping) != len(s_blocks):
        raise ValueError(f"block_map has {len(mapping)} entries but the student has {len(s_blocks)} blocks")
    if any(not 0 <= m < len(t_blocks) for m in mapping):
        raise ValueError(f"block_map {list(mapping)} points outside the teacher's {len(t_blocks)} blocks")
    for l, m in enumerate(mapping):
        ts = {k: v.shape for k, v in t_blocks[m].module.state_dict().items()}
        ss = {k: v.shape for k, v in s_blocks[l].module.state_dict().items()}
        if ts != ss:
            raise ValueError(f"student block {l} does not match teacher block {m} (block shapes differ): "
                             "the student is not a pruned copy of this teacher")
    stacks = {r.stack.attr for r in t_blocks}
    rest = lambda sd: {k: v.shape for k, v in sd.items() if k.split(".")[0] not in stacks}  # noqa: E731
    if rest(teacher.state_dict()) != rest(student.state_dict()):
        raise ValueError("the student's non-block weights differ in shape from the teacher's: "
                         "it is not a pruned copy of this teacher")


def _predict(model: torch.nn.Module, cfg: Any, batch: Batch) -> torch.Tensor:
    out = model(*batch.args, **batch.kwargs)
    out = out[0] if isinstance(out, (tuple, list)) else getattr(out, "sample", out)
    cin, cout = getattr(cfg, "in_channels", None), getattr(cfg, "out_channels", None)
    if out.ndim == 4 and cin and cout == 2 * cin:
        out = out[:, :cin]
    return out.float()


def distill_loss(student_pred: torch.Tensor, teacher_pred: torch.Tensor, noise: torch.Tensor | None,
                 s_feats: dict[int, torch.Tensor], t_feats: dict[int, torch.Tensor], mapping: Sequence[int],
                 cfg: DistillConfig, sum_over_processes: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 num_processes: int = 1) -> tuple[torch.Tensor, dict[str, float]]:
    """(total loss, its parts) of LAPTOP-Diff's task + output + normalized per-layer feature loss.

    On a slice of a global batch split over `num_processes`: the feature loss's teacher norms are summed
    over the processes (`sum_over_processes`) and the slice's feature error is scaled by the process count,
    so the processes' average (DDP's gradient average) is the global batch's loss.
    """
    out = F.mse_loss(student_pred, teacher_pred)
    feat = student_pred.new_zeros(())
    norms = [t_feats[m].float().pow(2).sum() for m in mapping]
    if num_processes > 1:
        norms = list(sum_over_processes(torch.stack(norms)))
    for l, m in enumerate(mapping):
        fs, ft = s_feats[l].float(), t_feats[m].float()
        err = (fs - ft).pow(2).sum()
        feat = feat + (err * num_processes if num_processes > 1 else err) / norms[l].clamp_min(1e-12)
    total = cfg.lambda_out * out + cfg.lambda_feat * feat
    parts = {"out": float(out.detach()), "feat": float(feat.detach())}
    if noise is not None:
        task = F.mse_loss(student_pred, noise.float())
        total = total + cfg.lambda_task * task
        parts["task"] = float(task.detach())
    parts["loss"] = float(total.detach())
    return total, parts


# ----------------------------------------------------------------------------- the loop
def _mixed_precision(name: str) -> str:
    if name != "auto":
        return name
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "no"


def distill(teacher: torch.nn.Module, student: torch.nn.Module, mapping: Sequence[int], data: Any,
            cfg: DistillConfig, workdir: str | os.PathLike, resume: bool = False,
            stop_after: int | None = None, on_log: Callable[[dict], None] | None = None) -> dict[str, Any]:
    """Train `student` in place towards `teacher`; checkpoints under `workdir/checkpoints/step_N`.

    Returns {"losses": [per-step parts], "steps", "elapsed_s", "ema": state dict}. `stop_after`
    ends this process after that many steps without a final save (a simulated kill, for tests).
    A resume whose checkpoint is half-written, modified, of another student or of other
    settings raises CheckpointError (a ValueError) before any step.
    """
    from accelerate import Accelerator
    from tqdm.auto import tqdm

    cfg.validate()
    check_student(teacher, student, mapping)
    if not getattr(data, "has_task_loss", True) and cfg.lambda_out == cfg.lambda_feat == 0:
        raise SettingError("", "lambda_out and lambda_feat are 0 and this data has no task loss (recorded teacher "
                           "calls): nothing would train; give lambda_out or lambda_feat a positive weight",
                           also=("lambda_out", "lambda_feat"))
    workdir = Path(workdir)
    ckpt_root = workdir / CHECKPOINTS
    accelerator = Accelerator(mixed_precision=_mixed_precision(cfg.mixed_precision),
                              gradient_accumulation_steps=cfg.grad_accum)
    device = accelerator.device
    teacher = teacher.to(device).eval().requires_grad_(False)
    # eval mode on purpose: DiT's label embedding drops labels at random in train mode, and the student must
    # see exactly the teacher's conditioning (the data does the CFG label dropout, seeded per step)
    student = student.eval().requires_grad_(True)
    optimizer = torch.optim.AdamW(student.parameters(), lr=cfg.lr, weight_decay=0.0)
    student, optimizer = accelerator.prepare(student, optimizer)
    raw = accelerator.unwrap_model(student)
    state = TrainState(raw)
    settings = resume_settings(cfg, accelerator.mixed_precision, accelerator.num_processes)
    if resume:
        last = latest_checkpoint(ckpt_root)
        check_resume(verify_checkpoint(last), settings, list(mapping))
        doc, ema = load_checkpoint(last, raw, optimizer, accelerator.scaler)
        state.restore(doc, ema)
        accelerator.print(f"resumed from {last} at step {state.step}")
    check_ahead(ckpt_root, state.step)
    s_hooks, s_feats = capture_features(raw)
    t_hooks, t_feats = capture_features(teacher, mapping)
    rank, processes = accelerator.process_index, accelerator.num_processes
    shard = getattr(data, "shardable", False)
    if shard and cfg.batch_size % processes:
        raise SettingError("batch_size", f"{cfg.batch_size} is the global batch: it must be divisible by the "
                           f"{processes} processes")
    sum_over_processes = lambda t: accelerator.reduce(t.detach(), "sum")  # noqa: E731
    bar = tqdm(total=cfg.steps, initial=state.step, desc="distill",
               disable=not (cfg.progress and accelerator.is_main_process), dynamic_ncols=True)
    t_last = time.perf_counter()
    ran = 0

    def done() -> bool:
        if cfg.steps is not None and state.step >= cfg.steps:
            return True
        return cfg.minutes is not None and state.elapsed_s >= cfg.minutes * 60

    try:
        while not done():
            parts_acc: dict[str, float] = {}
            for micro in range(cfg.grad_accum):
                # the global batch is drawn alike on every process and split; an unsplittable one per process
                seed_rank = 0 if shard else rank
                g = torch.Generator().manual_seed(
                    (cfg.seed * 1_000_003 + state.step * 1009 + micro * 7919 + seed_rank * 104729) % (2**63))
                batch = data.batch(g, cfg.batch_size, device)
                if shard:
                    batch = batch.shard(rank, processes)
                with accelerator.accumulate(student):
                    with torch.no_grad(), accelerator.autocast():
                        teacher_pred = _predict(teacher, teacher.config, batch)
                    with accelerator.autocast():
                        student_pred = _predict(student, raw.config, batch)
                    loss, parts = distill_loss(student_pred, teacher_pred, batch.noise, s_feats, t_feats, mapping,
                                               cfg, sum_over_processes, processes if shard else 1)
                    accelerator.backward(loss)
                    if accelerator.sync_gradients:
                        accelerator.clip_grad_norm_(student.parameters(), 1.0)
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                if processes > 1:  # the logged losses are the processes' average (the global batch's)
                    mean = accelerator.reduce(torch.tensor(list(parts.values()), dtype=torch.float64, device=device),
                                              "mean")
                    parts = dict(zip(parts, mean.tolist()))
                if not math.isfinite(parts["loss"]):
                    raise _diverged(ckpt_root, state.step + 1, f"the loss is {parts['loss']}", cfg.lr)
                for k, v in parts.items():
                    parts_acc[k] = parts_acc.get(k, 0.0) + v / cfg.grad_accum
            state.update_ema(raw, cfg.ema_decay)
            state.step += 1
            ran += 1
            now = time.perf_counter()
            state.elapsed_s += now - t_last
            t_last = now
            parts_acc["step"] = state.step
            state.losses.append(parts_acc)
            bar.update(1)
            bar.set_postfix(loss=f"{parts_acc['loss']:.4f}", refresh=False)
            if on_log is not None and state.step % cfg.log_every == 0:
                on_log(parts_acc)
            if stop_after is not None and ran >= stop_after:
                break  # simulated kill: no save
            if state.step % cfg.save_every == 0 or done():
                bad = _non_finite(raw.state_dict()) or _non_finite(state.ema)
                if bad:
                    raise _diverged(ckpt_root, state.step, f"weight {bad} is not finite", cfg.lr)
                _save(accelerator, ckpt_root, state, raw, optimizer, settings, mapping)
                t_last = time.perf_counter()
    finally:
        bar.close()
        s_hooks.remove()
        t_hooks.remove()
    accelerator.wait_for_everyone()
    return {"losses": state.losses, "steps": state.step, "elapsed_s": state.elapsed_s, "ema": state.ema,
            "mixed_precision": accelerator.mixed_precision, "num_processes": accelerator.num_processes,
            "device": str(device), "killed": stop_after is not None and ran >= stop_after and not done()}


def resume_settings(cfg: DistillConfig, mixed_precision: str, num_processes: int) -> dict[str, Any]:
    """The settings a resumed run must share with the checkpoint (checkpoint.RESUME_SETTINGS)."""
    return {"lr": cfg.lr, "batch_size": cfg.batch_size, "lambda_task": cfg.lambda_task, "lambda_out": cfg.lambda_out,
            "lambda_feat": cfg.lambda_feat, "grad_accum": cfg.grad_accum, "ema_decay": cfg.ema_decay,
            "mixed_precision": mixed_precision, "seed": cfg.seed, "num_processes": num_processes,
            "data": cfg.data}


def _non_finite(sd: dict[str, torch.Tensor]) -> str | None:
    """The name of the first floating-point tensor in `sd` holding a NaN or inf (None if all are finite)."""
    return next((k for k, v in sd.items() if v.dtype.is_floating_point and not bool(torch.isfinite(v).all())), None)


def _diverged(root: Path, step: int, what: str, lr: float) -> DivergedError:
    """The one-line error of a diverged run: the step, what went non-finite, lr and the last good checkpoint."""
    done = checkpoints(root) if root.is_dir() else []
    last = f"the last good checkpoint, {done[-1]}, is intact" if done else "no checkpoint was written"
    return DivergedError("", f"training diverged at step {step}: {what}; lower lr (now {lr:g}) and start a new "
                         f"out ({last})", also=("lr", "out"))


def check_ahead(root: Path, step: int) -> None:
    """CheckpointError, before any training, when an entry is where a later checkpoint of this run goes
    (a file named step_N, or an unfinished folder): it is not accel's, so it is never replaced."""
    if not root.is_dir():
        if root.exists() or root.is_symlink():
            raise CheckpointError("", f"{root} is not a folder; checkpoints go there: move it away")
        return
    for p in sorted(root.glob("step_*")):
        m = _STEP.fullmatch(p.name)
        if m and int(m.group(1)) > step:
            kind = "a folder accel did not finish (no manifest.json)" if p.is_dir() else "not a checkpoint folder"
            raise CheckpointError("", f"{p} is where this run saves a later checkpoint and is {kind}; move it out "
                                  f"of {root}")


def _save(accelerator: Any, root: Path, state: TrainState, model: torch.nn.Module, optimizer: Any,
          settings: dict[str, Any], mapping: Sequence[int], keep: int = 2) -> None:
    """Checkpoint into root/step_N (checkpoint.py: staged, manifest last); keep the last `keep` of accel's
    checkpoints and remove the older ones through the deletion door (checkpoint.remove_checkpoint)."""
    accelerator.wait_for_everyone()
    path = root / f"step_{state.step:07d}"
    if accelerator.is_main_process:
        save_checkpoint(path, model, state.ema, optimizer,
                        {**state.as_json(), "settings": settings, "block_map": list(mapping)}, accelerator.scaler)
        old = [p for p in checkpoints(root) if p != path]
        for p in old[:len(old) - max(0, keep - 1)]:
            remove_checkpoint(p)
    accelerator.wait_for_everyone()


def ema_model(student: torch.nn.Module, ema: dict[str, torch.Tensor]) -> torch.nn.Module:
    """`student` with the EMA weights loaded (in place), in eval mode, in the student's dtype."""
    sd = student.state_dict()
    student.load_state_dict({k: ema[k].to(device=v.device, dtype=v.dtype) for k, v in sd.items()})
    return student.eval()
