"""`diffrate`: per-block kept-token counts learned by `accel diffrate` (DiffRate adapted to DiTs).

In block b the `rates[b]` fraction of image tokens with the highest importance is
kept; every other token is merged into its most similar kept token (cosine), the
block's merged sub-layers run on the kept tokens and the outputs are unmerged, on
the same merge/unmerge path as `tome`.

Importance = mean attention a token receives, from q·k of a strided sample of
`queries` query tokens (all heads, the block's own q/k projections and q/k norms;
Sana's linear attention uses its relu(q)·relu(k) weights). Chosen over feature norm
because it measures what the rest of the image reads from a token, which is what
removing it changes; with a few dozen queries it costs a small fraction of the
block. DiffRate's separate prune step is folded into the merge: in a DiT every token
needs an output at unmerge, so a pruned token would copy its neighbour's output
anyway; averaging it into that neighbour keeps its content too.

`rates` is a JSON file written by `accel diffrate` (or a list/"0.9;0.8;..." string of
kept fractions, one per block, or one number for every block). All rates 1 is the
identical model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..config import MethodConfig, Target, check_int, register_method
from ..context import StepInfo
from ..families import SUBLAYERS, BlockRef, mergeable, sublayers_of
from ..readers import ReadError, read_json
from ._sublayers import BlockCall, TokenCompressor
from .flops import is_linear_attention
from .merge import Matching, keep_top


def attention_received(attn: torch.nn.Module, tokens: torch.Tensor, queries: int = 32) -> torch.Tensor:
    """(B, N) mean attention weight each token gets from `queries` strided query tokens."""
    b, n, _ = tokens.shape
    stride = max(1, n // max(1, queries))
    with torch.no_grad():
        q = attn.to_q(tokens[:, ::stride])
        k = attn.to_k(tokens)
        heads = int(getattr(attn, "heads", 1) or 1)
        q = _heads(q, getattr(attn, "norm_q", None), heads)  # (B, H, Q, D)
        k = _heads(k, getattr(attn, "norm_k", None), heads)  # (B, H, N, D)
        q, k = q.float(), k.float()
        if is_linear_attention(attn):
            w = torch.relu(q) @ torch.relu(k).transpose(-1, -2)
            w = w / w.sum(dim=-1, keepdim=True).clamp_min(1e-12)
        else:
            w = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)
        return w.mean(dim=(1, 2))


def _heads(x: torch.Tensor, norm: torch.nn.Module | None, heads: int) -> torch.Tensor:
    """(B, N, H*D) -> (B, H, N, D) with the q/k norm applied per head or, where it spans all heads
    (Wan's rms_norm_across_heads), before the split."""
    weight = getattr(norm, "weight", None)
    across = norm is not None and weight is not None and heads > 1 and weight.numel() == x.shape[-1]
    if across:
        x = norm(x)
    x = x.unflatten(-1, (heads, -1)).transpose(1, 2)
    return norm(x) if norm is not None and not across else x


def _rate_list(values: Any, where: str) -> list[float]:
    """`values` as kept fractions, each a finite number in (0, 1]; ValueError naming `where` otherwise."""
    if not isinstance(values, (list, tuple)) or not values:
        raise ValueError(f"rates: {where} must be a non-empty list of kept fractions in (0, 1]")
    out = []
    for i, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not (math.isfinite(v) and 0 < v <= 1):
            raise ValueError(f"rates: {where}[{i}] = {v!r}: a kept fraction must be a finite number in (0, 1]")
        out.append(float(v))
    return out


def _read_rates_file(path: Path) -> dict[str, Any]:
    """The checked content of a rates file: rates, sublayers, and the depth/transformer it was learned for."""
    where = f"rates file {str(path)!r}"
    if path.is_dir():
        raise ValueError(f"rates: {str(path)!r} is a directory, not a rates .json file")
    if not path.is_file():
        raise ValueError(f"rates: no such file {str(path)!r} (write one with `accel diffrate --out {path}`)")
    try:
        data = read_json(path, what="rates file")
    except ReadError as exc:
        raise ValueError(f"rates: {where} is not a JSON rates file written by `accel diffrate` ({exc.problem})") from None
    if not isinstance(data, dict) or "rates" not in data:
        raise ValueError(f"rates: {where} is not a rates file written by `accel diffrate` (no 'rates' list)")
    rates = _rate_list(data["rates"], f"{where}: rates")
    sub = data.get("sublayers")
    if sub is not None:
        if not isinstance(sub, list) or not sub or not all(isinstance(k, str) for k in sub):
            raise ValueError(f"rates: {where}: sublayers must be a non-empty list of names from {SUBLAYERS}")
        unknown = [k for k in sub if k not in SUBLAYERS]
        if unknown:
            raise ValueError(f"rates: {where}: unknown sub-layer {unknown[0]!r}; known: {', '.join(SUBLAYERS)}")
    depth = data.get("depth", len(rates))
    if isinstance(depth, bool) or not isinstance(depth, int) or depth != len(rates):
        raise ValueError(f"rates: {where} says depth {depth!r} but holds {len(rates)} rates (edited or truncated?)")
    transformer = data.get("transformer")
    if transformer is not None and not isinstance(transformer, str):
        raise ValueError(f"rates: {where}: transformer must be a class name, got {type(transformer).__name__}")
    return {"rates": rates, "sublayers": sub, "file": str(path), "transformer": transformer}


def read_rates(spec: Any) -> dict[str, Any]:
    """{"rates": [...], "sublayers": [...] | None} from a rates file path, a sequence or a ';'-string,
    every value checked (finite, in (0, 1]); a file also gives "file" and "transformer" (the class it
    was learned on, or None in files written before it was recorded). ValueError, one line, otherwise."""
    if isinstance(spec, (list, tuple)):
        return {"rates": _rate_list(list(spec), "the list"), "sublayers": None}
    if not isinstance(spec, (str, Path)):
        raise ValueError(f"rates: expected a rates .json file or numbers like '1;0.8;0.5', got {type(spec).__name__}")
    if isinstance(spec, str) and not spec.strip().endswith(".json") and not Path(spec).exists():
        try:
            values = [float(v) for v in spec.replace(";", " ").replace("|", " ").split()]
        except ValueError:
            raise ValueError(f"rates: {spec!r} is neither a rates .json file nor numbers like '1;0.8;0.5'") from None
        return {"rates": _rate_list(values, repr(spec)), "sublayers": None}
    return _read_rates_file(Path(spec))


NUMBER_SUBLAYERS = ("attention",)  # sub-layers merged for rates given as numbers (see DiffRateConfig)


def _sublayer_names(spec: Any) -> tuple[str, ...]:
    """("attention", ...) from "attention;mlp" (also ',' or '|' separated); () for None."""
    if spec is None:
        return ()
    names = tuple(spec.replace(",", " ").replace(";", " ").replace("|", " ").split()) if isinstance(spec, str) else ()
    bad = [k for k in names if k not in SUBLAYERS]
    if not names or bad:
        raise ValueError(f"sublayers: expected names from {', '.join(SUBLAYERS)} like 'attention;mlp', got {spec!r}")
    return names


@register_method("diffrate")
@dataclass(frozen=True)
class DiffRateConfig(MethodConfig):
    """`diffrate`: per-block kept-token rates (learned by `accel diffrate`), merged like `tome`.

    Example::

        import accel

        pipe = accel.default_pipeline()
        # rates="rates.json" (written by `accel diffrate`) for learned rates; here a uniform 0.85
        with accel.apply(pipe, accel.DiffRateConfig("0.85")) as handle:
            images = pipe(class_labels=[3, 7], num_inference_steps=20).images
            print(handle.stats()["diffrate"]["total"])

    rates: a rates .json written by `accel diffrate`, or kept fractions per block ("1;0.8;...");
        each in (0, 1], one per block (global order); a single number is the same rate in every
        block. The default, 0.85 on attention only, is an uncalibrated uniform baseline chosen
        not to destroy images (learn rates for a real speedup with `accel diffrate`): on the
        default model (80 images, 20 DPM++ steps, benchmarks/results/diffrate_defaults.json,
        `accel bench --methods baseline,diffrate:rates=R,sublayers=S --num-images 80 --threads 1`)
        FD-digits vs the baseline's 27.7 / PSNR dB / blocks' FLOPs ratio: attention only, R=0.9
        39.0 / 23.3 / 0.90, 0.85 44.7 / 21.3 / 0.86, 0.75 66.7 / 18.7 / 0.78, 0.5 148 / 14.1 /
        0.60, 0.25 225 / 10.9 / 0.48; attention+mlp, 0.9 105 / 18.4 / 0.86, 0.75 (the old
        default) 428 / 12.7 / 0.68. Merging the MLP's tokens is what destroys the digits.
    queries: query tokens sampled for the attention-received importance.
    sublayers: the sub-layers that run on the kept tokens, e.g. "attention" or "attention;mlp";
        None = the rates file's (what its rates were learned for), "attention" for numbers.
    """

    rates: str | None = "0.85"
    queries: int = 32
    sublayers: str | None = None

    kind = "tokens"
    tunable = {"rates": ("0.9", "0.75", "0.5")}

    def validate(self) -> None:
        if self.rates is None:
            raise ValueError("rates: required (a file from `accel diffrate --out rates.json`, or '1;0.8;...')")
        if isinstance(self.rates, list):
            object.__setattr__(self, "rates", tuple(self.rates))
        read_rates(self.rates)  # every value and field checked; again at install (the file may change)
        check_int("queries", self.queries, 1)
        _sublayer_names(self.sublayers)


    def install(self, target: Target) -> "DiffRate":
        data = read_rates(self.rates)
        rates = data["rates"]
        if len(rates) == 1 and "file" not in data:
            rates = rates * len(target.blocks)
        model_class = type(target.model).__name__
        if data.get("transformer") not in (None, model_class):
            raise ValueError(f"rates: {data['file']!r} was learned on a {data['transformer']}, not this "
                             f"{model_class} (learn rates for it with `accel diffrate --model ...`)")
        if len(rates) != len(target.blocks):
            what = f"the rates file {data['file']!r} was learned for" if "file" in data else "rates given for"
            raise ValueError(f"rates: {len(rates)} rates for a model with {len(target.blocks)} blocks "
                             f"({what} another depth)")
        wanted = (_sublayer_names(self.sublayers) or tuple(data["sublayers"] or ())
                  or (("attention", "mlp") if "file" in data else NUMBER_SUBLAYERS))
        kinds = {ref.global_index: tuple(k for k in wanted if mergeable(ref, k) is None) for ref in target.blocks}
        return DiffRate(target, self, rates, kinds)


class DiffRate(TokenCompressor):
    def __init__(self, target: Target, config: DiffRateConfig, rates: list[float], kinds: dict[int, tuple[str, ...]]):
        self.config = config
        self.rates = rates
        super().__init__(target, "accel.diffrate", kinds)

    def tokens_to_merge(self, ref: BlockRef, info: StepInfo | None, n: int) -> int:
        if not self.merge_kinds.get(ref.global_index):
            return 0
        return n - kept_count(self.rates[ref.global_index], n)

    def match(self, call: BlockCall, tokens: torch.Tensor) -> Matching:
        attn = sublayers_of(call.ref).get("attention")
        importance = attention_received(attn, tokens, self.config.queries)
        return keep_top(tokens, importance, tokens.shape[1] - call.r)

    def stats(self) -> dict[str, Any]:
        return {**super().stats(), "rates": list(self.rates)}


def kept_count(rate: float, n: int) -> int:
    """Tokens kept at kept-fraction `rate` of `n` (at least 1)."""
    return max(1, min(n, int(round(rate * n))))
