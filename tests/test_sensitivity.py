"""ldpk.sensitivity: local sensitivities against the closed form of a one-compartment IV
bolus and against finite differences; Sobol' and Morris against the Ishigami function's
analytic indices (through the same sampling -> evaluation -> analysis path as models) and
against a model whose AUC depends on CL only; validation; plots."""

from __future__ import annotations

import dataclasses

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from scipy import stats  # noqa: E402

import ldpk  # noqa: E402
from ldpk import sensitivity  # noqa: E402
from ldpk.errors import DataError  # noqa: E402
from ldpk.plots import plot_indices, plot_local  # noqa: E402

TIMES = np.array([0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 24.0])
IV = [ldpk.Bolus(100.0, route="iv")]
#: The ODE kernel at tolerances where its solution (and derivatives) are ~1e-11 relative on
#: this non-stiff model: the explicit solver. Kvaerno5 at rtol 1e-10 was 1e-6 off the
#: closed-form sensitivities at t = 0.5 h, where they are small (-0.04).
TIGHT = ldpk.ODEOptions(rtol=1e-12, atol=1e-14, solver="tsit5")


@pytest.fixture(scope="module")
def one_cpt():
    return ldpk.load_model("one_compartment")


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


# --------------------------------------------------------------------------- local


@pytest.mark.parametrize(
    ("method", "ode"),
    [
        ("exact", None),
        ("analytic", None),
        ("ode", TIGHT),
        ("ode", dataclasses.replace(TIGHT, gradient="forward")),  # jax.jacfwd
    ],
)
def test_local_iv_bolus_matches_closed_form(one_cpt, method, ode):
    """C = D/V e^{-CL t/V}: d log C/d log CL = -CL t/V, d log C/d log V = -1 + CL t/V; the
    oral-route parameters do not act on an IV dose (0)."""
    params = {"CL": 3.0, "V": 20.0}
    da = sensitivity.local(one_cpt, params, IV, TIMES, method=method, ode=ode)
    assert da.dims == ("parameter", "output", "time")
    assert list(da["parameter"].values) == list(one_cpt.parameter_names)
    assert list(da["output"].values) == ["cp"]
    np.testing.assert_array_equal(da["time"], TIMES)
    assert da.attrs["units"] == "1" and da.attrs["model"] == "one_compartment"
    # The closed form ('analytic') is used for population tables only; one subject's
    # regimen runs the matrix exponentials ('exact'), as in simulate().
    assert da.attrs["kernel"] == ("exact" if method == "analytic" else method)
    kt = 3.0 / 20.0 * TIMES
    cp = da.sel(output="cp")
    np.testing.assert_allclose(cp.sel(parameter="CL"), -kt, rtol=1e-8)
    np.testing.assert_allclose(cp.sel(parameter="V"), -1.0 + kt, rtol=1e-8)
    np.testing.assert_array_equal(cp.sel(parameter=["KA", "F", "TLAG"]), 0.0)


def test_local_nan_where_output_is_zero(one_cpt):
    """Before the dose y = 0: the relative sensitivity is undefined (NaN); selection of
    parameters and outputs."""
    dose_at_1 = [ldpk.Bolus(100.0, time=1.0, route="iv")]
    da = sensitivity.local(
        one_cpt, None, dose_at_1, [0.5, 2.0, 5.0], parameters=["V", "CL"], outputs=["cp"]
    )
    assert list(da["parameter"].values) == ["V", "CL"]
    assert np.isnan(da.isel(time=0)).all()
    k = one_cpt.parameter("CL").value / one_cpt.parameter("V").value
    np.testing.assert_allclose(
        da.sel(parameter="CL", output="cp")[1:], -k * np.array([1.0, 4.0]), rtol=1e-8
    )


