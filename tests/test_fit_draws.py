"""Fit.draws(n, subjects=..., covariates=...): parameter tables for the sweep from a fit —
population draws, the fitted subjects' own parameters, new virtual subjects — checked against
the posterior's own individual parameters, closed forms of the covariate model and the
log-normal distribution of new subjects."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import xarray as xr

import ldpk
from ldpk.errors import DataError

WT_REF, WT_EXP = 70.0, 0.75
CFG = {
    "error": {"cp": {"model": "additive"}},
    "covariates": [
        {"parameter": "CL", "covariate": "WT", "kind": "power", "reference": WT_REF, "beta": WT_EXP}
    ],  # fmt: skip
}


@pytest.fixture(scope="module")
def model():
    return ldpk.load_model("one_compartment")


@pytest.fixture(scope="module")
def map_fit(model, reference_data_dir):
    return ldpk.fit(model, reference_data_dir / "theo_sd.csv", config=CFG, method="map", progress=False)  # fmt: skip


def _with_draws(fit, **columns):
    """The fit with a hand-made posterior of one chain: the MAP draw repeated, with the
    population-level variables in ``columns`` replaced by the given per-draw values."""
    post = fit.posterior["posterior"]
    k = len(next(iter(columns.values())))
    data = {}
    for name, da in post.data_vars.items():
        v = np.repeat(np.asarray(da.values), k, axis=1)
        if name in columns:
            v = np.asarray(columns[name], dtype=float).reshape(1, k)
        data[name] = (da.dims, v)
    ds = xr.Dataset(data, coords={c: post[c].values for c in post.coords if c not in ("chain", "draw")})  # fmt: skip
    tree = xr.DataTree.from_dict({"posterior": ds})
    return dataclasses.replace(fit, posterior=tree)


def test_observed_subjects_are_the_posteriors_individual_parameters(map_fit):
    table = map_fit.draws(5, subjects="observed")
    assert table.n == 12 and table.provenance["subjects"] == "observed"
    assert table.provenance["subject_ids"] == [str(s) for s in map_fit.dataset.subjects]
    for p in ("CL", "V", "KA"):  # the numpyro model's deterministic <P>_i, another code path
        np.testing.assert_allclose(table[p], map_fit.draws(f"{p}_i").reshape(-1), rtol=1e-12)


def test_a_sweep_of_the_observed_table_equals_fit_predict(model, map_fit):
    t = np.linspace(0.0, 24.0, 49)
    reg = [ldpk.Bolus(320.0, route="oral")]
    ds = ldpk.sweep(model, map_fit.draws(1, subjects="observed"), {"oral": reg}, t, outputs=["cp"], metrics=[], progress=False)  # fmt: skip
    pred = map_fit.predict(reg, t, subjects="observed")
    np.testing.assert_allclose(ds["cp"][:, 0, :], np.asarray(pred["cp"])[:, 0, :], rtol=1e-10)


def test_typical_subjects_with_covariate_values(map_fit):
    cl = float(map_fit.map_values["CL"])
    table = map_fit.draws(1, covariates={"WT": 50.0})
    assert table["CL"][0] == pytest.approx(cl * (50.0 / WT_REF) ** WT_EXP, rel=1e-12)
    # without covariates: the reference value
    assert map_fit.draws(1)["CL"][0] == pytest.approx(cl, rel=1e-12)


def test_new_subjects_are_log_normal_around_each_draw(map_fit):
    omega = float(map_fit.map_values["omega_CL"])
    cl = float(map_fit.map_values["CL"])
    n = 4000
    table = map_fit.draws(1, subjects="new", n_subjects=n, seed=3)
    assert table.n == n and table.provenance["n_subjects"] == n and table.provenance["seed"] == 3
    x = np.log(table["CL"] / cl)
    # mean 0 and SD ω: 4 standard errors
    assert abs(x.mean()) < 4 * omega / np.sqrt(n)
    assert x.std(ddof=1) == pytest.approx(omega, rel=4 * np.sqrt(1 / (2 * (n - 1))))
    again = map_fit.draws(1, subjects="new", n_subjects=n, seed=3)
    np.testing.assert_array_equal(again["CL"], table["CL"])
    assert not np.array_equal(map_fit.draws(1, subjects="new", n_subjects=n, seed=4)["CL"], table["CL"])  # fmt: skip


def test_rows_are_draw_major_and_covariates_are_sampled_from_a_table(map_fit):
    fit = _with_draws(map_fit, CL=[2.0, 3.0, 4.0], omega_CL=[1e-12] * 3)
    table = fit.draws(3, subjects="new", n_subjects=5)
    np.testing.assert_allclose(table["CL"].reshape(3, 5), [[2.0] * 5, [3.0] * 5, [4.0] * 5], rtol=1e-9)  # fmt: skip
    # covariates sampled with replacement from a DataFrame: each row's factor is one of the
    # table's, both appear about equally often
    many = _with_draws(map_fit, CL=[2.0] * 400, omega_CL=[1e-12] * 400)
    wt = pd.DataFrame({"WT": [40.0, 100.0]})
    t = many.draws(400, covariates=wt, seed=1)
    factors = {round(2.0 * (w / WT_REF) ** WT_EXP, 9) for w in (40.0, 100.0)}
    assert set(np.round(t["CL"], 9)) == factors
    share = np.mean(np.isclose(t["CL"], 2.0 * (40.0 / WT_REF) ** WT_EXP))
    assert abs(share - 0.5) < 4 * 0.5 / np.sqrt(400)
    # 'observed': the fitted subjects' weights
    obs = many.draws(400, covariates="observed", seed=1)
    weights = np.asarray(map_fit.dataset.covariates["WT"], dtype=float)
    allowed = 2.0 * (weights / WT_REF) ** WT_EXP
    assert np.all(np.min(np.abs(obs["CL"][:, None] - allowed[None, :]), axis=1) < 1e-9)
    # one value per subject of each draw, repeated over draws
    per = fit.draws(3, subjects="new", n_subjects=2, covariates={"WT": [35.0, 140.0]})
    np.testing.assert_allclose(per["CL"].reshape(3, 2)[:, 1] / per["CL"].reshape(3, 2)[:, 0], 4.0**WT_EXP, rtol=1e-9)  # fmt: skip


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"subjects": "all"}, "subjects must be 'typical', 'observed' or 'new'"),
        ({"n_subjects": 3}, "n_subjects is for subjects='new'"),
        ({"subjects": "new"}, "give n_subjects"),
        ({"subjects": "new", "n_subjects": 0}, "positive integer"),
        ({"subjects": "observed", "covariates": {"WT": 70.0}}, "keep their own covariates"),
        ({"covariates": {"AGE": 40.0}}, r"no effect of \['AGE'\]"),
        ({"covariates": "median"}, "give 'observed'"),
        (
            {"subjects": "new", "n_subjects": 3, "covariates": {"WT": [1.0, 2.0]}},
            "one finite value or 3",
        ),  # fmt: skip
        ({"covariates": pd.DataFrame({"WT": ["heavy"]})}, "not numeric"),
        ({"covariates": pd.DataFrame({"WT": []})}, "no rows"),
        ({"seed": 1.5}, "seed must be an integer"),
    ],
)
def test_bad_requests_are_refused(map_fit, kwargs, match):
    with pytest.raises(DataError, match=match):
        map_fit.draws(2, **kwargs)


def test_options_belong_to_a_number_of_draws(map_fit):
    with pytest.raises(DataError, match="options"):
        map_fit.draws("CL", subjects="new")
