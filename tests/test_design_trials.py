"""Virtual trials and target attainment (ldpk.design.virtual_trial, attainment) against closed
forms.

One-compartment IV bolus: AUC(0-inf) = Dose / CL exactly (the log-down rule is exact for a
mono-exponential, and lambda_z from the last grid points is exact). With CL_i = CL_typ exp(ω z),
z ~ N(0, 1):

    P(AUC_i >= A | CL_typ) = P(ln CL_i <= ln(Dose/A)) = Φ((ln(Dose/A) - ln CL_typ) / ω).

With uncertainty, ln CL_typ ~ N(μ, s²) across trials, so ln CL_i ~ N(μ, ω² + s²) marginally and
the mean over trials of the per-trial fraction estimates Φ((ln(Dose/A) - μ) / sqrt(ω² + s²)).

Tolerances: a trial's fraction of n subjects is binomial, SD sqrt(p (1 - p) / n); we allow 4
SD (plus 1/n for the discreteness). The mean over T trials has variance Var(p_t) / T +
E[p_t (1 - p_t)] / (n T); we allow 4 SD of that, with Var(p_t) from the trials' own drawn
typical values. Everything is seeded, so the checks are deterministic.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm

import ldpk
from ldpk import design as dz

DOSE = 100.0  # mg
TARGET = 45.0  # mg/L*h
OMEGA = 0.3
CL_TYP = 2.0  # L/h
TIMES = np.linspace(0.0, 48.0, 25)  # h
REGIMENS = {"iv 100": [ldpk.Bolus(DOSE, route="iv")], "iv 200": [ldpk.Bolus(2 * DOSE, route="iv")]}


@pytest.fixture(scope="module")
def model():
    return ldpk.load_model("one_compartment")


def _p(dose, target, ln_cl_typ, sd):
    return norm.cdf((np.log(dose / target) - ln_cl_typ) / sd)


@pytest.fixture(scope="module")
def fixed_trial(model):
    pop = {"typical": {"CL": CL_TYP}, "omega": {"CL": OMEGA}}
    return dz.virtual_trial(
        model, pop, REGIMENS, TIMES, n_trials=3, n_subjects=200, seed=7,
        outputs=["cp"], metrics=["auc_inf", "cmax"],
    )  # fmt: skip


def test_dims_coords_units_and_provenance(fixed_trial, model):
    ds = fixed_trial
    assert ds["cp"].dims == ("trial", "subject", "regimen", "time")
    assert ds["cp_auc_inf"].dims == ("trial", "subject", "regimen")
    assert ds["status"].dims == ("trial", "subject", "regimen")
    assert dict(ds.sizes) == {"trial": 3, "subject": 200, "regimen": 2, "time": 25}
    assert list(ds["regimen"].values) == list(REGIMENS)
    np.testing.assert_array_equal(ds["time"], TIMES)
    np.testing.assert_array_equal(ds["trial"], np.arange(3))
    np.testing.assert_array_equal(ds["subject"], np.arange(200))
    assert ds["CL"].dims == ("trial", "subject")
    assert ds["typical_CL"].dims == ("trial",) and ds["omega_CL"].dims == ("trial",)
    np.testing.assert_array_equal(ds["typical_CL"], CL_TYP)
    assert "V" not in ds.coords  # not in the population: the model's value
    assert ds["cp"].attrs["unit"] == "mg/L"
    assert ds["cp_auc_inf"].attrs["unit"] == "mg/L*h"
    assert ds["time"].attrs["unit"] == "h"
    assert ds["CL"].attrs["unit"] == "L/h"
    assert ds.attrs["seed"] == 7 and ds.attrs["n_trials"] == 3 and ds.attrs["n_subjects"] == 200
    assert ds.attrs["population"] == "mapping" and ds.attrs["model"] == "one_compartment"
    assert int((ds["status"] != 0).sum()) == 0


def test_auc_is_dose_over_cl_for_every_subject(fixed_trial):
    ds = fixed_trial
    cl = ds["CL"].values
    np.testing.assert_allclose(ds["cp_auc_inf"].sel(regimen="iv 100"), DOSE / cl, rtol=1e-9)
    np.testing.assert_allclose(ds["cp_auc_inf"].sel(regimen="iv 200"), 2 * DOSE / cl, rtol=1e-9)
    # subjects are log-normal around the typical value with SD omega
    z = np.log(cl / CL_TYP).ravel()
    assert abs(z.mean()) < 4 * OMEGA / np.sqrt(z.size)
    assert z.std(ddof=1) == pytest.approx(OMEGA, rel=4 / np.sqrt(2 * z.size))


def test_attainment_without_uncertainty_matches_the_closed_form(fixed_trial):
    res = dz.attainment(fixed_trial, ("cp_auc_inf", ">=", TARGET))
    assert res.fraction.dims == ("trial", "regimen")
    assert res.fraction.sizes == {"trial": 3, "regimen": 2}
    n = fixed_trial.sizes["subject"]
    for reg, dose in (("iv 100", DOSE), ("iv 200", 2 * DOSE)):
        p = _p(dose, TARGET, np.log(CL_TYP), OMEGA)
        tol = 4 * np.sqrt(p * (1 - p) / n) + 1 / n
        frac = res.fraction.sel(regimen=reg).values
        assert np.all(np.abs(frac - p) <= tol), (reg, frac, p, tol)
        # exactly the subjects whose clearance is at most Dose/A
        exact = (fixed_trial["CL"].values <= dose / TARGET).mean(axis=1)
        np.testing.assert_allclose(frac, exact, atol=1e-12)
    s = res.summary
    assert set(s.data_vars) >= {"median", "lower", "upper", "mean"}
    assert np.all(s["lower"] <= s["median"]) and np.all(s["median"] <= s["upper"])
    assert s.attrs["interval"] == 0.9 and "cp_auc_inf >= 45" in res.criterion


def test_attainment_specs_agree(fixed_trial):
    """Tuple, mapping and callable give the same fractions; an output at a time works."""
    a = dz.attainment(fixed_trial, ("cp_auc_inf", ">=", TARGET)).fraction
    b = dz.attainment(fixed_trial, {"variable": "cp_auc_inf", "op": ">=", "threshold": TARGET})
    c = dz.attainment(fixed_trial, lambda ds: ds["cp_auc_inf"] >= TARGET)
    np.testing.assert_array_equal(a, b.fraction)
    np.testing.assert_array_equal(a, c.fraction)
    # cp(t=2 h) = Dose/V exp(-CL/V * 2) on the grid; cp(2) >= thr  <=>  CL <= V/2 ln(Dose/(V thr))
    v = 31.8
    thr = DOSE / v * np.exp(-CL_TYP / v * 2)
    d = dz.attainment(fixed_trial, ("cp", ">=", thr, 2.0)).fraction.sel(regimen="iv 100")
    exact = (fixed_trial["CL"].values <= v / 2 * np.log(DOSE / (v * thr))).mean(axis=1)
    np.testing.assert_allclose(d, exact, atol=1e-12)


def test_attainment_with_uncertainty(model):
    n_trials, n_subjects, s = 40, 50, 0.25
    mu = np.log(CL_TYP)
    cl_typ = np.exp(mu + s * np.random.default_rng(11).standard_normal(n_trials))
    pop = {"typical": {"CL": cl_typ}, "omega": {"CL": OMEGA}}
    ds = dz.virtual_trial(
        model, pop, {"iv": [ldpk.Bolus(DOSE, route="iv")]}, TIMES,
        n_trials=n_trials, n_subjects=n_subjects, seed=3, outputs=["cp"], metrics=["auc_inf"],
    )  # fmt: skip
    np.testing.assert_array_equal(ds["typical_CL"], cl_typ)
    frac = dz.attainment(ds, ("cp_auc_inf", ">=", TARGET)).fraction.sel(regimen="iv").values
    # trial by trial: binomial around the trial's own probability
    p_t = _p(DOSE, TARGET, np.log(cl_typ), OMEGA)
    tol_t = 4 * np.sqrt(p_t * (1 - p_t) / n_subjects) + 1 / n_subjects
    assert np.all(np.abs(frac - p_t) <= tol_t)
    # the mean over trials: the marginal probability with ω² + s²
    p_marg = _p(DOSE, TARGET, mu, np.sqrt(OMEGA**2 + s**2))
    sd_mean = np.sqrt(p_t.var(ddof=1) / n_trials + np.mean(p_t * (1 - p_t)) / (n_subjects * n_trials))  # fmt: skip
    assert abs(frac.mean() - p_marg) <= 4 * sd_mean, (frac.mean(), p_marg, sd_mean)
    # uncertainty spreads the trials' fractions beyond binomial noise alone
    assert frac.std(ddof=1) > np.sqrt(np.mean(p_t * (1 - p_t)) / n_subjects)


def test_same_seed_same_trial_and_other_seed_differs(model):
    pop = {"typical": {"CL": [1.5, 2.5]}, "omega": {"CL": OMEGA, "V": 0.2}}
    kw = dict(n_trials=2, n_subjects=5, outputs=["cp"], metrics=["auc_inf"])
    reg = {"iv": [ldpk.Bolus(DOSE, route="iv")]}
    a = dz.virtual_trial(model, pop, reg, TIMES, seed=5, **kw)
    b = dz.virtual_trial(model, pop, reg, TIMES, seed=5, **kw)
    c = dz.virtual_trial(model, pop, reg, TIMES, seed=6, **kw)
    for var in ("cp", "cp_auc_inf", "CL", "V"):
        np.testing.assert_array_equal(a[var], b[var])
    assert not np.array_equal(a["CL"], c["CL"])
    np.testing.assert_array_equal(a["typical_V"], 31.8)  # omega only: around the model value


def test_residual_error_and_population_from_priors(model):
    pop = dz.population_from_priors(model, 3, seed=1)
    assert set(pop["typical"]) == {"CL", "V", "KA"} and pop["omega"]["CL"] == 0.3
    assert all(v.shape == (3,) and np.all(v > 0) for v in pop["typical"].values())
    ds = dz.virtual_trial(
        model, pop, {"iv": [ldpk.Bolus(DOSE, route="iv")]}, TIMES, n_trials=3, n_subjects=20,
        outputs=["cp"], metrics=["auc_inf"], residual=dz.Residual(proportional=0.01),
    )  # fmt: skip
    np.testing.assert_array_equal(ds["typical_CL"], pop["typical"]["CL"])
    rel = (ds["cp_observed"] / ds["cp"] - 1).values
    assert rel.std() == pytest.approx(0.1, rel=0.1)  # variance 0.01: SD 10 %
    assert "cp_observed" not in dz.virtual_trial(
        model, pop, {"iv": [ldpk.Bolus(DOSE, route="iv")]}, TIMES, n_trials=3, n_subjects=2,
        outputs=["cp"], metrics=["auc_inf"],
    ).data_vars  # fmt: skip


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_trials": 0}, "n_trials must be a positive integer"),
        ({"n_subjects": 2.5}, "n_subjects must be a positive integer"),
        ({"population": {"typical": {"CLX": 1.0}}}, r"unknown parameter\(s\) \['CLX'\]"),
        ({"population": {"omega": {"CL": -0.1}}}, "must be >= 0"),
        ({"population": {"typical": {"CL": [1.0, 2.0, 3.0]}}}, "one value per trial"),
        ({"population": {"typicals": {}}}, "unknown entries"),
        ({"population": [1, 2]}, "ldpk.Fit or a mapping"),
        ({"outputs": ["nope"]}, "no output"),
        ({"metrics": ["aucc"]}, "unknown metric"),
        ({"seed": "x"}, "seed must be an integer"),
    ],
)
def test_bad_inputs_raise_one_data_error(model, kwargs, match):
    args = dict(
        population={"typical": {"CL": CL_TYP}, "omega": {"CL": OMEGA}}, n_trials=2,
        n_subjects=3, outputs=["cp"], metrics=["auc_inf"],
    )  # fmt: skip
    args.update(kwargs)
    pop = args.pop("population")
    with pytest.raises(ldpk.DataError, match=match):
        dz.virtual_trial(model, pop, REGIMENS, TIMES, **args)


@pytest.mark.parametrize(
    ("criterion", "match"),
    [
        (("cp_aucc", ">=", 1.0), "no variable 'cp_aucc'"),
        (("pd", ">=", 1.0), "no variable 'pd'"),
        (("cp_auc_inf", "=>", 1.0), "unknown comparison"),
        (("cp_auc_inf", ">=", "high"), "threshold must be a number"),
        (("cp", ">=", 1.0), "give the time `at`"),
        (("cp", ">=", 1.0, 99.0), "outside the trial's times"),
        (("cp_auc_inf", ">=", 1.0, 2.0), "no time dimension"),
        ({"variable": "cp_auc_inf", "op": ">="}, "needs"),
        ("cp_auc_inf >= 1", "criterion must be"),
        (lambda ds: ds["cp"] > 1, "dims"),
    ],
)
def test_bad_criteria_raise_one_data_error(fixed_trial, criterion, match):
    with pytest.raises(ldpk.DataError, match=match):
        dz.attainment(fixed_trial, criterion)
    with pytest.raises(ldpk.DataError, match="interval"):
        dz.attainment(fixed_trial, ("cp_auc_inf", ">=", 1.0), interval=1.5)


def test_population_from_a_fit(model, reference_data_dir):
    """A fit's typical values and ω draws (one draw for MAP: one trial)."""
    theo = ldpk.read_data(model, reference_data_dir / "theo_sd.csv")
    cfg = {"error": {"cp": {"model": "additive"}}}
    fit = ldpk.fit(model, theo, config=cfg, method="map", progress=False)
    n = 300
    ds = dz.virtual_trial(
        model, fit, {"iv": [ldpk.Bolus(DOSE, route="iv")]}, TIMES, n_trials=1, n_subjects=n,
        outputs=["cp"], metrics=["auc_inf"],
    )  # fmt: skip
    cl, omega = float(fit.map_values["CL"]), float(fit.map_values["omega_CL"])
    assert float(ds["typical_CL"][0]) == pytest.approx(cl, rel=1e-12)
    assert float(ds["omega_CL"][0]) == pytest.approx(omega, rel=1e-12)
    assert ds.attrs["population"] == "fit (map)"
    frac = float(dz.attainment(ds, ("cp_auc_inf", ">=", TARGET)).fraction[0, 0])
    p = _p(DOSE, TARGET, np.log(cl), omega)
    assert abs(frac - p) <= 4 * np.sqrt(p * (1 - p) / n) + 1 / n
    with pytest.raises(ldpk.DataError, match="fewer than n_trials"):
        dz.virtual_trial(model, fit, {"iv": [ldpk.Bolus(DOSE, route="iv")]}, TIMES, n_trials=2, n_subjects=3)  # fmt: skip


