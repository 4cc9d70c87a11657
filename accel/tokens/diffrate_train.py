"""`accel diffrate`: learn per-block kept-token rates by self-distillation (DiffRate for DiTs).

Calibration data: the pipeline samples a few images with its own scheduler; every
transformer call (latent, timestep, condition, CFG rows as the pipeline batches them)
and the uncompressed model's output on it are recorded.

Training: each block b has learnable logits over candidate kept fractions
`CANDIDATES`. In a forward pass every merged sub-layer runs on all tokens; for
candidate c the tokens outside the top-k_c by importance take the output of their
most similar kept token (the unmerge of a merge into the kept tokens), and the
sub-layer's output is Σ_c p_c · output_c with p = the one-hot argmax of the logits
in the forward pass and softmax(logits) in the backward pass (straight-through
estimator). Loss = MSE(output, uncompressed output) / var(uncompressed output) +
λ·(FLOPs ratio − target)², FLOPs ratio = Σ_b Σ_c p_c·FLOPs_b(k_c) / full, over the
blocks' attention, cross-attention and MLP. Only the logits train (Adam); the model
is frozen. The simulated output ignores how merging changes the kept tokens' own
attention (the forward is the unmerge-copy part of the compression), which keeps a
step at one uncompressed forward + backward.

Resumable: logits, Adam state and the iteration are saved next to the output
(`<out>.ckpt.safetensors`) every `save_every` iterations and picked up by the next run
with the same settings; the finished run writes `<out>` (JSON) and deletes the checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch
from diffusers.hooks import ModelHook

from ..families import BlockRef, blocks_of, mergeable, sublayers_of
from ..hooks import HookSet
from .diffrate import attention_received, kept_count
from .flops import SublayerCost

CANDIDATES = (1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25)


class _SoftBlock:
    """Per block: logits, candidate FLOPs and the per-call ranking shared by its sub-layers."""

    def __init__(self, ref: BlockRef, kinds: tuple[str, ...], logits: torch.nn.Parameter, index: int):
        self.ref, self.kinds, self.logits, self.index = ref, kinds, logits, index
        self.dest: list[torch.Tensor] | None = None  # per candidate (B, N) index of the token whose output is used


class _SoftHook(ModelHook):
    def __init__(self, trainer: "RateTrainer", block: _SoftBlock, kind: str):
        super().__init__()
        self.trainer, self.block, self.kind = trainer, block, kind

    def new_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        fwd = self.fn_ref.original_forward
        x = args[0] if args else kwargs["hidden_states"]
        block = self.block
        prefix = self.trainer.text_len if block.ref.stack.text_prefix else 0
        img = x[:, prefix:]
        if block.dest is None or block.dest[0].shape != img.shape[:2]:
            block.dest = self.trainer.destinations(block, img)
        out = fwd(*args, **kwargs)
        first = out[0] if isinstance(out, tuple) else out
        y = first[:, prefix:]
        p = self.trainer.probs(block)
        c = y.shape[-1]
        mixed = sum(p[i] * y.gather(1, d.unsqueeze(-1).expand(*d.shape, c)) for i, d in enumerate(block.dest))
        mixed = torch.cat([first[:, :prefix], mixed], dim=1) if prefix else mixed
        return (mixed, *out[1:]) if isinstance(out, tuple) else mixed


class _BlockStart(ModelHook):
    def __init__(self, trainer: "RateTrainer", block: _SoftBlock):
        super().__init__()
        self.trainer, self.block = trainer, block

    def pre_forward(self, module, *args, **kwargs):
        self.block.dest = None
        _, enc = self.block.ref.io.inputs(args, kwargs)
        enc = enc if enc is not None else kwargs.get("encoder_hidden_states")
        self.trainer.text_len = int(enc.shape[1]) if enc is not None and self.block.ref.stack.returns_pair else 0
        return args, kwargs


class RateTrainer:
    """Soft-compression hooks on a model, the rate logits and the FLOPs model."""

    def __init__(self, model: torch.nn.Module, sublayers: tuple[str, ...] = ("attention", "mlp"),
                 candidates: tuple[float, ...] = CANDIDATES, queries: int = 32, temperature: float = 1.0,
                 init_keep: float = 1.0):
        self.model = model
        self.candidates = candidates
        self.queries = queries
        self.temperature = temperature
        self.text_len = 0
        self.blocks: list[_SoftBlock] = []
        logits = torch.zeros(len(blocks_of(model)), len(candidates))
        logits[:, 0] = init_keep  # start from the uncompressed model (DiffRate starts at full rate too)
        self.logits = torch.nn.Parameter(logits)
        self.costs: list[dict[str, SublayerCost]] = []
        self._hooks = HookSet(model)
        self.sublayers = sublayers
        for ref in blocks_of(model):
            kinds = tuple(k for k in sublayers if mergeable(ref, k) is None)
            block = _SoftBlock(ref, kinds, self.logits, ref.global_index)
            self.blocks.append(block)
            subs = sublayers_of(ref)
            self.costs.append({k: SublayerCost(m, k) for k, m in subs.items()})
            for kind in kinds:
                self._hooks.add(subs[kind], _SoftHook(self, block, kind), f"accel.diffrate-train.{kind}")
            self._hooks.add(ref.module, _BlockStart(self, block), "accel.diffrate-train.block")

    def remove(self) -> None:
        self._hooks.remove()

    def probs(self, block: _SoftBlock) -> torch.Tensor:
        """Straight-through probabilities: one-hot argmax forward, softmax gradient backward."""
        soft = torch.softmax(self.logits[block.index] / self.temperature, dim=-1)
        hard = torch.zeros_like(soft).scatter_(0, soft.argmax().unsqueeze(0), 1.0)
        return hard + soft - soft.detach()

    def destinations(self, block: _SoftBlock, tokens: torch.Tensor) -> list[torch.Tensor]:
        """Per candidate, (B, N) index of the kept token whose output each token takes."""
        b, n, _ = tokens.shape
        attn = sublayers_of(block.ref).get("attention")
        importance = attention_received(attn, tokens, self.queries)
        order = importance.argsort(dim=1, descending=True)
        with torch.no_grad():
            m = tokens.float()
            m = m / m.norm(dim=-1, keepdim=True).clamp_min(1e-12)
            sim = m @ m.transpose(1, 2)  # (B, N, N)
        out = []
        for rate in self.candidates:
            k = kept_count(rate, n)
            if k == n:
                out.append(torch.arange(n, device=tokens.device).expand(b, n))
                continue
            keep = order[:, :k]
            nearest = keep.gather(1, sim.gather(2, keep.unsqueeze(1).expand(b, n, k)).argmax(dim=-1))
            is_kept = torch.zeros(b, n, dtype=torch.bool, device=tokens.device).scatter_(1, keep, True)
            out.append(torch.where(is_kept, torch.arange(n, device=tokens.device).expand(b, n), nearest))
        return out

    def flops_ratio(self, n: int, text: int = 0) -> torch.Tensor:
        """Expected FLOPs ratio of the blocks' sub-layers under the straight-through probabilities."""
        total = torch.zeros(())
        full = 0.0
        for block, costs in zip(self.blocks, self.costs):
            p = self.probs(block)
            for kind, cost in costs.items():
                t = text if block.ref.stack.text_prefix or (kind == "attention" and block.ref.stack.returns_pair) else 0
                keys = text or n if kind == "cross_attention" else None
                f_full = float(cost(n, t, keys))
                full += f_full
                if kind in block.kinds:
                    f = torch.tensor([float(cost(kept_count(r, n), t, keys)) for r in self.candidates])
                    total = total + (p * f).sum()
                else:
                    total = total + f_full
        return total / full

    def rates(self) -> list[float]:
        return [self.candidates[int(i)] for i in self.logits.argmax(dim=-1)]


