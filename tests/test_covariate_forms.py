"""Covariate effects in NONMEM's forms: exponential ``exp(β (X − ref))``, multi-level categorical
effects with one β per non-reference level, as ``exp(β_k)`` or the proportional shift
``1 + β_k``. Individual parameters are checked against the closed forms written out here, the
proportional form's default prior against SciPy's truncated normal, and a MAP fit to data
simulated from the one-compartment oral closed form recovers three per-level βs."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from numpyro import handlers
from scipy import stats

import ldpk
from ldpk.errors import ModelError
from ldpk.model import Prior
from ldpk.population import CovariateEffect, PopulationModel, fit_spec

NO_IIV = {p: {"iiv": "none"} for p in ("CL", "V", "KA")}


@pytest.fixture(scope="module")
def model():
    return ldpk.load_model("one_compartment")


def _write(tmp_path, subjects, name="d.csv"):
    """One oral dose of 100 and three observations per subject; ``subjects``: one dict of
    covariate columns per subject."""
    rows = []
    for i, covs in enumerate(subjects):
        rows.append({"ID": i + 1, "TIME": 0.0, "AMT": 100.0, "EVID": 1, "CMT": 1, "DV": 0.0, **covs})  # fmt: skip
        for t in (0.5, 2.0, 8.0):
            rows.append({"ID": i + 1, "TIME": t, "AMT": 0.0, "EVID": 0, "CMT": 2, "DV": 1.0 + t, **covs})  # fmt: skip
    path = tmp_path / name
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


RACE = [1, 2, 3, 1, 2, 3, 3]
AGE = [25.0, 40.0, 55.0, 33.0, 61.0, 47.0, 40.0]


@pytest.fixture
def ds(model, tmp_path):
    subjects = [{"RACE": r, "AGE": a, "SEX": i % 2, "SEX12": 1 + i % 2} for i, (r, a) in enumerate(zip(RACE, AGE, strict=True))]  # fmt: skip
    return ldpk.read_data(model, _write(tmp_path, subjects))


def _params(model, ds, covariates, pop, **cfg):
    spec = fit_spec(model, ds, {"covariates": covariates, "parameters": NO_IIV, **cfg})
    pm = PopulationModel(model, ds, spec)
    return spec, {k: np.asarray(v) for k, v in pm.individual_parameters(pop, {}).items()}


POP = {"CL": 2.0, "V": 30.0, "KA": 1.5}


def test_exponential_effect_is_exp_beta_times_centred_covariate(model, ds):
    covs = [
        {
            "parameter": "CL",
            "covariate": "AGE",
            "kind": "exponential",
            "reference": 40,
            "beta": -0.012,
        },  # fmt: skip
        {
            "parameter": "V",
            "covariate": "AGE",
            "kind": "exponential",
            "reference": 50,
            "beta": {"dist": "normal", "loc": 0, "scale": 0.1},
        },  # fmt: skip
    ]
    spec, got = _params(model, ds, covs, {**POP, "beta_V_AGE": 0.02})
    age = np.array(AGE)
    np.testing.assert_allclose(got["CL"], 2.0 * np.exp(-0.012 * (age - 40)), rtol=1e-13)
    np.testing.assert_allclose(got["V"], 30.0 * np.exp(0.02 * (age - 50)), rtol=1e-13)
    np.testing.assert_allclose(got["KA"], 1.5, rtol=1e-13)
    assert [c.site_names for c in spec.covariates] == [("beta_CL_AGE",), ("beta_V_AGE",)]
    assert spec.covariates[0] == CovariateEffect("CL", "AGE", "exponential", 40.0, -0.012)


@pytest.mark.parametrize("form", ["exponential", "proportional"])
def test_three_level_categorical_has_one_beta_per_level(model, ds, form):
    cov = {"parameter": "CL", "covariate": "RACE", "kind": "categorical", "form": form}
    spec, got = _params(model, ds, [cov], {**POP, "beta_CL_RACE_2": -0.3, "beta_CL_RACE_3": 0.4})
    c = spec.covariates[0]
    assert c.reference == 1.0 and c.levels == (2.0, 3.0)  # reference: the smallest level
    assert c.site_names == ("beta_CL_RACE_2", "beta_CL_RACE_3")
    g = {"exponential": np.exp, "proportional": lambda b: 1.0 + b}[form]
    want = {1: 2.0, 2: 2.0 * g(-0.3), 3: 2.0 * g(0.4)}
    np.testing.assert_allclose(got["CL"], [want[r] for r in RACE], rtol=1e-13)
    # the reference given: level 3; levels 1 and 2 get the βs
    cov = {**cov, "reference": 3}
    spec, got = _params(model, ds, [cov], {**POP, "beta_CL_RACE_1": 0.25, "beta_CL_RACE_2": -0.5})
    assert spec.covariates[0].site_names == ("beta_CL_RACE_1", "beta_CL_RACE_2")
    want = {1: 2.0 * g(0.25), 2: 2.0 * g(-0.5), 3: 2.0}
    np.testing.assert_allclose(got["CL"], [want[r] for r in RACE], rtol=1e-13)


def test_per_level_beta_mapping_fixes_some_levels_and_estimates_others(model, ds):
    prior = {"dist": "normal", "loc": 0.1, "scale": 0.3}
    cov = {"parameter": "CL", "covariate": "RACE", "kind": "categorical", "form": "proportional", "beta": {"2": -0.2, 3: prior}}  # fmt: skip
    spec, got = _params(model, ds, [cov], {**POP, "beta_CL_RACE_3": 0.5})
    assert spec.covariates[0].betas == (-0.2, Prior("normal", (("loc", 0.1), ("scale", 0.3))))
    want = {1: 2.0, 2: 2.0 * 0.8, 3: 2.0 * 1.5}
    np.testing.assert_allclose(got["CL"], [want[r] for r in RACE], rtol=1e-13)
    pm = PopulationModel(model, ds, spec)
    tr = handlers.trace(handlers.seed(pm.priors, jax.random.PRNGKey(0))).get_trace()
    assert "beta_CL_RACE_3" in tr and "beta_CL_RACE_2" not in tr
    # one number for every level: all fixed, nothing sampled
    spec, got = _params(model, ds, [{**cov, "beta": 0.3, "form": "exponential"}], POP)
    np.testing.assert_allclose(got["CL"], [2.0 * np.exp(0.3 * (r != 1)) for r in RACE], rtol=1e-13)  # fmt: skip
    tr = handlers.trace(handlers.seed(PopulationModel(model, ds, spec).priors, jax.random.PRNGKey(0))).get_trace()  # fmt: skip
    assert not any(k.startswith("beta_") for k in tr)


def test_two_levels_keep_one_site_named_for_the_covariate(model, ds):
    for column, ref in (("SEX", 0.0), ("SEX12", 1.0)):  # coded 0/1 and 1/2
        cov = {"parameter": "CL", "covariate": column, "kind": "categorical"}
        spec, got = _params(model, ds, [cov], {**POP, f"beta_CL_{column}": 0.2})
        c = spec.covariates[0]
        assert c.site_names == (f"beta_CL_{column}",) and c.reference == ref
        assert c.beta == Prior("normal", (("loc", 0.0), ("scale", 0.5)))  # one prior, not a tuple
        want = 2.0 * np.exp(np.where(np.arange(len(RACE)) % 2 == 1, 0.2, 0.0))
        np.testing.assert_allclose(got["CL"], want, rtol=1e-13)


def test_proportional_default_prior_is_a_normal_truncated_at_minus_one(model, ds):
    cov = {"parameter": "CL", "covariate": "RACE", "kind": "categorical", "form": "proportional"}
    spec = fit_spec(model, ds, {"covariates": [cov], "parameters": NO_IIV})
    pm = PopulationModel(model, ds, spec)
    site = handlers.trace(handlers.seed(pm.priors, jax.random.PRNGKey(1))).get_trace()["beta_CL_RACE_2"]  # fmt: skip
    b = np.array([-0.99, -0.5, 0.0, 0.7, 2.0])
    want = stats.truncnorm(a=(-1 - 0.0) / 0.5, b=np.inf, loc=0.0, scale=0.5).logpdf(b)
    np.testing.assert_allclose(np.asarray(site["fn"].log_prob(jnp.asarray(b))), want, rtol=1e-10)
    draws = site["fn"].sample(jax.random.PRNGKey(2), (4000,))
    assert float(draws.min()) > -1.0


def test_levels_given_without_data_and_checked_against_data(model, ds, tmp_path):
    cov = {"parameter": "CL", "covariate": "RACE", "kind": "categorical", "levels": [3, 1, 2, 4]}
    c = fit_spec(model, None, {"covariates": [cov]}).covariates[0]
    assert c.reference == 1.0 and c.levels == (2.0, 3.0, 4.0)
    assert c.site_names == ("beta_CL_RACE_2", "beta_CL_RACE_3", "beta_CL_RACE_4")
    assert fit_spec(model, ds, {"covariates": [cov]}).covariates[0].levels == (2.0, 3.0, 4.0)
    with pytest.raises(ModelError, match=r"covariates\[0\].*give levels"):
        fit_spec(model, None, {"covariates": [{k: v for k, v in cov.items() if k != "levels"}]})
    with pytest.raises(ModelError, match=r"covariates\[0\]\.levels: the data have RACE = 3, not among the levels 1, 2: subject\(s\) 3, 6, 7"):  # fmt: skip
        fit_spec(model, ds, {"covariates": [{**cov, "levels": [1, 2]}]})


def test_level_names_are_identifiers(model, tmp_path):
    subjects = [{"DOSEGRP": v} for v in (-1.0, 0.5, 2.0, -1.0)]
    ds = ldpk.read_data(model, _write(tmp_path, subjects, "g.csv"))
    cov = {"parameter": "CL", "covariate": "DOSEGRP", "kind": "categorical"}
    c = fit_spec(model, ds, {"covariates": [cov]}).covariates[0]
    assert c.reference == -1.0
    assert c.site_names == ("beta_CL_DOSEGRP_0_5", "beta_CL_DOSEGRP_2")
    assert all(s.isidentifier() for s in c.site_names)


RACE3 = {"parameter": "CL", "covariate": "RACE", "kind": "categorical"}


@pytest.mark.parametrize(
    ("cov", "message"),
    [
        (
            {**RACE3, "kind": "spline"},
            r"covariates\[1\]: kind 'spline'; valid: power, linear, categorical, exponential",
        ),  # fmt: skip
        (
            {**RACE3, "form": "additive"},
            r"covariates\[1\]: form 'additive'; valid: exponential, proportional",
        ),  # fmt: skip
        (
            {**RACE3, "kind": "power", "form": "proportional"},
            r"covariates\[1\]: form belong to kind: categorical, not power",
        ),  # fmt: skip
        (
            {**RACE3, "kind": "linear", "levels": [1, 2]},
            r"covariates\[1\]: levels belong to kind: categorical",
        ),  # fmt: skip
        (
            {**RACE3, "refrence": 1},
            r"covariates\[1\]: unknown \['refrence'\]; valid: parameter, covariate, kind, reference, beta, form, levels",
        ),  # fmt: skip
        (
            {**RACE3, "reference": 5},
            r"covariates\[1\]: reference 5 is not a level of RACE; levels: 1, 2, 3",
        ),  # fmt: skip
        (
            {**RACE3, "levels": [0, 1, 2, 3], "reference": 0},
            r"covariates\[1\]: no subject has the reference level RACE = 0",
        ),  # fmt: skip
        (
            {**RACE3, "beta": {1: 0.2}},
            r"covariates\[1\]\.beta: 1 is the reference; give a β for the levels 2, 3",
        ),  # fmt: skip
        ({**RACE3, "beta": {4: 0.2}}, r"covariates\[1\]\.beta: 4 is not a level"),
        (
            {**RACE3, "beta": [0.1, 0.2]},
            r"covariates\[1\]\.beta: give a number, a prior, or a mapping level",
        ),  # fmt: skip
        (
            {**RACE3, "beta": {"dist": "fixed"}},
            r"covariates\[1\]\.beta: give a number to hold beta fixed",
        ),  # fmt: skip
        (
            {**RACE3, "form": "proportional", "beta": -1},
            r"covariates\[1\]\.beta: with form: proportional .* beta > -1; got -1",
        ),  # fmt: skip
        (
            {
                **RACE3,
                "form": "proportional",
                "beta": {3: {"dist": "uniform", "low": -2, "high": 1}},
            },
            r"covariates\[1\]\.beta: with form: proportional the factor of level 3 .* got uniform\(low=-2\)",
        ),  # fmt: skip
        (
            {**RACE3, "covariate": "ETHN"},
            r"covariates\[1\]: effect on CL: the data have no numeric column 'ETHN' \(text categories must be coded as numbers",
        ),  # fmt: skip
        (
            {**RACE3, "covariate": "GRP"},
            r"covariates\[1\]: effect of GRP on CL: subject\(s\) 2 have no numeric GRP",
        ),  # fmt: skip
        (
            {**RACE3, "kind": "power", "covariate": "AGE", "reference": 0},
            r"covariates\[1\]: a power effect .* needs reference > 0",
        ),  # fmt: skip
        (
            {**RACE3, "covariate": "SEX"},
            r"covariates\[1\]: its β 'beta_CL_SEX' is also that of covariates\[0\]",
        ),  # fmt: skip
    ],
)
def test_bad_covariate_entries_name_the_entry(model, tmp_path, cov, message):
    subjects = [{"RACE": r, "AGE": a, "SEX": i % 2, "ETHN": "white", "GRP": "b" if i == 1 else 1} for i, (r, a) in enumerate(zip(RACE, AGE, strict=True))]  # fmt: skip
    ds = ldpk.read_data(model, _write(tmp_path, subjects))
    first = {"parameter": "CL", "covariate": "SEX", "kind": "categorical"}
    with pytest.raises(ModelError, match=message):
        fit_spec(model, ds, {"covariates": [first, cov]})


def _oral(t, ka, cl, v, dose):
    k = cl / v
    return dose * ka / (v * (ka - k)) * (np.exp(-k * t) - np.exp(-ka * t))


def test_map_fit_recovers_three_level_betas(model, tmp_path):
    """Data from the oral one-compartment closed form with CL = 2.75 · (1, 0.7, 1.5) by group
    (proportional: β = −0.3, +0.5) and 5 % proportional error: the MAP estimates are within
    0.05 of the true βs (standard errors about 0.01 with 20 subjects per group)."""
    rng = np.random.default_rng(0)
    beta = {2: -0.3, 3: 0.5}
    times = np.array([0.5, 1.0, 2.0, 4.0, 8.0, 12.0])
    rows = []
    for i in range(60):
        grp = 1 + i % 3
        cl = 2.75 * (1.0 + beta.get(grp, 0.0))
        rows.append({"ID": i + 1, "TIME": 0.0, "AMT": 320.0, "EVID": 1, "CMT": 1, "DV": 0.0, "GRP": grp})  # fmt: skip
        conc = _oral(times, 1.59, cl, 31.8, 320.0) * np.exp(0.05 * rng.standard_normal(times.size))
        rows += [{"ID": i + 1, "TIME": t, "AMT": 0.0, "EVID": 0, "CMT": 2, "DV": c, "GRP": grp} for t, c in zip(times, conc, strict=True)]  # fmt: skip
    path = tmp_path / "sim.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    cfg = {
        "parameters": {**NO_IIV, "F": {"fixed": True}, "TLAG": {"fixed": True}},
        "error": {"cp": {"model": "proportional"}},
        "covariates": [
            {"parameter": "CL", "covariate": "GRP", "kind": "categorical", "form": "proportional"}
        ],  # fmt: skip
    }
    fit = ldpk.fit(model, ldpk.read_data(model, path), config=cfg, method="map", progress=False)
    got = {k: float(np.asarray(fit.map_values[f"beta_CL_GRP_{k}"])) for k in beta}
    for k, b in beta.items():
        assert abs(got[k] - b) < 0.05, (k, got)
    assert abs(float(np.asarray(fit.map_values["CL"])) - 2.75) < 0.1
    assert {"beta_CL_GRP_2", "beta_CL_GRP_3"} <= set(fit.parameter_names())
