"""Block caches (delta-cache, interval-cache, residual-cache): schedules, arithmetic, exactness, CFG, undo."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
import torch
from diffusers.hooks import ModelHook

import accel
from accel.caching import DeltaCacheConfig, IntervalCacheConfig, ResidualCacheConfig
from accel.caching.forecast import forecast_step
from accel.families import blocks_of
from accel.hooks import HookSet
from accel.testing import pipeline_inputs, tiny_pipeline, tiny_transformer, transformer_inputs


def _run(pipe, family: str, **kw: Any) -> torch.Tensor:
    """Latents (no VAE decode: faster, and the transformer is what caches change)."""
    inputs = pipeline_inputs(family, **kw)
    if family != "dit":  # DiTPipeline has no latent output
        inputs["output_type"] = "latent"
    return torch.as_tensor(pipe(**inputs).images)


class _Probe:
    """Records, per transformer call, which blocks really ran (innermost hook) and the
    (hidden, encoder) input of block `first` and output of block `last` (torch hooks,
    which fire for skipped blocks too: they see what the cache hands on)."""

    def __init__(self, model: torch.nn.Module, first: int = 0, last: int = -1):
        self.model = model
        self.blocks = blocks_of(model)
        self.calls: list[dict] = []  # {"info", "ran", "h_in", "out"}
        self._hooks = HookSet(model)
        self._torch: list = []
        probe = self

        class Ran(ModelHook):
            def __init__(self, index: int):
                super().__init__()
                self.index = index

            def pre_forward(self, module, *args, **kwargs):
                probe.calls[-1]["ran"].append(self.index)
                return args, kwargs

        for ref in self.blocks:
            self._hooks.add(ref.module, Ran(ref.global_index), "test.probe")
        self._first, self._last = self.blocks[first], self.blocks[last]
        self._torch.append(self._first.module.register_forward_pre_hook(self._record_in, with_kwargs=True))
        self._torch.append(self._last.module.register_forward_hook(self._record_out))

    def _record_in(self, module, args, kwargs) -> None:
        self.calls[-1]["h_in"] = self._first.io.inputs(args, kwargs)

    def _record_out(self, module, args, out) -> None:
        self.calls[-1]["out"] = self._last.io.outputs(out)

    def attach(self, handle: accel.Handle) -> "_Probe":
        handle.target.tracker.listeners.insert(0, lambda info: self.calls.append({"info": info, "ran": []}))
        return self

    def ran(self, call: int = 0) -> dict[tuple[int, int], list[int]]:
        """(step, branch) -> blocks computed, for one pipeline call."""
        return {(c["info"].step, c["info"].branch): c["ran"] for c in self.calls if c["info"].call == call}

    def delta(self, i: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Offset of the probed run in transformer call i: out(last) − in(first)."""
        (h, e), (ho, eo) = self.calls[i]["h_in"], self.calls[i]["out"]
        return ho - h, None if eo is None else eo - e

    def remove(self) -> None:
        for h in self._torch:
            h.remove()
        self._hooks.remove()


@contextlib.contextmanager
def _probed(target, *configs, first: int = 0, last: int = -1):
    """accel.apply(target, *configs) with a `_Probe` installed first (so its block hook is innermost)."""
    model = target if isinstance(target, torch.nn.Module) else target.transformer
    probe = _Probe(model, first, last)
    try:
        with accel.apply(target, *configs) as handle:
            probe.attach(handle)
            yield handle, probe
    finally:
        probe.remove()


@pytest.fixture(scope="module")
def dit4():
    """A DiT pipeline with 4 blocks (room for front/middle/back runs)."""
    return tiny_pipeline("dit", num_layers=4)


def _schedule(pipe, family: str, config, steps: int, **kw: Any) -> dict:
    with _probed(pipe, config) as (handle, probe):
        _run(pipe, family, steps=steps, **kw)
        stats = handle.stats()
    ran = probe.ran()
    n = len(probe.blocks)
    total = stats[config.cli_name]["total"]
    assert total["blocks_computed"] == sum(len(r) for r in ran.values()) == stats["total"]["block_evals"]
    assert total["blocks_reused"] == n * len(ran) - total["blocks_computed"]
    assert total["steps"] == steps
    return ran