def _take_rows(call: tuple, rows: int | None, gen: torch.Generator) -> tuple[tuple, dict, torch.Tensor]:
    """A random subset of `rows` batch rows of a recorded call (every batch-shaped tensor sliced alike)."""
    args, kwargs, target = call
    b = target.shape[0]
    if rows is None or rows >= b:
        return args, kwargs, target
    idx = torch.randperm(b, generator=gen)[:rows]
    pick = lambda v: v[idx] if isinstance(v, torch.Tensor) and v.ndim and v.shape[0] == b else v  # noqa: E731
    return tuple(pick(a) for a in args), {k: pick(v) for k, v in kwargs.items()}, target[idx]


def train_rates(model: torch.nn.Module, calls: list, flops: float, iters: int = 200, lr: float = 0.02,
                lam: float = 5.0, rows: int | None = 4, sublayers: tuple[str, ...] = ("attention", "mlp"),
                seed: int = 0,
                checkpoint: Path | None = None, save_every: int = 10, progress: bool = True,
                log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Learn the rate logits on recorded calls; returns the rates file content (a dict)."""
    from safetensors.torch import save_file
    from tqdm.auto import tqdm

    from ..outputs import atomic_path
    from ..readers import read_safetensors

    params = [p for p in model.parameters()]
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    trainer = RateTrainer(model, sublayers)
    opt = torch.optim.Adam([trainer.logits], lr=lr)
    start = 0
    settings = torch.tensor([flops, lam, lr, float(len(calls)), float(seed), float(trainer.logits.shape[0]),
                             float(rows or 0), float(iters)])
    if checkpoint is not None and checkpoint.exists():
        state = read_safetensors(checkpoint, what="diffrate checkpoint")  # finite, or ReadError
        if torch.allclose(state["settings"], settings):
            trainer.logits.grad = torch.zeros_like(trainer.logits)
            opt.step()  # materialise Adam's state (a zero step), then overwrite it
            opt.zero_grad()
            st = opt.state[trainer.logits]
            st["exp_avg"].copy_(state["exp_avg"])
            st["exp_avg_sq"].copy_(state["exp_avg_sq"])
            st["step"].fill_(float(state["step"]))
            trainer.logits.data.copy_(state["logits"])
            start = int(state["iteration"])
            if log:
                log(f"resuming from {checkpoint} at iteration {start}")
    gen = torch.Generator().manual_seed(seed)
    order = torch.randint(len(calls), (iters,), generator=gen).tolist()
    history = []
    try:
        bar = tqdm(range(start, iters), disable=not progress, desc="diffrate", initial=start, total=iters)
        for it in bar:
            args, kwargs, target = _take_rows(calls[order[it]], rows, torch.Generator().manual_seed(seed + it))
            out = model(*args, **kwargs)
            out = out[0] if isinstance(out, tuple) else getattr(out, "sample", out)
            distill = torch.mean((out.float() - target.float()) ** 2) / target.float().var().clamp_min(1e-12)
            n = _image_tokens(trainer)
            ratio = trainer.flops_ratio(n, trainer.text_len)
            loss = distill + lam * (ratio - flops) ** 2
            opt.zero_grad()
            loss.backward()
            opt.step()
            history.append((float(distill.detach()), float(ratio.detach())))
            bar.set_postfix(distill=f"{history[-1][0]:.4f}", flops=f"{history[-1][1]:.3f}")
            if checkpoint is not None and ((it + 1) % save_every == 0 or it + 1 == iters):
                st = opt.state[trainer.logits]
                with atomic_path(checkpoint) as tmp:  # a kill mid-save leaves the previous checkpoint whole
                    save_file({"logits": trainer.logits.detach().clone(), "exp_avg": st["exp_avg"].clone(),
                               "exp_avg_sq": st["exp_avg_sq"].clone(), "step": st["step"].reshape(1).clone(),
                               "iteration": torch.tensor(it + 1), "settings": settings}, str(tmp))
        n = _image_tokens(trainer)
        with torch.no_grad():
            final_ratio = float(trainer.flops_ratio(n, trainer.text_len))
        rates = trainer.rates()
        return {"rates": rates, "sublayers": list(sublayers), "flops_target": flops, "flops_ratio": final_ratio,
                "candidates": list(CANDIDATES), "depth": len(rates), "iterations": iters, "lambda": lam,
                "lr": lr, "rows": rows, "calls": len(calls), "history": history[-20:]}
    finally:
        trainer.remove()
        for p, f in zip(params, flags):
            p.requires_grad_(f)


def _image_tokens(trainer: RateTrainer) -> int:
    for block in trainer.blocks:
        if block.dest is not None:
            return int(block.dest[0].shape[1])
    return 0


def check_checkpoint(ckpt: Path) -> None:
    """ValueError unless `ckpt` (when it exists) is a diffrate checkpoint train_rates can resume from."""
    from ..readers import ReadError, read_safetensors

    if not ckpt.exists():
        return
    try:
        state = read_safetensors(ckpt, finite=True)  # NaN logits would become NaN rates
    except ReadError as exc:
        raise ValueError(f"{ckpt} is not a readable checkpoint ({exc.problem}); delete it to start over") from None
    need = {"logits", "exp_avg", "exp_avg_sq", "step", "iteration", "settings"}
    if not need <= set(state) or state["logits"].ndim != 2 or state["settings"].shape != (8,):
        raise ValueError(f"{ckpt} is not an `accel diffrate` checkpoint (missing {sorted(need - set(state))} or "
                         "wrong shapes); delete it to start over")


def remove_checkpoint(ckpt: Path) -> None:
    """Remove a finished run's checkpoint through the deletion door (accel.outputs.remove_own), and only when
    it is an `accel diffrate` checkpoint (check_checkpoint); any other file there stays, with a notice."""
    from ..outputs import file_record, notice, remove_own

    if not ckpt.exists():
        return
    try:
        check_checkpoint(ckpt)
    except ValueError:
        notice(f"kept {ckpt}: it is not an `accel diffrate` checkpoint")
        return
    remove_own(ckpt.parent, {ckpt.name: file_record(ckpt)}, [ckpt.name])
