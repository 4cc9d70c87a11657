"""The pruned model: a real, smaller instance of the same diffusers class, and its pipeline folder.

`prune_model` builds the class from the original config with each stack's depth
(`BlockStack.config_key` in accel/families/table.py) set to the number of kept blocks and
loads the kept blocks' weights (renumbered) plus every non-block weight. The result
saves with `save_pretrained` and loads with plain diffusers
`<Class>.from_pretrained(DIR / "transformer")`, no accel import needed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import torch

from ..errors import SettingError
from ..families import blocks_of, family_of
from ..quiet import hf_quiet
from .select import Budget, forced_blocks

if TYPE_CHECKING:
    from .importance import Calibration

PRUNING_FILE = "pruning.json"


def check_keep(model: torch.nn.Module, keep: Iterable[int]) -> list[int]:
    """`keep` as a sorted list of valid global block indices; ValueError naming the problem otherwise."""
    fam = family_of(model)
    if not fam.prunable:
        raise ValueError(f"depth pruning is not available for {type(model).__name__}: its depth is not one "
                         "config entry per block list (see BlockStack.config_key in accel/families/table.py)")
    n = len(blocks_of(model))
    keep = sorted(set(int(i) for i in keep))
    if not keep:
        raise ValueError("keep: at least one block must be kept")
    bad = [i for i in keep if not 0 <= i < n]
    if bad:
        raise ValueError(f"keep: block indices {bad} are outside the model's {n} blocks")
    if len(keep) == n:
        raise ValueError(f"keep: all {n} blocks kept, nothing to prune")
    missing = [i for i in forced_blocks(model) if i not in keep]
    if missing:
        raise ValueError(
            f"keep: blocks {missing} must be kept in a {type(model).__name__} (see BlockStack.keep_blocks "
            "in accel/families/table.py)")
    return keep


def check_prunable(model: torch.nn.Module) -> None:
    """ValueError when the weights cannot be copied into a plain smaller instance: LoRA adapters
    (peft layers, fused or not) or quantized weights (torchao, bitsandbytes, GGUF). accel refuses
    rather than fusing or dequantizing silently."""
    if any(hasattr(m, "base_layer") and hasattr(m, "lora_A") for m in model.modules()):
        raise ValueError(
            f"prune: this {type(model).__name__} carries LoRA adapters; pruning copies plain weights. Fuse and "
            "unload them first (transformer.fuse_lora(); transformer.unload_lora(), or pipe.fuse_lora(); "
            "pipe.unload_lora_weights()), or unload them to prune the base model")
    quantized = sorted({type(p).__name__ for p in model.parameters()
                        if type(p) not in (torch.nn.Parameter, torch.Tensor) or not p.dtype.is_floating_point})
    if quantized or getattr(model, "is_quantized", False):
        raise ValueError(
            f"prune: this {type(model).__name__} has quantized weights ({', '.join(quantized) or 'is_quantized'}); "
            "pruning and distillation need the full-precision model: prune that, then quantize the result")


def pruned_config(model: torch.nn.Module, keep: Sequence[int]) -> dict[str, Any]:
    """The original config with each stack's depth (and SD3's dual-attention layer list) renumbered."""
    config = dict(model.config)
    keep_set = set(keep)
    for stack in family_of(model).stacks:
        kept_local = [r.index for r in blocks_of(model) if r.stack is stack and r.global_index in keep_set]
        config[stack.config_key] = len(kept_local)
        dual = config.get("dual_attention_layers")
        if stack.config_key == "num_layers" and dual:
            config["dual_attention_layers"] = tuple(new for new, old in enumerate(kept_local) if old in dual)
    return config


def pruned_state_dict(model: torch.nn.Module, keep: Sequence[int]) -> dict[str, torch.Tensor]:
    """The model's weights with removed blocks dropped and kept blocks renumbered within their stack."""
    refs = blocks_of(model)
    keep_set = set(keep)
    renumber: dict[str, dict[int, int]] = {}
    for stack in family_of(model).stacks:
        kept_local = [r.index for r in refs if r.stack is stack and r.global_index in keep_set]
        renumber[stack.attr] = {old: new for new, old in enumerate(kept_local)}
    out: dict[str, torch.Tensor] = {}
    for key, value in model.state_dict().items():
        head, _, rest = key.partition(".")
        if head in renumber:
            idx, _, tail = rest.partition(".")
            new = renumber[head].get(int(idx))
            if new is None:
                continue
            key = f"{head}.{new}.{tail}"
        out[key] = value.detach().clone()
    return out


def prune_model(model: torch.nn.Module, keep: Iterable[int]) -> torch.nn.Module:
    """A new instance of `type(model)` with only the `keep` blocks (global indices), weights copied."""
    from accelerate import init_empty_weights

    check_prunable(model)
    keep = check_keep(model, keep)
    config = pruned_config(model, keep)
    state = pruned_state_dict(model, keep)
    with init_empty_weights():
        pruned = type(model).from_config(config)
    pruned.load_state_dict(state, strict=True, assign=True)
    pruned.train(model.training)
    return pruned


def block_map(keep: Sequence[int]) -> list[int]:
    """m(l): the teacher's global block index each student block l descends from."""
    return sorted(keep)


# ----------------------------------------------------------------------------- pipeline folder
def _stock_class(pipe: Any) -> type:
    """The first diffusers class in the pipeline's MRO (what model_index.json should name)."""
    for cls in type(pipe).__mro__:
        if cls.__module__.startswith("diffusers."):
            return cls
    return type(pipe)


