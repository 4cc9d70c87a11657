"""`accel bench --compile [regional|whole]`: the compiled baseline against compiled methods.

Every row of the bench (the baseline included) is compiled the same way, after its method is
applied: `accel.compile(pipe, regional=True)` by default (each transformer block's own forward,
below accel's hooks), or the whole transformer (`--compile whole`, hooks inside the graph; see
accel/compiling.py for why regional is the one to use). The images of the quality columns and
the timed calls are those of the compiled pipelines.

Per method, before the timing, `measure_compile` starts from an empty Dynamo cache, with Inductor's
FX-graph and AOTAutograd caches off (else a row compiling the graphs an earlier row or the quality
pass already compiled would only look them up), and makes two pipeline calls on the timing batch:

* compile_s = first call's seconds − second call's: tracing, lowering and code generation of the
  method's graphs. Kernels Inductor already built into its on-disk cache (TORCHINDUCTOR_CACHE_DIR,
  from an earlier row or run) are still reused: a machine's first-ever compile costs more;
* recompiles = graphs Dynamo traced during the second call (0: a later call recompiles nothing),
* graph_breaks = Dynamo's graph breaks during the first call.

The interleaved timing that follows starts with at least one warm-up round, which compiles
each method again (Dynamo's cache then holds only the last method's graphs), so the timed
calls are steady state.
"""

from __future__ import annotations

import contextlib
import importlib
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from .methods import BenchSettingError, MethodSpec
from .timing import timed
from .workload import Workload, generate

COMPILE_MODES = ("regional", "whole")

Apply = Callable[[Any, MethodSpec], Any]  # (pipe, spec) -> handle with .remove() and .stats()


@dataclass(frozen=True)
class CompileSetting:
    """How every row is compiled: `mode` regional | whole, `backend` torch.compile's (inductor, eager...)."""

    mode: str = "regional"
    backend: str = "inductor"

    def __post_init__(self) -> None:
        if self.mode not in COMPILE_MODES:
            raise BenchSettingError("compile", f"{self.mode!r}: choose {' or '.join(COMPILE_MODES)}")
        from torch._dynamo import list_backends

        known = set(list_backends(exclude_tags=())) | {"inductor", "eager", "aot_eager"}
        if self.backend not in known:
            raise BenchSettingError("compile_backend", f"{self.backend!r}: not a torch.compile backend here "
                                                  f"(available: {', '.join(sorted(known))})")


class CompiledHandle:
    """A method's handle plus the compilation on top of it; `.remove()` undoes both (compilation first)."""

    def __init__(self, handle: Any, compiled: Any):
        self.handle, self.compiled = handle, compiled

    def stats(self) -> dict:
        return self.handle.stats()

    def remove(self) -> None:
        try:
            self.compiled.remove()
        finally:
            self.handle.remove()


def compiled_apply(apply: Apply, setting: CompileSetting) -> Apply:
    """`apply` followed by `accel.compile(pipe, regional=..., backend=...)`."""
    import accel

    def apply_and_compile(pipe: Any, spec: MethodSpec) -> CompiledHandle:
        handle = apply(pipe, spec)
        try:
            compiled = accel.compile(pipe, regional=setting.mode == "regional", backend=setting.backend)
        except BaseException:
            handle.remove()
            raise
        return CompiledHandle(handle, compiled)

    return apply_and_compile


@dataclass
class CompileCost:
    """What compiling cost one method (see the module docstring)."""

    compile_s: float
    first_s: float
    steady_s: float
    recompiles: int
    graph_breaks: int


def _graphs() -> int:
    return int(torch._dynamo.utils.counters["stats"]["unique_graphs"])


def _graph_breaks() -> int:
    return int(sum(torch._dynamo.utils.counters["graph_break"].values()))


def _no_graph_caches() -> contextlib.ExitStack:
    """Inductor's FX-graph cache and the AOTAutograd cache off (where this torch has them)."""
    stack = contextlib.ExitStack()
    for module, flag in (("torch._inductor.config", "fx_graph_cache"),
                         ("torch._functorch.config", "enable_autograd_cache")):
        try:
            config = importlib.import_module(module)
        except ImportError:
            continue
        if hasattr(config, flag):
            stack.enter_context(config.patch(**{flag: False}))
    return stack


def measure_compile(pipe: Any, methods: Sequence[MethodSpec], workload: Workload, indices: Sequence[int],
                    apply: Apply, device: str | torch.device = "cpu") -> dict[str, CompileCost]:
    """Per method, from an empty Dynamo cache: compile time, graph breaks, graphs traced on a second call."""
    out = {}
    for m in methods:
        torch._dynamo.reset()
        torch._dynamo.utils.counters.clear()
        handle = apply(pipe, m)
        try:
            with _no_graph_caches():
                _, first = timed(lambda: generate(pipe, workload, list(indices)), device)
                breaks, graphs = _graph_breaks(), _graphs()
                _, second = timed(lambda: generate(pipe, workload, list(indices)), device)
                recompiles = _graphs() - graphs
        finally:
            handle.remove()
        out[m.label] = CompileCost(max(0.0, first - second), first, second, recompiles, breaks)
    return out


def compile_fields(cost: CompileCost | None) -> dict[str, Any]:
    """The record fields of one method's compile cost (None without --compile)."""
    if cost is None:
        return {"compile_s": None, "recompiles": None, "graph_breaks": None}
    return {"compile_s": cost.compile_s, "recompiles": cost.recompiles, "graph_breaks": cost.graph_breaks}


def compile_note(setting: CompileSetting, costs: dict[str, CompileCost]) -> str:
    """One line for the notes: how the rows were compiled and whether anything recompiled."""
    again = [label for label, c in costs.items() if c.recompiles]
    verdict = ("no method recompiled on its second call" if not again
               else f"recompiled on the second call: {', '.join(f'{l} ({costs[l].recompiles})' for l in again)}")
    return (f"compiled: every row {setting.mode} (accel.compile, backend {setting.backend}); compile s = first "
            f"call - second call on the timing batch, from an empty Dynamo cache per method with Inductor's graph "
            f"caches off (kernels already on disk are reused); {verdict}; the timed calls follow at least one "
            "warm-up round")
