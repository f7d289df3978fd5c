"""The fit result, :class:`Fit`: its posterior, summaries, predictions, exposure and
parameter tables; and :func:`load_fit`."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ldpk.data import Dataset
from ldpk.errors import DataError, LdpkError
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
    with the subject effects at their conditional mode given it. ``config`` and
    ``data_options`` are the fit config and the data reader's options, which :meth:`save`
    stores so that :func:`load_fit` can rebuild the fit."""

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
    #: The fit config as read (:func:`ldpk.population.read_config`), kept so that
    #: :meth:`save` can store it and :func:`load_fit` rebuild ``spec`` from it.
    config: Mapping[str, Any] = field(default_factory=dict)
    #: The options the data file was read with (:func:`ldpk.data.read_study`); None when
    #: :func:`ldpk.fit` was given a :class:`~ldpk.data.Dataset` already read.
    data_options: Mapping[str, Any] | None = None
    #: The model file's text and the data file's bytes of a fit read by :func:`load_fit`, so
    #: that saving it again needs neither file (not copied by ``dataclasses.replace``).
    _stored: dict[str, Any] | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def population(self) -> PopulationModel:
        return PopulationModel(self.model, self.dataset, self.spec, self.kernel, self.ode)

    def draws(self, name: str | int, **table_options: Any) -> Any:
        """Posterior draws of the variable ``name``, chains and draws flattened to the first
        axis; or, given a number ``n``, a :class:`~ldpk.ParameterTable` for :func:`ldpk.sweep`
        (``fit.draws(n, subjects=..., ...)``: see :meth:`parameter_table`)."""
        if isinstance(name, int | np.integer) and not isinstance(name, bool):
            return self.parameter_table(int(name), **table_options)
        if table_options:
            raise DataError(f"draws({name!r}): options {sorted(table_options)} are for a number of draws, draws(n, ...)")  # fmt: skip
        v = self.posterior["posterior"][name].values
        return v.reshape(-1, *v.shape[2:])

    def parameter_table(
        self,
        n: int = 1000,
        *,
        subjects: str = "typical",
        n_subjects: int | None = None,
        covariates: Any = None,
        seed: int = 0,
    ) -> ParameterTable:
        """Parameter sets from the posterior for :func:`ldpk.sweep` (which knows nothing of
        fits), in model units: ``n`` population draws (evenly spaced over the chains' draws;
        all of them if there are fewer), and per draw

        - ``subjects='typical'``: one set, every parameter at its typical value given the
          draw (the uncertainty about the population, no between-subject variability);
        - ``subjects='observed'``: one set per fitted subject, its own parameters in that
          draw (its η, its covariates; study effects included): ``n × n_subjects_fitted``
          rows;
        - ``subjects='new'``: ``n_subjects`` new virtual subjects around the draw,
          ``P_i = P_typ · exp(ω z_i)`` with the draw's ω and ``z`` standard normal from
          ``numpy.random.default_rng(seed)`` (one block per parameter with between-subject
          variability, in the fit's order; no study effect): ``n × n_subjects`` rows.

        Rows are draw-major: row ``draw * m + subject``, ``m`` the subjects per draw (the
        provenance records ``draws``, ``subjects``, ``n_subjects`` and, for 'observed', the
        subject IDs). ``covariates`` (typical and new subjects; the fitted subjects keep
        their own): None (each effect at its reference value), a mapping covariate -> a
        value or ``m`` values (one per subject of each draw), a pandas DataFrame whose rows
        are sampled with replacement (``rng`` as above, after the z) — a covariate
        distribution such as a target population's demographics — or ``'observed'``, the
        fitted subjects' covariates sampled with replacement. Covariates the fit has no
        effect of are refused, as are bad counts or modes. Without a fit, draw typical values
        from the model file's priors with :func:`ldpk.design.population_from_priors` and
        subjects with :func:`ldpk.virtual_subjects`."""
        if not isinstance(n, int | np.integer) or isinstance(n, bool) or n <= 0:
            raise DataError(f"parameter_table(): n must be a positive number of draws, got {n!r}")  # fmt: skip
        if subjects not in ("typical", "observed", "new"):
            raise DataError(f"parameter_table(): subjects must be 'typical', 'observed' or 'new', got {subjects!r}")  # fmt: skip
        if n_subjects is not None and subjects != "new":
            raise DataError(f"parameter_table(): n_subjects is for subjects='new' (subjects={subjects!r} has {'one set per draw' if subjects == 'typical' else 'the fitted subjects'})")  # fmt: skip
        if subjects == "new" and n_subjects is None:
            raise DataError("parameter_table(subjects='new'): give n_subjects, the number of new subjects per draw")  # fmt: skip
        if n_subjects is not None and (not isinstance(n_subjects, int | np.integer) or isinstance(n_subjects, bool) or n_subjects <= 0):  # fmt: skip
            raise DataError(f"parameter_table(): n_subjects must be a positive integer, got {n_subjects!r}")  # fmt: skip
        if subjects == "observed" and covariates is not None:
            raise DataError("parameter_table(subjects='observed'): the fitted subjects keep their own covariates; leave covariates out")  # fmt: skip
        if not isinstance(seed, int | np.integer) or isinstance(seed, bool):
            raise DataError(f"parameter_table(): seed must be an integer, got {seed!r}")
        d = self.population_draws(int(n))
        k = len(next(iter(d.values())))
        pm = self.population
        prov: dict[str, Any] = {"method": "posterior", "seed": int(seed) if subjects == "new" or covariates is not None else None, "fit": self.method, "draws": k, "subjects": subjects}  # fmt: skip
        if subjects == "observed":
            m = self.dataset.n_subjects
            z = {p: d[f"eta_{p}"] for p in self.spec.iiv}
            sz = {p: d[f"eta_study_{p}"] for p in self.spec.study_iiv} or None
            params = jax.vmap(lambda pop, z, sz: pm.individual_parameters(pop, z, sz))({c: jnp.asarray(v) for c, v in d.items()}, z, sz)  # fmt: skip
            prov["subject_ids"] = [str(s) for s in self.dataset.subjects]
        else:
            m = 1 if subjects == "typical" else int(n_subjects)
            rng = np.random.default_rng(int(seed))
            z = {p: (rng.standard_normal((k, m)) if subjects == "new" else np.zeros((k, m))).reshape(-1) for p in self.spec.iiv}  # fmt: skip
            covs = self._covariate_rows(covariates, k, m, rng)
            pop = {c: jnp.repeat(jnp.asarray(v), m) for c, v in d.items() if np.ndim(v) == 1}
            params = pm.individual_parameters(pop, {p: jnp.asarray(v) for p, v in z.items()}, None, covs, k * m)  # fmt: skip
            if covariates is not None:
                prov["covariates"] = "observed (resampled)" if isinstance(covariates, str) else type(covariates).__name__  # fmt: skip
        prov["n_subjects"] = m
        values = {p: np.broadcast_to(np.asarray(params[p], dtype=float).reshape(-1), (k * m,)) for p in self.model.parameter_names if p in params}  # fmt: skip
        return ParameterTable.from_mapping(values, provenance=prov)

    def _covariate_rows(self, covariates: Any, k: int, m: int, rng: np.random.Generator) -> dict[str, np.ndarray]:  # fmt: skip
        """Covariate values (k·m,) per covariate with an effect in the fit, draw-major."""
        import pandas as pd

        used = sorted({c.covariate for c in self.spec.covariates})
        if covariates is None:
            return {}
        if isinstance(covariates, str):
            if covariates != "observed":
                raise DataError(f"parameter_table(covariates=): {covariates!r}; give 'observed', a mapping covariate -> values or a DataFrame to sample rows from")  # fmt: skip
            covariates = pd.DataFrame({c: np.asarray(v, dtype=float) for c, v in self.dataset.covariates.items() if c in used})  # fmt: skip
            if covariates.empty and used:
                raise DataError(f"parameter_table(covariates='observed'): the data set has none of the covariates {used}")  # fmt: skip
        names = list(covariates.columns) if isinstance(covariates, pd.DataFrame) else list(covariates) if isinstance(covariates, Mapping) else None  # fmt: skip
        if names is None:
            raise DataError(f"parameter_table(covariates=): a mapping, a pandas DataFrame or 'observed', got {type(covariates).__name__}")  # fmt: skip
        unknown = [c for c in names if c not in used]
        if unknown:
            raise DataError(f"parameter_table(covariates=): the fit has no effect of {unknown}; covariates with an effect: {', '.join(used) or '(none)'}")  # fmt: skip
        out = {}
        if isinstance(covariates, pd.DataFrame):
            if len(covariates) == 0:
                raise DataError("parameter_table(covariates=): the DataFrame has no rows to sample")
            rows = rng.integers(0, len(covariates), size=k * m)
            for c in names:
                try:
                    col = np.asarray(covariates[c], dtype=float)
                except (TypeError, ValueError):
                    raise DataError(f"parameter_table(covariates=): column {c!r} is not numeric") from None  # fmt: skip
                if not np.all(np.isfinite(col)):
                    raise DataError(f"parameter_table(covariates=): column {c!r} has missing or non-finite values")  # fmt: skip
                out[c] = col[rows]
            return out
        for c in names:
            try:
                v = np.asarray(covariates[c], dtype=float).reshape(-1)
            except (TypeError, ValueError):
                raise DataError(f"parameter_table(covariates=): {c!r} is not numeric") from None
            if v.size not in (1, m) or not np.all(np.isfinite(v)):
                raise DataError(f"parameter_table(covariates=): {c!r} needs one finite value or {m} (one per subject of each draw), got {v.size}")  # fmt: skip
            out[c] = np.tile(np.broadcast_to(v, (m,)), k)
        return out

    def summary(self, var_names: list[str] | None = None, ci_prob: float = 0.9) -> Any:
        """Posterior summary table (pandas, one row per population parameter, or per element
        of ``var_names``) at full precision (round for display only): ``mean``, ``median``,
        ``sd``, the central ``ci_prob`` equal-tailed credible interval (``eti90_lb``,
        ``eti90_ub`` for 0.9), ``rse_pct`` (relative standard error, 100 sd / |mean|, as
        NONMEM reports it), and for NUTS the bulk and tail ESS, R-hat and the Monte-Carlo
        standard errors of the mean and sd (``ess_bulk``, ``ess_tail``, ``r_hat``,
        ``mcse_mean``, ``mcse_sd``; Vehtari et al. 2021). Values in model units."""
        import arviz as az

        names = var_names or self.parameter_names()
        kind = "all" if self.method == "nuts" else "stats"
        s = az.summary(self.posterior, var_names=names, ci_prob=ci_prob, kind=kind, round_to="none")  # fmt: skip
        post = self.posterior["posterior"]
        median = np.concatenate([np.median(np.asarray(post[n].values, dtype=float), axis=(0, 1)).reshape(-1) for n in names])  # fmt: skip
        if median.size != len(s):  # arviz's rows are the variables' elements in C order
            raise RuntimeError(f"summary: {len(s)} rows for {median.size} elements")
        s.insert(1, "median", median)
        with np.errstate(divide="ignore", invalid="ignore"):
            rse = 100.0 * s["sd"].to_numpy() / np.abs(s["mean"].to_numpy())
        s.insert(list(s.columns).index("sd") + 3, "rse_pct", rse)
        return s

    def parameter_names(self) -> list[str]:
        """Names of the population-level variables in the posterior."""
        post = self.posterior["posterior"]
        return [n for n in post.data_vars if "subject" not in post[n].dims and "study" not in post[n].dims and n != "pred" and not n.startswith("eta_")]  # fmt: skip

    def save(self, path: str | Path) -> Path:
        """Write the fit to the netCDF-4 file ``path`` (HDF5, through h5netcdf; atomically, so
        a half-written file never appears under ``path``) and return ``path``.

        The posterior DataTree's groups are written unchanged, so ``arviz.from_netcdf(path)``
        reads the posterior as before. The child group ``ldpk_inputs`` holds what
        :func:`load_fit` needs to rebuild the :class:`Fit`: the model file's YAML text with
        the fitted parameter values (a model changed by :meth:`~ldpk.Model.with_values` is
        rebuilt with its values), the data file's bytes and name, and, as JSON, the fit
        config, the data reader options, the method, :class:`FitOptions`,
        :class:`~ldpk.ODEOptions`, the kernel, ``map_values`` and ``timings``. Before writing,
        the model, data set and fit spec are rebuilt from these as :func:`load_fit` will and
        compared with the fit's own. A fit that cannot be rebuilt (a model built in Python,
        with no file; data given as a DataFrame, or as a Dataset read with options the fit
        does not know; a model changed in Python in more than its parameter values) is still
        written, with the reason in the group's ``reload_error`` attribute, which
        :func:`load_fit` reports."""
        from ldpk._io import atomic_path

        path = Path(path)
        inputs = _inputs_group(self)
        encoding = {k: {"zlib": True, "complevel": 4} for k in inputs.data_vars}
        tree = self.posterior
        if INPUTS_GROUP in tree.children:  # a tree read by arviz from a saved fit
            tree = _without_inputs(tree)
        with atomic_path(path) as tmp:
            tree.to_netcdf(tmp, engine="h5netcdf")
            inputs.to_netcdf(tmp, mode="a", group=INPUTS_GROUP, engine="h5netcdf", encoding=encoding)  # fmt: skip
        return path

    def convergence(self) -> list[str]:
        """Convergence problems as sentences with what to try (empty when none)."""
        from ldpk.diagnostics import convergence_warnings

        return convergence_warnings(self)

    def population_draws(self, n_draws: int) -> dict[str, np.ndarray]:
        """``n_draws`` evenly spaced posterior draws (flattened over chains; all of them if
        there are fewer) of every latent variable, by name, in model units (typical values;
        ω as the SD of the log; residual parameters): the draws :meth:`parameter_table` uses,
        in its order, so callers can pair its rows with, e.g., the ω of the same draw."""
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
        d = self.population_draws(n_draws)
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


