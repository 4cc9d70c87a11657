"""`tome`: token merging inside every transformer block (ToMe / ToMeSD adapted to DiTs).

In each selected block the image tokens entering the selected sub-layers (after adaLN
modulation) are merged: `ratio`·N sources go into their most similar destination
(one destination per `sy x sx` window of the token grid, at a random place drawn
from `seed`, the step and the block), the sub-layer runs on N − r tokens, and its
output is unmerged (each source gets its destination's output) before the block's
gate and residual. The matching is computed once per block call, per sample (CFG
rows differ), and shared by the block's attention, cross-attention and MLP.

Defaults follow tomesd: attention only. `merge_crossattn` / `merge_mlp` add the
others where the family has them token-wise; asking for one a block does not have
(cross-attention on DiT/SD3/Flux, the conv MLP of Sana) is an error at `apply`.
`prop_attn` adds ToMe's proportional attention (log size on the merged keys' logits)
where the family's self-attention takes an additive mask (DiT, PixArt).
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from typing import Any, Literal

import torch

from ..config import MethodConfig, Target, check_choice, check_int, check_range, register_method
from ..context import StepInfo
from ..errors import UnsupportedMethodError
from ..families import SUBLAYERS, BlockRef, mergeable, sublayers_of
from ._sublayers import OPTION, BlockCall, TokenCompressor
from .merge import Matching, match_grid

def parse_blocks(spec: Any, depth: int, field: str = "blocks") -> tuple[int, ...]:
    """Global block indices from None/"all" (every block), an int, a sequence of ints, a
    string of indices and inclusive ranges ("0-5;9") or a float in (0, 1] (the first
    round(f·depth) blocks). ValueError naming `field` for anything out of range."""
    if spec is None or spec == "all":
        return tuple(range(depth))
    if isinstance(spec, str) and spec.replace(".", "", 1).isdigit() and "." in spec:
        spec = float(spec)
    if isinstance(spec, float):
        if not 0 < spec <= 1:
            raise ValueError(f"{field}: a fraction of the depth must be in (0, 1], got {spec!r}")
        return tuple(range(max(1, round(spec * depth))))
    items: list[int] = []
    if isinstance(spec, bool):
        raise ValueError(f"{field}: expected block indices, got {spec!r}")
    if isinstance(spec, int):
        items = [spec]
    elif isinstance(spec, str):
        for part in spec.replace(";", " ").replace("|", " ").replace(",", " ").split():
            try:
                if "-" in part[1:]:
                    a, b = part.split("-", 1)
                    items.extend(range(int(a), int(b) + 1))
                else:
                    items.append(int(part))
            except ValueError:
                raise ValueError(f"{field}: cannot read {part!r} (use e.g. '0-5;9' or a fraction like 0.5)") from None
    else:
        try:
            items = [int(i) for i in spec]
        except (TypeError, ValueError):
            raise ValueError(f"{field}: expected block indices, got {spec!r}") from None
    bad = [i for i in items if not 0 <= i < depth]
    if bad or not items:
        raise ValueError(f"{field}: block index {bad[0] if bad else spec!r} out of range; the model has "
                         f"{depth} blocks (0-{depth - 1})")
    return tuple(sorted(set(items)))


def resolve_sublayers(config: Any, target: Target, blocks: tuple[int, ...]) -> dict[int, tuple[str, ...]]:
    """Per selected block, the sub-layers to merge: explicit flags, else attention only.
    ValueError naming the flag when a selected block cannot merge that sub-layer."""
    out: dict[int, tuple[str, ...]] = {}
    for i in blocks:
        ref = target.blocks[i]
        kinds = []
        for kind in SUBLAYERS:
            flag = getattr(config, OPTION[kind])
            want = (kind == "attention") if flag is None else flag
            if not want:
                continue
            why = mergeable(ref, kind)
            if why is None:
                kinds.append(kind)
            elif flag:  # asked for explicitly
                raise ValueError(f"{OPTION[kind]}=True is not possible on {target.family.name} (block {i}): {why}")
        out[i] = tuple(kinds)
    if not any(out.values()):
        raise ValueError("merge_attn, merge_crossattn, merge_mlp: nothing left to merge in the selected blocks")
    return out


def step_seed(seed: int, step: int, block: int) -> int:
    """A deterministic per-(seed, step, block) seed for the destination offsets."""
    return zlib.crc32(f"{seed}:{step}:{block}".encode()) & 0x7FFFFFFF


@register_method("tome")
@dataclass(frozen=True)
class TomeConfig(MethodConfig):
    """`tome`: ToMe/ToMeSD token merging inside each block (tomesd's `apply_patch`).

    Example::

        import accel

        pipe = accel.default_pipeline()
        with accel.apply(pipe, accel.TomeConfig(ratio=0.5, sx=2, sy=2)) as handle:
            images = pipe(class_labels=[3, 7], num_inference_steps=20).images
            print(handle.stats()["tome"]["total"])  # FLOPs of the blocks vs the full model's

    ratio: fraction of a block's image tokens merged away, [0, 1); with 2x2 windows at most
        3/4 of the tokens are sources, so larger ratios are clipped to that (0 = identical model).
    merge_attn / merge_crossattn / merge_mlp: which sub-layers see merged tokens (tomesd's
        names); None = default (attention only).
    blocks: which blocks merge: None (all), indices/ranges like "0-5;9" (global order, Flux:
        double then single blocks) or a fraction of the depth (the first blocks).
    start_step / stop_step: merge only on denoising steps start_step <= s < stop_step.
    sx / sy: destination window (one destination per sy rows x sx cols of tokens).
    st: frames per destination window on video grids (1: destinations in every frame; 2: one per
        2 frames x sy x sx window, so up to 7/8 of the tokens can merge, across frames).
    use_rand: random destination inside each window (drawn from seed, step and block);
        False: top-left corner.
    seed: seeds the random destinations (with the step and the block: the same every call).
    similarity: "hidden" (the merged sub-layer's input tokens) or "keys" (the block's
        attention key projection of them; one extra projection per block).
    prop_attn: proportional attention (DiT, PixArt self-attention).
    """

    ratio: float = 0.5
    merge_attn: bool | None = None
    merge_crossattn: bool | None = None
    merge_mlp: bool | None = None
    blocks: str | None = None
    start_step: int = 0
    stop_step: int | None = None
    sx: int = 2
    sy: int = 2
    st: int = 1
    use_rand: bool = True
    seed: int = 0
    similarity: Literal["hidden", "keys"] = "hidden"
    prop_attn: bool = False

    kind = "tokens"
    tunable = {"ratio": (0.25, 0.5, 0.75), "prop_attn": (False, True)}

    def validate(self) -> None:
        check_range("ratio", self.ratio, 0, 1, hi_open=True)
        for name in ("merge_attn", "merge_crossattn", "merge_mlp", "use_rand", "prop_attn"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, bool):
                raise ValueError(f"{name} must be True, False or None, got {value!r}")
        if self.use_rand is None or self.prop_attn is None:
            raise ValueError("use_rand, prop_attn: must be True or False, not None")
        check_int("start_step", self.start_step, 0)
        if self.stop_step is not None:
            check_int("stop_step", self.stop_step, self.start_step + 1)
        check_int("sx", self.sx, 1)
        check_int("sy", self.sy, 1)
        check_int("st", self.st, 1)
        if self.sx * self.sy < 2:
            raise ValueError("sx, sy: a window of one token has no sources; use sx*sy >= 2")
        check_int("seed", self.seed, 0)
        check_choice("similarity", self.similarity, ("hidden", "keys"))
        if isinstance(self.blocks, (list, tuple)):
            object.__setattr__(self, "blocks", tuple(self.blocks))
        if self.blocks is not None and not isinstance(self.blocks, float):
            parse_blocks(self.blocks, 1 << 30)  # syntax only; the depth is checked at apply

    def install(self, target: Target) -> "Tome":
        blocks = parse_blocks(self.blocks, len(target.blocks))
        kinds = resolve_sublayers(self, target, blocks)
        if self.prop_attn and not any(target.blocks[i].stack.attention_bias for i in blocks):
            raise ValueError(f"prop_attn=True is not possible on {target.family.name}: its self-attention "
                             "takes no additive mask (supported: dit, pixart)")
        return Tome(target, self, kinds)


class Tome(TokenCompressor):
    def __init__(self, target: Target, config: TomeConfig, kinds: dict[int, tuple[str, ...]]):
        self.config = config
        self.proportional = config.prop_attn
        super().__init__(target, "accel.tome", kinds)

    def tokens_to_merge(self, ref: BlockRef, info: StepInfo | None, n: int) -> int:
        c = self.config
        if c.ratio == 0 or not self.merge_kinds.get(ref.global_index):
            return 0
        step = info.step if info is not None else 0
        if step < c.start_step or (c.stop_step is not None and step >= c.stop_step):
            return 0
        return int(math.floor(c.ratio * n))

    def match(self, call: BlockCall, tokens: torch.Tensor) -> Matching:
        c = self.config
        gen = None
        if c.use_rand:
            step = call.info.step if call.info is not None else 0
            gen = torch.Generator().manual_seed(step_seed(c.seed, step, call.ref.global_index))
        metric = tokens
        if c.similarity == "keys":
            attn = sublayers_of(call.ref).get("attention")
            to_k = getattr(attn, "to_k", None)
            if to_k is not None:
                with torch.no_grad():
                    metric = to_k(tokens)
        grid = self.token_grid()
        if math.prod(grid) < tokens.shape[1]:
            raise UnsupportedMethodError(
                f"tome: {tokens.shape[1] - math.prod(grid)} tokens beyond the {'x'.join(map(str, grid))} generated "
                "grid (reference-image tokens, e.g. Flux Kontext): merging would mix them with the generated ones; "
                "use toca or a block cache on this pipeline")
        return match_grid(metric, call.r, grid, c.sx, c.sy, gen, st=c.st)

    def stats(self) -> dict[str, Any]:
        out = {**super().stats(), "ratio": self.config.ratio}
        why = self.idle_reason(out["total"])
        if why:
            out["warnings"] = [why]
        return out

    def idle_reason(self, total: dict[str, Any]) -> str | None:
        """One line when the calls so far merged no token at all (so tome could not speed anything up)."""
        c, calls = self.config, total.get("block_calls", 0)
        if c.ratio == 0 or not calls or total.get("flops", 0) < total.get("flops_full", 0):
            return None
        grid = self._grid
        if grid is None:  # no block merged: the steps start_step..stop_step were never reached
            return (f"merged nothing in {calls} block calls: no step in start_step={c.start_step}.."
                    f"stop_step={c.stop_step}; no speedup")
        frames, rows, cols = (1, *grid) if len(grid) == 2 else grid
        window = min(c.st, frames) * min(c.sy, rows) * min(c.sx, cols)
        hint = ("; st=2 merges across frames" if frames > 1 and c.st == 1 else "")
        return (f"merged nothing in {calls} block calls: the token grid {'x'.join(map(str, grid))} leaves one token "
                f"per {c.st}x{c.sy}x{c.sx} window, so no token has another to merge into (window of {window}); "
                f"no speedup{hint}" if window < 2 else
                f"merged nothing in {calls} block calls (token grid {'x'.join(map(str, grid))}, ratio {c.ratio}); "
                "no speedup")
