"""The population model's pieces against independent oracles: residual-error likelihoods and
the M3 censoring term (SciPy), covariate and study effects (hand-computed), and the fit
configuration (what is estimated, errors with row/field names)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from scipy import stats

import ldpk
from ldpk.errors import ModelError
from ldpk.population import CovariateEffect, PopulationModel, Residual, fit_spec

F = np.array([0.5, 2.0, 8.0, 8.0, 8.0])  # predictions
DV = np.array([0.7, 1.5, 9.0, 1.0, 20.0])  # observations (limits where censored)
CENS = np.array([0, 0, 0, 1, -1])  # 1: below DV (BLQ), -1: above DV
SD = np.array([0.3, 0.4, 1.1, 1.1, 1.1])


def test_normal_residual_and_m3_match_scipy():
    lp = np.asarray(Residual(jnp.asarray(F), jnp.asarray(SD), jnp.asarray(CENS)).log_prob(jnp.asarray(DV)))  # fmt: skip
    expect = stats.norm.logpdf(DV, F, SD)
    expect[3] = stats.norm.logcdf(DV[3], F[3], SD[3])
    expect[4] = stats.norm.logsf(DV[4], F[4], SD[4])
    np.testing.assert_allclose(lp, expect, rtol=1e-12)


def test_lognormal_residual_is_a_density_of_dv():
    s = 0.25
    r = Residual(jnp.asarray(F), jnp.full(5, s), jnp.asarray(CENS), kind="lognormal")
    lp = np.asarray(r.log_prob(jnp.asarray(DV)))
    expect = stats.lognorm.logpdf(DV, s, scale=F)  # includes the 1/DV Jacobian
    expect[3] = stats.norm.logcdf(np.log(DV[3]), np.log(F[3]), s)
    expect[4] = stats.norm.logsf(np.log(DV[4]), np.log(F[4]), s)
    np.testing.assert_allclose(lp, expect, rtol=1e-12)


def test_student_t_residual_matches_scipy():
    nu = 4.5
    r = Residual(jnp.asarray(F), jnp.asarray(SD), jnp.asarray(CENS), kind="student_t", nu=nu)
    lp = np.asarray(r.log_prob(jnp.asarray(DV)))
    expect = stats.t.logpdf(DV, nu, F, SD)
    expect[3] = stats.t.logcdf(DV[3], nu, F[3], SD[3])
    expect[4] = stats.t.logsf(DV[4], nu, F[4], SD[4])
    np.testing.assert_allclose(lp, expect, rtol=1e-9)


# Other ends of the censoring intervals (LIMIT): observation 3 lies between 0.5 and its
# limit 1.0 (CENS 1), observation 4 between its limit 20 and 30 (CENS -1, 11-20 SDs above).
BOUND = np.array([np.nan, np.nan, np.nan, 0.5, 30.0])


@pytest.mark.parametrize("kind", ["normal", "lognormal", "student_t"])
def test_interval_censoring_matches_scipy(kind):
    """log P(bound < Y < limit) with CENS 1 and log P(limit < Y < bound) with CENS -1, against
    differences of SciPy's CDFs (rtol 1e-9); uncensored rows keep their density; a NaN bound
    gives the M3 tail."""
    nu, s = 4.5, 0.25
    sd = np.full(5, s) if kind == "lognormal" else SD
    r = Residual(jnp.asarray(F), jnp.asarray(sd), jnp.asarray(CENS), kind=kind, nu=nu, bound=jnp.asarray(BOUND))  # fmt: skip
    lp = np.asarray(r.log_prob(jnp.asarray(DV)))
    if kind == "normal":
        d = stats.norm(F, SD)
        expect = d.logpdf(DV)
    elif kind == "lognormal":
        d = stats.lognorm(s, scale=F)
        expect = d.logpdf(DV)
    else:
        d = stats.t(nu, F, SD)
        expect = d.logpdf(DV)
    expect[3] = np.log(d.cdf(DV[3])[3] - d.cdf(BOUND[3])[3])
    expect[4] = np.log(d.sf(DV[4])[4] - d.sf(BOUND[4])[4])  # the upper tail, from its side
    np.testing.assert_allclose(lp, expect, rtol=1e-9)
    no_bound = Residual(jnp.asarray(F), jnp.asarray(sd), jnp.asarray(CENS), kind=kind, nu=nu)
    m3 = np.asarray(no_bound.log_prob(jnp.asarray(DV)))
    nan = Residual(jnp.asarray(F), jnp.asarray(sd), jnp.asarray(CENS), kind=kind, nu=nu, bound=jnp.full(5, jnp.nan))  # fmt: skip
    np.testing.assert_allclose(np.asarray(nan.log_prob(jnp.asarray(DV))), m3, rtol=1e-12)


def test_interval_censoring_gradients_are_finite_at_infinite_ends():
    """A NaN bound (an infinite end) and a log-normal interval down to 0 (log 0 = -inf) must
    not give NaN gradients; 0 to the limit is the M3 tail of a log-normal."""
    bound = jnp.asarray([np.nan, np.nan, np.nan, 0.0, np.nan])

    def total(loc, kind):
        r = Residual(loc, jnp.full(5, 0.3), jnp.asarray(CENS), kind=kind, bound=bound)
        return r.log_prob(jnp.asarray(DV)).sum()

    for kind in ("normal", "lognormal", "student_t"):
        g = np.asarray(jax.grad(total)(jnp.asarray(F), kind))
        assert np.all(np.isfinite(g)), (kind, g)
    m3 = Residual(jnp.asarray(F), jnp.full(5, 0.3), jnp.asarray(CENS), kind="lognormal")
    np.testing.assert_allclose(float(total(jnp.asarray(F), "lognormal")), float(m3.log_prob(jnp.asarray(DV)).sum()), rtol=1e-12)  # fmt: skip


@pytest.mark.parametrize("kind", ["normal", "lognormal", "student_t"])
def test_residual_without_censoring_is_the_density(kind):
    """censored=None (a dataset with no censored observation) leaves the tail terms out and
    gives the same log-likelihood as flags that are all 0."""
    args = (jnp.asarray(F), jnp.asarray(SD))
    kw = {"kind": kind, "nu": 4.5}
    none = np.asarray(Residual(*args, None, **kw).log_prob(jnp.asarray(DV)))
    zeros = np.asarray(Residual(*args, jnp.zeros(5), **kw).log_prob(jnp.asarray(DV)))
    np.testing.assert_array_equal(none, zeros)


def test_population_model_censoring_follows_the_dataset(tmp_path):
    m = ldpk.load_model("one_compartment")
    ds = ldpk.read_data(m, _theo_like(tmp_path))
    spec = fit_spec(m, ds)
    assert not PopulationModel(m, ds, spec).has_censoring
    assert PopulationModel(m, ds, spec, censoring=True).has_censoring
    flagged = dataclasses.replace(ds, censored=np.where(np.arange(ds.n_obs) == 0, 1, 0).astype(ds.censored.dtype))  # fmt: skip
    assert PopulationModel(m, flagged, spec).has_censoring


def _theo_like(tmp_path, n=4):
    rows = []
    for i in range(n):
        rows.append({"ID": i + 1, "TIME": 0.0, "AMT": 100.0, "EVID": 1, "CMT": 1, "DV": 0.0, "WT": 50.0 + 10 * i, "SEX": i % 2, "STUDY": "A" if i < 2 else "B"})  # fmt: skip
        for t in (0.5, 2.0, 8.0):
            rows.append({"ID": i + 1, "TIME": t, "AMT": 0.0, "EVID": 0, "CMT": 2, "DV": 1.0 + t, "WT": 50.0 + 10 * i, "SEX": i % 2, "STUDY": "A" if i < 2 else "B"})  # fmt: skip
    path = tmp_path / "d.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_individual_parameters_with_covariates_and_study_effects(tmp_path):
    m = ldpk.load_model("one_compartment")
    ds = ldpk.read_data(m, _theo_like(tmp_path))
    spec = fit_spec(
        m,
        ds,
        {
            "covariates": [
                {
                    "parameter": "CL",
                    "covariate": "WT",
                    "kind": "power",
                    "reference": 70,
                    "beta": 0.75,
                },  # fmt: skip
                {
                    "parameter": "V",
                    "covariate": "WT",
                    "kind": "linear",
                    "reference": 70,
                    "beta": {"dist": "normal", "loc": 0.01, "scale": 0.01},
                },  # fmt: skip
                {"parameter": "CL", "covariate": "SEX", "kind": "categorical", "reference": 0},
            ],
            "study": ["CL"],
        },
    )
    pm = PopulationModel(m, ds, spec)
    pop = {"CL": 2.0, "V": 30.0, "KA": 1.5, "omega_CL": 0.3, "omega_V": 0.2, "omega_KA": 0.5, "omega_study_CL": 0.4, "beta_V_WT": 0.02, "beta_CL_SEX": 0.1}  # fmt: skip
    z = {"CL": jnp.array([0.1, -0.2, 0.3, 0.0]), "V": jnp.zeros(4), "KA": jnp.ones(4)}
    zs = {"CL": jnp.array([1.0, -1.0])}
    got = pm.individual_parameters(pop, z, zs)
    wt = np.array([50.0, 60.0, 70.0, 80.0])
    sex = np.array([0, 1, 0, 1])
    study = np.array([0, 0, 1, 1])
    cl = 2.0 * np.exp(0.3 * np.asarray(z["CL"])) * np.exp(0.4 * np.array([1.0, -1.0])[study])
    cl = cl * (wt / 70) ** 0.75 * np.exp(np.where(sex == 0, 0.0, 0.1))
    np.testing.assert_allclose(np.asarray(got["CL"]), cl, rtol=1e-12)
    np.testing.assert_allclose(np.asarray(got["V"]), 30.0 * (1 + 0.02 * (wt - 70)), rtol=1e-12)
    np.testing.assert_allclose(np.asarray(got["KA"]), 1.5 * np.exp(0.5) * np.ones(4), rtol=1e-12)
    assert spec.covariates[0] == CovariateEffect("CL", "WT", "power", 70.0, 0.75)


def test_fit_spec_defaults_and_overrides(tmp_path):
    m = ldpk.load_model("one_compartment")
    ds = ldpk.read_data(m, _theo_like(tmp_path))
    spec = fit_spec(m, ds)
    assert set(spec.priors) == {"CL", "V", "KA"} and set(spec.iiv) == {"CL", "V", "KA"}
    assert spec.errors["cp"].kind == "combined"
    cfg = tmp_path / "fit.yaml"
    cfg.write_text("parameters:\n  KA: {iiv: none}\n  F: {fixed: 0.8}\n  TLAG: {prior: {dist: lognormal, loc: -1, scale: 0.5}}\nerror:\n  cp: {model: lognormal}\n")  # fmt: skip
    spec = fit_spec(m, ds, cfg)
    assert "KA" not in spec.iiv and spec.fixed == {"F": 0.8} and "TLAG" in spec.priors
    assert spec.errors["cp"].kind == "lognormal" and spec.errors["cp"].additive is None
    toml = tmp_path / "fit.toml"
    toml.write_text('[error.cp]\nmodel = "additive"\n')
    assert fit_spec(m, ds, toml).errors["cp"].kind == "additive"


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        ({"parameters": {"CLX": {"iiv": 0.3}}}, "no parameter 'CLX'"),
        ({"error": {"cq": {"model": "additive"}}}, "not outputs of one_compartment"),
        ({"error": {"cp": {"model": "poisson"}}}, "valid: additive, proportional"),
        ({"parameters": {"TLAG": {"iiv": 0.3}}}, "no prior"),
        (
            {"covariates": [{"parameter": "CL", "covariate": "WT", "kind": "spline"}]},
            "valid: power, linear, categorical",
        ),  # fmt: skip
        ({"study": ["F"]}, "not an estimated parameter"),
        (  # the reference must be one of the data's levels
            {
                "covariates": [
                    {"parameter": "CL", "covariate": "WT", "kind": "categorical", "reference": 75}
                ]
            },
            "reference 75 is not a level of WT; levels: 50, 60, 70, 80",
        ),  # fmt: skip
        ({"priors": {}}, "unknown entries"),
    ],
)
def test_fit_spec_errors_name_the_entry(tmp_path, cfg, message):
    m = ldpk.load_model("one_compartment")
    ds = ldpk.read_data(m, _theo_like(tmp_path))
    with pytest.raises(ModelError, match=message):
        fit_spec(m, ds, cfg)