# ---- saving and loading ----------------------------------------------------------------
#: The child group of a saved fit's netCDF file with what :func:`load_fit` rebuilds it from.
INPUTS_GROUP = "ldpk_inputs"
#: ``format`` and ``version`` attributes of that group; a later ldpk that changes what is stored
#: raises the version, and this one refuses versions it does not know.
SAVE_FORMAT = "ldpk fit"
SAVE_VERSION = 1
#: Model fields besides the parameter values that :meth:`Model.for_species` and
#: ``dataclasses.replace`` may change, stored where they differ from the model file's.
_MODEL_FIELDS = ("name", "description", "time_unit", "amount_unit", "notes", "tracer", "species", "default_route")  # fmt: skip
#: JSON has string keys only: a mapping with other keys is stored as ``{_ITEMS: [[k, v], ...]}``.
_ITEMS = "__ldpk_items__"


class _NotReloadable(Exception):
    """Why a fit cannot be rebuilt from what :meth:`Fit.save` can store."""


def _jsonable(x: Any, where: str) -> Any:
    """``x`` as JSON types (tuples and arrays as lists, numpy scalars as numbers, mappings with
    non-string keys as item lists); anything else raises _NotReloadable naming ``where``."""
    if x is None or isinstance(x, bool | int | float | str):
        return x
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray | jax.Array):
        return np.asarray(x).tolist()
    if isinstance(x, Mapping):
        if all(isinstance(k, str) for k in x) and _ITEMS not in x:
            return {k: _jsonable(v, where) for k, v in x.items()}
        return {_ITEMS: [[_jsonable(k, where), _jsonable(v, where)] for k, v in x.items()]}
    if isinstance(x, list | tuple):
        return [_jsonable(v, where) for v in x]
    raise _NotReloadable(f"{where} holds {x!r} (a {type(x).__name__}), which cannot be stored")


