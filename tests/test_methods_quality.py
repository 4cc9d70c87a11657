"""Every registered method, at its default settings, on the embedded default model.

Binds the methods to the product: each one must really save work (a cache reuses
blocks) and keep PSNR to the uncached images above a floor measured on this workload
(8 paired images, classes 0-7, 10 DPM-Solver++ steps, guidance 2.0; 2-core CPU,
torch 2.13). Measured PSNR / floor (dB): delta-cache 28.2 / 25, interval-cache 21.4 / 18,
residual-cache 34.0 / 30, schedule-cache 20.4 / 17 (calibrated on 2 other images); token methods
(their own FLOPs ratio < 1 shows the saved work): tome 16.8 / 14 (FLOPs 0.60), toca 25.9 / 23
(0.69), diffrate 21.9 / 19 (0.86; its old default, 0.75 on attention + MLP, gave 12.2 at 0.68). A cache that reused nothing would fail the first check, one
that reused the wrong offset (or dropped the fresh input) the second: skipping the same
blocks without adding the offset gives 9.7 / 5.2 / 14.0 dB here.
"""

from __future__ import annotations

import pytest
import torch

import accel
from accel.eval.fidelity import per_image_mse, psnr_from_mse
from accel.eval.workload import generate, make_workload
from accel.testing import METHOD_SETTINGS, saved_work

STEPS, IMAGES = 10, 8
PSNR_FLOOR_DB = {name: row.floor_db["default"] for name, row in METHOD_SETTINGS.items()}


def _accelerating() -> list[str]:
    return sorted(n for n, c in accel.methods().items() if c.accelerates)


@pytest.fixture(scope="module")
def paired():
    pipe = accel.default_pipeline()
    workload = make_workload(pipe, IMAGES, 0, STEPS, guidance=2.0, batch_size=IMAGES, num_classes=10)
    return pipe, workload, generate(pipe, workload, range(IMAGES))


@pytest.mark.parametrize("name", _accelerating())
def test_default_settings_save_work_and_keep_fidelity(paired, name):
    pipe, workload, baseline = paired
    config = accel.methods()[name]()
    calibration = make_workload(pipe, 2, 10**6, STEPS, guidance=2.0, batch_size=2, num_classes=10)
    config.prepare(pipe, lambda: generate(pipe, calibration, range(2)))  # e.g. schedule-cache calibrates
    with accel.apply(pipe, config) as handle:
        images = generate(pipe, workload, range(IMAGES))
        stats = handle.stats()
    assert saved_work(name, stats)
    psnr = psnr_from_mse(per_image_mse(images, baseline))
    assert PSNR_FLOOR_DB[name] <= psnr < float("inf")


def test_floor_catches_a_cache_that_drops_its_offset(paired, monkeypatch):
    """Control: the same plan with a zero offset (fresh input passed straight through) fails the floor."""
    from accel.caching._runs import RunCache

    pipe, workload, baseline = paired
    monkeypatch.setattr(RunCache, "delta", lambda self, run: tuple(
        None if d is None else torch.zeros_like(d) for d in self.state.deltas[run][1:]))
    with accel.apply(pipe, accel.methods()["delta-cache"]()):
        images = generate(pipe, workload, range(IMAGES))
    assert psnr_from_mse(per_image_mse(images, baseline)) < PSNR_FLOOR_DB["delta-cache"]
