"""fit(): NUTS (default), SVI, MAP or the marginal Laplace approximation → :class:`Fit`, whose
posterior is an ArviZ 1.x DataTree.

Laplace is the marginal (integrated) Laplace approximation of NONMEM's LAPLACIAN and TMB: the
subject effects are integrated out by a Laplace approximation about their conditional mode
for each value of the population parameters, and the population parameters get a normal
approximation at the mode of that marginal posterior. (A normal approximation at the joint
mode over population parameters and non-centred subject effects inflates the between-subject
SDs: the effects' N(0, 1) prior pulls them to 0 and ω grows to compensate.)

NUTS starts from the MAP: each chain from its own draw of the Laplace approximation at the mode
(or from the mode with a small jitter where the Hessian is not positive definite), which keeps
chains out of poor local modes such as the ka/k flip-flop of oral absorption models.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import numpyro  # noqa: F401  (the whole package before its submodules: see below)
import scipy.optimize
from jax.extend.core import jaxpr_as_fun
from jax.flatten_util import ravel_pytree
from numpyro.distributions.transforms import biject_to
from numpyro.infer import NUTS, SVI, Predictive, Trace_ELBO, autoguide, log_likelihood
from numpyro.infer.hmc import hmc
from numpyro.infer.initialization import init_to_median, init_to_value
from numpyro.infer.util import constrain_fn, potential_energy
from numpyro.optim import Adam

from ldpk._compiled import jit
from ldpk.data import Dataset, read_study
from ldpk.errors import DataError, ModelError
from ldpk.exposure import compute as compute_exposure
from ldpk.model import Model
from ldpk.paramsets import ParameterTable
from ldpk.population import FitSpec, PopulationModel, fit_spec, prior_distribution, read_config
from ldpk.solve import ODEOptions, choose_kernel

# ArviZ loads numpyro lazily; a numpyro submodule imported first through that lazy module left
# numpyro.distributions without its `distribution` attribute, so numpyro.factor failed in
# every fit after `import arviz`. `import numpyro` above loads the whole package first.

METHODS = ("nuts", "svi", "map", "laplace")
GUIDES = ("normal", "fullrank", "lowrank")
PARAMETERIZATIONS = ("auto", "noncentred", "centred")
#: parameterization='auto' samples P centred when its standardised subject effects have a
#: mean conditional posterior variance at the MAP (1 / Hessian diagonal) below this (prior
#: variance 1): there each subject's data say more about its P_i than the population does.
AUTO_CENTRE_VARIANCE = 0.5
#: A latent site (other than subject or study effects) whose value at the joint mode lies in
#: a tail of its prior holding less than this mass marks the mode as degenerate (typically a
#: residual SD collapsed to 0 because each subject's effect fits its one observation of an
#: output exactly: the joint density is unbounded there).
PRIOR_TAIL = 1e-6


@dataclass(frozen=True)
class FitOptions:
    """Sampler settings. ``chains``, ``warmup`` and ``samples`` per chain for NUTS;
    ``target_accept``; ``parameterization`` of the between-subject effects for NUTS:
    'noncentred' (sampled as standardised z, P_i = θ exp(ω z_i), best when each subject's
    data say little about its own parameters, as in destructive sampling), 'centred'
    (sampled as log P_i, best when each subject's data pin its parameters down, as in rich
    longitudinal designs, where non-centred sampling needs tiny steps) or 'auto' (default:
    per parameter P, centred where the subject effects of P have a mean conditional
    posterior variance at the MAP below :data:`AUTO_CENTRE_VARIANCE`, else
    non-centred; the choice is in the posterior's ``ldpk_centred`` attribute), or a mapping
    from parameter names to one of these (the others 'auto'; ``{ALPHA: noncentred}`` in a
    fit config's ``fit:`` section); the posterior is the same, reported as z (``eta_P``)
    either way. ``dense_mass``: adapt a
    dense mass matrix (correlated parameters) instead of a diagonal one;
    ``max_tree_depth``: NUTS trees of at most 2^depth - 1 leapfrog steps per iteration, and
    ``warmup_max_tree_depth`` the same during warm-up only (None: ``max_tree_depth``; a
    lower cap bounds the cost of the first warm-up iterations, where the mass matrix is not
    yet adapted); ``svi_steps`` and ``guide`` ('normal' mean-field, 'fullrank', 'lowrank')
    for SVI; ``draws`` from SVI guides and Laplace approximations (for the marginal Laplace
    approximation: population parameters from the normal approximation of their marginal
    posterior, each with subject effects from the normal approximation of their conditional
    posterior); ``seed`` (a fixed seed gives identical results); ``progress`` bars."""

    chains: int = 4
    warmup: int = 1000
    samples: int = 1000
    target_accept: float = 0.8
    max_tree_depth: int = 10
    warmup_max_tree_depth: int | None = None
    parameterization: str | Mapping[str, str] = "auto"
    dense_mass: bool = False
    svi_steps: int = 5000
    guide: str = "normal"
    learning_rate: float = 0.01
    draws: int = 1000
    seed: int = 0
    progress: bool = True
    init_from_map: bool = True


@dataclass
class Fit:
    """A fitted model. ``posterior``: an ArviZ DataTree with groups posterior,
    posterior_predictive, log_likelihood, observed_data, sample_stats (NUTS) and constant_data.
    ``method`` says how it was obtained; ``map_values`` holds the mode: the joint MAP (methods
    'map', 'nuts', 'svi'), or for 'laplace' the marginal mode of the population parameters
    with the subject effects at their conditional mode given it."""

    model: Model
    dataset: Dataset
    spec: FitSpec
    method: str
    posterior: Any
    map_values: dict[str, float] = field(default_factory=dict)
    options: FitOptions = field(default_factory=FitOptions)
    ode: ODEOptions | None = None
    timings: dict[str, float] = field(default_factory=dict)
    kernel: str = "auto"

    @property
    def population(self) -> PopulationModel:
        return PopulationModel(self.model, self.dataset, self.spec, self.kernel, self.ode)

    def draws(self, name: str | int) -> Any:
        """Posterior draws of the variable ``name``, chains and draws flattened to the first
        axis; or, given a number ``n``, a :class:`~ldpk.ParameterTable` of ``n`` population
        draws for :func:`ldpk.sweep` (see :meth:`parameter_table`)."""
        if isinstance(name, int | np.integer) and not isinstance(name, bool):
            return self.parameter_table(int(name))
        v = self.posterior["posterior"][name].values
        return v.reshape(-1, *v.shape[2:])

    def parameter_table(
        self, n: int = 1000, *, covariates: Mapping[str, float] | None = None
    ) -> ParameterTable:
        """``n`` population-level parameter sets from the posterior (evenly spaced over the
        chains' draws; all of them if there are fewer): every model parameter at its typical
        value given each draw, covariate effects at ``covariates`` (default their reference
        values), no between-subject variability. Values in model units. The table feeds
        :func:`ldpk.sweep`, which knows nothing of fits."""
        if not isinstance(n, int | np.integer) or isinstance(n, bool) or n <= 0:
            raise DataError(f"parameter_table(): n must be a positive number of draws, got {n!r}")  # fmt: skip
        d = self._population_draws(int(n))
        k = len(next(iter(d.values())))
        z = {p: jnp.zeros(k) for p in self.spec.iiv}
        covs = {c: np.full(k, float(v)) for c, v in (covariates or {}).items()}
        params = self.population.individual_parameters({c: jnp.asarray(v) for c, v in d.items()}, z, None, covs, k)  # fmt: skip
        values = {p: np.broadcast_to(np.asarray(params[p], dtype=float), (k,)) for p in self.model.parameter_names if p in params}  # fmt: skip
        prov = {"method": "posterior", "seed": None, "fit": self.method, "draws": k}
        return ParameterTable.from_mapping(values, provenance=prov)

    def summary(self, var_names: list[str] | None = None, ci_prob: float = 0.9) -> Any:
        """Posterior summary table (pandas): mean, sd, credible interval, MCSE, ESS, R-hat of
        the population parameters (typical values, ω, residual error, covariate effects)."""
        import arviz as az

        names = var_names or self.parameter_names()
        kind = "all" if self.method == "nuts" else "stats"
        return az.summary(self.posterior, var_names=names, ci_prob=ci_prob, kind=kind)

    def parameter_names(self) -> list[str]:
        """Names of the population-level variables in the posterior."""
        post = self.posterior["posterior"]
        return [n for n in post.data_vars if "subject" not in post[n].dims and "study" not in post[n].dims and n != "pred" and not n.startswith("eta_")]  # fmt: skip

    def save(self, path: str | Path) -> Path:
        """Write the posterior DataTree to netCDF (atomically; refuses to overwrite inputs)."""
        from ldpk._io import atomic_path

        path = Path(path)
        with atomic_path(path) as tmp:
            self.posterior.to_netcdf(tmp, engine="h5netcdf")
        return path

    def convergence(self) -> list[str]:
        """Convergence problems as sentences with what to try (empty when none)."""
        from ldpk.diagnostics import convergence_warnings

        return convergence_warnings(self)

    def _population_draws(self, n_draws: int) -> dict[str, np.ndarray]:
        """Evenly spaced posterior draws (flattened over chains) of every latent variable."""
        post = self.posterior["posterior"]
        total = post.sizes["chain"] * post.sizes["draw"]
        idx = np.unique(np.linspace(0, total - 1, min(n_draws, total)).round().astype(int))
        return {k: self.draws(k)[idx] for k in post.data_vars if k != "pred"}

    def predict(
        self,
        regimen: Sequence[Any] | None = None,
        times: Sequence[float] | np.ndarray | None = None,
        *,
        subjects: str = "typical",
        covariates: Mapping[str, float] | None = None,
        n_draws: int = 500,
        seed: int = 0,
        decay_corrected: bool | None = None,
    ) -> Any:
        """Posterior predictions of every output at ``times`` (model time unit), as an xarray
        Dataset (one variable per output, in the output's unit; dims draw, [subject,] time).

        ``subjects``: 'typical' (typical values, no between-subject variability: the
        uncertainty in the population curve), 'new' (a new individual: between-subject
        variability drawn afresh per draw, the prediction interval for a future subject; no
        study effect) or 'observed' (the fitted subjects with their own estimated parameters
        and, unless ``regimen`` is given, their own doses). ``regimen``: doses as for
        :func:`ldpk.simulate`. ``covariates``: covariate values of the typical or new
        individual (covariate effects default to their reference value). Residual error is not
        added."""
        import xarray as xr

        from ldpk.dosing import event_table, regimen_records, stack_tables
        from ldpk.solve import simulate

        if subjects not in ("typical", "new", "observed"):
            raise ValueError(f"subjects must be 'typical', 'new' or 'observed', got {subjects!r}")
        if times is None:
            raise DataError("predict(): give `times` (model time unit)")
        times = np.asarray(times, dtype=float)
        d = self._population_draws(n_draws)
        n = len(next(iter(d.values())))
        pm = self.population
        corrected = self.dataset.decay_corrected if decay_corrected is None else decay_corrected
        names = self.model.output_names
        if subjects == "observed":
            z = {p: d[f"eta_{p}"] for p in self.spec.iiv}  # (n, S)
            sz = {p: d[f"eta_study_{p}"] for p in self.spec.study_iiv} or None
            params = jax.vmap(lambda pop, z, sz: pm.individual_parameters(pop, z, sz))(
                {k: jnp.asarray(v) for k, v in d.items()}, z, sz
            )  # (n, S) each
            params = {k: jnp.moveaxis(v, 0, 1) for k, v in params.items()}  # (S, n)
            if regimen is None:
                tables = [event_table(_with_times(self.model, r, times)) for r in self.dataset.records]  # fmt: skip
            else:
                rec = regimen_records(self.model, list(regimen), times)
                tables = [event_table(rec)] * self.dataset.n_subjects
            sim = simulate(self.model, params, stack_tables(tables), decay_corrected=corrected)
            out = np.asarray(sim.outputs)  # (S, n, T, m)
            dims = ("subject", "draw", "time")
            coords = {"subject": list(map(str, self.dataset.subjects))}
        else:
            if regimen is None:
                raise DataError("predict(): give a `regimen` for typical or new subjects")
            key = jax.random.PRNGKey(seed)
            z = {p: (jax.random.normal(jax.random.fold_in(key, i), (n,)) if subjects == "new" else jnp.zeros(n)) for i, p in enumerate(self.spec.iiv)}  # fmt: skip
            covs = {k: np.full(n, float(v)) for k, v in (covariates or {}).items()}
            params = pm.individual_parameters({k: jnp.asarray(v) for k, v in d.items()}, z, None, covs, n)  # fmt: skip
            sim = simulate(self.model, params, list(regimen), times, decay_corrected=corrected)
            out = np.asarray(sim.outputs)  # (n, T, m)
            dims = ("draw", "time")
            coords = {}
        data = {
            o.name: xr.DataArray(
                out[..., j], dims=dims, attrs={"unit": o.unit, "description": o.description}
            )  # fmt: skip
            for j, o in enumerate(self.model.outputs)
        }
        ds = xr.Dataset(data, coords={**coords, "time": times, "draw": np.arange(n)})
        ds.attrs.update(time_unit=self.model.time_unit, subjects=subjects, outputs=",".join(names))
        return ds

    def exposure(
        self,
        regimen: Sequence[Any],
        times: Sequence[float] | np.ndarray,
        *,
        outputs: Sequence[str] | None = None,
        subjects: str = "typical",
        ci_prob: float = 0.9,
        **predict_options: Any,
    ) -> Any:
        """Exposure per output with credible intervals: AUC (trapezoidal, linear up / log down,
        from the first to the last time), Cmax, Tmax and MRT = AUMC/AUC over the same window
        (truncated at the last time: use a grid long enough for the terminal phase).
        ``times`` should be a dense grid (model time unit). Returns a pandas DataFrame with one
        row per output and metric: median, lower and upper bound of the ``ci_prob`` interval,
        and the unit."""
        import pandas as pd

        pred = self.predict(regimen, times, subjects=subjects, **predict_options)
        t = np.asarray(pred["time"])
        lo, hi = (1 - ci_prob) / 2, (1 + ci_prob) / 2
        rows = []
        labels = {"auc": "AUC", "cmax": "Cmax", "tmax": "Tmax", "mrt": "MRT"}
        for name in outputs or self.model.output_names:
            if name not in pred:
                raise DataError(f"exposure(): no output {name!r}; outputs: {', '.join(self.model.output_names)}")  # fmt: skip
            metrics = compute_exposure(t, np.asarray(pred[name]), list(labels), output_unit=pred[name].attrs["unit"], time_unit=self.model.time_unit, extrapolate=False)  # fmt: skip
            for key, (v, u) in metrics.items():
                q = np.nanquantile(np.asarray(v).reshape(-1), [0.5, lo, hi])
                rows.append({"output": name, "metric": labels[key], "median": q[0], "lower": q[1], "upper": q[2], "unit": u})  # fmt: skip
        return pd.DataFrame(rows)


def _with_times(model: Model, rec: Any, times: np.ndarray) -> Any:
    """A subject's dose and reset records with observation records at ``times`` instead of
    theirs (covariate values come from the dose records, last value carried forward)."""
    from ldpk.dosing import make_records

    rows = []
    for i in np.flatnonzero(np.isin(rec.evid, (1, 3, 4))):
        row = {k: getattr(rec, k)[i] for k in ("time", "evid", "amt", "rate", "ii", "addl", "ss")}
        row["route"] = _route_name(model, int(rec.route[i]))
        row.update(dict(zip(model.covariate_names, rec.cov[i], strict=True)))
        rows.append(row)
    rows += [{"time": t, "evid": 2} for t in times]  # covariates carried from the dose records
    rows.sort(key=lambda r: (r["time"], r["evid"] == 2))
    return make_records(model, rows, where=rec.where)


def _route_name(model: Model, index: int) -> str:
    names = model.route_names
    return (
        names[index] if index < len(names) else f"cmt:{model.compartment_names[index - len(names)]}"
    )


def load_fit(path: str | Path) -> Any:
    """Read a posterior DataTree written by :meth:`Fit.save`."""
    import arviz as az

    return az.from_netcdf(str(path), engine="h5netcdf")


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
        ds = data
    else:
        read_opts = dict(cfg.get("data") or {})
        if time_unit is not None:
            read_opts["time_unit"] = time_unit
        ds = read_study(model, data, **read_opts)
    if ds.model is not model and ds.model != model:
        raise DataError("the dataset was read for a different model")
    spec = fit_spec(model, ds, cfg, where)
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
    # NUTS needs the Hessian only to disperse its starting points: by differences. Methods
    # that only start from the mode start from a non-degenerate one (see _map).
    point = method == "map" or (method == "laplace" and not marginal)
    hessian = None if marginal else "fd" if method == "nuts" else "exact"
    mode = _map(pm, data, k_init, hessian=hessian, hold_extremes=not point)
    timings["map_s"] = time.perf_counter() - t0
    if point and (extremes := _prior_extremes(pm, mode.values)):
        import warnings

        warnings.warn(f"the posterior mode puts {', '.join(extremes)} where the prior has less than {PRIOR_TAIL:g} of its mass (a residual or between-subject SD collapsed to 0?): the joint mode is degenerate and not a useful estimate; use method='laplace' (subject effects integrated out) or 'nuts'", stacklevel=2)  # fmt: skip
    values = mode.values
    t0 = time.perf_counter()
    if method == "nuts":
        samples, stats, centred, more = _nuts(pm, data, k_run, opts, mode)
        timings.update(more)
    elif method == "svi":
        samples, stats = _svi(pm, data, k_run, opts, mode)
    elif marginal:
        samples, values, more = _marginal_laplace(pm, data, k_run, opts, mode)
        stats = {}
        timings.update(more)
    elif method == "laplace":  # no subject effects: the Laplace approximation at the MAP
        if mode.cov is None:
            raise DataError("the Hessian at the MAP is not positive definite, so there is no Laplace approximation; try method='nuts'")  # fmt: skip
        samples, stats = _laplace(pm, k_run, opts, mode)
    else:  # the mode with its deterministic sites (P_i, predictions), as one draw
        samples, stats = _with_deterministic(pm, {k: jnp.asarray(v)[None] for k, v in mode.values.items()}, k_run), {}  # fmt: skip
    if "sampling_s" not in timings:
        timings["sampling_s"] = time.perf_counter() - t0
    tree = _to_datatree(pm, data, samples, stats, k_pred, method)
    if method == "nuts":
        tree.attrs["ldpk_centred"] = ",".join(centred)  # parameters sampled centred
    if mode.held:  # sites held at prior medians in the start (degenerate joint mode)
        tree.attrs["ldpk_start_held"] = ",".join(mode.held)
    map_values = {k: np.asarray(v).tolist() for k, v in values.items()}
    return Fit(model, ds, spec, method, tree, map_values, opts, ode, timings, kernel)


def _ode_options(section: Mapping[str, Any], where: str = "fit config") -> ODEOptions:
    """:class:`~ldpk.ODEOptions` from a fit config's ``ode:`` section (e.g. ``solver: tsit5``,
    ``rtol: 1.0e-6``, ``max_steps: 10000``); unknown keys or values raise ModelError naming
    ``where``."""
    valid = set(ODEOptions.__dataclass_fields__)
    if not isinstance(section, Mapping) or set(section) - valid:
        bad = sorted(set(section) - valid) if isinstance(section, Mapping) else section
        raise ModelError(f"{where}: ode: unknown entries {bad}; valid: {', '.join(sorted(valid))}")  # fmt: skip
    try:
        out = ODEOptions(**section)
    except (TypeError, ValueError) as exc:
        raise ModelError(f"{where}: ode: {exc}") from exc
    return out


def _options(opts: FitOptions, from_config: Mapping[str, Any], overrides: Mapping[str, Any], where: str) -> FitOptions:  # fmt: skip
    """FitOptions with the config's ``fit:`` entries, then keyword overrides, applied."""
    valid = set(FitOptions.__dataclass_fields__)
    bad = set(from_config) - valid
    if bad:
        raise ModelError(f"{where}: fit: unknown options {sorted(bad)}; valid: {', '.join(sorted(valid))}")  # fmt: skip
    bad = set(overrides) - valid
    if bad:
        raise TypeError(f"unknown fit options {sorted(bad)}; valid: {', '.join(sorted(valid))}")
    opts = FitOptions(**{**opts.__dict__, **from_config, **overrides})
    if opts.guide not in GUIDES:
        raise ValueError(f"guide must be one of {', '.join(GUIDES)}, got {opts.guide!r}")
    choices = opts.parameterization
    per = choices.values() if isinstance(choices, Mapping) else [choices]
    if not all(isinstance(c, str) and c in PARAMETERIZATIONS for c in per):
        raise ValueError(f"parameterization must be one of {', '.join(PARAMETERIZATIONS)}, or a mapping from parameter names to one of them; got {choices!r}")  # fmt: skip
    return opts


@dataclass(frozen=True)
class _Mode:
    """The MAP in the unconstrained space (``flat``, ``unravel``), its constrained ``values``,
    the Laplace covariance ``cov`` (None if the Hessian is not positive definite), the
    model's ``postprocess`` (unconstrained dict -> constrained sites) and the Hessian of the
    potential there (None if not computed)."""

    flat: Any
    unravel: Any
    values: dict[str, Any]
    cov: np.ndarray | None
    postprocess: Any
    hessian: np.ndarray | None = None
    #: sites held at the start's values because the joint mode put them in a prior tail
    held: tuple[str, ...] = ()
    #: the potential's value and gradient, (flat unconstrained x, data) -> (U, dU/dx), as
    #: the evaluation of one traced jaxpr: NUTS calls it (see :func:`_reused_gradient`), so
    #: the model is traced and differentiated once for the search and the sampler
    value_and_grad: Any = None

    def positions(self) -> dict[str, Any]:
        """Each site's positions in the flat vector (float arrays shaped as the sites)."""
        return self.unravel(jnp.arange(self.flat.size, dtype=float))


def _to_latent(pm: PopulationModel) -> Any:
    """Unconstrained latent sites -> constrained ones, by the priors' transforms alone (no
    solve, no deterministic sites)."""
    return partial(constrain_fn, pm.priors, (), {})


def _prior_extremes(pm: PopulationModel, values: Mapping[str, Any]) -> tuple[str, ...]:
    """The latent sites other than subject and study effects whose ``values`` (constrained)
    lie in a tail of their prior holding less than :data:`PRIOR_TAIL` of its mass."""
    from numpyro import handlers

    def tails(values: dict) -> dict:  # one compiled function, not an operation at a time
        trace = handlers.trace(handlers.substitute(handlers.seed(pm.priors, 0), data=values)).get_trace()  # fmt: skip
        masses = {}
        for name, site in trace.items():
            if site["type"] == "sample" and not name.startswith("eta_"):
                cdf = site["fn"].cdf(site["value"])
                masses[name] = jnp.min(jnp.minimum(cdf, 1.0 - cdf))
        return masses

    masses = jax.device_get(jit(tails)({k: jnp.asarray(v) for k, v in values.items()}))
    return tuple(name for name, m in masses.items() if m < PRIOR_TAIL)


def _map(
    pm: PopulationModel,
    data: tuple,
    key: Any,
    hessian: str | None = "exact",
    hold_extremes: bool = False,
) -> _Mode:
    """MAP estimate by BFGS on the unconstrained potential, started from the prior medians
    (standardised between-subject effects at 0) and searched in two stages (the SDs of the
    effects held first, see ``two_stage``), and the Hessian there: ``hessian`` 'exact'
    (JAX, forward over reverse), 'fd' (central differences of the compiled gradient: no
    second compilation, for starting points) or None. ``data``: the model's arguments (dv,
    censored).

    The joint mode of a hierarchical model can be degenerate: where each subject has one
    observation of an output (destructive sampling), its effect can fit that observation
    exactly and the output's residual SD runs to 0, where the joint density is unbounded.
    NUTS started there adapted a step size of 5e-9 and never moved. With ``hold_extremes``,
    sites that the mode puts in a prior tail of mass < :data:`PRIOR_TAIL` are held at the
    start's values (medians of 31 prior draws) and the rest searched again, while more run
    off: a starting point and scales for samplers. ``_Mode.held`` names them."""

    # Starting values from the priors alone (pm.priors, no solve) in one compiled function:
    # numpyro's initialize_model runs the model op by op, and each operation compiled on its
    # own (3-4 s per process on the one-compartment benchmark, the solve's operations
    # included). BFGS below checks the density at the start.
    def medians(key: Any) -> dict:  # each latent site's median of 31 prior draws, unconstrained
        from numpyro import handlers

        # the key numpyro's initialize_model(key, ...) seeds its first try with: the same start
        seeded = handlers.seed(pm.priors, jax.random.split(key)[1])
        at_median = handlers.substitute(seeded, substitute_fn=init_to_median(num_samples=31))
        trace = handlers.trace(at_median).get_trace()
        return {
            name: biject_to(site["fn"].support).inv(site["value"])
            for name, site in trace.items()
            if site["type"] == "sample"
        }

    z0 = {k: (jnp.zeros_like(v) if k.startswith("eta_") else v) for k, v in jit(medians)(key).items()}  # fmt: skip
    flat0, unravel = ravel_pytree(z0)

    def potential(x: Any, data: tuple) -> Any:
        return potential_energy(pm, data, {}, unravel(x))

    # The model is traced once, to a jaxpr that the search and NUTS evaluate (see _Mode)
    traced = jaxpr_as_fun(jax.make_jaxpr(jax.value_and_grad(potential))(flat0, data))

    def evaluated(x: Any, data: tuple) -> tuple[Any, Any]:
        return tuple(traced(x, *jax.tree.leaves(data)))

    value_and_grad = jit(evaluated)

    best: dict[str, Any] = {"value": np.inf, "x": None}

    def host(x: np.ndarray) -> tuple[float, np.ndarray]:
        v, g = value_and_grad(jnp.asarray(x), data)
        v, g = float(v), np.asarray(g, dtype=float)
        # A point where the density or its gradient is not finite (a failed solve, an
        # overflow) is +inf for the line search, which then steps back; it used to end the
        # search with a NaN value, reported as no finite density at all.
        if not (np.isfinite(v) and np.all(np.isfinite(g))):
            return np.inf, np.zeros_like(g)
        if v < best["value"]:
            best.update(value=v, x=np.array(x))
        return v, g

    pos = unravel(jnp.arange(flat0.size, dtype=float))  # each site's positions in flat0

    def search(held: tuple[str, ...], start: Any = None) -> Any:
        """BFGS over the sites not ``held`` from ``start`` (default: the prior medians); held
        sites stay at the prior medians."""
        fixed = np.zeros(flat0.size, dtype=bool)
        for name in held:
            fixed[np.asarray(pos[name]).astype(int)] = True
        start = np.array(flat0 if start is None else start)
        start[fixed] = np.asarray(flat0)[fixed]
        best.update(value=np.inf, x=None)

        def free(y: np.ndarray) -> tuple[float, np.ndarray]:
            x = start.copy()
            x[~fixed] = y
            v, g = host(x)
            return v, g[~fixed]

        # SciPy's BFGS with JAX gradients: robust line search, converges to |grad| < 1e-6.
        res = scipy.optimize.minimize(free, start[~fixed], jac=True, method="BFGS", options={"gtol": 1e-6, "maxiter": 5000})  # fmt: skip
        if best["x"] is None:
            raise DataError("the MAP search found no finite posterior density from the prior medians; check the data units, the error model and the priors")  # fmt: skip
        if np.isfinite(res.fun) and res.fun <= best["value"]:
            x = start.copy()
            x[~fixed] = res.x
            return jnp.asarray(x)
        return jnp.asarray(best["x"])

    # Constrained latent sites at the mode from the priors' transforms alone (no solve);
    # ``postprocess`` adds the deterministic sites (P_i, predictions) and is only traced.
    to_latent = jit(_to_latent(pm))
    sds = tuple(k for k in z0 if k.startswith("omega_"))  # between-subject and -study SDs

    def two_stage(held: tuple[str, ...]) -> Any:
        """The subject effects first with the SDs held at their prior medians, then every
        site from there. Searched jointly from the start, the SDs grow while the standardised
        effects are still near 0, and the search can end in a subject's implausible
        explanation or stall on a kink: on the CAR-T example study, from four starts, at
        potentials 1770-1786 (one with patient 15 expanding at 3.8 /d), against 1748.7-1748.9
        from all four by the two stages."""
        if not set(sds) - set(held):
            return search(held)
        return search(held, start=search(held + sds))

    held: tuple[str, ...] = ()
    x = two_stage(held)
    values = to_latent(unravel(x))
    while hold_extremes and (more := tuple(n for n in _prior_extremes(pm, values) if n not in held)):  # fmt: skip
        held += more
        x = two_stage(held)
        values = to_latent(unravel(x))
    postprocess = partial(constrain_fn, pm, data, {}, return_deterministic=True)
    cov = h = None
    if hessian == "exact":
        h = np.asarray(jit(jax.hessian(potential))(x, data))
    elif hessian == "fd":
        # the raw gradient: host() turns non-finite values into +inf with a zero gradient
        h = _fd_hessian(
            lambda v: np.asarray(value_and_grad(jnp.asarray(v), data)[1]), np.asarray(x)
        )
    if hessian is not None:
        h = 0.5 * (h + h.T)
        try:
            np.linalg.cholesky(h)
            cov = np.linalg.inv(h)
        except np.linalg.LinAlgError:
            pass
    return _Mode(x, unravel, values, cov, postprocess, h, held, evaluated)


def _fd_hessian(grad: Any, x: np.ndarray, rel: float = 1e-5) -> np.ndarray:
    """Hessian by central differences of ``grad`` (step rel·max(1, |x_i|) per coordinate)."""
    h = np.empty((x.size, x.size))
    for i in range(x.size):
        step = rel * max(1.0, abs(x[i]))
        e = np.zeros_like(x)
        e[i] = step
        h[:, i] = (grad(x + e) - grad(x - e)) / (2 * step)
    return h


class _FlatNUTS(NUTS):
    """NUTS on one flat vector of the unconstrained parameters, with the data as arguments of
    the potential (``potential_fn_gen(*data)``, compiled once per design). numpyro's model
    path keeps a dict of sites, whose per-site bookkeeping in every leapfrog step took as
    long as the gradient itself on small models (one-compartment benchmark: 7.0 s against
    3.7 s for 4 × 2000 iterations)."""

    def __init__(self, potential_fn_gen: Any, **kw: Any) -> None:
        super().__init__(potential_fn=potential_fn_gen, **kw)  # a placeholder, never called
        self._gen = potential_fn_gen

    def _init_state(self, rng_key: Any, model_args: Any, model_kwargs: Any, init_params: Any) -> Any:  # fmt: skip
        if self._init_fn is None:
            self._init_fn, self._sample_fn = hmc(
                potential_fn_gen=self._gen, kinetic_fn=self._kinetic_fn, algo=self._algo
            )
        self._potential_fn_gen = self._gen
        return init_params


def _nuts(pm: PopulationModel, data: tuple, key: Any, opts: FitOptions, mode: _Mode) -> tuple:
    """NUTS, each chain started from its own draw of the Laplace approximation at the MAP (or
    the MAP plus N(0, 0.1^2) jitter in the unconstrained space). Chains run in parallel when
    there are as many devices (LDPK_HOST_DEVICES on a CPU), else one after another.
    Returns the constrained draws, the sample statistics, the parameters sampled centred and
    the timings of warm-up and sampling."""
    parallel = 1 < opts.chains <= jax.local_device_count()
    centred = _centred_parameters(pm, mode, opts.parameterization)
    centring = _Centring.of(pm, mode, centred)

    reused = _reused_gradient(mode.value_and_grad)

    def potential_fn_gen(*data: Any) -> Any:
        def potential(x: Any) -> Any:
            return reused(x, data)

        if centring is None:
            return potential
        return lambda w: potential(centring.to_noncentred(w)) + centring.log_det(w)

    depth = opts.max_tree_depth
    if opts.warmup_max_tree_depth is not None:
        depth = (opts.warmup_max_tree_depth, opts.max_tree_depth)
    kernel = _FlatNUTS(
        potential_fn_gen, target_accept_prob=opts.target_accept,
        max_tree_depth=depth, dense_mass=opts.dense_mass,
        inverse_mass_matrix=_initial_inverse_mass(mode, centring, opts.dense_mass),
    )  # fmt: skip
    k_init, k_run = jax.random.split(key)
    init = _dispersed(mode, k_init, opts.chains)
    if centring is not None:
        init = jit(jax.vmap(centring.to_centred))(init)
    flat, stats, timings = _run_chains(pm, kernel, k_run, init, data, opts, parallel)
    chains, draws = flat.shape[:2]
    if centring is not None:
        flat = np.asarray(jit(jax.vmap(jax.vmap(centring.to_noncentred)))(flat))

    def constrained(x: dict, key: Any, data: tuple) -> dict:
        sites = jax.vmap(lambda v: mode.postprocess(mode.unravel(v)))(x["x"])
        return {k: v for k, v in sites.items() if not k.startswith("obs_")}

    x = {"x": jnp.asarray(flat.reshape(chains * draws, -1))}
    samples = _over_draws(constrained, x, key, data, _draws_per_chunk(pm))
    samples = {k: np.asarray(v).reshape(chains, draws, *v.shape[1:]) for k, v in samples.items()}
    return samples, stats, centred, timings


def _reused_gradient(value_and_grad: Any) -> Any:
    """The potential (x, data) -> U whose gradient in x is the second output of
    ``value_and_grad`` (data get none): NUTS's start and its transitions evaluate the jaxpr
    that the MAP search traced and differentiated once per fit. Left to differentiate the
    potential itself, each of the two traced the model and its solve again (a jitted
    function is traced again inside ``shard_map``) and linearised it: 1.5 s of a 6.5 s fit
    of the one-compartment Stan benchmark in a new process. Reverse mode only (a custom
    VJP)."""

    @jax.custom_vjp
    def potential(x: Any, data: tuple) -> Any:
        return value_and_grad(x, data)[0]

    def forward(x: Any, data: tuple) -> tuple:  # (U, residual: the gradient)
        return value_and_grad(x, data)

    def backward(grad: Any, cotangent: Any) -> tuple:
        return cotangent * grad, None

    potential.defvjp(forward, backward)
    return potential


#: The per-iteration fields of the sampler's state kept for sample_stats: name -> getter.
_STAT_FIELDS = {
    "diverging": lambda s: s.diverging,
    "energy": lambda s: s.energy,
    "n_steps": lambda s: s.num_steps,
    "acceptance_rate": lambda s: s.accept_prob,
    "step_size": lambda s: s.adapt_state.step_size,
}


def _run_chains(pm: PopulationModel, kernel: NUTS, key: Any, init: Any, data: tuple, opts: FitOptions, parallel: bool) -> tuple:  # fmt: skip
    """Run ``opts.chains`` chains of ``kernel`` from the starting points ``init`` (chains,
    unconstrained size): ``opts.warmup`` iterations of warm-up (step size and mass matrix
    adaptation), then ``opts.samples`` draws. Chains run in parallel, one per device, when
    ``parallel`` (see :func:`_over_chains`), else one after another.

    ldpk's own loop over numpyro's NUTS kernel rather than ``numpyro.infer.MCMC``: the loop
    is compiled per fit, so its compiled code is freed with the fit (numpyro's sampling loop
    is a module-level jit that kept every fit's sampler alive, about 35 MB per fit of the
    theophylline model); each chain's start (its first gradient) is compiled too (numpyro
    evaluated it op by op when chains ran one after another: over 40 minutes for the CAR-T
    ODE model); warm-up and sampling are timed apart; the warm-up's own statistics are kept
    (``stats["warmup"]``); and parallel chains show progress too. Iterations run in
    compiled blocks of 1/25 of each phase (one block per phase without progress bars), the
    block length a traced argument, so one compilation serves every block.

    Returns the draws (chains, samples, size) and the sample statistics (chains, samples)
    as NumPy arrays, and the timings ``warmup_s`` and ``sampling_s`` (seconds)."""
    n = opts.warmup + opts.samples
    size = init.shape[-1]

    def start(key: Any, x: Any, data: tuple) -> tuple:
        state = kernel.init(key, opts.warmup, x, data, {})
        record = {"z": jnp.zeros((n, size), x.dtype)}
        record |= {k: jnp.zeros(n, jnp.result_type(get(state))) for k, get in _STAT_FIELDS.items()}  # fmt: skip
        return state, record

    def advance(state: Any, record: dict, data: tuple, steps: Any) -> tuple:
        def body(_: Any, carry: tuple) -> tuple:
            state, record = carry
            state = kernel.sample(state, data, {})
            row = {"z": state.z} | {k: get(state) for k, get in _STAT_FIELDS.items()}
            record = {k: record[k].at[state.i - 1].set(row[k]) for k in record}
            return state, record

        return jax.lax.fori_loop(0, steps, body, (state, record))

    if parallel:
        start_c = _over_chains(start, opts.chains, (True, True, False))
        advance_c = _over_chains(advance, opts.chains, (True, True, False, False))
        runs = [(jax.random.split(key, opts.chains), init)]
    else:
        start_c, advance_c = jit(start), jit(advance, donate_argnums=1)
        runs = list(zip(jax.random.split(key, opts.chains), init, strict=True))
    most = _parallel_block(pm, opts.chains) if parallel else None
    blocks = [_blocks(opts.warmup, opts.progress, most), _blocks(opts.samples, opts.progress, most)]  # fmt: skip
    bar = None
    if opts.progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n * len(runs), unit="it", desc="warmup", leave=False)
    timings = {"warmup_s": 0.0, "sampling_s": 0.0}
    records = []
    for run_key, x in runs:
        t0 = time.perf_counter()
        state, record = start_c(run_key, x, data)
        for phase, lengths in zip(timings, blocks, strict=True):
            if bar is not None:
                bar.set_description(phase.removesuffix("_s"))
            for steps in lengths:
                state, record = advance_c(state, record, data, jnp.asarray(steps))
                jax.block_until_ready(state.i)
                if bar is not None:
                    bar.update(steps)
            timings[phase] += time.perf_counter() - t0
            t0 = time.perf_counter()
        records.append(jax.device_get(record))
    if bar is not None:
        bar.close()
    record = {k: np.concatenate([r[k] if parallel else r[k][None] for r in records]) for k in records[0]}  # fmt: skip
    warm = {k: v[:, : opts.warmup] for k, v in record.items() if k != "z"}
    stats = {k: v[:, opts.warmup :] for k, v in record.items() if k != "z"}
    for s in (warm, stats):
        s["tree_depth"] = np.floor(np.log2(s["n_steps"] + 1)).astype(int)
    stats["warmup"] = warm
    return record["z"][:, opts.warmup :], stats, timings


def _over_chains(f: Any, chains: int, mapped: tuple[bool, ...]) -> Any:
    """``f`` of one chain, compiled to run ``chains`` chains at once, one per device: the
    arguments flagged in ``mapped`` carry a leading chain axis, the others are shared.
    A shard_map under jit rather than ``jax.pmap``: pmap's cache of its shard_map (a weak key
    dict whose values hold their own keys) kept every fit's sampler alive."""
    from jax.sharding import Mesh, PartitionSpec

    mesh = Mesh(np.asarray(jax.local_devices()[:chains]), ("chain",))

    def local(*args: Any) -> Any:  # each device's shard: one chain
        one = (jax.tree.map(lambda v: v[0], a) if m else a for a, m in zip(args, mapped, strict=True))  # fmt: skip
        return jax.tree.map(lambda v: v[None], f(*one))

    specs = tuple(PartitionSpec("chain") if m else PartitionSpec() for m in mapped)
    # check_vma off: numpyro's tree building carries per-chain and shared values together
    return jit(jax.shard_map(local, mesh=mesh, in_specs=specs, out_specs=PartitionSpec("chain"), check_vma=False))  # fmt: skip


#: Fewest iterations per compiled block when chains run in parallel. XLA's CPU runtime keeps
#: memory of every iteration of a multi-device while loop until the loop returns: the MSC
#: study (4 chains over 4 host devices, exact kernel) peaked at 6.6 GB in 50 + 50
#: iterations run as two blocks and 12.3 GB in 100 + 100; in blocks of 10 at 2.4 GB, of 5
#: at 1.5 GB, no slower. One chain on one device does not grow (1.0 GB).
PARALLEL_BLOCK = 5
#: Memory (bytes) that one block of parallel chains may keep (see :func:`_parallel_block`).
PARALLEL_BLOCK_BYTES = 256 * 2**20


def _parallel_block(pm: PopulationModel, chains: int) -> int:
    """Most iterations per compiled block when ``chains`` chains run in parallel: as many as
    keep an estimate of the memory held for them under :data:`PARALLEL_BLOCK_BYTES`, at least
    :data:`PARALLEL_BLOCK`; ODE kernels always :data:`PARALLEL_BLOCK` (their memory per
    iteration follows the solver's steps). The estimate, 15 × :func:`_draw_bytes` of the
    solved compartments per chain and iteration, covers the
    growth measured with 4 chains (peak memory in blocks of 12-60 iterations against blocks
    of 5): about 2.5 × the formula on the MSC study (94 MB per iteration), 12 × on the EV
    study (87 MB), 5 × on the CAR-T study (1.7 MB); the one-compartment Stan benchmark did
    not grow. Each block costs a dispatch to every device and a synchronisation (about
    2.5 ms on the 2-core CPU): that benchmark drew its 1000 samples in 0.84 s in blocks of 5
    and 0.39 s in one block."""
    if choose_kernel(pm.model, pm.method) == "ode":
        return PARALLEL_BLOCK
    solved = len(pm.model.states_for(pm.dataset.outputs_observed()))
    per_iteration = 15 * chains * _draw_bytes(pm, solved)
    return max(PARALLEL_BLOCK, PARALLEL_BLOCK_BYTES // per_iteration)


def _blocks(n: int, progress: bool, most: int | None = None, parts: int = 25) -> list[int]:
    """Iteration counts of the compiled blocks that run ``n`` iterations: one block, or
    about ``parts`` with progress bars; none longer than ``most``."""
    size = -(-n // parts) if progress else n
    size = max(1, min(size, most or size))
    return [size] * (n // size) + ([n % size] if n % size else [])


def _centred_parameters(pm: PopulationModel, mode: _Mode, parameterization: str | Mapping[str, str]) -> tuple[str, ...]:  # fmt: skip
    """The parameters with between-subject variability that NUTS samples centred: all of them
    ('centred'), none ('noncentred'), those a mapping names 'centred' and, of those it names
    'auto' or not at all, as 'auto'; or ('auto') those whose standardised effects z_i have
    a mean conditional posterior variance 1 / H_ii (H the Hessian of the potential at the
    MAP) below AUTO_CENTRE_VARIANCE (none without a Hessian). In the normal-normal model,
    var(z_i | θ, ω, data) = s^2 / (s^2 + ω^2) with s the data's standard error of log P_i:
    below 1/2 where the data know P_i better than the population does, which is where the
    centred form samples well and the non-centred one needs small steps (Betancourt &
    Girolami 2015, arXiv:1312.0906). The conditional variance needs only the Hessian's
    diagonal, so it exists where the joint mode's Hessian is not positive definite (the
    CAR-T study)."""
    names = tuple(pm.spec.iiv)
    if isinstance(parameterization, Mapping):  # names checked by fit()
        choice = {p: parameterization.get(p, "auto") for p in names}
    else:
        choice = dict.fromkeys(names, parameterization)
    auto: set[str] = set()
    if "auto" in choice.values() and mode.hessian is not None:
        pos = mode.positions()
        curv = np.diag(mode.hessian)
        var = np.where(curv > 0, 1.0 / np.where(curv > 0, curv, 1.0), np.inf)
        auto = {p for p in names if var[np.asarray(pos[f"eta_{p}"]).astype(int)].mean() < AUTO_CENTRE_VARIANCE}  # fmt: skip
    return tuple(p for p in names if choice[p] == "centred" or (choice[p] == "auto" and p in auto))


@dataclass(frozen=True)
class _Centring:
    """The centred parameterisation for NUTS, on the flat unconstrained vector: for each
    parameter P with between-subject variability, the standardised effects z_i (site
    ``eta_P``) are replaced by w_i = u_P + ω_P z_i, with u_P the unconstrained typical value
    (log θ_P for a positive one), so that w_i is log P_i up to covariate factors. The density
    in w is that in z times |dz/dw| = ω_P^-n per parameter. ``eta``, ``theta``, ``omega``: the
    positions of each parameter's sites in the flat vector (``theta`` None where P has no
    sampled typical value); ``to_omega``: each ω site's transform from unconstrained values."""

    eta: tuple[np.ndarray, ...]
    theta: tuple[int | None, ...]
    omega: tuple[int, ...]
    to_omega: tuple[Any, ...]

    @staticmethod
    def of(pm: PopulationModel, mode: _Mode, names: Sequence[str]) -> _Centring | None:
        """The centring of the parameters ``names`` (None if there are none)."""
        if not names:
            return None
        pos = mode.positions()
        return _Centring(
            eta=tuple(np.asarray(pos[f"eta_{p}"]).astype(int) for p in names),
            theta=tuple(int(pos[p]) if p in pos else None for p in names),
            omega=tuple(int(pos[f"omega_{p}"]) for p in names),
            to_omega=tuple(biject_to(prior_distribution(pm.spec.iiv[p]).support) for p in names),
        )

    def _parts(self, v: Any) -> Any:
        for e, t, o, f in zip(self.eta, self.theta, self.omega, self.to_omega, strict=True):
            yield e, (0.0 if t is None else v[t]), f(v[o])

    def to_noncentred(self, w: Any) -> Any:
        x = w
        for e, centre, omega in self._parts(w):
            x = x.at[e].set((w[e] - centre) / omega)
        return x

    def to_centred(self, x: Any) -> Any:
        w = x
        for e, centre, omega in self._parts(x):
            w = w.at[e].set(centre + omega * x[e])
        return w

    def log_det(self, w: Any) -> Any:
        """-log |dz/dw| = Σ_P n log ω_P."""
        return sum(e.size * jnp.log(omega) for e, _, omega in self._parts(w))


def _initial_inverse_mass(mode: _Mode, centring: _Centring | None, dense: bool) -> Any:
    """The Laplace covariance at the MAP (in the sampler's coordinates) as the starting
    inverse mass matrix, its diagonal unless ``dense``; None (the identity) without one.
    Warm-up adapts it from the first window on; starting from the identity, parameters whose
    posterior scales differ by orders of magnitude kept the first window's steps tiny (EV
    study: trees of 127-767 leapfrog steps for 75 iterations)."""
    if mode.cov is None:
        return None
    cov = np.asarray(mode.cov)
    if centring is not None:
        J = np.asarray(jit(jax.jacfwd(centring.to_centred))(mode.flat))
        cov = J @ cov @ J.T
    diag = np.diag(cov)
    if not (np.all(np.isfinite(cov)) and np.all(diag > 0)):
        return None
    return jnp.asarray(cov if dense else diag)


def _dispersed(mode: _Mode, key: Any, n: int) -> Any:
    """n starting points around the MAP (unconstrained, flat)."""
    if mode.cov is not None:
        draw = partial(jax.random.multivariate_normal, shape=(n,))
        return jit(draw)(key, mode.flat, jnp.asarray(mode.cov))
    return jit(lambda key, x: x + 0.1 * jax.random.normal(key, (n, x.size)))(key, mode.flat)


def _svi(pm: PopulationModel, data: tuple, key: Any, opts: FitOptions, mode: _Mode) -> tuple:
    """SVI with a mean-field, full-rank or low-rank normal guide, started from the MAP with
    the between-subject SDs at their moment estimates (:func:`_moment_start`)."""
    at_mode = {k: v for k, v in mode.values.items() if k in mode.unravel(mode.flat)}
    init = init_to_value(values=_moment_start(pm, at_mode))
    guide_cls = {
        "normal": autoguide.AutoNormal,
        "fullrank": autoguide.AutoMultivariateNormal,
        "lowrank": autoguide.AutoLowRankMultivariateNormal,
    }[opts.guide]
    guide = guide_cls(pm, init_loc_fn=init)
    svi = SVI(pm, guide, Adam(opts.learning_rate), Trace_ELBO())
    k_run, k_draw = jax.random.split(key)
    res = svi.run(k_run, opts.svi_steps, *data, progress_bar=opts.progress)
    latent = Predictive(guide, params=res.params, num_samples=opts.draws)(k_draw, *data)
    return _with_deterministic(pm, latent, k_draw), {"elbo_loss": np.asarray(res.losses)}


def _moment_start(pm: PopulationModel, values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` (constrained latent sites at the joint MAP) with each between-subject SD
    ω_P set to the SD of the MAP's individual log-effects ω_P·z_i (at least
    :data:`MIN_START_OMEGA`) and the standardised effects z_i rescaled so that every
    individual parameter stays where it is. In the non-centred coordinates of the joint
    mode, the z_i's N(0, 1) prior pulls them towards 0 and ω_P grows to compensate: on ACOP
    (120 subjects) to 1.5-2.0 against true SDs near 0.3, and mean-field SVI from there kept
    ω_P at 0.55-1.47 after 5,000 steps, typical values 8-19 % off; from the moment estimates,
    ω_P 0.26-0.30 and typical values within 5.2 % (``benchmarks/results/acop.json``)."""
    out = dict(values)
    for p in pm.spec.iiv:
        o, e = f"omega_{p}", f"eta_{p}"
        if o in out and e in out:
            u = np.asarray(out[o]) * np.asarray(out[e])
            w = max(float(np.std(u)), MIN_START_OMEGA)
            out[o], out[e] = jnp.asarray(w), jnp.asarray(u / w)
    return out


#: Smallest between-subject SD of :func:`_moment_start` (a start, not an estimate).
MIN_START_OMEGA = 0.05


def _laplace(pm: PopulationModel, key: Any, opts: FitOptions, mode: _Mode) -> tuple:
    """Draws of the normal approximation at the MAP (unconstrained space), transformed."""
    x = jax.random.multivariate_normal(key, mode.flat, jnp.asarray(mode.cov), (opts.draws,))
    latent = jit(jax.vmap(lambda v: _to_latent(pm)(mode.unravel(v))))(x)
    return _with_deterministic(pm, latent, key), {}


# ---- marginal (integrated) Laplace ---------------------------------------------------------
#: Inner Newton iterations at most, and the tolerance on the largest |dU/d eta| that ends them.
_INNER_ITERS = 50
_INNER_GTOL = 1e-8
#: Largest |dU/d eta| at which the inner problem counts as converged (and ``trouble`` names
#: no subject).
_INNER_CONVERGED = 1e-5
#: Largest Newton step in any standardised subject effect (they are N(0, 1) a priori).
_MAX_ETA_STEP = 5.0
#: Relative step of the central differences of the marginal gradient (unconstrained space).
_HESSIAN_STEP = 1e-4


class _Marginal:
    """The marginal (integrated) Laplace approximation of a population model, as NONMEM's
    LAPLACIAN and TMB: the standardised subject effects eta (sites ``eta_<P>``, shape
    (n_subjects, n_iiv)) are integrated out by a Laplace approximation about their conditional
    mode, leaving

        U_m(theta) = U(theta, eta_hat) + 1/2 sum_i log det H_i - (n_eta / 2) log 2 pi,

    with U numpyro's potential energy, theta every other latent site (unconstrained space;
    study effects included), eta_hat(theta) = argmin_eta U(theta, eta) and H_i the Hessian of U
    in subject i's effects. A subject's predictions depend only on its own effects, so the
    Hessian in eta is block diagonal: its blocks come from n_iiv Hessian-vector products with
    "colouring" vectors (1 at component k of every subject, 0 elsewhere). The functions below
    take the data (dv, censored) as arguments, so their compiled forms do not embed them."""

    def __init__(self, pm: PopulationModel, mode: _Mode) -> None:
        self.pm = pm
        z = mode.unravel(mode.flat)
        self.eta_sites = tuple(f"eta_{p}" for p in pm.spec.iiv)
        theta = {k: v for k, v in z.items() if k not in self.eta_sites}
        self.theta0, self.unravel_theta = ravel_pytree(theta)
        self.eta0 = jnp.stack([z[s] for s in self.eta_sites], axis=-1)
        self.postprocess = _to_latent(pm)
        ds, names = pm.dataset, pm.model.output_names
        self.n_subjects = ds.n_subjects
        self.obs_subject = {
            f"obs_{o}": np.asarray(ds.subject[ds.output == names.index(o)]) for o in pm.spec.errors
        }  # fmt: skip

    def params(self, th: Any, eta: Any) -> dict:
        """Unconstrained sites from theta (flat) and eta (n_subjects, n_iiv)."""
        return {**self.unravel_theta(th), **{s: eta[:, j] for j, s in enumerate(self.eta_sites)}}

    def potential(self, th: Any, eta: Any, data: tuple) -> Any:
        return potential_energy(self.pm, data, {}, self.params(th, eta))

    def grad_eta(self, th: Any, eta: Any, data: tuple) -> Any:
        return jax.grad(self.potential, argnums=1)(th, eta, data)

    def blocks(self, th: Any, eta: Any, data: tuple) -> Any:
        """The diagonal blocks of d²U/d eta² (n_subjects, n_iiv, n_iiv), from n_iiv
        Hessian-vector products with colouring vectors."""
        n = eta.shape[1]
        colours = jnp.broadcast_to(jnp.eye(n)[:, None, :], (n, *eta.shape))

        def hvp(v: Any) -> Any:
            return jax.jvp(lambda e: self.grad_eta(th, e, data), (eta,), (v,))[1]

        h = jnp.transpose(jax.vmap(hvp)(colours), (1, 2, 0))  # [i, a, k] = d²U/d eta_ia d eta_ik
        return 0.5 * (h + jnp.swapaxes(h, 1, 2))

    def subject_terms(self, th: Any, eta: Any, data: tuple) -> Any:
        """U split by subject: the part of the potential that depends on each subject's effects
        (its N(0, 1) prior and its observations' log-likelihood), shape (n_subjects,). U minus
        their sum depends on theta only; the inner line search compares subjects one by one."""
        from numpyro import handlers
        from numpyro.infer.util import constrain_fn

        values = constrain_fn(self.pm, data, {}, self.params(th, eta))
        trace = handlers.trace(handlers.substitute(self.pm, data=values)).get_trace(*data)
        u = 0.5 * jnp.sum(eta**2, axis=1)
        for name, site in trace.items():
            if site["type"] == "sample" and site["is_observed"]:
                lp = site["fn"].log_prob(site["value"])
                u = u - jax.ops.segment_sum(lp, self.obs_subject[name], self.n_subjects)
        return u

    def newton(self, th: Any, eta0: Any, data: tuple) -> tuple[Any, Any]:
        """eta_hat(theta) by damped Newton from eta0: per-subject steps along the block Newton
        direction (eigenvalues of each block taken in absolute value and floored, so the step
        descends; at most ``_MAX_ETA_STEP``), halved per subject until that subject's part of U
        satisfies the Armijo condition. Stops when max |dU/d eta| <= ``_INNER_GTOL`` or no
        subject can improve. Returns (eta_hat, converged)."""
        u0 = self.subject_terms(th, eta0, data)
        s = eta0.shape[0]

        def body(carry: tuple) -> tuple:
            eta, u, k, _, _ = carry
            g = self.grad_eta(th, eta, data)
            w, v = jnp.linalg.eigh(self.blocks(th, eta, data))
            w = jnp.maximum(jnp.abs(w), 1e-6)
            d = -jnp.einsum("sij,sj->si", v, jnp.einsum("sji,sj->si", v, g) / w)
            big = jnp.max(jnp.abs(d), axis=1, keepdims=True)
            d = d * jnp.minimum(1.0, _MAX_ETA_STEP / jnp.maximum(big, 1e-300))
            slope = jnp.sum(g * d, axis=1)
            gmax = jnp.max(jnp.abs(g))
            conv = gmax <= _INNER_GTOL
            # Where the predicted decrease -slope/2 is below what U resolves in floating point
            # (the quadratic region, where Newton steps are reliable), take the full step.
            tiny = -slope <= 1e-10 * jnp.maximum(1.0, jnp.abs(u))

            def ls_cond(c: tuple) -> Any:
                return ~jnp.all(c[1]) & (c[2] < 30)

            def ls_body(c: tuple) -> tuple:
                t, acc, j = c
                trial = self.subject_terms(th, eta + t[:, None] * d, data)
                ok = trial <= u + 1e-4 * t * slope  # NaN fails
                return jnp.where(acc | ok, t, 0.5 * t), acc | ok, j + 1

            init = (jnp.ones(s), conv | tiny, 0)
            t, acc, _ = jax.lax.while_loop(ls_cond, ls_body, init)
            t = jnp.where(acc & ~conv, t, 0.0)
            stalled = jnp.all(t == 0.0)
            eta = eta + t[:, None] * d
            return eta, self.subject_terms(th, eta, data), k + 1, conv | stalled, gmax

        def cond(carry: tuple) -> Any:
            return (carry[2] < _INNER_ITERS) & ~carry[3]

        init = (eta0, u0, 0, False, jnp.inf)
        eta, _, _, _, gmax = jax.lax.while_loop(cond, body, init)
        return eta, gmax <= _INNER_CONVERGED

    def value_and_grad(self, th: Any, eta_hat: Any, data: tuple) -> tuple[Any, Any]:
        """U_m(theta) and its gradient, given eta_hat = eta_hat(theta). One Newton step from
        eta_hat (held constant), eta* = eta_hat - H^-1 dU/d eta, equals eta_hat at the optimum
        and its derivative is the implicit-function derivative d eta_hat / d theta; U(theta,
        eta*) + 1/2 log det H(theta, eta*) is differentiated through it. Forward mode over
        theta for eta* and log det H (the exact kernel's matrix exponential has a custom
        reverse rule whose backward pass can be differentiated forwards only), reverse mode
        for U itself."""
        eh = jax.lax.stop_gradient(eta_hat)

        def pieces(th: Any) -> tuple[Any, Any]:
            g = self.grad_eta(th, eh, data)
            es = eh - jnp.linalg.solve(self.blocks(th, eh, data), g[..., None])[..., 0]
            sign, logdet = jnp.linalg.slogdet(self.blocks(th, es, data))
            return es, 0.5 * jnp.sum(jnp.where(sign > 0, logdet, jnp.nan))

        basis = jnp.eye(th.size, dtype=th.dtype)
        (es, half), (d_es, d_half) = jax.vmap(
            lambda v: jax.jvp(pieces, (th,), (v,)), out_axes=((None, None), (0, 0))
        )(basis)  # fmt: skip
        u, (g_th, g_eta) = jax.value_and_grad(self.potential, argnums=(0, 1))(th, es, data)
        value = u + half - 0.5 * eh.size * jnp.log(2 * jnp.pi)
        return value, g_th + jnp.einsum("psn,sn->p", d_es, g_eta) + d_half

    def conditional(self, th: Any, eta0: Any, z: Any, data: tuple) -> tuple[Any, Any, Any]:
        """eta_hat(theta) (Newton from eta0), a draw eta_hat + H^-1/2 z of the normal
        approximation of the subject effects given theta, block by block (``z``: standard
        normal, (n_subjects, n_iiv)), and whether the inner problem converged to a positive
        definite Hessian."""
        eta, ok = self.newton(th, eta0, data)
        w, v = jnp.linalg.eigh(self.blocks(th, eta, data))
        draw = eta + jnp.einsum("sij,sj->si", v, z / jnp.sqrt(jnp.maximum(w, 1e-12)))
        return eta, draw, ok & jnp.all(w > 0)

    def constrained(self, th: Any, eta: Any) -> dict:
        """Constrained latent sites at (theta, eta)."""
        return self.postprocess(self.params(th, eta))

    def trouble(self, th: Any, eta: Any, data: tuple) -> str:
        """Host side, for messages: the subjects whose effects at ``eta`` are not a smooth
        minimum of U given theta (gradient above ``_INNER_CONVERGED``, or a block of the Hessian that is not
        positive definite), with both numbers, or '' if there are none."""
        g = np.abs(np.asarray(jit(self.grad_eta)(th, eta, data))).max(axis=1)
        w = np.linalg.eigvalsh(np.asarray(jit(self.blocks)(th, eta, data))).min(axis=1)
        bad = np.flatnonzero((g > _INNER_CONVERGED) | ~(w > 0))
        ids = self.pm.dataset.subjects
        return "; ".join(f"ID {ids[i]} (largest |dU/d eta| {g[i]:.2g}, smallest curvature {w[i]:.3g})" for i in bad)  # fmt: skip


def _marginal_laplace(pm: PopulationModel, data: tuple, key: Any, opts: FitOptions, mode: _Mode) -> tuple:  # fmt: skip
    """Marginal Laplace: theta_hat = argmin U_m by BFGS (JAX gradients) from the joint MAP's
    theta, the covariance H_m^-1 from central differences of the gradient of U_m, and draws
    theta_s ~ N(theta_hat, H_m^-1), eta_s ~ N(eta_hat(theta_s), H_etaeta(theta_s)^-1).
    Returns (draws as for _with_deterministic, values at the mode, timings)."""
    import warnings

    m = _Marginal(pm, mode)
    conditional = jit(m.conditional)
    value_and_grad = jit(m.value_and_grad)
    zero = jnp.zeros_like(m.eta0)
    t0 = time.perf_counter()
    best = {"value": np.inf, "eta": m.eta0}

    def host(x: np.ndarray, keep: bool = True) -> tuple[float, np.ndarray]:
        x = jnp.asarray(x)
        eta = conditional(x, best["eta"], zero, data)[0]
        v, g = value_and_grad(x, eta, data)
        v = float(v)
        if not np.isfinite(v):
            return np.inf, np.zeros(x.size)
        if keep and v < best["value"]:
            best.update(value=v, eta=eta)
        return v, np.asarray(g, dtype=float)

    # started from the joint MAP's theta, the subject effects from the joint MAP's
    res = scipy.optimize.minimize(host, np.asarray(m.theta0), jac=True, method="BFGS", options={"gtol": 1e-6, "maxiter": 5000})  # fmt: skip
    if not np.isfinite(res.fun):
        eta = conditional(jnp.asarray(m.theta0), m.eta0, zero, data)[0]
        raise DataError(f"the marginal Laplace objective is not finite at the joint MAP's population parameters: the subject effects' conditional posterior has no smooth mode for {m.trouble(m.theta0, eta, data) or 'some subject'}. The Laplace approximation needs one per subject; a likelihood with kinks (e.g. a switch time such as a CAR-T Tmax passing an observation time) or several modes breaks it; use method='nuts'")  # fmt: skip
    x = np.asarray(res.x)
    eta_hat, _, ok = conditional(jnp.asarray(x), best["eta"], zero, data)
    p = x.size
    hess = np.empty((p, p))
    for j in range(p):
        step = _HESSIAN_STEP * max(1.0, abs(x[j]))
        e = np.zeros(p)
        e[j] = step
        hess[:, j] = (host(x + e, keep=False)[1] - host(x - e, keep=False)[1]) / (2 * step)
    hess = 0.5 * (hess + hess.T)
    try:
        chol = np.linalg.cholesky(hess)
    except np.linalg.LinAlgError:
        raise DataError("the Hessian of the marginal posterior (subject effects integrated out) is not positive definite at its mode, so there is no Laplace approximation; try method='nuts'") from None  # fmt: skip
    if not bool(ok):
        warnings.warn(f"marginal Laplace: the subject effects' conditional mode did not converge at the population mode for {m.trouble(jnp.asarray(x), eta_hat, data) or 'some subject'}; the approximation is doubtful there: compare with method='nuts'", stacklevel=3)  # fmt: skip
    timings = {"laplace_s": time.perf_counter() - t0}
    t0 = time.perf_counter()
    k_theta, k_eta, k_det = jax.random.split(key, 3)
    cov = np.linalg.inv(chol).T @ np.linalg.inv(chol)
    xs = jax.random.multivariate_normal(k_theta, jnp.asarray(x), jnp.asarray(cov), (opts.draws,))
    zs = jax.random.normal(k_eta, (opts.draws, *m.eta0.shape))
    # One draw per call of the compiled conditional problem: vmapped, the Newton iterations
    # and line searches (while loops) run every draw as long as the slowest and were several
    # times slower on CPU (theophylline: 26 s for 1000 draws against 4 s one by one).
    xs_host, zs_host = np.asarray(xs), np.asarray(zs)  # (indexing jax arrays dispatches)
    out = [conditional(xs_host[i], eta_hat, zs_host[i], data) for i in range(opts.draws)]
    etas = jnp.stack([o[1] for o in out])
    bad = int(np.sum(~np.asarray([o[2] for o in out])))
    if bad:
        warnings.warn(f"marginal Laplace: for {bad} of {opts.draws} draws of the population parameters the subject effects' conditional mode did not converge to a positive definite Hessian", stacklevel=3)  # fmt: skip
    latent = jit(jax.vmap(m.constrained))(xs, etas)
    samples = _with_deterministic(pm, latent, k_det)
    timings["sampling_s"] = time.perf_counter() - t0
    values = jit(m.constrained)(jnp.asarray(x), eta_hat)
    return samples, values, timings


def _with_deterministic(pm: PopulationModel, latent: dict, key: Any) -> dict:
    """Latent draws plus the model's deterministic sites, as (1 chain, draws, ...) arrays."""
    out = Predictive(pm, posterior_samples=latent)(key, None)
    out = {**latent, **{k: v for k, v in out.items() if not k.startswith("obs_")}}
    return {k: np.asarray(v)[None] for k, v in out.items()}


#: Memory (bytes) that one chunk of posterior draws may take when predictions and
#: log-likelihoods are computed for the DataTree (vectorised within a chunk).
CHUNK_BYTES = 256 * 2**20


def _draw_bytes(pm: PopulationModel, states: int) -> int:
    """Memory of one draw's largest kernel intermediates with ``states`` compartments solved:
    about observations × states² float64 values (transition matrices), with a few
    temporaries each (8 × 8 bytes)."""
    return 8 * 8 * max(pm.dataset.n_obs, 1) * states * states


def _draws_per_chunk(pm: PopulationModel) -> int:
    """Draws evaluated together (see :func:`_draw_bytes`)."""
    return max(1, CHUNK_BYTES // _draw_bytes(pm, len(pm.model.compartments)))


def _over_draws(fn: Any, latent: dict, key: Any, data: tuple, chunk: int) -> Any:
    """fn(latent_chunk, key, data) over the draws (leading axis of ``latent``), ``chunk`` draws
    at a time (vectorised within, sequential across chunks), results concatenated; compiled
    per call. ``fn`` is a new closure in every fit: as a static argument of a module-level
    jit, each fit's closure, and through it its model and compiled functions, stayed in
    that jit's cache for the life of the process (8 MB per MAP fit of the theophylline
    model, without bound)."""
    return jit(partial(_chunked, fn, chunk))(latent, key, data)


def _chunked(fn: Any, chunk: int, latent: dict, key: Any, data: tuple) -> Any:
    n = next(iter(latent.values())).shape[0]
    chunk = min(chunk, n)
    k = -(-n // chunk)
    idx = jnp.minimum(jnp.arange(k * chunk), n - 1).reshape(k, chunk)  # the last chunk padded
    keys = jax.random.split(key, k)
    out = jax.lax.map(
        lambda a: fn(jax.tree.map(lambda v: v[a[0]], latent), a[1], data), (idx, keys)
    )
    return jax.tree.map(lambda v: v.reshape(k * chunk, *v.shape[2:])[:n], out)


def _to_datatree(
    pm: PopulationModel, data: tuple, samples: dict, extra: dict, key: Any, method: str
) -> Any:
    """Posterior, posterior predictive, log likelihood, observed and constant data as a DataTree."""
    import arviz as az

    ds = pm.dataset
    chains, draws = next(iter(samples.values())).shape[:2]
    flat = {k: jnp.asarray(v).reshape(chains * draws, *np.shape(v)[2:]) for k, v in samples.items()}
    latent = {k: v for k, v in flat.items() if not k.startswith("obs_")}

    sites = [f"obs_{o}" for o in pm.spec.errors]

    def chunk_of_draws(latent: dict, key: Any, data: tuple) -> tuple[dict, dict]:
        pp = Predictive(pm, posterior_samples=latent, return_sites=sites, parallel=True)
        return pp(key, None, data[1]), log_likelihood(pm, latent, *data, parallel=True)

    pp, ll = _over_draws(chunk_of_draws, latent, key, data, _draws_per_chunk(pm))

    def shaped(d: Mapping[str, Any]) -> dict:
        return {k: np.asarray(v).reshape(chains, draws, *np.shape(v)[1:]) for k, v in d.items()}

    names = pm.model.output_names
    dims: dict[str, list[str]] = {"pred": ["obs"]}
    coords: dict[str, Any] = {"subject": list(map(str, ds.subjects)), "obs": np.arange(ds.n_obs)}
    for n in samples:
        if n.startswith("eta_study_"):
            dims[n] = ["study"]
            coords["study"] = list(map(str, ds.study_names or ("all",)))
        elif n.startswith("eta_") or n.endswith("_i"):
            dims[n] = ["subject"]
    observed = {}
    for o in pm.spec.errors:
        sel = np.flatnonzero(ds.output == names.index(o))
        dims[f"obs_{o}"] = [f"obs_id_{o}"]  # not the variable's own name (it would be a coordinate)
        coords[f"obs_id_{o}"] = sel
        observed[f"obs_{o}"] = ds.dv[sel]
    post = {k: np.asarray(v) for k, v in samples.items()}
    groups: dict[str, Any] = {
        "posterior": post,
        "posterior_predictive": shaped(pp),
        "log_likelihood": shaped(ll),
        "observed_data": observed,
        "constant_data": {
            "obs_subject": ds.subject,
            "obs_time": ds.time,
            "obs_output": ds.output,
            "obs_censored": ds.censored,
            "obs_row": ds.row,
        },  # fmt: skip
    }
    if extra and method == "nuts":
        extra = dict(extra)
        if warm := extra.pop("warmup", None):  # ArviZ's group for the warm-up's statistics
            groups["warmup_sample_stats"] = {k: np.asarray(v) for k, v in warm.items()}
        groups["sample_stats"] = {k: np.asarray(v) for k, v in extra.items()}
    for k in ("obs_subject", "obs_time", "obs_output", "obs_censored", "obs_row"):
        dims[k] = ["obs"]
    tree = az.from_dict(groups, coords=coords, dims=dims, save_warmup=True)
    tree.attrs["ldpk_method"] = method
    tree.attrs["ldpk_model"] = pm.model.name
    return tree
