"""The caching benchmark's curve arithmetic (benchmarks/_curves.py) on hand-made curves."""

import json
import math
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from _curves import at_speed, format_matched, front, matched_speed_table  # noqa: E402


def test_front_drops_dominated_points_and_sorts_by_speed():
    pts = [(2.0, 30.0, 5.0), (1.5, 28.0, 6.0), (1.2, 35.0, 4.0), (3.0, 20.0, 9.0)]
    # (1.5, 28) is beaten by (2.0, 30): faster and more PSNR
    assert front(pts) == [(1.2, 35.0, 4.0), (2.0, 30.0, 5.0), (3.0, 20.0, 9.0)]


def _mixed(p0, p1, w):  # PSNR of running two settings on shares (1 - w, w) of the images
    return -10 * math.log10((1 - w) * 10 ** (-p0 / 10) + w * 10 ** (-p1 / 10))


def _share(s0, s1, s):  # the faster setting's share of the images for an average speed s (time per image)
    return (1 / s0 - 1 / s) / (1 / s0 - 1 / s1)


def test_at_speed_mixes_two_settings_by_time_per_image_inside_the_span_only():
    pts = [(1.0, 40.0, 2.0), (2.0, 30.0, 4.0), (3.0, 20.0, 10.0)]
    w = _share(1.0, 2.0, 1.5)
    assert w == pytest.approx(2 / 3)  # 1/1.5 s per image: 1/3 of the images at 1 s, 2/3 at 0.5 s
    assert at_speed(pts, 1.5) == pytest.approx((_mixed(40, 30, w), 2.0 + 2.0 * w))
    assert at_speed(pts, 1.5)[0] < 35.0  # below the dB midpoint: the dB line overstates the mix
    assert at_speed(pts, 2.5) == pytest.approx((_mixed(30, 20, _share(2, 3, 2.5)), 4.0 + 6.0 * _share(2, 3, 2.5)))
    assert at_speed(pts, 3.0) == pytest.approx((20.0, 10.0))
    assert at_speed(pts, 3.01) is None  # not reached: no extrapolation
    assert at_speed(pts, 0.9) is None
    assert at_speed([(2.0, 30.0, None)], 2.0) == (30.0, None)


def test_at_speed_takes_the_best_pair_and_mixes_with_the_baseline_below_a_lines_slowest_setting():
    # the middle point lies above the hull: mixing 1.0x and 3.0x beats it at 2x, so it must not lower the line
    pts = [(1.0, 40.0, None), (2.0, 25.0, None), (3.0, 30.0, None)]
    w = _share(1.0, 3.0, 2.0)
    assert at_speed(pts, 2.0)[0] == pytest.approx(_mixed(40, 30, w))
    assert at_speed(pts, 2.0)[0] > at_speed([pts[0], pts[1]], 2.0)[0]
    # a line that starts at 1.92x reaches 1.5x by running the baseline (exact: MSE 0) on a share
    base = (1.0, math.inf, 100.0)
    psnr, fd = at_speed([(1.92, 46.9, 101.0)], 1.5, base)
    w = _share(1.0, 1.92, 1.5)
    assert psnr == pytest.approx(46.9 - 10 * math.log10(w)) and fd == pytest.approx(100.0 + w)
    assert at_speed([(1.92, 46.9, 101.0)], 1.5) is None  # no baseline given: not reached
    assert at_speed([(1.92, 46.9, 101.0)], 2.0, base) is None  # never beyond the fastest setting