def test_local_ode_kernel_vs_central_differences(one_cpt):
    """Oral dose with a lag time and bioavailability on the ODE kernel: every parameter's
    normalised sensitivity against central differences of log C in log θ (relative step
    1e-5, all perturbations in one batched simulate); C ∝ F, so d log C/d log F = 1."""
    params = {"TLAG": 0.5, "F": 0.8}
    reg = [ldpk.Bolus(100.0, route="oral")]
    times = np.array([0.25, 0.75, 1.0, 2.0, 4.0, 8.0, 24.0])  # 0.25 h: before the lag
    da = sensitivity.local(one_cpt, params, reg, times, method="ode", ode=TIGHT)
    s = np.asarray(da.sel(output="cp"))
    assert np.isnan(s[:, 0]).all()
    np.testing.assert_allclose(s[one_cpt.parameter_names.index("F"), 1:], 1.0, rtol=1e-10)

    h = 1e-5
    names = one_cpt.parameter_names
    point = {n: params.get(n, one_cpt.parameter(n).value) for n in names}
    batch = {n: [] for n in names}
    for j in names:
        for sign in (1.0, -1.0):
            for n in names:
                batch[n].append(point[n] * (1.0 + sign * h) if n == j else point[n])
    sim = ldpk.simulate(one_cpt, batch, reg, times[1:], method="ode", ode=TIGHT)
    logc = np.log(np.asarray(sim.output("cp"))).reshape(len(names), 2, -1)
    fd = (logc[:, 0] - logc[:, 1]) / (2 * h)
    np.testing.assert_allclose(s[:, 1:], fd, rtol=1e-5, atol=1e-9)


# --------------------------------------------------------------------------- Ishigami

#: Ishigami function with a = 7, b = 0.1 and x_i ~ U(-π, π): analytic indices
#: (Ishigami & Homma 1990; Saltelli et al. 2008, Global Sensitivity Analysis, §4.5).
ISHIGAMI = {f"x{i}": f"uniform({-np.pi!r}, {np.pi!r})" for i in (1, 2, 3)}
S1_EXACT = np.array([0.3139, 0.4424, 0.0])
ST_EXACT = np.array([0.5576, 0.4424, 0.2437])


def ishigami(table):
    x1, x2, x3 = table["x1"], table["x2"], table["x3"]
    return np.sin(x1) + 7.0 * np.sin(x2) ** 2 + 0.1 * x3**4 * np.sin(x1)


@pytest.fixture(scope="module")
def ishigami_sobol():
    return sensitivity._sobol(ISHIGAMI, ishigami, 2**13, second_order=True)


def test_sobol_ishigami_analytic_indices_within_intervals(ishigami_sobol):
    """Each S1, ST and S2 within its bootstrap half-width (95 %) of the analytic value, with
    no slack (the errors are ~2 % of the half-widths: the scrambled Sobol' points converge
    faster than the bootstrap, which assumes random sampling, allows); S2(x1, x3) = ST1 -
    S1_1, the other pairs 0. n = 2**13 base points, n·(2D + 2) = 65536 evaluations."""
    ds = ishigami_sobol
    assert list(ds["parameter"].values) == ["x1", "x2", "x3"]
    assert ds.attrs["n_evaluations"] == 2**13 * (2 * 3 + 2)
    for key, exact in (("S1", S1_EXACT), ("ST", ST_EXACT)):
        est, conf = np.asarray(ds[key]), np.asarray(ds[f"{key}_conf"])
        assert (np.abs(est - exact) <= conf).all(), (key, est, conf)
        assert (conf < 0.05).all()
        np.testing.assert_allclose(ds[f"{key}_lower"], est - conf)
        np.testing.assert_allclose(ds[f"{key}_upper"], est + conf)
    s2, s2c = np.asarray(ds["S2"]), np.asarray(ds["S2_conf"])
    s2_exact = {(0, 1): 0.0, (0, 2): ST_EXACT[0] - S1_EXACT[0], (1, 2): 0.0}
    for (i, j), exact in s2_exact.items():
        assert abs(s2[i, j] - exact) <= s2c[i, j], ((i, j), s2[i, j], s2c[i, j])


def test_sobol_same_seed_same_result():
    """Reproducible for a seed (0 included); a scipy.stats distribution gives the same
    values as the equivalent text."""
    a = sensitivity._sobol(ISHIGAMI, ishigami, 256, seed=3, num_resamples=50)
    scipy_x1 = {**ISHIGAMI, "x1": stats.uniform(loc=-np.pi, scale=2 * np.pi)}
    s = sensitivity._sobol(scipy_x1, ishigami, 256, seed=3, num_resamples=50)
    np.testing.assert_allclose(s["S1"], a["S1"], rtol=1e-12, atol=1e-15)
    zero = [sensitivity._sobol(ISHIGAMI, ishigami, 64, seed=0, num_resamples=50) for _ in "ab"]
    assert zero[0].identical(zero[1])
    b = sensitivity._sobol(ISHIGAMI, ishigami, 256, seed=3, num_resamples=50)
    c = sensitivity._sobol(ISHIGAMI, ishigami, 256, seed=4, num_resamples=50)
    assert a.identical(b)
    assert not np.array_equal(a["S1"], c["S1"])


