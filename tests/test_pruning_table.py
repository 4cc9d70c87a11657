"""The selector table (scripts/pruning_table.py) and the lineage flow_pruning.py records for it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "benchmarks"))
import flow_pruning  # noqa: E402
import pruning_table  # noqa: E402


def _q(fd, agree=0.9, psnr=20.0):
    return {"fd_digits": fd, "class_agreement": agree, "psnr_to_teacher": psnr}


def test_lineage_reads_the_folders_own_json(tmp_path):
    pruned, distilled = tmp_path / "p", tmp_path / "d"
    for d in (pruned, distilled):
        d.mkdir()
        (d / "pruning.json").write_text(json.dumps({"selector": "learned", "keep": [0, 2], "block_map": [0, 2],
                                                    "learned_mode": "local"}))
    (distilled / "distill.json").write_text(json.dumps({"steps": 200, "train_seconds": 9.5,
                                                         "data": {"kind": "digits"}}))
    assert flow_pruning.lineage(str(pruned)) == {"selector": "learned", "keep": [0, 2], "distill": None,
                                                 "learned_mode": "local", "learned_groups": None}
    assert pruning_table.label("learned", flow_pruning.lineage(str(pruned)), num_blocks=4) == "learned (1:2 groups)"
    grouped = {"learned_mode": "local", "keep": [0, 1, 5, 7, 8, 11], "learned_groups": [[[0, 1, 2, 3], 6]] * 3}
    assert pruning_table.label("learned", grouped) == "learned (2:4 groups)"  # recorded groups, not inferred
    assert pruning_table.label("learned", dict(grouped, learned_groups=None)) == "learned (1:2 groups)"
    assert pruning_table.label("learned", {}) == "learned (global top-k)"  # a file from before the groups
    assert flow_pruning.lineage(str(distilled))["distill"] == {"steps": 200, "train_seconds": 9.5, "data": "digits"}
    assert flow_pruning.lineage("flow") is None  # the embedded model: no folder


def test_flow_rows_pair_pruned_and_distilled_and_bold_the_best(tmp_path):
    def row(fd, sel, steps=None):
        lin = {"selector": sel, "keep": [0, 1], "distill": steps and {"steps": steps, "data": "digits"}}
        return dict(_q(fd), blocks=6, lineage=lin)

    doc = {"models": {"flow": dict(_q(10.0, 1.0, None), blocks=12, lineage=None),
                      "a": row(200.0, "laptop"), "a-d": row(11.0, "laptop", 50),
                      "b": row(100.0, "first"), "b-d": row(12.0, "first", 50)}}
    path = tmp_path / "flow.json"
    path.write_text(json.dumps(doc))
    rows = {r["selector"]: r for r in pruning_table.flow_rows(doc)}
    assert rows["laptop"]["before"]["fd_digits"] == 200.0 and rows["laptop"]["after"]["fd_digits"] == 11.0
    text = pruning_table.table([("flow", path)])
    laptop = next(line for line in text.splitlines() if "laptop" in line)
    first = next(line for line in text.splitlines() if "| first" in line)
    assert "**+10.0%" in laptop and "**" not in first and "+1900.0%" in laptop


def test_default_rows_from_either_file_layout():
    sel = {"6": {"laptop": dict(_q(50.0), keep=[0, 1]), "first": dict(_q(40.0), keep=[0, 1])}}
    new = {"config": {"distill_keep": 6}, "teacher": _q(10.0), "selection": sel,
           "distill": {"6": {"first": {"steps": 300, "after": _q(11.0)}}}}
    old = dict(new, distill={"first": {"steps": 300, "after": _q(11.0)}})  # before --distill-keeps
    for doc in (new, old):
        rows = {r["selector"]: r for r in pruning_table.default_rows(doc)}
        assert rows["first"]["after"]["fd_digits"] == 11.0 and rows["laptop"]["after"] is None


def test_a_distilled_row_from_a_later_file_replaces_its_undistilled_repeat(tmp_path):
    sel = {"9": {"laptop": dict(_q(50.0), keep=[0, 1]), "first": dict(_q(40.0), keep=[0, 2])}}
    before = {"config": {}, "teacher": _q(10.0), "selection": sel, "distill": {}}
    after = dict(before, distill={"9": {"laptop": {"steps": 300, "after": _q(9.0)}}})
    paths = []
    for name, doc in (("a", before), ("b", after), ("c", before)):  # c re-measures without distilling
        paths.append(tmp_path / f"{name}.json")
        paths[-1].write_text(json.dumps(doc))
    text = pruning_table.table([("default", p) for p in paths])
    laptop = [line for line in text.splitlines() if "| laptop" in line]
    assert len(laptop) == 1 and "**-10.0%" in laptop[0]  # one row, the distilled one
    assert len([line for line in text.splitlines() if "| first" in line]) == 1
