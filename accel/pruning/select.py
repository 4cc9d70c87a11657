"""Which blocks to keep: exact 0/1 knapsack on additive scores, EvoPress-style search, baselines.

A selection is a sorted list of kept global block indices. A budget is either a block
count (keep exactly k) or a total cost (params, FLOPs or measured latency per block;
keep a set whose summed cost fits). Blocks a family lists in `BlockStack.keep_blocks`
(SD3's last block, DiT's first) are always kept.
"""

from __future__ import annotations

import random as _random
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import torch

from ..errors import SettingError
from ..families import blocks_of

COST_KINDS = ("count", "params", "flops", "latency")


# ----------------------------------------------------------------------------- knapsack
def knapsack_keep(values: Sequence[float], costs: Sequence[int], budget: int,
                  forced: Iterable[int] = ()) -> list[int]:
    """Exact 0/1 knapsack: the kept set maximising the summed value with summed cost <= budget.

    Costs are non-negative integers (scale float costs first, `integer_costs`). Ties in
    value go to the set with more blocks, then to the lexicographically smallest
    indices. `forced` blocks are always kept (their cost counts). With costs all 1 and
    budget k this keeps exactly k blocks (the k best), as LAPTOP-Diff's count target.
    Raises ValueError when the forced blocks alone exceed the budget.
    """
    n = len(values)
    if len(costs) != n:
        raise ValueError(f"{n} values but {len(costs)} costs")
    if any(int(c) != c or c < 0 for c in costs):
        raise ValueError("knapsack costs must be non-negative integers (see integer_costs)")
    forced = sorted(set(forced))
    cap = int(budget) - sum(int(costs[i]) for i in forced)
    if cap < 0:
        raise ValueError(f"budget {budget} is below the cost of the blocks that must be kept {forced}")
    free = [i for i in range(n) if i not in forced]
    # best[c] = (value, count, -tuple(indices)) of the best subset of the items seen so far with cost <= c.
    neg_inf = (float("-inf"), 0, ())
    best: list[tuple[float, int, tuple]] = [(0.0, 0, ())] * (cap + 1)
    for i in free:
        c, v = int(costs[i]), float(values[i])
        if c > cap:
            continue
        new = list(best)
        for w in range(c, cap + 1):
            prev = best[w - c]
            if prev[0] == neg_inf[0]:
                continue
            cand = (prev[0] + v, prev[1] + 1, prev[2] + (i,))
            if _better(cand, new[w]):
                new[w] = cand
        best = new
    return sorted(forced + list(best[cap][2]))


def _better(a: tuple[float, int, tuple], b: tuple[float, int, tuple]) -> bool:
    if a[0] != b[0]:
        return a[0] > b[0]
    if a[1] != b[1]:
        return a[1] > b[1]
    return a[2] < b[2]


