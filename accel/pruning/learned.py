"""`--selector learned`: a TinyFusion-style differentiable choice of the k blocks to keep.

Local mode (TinyFusion's N:M layer groups; the default where it applies): keeping k of n blocks is
keeping N of every M consecutive blocks (N/M = k/n; groups of at least 4 where they fit: 2 of 4 at 6/12,
3 of 4 at 9/12; `group` sets M, e.g. 2 for 1 of 2).
Each group has one logit per candidate N-subset (those holding the group's forced blocks); each step
draws one candidate per group by Gumbel-softmax (hard one-hot forward, soft probabilities backward,
temperature T annealed from 1 to 0.1), and a block's mask is the summed weight of the candidates that
keep it. Small categorical choices make the gradient far less noisy than one choice among C(n, k).
Global mode (where no group pattern fits: too many candidates, or forced blocks overfill a group):
every prunable block gets a keep logit θ_i; each step keeps the top-k of θ + Gumbel noise (hard 0/1
mask, exactly k blocks) and passes gradients through σ((θ + g − τ_k)/T) (straight-through; τ_k midway
between the k-th and (k+1)-th value). A gated block returns h + m_i (f_i(h) − h), so m_i = 0 is the
bypassed block.
The loss is the calibration output error against the full model; the kept blocks' weights of a
copy are trained jointly (TinyFusion's recoverability term: a mask is judged by how well the model
does after a short update, not only at once). At the end the most likely candidate of each group (global
mode: the top-k of θ) is fixed; the pruned model
is built from the ORIGINAL weights, as with every selector, and distillation follows (`accel distill`).
"""

from __future__ import annotations

import copy
import itertools
import math
from typing import Any, Callable, Sequence

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


MAX_CANDIDATES = 256  # per group; more and the local mode falls back to global top-k
# default groups hold at least this many blocks (2:4 at half depth, TinyFusion's setting): 1:2 can never keep two
# neighbours; on the flow model at 6/12 2:4 distilled to +6.8% FD-digits vs 1:2's +24.9% (default model: +25.9%
# vs +24.0%, a tie), docs/results.md#selectors-which-blocks-to-keep
MIN_GROUP = 4


