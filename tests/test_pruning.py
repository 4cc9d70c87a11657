"""Depth pruning: importance scores, knapsack / evolutionary selection, the smaller model of every family."""

from __future__ import annotations

import itertools
import random

import diffusers
import pytest
import torch

from accel.families import blocks_of
from accel.pruning.importance import (
    BlockProbe,
    Calibration,
    MaskEvaluator,
    collect_calibration,
    cosine_scores,
    laptop_scores,
    prediction,
)
from accel.pruning.prune import prune_model, select_keep
from accel.pruning.select import (
    Budget,
    evolutionary_search,
    forced_blocks,
    knapsack_keep,
    resolve_keep,
    uniform_keep,
)
from accel.testing import FAMILIES, tiny_class_pipeline, tiny_transformer, transformer_inputs


def _calibration(family: str, model: torch.nn.Module, n: int = 2) -> Calibration:
    return Calibration([((), transformer_inputs(family, model, seed=s)) for s in range(n)])


# ----------------------------------------------------------------------------- importance
def test_identity_block_scores_exactly_zero():
    model = tiny_transformer("dit", num_layers=3)
    lin = model.transformer_blocks[1].norm1.linear  # adaLN-Zero gates -> 0: the block is an identity
    torch.nn.init.zeros_(lin.weight)
    torch.nn.init.zeros_(lin.bias)
    cal = _calibration("dit", model)
    scores = laptop_scores(model, cal)
    assert scores[1] == 0.0
    assert scores[0] > 0 and scores[2] > 0
    assert cosine_scores(model, cal)[1] < 1e-12  # ShortGPT: output == input -> influence 0


def test_probe_removes_exactly_and_bypass_matches_manual_skip():
    model = tiny_transformer("dit", num_layers=3)
    kw = transformer_inputs("dit", model)
    before = prediction(model, ((), kw))
    dicts = [dict(b.__dict__) for b in model.transformer_blocks]
    with BlockProbe(model) as probe, probe.bypassing([1]), torch.no_grad():
        skipped = prediction(model, ((), kw))
    assert [set(b.__dict__) for b in model.transformer_blocks] == [set(d) for d in dicts]
    assert torch.equal(prediction(model, ((), kw)), before)
    # the same by hand: a model of blocks 0 and 2 only
    with torch.no_grad():
        manual = prediction(prune_model(model, [0, 2]), ((), kw))
    assert torch.equal(skipped, manual)


def test_calibration_is_drawn_from_the_pipeline_sampling():
    pipe = tiny_class_pipeline(num_layers=2)
    inputs = [dict(class_labels=[1, 2], num_inference_steps=4, guidance_scale=2.0, output_type="np",
                   generator=torch.Generator().manual_seed(0))]
    cal = collect_calibration(pipe, inputs)
    assert len(cal) == 4  # one call per step (CFG as a doubled batch)
    ts = [int(kw["timestep"].flatten()[0]) for _, kw in cal.calls]
    assert ts == [int(t) for t in pipe.scheduler.timesteps]
    args, kwargs = cal.calls[0]
    assert (args[0] if args else kwargs["hidden_states"]).shape[0] == 4  # cond + uncond rows
    assert sorted(cal.calls[0][1]["class_labels"].tolist()) == [1, 2, 1000, 1000]
    short = collect_calibration(pipe, inputs, max_calls=2)
    assert len(short) == 2 and not hasattr(pipe.transformer, "_diffusers_hook")


# ----------------------------------------------------------------------------- selection
def _brute_force(values, costs, budget, forced=()):
    n = len(values)
    best = None
    for r in range(n + 1):
        for combo in itertools.combinations(range(n), r):
            if not set(forced) <= set(combo) or sum(costs[i] for i in combo) > budget:
                continue
            v = sum(values[i] for i in combo)
            if best is None or v > best + 1e-12:
                best = v
    return best


def test_knapsack_equals_brute_force_on_random_instances():
    rng = random.Random(0)
    for _ in range(60):
        n = rng.randint(1, 8)
        values = [rng.random() for _ in range(n)]
        costs = [rng.randint(0, 5) for _ in range(n)]
        budget = rng.randint(0, 15)
        forced = [i for i in range(n) if rng.random() < 0.15]
        if sum(costs[i] for i in forced) > budget:
            with pytest.raises(ValueError, match="must be kept"):
                knapsack_keep(values, costs, budget, forced)
            continue
        keep = knapsack_keep(values, costs, budget, forced)
        assert set(forced) <= set(keep)
        assert sum(costs[i] for i in keep) <= budget
        assert sum(values[i] for i in keep) == pytest.approx(_brute_force(values, costs, budget, forced), abs=1e-12)


def test_knapsack_count_budget_keeps_the_k_best():
    values = [0.3, 0.0, 0.9, 0.1, 0.5, 0.0]
    assert knapsack_keep(values, [1] * 6, 3) == [0, 2, 4]
    assert knapsack_keep(values, [1] * 6, 5) == [0, 1, 2, 3, 4]  # ties (zeros) still fill the count
    assert knapsack_keep(values, [1] * 6, 2, forced=[5]) == [2, 5]


