"""Bad input that used to pass silently or crash (issue 18): non-finite settings, broken rates
and config files, unknown pipeline kwargs, a reference-image folder on the default model."""

from __future__ import annotations

import dataclasses
import json
import math
import typing

import pytest

import accel
from accel.eval.methods import BenchInputError, build_config


def _float_fields() -> list[tuple[str, type, str]]:
    """(cli name, config class, field) for every field of every registered method that takes a float."""
    out = []
    for name, cls in accel.methods().items():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            hint = hints[f.name]
            if hint is float or float in typing.get_args(hint):
                out.append((name, cls, f.name))
    return out


FLOAT_FIELDS = _float_fields()


def test_float_fields_are_found():
    # the registry's float fields (delta-cache 2, residual 1, schedule 1, toca 3, tome 1 when written)
    assert len(FLOAT_FIELDS) >= 8


@pytest.mark.parametrize("name,cls,field", FLOAT_FIELDS, ids=[f"{n}:{f}" for n, _, f in FLOAT_FIELDS])
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_float_refused_at_construction(name, cls, field, bad):
    with pytest.raises(ValueError, match=field):
        cls(**{field: bad})


@pytest.mark.parametrize("name,cls,field", FLOAT_FIELDS, ids=[f"{n}:{f}" for n, _, f in FLOAT_FIELDS])
@pytest.mark.parametrize("text", ["nan", "NaN", "inf", "-inf"])
def test_non_finite_float_refused_at_parse(name, cls, field, text):
    with pytest.raises(BenchInputError, match=field):
        build_config(name, cls, {field: text})
