"""Trial design against its published references, and its cost.

Writes ``benchmarks/results/design.json``:

- ``cases``: every case of ``../shared/design/fim_cases.yaml`` (or ``$LDPK_DESIGN_DATA``) by
  name, with ldpk's value, the published reference, the relative error, the case's tolerance
  and ``passed`` (the models and designs are ``tests/design_cases.py``, shared with
  ``tests/test_design_fim.py``);
- ``timings``: one reduced FIM of the warfarin design (first call, compilation included, and
  the best of repeated calls), the optimisation of its four sampling times in [0.5, 120] h
  (gradient method, 8 starts, samples at least 1 h apart, from 0.5/1/2/4 h) with the
  efficiency gained, and a virtual trial of ``--trials`` × ``--subjects`` × 3 IV dose levels
  on the MSC model (``msc_pbpk``; typical values per trial drawn from the priors of the bundled
  MSC study's fit config, ω its between-subject SDs) with its peak memory; the same four
  times optimised for the ED criterion over 20 draws of the fixed effects (20 % CV, 4
  starts); and a dose selection on the MSC model (5 IV levels 1e6-1e9 cells × 200 trials ×
  100 subjects: the lowest dose with Alu qPCR cell-equivalents in the injury >= 1e4 at day 7
  in 90 % of subjects in 80 % of trials).

Usage::

    python benchmarks/design.py                      # 1000 trials x 100 subjects
    python benchmarks/design.py --trials 100         # smaller virtual trial
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np
import yaml

import ldpk
from ldpk import design as dz

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
from _common import RESULTS_DIR, git_info, load_average, machine_info, time_best, write_json_atomic  # noqa: E402

from tests import design_cases  # noqa: E402


def _row(name: str, quantity: str, value: float, reference: float, tol: float) -> dict:
    rel = abs(value - reference) / abs(reference)
    return {"case": name, "quantity": quantity, "value": value, "reference": reference, "relative_error": rel, "tolerance": tol, "passed": bool(rel < tol)}  # fmt: skip


def reference_cases(cases: dict) -> list[dict]:
    """ldpk's value of every published quantity, one row each."""
    rows = []
    c = cases["warfarin"]
    model, design = design_cases.warfarin(c)
    for kind in ("reduced", "full"):
        exp, fim = c[kind], dz.fisher_information(model, design, kind=kind)
        rows.append(_row(f"warfarin_{kind}", "det", float(np.exp(dz.ln_det(fim))), exp["det"], exp["tolerance_rel"]))  # fmt: skip
        for name, v, r in zip(fim.names, dz.rse_percent(fim), exp["rse_percent"], strict=True):
            rows.append(_row(f"warfarin_{kind}", f"rse_percent {name}", float(v), r, exp["tolerance_rel"]))  # fmt: skip
    c = cases["retout_power"]
    model, design = design_cases.retout(c)
    fim = dz.fisher_information(model, design)
    se = float(dz.standard_errors(fim)[fim.index("BETA")])
    rows.append(_row("retout_power", "se_BETA", se, c["expected"]["se_BETA"], c["tolerance_rel"]))
    power = 100 * float(dz.wald_power(fim, "BETA", h0=0.0))
    rows.append(_row("retout_power", "power_percent", power, c["expected"]["power_percent_wald_h0_0"], c["tolerance_rel"]))  # fmt: skip
    c = cases["shrinkage_pfim_142"]
    model, design = design_cases.shrinkage_142(c)
    shrink = dz.shrinkage(model, design)[0]
    for name, v, r in zip(c["omega2"], shrink, c["expected"]["shrinkage_variance_scale"], strict=True):  # fmt: skip
        rows.append(
            _row("shrinkage_pfim_142", f"shrinkage {name}", float(v), r, c["tolerance_rel"])
        )
    pf = cases["pfim_cases"]
    for case in pf["cases"]:
        model, design, _ = design_cases.pfim(case)
        det = float(np.exp(dz.ln_det(dz.fisher_information(model, design))))
        rows.append(_row(f"pfim_{case['name']}", "det", det, float(case["det"]), pf["tolerance_rel"]))  # fmt: skip
    return rows


def _msc_population(n_trials: int, seed: int = 0) -> dict:
    """Typical values per trial drawn from the priors of the bundled MSC study's fit config
    (log-normal and beta), ω its between-subject SDs: a stand-in for a posterior."""
    from ldpk.data import example_data_dir

    cfg = yaml.safe_load((example_data_dir() / "msc_111in_bli.fit.yaml").read_text())
    rng = np.random.default_rng(seed)
    typical, omega = {}, {}
    for name, entry in cfg["parameters"].items():
        prior = entry.get("prior") if isinstance(entry, dict) else None
        if prior is None:
            continue
        if prior["dist"] == "lognormal":
            typical[name] = np.exp(rng.normal(prior["loc"], prior["scale"], n_trials))
        elif prior["dist"] == "beta":
            typical[name] = rng.beta(prior["a"], prior["b"], n_trials)
        if isinstance(entry.get("iiv"), (int, float)):
            omega[name] = float(entry["iiv"])
    return {"typical": typical, "omega": omega}


