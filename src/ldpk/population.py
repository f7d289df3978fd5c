"""The numpyro population model: priors, between-subject variability, covariates, residual error
and censoring, built from a :class:`~ldpk.Model`, a :class:`~ldpk.data.Dataset` and a
:class:`FitSpec`.

Structure (NONMEM/nlmixr2 notation in brackets):

- typical values θ_p of every parameter with a prior (other parameters stay at their values);
- log-normal between-subject variability, non-centred: ``P_i = θ_p · c_i · exp(ω_p z_ip)``
  with ``z_ip ~ N(0, 1)`` [ETA = ω z], ``ω_p`` the SD of log P_i [sqrt(OMEGA)];
- optional study-level random effects ``exp(ω_s,p z_s,p)`` shared by a study's subjects;
- covariate factors ``c_i``: power (allometric) ``(X_i / ref)^β``, linear ``1 + β (X_i − ref)``,
  exponential ``exp(β (X_i − ref))`` and categorical, one ``β_k`` per level ``k`` other than the
  reference: ``exp(β_k)`` or, proportional, ``1 + β_k`` [``(1 + THETA)``];
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
COVARIATE_EFFECTS = ("power", "linear", "categorical", "exponential")
#: Forms of a categorical effect: the factor of a subject at level k is exp(β_k) or 1 + β_k.
CATEGORICAL_FORMS = ("exponential", "proportional")
#: Entries of one effect in a fit config's ``covariates:`` list.
COVARIATE_KEYS = ("parameter", "covariate", "kind", "reference", "beta", "form", "levels")
#: Prior of a categorical β (each level) when the config gives none; with the proportional form
#: it is truncated to β > −1, so that 1 + β > 0.
DEFAULT_CATEGORICAL_PRIOR = Prior("normal", (("loc", 0.0), ("scale", 0.5)))

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
    """A covariate effect on a parameter's individual values: the parameter is multiplied by a
    factor of the subject's covariate value X. ``kind``: power (allometric;
    ``(X/reference)^beta``), linear (``1 + beta (X - reference)``), exponential
    (``exp(beta (X - reference))``) or categorical: one ``beta`` per level in ``levels`` (the
    levels other than ``reference``), the factor of a subject at level k being ``exp(beta_k)``
    (``form`` exponential) or ``1 + beta_k`` (``form`` proportional, NONMEM's ``(1 + THETA)``);
    the reference level and any value not in ``levels`` have factor 1. With ``levels`` empty,
    every value other than the reference shares one ``beta`` (two levels).

    ``beta`` is a fixed number or a prior (estimated), or for a categorical effect with more
    than one level a tuple of them, one per level. The numpyro sites are ``site_names``:
    ``beta_<parameter>_<covariate>`` and, with more than one level,
    ``beta_<parameter>_<covariate>_<level>`` per level (the level written with ``:g``, ``-`` as
    ``m`` and ``.`` as ``_``: ``beta_CL_RACE_2``, ``beta_CL_DOSE_0_5``)."""

    parameter: str
    covariate: str
    kind: str = "power"
    reference: float = 1.0
    beta: float | Prior | tuple[float | Prior, ...] = 1.0
    form: str = "exponential"
    levels: tuple[float, ...] = ()

    @property
    def name(self) -> str:
        return f"beta_{self.parameter}_{self.covariate}"

    @property
    def site_names(self) -> tuple[str, ...]:
        """Names of the effect's β, one per level of a categorical effect with several."""
        if self.kind != "categorical" or len(self.levels) <= 1:
            return (self.name,)
        return tuple(f"{self.name}_{level_name(v)}" for v in self.levels)

    @property
    def betas(self) -> tuple[float | Prior, ...]:
        """The β of each of ``site_names``: a fixed number or a prior."""
        if isinstance(self.beta, tuple):
            return self.beta
        return (self.beta,) * len(self.site_names)

    def factor(self, x: Any, values: Mapping[str, Any]) -> Any:
        """The factor at covariate values ``x``; ``values``: estimated β by site name."""
        b = [values[s] if isinstance(v, Prior) else v for s, v in zip(self.site_names, self.betas, strict=True)]  # fmt: skip
        match self.kind:
            case "power":
                return (x / self.reference) ** b[0]
            case "linear":
                return 1.0 + b[0] * (x - self.reference)
            case "exponential":
                return jnp.exp(b[0] * (x - self.reference))
        if self.levels:  # a static tuple: one select per level, traced once
            shift = sum(jnp.where(x == v, bk, 0.0) for v, bk in zip(self.levels, b, strict=True))
        else:
            shift = jnp.where(x == self.reference, 0.0, b[0])
        return 1.0 + shift if self.form == "proportional" else jnp.exp(shift)

    def prior_distribution(self, p: Prior) -> dist.Distribution:
        """The numpyro distribution of one of the effect's β priors: with the proportional
        form a normal prior is truncated to β > −1 (factor 1 + β > 0)."""
        if self.form == "proportional" and p.dist == "normal":
            a = dict(p.args)
            return dist.TruncatedNormal(a["loc"], a["scale"], low=-1.0)
        return prior_distribution(p)


def level_name(v: float) -> str:
    """A level of a categorical covariate as part of a site name: ``:g``, with ``-`` as ``m``,
    ``.`` as ``_`` and no ``+`` (2 → ``2``, 0.5 → ``0_5``, -1 → ``m1``)."""
    return f"{v:g}".replace("-", "m").replace("+", "").replace(".", "_")


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
          - {parameter: V, covariate: AGE, kind: exponential, reference: 40,
             beta: {dist: normal, loc: 0, scale: 0.02}}      # exp(beta (AGE - 40))
          - {parameter: CL, covariate: RACE, kind: categorical, form: proportional,
             reference: 1, beta: {2: -0.2, 3: {dist: normal, loc: 0, scale: 0.3}}}
        study: [CL]                 # study-level random effect on CL
        data: {time_unit: min, outputs: {lung: pct_lung}}   # options of the data reader
        fit: {chains: 4, warmup: 1000, samples: 1000}       # FitOptions
        ode: {solver: tsit5, rtol: 1.0e-6}                  # ODEOptions (ODE kernel)

    Default residual error: combined, with SD priors half-normal(scale = SD of the output's
    observations) for the additive part and half-normal(0.5) for the proportional part.

    Covariate effects multiply a parameter's individual values by a factor of the subject's
    covariate X (its first value, a numeric column of the data): ``power`` ``(X/ref)^beta``
    (reference default 70, beta default 1), ``linear`` ``1 + beta (X - ref)``, ``exponential``
    ``exp(beta (X - ref))`` (reference default 0, beta default 0) and ``categorical``: one beta
    per level other than the reference, the factor of a subject at level k being
    ``exp(beta_k)`` (``form: exponential``, the default) or ``1 + beta_k`` (``form:
    proportional``, NONMEM's ``(1 + THETA)``). The levels are the data's values of X, or
    ``levels: [...]`` (needed without data; the data's values must be among them); the
    reference defaults to the smallest level and must be one that some subject has. ``beta``
    is a number (fixed), a prior (estimated; default normal(0, 0.5) for each level), or a
    mapping level → number or prior (levels left out take the default). The proportional form
    needs beta > -1: a normal prior is truncated there and a fixed value or uniform prior
    below it is refused. The β sites are ``beta_<P>_<X>`` with two levels and
    ``beta_<P>_<X>_<level>`` per level with more (``beta_CL_RACE_2``; see
    :attr:`CovariateEffect.site_names`)."""
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
    entries = cfg.get("covariates") or ()
    if isinstance(entries, (str, Mapping)) or not isinstance(entries, (list, tuple)):
        raise ModelError(f"{where}: covariates: give a list of effects, each {{parameter: P, covariate: X, kind: {'|'.join(COVARIATE_EFFECTS)}, ...}}")  # fmt: skip
    covs = tuple(_covariate_effect(c, model, data, where, i) for i, c in enumerate(entries))
    seen: dict[str, int] = {}
    for i, c in enumerate(covs):
        for site in c.site_names:
            if site in seen:
                raise ModelError(f"{where}: covariates[{i}]: its β {site!r} is also that of covariates[{seen[site]}]; give each parameter and covariate one effect")  # fmt: skip
            seen[site] = i
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


class UninformativeDataWarning(UserWarning):
    """An output whose observations are all zero or all censored (see
    :func:`check_fit_inputs`)."""


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
    - An output whose observations are all censored, or whose uncensored observations are all
      exactly 0, informs nothing: one :class:`UninformativeDataWarning` per output.
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
        for out in spec.errors:
            sel = np.asarray(data.output) == names.index(out)
            if not sel.any():
                continue
            dv, cens = np.asarray(data.dv, dtype=float)[sel], np.asarray(data.censored)[sel]
            what = None
            if np.all(cens != 0):
                what = "every one is censored (below or above a limit)"
            elif np.all(dv[cens == 0] == 0):
                what = "every uncensored one is exactly 0"
            if what is not None:
                warnings.warn(
                    f"{data.source}: of the {int(sel.sum())} observations of output {out!r}, "
                    f"{what}: they carry almost no information on its level, so the parameters "
                    "that set it are estimated by their priors (the fit's curvature check names "
                    "them). Check the units and the DV column, or fit without this output",
                    UninformativeDataWarning,
                    stacklevel=3,
                )
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


def _covariate_effect(
    c: Any, model: Model, data: Dataset | None, where: str, i: int
) -> CovariateEffect:
    """One entry of a fit config's ``covariates:`` list, checked against the model and, for
    its levels and values, the data."""
    at = f"{where}: covariates[{i}]"
    usage = f"give {{parameter: P, covariate: X, kind: {'|'.join(COVARIATE_EFFECTS)}, reference: R, beta: number or prior}} (categorical also form: {'|'.join(CATEGORICAL_FORMS)} and levels: [...])"  # fmt: skip
    if not isinstance(c, Mapping) or not {"parameter", "covariate"} <= set(c):
        raise ModelError(f"{at}: {usage}")
    unknown = sorted(map(str, set(c) - set(COVARIATE_KEYS)))
    if unknown:
        raise ModelError(f"{at}: unknown {unknown}; valid: {', '.join(COVARIATE_KEYS)}")
    if c["parameter"] not in model.parameter_names:
        hint = lookalike_hint(str(c["parameter"]), model.parameter_names)
        raise ModelError(f"{at}: {c['parameter']!r} is not a parameter of {model.name}{hint}; parameters: {', '.join(model.parameter_names)}")  # fmt: skip
    parameter, covariate = str(c["parameter"]), str(c["covariate"])
    kind = c.get("kind", "power")
    if kind not in COVARIATE_EFFECTS:
        raise ModelError(f"{at}: kind {kind!r}; valid: {', '.join(COVARIATE_EFFECTS)}")
    x = None
    if data is not None:
        if covariate not in data.covariates:
            coded = " (text categories must be coded as numbers, e.g. 1, 2, 3)" if kind == "categorical" else ""  # fmt: skip
            raise ModelError(f"{at}: effect on {parameter}: the data have no numeric column {covariate!r}{coded}; columns: {', '.join(data.covariates) or '(none)'}")  # fmt: skip
        x = np.asarray(data.covariates[covariate], dtype=float)
        blank = np.flatnonzero(~np.isfinite(x))
        if blank.size:
            raise ModelError(f"{at}: effect of {covariate} on {parameter}: subject(s) {_subjects(data, blank)} have no numeric {covariate} (blank or text in their first row); every subject needs a value{' (categories coded as numbers)' if kind == 'categorical' else ''}")  # fmt: skip
    if kind != "categorical":
        bad = sorted({"form", "levels"} & set(c))
        if bad:
            raise ModelError(f"{at}: {' and '.join(bad)} belong to kind: categorical, not {kind}")  # fmt: skip
        beta = _beta_value(c.get("beta", 1.0 if kind == "power" else 0.0), f"{at}.beta")
        ref = _num(c.get("reference", 70.0 if kind == "power" else 0.0), f"{at}.reference")
        if kind == "power" and ref <= 0:
            raise ModelError(f"{at}: a power effect (X/reference)^beta needs reference > 0, got {ref:g}")  # fmt: skip
        if kind == "power" and x is not None and (x <= 0).any():
            raise ModelError(f"{at}: a power effect (X/reference)^beta needs {covariate} > 0, but subject(s) {_subjects(data, np.flatnonzero(x <= 0))} have {covariate} <= 0; use kind: linear or exponential")  # fmt: skip
        return CovariateEffect(parameter, covariate, kind, ref, beta)
    form = c.get("form", "exponential")
    if form not in CATEGORICAL_FORMS:
        raise ModelError(f"{at}: form {form!r}; valid: {', '.join(CATEGORICAL_FORMS)} (factor exp(beta) or 1 + beta for a subject at a level other than the reference)")  # fmt: skip
    levels = _categorical_levels(c, x, data, at, covariate)
    ref = _num(c["reference"], f"{at}.reference") if "reference" in c else levels[0]
    if ref not in levels:
        raise ModelError(f"{at}: reference {ref:g} is not a level of {covariate}; levels: {', '.join(f'{v:g}' for v in levels)}")  # fmt: skip
    if x is not None and not (x == ref).any():
        raise ModelError(f"{at}: no subject has the reference level {covariate} = {ref:g}, so the typical value and the β of every level cannot be told apart; choose a reference among {', '.join(f'{v:g}' for v in np.unique(x))}")  # fmt: skip
    others = tuple(v for v in levels if v != ref)
    if not others:
        raise ModelError(f"{at}: {covariate} has the one level {ref:g}, so there is nothing to estimate; remove the effect or list the levels with levels: [...]")  # fmt: skip
    names = [level_name(v) for v in others]
    if len(set(names)) < len(names):
        raise ModelError(f"{at}: levels {', '.join(f'{v!r}' for v in others)} of {covariate} are too close to be named apart (:g); recode them")  # fmt: skip
    betas = _categorical_betas(c.get("beta"), others, ref, form, at)
    beta = betas[0] if len(betas) == 1 else betas
    return CovariateEffect(parameter, covariate, kind, ref, beta, form, others)


def _subjects(data: Dataset, idx: np.ndarray, limit: int = 10) -> str:
    shown = ", ".join(str(data.subjects[j]) for j in idx[:limit])
    return shown + (f" and {idx.size - limit} more" if idx.size > limit else "")


def _categorical_levels(
    c: Mapping, x: np.ndarray | None, data: Dataset | None, at: str, covariate: str
) -> tuple[float, ...]:
    """The levels of a categorical covariate, sorted: ``levels:`` of the entry, or those of the
    data; the data's values must all be among the given ones."""
    if "levels" not in c:
        if x is None:
            raise ModelError(f"{at}: a categorical effect without data needs its levels: give levels: [...] (every value of {covariate}, the reference among them)")  # fmt: skip
        return tuple(float(v) for v in np.unique(x))
    given = c["levels"]
    if isinstance(given, (str, Mapping)) or not isinstance(given, (list, tuple)) or not given:
        raise ModelError(f"{at}.levels: give a list of the numeric values of {covariate}, e.g. [1, 2, 3]")  # fmt: skip
    levels = [_num(v, f"{at}.levels[{j}]") for j, v in enumerate(given)]
    if len(set(levels)) < len(levels):
        raise ModelError(f"{at}.levels: {', '.join(f'{v:g}' for v in levels)} repeats a level")
    if x is not None:
        extra = ~np.isin(x, levels)
        if extra.any():
            values = ", ".join(f"{v:g}" for v in np.unique(x[extra]))
            raise ModelError(f"{at}.levels: the data have {covariate} = {values}, not among the levels {', '.join(f'{v:g}' for v in levels)}: subject(s) {_subjects(data, np.flatnonzero(extra))}; add the level(s) or recode those subjects")  # fmt: skip
    return tuple(sorted(levels))


def _beta_value(v: Any, at: str) -> float | Prior:
    """A covariate β: a number (fixed) or a prior mapping (estimated)."""
    if not isinstance(v, Mapping):
        return _num(v, at)
    p = make_prior(v, at)
    if p.dist == "fixed":
        raise ModelError(f"{at}: give a number to hold beta fixed, or a prior to estimate it")
    return p


def _categorical_betas(
    beta: Any, others: tuple[float, ...], ref: float, form: str, at: str
) -> tuple[float | Prior, ...]:
    """The β of every non-reference level: ``beta`` is a number or a prior for all of them, or
    a mapping level → number or prior (levels left out take the default prior)."""
    if beta is None or (isinstance(beta, Mapping) and "dist" in beta):
        value = DEFAULT_CATEGORICAL_PRIOR if beta is None else _beta_value(beta, f"{at}.beta")
        per = dict.fromkeys(others, value)
    elif isinstance(beta, Mapping):
        per = dict.fromkeys(others, DEFAULT_CATEGORICAL_PRIOR)
        for k, v in beta.items():
            level = _num(k, f"{at}.beta: level {k!r}")
            if level not in per:
                why = "the reference" if level == ref else "not a level"
                raise ModelError(f"{at}.beta: {level:g} is {why}; give a β for the levels {', '.join(f'{v:g}' for v in others)} (reference {ref:g}), each a number or a prior")  # fmt: skip
            per[level] = _beta_value(v, f"{at}.beta[{k}]")
    elif isinstance(beta, (list, tuple, str)) and not _is_number(beta):
        raise ModelError(f"{at}.beta: give a number, a prior, or a mapping level → number or prior, e.g. {{{others[-1]:g}: -0.2}}")  # fmt: skip
    else:
        per = dict.fromkeys(others, _beta_value(beta, f"{at}.beta"))
    if form == "proportional":  # a normal prior is truncated at -1; other priors are positive
        for level, b in per.items():
            low = b if not isinstance(b, Prior) else dict(b.args).get("low", 0.0)
            if low <= -1 and not (isinstance(b, Prior) and (b.dist == "normal" or low == -1)):
                shown = f"{b:g}" if not isinstance(b, Prior) else f"uniform(low={low:g})"
                raise ModelError(f"{at}.beta: with form: proportional the factor of level {level:g} is 1 + beta, which must be > 0, so beta > -1; got {shown}")  # fmt: skip
    return tuple(per[v] for v in others)


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
            f = c.factor(x, pop)
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
            for site, b in zip(c.site_names, c.betas, strict=True):
                if isinstance(b, Prior):
                    pop[site] = numpyro.sample(site, c.prior_distribution(b))
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
