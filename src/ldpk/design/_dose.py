"""Dose selection: the lowest dose (or, for a safety limit, the highest) at which a stated
fraction of subjects meets a criterion, with a stated confidence over the uncertainty about
the population.

One virtual trial (:func:`~ldpk.design.virtual_trial`) runs every candidate dose level with
the same trials and subjects (common random numbers: the dose is the only thing that changes
between levels). For each subject the dose at which its criterion changes is found by linear
interpolation between the levels, on log dose and, for positive values, log value (exact
for exposure proportional to dose). A trial's attainment at dose d is the fraction of its
subjects whose crossing lies on the right side of d, smoothed with a normal kernel on log
dose (the smoothed empirical distribution function, continuous and monotone in d). The
selected dose solves ``quantile_{1-confidence}(attainment over trials)(d) = target`` by
Brent's method on that smooth curve.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ldpk.design._trials import OPERATORS, attainment, criterion_values, virtual_trial
from ldpk.dosing import Bolus, Infusion
from ldpk.errors import DataError
from ldpk.model import Model
from ldpk.solve import ODEOptions

#: Comparisons that attainment increases with as the criterion's value grows (the others
#: decrease): ``>=`` and ``>`` select the lowest dose, ``<=`` and ``<`` the highest.
INCREASING = (">=", ">")

_FINE = 241  # points of the reported dose-attainment curve, log-spaced over the levels


@dataclass(frozen=True)
class DoseSelection:
    """The result of :func:`select_dose`.

    ``table``: a pandas DataFrame, one row per schedule: ``dose`` (the selected dose, model
    amount unit per administration; NaN when no candidate dose reaches the target),
    ``total`` (the amount the schedule gives at that dose: amounts × counts), ``median``, ``lower``, ``upper``
    (attainment over trials at that dose: median and central ``interval``), ``status``
    ('selected', 'below range': the lowest level already attains, the dose is at most that;
    'not reached': even the highest level does not; for a safety limit the roles of the ends
    swap), ``recommended`` (True for the schedule with the smallest total among those
    selected). ``curve``: an ``xarray.Dataset`` (schedule, dose) of the smoothed attainment
    on a fine log grid: ``median``, ``lower``, ``upper`` and ``at_confidence`` (the
    ``1 - confidence`` quantile over trials, the curve the dose solves). ``levels``: the
    unsmoothed attainment at the simulated dose levels (:class:`~ldpk.design.Attainment`
    ``summary`` with a ``schedule`` and a ``dose`` coordinate). ``trial``: the virtual trial
    Dataset. ``bandwidth``: the smoothing bandwidth on natural-log dose. ``dose_unit``: the
    model's amount unit."""

    table: Any
    curve: Any
    levels: Any
    trial: Any
    criterion: str
    target: float
    confidence: float
    interval: float
    increasing: bool
    bandwidth: float
    dose_unit: str

    @property
    def dose(self) -> float:
        """The selected dose of the recommended schedule (NaN if none reaches the target)."""
        rows = self.table[self.table["recommended"]]
        return float(rows["dose"].iloc[0]) if len(rows) else float("nan")

    def __str__(self) -> str:
        goal = "lowest" if self.increasing else "highest"
        lines = [
            f"{goal} dose with attainment of [{self.criterion}] >= {self.target:.0%} in "
            f"{self.confidence:.0%} of trials (unit: {self.dose_unit or 'model amount unit'}):"
        ]
        for name, r in self.table.iterrows():
            star = " *" if r["recommended"] else ""
            lines.append(
                f"  {name}: {r['dose']:.4g} ({r['status']}; attainment median {r['median']:.3f}, "
                f"{self.interval:.0%} interval {r['lower']:.3f}-{r['upper']:.3f}){star}"
            )
        return "\n".join(lines)


