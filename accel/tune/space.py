"""The joint search space of `accel tune`, built from what each method config declares.

Every registered method declares ``tunable = {field: (values, ...)}`` next to its fields
(`accel.config.MethodConfig.tunable`), so a new method is tunable without touching the
tuner. A :class:`Candidate` is one point of the joint space: at most one method per kind
(one block cache, one token method) and optionally a pruned model folder in place of the
original transformer. Its ``key`` is the ``accel bench --methods`` spelling, so a tuned
config can be pasted into the bench.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from ..config import MethodConfig
from ..errors import SettingError


@dataclass(frozen=True)
class Candidate:
    """One configuration: ``model`` (None = the original, else a pruned pipeline folder) and
    ``components``: ``(cli_name, ((field, value), ...))`` per stacked method."""

    components: tuple[tuple[str, tuple[tuple[str, Any], ...]], ...] = ()
    model: str | None = None

    @property
    def methods_key(self) -> str:
        """``accel bench --methods`` spelling of the stacked methods ("baseline" when none)."""
        parts = [name + (":" + ",".join(f"{k}={_fmt(v)}" for k, v in params) if params else "")
                 for name, params in self.components]
        return "+".join(parts) or "baseline"

    @property
    def key(self) -> str:
        """Unique text key: the methods, with ``@MODEL`` when a pruned model is used."""
        return self.methods_key + (f"@{self.model}" if self.model else "")

    def configs(self, registry: dict[str, type[MethodConfig]]) -> list[MethodConfig]:
        """The method configs, built from the registry (ValueError names a bad setting)."""
        return [registry[name](**dict(params)) for name, params in self.components]

    def as_record(self) -> dict[str, Any]:
        """JSON form: ``{"model": ..., "methods": [{"name", "params"}]}`` (see `accel.tune.files`)."""
        return {"model": self.model,
                "methods": [{"name": n, "params": dict(p)} for n, p in self.components]}

    @classmethod
    def from_record(cls, rec: dict[str, Any]) -> "Candidate":
        comps = tuple((m["name"], tuple(sorted(dict(m.get("params") or {}).items()))) for m in rec.get("methods", []))
        return cls(comps, rec.get("model"))


def _fmt(v: Any) -> str:
    return "none" if v is None else str(v).lower() if isinstance(v, bool) else str(v)


@dataclass
class Space:
    """The joint space: per kind a list of (method, settings) options, plus model variants."""

    options: dict[str, list[tuple[str, tuple[tuple[str, Any], ...]]]] = field(default_factory=dict)
    models: tuple[str | None, ...] = (None,)

    def size(self) -> int:
        n = len(self.models)
        for opts in self.options.values():
            n *= len(opts) + 1  # +1: no method of this kind
        return n

    def grid(self) -> list[Candidate]:
        """Every candidate except the bare original model (the baseline), in a fixed order."""
        kinds = sorted(self.options)
        per_kind = [[None, *self.options[k]] for k in kinds]
        out = []
        for model in self.models:
            for combo in itertools.product(*per_kind):
                comps = tuple(c for c in combo if c is not None)
                if comps or model is not None:
                    out.append(Candidate(comps, model))
        return out

    def sample(self, n: int, rng: random.Random) -> list[Candidate]:
        """``n`` distinct candidates: the grid when it is that small, else a sample that covers
        every method (each one's options spread over the draws) before the rest at random."""
        grid = self.grid()
        if n >= len(grid):
            return grid
        chosen: list[Candidate] = []
        seen: set[str] = set()
        # one pass that puts every single method (alone, on the original model) in first, spread over its options
        for kind in sorted(self.options):
            by_method: dict[str, list] = {}
            for opt in self.options[kind]:
                by_method.setdefault(opt[0], []).append(opt)
            for opts in by_method.values():
                c = Candidate((rng.choice(opts),), None)
                if c.key not in seen and len(chosen) < n // 2:
                    chosen.append(c)
                    seen.add(c.key)
        rest = [c for c in grid if c.key not in seen]
        rng.shuffle(rest)
        return chosen + rest[: n - len(chosen)]

    def neighbours(self, c: Candidate) -> list[Candidate]:
        """Candidates that differ from ``c`` in one setting of one method (same methods, same model)."""
        out = []
        for i, (name, params) in enumerate(c.components):
            kind = next(k for k, opts in self.options.items() if any(o[0] == name for o in opts))
            for opt in self.options[kind]:
                if opt[0] != name or opt[1] == params:
                    continue
                if sum(a != b for a, b in zip(opt[1], params)) == 1:
                    comps = list(c.components)
                    comps[i] = opt
                    out.append(Candidate(tuple(comps), c.model))
        return out


def method_options(cls: type[MethodConfig], name: str, values: dict[str, Any] | None = None
                   ) -> list[tuple[str, tuple[tuple[str, Any], ...]]]:
    """Every combination of ``cls.tunable``'s values that builds a valid config; ``values`` overrides
    a field's candidates (a tuple) or fixes it (anything else), e.g. for a smaller grid."""
    tunable = dict(getattr(cls, "tunable", {}) or {})
    fixed = {}
    for k, v in (values or {}).items():
        if isinstance(v, tuple):
            tunable[k] = v
        else:
            tunable.pop(k, None)
            fixed[k] = v
    keys = sorted(tunable)
    out = []
    for values in itertools.product(*(tunable[k] for k in keys)):
        params = dict(zip(keys, values), **fixed)
        try:
            cls(**params)
        except (ValueError, TypeError):
            continue
        out.append((name, tuple(sorted(params.items()))))
    return out


def build_space(registry: dict[str, type[MethodConfig]], methods: Sequence[str] | None = None,
                models: Iterable[str | None] = (None,), values: dict[str, dict[str, Any]] | None = None) -> Space:
    """The joint space of ``methods`` (default: every accelerating method that declares ``tunable``);
    ``values[method]`` narrows or fixes settings (see `method_options`)."""
    if methods is not None and not [n for n in methods if n]:
        raise SettingError("methods", "is empty: name at least one method, or leave it out for every tunable one")
    names = list(methods) if methods is not None else [n for n, c in registry.items()
                                                       if getattr(c, "accelerates", True) and getattr(c, "tunable", None)]
    if "" in names:
        raise SettingError("methods", f"{','.join(names)!r} has an empty name")
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:  # each would double the space
        raise SettingError("methods", f"lists {', '.join(twice)} twice (each would double the space)")
    unknown = [n for n in names if n not in registry]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; available: {', '.join(sorted(registry))}")
    options: dict[str, list] = {}
    for n in names:
        cls = registry[n]
        if not getattr(cls, "tunable", None):
            raise ValueError(f"method {n!r} declares no tunable settings (its config's `tunable` is empty)")
        options.setdefault(cls.kind, []).extend(method_options(cls, n, (values or {}).get(n)))
    return Space(options, tuple(models))
