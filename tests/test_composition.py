"""Every accel method composed with the rest of a diffusers user's stack (issue 21).

The matrix METHODS x ENVS runs each method on a tiny random model inside one environment
(regional torch.compile, bf16, fp16, group offloading, model CPU offload hooks, LoRA
adapters switched between calls, torchao int8 weights) and asserts

* agreement: the images equal (within the environment's stated tolerance) those of the
  same method without that environment, and the method really skipped / merged work;
* exact undo: after `.remove()` the pipeline gives, bit for bit, what it gave before
  accel was applied in that environment, and the environment's own hooks still work.

docs/composition.md's "Tested combinations" table is generated from ENVS (`python tests/test_composition.py`
prints it; `test_docs_table` checks the page holds it).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest
import torch

import accel
from accel.testing import METHOD_SETTINGS, pipeline_inputs, saved_work, tiny_pipeline, working_config

STEPS = 6

METHODS = list(METHOD_SETTINGS)  # each at its tiny settings, which reuse / merge at 6 steps


@dataclass(frozen=True)
class Env:
    """One environment of the matrix: how it is set up, how close the method's images stay, what it says."""

    name: str
    family: str
    setup: Callable[[Any], None]  # changes the pipeline (dtype, offloading, adapters...) in place
    tol: float  # bound on mean |images - the same method's images without the environment| (0: identical)
    order: str  # "before" (accel applied before the environment) or "after"
    note: str
    relative: bool = False  # tol is a multiple of the plain model's own change in this environment


def _compile(backend: str) -> Callable[[Any], None]:
    def setup(pipe: Any) -> None:
        torch._dynamo.reset()
        pipe._accel_compiled = accel.compile(pipe, backend=backend)

    return setup


def _dtype(dtype: torch.dtype) -> Callable[[Any], None]:
    return lambda pipe: pipe.to(dtype)


def _group_offload(level: str) -> Callable[[Any], None]:
    def setup(pipe: Any) -> None:
        from diffusers.hooks import apply_group_offloading

        cpu = torch.device("cpu")
        kw = dict(num_blocks_per_group=1) if level == "block_level" else {}
        apply_group_offloading(pipe.transformer, onload_device=cpu, offload_device=cpu, offload_type=level, **kw)

    return setup


def _model_offload(pipe: Any) -> None:
    pipe.enable_model_cpu_offload(device="cpu")


def _torchao_int8(pipe: Any) -> None:
    from torchao.quantization import Int8WeightOnlyConfig, quantize_

    quantize_(pipe.transformer, Int8WeightOnlyConfig())


def _lora(pipe: Any) -> None:
    """Two random LoRA adapters on the SD3 transformer, mix "a" + 0.5 "b" active."""
    from peft import LoraConfig

    for i, name in enumerate(("a", "b")):
        torch.manual_seed(10 + i)
        pipe.transformer.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights=False,
                                                target_modules=["to_q", "to_k", "to_v", "to_out.0"]), name)
    pipe.transformer.set_adapters(["a", "b"], weights=[1.0, 0.5])


ENVS: dict[str, Env] = {e.name: e for e in (
    Env("compile eager", "dit", _compile("eager"), 1e-6, "before",
        "`accel.compile(pipe)` (regional); 0 graphs traced after the first call"),
    Env("compile aot_eager", "dit", _compile("aot_eager"), 1e-5, "after",
        "same, AOTAutograd backend"),
    Env("bf16", "dit", _dtype(torch.bfloat16), 2, "after",
        "cached tensors stay bf16; forecasts, merges, thresholds in float32", relative=True),
    Env("fp16", "dit", _dtype(torch.float16), 2, "before", "as bf16", relative=True),
    Env("group offload (block)", "dit", _group_offload("block_level"), 0.0, "after",
        "diffusers `apply_group_offloading`, block level"),
    Env("group offload (leaf)", "dit", _group_offload("leaf_level"), 0.0, "before", "leaf level"),
    Env("model CPU offload", "dit", _model_offload, 0.0, "before",
        "`enable_model_cpu_offload` hooks (device=cpu here); `.remove()` keeps them"),
    Env("LoRA switch", "sd3", _lora, 0.0, "before",
        "`set_adapters` / weights / `fuse_lora` / `unfuse_lora` between calls; `.remove()` keeps adapters"),
    Env("torchao int8", "dit", _torchao_int8, 2, "after",
        "torchao `Int8WeightOnlyConfig` transformer (needs `torchao`)", relative=True),
)}


