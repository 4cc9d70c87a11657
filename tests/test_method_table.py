"""accel.testing's METHOD_SETTINGS, the one table of per-method test settings: complete and true.

Every accelerating method has a row. Its tiny settings, typed as a method string (what
`accel bench --methods` takes), build the registered class; on a tiny pipeline they save work
that shows in the images, and `.remove()` gives the unaccelerated images back bit for bit. Two
methods of one kind refuse to stack (the registered kind is the one `accel.apply` enforces).
"""

from __future__ import annotations

import pytest
import torch

import accel
from accel.eval.methods import parse_methods
from accel.testing import METHOD_SETTINGS, run_tiny, saved_work, working_config

STEPS = 4


def test_every_accelerating_method_has_a_row():
    accelerating = {n for n, c in accel.methods().items() if c.accelerates}
    assert set(METHOD_SETTINGS) == accelerating, "add a METHOD_SETTINGS row (accel/testing.py) for each new method"
    for name, row in METHOD_SETTINGS.items():
        assert set(row.floor_db) == {"default", "flow"}, f"measure {name}'s PSNR floor on both embedded models"


@pytest.mark.parametrize("name", list(METHOD_SETTINGS))
def test_tiny_settings_by_name_save_work_and_remove_exactly(tiny_pipes, name):
    pipe = tiny_pipes["dit"]
    options = ",".join(f"{k}={v}" for k, v in METHOD_SETTINGS[name].tiny.items())
    _, spec = parse_methods(f"{name}:{options}", accel.methods())
    [config] = spec.configs
    assert type(config).cli_name == name and config == working_config(name)
    reference = run_tiny(pipe, "dit", steps=STEPS)
    config.prepare(pipe, lambda: run_tiny(pipe, "dit", steps=STEPS, seed=7))  # schedule-cache calibrates
    with accel.apply(pipe, config) as handle:
        images = run_tiny(pipe, "dit", steps=STEPS)
        assert saved_work(name, handle.stats()), handle.stats()
    assert not torch.equal(images, reference)  # the skipped work changed the images
    assert torch.equal(run_tiny(pipe, "dit", steps=STEPS), reference)


@pytest.mark.parametrize("kind", ["cache", "tokens"])
def test_two_methods_of_one_kind_refuse_to_stack(tiny_pipes, kind):
    pipe = tiny_pipes["dit"]
    first, second = [n for n in METHOD_SETTINGS if accel.methods()[n].kind == kind][:2]
    with pytest.raises(ValueError, match=f"kind '{kind}'"):
        accel.apply(pipe, working_config(first), working_config(second))
    assert accel.handles.handle_of(pipe.transformer) is None  # nothing left installed