def test_prediction_intervals_match_numpy_percentiles():
    """prediction_intervals against NumPy, trial by trial in a loop: per trial the
    percentiles over the subjects whose simulation succeeded (status 0), then over trials the
    median and the central interval (equal tails) of each. A hand-made trial Dataset with
    failed subjects and one trial where every subject failed (its percentiles are NaN and
    are left out over trials). Tolerance: 1e-12 relative (the same arithmetic, reordered)."""
    import xarray as xr

    rng = np.random.default_rng(7)
    n_trials, n_subjects, times = 6, 9, np.array([0.0, 1.0, 2.5])
    regs = ["a", "b"]
    cp = rng.lognormal(0.0, 0.5, (n_trials, n_subjects, len(regs), len(times)))
    status = np.zeros((n_trials, n_subjects, len(regs)), dtype=np.int32)
    status[0, :3, 0] = 1  # three subjects of trial 0 failed under regimen a
    status[4, :, 1] = 2  # every subject of trial 4 failed under regimen b
    cp[status != 0] = 1e9  # must not count
    coords = {"trial": np.arange(n_trials), "subject": np.arange(n_subjects), "regimen": regs, "time": ("time", times, {"unit": "h"})}  # fmt: skip
    trial = xr.Dataset(
        {
            "cp": (("trial", "subject", "regimen", "time"), cp, {"unit": "mg/L"}),
            "cp_auc": (("trial", "subject", "regimen"), cp.sum(-1), {"unit": "mg/L*h"}),
            "status": (("trial", "subject", "regimen"), status),
        },
        coords=coords,
    )
    q, interval = (10.0, 50.0, 90.0), 0.8
    out = dz.prediction_intervals(trial, percentiles=q, interval=interval)
    assert out.attrs["outputs"] == ["cp"]  # the time courses only; cp_auc is a metric
    assert dict(out.sizes) == {"percentile": 3, "regimen": 2, "time": 3}
    assert out["cp_median"].attrs["unit"] == "mg/L" and out["time"].attrs["unit"] == "h"
    for j, r in enumerate(regs):
        for k, t in enumerate(times):
            per_trial = []
            for i in range(n_trials):
                y = cp[i, status[i, :, j] == 0, j, k]
                if y.size:
                    per_trial.append(np.percentile(y, q))
            per_trial = np.array(per_trial)  # (trials with a subject, percentile)
            assert len(per_trial) == (n_trials - 1 if r == "b" else n_trials)
            for stat, expected in (
                ("median", np.median(per_trial, axis=0)),
                ("lower", np.quantile(per_trial, 0.1, axis=0)),
                ("upper", np.quantile(per_trial, 0.9, axis=0)),
            ):
                got = out[f"cp_{stat}"].sel(regimen=r, time=t).values
                np.testing.assert_allclose(got, expected, rtol=1e-12, err_msg=f"{stat} {r} {t}")
    assert np.all(out["cp_upper"].values < 1e8)  # no failed subject leaked in
    with pytest.raises(ldpk.DataError, match=r"no time course 'cp_auc' in the trial; valid: cp"):
        dz.prediction_intervals(trial, outputs=["cp_auc"])
    with pytest.raises(ldpk.DataError, match=r"percentiles must be a non-empty list of numbers in \[0, 100\]"):  # fmt: skip
        dz.prediction_intervals(trial, percentiles=(5, 105))
    with pytest.raises(ldpk.DataError, match="percentiles must be increasing"):
        dz.prediction_intervals(trial, percentiles=(50, 5))
    with pytest.raises(ldpk.DataError, match=r"interval must be a probability in \(0, 1\)"):
        dz.prediction_intervals(trial, interval=1.0)
    with pytest.raises(ldpk.DataError, match="give the Dataset of ldpk.design.virtual_trial"):
        dz.prediction_intervals(trial.isel(time=0))