# Token merging makes discrete choices (which tokens merge or are kept) that flip under rounding.
DISCRETE = {"tome": 5.0, "diffrate": 5.0}


def _run(pipe: Any, family: str, **kw: Any) -> torch.Tensor:
    out = pipe(**pipeline_inputs(family, steps=STEPS, **kw)).images
    return torch.as_tensor(out).float()


def _apply(pipe: Any, family: str, method: str) -> Any:
    config = working_config(method)
    config.prepare(pipe, lambda: _run(pipe, family))  # schedule-cache: calibrate this model
    return accel.apply(pipe, config)


_REFERENCE: dict[tuple[str, str], torch.Tensor] = {}


def _reference(family: str, method: str) -> torch.Tensor:
    """Images of `method` ("" = none) on the plain float32 pipeline, no environment."""
    key = (family, method)
    if key not in _REFERENCE:
        pipe = tiny_pipeline(family)
        if not method:
            _REFERENCE[key] = _run(pipe, family)
        else:
            with _apply(pipe, family, method):
                _REFERENCE[key] = _run(pipe, family)
    return _REFERENCE[key]


def _feature_dtypes(handle: Any) -> set[torch.dtype]:
    """dtypes of the (B, N, C) feature tensors a method holds right now."""
    seen: set[torch.dtype] = set()

    def walk(x: Any, depth: int) -> None:
        if depth > 5:
            return
        if isinstance(x, torch.Tensor):
            if x.ndim == 3 and x.is_floating_point():
                seen.add(x.dtype)
        elif isinstance(x, dict):
            for v in x.values():
                walk(v, depth + 1)
        elif isinstance(x, (list, tuple)):
            for v in x:
                walk(v, depth + 1)
        elif hasattr(x, "__dict__") or hasattr(x, "__slots__"):
            for name in getattr(x, "__slots__", ()) or getattr(x, "__dict__", {}):
                if name not in ("tracker", "target", "config", "counters", "_hooks"):
                    walk(getattr(x, name, None), depth + 1)

    for _, installed in handle._installed:
        walk(installed, 0)
    return seen


