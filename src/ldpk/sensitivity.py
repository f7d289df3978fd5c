"""Sensitivity analysis: local (normalised derivatives by automatic differentiation) and
global (Sobol' variance-based indices and Morris elementary effects, with SALib).

- :func:`local`: ∂log y(t)/∂log θ for every output and parameter at one parameter set.
- :func:`sobol`: first-order and total Sobol' indices of an exposure metric (or of the
  output at each time) over parameter distributions, with bootstrap confidence intervals.
- :func:`morris`: Morris screening (μ, μ*, σ) of the same.

Figures of the results are :func:`ldpk.plots.plot_indices` and :func:`ldpk.plots.plot_local`
(plots sit below this module: it draws nothing).

The global methods sample the unit hypercube with SALib and map each column through the
parameter's inverse CDF, so any distribution of :func:`ldpk.paramsets.sample` (text such as
``"lognormal(5, 0.3)"``, a :class:`~ldpk.paramsets.Distribution`, a scipy.stats frozen
distribution, or a number for a constant) can be used. Constants are held fixed and are not
part of the analysis. SALib and xarray are imported when a function needs them.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ldpk.errors import DataError
from ldpk.exposure import METRICS
from ldpk.model import Model
from ldpk.paramsets import ParameterTable, split_distributions
from ldpk.solve import ODEOptions, prepare
from ldpk.solve._simulate import Regimen

if TYPE_CHECKING:
    import xarray as xr

__all__ = ["local", "morris", "sobol"]

#: Probabilities are clipped to [_U_CLIP, 1 - _U_CLIP] before the inverse CDFs, so that
#: unbounded distributions give finite values (as in :func:`ldpk.paramsets.sample`).
_U_CLIP = 1e-12

Evaluate = Callable[[ParameterTable], np.ndarray]


# --------------------------------------------------------------------------- validation


def _check_params(model: Model, names: Sequence[str], what: str) -> None:
    if unknown := [n for n in names if n not in model.parameter_names]:
        raise DataError(
            f"{what}: unknown parameter(s) {unknown} for model {model.name!r}; "
            f"parameters: {', '.join(model.parameter_names)}"
        )


def _check_output(model: Model, output: str | None, what: str) -> str:
    if not model.output_names:
        raise DataError(f"{what}: model {model.name!r} has no outputs")
    if output is None:
        return model.output_names[0]
    if output not in model.output_names:
        raise DataError(
            f"{what}: unknown output {output!r} of model {model.name!r}; "
            f"outputs: {', '.join(model.output_names)}"
        )
    return output


def _check_metric(metric: str | None, options: Mapping[str, Any], what: str) -> None:
    """Raise DataError for an unknown metric, an unknown or missing option, or options that
    make the metric a vector (a sensitivity index needs one number per parameter set)."""
    if metric is None:
        if options:
            raise DataError(f"{what}: metric_options {sorted(options)} given without a metric")
        return
    if metric not in METRICS:
        raise DataError(
            f"{what}: unknown metric {metric!r}; valid: {', '.join(METRICS)}, or None for the "
            "output at each time"
        )
    opts = METRICS[metric].options
    if unknown := sorted(set(options) - set(opts)):
        raise DataError(f"{what}: metric {metric!r} takes no option(s) {unknown}; its options: {', '.join(opts) or 'none'}")  # fmt: skip
    if missing := [o for o, required in opts.items() if required and o not in options]:
        raise DataError(f"{what}: metric {metric!r} needs option(s) {', '.join(missing)}")
    if "at" in options and np.size(options["at"]) != 1:
        raise DataError(f"{what}: metric {metric!r} needs one time `at` (a scalar index per parameter set), got {np.size(options['at'])}; analyse each time separately")  # fmt: skip


def _positive_int(value: Any, name: str, what: str, minimum: int = 1) -> int:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < minimum:
        raise DataError(f"{what}: {name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_sobol(n: Any, num_resamples: Any, conf_level: float, what: str) -> tuple[int, int]:
    n = _positive_int(n, "n", what)
    if n & (n - 1):
        raise DataError(
            f"{what}: n must be a power of two (e.g. {1 << (n.bit_length() - 1)} or "
            f"{1 << n.bit_length()}), got {n}: the balance properties of the Sobol' sequence, "
            "on which the convergence of the estimates rests, hold only for n = 2**k (SALib "
            "warns otherwise)"
        )
    return n, _check_bootstrap(num_resamples, conf_level, what)


def _check_morris(
    r: Any, num_levels: Any, num_resamples: Any, conf_level: float, what: str
) -> tuple[int, int, int]:
    r = _positive_int(r, "r (the number of trajectories)", what, 2)
    p = _positive_int(num_levels, "num_levels", what, 2)
    if p % 2:
        raise DataError(f"{what}: num_levels must be even (each step of p/(2(p-1)) then joins two grid levels), got {p}")  # fmt: skip
    return r, p, _check_bootstrap(num_resamples, conf_level, what)


def _check_bootstrap(num_resamples: Any, conf_level: float, what: str) -> int:
    num_resamples = _positive_int(num_resamples, "num_resamples", what, 2)
    if not 0 < conf_level < 1:
        raise DataError(f"{what}: conf_level must lie in (0, 1), got {conf_level!r}")
    return num_resamples


def _split(
    distributions: Mapping[str, Any], what: str
) -> tuple[dict[str, Any], dict[str, float], dict[str, str]]:
    """(varying, fixed, texts) as :func:`~ldpk.paramsets.split_distributions` gives them; at
    least one parameter must vary."""
    varying, fixed, texts = split_distributions(distributions, what)
    if not varying:
        raise DataError(
            f"{what}: at least one parameter must vary; all of {list(distributions)} are constants"
        )
    return varying, fixed, texts


def _table(
    u: np.ndarray, varying: Mapping[str, Any], fixed: Mapping[str, float], method: str, seed: int
) -> ParameterTable:
    """Parameter sets from points ``u`` in the unit hypercube (one column per varying
    parameter) mapped through the inverse CDFs, plus the fixed values."""
    u = np.clip(u, _U_CLIP, 1.0 - _U_CLIP)
    columns: dict[str, np.ndarray] = {}
    for j, (name, d) in enumerate(varying.items()):
        x = np.asarray(d.ppf(u[:, j]), dtype=np.float64)
        if x.shape != (u.shape[0],):
            raise DataError(f"parameter {name}: its distribution gave values of shape {x.shape}; give a distribution of one scalar parameter")  # fmt: skip
        columns[name] = x
    for name, v in fixed.items():
        columns[name] = np.full(u.shape[0], v)
    return ParameterTable.from_mapping(columns, {"method": method, "seed": seed})


def _problem(names: Sequence[str]) -> dict[str, Any]:
    return {"num_vars": len(names), "names": list(names), "bounds": [[0.0, 1.0]] * len(names)}


def _columns(y: np.ndarray, n_sets: int) -> np.ndarray:
    """``y`` as (n_sets, K): K = 1 for a scalar metric, T for each time point. DataError if a
    value is not finite."""
    y = np.asarray(y, dtype=np.float64)
    if y.shape[:1] != (n_sets,) or y.ndim > 2:
        raise DataError(f"evaluation gave shape {y.shape}; expected ({n_sets},) or ({n_sets}, T)")  # fmt: skip
    bad = ~np.isfinite(y.reshape(n_sets, -1)).all(axis=1)
    if bad.any():
        raise DataError(f"the metric is not finite for {int(bad.sum())} of {n_sets} parameter set(s) (first: set {int(np.argmax(bad))}); e.g. auc_inf and lambda_z are NaN where the terminal phase is not declining; choose times or a metric defined for every set")  # fmt: skip
    return y.reshape(n_sets, -1)


def _dataset(results: list[dict[str, np.ndarray]], names: Sequence[str], scalar: bool) -> xr.Dataset:  # fmt: skip
    """Dataset of per-column SALib results (each key: (D,) or (D, D)), indexed by parameter
    (and time, unless ``scalar``)."""
    import xarray as xr

    data = {}
    for key in results[0]:
        stacked = np.stack([np.asarray(r[key], dtype=np.float64) for r in results], axis=-1)
        dims: tuple[str, ...] = ("parameter",) if stacked.ndim == 2 else ("parameter", "parameter_2")  # fmt: skip
        if scalar:
            data[key] = (dims, stacked[..., 0])
        else:
            data[key] = ((*dims, "time"), stacked)
    coords = {"parameter": list(names)}
    if any(v[0][1:2] == ("parameter_2",) for v in data.values()):
        coords["parameter_2"] = list(names)
    return xr.Dataset(data, coords=coords)


# --------------------------------------------------------------------------- evaluation


def _evaluate(
    model: Model,
    table: ParameterTable,
    regimen: Regimen,
    times: Sequence[float] | np.ndarray,
    output: str,
    metric: str | None,
    metric_options: Mapping[str, Any] | None,
    chunk_size: int | None,
    scheduler: Any,
    progress: bool,
    method: str = "auto",
    ode: ODEOptions | None = None,
) -> np.ndarray:
    """``output``'s ``metric`` for each parameter set of ``table`` (parameters not in it
    take the model's values): shape (n_sets,), or (n_sets, T) with ``metric`` None (the
    output at each time). Every model evaluation of the global methods goes through here."""
    from ldpk.sweep import sweep

    ds = sweep(
        model, table, {"regimen": list(regimen)}, times, outputs=[output],
        metrics=[] if metric is None else [metric], metric_options=metric_options,
        chunk_size=chunk_size, scheduler=scheduler, progress=progress,
        time_courses=metric is None, method=method, ode=ode,
    )  # fmt: skip
    var = output if metric is None else f"{output}_{metric}"
    return np.asarray(ds[var].isel(regimen=0), dtype=np.float64)


# --------------------------------------------------------------------------- local


def local(
    model: Model,
    params: Mapping[str, Any] | None = None,
    regimen: Regimen = (),
    times: Sequence[float] | np.ndarray | None = None,
    *,
    outputs: Sequence[str] | None = None,
    parameters: Sequence[str] | None = None,
    method: str = "auto",
    ode: ODEOptions | None = None,
) -> xr.DataArray:
    """Normalised local sensitivities S(t) = ∂log y(t)/∂log θ = (θ / y(t))·∂y(t)/∂θ
    (dimensionless: the % change of y per % change of θ) of every output in ``outputs``
    (default: all) to every parameter in ``parameters`` (default: all), at one parameter
    set: the model's values overridden by ``params`` (scalars, model units).

    Derivatives come from automatic differentiation through the kernel ``method`` ('auto',
    'analytic', 'exact' or 'ode', as for :func:`ldpk.simulate`; ``jax.jacrev``, or
    ``jax.jacfwd`` with ``ode=ODEOptions(gradient='forward')``), not finite differences. Where
    y(t) == 0 (e.g. before a dose) S is NaN: the relative change is undefined. Where θ == 0,
    S is 0. ``regimen`` and ``times`` (model time unit) are as for :func:`ldpk.simulate`;
    one subject only.

    Returns an ``xarray.DataArray`` with dims (parameter, output, time), units "1".
    """
    import jax
    import jax.numpy as jnp
    import xarray as xr

    what = "local()"
    params = dict(params or {})
    _check_params(model, list(params), what)
    names = list(model.parameter_names if parameters is None else parameters)
    if not names:
        raise DataError(f"{what}: give at least one parameter")
    _check_params(model, names, what)
    outs = list(model.output_names if outputs is None else outputs)
    for o in outs:
        _check_output(model, o, what)
    if not outs:
        raise DataError(f"{what}: give at least one output")
    for k, v in params.items():
        if np.ndim(v) != 0:
            raise DataError(f"{what}: parameter {k} must be a scalar (one parameter set), got shape {np.shape(v)}")  # fmt: skip
    sim = prepare(model, regimen, times, method=method, ode=ode, outputs=outs)
    if sim.n_subjects is not None:
        raise DataError(f"{what}: give the regimen of one subject, not an event table of {sim.n_subjects}")  # fmt: skip
    values = {p.name: params.get(p.name, p.value) for p in model.parameters}
    theta = jnp.asarray([float(values[n]) for n in names])

    def f(x: Any) -> tuple[Any, Any]:
        run = sim.run({**values, **dict(zip(names, x, strict=True))})
        y = jnp.stack([run.output(o) for o in outs])  # (outputs, T)
        return y, y

    # Reverse mode except where only forward mode works: the matrix exponential of the
    # exact kernel has a custom VJP (no JVP); the ODE kernel's 'forward' gradient the reverse.
    forward = sim.kernel == "ode" and (ode or ODEOptions()).gradient == "forward"
    jac, y = (jax.jacfwd if forward else jax.jacrev)(f, has_aux=True)(theta)  # (O, T, P)
    jac, y, th = np.asarray(jac), np.asarray(y), np.asarray(theta)
    with np.errstate(divide="ignore", invalid="ignore"):
        s = np.where(y[..., None] != 0, th * jac / y[..., None], np.nan)
    s = np.where((th == 0) & (y[..., None] != 0), 0.0, s)
    return xr.DataArray(
        np.moveaxis(s, -1, 0),
        dims=("parameter", "output", "time"),
        coords={"parameter": names, "output": outs, "time": np.asarray(sim.times)},
        name="sensitivity",
        attrs={
            "units": "1",
            "model": model.name,
            "kernel": sim.kernel,
            "time_unit": model.time_unit,
            "description": "normalised local sensitivity d log y(t) / d log theta = "
            "(theta / y) dy/dtheta (NaN where y = 0)",
            "parameter_values": "; ".join(f"{n}={float(values[n])!r}" for n in names),
        },
    )


# --------------------------------------------------------------------------- Sobol'


def _sobol(
    distributions: Mapping[str, Any],
    evaluate: Evaluate,
    n: int,
    *,
    second_order: bool = False,
    seed: int = 0,
    num_resamples: int = 1000,
    conf_level: float = 0.95,
    what: str = "sobol()",
) -> xr.Dataset:
    """Sampling → evaluation → analysis: Saltelli's scheme on the unit hypercube
    (``SALib.sample.sobol``), mapped through the inverse CDFs, ``evaluate(table)`` → Y of
    shape (sets,) or (sets, K), and ``SALib.analyze.sobol`` per column. Columns whose Y is
    constant get NaN indices (no variance to apportion). Returns a Dataset indexed by
    parameter (and ``time`` for K columns, without coordinate values)."""
    from SALib.analyze import sobol as analyze
    from SALib.sample import sobol as sampler

    varying, fixed, texts = _split(distributions, what)
    n, num_resamples = _check_sobol(n, num_resamples, conf_level, what)
    names = list(varying)
    problem = _problem(names)
    u = sampler.sample(problem, n, calc_second_order=second_order, seed=seed)
    table = _table(u, varying, fixed, "sobol", seed)
    raw = np.asarray(evaluate(table))
    y = _columns(raw, table.n)
    keys = ("S1", "S1_conf", "ST", "ST_conf") + (("S2", "S2_conf") if second_order else ())
    results = []
    for k in range(y.shape[1]):
        col = y[:, k]
        if np.ptp(col) == 0:  # SALib would divide 0 by 0 (and warn)
            shape = {key: (len(names), len(names)) if key.startswith("S2") else (len(names),) for key in keys}  # fmt: skip
            results.append({key: np.full(shape[key], np.nan) for key in keys})
            continue
        # A Generator (not the int): SALib's analyze ignores a seed of 0 (`if seed:`).
        si = analyze.analyze(
            problem, col, calc_second_order=second_order, num_resamples=num_resamples,
            conf_level=conf_level, seed=np.random.default_rng(seed),
        )  # fmt: skip
        results.append({key: np.asarray(si[key]) for key in keys})
    ds = _dataset(results, names, scalar=raw.ndim == 1)
    for s in ("S1", "ST"):
        ds[f"{s}_lower"] = ds[s] - ds[f"{s}_conf"]
        ds[f"{s}_upper"] = ds[s] + ds[f"{s}_conf"]
    ds.attrs.update(
        method="sobol", n=n, n_evaluations=table.n, seed=seed, num_resamples=num_resamples,
        conf_level=conf_level, second_order=int(second_order), **_inputs(texts, varying, fixed),
    )  # fmt: skip
    return ds


def _inputs(texts: Mapping[str, str], varying: Mapping[str, Any], fixed: Mapping[str, float]) -> dict[str, str]:  # fmt: skip
    """The Dataset attributes that record the inputs: the varying distributions and the
    parameters held fixed."""
    return {
        "distributions": "; ".join(f"{k}={v}" for k, v in texts.items() if k in varying),
        "fixed": "; ".join(f"{k}={v!r}" for k, v in fixed.items()),
    }


# --------------------------------------------------------------------------- Morris


def _morris(
    distributions: Mapping[str, Any],
    evaluate: Evaluate,
    r: int,
    *,
    num_levels: int = 4,
    seed: int = 0,
    num_resamples: int = 1000,
    conf_level: float = 0.95,
    what: str = "morris()",
) -> xr.Dataset:
    """Sampling → evaluation → analysis for Morris screening: ``r`` trajectories on the
    ``num_levels`` grid of the unit hypercube (``SALib.sample.morris``), each column mapped
    through its parameter's inverse CDF (probabilities clipped to [1e-12, 1 - 1e-12]);
    ``evaluate(table)`` → Y of shape (sets,) or (sets, K); ``SALib.analyze.morris`` per
    column. Elementary effects are Δy per unit of cumulative probability."""
    from SALib.analyze import morris as analyze
    from SALib.sample import morris as sampler

    varying, fixed, texts = _split(distributions, what)
    r, p, num_resamples = _check_morris(r, num_levels, num_resamples, conf_level, what)
    names = list(varying)
    problem = _problem(names)
    grid = sampler.sample(problem, r, num_levels=p, seed=seed)
    table = _table(grid, varying, fixed, "morris", seed)
    raw = np.asarray(evaluate(table))
    y = _columns(raw, table.n)
    results = []
    for k in range(y.shape[1]):
        si = analyze.analyze(
            problem, grid, y[:, k], num_resamples=num_resamples, conf_level=conf_level,
            num_levels=p, seed=np.random.default_rng(seed),
        )  # fmt: skip
        results.append(
            {
                key: np.asarray(si[key], dtype=np.float64)
                for key in ("mu", "mu_star", "sigma", "mu_star_conf")
            }  # fmt: skip
        )
    ds = _dataset(results, names, scalar=raw.ndim == 1)
    ds.attrs.update(
        method="morris", r=r, num_levels=p, n_evaluations=table.n, seed=seed,
        num_resamples=num_resamples, conf_level=conf_level, **_inputs(texts, varying, fixed),
    )  # fmt: skip
    return ds


# --------------------------------------------------------------------------- public global


def _setup(
    model: Model,
    distributions: Mapping[str, Any],
    regimen: Regimen,
    times: Sequence[float] | np.ndarray | None,
    output: str | None,
    metric: str | None,
    metric_options: Mapping[str, Any] | None,
    method: str,
    ode: ODEOptions | None,
    what: str,
) -> tuple[str, np.ndarray, dict[str, Any]]:
    """Check the arguments (before anything is sampled or compiled) and return the output,
    the output times and the Dataset attributes."""
    if not isinstance(distributions, Mapping) or not distributions:
        raise DataError(f"{what}: give distributions, e.g. {{'CL': 'lognormal(5, 0.3)'}}")
    _check_params(model, list(distributions), what)
    output = _check_output(model, output, what)
    _check_metric(metric, dict(metric_options or {}), what)
    _split(distributions, what)
    sim = prepare(model, regimen, times, method=method, ode=ode, outputs=[output])
    if sim.n_subjects is not None:
        raise DataError(f"{what}: give the regimen of one subject, not an event table of {sim.n_subjects}")  # fmt: skip
    unit = model.outputs[model.output_names.index(output)].unit
    if metric is not None:
        unit = METRICS[metric].unit(unit, model.time_unit, model.amount_unit or unit)
    attrs = {
        "model": model.name, "output": output, "metric": metric or "", "metric_unit": unit,
        "time_unit": model.time_unit, "kernel": sim.kernel,
    }  # fmt: skip
    return output, np.asarray(sim.times), attrs


def _finish(ds: xr.Dataset, times: np.ndarray, attrs: dict[str, Any], description: str) -> xr.Dataset:  # fmt: skip
    if "time" in ds.dims:
        ds = ds.assign_coords(time=times)
    ds.attrs.update(attrs, description=description)
    return ds


def sobol(
    model: Model,
    distributions: Mapping[str, Any],
    regimen: Regimen,
    times: Sequence[float] | np.ndarray | None,
    *,
    metric: str | None = "auc",
    output: str | None = None,
    n: int = 1024,
    second_order: bool = False,
    seed: int = 0,
    num_resamples: int = 1000,
    conf_level: float = 0.95,
    metric_options: Mapping[str, Any] | None = None,
    chunk_size: int | None = None,
    scheduler: Any = None,
    progress: bool = True,
    method: str = "auto",
    ode: ODEOptions | None = None,
) -> xr.Dataset:
    """Sobol' variance-based sensitivity indices of ``output``'s exposure ``metric`` (a
    name of :data:`ldpk.exposure.METRICS`, options in ``metric_options``; None: the output
    at each time) to the parameters varied by ``distributions``.

    ``distributions``: parameter name -> distribution (text such as ``"lognormal(5, 0.3)"``,
    values in model units; a :class:`~ldpk.paramsets.Distribution`; a scipy.stats frozen
    distribution; or a number, a constant held fixed and left out of the analysis).
    Parameters not named take the model's values. ``output`` defaults to the model's first.

    Saltelli's scheme (``SALib.sample.sobol``) draws ``n`` base points, ``n`` a power of
    two, in the unit hypercube; each column is mapped through its parameter's inverse CDF
    (so inputs need not be uniform), and ``SALib.analyze.sobol`` estimates the indices with
    ``num_resamples`` bootstrap resamples (``seed`` fixes both). The model is evaluated for
    n·(D + 2) parameter sets, D the number of varying parameters (n·(2D + 2) with
    ``second_order``).

    Returns an ``xarray.Dataset`` indexed by ``parameter`` (and ``time`` when ``metric`` is
    None) with ``S1`` (first order) and ``ST`` (total), dimensionless fractions of the
    variance, their confidence half-widths ``S1_conf``/``ST_conf`` at ``conf_level`` (as
    SALib gives them) and the bounds ``S1_lower``/``S1_upper``/``ST_lower``/``ST_upper``;
    with ``second_order`` also ``S2``/``S2_conf`` (parameter, parameter_2; the pair (i, j)
    at i < j, NaN elsewhere). Indices are
    NaN at a time where the output does not vary. ``scheduler``, ``chunk_size``,
    ``progress``, ``method`` and ``ode`` are passed to the evaluation (see
    :func:`ldpk.simulate`).
    """
    what = "sobol()"
    _check_sobol(n, num_resamples, conf_level, what)
    output, t, attrs = _setup(model, distributions, regimen, times, output, metric, metric_options, method, ode, what)  # fmt: skip

    def evaluate(table: ParameterTable) -> np.ndarray:
        return _evaluate(model, table, regimen, times, output, metric, metric_options, chunk_size, scheduler, progress, method, ode)  # fmt: skip

    ds = _sobol(
        distributions, evaluate, n, second_order=second_order, seed=seed,
        num_resamples=num_resamples, conf_level=conf_level, what=what,
    )  # fmt: skip
    return _finish(ds, t, attrs, "Sobol' indices (S1 first order, ST total; dimensionless)")


def morris(
    model: Model,
    distributions: Mapping[str, Any],
    regimen: Regimen,
    times: Sequence[float] | np.ndarray | None,
    *,
    metric: str | None = "auc",
    output: str | None = None,
    r: int = 20,
    num_levels: int = 4,
    seed: int = 0,
    num_resamples: int = 1000,
    conf_level: float = 0.95,
    metric_options: Mapping[str, Any] | None = None,
    chunk_size: int | None = None,
    scheduler: Any = None,
    progress: bool = True,
    method: str = "auto",
    ode: ODEOptions | None = None,
) -> xr.Dataset:
    """Morris elementary-effects screening of ``output``'s ``metric`` (arguments as for
    :func:`sobol`): ``r`` trajectories on a ``num_levels`` grid (``SALib.sample.morris``),
    r·(D + 1) model evaluations. The grid lives in the unit hypercube and each column is
    mapped through its parameter's inverse CDF, so level ℓ is the quantile ℓ/(num_levels - 1)
    and a step moves one parameter by num_levels/(2(num_levels - 1)) of its probability
    range (2/3 for 4 levels). An elementary effect is the change of the metric divided by
    that step. The grid includes the ends of the range: probabilities 0 and 1 are clipped
    to 1e-12 and 1 - 1e-12, about ±7 SD for a normal or lognormal input, so prefer
    bounded distributions (uniform, loguniform, truncnormal, triangular) for screening.

    Returns an ``xarray.Dataset`` indexed by ``parameter`` (and ``time`` when ``metric`` is
    None) with ``mu`` (mean effect), ``mu_star`` (mean absolute effect: the importance),
    ``sigma`` (their SD: nonlinearity and interactions) and ``mu_star_conf`` (bootstrap
    half-width at ``conf_level``), all in the unit of the metric (attribute
    ``metric_unit``)."""
    what = "morris()"
    _check_morris(r, num_levels, num_resamples, conf_level, what)
    output, t, attrs = _setup(model, distributions, regimen, times, output, metric, metric_options, method, ode, what)  # fmt: skip

    def evaluate(table: ParameterTable) -> np.ndarray:
        return _evaluate(model, table, regimen, times, output, metric, metric_options, chunk_size, scheduler, progress, method, ode)  # fmt: skip

    ds = _morris(
        distributions, evaluate, r, num_levels=num_levels, seed=seed,
        num_resamples=num_resamples, conf_level=conf_level, what=what,
    )  # fmt: skip
    return _finish(ds, t, attrs, "Morris elementary effects (mu, mu_star, sigma; unit of the metric)")  # fmt: skip
