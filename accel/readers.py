"""The one bounded reader for every file accel reads: JSON, text, safetensors.

A user's file (or a tampered one) must not be able to fill memory, overflow the parser's stack or slip a
NaN into a model. So every read here is bounded while it happens: bytes are read in chunks up to a size
limit (``/dev/zero`` stops at the limit), JSON nesting is measured before parsing (no RecursionError),
``NaN`` / ``Infinity`` tokens and numbers that overflow to infinity are refused, and safetensors can be
checked for finite values where a NaN would poison a model. Optional field checks (:class:`Field`)
validate a document's keys, types and ranges. Every failure is a :class:`ReadError` whose one-line
message names the file and what is wrong. Low layer: imports nothing from accel but ``errors``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import accumulate
from pathlib import Path
from typing import Any

from .errors import InputError

MiB = 1 << 20
MAX_JSON_BYTES = 16 * MiB  # settings, markers, schedules, checkpoint state, cache entries
MAX_TEXT_BYTES = 128 * MiB  # prompt files (COCO's train captions JSON is 91 MB)
MAX_LINES = 2_000_000  # prompt files: a list of strings this long already takes a few hundred MB
MAX_DEPTH = 64  # far beyond any file accel writes (tune.json nests about 6 deep)
_CHUNK = MiB

# a JSON string (possessive, so a long or unterminated one costs linear time); its brackets do not nest
_STRING = re.compile(r'"(?:[^"\\]++|\\.)*+(?:"|\\?\Z)', re.S)
_NOT_BRACKET = re.compile(r"[^\[\]{}]++")
_LINE_BREAKS = ("\n", "\r", "\v", "\f", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029")  # where str.splitlines splits
_DELTA = {"[": 1, "{": 1, "]": -1, "}": -1}


class ReadError(InputError):
    """A file (or data given in its place) accel will not read: too large, not UTF-8 or JSON, nested too
    deeply, a non-finite number, or a field of the wrong type or range. The message is one line,
    ``"{where}: {problem}"``; both parts are kept so a caller can reword it."""

    def __init__(self, where: str, problem: str) -> None:
        super().__init__(where, problem)  # both as args: the error pickles (crosses process boundaries)
        self.where, self.problem = where, problem

    def __str__(self) -> str:
        return f"{self.where}: {self.problem}"


@dataclass(frozen=True)
class Field:
    """What one key of a JSON object must hold: `kind` (JSON types as Python types; an int is accepted
    where float is asked for, a bool never counts as a number), whether it is `required`, an inclusive
    numeric range [`low`, `high`] (numbers must be finite), and optionally the allowed `choices`."""

    kind: type | tuple[type, ...]
    required: bool = False
    low: float | None = None
    high: float | None = None
    choices: tuple[Any, ...] | None = None


def _where(path: str | Path, what: str) -> str:
    return f"{what} {path}" if what else str(path)


def _short(value: Any, n: int = 60) -> str:
    text = repr(value) if not isinstance(value, (dict, list)) else type(value).__name__
    return text if len(text) <= n else text[: n - 3] + "..."


def read_bytes(path: str | Path, *, what: str = "", max_bytes: int = MAX_JSON_BYTES) -> bytes:
    """The bytes of `path`, read in chunks and stopped as soon as they pass `max_bytes` (ReadError)."""
    where = _where(path, what)
    p = Path(path)
    if p.is_dir():
        raise ReadError(where, "is a directory, not a file")
    chunks, size = [], 0
    try:
        with open(p, "rb") as f:
            while True:
                chunk = f.read(min(_CHUNK, max_bytes + 1 - size))
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
                if size > max_bytes:
                    raise ReadError(where, f"larger than {_size(max_bytes)}, the limit for this file "
                                    "(is it the right file?)")
    except FileNotFoundError:
        raise ReadError(where, "cannot be read (no such file)") from None
    except OSError as exc:
        raise ReadError(where, f"cannot be read ({exc.strerror or type(exc).__name__})") from None
    return b"".join(chunks)


def _size(n: int) -> str:
    return f"{n / MiB:g} MiB" if n >= MiB else f"{n} bytes"


def _decode(data: bytes, where: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ReadError(where, f"not UTF-8 text (byte {exc.start})") from None


def read_text(path: str | Path, *, what: str = "", max_bytes: int = MAX_TEXT_BYTES,
              max_lines: int | None = None) -> str:
    """The UTF-8 text of `path` (a BOM dropped), at most `max_bytes` read and, with `max_lines`, at most
    that many lines (counted before anything splits them); ReadError beyond either."""
    where = _where(path, what)
    text = _decode(read_bytes(path, what=what, max_bytes=max_bytes), where)
    if max_lines is not None and sum(map(text.count, _LINE_BREAKS)) > max_lines:
        raise ReadError(where, f"more than {max_lines:,} lines, the limit for this file")
    return text


def read_lines(path: str | Path, *, what: str = "", max_bytes: int = MAX_TEXT_BYTES,
               max_lines: int | None = MAX_LINES) -> list[str]:
    """The lines of the text file `path`, bounded as :func:`read_text`."""
    return read_text(path, what=what, max_bytes=max_bytes, max_lines=max_lines).splitlines()


def nesting_depth(text: str) -> int:
    """How deeply the arrays/objects of the JSON `text` nest, counted without parsing (brackets inside
    strings do not count). Linear time, no recursion."""
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    return max(accumulate(map(_DELTA.__getitem__, brackets)), default=0)


class _NonFinite(ValueError):
    pass


def _constant(token: str) -> float:
    raise _NonFinite(token)


def _position(text: str, token: str) -> str:
    """' at line L column C' of the first `token` outside a string in `text` ('' if not found)."""
    for m in re.finditer(_STRING.pattern + r"|(?<![\w.+-])" + re.escape(token) + r"(?![\w.])", text, re.S):
        if not m.group().startswith('"'):
            line = text.count("\n", 0, m.start()) + 1
            return f" at line {line} column {m.start() - text.rfind(chr(10), 0, m.start())}"
    return ""


def _float(token: str) -> float:
    value = float(token)
    if not math.isfinite(value):
        raise _NonFinite(token)
    return value


def parse_json(text: str | bytes, *, where: str, max_depth: int = MAX_DEPTH,
               max_bytes: int = MAX_JSON_BYTES, finite: bool = True) -> Any:
    """JSON `text` parsed with accel's limits (size, nesting depth, finite numbers only); `where` names the
    source in the ReadError (a file, or a flag such as ``--pipeline-kwargs``). `finite=False` is for
    other libraries' files that use ``Infinity`` on purpose (diffusers scheduler configs)."""
    if len(text) > max_bytes:
        raise ReadError(where, f"larger than {_size(max_bytes)}, the limit for this input")
    if isinstance(text, bytes):
        text = _decode(text, where)
    if text.startswith("\ufeff"):
        text = text[1:]
    opening = text.count("[") + text.count("{")  # an upper bound of the depth: most files skip the scan
    if opening > max_depth and (depth := nesting_depth(text)) > max_depth:
        raise ReadError(where, f"JSON nested too deeply ({depth} levels; accel reads at most {max_depth})")
    try:
        if not finite:
            return json.loads(text)
        return json.loads(text, parse_constant=_constant, parse_float=_float)
    except _NonFinite as exc:
        raise ReadError(where, f"non-finite number {exc}{_position(text, str(exc))} (only finite numbers are "
                               "accepted)") from None
    except json.JSONDecodeError as exc:
        raise ReadError(where, f"not valid JSON ({exc.msg}, line {exc.lineno} column {exc.colno})") from None
    except (ValueError, RecursionError) as exc:  # e.g. an integer of more than 4300 digits
        raise ReadError(where, f"not valid JSON ({' '.join(str(exc).split()) or type(exc).__name__})") from None


