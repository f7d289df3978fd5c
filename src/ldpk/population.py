"""The numpyro population model: priors, between-subject variability, covariates, residual error
and censoring, built from a :class:`~ldpk.Model`, a :class:`~ldpk.data.Dataset` and a
:class:`FitSpec`.

Structure (NONMEM/nlmixr2 notation in brackets):

- typical values θ_p of every parameter with a prior (other parameters stay at their values);
- log-normal between-subject variability, non-centred: ``P_i = θ_p · c_i · exp(ω_p z_ip)``
  with ``z_ip ~ N(0, 1)`` [ETA = ω z], ``ω_p`` the SD of log P_i [sqrt(OMEGA)];
- optional study-level random effects ``exp(ω_s,p z_s,p)`` shared by a study's subjects;
- covariate factors ``c_i``: power (allometric) ``(X_i / ref)^β``, linear ``1 + β (X_i − ref)``
  and categorical ``exp(β)`` for the level that is not the reference (two levels);
- residual error per output, each with its own parameters: additive, proportional, combined
  (SD = sqrt(a² + b² f²)), log-normal (SD b of log DV) and Student-t (combined scale, ν degrees of
  freedom); left- or right-censored observations by the M3 likelihood (probability mass beyond
  the limit).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from jax.scipy.special import log_ndtr
from numpyro.distributions import constraints

from ldpk.data import Dataset
from ldpk.errors import DataError, ModelError
from ldpk.model import Model, Prior
from ldpk.model._expr import lookalike_hint
from ldpk.model._load import read_text_file, read_yaml_file
from ldpk.model._model import _num, make_prior
from ldpk.solve import ODEOptions, simulate

#: Top-level sections of a fit config.
CONFIG_SECTIONS = {"parameters", "error", "covariates", "study", "data", "fit", "ode"}

ERROR_MODELS = ("additive", "proportional", "combined", "lognormal", "student_t")
COVARIATE_EFFECTS = ("power", "linear", "categorical")

#: Smallest prediction used in proportional and log-normal error (guards log(0) and SD = 0).
TINY = 1e-12


def prior_distribution(p: Prior) -> dist.Distribution:
    """The numpyro distribution of a :class:`~ldpk.model.Prior`."""
    a = dict(p.args)
    match p.dist:
        case "normal":
            return dist.Normal(a["loc"], a["scale"])
        case "lognormal":
            return dist.LogNormal(a["loc"], a["scale"])
        case "halfnormal":
            return dist.HalfNormal(a["scale"])
        case "uniform":
            return dist.Uniform(a["low"], a["high"])
        case "beta":
            return dist.Beta(a["a"], a["b"])
        case "gamma":
            return dist.Gamma(a["shape"], a["rate"])
    raise ModelError(f"prior {p.dist!r} has no distribution")


def _positive(p: Prior) -> bool:
    a = dict(p.args)
    return p.dist in ("lognormal", "halfnormal", "gamma", "beta") or (
        p.dist == "uniform" and a["low"] >= 0
    )


@dataclass(frozen=True)
class ErrorModel:
    """Residual error of one output: ``kind`` (one of ``ERROR_MODELS``) and priors on its
    additive SD ``a`` (output unit), proportional SD ``b`` (fraction; for ``lognormal`` the SD of
    log DV) and, for ``student_t``, the degrees of freedom ``nu``."""

    kind: str = "combined"
    additive: Prior | None = None
    proportional: Prior | None = None
    nu: Prior | None = None

    @property
    def uses_additive(self) -> bool:
        return self.kind in ("additive", "combined", "student_t")

    @property
    def uses_proportional(self) -> bool:
        return self.kind in ("proportional", "combined", "lognormal", "student_t")


@dataclass(frozen=True)
class CovariateEffect:
    """A covariate effect on a parameter's individual values. ``kind``: power (allometric;
    ``(X/reference)^beta``), linear (``1 + beta (X - reference)``) or categorical (a factor
    ``exp(beta)`` for subjects whose value is not ``reference``: two levels; a covariate with
    more levels takes one 0/1 indicator column per non-reference level). ``beta`` is a fixed
    number or a prior (estimated)."""

    parameter: str
    covariate: str
    kind: str = "power"
    reference: float = 1.0
    beta: float | Prior = 1.0

    @property
    def name(self) -> str:
        return f"beta_{self.parameter}_{self.covariate}"


@dataclass(frozen=True)
class FitSpec:
    """What is estimated and how. Built by :func:`fit_spec` from the model file and overrides.

    ``priors``: parameter name → prior of its typical value (estimated parameters);
    ``iiv``: parameter name → prior of ω (SD of the log-normal between-subject effect);
    ``study_iiv``: parameter name → prior of the between-study SD; ``errors``: output name →
    :class:`ErrorModel`; ``covariates``: covariate effects; ``fixed``: values of parameters
    held fixed (overriding the model's)."""

    priors: dict[str, Prior]
    iiv: dict[str, Prior] = field(default_factory=dict)
    study_iiv: dict[str, Prior] = field(default_factory=dict)
    errors: dict[str, ErrorModel] = field(default_factory=dict)
    covariates: tuple[CovariateEffect, ...] = ()
    fixed: dict[str, float] = field(default_factory=dict)


def default_iiv_prior(omega: float) -> Prior:
    """ω ~ half-normal with scale 2ω₀ (ω₀ the model file's ``iiv``): weakly informative on the
    log scale (median ≈ 1.35 ω₀), allowing far more variability than the file's value."""
    return Prior("halfnormal", (("scale", max(2.0 * omega, 0.1)),))


def fit_spec(
    model: Model,
    data: Dataset | None = None,
    config: Mapping[str, Any] | str | Path | None = None,
    where: str | None = None,
) -> FitSpec:
    """Build the :class:`FitSpec` from the model file's priors and ``iiv`` values, overridden by
    ``config`` (a mapping or a YAML/TOML file):

    .. code-block:: yaml

        parameters:
          KA: {prior: {dist: lognormal, loc: 0.5, scale: 0.5}, iiv: {dist: halfnormal, scale: 1}}
          F: {fixed: 0.8}           # hold at 0.8 (`fixed: true`: at the model value)
          TLAG: {iiv: none}         # no between-subject variability
        error:
          cp: {model: additive, additive: {dist: halfnormal, scale: 2}}
        covariates:
          - {parameter: CL, covariate: WT, kind: power, reference: 70, beta: 0.75}
        study: [CL]                 # study-level random effect on CL
        data: {time_unit: min, outputs: {lung: pct_lung}}   # options of the data reader
        fit: {chains: 4, warmup: 1000, samples: 1000}       # FitOptions
        ode: {solver: tsit5, rtol: 1.0e-6}                  # ODEOptions (ODE kernel)

    Default residual error: combined, with SD priors half-normal(scale = SD of the output's
    observations) for the additive part and half-normal(0.5) for the proportional part."""
    cfg = read_config(config)
    where = where or (str(config) if isinstance(config, (str, Path)) else "fit config")
    unknown = set(cfg) - CONFIG_SECTIONS
    if unknown:
        raise ModelError(f"{where}: unknown entries {sorted(unknown)}; valid: {', '.join(sorted(CONFIG_SECTIONS))}")  # fmt: skip
    names = set(model.parameter_names)
    priors: dict[str, Prior] = {}
    iiv: dict[str, Prior] = {}
    fixed: dict[str, float] = {}
    for p in model.parameters:
        if p.prior is not None and p.prior.dist != "fixed":
            priors[p.name] = p.prior
            if p.iiv is not None:
                iiv[p.name] = default_iiv_prior(p.iiv)
    for name, over in (cfg.get("parameters") or {}).items():
        at = f"{where}: parameters.{name}"
        if name not in names:
            hint = lookalike_hint(str(name), model.parameter_names)
            raise ModelError(f"{at}: {model.name} has no parameter {name!r}{hint}; parameters: {', '.join(model.parameter_names)}")  # fmt: skip
        if not isinstance(over, Mapping) or not set(over) <= {"prior", "iiv", "fixed"}:
            raise ModelError(f"{at}: give a mapping with prior:, iiv: and/or fixed:")
        if "fixed" in over and over["fixed"] is not False:
            # `fixed: true` holds the model's value; `fixed: 0.8` holds 0.8
            value = over["fixed"]
            fixed[name] = float(model.parameter(name).value) if value is True else _num(value, f"{at}.fixed")  # fmt: skip
            priors.pop(name, None)
            iiv.pop(name, None)
            continue
        if "prior" in over:
            priors[name] = make_prior(over["prior"], f"{at}.prior")
        if "iiv" in over:
            v = over["iiv"]
            if v in (None, "none", False, 0):
                iiv.pop(name, None)
            elif isinstance(v, (int, float)):
                iiv[name] = default_iiv_prior(float(v))
            else:
                iiv[name] = make_prior(v, f"{at}.iiv")
    for name in iiv:
        if name not in priors:
            raise ModelError(f"{where}: parameter {name} has between-subject variability but no prior (it is not estimated)")  # fmt: skip
        if not _positive(priors[name]):
            raise ModelError(f"{where}: parameter {name} has log-normal between-subject variability, so its prior must be on positive values (lognormal, halfnormal, gamma, uniform with low >= 0), not {priors[name].dist}")  # fmt: skip
    study_iiv = {}
    for name in cfg.get("study") or ():
        if name not in priors:
            raise ModelError(f"{where}: study: {name} is not an estimated parameter; estimated: {', '.join(priors)}")  # fmt: skip
        if data is not None and data.study is None:
            raise ModelError(f"{where}: study: random effects between studies need a STUDY column in the data")  # fmt: skip
        study_iiv[name] = Prior("halfnormal", (("scale", 0.5),))
    covs = tuple(_covariate_effect(c, model, priors, where, i) for i, c in enumerate(cfg.get("covariates") or ()))  # fmt: skip
    for c in covs:
        if data is not None and c.covariate not in data.covariates:
            raise ModelError(f"{where}: covariate effect on {c.parameter}: the data have no numeric column {c.covariate!r}; columns: {', '.join(data.covariates) or '(none)'}")  # fmt: skip
        if data is not None and c.kind == "categorical":
            levels = np.unique(np.asarray(data.covariates[c.covariate], dtype=float))
            others = levels[levels != c.reference]
            if others.size > 1:  # one β for every non-reference level would be silently wrong
                raise ModelError(f"{where}: categorical effect of {c.covariate} on {c.parameter}: the data have {levels.size} levels ({', '.join(f'{v:g}' for v in levels)}), and a categorical effect has one β for the level other than the reference ({c.reference:g}); add one 0/1 indicator column per non-reference level, each with its own categorical effect (reference 0)")  # fmt: skip
    errors = _error_models(model, data, cfg.get("error") or {}, where)
    if not priors:
        raise ModelError(f"{model.source}: no parameter has a prior, so nothing is estimated; add `prior:` to parameters in the model file or a fit config")  # fmt: skip
    return FitSpec(priors, iiv, study_iiv, errors, covs, fixed)


def read_config(config: Mapping[str, Any] | str | Path | None) -> dict[str, Any]:
    """A fit config as a dict: a mapping as given, or a YAML (or ``.toml``) file, read with the
    model files' bounds (``ldpk.model._load.MAX_FILE_BYTES``, alias expansion, nesting) and
    encodings (UTF-8 with or without a byte-order mark, UTF-16, UTF-32); every problem is a
    ModelError naming the file and, where known, the line."""
    if config is None:
        return {}
    if isinstance(config, Mapping):
        return dict(config)
    path = Path(config)
    if not path.exists():
        raise ModelError(f"{path}: no such fit config")
    if path.suffix.lower() == ".toml":
        import tomllib

        text = read_text_file(path, "fit config")
        try:
            out = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ModelError(f"{path}: not valid TOML: {exc}") from None
        except RecursionError:
            raise ModelError(f"{path}: not valid TOML: nested too deeply to read") from None
    else:
        out = read_yaml_file(path, "fit config")
        out = {} if out is None else out
    if not isinstance(out, Mapping):
        raise ModelError(f"{path}: a fit config is a mapping at top level")
    return dict(out)


class UnestimatedParameterWarning(UserWarning):
    """Parameters of a fit that have neither a prior nor ``fixed:``: held at their model values
    without being declared fixed (see :func:`check_fit_inputs`)."""


#: Error models whose likelihood needs positive observations (log scale, or an SD proportional
#: to the value): a zero or negative uncensored observation has no density there.
POSITIVE_ERROR_MODELS = ("proportional", "lognormal")


def unestimated_parameters(model: Model, spec: FitSpec) -> tuple[str, ...]:
    """Parameters that are neither estimated (a prior) nor declared fixed (``fixed:`` in the
    config, or ``prior: {dist: fixed}`` in the model file, or taken from the species'
    physiology tables, whose values are cited constants): a fit holds them at their values."""
    declared = {
        p.name
        for p in model.parameters
        if (p.prior is not None and p.prior.dist == "fixed") or p.physiology is not None
    }
    return tuple(
        n
        for n in model.parameter_names
        if n not in spec.priors and n not in spec.fixed and n not in declared
    )


def check_fit_inputs(
    model: Model, data: Dataset | None, spec: FitSpec, where: str | None = None
) -> tuple[str, ...]:
    """Checks of a fit's inputs made before anything is compiled; :func:`ldpk.fit` calls it.

    - Parameters with neither a prior nor ``fixed:`` are held at their model values: one
      :class:`UnestimatedParameterWarning` names them (returned too).
    - An uncensored observation <= 0 of an output with a proportional or log-normal error
      model has no likelihood: DataError naming the output and the rows, pointing to
      censoring (BLQ/LLOQ) for values below a quantification limit."""
    where = where or model.source
    held = unestimated_parameters(model, spec)
    if held:
        warnings.warn(
            f"{where}: parameter(s) {', '.join(held)} have neither a prior nor `fixed:`, so the "
            "fit holds them at their model values ("
            + ", ".join(
                f"{n}={model.parameter(n).value:g}"
                for n in held[:10]
                if _is_number(model.parameter(n).value)
            )  # fmt: skip
            + "). Give each a `prior:` to estimate it, or declare it fixed: `fixed: true` (or a "
            "value) under `parameters:` in the fit config, or `prior: {dist: fixed}` in the "
            "model file",
            UnestimatedParameterWarning,
            stacklevel=3,
        )
    if data is not None:
        names = model.output_names
        for out, err in spec.errors.items():
            if err.kind not in POSITIVE_ERROR_MODELS:
                continue
            sel = (np.asarray(data.output) == names.index(out)) & (np.asarray(data.censored) == 0)
            bad = np.flatnonzero(sel & ~(np.asarray(data.dv, dtype=float) > 0))
            if bad.size:
                rows = [int(r) for r in np.asarray(data.row)[bad]]
                vals = [float(v) for v in np.asarray(data.dv, dtype=float)[bad]]
                shown = ", ".join(f"row {r} ({v:g})" for r, v in zip(rows[:10], vals[:10], strict=True))  # fmt: skip
                more = f" and {len(rows) - 10} more" if len(rows) > 10 else ""
                raise DataError(
                    f"{data.source}: output {out!r} has a {err.kind} error model, which needs "
                    f"observations > 0, but {len(rows)} uncensored observation(s) are zero or "
                    f"negative: {shown}{more}. If these are below a limit of quantification, "
                    "mark them censored (a BLQ column with 1, or CENS/LIMIT or LLOQ columns) so "
                    "they enter as P(value < limit); otherwise use an additive or combined "
                    f"error model for {out!r} (`error: {{{out}: {{model: combined}}}}`)"
                )
    return held


def _is_number(v: Any) -> bool:
    try:
        float(v)
    except (TypeError, ValueError):
        return False
    return True


def _covariate_effect(c: Any, model: Model, priors: dict, where: str, i: int) -> CovariateEffect:
    at = f"{where}: covariates[{i}]"
    if not isinstance(c, Mapping) or not {"parameter", "covariate"} <= set(c):
        raise ModelError(f"{at}: give {{parameter: P, covariate: X, kind: power|linear|categorical, reference: R, beta: number or prior}}")  # fmt: skip
    if c["parameter"] not in model.parameter_names:
        raise ModelError(f"{at}: {c['parameter']!r} is not a parameter of {model.name}")
    kind = c.get("kind", "power")
    if kind not in COVARIATE_EFFECTS:
        raise ModelError(f"{at}: kind {kind!r}; valid: {', '.join(COVARIATE_EFFECTS)}")
    beta = c.get("beta", 1.0 if kind == "power" else 0.0)
    if kind == "categorical" and not isinstance(beta, Mapping):
        beta = {"dist": "normal", "loc": 0.0, "scale": 0.5}
    beta = float(beta) if isinstance(beta, (int, float)) else make_prior(beta, f"{at}.beta")
    ref = c.get("reference", 70.0 if kind == "power" else 0.0)
    return CovariateEffect(str(c["parameter"]), str(c["covariate"]), kind, float(ref), beta)


def _error_models(model: Model, data: Dataset | None, cfg: Mapping, where: str) -> dict:
    outs = data.outputs_observed() if data is not None else model.output_names
    unknown = set(cfg) - set(model.output_names)
    if unknown:
        hint = "".join(lookalike_hint(str(u), model.output_names) for u in sorted(unknown, key=str)[:1])  # fmt: skip
        raise ModelError(f"{where}: error: {sorted(unknown, key=str)} are not outputs of {model.name}{hint}; outputs: {', '.join(model.output_names)}")  # fmt: skip
    errors = {}
    for o in outs:
        c = dict(cfg.get(o) or {})
        kind = c.pop("model", "combined")
        if kind not in ERROR_MODELS:
            raise ModelError(f"{where}: error.{o}.model {kind!r}; valid: {', '.join(ERROR_MODELS)}")  # fmt: skip
        bad = set(c) - {"additive", "proportional", "nu"}
        if bad:
            raise ModelError(f"{where}: error.{o}: unknown {sorted(bad)}; valid: model, additive, proportional, nu")  # fmt: skip
        scale = 1.0
        if data is not None:
            sel = (data.output == model.output_names.index(o)) & (data.censored == 0)
            if sel.any():
                scale = float(np.std(data.dv[sel])) or float(np.abs(data.dv[sel]).max()) or 1.0
        e = ErrorModel(kind)
        if e.uses_additive:
            e = replace(e, additive=make_prior(c["additive"], f"{where}: error.{o}.additive") if "additive" in c else Prior("halfnormal", (("scale", scale),)))  # fmt: skip
        if e.uses_proportional:
            e = replace(e, proportional=make_prior(c["proportional"], f"{where}: error.{o}.proportional") if "proportional" in c else Prior("halfnormal", (("scale", 0.5),)))  # fmt: skip
        if kind == "student_t":
            e = replace(e, nu=make_prior(c["nu"], f"{where}: error.{o}.nu") if "nu" in c else Prior("gamma", (("shape", 2.0), ("rate", 0.1))))  # fmt: skip
        errors[o] = e
    return errors


def _log_normal_mass(lo: Any, hi: Any) -> Any:
    """log(Φ(hi) − Φ(lo)) for standardised bounds lo < hi, either infinite (lo = −inf: the
    M3 tail log Φ(hi)), computed from the tail where both lie so that far tails keep their
    precision; finite gradients where a bound is infinite."""
    lo_inf, hi_inf = jnp.isneginf(lo), jnp.isposinf(hi)
    lo0, hi0 = jnp.where(lo_inf, 0.0, lo), jnp.where(hi_inf, 0.0, hi)
    upper = hi_inf | (~lo_inf & (lo0 > 0))  # Φ(hi) − Φ(lo) = Φ(−lo) − Φ(−hi)
    big = log_ndtr(jnp.where(upper, -lo0, hi0))
    small = jnp.where(upper, jnp.where(hi_inf, -jnp.inf, log_ndtr(-hi0)), jnp.where(lo_inf, -jnp.inf, log_ndtr(lo0)))  # fmt: skip
    return big + jnp.log1p(-jnp.exp(small - big))


class Residual(dist.Distribution):
    """Residual-error likelihood of observations ``value`` given predictions ``loc`` and SD
    ``scale`` (log-scale SD for log-normal), with censoring: ``censored`` +1 means the true
    value is below ``value`` (the limit), −1 above it; then the log-likelihood is the log
    probability beyond the limit (M3), or with ``bound`` (the other end of the interval; NaN
    for none) the log probability between ``bound`` and the limit (M4-style interval
    censoring, e.g. a concentration between 0 and the LLOQ); ``censored=None``: no
    observation is censored (the densities alone, without the cost of the tail
    probabilities). ``kind``: 'normal', 'lognormal' or 'student_t'."""

    arg_constraints = {"loc": constraints.real, "scale": constraints.positive}
    support = constraints.real
    pytree_data_fields = ("loc", "scale", "censored", "nu", "bound")
    pytree_aux_fields = ("kind",)

    def __init__(
        self, loc: Any, scale: Any, censored: Any, kind: str = "normal", nu: Any = 1.0,
        bound: Any = None, *, validate_args: bool | None = None,
    ) -> None:  # fmt: skip
        self.loc, self.scale, self.censored, self.kind, self.nu = loc, scale, censored, kind, nu
        self.bound = bound
        shapes = [jnp.shape(loc), jnp.shape(scale)] + ([] if censored is None else [jnp.shape(censored)])  # fmt: skip
        batch = jax.lax.broadcast_shapes(*shapes)
        super().__init__(batch_shape=batch, validate_args=validate_args)

    def _base(self) -> dist.Distribution:
        if self.kind == "student_t":
            return dist.StudentT(self.nu, self.loc, self.scale)
        if self.kind == "lognormal":
            return dist.LogNormal(jnp.log(jnp.maximum(self.loc, TINY)), self.scale)
        return dist.Normal(self.loc, self.scale)

    def sample(self, key: Any, sample_shape: tuple = ()) -> Any:
        return self._base().sample(key, sample_shape)

    def log_prob(self, value: Any) -> Any:
        base = self._base()
        if self.censored is None:  # no observation can be censored: densities only
            return base.log_prob(value)
        # One tail probability per observation: below the limit (censored +1) or above it (-1),
        # or with bounds the probability between them.
        side = jnp.where(self.censored < 0, -1.0, 1.0)
        if self.bound is not None:
            tail = self._interval(value, side)
        elif self.kind == "lognormal":
            safe = jnp.where(value > 0, value, 1.0)
            tail = log_ndtr(side * (jnp.log(safe) - jnp.log(jnp.maximum(self.loc, TINY))) / self.scale)  # fmt: skip
        elif self.kind == "student_t":
            c = base.cdf(value)
            tail = jnp.where(side > 0, jnp.log(c), jnp.log1p(-c))
        else:
            tail = log_ndtr(side * (value - self.loc) / self.scale)
        return jnp.where(self.censored != 0, tail, self._density(value))

    def _density(self, value: Any) -> Any:
        if self.kind == "lognormal":
            safe = jnp.where(value > 0, value, 1.0)
            return jnp.where(value > 0, self._base().log_prob(safe), -jnp.inf)
        return self._base().log_prob(value)

    def _interval(self, limit: Any, side: Any) -> Any:
        """log P(lo < Y < hi): (bound, limit) below a lower limit (side +1), (limit, bound)
        above an upper one (-1); a NaN bound is -inf or +inf (the M3 tail)."""
        bound = jnp.where(jnp.isnan(self.bound), -side * jnp.inf, self.bound)
        lo, hi = jnp.where(side > 0, bound, limit), jnp.where(side > 0, limit, bound)
        if self.kind == "student_t":
            base = self._base()
            safe_lo, safe_hi = jnp.where(jnp.isfinite(lo), lo, 0.0), jnp.where(jnp.isfinite(hi), hi, 0.0)  # fmt: skip
            c_lo = jnp.where(jnp.isneginf(lo), 0.0, base.cdf(safe_lo))
            c_hi = jnp.where(jnp.isposinf(hi), 1.0, base.cdf(safe_hi))
            return jnp.log(c_hi - c_lo)
        if self.kind == "lognormal":
            mu = jnp.log(jnp.maximum(self.loc, TINY))

            def z(x: Any) -> Any:  # log scale; x <= 0 is -inf (the whole lower tail), inf is inf
                safe = jnp.where(x > 0, x, 1.0)
                return jnp.where(x > 0, (jnp.log(safe) - mu) / self.scale, -jnp.inf)

            return _log_normal_mass(z(lo), z(hi))
        return _log_normal_mass((lo - self.loc) / self.scale, (hi - self.loc) / self.scale)


@dataclass(frozen=True)
class PopulationModel:
    """A numpyro model function for ``dataset`` under ``spec`` (call it as ``pm(dv)``; with
    ``dv=None`` it simulates observations). ``censored`` (optional, length n_obs) replaces the
    dataset's censoring flags: passed as an argument, the data of a fit are arguments of its
    compiled functions, so a fit to new data on the same design reuses them (simulation-based
    calibration, bootstraps). ``kernel`` options go to :func:`ldpk.simulate`. ``censoring``:
    whether any observation can be censored (default: whether the dataset has a censored
    one); False leaves the M3 terms out of the compiled likelihood, and censoring flags given
    to the call are then ignored."""

    model: Model
    dataset: Dataset
    spec: FitSpec
    method: str = "auto"
    ode: ODEOptions | None = None
    censoring: bool | None = None

    @property
    def has_censoring(self) -> bool:
        if self.censoring is not None:
            return self.censoring
        return bool(np.any(np.asarray(self.dataset.censored) != 0))

    @property
    def estimated(self) -> tuple[str, ...]:
        return tuple(p for p in self.model.parameter_names if p in self.spec.priors)

    def individual_parameters(
        self,
        pop: Mapping[str, Any],
        z: Mapping[str, Any],
        study_z: Mapping[str, Any] | None = None,
        covariates: Mapping[str, Any] | None = None,
        n: int | None = None,
    ) -> dict[str, Any]:
        """Parameter values of ``n`` individuals (default: the dataset's subjects) from typical
        values and ω (``pop``), standardised effects (``z['CL']``: (n,)), study effects
        (``study_z``, indexed by the dataset's study of each subject) and covariate effects
        (``covariates``: values per individual; default the dataset's subject covariates)."""
        ds, spec = self.dataset, self.spec
        n = ds.n_subjects if n is None else n
        covs = ds.covariates if covariates is None else covariates
        out: dict[str, Any] = {}
        for name in self.model.parameter_names:
            if name in spec.fixed:
                out[name] = jnp.full(n, spec.fixed[name])
                continue
            if name not in spec.priors:
                continue
            v = jnp.broadcast_to(pop[name], (n,))
            if name in spec.iiv:
                v = v * jnp.exp(pop[f"omega_{name}"] * z[name])
            if name in spec.study_iiv and study_z is not None:
                v = v * jnp.exp(pop[f"omega_study_{name}"] * study_z[name][ds.study])
            out[name] = v
        for c in spec.covariates:
            x = jnp.broadcast_to(jnp.asarray(covs.get(c.covariate, c.reference), dtype=float), (n,))
            beta = pop[c.name] if isinstance(c.beta, Prior) else c.beta
            if c.kind == "power":
                f = (x / c.reference) ** beta
            elif c.kind == "linear":
                f = 1.0 + beta * (x - c.reference)
            else:
                f = jnp.exp(jnp.where(x == c.reference, 0.0, beta))
            base = out.get(c.parameter, jnp.full(n, self.model.parameter(c.parameter).value))
            out[c.parameter] = base * f
        return out

    def predict_observations(self, params: Mapping[str, Any]) -> Any:
        """Model predictions at every observation (vector of length n_obs)."""
        ds = self.dataset
        sim = simulate(
            self.model, params, ds.table, method=self.method, ode=self.ode, check=False,
            decay_corrected=ds.decay_corrected, outputs=ds.outputs_observed(),
        )  # fmt: skip
        pred = sim.outputs[ds.subject, ds.position, ds.output]
        return pred if ds.scale is None else pred * ds.scale

    def _latent(self) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any] | None, dict[str, tuple]]:  # fmt: skip
        """Sample every latent site from its prior: typical values, ω, covariate effects
        (``pop``), standardised subject and study effects (``z``, ``study_z``) and per output
        the residual error parameters (additive SD, proportional SD, Student-t ν)."""
        ds, spec = self.dataset, self.spec
        pop: dict[str, Any] = {}
        for name in self.estimated:
            pop[name] = numpyro.sample(name, prior_distribution(spec.priors[name]))
        for name, pr in spec.iiv.items():
            pop[f"omega_{name}"] = numpyro.sample(f"omega_{name}", prior_distribution(pr))
        for name, pr in spec.study_iiv.items():
            pop[f"omega_study_{name}"] = numpyro.sample(f"omega_study_{name}", prior_distribution(pr))  # fmt: skip
        for c in spec.covariates:
            if isinstance(c.beta, Prior):
                pop[c.name] = numpyro.sample(c.name, prior_distribution(c.beta))
        z: dict[str, Any] = {}
        if spec.iiv:
            with numpyro.plate("subject", ds.n_subjects):
                for name in spec.iiv:
                    z[name] = numpyro.sample(f"eta_{name}", dist.Normal(0.0, 1.0))
        study_z = None
        if spec.study_iiv:
            n_study = len(ds.study_names) or 1
            study_z = {}
            with numpyro.plate("study", n_study):
                for name in spec.study_iiv:
                    study_z[name] = numpyro.sample(f"eta_study_{name}", dist.Normal(0.0, 1.0))
        errors: dict[str, tuple] = {}
        for out, err in spec.errors.items():
            a = numpyro.sample(f"sigma_add_{out}", prior_distribution(err.additive)) if err.uses_additive else 0.0  # fmt: skip
            b = numpyro.sample(f"sigma_prop_{out}", prior_distribution(err.proportional)) if err.uses_proportional else 0.0  # fmt: skip
            nu = numpyro.sample(f"nu_{out}", prior_distribution(err.nu)) if err.kind == "student_t" else 1.0  # fmt: skip
            errors[out] = (a, b, nu)
        return pop, z, study_z, errors

    def priors(self, *args: Any, **kwargs: Any) -> None:
        """The latent sites alone, from their priors: no predictions and no likelihood (a
        numpyro model for starting values and transforms that needs no solve; arguments are
        ignored)."""
        self._latent()

    def __call__(self, dv: Any = None, censored: Any = None) -> None:
        ds, spec = self.dataset, self.spec
        censored = jnp.asarray(ds.censored if censored is None else censored)
        cens = self.has_censoring
        pop, z, study_z, errors = self._latent()
        indiv = self.individual_parameters(pop, z, study_z)
        for name in spec.iiv:
            numpyro.deterministic(f"{name}_i", indiv[name])
        pred = self.predict_observations(indiv)
        numpyro.deterministic("pred", pred)
        names = self.model.output_names
        for out, err in spec.errors.items():
            sel = np.flatnonzero(ds.output == names.index(out))
            f = pred[sel]
            a, b, nu = errors[out]
            if err.kind == "lognormal":
                scale, kind = jnp.broadcast_to(b, f.shape), "lognormal"
            else:
                scale = jnp.sqrt(a**2 + (b * jnp.abs(f)) ** 2 + TINY**2)
                kind = "student_t" if err.kind == "student_t" else "normal"
            bound = None if ds.bound is None or not cens else jnp.asarray(ds.bound[sel])
            numpyro.sample(
                f"obs_{out}", Residual(f, scale, censored[sel] if cens else None, kind, nu, bound),
                obs=None if dv is None else dv[sel],
            )  # fmt: skip
