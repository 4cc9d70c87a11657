"""Prompt files for `accel bench --prompts FILE`, as benchmark prompt sets come.

* ``.txt`` (or any other suffix): one prompt per line, blank lines skipped;
* ``.csv`` / ``.tsv``: a header row and a caption column (PartiPrompts is a TSV with ``Prompt``);
* ``.json``: a list of strings, a list of objects, or an object holding such a list under
  ``annotations`` (COCO captions), ``data``, ``prompts`` or ``captions``;
* ``.jsonl``: one string or object per line.

The caption column is the ``prompt_column`` setting (``--prompt-column NAME``) or else the first of ``caption``,
``prompt``, ``text`` present (compared case-insensitively).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from ..readers import MAX_LINES, MAX_TEXT_BYTES, ReadError, parse_json, read_text
from .methods import BenchSettingError

CAPTION_COLUMNS = ("caption", "prompt", "text")
_JSON_LIST_KEYS = ("annotations", "data", "prompts", "captions")


def _bad(path: Path, detail: str) -> BenchSettingError:
    """A refusal of the prompts file: names the setting (the command prints it as --prompts)."""
    return BenchSettingError("prompts", f"{path}: {detail}", also=("prompt_column",))


def _column(names: list[str], wanted: str | None, path: Path) -> str:
    by_lower = {n.lower(): n for n in names}
    for c in ([wanted] if wanted else CAPTION_COLUMNS):
        if c in names:
            return c
        if c.lower() in by_lower:
            return by_lower[c.lower()]
    need = f"column {wanted!r}" if wanted else f"a {'/'.join(CAPTION_COLUMNS)} column (or prompt_column NAME)"
    raise _bad(path, f"no {need}; columns: {', '.join(names) or '(none)'}")


def _from_rows(rows: list[Any], column: str | None, path: Path) -> list[str]:
    if all(isinstance(r, str) for r in rows):
        if column:
            raise _bad(path, f"holds plain strings, prompt_column {column!r} does not apply")
        return rows
    if not all(isinstance(r, dict) for r in rows):
        raise _bad(path, "expected strings or objects, one per prompt")
    names = list(dict.fromkeys(k for r in rows for k in r))
    col = _column(names, column, path)
    bad = next((i for i, r in enumerate(rows) if not isinstance(r.get(col), str)), None)
    if bad is not None:
        raise _bad(path, f"entry {bad} has no text in column {col!r}")
    return [r[col] for r in rows]


def _json_rows(path: Path, text: str) -> list[Any]:
    if path.suffix.lower() == ".jsonl":
        rows = []
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rows.append(parse_json(line, where=f"line {n}", max_bytes=MAX_TEXT_BYTES))
                except ReadError as exc:
                    raise _bad(path, str(exc)) from None
        return rows
    try:
        doc = parse_json(text, where=str(path), max_bytes=MAX_TEXT_BYTES)
    except ReadError as exc:
        raise _bad(path, exc.problem) from None
    if isinstance(doc, dict):
        key = next((k for k in _JSON_LIST_KEYS if isinstance(doc.get(k), list)), None)
        if key is None:
            raise _bad(path, f"a JSON object needs a list under one of {', '.join(_JSON_LIST_KEYS)}")
        doc = doc[key]
    if not isinstance(doc, list):
        raise _bad(path, "expected a JSON list of prompts")
    return doc


def load_prompts(path: str | Path, column: str | None = None) -> list[str]:
    """The prompts of ``path`` in file order (whitespace stripped, empty ones dropped)."""
    path = Path(path)
    try:  # bounded: `--prompts /dev/zero` stops at the size limit instead of filling memory
        text = read_text(path, what="prompts file", max_lines=MAX_LINES)
    except ReadError as exc:
        raise _bad(path, exc.problem) from None
    suffix = path.suffix.lower()
    if suffix in (".json", ".jsonl"):
        prompts = _from_rows(_json_rows(path, text), column, path)
    elif suffix in (".csv", ".tsv"):
        reader = csv.DictReader(text.splitlines(), delimiter="\t" if suffix == ".tsv" else ",")
        col = _column(list(reader.fieldnames or []), column, path)
        prompts = [row.get(col) or "" for row in reader]
    else:
        if column:
            raise _bad(path, "prompt_column needs a .csv, .tsv, .json or .jsonl file")
        prompts = text.splitlines()
    prompts = [p.strip() for p in prompts if p and p.strip()]
    if not prompts:
        raise _bad(path, "no prompts found")
    return prompts
