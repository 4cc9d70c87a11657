"""Fréchet distance (torchmetrics vs accel.eval.fid vs scipy), fidelity, method parsing, schema."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import scipy.linalg
import torch

from accel.eval import fid, fidelity, report
from accel.eval.methods import BenchInputError, parse_methods


def _scipy_fd(a: np.ndarray, b: np.ndarray) -> float:
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    covmean = covmean.real if np.iscomplexobj(covmean) else covmean
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def _feats(seed=0, n=400, d=16, shift=0.0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(d, d, generator=g) / d**0.5 + torch.eye(d)
    return (torch.randn(n, d, generator=g) @ mix) * scale + shift


def test_fd_matches_scipy_sqrtm():
    a, b = _feats(0), _feats(1, n=300, shift=0.3, scale=1.3)
    ref = _scipy_fd(a.numpy().astype(np.float64), b.numpy().astype(np.float64))
    assert fid.frechet_distance_from_features(a, b) == pytest.approx(ref, rel=1e-6)
    tm, check = fid.fd_with_check(b, a)
    assert tm == pytest.approx(ref, rel=1e-6) and check == pytest.approx(ref, rel=1e-6)


def test_torchmetrics_fd_equals_accel_fid_on_same_features():
    a, b = _feats(2), _feats(3, shift=0.5)
    expected = fid.frechet_distance_from_features(b, a)
    assert fid.torchmetrics_fd_from_features(b, a) == pytest.approx(expected, rel=1e-8)
    # reference statistics injected as torchmetrics' "real" side give the same value
    tm = fid.torchmetrics_fd_from_features(b, real_stats=fid.feature_stats(a))
    assert tm == pytest.approx(expected, rel=1e-8)


def test_torchmetrics_metric_with_custom_extractor_module():
    class Extractor(torch.nn.Module):
        num_features = 8

        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 8, 3)

        def forward(self, x):
            return self.conv(x).mean(dim=(2, 3))

    torch.manual_seed(0)
    ext = Extractor().eval()
    x_real, x_fake = torch.rand(64, 1, 8, 8), torch.rand(64, 1, 8, 8) ** 2
    metric = fid.torchmetrics_fd_metric(ext)
    with torch.no_grad():
        metric.update(x_real, real=True)
        metric.update(x_fake, real=False)
        fr, ff = ext(x_real), ext(x_fake)
    assert float(metric.compute()) == pytest.approx(fid.frechet_distance_from_features(ff, fr), rel=1e-4)
    # no num_features: must be given one
    bare = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 4))
    with pytest.raises(ValueError, match="num_features"):
        fid.torchmetrics_fd_metric(bare)
    assert fid.torchmetrics_fd_metric(bare, num_features=4) is not None


def test_reference_stats_cache_roundtrip(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return _feats(4, n=50, d=4)

    m1, s1, n1 = fid.cached_reference_stats("ext", "data", compute, cache_dir=tmp_path)
    m2, s2, n2 = fid.cached_reference_stats("ext", "data", compute, cache_dir=tmp_path)
    assert len(calls) == 1 and n1 == n2 == 50
    assert torch.equal(m1, m2) and torch.equal(s1, s2) and s1.dtype == torch.float64
    fid.cached_reference_stats("ext2", "data", compute, cache_dir=tmp_path)
    assert len(calls) == 2 and len(list(tmp_path.glob("*.safetensors"))) == 2
    lin = torch.nn.Linear(3, 2)
    assert fid.extractor_fingerprint(lin) == fid.extractor_fingerprint(lin)
    assert fid.min_images_for_fd(64) == 65


def test_inception_without_weights_is_a_clear_error(tmp_path):
    with pytest.raises(fid.FeatureBackendError, match="not found"):
        fid.InceptionFeatures(tmp_path / "missing.pth")


def test_psnr_ssim_identical_and_set_level():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(6, 1, 16, 16, generator=g)
    assert fidelity.psnr(x, x) == math.inf
    assert fidelity.ssim(x, x) == pytest.approx(1.0, abs=1e-9)
    assert fidelity.psnr_from_mse(fidelity.per_image_mse(x, x)) == math.inf
    y = (x + 0.05 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    from torchmetrics.functional.image import peak_signal_noise_ratio

    tm = float(peak_signal_noise_ratio(y.double(), x.double(), data_range=1.0))
    assert fidelity.psnr(y, x) == pytest.approx(tm, rel=1e-9)
    assert fidelity.psnr_from_mse(fidelity.per_image_mse(y, x)) == pytest.approx(tm, rel=1e-6)
    assert 0 < fidelity.ssim(y, x) < 1


@dataclasses.dataclass
class _Cache:
    threshold: float = 0.1
    max_skip: int = 2
    warm: bool = True

    def __post_init__(self):
        if self.threshold < 0:
            raise ValueError("threshold must be >= 0")


@dataclasses.dataclass
class _Tome:
    ratio: float = 0.5


REG = {"delta-cache": _Cache, "tome": _Tome}


def test_parse_methods():
    ms = parse_methods(None, REG)
    assert [m.label for m in ms] == ["baseline", "delta-cache", "tome"]
    ms = parse_methods("delta-cache:threshold=0.2,max_skip=3,tome,delta-cache+tome:ratio=0.25", REG)
    assert [m.label for m in ms][0] == "baseline"
    assert ms[1].configs == [_Cache(0.2, 3)]
    assert ms[2].configs == [_Tome()]
    assert ms[3].configs == [_Cache(), _Tome(0.25)]
    assert ms[3].config_record()[1] == {"name": "tome", "params": {"ratio": 0.25}}
    assert parse_methods("delta-cache:warm=false", REG)[1].configs[0].warm is False
    for bad, msg in [("nope", "unknown method"), ("tome:ratio", "key=value"),
                     ("tome:size=3", "no option"), ("delta-cache:threshold=-1", "invalid settings"),
                     ("delta-cache:max_skip=x", "integer"), ("tome,tome", "twice"),
                     ("baseline+tome", "stacked")]:
        with pytest.raises(BenchInputError, match=msg):
            parse_methods(bad, REG)


def _record(**kw):
    r = {"method": "baseline", "config": [], "fd": 1.0, "fd_name": "FD-digits", "psnr": math.inf,
         "ssim": 1.0, "speedup": 1.0, "time_s": 0.5, "peak_mem_mb": None, "block_evals": 10,
         "ideal_speedup": 1.0, "device": "cpu", "torch_version": "2", "diffusers_version": "0.42",
         "num_images": 8, "steps": 2, "seed": 0}
    r.update(kw)
    return r


_META = {"command": ["accel", "bench"], "git_commit": None, "versions": {"torch": "2"}}


def test_results_schema_check():
    doc = report.results_document([_record(), _record(method="tome", config=[{"name": "tome", "params": {}}],
                                                      psnr=30.0, fd_spread=0.1, fd=math.nan)], meta=_META)
    report.validate_results(json.loads(json.dumps(doc, allow_nan=False)))
    assert doc["records"][0]["psnr"] is None and doc["records"][1]["fd"] is None
    assert doc["notes"] == ["psnr null = identical to baseline (infinite): baseline",
                            "records[1].fd null = nan (not a JSON number)"]
    with pytest.raises(ValueError, match="meta: missing 'git_commit'"):
        report.validate_results({**doc, "meta": {"command": [], "versions": {}}})
    with pytest.raises(ValueError, match="expected number or null"):
        report.validate_results({**doc, "records": [_record(psnr=math.inf)]})
    broken = json.loads(json.dumps(doc))
    del broken["records"][1]["speedup"]
    broken["records"][0]["block_evals"] = 1.5
    with pytest.raises(ValueError, match="missing 'speedup'") as exc:
        report.validate_results(broken)
    assert "block_evals" in str(exc.value)
    with pytest.raises(ValueError, match="baseline"):
        report.validate_results(report.results_document([_record(method="tome")], meta=_META))


def test_paired_fd_noise_is_the_noise_of_the_paired_change():
    """Bootstrap over the images, the same indices for both sets: identical sets have no paired noise, a
    slightly changed copy far less than an independent set of the same size (what FD's seed noise is)."""
    from accel.eval.fid import feature_stats, paired_fd_noise

    g = torch.Generator().manual_seed(0)
    ref = feature_stats(torch.randn(400, 8, generator=g, dtype=torch.float64))
    base = torch.randn(200, 8, generator=g, dtype=torch.float64)
    assert paired_fd_noise(base, base, ref) == 0.0
    near = paired_fd_noise(base + 0.05 * torch.randn(200, 8, generator=g, dtype=torch.float64), base, ref)
    other = paired_fd_noise(torch.randn(200, 8, generator=g, dtype=torch.float64), base, ref)
    assert 0 < near < other / 5
    with pytest.raises(ValueError, match="paired features differ in shape"):
        paired_fd_noise(base[:10], base, ref)


def test_quality_notes_flag_only_changes_beyond_twice_the_paired_noise():
    from accel.eval.records import quality_notes

    recs = [{"method": "baseline", "fd": 10.0, "fd_name": "FD-digits"},
            {"method": "loses", "fd": 12.0, "fd_name": "FD-digits", "fd_delta_noise": 0.5},
            {"method": "noise", "fd": 10.8, "fd_name": "FD-digits", "fd_delta_noise": 0.5},
            {"method": "better", "fd": 8.0, "fd_name": "FD-digits", "fd_delta_noise": 0.5},
            {"method": "seedsets", "fd": 10.5, "fd_delta": 1.5, "fd_name": "FD-digits", "fd_delta_noise": 0.5}]
    notes = quality_notes(recs)
    assert [n.split(":")[0] for n in notes] == ["loses", "seedsets"]
    assert "FD-digits +2.00 over the baseline, more than twice its paired noise (0.50" in notes[0]
