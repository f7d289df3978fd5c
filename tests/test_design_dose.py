"""Dose selection (ldpk.design.select_dose) against closed forms.

One-compartment IV bolus: AUC_inf = D / CL and Cmax = D / V. With log-normal between-subject
variability (SD of log ω) the fraction of subjects with D / CL_i >= T is
Φ((ln(D / T) − ln CL_typ) / ω), so the lowest dose with a fraction p is
T · CL_typ · exp(ω z_p). With the typical value itself uncertain, ln CL_typ ~ N(μ, s²), the
fraction reaches p in a fraction c of trials at T · exp(μ + s z_c + ω z_p). Cmax <= L holds
for V_i >= D / L, so the highest dose with a fraction p is L · V_typ · exp(−ω z_p).
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm

import ldpk
from ldpk import design as dz
from ldpk.errors import DataError

TIMES = np.linspace(0.0, 240.0, 121)
TARGET = 45.0  # mg/L*h
OMEGA = 0.3


@pytest.fixture(scope="module")
def model():
    return ldpk.load_model("one_compartment")


def _kw(**extra):
    return dict(outputs=["cp"], metrics=["auc_inf", "cmax"], **extra)


def test_lowest_dose_without_uncertainty_matches_the_closed_form(model):
    cl = model.parameter("CL").value
    pop = {"omega": {"CL": OMEGA}}
    res = dz.select_dose(
        model, pop, [ldpk.Bolus(100.0, route="iv")], ("cp_auc_inf", ">=", TARGET), TIMES,
        doses=[30.0, 300.0], target=0.9, confidence=0.5, n_trials=20, n_subjects=1000,
        **_kw(),
    )  # fmt: skip
    expected = TARGET * cl * np.exp(OMEGA * norm.ppf(0.9))
    # The 0.9 quantile of 1000 log-normal draws has SD ω·sqrt(0.09/1000)/φ(1.28) = 0.016 in
    # log; the median over 20 trials divides it by about 4: 3 % is > 5 SD.
    assert res.dose == pytest.approx(expected, rel=0.03)
    row = res.table.loc["regimen"]
    assert row["status"] == "selected" and row["recommended"]
    assert row["total"] == pytest.approx(row["dose"], rel=1e-12)
    # at the selected dose half the trials attain exactly the target (confidence 0.5)
    assert row["median"] == pytest.approx(0.9, abs=1e-6)
    assert res.increasing and res.dose_unit == "mg"
    assert "cp_auc_inf >= 45" in str(res) and "selected" in str(res)


def test_lowest_dose_with_uncertainty_matches_the_closed_form(model):
    cl = model.parameter("CL").value
    s, n_trials = 0.2, 200
    rng = np.random.default_rng(11)
    typical = cl * np.exp(s * rng.standard_normal(n_trials))
    pop = {"typical": {"CL": typical}, "omega": {"CL": OMEGA}}
    res = dz.select_dose(
        model, pop, [ldpk.Bolus(100.0, route="iv")], ("cp_auc_inf", ">=", TARGET), TIMES,
        doses=[50.0, 200.0, 800.0], target=0.9, confidence=0.8, n_trials=n_trials,
        n_subjects=300, **_kw(),
    )  # fmt: skip
    expected = TARGET * cl * np.exp(s * norm.ppf(0.8) + OMEGA * norm.ppf(0.9))
    # The 0.8 quantile over 200 trials of ln CL_typ has SD s·sqrt(0.16/200)/φ(0.84) = 0.02;
    # 300 subjects add binomial noise of about 0.02 to each trial's fraction: 8 % is > 3 SD.
    assert res.dose == pytest.approx(expected, rel=0.08)
    # the curve is monotone and the band holds the median
    c = res.curve.sel(schedule="regimen")
    assert np.all(np.diff(c["median"].values) >= -1e-12)
    assert np.all(c["lower"].values <= c["median"].values + 1e-12)
    assert np.all(c["median"].values <= c["upper"].values + 1e-12)
    # the dose solves the confidence quantile curve
    at = np.interp(np.log(res.dose), np.log(c["dose"].values), c["at_confidence"].values)
    assert at == pytest.approx(0.9, abs=0.01)


def test_highest_dose_under_a_safety_limit(model):
    v = model.parameter("V").value
    limit = 5.0  # mg/L
    pop = {"omega": {"V": OMEGA}}
    res = dz.select_dose(
        model, pop, [ldpk.Bolus(100.0, route="iv")], ("cp_cmax", "<=", limit), TIMES,
        doses=[20.0, 400.0], target=0.95, confidence=0.5, n_trials=20, n_subjects=1000,
        **_kw(),
    )  # fmt: skip
    assert not res.increasing
    expected = limit * v * np.exp(-OMEGA * norm.ppf(0.95))
    assert res.dose == pytest.approx(expected, rel=0.03)
    assert np.all(np.diff(res.curve["median"].sel(schedule="regimen").values) <= 1e-12)


def test_template_scaling_schedule_family_and_common_random_numbers(model):
    cl = model.parameter("CL").value
    pop = {"omega": {"CL": OMEGA}}
    once = [ldpk.Bolus(1.0, route="iv")]
    loading = [ldpk.Bolus(2.0, route="iv"), ldpk.Bolus(1.0, time=24.0, route="iv")]
    kw = dict(doses=[10.0, 300.0], target=0.9, confidence=0.5, n_trials=10, n_subjects=400, bandwidth=0.02, **_kw())  # fmt: skip
    crit = ("cp_auc_inf", ">=", TARGET)
    # times on both sides of the second dose, so that the trapezoidal AUC sees its jump
    times = np.union1d(TIMES, [23.999, 24.001])
    fam = dz.select_dose(model, pop, {"once": once, "loading": loading}, crit, times, **kw)
    alone = dz.select_dose(model, pop, loading, crit, times, **kw)
    # the subjects are the same whatever the regimens (common random numbers)
    assert fam.table.loc["loading", "dose"] == pytest.approx(alone.dose, rel=1e-9)
    # the template keeps its 2:1 ratio and the dose is the first amount, so AUC_inf =
    # 1.5 dose / CL and the loading schedule's dose is 2/3 of the single dose (up to the
    # trapezoid's error over the 0.002 h step across the jump)
    ratio = fam.table.loc["loading", "dose"] / fam.table.loc["once", "dose"]
    assert ratio == pytest.approx(2.0 / 3.0, rel=1e-3)
    expected = TARGET * cl * np.exp(OMEGA * norm.ppf(0.9))
    assert fam.table.loc["once", "dose"] == pytest.approx(expected, rel=0.04)
    # equal totals (AUC_inf depends on the total only): the first schedule is recommended
    assert fam.table.loc["loading", "total"] == pytest.approx(fam.table.loc["once", "total"], rel=1e-3)  # fmt: skip
    assert fam.table["recommended"].sum() == 1
    # a function dose -> regimen gives the same as the list template
    fn = dz.select_dose(model, pop, lambda d: [ldpk.Bolus(d, route="iv")], crit, times, **kw)
    assert fn.dose == pytest.approx(fam.table.loc["once", "dose"], rel=1e-9)
    # the levels carry the unsmoothed attainment per schedule and dose
    assert set(fam.levels["schedule"].values) == {"once", "loading"}
    assert fam.levels.sizes["level"] == 4


def test_out_of_range_is_reported_not_extrapolated(model):
    pop = {"omega": {"CL": OMEGA}}
    reg = [ldpk.Bolus(1.0, route="iv")]
    kw = dict(n_trials=4, n_subjects=50, target=0.9, confidence=0.5, **_kw())
    high = dz.select_dose(model, pop, reg, ("cp_auc_inf", ">=", TARGET), TIMES, doses=[1.0, 2.0], **kw)  # fmt: skip
    assert high.table.loc["regimen", "status"] == "not reached" and np.isnan(high.dose)
    low = dz.select_dose(model, pop, reg, ("cp_auc_inf", ">=", TARGET), TIMES, doses=[1e4, 2e4], **kw)  # fmt: skip
    assert low.table.loc["regimen", "status"] == "below range"
    assert low.dose == pytest.approx(1e4)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"doses": [100.0]}, "at least two dose levels"),
        ({"doses": [100.0, 50.0]}, "increasing"),
        ({"doses": [0.0, 50.0]}, "> 0"),
        ({"target": 1.5}, "target must be a probability"),
        ({"confidence": 0.0}, "confidence must be a probability"),
        ({"bandwidth": -1.0}, "bandwidth must be a positive"),
        ({"criterion": ("cp_aucc", ">=", 1.0)}, "variable 'cp_aucc' is not computed"),
        ({"criterion": ("cp_auc_inf", "=>", 1.0)}, "unknown comparison"),
        ({"regimen": [ldpk.Reset(0.0)]}, "cannot be scaled"),
        ({"regimen": {}}, "mapping is empty"),
        ({"regimen": [ldpk.Bolus(0.0, route="iv")]}, "first dose of a template must be positive"),
    ],
)
def test_bad_inputs_are_refused_before_anything_runs(model, monkeypatch, kwargs, match):
    import ldpk.design._dose as mod

    def never(*a, **k):
        raise AssertionError("the trial ran")

    monkeypatch.setattr(mod, "virtual_trial", never)
    args = dict(regimen=[ldpk.Bolus(100.0, route="iv")], criterion=("cp_auc_inf", ">=", 1.0), doses=[10.0, 100.0])  # fmt: skip
    args.update(kwargs)
    with pytest.raises(DataError, match=match):
        dz.select_dose(model, {"omega": {"CL": 0.3}}, args.pop("regimen"), args.pop("criterion"), TIMES, n_trials=2, n_subjects=2, **args, **_kw())  # fmt: skip


def test_dose_response_plot(model, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from ldpk.plots import plot_dose_response

    pop = {"omega": {"CL": OMEGA}}
    res = dz.select_dose(model, pop, [ldpk.Bolus(1.0, route="iv")], ("cp_auc_inf", ">=", TARGET), TIMES, doses=[30.0, 300.0], n_trials=5, n_subjects=50, **_kw())  # fmt: skip
    fig = plot_dose_response(res, tmp_path / "dose.png")
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    assert (tmp_path / "dose.png").stat().st_size > 1000
    # the selected dose is drawn as a vertical line at its value
    xs = [line.get_xdata()[0] for line in ax.get_lines() if len(line.get_xdata()) == 2 and line.get_xdata()[0] == line.get_xdata()[1]]  # fmt: skip
    assert any(x == pytest.approx(res.dose) for x in xs)