def test_matched_table_picks_best_line_per_side_and_says_not_reached():
    lines = {
        "a1": [(1.4, 38.0, 1.0), (2.1, 33.0, 1.5)],
        "a2": [(1.2, 40.0, 1.0), (3.2, 24.0, 3.0)],
        "p1": [(1.5, 36.0, 1.2), (2.6, 31.0, 2.0)],
    }
    sides = {"a1": "accel", "a2": "accel", "p1": "peer"}
    rows = matched_speed_table(lines, sides, (1.5, 2.0, 2.5, 3.0))
    r15, r20, r25, r30 = rows
    # at 1.5x: a1 mixes to 36.4, a2 to 28.7 (the dB line would say 37.6: a2) -> a1 is best accel; p1 = 36.0
    assert r15["best_accel"]["line"] == "a1"
    assert r15["best_accel"]["psnr"] == pytest.approx(_mixed(38, 33, _share(1.4, 2.1, 1.5)))
    assert r15["best_peer"]["psnr"] == pytest.approx(36.0) and r15["accel_ahead"] is True
    assert r20["best_accel"]["line"] == "a1"
    # at 2.5x only a2 spans on the accel side; the peer is ahead
    assert r25["best_accel"]["psnr"] == pytest.approx(_mixed(40, 24, _share(1.2, 3.2, 2.5)))
    assert r25["best_peer"]["psnr"] == pytest.approx(_mixed(36, 31, _share(1.5, 2.6, 2.5)))
    assert r25["accel_ahead"] is False
    assert r30["best_peer"] is None and r30["accel_ahead"] is None  # the peer's curve stops at 2.6x
    text = format_matched(rows, "FD")
    assert "not reached" in text.splitlines()[4] and "PEER" in text.splitlines()[3]
    # with the baseline's FD given, every line reaches the speeds below its slowest setting
    rows = matched_speed_table({"p1": [(1.92, 46.9, 101.0)]}, {"p1": "peer"}, (1.5,), base_fd=100.0)
    assert rows[0]["best_peer"]["psnr"] > 46.9 and rows[0]["best_accel"] is None


def test_flow_workload_asks_each_image_for_its_digit_in_words():
    import caching  # noqa: E402 - benchmarks/ is on sys.path above

    assert caching.WORKLOADS["flow28"] == ("flow-euler", 28) and caching.WORKLOADS["flow8"] == ("flow-euler", 8)
    flow = caching.Model(pipe=None, name="flow model", guidance=5.0, prompts=True, call_kwargs={})
    assert flow.condition_kwargs([1, 7]) == {"prompt": ["a handwritten one", "a handwritten seven"]}
    default = caching.Model(pipe=None, name="default model", guidance=2.0, prompts=False, call_kwargs={})
    assert default.condition_kwargs([1, 7]) == {"class_labels": [1, 7]}


def test_diffusers_taylorseer_on_sd3_runs_without_the_last_block_and_fails_with_it():
    from accel.testing import run_tiny, tiny_pipeline
    from peers import DiffusersTaylorSeer, apply_with_peers

    pipe = tiny_pipeline("sd3", num_layers=3)
    h = apply_with_peers(pipe, [DiffusersTaylorSeer(cache_interval=2, disable_cache_before_step=1)])
    try:
        run_tiny(pipe, "sd3", steps=5)
        t = h.stats()["total"]
    finally:
        h.remove()
    # 5 steps x 3 blocks; the last (context_pre_only) block always runs, the other two are forecast at 2 steps
    assert t["block_total"] == 15 and t["block_evals"] == 11
    h = apply_with_peers(pipe, [DiffusersTaylorSeer(cache_interval=2, disable_cache_before_step=1, all_blocks=True)])
    try:
        with pytest.raises(AttributeError, match="'NoneType' object has no attribute 'dtype'"):
            run_tiny(pipe, "sd3", steps=5)
    finally:
        h.remove()


@pytest.mark.parametrize("workload", ["dpm20", "dpm50", "ddim50", "flow28", "flow8"])
def test_each_workloads_settings_have_unique_labels(workload):
    # images and timings are keyed by label: two settings with one label would overwrite each other
    # (TaylorSeer's (2, 2 * steps // 5) and (2, 3) were the same setting at 8 steps)
    import caching  # noqa: E402

    steps = caching.WORKLOADS[workload][1]
    settings = caching.accel_settings(steps) + caching.peer_settings(steps, (1.0,) * steps, taylorseer_all_blocks=True)
    labels = [s.label for s in settings]
    assert len(set(labels)) == len(labels)
    assert all(sum(s.line == line for s in settings) >= 4 for line in {s.line for s in settings} - {
        "diffusers-taylorseer-allblocks", "cache-dit-F8B0"})