def test_prior_draws_follow_the_priors_and_the_iiv(model):
    """prior_draws without a fit: typical values from the model file's priors (oracle:
    SciPy's log-normal, Kolmogorov-Smirnov), new subjects log-normal around them with the
    model's iiv, rows draw-major."""
    import dataclasses

    from scipy import stats

    def changed(p):
        if p.name == "CL":
            return dataclasses.replace(p, prior=None)  # iiv only: varies around its value
        if p.name == "V":
            return dataclasses.replace(p, iiv=None)  # prior only: one value per draw
        return p

    m = dataclasses.replace(model, parameters=tuple(changed(p) for p in model.parameters))
    n, k = 400, 25
    t = dz.prior_draws(m, n, subjects="new", n_subjects=k, seed=5)
    assert t.n == n * k and set(t) == {"CL", "V", "KA"}
    assert t.provenance["method"] == "priors" and t.provenance["n_subjects"] == k
    v = t["V"].reshape(n, k)
    assert np.all(v == v[:, :1])  # draw-major: V is the draw's typical value
    loc, scale = dict(m.parameter("V").prior.args).values()
    assert stats.kstest(v[:, 0], stats.lognorm(s=scale, scale=np.exp(loc)).cdf).pvalue > 1e-3
    z = np.log(t["CL"] / m.parameter("CL").value)
    assert abs(z.mean()) < 4 * 0.3 / np.sqrt(z.size)
    assert z.std(ddof=1) == pytest.approx(0.3, rel=4 / np.sqrt(2 * z.size))
    typical = dz.prior_draws(m, n, seed=5)
    assert typical.n == n and set(typical) == {"V", "KA"}
    np.testing.assert_array_equal(typical["V"], v[:, 0])  # the same seed, the same draws
    with pytest.raises(ldpk.DataError, match="give n_subjects"):
        dz.prior_draws(m, 3, subjects="new")
    with pytest.raises(ldpk.DataError, match="subjects must be 'typical' or 'new'"):
        dz.prior_draws(m, 3, subjects="observed")
    with pytest.raises(ldpk.DataError, match=r"prior_draws\(\): n must be a positive integer"):
        dz.prior_draws(m, 0)