def default_group_size(n: int, k: int) -> int:
    """The smallest group size M that divides n, keeps a whole share k*M/n, holds >= MIN_GROUP blocks and has at
    most MAX_CANDIDATES candidates; else the smallest that fits, n / gcd(n, k)."""
    m0 = n // math.gcd(n, k)
    for m in range(m0, n + 1, m0):
        if m >= MIN_GROUP and n % m == 0 and math.comb(m, k * m // n) <= MAX_CANDIDATES:
            return m
    return m0


def local_groups(n: int, k: int, forced: Sequence[int] = (),
                 size: int | None = None) -> list[tuple[list[int], list[tuple[int, ...]]]] | None:
    """TinyFusion's N:M groups for keeping k of n blocks: [(blocks, candidate kept subsets)], or None where
    no group pattern fits (n/M groups of M consecutive blocks, N kept in each, N/M = k/n; each candidate
    holds the group's forced blocks; at most MAX_CANDIDATES per group). `size` is M (default: the smallest
    that fits with at least MIN_GROUP blocks, else the smallest that fits: 2:4 at 6/12, 3:4 at 9/12);
    a `size` that does not fit raises ValueError."""
    m = default_group_size(n, k) if size is None else size
    if m < 1 or n % m or (k * m) % n:
        raise ValueError(f"learned: groups of {m} blocks do not split {n} blocks into groups keeping {k}/{n} each")
    keep_n = k * m // n
    if math.comb(m, keep_n) > MAX_CANDIDATES:
        if size is not None:
            raise ValueError(f"learned: groups of {m} blocks have {math.comb(m, keep_n)} candidate subsets each "
                             f"(at most {MAX_CANDIDATES}); choose smaller groups")
        return None
    groups = []
    for start in range(0, n, m):
        blocks = list(range(start, start + m))
        must = {b for b in forced if b in blocks}
        cands = [c for c in itertools.combinations(blocks, keep_n) if must <= set(c)]
        if not cands:
            return None
        groups.append((blocks, cands))
    return groups


def learned_keep(model: torch.nn.Module, calibration: Calibration, k: int, forced: Sequence[int] = (),
                 steps: int = 200, seed: int = 0, lr_logits: float = 0.05, lr_weights: float = 1e-4,
                 recover: bool = True, mode: str = "local", group: int | None = None) -> dict[str, Any]:
    """Learn which `k` blocks of `model` to keep (forced ones included); `model` is left unchanged.
    `mode`: "local" (N:M groups where they fit, else global) or "global" (top-k of all blocks); `group`:
    the local groups' size M (default: `default_group_size`, 2:4 at half depth; see `local_groups`).

    Returns {"keep", "scores" (per block: its keep logit, or in local mode the probability that its
    group keeps it; None for forced blocks), "learned_losses", "keep_frequency", "learned_mode"}.
    """
    if mode not in ("local", "global"):
        raise ValueError(f"learned: mode must be 'local' or 'global', not {mode!r}")
    n = len(blocks_of(model))
    forced = sorted(set(forced))
    free = [i for i in range(n) if i not in forced]
    k_free = k - len(forced)
    if not 0 < k < n or k_free < 0:
        raise ValueError(f"learned: cannot keep {k} of {n} blocks with {len(forced)} forced")
    if group is not None and mode != "local":
        raise ValueError("learned: a group size needs mode 'local'")
    groups = local_groups(n, k, forced, group) if mode == "local" else None
    if groups is not None:
        return _learned_local(model, calibration, k, groups, forced, steps, seed, lr_logits, lr_weights, recover)
    theta = torch.zeros(len(free), requires_grad=True)
    counts = [0] * n

    def sample(temp: float, g: torch.Generator) -> dict[int, torch.Tensor]:  # top-k of θ + Gumbel, straight-through
        u = torch.rand(len(free), generator=g).clamp(1e-6, 1 - 1e-6)
        y = theta + (-torch.log(-torch.log(u)))
        order = torch.argsort(y.detach(), descending=True)
        hard = torch.zeros(len(free))
        hard[order[:k_free]] = 1.0
        ys = y.detach()[order]
        thr = (ys[k_free - 1] + ys[k_free]) / 2 if 0 < k_free < len(free) else ys[0] * 0
        soft = torch.sigmoid((y - thr) / temp)
        mask = hard + soft - soft.detach()
        for j, i in enumerate(free):
            counts[i] += int(hard[j])
        return {i: mask[j] for j, i in enumerate(free)}

    losses = _train(model, calibration, [theta], set(free), sample, steps, seed, lr_logits, lr_weights, recover)
    top = torch.argsort(theta.detach(), descending=True)[:k_free].tolist()
    scores: list[float | None] = [None] * n
    for j, i in enumerate(free):
        scores[i] = float(theta.detach()[j])
    return {"keep": sorted(forced + [free[j] for j in top]), "scores": scores,
            "learned_losses": losses[:: max(1, steps // 50)],
            "keep_frequency": [c / steps if i in free else 1.0 for i, c in enumerate(counts)],
            "learned_steps": steps, "learned_recover": recover, "learned_mode": "global"}


def _learned_local(model: torch.nn.Module, calibration: Calibration, k: int,
                   groups: list[tuple[list[int], list[tuple[int, ...]]]], forced: Sequence[int], steps: int,
                   seed: int, lr_logits: float, lr_weights: float, recover: bool) -> dict[str, Any]:
    """Local mode: one Gumbel-softmax categorical over each group's candidate subsets (see the module doc)."""
    n = len(blocks_of(model))
    phis = [torch.zeros(len(c), requires_grad=True) for _, c in groups]
    counts = [0] * n

    def sample(temp: float, g: torch.Generator) -> dict[int, torch.Tensor]:  # one candidate per group
        gates: dict[int, torch.Tensor] = {}
        for (blocks, cands), phi in zip(groups, phis):
            u = torch.rand(len(cands), generator=g).clamp(1e-6, 1 - 1e-6)
            soft = torch.softmax((phi - torch.log(-torch.log(u))) / temp, dim=0)
            pick = int(torch.argmax(soft.detach()))
            weight = soft - soft.detach() + torch.nn.functional.one_hot(torch.tensor(pick), len(cands)).float()
            for b in blocks:
                gates[b] = sum((weight[j] for j, c in enumerate(cands) if b in c), torch.zeros(()))
            for b in cands[pick]:
                counts[b] += 1
        return gates

    losses = _train(model, calibration, phis, set(range(n)), sample, steps, seed, lr_logits, lr_weights, recover)
    keep: list[int] = []
    scores: list[float | None] = [None] * n
    for (blocks, cands), phi in zip(groups, phis):
        probs = torch.softmax(phi.detach(), dim=0)
        keep += cands[int(torch.argmax(probs))]
        for b in blocks:
            if b not in forced:
                scores[b] = float(sum(probs[j] for j, c in enumerate(cands) if b in c))
    assert len(keep) == k
    return {"keep": sorted(keep), "scores": scores, "learned_losses": losses[:: max(1, steps // 50)],
            "keep_frequency": [c / steps for c in counts], "learned_steps": steps, "learned_recover": recover,
            "learned_mode": "local", "learned_groups": [[blocks, len(cands)] for blocks, cands in groups]}


def _train(model: torch.nn.Module, calibration: Calibration, logits: list[torch.Tensor], gated: set[int],
           sample: Callable[[float, torch.Generator], dict[int, torch.Tensor]], steps: int, seed: int,
           lr_logits: float, lr_weights: float, recover: bool) -> list[float]:
    """The loop both modes share: each step `sample(T, generator)` gives the block masks (T annealed 1 -> 0.1),
    and the logits and (with `recover`) a copy's blocks take one step on a calibration call's output error
    against the full model. `model` is left unchanged; returns the losses."""
    with torch.no_grad():
        reference = [prediction(model, c).detach().float() for c in calibration.calls]
    student = copy.deepcopy(model).eval()
    student.requires_grad_(recover)
    params: list[dict[str, Any]] = [{"params": logits, "lr": lr_logits}]
    if recover:
        params.append({"params": [p for r in blocks_of(student) for p in r.module.parameters()], "lr": lr_weights})
    opt = torch.optim.Adam(params)
    g = torch.Generator().manual_seed(seed)
    gates: dict[int, torch.Tensor] = {}
    hooks = HookSet(student)
    losses: list[float] = []
    try:
        for r in blocks_of(student):
            if r.global_index in gated:
                hooks.add(r.module, _Gate(gates, r), GATE_HOOK)
        for step in range(steps):
            gates.clear()
            gates.update(sample(1.0 - 0.9 * step / max(1, steps - 1), g))
            c = int(torch.randint(0, len(calibration.calls), (1,), generator=g))
            loss = torch.nn.functional.mse_loss(prediction(student, calibration.calls[c]).float(), reference[c])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
    finally:
        hooks.remove()
    return losses