@pytest.mark.parametrize("workload", ["dpm20", "dpm50", "ddim50", "flow28", "flow8"])
def test_frontier_selection_has_an_ideal_setting_near_every_target_speed(workload):
    # the deterministic frontier lines, by their budgets arithmetic: within 0.15x of 1.5/2/2.5/3/4x, except
    # what whole steps cannot reach (8 steps: 2.5 and 3x; 50 steps: 4x, bracketed by 3.85x and 4.17x), bracketed
    import caching  # noqa: E402
    from types import SimpleNamespace

    steps = caching.WORKLOADS[workload][1]
    settings = caching.accel_settings(steps) + caching.peer_settings(steps, (1.0,) * steps, taylorseer_all_blocks=True)
    chosen = caching.select(settings, SimpleNamespace(settings="frontier", lines=""))
    assert {s.line for s in chosen if s.side == "accel"} == set(caching.FRONTIER_LINES)
    assert {s.line for s in chosen if s.side == "peer"} == {s.line for s in settings if s.side == "peer"}
    assert len(chosen) < len(settings)
    # residual-cache and verify-then-reuse are adaptive: their speed is measured, not set
    for line in set(caching.FRONTIER_LINES) - {"residual-cache+f1", "schedule-cache+f1+verify"}:
        speeds = [caching.setting_ideal(s, steps) for s in chosen if s.line == line]
        assert None not in speeds and len(speeds) >= 4
        assert min(speeds) <= 1.5 and max(speeds) >= 4.0, (line, speeds)  # the matched table does not extrapolate
        for t in caching.TARGET_SPEEDS:
            near = any(abs(v - t) <= caching.DENSITY_TOLERANCE for v in speeds)
            bracketed = any(v < t for v in speeds) and any(v > t for v in speeds)
            if steps == 8 and t in (2.5, 3.0):  # whole steps: 8/3 = 2.67x; delta-cache 2.34/2.67/3.2x
                assert not near and bracketed, (line, t, speeds)
            elif steps == 50 and t == 4.0 and not line.startswith("delta"):
                assert not near and bracketed, (line, t, speeds)
            else:
                assert near, (line, t, speeds)


@pytest.mark.parametrize("workload", ["dpm20", "flow8"])
def test_minimax_lines_run_schedule_cache_budgets_with_the_max_objective(workload):
    # +f1+max / +fpc+max pair with +f1 / +fpc: the same budgets (so the same block counts), only the DP's
    # objective differs
    import caching  # noqa: E402

    steps = caching.WORKLOADS[workload][1]
    settings = caching.accel_settings(steps)
    for f in ("1", "pc"):
        plain = [s.config for s in settings if s.line == f"schedule-cache+f{f}"]
        minimax = [s.config for s in settings if s.line == f"schedule-cache+f{f}+max"]
        assert [c.budget for c in minimax] == [c.budget for c in plain] and len(plain) >= 4
        assert {c.objective for c in minimax} == {"max"} and {c.objective for c in plain} == {"sum"}
        assert {c.forecast for c in minimax} == {c.forecast for c in plain}


def test_interval_grid_runs_each_warm_up_beside_its_same_cost_twin_at_the_other_phase():
    import caching  # noqa: E402

    assert caching.phase_twin(50, 2, 16) == 15 and caching.phase_twin(50, 2, 17) == 18
    assert caching.phase_twin(50, 2, 0) is None  # step 0 always computes: no other phase
    for steps in (8, 20, 28, 50):
        grid = caching.interval_grid(steps)
        for k, w in grid:
            v = caching.phase_twin(steps, k, w)
            if v is not None:
                assert (k, v) in grid
                assert caching.interval_computed(steps, k, v) == caching.interval_computed(steps, k, w)
                assert caching.computes_last(steps, k, v) != caching.computes_last(steps, k, w)
    # the arithmetic is interval-cache's own rule: step s computes if s < warmup or (s - warmup) % k == 0
    for k, w in ((2, 15), (2, 16), (3, 4), (3, 5)):
        assert caching.computes_last(50, k, w) == ((49 - w) % k == 0)
        assert caching.interval_computed(50, k, w) == sum(s < w or (s - w) % k == 0 for s in range(50))


