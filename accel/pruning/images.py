"""Images from disk as latents of a pipeline's VAE, for distillation on data (class folders for a DiT,
image + prompt folders for a flow pipeline): bounded, one-line errors naming the file."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch

from ..errors import SettingError

MAX_IMAGE_PIXELS = 4096 * 4096


def encode_images(pipe: Any, files: Sequence[Path], formats: Sequence[str] = ("PNG", "JPEG")) -> torch.Tensor:
    """Images (of PIL `formats`, at most MAX_IMAGE_PIXELS) resized to the transformer's resolution, in [-1, 1],
    encoded by the pipeline's VAE (mode of the latent distribution, SD3's shift and scale); identity VAEs
    give the pixels. (N, C, H, W) float32; a ValueError naming the file for anything unreadable."""
    from PIL import Image

    vae, cfg = pipe.vae, pipe.transformer.config
    blocks = getattr(vae.config, "block_out_channels", None)
    size = cfg.sample_size * (2 ** (len(blocks) - 1) if blocks else 1)
    channels = getattr(vae.config, "in_channels", cfg.in_channels)
    mode = "L" if channels == 1 else "RGB"
    scale = getattr(vae.config, "scaling_factor", 1.0) or 1.0
    shift = getattr(vae.config, "shift_factor", 0.0) or 0.0
    out = []
    with torch.no_grad():
        for f in files:
            try:
                with Image.open(f) as im:
                    if im.format not in formats:
                        raise ValueError(f"a {im.format} image; give {' or '.join(formats)}")
                    if im.width * im.height > MAX_IMAGE_PIXELS:
                        raise ValueError(f"{im.width}x{im.height} pixels, more than {MAX_IMAGE_PIXELS}")
                    im = im.convert(mode).resize((size, size), Image.BICUBIC)
            except (OSError, ValueError, Image.DecompressionBombError) as exc:
                raise SettingError("data_dir", f"{f}: not a readable image ({' '.join(str(exc).split())})") from None
            x = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8).float().view(size, size, -1)
            x = (x.permute(2, 0, 1)[None] / 127.5 - 1).to(device=pipe.device, dtype=vae.dtype)
            enc = vae.encode(x)
            z = enc.latent_dist.mode() if hasattr(enc, "latent_dist") else getattr(enc, "sample", enc)
            out.append(((z - shift) * scale).float().cpu())
    return torch.cat(out)
