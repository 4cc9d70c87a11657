"""Token-grid readers: the image-token grid, (rows, cols) or for video (frames, rows, cols), read from
a transformer's call arguments (a family's `token_grid`; token methods need it to match tokens)."""

from __future__ import annotations

import torch

from .types import GridFn


def _latent(args: tuple, kwargs: dict, name: str = "hidden_states") -> torch.Tensor:
    return kwargs[name] if name in kwargs else args[0]


def _patch(model: torch.nn.Module) -> tuple[int, int, int]:
    """(frames, rows, cols) patch size from `patch_size` (int or (t, h, w)) and `patch_size_t`."""
    p = model.config.patch_size or 1
    if isinstance(p, (list, tuple)):
        return tuple(int(v) for v in p)  # type: ignore[return-value]
    return int(getattr(model.config, "patch_size_t", None) or 1), int(p), int(p)


def from_latents(model: torch.nn.Module, args: tuple, kwargs: dict) -> tuple[int, int]:
    """(H/p, W/p) of a (B, C, H, W) latent input patchified with `config.patch_size`."""
    x = _latent(args, kwargs)
    _, ph, pw = _patch(model)
    return x.shape[-2] // ph, x.shape[-1] // pw


def video(frame_axis: int) -> GridFn:
    """(F/pt, H/ph, W/pw) of a 5-D video latent whose frames sit on `frame_axis`."""
    def grid(model: torch.nn.Module, args: tuple, kwargs: dict) -> tuple[int, int, int]:
        x = _latent(args, kwargs)
        pt, ph, pw = _patch(model)
        return x.shape[frame_axis] // pt, x.shape[-2] // ph, x.shape[-1] // pw
    return grid


def ltx(model: torch.nn.Module, args: tuple, kwargs: dict) -> tuple[int, int, int]:
    """LTX-Video packs latents into tokens; the call names the latent frames, height and width."""
    pt, ph, pw = _patch(model)
    return kwargs["num_frames"] // pt, kwargs["height"] // ph, kwargs["width"] // pw


def from_img_ids(model: torch.nn.Module, args: tuple, kwargs: dict) -> tuple[int, int]:
    """Flux packs latents into a token sequence; `img_ids[:, 1:]` hold (row, col) of each token."""
    ids = kwargs.get("img_ids")
    if ids is None:
        raise ValueError(f"{type(model).__name__} call without img_ids: cannot read the token grid")
    if ids.ndim == 3:
        ids = ids[0]
    return int(ids[:, 1].max().item()) + 1, int(ids[:, 2].max().item()) + 1