def test_ideal_arithmetic_matches_the_block_counts_of_interval_and_delta_cache():
    import accel
    import caching  # noqa: E402
    from accel.testing import run_tiny, tiny_pipeline

    pipe = tiny_pipeline("dit", num_layers=3)
    m = accel.methods()
    for k, w, c in ((2, 0, 0), (3, 2, 0), (5, 1, 0), (2, 0, 1), (3, 1, 2), (7, 0, 1)):
        with accel.apply(pipe, m["interval-cache"](interval=k, warmup=w, cooldown=c, min_steps=0)) as h:
            run_tiny(pipe, "dit", steps=8)
            t = h.stats()["total"]
        assert t["block_evals"] == 3 * caching.interval_computed(8, k, w, c)
    assert caching.interval_computed(8, 7, 0, 1) == 2 and caching.interval_computed(20, 2, 0, 1) == 11
    for k, c in ((2, 2), (3, 3)):
        with accel.apply(pipe, m["delta-cache"](interval=k, cached_blocks=c)) as h:
            run_tiny(pipe, "dit", steps=8)
            t = h.stats()["total"]
        assert t["block_evals"] == caching.delta_evals(8, k, c, blocks=3)
    assert caching.schedule_computed(20, 0.333) == 7 and caching.schedule_computed(50, 0.25) == 13


@pytest.mark.skipif(not __import__("importlib").util.find_spec("cache_dit"), reason="cache-dit not installed")
def test_cache_dit_dmd_foca_and_scm_install_run_and_remove_cleanly():
    import cache_dit
    from accel.testing import run_tiny, tiny_pipeline
    from peers import CacheDitDBCache, apply_with_peers

    pipe = tiny_pipeline("dit", num_layers=3)
    before = run_tiny(pipe, "dit", steps=8)
    for cfg in (CacheDitDBCache(threshold=10.0, warmup=1, calibrator="dmd"),
                CacheDitDBCache(threshold=10.0, warmup=1, calibrator="foca"),
                CacheDitDBCache(threshold=0.0, scm="fast", scm_policy="static", steps=8)):
        h = apply_with_peers(pipe, [cfg])
        try:
            out = run_tiny(pipe, "dit", steps=8)
            t = h.stats()["total"]
        finally:
            h.remove()
        assert torch.isfinite(out).all() and not torch.equal(out, before)
        if cfg.scm:  # static: the mask's 0 steps run only block 0 (Fn=1), whatever the threshold
            mask = cache_dit.steps_mask(mask_policy="fast", total_steps=8)
            assert t["block_evals"] == 3 * sum(mask) + (8 - sum(mask))
        else:  # threshold 10 reuses every step after the warm-up: block 0 runs on the other 7
            assert t["block_evals"] == 3 + 7
        assert torch.equal(run_tiny(pipe, "dit", steps=8), before)  # removed: the plain images again


