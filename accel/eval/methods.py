"""Method specs of `accel bench`: ``--methods`` parsing and ``key=value`` type conversion.

A spec is one row of the results: the baseline (no config) or one config / a stack of
configs looked up by CLI name in ``accel.methods()``. Values are converted to the config
field's annotated type (``int``, ``float``, ``bool``, ``Literal``, unions such as
``int | float`` or ``int | None``), so ``delta-cache:boundary=12`` is the integer 12 and
``boundary=0.6`` the fraction 0.6.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from ..errors import SettingError

BASELINE = "baseline"


class BenchInputError(ValueError):
    """Bad user input to `accel bench` (exit code 2, nothing written)."""


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


def _literal(text: str) -> Any:
    low = text.lower()
    if low in ("true", "yes", "on"):
        return True
    if low in ("false", "no", "off"):
        return False
    if low in ("none", "null"):
        return None
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    return text


def _convert_union(value: str, args: tuple, where: str) -> Any:
    """First member type that accepts the text: ``int | float`` gives 12 for "12", 0.6 for "0.6"."""
    if value.lower() in ("none", "null") and type(None) in args:
        return None
    for a in args:
        if a is type(None):
            continue
        try:
            return convert(value, a, where)
        except BenchInputError:
            pass
    allowed = " or ".join("none" if a is type(None) else getattr(a, "__name__", str(a)) for a in args)
    raise BenchInputError(f"{where}: expected {allowed}, got {value!r}")


def convert(value: str, annotation: Any, where: str) -> Any:
    """The string ``value`` as the field type ``annotation``; ``where`` names the field in errors."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is typing.Any:
        return _literal(value)
    if origin is typing.Union or origin is types.UnionType:
        return _convert_union(value, args, where)
    if origin is typing.Literal:
        for a in args:
            if str(a) == value or (not isinstance(a, str) and _literal(value) == a):
                return a
        raise BenchInputError(f"{where}: {value!r} is not one of {list(args)}")
    if origin in (list, tuple) or annotation in (list, tuple):
        inner = args[0] if args else typing.Any
        items = [convert(v, inner, where) for v in value.replace(";", " ").replace("|", " ").split()]
        return tuple(items) if (origin or annotation) is tuple else items
    if annotation is bool:
        lit = _literal(value)
        if isinstance(lit, bool) or lit in (0, 1):
            return bool(lit)
        raise BenchInputError(f"{where}: expected true/false, got {value!r}")
    if annotation in (int, float):
        try:
            return annotation(value)
        except ValueError:
            kind = "an integer" if annotation is int else "a number"
            raise BenchInputError(f"{where}: expected {kind}, got {value!r}") from None
    if annotation is str:
        return value
    return _literal(value)


def build_config(name: str, cls: type, raw: dict[str, str]) -> Any:
    """``cls(**kwargs)`` with each ``key=val`` string converted to the dataclass field's type."""
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # noqa: BLE001 - unresolvable annotations: fall back to literals
        hints = {}
    fields = {f.name: hints.get(f.name, typing.Any) for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for key, val in raw.items():
        if key not in fields:
            raise BenchInputError(
                f"method {name!r} has no option {key!r}; valid options: {', '.join(sorted(fields)) or '(none)'}"
            )
        kwargs[key] = convert(val, fields[key], f"{name}:{key}")
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as exc:
        raise BenchInputError(f"invalid settings for method {name!r}: {exc}") from None


def _component(text: str, registry: dict[str, type]) -> tuple[str, dict]:
    name, _, rest = text.partition(":")
    name = name.strip()
    if not name:
        raise BenchInputError(f"empty method name in {text!r}")
    if name != BASELINE and name not in registry:
        raise BenchInputError(f"unknown method {name!r}; available: {', '.join([BASELINE, *sorted(registry)])}")
    kw: dict[str, str] = {}
    if rest.strip():
        for item in rest.split(","):
            _kv(item, kw, name)
    return name, kw


def _kv(item: str, kw: dict, name: str) -> None:
    key, eq, val = item.partition("=")
    key, val = key.strip(), val.strip()
    if not eq or not key or not val:
        raise BenchInputError(f"bad option {item!r} for method {name!r}: expected key=value")
    if key in kw:
        raise BenchInputError(f"option {key!r} given twice for method {name!r}")
    kw[key] = val


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
