"""Block importance for depth pruning: calibration calls, block bypass, LAPTOP-Diff and baseline scores.

A *calibration set* is a list of transformer calls (noisy latent, timestep, condition)
recorded while the pipeline itself samples: its own scheduler, its own conditioning
(class labels or prompt embeddings) and its own CFG batching, so the scores measure
the inputs the model really sees.

Blocks are removed virtually with one hook per block (`BlockProbe`, installed through
`HookSet`, removed exactly): a bypassed block returns its input unchanged in its own
return format, like a skipped block of the caches' `_runs` machinery, so no model is
copied and every subset of blocks can be evaluated on the same instance.

Scores are importances: higher means more important (keep).
"""

from __future__ import annotations

import contextlib
import random as _random
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Sequence

import torch
from diffusers.hooks import ModelHook

from ..families import BlockRef, blocks_of
from ..hooks import HookSet
from ..pipelines.calls import record_calls

PROBE_HOOK = "accel.pruning.probe"

Call = tuple[tuple, dict]  # one transformer call: (args, kwargs)


# ----------------------------------------------------------------------------- calibration
@dataclass
class Calibration:
    """Recorded transformer calls and how they were drawn (kept in pruning.json)."""

    calls: list[Call]
    settings: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.calls)


def collect_calibration(pipe: Any, inputs: Sequence[dict], max_calls: int | None = None,
                        settings: dict[str, Any] | None = None) -> Calibration:
    """Calibration calls drawn from the pipeline's own sampling of `inputs`.

    All steps of all calls are recorded; when there are more than `max_calls`, an evenly
    strided subset (covering early, middle and late timesteps) is kept.
    """
    calls = record_calls(pipe, inputs)
    if not calls:
        raise ValueError("the pipeline made no transformer call: nothing to calibrate on")
    if max_calls is not None and len(calls) > max_calls:
        idx = torch.linspace(0, len(calls) - 1, max_calls).round().long().unique().tolist()
        calls = [calls[i] for i in idx]
    info = dict(settings or {})
    info.update(num_calls=len(calls), num_pipeline_calls=len(inputs))
    return Calibration(calls, info)


# ----------------------------------------------------------------------------- block probe
class _ProbeHook(ModelHook):
    def __init__(self, probe: "BlockProbe", ref: BlockRef):
        super().__init__()
        self.probe = probe
        self.ref = ref

    def new_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        probe, io = self.probe, self.ref.io
        if self.ref.global_index in probe.bypassed:
            return io.pack(*io.inputs(args, kwargs))  # pass-through: the block is an identity
        out = self.fn_ref.original_forward(*args, **kwargs)
        if probe.observer is not None:
            probe.observer(self.ref.global_index, io.inputs(args, kwargs), io.outputs(out))
        return out


class BlockProbe:
    """One hook per block: bypass any set of blocks, or observe block inputs/outputs.

    Use as a context manager; `remove()` restores the model exactly.
    """

    def __init__(self, model: torch.nn.Module):
        self.model = model
        self.blocks = blocks_of(model)
        self.bypassed: frozenset[int] = frozenset()
        self.observer: Callable[[int, tuple, tuple], None] | None = None
        self._hooks = HookSet(model)
        try:
            for ref in self.blocks:
                self._hooks.add(ref.module, _ProbeHook(self, ref), f"{PROBE_HOOK}.{id(self)}")  # probes may nest
        except BaseException:
            self._hooks.remove()
            raise

    @contextlib.contextmanager
    def bypassing(self, indices: Iterable[int]) -> Iterator[None]:
        old, self.bypassed = self.bypassed, frozenset(indices)
        try:
            yield
        finally:
            self.bypassed = old

    def remove(self) -> None:
        self._hooks.remove()

    def __enter__(self) -> "BlockProbe":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.remove()