@pytest.mark.skipif(not __import__("importlib").util.find_spec("cache_dit"), reason="cache-dit not installed")
def test_cache_dit_calibrator_failing_on_sd3_is_kept_as_a_note_and_its_noenc_line_runs():
    import caching  # noqa: E402
    from accel.testing import run_tiny, tiny_pipeline

    pipe = tiny_pipeline("sd3", num_layers=3)
    settings = [s for s in caching.cache_dit_calibrator_settings(8, (10.0, 10.0, 10.0), 1, noenc=True)
                if s.line in ("cache-dit-F1B0+dmd", "cache-dit-F1B0+dmd-noenc")]
    notes: list[str] = []
    ok = caching.applicable(pipe, settings, notes, smoke=lambda: run_tiny(pipe, "sd3", steps=8))
    assert {s.line for s in ok} == {"cache-dit-F1B0+dmd-noenc"}
    assert len(notes) == 1 and "State 'transformer_blocks_Bn_residual' not found" in notes[0]
    assert "(line cache-dit-F1B0+dmd dropped)" in notes[0]


def test_caching_table_sets_accels_4x_against_the_best_peer_at_3x():
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
    import caching_table  # noqa: E402

    def row(s, a, p):
        return {"speedup": s, "best_accel": a and {"line": "schedule-cache+f1", "psnr": a, "fd": 1.0},
                "best_peer": p and {"line": "cache-dit-F1B0+dmd", "psnr": p, "fd": 1.0}}

    doc = {"workload": {"num_images": 100}, "records": [{"method": "baseline", "fd": 1.0}],
           "matched_speed": [row(1.5, 40.0, 38.0), row(2.0, 36.0, 35.5), row(2.5, 33.0, None), row(3.0, 30.0, 27.0),
                             row(4.0, 28.0, None)]}
    assert caching_table.four_x(doc) == "28.0 vs 27.0"
    assert caching_table.cell(doc, 2.0) == "**36.0 vs 35.5 (+0.5)**"  # under the 1 dB margin: bold
    assert "4x schedule-cache+f1 / -" in caching_table.winners(doc) and caching_table._num_images(doc) == "100"
    del doc["matched_speed"][-1]
    assert caching_table.four_x(doc) == "no 4x row"


def test_caching_table_at_least_rule_takes_the_best_measured_setting_at_least_that_fast(tmp_path):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
    import caching_table  # noqa: E402

    def pts(*sp):
        return [{"speedup": s, "psnr": p, "fd": 100.0 + s} for s, p in sp]

    doc = {"workload": {"num_images": 100}, "records": [{"method": "baseline", "fd": 100.0}],
           "curves": {"a1": {"side": "accel", "points": pts((1.43, 47.0), (1.52, 44.0), (2.0, 42.0))},
                      "a2": {"side": "accel", "points": pts((1.92, 45.0), (4.2, 30.0))},
                      "p1": {"side": "peer", "points": pts((1.43, 46.0), (1.92, 42.5), (2.63, 37.0))}}}
    rows = {r["speedup"]: r for r in caching_table.at_least_rows(doc)}
    # 1.43x points are below 1.5x: not counted; a2's 1.92x point is the best at >= 1.5x
    assert rows[1.5]["best_accel"] == {"line": "a2", "psnr": 45.0, "fd": 101.92}
    assert rows[1.5]["best_peer"]["psnr"] == 42.5 and rows[2.0]["best_peer"]["psnr"] == 37.0
    assert rows[3.0]["best_peer"] is None and rows[4.0]["best_accel"]["psnr"] == 30.0
    (tmp_path / "c-dpm50.json").write_text(json.dumps(doc))
    line = caching_table.table(str(tmp_path / "c-"), ["dpm50"], rule="at-least").splitlines()[2]
    assert line.startswith("| dpm50 (100) | 45.0 vs 42.5 (+2.5) | 42.0 vs 37.0 (+5.0) |")
    # the matched rule recomputes the rows from the curves (no stored matched_speed here): at 1.5x a2 runs
    # the baseline on 30% of the images (46.6 dB) and p1 mixes 1.43x with 1.92x (45.1 dB)
    line = caching_table.table(str(tmp_path / "c-"), ["dpm50"]).splitlines()[2]
    assert line.startswith("| dpm50 (100) | 46.6 vs 45.1 (+1.5) |")