def _lora_state(model: torch.nn.Module) -> tuple:
    from peft.tuners.lora import LoraLayer

    layers = [m for m in model.modules() if isinstance(m, LoraLayer)]
    return (tuple(model.active_adapters()), tuple(sorted(layers[0].scaling.items())),
            tuple(m.merged for m in layers), len(layers))


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("env_name", list(ENVS))
def test_composes(env_name: str, method: str) -> None:
    env = ENVS[env_name]
    if env_name == "torchao int8":
        pytest.importorskip("torchao", reason="torchao is not installed (optional: pip install torchao)")
    family = env.family
    twin = tiny_pipeline(family)  # the same pipeline in the same environment (uncompiled), never accelerated
    compiled = env_name.startswith("compile")
    if not compiled:
        env.setup(twin)
    pipe = tiny_pipeline(family)
    if env.order == "after":
        env.setup(pipe)
    handle = _apply(pipe, family, method)
    if env.order == "before":
        env.setup(pipe)

    dtypes: set[torch.dtype] = set()
    probe = pipe.transformer.register_forward_hook(lambda *_: dtypes.update(_feature_dtypes(handle)))
    images = _run(pipe, family)
    probe.remove()
    assert dtypes <= {pipe.transformer.dtype}, f"held features of dtype {dtypes}, model {pipe.transformer.dtype}"
    assert saved_work(method, handle.stats()), handle.stats()[method]["total"]
    plain = _run(twin, family)
    if env_name == "LoRA switch":  # the same method applied to the same adapters
        with _apply(twin, family, method):
            reference = _run(twin, family)
    else:
        reference = _reference(family, method)
    error = (images - reference).abs().mean().item()
    bound = env.tol
    if env.relative:  # as many times the plain model's own change in this environment
        bound *= DISCRETE.get(method, 1.0) * (plain - _reference(family, "")).abs().mean().item()
    assert error <= bound, f"mean |diff| {error:.4g} > {bound:.4g}"

    if env_name.startswith("compile"):
        before = torch._dynamo.utils.counters["stats"]["unique_graphs"]
        again = _run(pipe, family)
        assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == before, "recompiled on a second call"
        assert torch.equal(again, images)
    if env_name == "LoRA switch":
        _check_lora_switching(pipe, twin, method)
        plain = _run(twin, family)  # after fuse/unfuse the weights differ in the last bits from before

    lora_before = _lora_state(pipe.transformer) if env_name == "LoRA switch" else None
    handle.remove()
    after = _run(pipe, family)
    if compiled:  # still compiled: as close to eager as the method was; exact once uncompiled
        assert pipe._accel_compiled.modules and all("_accel_compiled" in m.__dict__ for m in pipe._accel_compiled.modules)
        assert (after - plain).abs().mean().item() <= env.tol
        pipe._accel_compiled.remove()
        assert not any("_accel_compiled" in m.__dict__ for m in pipe.transformer.modules())
        after = _run(pipe, family)
    assert torch.equal(after, plain), "not undone exactly"
    if lora_before is not None:
        assert _lora_state(pipe.transformer) == lora_before
    if env_name == "model CPU offload":  # accelerate's offload hook is still on the transformer
        assert getattr(pipe.transformer.forward, "func", None).__module__ == "accelerate.hooks"
    if env_name.startswith("group offload"):
        registries = [m._diffusers_hook for m in pipe.transformer.modules() if "_diffusers_hook" in m.__dict__]
        assert any("group_offloading" in name for r in registries for name in r._hook_order)
        assert not any(name.startswith("accel.") for r in registries for name in r._hook_order)


def _check_lora_switching(pipe: Any, twin: Any, method: str) -> None:
    """Switch adapters between calls: each call equals the method applied afresh to that mix (on the twin)."""
    switches = [
        ("b alone", lambda t: t.set_adapters(["b"])),
        ("a+b weights", lambda t: t.set_adapters(["a", "b"], weights=[0.3, 1.0])),
        ("fused", lambda t: t.fuse_lora()),
        ("unfused", lambda t: t.unfuse_lora()),
        ("first mix", lambda t: t.set_adapters(["a", "b"], weights=[1.0, 0.5])),
    ]
    for name, switch in switches:
        switch(pipe.transformer)
        switch(twin.transformer)
        images = _run(pipe, "sd3")
        with _apply(twin, "sd3", method):
            fresh = _run(twin, "sd3")
        assert torch.equal(images, fresh), f"{method} after switching to {name}: differs from a fresh handle"


@pytest.mark.parametrize("family", ["pixart", "sd3", "flux", "sana"])
def test_regional_compile_every_family(family: str) -> None:
    """`accel.compile` finds every family's blocks (diffusers' compile_repeated_blocks raises on most);
    with a cache on, the second call traces nothing and the images equal eager ones."""
    torch._dynamo.reset()
    pipe = tiny_pipeline(family)
    with accel.apply(pipe, working_config("interval-cache")):
        eager = _run(pipe, family)
        with accel.compile(pipe, backend="eager") as compiled:
            assert len(compiled.modules) == len(pipe.transformer.transformer_blocks) + len(
                getattr(pipe.transformer, "single_transformer_blocks", []))
            first = _run(pipe, family)
            graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
            second = _run(pipe, family)
            assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == graphs
    assert (first - eager).abs().max().item() < 1e-5 and torch.equal(first, second)
    assert not any("_accel_compiled" in m.__dict__ or "forward" in m.__dict__ for m in pipe.transformer.modules())


