"""Every method config's docstring carries a usage example (as diffusers' apply_* functions do), and it runs."""

from __future__ import annotations

import dataclasses
import inspect
import textwrap

import pytest

import accel


def _example(cls: type) -> str:
    doc = inspect.getdoc(cls) or ""
    assert "Example::" in doc, f"{cls.__name__}: no usage example in its docstring"
    lines = doc.split("Example::", 1)[1].splitlines()[1:]
    code = []
    for line in lines:
        if line.strip() and not line.startswith("    "):
            break
        code.append(line)
    return textwrap.dedent("\n".join(code))


@pytest.mark.parametrize("name", sorted(accel.methods()))
def test_the_docstring_example_applies_the_method_and_runs(name, capsys):
    cls = accel.methods()[name]
    code = _example(cls)
    assert f"{cls.__name__}(" in code and "accel.apply(pipe" in code
    # cheaper than written (the suite runs on 2 CPU cores): 10 steps, and 2 calibration images, not 8
    code = code.replace("num_inference_steps=20", "num_inference_steps=10").replace("progress=False)",
                                                                                  "progress=False, images=2)")
    scope: dict = {}
    exec(compile(code, f"<{cls.__name__} example>", "exec"), scope)  # noqa: S102 - our own docstring
    assert len(scope["images"]) == 2  # PIL images, one per class label
    if "print(" in code:
        assert capsys.readouterr().out.strip()
    if cls.kind == "cache":
        total = scope["handle"].stats()["total"]
        assert total["block_evals"] < total["block_total"]  # the example's settings really skip blocks


@pytest.mark.slow  # a fresh interpreter imports torch and diffusers: 61 s at load 14
def test_method_configs_are_top_level_names_loaded_on_first_use():
    import subprocess
    import sys

    code = ("import sys, accel; assert 'accel.tokens' not in sys.modules; "
            "from accel.tokens import TomeConfig; assert accel.TomeConfig is TomeConfig; "
            "assert set(accel._LAZY) <= set(accel.__all__)")
    subprocess.run([sys.executable, "-c", code], check=True)
    with pytest.raises(AttributeError, match="no attribute 'NoSuchConfig'"):
        accel.NoSuchConfig  # noqa: B018


@pytest.mark.parametrize("name", sorted(accel.methods()))
def test_every_setting_is_documented_in_the_config_docstring(name):
    """The config's docstring is the one home of a method's settings: each field has a `name:` entry there
    (`a / b: ...` describes several)."""
    cls = accel.methods()[name]
    described = set()
    for line in (inspect.getdoc(cls) or "").splitlines():
        head, sep, _ = line.partition(":")
        if sep and not line.startswith(" "):
            described |= {w.strip() for w in head.split("/")}
    missing = [f.name for f in dataclasses.fields(cls) if f.name not in described]
    assert not missing, f"{cls.__name__}: settings not described in its docstring: {missing}"
