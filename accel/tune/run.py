"""`accel tune`: the fastest stack of methods that keeps quality inside a budget, on your model.

1. Build the joint space from the methods' declared ``tunable`` settings (one block cache x
   one token method x the original or a ``pruned`` model folder).
2. Successive halving on a calibration set of paired images (seed set 1): many candidates
   on few images, the best third on three times as many, up to ``calibration_images``.
3. Re-measure the front of the last rung on held-out images (seed set 0, the seeds `accel
   bench` uses), and choose the fastest candidate inside the budget there.
4. Write ``out`` (tune.json: chosen config, front, every evaluation) and report.html next
   to it (``chosen`` None when no candidate meets the budget).

Evaluations are cached per candidate and workload (`$ACCEL_CACHE_DIR/tune`), so a re-run
with the same model, sampler and seeds resumes instead of starting over.

Library functions on typed settings (:class:`TuneSettings`): :func:`setup_tune` checks them and
loads the model, :func:`run_tune` searches and writes. Errors are typed (`SettingError` naming the
setting, `AccelError`, `BenchInputError`); the flags, printing and exit codes are accel/commands/tune.py.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..errors import SettingError
from ..outputs import record_written
from .files import write_tune_json
from .search import QualityBudget, SearchResult, exhaustive, front, rung_plan, successive_halving
from .space import Candidate, Space, build_space


@dataclass
class TuneSettings:
    """What a tune run needs. `prepare` holds the pipeline settings shared with `accel bench` (model,
    sampler, device, prompts, extractor); `methods` None = every method that declares tunable settings."""

    prepare: Any  # accel.eval.prepare.PrepareSettings (its methods / no_fd / out are set by setup_tune)
    budget_fd: float | None = None
    budget_psnr: float | None = None
    evals: int = 40
    methods: list[str] | None = None
    pruned: list[str] = field(default_factory=list)
    calibration_images: int | None = None  # None: 192 with an FD budget, 64 without
    holdout_images: int = 200
    front_max: int = 8
    eta: int = 3
    exhaustive: bool = False
    batch_size: int = 32
    seed: int = 0
    out: str = "tune.json"
    overwrite: bool = False
    cache: bool = True
    progress: bool = True
    command: list[str] | None = None  # the command line, for the run's provenance


@dataclass
class TuneSetup:
    """A checked tune run with its model loaded (`setup_tune`); `run_tune` carries it out."""

    settings: TuneSettings
    budget: QualityBudget
    space: Space
    registry: dict
    prep: Any  # accel.eval.prepare.Prepared
    threads: int
    final: int  # images of the last search rung
    min_images: int
    t0: float


@dataclass
class TuneOutcome:
    """What `run_tune` found and wrote: tune.json's document, its path, the chosen result (None: none met
    the budget), the final pool (held-out or calibration results) and the search result."""

    doc: dict
    out: Path
    chosen: dict | None
    final_pool: list[dict]
    held: bool
    search: SearchResult


def setup_tune(s: TuneSettings) -> TuneSetup:
    """Check every setting (before the model loads, where it can), load the model; raises SettingError,
    AccelError or BenchInputError on bad input."""
    import dataclasses

    import accel
    from accel.eval import fid as fidmod
    from accel.eval.prepare import prepare
    from accel.eval.runtime import pin_threads
    from accel.outputs import check_file_output

    t0 = time.perf_counter()
    budget = QualityBudget(s.budget_fd, s.budget_psnr)
    if budget.fd_pct is None and s.calibration_images is not None and s.calibration_images < 4:
        raise SettingError("calibration_images", f"{s.calibration_images} is too few for a search: at least 4")
    for name, lo in (("evals", 1), ("holdout_images", 0), ("front_max", 1), ("eta", 2), ("batch_size", 1)):
        if getattr(s, name) < lo:
            raise SettingError(name, f"must be >= {lo}, got {getattr(s, name)}")
    for d in s.pruned:
        if not Path(d).is_dir():
            raise SettingError("pruned", f"{d}: no such folder (write one with `accel prune --out {d}`)")
    check_file_output(s.out, overwrite=s.overwrite, companions=("report.html",), writer="tune")
    threads = pin_threads(s.prepare.threads)
    registry = dict(accel.methods())
    space = build_space(registry, s.methods, models=[None, *s.pruned])
    # the baseline only, FD only with an FD budget, the output's folder (checked there: not a file)
    prep = prepare(dataclasses.replace(s.prepare, methods="baseline", no_fd=budget.fd_pct is None,
                                       out=str(Path(s.out).resolve().parent)))
    if budget.fd_pct is not None and prep.extractor is None:
        raise SettingError("budget_fd", "needs an FD extractor (the default model has FD-digits; else "
                                        "inception_weights PATH or features MODULE:FACTORY), or use budget_psnr",
                           also=("inception_weights", "features", "budget_psnr"))
    fd_min = fidmod.min_images_for_fd(prep.extractor.num_features) if budget.fd_pct is not None else 4
    final = s.calibration_images or (192 if budget.fd_pct is not None else 64)
    if final < fd_min:  # PSNR-only budgets were checked above, before the model loaded
        raise SettingError("calibration_images", f"{final} is too few for the FD budget: at least {fd_min}")
    if hasattr(prep.pipe, "set_progress_bar_config"):
        prep.pipe.set_progress_bar_config(disable=True)
    # early rungs too small for FD rank by the speed-PSNR front (search.rank)
    return TuneSetup(s, budget, space, registry, prep, threads, final, min(8, final), t0)


def _workload_key(setup: TuneSetup, n: int, seed_set: int) -> str:
    from accel.fingerprints import model_fingerprint, scheduler_fingerprint

    prep, s = setup.prep, setup.settings
    return json.dumps({
        "model": model_fingerprint(prep.pipe.transformer), "scheduler": scheduler_fingerprint(prep.pipe.scheduler),
        "steps": prep.steps, "guidance": prep.guidance, "seed": s.seed, "seed_set": seed_set, "images": n,
        "batch": s.batch_size, "kwargs": prep.call_kwargs, "prompts": prep.prompts, "fd": prep.fd_name,
        "device": str(prep.device), "dtype": s.prepare.dtype, "threads": __import__("torch").get_num_threads(),
    }, sort_keys=True, default=str)


def _loader(setup: TuneSetup) -> Callable[[str], Any]:
    """Folder -> pipeline on the same device/dtype/scheduler as the original (accel.pipelines.load_model)."""
    prep = setup.prep

    def load(folder: str) -> Any:
        from accel.eval.runtime import parse_dtype
        from accel.pipelines import load_model

        # prep.scheduler: the scheduler setting, else a digits model's own sampler's (as `accel bench` loads it)
        return load_model(folder, device=prep.device, dtype=parse_dtype(setup.settings.prepare.dtype),
                          scheduler=prep.scheduler).pipe
    return load


def planned_evaluations(setup: TuneSetup) -> int:
    """Candidate evaluations the search plans (a progress bar's total)."""
    s, n = setup.settings, setup.space.size() - 1
    if s.exhaustive:
        return n
    return sum(min(c, n) for _, c in rung_plan(s.evals, setup.final, eta=s.eta, min_images=setup.min_images))


def run_tune(setup: TuneSetup, progress: Callable[[dict], Any] | None = None,
             notify: Callable[[str], None] | None = None) -> TuneOutcome:
    """Search, re-measure the front on held-out images, write tune.json and report.html; `progress(r)`
    after each calibration evaluation, `notify(text)` for each notice (a cache entry recomputed). Raises
    AccelError / ValueError from the evaluations."""
    from tqdm.auto import tqdm

    from accel.eval.workload import make_workload

    from .evaluate import Evaluator, timing_note

    s, prep, budget, space, final = setup.settings, setup.prep, setup.budget, setup.space, setup.final

    def evaluator(n: int, seed_set: int) -> Evaluator:
        wl = make_workload(prep.pipe, n, s.seed, prep.steps, guidance=prep.guidance, batch_size=s.batch_size,
                           seed_set=seed_set, num_classes=prep.num_classes, prompts=prep.prompts,
                           extra_kwargs=prep.call_kwargs)
        key = _workload_key(setup, n, seed_set) if s.cache else None
        return Evaluator(prep.pipe, wl, setup.registry, load_model=_loader(setup), extractor=prep.extractor,
                         reference_stats=prep.reference_stats, device=prep.device, workload_key=key,
                         notify=notify)

    calib = evaluator(final, 1)
    # baseline images are generated when a candidate first needs them (a resumed run may need none)
    if s.exhaustive:
        res = exhaustive(space, calib.evaluate, budget, images=final, progress=progress)
    else:
        res = successive_halving(space, calib.evaluate, budget, evals=s.evals, final_images=final,
                                 min_images=setup.min_images, eta=s.eta, seed=s.seed, progress=progress)
    quality = "fd_pct" if budget.fd_pct is not None else "psnr"
    latest: dict[str, dict] = {}  # each candidate at the most images it was evaluated on
    for r in res.history:
        if r["key"] not in latest or r["n"] >= latest[r["key"]]["n"]:
            latest[r["key"]] = r
    pts = front(list(latest.values()), quality)
    inside = [r for r in res.finals if budget.meets(r)]
    # held-out re-measure: the front (fastest first) and the fastest inside the budget
    near = [r for r in pts if budget.meets(r, fd_slack=3.0, psnr_slack=1.0)]  # inside or near the budget
    picks = sorted(near, key=lambda r: -r["speedup"])[: s.front_max]
    if len(picks) < s.front_max:  # the front's best-quality points beyond it, so the table shows the trade-off
        picks += sorted((r for r in pts if r not in near), key=lambda r: budget.shortfall(r))[: s.front_max - len(picks)]
    for r in inside[:2]:
        if all(r["key"] != p["key"] for p in picks):
            picks.append(r)
    held: list[dict] = []
    if s.holdout_images:
        hold = evaluator(s.holdout_images, 0)
        for r in tqdm(picks, desc="held-out", unit="eval", disable=not s.progress):
            held.append(dict(hold.evaluate(Candidate.from_record(r["candidate"]), s.holdout_images),
                             calibration={k: r.get(k) for k in ("speedup", "psnr", "fd_pct", "n")}))
    final_pool = held if s.holdout_images else picks
    ok = sorted((r for r in final_pool if budget.meets(r)), key=lambda r: -r["speedup"])
    chosen = ok[0] if ok else None
    doc = {
        "budget": budget.as_dict(),
        "workload": {"model": prep.model_name, "steps": prep.steps, "scheduler": prep.scheduler,
                     "guidance": prep.guidance, "calibration_images": final, "holdout_images": s.holdout_images,
                     "seed": s.seed, "batch_size": s.batch_size, "threads": setup.threads,
                     "device": str(prep.device), "pruned": list(s.pruned)},
        "search": {"strategy": "exhaustive" if s.exhaustive else "successive-halving+front-bisection", "eta": s.eta,
                   "space_size": space.size() - 1, "evaluations": res.evaluations,
                   "image_evaluations": res.image_evaluations, "new_evaluations": calib.evaluations},
        "chosen": None if chosen is None else {**chosen["candidate"], "key": chosen["key"],
                                               "holdout": {k: chosen.get(k) for k in ("speedup", "psnr", "fd", "fd_pct", "n")},
                                               "calibration": chosen.get("calibration")},
        "front": held or picks, "calibration_front": pts, "history": res.history,
        "notes": [], "meta": _meta(s.command, setup.t0),
    }
    if s.holdout_images:
        doc["notes"].append(timing_note(s.batch_size, setup.threads))
    out = write_tune_json(s.out, doc)
    _report(out, doc)
    record_written([out, out.with_name("report.html")], "tune")  # what a later --overwrite may replace
    return TuneOutcome(doc, out, chosen, final_pool, bool(held), res)


def _meta(command: list[str] | None, t0: float) -> dict:
    from accel.eval.provenance import run_meta

    return {**run_meta(command), "wall_s": time.perf_counter() - t0}


def _report(out: Path, doc: dict) -> None:
    """report.html next to the JSON: the front as a table and curves, the chosen config, the search."""
    from accel.eval.html_report import write_html_report
    from accel.outputs import atomic_path

    chosen = doc["chosen"]
    records = [{"method": ("* " if chosen and r["key"] == chosen["key"] else "") + r["key"],
                "speedup": r.get("speedup"), "psnr": r.get("psnr"), "fd": r.get("fd"),
                "num_images": r.get("n"), "config": r["candidate"]["methods"]} for r in doc["front"]]
    records.insert(0, {"method": "baseline", "speedup": 1.0, "psnr": float("inf")})
    sections = [("chosen config", json.dumps(chosen, indent=2) if chosen else "none inside the budget"),
                ("search", json.dumps({**doc["search"], "budget": doc["budget"], "workload": doc["workload"]}, indent=2))]
    with atomic_path(out.with_name("report.html")) as tmp:
        write_html_report(tmp, title=f"accel tune: {doc['workload']['model']}", records=records,
                          meta=doc["meta"], notes=doc["notes"], extra_sections=sections)
