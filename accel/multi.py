"""`PipelineHandle`: what `accel.apply` returns for a pipeline that calls several transformers.

Wan 2.2 runs a high-noise expert (`pipe.transformer`) on the first steps and a low-noise
expert (`pipe.transformer_2`) on the rest. Each transformer gets its own `Handle`: its own
step tracker (steps are the pipeline's, read from the shared scheduler, so the second
expert's first call is at step k, not 0), its own caches and counters. This handle
removes, resets and reports them together.
"""

from __future__ import annotations

from typing import Any

from .api import Handle, handle_repr, preset_note, transformers_of


def _sum_totals(parts: list[dict]) -> dict:
    out: dict[str, Any] = {}
    for part in parts:
        for k, v in part.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                out[k] = max(out.get(k, 0), v) if k in ("pipeline_calls", "steps") else out.get(k, 0) + v
    return out


class PipelineHandle:
    """The per-transformer handles of one pipeline; `remove()` restores every transformer exactly."""

    def __init__(self, pipeline: Any, handles: list[Handle]):
        self.pipeline = pipeline
        names = {id(m): n for n, m in transformers_of(pipeline)}
        self.handles = {names[id(h.model)]: h for h in handles}
        first = handles[0]
        self.model, self.configs, self.target = first.model, first.configs, first.target

    @property
    def active(self) -> bool:
        return any(h.active for h in self.handles.values())

    def remove(self) -> None:
        """Undo everything, last transformer first (their scheduler probes nest). Idempotent."""
        for h in reversed(list(self.handles.values())):
            h.remove()

    def stats(self) -> dict[str, Any]:
        """Per transformer under "models"; "total" and each method's "total" summed over them (steps and
        pipeline calls: the most any transformer saw, as they share the scheduler)."""
        per = {name: h.stats() for name, h in self.handles.items()}
        out: dict[str, Any] = {"models": per, "total": _sum_totals([s["total"] for s in per.values()])}
        for config in self.configs:
            parts = [s[config.cli_name] for s in per.values() if isinstance(s.get(config.cli_name), dict)]
            if parts and all(isinstance(p.get("total"), dict) for p in parts):
                out[config.cli_name] = {"total": _sum_totals([p["total"] for p in parts])}
        note = preset_note(self)
        if note:
            out["preset"] = note
        return out

    def held_bytes(self) -> int:
        return sum(h.held_bytes() for h in self.handles.values())

    def reset_stats(self) -> None:
        for h in self.handles.values():
            h.reset_stats()

    def __enter__(self) -> "PipelineHandle":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.remove()

    def __repr__(self) -> str:
        return handle_repr(self, ", ".join(self.handles))
