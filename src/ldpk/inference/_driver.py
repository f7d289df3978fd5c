"""fit(): reads the data and config, finds the MAP, runs the chosen method and assembles the
:class:`Fit`."""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ldpk.data import Dataset, read_study
from ldpk.errors import DataError, ModelError
from ldpk.inference._datatree import _to_datatree
from ldpk.inference._fit import Fit
from ldpk.inference._hmc import _nuts
from ldpk.inference._marginal import _laplace, _marginal_laplace
from ldpk.inference._mode import (
    PRIOR_TAIL,
    _coordinate_names,
    _map,
    _prior_extremes,
    _prior_hessian,
    _weakly_informed,
)
from ldpk.inference._predict import _with_deterministic
from ldpk.inference._settings import METHODS, FitOptions, _ode_options, _options
from ldpk.inference._variational import _svi
from ldpk.model import Model
from ldpk.population import PopulationModel, check_fit_inputs, fit_spec, read_config
from ldpk.solve import ODEOptions


def fit(
    model: Model,
    data: Dataset | str | Path | Any,
    *,
    config: Mapping[str, Any] | str | Path | None = None,
    method: str = "nuts",
    options: FitOptions | None = None,
    ode: ODEOptions | None = None,
    kernel: str = "auto",
    time_unit: str | None = None,
    **option_overrides: Any,
) -> Fit:
    """Fit ``model`` to ``data`` (a :class:`~ldpk.data.Dataset`, or a NONMEM-style or tidy
    biodistribution table read by :func:`~ldpk.data.read_study` with the config's ``data:``
    options) and return a :class:`Fit`.

    ``config``: priors, between-subject variability, residual error, covariate effects and study
    effects overriding the model file (see :func:`ldpk.population.fit_spec`). ``method``: 'nuts'
    (default), 'svi', 'map' (the joint posterior mode over everything, a point estimate) or
    'laplace': the marginal (integrated) Laplace approximation, as NONMEM's LAPLACIAN and TMB.
    The subject effects are integrated out by a Laplace approximation about their conditional
    mode (a damped Newton solve per value of the population parameters), the population
    parameters (typical values, ω, residual error, covariate and study effects; unconstrained
    space) are set to the mode of that marginal posterior (BFGS) with a normal approximation
    there (Hessian by central differences of the gradient), and ``draws`` draws take subject
    effects from their conditional normal approximation. Without between-subject variability
    this is the normal approximation at the MAP. ``kernel``: 'auto' (closed form for linear
    models without cycles of transfers, matrix exponentials for other linear models and
    between the switch times of piecewise-linear ones, ODE otherwise), 'analytic', 'exact'
    or 'ode' (see :func:`ldpk.simulate`); ``ode``:
    :class:`~ldpk.ODEOptions` for the ODE kernel.
    Keyword overrides set :class:`FitOptions` fields, e.g. ``chains=2``. ``Fit.timings``:
    seconds for the joint MAP (``map_s``), the marginal mode and its Hessian (``laplace_s``),
    NUTS warm-up (``warmup_s``, compilation included) and the sampling or draws
    (``sampling_s``). NUTS keeps the warm-up's sample statistics (leapfrog steps, step
    size, divergences) in the posterior's ``warmup_sample_stats`` group.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    opts = options or FitOptions()
    cfg = read_config(config)
    where = str(config) if isinstance(config, (str, Path)) else "fit config"
    opts = _options(opts, cfg.get("fit") or {}, option_overrides, where)
    if ode is None and cfg.get("ode"):
        ode = _ode_options(cfg["ode"], where)
    if isinstance(data, Dataset):
        ds, read_opts = data, None
    else:
        read_opts = dict(cfg.get("data") or {})
        if time_unit is not None:
            read_opts["time_unit"] = time_unit
        ds = read_study(model, data, **read_opts)
    if ds.model is not model and ds.model != model:
        raise DataError("the dataset was read for a different model")
    spec = fit_spec(model, ds, cfg, where)
    check_fit_inputs(
        model, ds, spec, where
    )  # warns about held parameters; refuses obs <= 0 under proportional error
    if isinstance(opts.parameterization, Mapping) and (unknown := set(opts.parameterization) - set(spec.iiv)):  # fmt: skip
        raise ModelError(f"{where}: parameterization names {sorted(unknown)}, which have no between-subject variability in this fit; parameters with it: {', '.join(spec.iiv) or '(none)'}")  # fmt: skip
    pm = PopulationModel(model, ds, spec, kernel, ode)
    # The data enter the compiled functions as arguments, never as constants, so a fit to new
    # data on the same design finds them in the persistent compilation cache.
    data = (jnp.asarray(ds.dv), jnp.asarray(ds.censored))
    key = jax.random.PRNGKey(opts.seed)
    k_init, k_run, k_pred = jax.random.split(key, 3)
    timings: dict[str, float] = {}
    marginal = method == "laplace" and bool(spec.iiv)
    t0 = time.perf_counter()
    # The Hessian at the mode (the Laplace covariance, NUTS's starting points and metric, the
    # curvature check) by central differences of the compiled gradient: no second
    # compilation (the exact one, forward over reverse, took 10 s of the 33 s pooled fit of
    # the mitochondria study from a cold cache). Methods that only start from the mode start
    # from a non-degenerate one (see _map).
    point = method == "map" or (method == "laplace" and not marginal)
    hessian = None if marginal else "fd"
    mode = _map(pm, data, k_init, hessian=hessian, hold_extremes=not point, progress=opts.progress)
    timings["map_s"] = time.perf_counter() - t0
    if point and (extremes := _prior_extremes(pm, mode.values)):
        import warnings

        warnings.warn(f"the posterior mode puts {', '.join(extremes)} where the prior has less than {PRIOR_TAIL:g} of its mass (a residual or between-subject SD collapsed to 0?): the joint mode is degenerate and not a useful estimate; use method='laplace' (subject effects integrated out) or 'nuts'", stacklevel=2)  # fmt: skip
    judged = set(spec.priors) | {n for c in spec.covariates for n in c.site_names}
    weak: list[str] = []
    if mode.hessian is not None and mode.cov is not None:  # before sampling: said early
        names = _coordinate_names(mode.unravel, mode.flat.size)
        weak = _weakly_informed(mode.hessian, _prior_hessian(pm, mode.flat, mode.unravel), names, judged)  # fmt: skip
        _warn_weak(weak)
    values = mode.values
    t0 = time.perf_counter()
    if method == "nuts":
        samples, stats, centred, more = _nuts(pm, data, k_run, opts, mode)
        timings.update(more)
    elif method == "svi":
        samples, stats = _svi(pm, data, k_run, opts, mode)
    elif marginal:
        samples, values, more, curvature = _marginal_laplace(pm, data, k_run, opts, mode)
        if curvature is not None:
            weak = _weakly_informed(*curvature, judged)
            _warn_weak(weak)
        stats = {}
        timings.update(more)
    elif method == "laplace":  # no subject effects: the Laplace approximation at the MAP
        samples, stats = _laplace(pm, k_run, opts, mode)
    else:  # the mode with its deterministic sites (P_i, predictions), as one draw
        samples, stats = _with_deterministic(pm, {k: jnp.asarray(v)[None] for k, v in mode.values.items()}, k_run), {}  # fmt: skip
    if "sampling_s" not in timings:
        timings["sampling_s"] = time.perf_counter() - t0
    tree = _to_datatree(pm, data, samples, stats, k_pred, method)
    if method == "nuts":
        tree.attrs["ldpk_centred"] = ",".join(centred)  # parameters sampled centred
    if weak:  # read by Fit.convergence() and shown in the report
        tree.attrs["ldpk_weakly_informed"] = "\n".join(weak)
    if mode.held:  # sites held at prior medians in the start (degenerate joint mode)
        tree.attrs["ldpk_start_held"] = ",".join(mode.held)
    map_values = {k: np.asarray(v).tolist() for k, v in values.items()}
    return Fit(model, ds, spec, method, tree, map_values, opts, ode, timings, kernel, config=cfg, data_options=read_opts)  # fmt: skip


class WeaklyInformedWarning(UserWarning):
    """Typical values (or combinations of them) that the data do not inform: the posterior's
    curvature at the mode is the prior's (see ``ldpk.inference._mode._weakly_informed``)."""


def _warn_weak(sentences: list[str]) -> None:
    import warnings

    for text in sentences:
        warnings.warn(text, WeaklyInformedWarning, stacklevel=3)