# -- schedules -------------------------------------------------------------------------------

ALL4 = [0, 1, 2, 3]


def test_delta_cache_schedule_is_stage_aware(dit4):
    # 7 steps: boundary 0.6 -> step round(4.2) = 4; N_c = round(0.75 * 4) = 3; full every 2nd step
    ran = _schedule(dit4, "dit", DeltaCacheConfig(min_steps=0), steps=7)
    rear_cached, front_cached = [0], [3]
    assert ran == {(0, 0): ALL4, (1, 0): rear_cached, (2, 0): ALL4, (3, 0): rear_cached,
                   (4, 0): ALL4, (5, 0): front_cached, (6, 0): ALL4}
    # explicit ints; interval 3, boundary 2: the full step 0 serves step 1 (rear) and step 2 (front)
    ran = _schedule(dit4, "dit", DeltaCacheConfig(min_steps=0, interval=3, boundary=2, cached_blocks=2), steps=5)
    assert ran == {(0, 0): ALL4, (1, 0): [0, 1], (2, 0): [2, 3], (3, 0): ALL4, (4, 0): [2, 3]}


def test_interval_cache_schedule(dit4):
    ran = _schedule(dit4, "dit", IntervalCacheConfig(min_steps=0, interval=3, warmup=1), steps=7)
    assert ran == {(0, 0): ALL4, (1, 0): ALL4, (2, 0): [], (3, 0): [], (4, 0): ALL4, (5, 0): [], (6, 0): []}
    ran = _schedule(dit4, "dit", IntervalCacheConfig(min_steps=0, interval=2, warmup=0), steps=4)
    assert ran == {(0, 0): ALL4, (1, 0): [], (2, 0): ALL4, (3, 0): []}
    # cooldown 2: the last two steps always computed, the interval pattern unchanged before them
    ran = _schedule(dit4, "dit", IntervalCacheConfig(min_steps=0, interval=3, warmup=1, cooldown=2), steps=7)
    assert ran == {(0, 0): ALL4, (1, 0): ALL4, (2, 0): [], (3, 0): [], (4, 0): ALL4, (5, 0): ALL4, (6, 0): ALL4}


@torch.no_grad()
def test_interval_cache_cooldown_on_a_bare_transformer_is_ignored_with_a_warning():
    model = tiny_transformer("dit", num_layers=2)
    inputs = transformer_inputs("dit", model)
    with accel.apply(model, IntervalCacheConfig(min_steps=0, interval=2, warmup=0, cooldown=1)) as handle:
        for t in (900, 800, 700):
            model(**{**inputs, "timestep": torch.full((2,), t)})
        stats = handle.stats()["interval-cache"]
    assert stats["total"]["blocks_reused"] == 2  # step 1 reused as without cooldown; step 2 computed by the interval
    assert any("cooldown=1 ignored" in w for w in stats["warnings"])
    with pytest.raises(ValueError, match="cooldown"):
        IntervalCacheConfig(cooldown=-1)


def test_residual_cache_schedule_warmup_and_cap(dit4):
    # threshold so large that every allowed step reuses: warmup and the cap decide alone
    cfg = ResidualCacheConfig(threshold=1e9, front_blocks=1, back_blocks=1, warmup=2, max_consecutive=2)
    ran = _schedule(dit4, "dit", cfg, steps=7)
    reuse = [0, 3]  # first and last blocks computed, middle reused
    assert ran == {(0, 0): ALL4, (1, 0): ALL4, (2, 0): reuse, (3, 0): reuse, (4, 0): ALL4,
                   (5, 0): reuse, (6, 0): reuse}
    cfg = ResidualCacheConfig(threshold=1e9, front_blocks=2, back_blocks=0, warmup=0, max_consecutive=None)
    ran = _schedule(dit4, "dit", cfg, steps=4)
    assert ran == {(0, 0): ALL4, (1, 0): [0, 1], (2, 0): [0, 1], (3, 0): [0, 1]}


