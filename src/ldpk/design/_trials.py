"""Virtual trials and the probability of target attainment.

A virtual trial is ``n_trials`` × ``n_subjects`` simulated subjects. Each trial takes one draw
of the population-level parameters (typical values and ω: the uncertainty about the
population), and its subjects are drawn around that draw with log-normal between-subject
variability, ``P_i = P_typ · exp(ω z_i)``, ``z_i`` standard normal. Every subject of every
trial goes through :func:`ldpk.sweep` (the one executor: chunked, sharded, compiled once), and
the result is reshaped to dims (trial, subject, regimen, time).

:func:`attainment` turns such a trial into the probability of target attainment: the fraction
of each trial's subjects meeting a criterion, per trial and regimen, and its median and
central interval over trials.
"""

from __future__ import annotations

import json
import numbers
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ldpk.design._spec import Residual
from ldpk.errors import DataError
from ldpk.model import Model
from ldpk.paramsets import ParameterTable
from ldpk.solve import ODEOptions
from ldpk.sweep import sweep

#: Comparisons a criterion spec may use.
OPERATORS: dict[str, Callable[[Any, Any], Any]] = {
    ">=": operator.ge,
    ">": operator.gt,
    "<=": operator.le,
    "<": operator.lt,
}

_POPULATION_KEYS = ("typical", "omega")


@dataclass(frozen=True)
class _Population:
    """Typical values and ω per trial (name -> (n_trials,) arrays) and where they came from."""

    typical: dict[str, np.ndarray]
    omega: dict[str, np.ndarray]
    source: str


def _positive_int(value: Any, what: str, who: str = "virtual_trial") -> int:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
        raise DataError(f"{who}(): {what} must be a positive integer, got {value!r}")
    return int(value)


def _per_trial(name: str, value: Any, n_trials: int, what: str) -> np.ndarray:
    """``value`` (a scalar or n_trials values) as a float array of shape (n_trials,)."""
    try:
        a = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        raise DataError(f"virtual_trial(): population {what}[{name!r}] is not numeric: {value!r}") from None  # fmt: skip
    if a.ndim == 0:
        a = np.full(n_trials, float(a))
    if a.shape != (n_trials,):
        raise DataError(
            f"virtual_trial(): population {what}[{name!r}] has shape {a.shape}; give a scalar "
            f"or one value per trial ({n_trials},)"
        )
    if not np.all(np.isfinite(a)):
        raise DataError(f"virtual_trial(): population {what}[{name!r}] has non-finite values")
    return a


def _from_mapping(model: Model, population: Mapping[str, Any], n_trials: int) -> _Population:
    unknown_keys = [k for k in population if k not in _POPULATION_KEYS]
    if unknown_keys:
        raise DataError(
            f"virtual_trial(): population has unknown entries {unknown_keys}; give "
            "{'typical': {P: values}, 'omega': {P: values}}"
        )
    parts: dict[str, dict[str, np.ndarray]] = {}
    for what in _POPULATION_KEYS:
        block = population.get(what) or {}
        if not isinstance(block, Mapping):
            raise DataError(f"virtual_trial(): population[{what!r}] must be a mapping name -> values")  # fmt: skip
        unknown = [k for k in block if k not in model.parameter_names]
        if unknown:
            raise DataError(
                f"virtual_trial(): unknown parameter(s) {unknown} in population[{what!r}] for "
                f"model {model.name!r}; parameters: {', '.join(model.parameter_names)}"
            )
        parts[what] = {k: _per_trial(k, v, n_trials, what) for k, v in block.items()}
    for k, w in parts["omega"].items():
        if np.any(w < 0):
            raise DataError(f"virtual_trial(): population omega[{k!r}] must be >= 0 (SD of log)")
    if not parts["typical"] and not parts["omega"]:
        raise DataError("virtual_trial(): population names no parameter (typical or omega)")
    return _Population(parts["typical"], parts["omega"], "mapping")


