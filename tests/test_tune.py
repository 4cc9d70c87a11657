"""`accel tune`: declared search spaces, the search itself, tune.json round trips, presets."""

from __future__ import annotations

import json
import math

import pytest
import torch

import accel
from accel.eval.methods import parse_methods
from accel.testing import FAMILIES, run_tiny
from accel.tune import QualityBudget, Candidate, build_space, exhaustive, front, load_configs, successive_halving
from accel.tune.files import ConfigFileError, write_tune_json
from accel.tune.space import method_options


def _accelerating():
    return {n: c for n, c in accel.methods().items() if c.accelerates}


@pytest.mark.parametrize("name", sorted(_accelerating()))
def test_every_method_declares_a_valid_search_space(name):
    cls = accel.methods()[name]
    assert cls.tunable, f"{name} declares no tunable settings"
    opts = method_options(cls, name)
    assert len(opts) == math.prod(len(v) for v in cls.tunable.values())  # every declared value is valid
    for _, params in opts:
        cls(**dict(params))


def test_space_grid_key_and_neighbours():
    reg = accel.methods()
    space = build_space(reg, ["interval-cache", "tome"])
    grid = space.grid()
    assert len(grid) == space.size() - 1 == len({c.key for c in grid})
    c = next(c for c in grid if len(c.components) == 2)
    # the key is `accel bench --methods` syntax and builds the same configs
    spec = parse_methods(c.methods_key, reg)[1]
    assert spec.configs == c.configs(reg)
    assert Candidate.from_record(json.loads(json.dumps(c.as_record()))) == c
    nbs = space.neighbours(c)
    assert nbs and all(sum(a != b for x, y in zip(n.components, c.components) for a, b in zip(x[1], y[1])) == 1
                       for n in nbs)


def test_unknown_or_untunable_method_is_refused():
    with pytest.raises(ValueError, match="unknown method"):
        build_space(accel.methods(), ["no-such"])
    with pytest.raises(ValueError, match="declares no tunable"):
        build_space(accel.methods(), ["trace"])


def _synthetic(space):
    """A deterministic stand-in for paired evaluation: speed grows and PSNR falls with aggressiveness."""
    calls = []

    def evaluate(c, n):
        calls.append((c.key, n))
        speed, psnr = 1.0, 45.0
        for name, params in c.components:
            p = dict(params)
            if name == "interval-cache":
                speed *= 1 + 0.45 * (p["interval"] - 1) * (1.1 if p["warmup"] == 1 else 1.0)
                psnr -= 4 * (p["interval"] - 1) * (0.8 if p["forecast"] == 1 else 1.0) * (1.0 if p["warmup"] == 3 else 1.2)
            if name == "tome":
                speed *= 1 + p["ratio"] * 0.4
                psnr -= 14 * p["ratio"] * (0.7 if p["prop_attn"] else 1.0)
        noise = 0.0 if n >= 32 else 0.3 * ((hash(c.key) % 7) - 3) / 3  # small rungs are noisier
        return {"key": c.key, "n": n, "candidate": c.as_record(), "speedup": speed + noise * 0.05,
                "psnr": psnr + noise, "fd_pct": None}
    return evaluate, calls