def read_json(path: str | Path, *, what: str = "", max_bytes: int = MAX_JSON_BYTES, max_depth: int = MAX_DEPTH,
              fields: Mapping[str, Field] | None = None, finite: bool = True) -> Any:
    """The JSON document in `path`, read with :func:`read_bytes` and :func:`parse_json`; with `fields`, it
    must be an object whose keys pass :func:`check_fields`. `what` prefixes the file in messages."""
    where = _where(path, what)
    doc = parse_json(read_bytes(path, what=what, max_bytes=max_bytes), where=where, max_depth=max_depth,
                     finite=finite)
    if fields is not None:
        check_fields(doc, fields, where=where)
    return doc


def check_fields(doc: Any, fields: Mapping[str, Field], *, where: str) -> dict[str, Any]:
    """`doc` itself when it is a JSON object whose keys match `fields` (other keys are left alone);
    ReadError naming `where` and the first key that does not."""
    if not isinstance(doc, dict):
        raise ReadError(where, f"expected a JSON object, got {type(doc).__name__}")
    for key, spec in fields.items():
        if key not in doc:
            if spec.required:
                raise ReadError(where, f"no {key!r}")
            continue
        value = doc[key]
        kinds = spec.kind if isinstance(spec.kind, tuple) else (spec.kind,)
        if float in kinds:
            kinds = (*kinds, int)
        numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
        ok = isinstance(value, kinds) and (bool in kinds or not isinstance(value, bool))
        if not ok:
            names = "/".join("null" if k is type(None) else k.__name__ for k in dict.fromkeys(kinds))
            raise ReadError(where, f"{key} must be {names}, got {_short(value)}")
        if numeric and not math.isfinite(value):
            raise ReadError(where, f"{key} = {value!r} is not a finite number")
        if numeric and ((spec.low is not None and value < spec.low) or (spec.high is not None and value > spec.high)):
            lo = spec.low if spec.low is not None else "-inf"
            hi = spec.high if spec.high is not None else "inf"
            raise ReadError(where, f"{key} = {value!r} is outside [{lo}, {hi}]")
        if spec.choices is not None and value not in spec.choices:
            raise ReadError(where, f"{key} = {_short(value)} is not one of {', '.join(map(repr, spec.choices))}")
    return doc


def check_nesting(value: Any, *, where: str, max_depth: int = MAX_DEPTH) -> None:
    """ReadError when the lists/tuples/dicts of the in-memory `value` nest deeper than `max_depth`
    (data handed over in place of a file; walked without recursion)."""
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (list, tuple, dict)):
            if depth >= max_depth:
                raise ReadError(where, f"nested more than {max_depth} deep")
            stack.extend((v, depth + 1) for v in (item.values() if isinstance(item, dict) else item))


def check_finite(tensors: Mapping[str, Any], *, where: str) -> None:
    """ReadError naming the first floating-point tensor of `tensors` holding NaN or infinity."""
    import torch

    for name, t in tensors.items():
        if isinstance(t, torch.Tensor) and (t.is_floating_point() or t.is_complex()) and not bool(
                torch.isfinite(t).all()):
            raise ReadError(where, f"tensor {name!r} holds NaN or infinite values")


def read_safetensors(path: str | Path, *, what: str = "", finite: bool = True) -> dict[str, Any]:
    """The tensors of the safetensors file `path` (never unpickled); with `finite`, ReadError when a
    floating-point tensor holds NaN or infinity (weights that would poison a model)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    where = _where(path, what)
    if not Path(path).is_file():
        raise ReadError(where, "no such file")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ReadError(where, f"not a readable safetensors file ({' '.join(str(exc).split())})") from None
    if finite:
        check_finite(tensors, where=where)
    return tensors
