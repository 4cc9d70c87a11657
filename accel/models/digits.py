"""scikit-learn's bundled 8x8 digits, upsampled to 32x32 in [-1, 1], with a fixed split.

The data ships inside scikit-learn (no download). scikit-learn is an optional
dependency (``pip install accel[train]`` or ``accel[test]``), so it is imported lazily.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

NUM_CLASSES = 10
IMAGE_SIZE = 32
SPLIT_SEED = 0
NUM_HELD_OUT = 400


def _load_sklearn_digits():
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "accel.models.digits needs scikit-learn for the bundled digits data; "
            "install it with `pip install accel[train]` (or `pip install scikit-learn`)."
        ) from exc
    return load_digits()


def upsample_digits(images_8x8: torch.Tensor, size: int = IMAGE_SIZE) -> torch.Tensor:
    """(N, 8, 8) raw digits in [0, 16] -> (N, 1, size, size) float32 in [-1, 1], bilinear."""
    x = images_8x8.to(torch.float32).reshape(-1, 1, 8, 8) / 16.0
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return (x * 2.0 - 1.0).clamp(-1.0, 1.0)


def load_digits_split(
    split: str = "train", size: int = IMAGE_SIZE
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, 1, size, size) float32 in [-1, 1] and labels (N,) int64.

    ``split`` is ``"train"`` (1,397 images), ``"heldout"`` (400 images, stratified,
    seed 0) or ``"all"`` (1,797). The split is fixed and reproducible.
    """
    if split not in ("train", "heldout", "all"):
        raise ValueError(f"split must be 'train', 'heldout' or 'all', got {split!r}")
    data = _load_sklearn_digits()
    images = torch.from_numpy(data.images.copy())
    labels = torch.from_numpy(data.target.copy()).to(torch.int64)
    if split != "all":
        from sklearn.model_selection import train_test_split

        idx = torch.arange(len(labels)).numpy()
        train_idx, held_idx = train_test_split(
            idx, test_size=NUM_HELD_OUT, stratify=labels.numpy(), random_state=SPLIT_SEED
        )
        sel = torch.from_numpy(train_idx if split == "train" else held_idx)
        images, labels = images[sel], labels[sel]
    return upsample_digits(images, size), labels
