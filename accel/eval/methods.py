"""Method specs of `accel bench`: ``--methods`` parsing and ``key=value`` type conversion.

A spec is one row of the results: the baseline (no config) or one config / a stack of
configs looked up by CLI name in ``accel.methods()``; ``NAME:key=val`` is read by the one
spec parser, accel/specs.py.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ..errors import SettingError
from ..specs import SpecError, build_config, convert, parse_component

__all__ = ["BASELINE", "BenchInputError", "MethodSpec", "build_config", "convert", "default_methods",
           "jsonable", "parse_methods"]

BASELINE = "baseline"


# Bad user input to `accel bench` (exit code 2, nothing written); one class with the spec parser's errors
BenchInputError = SpecError


class BenchSettingError(SettingError, BenchInputError):
    """A refused bench setting: a BenchInputError whose text names the setting (see SettingError)."""


@dataclass
class MethodSpec:
    """One row of the bench: a label and the configs applied together (none = the baseline)."""

    label: str
    components: list[tuple[str, dict]] = field(default_factory=list)
    configs: list[Any] = field(default_factory=list)

    @property
    def is_baseline(self) -> bool:
        return not self.configs

    def config_record(self) -> list[dict]:
        """``[{name, params}]`` per config, JSON-ready (the ``config`` field of a record)."""
        params = [dataclasses.asdict(c) if dataclasses.is_dataclass(c) else dict(vars(c)) for c in self.configs]
        return [{"name": name, "params": jsonable(p)} for (name, _), p in zip(self.components, params)]


def jsonable(x: Any) -> Any:
    """Dicts/lists/scalars as they are; anything else as its ``str``."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, (str, int, float, bool)) or x is None:
        return x
    return str(x)


def _component(text: str, registry: dict[str, type]) -> tuple[str, dict]:
    return parse_component(text, registry, also=(BASELINE,))


def _groups(spec: str) -> list[list[str]]:
    """Split ``--methods`` into groups of raw components; options after ',' join the method before."""
    groups: list[list[str]] = []
    for tok in spec.split(","):
        tok = tok.strip()
        if not tok:
            raise BenchSettingError("methods", f"{spec!r}: an empty entry")
        pieces = [p.strip() for p in tok.split("+")]
        if "=" in pieces[0] and ":" not in pieces[0]:
            if not groups:
                raise BenchSettingError("methods", f": option {pieces[0]!r} comes before any method")
            groups[-1][-1] += ("," if ":" in groups[-1][-1] else ":") + pieces[0]
        else:
            groups.append([pieces[0]])
        groups[-1].extend(pieces[1:])
    return groups


def parse_methods(spec: str | None, registry: dict[str, type]) -> list[MethodSpec]:
    """Parse ``baseline,NAME[:key=val,...][+NAME2[:...]],...`` into specs, the baseline first.

    Commas separate methods and also ``key=val`` options: an item holding ``=`` but no
    ``:`` continues the options of the method before it. ``+`` stacks configs into one
    method. ``None`` means the baseline + every registered method at default settings.
    """
    if spec is not None and not spec.strip():  # '' would otherwise mean "every method"
        raise BenchSettingError("methods", "is empty: name at least one method (e.g. baseline), or leave it out for "
                                      "the default set")
    raw = [[n] for n in registry] if spec is None else _groups(spec)
    out: list[MethodSpec] = [MethodSpec(BASELINE)]
    seen = {BASELINE}
    for group in raw:
        comps = [_component(text, registry) for text in group]
        if [n for n, _ in comps] == [BASELINE]:
            if comps[0][1]:
                raise BenchInputError("the baseline takes no options")
            continue
        if any(n == BASELINE for n, _ in comps):
            raise BenchInputError("'baseline' cannot be stacked with other methods")
        configs = [build_config(n, registry[n], kw) for n, kw in comps]
        label = "+".join(n + (":" + ",".join(f"{k}={v}" for k, v in kw.items()) if kw else "") for n, kw in comps)
        if label in seen:
            raise BenchInputError(f"method {label!r} listed twice")
        seen.add(label)
        out.append(MethodSpec(label, comps, configs))
    return out


def default_methods(registry: dict[str, type], notes: list[str] | None = None) -> list[MethodSpec]:
    """The baseline + every registered method that accelerates, at default settings.

    Utilities (``accelerates = False``, e.g. `trace`) are left out, and so is a method that
    needs settings to be built at all (a note in ``notes`` says which and why).
    """
    names = []
    for name, cls in registry.items():
        if not getattr(cls, "accelerates", True):
            continue
        try:
            build_config(name, cls, {})
        except BenchInputError as exc:
            if notes is not None:
                notes.append(f"{name} left out of the default methods: it needs settings ({exc})")
            continue
        names.append(name)
    return parse_methods(",".join([BASELINE, *names]), registry)