def test_morris_ishigami_screening():
    """x3 acts only through its interaction with x1, yet its elementary effects are not 0;
    a dummy parameter the function ignores has every effect exactly 0."""
    dists = {**ISHIGAMI, "dummy": "uniform(0, 1)", "fixed": 2.0}
    ds = sensitivity._morris(dists, ishigami, 20, num_levels=4, seed=1)
    assert list(ds["parameter"].values) == ["x1", "x2", "x3", "dummy"]
    assert ds.attrs["n_evaluations"] == 20 * (4 + 1)
    mu_star = ds["mu_star"].to_series()
    assert mu_star["dummy"] == 0.0 and ds["sigma"].sel(parameter="dummy") == 0.0
    assert mu_star["x3"] > 0.1
    assert mu_star["x1"] > mu_star["dummy"] and mu_star["x2"] > mu_star["dummy"]
    assert set(ds.data_vars) == {"mu", "mu_star", "sigma", "mu_star_conf"}


# --------------------------------------------------------------------------- models


@pytest.fixture(scope="module")
def auc_sobol(one_cpt):
    dists = {"CL": "lognormal(2.75, 0.3)", "V": "lognormal(31.8, 0.3)", "KA": 1.5}
    times = np.linspace(0.0, 48.0, 49)
    return sensitivity.sobol(one_cpt, dists, IV, times, metric="auc_inf", n=1024)


def test_sobol_auc_inf_depends_on_clearance_only(auc_sobol):
    """AUC_inf = D/CL (the log-down trapezoids and C_last/λz are exact for a
    mono-exponential): S1(CL) = ST(CL) = 1 and S1(V) = ST(V) = 0 within the intervals (ST(V)
    and its interval are at rounding level: 1e-12 slack)."""
    ds = auc_sobol
    assert list(ds["parameter"].values) == ["CL", "V"]  # KA is constant: left out
    assert ds.attrs["n_evaluations"] == 1024 * (2 + 2)
    assert ds.attrs["metric"] == "auc_inf" and ds.attrs["metric_unit"] == "mg/L*h"
    assert ds.attrs["output"] == "cp"
    for key in ("S1", "ST"):
        est, conf = ds[key].to_series(), ds[f"{key}_conf"].to_series()
        assert abs(est["CL"] - 1.0) <= conf["CL"], (key, est["CL"], conf["CL"])
        assert abs(est["V"]) <= conf["V"] + 1e-12, (key, est["V"], conf["V"])
    assert abs(float(ds["ST"].sel(parameter="V"))) < 1e-12


def test_sobol_each_time_point(one_cpt):
    """metric=None: indices per time. Before the dose cp is 0 for every set (NaN: no
    variance); at the dose C = D/V depends on V only."""
    dists = {"CL": "lognormal(2.75, 0.3)", "V": "uniform(20, 40)"}
    reg = [ldpk.Bolus(100.0, time=1.0, route="iv")]
    ds = sensitivity.sobol(one_cpt, dists, reg, [0.5, 1.0, 12.0], metric=None, n=256)
    assert ds["S1"].dims == ("parameter", "time")
    np.testing.assert_array_equal(ds["time"], [0.5, 1.0, 12.0])
    assert np.isnan(ds["S1"].sel(time=0.5)).all() and np.isnan(ds["ST"].sel(time=0.5)).all()
    at_dose = ds.sel(time=1.0)
    assert abs(float(at_dose["ST"].sel(parameter="CL"))) < 1e-12
    assert abs(float(at_dose["S1"].sel(parameter="V")) - 1.0) <= float(
        at_dose["S1_conf"].sel(parameter="V")
    )


def test_morris_model(one_cpt):
    """Morris on AUC_inf: only CL has effects (V's are 0 to rounding)."""
    dists = {"CL": "uniform(2, 4)", "V": "uniform(20, 40)"}
    ds = sensitivity.morris(one_cpt, dists, IV, np.linspace(0, 48, 49), metric="auc_inf", r=10)
    assert ds.attrs["n_evaluations"] == 10 * 3
    mu = ds["mu_star"].to_series()
    assert mu["CL"] > 1.0 and mu["V"] < 1e-9 * mu["CL"]
    assert float(ds["mu"].sel(parameter="CL")) < 0  # AUC falls as CL rises


# --------------------------------------------------------------------------- validation