def test_residual_cache_says_when_it_reuses_nothing(dit4):
    """A threshold never met in a whole call (few-step sampling changes more per step) is a warning in
    .stats(), naming the smallest change seen; a call that reuses something says nothing."""
    never = ResidualCacheConfig(threshold=1e-9, front_blocks=1, back_blocks=1, warmup=1)
    with _probed(dit4, never) as (handle, _):
        _run(dit4, "dit", steps=4)
        warnings = handle.stats()["residual-cache"]["warnings"]
    assert len(warnings) == 1 and "threshold 1e-09 never met in 4 steps (smallest relative change" in warnings[0]
    always = ResidualCacheConfig(threshold=1e9, front_blocks=1, back_blocks=1, warmup=1)
    with _probed(dit4, always) as (handle, _):
        _run(dit4, "dit", steps=4)
        assert "warnings" not in handle.stats()["residual-cache"]


@torch.no_grad()
def test_residual_cache_decides_by_relative_l1():
    model = tiny_transformer("dit", num_layers=4)
    inputs = transformer_inputs("dit", model)
    timesteps = [900, 800, 700]

    def call_all(config=None):
        # head residual = block 0 out − in
        with _probed(model, *([config] if config else []), first=0, last=0) as (_, probe):
            for t in timesteps:
                model(**{**inputs, "timestep": torch.full((2,), t)})
        return probe

    probe = call_all()
    r = [probe.delta(i)[0] for i in range(3)]
    d1 = ((r[1] - r[0]).abs().mean() / r[0].abs().mean()).item()
    d2 = ((r[2] - r[0]).abs().mean() / r[0].abs().mean()).item()  # vs the last COMPUTED step (0)
    d2_after_compute = ((r[2] - r[1]).abs().mean() / r[1].abs().mean()).item()
    lo, hi = min(d1, d2) * 0.99, max(d1, d2) * 1.01
    probe = call_all(ResidualCacheConfig(threshold=hi, warmup=0, max_consecutive=None))
    assert [len(c["ran"]) for c in probe.calls] == [4, 1, 1]  # both below: step 1 and 2 reuse
    probe = call_all(ResidualCacheConfig(threshold=lo * 0.5, warmup=0))
    assert [len(c["ran"]) for c in probe.calls] == [4, 4, 4]
    # between d1 and d2: step 1 reuses iff d1 < threshold; step 2 compares with the last computed step
    thr = (d1 + d2) / 2
    probe = call_all(ResidualCacheConfig(threshold=thr, warmup=0, max_consecutive=None))
    step2_ref = d2 if d1 < thr else d2_after_compute
    assert [len(c["ran"]) for c in probe.calls] == [4, 1 if d1 < thr else 4, 1 if step2_ref < thr else 4]


# -- Δ arithmetic on known block functions -----------------------------------------------------

class _Affine(ModelHook):
    """Replaces a block by h -> a*h + b (encoder: e -> c*e + d) through the hook chain."""

    def __init__(self, io, i: int):
        super().__init__()
        self.io, self.i = io, i

    def new_forward(self, module, *args, **kwargs):
        h, e = self.io.inputs(args, kwargs)
        i = self.i
        return self.io.pack(torch.tanh(h) * (1.5 + 0.1 * i) + 0.3 * i, None if e is None else e * (0.5 - 0.1 * i) - i)


@pytest.mark.parametrize("family", ["dit", "flux"])
@torch.no_grad()
def test_delta_cache_adds_stored_offset_to_fresh_input(family):
    model = tiny_transformer(family, num_layers=4 if family == "dit" else 3)
    blocks = blocks_of(model)
    n = len(blocks)  # dit 4, flux 3 double + 3 single
    known = HookSet(model)
    for ref in blocks:
        known.add(ref.module, _Affine(ref.io, ref.global_index), "test.known")
    inputs = transformer_inputs(family, model)
    ts = [900, 700] if family == "dit" else [0.9, 0.7]
    # boundary beyond the steps: step 1 caches the REAR n-1 blocks (crosses Flux's two stacks)
    config = DeltaCacheConfig(min_steps=0, interval=2, boundary=5, cached_blocks=n - 1)
    try:
        with _probed(model, config, first=1, last=n - 1) as (_, probe):
            for k, t in enumerate(ts):  # a new latent per step (the known blocks ignore the timestep)
                model(**{**inputs, "hidden_states": inputs["hidden_states"] + k, "timestep": torch.full((2,), t)})
    finally:
        known.remove()
    assert [c["ran"] for c in probe.calls] == [list(range(n)), [0]]
    (h0, e0), (h1, e1) = probe.calls[0]["h_in"], probe.calls[1]["h_in"]
    # hand-computed Δ of the rear run at step 0, by composing the known functions
    y, z = h0, e0
    for i in range(1, n):
        y = torch.tanh(y) * (1.5 + 0.1 * i) + 0.3 * i
        z = None if z is None else z * (0.5 - 0.1 * i) - i
    assert not torch.equal(h1, h0)  # a fresh input, not the cached one
    out_h, out_e = probe.calls[1]["out"]
    torch.testing.assert_close(out_h, h1 + (y - h0), rtol=0, atol=0)
    if family == "flux":
        torch.testing.assert_close(out_e, e1 + (z - e0), rtol=0, atol=0)
    else:
        assert out_e is None


