"""Speed-fidelity curves of the caching benchmark: each method's front and the matched-speed table.

A *line* is one method (e.g. ``interval-cache`` with ``forecast=1``) measured at several
settings, each a point (measured speedup, PSNR, FD). Its *front* keeps the points no other
point of the same line beats on both speed and PSNR (a user picks the best setting for a
speed), sorted by speed. At a target speed between two front points the MSE (not the dB)
is linearly interpolated, and FD too: what running the two settings on shares of the
images gives, the best a user can get between them. (Linear in dB overstated that where
the points are far apart: issue 23's dpm50 2x, 43.6 dB between 1.41x/48.5 and 2.46x/39.9
dB, where the budget-0.5 setting itself gave 39.7 at 1.96x; mixing gives 41.9.) Outside
the front's measured speed range the line does not reach that speed (no extrapolation).
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


def at_speed(points: Iterable[Point], speed: float) -> tuple[float, float | None] | None:
    """(PSNR, FD) interpolated on the line's front at `speed`; None where the front does not span it."""
    f = front(points)
    if not f or not f[0][0] <= speed <= f[-1][0]:
        return None
    for (s0, p0, d0), (s1, p1, d1) in zip(f, f[1:]):
        if s0 <= speed <= s1:
            w = 0.0 if s1 == s0 else (speed - s0) / (s1 - s0)
            fd = None if d0 is None or d1 is None else d0 + w * (d1 - d0)
            return _psnr((1 - w) * _mse(p0) + w * _mse(p1)), fd
    return f[0][1], f[0][2]  # a single-point front exactly at `speed`


def matched_speed_table(lines: dict[str, list[Point]], sides: dict[str, str],
                        speeds: Sequence[float] = (1.5, 2.0, 2.5, 3.0)) -> list[dict]:
    """Per target speed: every line's interpolated PSNR/FD, and the best line of each side
    (``sides[line]`` is "accel" or "peer"; best = highest PSNR); None = not reached."""
    rows = []
    for s in speeds:
        per_line = {name: at_speed(pts, s) for name, pts in lines.items()}
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