def prediction(model: torch.nn.Module, call: Call) -> torch.Tensor:
    """The model's noise (or velocity) prediction for one recorded call.

    For DiT's learned-sigma output (out_channels == 2 * in_channels) only the first
    in_channels channels, the prediction the sampler uses, are returned.
    """
    args, kwargs = call
    out = model(*args, **kwargs)
    out = out[0] if isinstance(out, (tuple, list)) else getattr(out, "sample", out)
    cfg = model.config
    cin, cout = getattr(cfg, "in_channels", None), getattr(cfg, "out_channels", None)
    if out.ndim == 4 and cin and cout == 2 * cin:
        out = out[:, :cin]
    return out


def _mse(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).pow(2).mean())


# ----------------------------------------------------------------------------- scores
@torch.no_grad()
def laptop_scores(model: torch.nn.Module, calibration: Calibration) -> list[float]:
    """LAPTOP-Diff one-shot importance s_i = E‖ε_{−i} − ε‖² (per-element mean) over the calibration calls.

    ε_{−i} is the model's prediction with only block i bypassed. A block that is an
    identity function scores exactly 0.
    """
    with BlockProbe(model) as probe:
        n = len(probe.blocks)
        total = [0.0] * n
        for call in calibration.calls:
            base = prediction(model, call)
            for i in range(n):
                with probe.bypassing([i]):
                    total[i] += _mse(prediction(model, call), base)
    return [s / len(calibration) for s in total]


@torch.no_grad()
def cosine_scores(model: torch.nn.Module, calibration: Calibration) -> list[float]:
    """ShortGPT block influence BI_i = 1 − E cos(h_in, h_out) over image tokens (higher = more important)."""
    sums: dict[int, float] = {}
    counts: dict[int, int] = {}

    def observe(i: int, inputs: tuple, outputs: tuple) -> None:
        h_in, h_out = inputs[0], outputs[0]
        cos = torch.nn.functional.cosine_similarity(h_in.double().flatten(0, -2), h_out.double().flatten(0, -2), dim=-1)
        sums[i] = sums.get(i, 0.0) + float((1 - cos).sum())
        counts[i] = counts.get(i, 0) + cos.numel()

    with BlockProbe(model) as probe:
        probe.observer = observe
        for call in calibration.calls:
            prediction(model, call)
    return [sums[i] / counts[i] for i in range(len(probe.blocks))]


def first_scores(n: int) -> list[float]:
    """Prefer the first blocks (first-k keeps blocks 0..k-1)."""
    return [float(n - i) for i in range(n)]


def last_scores(n: int) -> list[float]:
    """Prefer the last blocks (last-k keeps blocks n-k..n-1)."""
    return [float(i + 1) for i in range(n)]


def random_scores(n: int, seed: int) -> list[float]:
    """A seeded random ranking (random-k)."""
    rng = _random.Random(seed)
    return [rng.random() for _ in range(n)]


class MaskEvaluator:
    """Calibration output error of keep-masks: E‖ε_mask − ε‖² with the removed blocks bypassed.

    The full model's predictions are computed once; each evaluation runs the model once
    per calibration call with the hooks set, so `evaluations` counts the search budget.
    """

    def __init__(self, model: torch.nn.Module, calibration: Calibration):
        self.model = model
        self.calibration = calibration
        self.probe = BlockProbe(model)
        self.num_blocks = len(self.probe.blocks)
        self.evaluations = 0
        try:
            with torch.no_grad():
                self.reference = [prediction(model, c) for c in calibration.calls]
        except BaseException:
            self.probe.remove()
            raise

    @torch.no_grad()
    def error(self, keep: Iterable[int], calls: Sequence[int] | None = None) -> float:
        """Mean output error of keeping only `keep` (over all calls, or the call indices given)."""
        keep = set(keep)
        removed = [i for i in range(self.num_blocks) if i not in keep]
        idx = range(len(self.calibration)) if calls is None else calls
        self.evaluations += 1
        total = 0.0
        with self.probe.bypassing(removed):
            for j in idx:
                total += _mse(prediction(self.model, self.calibration.calls[j]), self.reference[j])
        return total / len(idx)

    def close(self) -> None:
        self.probe.remove()

    def __enter__(self) -> "MaskEvaluator":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