def test_caching_table_merges_companion_runs_on_the_same_images_and_refuses_others(tmp_path):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
    import caching_table  # noqa: E402

    def doc(seed, **curves):
        return {"workload": {"workload": "dpm50", "num_images": 100}, "records": [{"method": "baseline", "fd": 1.0}],
                "meta": {"command": ["python", "benchmarks/caching.py", "--seed", str(seed)]},
                "curves": {n: {"side": "accel" if n[0] == "a" else "peer",
                               "points": [{"speedup": s, "psnr": q, "fd": 1.0} for s, q in pts]}
                           for n, pts in curves.items()}}

    (tmp_path / "c-dpm50.json").write_text(json.dumps(doc(20020, a=[(2.0, 40.0)], p=[(2.0, 41.0)])))
    before = caching_table.table(str(tmp_path / "c-"), ["dpm50"]).splitlines()[2]
    assert "| **40.0 vs 41.0 (-1.0)** |" in before  # 2x: the peer leads
    # the phase run adds a point to line a on the same images: it now leads at 2x
    (tmp_path / "c-dpm50-phase.json").write_text(json.dumps(doc(20020, a=[(2.0, 40.0), (2.0, 43.0)])))
    rows = caching_table.table(str(tmp_path / "c-"), ["dpm50"]).splitlines()
    assert "| 43.0 vs 41.0 (+2.0) |" in rows[2] and "`c-dpm50-phase.json`" in rows[-1]
    (tmp_path / "c-dpm50-phase.json").write_text(json.dumps(doc(20000, a=[(2.0, 43.0)])))  # other seeds
    with pytest.raises(ValueError, match="other images"):
        caching_table.table(str(tmp_path / "c-"), ["dpm50"])


def test_caching_table_on_measured_speed_takes_each_settings_timed_speedup(tmp_path):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
    import caching_table  # noqa: E402

    def rec(method, line, side, psnr, qi):
        return {"method": method, "line": line, "side": side, "psnr": psnr, "fd": 1.0, "quality_ideal_speedup": qi}

    doc = {"workload": {"workload": "dpm50", "num_images": 100}, "curves": {},
           "records": [{"method": "baseline", "fd": 1.0, "psnr": None},
                       rec("a:x", "a", "accel", 44.0, 2.0), rec("p:y", "p", "peer", 43.0, 2.0),
                       rec("p:z", "p", "peer", 40.0, 2.5), rec("a:new", "a", "accel", 50.0, 1.9)]}
    timing = {"records": [{"method": "baseline", "speedup": 1.0, "ideal_speedup": 1.0},
                          {"method": "a:x", "speedup": 1.8, "ideal_speedup": 2.0},
                          {"method": "p:y", "speedup": 1.6, "ideal_speedup": 2.0},
                          # an adaptive setting that skipped more in its timed batch: scaled to this run's counts
                          {"method": "p:z", "speedup": 2.7, "ideal_speedup": 3.0}]}
    out = caching_table.on_measured_speed(doc, timing)
    assert out["curves"]["a"]["points"] == [{"speedup": 1.8, "psnr": 44.0, "fd": 1.0}]
    assert [q["speedup"] for q in out["curves"]["p"]["points"]] == pytest.approx([1.6, 2.7 * 2.5 / 3.0])
    assert out["untimed"] == ["a:new"]
    (tmp_path / "c-dpm50.json").write_text(json.dumps(doc))
    assert "no timing run" in caching_table.table(str(tmp_path / "c-"), ["dpm50"], speed="measured")
    (tmp_path / "c-dpm50-timing.json").write_text(json.dumps(timing))
    rows = caching_table.table(str(tmp_path / "c-"), ["dpm50"], speed="measured").splitlines()
    # 1.5x: a at 1.8x (44.0) mixed with the baseline, p at 1.6x (43.0) likewise; "a:new" is left out
    assert rows[2].startswith("| dpm50 (100) | 45.2 vs 43.5 (+1.7) |") and "untimed, left out: a:new" in rows[-1]
    assert "`c-dpm50-timing.json`" in rows[-1]