def save_pipeline(pipe: Any, transformer: torch.nn.Module, out: str | os.PathLike,
                  files: dict[str, dict] | None = None, overwrite: bool = False) -> Path:
    """Write `pipe` with `transformer` in place of its own as a complete pipeline folder at `out`.

    `out` must be new or empty; with `overwrite` it may also be a pipeline folder `accel prune`
    wrote (its manifest says so, accel.outputs.read_manifest): then accel's files of the earlier
    write are replaced or removed and every other file stays, at any depth. Staged in a hidden
    sibling folder and moved in at the end, so a failure leaves nothing behind (accel.outputs). `files` are extra JSON files (name -> content) next to model_index.json.
    Components without weights (the default model's identity VAE) get an empty safetensors
    file so diffusers' loader accepts the folder.
    """
    from ..outputs import check_new_dir, staged_dir

    out = check_new_dir(out, overwrite=overwrite, writer="prune",
                        hint=" (or overwrite to replace a pipeline folder accel wrote)", hint_also=("overwrite",))
    with staged_dir(out, writer="prune") as tmp:
        write_pipeline(pipe, transformer, tmp, files)
    return out


def write_pipeline(pipe: Any, transformer: torch.nn.Module, folder: Path, files: dict[str, dict] | None = None) -> None:
    """The pipeline folder's entries (save_pretrained + empty weights of weightless parts + `files`) into
    `folder`, an existing staging folder."""
    components = dict(pipe.components)
    components["transformer"] = transformer
    stock = _stock_class(pipe)(**components)
    with hf_quiet():  # no "Writing model shards" bars, no "tokenizer_3=None cannot be saved" notices
        stock.save_pretrained(folder, safe_serialization=True)
    _fill_weightless(components, folder)
    for name, content in (files or {}).items():
        (folder / name).write_text(json.dumps(content, indent=2, default=_jsonable) + "\n")


def _fill_weightless(components: dict[str, Any], folder: Path) -> None:
    from diffusers.models.modeling_utils import ModelMixin
    from safetensors.torch import save_file

    for name, comp in components.items():
        sub = folder / name
        if isinstance(comp, ModelMixin) and sub.is_dir() and not comp.state_dict():
            if not any(p.name.startswith("diffusion_pytorch_model") for p in sub.iterdir()):
                save_file({}, str(sub / "diffusion_pytorch_model.safetensors"), metadata={"format": "pt"})


def _jsonable(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return x.tolist()
    if isinstance(x, (set, tuple)):
        return list(x)
    if isinstance(x, Path):
        return str(x)
    return str(x)


# ----------------------------------------------------------------------------- selection
SELECTORS = ("laptop", "evo", "cosine", "learned", "first", "last", "uniform", "random")


def select_keep(model: torch.nn.Module, selector: str, budget: Budget, calibration: "Calibration | None" = None,
                seed: int = 0, evo_evaluations: int = 100, learned_steps: int = 200,
                learned_group: int | None = None) -> dict[str, Any]:
    """Run one selector on `model`; returns {"keep", "scores", "selector", ...} (scores: higher = keep).

    laptop: LAPTOP-Diff one-shot scores + exact knapsack; evo: EvoPress-style search on the
    calibration output error, started from the LAPTOP knapsack set; cosine: ShortGPT block
    influence + knapsack; learned: TinyFusion-style differentiable top-k masks trained `learned_steps` steps
    with a recoverability term (accel/pruning/learned.py; count budgets; `learned_group`: its N:M group size); first / last / random: positional or seeded-random ranking + knapsack;
    uniform: evenly spaced blocks (count budgets only).
    """
    from .importance import MaskEvaluator, cosine_scores, first_scores, last_scores, laptop_scores, random_scores
    from .select import evolutionary_search, select_by_scores, uniform_keep

    n = len(blocks_of(model))
    forced = forced_blocks(model)
    if selector not in SELECTORS:
        raise ValueError(f"selector {selector!r} is unknown; choose one of {', '.join(SELECTORS)}")
    if selector in ("laptop", "evo", "cosine", "learned") and calibration is None:
        raise ValueError(f"selector {selector!r} needs a calibration set")
    out: dict[str, Any] = {"selector": selector}
    if selector == "uniform":
        if budget.kind != "count":
            raise ValueError("selector 'uniform' takes a block count (cost 'count')")
        out["keep"] = uniform_keep(n, int(budget.value), forced)
        return out
    if selector == "learned":
        from .learned import learned_keep

        if budget.kind != "count":
            raise SettingError("selector", "'learned' takes a block count (cost count)", also=("cost",))
        out.update(learned_keep(model, calibration, int(budget.value), forced, steps=learned_steps, seed=seed,
                                group=learned_group))
        return out
    if selector in ("laptop", "evo"):
        scores = laptop_scores(model, calibration)
    elif selector == "cosine":
        scores = cosine_scores(model, calibration)
    elif selector == "first":
        scores = first_scores(n)
    elif selector == "last":
        scores = last_scores(n)
    else:
        scores = random_scores(n, seed)
    out["scores"] = scores
    keep = select_by_scores(scores, budget, forced)
    if selector == "evo":
        with MaskEvaluator(model, calibration) as ev:
            res = evolutionary_search(ev.error, n, budget, forced=forced, init=[keep],
                                      evaluations=evo_evaluations, seed=seed)
        out.update(knapsack_keep=keep, evo_error=res.error, evo_evaluations=res.evaluations,
                   evo_history=res.history)
        keep = res.keep
    out["keep"] = keep
    return out
