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


def paired_fd_noise(
    feats: torch.Tensor, base_feats: torch.Tensor, real_stats: tuple[torch.Tensor, torch.Tensor] | None = None,
    *, resamples: int = 200, seed: int = 0,
) -> float:
    """Standard deviation of the paired FD change ``FD(feats) - FD(base_feats)`` over bootstrap resamples of the
    images (the same indices for both sets, which share seeds and conditions).

    This is the noise a method's FD change must beat to be called a loss: with 200 images the FD of one
    set moves by ~16% between seed sets, but the paired change moves far less. Against `real_stats` (the
    reference statistics) or, without them, each set's FD is to the baseline's full feature set."""
    if feats.shape != base_feats.shape:
        raise ValueError(f"paired features differ in shape: {tuple(feats.shape)} vs {tuple(base_feats.shape)}")
    ref = real_stats if real_stats is not None else feature_stats(base_feats)
    gen = torch.Generator().manual_seed(seed)
    n = feats.shape[0]
    diffs = []
    for _ in range(resamples):
        idx = torch.randint(n, (n,), generator=gen)
        diffs.append(frechet_distance(*feature_stats(feats[idx]), *ref)
                     - frechet_distance(*feature_stats(base_feats[idx]), *ref))
    return float(torch.tensor(diffs, dtype=torch.float64).std())


# ---------------------------------------------------------------------------
# torchmetrics path, reference-statistics cache and feature-extractor helpers.
# ---------------------------------------------------------------------------


class FeatureBackendError(ValueError):
    """An optional feature backend (Inception weights, torch-fidelity, ...) is unavailable."""


def min_images_for_fd(num_features: int) -> int:
    """Fewest images whose covariance can be full rank for ``num_features``-dim features."""
    return int(num_features) + 1


class PrecomputedFeatures(torch.nn.Module):
    """Identity "extractor" for torchmetrics: ``update`` receives feature rows (N, D).

    Features are computed (possibly sharded over processes and gathered) before they
    reach torchmetrics, so the metric object only does the statistics and the distance.
    """

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = int(num_features)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return feats


class WithNumFeatures(torch.nn.Module):
    """Wraps an extractor that lacks ``num_features`` (torchmetrics needs it, or a size)."""

    def __init__(self, module: torch.nn.Module, num_features: int) -> None:
        super().__init__()
        self.module = module
        self.num_features = int(num_features)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.module(images)


def torchmetrics_fd_metric(
    extractor: torch.nn.Module, num_features: int | None = None, sync_on_compute: bool = False
):
    """``torchmetrics`` ``FrechetInceptionDistance`` with a custom ``feature=`` module.

    ``extractor`` must expose ``num_features`` or ``num_features`` must be given.
    Real statistics are kept across ``reset()`` (``reset_real_features=False``).
    ``sync_on_compute`` is off by default: accel gathers features itself (on rank 0 only),
    so torchmetrics must not all-reduce across processes that never call ``compute``.
    """
    from torchmetrics.image.fid import FrechetInceptionDistance

    if not hasattr(extractor, "num_features"):
        if num_features is None:
            raise ValueError(
                "the feature extractor has no `num_features`; pass num_features= explicitly"
            )
        extractor = WithNumFeatures(extractor, num_features)
    return FrechetInceptionDistance(
        feature=extractor, reset_real_features=False, normalize=False, sync_on_compute=sync_on_compute
    )


def set_real_stats(metric, mu: torch.Tensor, sigma: torch.Tensor, n: int = 2) -> None:
    """Load reference statistics (μ, Σ) into a torchmetrics FID metric as its "real" side.

    torchmetrics keeps sums (Σx, Σxxᵀ, n); any n ≥ 2 reproduces μ and Σ exactly
    (up to float64 rounding) in ``compute()``.
    """
    n = max(int(n), 2)
    mu = mu.to(torch.float64).reshape(-1)
    sigma = sigma.to(torch.float64)
    metric.real_features_sum = mu * n
    metric.real_features_cov_sum = sigma * (n - 1) + n * torch.outer(mu, mu)
    metric.real_features_num_samples = torch.tensor(n, dtype=torch.long)


