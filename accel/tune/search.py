"""Search strategies of `accel tune`: successive halving over the joint space, and the exhaustive
grid it is checked against (benchmarks/tune_search.py).

Goal: the fastest candidate whose quality stays within the budget (`QualityBudget`). Successive
halving screens many candidates on few images, keeps the best third (inside the budget by
speed, then the rest by how close they come; on rungs too small for an FD budget, by
speed-PSNR fronts) and re-evaluates those on three times the images. After each cut the
survivors' one-step neighbours (one setting changed) that were never tried join the next rung,
so the search walks towards faster settings around what works. The last rung, on all the
calibration images, bisects along the speed-PSNR front of everything screened for the
fastest point inside the budget (`_bisect_front`).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import InputError, SettingError
from ..eval.pareto import pareto_front
from .space import Candidate, Space


@dataclass(frozen=True)
class QualityBudget:
    """Quality budget: FD at most ``fd_pct`` % above the baseline's (paired), and/or PSNR to the
    baseline images at least ``psnr`` dB."""

    fd_pct: float | None = None
    psnr: float | None = None

    def __post_init__(self) -> None:
        if self.fd_pct is None and self.psnr is None:
            raise InputError("give a quality budget: budget_fd and/or budget_psnr")
        if self.fd_pct is not None and not (math.isfinite(self.fd_pct) and self.fd_pct >= 0):
            raise SettingError("budget_fd", f"must be a finite percentage >= 0, got {self.fd_pct}")
        if self.psnr is not None and not (math.isfinite(self.psnr) and self.psnr >= 0):
            raise SettingError("budget_psnr", f"must be a finite number of dB >= 0 (PSNR of images in [0, 1] is never "
                                              f"below 0), got {self.psnr}")

    def meets(self, r: dict, fd_slack: float = 0.0, psnr_slack: float = 0.0) -> bool:
        """Whether result ``r`` is inside the budget (slack widens it, for small-sample rungs)."""
        # psnr None = identical images (infinite PSNR)
        if self.psnr is not None and r.get("psnr") is not None and r["psnr"] < self.psnr - psnr_slack:
            return False
        if self.fd_pct is not None:
            if r.get("fd_pct") is None:
                return False
            if r["fd_pct"] > self.fd_pct + fd_slack:
                return False
        return True

    def shortfall(self, r: dict) -> float:
        """How far outside the budget ``r`` is (0 inside), in budget units: for ranking misses."""
        out = 0.0
        if self.psnr is not None and r.get("psnr") is not None:
            out += max(0.0, self.psnr - r["psnr"]) / max(1.0, abs(self.psnr))
        if self.fd_pct is not None:
            fd = r.get("fd_pct")
            out += 1e6 if fd is None else max(0.0, fd - self.fd_pct) / max(1.0, self.fd_pct)
        return out

    def as_dict(self) -> dict:
        return {"fd_pct": self.fd_pct, "psnr": self.psnr}


def layers(results: list[dict]) -> list[dict]:
    """Non-dominated sorting on (speedup, PSNR): the speed-PSNR front first, then the front of the rest, ...
    (fastest first within a layer). Used on rungs too small for the FD an FD budget needs: the fastest
    candidate inside any quality budget lies on or near the speed-quality front."""
    rest, out = list(results), []
    while rest:
        f = front(rest, "psnr")
        keys = {id(r) for r in f}
        out += sorted(f, key=lambda r: -(r.get("speedup") or 0.0))
        rest = [r for r in rest if id(r) not in keys]
        if not f:  # results without a speed
            out += rest
            break
    return out


def rank(results: list[dict], budget: QualityBudget, fd_slack: float = 0.0, psnr_slack: float = 0.0) -> list[dict]:
    """Inside the budget first, fastest first; then the misses, closest first. Where the rung has no FD
    but the budget needs one, by speed-PSNR fronts (`layers`) after any PSNR budget."""
    if budget.fd_pct is not None and all(r.get("fd_pct") is None for r in results):
        psnr_only = QualityBudget(psnr=budget.psnr) if budget.psnr is not None else None
        ok = [r for r in results if psnr_only is None or psnr_only.meets(r, psnr_slack=psnr_slack)]
        return layers(ok) + layers([r for r in results if not any(r is o for o in ok)])

    def key(r: dict) -> tuple:
        ok = budget.meets(r, fd_slack, psnr_slack)
        return (0, -(r.get("speedup") or 0.0)) if ok else (1, budget.shortfall(r))
    return sorted(results, key=key)


def rung_sizes(final_images: int, rungs: int, eta: int, min_images: int) -> list[int]:
    """Images per rung, growing by ``eta`` up to ``final_images``, none below ``min_images``."""
    sizes = sorted({max(min_images, min(final_images, math.ceil(final_images / eta ** k))) for k in range(rungs)})
    return sizes


def rung_plan(evals: float, final_images: int, rungs: int = 3, eta: int = 3, min_images: int = 4) -> list[tuple[int, int]]:
    """(images, candidates) per rung. ``evals`` is a compute budget in full evaluations (``evals x
    final_images`` images in all): half for the screening rungs (equal shares, so the cheap first rung
    screens many candidates on few images), half for the last rung's probes on all the images."""
    sizes = rung_sizes(final_images, rungs, eta, min_images)
    total = evals * final_images
    shares = [total / 2 / max(1, len(sizes) - 1)] * (len(sizes) - 1) + [total / 2] if len(sizes) > 1 else [total]
    counts = [max(1, math.floor(share / n)) for share, n in zip(shares, sizes)]
    counts[-1] = max(counts[-1], min(2, counts[0]))
    return list(zip(sizes, counts))


