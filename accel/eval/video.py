"""Video pipelines in `accel bench`: frames out of a stock pipeline call, fidelity per video.

A video pipeline (one whose ``__call__`` takes ``num_frames``: Wan, CogVideoX, LTX, ...) returns
``.frames``; :func:`frames_tensor` turns them into (N, F, C, H, W) floats in [0, 1]. Fidelity is
per video: the MSE of a video is the mean of its frames' MSEs (equal pixel counts, so the set
PSNR is still ``10·log10(1 / mean MSE)``), its SSIM / LPIPS the mean over its frames. FD is not
measured on videos (no video feature extractor ships with accel): null, with a note.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

import numpy as np
import torch

FD_NOTE = ("FD does not apply to video pipelines (no video feature extractor): fd is null; fidelity is PSNR / "
           "SSIM per video (mean over its frames) against the baseline's video of the same seed; grid.png and "
           "report.html show each video's middle frame")


def is_video_pipeline(pipe: Any) -> bool:
    """True when the pipeline's call takes ``num_frames`` (text/image-to-video pipelines)."""
    try:
        return "num_frames" in inspect.signature(pipe.__call__).parameters
    except (TypeError, ValueError):
        return False


def frames_tensor(frames: Any) -> torch.Tensor:
    """A pipeline's ``.frames`` (np (N, F, H, W, C), a tensor (N, F, C, H, W), or lists of PIL
    frames) as float32 (N, F, C, H, W) on the CPU."""
    if isinstance(frames, torch.Tensor):
        return frames.detach().float().cpu()
    if isinstance(frames, list) and frames and isinstance(frames[0], list):  # PIL frames per video
        frames = np.stack([np.stack([np.asarray(f, dtype=np.float32) / 255.0 for f in v]) for v in frames])
    x = torch.from_numpy(np.asarray(frames, dtype=np.float32))
    if x.ndim != 5:
        raise ValueError(f"expected video frames (N, F, H, W, C), got shape {tuple(x.shape)}")
    return x.permute(0, 1, 4, 2, 3).contiguous()


def per_video(metric: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], preds: torch.Tensor,
              target: torch.Tensor) -> torch.Tensor:
    """(N,) mean over frames of a per-image metric, for videos (N, F, C, H, W)."""
    if preds.shape != target.shape or preds.ndim != 5:
        raise ValueError(f"videos must both be (N, F, C, H, W) and equal: {tuple(preds.shape)} vs {tuple(target.shape)}")
    n, f = preds.shape[:2]
    return metric(preds.flatten(0, 1), target.flatten(0, 1)).reshape(n, f).mean(dim=1)


def per_sample(metric: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], preds: torch.Tensor,
               target: torch.Tensor) -> torch.Tensor:
    """(N,) `metric` per image of (N, C, H, W) images, or per video (mean over frames) of (N, F, C, H, W)."""
    return per_video(metric, preds, target) if preds.ndim == 5 else metric(preds, target)


def grid_frame(video: torch.Tensor) -> torch.Tensor:
    """The frame of a (F, C, H, W) video shown in grid.png and report.html: the middle one."""
    return video[video.shape[0] // 2]


def video_features(args: Any, prep: Any) -> None:
    """`accel bench` on a video pipeline: no FD (a one-line error if an FD flag asks for one), a note why."""
    from .methods import BenchSettingError

    asked = [s for s in ("inception_weights", "features", "reference_images") if getattr(args, s) is not None]
    if asked:
        raise BenchSettingError(asked[0], f": FD is not measured on video pipelines ({type(prep.pipe).__name__}); "
                                     "leave it out (PSNR / SSIM per video are reported)")
    prep.extractor = prep.reference_stats = prep.fd_name = None
    prep.notes.append(FD_NOTE)
