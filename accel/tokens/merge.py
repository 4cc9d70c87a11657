"""Token merging as pure tensor functions: bipartite soft matching, merge, unmerge.

ToMe's bipartite soft matching with ToMeSD's destinations: the image tokens form a
(rows, cols) grid; each `sy x sx` window holds one destination (at a random place in
the window when a generator is given, else its top-left corner), every other token is
a source. Each source picks its most similar destination (cosine); the `r` most
similar sources are merged into their destinations by a size-weighted mean. The
result is a `Matching` of index tensors: `merge` gathers/averages a (B, N, C) tensor
into (B, N - r, C), `unmerge` copies every merged token back to all its members.

Kept tokens stay in their original order, so a positional table (e.g. Flux's rotary
rows) follows the merged tokens with `follow(table, matching)`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Matching:
    """Which tokens of a (B, N) sequence merge where; all index tensors are int64 on the tokens' device.

    keep: (B, N - r) original indices of the tokens that remain, ascending.
    index: (B, N) position in the merged sequence of every original token (its own
        position when kept, its destination's when merged away).
    size: (B, N - r) number of original tokens each merged token stands for.
    """

    keep: torch.Tensor
    index: torch.Tensor
    size: torch.Tensor
    merged_src: torch.Tensor | None = None  # (B, r) original indices of the merged-away tokens, when known

    @property
    def num_tokens(self) -> int:
        return self.index.shape[1]

    @property
    def num_kept(self) -> int:
        return self.keep.shape[1]

    @property
    def r(self) -> int:
        return self.num_tokens - self.num_kept

    def same_for_batch(self) -> bool:
        """True when every sample kept the same tokens (one positional table serves the batch)."""
        return bool((self.keep == self.keep[:1]).all())

    def select(self, i: int) -> "Matching":
        """The matching of sample `i` alone (batch of one)."""
        src = None if self.merged_src is None else self.merged_src[i:i + 1]
        return Matching(self.keep[i:i + 1], self.index[i:i + 1], self.size[i:i + 1], src)


def grid_destinations(rows: int, cols: int, sx: int = 2, sy: int = 2,
                      generator: torch.Generator | None = None, device: torch.device | str = "cpu",
                      frames: int = 1, st: int = 1) -> torch.Tensor:
    """Flat indices of one destination per full `st x sy x sx` window of a row-major (frames, rows,
    cols) grid (an image: frames = st = 1; a video: ToMeSD's stride extended over frames).

    With a generator the destination sits at a random place in its window (ToMeSD's
    `use_rand`), drawn independently per window; without one, at the first frame's top-left corner.
    Frames/rows/cols left over when the grid does not divide by the strides hold only sources.
    """
    fs, hs, ws = frames // st, rows // sy, cols // sx
    if fs == 0 or hs == 0 or ws == 0:
        return torch.empty(0, dtype=torch.long, device=device)
    shape = (hs, ws) if frames == 1 and st == 1 else (fs, hs, ws)  # 2-D: the draws of images stay as they were
    if generator is not None:
        off = torch.randint(st * sy * sx, shape, generator=generator, device=generator.device).to(device)
    else:
        off = torch.zeros(shape, dtype=torch.long, device=device)
    off = off.reshape(fs, hs, ws)
    wf = torch.arange(fs, device=device)[:, None, None] * st + off // (sy * sx)
    wr = torch.arange(hs, device=device)[None, :, None] * sy + off % (sy * sx) // sx
    wc = torch.arange(ws, device=device)[None, None, :] * sx + off % sx
    return ((wf * rows + wr) * cols + wc).flatten()


def bipartite_soft_matching(metric: torch.Tensor, r: int, dst: torch.Tensor) -> Matching:
    """Match the `r` sources most similar to a destination, per sample.

    metric: (B, N, C) features to compare (cosine similarity); dst: (D,) destination
    indices shared by the batch. `r` is clipped to the number of sources.
    """
    b, n, _ = metric.shape
    device = metric.device
    is_dst = torch.zeros(n, dtype=torch.bool, device=device)
    is_dst[dst] = True
    src = (~is_dst).nonzero().squeeze(1)
    r = max(0, min(int(r), src.numel() if dst.numel() else 0))
    arange = torch.arange(n, device=device).expand(b, n)
    if r == 0:
        return Matching(arange.clone(), arange.clone(), torch.ones(b, n, dtype=torch.long, device=device))
    with torch.no_grad():
        if metric.dtype in (torch.float16, torch.bfloat16):  # similarities in float32 (fewer ties)
            metric = metric.float()
        # cosine on the small (N, D) score matrix: no normalised copy of the (B, N, C) tokens
        d = metric[:, dst]
        scores = metric @ d.transpose(1, 2)  # (B, N, D)
        norms = metric.norm(dim=-1).clamp_min(1e-12)
        scores = (scores / norms.unsqueeze(-1) / norms[:, dst].unsqueeze(1))[:, src].float()  # (B, S, D)
        best, best_dst = scores.max(dim=-1)  # (B, S)
        order = best.argsort(dim=-1, descending=True)[:, :r]  # (B, r) most similar sources
    merged_src = src[order]  # (B, r) original indices of merged-away sources
    merged_dst = dst[best_dst.gather(1, order)]  # (B, r) original index of each one's destination
    keep_mask = torch.ones(b, n, dtype=torch.bool, device=device)
    keep_mask.scatter_(1, merged_src, False)
    keep = torch.argsort((~keep_mask).to(torch.int8), dim=1, stable=True)[:, : n - r]
    pos = torch.empty(b, n, dtype=torch.long, device=device)
    pos.scatter_(1, keep, torch.arange(n - r, device=device).expand(b, n - r))
    index = pos.clone()
    index.scatter_(1, merged_src, pos.gather(1, merged_dst))
    size = torch.zeros(b, n - r, dtype=torch.long, device=device)
    size.scatter_add_(1, index, torch.ones_like(index))
    return Matching(keep, index, size, merged_src)


def match_grid(metric: torch.Tensor, r: int, grid: tuple[int, ...], sx: int = 2, sy: int = 2,
               generator: torch.Generator | None = None, st: int = 1) -> Matching:
    """`bipartite_soft_matching` with ToMeSD's strided-grid destinations over a (rows, cols) or
    (frames, rows, cols) token grid (`st`: the stride over frames)."""
    frames, rows, cols = (1, *grid) if len(grid) == 2 else grid
    if frames * rows * cols != metric.shape[1]:
        raise ValueError(f"token grid {'x'.join(map(str, grid))} does not match {metric.shape[1]} tokens")
    dst = grid_destinations(rows, cols, sx, sy, generator, metric.device, frames=frames, st=st)
    return bipartite_soft_matching(metric, r, dst)


def merge(x: torch.Tensor, m: Matching) -> torch.Tensor:
    """(B, N, C) -> (B, N - r, C): kept tokens, each the size-weighted mean of its members."""
    if m.r == 0:
        return x
    b, n, c = x.shape
    dtype = x.dtype
    if dtype in (torch.float16, torch.bfloat16):  # sums of several half-precision tokens: add in float32
        x = x.float()
    if m.merged_src is not None:  # kept tokens gathered, only the r merged sources scattered in
        out = x.gather(1, m.keep.unsqueeze(-1).expand(b, m.num_kept, c))
        src = x.gather(1, m.merged_src.unsqueeze(-1).expand(b, m.r, c))
        out.scatter_add_(1, m.index.gather(1, m.merged_src).unsqueeze(-1).expand(b, m.r, c), src)
    else:
        out = x.new_zeros(b, m.num_kept, c)
        out.scatter_add_(1, m.index.unsqueeze(-1).expand(b, n, c), x)
    return out.div_(m.size.unsqueeze(-1).to(x.dtype)).to(dtype)


def unmerge(y: torch.Tensor, m: Matching) -> torch.Tensor:
    """(B, N - r, C) -> (B, N, C): every original token gets its merged token's value."""
    if m.r == 0:
        return y
    return y.gather(1, m.index.unsqueeze(-1).expand(*m.index.shape, y.shape[-1]))


def follow(table: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Rows of a per-token table (N, D) for the kept tokens `keep` (N - r,) of one sample."""
    return table.index_select(0, keep)


def size_bias(m: Matching, dtype: torch.dtype) -> torch.Tensor:
    """ToMe's proportional attention: log(size) of each key, shape (B, 1, N - r), as an additive logit bias."""
    return m.size.to(dtype).log().unsqueeze(1)


def keep_top(metric: torch.Tensor, importance: torch.Tensor, k: int) -> Matching:
    """DiffRate-style matching: keep the `k` most important tokens per sample, merge every other
    token into its most similar kept token (cosine on `metric`)."""
    b, n, _ = metric.shape
    device = metric.device
    k = max(1, min(int(k), n))
    arange = torch.arange(n, device=device).expand(b, n)
    if k == n:
        return Matching(arange.clone(), arange.clone(), torch.ones(b, n, dtype=torch.long, device=device))
    with torch.no_grad():
        keep = importance.topk(k, dim=1).indices.sort(dim=1).values  # (B, k)
        pos = torch.full((b, n), -1, dtype=torch.long, device=device)
        pos.scatter_(1, keep, torch.arange(k, device=device).expand(b, k))
        merged_src = (pos < 0).nonzero()[:, 1].reshape(b, n - k)
        c = metric.shape[-1]
        kept = metric.gather(1, keep.unsqueeze(-1).expand(b, k, c))
        rest = metric.gather(1, merged_src.unsqueeze(-1).expand(b, n - k, c))
        scores = rest @ kept.transpose(1, 2) / kept.norm(dim=-1).clamp_min(1e-12).unsqueeze(1)
        nearest = scores.argmax(dim=-1)  # (B, N - k) position among kept (row norms do not change it)
    index = pos.scatter(1, merged_src, nearest)
    size = torch.zeros(b, k, dtype=torch.long, device=device)
    size.scatter_add_(1, index, torch.ones_like(index))
    return Matching(keep, index, size, merged_src)
