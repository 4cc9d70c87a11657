"""A user's first hour (issue 30): one-line apply strings, presets that say where they were measured,
presets and method defaults on a bare transformer, one-line notes when a method does nothing, the
per-call-overhead timing verdict and `accel inspect`."""

from __future__ import annotations

import json

import pytest
import torch

import accel
from accel.eval.paired import method_warnings
from accel.presets import NAMES, provenance
from accel.specs import SpecError, configs_from_spec
from accel.testing import (
    FAMILIES,
    pipeline_inputs,
    run_tiny,
    tiny_pipeline,
    tiny_transformer,
    tiny_wan22_pipeline,
    transformer_inputs,
    wan_inputs,
)


# -- one-line apply ----------------------------------------------------------------------------
def test_apply_strings_are_the_cli_spellings():
    pipe = tiny_pipeline("dit")
    assert configs_from_spec("delta-cache", pipe) == [accel.DeltaCacheConfig()]
    assert configs_from_spec(" delta-cache:interval=3,boundary=12 ", pipe) == [
        accel.DeltaCacheConfig(interval=3, boundary=12)]  # "12" an int step, as on the command line
    assert configs_from_spec("interval-cache+tome:ratio=0.3", pipe) == [
        accel.IntervalCacheConfig(), accel.TomeConfig(ratio=0.3)]
    assert configs_from_spec("balanced", pipe) == accel.preset("balanced", pipe)
    for bad, says in (("nope", "unknown method 'nope'"), ("tome:bogus=1", "no option 'bogus'"),
                      ("tome:ratio=lots", "expected a number"), ("", "empty method spec")):
        with pytest.raises(SpecError, match=says):
            accel.apply(pipe, bad)
    assert accel.apply(pipe, "delta-cache").remove() is None  # refused specs left nothing installed


def test_apply_string_runs_exactly_as_the_config_object():
    pipe = tiny_pipeline("dit")
    with accel.apply(pipe, "interval-cache:interval=2,forecast=0"):
        by_name = run_tiny(pipe, "dit", steps=10)
    with accel.apply(pipe, accel.IntervalCacheConfig(interval=2, forecast=0)):
        by_config = run_tiny(pipe, "dit", steps=10)
    plain = run_tiny(pipe, "dit", steps=10)
    assert torch.equal(by_name, by_config)
    assert not torch.equal(by_name, plain)  # the cache did skip work


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_preset_says_where_it_was_measured(family):
    pipe = tiny_pipeline(family)
    where = {"dit": "tuned on: embedded digits DiT (DiT blocks)",
             "sd3": "tuned on: embedded flow model (SD3 blocks)"}.get(family, "generic cache settings")
    for name in NAMES:
        with accel.apply(pipe, name) as h:
            assert h.configs == tuple(accel.preset(name, pipe))
            assert f"preset {name}, {where}" in repr(h)
            assert h.stats()["preset"].startswith(f"preset {name}, {where}")
    with accel.apply(pipe, "residual-cache") as h:  # not a preset: nothing claimed
        assert "preset" not in h.stats() and "tuned on" not in repr(h)


def test_every_registered_family_has_presets():
    from accel.families import registered_families

    fams = registered_families()
    assert len(fams) > 50
    said = {provenance(f.name) for f in fams}
    assert said == {provenance("dit"), provenance("sd3"), provenance("flux")}
    assert provenance("flux").startswith("generic cache settings") and "tuned on" not in provenance("flux")


# -- bare transformers -------------------------------------------------------------------------
def _denoise(model, family, steps, batch=2):
    """A user's own loop: the bare transformer called at falling timesteps."""
    inputs = transformer_inputs(family, model, batch=batch)
    out = None
    for t in torch.linspace(900, 100, steps):
        kw = dict(inputs, timestep=torch.full((batch,), float(t) / (1000 if family == "flux" else 1)))
        with torch.no_grad():
            out = model(**kw)[0]
    return out


@pytest.mark.parametrize("family", FAMILIES)
def test_every_preset_and_method_default_runs_on_a_bare_transformer(family):
    model = tiny_transformer(family)
    specs = list(NAMES) + [n for n, c in accel.methods().items()
                           if getattr(c, "accelerates", True) and n != "schedule-cache"]
    for spec in specs:
        with accel.apply(model, spec) as h:
            out = _denoise(model, family, steps=4)
            _denoise(model, family, steps=4)
            total = h.stats()["total"]
        assert torch.isfinite(out).all(), spec
        assert total["pipeline_calls"] == 2 and total["steps"] == 8, (spec, total)
    # the one calibrated method says what it needs, in one line
    with pytest.raises(ValueError, match="schedule-cache needs a pipeline"):
        accel.apply(model, "schedule-cache")


