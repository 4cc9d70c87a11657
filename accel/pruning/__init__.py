"""Depth pruning with distillation: score blocks, keep the best set, build the smaller model, distil.

    from accel.pruning import collect_calibration, laptop_scores, select_keep, prune_model
    cal = collect_calibration(pipe, [dict(class_labels=[1, 2], num_inference_steps=20)])
    keep = select_keep(pipe.transformer, "laptop", resolve_keep(6, [1.0] * 12), cal)["keep"]
    smaller = prune_model(pipe.transformer, keep)   # same diffusers class, config updated

Modules: importance (calibration, block bypass, LAPTOP-Diff / ShortGPT / positional scores),
select (exact knapsack, EvoPress-style search, budgets and per-block costs), prune (the
smaller model and its pipeline folder), learned (`--selector learned`: TinyFusion-style differentiable
top-k masks), distill (accelerate training loop), data (real image + prompt pairs of flow models, mixing
with teacher samples), workflow
(`prune_pipeline` / `distill_pipeline`: what `accel prune` / `accel distill` run; the commands
themselves are accel/commands/). Folders derived from the embedded digits model: accel.models.lineage.
"""

from .importance import BlockProbe, Calibration, MaskEvaluator, collect_calibration, cosine_scores, laptop_scores
from .prune import SELECTORS, prune_model, save_pipeline, select_keep
from .select import Budget, evolutionary_search, knapsack_keep, resolve_keep

__all__ = [
    "BlockProbe", "Budget", "Calibration", "MaskEvaluator", "SELECTORS", "collect_calibration", "cosine_scores",
    "evolutionary_search", "knapsack_keep", "laptop_scores", "prune_model", "resolve_keep", "save_pipeline",
    "select_keep",
]
