"""`--selector learned`: a TinyFusion-style differentiable choice of the k blocks to keep.

Every prunable block gets a keep logit θ_i. Each step draws Gumbel noise g, keeps the top-k of
θ + g (hard 0/1 mask m, exactly k blocks) and passes gradients through a soft mask
σ((θ + g − τ_k)/T) (straight-through; τ_k is midway between the k-th and (k+1)-th value, T anneals
from 1 to 0.1). A gated block returns h + m_i (f_i(h) − h), so m_i = 0 is the bypassed block.
The loss is the calibration output error against the full model; the kept blocks' weights of a
copy are trained jointly (TinyFusion's recoverability term: a mask is judged by how well the model
does after a short update, not only at once). At the end the top-k of θ is fixed; the pruned model
is built from the ORIGINAL weights, as with every selector, and distillation follows (`accel distill`).
"""

from __future__ import annotations

import copy
from typing import Any, Sequence

import torch
from diffusers.hooks import ModelHook

from ..families import BlockRef, blocks_of
from ..hooks import HookSet
from .importance import Calibration, prediction

GATE_HOOK = "accel.pruning.gate"


class _Gate(ModelHook):
    def __init__(self, gates: dict[int, torch.Tensor], ref: BlockRef):
        super().__init__()
        self.gates, self.ref = gates, ref

    def new_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        io = self.ref.io
        h_in = io.inputs(args, kwargs)
        out = self.fn_ref.original_forward(*args, **kwargs)
        m = self.gates.get(self.ref.global_index)
        if m is None:
            return out
        h_out = io.outputs(out)
        mixed = [o if (i is None or o is None) else i + m.to(o.dtype) * (o - i) for i, o in zip(h_in, h_out)]
        return io.pack(*mixed)


def learned_keep(model: torch.nn.Module, calibration: Calibration, k: int, forced: Sequence[int] = (),
                 steps: int = 200, seed: int = 0, lr_logits: float = 0.05, lr_weights: float = 1e-4,
                 recover: bool = True) -> dict[str, Any]:
    """Learn which `k` blocks of `model` to keep (forced ones included); `model` is left unchanged.

    Returns {"keep", "scores" (θ, forced blocks +inf as None), "learned_losses", "keep_frequency"}.
    """
    refs = blocks_of(model)
    n = len(refs)
    forced = sorted(set(forced))
    free = [i for i in range(n) if i not in forced]
    k_free = k - len(forced)
    if not 0 < k < n or k_free < 0:
        raise ValueError(f"learned: cannot keep {k} of {n} blocks with {len(forced)} forced")
    with torch.no_grad():
        reference = [prediction(model, c).detach().float() for c in calibration.calls]
    student = copy.deepcopy(model).eval()
    student.requires_grad_(recover)
    g = torch.Generator().manual_seed(seed)
    theta = torch.zeros(len(free), requires_grad=True)
    groups: list[dict[str, Any]] = [{"params": [theta], "lr": lr_logits}]
    if recover:
        groups.append({"params": [p for r in blocks_of(student) for p in r.module.parameters()], "lr": lr_weights})
    opt = torch.optim.Adam(groups)
    gates: dict[int, torch.Tensor] = {}
    hooks = HookSet(student)
    counts = [0] * n
    losses: list[float] = []
    try:
        for r in blocks_of(student):
            if r.global_index in free:
                hooks.add(r.module, _Gate(gates, r), GATE_HOOK)
        for step in range(steps):
            temp = 1.0 - 0.9 * step / max(1, steps - 1)
            u = torch.rand(len(free), generator=g).clamp(1e-6, 1 - 1e-6)
            y = theta + (-torch.log(-torch.log(u)))
            order = torch.argsort(y.detach(), descending=True)
            hard = torch.zeros(len(free))
            hard[order[:k_free]] = 1.0
            ys = y.detach()[order]
            thr = (ys[k_free - 1] + ys[k_free]) / 2 if 0 < k_free < len(free) else ys[0] * 0
            soft = torch.sigmoid((y - thr) / temp)
            mask = hard + soft - soft.detach()
            gates.clear()
            gates.update({i: mask[j] for j, i in enumerate(free)})
            for j, i in enumerate(free):
                counts[i] += int(hard[j])
            c = int(torch.randint(0, len(calibration.calls), (1,), generator=g))
            loss = torch.nn.functional.mse_loss(prediction(student, calibration.calls[c]).float(), reference[c])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
    finally:
        hooks.remove()
    top = torch.argsort(theta.detach(), descending=True)[:k_free].tolist()
    keep = sorted(forced + [free[j] for j in top])
    scores: list[float | None] = [None] * n
    for j, i in enumerate(free):
        scores[i] = float(theta.detach()[j])
    return {"keep": keep, "scores": scores, "learned_losses": losses[:: max(1, steps // 50)],
            "keep_frequency": [c / steps if i in free else 1.0 for i, c in enumerate(counts)],
            "learned_steps": steps, "learned_recover": recover}
