"""Strict JSON and provenance of what the bench and benchmarks/ write (no Infinity/NaN; meta)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from accel.eval.provenance import git_commit, package_versions, run_meta, strict_json

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import _common  # noqa: E402


def _strict_load(text: str):
    def refuse(token):
        raise AssertionError(f"non-standard JSON token {token}")

    return json.loads(text, parse_constant=refuse)


def test_strict_json_replaces_non_finite_and_says_where():
    doc = {"a": [1.0, math.inf, {"b": -math.inf}], "c": np.float32("nan"), "d": torch.tensor(2.5), "e": (1, 2)}
    clean, where = strict_json(doc)
    assert clean == {"a": [1.0, None, {"b": None}], "c": None, "d": 2.5, "e": [1, 2]}
    assert where == ["a[1] = inf", "a[2].b = -inf", "c = nan"]
    json.dumps(clean, allow_nan=False)


def test_benchmark_json_is_strict_with_meta(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["benchmarks/caching.py", "--num-images", "8"])
    out = tmp_path / "r" / "x.json"
    _common.write_json(out, {"workloads": [{"records": [{"method": "baseline", "psnr": math.inf},
                                                        {"method": "m", "psnr": 31.0, "fd": math.nan}]}]})
    doc = _strict_load(out.read_text())
    assert doc["workloads"][0]["records"][0]["psnr"] is None
    assert doc["notes"] == ["psnr null = identical to baseline (infinite): workloads[0].records[0]",
                            "workloads[0].records[1].fd null = nan (not a JSON number)"]
    meta = doc["meta"]
    assert meta["command"] == ["benchmarks/caching.py", "--num-images", "8"] and meta["machine"]
    assert meta["versions"]["torch"] == torch.__version__ and "diffusers" in meta["versions"]


def test_git_commit_outside_a_checkout_is_none(tmp_path):
    assert git_commit(tmp_path) is None
    here = git_commit()
    assert here is None or len(here.split("+")[0]) == 40


def test_run_meta_fields():
    meta = run_meta(["accel", "bench"])
    assert meta["command"] == ["accel", "bench"]
    assert set(meta["versions"]) == {"torch", "diffusers", "accelerate", "torchmetrics", "transformers", "accel"}
    assert package_versions(["surely-not-installed-pkg"]) == {"surely-not-installed-pkg": None}


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parents[1] / "benchmarks" / "results").glob("*.json")))
def test_stored_benchmark_results_are_strict_json(path):
    _strict_load(path.read_text())
