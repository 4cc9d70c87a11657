#!/usr/bin/env python
"""Quality of the embedded flow model (``--model flow``), with FD-digits and class agreement.

    python benchmarks/flow_model_quality.py --out accel/models/weights_flow/quality.json \\
        --grid accel/models/weights_flow/samples.png

Image i asks for digit i % 10 with prompt template (i + i // 10) % 12 (so every block of 10
is balanced and every template is used) and is seeded ``seed_set * 100000 + i`` through
its own generator (independent of batching). FD-digits: Fréchet distance of the default
model's digit-classifier features to the 400 held-out real digits; class agreement: share
of images the classifier labels with the digit the prompt asked for.

Sections (``--sections``, comma list; all by default):
  default  the default sampler (``FLOW_SAMPLER``) at N, per-template agreement, sample grid;
           the few-step setting (8 steps) at N
  stock    a plain ``pipe(prompt)`` call (256 zero T5 tokens, the stock default) at the default sampler
  spread   FD-digits of 3 seed sets at N
  damage   blocks dropped (1 / 2 / 4 middle blocks) and Gaussian noise added to every weight
           (sigma x each tensor's std), with PSNR to the baseline images
  sweep    guidance x shift at 8 and 28 steps (N = ``--sweep-n``)
  floor    real train vs held-out, uniform noise
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_json  # noqa: E402

from accel.eval.fid import feature_stats, frechet_distance  # noqa: E402
from accel.models import classifier_features, load_digits_classifier, load_reference_stats  # noqa: E402
from accel.models.flow import (  # noqa: E402
    FLOW_SAMPLER,
    PROMPT_TEMPLATES,
    STOCK_MAX_SEQUENCE_LENGTH,
    digit_prompt,
    load_flow_pipeline,
    make_flow_scheduler,
)

SECTIONS = ("default", "stock", "spread", "damage", "sweep", "floor")


def template_of(i: int) -> int:
    return (i + i // 10) % len(PROMPT_TEMPLATES)


def generate(pipe, n: int, seed_set: int, steps: int, guidance: float, shift: float, batch: int,
             max_sequence_length: int = FLOW_SAMPLER["max_sequence_length"]) -> np.ndarray:
    """(n, 32, 32, 1) images in [0, 1]: digit i % 10, template template_of(i), seed seed_set*100000+i."""
    pipe.scheduler = make_flow_scheduler(shift)
    out = []
    for start in range(0, n, batch):
        idx = range(start, min(n, start + batch))
        prompts = [digit_prompt(i % 10, template_of(i)) for i in idx]
        gens = [torch.Generator().manual_seed(seed_set * 100000 + i) for i in idx]
        with torch.inference_mode():
            res = pipe(prompts, guidance_scale=guidance, generator=gens, num_inference_steps=steps,
                       max_sequence_length=max_sequence_length, height=32, width=32, output_type="np")
        out.append(res.images)
    return np.concatenate(out)


class Scorer:
    def __init__(self):
        self.clf = load_digits_classifier()
        self.ref = load_reference_stats()

    def feats(self, images):
        return classifier_features(self.clf, images)

    def score(self, images, per_template: bool = False) -> dict:
        feats, preds = self.feats(images)
        labels = torch.arange(len(images)) % 10
        ok = preds == labels
        r = {"n": len(images), "fd_digits": frechet_distance(*feature_stats(feats), *self.ref),
             "class_agreement": float(ok.float().mean())}
        if per_template:
            by = {}
            for i in range(len(images)):
                by.setdefault(PROMPT_TEMPLATES[template_of(i)], []).append(bool(ok[i]))
            r["agreement_by_template"] = {t: {"n": len(v), "agreement": sum(v) / len(v)} for t, v in by.items()}
        return r


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * math.log10(1.0 / mse)


def save_grid(images: np.ndarray, path: Path, per_class: int = 10):
    from PIL import Image

    n = len(images)
    rows = []
    for c in range(10):
        idx = [i for i in range(c, n, 10)][:per_class]
        rows.append(np.concatenate([images[i, :, :, 0] for i in idx], axis=1))
    grid = np.concatenate(rows, axis=0)
    Image.fromarray((grid * 255).round().astype(np.uint8)).resize(
        (grid.shape[1] * 3, grid.shape[0] * 3), Image.NEAREST
    ).save(path)


def fmt(x, nd=2):
    return "inf" if isinstance(x, float) and math.isinf(x) else f"{x:.{nd}f}"


def merge(paths: list[Path], out: Path | None) -> int:
    """One quality.json from runs of disjoint sections (run side by side to share a busy machine)."""
    import json

    doc: dict = {"runs": [], "table_markdown": ""}
    for path in paths:
        part = json.loads(path.read_text())
        doc["runs"].append({"file": path.name, "config": part.pop("config"), "meta": part.pop("meta", None),
                            "seconds_total": part.pop("seconds_total", None)})
        doc["table_markdown"] += part.pop("table_markdown", "") + "\n\n"
        part.pop("notes", None)
        clash = set(part) & set(doc)
        if clash:
            raise SystemExit(f"--merge: {path} repeats sections {sorted(clash)}")
        doc.update(part)
    if out:
        write_json(out, doc)
    print(doc["table_markdown"])
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=100, help="images per measurement (multiple of 10)")
    p.add_argument("--sweep-n", type=int, default=50)
    p.add_argument("--damage-n", type=int, default=None, help="images per damage case (default --n)")
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--steps", type=int, default=FLOW_SAMPLER["steps"])
    p.add_argument("--guidance", type=float, default=FLOW_SAMPLER["guidance_scale"])
    p.add_argument("--shift", type=float, default=FLOW_SAMPLER["shift"])
    p.add_argument("--few-steps", type=int, default=8)
    p.add_argument("--sweep-guidance", default="2,3.5,5,7")
    p.add_argument("--sweep-shift", default="1,3")
    p.add_argument("--sweep-steps", default="8,28")
    p.add_argument("--sections", default=",".join(SECTIONS))
    p.add_argument("--weights-dir", default=None)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--grid", type=Path, default=None, help="PNG grid of default-sampler samples (10 per digit)")
    p.add_argument("--merge", type=Path, nargs="+", default=None, metavar="JSON",
                   help="only merge the results of runs of disjoint --sections into --out")
    args = p.parse_args(argv)
    if args.merge:
        return merge(args.merge, args.out)
    sections = [s for s in args.sections.split(",") if s]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        p.error(f"unknown sections {sorted(unknown)}; choose from {SECTIONS}")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    pipe = load_flow_pipeline(weights_dir=args.weights_dir)
    sc = Scorer()
    n, bs = args.n, args.batch
    res: dict = {"config": {"n": n, "sweep_n": args.sweep_n, "batch": bs, "steps": args.steps,
                            "guidance_scale": args.guidance, "shift": args.shift, "few_steps": args.few_steps,
                            "sections": sections, "torch_threads": torch.get_num_threads(),
                            "prompt": "digit i % 10, template (i + i // 10) % 12, seed seed_set*100000+i"}}
    lines: list[str] = []

    def log(s=""):
        print(s, flush=True)
        lines.append(s)

    def dump():  # after every section, so a partial run still leaves its numbers
        res["seconds_total"] = round(time.perf_counter() - t_start, 1)
        res["table_markdown"] = "\n".join(lines)
        if args.out:
            write_json(args.out, res)

    g, sh, st = args.guidance, args.shift, args.steps
    base = None
    if "default" in sections or "damage" in sections:
        t0 = time.perf_counter()
        base = generate(pipe, n, 0, st, g, sh, bs)
        base_s = round(time.perf_counter() - t0, 1)
    if "default" in sections:
        r = sc.score(base, per_template=True) | {"seconds": base_s}
        t0 = time.perf_counter()
        few = sc.score(generate(pipe, n, 0, args.few_steps, g, sh, bs)) | {
            "steps": args.few_steps, "seconds": round(time.perf_counter() - t0, 1)}
        res["default"], res["few_step"] = r, few
        log(f"default sampler (FlowMatchEuler, shift {sh:g}, guidance {g:g}), N={n}, seed set 0")
        log("| steps | FD-digits | class agreement | seconds |")
        log("|---|---|---|---|")
        log(f"| {st} (default) | {fmt(r['fd_digits'])} | {r['class_agreement']:.3f} | {r['seconds']} |")
        log(f"| {args.few_steps} (few-step) | {fmt(few['fd_digits'])} | {few['class_agreement']:.3f} | {few['seconds']} |")
        log()
        log("| template | n | agreement |")
        log("|---|---|---|")
        for t, v in r["agreement_by_template"].items():
            log(f"| {t} | {v['n']} | {v['agreement']:.2f} |")
        if args.grid:
            save_grid(base, args.grid)
        dump()

    if "stock" in sections:
        t0 = time.perf_counter()
        stock = generate(pipe, n, 0, st, g, sh, bs, max_sequence_length=STOCK_MAX_SEQUENCE_LENGTH)
        r = sc.score(stock) | {"seconds": round(time.perf_counter() - t0, 1)}
        if base is not None:
            r["psnr_to_default_call"] = psnr(stock, base)
        res["stock_call"] = r
        log()
        log(f"stock call (max_sequence_length {STOCK_MAX_SEQUENCE_LENGTH}: 256 zero T5 tokens), N={n}: FD-digits "
            f"{fmt(r['fd_digits'])}, agreement {r['class_agreement']:.3f}, {r['seconds']} s"
            + (f", PSNR to the default call {fmt(r['psnr_to_default_call'], 1)} dB" if base is not None else ""))
        dump()

    if "spread" in sections:
        rs = [sc.score(base) if (k == 0 and base is not None) else sc.score(generate(pipe, n, k, st, g, sh, bs))
              for k in range(3)]
        fds = [r["fd_digits"] for r in rs]
        m = statistics.mean(fds)
        res["seed_spread"] = {"n": n, "fd_digits": fds, "mean": m, "rel_spread": (max(fds) - min(fds)) / m,
                              "class_agreement": [r["class_agreement"] for r in rs]}
        log()
        log(f"seed spread (default sampler, N={n})")
        log("| FD set 0 | set 1 | set 2 | mean | (max-min)/mean | agreement per set |")
        log("|---|---|---|---|---|---|")
        log(" | ".join(["", *(fmt(v) for v in fds), fmt(m), f"{100 * (max(fds) - min(fds)) / m:.1f}%",
                        ", ".join(f"{r['class_agreement']:.2f}" for r in rs), ""]).strip())
        dump()

    if "damage" in sections:
        dn = args.damage_n or n
        ref = base[:dn]
        dmg = [sc.score(ref) | {"case": "baseline", "psnr_to_baseline": float("inf")}]
        res["damage"] = dmg  # filled case by case, so a partial run keeps what it measured
        tr = pipe.transformer
        blocks = tr.transformer_blocks
        mid = len(blocks) // 2
        for k in (1, 2, 4):
            drop = set(range(mid - k // 2, mid - k // 2 + k))
            try:
                tr.transformer_blocks = nn.ModuleList([b for i, b in enumerate(blocks) if i not in drop])
                imgs = generate(pipe, dn, 0, st, g, sh, bs)
            finally:
                tr.transformer_blocks = blocks
            dmg.append(sc.score(imgs) | {"case": f"{k} block(s) dropped {sorted(drop)}", "psnr_to_baseline": psnr(imgs, ref)})
            dump()
        saved = {k: v.clone() for k, v in tr.state_dict().items()}
        for sigma in (0.05, 0.1, 0.2):
            gen = torch.Generator().manual_seed(1)
            with torch.no_grad():
                for prm in tr.parameters():
                    if prm.numel() > 1:
                        prm.add_(torch.randn(prm.shape, generator=gen) * float(prm.std()) * sigma)
            try:
                imgs = generate(pipe, dn, 0, st, g, sh, bs)
            finally:
                tr.load_state_dict(saved)
            dmg.append(sc.score(imgs) | {"case": f"weight noise {sigma:g} x std", "psnr_to_baseline": psnr(imgs, ref)})
            dump()
        log()
        log(f"damage (default sampler, seed set 0, N={dn}; PSNR to the baseline images)")
        log("| case | FD-digits | class agreement | PSNR (dB) |")
        log("|---|---|---|---|")
        for r in dmg:
            log(f"| {r['case']} | {fmt(r['fd_digits'])} | {r['class_agreement']:.3f} | {fmt(r['psnr_to_baseline'], 1)} |")
        dump()

    if "sweep" in sections:
        sweep = []
        sn = args.sweep_n
        log()
        log(f"guidance x shift sweep (N={sn}, seed set 0)")
        log("| steps | shift | guidance | FD-digits | class agreement |")
        log("|---|---|---|---|---|")
        for steps in [int(v) for v in args.sweep_steps.split(",")]:
            for shift in [float(v) for v in args.sweep_shift.split(",")]:
                for gs in [float(v) for v in args.sweep_guidance.split(",")]:
                    r = sc.score(generate(pipe, sn, 0, steps, gs, shift, bs)) | {
                        "steps": steps, "shift": shift, "guidance_scale": gs}
                    sweep.append(r)
                    log(f"| {steps} | {shift:g} | {gs:g} | {fmt(r['fd_digits'])} | {r['class_agreement']:.3f} |")
                    res["sweep"] = sweep
                    dump()

    if "floor" in sections:
        from accel.models.digits import load_digits_split

        xtr, _ = load_digits_split("train")
        ftr, _ = sc.feats(((xtr + 1) / 2).permute(0, 2, 3, 1).numpy())
        gen = torch.Generator().manual_seed(0)
        sub = torch.randperm(len(ftr), generator=gen)[:n]
        noise = torch.rand((n, 32, 32, 1), generator=gen).numpy()
        res["floor"] = {"train_all_vs_heldout": frechet_distance(*feature_stats(ftr), *sc.ref),
                        f"train_{n}_vs_heldout": frechet_distance(*feature_stats(ftr[sub]), *sc.ref),
                        "uniform_noise": sc.score(noise)["fd_digits"]}
        log()
        log("| reference | FD-digits |")
        log("|---|---|")
        log(f"| real train (all {len(ftr)}) vs held-out — floor | {fmt(res['floor']['train_all_vs_heldout'])} |")
        log(f"| real train ({n} random) vs held-out | {fmt(res['floor'][f'train_{n}_vs_heldout'])} |")
        log(f"| uniform noise ({n}) | {fmt(res['floor']['uniform_noise'])} |")
        dump()

    dump()
    log(f"\ntotal {res['seconds_total']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
