"""Accelerate a diffusers pipeline with an accel preset and compare it side by side with the original.

What it does: loads a pipeline, applies `accel.preset(NAME, pipe)` (or `--methods`, the
`accel bench --methods` syntax) through one `accel.apply`, generates the same seeds and
prompts/classes with and without it, times both interleaved (medians of warmed-up repeats)
and writes into --out:

    grid.png      baseline | accelerated, one row per seed
    result.json   speedup (ratio of median times, measured side by side), PSNR to the
                  baseline, block evaluations, the configs, machine load and provenance

Run it (offline, no weights needed):

    python scripts/demo_preset.py                              # tiny random-init PixArt, preset "balanced"
    python scripts/demo_preset.py --family flux --preset fast  # tiny Flux / SD3 / DiT / Sana
    python scripts/demo_preset.py --model default --preset fast --num-images 8   # the embedded digits DiT
    python scripts/demo_preset.py --model default --methods delta-cache:interval=3+tome:ratio=0.5

Real weights: accel never downloads. Fetch a full diffusers pipeline on a machine with
internet (`huggingface-cli download PixArt-alpha/PixArt-XL-2-512x512 --local-dir pixart`,
likewise stabilityai/stable-diffusion-3-medium-diffusers or black-forest-labs/FLUX.1-schnell),
copy the folder here and pass it (a hub id already in the local Hugging Face cache works too):

    python scripts/demo_preset.py --model ./pixart --preset balanced --device cuda --dtype float16 \\
        --prompt "a red fox in the snow" --prompt "a lighthouse at dawn" --height 512 --width 512
    python scripts/demo_preset.py --model ./flux-schnell --methods residual-cache:threshold=0.1 \
        --device cuda --dtype bfloat16 --guidance 0 --pipeline-kwargs '{"max_sequence_length": 256}'

A missing folder or an unsupported pipeline is one `demo_preset.py: error: ...` line, exit code 2.
Tiny random-init models are dominated by per-call overhead: their speedups say little; time real
weights (or `--model default`) for numbers that mean something.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _demo_common as C  # noqa: E402

PROG = "demo_preset.py"
PRESETS = ("fast", "balanced", "quality")


def build_parser() -> argparse.ArgumentParser:
    from accel.testing import FAMILIES

    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None,
                   help="'default' (embedded digits DiT), a local pipeline folder or cached hub id; "
                        "omitted: a tiny random-init pipeline of --family")
    p.add_argument("--family", default="pixart", choices=FAMILIES, help="tiny model family without --model")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--preset", default="balanced", choices=PRESETS, help="accel.preset name (default balanced)")
    what.add_argument("--methods", default=None,
                      help="instead of a preset: one method or a stack, `accel bench --methods` syntax, "
                           "e.g. delta-cache:interval=3+tome:ratio=0.5")
    p.add_argument("--num-images", type=int, default=4, help="images (rows of the grid), default 4")
    p.add_argument("--steps", type=int, default=None,
                   help=f"sampling steps (default: {C.TINY_STEPS} tiny, {C.DEFAULT_MODEL_STEPS} default model, "
                        f"{C.OTHER_MODEL_STEPS} other)")
    p.add_argument("--seed", type=int, default=0, help="first seed; image i gets seed+i")
    p.add_argument("--batch-size", type=int, default=4, help="images per pipeline call (default 4)")
    p.add_argument("--guidance", type=float, default=None, help="guidance scale (default: the pipeline's)")
    p.add_argument("--prompt", action="append", default=None,
                   help="prompt of a text-to-image --model (repeat for several; cycled over the images)")
    p.add_argument("--height", type=int, default=None, help="image height of a --model pipeline")
    p.add_argument("--width", type=int, default=None, help="image width of a --model pipeline")
    p.add_argument("--pipeline-kwargs", default=None, metavar="JSON",
                   help="JSON object merged into every call of a --model pipeline, as in accel bench, "
                        "e.g. '{\"use_resolution_binning\": false}'")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats of each side (default 3)")
    p.add_argument("--warmup", type=int, default=1, help="untimed warm-up rounds (default 1)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--dtype", default="float32", help="float32, float16, bfloat16")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--out", default="demo-out/preset", help="output folder (default demo-out/preset)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def method_configs(args: argparse.Namespace, pipe: Any) -> tuple[str, list]:
    """(label, configs) from --methods or the preset."""
    import accel
    from accel.eval.methods import parse_methods

    if args.methods is not None:
        specs = [s for s in parse_methods(args.methods, accel.methods()) if not s.is_baseline]
        if len(specs) != 1:
            raise C.DemoInputError(f"--methods {args.methods!r}: give one method or one stack (A+B), not "
                                   f"{len(specs)} methods")
        return specs[0].label, list(specs[0].configs)
    preset = getattr(accel, "preset", None)
    if preset is None:
        raise C.DemoInputError("this accel has no accel.preset(); pass --methods NAME[:key=val][+NAME2] instead")
    try:
        configs = list(preset(args.preset, pipe))
    except (KeyError, ValueError, TypeError) as exc:
        raise C.DemoInputError(f"--preset {args.preset!r}: {exc}") from None
    return f"preset {args.preset}", configs


def config_record(configs: Sequence[Any]) -> list[dict]:
    """[{name, params}] per config (CLI names from accel.methods())."""
    import accel
    from accel.eval.methods import jsonable

    names = {cls: name for name, cls in accel.methods().items()}
    return [{"name": names.get(type(c), type(c).__name__),
             "params": jsonable(dataclasses.asdict(c) if dataclasses.is_dataclass(c) else vars(c))}
            for c in configs]


def run(args: argparse.Namespace) -> dict:
    import accel
    from tqdm.auto import tqdm

    from accel.eval.paired import method_warnings

    device, dtype = C.resolve_device(args.device), C.parse_dtype(args.dtype)
    for flag in ("repeats", "threads"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            raise C.DemoInputError(f"--{flag} must be >= 1, got {getattr(args, flag)}")
    if args.warmup < 0:
        raise C.DemoInputError(f"--warmup must be >= 0, got {args.warmup}")
    if args.threads:
        torch.set_num_threads(args.threads)
    m = C.load_model(args.model, args.family, device=device, dtype=dtype)
    extra = {k: v for k, v in (("height", args.height), ("width", args.width)) if v is not None}
    if args.pipeline_kwargs:
        from accel.eval.prepare import json_object

        extra.update(json_object(args.pipeline_kwargs))
    if m.kind == "tiny" and (extra or args.prompt):
        raise C.DemoInputError("--prompt/--height/--width/--pipeline-kwargs apply to a --model pipeline; tiny "
                               "models use fixed embeddings")
    if args.prompt and m.digits:
        raise C.DemoInputError("--prompt: the digits model is class-conditional (classes 0-9 are cycled)")
    steps = args.steps or C.default_steps(m)
    images = C.PairedImages(m, args.num_images, steps, seed=args.seed, batch_size=args.batch_size,
                            guidance=args.guidance, prompts=args.prompt, extra_kwargs=extra)
    label, configs = method_configs(args, m.pipe)
    C.check_applies(m.pipe, configs, label)  # conflicts / unsupported settings surface before any image
    calib = C.PairedImages(m, min(args.batch_size, args.num_images), steps, seed=args.seed + 100_000,
                           batch_size=args.batch_size, guidance=args.guidance, prompts=args.prompt,
                           extra_kwargs=extra)  # other seeds than the measured ones
    C.prepare_configs(configs, m.pipe, lambda: calib.generate(m.pipe, calib.batches()[0]))

    bar = tqdm(total=2 * args.num_images, desc="generating", unit="img", disable=args.quiet)
    t0 = time.perf_counter()
    base = images.generate_all(m.pipe, bar=bar)
    handle = accel.apply(m.pipe, *configs)
    try:
        fast = images.generate_all(m.pipe, bar=bar)
        stats = C.block_work(handle.stats())
        said = method_warnings(handle)  # what a method could not do here (min_steps, nothing merged), one line each
    finally:
        handle.remove()
    bar.close()
    gen_s = time.perf_counter() - t0

    idx = images.batches()[0]
    load_before = C.machine_load()
    counts: list = []
    timing = C.time_side_by_side(
        {"baseline": lambda: C.timed_call(m.pipe, [], lambda: images.generate(m.pipe, idx), device),
         "accelerated": lambda: C.timed_call(m.pipe, configs, lambda: images.generate(m.pipe, idx), device,
                                             stats=counts)},
        repeats=args.repeats, warmup=args.warmup, progress=not args.quiet)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    grid_size = C.save_grid(out / "grid.png", {"baseline": base, label: fast})
    evals = [c.get("block_evals") for c in counts if c]
    doc = {
        "model": m.name, "kind": m.kind, "family": m.family or type(m.pipe.transformer).__name__,
        "pipeline": type(m.pipe).__name__, "device": str(device), "dtype": args.dtype,
        "accelerated": label, "preset": None if args.methods else args.preset, "methods": args.methods,
        "configs": config_record(configs),
        "num_images": args.num_images, "steps": steps, "seeds": [args.seed, args.seed + args.num_images - 1],
        "speedup": timing["accelerated"]["speedup"], "speedup_spread": timing["accelerated"]["speedup_spread"],
        "baseline_s": timing["baseline"]["median_s"], "accelerated_s": timing["accelerated"]["median_s"],
        "timing": {"images_per_call": len(idx), "repeats": args.repeats, "warmup": args.warmup,
                   "interleaved": True, "rounds": timing},
        "psnr": C.psnr_to(fast, base),
        **stats,  # block_evals, block_total, flops_ratio of the generated images' calls
        "ideal_speedup": (stats["block_total"] / stats["block_evals"] / (stats["flops_ratio"] or 1.0))
        if stats["block_evals"] else None,
        "timed_block_evals": evals[0] if evals and len(set(evals)) == 1 else evals or None,
        "generation_s": gen_s, "grid": {"file": "grid.png", "size": list(grid_size)},
        "machine": {"before_timing": load_before, "after_timing": C.machine_load()},
        "notes": list(said) + ([handle.stats()["preset"]] if "preset" in handle.stats() else []),
    }
    if m.kind == "tiny":
        doc["notes"].append("tiny random-init model: per-call overhead dominates, the speedup says little")
    from accel.eval.provenance import run_meta

    doc["meta"] = run_meta([PROG, *args.argv])
    C.write_json(out / "result.json", doc)
    return doc


def main(argv: list[str] | None = None) -> int:
    failed, result = C.run_cli(PROG, build_parser(), run, argv)
    if result is None:
        return failed
    args, doc = result
    print(C.format_table(
        ["model", "accelerated", "steps", "images", "baseline s", "accel s", "speedup", "PSNR dB", "blocks"],
        [[doc["model"], doc["accelerated"], doc["steps"], doc["num_images"], C.fmt(doc["baseline_s"], ".3f"),
          C.fmt(doc["accelerated_s"], ".3f"), C.fmt(doc["speedup"]) + f" ±{C.fmt(doc['speedup_spread'])}",
          C.fmt(doc["psnr"], ".1f"), f"{doc['block_evals']}/{doc['block_total']}"]]))
    load = doc["machine"]["before_timing"]
    print(f"load average {load.get('loadavg_1m')} on {load.get('cpus')} CPUs, {load.get('torch_threads')} torch "
          f"thread(s); wrote {args.out}/grid.png, {args.out}/result.json")
    for n in doc["notes"]:
        print(f"note: {n}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
