"""The fit result, :class:`Fit`: its posterior, summaries, predictions, exposure and
parameter tables; and :func:`load_fit`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ldpk.data import Dataset
from ldpk.errors import DataError
from ldpk.exposure import compute as compute_exposure
from ldpk.inference._predict import _with_times
from ldpk.inference._settings import FitOptions
from ldpk.model import Model
from ldpk.paramsets import ParameterTable
from ldpk.population import FitSpec, PopulationModel
from ldpk.solve import ODEOptions


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


def load_fit(path: str | Path) -> Any:
    """Read a posterior DataTree written by :meth:`Fit.save`."""
    import arviz as az

    return az.from_netcdf(str(path), engine="h5netcdf")