def _from_fit(fit: Any, n_trials: int) -> _Population:
    table = fit.parameter_table(n_trials)
    if table.n < n_trials:
        raise DataError(
            f"virtual_trial(): the fit has {table.n} posterior draws, fewer than n_trials = "
            f"{n_trials}; ask for at most {table.n} trials"
        )
    draws = fit.population_draws(n_trials)  # the same draws, in the same order, as the table
    typical = {k: np.asarray(table[k], dtype=float) for k in table}
    omega = {p: np.asarray(draws[f"omega_{p}"], dtype=float).reshape(-1) for p in fit.spec.iiv}
    return _Population(typical, omega, f"fit ({fit.method})")


def _population(model: Model, population: Any, n_trials: int) -> _Population:
    from ldpk.inference import Fit

    if isinstance(population, Fit):
        return _from_fit(population, n_trials)
    if isinstance(population, Mapping):
        return _from_mapping(model, population, n_trials)
    raise DataError(
        "virtual_trial(): population must be an ldpk.Fit or a mapping "
        f"{{'typical': {{P: values}}, 'omega': {{P: values}}}}, got {type(population).__name__}"
    )


def _sample_prior(prior: Any, n: int, rng: np.random.Generator) -> np.ndarray:
    a = dict(prior.args)
    match prior.dist:
        case "normal":
            return rng.normal(a["loc"], a["scale"], n)
        case "lognormal":
            return rng.lognormal(a["loc"], a["scale"], n)
        case "halfnormal":
            return np.abs(rng.normal(0.0, a["scale"], n))
        case "uniform":
            return rng.uniform(a["low"], a["high"], n)
        case "beta":
            return rng.beta(a["a"], a["b"], n)
        case "gamma":
            return rng.gamma(a["shape"], 1.0 / a["rate"], n)
    raise DataError(f"population_from_priors(): prior {prior.dist!r} cannot be sampled")


def population_from_priors(model: Model, n_trials: int, seed: int = 0) -> dict[str, Any]:
    """A population for :func:`virtual_trial` without a fit: ``n_trials`` typical values of
    every parameter with a prior in the model file (``prior: {dist: fixed}`` and no prior:
    the model's value), drawn from ``numpy.random.default_rng(seed)`` in the model's order,
    and ω the model's ``iiv`` (SD of log, the same in every trial). Values in model units.

    Returns ``{"typical": {P: (n_trials,) array}, "omega": {P: float}}``."""
    n_trials = _positive_int(n_trials, "n_trials", "population_from_priors")
    if not isinstance(seed, numbers.Integral) or isinstance(seed, bool):
        raise DataError(f"population_from_priors(): seed must be an integer, got {seed!r}")
    rng = np.random.default_rng(int(seed))
    typical = {
        p.name: _sample_prior(p.prior, n_trials, rng)
        for p in model.parameters
        if p.prior is not None and p.prior.dist != "fixed" and np.ndim(p.value) == 0
    }
    omega = {p.name: float(p.iiv) for p in model.parameters if p.iiv and np.ndim(p.value) == 0}
    return {"typical": typical, "omega": omega}


def prior_draws(
    model: Model,
    n: int,
    *,
    subjects: str = "typical",
    n_subjects: int | None = None,
    seed: int = 0,
) -> ParameterTable:
    """A parameter table for :func:`ldpk.sweep` from the model file's priors, for when there
    is no fit (the counterpart of :meth:`ldpk.Fit.draws`): ``n`` draws of the typical values
    (:func:`population_from_priors`, the same seed), and per draw one set
    (``subjects='typical'``) or ``n_subjects`` new subjects ``P_typ · exp(iiv · z)`` around
    it (``subjects='new'``; ``iiv`` the model's between-subject SD of log, ``z`` drawn after
    the typical values). Rows are draw-major (row ``draw * n_subjects + subject``). Only
    parameters with a prior or ``iiv`` are in the table; the others keep the model's values.
    Values in model units. Raises :class:`~ldpk.errors.DataError` for bad counts or a model
    with nothing to draw."""
    n = _positive_int(n, "n", "prior_draws")
    if subjects not in ("typical", "new"):
        raise DataError(f"prior_draws(): subjects must be 'typical' or 'new' (a model has no fitted subjects), got {subjects!r}")  # fmt: skip
    if (n_subjects is None) == (subjects == "new"):
        raise DataError("prior_draws(): give n_subjects with subjects='new', and only then")
    m = 1 if subjects == "typical" else _positive_int(n_subjects, "n_subjects", "prior_draws")
    pop = population_from_priors(model, n, seed)
    if not pop["typical"] and not (subjects == "new" and pop["omega"]):
        raise DataError(f"prior_draws(): model {model.name!r} has no parameter with a prior{' or iiv' if subjects == 'new' else ''} to draw")  # fmt: skip
    rng = np.random.default_rng([int(seed), 1])  # the subjects' z, apart from the priors' draws
    columns: dict[str, np.ndarray] = {}
    for p in model.parameters:
        typ = pop["typical"].get(p.name)
        varies = subjects == "new" and p.name in pop["omega"]
        if typ is None and not varies:
            continue
        values = np.repeat(typ if typ is not None else np.full(n, float(p.value)), m)
        if varies:
            values = values * np.exp(pop["omega"][p.name] * rng.standard_normal(n * m))
        columns[p.name] = values
    prov = {
        "method": "priors",
        "seed": int(seed),
        "draws": n,
        "subjects": subjects,
        "n_subjects": m,
        "distributions": {
            p.name: f"{p.prior.dist}{dict(p.prior.args)}"
            for p in model.parameters
            if p.name in pop["typical"]
        },  # fmt: skip
    }
    return ParameterTable.from_mapping(columns, provenance=prov)


