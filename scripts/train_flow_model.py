#!/usr/bin/env python
"""Train the embedded flow model (stock StableDiffusion3Pipeline, tiny SD3Transformer2DModel).

Reproduces ``accel/models/weights_flow/``:

    python scripts/train_flow_model.py --out accel/models/weights_flow --steps 1600 --minutes 85 --threads 1
    python scripts/train_flow_model.py --out accel/models/weights_flow ... --resume   # continue

Rectified flow as SD3: x_t = (1 - s) x0 + s eps with s ~ logit-normal(0, 1), the
transformer predicts the velocity eps - x0 at timestep s * 1000 (what
FlowMatchEulerDiscreteScheduler passes). Prompts are drawn from the template set per digit
(``accel.models.flow.PROMPT_TEMPLATES``), 10% empty prompts for classifier-free guidance.
The zero "T5" block the pipeline appends (text_encoder_3 is None) has 6 tokens in most
steps, 256 (the stock default) in 15% and 1..256 in 15%, so plain pipe(prompt) calls work too.
The two tiny CLIP text encoders are trained JOINTLY with the transformer (frozen afterwards);
prompts are encoded by the pipeline's own ``encode_prompt``, so training sees exactly what
sampling sees. AdamW with warmup + cosine decay; EMA weights are exported.

Checkpoints (safetensors + JSON under a sha256 manifest, never a pickle; the format of
``accel/pruning/checkpoint.py``) go to ``--ckpt-dir`` every ``--checkpoint-every`` steps
(the last 3 kept); ``--resume`` continues from the newest. Training stops at ``--steps`` or
after ``--minutes`` of training time, whichever comes first; the cosine runs over ``--steps``.
Outputs in ``--out``: the pipeline (save_pretrained layout), flow.json (hashes, training
record), loss_curve.json, loss_curve.png.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from accel.models.digits import load_digits_split  # noqa: E402
from accel.models.flow import (  # noqa: E402
    PROMPT_TEMPLATES,
    STOCK_MAX_SEQUENCE_LENGTH,
    T5_ZERO_TOKENS,
    TRANSFORMER_CONFIG,
    build_flow_pipeline,
    digit_prompt,
    encode_prompts,
    save_flow_pipeline,
)
from accel.pruning.checkpoint import (  # noqa: E402
    CheckpointError,
    latest_checkpoint,
    load_checkpoint,
    remove_checkpoint,
    save_checkpoint,
)

SETTINGS = ("batch_size", "lr", "ema_decay", "prompt_dropout", "seed", "text_lr_scale", "stock_zero_block")


def trainable(pipe) -> torch.nn.ModuleDict:
    return torch.nn.ModuleDict(
        {"transformer": pipe.transformer, "text_encoder": pipe.text_encoder, "text_encoder_2": pipe.text_encoder_2}
    )


@torch.no_grad()
def ema_update(ema: dict[str, torch.Tensor], model: torch.nn.Module, step: int, max_decay: float):
    decay = min(max_decay, (1 + step) / (10 + step))  # warm-up like diffusers' EMAModel
    for k, v in model.state_dict().items():
        if v.dtype.is_floating_point:
            ema[k].lerp_(v.detach(), 1 - decay)
        else:
            ema[k].copy_(v)


def zero_block_length(args) -> int:
    """Length of the pipeline's zero "T5" block this step: mostly the fast one, sometimes the stock
    default, sometimes in between (so the model does not depend on it)."""
    u = float(torch.rand(()))
    if u < args.stock_zero_block:
        return STOCK_MAX_SEQUENCE_LENGTH
    if u < 2 * args.stock_zero_block:
        return int(torch.randint(1, STOCK_MAX_SEQUENCE_LENGTH + 1, ()))
    return T5_ZERO_TOKENS


def write_loss_curve(losses: list[float], out: Path):
    import json

    (out / "loss_curve.json").write_text(json.dumps({"step_loss": [round(v, 5) for v in losses]}) + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception:  # pragma: no cover - optional
        return
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    if losses:
        ax.plot(range(1, len(losses) + 1), losses, lw=0.5, alpha=0.35, label="step loss")
        k = max(1, min(50, len(losses) // 10))
        sm = torch.tensor(losses).unfold(0, k, 1).mean(1).tolist()
        ax.plot(range(k, len(losses) + 1), sm, lw=1.5, label=f"mean of {k}")
    ax.set_xlabel("step")
    ax.set_ylabel("velocity MSE")
    ax.set_yscale("log")
    ax.set_title("flow model training loss")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "loss_curve.png")
    plt.close(fig)


def export(pipe, model, ema, state: dict, args, out: Path, final: bool):
    """Write the EMA weights as the pipeline into ``out`` (training weights restored afterwards)."""
    live = {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(ema)
    out.mkdir(parents=True, exist_ok=True)
    losses = state["losses"]
    training = {
        "steps": state["step"], "target_steps": args.steps, "final": final, "batch_size": args.batch_size,
        "lr": args.lr, "text_lr_scale": args.text_lr_scale, "warmup_steps": args.warmup,
        "lr_schedule": "linear warmup + cosine to 10% over target_steps", "ema_decay": args.ema_decay,
        "prompt_dropout": args.prompt_dropout, "seed": args.seed, "timestep_sampling": "logit-normal(0, 1)",
        "loss": "rectified-flow velocity MSE (eps - x0)", "text_encoders": "trained jointly, then frozen",
        "t5_zero_tokens": T5_ZERO_TOKENS, "stock_zero_block_share": args.stock_zero_block, "prompt_templates": list(PROMPT_TEMPLATES),
        "data": "sklearn load_digits train split (1,397 images), bilinear 8->32, [-1, 1]",
        "wall_time_s": round(state["elapsed_s"], 1), "device": f"cpu ({os.cpu_count()} cores)",
        "torch_threads": torch.get_num_threads(),
        "final_loss_avg100": sum(losses[-100:]) / max(1, len(losses[-100:])) if losses else None,
        "transformer": dict(TRANSFORMER_CONFIG),
        "num_parameters": {k: sum(p.numel() for p in m.parameters()) for k, m in model.items()},
    }
    save_flow_pipeline(pipe, out, training)
    write_loss_curve(losses, out)
    model.load_state_dict(live)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("accel/models/weights_flow"))
    p.add_argument("--ckpt-dir", type=Path, default=Path("/work/flow_train/checkpoints"))
    p.add_argument("--steps", type=int, default=1600)
    p.add_argument("--minutes", type=float, default=0.0, help="stop after this much training time (0: no limit)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--text-lr-scale", type=float, default=1.0, help="text encoders' lr = lr x this")
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--ema-decay", type=float, default=0.999)
    p.add_argument("--prompt-dropout", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--stock-zero-block", type=float, default=0.15,
                   help="share of steps with the stock 256 zero T5 tokens (the same share again: 1..256)")
    p.add_argument("--checkpoint-every", type=int, default=100)
    p.add_argument("--export-every", type=int, default=0, help="also export to --out every N steps (0: at the end)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: all cores)")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --ckpt-dir")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from tqdm.auto import tqdm

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    pipe = build_flow_pipeline(seed=args.seed)
    model = trainable(pipe).train()
    text_params = [p for k, m in model.items() if k != "transformer" for p in m.parameters()]
    optimizer = torch.optim.AdamW(
        [{"params": list(model["transformer"].parameters()), "lr": args.lr},
         {"params": text_params, "lr": args.lr * args.text_lr_scale}],
        weight_decay=0.0, betas=(0.9, 0.999),
    )
    base_lrs = [g["lr"] for g in optimizer.param_groups]

    def lr_factor(step: int) -> float:
        if step < args.warmup:
            return (step + 1) / args.warmup
        prog = min(1.0, (step - args.warmup) / max(1, args.steps - args.warmup))
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * prog))

    settings = {k: getattr(args, k) for k in SETTINGS}
    state = {"step": 0, "elapsed_s": 0.0, "losses": [], "settings": settings}
    ema = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if args.resume:
        path = latest_checkpoint(args.ckpt_dir)
        saved, ema = load_checkpoint(path, model, optimizer)
        for k, v in settings.items():
            if saved["settings"].get(k) != v:
                raise CheckpointError("", f"--resume: --{k.replace('_', '-')} {v} differs from the run's "
                                      f"{saved['settings'].get(k)}")
        state.update(step=saved["step"], elapsed_s=saved["elapsed_s"], losses=saved["losses"])
        print(f"resumed from {path} at step {state['step']}", flush=True)
    elif args.ckpt_dir.exists() and any(args.ckpt_dir.glob("step_*")):
        raise SystemExit(f"{args.ckpt_dir} already holds checkpoints; pass --resume or another --ckpt-dir")
    args.ckpt_dir.mkdir(parents=True, exist_ok=True)

    images, labels = load_digits_split("train")
    n = images.shape[0]
    bs = args.batch_size
    bar = tqdm(total=args.steps, initial=state["step"], desc="train", disable=args.no_progress,
               mininterval=1.0 if sys.stderr.isatty() else 30.0, dynamic_ncols=True)
    budget_s = args.minutes * 60 if args.minutes > 0 else math.inf
    t_last = time.perf_counter()
    while state["step"] < args.steps and state["elapsed_s"] < budget_s:
        for g, base in zip(optimizer.param_groups, base_lrs):
            g["lr"] = base * lr_factor(state["step"])
        idx = torch.randint(0, n, (bs,))
        templates = torch.randint(0, len(PROMPT_TEMPLATES), (bs,))
        drop = torch.rand(bs) < args.prompt_dropout
        s = torch.sigmoid(torch.randn(bs))  # logit-normal timestep sampling as SD3
        noise = torch.randn((bs, 1, 32, 32))
        x0 = images[idx]
        prompts = ["" if drop[i] else digit_prompt(int(labels[idx[i]]), int(templates[i])) for i in range(bs)]
        zero_tokens = zero_block_length(args)
        embeds, pooled = encode_prompts(pipe, prompts, max_sequence_length=zero_tokens)
        sv = s.view(-1, 1, 1, 1)
        xt = (1 - sv) * x0 + sv * noise
        pred = model["transformer"](hidden_states=xt, timestep=s * 1000, encoder_hidden_states=embeds,
                                    pooled_projections=pooled, return_dict=False)[0]
        loss = F.mse_loss(pred.float(), noise - x0)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        ema_update(ema, model, state["step"], args.ema_decay)
        state["step"] += 1
        state["losses"].append(float(loss.detach()))
        now = time.perf_counter()
        state["elapsed_s"] += now - t_last
        t_last = now
        bar.update(1)
        recent = state["losses"][-50:]
        bar.set_postfix(loss=f"{sum(recent) / len(recent):.4f}", s_per_step=f"{state['elapsed_s'] / max(1, len(state['losses'])):.2f}", refresh=False)

        done = state["step"] >= args.steps or state["elapsed_s"] >= budget_s
        if state["step"] % args.checkpoint_every == 0 or done:
            save_checkpoint(args.ckpt_dir / f"step_{state['step']:07d}", model, ema, optimizer,
                            {"step": state["step"], "elapsed_s": state["elapsed_s"], "losses": state["losses"],
                             "settings": settings})
            old = sorted(args.ckpt_dir.glob("step_*"))[:-3]
            for p in old:  # this run's own older checkpoints
                remove_checkpoint(p)  # only a folder that is exactly what accel wrote
            print(f"\ncheckpoint step {state['step']} elapsed {state['elapsed_s'] / 60:.1f} min "
                  f"loss(avg50) {sum(recent) / len(recent):.4f}", flush=True)
            t_last = time.perf_counter()
        if args.export_every and state["step"] % args.export_every == 0 and not done:
            export(pipe, model, ema, state, args, args.out, final=False)
            t_last = time.perf_counter()
    bar.close()
    export(pipe, model, ema, state, args, args.out, final=True)
    print(f"done: {state['step']} steps, {state['elapsed_s'] / 60:.1f} min, loss(avg last 100) "
          f"{sum(state['losses'][-100:]) / max(1, len(state['losses'][-100:])):.4f} -> {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