def torchmetrics_fd_from_features(
    fake: torch.Tensor,
    real: torch.Tensor | None = None,
    *,
    real_stats: tuple[torch.Tensor, torch.Tensor] | None = None,
    real_n: int = 2,
) -> float:
    """Fréchet distance computed by torchmetrics from precomputed feature rows.

    The "real" side is either feature rows ``real`` or statistics ``real_stats=(μ, Σ)``.
    """
    if (real is None) == (real_stats is None):
        raise ValueError("give exactly one of real= (features) or real_stats= (mu, sigma)")
    d = fake.shape[1]
    metric = torchmetrics_fd_metric(PrecomputedFeatures(d))
    if real is not None:
        metric.update(real.to(torch.float64), real=True)
    else:
        set_real_stats(metric, *real_stats, n=real_n)
    metric.update(fake.to(torch.float64), real=False)
    return max(float(metric.compute()), 0.0)  # d² >= 0; rounding can dip a hair below


def fd_with_check(
    fake: torch.Tensor,
    real: torch.Tensor | None = None,
    *,
    real_stats: tuple[torch.Tensor, torch.Tensor] | None = None,
    rtol: float = 1e-3,
    atol: float = 1e-6,
) -> tuple[float, float]:
    """(torchmetrics FD, accel float64 FD) on the same data; warns if they disagree."""
    import warnings

    tm = torchmetrics_fd_from_features(fake, real, real_stats=real_stats)
    stats_real = feature_stats(real) if real is not None else real_stats
    ref = frechet_distance(*feature_stats(fake), *stats_real)
    if abs(tm - ref) > atol + rtol * abs(ref):
        warnings.warn(
            f"torchmetrics FD {tm:.6g} disagrees with accel.eval.fid's float64 value {ref:.6g}; "
            "the covariance is probably ill-conditioned (too few images for the feature size?)",
            RuntimeWarning,
            stacklevel=2,
        )
    return tm, ref


def extractor_fingerprint(module: torch.nn.Module) -> str:
    """Short stable id of an extractor: class name + hash of its parameters/buffers."""
    import hashlib

    h = hashlib.sha256(type(module).__qualname__.encode())
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        # reshape(-1): a 0-dim buffer (BatchNorm's num_batches_tracked) cannot be viewed as bytes
        h.update(t.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
                 if t.numel() else b"")
    return h.hexdigest()[:16]


def default_cache_dir():
    """``$ACCEL_CACHE_DIR/fd_stats`` (default ``~/.cache/accel/fd_stats``)."""
    from ..outputs import cache_dir

    return cache_dir("fd_stats")


