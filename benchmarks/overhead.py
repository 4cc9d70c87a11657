"""Cost of the accel wrapper itself: bare pipeline vs `accel.apply` with no method enabled.

    python benchmarks/overhead.py [--steps 20] [--batch 8] [--repeats 7] [--threads 2]

Runs the embedded default model when it is installed (else a random-init DiT of the same
shape: speed does not depend on the weights), same seeds, interleaved repeats, and prints
the median time ratio (target: <= 1.02) and the machine.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import accel  # noqa: E402
from _common import interleaved_medians, machine, median, write_json  # noqa: E402


def _pipeline():
    try:
        from accel.models import load_default_pipeline

        return load_default_pipeline(), "embedded default model"
    except Exception as exc:  # not trained/shipped yet: same architecture, random weights
        from diffusers import DDIMScheduler, DiTPipeline, DiTTransformer2DModel

        from accel.testing import _tiny_vae

        model = DiTTransformer2DModel(
            num_attention_heads=2, attention_head_dim=32, in_channels=4, out_channels=4, num_layers=12,
            sample_size=32, patch_size=2, num_embeds_ada_norm=1000, norm_type="ada_norm_zero",
        ).eval()
        pipe = DiTPipeline(transformer=model, vae=_tiny_vae(4, 0), scheduler=DDIMScheduler())
        return pipe, f"random-init DiT, 12 blocks, 256 tokens (default model unavailable: {exc})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None, help="write the numbers as JSON here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    pipe, what = _pipeline()
    pipe.set_progress_bar_config(disable=True)
    labels = [i % 10 for i in range(args.batch)]

    def run():
        with torch.no_grad():
            return pipe(class_labels=labels, num_inference_steps=args.steps, guidance_scale=1.5,
                        generator=torch.Generator().manual_seed(0), output_type="np").images

    def bare():
        return run()

    def wrapped_timed():  # apply/remove inside the timed region: their cost counts too
        with accel.apply(pipe):
            return run()

    times = interleaved_medians({"bare": bare, "accel.apply (no method)": wrapped_timed}, args.repeats)
    ratio = median(times["accel.apply (no method)"]) / median(times["bare"])
    ratio_min = min(times["accel.apply (no method)"]) / min(times["bare"])  # robust to a busy machine
    result = {
        "model": what, "machine": machine(), "steps": args.steps, "batch": args.batch,
        "repeats": args.repeats, "median_s": {k: median(v) for k, v in times.items()}, "ratio": ratio,
        "ratio_of_minima": ratio_min,
    }
    print(f"model:   {what}\nmachine: {result['machine']}")
    for k, v in times.items():
        print(f"{k:>26}: median {median(v):.3f} s  (min {min(v):.3f}, max {max(v):.3f}, n={len(v)})")
    print(f"ratio of minima: {ratio_min:.4f} (less sensitive to other load on shared cores)")
    print(f"overhead ratio (accel / bare, medians): {ratio:.4f}  -> {'OK' if ratio <= 1.02 else 'ABOVE'} the 1.02 target")
    if args.out:
        write_json(args.out, result)


if __name__ == "__main__":
    main()