def timings(cases: dict, n_trials: int, n_subjects: int) -> dict:
    model, design = design_cases.warfarin(cases["warfarin"])
    t0 = time.perf_counter()
    dz.fisher_information(model, design)
    first = time.perf_counter() - t0
    best, _, _ = time_best(lambda: dz.fisher_information(model, design), min_total_s=2.0)
    poor = dz.Design(**{**design.__dict__, "groups": [dz.Group(32, [0.5, 1, 2, 4], design.groups[0].regimen)]})  # fmt: skip
    t0 = time.perf_counter()
    opt = dz.optimise_times(model, poor, windows=(0.5, 120), min_spacing=1.0, method="gradient", starts=8)  # fmt: skip
    opt_s = time.perf_counter() - t0
    msc = ldpk.load_model("msc_pbpk")
    regimens = {f"{d:g} cells": [ldpk.Bolus(d, route="iv")] for d in (1e6, 3e6, 1e7)}
    times = np.linspace(0.0, 72.0, 25)
    population = _msc_population(n_trials)
    t0 = time.perf_counter()
    trial = dz.virtual_trial(msc, population, regimens, times, n_trials=n_trials, n_subjects=n_subjects, seed=0)  # fmt: skip
    trial_s = time.perf_counter() - t0
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # kB -> GiB (Linux)
    # ED: the same start, the criterion averaged over 20 draws of the fixed effects (20 % CV)
    rng = np.random.default_rng(0)
    samples = {k: v * np.exp(0.2 * rng.standard_normal(20)) for k, v in design.fixed_effects.items()}  # fmt: skip
    t0 = time.perf_counter()
    ed = dz.optimise_times(model, poor, windows=(0.5, 120), min_spacing=1.0, method="gradient", starts=4, criterion="ED", samples=samples)  # fmt: skip
    ed_s = time.perf_counter() - t0
    # dose selection: 5 levels x 200 trials x 100 subjects of the MSC model, one criterion
    levels = np.geomspace(1e6, 1e9, 5)
    crit = ("alu_injury", ">=", 1e4, 168.0)
    t0 = time.perf_counter()
    sel = dz.select_dose(msc, _msc_population(200, seed=1), [ldpk.Bolus(1.0, route="iv")], crit, np.linspace(0.0, 168.0, 29), doses=levels, target=0.9, confidence=0.8, n_trials=200, n_subjects=100, outputs=["alu_injury"], metrics=[])  # fmt: skip
    sel_s = time.perf_counter() - t0
    return {
        "fim_warfarin_reduced_first_call_s": first,
        "fim_warfarin_reduced_best_s": best,
        "optimise_warfarin_4_times": {
            "wall_s": opt_s,
            "times_h": [list(map(float, t)) for t in opt.times],
            "efficiency_vs_start": float(opt.efficiency),
            "starts": opt.starts,
            "converged": opt.converged,
        },  # fmt: skip
        "virtual_trial_msc": {
            "trials": n_trials,
            "subjects": n_subjects,
            "regimens": len(regimens),
            "subject_sets": n_trials * n_subjects * len(regimens),
            "output_times": len(times),
            "wall_s": trial_s,
            "sets_per_s": n_trials * n_subjects * len(regimens) / trial_s,
            "peak_rss_gib_process": peak_gib,
            "dims": dict(trial.sizes),
        },  # fmt: skip
        "optimise_warfarin_4_times_ed_20_draws": {
            "wall_s": ed_s,
            "times_h": [list(map(float, t)) for t in ed.times],
            "efficiency_vs_start": float(ed.efficiency),
            "starts": ed.starts,
        },  # fmt: skip
        "select_dose_msc": {
            "criterion": sel.criterion,
            "levels": levels.tolist(),
            "subject_sets": 200 * 100 * len(levels),
            "wall_s": sel_s,
            "dose_cells": sel.dose,
            "status": str(sel.table["status"].iloc[0]),
        },  # fmt: skip
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=1000)
    p.add_argument("--subjects", type=int, default=100)
    p.add_argument("--out", type=Path, default=RESULTS_DIR / "design.json")
    args = p.parse_args(argv)
    folder = Path(os.environ.get("LDPK_DESIGN_DATA") or HERE.parent.parent / "shared" / "design")
    cases = yaml.safe_load((folder / "fim_cases.yaml").read_text())
    load = load_average()
    timed = timings(cases, args.trials, args.subjects)  # first: the first FIM call compiles
    print(timed)
    rows = reference_cases(cases)
    print(f"{sum(r['passed'] for r in rows)} of {len(rows)} published values within tolerance; largest relative error {max(r['relative_error'] for r in rows):.2g}")  # fmt: skip
    write_json_atomic(args.out, {
        "benchmark": "design", "cases": rows, "all_passed": all(r["passed"] for r in rows),
        "timings": timed, "load_average_before": load, "machine": machine_info(), "git": git_info(),
    })  # fmt: skip
    return 0 if all(r["passed"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
