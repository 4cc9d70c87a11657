"""`trace`: records the step context of every transformer call (a probe; changes nothing)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .config import Installed, MethodConfig, Target, register_method
from .context import StepInfo


@register_method("trace")
@dataclass(frozen=True)
class TraceConfig(MethodConfig):
    """`trace`: record (call, step, branch, branch_name) of each transformer call; outputs are untouched.

    Example::

        import accel

        pipe = accel.default_pipeline()
        with accel.apply(pipe, accel.TraceConfig()) as handle:
            images = pipe(class_labels=[3, 7], num_inference_steps=20).images
            print(handle.stats()["trace"]["events"][:2])  # [(call, step, branch, branch_name), ...]
    """

    kind = "probe"
    accelerates = False

    def install(self, target: Target) -> "_Trace":
        return _Trace(target)


class _Trace(Installed):
    def __init__(self, target: Target):
        self.events: list[StepInfo] = []
        self._listeners = target.tracker.listeners
        self._listeners.append(self.events.append)

    def remove(self) -> None:
        if self.events.append in self._listeners:
            self._listeners.remove(self.events.append)

    def stats(self) -> dict[str, Any]:
        return {"events": [(e.call, e.step, e.branch, e.branch_name) for e in self.events]}

    def reset_stats(self) -> None:
        self.events.clear()
