#!/usr/bin/env python
"""Train the embedded default generator (a stock DiTTransformer2DModel) on 32x32 digits.

Reproduces ``accel/models/weights/generator.{safetensors,json}``:

    python scripts/train_default_model.py --out accel/models/weights            # ~45 min, 2-core CPU
    python scripts/train_default_model.py --out accel/models/weights --resume   # continue

Seeded; epsilon prediction; DDPMScheduler with linear betas; 10% label dropout to the
null class 1000 (the class the stock DiTPipeline uses for classifier-free guidance);
AdamW with warmup + cosine decay; EMA weights are exported. Checkpoints (model,
optimizer, LR schedule, EMA, RNG, loss history) are accel's own safetensors + JSON folders
under a sha256 manifest (``accel/pruning/checkpoint.py``, never a pickle) in
``<out>/checkpoint/step_NNNNNNN`` and restored by ``--resume``.
Uses a GPU when one is present (accelerate picks the device).
Outputs in ``--out``: generator.safetensors, generator.json, loss_curve.json, loss_curve.png.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from accel.models.default import (  # noqa: E402
    GENERATOR_CONFIG,
    GENERATOR_CONFIG_FILE,
    GENERATOR_WEIGHTS,
    ID2LABEL,
    NULL_CLASS,
    TRAIN_SCHEDULER_CONFIG,
    build_generator,
)
from accel.models.digits import load_digits_split  # noqa: E402
from accel.pruning.checkpoint import (  # noqa: E402
    CheckpointError,
    latest_checkpoint,
    load_checkpoint,
    remove_checkpoint,
    save_checkpoint,
)


class TrainState:
    """Everything besides model/optimizer/LR that a resume needs, as JSON-able values."""

    def __init__(self, model: torch.nn.Module, seed: int):
        self.step = 0
        self.losses: list[float] = []
        self.elapsed_s = 0.0
        self.ema = copy.deepcopy(model).requires_grad_(False).eval()
        self.gen = torch.Generator().manual_seed(seed)

    def to_json(self, lr_sched) -> dict:
        sched = lr_sched.state_dict()  # LambdaLR with a plain function: numbers, lr_lambdas == [None]
        return {"step": self.step, "losses": self.losses, "elapsed_s": self.elapsed_s,
                "data_rng": self.gen.get_state().tolist(), "lr_schedule": sched}

    def from_json(self, doc: dict, ema: dict[str, torch.Tensor], lr_sched) -> None:
        self.step = int(doc["step"])
        self.losses = [float(v) for v in doc["losses"]]
        self.elapsed_s = float(doc["elapsed_s"])
        self.ema.load_state_dict(ema)
        self.gen.set_state(torch.tensor(doc["data_rng"], dtype=torch.uint8))
        lr_sched.load_state_dict(doc["lr_schedule"])


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, step: int, max_decay: float):
    decay = min(max_decay, (1 + step) / (10 + step))  # warm-up like diffusers' EMAModel
    for pe, pm in zip(ema.parameters(), model.parameters()):
        pe.lerp_(pm.detach().to(pe.dtype), 1 - decay)


def export(state: TrainState, args, out: Path, final: bool):
    from safetensors.torch import save_file

    ema = state.ema
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in ema.state_dict().items()}
    wpath = out / GENERATOR_WEIGHTS
    tmp = wpath.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata={"format": "pt"})
    os.replace(tmp, wpath)
    sha = hashlib.sha256(wpath.read_bytes()).hexdigest()
    n_params = sum(v.numel() for v in tensors.values())
    meta = {
        "transformer": dict(GENERATOR_CONFIG),
        "scheduler": dict(TRAIN_SCHEDULER_CONFIG),
        "id2label": {str(k): v for k, v in ID2LABEL.items()},
        "null_class": NULL_CLASS,
        "sha256": sha,
        "num_parameters": n_params,
        "training": {
            "steps": state.step,
            "target_steps": args.steps,
            "final": final,
            "batch_size": args.batch_size,
            "lr": args.lr,
            "warmup_steps": args.warmup,
            "lr_schedule": "linear warmup + cosine to 10%",
            "ema_decay": args.ema_decay,
            "label_dropout": args.label_dropout,
            "seed": args.seed,
            "data": "sklearn load_digits train split (1,397 images), bilinear 8->32, [-1, 1]",
            "wall_time_s": round(state.elapsed_s, 1),
            "final_loss_avg100": (
                sum(state.losses[-100:]) / max(1, len(state.losses[-100:])) if state.losses else None
            ),
            "device": args.device_name,
            "torch_threads": torch.get_num_threads(),
        },
    }
    (out / GENERATOR_CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    write_loss_curve(state.losses, out)


def write_loss_curve(losses: list[float], out: Path):
    (out / "loss_curve.json").write_text(
        json.dumps({"step_loss": [round(v, 5) for v in losses]}) + "\n"
    )
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception:  # pragma: no cover - matplotlib is a dependency, but stay robust
        return
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    if losses:
        ax.plot(range(1, len(losses) + 1), losses, lw=0.5, alpha=0.35, label="step loss")
        k = max(1, min(50, len(losses) // 10))
        if len(losses) >= k:
            sm = torch.tensor(losses).unfold(0, k, 1).mean(1).tolist()
            ax.plot(range(k, len(losses) + 1), sm, lw=1.5, label=f"mean of {k}")
    ax.set_xlabel("step")
    ax.set_ylabel("epsilon MSE")
    ax.set_yscale("log")
    ax.set_title("default generator training loss")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "loss_curve.png")
    plt.close(fig)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("accel/models/weights"))
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--ema-decay", type=float, default=0.999)
    p.add_argument("--label-dropout", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint-every", type=int, default=100)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: all cores)")
    p.add_argument("--resume", action="store_true", help="continue from <out>/checkpoint")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from diffusers import DDPMScheduler
    from tqdm.auto import tqdm

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    ckpt_dir = out / "checkpoint"

    set_seed(args.seed)
    accelerator = Accelerator()
    device = accelerator.device
    args.device_name = (
        torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({os.cpu_count()} cores)"
    )

    images, labels = load_digits_split("train")
    images, labels = images.to(device), labels.to(device)
    noise_sched = DDPMScheduler(**TRAIN_SCHEDULER_CONFIG)
    alphas_cumprod = noise_sched.alphas_cumprod.to(device)

    model = build_generator().train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0, betas=(0.9, 0.999))

    def lr_lambda(step: int) -> float:
        if step < args.warmup:
            return (step + 1) / args.warmup
        prog = min(1.0, (step - args.warmup) / max(1, args.steps - args.warmup))
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * prog))

    lr_sched = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda)
    model, optimizer, lr_sched = accelerator.prepare(model, optimizer, lr_sched)
    state = TrainState(accelerator.unwrap_model(model), args.seed)

    if args.resume:
        try:
            path = latest_checkpoint(ckpt_dir)
            doc, ema = load_checkpoint(path, accelerator.unwrap_model(model), optimizer)
        except CheckpointError as exc:  # names the setting (resume): print its flag, as `accel distill` does
            from accel.commands._shared import flag_line

            raise SystemExit(flag_line(exc)) from None
        state.from_json(doc, ema, lr_sched)
        accelerator.print(f"resumed from {path} at step {state.step}")
    elif ckpt_dir.exists() and any(ckpt_dir.iterdir()):
        raise SystemExit(f"{ckpt_dir} already holds checkpoints: pass --resume, or another --out")
    state.ema.to(device)

    n = images.shape[0]
    bs = args.batch_size
    bar = tqdm(
        total=args.steps, initial=state.step, desc="train", disable=args.no_progress,
        mininterval=1.0 if sys.stderr.isatty() else 15.0, dynamic_ncols=True,
    )
    t_last = time.perf_counter()
    while state.step < args.steps:
        g = state.gen
        idx = torch.randint(0, n, (bs,), generator=g)
        t = torch.randint(0, noise_sched.config.num_train_timesteps, (bs,), generator=g)
        noise = torch.randn((bs, 1, 32, 32), generator=g)
        drop = torch.rand(bs, generator=g) < args.label_dropout
        idx, t, noise, drop = idx.to(device), t.to(device), noise.to(device), drop.to(device)
        x0 = images[idx]
        y = torch.where(drop, torch.full_like(labels[idx], NULL_CLASS), labels[idx])
        a = alphas_cumprod[t].view(-1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise

        pred = model(xt, timestep=t, class_labels=y).sample
        loss = F.mse_loss(pred.float(), noise)
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        lr_sched.step()
        optimizer.zero_grad(set_to_none=True)

        ema_update(state.ema, accelerator.unwrap_model(model), state.step, args.ema_decay)
        state.step += 1
        state.losses.append(float(loss.detach()))
        now = time.perf_counter()
        state.elapsed_s += now - t_last
        t_last = now
        bar.update(1)
        bar.set_postfix(loss=f"{sum(state.losses[-50:]) / len(state.losses[-50:]):.4f}", refresh=False)

        if state.step % args.checkpoint_every == 0 or state.step == args.steps:
            accelerator.wait_for_everyone()
            if accelerator.is_main_process:
                old = list(ckpt_dir.glob("step_*"))
                save_checkpoint(ckpt_dir / f"step_{state.step:07d}", accelerator.unwrap_model(model),
                                state.ema.state_dict(), optimizer, state.to_json(lr_sched))
                for p in old:  # this run's own older checkpoints (each has a manifest we wrote)
                    remove_checkpoint(p)
                export(state, args, out, final=state.step >= args.steps)
            t_last = time.perf_counter()
    bar.close()
    if accelerator.is_main_process:
        export(state, args, out, final=True)
        accelerator.print(
            f"done: {state.step} steps, {state.elapsed_s / 60:.1f} min, "
            f"loss(avg last 100) {sum(state.losses[-100:]) / max(1, len(state.losses[-100:])):.4f} -> {out}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