def test_caching_table_takes_the_held_out_run_before_the_screen_and_the_screen_before_nothing(tmp_path):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
    import caching_table  # noqa: E402

    def doc(n, psnr):
        return {"workload": {"num_images": n}, "records": [{"method": "baseline", "fd": 1.0}],
                "matched_speed": [{"speedup": 1.5, "best_accel": {"line": "a", "psnr": psnr, "fd": 1.0},
                                   "best_peer": {"line": "p", "psnr": 30.0, "fd": 1.0}}]}

    (tmp_path / "c-dpm20-20img.json").write_text(json.dumps(doc(20, 33.0)))
    (tmp_path / "c-dpm50-20img.json").write_text(json.dumps(doc(20, 34.0)))
    (tmp_path / "c-dpm50.json").write_text(json.dumps(doc(100, 35.0)))
    rows = caching_table.table(str(tmp_path / "c-"), ["dpm20", "dpm50", "flow8"]).splitlines()
    assert rows[2].startswith("| dpm20 (20) | 33.0 vs 30.0") and "`c-dpm20-20img.json`" in rows[-2]
    assert rows[3].startswith("| dpm50 (100) | 35.0 vs 30.0") and "`c-dpm50.json`" in rows[-1]
    assert rows[4].startswith("| flow8 | not run")


def test_contenders_keep_lines_near_their_sides_best_and_unscreened_lines(tmp_path):
    import json
    from types import SimpleNamespace

    import caching  # noqa: E402

    def row(speed, **psnr):
        lines = {n: (None if v is None else {"psnr": v, "fd": 1.0}) for n, v in psnr.items()}
        best = {side: max(((v, n) for n, v in psnr.items() if v is not None and n.startswith(side[0])), default=None)
                for side in ("accel", "peer")}
        return {"speedup": speed, "lines": lines,
                **{f"best_{k}": b and {"line": b[1], "psnr": b[0], "fd": 1.0} for k, b in best.items()}}

    # "a..." lines are accel's, "p..." the peers'; each side is measured against its own best
    doc = {"workload": {"workload": "dpm20", "num_images": 20},
           "curves": {n: {"side": "accel" if n[0] == "a" else "peer"} for n in ("a1", "a2", "p1", "p2", "p3")},
           "matched_speed": [row(1.5, a1=40.0, a2=37.0, p1=30.0, p2=29.5, p3=20.0),
                             row(3.0, a1=30.0, a2=31.0, p1=26.0, p2=25.0, p3=22.0),
                             row(4.0, a1=None, a2=28.0, p1=None, p2=None, p3=None)]}
    kept, dropped = caching.contenders(doc, margin=2.0)
    assert kept == {"a1", "a2", "p1", "p2"} and dropped == {"p3"}  # a2 leads at 3x; p3 is > 2 dB behind at both
    assert caching.contenders(doc, margin=0.0)[1] == {"p2", "p3"}

    path = tmp_path / "screen.json"
    path.write_text(json.dumps(doc))
    settings = caching.accel_settings(20) + caching.peer_settings(20, (1.0,) * 20)
    args = SimpleNamespace(settings="frontier", lines="", contenders=path, margin=2.0, workload="dpm20")
    notes: list[str] = []
    caching.read_contenders(args, notes)
    assert args.screened_out == {"p3"} and "screened out" in notes[0]
    doc["curves"]["diffusers-fbc"] = {"side": "peer"}  # screened out: no matched-speed value within the margin
    path.write_text(json.dumps(doc))
    caching.read_contenders(args, [])
    chosen = caching.select(settings, args)
    assert "diffusers-fbc" not in {s.line for s in chosen}
    assert "diffusers-taylorseer" in {s.line for s in chosen}  # not in the screening file: kept (cache-dit may be absent)
    with pytest.raises(SystemExit, match="workload 'dpm20', not 'flow8'"):
        caching.read_contenders(SimpleNamespace(contenders=path, margin=2.0, workload="flow8"), [])