def cached_reference_stats(
    extractor_key: str,
    data_key: str,
    compute,
    cache_dir=None,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Reference (μ, Σ, n) from a safetensors cache keyed by extractor + data.

    ``compute()`` must return feature rows (N, D) or a tuple (μ, Σ, n); it runs only on a
    cache miss. The file is written atomically (temp file + rename).
    """
    import hashlib
    import re
    from pathlib import Path

    from safetensors.torch import save_file

    from ..outputs import atomic_path
    from ..readers import read_safetensors

    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    digest = hashlib.sha256(f"{extractor_key}\0{data_key}".encode()).hexdigest()[:16]
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{extractor_key}-{data_key}")[:80]
    path = cache_dir / f"{safe}-{digest}.safetensors"
    if path.is_file():
        try:
            t = read_safetensors(path, finite=True)
            return t["mu"], t["sigma"], int(t["n"].item())
        except Exception:  # corrupt or non-finite cache entry: recompute below
            pass
    out = compute()
    if isinstance(out, torch.Tensor):
        mu, sigma = feature_stats(out)
        n = out.shape[0]
    else:
        mu, sigma, n = out
        mu, sigma = mu.to(torch.float64), sigma.to(torch.float64)
    try:
        with atomic_path(path) as tmp:
            save_file(
                {"mu": mu.contiguous(), "sigma": sigma.contiguous(), "n": torch.tensor([int(n)])},
                str(tmp),
                metadata={"extractor": extractor_key, "data": data_key},
            )
    except OSError:  # read-only home etc.: the cache is an optimisation only
        pass
    return mu, sigma, int(n)


class InceptionFeatures(torch.nn.Module):
    """Inception-v3 pool features (2048) from a user-supplied local weights file.

    Takes float images (N, C, H, W) in [0, 1]; grey images are repeated to 3 channels.
    Needs torch-fidelity (imported lazily); nothing is ever downloaded.
    """

    num_features = 2048

    def __init__(self, weights_path) -> None:
        super().__init__()
        import os

        if not weights_path or not os.path.isfile(str(weights_path)):
            raise FeatureBackendError(
                f"Inception weights {weights_path!r}: file not found. Real Inception FID needs "
                "the FID Inception-v3 weights (pt_inception-2015-12-05) as a local file; "
                "nothing is downloaded."
            )
        try:
            from torchmetrics.image.fid import NoTrainInceptionV3

            self.net = NoTrainInceptionV3(
                name="inception-v3-compat",
                features_list=["2048"],
                feature_extractor_weights_path=str(weights_path),
            )
        except Exception as exc:  # noqa: BLE001 - any backend failure becomes one message
            raise FeatureBackendError(
                "Inception FID is unavailable: building torchmetrics' NoTrainInceptionV3 from "
                f"{weights_path!r} failed ({type(exc).__name__}: {exc}). It needs the optional "
                "`torch-fidelity` package (which must not pull a CUDA torchvision into a CPU "
                "install). Without it, use the default model's FD-digits."
            ) from exc

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        x = (x.clamp(0, 1) * 255).round().to(torch.uint8)
        return self.net(x).reshape(x.shape[0], -1).to(torch.float64)


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def image_folder_key(folder) -> tuple[list, str]:
    """(sorted image paths, content hash) of a folder of reference images."""
    import hashlib
    from pathlib import Path

    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"reference image folder {folder} does not exist")
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise ValueError(f"reference image folder {folder} holds no {'/'.join(IMAGE_SUFFIXES)} files")
    h = hashlib.sha256()
    for p in paths:
        h.update(p.relative_to(folder).as_posix().encode())
        h.update(hashlib.sha256(p.read_bytes()).digest())
    return paths, f"images{len(paths)}-{h.hexdigest()[:16]}"


def folder_features(extractor, paths, channels: int, batch_size: int = 64, device="cpu") -> torch.Tensor:
    """Features (N, D) of image files as float (1, C, H, W) in [0, 1], one size-group at a time."""
    import numpy as np
    from PIL import Image

    mode = "L" if channels == 1 else "RGB"
    groups: dict[tuple, list] = {}
    for p in paths:
        with Image.open(p) as im:
            arr = np.asarray(im.convert(mode), dtype=np.float32) / 255.0
        t = torch.from_numpy(arr)
        t = t[None] if t.ndim == 2 else t.permute(2, 0, 1)
        groups.setdefault(tuple(t.shape), []).append(t)
    out = []
    with torch.inference_mode():
        for shape, imgs in groups.items():
            for i in range(0, len(imgs), batch_size):
                x = torch.stack(imgs[i : i + batch_size]).to(device)
                try:
                    out.append(extractor(x).detach().to("cpu", torch.float64).reshape(x.shape[0], -1))
                except RuntimeError as exc:  # e.g. a size the extractor's layers cannot take
                    raise ValueError(f"{len(imgs)} image(s) of {shape[1]}x{shape[2]} pixels cannot go through "
                                     f"the feature extractor (use images of the pipeline's size): "
                                     f"{str(exc).splitlines()[0]}") from None
    return torch.cat(out)
