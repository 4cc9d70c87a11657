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


def _pngs(folder, n: int, size: int = 8) -> None:
    import numpy as np
    from PIL import Image

    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray((rng.random((size, size)) * 255).astype(np.uint8), mode="L").save(folder / f"{i}.png")


def test_reference_images_on_the_default_model(tmp_path, monkeypatch):
    """`--reference-images DIR` on the default model crashed in `extractor_fingerprint` (its
    classifier has 0-dim BatchNorm buffers): now the statistics are computed and cached."""
    import torch

    from accel.eval import fid, prepare

    monkeypatch.setenv("ACCEL_CACHE_DIR", str(tmp_path / "cache"))
    from accel.pipelines import load_model

    pipe = load_model("default").pipe
    ext, _ = prepare._digits_fd(torch.device("cpu"))
    assert any(t.dim() == 0 for t in ext.state_dict().values())  # what used to crash
    key = fid.extractor_fingerprint(ext)
    assert key == fid.extractor_fingerprint(ext) and len(key) == 16
    prep = prepare.Prepared(pipe, [], 20, None, torch.device("cpu"), "default", None, extractor=ext)
    few = tmp_path / "few"
    _pngs(few, 20, size=32)
    with pytest.raises(BenchInputError, match="at least 65"):
        prepare._reference_from_folder(prep, few)
    small = tmp_path / "small"
    _pngs(small, 70, size=8)  # not the model's 32x32: one line, not a traceback from the classifier
    with pytest.raises(BenchInputError, match="8x8"):
        prepare._reference_from_folder(prep, small)
    ref = tmp_path / "ref"
    _pngs(ref, 70, size=32)
    mu, sigma = prepare._reference_from_folder(prep, ref)
    assert mu.shape == (ext.num_features,) and sigma.shape == (ext.num_features,) * 2
    assert torch.isfinite(mu).all() and torch.isfinite(sigma).all()
    assert len(list((tmp_path / "cache" / "fd_stats").glob("*.safetensors"))) == 1


class _OpenEndedPipe:
    """A pipeline whose __call__ also takes **kwargs (as many diffusers pipelines do)."""

    def __call__(self, prompt=None, height=None, num_images_per_prompt=1, generator=None, **kwargs):
        return None


@pytest.mark.parametrize("text,message", [
    ('{"num_images_per_prompt": -5}', "'num_images_per_prompt' is set by the bench"),
    ('{"num_images_per_prompt": 2}', "'num_images_per_prompt' is set by the bench"),
    ('{"heigth": 32}', "_OpenEndedPipe.__call__ takes no 'heigth'"),  # swallowed by **kwargs before
])
def test_pipeline_kwargs_refused(text, message):
    import types

    from accel.eval.prepare import call_kwargs

    args = types.SimpleNamespace(pipeline_kwargs=text, height=None, width=None, negative_prompt=None)
    with pytest.raises(BenchInputError, match=message):
        call_kwargs(args, _OpenEndedPipe())
    args.pipeline_kwargs = '{"height": 32}'
    assert call_kwargs(args, _OpenEndedPipe()) == {"height": 32}


def _write(path, content) -> str:
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content if isinstance(content, str) else json.dumps(content))
    return str(path)


