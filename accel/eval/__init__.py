"""Evaluation: Fréchet distance (FD-digits / Inception FID), fidelity to the baseline
(PSNR, SSIM, optional LPIPS), timing, peak memory and the `accel bench` harness.

Heavy pieces (diffusers, accelerate, matplotlib) are imported only where used.
"""

from .fid import (
    FeatureBackendError,
    InceptionFeatures,
    cached_reference_stats,
    fd_with_check,
    feature_stats,
    frechet_distance,
    frechet_distance_from_features,
    min_images_for_fd,
    torchmetrics_fd_from_features,
    torchmetrics_fd_metric,
)
from .fidelity import per_image_mse, per_image_ssim, psnr, psnr_from_mse, ssim
from .memory import PeakMemory, measure_peak
from .timing import interleaved, pin_threads, speedup, timed

__all__ = [
    "FeatureBackendError", "InceptionFeatures", "PeakMemory", "cached_reference_stats",
    "fd_with_check", "feature_stats", "frechet_distance", "frechet_distance_from_features",
    "interleaved", "measure_peak", "min_images_for_fd", "per_image_mse", "per_image_ssim",
    "pin_threads", "psnr", "psnr_from_mse", "speedup", "ssim", "timed",
    "torchmetrics_fd_from_features", "torchmetrics_fd_metric",
]