def _key(k: Any) -> Any:
    return tuple(_key(v) for v in k) if isinstance(k, list) else k


def _json_object(d: dict[str, Any]) -> Any:
    return {_key(k): v for k, v in d[_ITEMS]} if set(d) == {_ITEMS} else d


def _dumps(x: Any) -> str:
    import json

    return json.dumps(x, allow_nan=True)


def _loads(text: str) -> Any:
    import json

    return json.loads(text, object_hook=_json_object)


def _same(a: Any, b: Any) -> bool:
    """Equal, recursively through dataclasses, mappings and sequences; arrays element by
    element (NaN equal to NaN)."""
    if dataclasses.is_dataclass(a) and not isinstance(a, type):
        return type(a) is type(b) and all(
            _same(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a) if f.compare
        )  # fmt: skip
    if isinstance(a, Mapping):
        return isinstance(b, Mapping) and set(a) == set(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return isinstance(b, list | tuple) and len(a) == len(b) and all(map(_same, a, b))
    if isinstance(a, np.ndarray | jax.Array | np.generic | float) or isinstance(b, np.ndarray | jax.Array | np.generic | float):  # fmt: skip
        x, y = np.asarray(a), np.asarray(b)
        if x.shape != y.shape:
            return False
        try:
            return bool(np.array_equal(x, y, equal_nan=True))
        except TypeError:  # not numeric
            return bool(np.array_equal(x, y))
    return bool(a == b)


def _same_dataset(a: Dataset, b: Dataset) -> bool:
    """The same observations, doses and covariates (the model and source aside)."""
    skip = {"model", "source"}
    return all(_same(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(Dataset) if f.name not in skip)  # fmt: skip


def _model_from_text(text: str, source: str, folder: Path) -> Model:
    from ldpk.model._load import build_model, read_yaml_file

    file = folder / "model.yaml"
    file.write_text(text, encoding="utf-8")
    return build_model(read_yaml_file(file, "model file"), source=source)


def _rebuild(state: Mapping[str, Any], model_text: str, data_name: str, data: bytes, where: str) -> tuple[Model, Dataset, FitSpec]:  # fmt: skip
    """The model, data set and fit spec of a saved fit, from the model file's text, the data
    file's bytes (written to a temporary file of the same name for the reader) and ``state``
    (see :func:`_inputs_group`); ``where`` names the config in fit_spec's messages."""
    from ldpk.data import read_study
    from ldpk.population import fit_spec

    with _temp_folder() as tmp:
        model = _model_from_text(model_text, state["model_source"], tmp)
        values = {k: np.asarray(v) if isinstance(v, list) else v for k, v in state["model_values"].items()}  # fmt: skip
        model = model.with_values(**values)
        if state["model_fields"]:
            model = dataclasses.replace(model, **state["model_fields"])
        folder = tmp / "data"
        folder.mkdir()
        name = Path(data_name).name
        file = folder / (name if name not in ("", ".", "..") else "data.csv")
        file.write_bytes(data)
        ds = read_study(model, file, **state["data_options"])
    # the original path, not the temporary file's, in the data set and its records' messages
    src, tmp_src = state["data_source"], str(file)
    records = tuple(dataclasses.replace(r, where=src + r.where[len(tmp_src) :]) if r.where.startswith(tmp_src) else r for r in ds.records)  # fmt: skip
    ds = dataclasses.replace(ds, source=src, records=records)
    return model, ds, fit_spec(model, ds, state["config"], where)


def _input_files(fit: Fit) -> tuple[str, str, bytes]:
    """The model file's text, the data file's name and its bytes (from the files, or for a fit
    read by :func:`load_fit`, as they were stored)."""
    from ldpk.model._load import read_text_file

    stored, m, ds = fit._stored or {}, fit.model, fit.dataset
    if stored.get("model_source") == m.source:
        text = stored["model_text"]
    elif not m.source or m.source.startswith("<"):
        raise _NotReloadable(f"its model was built in Python (source {m.source!r}), not read from a model file, and ldpk cannot store a Python-built model")  # fmt: skip
    elif not Path(m.source).is_file():
        raise _NotReloadable(f"its model file {m.source} no longer exists")
    else:
        text = read_text_file(m.source, "model file")
    if stored.get("data_source") == ds.source:
        return text, stored["data_name"], stored["data_bytes"]
    if not ds.source or ds.source.startswith("<"):
        raise _NotReloadable(f"its data were not read from a file (source {ds.source!r}); read them from a file to make the fit reloadable")  # fmt: skip
    if not Path(ds.source).is_file():
        raise _NotReloadable(f"its data file {ds.source} no longer exists")
    return text, Path(ds.source).name, Path(ds.source).read_bytes()


def _inputs_group(fit: Fit) -> Any:
    """The ``ldpk_inputs`` group of a saved fit (see :meth:`Fit.save`): uint8 variables
    ``model_file`` (UTF-8 YAML), ``data_file`` (the file's bytes) and ``state`` (UTF-8 JSON:
    method, kernel, options, ode, config, data_options, map_values, timings, model_values,
    model_fields, model_source, data_source); attributes ``format``, ``version``,
    ``ldpk_version``, ``method``, ``model_source``, ``data_source``, ``data_name``, or
    ``reload_error`` saying why the fit cannot be rebuilt."""
    import warnings

    import xarray as xr

    from ldpk._version import __version__

    m, ds = fit.model, fit.dataset
    attrs = {"format": SAVE_FORMAT, "version": SAVE_VERSION, "ldpk_version": __version__, "method": fit.method, "model_source": m.source, "data_source": ds.source}  # fmt: skip
    try:
        try:
            text, data_name, data = _input_files(fit)
            with warnings.catch_warnings(), _temp_folder() as tmp:
                warnings.simplefilter("ignore")
                base = _model_from_text(text, m.source, tmp)
        except (LdpkError, OSError) as exc:
            raise _NotReloadable(f"its model or data file cannot be read: {exc}") from exc
        if base.parameter_names != m.parameter_names:
            raise _NotReloadable(f"its model differs from its model file {m.source} in its parameters")  # fmt: skip
        fields = {f: getattr(m, f) for f in _MODEL_FIELDS if getattr(m, f) != getattr(base, f)}
        read_opts = fit.data_options if fit.data_options is not None else fit.config.get("data") or {}  # fmt: skip
        state = {
            "method": fit.method,
            "kernel": fit.kernel,
            "options": {
                f.name: getattr(fit.options, f.name) for f in dataclasses.fields(fit.options)
            },
            "ode": None if fit.ode is None else dataclasses.asdict(fit.ode),
            "config": fit.config,
            "data_options": read_opts,
            "map_values": fit.map_values,
            "timings": fit.timings,
            "model_values": {p.name: p.value for p in m.parameters},
            "model_fields": fields,
            "model_source": m.source,
            "data_source": ds.source,
        }
        blob = _dumps(_jsonable(state, "the fit"))
        where = "the fit config"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                m2, ds2, spec2 = _rebuild(_loads(blob), text, data_name, data, where)
            except Exception as exc:  # noqa: BLE001  any failure only makes the fit not reloadable
                raise _NotReloadable(f"rebuilding it from its files failed: {type(exc).__name__}: {exc}") from exc  # fmt: skip
        if m2.structure != m.structure or not _same(tuple(p.value for p in m2.parameters), tuple(p.value for p in m.parameters)):  # fmt: skip
            raise _NotReloadable(f"its model differs from its model file {m.source} in more than parameter values (changed in Python)")  # fmt: skip
        if not _same_dataset(ds2, ds):
            if fit.data_options is None:
                raise _NotReloadable(f"fit() was given the data already read, and reading {ds.source} with the fit config's data: options gives other data; give fit() the file's path (reader options in the config's data: section) to make the fit reloadable")  # fmt: skip
            raise _NotReloadable(f"reading {ds.source} again gives other data than were fitted (was it changed since the fit?)")  # fmt: skip
        if not _same(spec2, fit.spec):
            raise _NotReloadable("its fit config, stored, gives another fit spec")
    except _NotReloadable as exc:
        return xr.Dataset(attrs={**attrs, "reload_error": str(exc)})
    attrs["data_name"] = data_name
    as_bytes = lambda b: np.frombuffer(b, dtype=np.uint8)  # noqa: E731
    return xr.Dataset(
        {
            "model_file": ("model_file_byte", as_bytes(text.encode("utf-8"))),
            "data_file": ("data_file_byte", as_bytes(data)),
            "state": ("state_byte", as_bytes(blob.encode("utf-8"))),
        },
        attrs=attrs,
    )


@contextlib.contextmanager
def _temp_folder() -> Iterator[Path]:
    """A temporary folder, removed afterwards."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="ldpk-fit-") as tmp:
        yield Path(tmp)


def _without_inputs(tree: Any) -> Any:
    """A copy of the DataTree ``tree`` without its ``ldpk_inputs`` group."""
    tree = tree.copy()
    del tree[INPUTS_GROUP]
    return tree


def _fit_file(path: Path) -> Path:
    """The netCDF file of a saved fit: ``path`` itself, or ``path/posterior.nc`` for a folder."""
    if path.is_dir():
        file = path / "posterior.nc"
        if not file.is_file():
            raise DataError(f"{path}: a folder without posterior.nc; give a folder written by `ldpk fit --out` or a file written by Fit.save")  # fmt: skip
        return file
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    return path


def _read_tree(file: Path) -> Any:
    """The whole netCDF file as a DataTree in memory (file closed); DataError when it is not
    netCDF-4/HDF5."""
    import h5py
    import xarray as xr

    try:
        hdf5 = h5py.is_hdf5(file)
    except OSError as exc:
        raise DataError(f"{file}: cannot be read: {exc}") from None
    if not hdf5:
        raise DataError(f"{file}: not a netCDF-4 (HDF5) file, so not a fit saved by ldpk (Fit.save or `ldpk fit --out`)")  # fmt: skip
    try:
        with xr.open_datatree(file, engine="h5netcdf") as tree:
            return tree.load()
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{file}: an HDF5 file that cannot be read as netCDF: {exc}") from None


def load_fit(path: str | Path) -> Fit:
    """Read a fit saved by :meth:`Fit.save` or ``ldpk fit --out``: ``path`` is the netCDF file
    or the folder holding ``posterior.nc``. Returns a :class:`Fit` whose summary,
    convergence, predictions, exposure, parameter tables and draws are those of the fit that
    was saved: the model is rebuilt from the stored model file text (with the fitted parameter
    values), the data set by reading the stored data file's bytes with the stored reader
    options (``dataset.source`` is the original path), the spec from the stored fit config.

    Raises :class:`~ldpk.errors.DataError` naming ``path`` when there is no such file or
    folder, a folder has no ``posterior.nc``, the file is not netCDF-4/HDF5, or it has no
    stored inputs (written by arviz or by an older ldpk, or a fit that could not be
    stored, e.g. of a model built in Python); ``arviz.from_netcdf(path)`` reads the posterior
    of any of these."""
    file = _fit_file(Path(path))
    tree = _read_tree(file)
    bare = f"arviz.from_netcdf({str(file)!r}) reads its posterior DataTree"
    if INPUTS_GROUP not in tree.children:
        raise DataError(f"{file}: netCDF without ldpk's stored fit inputs (the group {INPUTS_GROUP}: saved by arviz or by an older ldpk), so it cannot be read as a Fit; {bare}")  # fmt: skip
    inputs = tree[INPUTS_GROUP].to_dataset()
    attrs = inputs.attrs
    if attrs.get("format") != SAVE_FORMAT or not isinstance(attrs.get("version"), int | np.integer) or attrs["version"] > SAVE_VERSION:  # fmt: skip
        raise DataError(f"{file}: fit inputs of format {attrs.get('format')!r} version {attrs.get('version')!r}, which this ldpk ({SAVE_FORMAT!r} up to version {SAVE_VERSION}) cannot read; {bare}")  # fmt: skip
    if attrs.get("reload_error"):
        raise DataError(f"{file}: this fit cannot be rebuilt as a Fit: {attrs['reload_error']}; {bare}")  # fmt: skip
    try:
        state = _loads(bytes(inputs["state"].values).decode("utf-8"))
        text = bytes(inputs["model_file"].values).decode("utf-8")
        data = bytes(inputs["data_file"].values)
        model, ds, spec = _rebuild(state, text, str(attrs["data_name"]), data, f"{file} (stored fit config)")  # fmt: skip
        options = FitOptions(**{k: v for k, v in state["options"].items() if k in FitOptions.__dataclass_fields__})  # fmt: skip
        ode = None if state["ode"] is None else ODEOptions(**state["ode"])
    except (LdpkError, KeyError, ValueError, TypeError) as exc:
        raise DataError(f"{file}: the stored fit inputs cannot be rebuilt: {exc}; {bare}") from exc  # fmt: skip
    out = Fit(model, ds, spec, state["method"], _without_inputs(tree), state["map_values"], options, ode, state["timings"], state["kernel"], config=state["config"], data_options=state["data_options"])  # fmt: skip
    out._stored = {"model_source": model.source, "model_text": text, "data_source": ds.source, "data_name": str(attrs["data_name"]), "data_bytes": data}  # fmt: skip
    return out