def virtual_trial(
    model: Model,
    population: Any,
    regimens: Any,
    times: Sequence[float] | np.ndarray,
    *,
    n_trials: int,
    n_subjects: int,
    seed: int = 0,
    outputs: Sequence[str] | None = None,
    metrics: Sequence[str] | None = None,
    metric_options: Mapping[str, Any] | None = None,
    residual: Residual | None | bool = False,
    chunk_size: int | None = None,
    progress: bool = False,
    method: str = "auto",
    ode: ODEOptions | None = None,
) -> Any:
    """Simulate ``n_trials`` virtual trials of ``n_subjects`` subjects each.

    Parameters
    ----------
    model: the :class:`~ldpk.Model`; parameters the population does not name keep its values.
    population: the typical values and ω (SD of log, dimensionless), either

        - an :class:`ldpk.Fit`: trial t takes posterior draw t (``fit.parameter_table``:
          typical values at the covariates' reference values; evenly spaced draws) and the
          same draw's ``omega_<P>`` for every parameter with between-subject variability
          (study-level variability is left out); or
        - a mapping ``{"typical": {P: v}, "omega": {P: w}}``, each value a scalar (the same
          in every trial: no uncertainty) or an array of ``n_trials`` values (one per trial),
          typical values in the model's units. A parameter in ``omega`` but not ``typical``
          varies around the model's value; one in ``typical`` but not ``omega`` has no
          between-subject variability. :func:`population_from_priors` makes one from the
          model file's priors.
    regimens: one regimen or a mapping name -> regimen, as for :func:`ldpk.sweep`.
    times: output times (model time unit), increasing; the metrics are computed on them.
    n_trials, n_subjects: positive integers.
    seed: seeds ``numpy.random.default_rng``, which draws the subjects' z (one block of
        (n_trials, n_subjects) per varying parameter, in the model's order) and then the
        residual errors. The same seed and inputs give the same result.
    outputs, metrics, metric_options, chunk_size, method, ode: as for :func:`ldpk.sweep`.
    residual: a :class:`~ldpk.design.Residual` (either convention) adds, for each output, a
        variable ``<output>_observed``: the output plus normal error of variance
        ``residual.variance(f)``. False or None: none. Metrics are always of the noise-free
        output.
    progress: a progress bar on stderr.

    Returns an ``xarray.Dataset``: each output (trial, subject, regimen, time), each metric
    ``<output>_<metric>`` and ``status`` (trial, subject, regimen); coordinates ``trial``,
    ``subject``, ``regimen``, ``time`` (attrs unit), each subject's parameter values (trial,
    subject), and per trial ``typical_<P>`` and ``omega_<P>`` (trial). Units in each
    variable's attrs; the sweep's provenance plus ``seed``, ``n_trials``, ``n_subjects``,
    ``population`` (its source) and ``residual`` in the Dataset's attrs. Raises
    :class:`~ldpk.errors.DataError` before anything compiles for bad counts, seed,
    population, regimens, times, outputs or metrics.
    """
    import xarray as xr

    n_trials = _positive_int(n_trials, "n_trials")
    n_subjects = _positive_int(n_subjects, "n_subjects")
    if not isinstance(seed, numbers.Integral) or isinstance(seed, bool):
        raise DataError(f"virtual_trial(): seed must be an integer, got {seed!r}")
    if residual is True or not (residual is None or residual is False or isinstance(residual, Residual)):  # fmt: skip
        raise DataError("virtual_trial(): residual must be an ldpk.design.Residual, None or False")
    pop = _population(model, population, n_trials)

    rng = np.random.default_rng(int(seed))
    names = [p for p in model.parameter_names if p in pop.typical or p in pop.omega]
    columns: dict[str, np.ndarray] = {}
    typical_full: dict[str, np.ndarray] = {}
    for p in names:
        typ = pop.typical.get(p)
        if typ is None:
            typ = np.full(n_trials, float(model.parameter(p).value))
        typical_full[p] = typ
        values = np.repeat(typ[:, None], n_subjects, axis=1)
        if p in pop.omega:
            z = rng.standard_normal((n_trials, n_subjects))
            values = values * np.exp(pop.omega[p][:, None] * z)
        columns[p] = values.reshape(-1)
    prov = {
        "method": "virtual trial",
        "seed": int(seed),
        "distributions": {p: f"typical * exp(omega * z) ({pop.source})" for p in pop.omega},
    }
    table = ParameterTable.from_mapping(columns, provenance=prov)

    ds = sweep(
        model, table, regimens, times, outputs=outputs, metrics=metrics,
        metric_options=metric_options, chunk_size=chunk_size, progress=progress,
        method=method, ode=ode,
    )  # fmt: skip

    shape = (n_trials, n_subjects)
    data = {}
    for var in ds.data_vars:
        da = ds[var]
        arr = np.asarray(da.values).reshape(*shape, *da.shape[1:])
        data[var] = xr.DataArray(arr, dims=("trial", "subject", *da.dims[1:]), attrs=dict(da.attrs))
    coords: dict[str, Any] = {
        "trial": np.arange(n_trials),
        "subject": np.arange(n_subjects),
        "regimen": ds["regimen"].values,
        "time": ds["time"],
    }
    for p in names:
        attrs = dict(ds[p].attrs)
        coords[p] = xr.DataArray(columns[p].reshape(shape), dims=("trial", "subject"), attrs=attrs)
        coords[f"typical_{p}"] = xr.DataArray(
            typical_full[p],
            dims="trial",
            attrs={**attrs, "description": f"typical value of {p} in each trial"},  # fmt: skip
        )
        if p in pop.omega:
            coords[f"omega_{p}"] = xr.DataArray(
                pop.omega[p], dims="trial",
                attrs={"unit": "1", "description": f"between-subject SD of log {p} in each trial"},
            )  # fmt: skip
    if isinstance(residual, Residual):
        for o in [v for v in ds.data_vars if ds[v].dims == ("set", "regimen", "time")]:
            f = data[o].values
            sd = np.sqrt(np.asarray(residual.variance(f, residual.values), dtype=float))
            obs = f + sd * rng.standard_normal(f.shape)
            attrs = {**data[o].attrs, "description": f"{data[o].attrs.get('description', o)}, with residual error"}  # fmt: skip
            data[f"{o}_observed"] = xr.DataArray(obs, dims=data[o].dims, attrs=attrs)
    out = xr.Dataset(data, coords=coords)
    out.attrs.update(ds.attrs)
    out.attrs.update(
        seed=int(seed),
        n_trials=n_trials,
        n_subjects=n_subjects,
        population=pop.source,
        residual=json.dumps(
            None
            if not isinstance(residual, Residual)
            else {
                "additive": residual.additive,
                "proportional": residual.proportional,
                "convention": residual.convention,
            }  # fmt: skip
        ),
    )
    return out


