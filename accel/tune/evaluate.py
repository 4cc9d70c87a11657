"""Evaluate one candidate on the first ``n`` images of a paired workload (speed, PSNR, FD).

The baseline (the original model, nothing applied) is generated once per image and kept;
a candidate generates the same seeds and conditions, timed batch by batch, and is compared
image for image. Speed is the baseline's time on the first batch (timed right before and right
after the candidate, so a slow drift of the machine's load cancels) over the candidate's
median time per batch of that size: every overhead (hooks, merging, forecasting) counts. PSNR is of the
pooled MSE to the baseline images; FD (when an extractor is given and ``n`` is enough
images for its covariance) is to the reference statistics, or to the baseline's features,
and ``fd_pct`` its change against the baseline's FD on the same images.

Results are cached in a JSON file keyed by candidate and image count, under a key of the
workload (model, sampler, seeds), so an interrupted `accel tune` resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import torch

from ..eval import fid as fidmod
from ..eval.fidelity import per_image_mse, psnr_from_mse
from ..eval.video import per_sample  # videos: the mean over frames
from ..eval.timing import synchronize
from ..eval.workload import Workload, generate
from .space import Candidate


def cache_root() -> Path:
    """`$ACCEL_CACHE_DIR/tune` (default `~/.cache/accel/tune`)."""
    return Path(os.environ.get("ACCEL_CACHE_DIR") or Path.home() / ".cache" / "accel") / "tune"


class Evaluator:
    """Paired evaluation of candidates against the original pipeline's images.

    pipe: the original pipeline. load_model: folder -> pipeline with the same scheduler (for
    pruned candidates). workload: seeds/conditions/steps (its batch size is the timing unit).
    extractor / reference_stats: FD as in `accel bench` (None: no FD). workload_key: text
    naming model + sampler + seeds, keys the on-disk cache (None: no cache).
    """

    def __init__(self, pipe: Any, workload: Workload, registry: dict, *, apply: Callable | None = None,
                 load_model: Callable[[str], Any] | None = None, extractor: Any = None, reference_stats=None,
                 device: str | torch.device = "cpu", workload_key: str | None = None,
                 cache_path: Path | None = None) -> None:
        import accel

        self.pipe, self.workload, self.registry = pipe, workload, registry
        self.apply = apply or accel.apply
        self.load_model = load_model
        self.extractor, self.reference_stats, self.device = extractor, reference_stats, device
        self._variants: dict[str, Any] = {}
        self._base: dict[int, torch.Tensor] = {}  # image index -> baseline image
        self._base_feats: dict[int, torch.Tensor] = {}
        self._done: set[tuple[int, ...]] = set()  # baseline batches generated
        self._last_base: tuple[tuple[int, ...], float, float] | None = None  # (batch, when, seconds)
        self.evaluations = 0  # candidate evaluations run here (cache hits excluded)
        self.images_generated = 0
        self._cache: dict[str, dict] = {}
        self._cache_path = None
        if workload_key is not None:
            digest = hashlib.sha256(workload_key.encode()).hexdigest()[:16]
            self._cache_path = cache_path or cache_root() / f"{digest}.json"
            if self._cache_path.is_file():
                doc = json.loads(self._cache_path.read_text())
                if doc.get("workload") == workload_key:
                    self._cache = doc.get("results", {})
            self._workload_key = workload_key

    # -- generation -----------------------------------------------------------------------
    def _batches(self, n: int) -> list[list[int]]:
        return self.workload.batches(limit=n)

    def _timed_batch(self, pipe: Any, idx: list[int]) -> tuple[torch.Tensor, float]:
        synchronize(self.device)
        t0 = time.perf_counter()
        imgs = generate(pipe, self.workload, idx)
        synchronize(self.device)
        self.images_generated += len(idx)
        return imgs, time.perf_counter() - t0

    def _features(self, imgs: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            f = self.extractor(imgs.to(self.device))
        return f.detach().to("cpu", torch.float64).reshape(imgs.shape[0], -1)

    def baseline(self, n: int) -> None:
        """Generate the baseline's first ``n`` images where not done yet (the first call also warms up)."""
        if not self._done:
            self._timed_batch(self.pipe, self._batches(n)[0])
        for idx in self._batches(n):
            key = tuple(idx)
            if key in self._done:
                continue
            imgs, _ = self._timed_batch(self.pipe, idx)
            self._done.add(key)
            self._base.update(zip(idx, imgs))
            if self.extractor is not None:
                self._base_feats.update(zip(idx, self._features(imgs)))

    def _pipe_for(self, c: Candidate) -> Any:
        if c.model is None:
            return self.pipe
        if c.model not in self._variants:
            if self.load_model is None:
                raise ValueError(f"candidate {c.key!r} needs model {c.model!r} but no loader was given")
            pipe = self.load_model(c.model)
            if hasattr(pipe, "set_progress_bar_config"):
                pipe.set_progress_bar_config(disable=True)
            self._variants[c.model] = pipe
        return self._variants[c.model]

    def fd_ok(self, n: int) -> bool:
        return self.extractor is not None and n >= fidmod.min_images_for_fd(self.extractor.num_features)

    def _fd(self, feats: torch.Tensor, base_feats: torch.Tensor) -> float:
        if self.reference_stats is not None:
            return float(fidmod.fd_with_check(feats, real_stats=self.reference_stats)[0])
        return float(fidmod.fd_with_check(feats, base_feats)[0])

    def base_fd(self, n: int) -> float | None:
        if not self.fd_ok(n):
            return None
        self.baseline(n)
        feats = torch.stack([self._base_feats[i] for i in range(n)])
        return self._fd(feats, feats)

    # -- evaluation -----------------------------------------------------------------------
    def cached(self, c: Candidate, n: int) -> dict | None:
        return self._cache.get(f"{c.key}|{n}")

    def evaluate(self, c: Candidate, n: int) -> dict:
        """``{"key", "n", "speedup", "psnr", "ssim"?, "fd", "fd_pct", "ideal_speedup", "seconds"}`` of ``c``
        on images 0..n-1 (from the cache when this workload evaluated it before)."""
        hit = self.cached(c, n)
        if hit is not None:
            return hit
        self.baseline(n)
        pipe = self._pipe_for(c)
        configs = c.configs(self.registry)
        for cfg in configs:  # one-off work (e.g. schedule-cache's calibration) on seeds of its own
            cfg.prepare(pipe, lambda: generate(pipe, self._calibration_workload(), [0, 1]))
        batches = self._batches(n)
        first = batches[0]
        # the baseline right before and right after the candidate, so a slow drift of the load cancels;
        # "before" is the previous evaluation's "after" when that is recent
        last = self._last_base
        if last is not None and last[0] == tuple(first) and time.monotonic() - last[1] < 120:
            base_before = last[2]
        else:
            base_before = self._timed_batch(self.pipe, first)[1]
        handle = self.apply(pipe, *configs)
        times: list[float] = []
        mse, feats = [], []
        try:
            for idx in batches:
                imgs, s = self._timed_batch(pipe, idx)
                times.append(s)
                mse.append(per_sample(per_image_mse, imgs, torch.stack([self._base[i] for i in idx])))
                if self.fd_ok(n):
                    feats.append(self._features(imgs))
            total = handle.stats().get("total", {})
        finally:
            handle.remove()
        base_after = self._timed_batch(self.pipe, first)[1]
        self._last_base = (tuple(first), time.monotonic(), base_after)
        full = [t for idx, t in zip(batches, times) if len(idx) == len(first)]
        secs, base_secs = statistics.median(full), (base_before + base_after) / 2
        self.evaluations += 1
        psnr = psnr_from_mse(torch.cat(mse))
        fd = fd_pct = None
        if feats:
            fd = self._fd(torch.cat(feats), torch.stack([self._base_feats[i] for i in range(n)]))
            base_fd = self.base_fd(n)
            fd_pct = 100.0 * (fd / base_fd - 1.0) if base_fd else None
        evals, blocks = total.get("block_evals"), total.get("block_total")
        res = {
            "key": c.key, "n": n, "candidate": c.as_record(),
            "speedup": base_secs / secs if secs > 0 else None,
            "psnr": psnr if math.isfinite(psnr) else None,
            "fd": fd, "fd_pct": fd_pct,
            "block_ratio": (evals / self._base_blocks(n)) if evals and self._base_blocks(n) else None,
            "seconds": secs, "baseline_seconds": base_secs,  # per batch of the first batch's size
        }
        self._cache[f"{c.key}|{n}"] = res
        self._save()
        return res

    def _base_blocks(self, n: int) -> int | None:
        """Block evaluations of the original model on the first n images (depth x steps x calls)."""
        if not hasattr(self, "_blocks_per_call"):
            import accel

            h = accel.apply(self.pipe)
            try:
                generate(self.pipe, self.workload, [0])
                self._blocks_per_call = h.stats()["total"].get("block_evals")
            finally:
                h.remove()
        per = self._blocks_per_call
        return None if per is None else per * len(self._batches(n))

    def _calibration_workload(self) -> Workload:
        """Seeds disjoint from the evaluated ones, for one-off method preparation."""
        w = self.workload
        off = max(w.seeds) + 1 + 10_000
        return Workload([off + i for i in range(2)], w.conditions[:2], w.kind, w.steps, w.guidance, 2,
                        dict(w.extra_kwargs))

    def _save(self) -> None:
        if self._cache_path is None:
            return
        from accel.outputs import write_json_atomic

        write_json_atomic(self._cache_path, {"workload": self._workload_key, "results": self._cache}, indent=None)
