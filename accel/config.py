"""Base of every method config, what it installs on (`Target`), the method registry, and validation helpers.

A method is one frozen dataclass (its settings, validated on construction) whose
`install(target)` puts hooks on the model and returns an `Installed` (undo + stats).
`@register_method("cli-name")` makes it reachable by name for the CLI and benchmarks.
"""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from typing import TYPE_CHECKING, Any, Callable, ClassVar

if TYPE_CHECKING:
    import torch

    from .context import StepTracker
    from .families import BlockRef, Family


@dataclasses.dataclass
class Target:
    """What a method installs onto: the transformer, its family, its blocks and the step tracker."""

    model: torch.nn.Module
    family: Family
    blocks: list[BlockRef]
    tracker: StepTracker
    pipeline: Any | None = None

_METHODS: dict[str, type["MethodConfig"]] = {}


def register_method(cli_name: str):
    """Class decorator: register a `MethodConfig` subclass under `cli_name`."""

    def deco(cls: type[MethodConfig]) -> type[MethodConfig]:
        if cli_name in _METHODS and _METHODS[cli_name] is not cls:
            raise ValueError(f"method name {cli_name!r} is taken by {_METHODS[cli_name].__name__}")
        cls.cli_name = cli_name
        _METHODS[cli_name] = cls
        return cls

    return deco


def registered_methods() -> dict[str, type["MethodConfig"]]:
    return dict(_METHODS)


class MethodConfig:
    """Mixin for method config dataclasses.

    kind: methods of the same kind cannot be stacked (two block caches would fight
        over the same blocks); "probe" methods stack with anything.
    accelerates: False for utilities (tracing, attention backend) that `accel bench`
        leaves out of its default method list.
    """

    cli_name: ClassVar[str] = ""
    kind: ClassVar[str] = "probe"
    accelerates: ClassVar[bool] = True
    # field -> candidate values `accel tune` searches (declared next to the fields; {} = not tuned)
    tunable: ClassVar[dict[str, tuple]] = {}

    def __post_init__(self) -> None:
        from .readers import check_nesting

        for f in dataclasses.fields(self):  # before validate() puts a value's repr in a message (RecursionError)
            check_nesting(getattr(self, f.name), where=f"{type(self).__name__}({f.name}=...)", max_depth=16)
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the bad field and its allowed range."""

    def install(self, target: "Target") -> "Installed":
        raise NotImplementedError

    def prepare(self, pipe: Any, run: Callable[[], Any]) -> None:
        """One-off work before measuring (e.g. a calibration); `run()` makes one pipeline call on
        calibration inputs with nothing applied. `accel bench` calls it once per method."""

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]


class Installed:
    """What a method leaves on a model: an undo and its counters."""

    def remove(self) -> None:
        raise NotImplementedError

    def stats(self) -> dict[str, Any]:
        return {}

    def reset_stats(self) -> None:
        pass

    def held_bytes(self) -> int:
        """Bytes of tensors this method keeps between transformer calls (see `Handle.held_bytes`)."""
        return 0


class CallCounters:
    """Integer counters kept per pipeline call, e.g. blocks computed vs reused."""

    def __init__(self) -> None:
        self._calls: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))

    def add(self, call: int, key: str, n: int = 1) -> None:
        self._calls[call][key] += n

    def get(self, call: int, key: str) -> int:
        """One counter of one call (0 when never counted)."""
        return self._calls[call][key] if call in self._calls else 0

    def as_dict(self) -> dict[str, Any]:
        calls = [{"call": c, **dict(v)} for c, v in sorted(self._calls.items())]
        total: dict[str, int] = defaultdict(int)
        for c in calls:
            for k, v in c.items():
                if k != "call":
                    total[k] += v
        return {"calls": calls, "total": dict(total)}

    def clear(self) -> None:
        self._calls.clear()


def check_range(name: str, value: float, lo: float | None = None, hi: float | None = None,
                lo_open: bool = False, hi_open: bool = False) -> None:
    """ValueError unless `value` is a finite number with lo <= value <= hi (open ends excluded when
    asked). NaN and ±inf are refused whatever the bounds: NaN passes every comparison check, and a
    setting at infinity is never meant (e.g. a cache threshold of inf reuses every step)."""
    bad = isinstance(value, bool) or not isinstance(value, (int, float))
    bad = bad or (isinstance(value, float) and not math.isfinite(value))
    if not bad and lo is not None:
        bad = value <= lo if lo_open else value < lo
    if not bad and hi is not None:
        bad = value >= hi if hi_open else value > hi
    if bad:
        left = ("(" if lo_open else "[") + ("-inf" if lo is None else f"{lo:g}")
        right = ("inf" if hi is None else f"{hi:g}") + (")" if hi_open else "]")
        what = "a finite number in" if isinstance(value, float) and not math.isfinite(value) else "in"
        raise ValueError(f"{name} must be {what} {left}, {right}, got {value!r}")


def check_int(name: str, value: int, lo: int | None = None, hi: int | None = None) -> None:
    """ValueError unless `value` is an int in [lo, hi]."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    check_range(name, value, lo, hi)


def check_choice(name: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