# ---- target attainment --------------------------------------------------------------------
@dataclass(frozen=True)
class Attainment:
    """The probability of target attainment of a virtual trial.

    ``fraction``: an ``xarray.DataArray`` (trial, regimen), the fraction (0-1) of each trial's
    subjects that meet the criterion, among those whose simulation succeeded (``status`` 0;
    NaN for a trial with none). ``summary``: an ``xarray.Dataset`` over ``regimen`` with
    ``mean``, ``median``, ``lower`` and ``upper`` (the central ``interval`` of the per-trial
    fractions, equal tails) and ``n_trials``. ``criterion``: the criterion as text."""

    fraction: Any
    summary: Any
    criterion: str
    interval: float


def criterion_values(
    ds: Any, criterion: Any, who: str = "attainment"
) -> tuple[Any, str, float, str]:
    """The values a criterion spec compares, per (trial, subject, regimen): ``(values, op,
    threshold, text)``. ``criterion`` is a tuple ``(variable, op, threshold[, at])`` or a
    mapping with those keys (see :func:`attainment`); an output is interpolated linearly on
    the time grid at ``at``. ``who`` names the caller in messages."""
    if isinstance(criterion, Mapping):
        allowed = {"variable", "op", "threshold", "at"}
        if unknown := sorted(set(criterion) - allowed):
            raise DataError(f"{who}(): unknown criterion entries {unknown}; valid: {sorted(allowed)}")  # fmt: skip
        if missing := [k for k in ("variable", "op", "threshold") if k not in criterion]:
            raise DataError(f"{who}(): the criterion needs {missing}")
        var, op, thr, at = (criterion.get(k) for k in ("variable", "op", "threshold", "at"))
    elif isinstance(criterion, tuple | list) and len(criterion) in (3, 4):
        var, op, thr, *rest = criterion
        at = rest[0] if rest else None
    else:
        raise DataError(
            f"{who}(): criterion must be a tuple (variable, op, threshold[, at]) or a mapping "
            f"with those keys{' (or a callable)' if who == 'attainment' else ''}; got {criterion!r}"
        )
    if not isinstance(var, str) or var not in ds.data_vars or var == "status":
        valid = [v for v in ds.data_vars if v != "status"]
        raise DataError(f"{who}(): no variable {var!r} in the trial; variables (outputs and metrics): {', '.join(valid)}")  # fmt: skip
    if op not in OPERATORS:
        raise DataError(f"{who}(): unknown comparison {op!r}; valid: {', '.join(OPERATORS)}")
    try:
        thr = float(thr)
    except (TypeError, ValueError):
        raise DataError(f"{who}(): threshold must be a number, got {thr!r}") from None
    da = ds[var]
    unit = da.attrs.get("unit", "")
    text = f"{var} {op} {thr:g} {unit}".rstrip()
    if "time" in da.dims:
        if at is None:
            raise DataError(f"{who}(): {var!r} is a time course; give the time `at` (model time unit) to compare it at")  # fmt: skip
        t = np.asarray(ds["time"].values, dtype=float)
        at = float(at)
        if not t[0] <= at <= t[-1]:
            raise DataError(f"{who}(): at = {at:g} is outside the trial's times [{t[0]:g}, {t[-1]:g}]")  # fmt: skip
        i = int(np.clip(np.searchsorted(t, at), 1, len(t) - 1)) if len(t) > 1 else 0
        if len(t) == 1:
            values = da.isel(time=0)
        else:  # linear interpolation between the two grid times around `at`
            w = (at - t[i - 1]) / (t[i] - t[i - 1])
            values = da.isel(time=i - 1) * (1 - w) + da.isel(time=i) * w
        text += f" at t = {at:g} {ds['time'].attrs.get('unit', '')}".rstrip()
    else:
        if at is not None:
            raise DataError(f"{who}(): {var!r} has no time dimension; leave `at` out")
        values = da
    return values, op, thr, text