def _probability(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < float(value) < 1:
        raise DataError(f"select_dose(): {what} must be a probability in (0, 1), got {value!r}")
    return float(value)


def _template(name: str, spec: Any, what: str) -> Callable[[float], list[Any]]:
    """A function dose -> regimen: ``spec`` itself if callable, else a list of doses scaled so
    that each administration's amount is the dose times its share of the first one."""
    if callable(spec):
        return spec
    if not isinstance(spec, Sequence) or isinstance(spec, str) or not spec:
        raise DataError(f"select_dose(): {what} must be a non-empty list of doses (ldpk.Bolus or ldpk.Infusion) or a function dose -> regimen")  # fmt: skip
    base = None
    for i, d in enumerate(spec):
        if not isinstance(d, Bolus | Infusion):
            raise DataError(f"select_dose(): {what}[{i}] must be an ldpk.Bolus or ldpk.Infusion (a Reset cannot be scaled), got {type(d).__name__}")  # fmt: skip
        if base is None:
            base = float(d.amount)
    if not base or not np.isfinite(base) or base <= 0:
        raise DataError(f"select_dose(): {what}[0] has amount {base!r}; the first dose of a template must be positive (it is the dose that is scaled)")  # fmt: skip

    def regimen(dose: float) -> list[Any]:
        import dataclasses

        return [dataclasses.replace(d, amount=float(d.amount) * dose / base) for d in spec]

    regimen.__name__ = name
    return regimen


def _schedules(regimen: Any) -> dict[str, Callable[[float], list[Any]]]:
    if isinstance(regimen, Mapping):
        if not regimen:
            raise DataError("select_dose(): the regimen mapping is empty; give schedule name -> template")  # fmt: skip
        return {str(k): _template(str(k), v, f"regimen[{k!r}]") for k, v in regimen.items()}
    return {"regimen": _template("regimen", regimen, "regimen")}


def _levels(doses: Any) -> np.ndarray:
    try:
        d = np.asarray(doses, dtype=float)
    except (TypeError, ValueError):
        raise DataError(f"select_dose(): doses must be numbers, got {doses!r}") from None
    if d.ndim != 1 or d.size < 2:
        raise DataError("select_dose(): give at least two dose levels (increasing, > 0) to search between")  # fmt: skip
    if not np.all(np.isfinite(d)) or np.any(d <= 0) or np.any(np.diff(d) <= 0):
        raise DataError(f"select_dose(): dose levels must be finite, > 0 and increasing, got {d.tolist()}")  # fmt: skip
    return d


def _check_variable(model: Model, criterion: Any, outputs: Any, metrics: Any) -> None:
    """Refuse a criterion variable the trial will not have, before anything compiles."""
    from ldpk.sweep import DEFAULT_METRICS

    if isinstance(criterion, Mapping):
        var = criterion.get("variable")
    elif isinstance(criterion, tuple | list) and len(criterion) in (3, 4):
        var = criterion[0]
    else:
        raise DataError(f"select_dose(): criterion must be a tuple (variable, op, threshold[, at]) or a mapping with those keys; got {criterion!r}")  # fmt: skip
    outs = list(outputs) if outputs is not None else list(model.output_names)
    mets = list(metrics) if metrics is not None else list(DEFAULT_METRICS)
    valid = outs + [f"{o}_{m}" for o in outs for m in mets]
    if var not in valid:
        raise DataError(f"select_dose(): the criterion's variable {var!r} is not computed; valid: {', '.join(valid)} (outputs, or <output>_<metric> of the metrics asked for)")  # fmt: skip
    op = criterion.get("op") if isinstance(criterion, Mapping) else criterion[1]
    if op not in OPERATORS:
        raise DataError(f"select_dose(): unknown comparison {op!r}; valid: {', '.join(OPERATORS)}")


def _crossings(g: np.ndarray, met: np.ndarray, x: np.ndarray, increasing: bool) -> np.ndarray:
    """Per subject (leading dims), the log dose at which the criterion starts to hold
    (increasing) or stops holding (decreasing), interpolated linearly in g between the two
    levels around the first change; -inf / +inf when it holds / fails over the whole range
    (mirrored for decreasing). ``g`` (..., K): the signed distance to the threshold; ``met``
    (..., K) the criterion; ``x`` (K,) log dose levels."""
    flip = met if increasing else ~met  # the state the subject reaches as the dose grows
    first = np.argmax(flip, axis=-1)
    none = ~flip.any(axis=-1)
    k = np.clip(first, 1, len(x) - 1)
    g0 = np.take_along_axis(g, (k - 1)[..., None], -1)[..., 0]
    g1 = np.take_along_axis(g, k[..., None], -1)[..., 0]
    with np.errstate(divide="ignore", invalid="ignore"):
        w = np.clip(np.where(g1 != g0, -g0 / (g1 - g0), 1.0), 0.0, 1.0)
    out = x[k - 1] + w * (x[k] - x[k - 1])
    out = np.where(first == 0, -np.inf, out)
    out = np.where(none, np.inf, out)
    return out


def _bandwidth(cross: np.ndarray, valid: np.ndarray) -> float:
    """A normal-kernel bandwidth on log dose for the trials' crossing doses: the pooled
    within-trial robust SD (IQR / 1.349, at most the SD) × n_subjects^(-1/3), the order that
    keeps the smoothing bias of a distribution function's quantiles below its noise."""
    spreads = []
    for c, v in zip(cross, valid, strict=True):
        f = c[v & np.isfinite(c)]
        if f.size >= 4:
            q75, q25 = np.percentile(f, [75, 25])
            spreads.append(min(np.std(f), (q75 - q25) / 1.349) or np.std(f))
    n = max(int(valid.sum(axis=1).max()), 1)
    spread = float(np.median(spreads)) if spreads else 0.0
    return spread * n ** (-1 / 3) if spread > 0 else 1e-3


def _smooth(cross: np.ndarray, valid: np.ndarray, xs: np.ndarray, h: float, increasing: bool) -> np.ndarray:  # fmt: skip
    """Smoothed attainment (n_trials, len(xs)) of each trial's valid subjects."""
    from scipy.special import ndtr

    z = (xs[None, None, :] - cross[:, :, None]) / h  # -inf/+inf crossings give 1/0
    with np.errstate(invalid="ignore"):
        p = ndtr(z if increasing else -z)
    p = np.where(valid[:, :, None], p, 0.0)
    n = valid.sum(axis=1)[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, p.sum(axis=1) / np.maximum(n, 1), np.nan)


def select_dose(
    model: Model,
    population: Any,
    regimen: Any,
    criterion: Any,
    times: Sequence[float] | np.ndarray,
    *,
    doses: Sequence[float],
    target: float = 0.9,
    confidence: float = 0.8,
    interval: float = 0.9,
    n_trials: int = 200,
    n_subjects: int = 100,
    seed: int = 0,
    outputs: Sequence[str] | None = None,
    metrics: Sequence[str] | None = None,
    metric_options: Mapping[str, Any] | None = None,
    bandwidth: float | None = None,
    chunk_size: int | None = None,
    progress: bool = False,
    method: str = "auto",
    ode: ODEOptions | None = None,
) -> DoseSelection:
    """The lowest dose at which at least ``target`` of the subjects meet ``criterion`` in at
    least ``confidence`` of the trials (for a ``<=``/``<`` criterion, a safety limit: the
    highest such dose).

    Parameters
    ----------
    model, population: as for :func:`~ldpk.design.virtual_trial` (a :class:`ldpk.Fit`, or
        ``{"typical": ..., "omega": ...}``; :func:`~ldpk.design.population_from_priors`).
    regimen: the schedule whose dose is chosen: a list of :class:`ldpk.Bolus` /
        :class:`ldpk.Infusion` whose amounts are scaled together so that the first equals
        the dose (a loading dose twice the first stays twice), or a function dose ->
        regimen; or a mapping schedule name -> either, a schedule family (e.g. every 12 h vs
        every 24 h): a dose is chosen for each, and the one with the smallest total amount
        is recommended.
    criterion: ``(variable, op, threshold[, at])`` or a mapping, as for
        :func:`~ldpk.design.attainment` (a metric such as ``"cp_auc_inf"`` or an output at a
        time ``at``).
    times: output times (model time unit) on which outputs and metrics are computed.
    doses: the candidate dose levels (model amount unit), increasing, at least two; the
        search is between the lowest and the highest, so bracket the expected dose. Each
        level is simulated for every subject; more levels make the interpolation between them
        more exact for models not proportional in dose.
    target: the fraction of subjects (0-1) that must meet the criterion.
    confidence: the fraction of trials (0-1) in which ``target`` must be reached: the
        probability, over the uncertainty about the population, that the dose attains.
    interval: the central probability of the reported interval of attainment over trials.
    n_trials, n_subjects, seed, outputs, metrics, metric_options, chunk_size, progress,
        method, ode: as for :func:`~ldpk.design.virtual_trial`.
    bandwidth: the smoothing kernel's SD on natural-log dose (default: the within-trial
        robust spread of the subjects' crossing doses × n_subjects^(-1/3)).

    Returns a :class:`DoseSelection`. Raises :class:`~ldpk.errors.DataError` for bad doses,
    probabilities, regimens or criterion before anything compiles.
    """
    import pandas as pd
    import xarray as xr
    from scipy.optimize import brentq

    levels = _levels(doses)
    target = _probability(target, "target")
    confidence = _probability(confidence, "confidence")
    interval = _probability(interval, "interval")
    if bandwidth is not None and (isinstance(bandwidth, bool) or not isinstance(bandwidth, numbers.Real) or not bandwidth > 0):  # fmt: skip
        raise DataError(f"select_dose(): bandwidth must be a positive number (SD on natural-log dose), got {bandwidth!r}")  # fmt: skip
    schedules = _schedules(regimen)
    _check_variable(model, criterion, outputs, metrics)
    names = {(s, i): f"{s} @ {d:.6g}" for s in schedules for i, d in enumerate(levels)}
    regs = {names[s, i]: fn(float(d)) for s, fn in schedules.items() for i, d in enumerate(levels)}  # fmt: skip

    trial = virtual_trial(
        model, population, regs, times, n_trials=n_trials, n_subjects=n_subjects, seed=seed,
        outputs=outputs, metrics=metrics, metric_options=metric_options,
        chunk_size=chunk_size, progress=progress, method=method, ode=ode,
    )  # fmt: skip
    values, op, thr, text = criterion_values(trial, criterion, "select_dose")
    increasing = op in INCREASING
    x = np.log(levels)
    lo_q, hi_q = (1 - interval) / 2, (1 + interval) / 2
    raw = attainment(trial, criterion, interval=interval).summary

    per: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for s in schedules:
        cols = [names[s, i] for i in range(len(levels))]
        v = np.asarray(values.sel(regimen=cols).transpose("trial", "subject", "regimen"), dtype=float)  # fmt: skip
        ok = np.asarray((trial["status"].sel(regimen=cols) == 0).all("regimen"))
        ok &= np.all(np.isfinite(v), axis=-1)
        met = np.asarray(OPERATORS[op](v, thr))
        positive = thr > 0 and np.all(v[ok] > 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            g = np.log(v) - np.log(thr) if positive else v - thr
        per[s] = (_crossings(g, met, x, increasing), ok)
    if bandwidth is None:
        h = float(np.median([_bandwidth(c, ok) for c, ok in per.values()]))
    else:
        h = float(bandwidth)

    xs = np.linspace(x[0], x[-1], _FINE)
    curves: dict[str, dict[str, np.ndarray]] = {}
    rows = {}
    for s, (cross, ok) in per.items():
        frac = _smooth(cross, ok, xs, h, increasing)  # (trial, fine)
        with np.errstate(invalid="ignore"):
            curve = {
                "median": np.nanmedian(frac, axis=0),
                "lower": np.nanquantile(frac, lo_q, axis=0),
                "upper": np.nanquantile(frac, hi_q, axis=0),
                "at_confidence": np.nanquantile(frac, 1 - confidence, axis=0),
            }
        curves[s] = curve

        def gap(xv: float, cross: np.ndarray = cross, ok: np.ndarray = ok) -> float:
            f = _smooth(cross, ok, np.array([xv]), h, increasing)[:, 0]
            return float(np.nanquantile(f, 1 - confidence)) - target

        ends = (gap(x[0]), gap(x[-1]))
        good_end, bad_end = (ends[0], ends[1]) if increasing else (ends[1], ends[0])
        if not np.all(np.isfinite(ends)):
            status, xd = "not reached", np.nan
        elif good_end >= 0:  # the most cautious end already attains
            status, xd = "below range" if increasing else "above range", x[0] if increasing else x[-1]  # fmt: skip
        elif bad_end < 0:
            status, xd = "not reached", np.nan
        else:
            status, xd = "selected", brentq(gap, x[0], x[-1], xtol=1e-10, rtol=1e-12)
        dose = float(np.exp(xd)) if np.isfinite(xd) else float("nan")
        if np.isfinite(xd):
            f = _smooth(cross, ok, np.array([xd]), h, increasing)[:, 0]
            stats = (np.nanmedian(f), np.nanquantile(f, lo_q), np.nanquantile(f, hi_q))
            total = float(sum(float(d.amount) * int(d.count) for d in schedules[s](dose)))
        else:
            stats, total = (np.nan, np.nan, np.nan), np.nan
        rows[s] = {"dose": dose, "total": total, "median": stats[0], "lower": stats[1], "upper": stats[2], "status": status}  # fmt: skip

    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "schedule"
    chosen = table["total"].where(table["status"] != "not reached")
    best = chosen.idxmin() if (increasing and chosen.notna().any()) else (chosen.idxmax() if chosen.notna().any() else None)  # fmt: skip
    table["recommended"] = table.index == best

    unit = model.amount_unit
    curve_ds = xr.Dataset(
        {
            k: (("schedule", "dose"), np.stack([curves[s][k] for s in schedules]))
            for k in ("median", "lower", "upper", "at_confidence")
        },  # fmt: skip
        coords={"schedule": list(schedules), "dose": ("dose", np.exp(xs), {"unit": unit})},
        attrs={
            "criterion": text,
            "target": target,
            "confidence": confidence,
            "interval": interval,
            "bandwidth": h,
            "unit": "1",
        },  # fmt: skip
    )
    lv = raw.rename(regimen="level")
    lv = lv.assign_coords(
        schedule=("level", [s for s in schedules for _ in levels]),
        dose=("level", np.tile(levels, len(schedules)), {"unit": unit}),
    )
    return DoseSelection(table, curve_ds, lv, trial, text, target, confidence, interval, increasing, h, unit)  # fmt: skip


__all__ = ["INCREASING", "DoseSelection", "select_dose"]
