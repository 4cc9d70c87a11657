"""Evaluate one candidate on the first ``n`` images of a paired workload (speed, PSNR, FD).

The baseline (the original model, nothing applied) is generated once per image and kept;
a candidate generates the same seeds and conditions and is compared image for image with
`accel bench`'s own pieces (accel/eval/paired.py): ``image_rows`` for MSE and features, and
``time_methods`` for speed: interleaved repeats of the baseline and the candidate on the first
batch (with the default 2 repeats: baseline, candidate, candidate, baseline, so a slow drift of
the machine's load cancels), the ratio of their medians, and the block evaluations counted in
those timed calls. Every overhead (hooks, merging, forecasting) counts. PSNR is of the pooled MSE
to the baseline images; FD (when an extractor is given and ``n`` is enough images for its
covariance) is to the reference statistics, or to the baseline's features, and ``fd_pct`` its
change against the baseline's FD on the same images.

Results are cached in a JSON file keyed by candidate and image count, under a key of the
workload (model, sampler, seeds), so an interrupted `accel tune` resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any, Callable

import torch

from ..eval import fid as fidmod
from ..eval.fidelity import psnr_from_mse
from ..eval.methods import BASELINE, MethodSpec
from ..eval.paired import features_of, image_rows, time_methods
from ..eval.timing import speedup
from ..eval.workload import Workload, generate
from ..outputs import cache_dir
from ..readers import MiB, Field, ReadError, check_fields, read_json
from .space import Candidate


MAX_CACHE_BYTES = 64 * MiB
_CACHE_FIELDS = {"workload": Field(str, required=True), "results": Field(dict, required=True)}
_NUM = (float, type(None))
# a cache entry as `Evaluator.evaluate` writes it; the ranges hold every real measurement and refuse edited ones
ENTRY_FIELDS = {
    "key": Field(str, required=True), "n": Field(int, required=True, low=1), "candidate": Field(dict, required=True),
    "speedup": Field(_NUM, required=True, low=1e-6, high=1e4), "psnr": Field(_NUM, required=True, low=-100, high=400),
    "ssim": Field(float, required=True, low=-1, high=1), "fd": Field(_NUM, required=True, low=0, high=1e9),
    "fd_pct": Field(_NUM, required=True, low=-100, high=1e9), "block_ratio": Field(_NUM, required=True, low=0, high=100),
    "seconds": Field(float, required=True, low=0, high=1e7),
    "baseline_seconds": Field(float, required=True, low=0, high=1e7),
}


def cache_root() -> Path:
    """`$ACCEL_CACHE_DIR/tune` (default `~/.cache/accel/tune`)."""
    return cache_dir("tune")


def timing_note(batch_size: int, threads: int, repeats: int = 2) -> str:
    """How `accel tune` timed its candidates (a note of tune.json)."""
    return (f"speeds: as in `accel bench`, {repeats} interleaved repeats of one batch of {batch_size} images, "
            f"the baseline's and each candidate's, ratio of the medians, on {threads} thread(s)")


class Evaluator:
    """Paired evaluation of candidates against the original pipeline's images.

    pipe: the original pipeline. load_model: folder -> pipeline with the same scheduler (for
    pruned candidates). workload: seeds/conditions/steps (its batch size is the timing unit).
    extractor / reference_stats: FD as in `accel bench` (None: no FD). workload_key: text
    naming model + sampler + seeds, keys the on-disk cache (None: no cache). repeats: timed calls
    per side (`accel bench --repeats`; warm-up is the candidate's own image generation before them).
    notify: called with each notice (also kept in ``notices``) when a cache file or entry is unusable:
    corrupt, or edited to values no evaluation gives; such results are recomputed, never trusted.
    """

    def __init__(self, pipe: Any, workload: Workload, registry: dict, *, apply: Callable | None = None,
                 load_model: Callable[[str], Any] | None = None, extractor: Any = None, reference_stats=None,
                 device: str | torch.device = "cpu", workload_key: str | None = None,
                 cache_path: Path | None = None, repeats: int = 2,
                 notify: Callable[[str], None] | None = None) -> None:
        import accel

        self.pipe, self.workload, self.registry = pipe, workload, registry
        self.apply = apply or accel.apply
        self.load_model = load_model
        self.extractor, self.reference_stats, self.device = extractor, reference_stats, device
        self._variants: dict[str, Any] = {}
        self._base: dict[int, torch.Tensor] = {}  # image index -> baseline image
        self._base_feats: dict[int, torch.Tensor] = {}
        self._done: set[tuple[int, ...]] = set()  # baseline batches generated
        self.repeats = repeats
        self.evaluations = 0  # candidate evaluations run here (cache hits excluded)
        self.notices: list[str] = []  # cache files / entries that could not be used (recomputed instead)
        self._notify = notify
        self._cache: dict[str, dict] = {}
        self._cache_path = None
        if workload_key is not None:
            digest = hashlib.sha256(workload_key.encode()).hexdigest()[:16]
            self._cache_path = cache_path or cache_root() / f"{digest}.json"
            if self._cache_path.exists():
                try:
                    doc = read_json(self._cache_path, what="tune cache", max_bytes=MAX_CACHE_BYTES, fields=_CACHE_FIELDS)
                except ReadError as exc:
                    self._notice(f"{exc}; its results are recomputed")
                else:
                    if doc.get("workload") == workload_key:
                        self._cache = doc.get("results", {})
            self._workload_key = workload_key

    def _notice(self, text: str) -> None:
        self.notices.append(text)
        if self._notify is not None:
            self._notify(text)

    # -- generation -----------------------------------------------------------------------
    def _batches(self, n: int) -> list[list[int]]:
        return self.workload.batches(limit=n)

    def baseline(self, n: int) -> None:
        """Generate the baseline's first ``n`` images where not done yet (the first call also warms up)."""
        if not self._done:
            generate(self.pipe, self.workload, self._batches(n)[0])
        for idx in self._batches(n):
            key = tuple(idx)
            if key in self._done:
                continue
            imgs = generate(self.pipe, self.workload, idx)
            self._done.add(key)
            self._base.update(zip(idx, imgs))
            if self.extractor is not None:
                self._base_feats.update(zip(idx, features_of(self.extractor, imgs, self.device)))

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
        """The cached result of `c` on `n` images, if there is one that passes the entry schema (else a notice,
        the entry dropped: the caller recomputes it)."""
        key = f"{c.key}|{n}"
        hit = self._cache.get(key)
        if hit is None:
            return None
        where = f"tune cache {self._cache_path}: entry {key[:80]!r}"
        try:
            check_fields(hit, ENTRY_FIELDS, where=where)
            if hit["key"] != c.key or hit["n"] != n:
                raise ReadError(where, f"is of {str(hit['key'])[:80]!r} on {hit['n']} images")
        except ReadError as exc:
            del self._cache[key]
            self._notice(f"{exc}; recomputing it")
            return None
        return hit

    def evaluate(self, c: Candidate, n: int) -> dict:
        """``{"key", "n", "candidate", "speedup", "psnr", "ssim", "fd", "fd_pct", "block_ratio", "seconds",
        "baseline_seconds"}`` of ``c`` on images 0..n-1 (from the cache when this workload evaluated it before)."""
        hit = self.cached(c, n)
        if hit is not None:
            return hit
        self.baseline(n)
        pipe = self._pipe_for(c)
        configs = c.configs(self.registry)
        for cfg in configs:  # one-off work (e.g. schedule-cache's calibration) on seeds of its own
            cfg.prepare(pipe, lambda: generate(pipe, self._calibration_workload(), [0, 1]))
        handle = self.apply(pipe, *configs)
        rows = []
        extractor = self.extractor if self.fd_ok(n) else None
        try:
            for idx in self._batches(n):
                imgs = generate(pipe, self.workload, idx)
                ref = torch.stack([self._base[i] for i in idx])
                rows += image_rows(imgs, ref, idx, extractor=extractor, device=self.device)
        finally:
            handle.remove()
        base, cand = self._timed(c, pipe, configs, self._batches(n)[0])
        self.evaluations += 1
        psnr = psnr_from_mse(torch.tensor([r.mse for r in rows], dtype=torch.float64))
        fd = fd_pct = None
        if extractor is not None:
            fd = self._fd(torch.stack([r.features for r in rows]),
                          torch.stack([self._base_feats[i] for i in range(n)]))
            base_fd = self.base_fd(n)
            fd_pct = 100.0 * (fd / base_fd - 1.0) if base_fd else None
        secs, base_secs = cand.timing.median, base.timing.median
        res = {
            "key": c.key, "n": n, "candidate": c.as_record(),
            "speedup": speedup(base.timing, cand.timing)[0] if secs > 0 else None,
            "psnr": psnr if math.isfinite(psnr) else None,
            "ssim": sum(r.ssim for r in rows) / len(rows),
            "fd": fd, "fd_pct": fd_pct,
            "block_ratio": cand.block_evals / base.block_evals if cand.block_evals and base.block_evals else None,
            "seconds": secs, "baseline_seconds": base_secs,  # medians per call on the first batch
        }
        self._cache[f"{c.key}|{n}"] = res
        self._save()
        return res

    def _timed(self, c: Candidate, pipe: Any, configs: list, batch: list[int]) -> tuple[Any, Any]:
        """(baseline, candidate) `TimedMethod`s of `accel bench`'s interleaved timing on one batch."""
        base, cand = MethodSpec(BASELINE), MethodSpec("candidate", configs=list(configs))
        timed = time_methods(self.pipe, [base, cand], self.workload, batch,
                             lambda p, spec: self.apply(p, *spec.configs), repeats=self.repeats, warmup=0,
                             device=self.device, progress=False, pipe_of=lambda spec: pipe if spec is cand else self.pipe)
        return timed[base.label], timed[cand.label]

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
