"""Shared fixtures: tiny random-init instances of every supported family (built once per session)."""

from __future__ import annotations

import pytest
import torch

from accel.testing import FAMILIES, tiny_pipeline

torch.set_num_threads(2)


@pytest.fixture(scope="session", autouse=True)
def _private_cache_dir(tmp_path_factory):
    """Calibrations and FD statistics the tests write go to a temporary cache directory."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ACCEL_CACHE_DIR", str(tmp_path_factory.mktemp("accel-cache")))
        yield


@pytest.fixture(scope="session")
def tiny_pipes() -> dict:
    """family -> stock diffusers pipeline around a 3-block random transformer (built lazily)."""

    class _Lazy(dict):
        def __missing__(self, family):
            self[family] = tiny_pipeline(family)
            return self[family]

    return _Lazy()


@pytest.fixture(params=FAMILIES)
def family(request) -> str:
    return request.param