BAD_CONFIGS = {
    "list-as-name": ({"methods": [{"name": ["interval-cache"], "params": {}}]}, "unknown method"),
    "list-as-method": ({"methods": [["interval-cache"]]}, r"methods\[0\] must be an object"),
    "list-as-params": ({"methods": [{"name": "interval-cache", "params": [3]}]}, "params must be an object"),
    "list-as-model": ({"chosen": {"model": ["x"], "methods": []}}, "model must be a folder name"),
    "nan-param": ('{"methods": [{"name": "residual-cache", "params": {"threshold": NaN}}]}', "non-finite number NaN"),
    "not-utf8": (b'{"methods": [{"name": "\xff\xfe"}]}', "not UTF-8"),
    "deep": ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_load_configs_bad_file_is_one_line_value_error(tmp_path, case):
    content, message = BAD_CONFIGS[case]
    path = _write(tmp_path / "tune.json", content)
    with pytest.raises(ValueError, match=message) as info:
        accel.load_configs(path)
    assert "\n" not in str(info.value) and len(str(info.value)) < 400


def test_load_configs_directory(tmp_path):
    with pytest.raises(ValueError, match="is a directory"):
        accel.load_configs(tmp_path)


@pytest.mark.parametrize("case", ["list-as-name", "not-utf8", "deep"])
def test_bench_config_bad_file_exits_2(tmp_path, capsys, case):
    from accel.cli import main

    path = _write(tmp_path / "tune.json", BAD_CONFIGS[case][0])
    out = tmp_path / "out"
    rc = main(["bench", "--config", path, "--no-fd", "--quiet", "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and err.startswith("accel bench: error: --config")
    assert not out.exists()


GOOD_RATES = {"rates": [1.0, 0.75, 0.5], "sublayers": ["attention", "mlp"], "depth": 3,
              "transformer": "DiTTransformer2DModel"}
BAD_RATES = {
    "nan": ({**GOOD_RATES, "rates": [1.0, float("nan"), 0.5]}, "non-finite number NaN"),
    "above-1": ({**GOOD_RATES, "rates": [1.0, 1.5, 0.5]}, r"rates\[1\] = 1.5"),
    "zero": ({**GOOD_RATES, "rates": [0, 1, 1]}, r"rates\[0\] = 0"),
    "string": ({**GOOD_RATES, "rates": ["0.5", 1, 1]}, r"rates\[0\] = '0.5'"),
    "bool": ({**GOOD_RATES, "rates": [True, 1, 1]}, r"rates\[0\] = True"),
    "empty": ({**GOOD_RATES, "rates": []}, "non-empty list"),
    "no-rates": ({"sublayers": ["mlp"]}, "no 'rates' list"),
    "not-object": ([1, 0.5], "no 'rates' list"),
    "truncated": ({**GOOD_RATES, "rates": [1.0, 0.5]}, "depth 3 but holds 2"),
    "sublayer": ({**GOOD_RATES, "sublayers": ["attention", "conv"]}, "unknown sub-layer 'conv'"),
    "sublayers-type": ({**GOOD_RATES, "sublayers": "attention"}, "sublayers must be"),
    "not-utf8": (b'{"rates": [1, \xff]}', "not a JSON rates file"),
    "deep": ('{"rates": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested too deeply"),
}


@pytest.mark.parametrize("case", sorted(BAD_RATES))
def test_bad_rates_file_refused_at_construction(tmp_path, case):
    from accel.tokens import DiffRateConfig

    content, message = BAD_RATES[case]
    path = _write(tmp_path / "rates.json", content)
    with pytest.raises(ValueError, match=message) as info:
        DiffRateConfig(rates=path)
    assert "\n" not in str(info.value)


def test_rates_for_another_model_refused_at_apply(tmp_path):
    from accel.testing import tiny_transformer
    from accel.tokens import DiffRateConfig

    model = tiny_transformer("dit")  # 3 blocks
    good = DiffRateConfig(rates=_write(tmp_path / "good.json", GOOD_RATES))
    accel.apply(model, good).remove()
    deeper = DiffRateConfig(rates=_write(tmp_path / "deep.json", {**GOOD_RATES, "rates": [1.0] * 12, "depth": 12}))
    with pytest.raises(ValueError, match="12 rates for a model with 3 blocks"):
        accel.apply(model, deeper)
    other = DiffRateConfig(rates=_write(tmp_path / "other.json", {**GOOD_RATES, "transformer": "FluxTransformer2DModel"}))
    with pytest.raises(ValueError, match="learned on a FluxTransformer2DModel, not this DiTTransformer2DModel"):
        accel.apply(model, other)
    path = tmp_path / "changed.json"
    changed = DiffRateConfig(rates=_write(path, GOOD_RATES))
    _write(path, BAD_RATES["nan"][0])  # edited between construction and apply: checked again
    with pytest.raises(ValueError, match="non-finite number NaN"):
        accel.apply(model, changed)
    assert not any(hasattr(m, "_diffusers_hook") and m._diffusers_hook._hooks for m in model.modules())


@pytest.mark.parametrize("case", ["nan", "truncated", "depth"])
def test_bench_bad_rates_exits_2_before_any_work(tmp_path, capsys, case):
    from accel.cli import main

    content = {**GOOD_RATES, "rates": [0.5] * 5, "depth": 5} if case == "depth" else BAD_RATES[case][0]
    path = _write(tmp_path / "rates.json", content)
    out = tmp_path / "out"
    rc = main(["bench", "--methods", f"baseline,diffrate:rates={path}", "--no-fd", "--num-images", "2",
               "--quiet", "--threads", "1", "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if "error" in line.lower() or "Traceback" in line]
    assert rc == 2 and len(errors) == 1 and errors[0].startswith("accel bench: error:") and "rates" in errors[0]
    assert not out.exists()


def test_diffrate_sublayers_option():
    import torch

    from accel.testing import tiny_transformer, transformer_inputs
    from accel.tokens import DiffRateConfig

    model = tiny_transformer("dit", num_layers=3)
    counts = {}
    for sub in ("attention", "attention;mlp"):
        with torch.no_grad(), accel.apply(model, DiffRateConfig(rates="0.5", sublayers=sub)) as h:
            model(**transformer_inputs("dit", model))
            counts[sub] = h.stats()["diffrate"]["total"]
    assert counts["attention"]["attention.tokens_out"] == counts["attention"]["attention.tokens_in"] // 2
    assert counts["attention"]["mlp.tokens_out"] == counts["attention"]["mlp.tokens_in"]  # MLP on every token
    assert counts["attention;mlp"]["mlp.tokens_out"] == counts["attention;mlp"]["mlp.tokens_in"] // 2
    with pytest.raises(ValueError, match="sublayers"):
        DiffRateConfig(sublayers="attention;conv")
    with pytest.raises(BenchInputError, match="sublayers"):
        build_config("diffrate", DiffRateConfig, {"sublayers": "nan"})