def attainment(trial: Any, criterion: Any, *, interval: float = 0.9) -> Attainment:
    """The probability of target attainment in each trial of a :func:`virtual_trial`.

    ``criterion``: what a subject must meet, either

    - a tuple ``(variable, op, threshold)`` or ``(variable, op, threshold, at)``, or a mapping
      with keys ``variable``, ``op``, ``threshold`` and optionally ``at``: ``variable`` a
      metric (e.g. ``"cp_auc_inf"``) or an output of the trial, ``op`` one of ``>=``, ``>``,
      ``<=``, ``<``, ``threshold`` in the variable's unit (its attrs), ``at`` the time (model
      time unit, within the trial's times; linear interpolation on the grid) for an output;
    - a callable taking the trial's Dataset and returning a boolean ``xarray.DataArray``
      with dims (trial, subject) and optionally regimen.

    ``interval``: the central probability (0-1) of the interval over trials.

    Subjects whose simulation failed (``status`` != 0) are left out of their trial's count.
    Returns an :class:`Attainment`. Raises :class:`~ldpk.errors.DataError` for an unknown
    variable, comparison or bad spec, before computing anything."""
    import xarray as xr

    if not isinstance(trial, xr.Dataset) or not {"trial", "subject", "regimen"} <= set(trial.dims):
        raise DataError("attainment(): give the Dataset of ldpk.design.virtual_trial (dims trial, subject, regimen)")  # fmt: skip
    if not isinstance(interval, numbers.Real) or not 0 < float(interval) < 1:
        raise DataError(f"attainment(): interval must be a probability in (0, 1), got {interval!r}")  # fmt: skip
    if callable(criterion):
        met = criterion(trial)
        text = getattr(criterion, "__name__", repr(criterion))
        if not isinstance(met, xr.DataArray) or not {"trial", "subject"} <= set(met.dims) or not set(met.dims) <= {"trial", "subject", "regimen"}:  # fmt: skip
            raise DataError("attainment(): a callable criterion must return a boolean DataArray with dims (trial, subject[, regimen])")  # fmt: skip
    else:
        values, op, thr, text = criterion_values(trial, criterion)
        met = OPERATORS[op](values, thr)
    ok = trial["status"] == 0 if "status" in trial else xr.ones_like(met, dtype=bool)
    met = (met.astype(bool) & ok).transpose("trial", "subject", ...)
    n_ok = ok.sum("subject")
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = (met.sum("subject") / n_ok.where(n_ok > 0)).broadcast_like(n_ok)
    frac = frac.transpose("trial", "regimen").astype(float)
    frac.attrs = {"unit": "1", "description": f"fraction of subjects with {text}"}
    frac.name = "attainment"
    lo, hi = (1 - float(interval)) / 2, (1 + float(interval)) / 2
    values = frac.values
    with np.errstate(invalid="ignore"):
        summary = xr.Dataset(
            {
                "mean": ("regimen", np.nanmean(values, axis=0)),
                "median": ("regimen", np.nanmedian(values, axis=0)),
                "lower": ("regimen", np.nanquantile(values, lo, axis=0)),
                "upper": ("regimen", np.nanquantile(values, hi, axis=0)),
                "n_trials": ("regimen", np.sum(np.isfinite(values), axis=0)),
            },
            coords={"regimen": frac["regimen"].values},
            attrs={"criterion": text, "interval": float(interval), "unit": "1"},
        )
    return Attainment(frac, summary, text, float(interval))