def test_a_step_fraction_resolves_from_counted_steps_on_a_bare_transformer():
    model = tiny_transformer("dit")
    with accel.apply(model, accel.DeltaCacheConfig(interval=2)) as h:
        cache = h._installed[0][1]
        _denoise(model, "dit", steps=10)
        assert cache.boundary_step() == 30  # first call: 0.6 of accel.context.UNKNOWN_STEPS (50)
        _denoise(model, "dit", steps=1)  # the next call starts: the previous one ran 10 steps
        assert cache.boundary_step() == 6
    pipe = tiny_pipeline("dit")
    with accel.apply(pipe, accel.DeltaCacheConfig(interval=2, min_steps=0)) as h:
        run_tiny(pipe, "dit", steps=5)
        assert h._installed[0][1].boundary_step() == 3  # a pipeline: the scheduler's count, round(0.6 * 5)


# -- a method that does nothing says so, in one line -------------------------------------------
def test_few_steps_below_min_steps_are_said_in_stats_and_bench_notes():
    pipe = tiny_pipeline("flux")  # Flux-schnell style: 4 steps with preset `fast`
    with accel.apply(pipe, "fast") as h:
        run_tiny(pipe, "flux", steps=4)
        warned = method_warnings(h)
        total = h.stats()["total"]
    assert total["block_evals"] == total["block_total"]  # every step computed ...
    assert warned == ["interval-cache: 4 steps < min_steps=8: every step computed (a fixed cache schedule at so few "
                      "steps loses too much quality; lower min_steps to force it)"]  # ... and said why
    with accel.apply(pipe, "fast") as h:
        run_tiny(pipe, "flux", steps=10)
        assert method_warnings(h) == []


def test_tome_on_one_token_per_frame_says_it_merged_nothing():
    pipe = tiny_wan22_pipeline()  # 16x16 pixels: one token per frame
    with accel.apply(pipe, "tome") as h:
        pipe(**wan_inputs(steps=2))
        warned = method_warnings(h)
    assert len(warned) == 1 and warned[0].startswith("tome: merged nothing")
    assert "one token per 1x2x2 window" in warned[0] and "st=2" in warned[0]
    image = tiny_pipeline("dit")  # an 8x8 latent grid merges: no note
    with accel.apply(image, "tome") as h:
        image(**pipeline_inputs("dit", steps=2))
        assert method_warnings(h) == [] and h.stats()["tome"]["total"]["flops_ratio"] < 1


# -- timing verdict ----------------------------------------------------------------------------
def test_timing_verdict_names_per_call_overhead_when_repeats_are_steady():
    from accel.eval import records
    from accel.eval.paired import TimedMethod
    from accel.eval.timing import OVERHEAD, Timing, timing_verdict

    base = Timing([0.20, 0.201, 0.199])
    steady = Timing([0.18, 0.181, 0.179])  # 1.1x where the skipped blocks allow 2.5x
    verdict, why = timing_verdict(base, steady, ideal=2.5)
    assert verdict == "unreliable" and OVERHEAD in why and "busy" not in why
    busy = Timing([0.1, 0.3, 0.12, 0.5, 0.09])
    verdict, why = timing_verdict(base, busy, ideal=2.5)
    assert verdict == "unreliable" and OVERHEAD not in why and "spread" in why
    recs = [{"method": "baseline", "timing_verdict": "ok", "timing_warning": None},
            {"method": "tiny", "timing_verdict": "unreliable", "timing_warning": timing_verdict(base, steady, 2.5)[1]}]
    timed = {r["method"]: TimedMethod(base, None, 10, 20, counts_vary=False, flops_ratio=None) for r in recs}
    notes = records.timing_notes(recs, timed)
    assert any("per-call overhead, not a busy machine" in n for n in notes)
    assert not any("as on a busy machine" in n for n in notes)


# -- accel inspect -----------------------------------------------------------------------------
def test_inspect_a_saved_pipeline_folder(tmp_path, capsys):
    from accel.cli import main

    tiny_wan22_pipeline().save_pretrained(tmp_path / "wan")
    assert main(["inspect", str(tmp_path / "wan")]) == 0
    out = capsys.readouterr().out
    assert "WanPipeline" in out
    assert "transformer: WanTransformer3DModel: registered as family 'wan'" in out
    assert "transformer_2: WanTransformer3DModel: registered" in out and "blocks: blocks[2]" in out
    assert "generic cache settings" in out and "delta-cache" in out
    assert main(["inspect", str(tmp_path / "wan" / "transformer"), "--json"]) == 0  # a transformer folder
    doc = json.loads(capsys.readouterr().out)
    (t,) = doc["transformers"]
    assert t["support"] == "registered" and t["methods"]["tome"] is None and t["blocks"] == [{"attr": "blocks",
                                                                                              "count": 2}]


def test_inspect_says_what_a_family_cannot_do_and_refuses_in_one_line(tmp_path, capsys):
    from accel.cli import main
    from accel.pipelines.inspect import describe_transformer

    qwen = describe_transformer("transformer", _meta("QwenImageTransformer2DModel", num_layers=2))
    assert qwen.support == "registered" and qwen.methods["delta-cache"] is None
    assert "tome is not available for QwenImageTransformer2DModel" in qwen.methods["tome"]
    assert main(["inspect", "someone/not-in-the-cache"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not in the Hugging Face cache" in err and "never downloads" in err
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline",
                                                           "unet": ["diffusers", "UNet2DConditionModel"]}))
    assert main(["inspect", str(tmp_path)]) == 2
    assert "has no transformer" in capsys.readouterr().err