def integer_costs(costs: Sequence[float], budget: float, resolution: int = 1000) -> tuple[list[int], int]:
    """Float costs and budget -> integers for the DP: the budget maps to `resolution` units.

    Costs are rounded up, so an integer solution never exceeds the float budget.
    """
    if budget <= 0:
        raise ValueError(f"budget must be positive, got {budget}")
    scale = resolution / budget
    return [int(-(-c * scale // 1)) for c in costs], resolution


def uniform_keep(n: int, k: int, forced: Iterable[int] = ()) -> list[int]:
    """k evenly spaced blocks over 0..n-1 (first and last included when k >= 2); a forced block
    missing from them replaces the nearest unforced pick."""
    if not 0 < k <= n:
        raise ValueError(f"uniform: cannot keep {k} of {n} blocks")
    forced = sorted(set(forced))
    picks = [0] if k == 1 else sorted({round(j * (n - 1) / (k - 1)) for j in range(k)})
    for f in forced:
        if f in picks:
            continue
        free = [p for p in picks if p not in forced]
        if not free:
            raise ValueError(f"uniform: {len(forced)} forced blocks exceed the {k} kept")
        picks.remove(min(free, key=lambda p: (abs(p - f), p)))
        picks.append(f)
    return sorted(picks)


# ----------------------------------------------------------------------------- budgets
@dataclass(frozen=True)
class Budget:
    """What to keep: `kind` "count" (value = blocks) or a cost kind (value = total cost allowed)."""

    kind: str
    value: float
    costs: tuple[float, ...]  # per block (all 1.0 for "count")

    @property
    def total(self) -> float:
        return float(sum(self.costs))

    def fits(self, keep: Iterable[int]) -> bool:
        keep = list(keep)
        if self.kind == "count":
            return len(keep) == int(self.value)
        return sum(self.costs[i] for i in keep) <= self.value * (1 + 1e-9)


def resolve_keep(keep: float | int | str, costs: Sequence[float], kind: str = "count") -> Budget:
    """`--keep`: an int is a block count (kind "count" only); a float in (0, 1) a fraction of all blocks
    (count) or of the total cost. Errors name the field and the model's depth.
    """
    n = len(costs)
    if kind not in COST_KINDS:
        raise SettingError("cost", f"{kind!r} is unknown; choose one of {', '.join(COST_KINDS)}")
    if isinstance(keep, str):
        try:
            keep = int(keep) if keep.strip().lstrip("-").isdigit() else float(keep)
        except ValueError:
            raise SettingError("keep", f"{keep!r}: give a block count (e.g. 6) or a fraction (e.g. 0.5)") from None
    if isinstance(keep, bool):
        raise SettingError("keep", "must be a number")
    if isinstance(keep, int):
        if kind != "count":
            raise SettingError("keep", f"{keep}: with cost {kind!r} give a fraction of the total cost in (0, 1)")
        if not 0 < keep < n:
            raise SettingError("keep", f"{keep}: the model has {n} blocks; keep must be in 1..{n - 1}")
        return Budget("count", keep, tuple(1.0 for _ in range(n)))
    if not 0.0 < keep < 1.0:
        raise SettingError("keep", f"{keep}: a fraction must be in (0, 1); a count must be an integer")
    if kind == "count":
        k = int(keep * n + 0.5)
        if not 0 < k < n:
            raise SettingError("keep", f"{keep}: {keep} of {n} blocks rounds to {k}; keep must be in 1..{n - 1}")
        return Budget("count", k, tuple(1.0 for _ in range(n)))
    return Budget(kind, keep * float(sum(costs)), tuple(float(c) for c in costs))


def select_by_scores(scores: Sequence[float], budget: Budget, forced: Iterable[int] = ()) -> list[int]:
    """Knapsack keep set for `scores` under `budget` (exact DP)."""
    if budget.kind == "count":
        return knapsack_keep(scores, [1] * len(scores), int(budget.value), forced)
    costs, cap = integer_costs(budget.costs, budget.value)
    return knapsack_keep(scores, costs, cap, forced)


# ----------------------------------------------------------------------------- per-block costs
def block_costs(model: torch.nn.Module, kind: str, call: tuple[tuple, dict] | None = None,
                repeats: int = 3) -> list[float]:
    """Per-block cost: "count" (1), "params" (parameter count), "flops" (one call, torch's FLOP counter)
    or "latency" (median seconds of each block over `repeats` runs of one call)."""
    refs = blocks_of(model)
    if kind == "count":
        return [1.0] * len(refs)
    if kind == "params":
        return [float(sum(p.numel() for p in r.module.parameters())) for r in refs]
    if call is None:
        raise ValueError(f"cost {kind!r} needs a calibration call to measure")
    args, kwargs = call
    if kind == "flops":
        from torch.utils.flop_counter import FlopCounterMode

        names = {id(m): n for n, m in model.named_modules()}
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(*args, **kwargs)
        counts = counter.get_flop_counts()  # keyed "<RootClass>.<module path>"
        out = []
        for r in refs:
            per_op = counts.get(f"{type(model).__name__}.{names[id(r.module)]}", {})
            out.append(float(sum(per_op.values())))
        return out
    if kind == "latency":
        from diffusers.hooks import ModelHook

        from ..hooks import HookSet

        times: dict[int, list[float]] = {r.global_index: [] for r in refs}

        class _Timer(ModelHook):
            def __init__(self, index: int):
                super().__init__()
                self.index = index

            def new_forward(self, module: torch.nn.Module, *a: Any, **kw: Any) -> Any:
                t0 = time.perf_counter()
                out = self.fn_ref.original_forward(*a, **kw)
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                times[self.index].append(time.perf_counter() - t0)
                return out

        hooks = HookSet(model)
        try:
            for r in refs:
                hooks.add(r.module, _Timer(r.global_index), "accel.pruning.timer")
            with torch.no_grad():
                for _ in range(repeats + 1):  # the first run warms up
                    model(*args, **kwargs)
        finally:
            hooks.remove()
        return [sorted(times[i][1:])[len(times[i][1:]) // 2] for i in range(len(refs))]
    raise SettingError("cost", f"{kind!r} is unknown; choose one of {', '.join(COST_KINDS)}")


def forced_blocks(model: torch.nn.Module) -> list[int]:
    """Global indices of the blocks depth pruning must keep (`BlockStack.keep_blocks`)."""
    refs = blocks_of(model)
    out = []
    for r in refs:
        stack_len = sum(1 for q in refs if q.stack is r.stack)
        if any(r.index == (k % stack_len) for k in r.stack.keep_blocks):
            out.append(r.global_index)
    return out


# ----------------------------------------------------------------------------- evolutionary search
@dataclass
class EvoResult:
    """Best keep set found, its fitness, how many fitness evaluations were spent, and the trace."""

    keep: list[int]
    error: float
    evaluations: int
    history: list[float] = field(default_factory=list)  # best fitness after each generation


def evolutionary_search(fitness: Callable[[Sequence[int]], float], n: int, budget: Budget,
                        forced: Iterable[int] = (), init: Iterable[Sequence[int]] = (),
                        evaluations: int = 200, offspring: int = 8, survivors: int = 2,
                        max_swaps: int = 3, seed: int = 0) -> EvoResult:
    """EvoPress-style (μ + λ) search over keep-masks, minimising `fitness(keep)`.

    Each generation mutates the `survivors` best sets into `offspring` children by
    swapping 1..`max_swaps` kept blocks for removed ones (the count is preserved; for a
    cost budget a child that does not fit is repaired by dropping its random kept
    blocks until it fits), evaluates the children not seen before, and keeps the best.
    Stops after `evaluations` fitness calls (the fixed budget). Seeded; `init` sets
    (e.g. the knapsack solution) start the population.
    """
    rng = _random.Random(seed)
    forced = set(forced)
    free = [i for i in range(n) if i not in forced]
    seen: dict[tuple[int, ...], float] = {}
    spent = 0

    def evaluate(keep: Iterable[int]) -> float:
        nonlocal spent
        key = tuple(sorted(set(keep)))
        if key not in seen:
            seen[key] = float(fitness(list(key)))
            spent += 1
        return seen[key]

    def repair(keep: set[int]) -> set[int] | None:
        keep |= forced
        while not budget.fits(keep):
            droppable = [i for i in keep if i not in forced]
            if budget.kind == "count" or not droppable:
                return None
            keep.discard(rng.choice(droppable))
        return keep

    def random_set() -> set[int] | None:
        if budget.kind == "count":
            return set(rng.sample(free, int(budget.value) - len(forced))) | forced
        order = free[:]
        rng.shuffle(order)
        keep = set(forced)
        for i in order:
            if budget.fits(keep | {i}):
                keep.add(i)
        return keep if budget.fits(keep) else None

    population: list[tuple[int, ...]] = []
    for s in init:
        s = repair(set(s))
        if s is not None:
            population.append(tuple(sorted(s)))
    while len(population) < survivors and spent < evaluations:
        s = random_set()
        if s is not None:
            population.append(tuple(sorted(s)))
            evaluate(s)
    for s in population:
        if spent < evaluations:
            evaluate(s)
    population = sorted({p for p in population if p in seen}, key=lambda p: seen[p])[:survivors]
    if not population:
        raise ValueError("no keep set fits the budget")
    history = [seen[population[0]]]
    stale = 0
    while spent < evaluations and stale < 50:
        children: list[tuple[int, ...]] = []
        for _ in range(offspring):
            parent = set(rng.choice(population))
            kept = [i for i in parent if i not in forced]
            removed = [i for i in free if i not in parent]
            for _ in range(rng.randint(1, max_swaps)):
                if not kept or not removed:
                    break
                a, b = rng.choice(kept), rng.choice(removed)
                parent.discard(a)
                parent.add(b)
                kept = [i for i in parent if i not in forced]
                removed = [i for i in free if i not in parent]
            child = repair(parent)
            if child is not None:
                children.append(tuple(sorted(child)))
        new = [c for c in dict.fromkeys(children) if c not in seen]
        stale = stale + 1 if not new else 0
        for c in new:
            if spent >= evaluations:
                break
            evaluate(c)
        pool = set(population) | {c for c in children if c in seen}
        population = sorted(pool, key=lambda p: (seen[p], p))[:survivors]
        history.append(seen[population[0]])
    best = population[0]
    return EvoResult(list(best), seen[best], spent, history)