@dataclass
class SearchResult:
    best: dict | None  # the fastest candidate inside the budget at the last rung (None: none)
    finals: list[dict]  # results of the last rung, ranked
    history: list[dict] = field(default_factory=list)  # every evaluation, in order
    evaluations: int = 0  # candidate runs requested, any image count (cached ones included)
    image_evaluations: int = 0  # sum of images over those runs: the compute spent


def successive_halving(space: Space, evaluate: Callable[[Candidate, int], dict], budget: QualityBudget, *,
                       evals: int, final_images: int, min_images: int = 4, eta: int = 3, rungs: int = 3,
                       seed: int = 0, fd_slack: float = 3.0, psnr_slack: float = 1.0,
                       progress: Callable[[dict], Any] | None = None) -> SearchResult:
    """Successive halving with neighbour refill, spending about ``evals`` full evaluations of compute
    (``evals * final_images`` images in all, split equally over the rungs).

    ``evaluate(candidate, n)`` returns a result dict (speedup, psnr, fd_pct); ``fd_slack`` and
    ``psnr_slack`` widen the budget on the rungs before the last (their few images are noisy).
    """
    if evals < 1:
        raise SettingError("evals", f"must be >= 1, got {evals}")
    plan = rung_plan(evals, final_images, rungs, eta, min_images)
    sizes, counts = [n for n, _ in plan], [c for _, c in plan]
    rng = random.Random(seed)
    pool = space.sample(max(1, counts[0]), rng)
    tried: set[str] = set()
    out = SearchResult(None, [])
    finals: list[dict] = []
    def run(c: Candidate, n: int, r: int) -> dict:
        res = evaluate(c, n)
        tried.add(c.key)
        out.history.append(dict(res, rung=r))
        out.evaluations += 1
        out.image_evaluations += n
        if progress:
            progress(res)
        return res

    for r, (n, count) in enumerate(zip(sizes, counts)):
        last = r == len(sizes) - 1
        if last and r > 0:
            finals = rank(_bisect_front(out.history, run, n, r, budget, count), budget)
            break
        results = [run(c, n, r) for c in pool[:count]]
        ranked = rank(results, budget, 0.0 if last else fd_slack, 0.0 if last else psnr_slack)
        if last:
            finals = ranked
            break
        keep = ranked[: max(1, math.ceil(len(ranked) / eta))]
        nxt = counts[r + 1]
        survivors = [Candidate.from_record(x["candidate"]) for x in keep]
        # refill with untried neighbours of the survivors inside the (slackened) budget, best first
        fresh: list[Candidate] = []
        no_fd = budget.fd_pct is not None and all(x.get("fd_pct") is None for x in results)
        for x, c in zip(keep, survivors):
            if no_fd or budget.meets(x, fd_slack, psnr_slack):
                for nb in space.neighbours(c):
                    if nb.key not in tried and all(nb.key != f.key for f in fresh):
                        fresh.append(nb)
        n_fresh = max(0, nxt - len(survivors))
        pool = survivors[: nxt] + fresh[:n_fresh]
        if r + 1 < len(sizes) - 1:  # the last rung's count is its probe budget (`_bisect_front`)
            counts[r + 1] = len(pool)
    out.finals = finals
    out.best = next((x for x in finals if budget.meets(x)), None)
    return out