def test_inspect_the_embedded_models(capsys):
    from accel.cli import main

    assert main(["inspect", "flow"]) == 0
    out = capsys.readouterr().out
    assert "SD3Transformer2DModel: registered as family 'sd3'" in out
    assert "tuned on: embedded flow model (SD3 blocks)" in out


def _meta(cls_name: str, **config):
    import diffusers

    with torch.device("meta"):
        return getattr(diffusers, cls_name)(**config)


# -- the quick no-flag bench -------------------------------------------------------------------
@pytest.mark.parametrize("argv,images,timing", [
    ([], 72, 4), (["--full"], 200, 8), (["--num-images", "30"], 30, 4), (["--full", "--timing-images", "2"], 200, 2),
])
def test_bench_run_size_quick_by_default_full_one_flag_away(argv, images, timing):
    from accel.cli import build_parser
    from accel.commands.bench import resolve_run_size

    args = build_parser().parse_args(["bench", *argv])
    resolve_run_size(args)
    assert (args.num_images, args.timing_images) == (images, timing)


def test_bench_quick_run_samples_the_default_model_with_fewer_steps():
    from accel.eval.prepare import BENCH_DEFAULT_STEPS, QUICK_STEPS, PrepareSettings, load_model

    quick = load_model(PrepareSettings(model="default", quick=True), "cpu", torch.float32)
    full = load_model(PrepareSettings(model="default"), "cpu", torch.float32)
    assert (quick.steps, full.steps) == (QUICK_STEPS, BENCH_DEFAULT_STEPS) == (10, 20)
    given = load_model(PrepareSettings(model="default", quick=True, steps=7), "cpu", torch.float32)
    assert given.steps == 7


def test_bench_progress_bar_counts_every_image_of_the_run():
    from accel.eval.bench import run_bar
    from accel.eval.methods import parse_methods
    from accel.eval.runtime import SingleProcess
    from accel.eval.workload import make_workload

    pipe = tiny_pipeline("dit")
    methods = parse_methods("baseline,tome,interval-cache", accel.methods())
    workloads = [make_workload(pipe, 10, 0, 4, batch_size=4, seed_set=k) for k in range(2)]
    bar = run_bar(workloads, methods, t_imgs=3, repeats=2, warmup=1, state=SingleProcess(), progress=False)
    assert bar.total == 2 * 10 * 3 + (1 + 2) * 3 * 3


def test_bench_table_shows_each_fd_change_with_its_paired_noise():
    from accel.eval import report

    recs = [{"method": "baseline", "fd": 2.0, "fd_name": "FD-digits"},
            {"method": "tome", "fd": 2.1, "fd_delta_noise": 0.05},
            {"method": "interval-cache", "fd": 1.9, "fd_delta_noise": 0.2}]
    head, rows = report.table_cells(recs)
    assert head[1] == "FD-digits (change ±paired noise)"
    assert [r[1] for r in rows] == ["2", "2.1 (+5.0% ±2.5%)", "1.9 (-5.0% ±10.0%)"]
    vs_base = [{"method": "baseline", "fd": 0.0}, {"method": "tome", "fd": 0.4, "fd_delta_noise": 0.1}]
    assert report.table_cells(vs_base)[1][1][1] == "0.4 (+0.4 ±0.1)"  # FD to the baseline's own images


def test_preset_demo_prints_what_a_method_could_not_do(tmp_path, capsys):
    """Flux-schnell style: preset `fast` at 4 steps computes every step (min_steps) and the demo says why."""
    import importlib.util
    import sys
    from pathlib import Path

    scripts = Path(__file__).resolve().parent.parent / "scripts"
    sys.path.insert(0, str(scripts))
    try:
        spec = importlib.util.spec_from_file_location("demo_preset_userpath", scripts / "demo_preset.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = mod
        spec.loader.exec_module(mod)
        rc = mod.main(["--family", "flux", "--preset", "fast", "--steps", "4", "--num-images", "2", "--batch-size",
                       "2", "--repeats", "1", "--warmup", "0", "--quiet", "--out", str(tmp_path)])
    finally:
        sys.path.remove(str(scripts))
    assert rc == 0
    out = capsys.readouterr().out
    assert "note: interval-cache: 4 steps < min_steps=8: every step computed" in out
    assert "note: preset fast, generic cache settings" in out


def test_quick_bench_note_says_how_it_differs_from_the_full_table():
    from accel.cli import build_parser
    from accel.commands.bench import quick_note, resolve_run_size

    args = build_parser().parse_args(["bench"])
    resolve_run_size(args)
    note = quick_note(args, 10)
    assert note.startswith("quick run (72 images, 10 steps)") and "--full" in note and "at 20 steps there" in note
    args = build_parser().parse_args(["bench", "--model", "DIR", "--steps", "10"])
    resolve_run_size(args)
    assert "at 20 steps there" not in quick_note(args, 10)  # the user chose the steps
