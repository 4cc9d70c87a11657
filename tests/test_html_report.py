"""report.html: one self-contained page (no external references, no script), every user string
escaped, embedded PNGs that hold the given images, the table the stdout table prints, the front
marked; and `accel bench` writes it next to results.json."""

from __future__ import annotations

import base64
import html
import io
import json
import re
from html.parser import HTMLParser

import numpy as np
import pytest
import torch
from PIL import Image

from accel.cli import main
from accel.eval import report
from accel.eval.html_report import front_members, render_html_report, write_html_report
from accel.testing import tiny_class_pipeline

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
EVIL = "<script>alert('x')</script> $a$ & \"q\""
VOID = {"meta", "img", "br", "hr", "link", "input", "col", "source", "wbr"}


class _Page(HTMLParser):
    """Collects tags, src/href attributes, table cell texts; fails on unbalanced tags."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack, self.tags, self.srcs, self.hrefs, self.errors = [], [], [], [], []
        self.tables: list[list[list[str]]] = []  # table -> rows -> cell texts
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        a = dict(attrs)
        if "src" in a:
            self.srcs.append(a["src"])
        if "href" in a:
            self.hrefs.append(a["href"])
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self.tables[-1][-1].append("")
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:]}")
        else:
            self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)
        if "td" in self.stack or "th" in self.stack:  # text anywhere inside a cell
            self.tables[-1][-1][-1] += data


def _parse(text: str) -> _Page:
    p = _Page()
    p.feed(text)
    p.close()
    assert not p.errors and p.stack == [], (p.errors, p.stack)
    return p


def _records():
    base = dict(method="baseline", config=[], fd=10.0, fd_name="FD-digits", psnr=float("inf"), ssim=1.0,
                speedup=1.0, time_s=1.25, peak_mem_mb=100.0, block_evals=240, ideal_speedup=1.0)
    fast = dict(method="delta-cache:interval=3", config=[{"name": "delta-cache", "params": {"interval": 3}}],
                fd=11.0, fd_spread=0.5, fd_name="FD-digits", psnr=30.24, ssim=0.951, speedup=2.1,
                speedup_spread=0.1, time_s=0.6, peak_mem_mb=101.0, block_evals=100, ideal_speedup=2.4,
                achieved_over_ideal=0.875)
    evil = dict(method=EVIL, config=[{"name": "x", "params": {"label": EVIL}}], fd=13.0, fd_name="FD-digits",
                psnr=25.0, ssim=0.9, speedup=1.5, time_s=0.8, peak_mem_mb=99.0, block_evals=150, ideal_speedup=1.6)
    return [base, fast, evil]


def _images(records, g=4):
    gen = torch.Generator().manual_seed(0)
    base = torch.rand(g, 1, 8, 8, generator=gen)
    out = {}
    for k, r in enumerate(records):
        out[r["method"]] = (base + 0.1 * k * torch.randn(base.shape, generator=gen)).clamp(0, 1)
    return out


def _pngs(text: str) -> list[bytes]:
    return [base64.b64decode(u) for u in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)]


def test_report_is_self_contained_escaped_and_holds_the_table(tmp_path):
    recs = _records()
    path = write_html_report(tmp_path / "report.html", title="run <1>", records=recs,
                             meta={"command": ["accel", "bench", "--methods", EVIL], "git_commit": "abc123",
                                   "versions": {"torch": "2.13.0"}, "device": "cpu"},
                             images=_images(recs), notes=[f"note about {EVIL}"],
                             extra_sections=[("chosen config", f"best: {EVIL}")])
    text = path.read_text(encoding="utf-8")
    page = _parse(text)
    # offline: nothing to fetch, nothing to run
    assert not re.search(r"https?://", text)
    assert "url(" not in text and "@import" not in text
    assert page.hrefs == [] and all(s.startswith("data:image/png;base64,") for s in page.srcs)
    assert not {"script", "link", "iframe", "object", "embed"} & set(page.tags)
    # user text: escaped in the source, shown verbatim as text
    assert EVIL not in text and "<script>" not in text
    assert html.escape(EVIL, quote=True) in text
    joined = "".join(page.text)
    assert joined.count(EVIL) >= 5  # table, image row, diff row, configs, notes/extra/meta
    assert "run <1>" in joined and "abc123" in joined and "2.13.0" in joined
    # the results table is the stdout table's cells, with a # and a front column
    results = page.tables[0]
    head, rows = report.table_cells(recs)
    assert results[0][1:-1] == head and results[0][0] == "#" and results[0][-1] == "front"
    for i, (got, want) in enumerate(zip(results[1:], rows)):
        assert got[0] == str(i + 1) and got[1:-1] == want
    assert results[2][1:7] == ["delta-cache:interval=3", "11 ±0.5", "30.2", "0.951", "2.10 ±0.10", "2.40"]
    assert [r[-1] for r in results[1:]] == ["FD", "PSNR, FD", ""]  # the third is dominated by the second
    # embedded images: the plot + 3 rows of 4 + 2 difference rows of 4, all PNG
    pngs = _pngs(text)
    assert len(pngs) == 1 + 3 * 4 + 2 * 4 and all(p.startswith(PNG_MAGIC) for p in pngs)
    first = np.asarray(Image.open(io.BytesIO(pngs[1])))  # baseline, column 1
    want = (_images(recs)["baseline"][0, 0].numpy() * 255 + 0.5).astype(np.uint8)
    assert np.array_equal(first, want)
    # the image rows are in the images' order, the same labels
    img_rows = page.tables[1]
    assert [r[0] for r in img_rows] == ["#1 baseline (reference)1.00×",  # label, then speedup and PSNR
                                        "#2 delta-cache:interval=32.10× · PSNR 30.2 dB",
                                        f"#3 {EVIL}1.50× · PSNR 25.0 dB"]
    assert [r[0] for r in page.tables[2]] == ["#2 delta-cache:interval=3", f"#3 {EVIL}"]  # differences


def test_tune_style_records_without_images_or_bench_fields():
    recs = [dict(method="a", speedup=2.0, psnr=30.0, fd=5.0), dict(method="b", speedup=3.0, psnr=25.0, fd=6.0),
            dict(method="c", speedup=1.5, psnr=28.0, fd=7.0), dict(speedup=None, psnr=None)]
    assert front_members(recs, "psnr", lower_is_better=False) == {0, 1}
    assert front_members(recs, "fd", lower_is_better=True) == {0, 1}
    text = render_html_report(title="tune", records=recs, meta={})
    page = _parse(text)
    rows = page.tables[0][1:]
    assert [r[1] for r in rows] == ["a", "b", "c", "record 4"]
    assert rows[3][2:-1] == ["-"] * 9  # nothing measured shows as "-"
    assert len(_pngs(text)) == 1 and "machine" in "".join(page.text)


@pytest.mark.parametrize("shape,dtype", [((2, 8, 8, 3), np.uint8), ((2, 8, 8), np.float32), ((2, 3, 8, 8), np.float64)])
def test_image_layouts(shape, dtype):
    a = np.random.default_rng(0).random(shape)
    a = (a * 255).astype(np.uint8) if dtype == np.uint8 else a.astype(dtype)
    text = render_html_report(title="t", records=[dict(method="m", speedup=1.0)], meta={}, images={"m": a})
    pngs = _pngs(text)
    assert len(pngs) == 2  # no plot (no quality value), one row of 2
    im = np.asarray(Image.open(io.BytesIO(pngs[0])))
    assert im.shape[:2] == (8, 8)


def test_bad_images_and_no_records_are_clear_errors():
    with pytest.raises(ValueError, match=r"shape \(2, 8\)"):
        render_html_report(title="t", records=[dict(method="m")], meta={}, images={"m": np.zeros((2, 8))})
    with pytest.raises(ValueError, match="records"):
        render_html_report(title="t", records=[], meta={})


def test_large_images_are_downscaled():
    big = np.zeros((1, 3, 600, 400), dtype=np.float32)
    text = render_html_report(title="t", records=[dict(method="m")], meta={}, images={"m": big})
    im = Image.open(io.BytesIO(_pngs(text)[0]))
    assert max(im.size) == 256 and im.size == (171, 256)


def test_bench_writes_report_html(tmp_path):
    before = torch.get_num_threads()
    tiny_class_pipeline(num_layers=2).save_pretrained(str(tmp_path / "tiny-dit"))
    out = tmp_path / "out"
    argv = ["bench", "--model", str(tmp_path / "tiny-dit"), "--no-fd", "--methods",
            "baseline,interval-cache:interval=2,warmup=1", "--steps", "8", "--num-images", "3", "--batch-size", "3",
            "--repeats", "1", "--timing-images", "1", "--threads", "1", "--device", "cpu", "--quiet",
            "--out", str(out)]
    try:
        assert main(argv) == 0
    finally:
        torch.set_num_threads(before)
    text = (out / "report.html").read_text(encoding="utf-8")
    page = _parse(text)
    assert not re.search(r"https?://", text)
    recs = json.loads((out / "results.json").read_text())["records"]
    labels = [r["method"] for r in recs]
    assert labels == ["baseline", "interval-cache:interval=2,warmup=1"]
    table = page.tables[0]
    assert [r[1] for r in table[1:]] == labels
    assert table[2][5] == format(recs[1]["speedup"], ".2f") + (
        f" ±{recs[1]['speedup_spread']:.2f}" if recs[1].get("speedup_spread") else "")
    pngs = _pngs(text)
    assert len(pngs) == 1 + 2 * 3 + 3 and all(p.startswith(PNG_MAGIC) for p in pngs)  # plot, 2 rows, 1 diff row
    assert "accel bench" in "".join(page.text) and "--no-fd" in "".join(page.text)