@pytest.fixture
def no_simulation(monkeypatch):
    """Validation must fail before anything is prepared, sampled or compiled."""

    def fail(*args, **kwargs):
        raise AssertionError("simulated before validating")

    monkeypatch.setattr(sensitivity, "prepare", fail)
    monkeypatch.setattr(sensitivity, "_evaluate", fail)


@pytest.mark.usefixtures("no_simulation")
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"distributions": {"CLX": "uniform(1, 2)"}}, r"unknown parameter.*CLX.*CL, V, KA"),
        ({"output": "ce"}, r"unknown output 'ce'.*outputs: cp"),
        ({"metric": "area"}, r"unknown metric 'area'.*auc, auc_inf"),
        ({"metric": "trough"}, r"needs option\(s\) at"),
        ({"metric": "trough", "metric_options": {"at": [1, 2]}}, r"one time `at`"),
        ({"metric": "auc", "metric_options": {"threshold": 1}}, r"takes no option"),
        ({"n": 1000}, r"power of two .*512 or 1024.*balance properties"),
        ({"n": 0}, r"n must be an integer >= 1"),
        (
            {"distributions": {"CL": 2.0, "V": "constant(3)"}},
            r"at least one parameter must vary",
        ),  # fmt: skip
        ({"distributions": {"CL": "lognormal(2, -1)"}}, r"sigma must be > 0"),
        ({"distributions": {"CL": object()}}, r"expected a distribution"),
    ],
)
def test_sobol_validation(one_cpt, kwargs, match):
    args = {"distributions": {"CL": "uniform(1, 2)"}, **kwargs}
    dists = args.pop("distributions")
    with pytest.raises(DataError, match=match):
        sensitivity.sobol(one_cpt, dists, IV, TIMES, **args)


@pytest.mark.usefixtures("no_simulation")
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_levels": 5}, r"num_levels must be even"),
        ({"r": 1}, r"r \(the number of trajectories\) must be an integer >= 2"),
        ({"metric": "cmaxx"}, r"unknown metric"),
    ],
)
def test_morris_validation(one_cpt, kwargs, match):
    with pytest.raises(DataError, match=match):
        sensitivity.morris(one_cpt, {"CL": "uniform(1, 2)"}, IV, TIMES, **kwargs)


@pytest.mark.usefixtures("no_simulation")
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"params": {"CLX": 1.0}}, r"unknown parameter.*CLX.*parameters: CL, V"),
        ({"parameters": ["Q"]}, r"unknown parameter.*Q"),
        ({"outputs": ["ce"]}, r"unknown output 'ce'"),
        ({"params": {"CL": [1.0, 2.0]}}, r"must be a scalar"),
    ],
)
def test_local_validation(one_cpt, kwargs, match):
    with pytest.raises(DataError, match=match):
        sensitivity.local(one_cpt, regimen=IV, times=TIMES, **kwargs)


# --------------------------------------------------------------------------- plots


def test_plot_indices_bars(ishigami_sobol):
    fig = plot_indices(ishigami_sobol)
    assert isinstance(fig, matplotlib.figure.Figure)
    ax = fig.axes[0]
    assert len(ax.patches) == 2 * 3  # S1 and ST for each parameter
    ds = sensitivity._morris({**ISHIGAMI, "dummy": "uniform(0, 1)"}, ishigami, 4)
    _, ax2 = plt.subplots()
    fig2 = plot_indices(ds, ax=ax2)
    assert fig2 is ax2.figure and len(ax2.patches) == 2 * 4  # mu_star and sigma


def test_plot_indices_over_time():
    def each_time(table):  # two "time points"
        return np.stack([ishigami(table), ishigami(table) ** 2], axis=1)

    ds = sensitivity._sobol(ISHIGAMI, each_time, 64, num_resamples=20)
    ds = ds.assign_coords(time=[1.0, 2.0])
    assert ds["S1"].dims == ("parameter", "time")
    fig = plot_indices(ds)
    assert len(fig.axes[0].get_lines()) == 2 * 3  # S1 and ST per parameter


def test_plot_local(one_cpt):
    da = sensitivity.local(one_cpt, None, IV, TIMES, parameters=["CL", "V", "KA"])
    fig = plot_local(da)
    lines = fig.axes[0].get_lines()
    assert [ln.get_label() for ln in lines] == ["CL", "V", "KA"]
    np.testing.assert_array_equal(lines[0].get_xdata(), TIMES)
    with pytest.raises(DataError, match="no output 'ce'"):
        plot_local(da, output="ce")