@torch.no_grad()
def test_forecast_extrapolates_linearly():
    model = tiny_transformer("dit", num_layers=4)
    inputs = transformer_inputs("dit", model)
    cfg = ResidualCacheConfig(threshold=1e9, front_blocks=1, warmup=2, max_consecutive=None, forecast=1)
    with _probed(model, cfg, first=1, last=3) as (_, probe):  # the middle run
        for t in (900, 800, 700, 600):
            model(**{**inputs, "timestep": torch.full((2,), t)})
    assert [len(c["ran"]) for c in probe.calls] == [4, 4, 1, 1]
    d0, d1 = probe.delta(0)[0], probe.delta(1)[0]
    torch.testing.assert_close(probe.delta(2)[0], d1 + (d1 - d0), rtol=1e-5, atol=1e-5)
    # residual-cache forecasts without the horizon cap (it measured worse with it)
    torch.testing.assert_close(probe.delta(3)[0], d1 + 2 * (d1 - d0), rtol=1e-5, atol=1e-5)


def test_forecast_step_caps_the_horizon_at_one_spacing():
    assert forecast_step([4], 9) == 9  # one point: nothing to extrapolate
    assert forecast_step([2, 4], 5) == 5 and forecast_step([2, 4], 6) == 6
    assert forecast_step([2, 4], 9) == 6 and forecast_step([1, 2, 5], 12) == 8


# -- exactness, reset between calls, stacking, undo: every family ---------------------------------

@pytest.mark.parametrize("family", ["dit", "pixart", "sd3", "flux", "sana"])
def test_noop_settings_exact_reset_between_calls_and_remove(tiny_pipes, family):
    pipe = tiny_pipes[family]
    reference = _run(pipe, family, steps=2)
    for config in (DeltaCacheConfig(min_steps=0, interval=1), IntervalCacheConfig(min_steps=0, interval=1), ResidualCacheConfig(threshold=0)):
        with accel.apply(pipe, config) as handle:
            assert torch.equal(_run(pipe, family, steps=2), reference), config
            assert handle.stats()[config.cli_name]["total"]["blocks_reused"] == 0
    # reuses from step 1 on (no warm-up, no cap): stale state from call 1 would make call 2's
    # first step reuse too; reset makes both calls identical, step 0 fully computed
    config = ResidualCacheConfig(threshold=1e9, warmup=0, max_consecutive=None)
    with _probed(pipe, config, accel.TraceConfig()) as (handle, probe):
        first = _run(pipe, family, steps=2)
        second = _run(pipe, family, steps=2)
        stats = handle.stats()
    n = len(probe.blocks)
    branches = 2 if family == "flux" else 1  # Flux: true CFG, two calls per step
    for call in (0, 1):
        ran = probe.ran(call)
        assert all(ran[(0, b)] == list(range(n)) for b in range(branches))
        assert all(ran[(s, b)] == [0] for s in (1,) for b in range(branches))
    assert torch.equal(first, second)
    assert not torch.equal(first, reference)  # it did cache
    assert len(stats["trace"]["events"]) == 2 * 2 * branches  # stacked probe saw every call
    per_call = stats["residual-cache"]["calls"]
    assert [c["blocks_reused"] for c in per_call] == [branches * (n - 1)] * 2
    assert torch.equal(_run(pipe, family, steps=2), reference)  # removed: bit-identical again