def test_resolve_keep_and_uniform():
    assert resolve_keep("6", [1.0] * 12).value == 6
    assert resolve_keep("0.5", [1.0] * 12).value == 6
    assert resolve_keep(0.5, [2.0, 6.0], "flops").value == pytest.approx(4.0)
    for bad in ("12", "0", "-1", "1.5", "abc"):
        with pytest.raises(ValueError, match="keep"):
            resolve_keep(bad, [1.0] * 12)
    assert uniform_keep(12, 6) == [0, 2, 4, 7, 9, 11]
    assert uniform_keep(4, 2, forced=[3]) == [0, 3]


def test_evolutionary_search_finds_brute_force_optimum():
    n, k = 10, 5
    rng = random.Random(1)
    base = [rng.random() for _ in range(n)]
    pair = {(i, j): rng.random() for i in range(n) for j in range(i + 1, n)}

    def fitness(keep):  # non-additive: pairwise interactions of removed blocks
        removed = [i for i in range(n) if i not in keep]
        return sum(base[i] for i in removed) + sum(pair[a, b] for a, b in itertools.combinations(removed, 2))

    optimum = min(fitness(c) for c in itertools.combinations(range(n), k))
    res = evolutionary_search(fitness, n, Budget("count", k, (1.0,) * n), evaluations=120, seed=0)
    assert res.evaluations <= 120 < 252  # fewer evaluations than enumerating all C(10, 5) masks
    assert res.error == pytest.approx(optimum) and len(res.keep) == k
    assert res.history == sorted(res.history, reverse=True)


def test_evo_on_a_real_model_matches_brute_force_on_calibration_error():
    model = tiny_transformer("dit", num_layers=6)
    cal = _calibration("dit", model, n=1)
    with MaskEvaluator(model, cal) as ev:
        errors = {c: ev.error(c) for c in itertools.combinations(range(6), 3)}
        res = evolutionary_search(ev.error, 6, Budget("count", 3, (1.0,) * 6), evaluations=15, seed=0)
    assert res.error == pytest.approx(min(errors.values()))


def test_select_keep_each_selector():
    model = tiny_transformer("dit", num_layers=4)
    cal = _calibration("dit", model)
    budget = resolve_keep(2, [1.0] * 4)
    got = {s: select_keep(model, s, budget, cal, seed=0, evo_evaluations=6)["keep"]
           for s in ("laptop", "evo", "cosine", "first", "last", "uniform", "random")}
    assert got["first"] == [0, 1] and got["last"] == [0, 3] and got["uniform"] == [0, 3]  # DiT keeps block 0
    assert all(len(k) == 2 for k in got.values())
    scores = laptop_scores(model, cal)
    assert got["laptop"] == sorted([0, max(range(1, 4), key=lambda i: scores[i])])
    with pytest.raises(ValueError, match="unknown"):
        select_keep(model, "nope", budget, cal)


# ----------------------------------------------------------------------------- the pruned model
@pytest.mark.parametrize("family", FAMILIES)
def test_pruned_model_saves_and_reloads_with_plain_diffusers(family, tmp_path):
    model = tiny_transformer(family, num_layers=4)
    n = len(blocks_of(model))
    keep = sorted({1, n - 2} | set(forced_blocks(model)))
    kw = transformer_inputs(family, model)
    with BlockProbe(model) as probe, probe.bypassing([i for i in range(n) if i not in keep]), torch.no_grad():
        bypassed = prediction(model, ((), kw))
    pruned = prune_model(model, keep)
    assert type(pruned) is type(model) and len(blocks_of(pruned)) == len(keep)
    if family == "flux":
        assert (pruned.config.num_layers, pruned.config.num_single_layers) == (1, 1)
    else:
        assert pruned.config.num_layers == len(keep)
    with torch.no_grad():
        out = prediction(pruned, ((), kw))
    assert torch.equal(out, bypassed)  # the smaller model computes exactly the original minus those blocks
    pruned.save_pretrained(tmp_path / "transformer")
    cls = getattr(diffusers, type(model).__name__)
    loaded = cls.from_pretrained(tmp_path / "transformer").eval()
    with torch.no_grad():
        assert torch.equal(prediction(loaded, ((), kw)), out)
    assert sum(p.numel() for p in loaded.parameters()) < sum(p.numel() for p in model.parameters())


def test_prune_refuses_bad_keep_sets():
    sd3 = tiny_transformer("sd3", num_layers=3)
    with pytest.raises(ValueError, match="must be kept"):
        prune_model(sd3, [0, 1])
    dit = tiny_transformer("dit", num_layers=3)
    for bad, msg in (([], "at least one"), ([0, 1, 2], "nothing to prune"), ([0, 5], "outside"),
                     ([1, 2], "must be kept")):
        with pytest.raises(ValueError, match=msg):
            prune_model(dit, bad)


def test_block_costs_and_cost_budgets():
    from accel.pruning.select import block_costs

    model = tiny_transformer("flux", num_layers=2)  # double blocks cost more than single blocks
    call = ((), transformer_inputs("flux", model))
    params = block_costs(model, "params")
    flops = block_costs(model, "flops", call)
    latency = block_costs(model, "latency", call, repeats=2)
    assert len(params) == len(flops) == len(latency) == 4
    assert params[0] > params[2] and flops[0] > flops[2] and all(t > 0 for t in latency)
    budget = resolve_keep(0.6, flops, "flops")
    keep = select_keep(model, "last", budget)["keep"]
    assert sum(flops[i] for i in keep) <= 0.6 * sum(flops) and keep[-1] == 3
    res = evolutionary_search(lambda k: -len(k), 4, budget, evaluations=20, seed=0)
    assert budget.fits(res.keep)