def test_successive_halving_finds_near_the_exhaustive_best_with_a_quarter_of_the_evaluations():
    space = build_space(accel.methods(), ["interval-cache", "tome"])
    space.options["cache"] = [o for o in space.options["cache"] if dict(o[1])["forecast"] != 2]
    budget = QualityBudget(psnr=33.0)
    ev, calls = _synthetic(space)
    full = exhaustive(space, ev, budget, images=32)
    n_full = len(calls)
    assert full.best is not None and full.evaluations == n_full == space.size() - 1
    ev2, calls2 = _synthetic(space)
    sh = successive_halving(space, ev2, budget, evals=n_full // 4, final_images=32, min_images=4)
    assert sh.evaluations == len(calls2)
    assert sh.image_evaluations <= 0.25 * full.image_evaluations  # a quarter of the exhaustive compute
    assert sh.best is not None and budget.meets(sh.best)
    assert sh.best["speedup"] >= 0.9 * full.best["speedup"]
    assert {n for _, n in calls2} == {4, 11, 32}  # three rungs, growing by eta=3 up to the final images


def test_budget_nobody_meets_gives_no_best_and_budget_validation():
    space = build_space(accel.methods(), ["interval-cache"])
    ev, _ = _synthetic(space)
    res = successive_halving(space, ev, QualityBudget(psnr=60.0), evals=6, final_images=8, min_images=4)
    assert res.best is None and res.finals
    with pytest.raises(ValueError, match="give a quality budget"):
        QualityBudget()
    with pytest.raises(ValueError, match="budget_fd"):
        QualityBudget(fd_pct=-1)
    assert QualityBudget(fd_pct=5).meets({"fd_pct": 4.9}) and not QualityBudget(fd_pct=5).meets({"fd_pct": 5.1})
    assert not QualityBudget(fd_pct=5).meets({"fd_pct": None})  # FD not measured is not inside an FD budget
    assert QualityBudget(psnr=30).meets({"psnr": None})  # None = identical images


def test_front_keeps_only_undominated_points():
    rs = [{"speedup": 1.5, "psnr": 40}, {"speedup": 2.0, "psnr": 35}, {"speedup": 1.8, "psnr": 30},
          {"speedup": 3.0, "psnr": 20}]
    assert [r["speedup"] for r in front(rs)] == [1.5, 2.0, 3.0]
    fd = [{"speedup": 1.5, "fd_pct": 1.0}, {"speedup": 2.0, "fd_pct": 0.5}, {"speedup": 2.5, "fd_pct": 9.0}]
    assert [r["speedup"] for r in front(fd, "fd_pct")] == [2.0, 2.5]


def test_load_configs_round_trip_and_errors(tmp_path):
    c = Candidate((("interval-cache", (("forecast", 1), ("interval", 3), ("warmup", 1))),
                   ("tome", (("ratio", 0.5),))))
    p = write_tune_json(tmp_path / "tune.json", {"chosen": {**c.as_record(), "key": c.key}, "x": float("nan")})
    assert json.loads(p.read_text())["x"] is None  # strict JSON
    configs = load_configs(p)
    assert configs == c.configs(accel.methods())
    assert accel.load_configs(str(p)) == configs
    (tmp_path / "none.json").write_text(json.dumps({"chosen": None}))
    with pytest.raises(ConfigFileError, match="no config inside its budget"):
        load_configs(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text(json.dumps({"methods": [{"name": "interval-cache", "params": {"interval": 0}}]}))
    with pytest.raises(ConfigFileError, match="invalid settings for 'interval-cache'"):
        load_configs(tmp_path / "bad.json")
    (tmp_path / "unk.json").write_text(json.dumps({"methods": [{"name": "warp-drive"}]}))
    with pytest.raises(ConfigFileError, match="unknown method 'warp-drive'"):
        load_configs(tmp_path / "unk.json")
    with pytest.raises(ConfigFileError, match="does not exist"):
        load_configs(tmp_path / "missing.json")
    assert json.loads(p.read_text())["schema"] == "accel-tune/1"
    (tmp_path / "v2.json").write_text(json.dumps({"schema": "accel-tune/2", "chosen": c.as_record()}))
    with pytest.raises(ConfigFileError, match="schema 'accel-tune/2' is not 'accel-tune/1'"):
        load_configs(tmp_path / "v2.json")


def _tune(tmp_path, *extra):
    from accel.cli import main

    return main(["tune", "--methods", "interval-cache", "--steps", "8", "--evals", "3", "--calibration-images", "4",
                 "--holdout-images", "4", "--batch-size", "4", "--front-max", "2", "--threads", "2", "--quiet",
                 "--out", str(tmp_path / "tune.json"), *extra])


@pytest.mark.slow
def test_tune_command_writes_a_config_bench_and_apply_accept_and_resumes(tmp_path, capsys):
    assert _tune(tmp_path, "--budget-psnr", "10") == 0
    doc = json.loads((tmp_path / "tune.json").read_text())
    assert doc["chosen"]["methods"][0]["name"] == "interval-cache"
    assert doc["chosen"]["holdout"]["psnr"] >= 10 and doc["chosen"]["holdout"]["n"] == 4
    assert doc["search"]["image_evaluations"] <= 3 * 4 and doc["search"]["new_evaluations"] == doc["search"]["evaluations"]
    assert all(math.isfinite(r["speedup"]) and r["speedup"] > 0 for r in doc["history"])
    html = (tmp_path / "report.html").read_text()
    assert doc["chosen"]["key"] in html and "http://" not in html
    # resumable: the same run again is served from the evaluation cache
    assert _tune(tmp_path, "--budget-psnr", "10", "--overwrite") == 0
    assert json.loads((tmp_path / "tune.json").read_text())["search"]["new_evaluations"] == 0
    # the result loads into accel.apply and into `accel bench --config`
    from accel.commands.bench import config_rows

    rows = config_rows([str(tmp_path / "tune.json")], "default")
    assert rows[0][0] == str(tmp_path / "tune.json") and rows[0][1].configs == load_configs(tmp_path / "tune.json")
    pipe = accel.default_pipeline()
    with accel.apply(pipe, *load_configs(tmp_path / "tune.json")) as h:
        pipe(class_labels=[1], num_inference_steps=8, generator=torch.Generator().manual_seed(0), output_type="np")
        assert h.stats()["total"]["block_evals"] < h.stats()["total"]["block_total"]


def test_tune_budget_nobody_meets_exits_1_and_bad_input_exits_2(tmp_path, capsys):
    assert _tune(tmp_path, "--budget-psnr", "99") == 1
    assert "no candidate meets the budget" in capsys.readouterr().err
    assert json.loads((tmp_path / "tune.json").read_text())["chosen"] is None
    assert _tune(tmp_path) == 2
    assert "give a quality budget" in capsys.readouterr().err
    assert _tune(tmp_path, "--budget-psnr", "30", "--pruned", str(tmp_path / "nope")) == 2
    assert "no such folder" in capsys.readouterr().err


def test_bench_config_tuned_on_another_model_is_refused(tmp_path):
    from accel.eval.methods import BenchInputError
    from accel.commands.bench import config_rows

    c = Candidate((("interval-cache", (("interval", 2),)),), model=str(tmp_path / "pruned"))
    p = write_tune_json(tmp_path / "t.json", {"chosen": c.as_record()})
    with pytest.raises(BenchInputError, match="tuned on the pruned model"):
        config_rows([str(p)], "default")


@pytest.mark.parametrize("name", ["fast", "balanced", "quality"])
def test_presets_apply_to_every_family_and_undo_exactly(tiny_pipes, name):
    for family in FAMILIES:
        pipe = tiny_pipes[family]
        configs = accel.preset(name, pipe)
        assert configs and all(isinstance(c, accel.MethodConfig) for c in configs)
        before = run_tiny(pipe, family, steps=10)
        with accel.apply(pipe, *configs):
            run_tiny(pipe, family, steps=10)
        assert torch.equal(run_tiny(pipe, family, steps=10), before)
    with pytest.raises(ValueError, match="unknown preset"):
        accel.preset("ludicrous", pipe)


def test_default_model_presets_are_ordered_by_speed():
    """fast saves the most block evaluations, quality the fewest (same pipeline, same call)."""
    pipe = accel.default_pipeline()
    ratios = {}
    for name in ("fast", "balanced", "quality"):
        with accel.apply(pipe, *accel.preset(name, pipe)) as h:
            pipe(class_labels=[1], num_inference_steps=20, generator=torch.Generator().manual_seed(0),
                 output_type="np")
            t = h.stats()["total"]
            flops = next((v["total"]["flops"] / v["total"]["flops_full"] for v in h.stats().values()
                          if isinstance(v, dict) and isinstance(v.get("total"), dict) and v["total"].get("flops_full")),
                         1.0)
            ratios[name] = t["block_evals"] * flops / t["block_total"]
    assert ratios["fast"] < ratios["balanced"] < ratios["quality"] < 1.0


@pytest.mark.slow
def test_tune_searches_a_pruned_folder_as_a_model_variant(tmp_path):
    """--pruned DIR: candidates on that folder are compared with the original model's images."""
    from accel.pruning import prune_model, save_pipeline

    pipe = accel.default_pipeline()
    folder = save_pipeline(pipe, prune_model(pipe.transformer, list(range(10))), tmp_path / "pruned10")
    assert _tune(tmp_path, "--budget-psnr", "0", "--pruned", str(folder), "--evals", "6") == 0
    doc = json.loads((tmp_path / "tune.json").read_text())
    models = {r["candidate"]["model"] for r in doc["history"]}
    assert str(folder) in models  # the variant was evaluated
    on_pruned = [r for r in doc["history"] if r["candidate"]["model"] == str(folder)]
    assert all(r["psnr"] is not None and r["block_ratio"] < 1 for r in on_pruned)  # fewer blocks, not identical


def test_tune_speed_is_the_bench_paired_timing(monkeypatch):
    """A candidate's speedup and block ratio come from `accel bench`'s `time_methods` (baseline and candidate
    interleaved on the first batch), and its PSNR from the bench's per-image rows."""
    import accel.tune.evaluate as ev
    from accel.eval.workload import make_workload

    calls = []
    real = ev.time_methods

    def spy(pipe, methods, workload, indices, apply, **kw):
        out = real(pipe, methods, workload, indices, apply, **kw)
        calls.append(([m.label for m in methods], list(indices), kw["repeats"], out))
        return out

    monkeypatch.setattr(ev, "time_methods", spy)
    pipe = accel.default_pipeline()
    wl = make_workload(pipe, 4, 0, 8, guidance=2.0, batch_size=2, num_classes=10)
    c = Candidate((("interval-cache", (("forecast", 0), ("interval", 2), ("warmup", 1))),))
    r = ev.Evaluator(pipe, wl, accel.methods()).evaluate(c, 4)
    [(labels, idx, repeats, out)] = calls
    assert labels == ["baseline", "candidate"] and idx == [0, 1] and repeats == 2
    assert len(out["candidate"].timing.times) == len(out["baseline"].timing.times) == 2
    assert r["speedup"] == out["baseline"].timing.median / out["candidate"].timing.median
    assert r["block_ratio"] == out["candidate"].block_evals / out["baseline"].block_evals < 1
    assert r["psnr"] is not None and 0 < r["psnr"] < 200 and 0 < r["ssim"] <= 1
