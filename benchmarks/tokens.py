"""Token compression (`tome`, `toca`, `diffrate`): speed where tokens carry the compute, quality on
the embedded model.

    python benchmarks/tokens.py [--part speed|quality|all] [--num-images 40] [--steps 20,50]
                                [--rates-dir DIR] [--threads 2] [--out benchmarks/results/tokens.json]

Speed: random-init DiTTransformer2DModel and PixArtTransformer2DModel at real width (16 heads x 72 =
1152), 4 blocks, 64x64 latent with patch 2 (1,024 image tokens), batch 2; one transformer forward
timed bare vs `tome` 0.25/0.5/0.75 (all token-wise sub-layers; DiT has no cross-attention),
`tome` 0.5 attention only and DiffRate-style uniform rates, interleaved medians. Reports wall
speedup, the FLOPs ratio from `.stats()` and achieved/ideal = speedup x FLOPs ratio.

Quality: the embedded default model (256 tokens), every method paired with the baseline on the
same seeds and classes (accel.eval.workload), per step count: FD-digits, PSNR/SSIM to the
baseline's images, wall speedup of the whole generation, FLOPs ratio. DiffRate rates come from
`accel diffrate --flops F --out DIR/rates_F.json` (F = 0.7, 0.5); uniform rates at the FLOPs the
learned rates reached are compared alongside; `interval-cache` is the whole-block reuse
reference. With few images FD-digits is noisy (it needs ~200 for a stable value); PSNR/SSIM are
per image and stable earlier. Writes JSON (with meta) and, for quality, a PNG of the curves.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import accel  # noqa: E402
from _common import interleaved_medians, machine, median, write_json  # noqa: E402
from accel.eval.fidelity import psnr, ssim  # noqa: E402
from accel.eval.workload import generate, make_workload  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


# ----------------------------------------------------------------------------- speed
def real_width_models() -> dict[str, tuple[torch.nn.Module, dict]]:
    from diffusers import DiTTransformer2DModel, PixArtTransformer2DModel

    torch.manual_seed(0)
    dit = DiTTransformer2DModel(
        num_attention_heads=16, attention_head_dim=72, in_channels=4, out_channels=8, num_layers=4,
        sample_size=64, patch_size=2, num_embeds_ada_norm=1000, norm_type="ada_norm_zero",
    ).eval()
    pixart = PixArtTransformer2DModel(
        num_attention_heads=16, attention_head_dim=72, in_channels=4, out_channels=8, num_layers=4,
        sample_size=64, patch_size=2, cross_attention_dim=1152, caption_channels=4096,
        norm_type="ada_norm_single", num_embeds_ada_norm=1000, use_additional_conditions=False,
    ).eval()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 64, 64, generator=g)
    t = torch.full((2,), 500)
    return {
        "dit": (dit, dict(hidden_states=x, timestep=t, class_labels=torch.arange(2), return_dict=False)),
        "pixart": (pixart, dict(hidden_states=x, timestep=t, encoder_hidden_states=torch.randn(2, 120, 4096, generator=g),
                                added_cond_kwargs={"resolution": None, "aspect_ratio": None}, return_dict=False)),
    }


def speed_configs(family: str) -> dict[str, object]:
    m = accel.methods()
    T, D = m["tome"], m["diffrate"]
    cross = {"merge_crossattn": True} if family == "pixart" else {}
    out: dict[str, object] = {}
    for r in (0.25, 0.5, 0.75):
        out[f"tome:ratio={r},merge_attn=True{',merge_crossattn=True' if cross else ''},merge_mlp=True"] = \
            T(ratio=r, merge_attn=True, merge_mlp=True, **cross)
    out["tome:ratio=0.5 (attention only)"] = T(ratio=0.5)
    for keep in (0.75, 0.5):
        out[f"diffrate:rates={keep} x4 (uniform)"] = D(rates=";".join([str(keep)] * 4), sublayers="attention;mlp")
    return out


def run_speed(repeats: int) -> dict:
    rows = []
    for family, (model, kw) in real_width_models().items():
        def bare():
            with torch.inference_mode():
                model(**kw)

        for name, cfg in speed_configs(family).items():
            last: dict = {}

            def accelerated(cfg=cfg, last=last):
                handle = accel.apply(model, cfg)  # apply/remove cost ~ms next to a multi-second forward
                try:
                    bare()
                finally:
                    last.update(handle.stats()[cfg.cli_name])
                    handle.remove()

            t = interleaved_medians({"bare": bare, name: accelerated}, repeats=repeats, warmup=1)
            b, a = median(t["bare"]), median(t[name])
            flops = last["total"]["flops_ratio"]
            rows.append({"model": family, "method": name, "bare_s": b, "method_s": a, "speedup": b / a,
                         "flops_ratio": flops, "achieved_over_ideal": (b / a) * flops,
                         "bare_times": t["bare"], "method_times": t[name]})
            print(f"{family:7s} {name:75s} bare {b:6.2f}s  {a:6.2f}s  x{b / a:4.2f}  FLOPs {flops:.3f}  "
                  f"achieved/ideal {(b / a) * flops:.2f}", flush=True)
    return {"rows": rows, "setup": "4 blocks, 1152 wide (16x72), 64x64 latent / patch 2 = 1,024 tokens, batch 2, "
                                   "one transformer forward (PixArt: 120 text tokens); bare and method interleaved, "
                                   "medians", "repeats": repeats}


# ----------------------------------------------------------------------------- quality
def uniform_flops(model: torch.nn.Module, keep: float, n: int = 256) -> float:
    """FLOPs ratio of the blocks' sub-layers with a uniform kept fraction on attention + MLP (DiffRate's set)."""
    from accel.families import blocks_of, mergeable, sublayers_of
    from accel.tokens.diffrate import kept_count
    from accel.tokens.flops import SublayerCost

    full = done = 0
    for ref in blocks_of(model):
        for kind, module in sublayers_of(ref).items():
            cost, keys = SublayerCost(module, kind), (n if kind == "cross_attention" else None)
            f = cost(n, 0, keys)
            full += f
            merged = kind in ("attention", "mlp") and mergeable(ref, kind) is None
            done += cost(kept_count(keep, n), 0, keys) if merged else f
    return done / full


def uniform_keep_for(flops: float, model: torch.nn.Module, n: int = 256) -> float:
    """Uniform kept fraction (multiple of 1/64) whose FLOPs ratio is closest to `flops`."""
    return min((i / 64 for i in range(4, 65)), key=lambda k: abs(uniform_flops(model, k, n) - flops))


def quality_methods(steps: int, rates_dir: Path | None, model: torch.nn.Module) -> dict[str, list]:
    m = accel.methods()
    T, C, D, I = m["tome"], m["toca"], m["diffrate"], m["interval-cache"]
    methods: dict[str, list] = {
        "tome:ratio=0.25": [T(ratio=0.25)],
        "tome:ratio=0.25,prop_attn=True": [T(ratio=0.25, prop_attn=True)],
        "tome:ratio=0.5,prop_attn=True": [T(ratio=0.5, prop_attn=True)],
        f"tome:ratio=0.5,prop_attn=True,start_step={steps // 2}": [T(ratio=0.5, prop_attn=True, start_step=steps // 2)],
        "tome:ratio=0.25,merge_mlp=True,prop_attn=True": [T(ratio=0.25, merge_mlp=True, prop_attn=True)],
        "toca (defaults: interval=3,recompute=0.3,warmup=2)": [C()],
        "toca:interval=2,recompute=0.3": [C(interval=2, recompute=0.3)],
        "toca:interval=3,recompute=0.5": [C(interval=3, recompute=0.5)],
        "toca:interval=4,recompute=0.2": [C(interval=4, recompute=0.2)],
        "interval-cache:interval=2": [I(interval=2)],
        "interval-cache:interval=3": [I(interval=3)],
    }
    if rates_dir is not None:
        for f in ("0.7", "0.5"):
            path = rates_dir / f"rates_{f}.json"
            if not path.exists():
                print(f"(no {path}: diffrate at FLOPs {f} left out)")
                continue
            data = json.loads(path.read_text())
            methods[f"diffrate:rates={path.name}"] = [D(rates=str(path))]
            keep = uniform_keep_for(data["flops_ratio"], model)
            methods[f"diffrate uniform keep={keep:.3f} (FLOPs {data['flops_ratio']:.2f})"] = [
                D(rates=";".join([f"{keep:.4f}"] * len(data["rates"])),
                  sublayers=";".join(data.get("sublayers") or ("attention", "mlp")))]
    return methods


def flops_of(stats: dict, configs: list) -> float:
    """FLOPs ratio of the transformer blocks from a handle's stats (token methods: sub-layer FLOPs;
    interval-cache: computed/total blocks)."""
    ratio = 1.0
    for cfg in configs:
        s = stats[cfg.cli_name]["total"]
        if "flops_ratio" in s:
            ratio *= s["flops_ratio"]
        elif "blocks_computed" in s:
            ratio *= s["blocks_computed"] / max(1, s["blocks_computed"] + s["blocks_reused"])
    return ratio


def run_quality(num_images: int, steps_list: list[int], rates_dir: Path | None, only: str | None) -> dict:
    from accel.models import fd_digits, load_digits_classifier, load_reference_stats

    pipe = accel.default_pipeline()
    classifier, reference = load_digits_classifier(), load_reference_stats()
    out = {}
    for steps in steps_list:
        wl = make_workload(pipe, num_images, seed=0, steps=steps, batch_size=num_images)
        idx = list(range(num_images))
        t0 = time.perf_counter()
        base = generate(pipe, wl, idx)
        base_s = time.perf_counter() - t0
        rows = [{"method": "baseline", "fd_digits": fd_digits(base, classifier, reference), "psnr": None,
                 "ssim": 1.0, "wall_s": base_s, "speedup": 1.0, "flops_ratio": 1.0}]
        print(f"[{steps} steps] baseline FD-digits {rows[0]['fd_digits']:.1f}  {base_s:.1f}s", flush=True)
        for name, configs in quality_methods(steps, rates_dir, pipe.transformer).items():
            if only and not any(o in name for o in only.split("|")):
                continue
            handle = accel.apply(pipe, *configs)
            try:
                t0 = time.perf_counter()
                imgs = generate(pipe, wl, idx)
                wall = time.perf_counter() - t0
                stats = handle.stats()
            finally:
                handle.remove()
            row = {"method": name, "fd_digits": fd_digits(imgs, classifier, reference), "psnr": psnr(imgs, base),
                   "ssim": ssim(imgs, base), "wall_s": wall, "speedup": base_s / wall,
                   "flops_ratio": flops_of(stats, configs)}
            rows.append(row)
            print(f"[{steps} steps] {name:60s} FD {row['fd_digits']:8.1f}  PSNR {row['psnr']:5.1f}  "
                  f"SSIM {row['ssim']:.3f}  x{row['speedup']:.2f}  FLOPs {row['flops_ratio']:.3f}", flush=True)
        out[str(steps)] = rows
    return {"steps": out, "num_images": num_images,
            "note": "wall speedup = one generation pass vs the baseline's pass in the same run (noisy on a shared "
                    "machine); FLOPs ratio = transformer-block FLOPs (token methods: attention/cross-attention/MLP "
                    "sub-layers; interval-cache: computed/total blocks)"}


def run_timing(images: int, steps: int, rates_dir: Path | None, only: str | None, repeats: int) -> dict:
    """Wall speedup of each quality method on the default model: baseline and method generations of
    `images` images interleaved (load drifts hit both), medians; the FLOPs ratio alongside."""
    pipe = accel.default_pipeline()
    wl = make_workload(pipe, images, seed=0, steps=steps, batch_size=images)
    idx = list(range(images))
    rows = []
    for name, configs in quality_methods(steps, rates_dir, pipe.transformer).items():
        if only and not any(o in name for o in only.split("|")):
            continue
        last: dict = {}

        def base():
            generate(pipe, wl, idx)

        def method(configs=configs, last=last):
            handle = accel.apply(pipe, *configs)
            try:
                generate(pipe, wl, idx)
            finally:
                last["stats"] = handle.stats()
                handle.remove()

        t = interleaved_medians({"baseline": base, name: method}, repeats=repeats, warmup=0)
        b, a = median(t["baseline"]), median(t[name])
        row = {"method": name, "baseline_s": b, "method_s": a, "speedup": b / a,
               "flops_ratio": flops_of(last["stats"], configs), "baseline_times": t["baseline"],
               "method_times": t[name]}
        rows.append(row)
        print(f"[timing {steps} steps, {images} images] {name:60s} x{b / a:.2f}  FLOPs {row['flops_ratio']:.3f}",
              flush=True)
    return {"rows": rows, "images": images, "steps": steps, "repeats": repeats}


def plot_quality(quality: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = list(quality["steps"])
    fig, axes = plt.subplots(len(steps), 2, figsize=(11, 4 * len(steps)), squeeze=False)
    for row, s in zip(axes, steps):
        groups: dict[str, list] = {}
        for r in quality["steps"][s]:
            name = r["method"].split(":")[0].split(" ")[0]
            groups.setdefault(name + (" uniform" if "uniform" in r["method"] else ""), []).append(r)
        colors = {g: f"C{i}" for i, g in enumerate(sorted(groups))}
        for ax, key, label in ((row[0], "fd_digits", "FD-digits (lower is better)"),
                               (row[1], "psnr", "PSNR to baseline, dB")):
            for g, rs in sorted(groups.items()):
                pts = sorted((r["flops_ratio"], r[key]) for r in rs if r[key] is not None)
                if pts:
                    ax.plot(*zip(*pts), "o", label=g, color=colors[g])
            ax.set_xlabel("FLOPs ratio of the transformer blocks")
            ax.set_ylabel(label)
            ax.set_title(f"{s} steps")
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--part", choices=("speed", "quality", "timing", "plot", "all"), default="all",
                   help="timing: interleaved wall time of the quality methods on a small batch")
    p.add_argument("--timing-images", type=int, default=2, help="timing: images per timed generation")
    p.add_argument("--num-images", type=int, default=40)
    p.add_argument("--steps", default="20,50", help="comma list of step counts for the quality part")
    p.add_argument("--rates-dir", default=None, help="folder with rates_0.7.json / rates_0.5.json from accel diffrate")
    p.add_argument("--only", default=None, help="quality: run only methods whose name contains one of A|B|...")
    p.add_argument("--repeats", type=int, default=3, help="speed: timed rounds per method")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=str(RESULTS / "tokens.json"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    out_path = Path(args.out)
    doc = json.loads(out_path.read_text()) if out_path.exists() else {}
    doc["machine"] = machine()
    if args.part in ("speed", "all"):
        doc["speed"] = run_speed(args.repeats)
        write_json(out_path, doc)
    if args.part in ("quality", "all"):
        steps = [int(s) for s in args.steps.split(",") if s]
        quality = run_quality(args.num_images, steps, Path(args.rates_dir) if args.rates_dir else None, args.only)
        old = doc.get("quality")
        if args.only and old and old.get("num_images") == args.num_images:
            # a partial re-run replaces its own rows (and the baseline it was paired with) in place
            for s, rows in quality["steps"].items():
                new_names = {x["method"] for x in rows}  # includes "baseline"
                kept = [r for r in old["steps"].get(s, []) if r["method"] not in new_names]
                quality["steps"][s] = [rows[0], *kept, *rows[1:]]
            quality["partial_reruns"] = [*old.get("partial_reruns", []), args.only]
        doc["quality"] = quality
        write_json(out_path, doc)
        plot_quality(doc["quality"], out_path.with_suffix(".png"))
    if args.part == "plot":
        plot_quality(doc["quality"], out_path.with_suffix(".png"))
    if args.part == "timing":
        doc["timing"] = run_timing(args.timing_images, int(args.steps.split(",")[0]),
                                   Path(args.rates_dir) if args.rates_dir else None, args.only, args.repeats)
        write_json(out_path, doc)
    print(f"wrote {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
