"""argparse `type=` functions for every numeric flag of every command (the one home of these checks).

Each parses one flag value or raises `argparse.ArgumentTypeError` with a short reason, so a bad
number (nan, inf, a negative count, a rate outside [0, 1]) is refused at parse time, before any
model loads, with one line naming the flag.
"""

from __future__ import annotations

import argparse
import math
from typing import Callable


def _number(text: str, kind: type) -> float | int:
    try:
        v = kind(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"invalid {kind.__name__} value {text!r}") from None
    if isinstance(v, float) and not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return v


def finite_float(text: str) -> float:
    """Any finite float (no nan / inf)."""
    return float(_number(text, float))


def positive_float(text: str) -> float:
    """A finite float > 0."""
    v = finite_float(text)
    if v <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return v


def nonneg_float(text: str) -> float:
    """A finite float >= 0."""
    v = finite_float(text)
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return v


def unit_interval(text: str) -> float:
    """A float in [0, 1]."""
    v = finite_float(text)
    if not 0 <= v <= 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {text}")
    return v


def open_unit_interval(text: str) -> float:
    """A float in (0, 1]."""
    v = finite_float(text)
    if not 0 < v <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return v


def positive_int(text: str) -> int:
    """An integer >= 1."""
    v = int(_number(text, int))
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return v


def nonneg_int(text: str) -> int:
    """An integer >= 0."""
    v = int(_number(text, int))
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return v


def int_at_least(lo: int) -> Callable[[str], int]:
    """An integer >= `lo`."""
    def parse(text: str) -> int:
        v = int(_number(text, int))
        if v < lo:
            raise argparse.ArgumentTypeError(f"must be >= {lo}, got {text}")
        return v
    parse.__name__ = f"int_at_least_{lo}"
    return parse


def seed_int(text: str) -> int:
    """A seed: an integer in [0, 2**63)."""
    v = nonneg_int(text)
    if v >= 2**63:
        raise argparse.ArgumentTypeError(f"must be < 2**63, got {text}")
    return v


def _bounded(name: str, check: Callable[[int], None], lo: int = 1) -> Callable[[str], int]:
    """An integer >= `lo` that also passes an accel.bounds check (its SettingError's detail is the reason)."""
    from .errors import SettingError

    def parse(text: str) -> int:
        v = int(_number(text, int))
        if v < lo:
            raise argparse.ArgumentTypeError(f"must be >= {lo}, got {text}")
        if v:
            try:
                check(v)
            except SettingError as exc:
                raise argparse.ArgumentTypeError(exc.detail) from None
        return v
    parse.__name__ = name
    return parse


def _images(v: int) -> None:
    from .bounds import check_images

    check_images("images", v)


def _steps(v: int) -> None:
    from .bounds import check_steps

    check_steps("steps", v)


def _threads(v: int) -> None:
    from .bounds import check_threads

    check_threads(v)


def _repeats(v: int) -> None:
    from .bounds import MAX_REPEATS, check_count

    check_count("repeats", v, MAX_REPEATS)


image_count = _bounded("image_count", _images)  # an image count in [1, accel.bounds.MAX_IMAGES]
image_count_or_zero = _bounded("image_count_or_zero", _images, lo=0)  # the same, 0 allowed (e.g. = skip)
step_count = _bounded("step_count", _steps)  # sampling steps in [1, accel.bounds.MAX_STEPS]
thread_count = _bounded("thread_count", _threads)  # torch threads in [1, os.cpu_count()]
repeat_count = _bounded("repeat_count", _repeats)  # timed repeats in [1, accel.bounds.MAX_REPEATS]
repeat_count_or_zero = _bounded("repeat_count_or_zero", _repeats, lo=0)


def keep_amount(text: str) -> str:
    """`accel prune --keep`: a block count >= 1 or a fraction in (0, 1) (checked against the depth later)."""
    t = text.strip()
    if t.lstrip("+").isdigit():
        positive_int(t)
        return t
    v = finite_float(t)
    if not 0 < v < 1:
        raise argparse.ArgumentTypeError(f"give a block count >= 1 or a fraction in (0, 1), got {text}")
    return t


def set_types(parser: argparse.ArgumentParser, types: dict[str, Callable[[str], object]]) -> None:
    """Give the options named in `types` (by flag, e.g. '--iters') their parse function; KeyError if one is
    missing, so a renamed flag cannot silently lose its check."""
    by_flag = {s: a for a in parser._actions for s in a.option_strings}
    for flag, fn in types.items():
        by_flag[flag].type = fn


def one_line_errors(parser: argparse.ArgumentParser) -> None:
    """Make `parser.error` print one line (no usage block) and exit 2, like every other bad input;
    "argument --steps: must be >= 1, got 0" reads "--steps must be >= 1, got 0"."""
    import re
    import sys

    def error(message: str) -> None:
        message = re.sub(r"^argument (-[^\s:/]+)(/-[^\s:]+)*: ", r"\1 ", " ".join(message.split()))
        print(f"{parser.prog}: error: {message}", file=sys.stderr)
        sys.exit(2)

    parser.error = error  # type: ignore[method-assign]