# ---- prediction intervals -------------------------------------------------------------------
def prediction_intervals(
    trial: Any,
    *,
    outputs: Sequence[str] | None = None,
    percentiles: Sequence[float] = (5, 50, 95),
    interval: float = 0.9,
) -> Any:
    """Prediction intervals of a :func:`virtual_trial`: the spread of the subjects and its
    uncertainty over trials.

    In each trial and regimen, at each time, the ``percentiles`` (0-100) of the output over
    the trial's subjects (subjects whose simulation failed, ``status`` != 0, left out; linear
    interpolation between order statistics, NumPy's default); then, over trials, the median
    and the central ``interval`` (0-1, equal tails) of each of those per-trial percentiles:
    the uncertainty of a percentile due to the uncertainty about the population and to the
    finite number of subjects per trial.

    ``outputs``: the time courses to summarise (default: every variable of the trial with
    dims (trial, subject, regimen, time)). Returns an ``xarray.Dataset`` with dims
    ``percentile``, ``regimen``, ``time`` and, per output ``o``, the variables ``o_median``,
    ``o_lower`` and ``o_upper`` (attrs: ``unit`` the output's unit, ``output``, ``statistic``);
    ``time`` keeps its unit (model time unit); the Dataset's attrs hold ``interval``,
    ``n_trials``, ``n_subjects`` and ``outputs``. A percentile over no subject, or over no
    trial, is NaN. Raises :class:`~ldpk.errors.DataError` for a Dataset that is not a virtual
    trial, an unknown output, or percentiles and interval out of range."""
    import warnings

    import xarray as xr

    who = "prediction_intervals()"
    if not isinstance(trial, xr.Dataset) or not {"trial", "subject", "regimen", "time"} <= set(trial.dims):  # fmt: skip
        raise DataError(f"{who}: give the Dataset of ldpk.design.virtual_trial (dims trial, subject, regimen, time)")  # fmt: skip
    courses = [str(v) for v in trial.data_vars if trial[v].dims == ("trial", "subject", "regimen", "time")]  # fmt: skip
    if outputs is None:
        names = courses
    else:
        if isinstance(outputs, str) or not isinstance(outputs, Sequence):
            raise DataError(f"{who}: outputs must be a list of output names, got {outputs!r}")
        names = list(outputs)
        for o in names:
            if o not in courses:
                raise DataError(f"{who}: no time course {o!r} in the trial; valid: {', '.join(courses) or '(none)'}")  # fmt: skip
        if dup := sorted({o for o in names if names.count(o) > 1}):
            raise DataError(f"{who}: {', '.join(dup)} given more than once in outputs")
    if not names:
        raise DataError(f"{who}: the trial has no time course (output) to summarise")
    try:
        q = np.asarray(percentiles, dtype=float)
    except (TypeError, ValueError):
        raise DataError(f"{who}: percentiles must be numbers in [0, 100], got {percentiles!r}") from None  # fmt: skip
    if q.ndim != 1 or q.size == 0 or not np.all(np.isfinite(q)) or np.any((q < 0) | (q > 100)):
        raise DataError(f"{who}: percentiles must be a non-empty list of numbers in [0, 100], got {percentiles!r}")  # fmt: skip
    if np.any(np.diff(q) <= 0):
        raise DataError(f"{who}: percentiles must be increasing, got {q.tolist()}")
    if isinstance(interval, bool) or not isinstance(interval, numbers.Real) or not 0 < float(interval) < 1:  # fmt: skip
        raise DataError(f"{who}: interval must be a probability in (0, 1), got {interval!r}")
    lo, hi = (1 - float(interval)) / 2, (1 + float(interval)) / 2

    if "status" in trial:
        ok = np.asarray(trial["status"].transpose("trial", "subject", "regimen").values == 0)
    else:
        ok = np.ones((trial.sizes["trial"], trial.sizes["subject"], trial.sizes["regimen"]), bool)  # fmt: skip
    data: dict[str, Any] = {}
    dims = ("percentile", "regimen", "time")
    with warnings.catch_warnings():  # an all-NaN slice (no subject, no trial) stays NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        for o in names:
            da = trial[o].transpose("trial", "subject", "regimen", "time")
            y = np.where(ok[..., None], np.asarray(da.values, dtype=float), np.nan)
            per_trial = np.nanpercentile(y, q, axis=1)  # (percentile, trial, regimen, time)
            unit = da.attrs.get("unit", "")
            for stat, values in (
                ("median", np.nanmedian(per_trial, axis=1)),
                ("lower", np.nanquantile(per_trial, lo, axis=1)),
                ("upper", np.nanquantile(per_trial, hi, axis=1)),
            ):
                what = "median" if stat == "median" else f"{stat} end of the central {float(interval):g} interval"  # fmt: skip
                attrs = {"unit": unit, "output": o, "statistic": stat, "description": f"{what} over trials of the per-trial percentile of {o} over subjects"}  # fmt: skip
                data[f"{o}_{stat}"] = xr.DataArray(values, dims=dims, attrs=attrs)
    coords = {
        "percentile": ("percentile", q, {"unit": "%"}),
        "regimen": trial["regimen"].values,
        "time": ("time", np.asarray(trial["time"].values, dtype=float), dict(trial["time"].attrs)),
    }
    attrs = {"interval": float(interval), "n_trials": int(trial.sizes["trial"]), "n_subjects": int(trial.sizes["subject"]), "outputs": list(names)}  # fmt: skip
    return xr.Dataset(data, coords=coords, attrs=attrs)


__all__ = [
    "OPERATORS",
    "prior_draws",
    "Attainment",
    "attainment",
    "population_from_priors",
    "prediction_intervals",
    "virtual_trial",
]
