"""Fréchet distance between Gaussian fits of feature sets (the math behind FID/FD-digits).

Statistics are accumulated in float64 and the matrix square root uses the symmetric
form  Tr((Σ1^½ Σ2 Σ1^½)^½)  computed with `eigh`, which is stable where `sqrtm` of
the non-symmetric product Σ1 Σ2 is not.
"""

from __future__ import annotations

import torch


def feature_stats(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (D,) and unbiased covariance (D, D) of features (N, D), in float64."""
    if features.ndim != 2:
        raise ValueError(f"features must be (N, D), got shape {tuple(features.shape)}")
    n = features.shape[0]
    if n < 2:
        raise ValueError(f"need at least 2 feature rows for a covariance, got {n}")
    x = features.detach().to(torch.float64)
    mu = x.mean(dim=0)
    xc = x - mu
    sigma = xc.T @ xc / (n - 1)
    return mu, sigma


def _sqrt_psd(mat: torch.Tensor) -> torch.Tensor:
    """Square root of a symmetric positive semi-definite matrix (negative eigenvalues clipped)."""
    vals, vecs = torch.linalg.eigh((mat + mat.T) / 2)
    return (vecs * vals.clamp_min(0).sqrt()) @ vecs.T


def frechet_distance(
    mu1: torch.Tensor, sigma1: torch.Tensor, mu2: torch.Tensor, sigma2: torch.Tensor
) -> float:
    """d² = ‖μ1−μ2‖² + Tr(Σ1 + Σ2 − 2 (Σ1^½ Σ2 Σ1^½)^½), all in float64."""
    mu1, mu2 = mu1.to(torch.float64), mu2.to(torch.float64)
    sigma1, sigma2 = sigma1.to(torch.float64), sigma2.to(torch.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError(
            f"statistics disagree in shape: mu {tuple(mu1.shape)} vs {tuple(mu2.shape)}, "
            f"sigma {tuple(sigma1.shape)} vs {tuple(sigma2.shape)}"
        )
    s1_half = _sqrt_psd(sigma1)
    cross = _sqrt_psd(s1_half @ sigma2 @ s1_half)
    diff = mu1 - mu2
    value = diff.dot(diff) + sigma1.trace() + sigma2.trace() - 2 * cross.trace()
    return float(value.clamp_min(0))


def frechet_distance_from_features(feats1: torch.Tensor, feats2: torch.Tensor) -> float:
    """Fréchet distance between two feature sets (N1, D) and (N2, D)."""
    return frechet_distance(*feature_stats(feats1), *feature_stats(feats2))
