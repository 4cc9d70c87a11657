"""Pure matching / merge / unmerge functions of accel.tokens.merge."""

from __future__ import annotations

import torch

from accel.tokens.merge import (
    bipartite_soft_matching,
    follow,
    grid_destinations,
    match_grid,
    merge,
    size_bias,
    unmerge,
)


def test_grid_destinations_one_per_window_inside_it():
    rows, cols = 6, 8
    for gen in (None, torch.Generator().manual_seed(3)):
        dst = grid_destinations(rows, cols, sx=2, sy=2, generator=gen)
        assert dst.numel() == (rows // 2) * (cols // 2)
        windows = {(int(d) // cols // 2, int(d) % cols // 2) for d in dst}
        assert len(windows) == dst.numel()  # exactly one destination per window
    assert torch.equal(grid_destinations(rows, cols), torch.tensor([r * cols + c for r in (0, 2, 4) for c in (0, 2, 4, 6)]))
    a = grid_destinations(16, 16, generator=torch.Generator().manual_seed(0))
    b = grid_destinations(16, 16, generator=torch.Generator().manual_seed(1))
    assert not torch.equal(a, b)  # the offset follows the seed
    # leftover rows/cols (odd grid) hold only sources
    assert grid_destinations(5, 3).tolist() == [0, 6]


def test_r0_merge_unmerge_is_identity():
    x = torch.randn(2, 16, 5)
    m = match_grid(x, 0, (4, 4))
    assert m.r == 0 and m.num_kept == 16
    assert merge(x, m) is x and unmerge(x, m) is x


def test_merged_count_is_n_minus_r_and_sizes_add_up():
    x = torch.randn(3, 64, 7)
    for r in (1, 10, 48):
        m = match_grid(x, r, (8, 8), generator=torch.Generator().manual_seed(r))
        y = merge(x, m)
        assert y.shape == (3, 64 - r, 7) and y.dtype == x.dtype
        assert m.keep.shape == (3, 64 - r)
        assert torch.equal(m.size.sum(1), torch.full((3,), 64))
        assert (m.keep.diff(dim=1) > 0).all()  # kept tokens stay in their original order
        assert unmerge(y, m).shape == x.shape
    # more than the sources (3/4 of the tokens with 2x2 windows) is clipped
    assert match_grid(x, 60, (8, 8)).r == 48


def test_two_identical_tokens_come_back_exact():
    x = torch.randn(1, 4, 6)
    x[0, 3] = x[0, 0]  # destination of the single 2x2 window is token 0 (no generator)
    m = match_grid(x, 1, (2, 2))
    assert m.keep.tolist() == [[0, 1, 2]] and m.size.tolist() == [[2, 1, 1]]
    y = merge(x, m)
    assert torch.equal(y[0, 0], x[0, 0])
    assert torch.equal(unmerge(y, m), x)


def test_size_weighted_mean_and_unmerge_copies_destination():
    x = torch.zeros(1, 4, 1)
    x[0, :, 0] = torch.tensor([1.0, 0.0, 0.0, 3.0])
    x_metric = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [1.0, 0.1]]])
    m = bipartite_soft_matching(x_metric, 1, torch.tensor([0]))
    assert m.index.tolist() == [[0, 1, 2, 0]]  # token 3 (most similar to 0) merged into 0
    y = merge(x, m)
    assert y[0, :, 0].tolist() == [2.0, 0.0, 0.0]
    assert unmerge(y, m)[0, :, 0].tolist() == [2.0, 0.0, 0.0, 2.0]
    assert torch.allclose(size_bias(m, torch.float32), torch.tensor([[[2.0, 1.0, 1.0]]]).log())


def test_matching_is_per_sample():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 16, 4, generator=g)
    m = match_grid(x, 6, (4, 4))
    single = [match_grid(x[i:i + 1], 6, (4, 4)) for i in range(2)]
    assert not m.same_for_batch()
    for i in range(2):
        assert torch.equal(m.select(i).keep, single[i].keep)
        assert torch.equal(m.select(i).index, single[i].index)


def test_follow_picks_rows_of_kept_tokens():
    table = torch.arange(20.0).reshape(10, 2)
    keep = torch.tensor([0, 3, 7])
    assert follow(table, keep).tolist() == [[0, 1], [6, 7], [14, 15]]
