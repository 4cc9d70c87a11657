"""Speed-fidelity curves of the caching benchmark: each method's front and the matched-speed table.

A *line* is one method (e.g. ``interval-cache`` with ``forecast=1``) measured at several
settings, each a point (measured speedup, PSNR, FD). Its *front* keeps the points no other
point of the same line beats on both speed and PSNR, sorted by speed (the settings a user
would pick). At a target speed the line is credited with the best a user gets by running two
of its settings on shares of the images: shares that make the average time per image
1/speed, the MSE (not the dB) and FD mixed with those shares, the best pair taken (the lower
convex hull of MSE over time per image, so a measured point never lowers a line's credit).
(Linear in dB overstated that where the points are far apart: issue 23's dpm50 2x, 43.6 dB
between 1.41x/48.5 and 2.46x/39.9 dB, where the budget-0.5 setting itself gave 39.7 at
1.96x; mixing gives 41.9.) Given the baseline (`base`: speed 1, exact images), every line
may mix with it too, so a line whose slowest setting is faster than the target still
reaches it; beyond the line's fastest setting it does not (no extrapolation).
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

from accel.eval.pareto import pareto_front

Point = tuple[float, float, "float | None"]  # (speedup, psnr, fd)


def front(points: Iterable[Point]) -> list[Point]:
    """Points not dominated in (speed, PSNR) by another point of the line, by increasing speed."""
    return pareto_front(points, lambda p: p[0], lambda p: p[1])


def _mse(psnr: float) -> float:
    return 10 ** (-psnr / 10)


def _psnr(mse: float) -> float:
    return math.inf if mse <= 0 else -10 * math.log10(mse)


def at_speed(points: Iterable[Point], speed: float, base: Point | None = None) -> tuple[float, float | None] | None:
    """(PSNR, FD) of the best mix of two of the line's settings (or `base`, the baseline: speed 1, PSNR
    inf, its FD) on shares of the images averaging `speed`; None where no setting is that fast."""
    pts = [p for p in list(points) + ([base] if base is not None else []) if p[0] is not None and p[1] is not None]
    best: tuple[float, float | None] | None = None
    for s0, p0, d0 in (p for p in pts if p[0] <= speed):
        for s1, p1, d1 in (p for p in pts if p[0] >= speed):
            w = 0.0 if s1 == s0 else (1 / s0 - 1 / speed) / (1 / s0 - 1 / s1)  # the faster setting's share
            mse = (1 - w) * _mse(p0) + w * _mse(p1)
            fd = None if d0 is None or d1 is None else d0 + w * (d1 - d0)
            if best is None or mse < best[0]:
                best = (mse, fd)
    return None if best is None else (_psnr(best[0]), best[1])


def matched_speed_table(lines: dict[str, list[Point]], sides: dict[str, str],
                        speeds: Sequence[float] = (1.5, 2.0, 2.5, 3.0), base_fd: float | None = None) -> list[dict]:
    """Per target speed: every line's interpolated PSNR/FD (each mixing with the baseline, whose FD is
    `base_fd`), and the best line of each side (``sides[line]`` is "accel" or "peer"; best = highest
    PSNR); None = not reached."""
    base = (1.0, math.inf, base_fd)
    rows = []
    for s in speeds:
        per_line = {name: at_speed(pts, s, base) for name, pts in lines.items()}
        row: dict = {"speedup": s, "lines": {n: (None if v is None else {"psnr": v[0], "fd": v[1]})
                                             for n, v in per_line.items()}}
        for side in ("accel", "peer"):
            cands = [(v[0], v[1], n) for n, v in per_line.items() if v is not None and sides.get(n) == side]
            best = max(cands, default=None)
            row[f"best_{side}"] = None if best is None else {"line": best[2], "psnr": best[0], "fd": best[1]}
        a, p = row["best_accel"], row["best_peer"]
        row["accel_ahead"] = None if a is None or p is None else a["psnr"] >= p["psnr"]
        rows.append(row)
    return rows


def format_matched(rows: list[dict], fd_name: str = "FD") -> str:
    """The matched-speed table as text: best accel vs best peer per speed ('not reached' where no line spans it)."""
    def cell(b: dict | None) -> str:
        if b is None:
            return "not reached"
        fd = "" if b["fd"] is None else f", {fd_name} {b['fd']:.1f}"
        return f"{b['line']}: {b['psnr']:.2f} dB{fd}"

    cells = [(cell(r["best_accel"]), cell(r["best_peer"])) for r in rows]
    wa = max([len("best accel")] + [len(a) for a, _ in cells])
    wp = max([len("best peer")] + [len(p) for _, p in cells])
    out = [f"{'speed':>6}  {'best accel':<{wa}}  {'best peer':<{wp}}  ahead"]
    for r, (a, p) in zip(rows, cells):
        ahead = "-" if r["accel_ahead"] is None else ("accel" if r["accel_ahead"] else "PEER")
        out.append(f"{r['speedup']:5.1f}x  {a:<{wa}}  {p:<{wp}}  {ahead}")
    return "\n".join(out)
