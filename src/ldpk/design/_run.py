"""Running a design file: the virtual trial, target attainment, prediction intervals, the
population FIM and optimal sampling times, and the dose selection, returned as one
:class:`DesignResult` (its tables as pandas DataFrames).

:func:`run_design` computes and writes nothing: its figures are drawn by :mod:`ldpk.plots`
and its files and page written by :func:`ldpk.report.write_design_report` (``design`` sits
below ``plots`` and ``report`` in DESIGN.md's layering). It goes through the public
functions of :mod:`ldpk.design` (:func:`virtual_trial`, :func:`attainment`,
:func:`prediction_intervals`, :func:`fisher_information`, :func:`rse_percent`,
:func:`shrinkage`, :func:`optimise_times`, :func:`select_dose`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ldpk.design._criteria import rse_percent, shrinkage, standard_errors
from ldpk.design._dose import DoseSelection, select_dose
from ldpk.design._file import DesignFile, read_design_file
from ldpk.design._fim import FisherInformation, fisher_information
from ldpk.design._optimise import OptimisedTimes, optimise_times
from ldpk.design._trials import Attainment, attainment, prediction_intervals, virtual_trial
from ldpk.errors import DataError

#: Subject-level percentiles of the prediction intervals (per trial, over its subjects).
PERCENTILES = (5.0, 50.0, 95.0)
#: The tables of a :class:`DesignResult`, in order (keys of ``DesignResult.tables``; each is
#: present only when its section is: ``attainment`` with ``targets:``, ``parameters``,
#: ``fim`` and ``sampling_times`` with ``sampling:``, ``dose_selection`` with
#: ``dose_selection:``).
DESIGN_TABLES = (
    "attainment",
    "prediction_intervals",
    "parameters",
    "fim",
    "sampling_times",
    "dose_selection",
)


@dataclass(frozen=True)
class DesignResult:
    """What :func:`run_design` computed.

    ``design``: the :class:`DesignFile` run. ``trial``: the virtual trial (the
    ``xarray.Dataset`` of :func:`virtual_trial`). ``attainment``: target name ->
    :class:`Attainment`. ``bands``: the :func:`prediction_intervals` Dataset (percentiles
    :data:`PERCENTILES`). ``tables``: pandas DataFrames by name, in :data:`DESIGN_TABLES`
    order (:func:`ldpk.report.write_design_report` writes each as ``<name>.csv``). ``fim``:
    the start design's FIM (None without ``sampling:``); ``optimised``: the
    :class:`OptimisedTimes` (None without ``sampling.optimise``, or when it failed);
    ``dose_selection``: the :class:`DoseSelection` (None without ``dose_selection:``).
    ``warnings``: problems reported instead of stopping the run (a singular FIM, failed
    simulations). ``timings``: seconds per step (``trial_s``, ``sampling_s``,
    ``dose_selection_s``, ``total_s``)."""

    design: DesignFile
    trial: Any
    attainment: dict[str, Attainment]
    bands: Any
    tables: dict[str, Any]
    fim: FisherInformation | None = None
    optimised: OptimisedTimes | None = None
    dose_selection: DoseSelection | None = None
    warnings: tuple[str, ...] = ()
    timings: dict[str, float] = field(default_factory=dict)


# ---- tables -------------------------------------------------------------------------------
def attainment_frame(design: DesignFile, results: dict[str, Attainment]) -> Any:
    """One row per target and regimen: the target's name and criterion, the regimen, the
    median, lower and upper end of the central ``interval`` and mean over trials of the
    fraction of subjects meeting the target (0-1), and the number of trials with a
    successful simulation."""
    import pandas as pd

    rows = []
    for t in design.targets:
        a = results[t.name]
        s = a.summary
        for r in s["regimen"].values:
            x = s.sel(regimen=r)
            rows.append({
                "target": t.name, "criterion": a.criterion, "regimen": str(r),
                "median": float(x["median"]), "lower": float(x["lower"]), "upper": float(x["upper"]),
                "mean": float(x["mean"]), "n_trials": int(x["n_trials"]), "interval": a.interval,
            })  # fmt: skip
    return pd.DataFrame(rows, columns=["target", "criterion", "regimen", "median", "lower", "upper", "mean", "n_trials", "interval"])  # fmt: skip


def bands_frame(bands: Any) -> Any:
    """A :func:`prediction_intervals` Dataset as a long table, one row per regimen, output and
    time: ``regimen``, ``output``, ``unit`` (the output's), ``time`` (model time unit), then
    per subject-level percentile p (``p05``, ``p50``, ``p95`` for 5, 50, 95) its median over
    trials and the central interval's ends (``p05_lower``, ``p05_upper``, ...)."""
    import pandas as pd

    t = np.asarray(bands["time"].values, dtype=float)
    frames = []
    for o in bands.attrs["outputs"]:
        unit = bands[f"{o}_median"].attrs.get("unit", "")
        for r in bands["regimen"].values:
            cols: dict[str, Any] = {"regimen": str(r), "output": o, "unit": unit, "time": t}
            for p in bands["percentile"].values:
                name = f"p{float(p):02g}"
                for stat, suffix in (("median", ""), ("lower", "_lower"), ("upper", "_upper")):
                    cols[name + suffix] = np.asarray(bands[f"{o}_{stat}"].sel(percentile=p, regimen=r).values)  # fmt: skip
            frames.append(pd.DataFrame(cols))
    return pd.concat(frames, ignore_index=True)


def _fim_frame(fim: FisherInformation) -> Any:
    import pandas as pd

    frame = pd.DataFrame(np.asarray(fim.matrix), columns=list(fim.names))
    frame.insert(0, "parameter", list(fim.names))
    return frame


def _parameters_frame(
    fim: FisherInformation, se: np.ndarray, rse: np.ndarray, shrink: np.ndarray | None,
    design: Any, opt: OptimisedTimes | None, se_opt: np.ndarray | None, rse_opt: np.ndarray | None,
) -> Any:  # fmt: skip
    import pandas as pd

    frame = pd.DataFrame({"parameter": list(fim.names), "value": np.asarray(fim.values, dtype=float), "se": se, "rse_percent": rse})  # fmt: skip
    if opt is not None:
        frame["se_optimised"] = se_opt
        frame["rse_percent_optimised"] = rse_opt
    if shrink is not None:
        keep = [k for k, v in design.omega2.items() if float(v) > 0]
        for gi, g in enumerate(design.groups):
            col = np.full(len(fim.names), np.nan)
            for ei, k in enumerate(keep):
                if f"omega2_{k}" in fim.names:
                    col[fim.names.index(f"omega2_{k}")] = shrink[gi, ei]
            frame[f"shrinkage_{g.name}"] = col
    return frame


def _sampling_frame(design: DesignFile, opt: OptimisedTimes | None) -> Any:
    import pandas as pd

    sampling = design.sampling
    assert sampling is not None
    rows = []
    for gi, g in enumerate(sampling.design.groups):
        new = None if opt is None else np.asarray(opt.design.groups[gi].times, dtype=float)
        for k, t in enumerate(g.times):
            row = {"group": g.name, "n": float(g.n), "regimen": sampling.regimens[gi], "sample": k + 1, "time_start": float(t)}  # fmt: skip
            if opt is not None:
                row.update(time_optimised=float(new[k]), efficiency=opt.efficiency, ln_det_start=opt.ln_det_start, ln_det_optimised=opt.ln_det)  # fmt: skip
            rows.append(row)
    return pd.DataFrame(rows)


def _dose_frame(selection: DoseSelection) -> Any:
    """:attr:`DoseSelection.table` with its index as a column ``schedule`` (the regimen
    names of ``dose_selection.regimens``)."""
    return selection.table.reset_index()


# ---- the run ------------------------------------------------------------------------------
def _sampling(design: DesignFile, problems: list[str]) -> tuple[dict[str, Any], FisherInformation, OptimisedTimes | None]:  # fmt: skip
    """The FIM of the start design, its SE, RSE% and shrinkage, and the optimised times."""
    sampling = design.sampling
    assert sampling is not None
    d, model = sampling.design, design.model
    fim = fisher_information(model, d, kind=sampling.kind)
    nan = np.full(len(fim.names), np.nan)
    try:
        se, rse = standard_errors(fim), rse_percent(fim)
    except DataError as exc:  # a design that cannot estimate everything: say so, keep going
        problems.append(f"start design: {exc}")
        se, rse = nan, nan
    shrink = None
    if any(float(v) > 0 for v in d.omega2.values()):
        try:
            shrink = shrinkage(model, d)
        except DataError as exc:
            problems.append(f"shrinkage: {exc}")
    opt = None
    se_opt = rse_opt = None
    if sampling.optimise is not None and np.all(np.isfinite(se)):
        o = sampling.optimise
        try:
            opt = optimise_times(
                model, d, windows=o["windows"], grid=o["grid"], min_spacing=o["min_spacing"],
                replicates=o["replicates"], kind=sampling.kind, starts=o["starts"],
                seed=o["seed"], method=o["method"],
            )  # fmt: skip
            se_opt, rse_opt = standard_errors(opt.fim), rse_percent(opt.fim)
        except DataError as exc:
            problems.append(f"optimisation: {exc}")
            opt = None
    elif sampling.optimise is not None:
        problems.append("optimisation skipped: the start design's FIM is singular")
    tables = {
        "parameters": _parameters_frame(fim, se, rse, shrink, d, opt, se_opt, rse_opt),
        "fim": _fim_frame(fim),
        "sampling_times": _sampling_frame(design, opt),
    }
    return tables, fim, opt


def _dose_selection(design: DesignFile, population: Any, progress: bool) -> DoseSelection:
    """:func:`select_dose` with the file's ``dose_selection:`` and its population, times,
    outputs, metrics, trial sizes, seed and interval."""
    sec = design.dose_selection
    assert sec is not None
    return select_dose(
        design.model, population, {r: list(design.regimens[r]) for r in sec.regimens},
        dict(sec.criterion), design.times, doses=list(sec.doses), target=sec.attainment,
        confidence=sec.confidence, interval=design.interval, n_trials=design.n_trials,
        n_subjects=design.n_subjects, seed=design.seed, outputs=list(design.outputs),
        metrics=list(design.metrics), metric_options=design.metric_options, progress=progress,
    )  # fmt: skip


def run_design(design_file: DesignFile | str | Path, *, progress: bool = True) -> DesignResult:
    """Run a design file (a :class:`DesignFile` of :func:`read_design_file`, or its path) and
    return what it asks for, writing nothing (:func:`ldpk.report.write_design_report` writes
    the files, ``ldpk design`` both):

    - the virtual trial of ``n_trials`` x ``n_subjects`` over every regimen (dims trial,
      subject, regimen, time) and its :func:`prediction_intervals` (subject-level 5/50/95th
      percentiles, median and central ``interval`` over trials): tables
      ``prediction_intervals`` (:func:`bands_frame`);
    - with ``targets:``, the :func:`attainment` of each target: table ``attainment``
      (:func:`attainment_frame`);
    - with ``sampling:``, the start design's population FIM, SE, RSE % and shrinkage, and
      with ``optimise:`` the optimal sampling times: tables ``parameters`` (each FIM
      parameter's value, expected SE and RSE %, optimised too, each group's shrinkage of the
      ω² rows), ``fim`` (the matrix, rows and columns named) and ``sampling_times`` (per group
      and sample the start time, the optimised time, the efficiency and ln det FIM);
    - with ``dose_selection:``, :func:`select_dose` with the named target's criterion over the
      template regimens and candidate doses: table ``dose_selection`` (per schedule: dose,
      total, median, lower, upper, status, recommended).

    Units: times in the model's time unit, values in each output's unit (column ``unit``),
    doses in the model's amount unit, fractions 0-1. ``progress``: the virtual trials'
    progress bars on stderr. A singular FIM or a failed optimisation is reported
    (``DesignResult.warnings``) instead of losing the rest. Returns a :class:`DesignResult`."""
    if isinstance(design_file, str | Path):
        design_file = read_design_file(design_file)
    if not isinstance(design_file, DesignFile):
        raise DataError(f"run_design(): give a design file's path or the DesignFile of ldpk.design.read_design_file, got {type(design_file).__name__}")  # fmt: skip
    design = design_file
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    problems: list[str] = []
    population = design.trial_population()
    trial = virtual_trial(
        design.model, population, design.regimens, design.times,
        n_trials=design.n_trials, n_subjects=design.n_subjects, seed=design.seed,
        outputs=list(design.outputs), metrics=list(design.metrics),
        metric_options=design.metric_options, progress=progress,
    )  # fmt: skip
    failed = int((trial["status"].values != 0).sum())
    if failed:
        problems.append(f"{failed} of {trial['status'].size} simulations (subject x regimen) failed and are left out")  # fmt: skip
    results = {t.name: attainment(trial, t.criterion, interval=design.interval) for t in design.targets}  # fmt: skip
    bands = prediction_intervals(trial, outputs=list(design.outputs), percentiles=PERCENTILES, interval=design.interval)  # fmt: skip
    tables: dict[str, Any] = {}
    if design.targets:
        tables["attainment"] = attainment_frame(design, results)
    tables["prediction_intervals"] = bands_frame(bands)
    timings["trial_s"] = time.perf_counter() - t0
    fim = opt = None
    if design.sampling is not None:
        t1 = time.perf_counter()
        more, fim, opt = _sampling(design, problems)
        tables.update(more)
        timings["sampling_s"] = time.perf_counter() - t1
    selection = None
    if design.dose_selection is not None:
        t1 = time.perf_counter()
        selection = _dose_selection(design, population, progress)
        tables["dose_selection"] = _dose_frame(selection)
        timings["dose_selection_s"] = time.perf_counter() - t1
        failed = int((selection.trial["status"].values != 0).sum())
        if failed:
            problems.append(f"dose selection: {failed} of {selection.trial['status'].size} simulations (subject x dose level) failed and are left out")  # fmt: skip
        if selection.table["status"].eq("not reached").all():
            levels = design.dose_selection.doses
            where = f"up to {levels[-1]:g}; give higher doses" if selection.increasing else f"down to {levels[0]:g}; give lower doses"  # fmt: skip
            problems.append(f"dose selection: no candidate dose reaches {selection.target:.0%} of subjects in {selection.confidence:.0%} of trials, {where}")  # fmt: skip
    timings["total_s"] = time.perf_counter() - t0
    return DesignResult(
        design=design, trial=trial, attainment=results, bands=bands, tables=tables, fim=fim,
        optimised=opt, dose_selection=selection, warnings=tuple(problems), timings=timings,
    )  # fmt: skip


__all__ = [
    "DESIGN_TABLES",
    "PERCENTILES",
    "DesignResult",
    "attainment_frame",
    "bands_frame",
    "run_design",
]
