"""`--methods` parsing against the real configs (union-typed fields), and the timed run's
block counts (item: timing and counting describe the same work)."""

from __future__ import annotations

import sys
from types import SimpleNamespace

import numpy as np
import pytest

import accel
from accel.cli import main
from accel.eval.methods import BenchInputError, MethodSpec, parse_methods
from accel.eval.paired import time_methods
from accel.eval.records import timing_notes
from accel.eval.workload import Workload


def _config(spec: str):
    return parse_methods(spec, accel.methods())[1].configs[0]


@pytest.mark.parametrize("spec, field, value", [
    ("delta-cache:boundary=12", "boundary", 12),  # int | float: a step index
    ("delta-cache:boundary=0.6", "boundary", 0.6),  # ... or a fraction of the steps
    ("delta-cache:cached_blocks=8", "cached_blocks", 8),
    ("delta-cache:cached_blocks=0.5", "cached_blocks", 0.5),
    ("residual-cache:max_consecutive=none", "max_consecutive", None),  # int | None
    ("residual-cache:max_consecutive=3", "max_consecutive", 3),
    ("residual-cache:forecast=2", "forecast", 2),
    ("residual-cache:threshold=1", "threshold", 1.0),
])
def test_union_fields_parse_to_their_member_type(spec, field, value):
    got = getattr(_config(spec), field)
    assert got == value and type(got) is type(value)


@pytest.mark.parametrize("spec, msg", [
    ("delta-cache:boundary=late", "delta-cache:boundary: expected int or float, got 'late'"),
    ("residual-cache:max_consecutive=1.5", "residual-cache:max_consecutive: expected int or none, got '1.5'"),
    ("residual-cache:max_consecutive=many", "residual-cache:max_consecutive: expected int or none"),
    ("residual-cache:forecast=maybe", "got 'maybe'"),  # a forecaster name it does not know: 'forecast must be one of ...'
    ("delta-cache:forecast=3", "forecast must be one of 0"),
    ("interval-cache:interval=2.5", "interval-cache:interval: expected an integer"),
])
def test_bad_union_values_name_the_field(spec, msg, tmp_path, capsys):
    with pytest.raises(BenchInputError, match=msg.replace("(", r"\(")):
        parse_methods(spec, accel.methods())
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exc:  # the CLI: exit 2 before loading anything
        sys.exit(main(["bench", "--methods", spec, "--out", str(out), "--quiet"]))
    assert exc.value.code == 2 and msg in capsys.readouterr().err and not out.exists()


class _FakePipe:
    """Class-conditional pipeline stand-in: returns black images, counts nothing itself."""

    def __call__(self, class_labels, **kw):
        return SimpleNamespace(images=np.zeros((len(class_labels), 4, 4, 1), np.float32))


def test_block_counts_are_those_of_the_timed_calls():
    # per label, the (block_evals, block_total) each successive applied handle reports
    script = {"baseline": [(10, 10)] * 3, "steady": [(10, 10), (5, 10), (5, 10)],
              "adaptive": [(10, 10), (4, 10), (6, 10)]}
    applied = {k: 0 for k in script}

    class Handle:
        def __init__(self, label):
            self.counts = script[label][applied[label]]
            applied[label] += 1

        def stats(self):
            return {"total": {"block_evals": self.counts[0], "block_total": self.counts[1]}}

        def remove(self):
            pass

    specs = [MethodSpec(label) for label in script]
    wl = Workload(seeds=[0, 1], conditions=[0, 1], kind="class", steps=2)
    out = time_methods(_FakePipe(), specs, wl, [0, 1], lambda pipe, spec: Handle(spec.label), repeats=2, warmup=1,
                       progress=False)
    assert applied == {k: 3 for k in script}  # 1 warm-up + 2 timed calls each
    assert (out["baseline"].block_evals, out["baseline"].block_total) == (10, 10)
    assert (out["steady"].block_evals, out["steady"].counts_vary) == (5, False)  # the warm-up call is not counted
    assert (out["adaptive"].block_evals, out["adaptive"].counts_vary) == (5, True)
    assert len(out["steady"].timing.times) == 2
    records = [{"method": "baseline", "achieved_over_ideal": 1.0}, {"method": "steady", "achieved_over_ideal": 1.2},
               {"method": "adaptive", "achieved_over_ideal": 0.9}]
    notes = timing_notes(records, out)
    assert len(notes) == 2
    assert notes[0].startswith("steady: achieved/ideal speedup 1.20 > 1.05") and "timing noise" in notes[0]
    assert notes[1].startswith("adaptive: block evaluations differed between timed calls")


def test_lpips_inputs_go_to_the_metric_device():
    import torch

    from accel.eval.fidelity import per_image_lpips

    class Metric(torch.nn.Module):  # stands in for torchmetrics' LPIPS, which lives where it was moved
        device = torch.device("meta")

        def __init__(self):
            super().__init__()
            self.seen = []

        def reset(self):
            pass

        def forward(self, p, t):
            self.seen.append((p.device, t.device, p.shape[1]))
            return torch.tensor(0.25)

    m = Metric()
    out = per_image_lpips(m, torch.rand(2, 1, 4, 4), torch.rand(2, 1, 4, 4))
    assert out.tolist() == [0.25, 0.25] and out.device.type == "cpu"
    assert m.seen == [(torch.device("meta"), torch.device("meta"), 3)] * 2  # gray images repeated to RGB


def test_default_methods_leave_out_utilities_and_methods_that_need_settings():
    import dataclasses

    from accel.eval.methods import default_methods

    @dataclasses.dataclass(frozen=True)
    class Cache:
        interval: int = 2

    @dataclasses.dataclass(frozen=True)
    class NeedsRates:
        rates: str = ""

        def __post_init__(self):
            if not self.rates:
                raise ValueError("rates: required")

    @dataclasses.dataclass(frozen=True)
    class Probe:
        accelerates = False

    notes: list[str] = []
    specs = default_methods({"cache": Cache, "needs-rates": NeedsRates, "probe": Probe}, notes)
    assert [s.label for s in specs] == ["baseline", "cache"]
    assert notes == ["needs-rates left out of the default methods: it needs settings "
                     "(invalid settings for method 'needs-rates': rates: required)"]
