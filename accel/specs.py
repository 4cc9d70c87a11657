"""Method specs as text: ``"delta-cache"``, ``"delta-cache:interval=3,forecast=0"``, ``"fast"``.

The one parser of ``NAME[:key=value,...]`` (`accel bench --methods`, `accel.apply(pipe, "...")`):
values are converted to the config field's annotated type (``int``, ``float``, ``bool``,
``Literal``, unions such as ``int | float`` or ``int | None``), so ``delta-cache:boundary=12``
is the integer 12 and ``boundary=0.6`` the fraction 0.6. ``configs_from_spec`` also takes a
preset name (accel/presets.py) and ``+`` to stack methods.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any


class SpecError(ValueError):
    """A method spec that cannot be read (unknown method or option, a value of the wrong type);
    `accel bench` reports it as bad input (exit code 2)."""


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
        except SpecError:
            pass
    allowed = " or ".join("none" if a is type(None) else getattr(a, "__name__", str(a)) for a in args)
    raise SpecError(f"{where}: expected {allowed}, got {value!r}")


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
        raise SpecError(f"{where}: {value!r} is not one of {list(args)}")
    if origin in (list, tuple) or annotation in (list, tuple):
        inner = args[0] if args else typing.Any
        items = [convert(v, inner, where) for v in value.replace(";", " ").replace("|", " ").split()]
        return tuple(items) if (origin or annotation) is tuple else items
    if annotation is bool:
        lit = _literal(value)
        if isinstance(lit, bool) or lit in (0, 1):
            return bool(lit)
        raise SpecError(f"{where}: expected true/false, got {value!r}")
    if annotation in (int, float):
        try:
            return annotation(value)
        except ValueError:
            kind = "an integer" if annotation is int else "a number"
            raise SpecError(f"{where}: expected {kind}, got {value!r}") from None
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
            raise SpecError(
                f"method {name!r} has no option {key!r}; valid options: {', '.join(sorted(fields)) or '(none)'}"
            )
        kwargs[key] = convert(val, fields[key], f"{name}:{key}")
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as exc:
        raise SpecError(f"invalid settings for method {name!r}: {exc}") from None


def _kv(item: str, kw: dict, name: str) -> None:
    key, eq, val = item.partition("=")
    key, val = key.strip(), val.strip()
    if not eq or not key or not val:
        raise SpecError(f"bad option {item!r} for method {name!r}: expected key=value")
    if key in kw:
        raise SpecError(f"option {key!r} given twice for method {name!r}")
    kw[key] = val


def parse_component(text: str, registry: dict[str, type], also: tuple[str, ...] = ()) -> tuple[str, dict[str, str]]:
    """``"NAME:key=val,..."`` -> (NAME, {key: val}); NAME must be in ``registry`` (or ``also``)."""
    name, _, rest = text.partition(":")
    name = name.strip()
    if not name:
        raise SpecError(f"empty method name in {text!r}")
    if name not in also and name not in registry:
        raise SpecError(f"unknown method {name!r}; available: {', '.join([*also, *sorted(registry)])}")
    kw: dict[str, str] = {}
    if rest.strip():
        for item in rest.split(","):
            _kv(item, kw, name)
    return name, kw


def configs_from_spec(spec: str, pipe_or_model: Any) -> list[Any]:
    """The method configs one spec string names, for `accel.apply`.

    ``spec`` is a preset name ("fast", "balanced", "quality": this model family's settings,
    accel/presets.py), a method name at its defaults ("delta-cache"), a method with settings
    as `accel bench --methods` takes them ("delta-cache:interval=3,forecast=0"), or several of
    these stacked with ``+`` ("delta-cache+tome:ratio=0.3").
    """
    import accel

    from .presets import NAMES, preset

    text = spec.strip()
    if not text:
        raise SpecError("empty method spec; give a preset (fast, balanced, quality) or a method name")
    if text in NAMES:
        return preset(text, pipe_or_model)
    registry = accel.methods()
    out = []
    for part in text.split("+"):
        name, raw = parse_component(part, registry)
        out.append(build_config(name, registry[name], raw))
    return out
