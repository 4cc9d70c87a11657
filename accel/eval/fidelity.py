"""Fidelity of accelerated images to the unaccelerated images of the same seeds.

PSNR and SSIM come from torchmetrics. Images are float (N, C, H, W) in [0, 1].
Per-image values are what gets gathered across processes: PSNR over a set is
computed torchmetrics' way (one global MSE), SSIM is the mean of per-image SSIM.
LPIPS is optional and only used when its backend and weights are already local.
"""

from __future__ import annotations

import math

import torch


def _check(preds: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if preds.shape != target.shape or preds.ndim != 4:
        raise ValueError(
            f"preds and target must both be (N, C, H, W) and equal: {tuple(preds.shape)} vs "
            f"{tuple(target.shape)}"
        )
    return preds.to(torch.float64), target.to(torch.float64)


def psnr(preds: torch.Tensor, target: torch.Tensor, data_range: float = 1.0) -> float:
    """PSNR in dB over the whole set (torchmetrics); ``inf`` for identical images."""
    from torchmetrics.functional.image import peak_signal_noise_ratio

    preds, target = _check(preds, target)
    if torch.equal(preds, target):
        return math.inf
    return float(peak_signal_noise_ratio(preds, target, data_range=data_range))


def ssim(preds: torch.Tensor, target: torch.Tensor, data_range: float = 1.0) -> float:
    """Mean SSIM over the images (torchmetrics); 1.0 for identical images."""
    return float(per_image_ssim(preds, target, data_range).mean())


def per_image_mse(preds: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(N,) mean squared error per image, float64."""
    preds, target = _check(preds, target)
    return (preds - target).square().flatten(1).mean(dim=1)


def per_image_ssim(preds: torch.Tensor, target: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """(N,) SSIM per image (torchmetrics, Gaussian 11x11 window; smaller images use a smaller one)."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    preds, target = _check(preds, target)
    size = min(11, min(preds.shape[-2:]))
    if size % 2 == 0:
        size -= 1
    sigma = 1.5 * size / 11
    out = structural_similarity_index_measure(
        preds, target, data_range=data_range, kernel_size=size, sigma=sigma, reduction="none"
    )
    return out.reshape(-1).to(torch.float64)


def psnr_from_mse(mse: torch.Tensor, data_range: float = 1.0) -> float:
    """Set-level PSNR from per-image MSEs (equal pixel counts): 10·log10(R² / mean MSE)."""
    m = float(torch.as_tensor(mse, dtype=torch.float64).mean())
    if m == 0.0:
        return math.inf
    return 10.0 * math.log10(data_range**2 / m)


def try_lpips(device="cpu"):
    """(metric, None) if LPIPS works offline, else (None, reason). Never downloads."""
    import os

    old = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "TORCH_HOME")}
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

        metric = LearnedPerceptualImagePatchSimilarity(net_type="alex", normalize=True).to(device)
        return metric, None
    except Exception as exc:  # noqa: BLE001 - optional backend: any failure = unavailable
        return None, (
            f"LPIPS unavailable ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
            "it needs torchvision and locally cached AlexNet/LPIPS weights"
        )
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def per_image_lpips(metric, preds: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(N,) LPIPS per image with a metric from :func:`try_lpips` (images moved to the metric's device)."""
    device = getattr(metric, "device", None) or next(metric.parameters()).device
    vals = []
    for p, t in zip(preds, target):
        p, t = p[None].to(device, torch.float32), t[None].to(device, torch.float32)
        if p.shape[1] == 1:
            p, t = p.repeat(1, 3, 1, 1), t.repeat(1, 3, 1, 1)
        metric.reset()
        vals.append(float(metric(p, t)))
    return torch.tensor(vals, dtype=torch.float64)