def test_whole_model_compile_no_recompiles() -> None:
    """`regional=False` (the whole transformer, hooks inside): same images, nothing traced on the second call."""
    torch._dynamo.reset()
    pipe = tiny_pipeline("dit")
    with accel.apply(pipe, working_config("interval-cache")):
        eager = _run(pipe, "dit")
        with accel.compile(pipe, regional=False, backend="eager"):
            first = _run(pipe, "dit")
            graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
            assert torch.equal(_run(pipe, "dit"), first)
            assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == graphs
    assert (first - eager).abs().max().item() < 1e-5
    assert pipe.transformer._compiled_call_impl is None


# -- refusals and batch isolation ---------------------------------------------------------------

def test_prune_refuses_lora_and_quantized() -> None:
    from accel.pruning.prune import prune_model

    pipe = tiny_pipeline("sd3")
    _lora(pipe)
    with pytest.raises(ValueError, match="LoRA adapters"):
        prune_model(pipe.transformer, [0, 2])
    model = tiny_pipeline("dit").transformer
    block = model.transformer_blocks[1].ff.net[2]
    block.weight = torch.nn.Parameter(block.weight.detach().to(torch.int8), requires_grad=False)
    with pytest.raises(ValueError, match="quantized weights"):
        prune_model(model, [0, 2])


FIXED = ["interval-cache", "delta-cache", "schedule-cache", "tome", "toca", "diffrate"]


@pytest.mark.parametrize("method", FIXED)
def test_batch_isolation(method: str) -> None:
    """With a fixed schedule, sample i of a batch equals sample i generated alone."""
    pipe = tiny_pipeline("pixart")
    kw = pipeline_inputs("pixart", batch=2, steps=STEPS)
    shape = (2, 4, 16 // pipe.vae_scale_factor, 16 // pipe.vae_scale_factor)
    kw["latents"] = torch.randn(shape, generator=torch.Generator().manual_seed(3))
    config = working_config(method)
    config.prepare(pipe, lambda: pipe(**{**kw, "generator": torch.Generator().manual_seed(0)}))
    with accel.apply(pipe, config) as handle:
        both = torch.as_tensor(pipe(**kw).images)
        assert saved_work(method, handle.stats())
        for i in range(2):
            alone = {k: (v[i:i + 1] if isinstance(v, torch.Tensor) and v.shape[:1] == (2,) else v)
                     for k, v in kw.items()}
            one = torch.as_tensor(pipe(**alone).images)
            assert (one[0] - both[i]).abs().max().item() < 1e-5


# -- docs/composition.md ----------------------------------------------------------------------

def composition_table() -> str:
    """docs/composition.md's table: one row per environment of ENVS, the methods it was tested with."""
    lines = ["| environment | methods tested | mean abs image diff vs. the method without it | notes |",
             "|---|---|---|---|"]
    for env in ENVS.values():
        tol = ("identical" if env.tol == 0 else f"<= {env.tol:g}x the plain model's change (tome, diffrate: "
               f"{env.tol * DISCRETE['tome']:g}x)" if env.relative else f"<= {env.tol:g}")
        applied = "accel applied before it" if env.order == "before" else "accel applied after it"
        lines.append(f"| {env.name} ({env.family}) | all {len(METHODS)} | {tol} | {env.note}; {applied} |")
    return "\n".join(lines)


def test_docs_table() -> None:
    page = (Path(__file__).resolve().parents[1] / "docs" / "composition.md").read_text()
    assert composition_table() in page, "docs/composition.md's table is stale: python tests/test_composition.py"


if __name__ == "__main__":
    sys.stdout.write(composition_table() + "\n")