def _bisect_front(history: list[dict], run: Callable[[Candidate, int, int], dict], n: int, rung: int,
                  budget: QualityBudget, probes: int) -> list[dict]:
    """The last rung: bisection along the speed-PSNR front of the screening rungs (each candidate at
    the most images it was screened on), for the fastest point inside the budget on all ``n`` images.

    Along a front, quality falls as speed rises, so the points inside the budget are its slow end;
    each probe halves the stretch where the boundary can be. Probes that are left over try the
    next-fastest points above the boundary (the front is measured on few, noisy images)."""
    latest: dict[str, dict] = {}
    for x in history:
        if x["key"] not in latest or x["n"] >= latest[x["key"]]["n"]:
            latest[x["key"]] = x
    full = front(list(latest.values()), "psnr")  # slow to fast
    pts = [x for x in full if budget.psnr is None or x.get("psnr") is None or x["psnr"] >= budget.psnr - 1.0]
    pts = pts or full[:1]  # nothing near a PSNR budget: the best-quality point, to show the closest miss
    cands = [Candidate.from_record(x["candidate"]) for x in pts]
    lo, hi, done = -1, len(cands), {}
    while hi - lo > 1 and len(done) < probes:  # invariant: cands[lo] inside (or none), cands[hi] outside
        mid = (lo + hi) // 2
        done[mid] = run(cands[mid], n, rung)
        lo, hi = (mid, hi) if budget.meets(done[mid]) else (lo, mid)
    for i in range(lo + 1, len(cands)):  # spare probes: faster points past a noisy miss
        if len(done) >= probes:
            break
        if i not in done:
            done[i] = run(cands[i], n, rung)
    return list(done.values())


def exhaustive(space: Space, evaluate: Callable[[Candidate, int], dict], budget: QualityBudget, *, images: int,
               progress: Callable[[dict], Any] | None = None) -> SearchResult:
    """Every candidate of the grid on ``images`` images; the fastest inside the budget."""
    out = SearchResult(None, [])
    results = []
    for c in space.grid():
        res = evaluate(c, images)
        out.history.append(dict(res, rung=0))
        out.evaluations += 1
        out.image_evaluations += images
        results.append(res)
        if progress:
            progress(res)
    out.finals = rank(results, budget)
    out.best = next((x for x in out.finals if budget.meets(x)), None)
    return out


def front(results: list[dict], quality: str = "psnr") -> list[dict]:
    """Results no other result beats on both speedup and quality (PSNR up, or fd_pct down), fastest last."""
    def q(r: dict) -> float:
        v = r.get(quality)
        if v is None:
            return math.inf if quality == "psnr" else -math.inf  # identical images / no FD
        return v if quality == "psnr" else -v

    return pareto_front(results, lambda r: r.get("speedup") or None, q)