def test_apply_remove_restores_module_state(tiny_pipes):
    pipe = tiny_pipes["sd3"]
    model = pipe.transformer
    attrs = {name: sorted(m.__dict__) for name, m in model.named_modules()}
    for config in (DeltaCacheConfig(min_steps=0), IntervalCacheConfig(min_steps=0), ResidualCacheConfig()):
        handle = accel.apply(pipe, config)
        handle.remove()
        assert {name: sorted(m.__dict__) for name, m in model.named_modules()} == attrs


# -- CFG: per-branch state ------------------------------------------------------------------------

def test_flux_true_cfg_branches_keep_separate_offsets(tiny_pipes):
    pipe = tiny_pipes["flux"]
    with _probed(pipe, IntervalCacheConfig(min_steps=0, interval=2, warmup=0)) as (_, probe):  # first block in, last out
        _run(pipe, "flux", steps=3, cfg=True)
    infos = [(c["info"].step, c["info"].branch) for c in probe.calls]
    assert infos == [(0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (2, 1)]
    assert [len(c["ran"]) for c in probe.calls] == [6, 6, 0, 0, 6, 6]
    cond0, uncond0, cond1, uncond1 = (probe.delta(i) for i in range(4))
    assert not torch.allclose(cond0[0], uncond0[0], atol=1e-3)  # the branches' offsets differ...
    for (h1, e1), (h0, e0) in ((cond1, cond0), (uncond1, uncond0)):  # ...and each reuses its own
        torch.testing.assert_close(h1, h0, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(e1, e0, rtol=1e-5, atol=1e-5)


def test_dit_doubled_batch_rows_keep_their_own_offsets(dit4):
    with _probed(dit4, DeltaCacheConfig(min_steps=0, interval=2, boundary=0, cached_blocks=4)) as (_, probe):
        _run(dit4, "dit", steps=2, cfg=True)
    assert [c["info"].branch for c in probe.calls] == [0, 0]
    assert [len(c["ran"]) for c in probe.calls] == [4, 0]
    d0, d1 = probe.delta(0)[0], probe.delta(1)[0]
    assert d0.shape[0] == 2 and not torch.allclose(d0[0], d0[1], atol=1e-3)  # cond and uncond rows differ
    torch.testing.assert_close(d1, d0, rtol=1e-5, atol=1e-5)  # each row got its own Δ back


# -- configuration ------------------------------------------------------------------------------

@pytest.mark.parametrize("cls, field, value", [
    (DeltaCacheConfig, "interval", 0),
    (DeltaCacheConfig, "boundary", 1.5),
    (DeltaCacheConfig, "boundary", -1),
    (DeltaCacheConfig, "boundary", "late"),
    (DeltaCacheConfig, "cached_blocks", 0.0),
    (DeltaCacheConfig, "cached_blocks", 0),
    (IntervalCacheConfig, "interval", 0),
    (IntervalCacheConfig, "interval", 2.0),
    (IntervalCacheConfig, "warmup", -1),
    (ResidualCacheConfig, "threshold", -0.1),
    (ResidualCacheConfig, "front_blocks", 0),
    (ResidualCacheConfig, "back_blocks", -1),
    (ResidualCacheConfig, "warmup", True),
    (ResidualCacheConfig, "max_consecutive", 0),
    (ResidualCacheConfig, "forecast", 3),
    (ResidualCacheConfig, "forecast", True),
    (DeltaCacheConfig, "forecast", -1),
    (IntervalCacheConfig, "forecast", 1.0),
])
def test_bad_values_name_the_field(cls, field, value):
    with pytest.raises(ValueError, match=field):
        cls(**{field: value})


def test_depth_and_step_dependent_values_are_checked_at_install():
    model = tiny_transformer("dit")  # 3 blocks
    with pytest.raises(ValueError, match="front_blocks"):
        accel.apply(model, ResidualCacheConfig(front_blocks=2, back_blocks=1))
    with pytest.raises(ValueError, match="cached_blocks"):
        accel.apply(model, DeltaCacheConfig(min_steps=0, boundary=3, cached_blocks=4))
    accel.apply(model, DeltaCacheConfig(min_steps=0)).remove()  # bare: a fractional boundary resolves per call
    with pytest.raises(ValueError, match="kind 'cache'"):
        accel.apply(model, DeltaCacheConfig(min_steps=0, boundary=3), ResidualCacheConfig())
    accel.apply(model, DeltaCacheConfig(min_steps=0, boundary=3)).remove()


# -- forecasting ---------------------------------------------------------------------------------

def test_extrapolate_is_exact_for_polynomials_of_its_order_at_uneven_steps():
    from accel.caching.forecast import extrapolate

    torch.manual_seed(0)
    a, b, c = torch.randn(3, 2, 5, 4).unbind(0)
    linear = lambda s: a + b * s  # noqa: E731
    quadratic = lambda s: a + b * s + c * s * s  # noqa: E731
    torch.testing.assert_close(extrapolate([(2, linear(2)), (5, linear(5))], 9), linear(9))
    steps = [1, 3, 4]
    torch.testing.assert_close(extrapolate([(s, quadratic(s)) for s in steps], 8), quadratic(8), rtol=1e-4, atol=1e-4)
    # order 1 cannot follow a quadratic: the test above would catch a wrong order
    assert not torch.allclose(extrapolate([(s, quadratic(s)) for s in steps[1:]], 8), quadratic(8), atol=1e-2)


@torch.no_grad()
@pytest.mark.parametrize("order", [1, 2])
def test_forecast_order_follows_a_polynomial_offset_through_the_cache(order):
    """Blocks whose offset is a polynomial of the step: skipped steps get the true offset."""
    model = tiny_transformer("dit", num_layers=3)
    inputs = transformer_inputs("dit", model)
    torch.manual_seed(1)
    a, b, c = torch.randn(3, model.inner_dim).unbind(0)
    step = {"s": 0}
    poly = (lambda s: a + b * s) if order == 1 else (lambda s: a + b * s + c * s * s)

    class PolyBlock(ModelHook):  # innermost: runs only when the cache really computes the block
        def __init__(self, io):
            super().__init__()
            self.io = io

        def new_forward(self, module, *args, **kwargs):
            return self.io.inputs(args, kwargs)[0] + poly(step["s"])

    fake = HookSet(model)
    for ref in blocks_of(model):
        fake.add(ref.module, PolyBlock(ref.io), "test.poly")
    cfg = IntervalCacheConfig(min_steps=0, interval=4, warmup=order + 1, forecast=order)
    try:
        with _probed(model, cfg) as (_, probe):
            for s, t in enumerate((900, 800, 700, 600, 500)):
                step["s"] = s
                model(**{**inputs, "timestep": torch.full((2,), t)})
    finally:
        fake.remove()
    ran = [len(c["ran"]) for c in probe.calls]
    assert ran == ([3, 3, 3, 0, 0] if order == 1 else [3, 3, 3, 3, 0])  # warm-up + 1 computed, then reused
    computed = [s for s, n in enumerate(ran) if n]
    cap = computed[-1] + (computed[-1] - computed[-2])  # the horizon cap: one spacing past the last computed
    for s, n in enumerate(ran):
        if n == 0:  # skipped: the forecast offset of the whole stack equals the true one, up to the cap
            want = (3 * poly(min(s, cap))).expand_as(probe.delta(s)[0])
            torch.testing.assert_close(probe.delta(s)[0], want, rtol=1e-4, atol=1e-4)
    # order 0 (reuse) would hand on the last computed offset instead, which differs
    first_skip = ran.index(0)
    assert not torch.allclose(probe.delta(first_skip)[0], probe.delta(first_skip - 1)[0], atol=1e-3)


def test_fixed_schedules_compute_in_full_below_min_steps_and_say_so(dit4):
    for config in (DeltaCacheConfig(), IntervalCacheConfig()):
        with accel.apply(dit4, config) as handle:
            _run(dit4, "dit", steps=4)
            stats = handle.stats()
            assert stats["total"]["block_evals"] == stats["total"]["block_total"]
            assert len(stats[config.cli_name]["warnings"]) == 1 and "min_steps=8" in stats[config.cli_name]["warnings"][0]
            _run(dit4, "dit", steps=4)
            assert len(handle.stats()[config.cli_name]["warnings"]) == 1  # said once
            handle.reset_stats()
            _run(dit4, "dit", steps=8)
            stats = handle.stats()
            assert stats["total"]["block_evals"] < stats["total"]["block_total"]  # from 8 steps on it caches
