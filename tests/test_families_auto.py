"""Auto-detection of unregistered transformers, and pipelines that call two transformers (Wan 2.2)."""

from __future__ import annotations

import pytest
import torch

import accel
from accel.families import BlockStack, Family, blocks_of
from accel.handles import handle_of
from accel.testing import tiny_wan22_pipeline, wan_inputs

M = accel.methods()


def _toy(block_returns: str = "EH", hidden_name: str = "hidden_states", container=torch.nn.ModuleList):
    """A user-defined transformer diffusers and accel have never seen (a fresh class per call)."""

    class ToyBlock(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = torch.nn.Linear(8, 8)
            self.txt = torch.nn.Linear(8, 8)

        def forward(self, *args, **kwargs):
            return self.run(*args, **kwargs)

        def run(self, h, encoder_hidden_states, temb):
            h = h + torch.tanh(self.attn(h + temb[:, None]))
            e = encoder_hidden_states + torch.tanh(self.txt(encoder_hidden_states))
            return {"EH": (e, h), "HE": (h, e), "H": h, "HEH": (h, e, h)}[block_returns]

    def _forward(self, hidden, encoder_hidden_states, temb):  # signature named by `hidden_name`
        return self.run(hidden, encoder_hidden_states, temb)

    ToyBlock.forward = _forward
    ToyBlock.forward.__code__ = _forward.__code__.replace(co_varnames=("self", hidden_name) + _forward.__code__.co_varnames[2:])

    class ToyTransformer(torch.nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.blocks = container([ToyBlock() for _ in range(4)])
            self.t = torch.nn.Linear(1, 8)

        def forward(self, hidden_states, encoder_hidden_states, timestep):
            temb = self.t(timestep.float()[:, None] / 1000)
            h, e = hidden_states, encoder_hidden_states
            for block in self.blocks:
                out = block(h, e, temb)
                if isinstance(out, torch.Tensor):
                    h = out
                else:
                    h, e = (out[1], out[0]) if block_returns == "EH" else (out[0], out[1])
            return h

    return ToyTransformer().eval()


def _steps(model, batch=2, steps=5):
    g = torch.Generator().manual_seed(0)
    h, e = torch.randn(batch, 16, 8, generator=g), torch.randn(batch, 6, 8, generator=g)
    with torch.no_grad():
        return torch.stack([model(h, e, torch.full((batch,), 900 - 150 * s)) for s in range(steps)])


@pytest.mark.parametrize("returns", ["EH", "HE", "H"])
def test_auto_detection_reads_an_unregistered_transformer_and_caches_it(returns):
    model = _toy(returns)
    reference = _steps(model)
    with pytest.warns(UserWarning, match=r"not registered; auto-detected blocks blocks\[4\]"):
        handle = accel.apply(model, M["residual-cache"](threshold=100.0, warmup=1))
    out = _steps(model)
    assert handle.target.blocks[0].io.returns == returns  # learned from the first call
    total = handle.stats()["total"]
    assert total["block_evals"] < total["block_total"] and out.shape == reference.shape
    assert not torch.equal(out, reference)  # the reused steps are approximations
    handle.remove()
    assert torch.equal(_steps(model), reference)
    with pytest.raises(ValueError, match="not available for ToyTransformer: auto-detected"):
        accel.apply(model, M["tome"]())  # no token grid known: refused, nothing installed
    assert "_diffusers_hook" not in model.__dict__


def test_auto_detection_says_what_it_could_not_determine():
    with pytest.raises(accel.UnsupportedModelError, match="no direct nn.ModuleList of blocks.*Register"):
        accel.apply(_toy(container=lambda blocks: torch.nn.Sequential(*blocks)))
    with pytest.raises(accel.UnsupportedModelError, match="inp.*no hidden-states parameter"):
        accel.apply(_toy(hidden_name="inp"))
    model = _toy("HEH")  # three outputs: which one is the hidden states?
    with pytest.warns(UserWarning, match="auto-detected"):
        handle = accel.apply(model, M["interval-cache"](min_steps=0))
    with pytest.raises(accel.UnsupportedModelError, match="cannot tell the return pattern of ToyBlock"):
        _steps(model, steps=1)
    handle.remove()


def _trunk_net(attn_name: str):
    """A user's model whose blocks live in `trunk`, are called `(x, ctx)` and return `(x, ctx)`."""

    class TrunkBlock(torch.nn.Module):
        def __init__(self):
            super().__init__()
            setattr(self, attn_name, torch.nn.Linear(8, 8))

        def forward(self, x, ctx):
            return x + torch.tanh(getattr(self, attn_name)(x) + ctx.mean(1, keepdim=True)), ctx

    class TrunkNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.trunk = torch.nn.ModuleList(TrunkBlock() for _ in range(3))

        def forward(self, hidden_states, encoder_hidden_states, timestep):
            for block in self.trunk:
                hidden_states, encoder_hidden_states = block(hidden_states, encoder_hidden_states)
            return hidden_states

    return TrunkNet().eval()


def test_register_checks_the_argument_names_against_the_blocks_forward_at_apply(monkeypatch):
    from accel.families import registry

    monkeypatch.setattr(registry, "_FAMILIES", dict(registry._FAMILIES))  # the families it registers leave with it
    model = _trunk_net("mix")
    name = f"TrunkNet{id(model)}"  # a class name of this test alone: the registry is global
    type(model).__name__ = name
    accel.register(Family(name="trunk-wrong", class_name=name, stacks=(BlockStack("trunk", returns="HE"),)))
    with pytest.raises(accel.UnsupportedModelError) as err:
        accel.apply(model, M["interval-cache"](min_steps=0))
    msg = str(err.value)
    assert "\n" not in msg and "TrunkBlock.forward(x, ctx)" in msg and "hidden_arg='x', encoder_arg='ctx'" in msg
    assert "'hidden_states' (hidden_arg)" in msg and "'encoder_hidden_states' (encoder_arg)" in msg
    assert "_diffusers_hook" not in model.__dict__  # refused before anything was installed
    accel.register(Family(name="trunk", class_name=name,
                          stacks=(BlockStack("trunk", returns="HE", hidden_arg="x", encoder_arg="ctx"),)))
    g = torch.Generator().manual_seed(0)
    h, e = torch.randn(2, 16, 8, generator=g), torch.randn(2, 6, 8, generator=g)
    with accel.apply(model, M["interval-cache"](interval=2, warmup=1, min_steps=0)) as handle, torch.no_grad():
        for s in range(4):
            model(h, e, torch.full((2,), 900 - 200 * s))
        total = handle.stats()["total"]
    assert 0 < total["block_evals"] < total["block_total"]  # it really runs, and reuses blocks


def test_auto_detection_refusal_is_short_and_names_the_users_block_list():
    model = _trunk_net("mix")  # no sub-module named attn / attention: not recognised as blocks
    with pytest.raises(accel.UnsupportedModelError) as err:
        accel.apply(model)
    msg = str(err.value)
    assert len(msg) < 400 and "FluxTransformer2DModel" not in msg, msg
    assert "trunk[3] of TrunkBlock" in msg
    assert "BlockStack('trunk', returns='H', hidden_arg='x', encoder_arg='ctx')" in msg
    assert "class_name='TrunkNet'" in msg
    with pytest.warns(UserWarning, match=r"auto-detected blocks trunk\[3\]"):
        family = accel.families.family_of(_trunk_net("attn"))  # an `attn` sub-module: detected
    assert family.detected and family.stacks[0].hidden_arg == "x"


def test_two_transformer_pipeline_gets_one_handle_per_expert_with_its_own_steps():
    pipe = tiny_wan22_pipeline()
    reference = pipe(**wan_inputs()).frames
    seen = []
    handle = accel.apply(pipe, M["interval-cache"](interval=2, warmup=1, min_steps=0))
    assert set(handle.handles) == {"transformer", "transformer_2"}
    for name, h in handle.handles.items():
        assert handle_of(getattr(pipe, name)) is h
        h.target.tracker.listeners.append(lambda info, name=name: seen.append((name, info.step, info.branch)))
    with pytest.raises(accel.AlreadyAcceleratedError):
        accel.apply(pipe.transformer_2)
    out = pipe(**wan_inputs()).frames
    assert out.shape == reference.shape
    first = {name: min(s for n, s, _ in seen if n == name) for name in handle.handles}
    assert first["transformer"] == 0 and first["transformer_2"] > 0  # the pipeline's step, per model
    assert {b for _, _, b in seen} == {0, 1}  # CFG: cond and uncond calls are separate branches
    stats = handle.stats()
    per = stats["models"]
    assert per["transformer"]["total"]["transformer_calls"] > 0 and per["transformer_2"]["total"]["transformer_calls"] > 0
    assert stats["total"]["block_evals"] < stats["total"]["block_total"]
    assert stats["total"]["transformer_calls"] == 2 * 6 and stats["total"]["steps"] == 6
    handle.remove()
    assert not handle.active and handle_of(pipe.transformer) is None and handle_of(pipe.transformer_2) is None
    assert torch.equal(pipe(**wan_inputs()).frames, reference)
    assert len(blocks_of(pipe.transformer_2)) == 2


def test_compile_covers_both_experts_of_a_two_transformer_pipeline():
    """`accel.compile` compiles every transformer `accel.apply` accelerates (Wan 2.2's `transformer_2`
    too); a second pipeline call traces nothing new; compiling again says so and changes nothing."""
    torch._dynamo.reset()
    pipe = tiny_wan22_pipeline()
    eager = pipe(**wan_inputs(steps=4)).frames
    running, ran = [], {"transformer": 0, "transformer_2": 0}  # compiled-graph calls per expert

    def backend(gm, example_inputs):
        def run(*args):
            ran[running[-1]] += 1
            return gm.forward(*args)
        return run

    for name in ran:
        getattr(pipe, name).register_forward_pre_hook(lambda m, a, name=name: running.append(name))
    with accel.compile(pipe, backend=backend) as compiled:
        assert [id(m) for m in compiled.models] == [id(pipe.transformer), id(pipe.transformer_2)]
        blocks = [r.module for name in ran for r in blocks_of(getattr(pipe, name))]
        assert sorted(map(id, compiled.modules)) == sorted(map(id, blocks))
        first = pipe(**wan_inputs(steps=4)).frames
        assert ran["transformer"] > 0 and ran["transformer_2"] > 0, ran  # both experts ran compiled blocks
        graphs, calls = torch._dynamo.utils.counters["stats"]["unique_graphs"], dict(ran)
        second = pipe(**wan_inputs(steps=4)).frames
        assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == graphs  # traced nothing new
        assert {k: v - calls[k] for k, v in ran.items()} == calls  # the same compiled calls again
        with pytest.warns(UserWarning, match="WanTransformer3DModel, WanTransformer3DModel already compiled"):
            again = accel.compile(pipe, backend=backend)
        assert again.modules == [] and len(compiled.modules) == len(blocks)
    assert torch.equal(first, second) and (first - eager).abs().max().item() < 1e-5
    assert not any("forward" in m.__dict__ for name in ran for m in getattr(pipe, name).modules())
