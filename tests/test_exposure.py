"""ldpk.exposure against closed forms: one-compartment IV bolus and oral absorption (AUC, AUC∞,
λz, MRT, time above a threshold, Cmax, Tmax); batching, jit and vmap; interpolated values
against np.interp; units; errors for bad names and options; zeros in y."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ldpk  # noqa: F401  (configures JAX: float64)
from ldpk import exposure as ex
from ldpk.errors import DataError

D, V, CL = 100.0, 10.0, 2.0
K = CL / V
KA, F = 1.5, 0.8


def _iv(t, dose=D, v=V, cl=CL):
    return dose / v * np.exp(-cl / v * t)


def _oral(t, ka=KA, v=V, cl=CL, f=F, dose=D):
    k = cl / v
    return f * dose * ka / (v * (ka - k)) * (np.exp(-k * t) - np.exp(-ka * t))


T_IV = np.linspace(0.0, 24.0, 481)  # h = 0.05; C_last/C0 = e^-4.8: the extrapolation matters
T_ORAL = np.linspace(0.0, 48.0, 4801)  # h = 0.01


def test_iv_bolus_closed_forms():
    t, y = T_IV, _iv(T_IV)
    tl = t[-1]
    # the log-down rule and the exact log-trapezoid AUMC are exact for a mono-exponential,
    # and the log-linear fit of exact points gives k exactly: only rounding error (rel 1e-10)
    assert ex.auc(t, y) == pytest.approx(D / CL * (1 - np.exp(-K * tl)), rel=1e-10)
    assert ex.lambda_z(t, y) == pytest.approx(K, rel=1e-10)
    assert ex.lambda_z(t, y, n_terminal=50) == pytest.approx(K, rel=1e-10)
    assert ex.auc_inf(t, y) == pytest.approx(D / CL, rel=1e-10)
    assert ex.mrt(t, y) == pytest.approx(V / CL, rel=1e-10)
    c0 = D / V
    aumc_t = c0 * (1 / K**2 - np.exp(-K * tl) * (tl / K + 1 / K**2))
    auc_t = c0 / K * (1 - np.exp(-K * tl))
    assert ex.mrt(t, y, extrapolate=False) == pytest.approx(aumc_t / auc_t, rel=1e-10)
    # linear trapezoids overestimate a convex curve by about (k h)^2 / 12 = 8e-6 (relative)
    lin = float(ex.auc(t, y, method="linear"))
    assert D / CL * (1 - np.exp(-K * tl)) < lin == pytest.approx(D / CL * (1 - np.exp(-K * tl)), rel=2e-5)  # fmt: skip
    # time above: linear interpolation of an exponential moves the crossing by at most about
    # k h^2 / 8 = 6e-5 h
    for thr in (0.5, 1.0, 7.0):
        assert ex.time_above(t, y, thr) == pytest.approx(np.log(c0 / thr) / K, abs=1e-4)
    assert ex.time_above(t, y, 20.0) == 0.0
    assert ex.time_above(t, y, 0.0) == pytest.approx(tl, rel=1e-14)  # y > 0 throughout
    assert ex.cmax(t, y) == c0 and ex.tmax(t, y) == 0.0
    assert ex.cmin(t, y) == y[-1]
    assert ex.cmin(t, y, after=10.0) == y[-1]
    assert np.isnan(ex.cmin(t, y, after=30.0))  # no grid time after 30 h


def test_oral_closed_forms():
    t, y = T_ORAL, _oral(T_ORAL)
    tmax = np.log(KA / K) / (KA - K)
    cmax = F * D * KA / (V * (KA - K)) * (np.exp(-K * tmax) - np.exp(-KA * tmax))
    assert ex.tmax(t, y) == pytest.approx(tmax, abs=0.005)  # half the grid spacing
    # the grid misses the peak by <= h/2: relative error <= |C''| (h/2)^2 / (2 Cmax) ~ 2e-6
    assert ex.cmax(t, y) == pytest.approx(cmax, rel=1e-5)
    # at t = 48 h e^-(ka t) is 1e-31: the terminal phase is e^-(k t), so λz = k (rounding);
    # the rising part uses linear trapezoids: O(h^2) = 1e-4 absolute error, rel ~ 1e-6
    assert ex.lambda_z(t, y) == pytest.approx(K, rel=1e-8)
    assert ex.auc_inf(t, y) == pytest.approx(F * D / CL, rel=1e-5)
    assert ex.mrt(t, y) == pytest.approx(1 / KA + 1 / K, rel=1e-5)


def _grid_of_curves():
    v = np.array([5.0, 10.0, 20.0])[:, None, None]
    cl = np.array([1.0, 2.0, 3.0, 4.0])[None, :, None]
    return T_ORAL, _oral(T_ORAL, v=v, cl=cl)  # (3, 4, T)


BATCH_OPTIONS = {"threshold": 1.0, "at": 11.99, "after": 12.0, "dose": D}


def test_batched_results_equal_a_loop():
    t, y = _grid_of_curves()
    names = list(ex.METRICS)
    res = ex.compute(t, y, names, output_unit="mg/L", time_unit="h", **BATCH_OPTIONS)
    for name in names:
        assert res[name].value.shape == (3, 4), name
        loop = [ex.compute(t, y[i, j], [name], output_unit="mg/L", time_unit="h", **BATCH_OPTIONS)[name].value for i in range(3) for j in range(4)]  # fmt: skip
        # the same operations on each curve: equal to rounding (rel 1e-12)
        np.testing.assert_allclose(res[name].value, np.reshape(loop, (3, 4)), rtol=1e-12, err_msg=name)  # fmt: skip


def test_jit_and_vmap_match_eager():
    t, y = _grid_of_curves()
    opts = {n: {o: BATCH_OPTIONS[o] for o in m.options if o in BATCH_OPTIONS} for n, m in ex.METRICS.items()}  # fmt: skip
    for name, m in ex.METRICS.items():
        eager = m.fn(t, y, **opts[name])
        jitted = jax.jit(m.fn)(t, y, **opts[name])  # t, y and the options traced
        mapped = jax.vmap(jax.vmap(lambda yi, fn=m.fn, kw=opts[name]: fn(t, yi, **kw)))(y)
        np.testing.assert_allclose(jitted, eager, rtol=1e-12, err_msg=name)
        np.testing.assert_allclose(mapped, eager, rtol=1e-12, err_msg=name)
    # static options: jit with them static
    auc = jax.jit(ex.auc, static_argnames="method")(t, y, method="linear")
    np.testing.assert_allclose(auc, ex.auc(t, y, method="linear"), rtol=1e-12)
    mrt = jax.jit(ex.mrt, static_argnames=("extrapolate", "n_terminal"))(t, y, extrapolate=False, n_terminal=4)  # fmt: skip
    np.testing.assert_allclose(mrt, ex.mrt(t, y, extrapolate=False, n_terminal=4), rtol=1e-12)
    # a threshold per curve broadcasts against the batch shape
    thr = np.array([0.5, 1.0, 2.0])[:, None]
    want = [[ex.time_above(t, y[i, j], thr[i, 0]) for j in range(4)] for i in range(3)]
    np.testing.assert_allclose(ex.time_above(t, y, thr), want, rtol=1e-12)


def test_interpolated_values_match_np_interp():
    t, y = _grid_of_curves()
    at = np.array([0.0, 0.333, 5.0, 12.345, 48.0])
    got = ex.trough(t, y, at)
    assert got.shape == (3, 4, 5)
    want = np.stack([np.stack([np.interp(at, t, y[i, j]) for j in range(4)]) for i in range(3)])
    np.testing.assert_allclose(got, want, rtol=1e-13)  # same formula, rounding only
    np.testing.assert_allclose(ex.amount_at(t, y, 5.0), want[..., 2], rtol=1e-13)
    assert np.isnan(ex.trough(t, y[0, 0], [-1.0, 48.5])).all()  # outside the grid
    # amount in the central compartment after an IV bolus: fraction e^-(k t), up to the
    # linear interpolation error (<= (k h)^2 / 8 = 1.25e-5 relative on the 0.05 h grid)
    amount = V * _iv(T_IV)
    frac = ex.fraction_at(T_IV, amount, [1.0, 3.33, 10.01], dose=D)
    np.testing.assert_allclose(frac, np.interp([1.0, 3.33, 10.01], T_IV, amount) / D, rtol=1e-13)  # fmt: skip
    np.testing.assert_allclose(frac, np.exp(-K * np.array([1.0, 3.33, 10.01])), rtol=1.3e-5)


def test_time_above_exact_for_piecewise_linear():
    t = np.array([0.0, 1.0, 2.0, 3.0])
    y = np.array([0.0, 2.0, 0.0, 4.0])
    # crossings of 1 at 0.5, 1.5 and 2.25: 0.5 + 0.5 + 0.75 (exact up to rounding)
    assert ex.time_above(t, y, 1.0) == pytest.approx(1.75, abs=1e-15)
    assert ex.time_above(t, y, 2.0) == pytest.approx(0.5, abs=1e-15)  # y > 2 only in (2.5, 3]


def test_compute_units_and_options():
    t, y = T_ORAL, _oral(T_ORAL)
    names = ["auc", "auc_inf", "lambda_z", "cmax", "tmax", "time_above", "mrt", "amount_at", "fraction_at"]  # fmt: skip
    res = ex.compute(t, y, names, output_unit="mg/L", time_unit="h", amount_unit="mg", threshold=1.0, at=2.0, dose=D)  # fmt: skip
    units = {n: r.unit for n, r in res.items()}
    assert units == {"auc": "mg/L*h", "auc_inf": "mg/L*h", "lambda_z": "1/h", "cmax": "mg/L", "tmax": "h", "time_above": "h", "mrt": "h", "amount_at": "mg", "fraction_at": "1"}  # fmt: skip
    assert ex.compute(t, y, "amount_at", output_unit="mg", time_unit="h", at=1.0)["amount_at"].unit == "mg"  # fmt: skip
    value, unit = res["cmax"]
    assert unit == "mg/L" and float(value) == float(ex.cmax(t, y))
    # options go to the metrics that take them
    trunc = ex.compute(t, y, ["mrt", "auc"], output_unit="mg/L", time_unit="h", extrapolate=False)
    assert float(trunc["mrt"].value) == float(ex.mrt(t, y, extrapolate=False))


def test_bad_names_and_options_raise_data_error():
    t, y = T_IV, _iv(T_IV)
    kw = {"output_unit": "mg/L", "time_unit": "h"}
    with pytest.raises(DataError, match="'aucc'.*auc, auc_inf.*time_above.*fraction_at"):
        ex.compute(t, y, ["auc", "aucc"], **kw)
    with pytest.raises(DataError, match="'time_above' needs option.*threshold"):
        ex.compute(t, y, ["time_above"], **kw)
    with pytest.raises(DataError, match="'fraction_at' needs option.*at, dose"):
        ex.compute(t, y, ["fraction_at"], **kw)
    with pytest.raises(DataError, match="unknown option.*treshold.*threshold"):
        ex.compute(t, y, ["time_above"], treshold=1.0, **kw)
    with pytest.raises(DataError, match="unknown AUC method 'log'.*linear-up/log-down"):
        ex.auc(t, y, method="log")
    with pytest.raises(DataError, match="n_terminal"):
        ex.lambda_z(t, y, n_terminal=1)
    with pytest.raises(DataError, match="shape"):
        ex.cmax(t, y[:-1])


def test_zeros_give_no_nan():
    # oral dose with a 2 h lag: y = 0 before it
    t = T_ORAL
    lag = 2.0
    y = np.where(t < lag, 0.0, _oral(np.maximum(t - lag, 0.0)))
    assert y[0] == 0.0 and np.all(np.isfinite(y))
    # the log rule is never applied at zeros; linear trapezoids on the rising part: rel 1e-5
    tl = t[-1] - lag
    want = F * D / CL - F * D * KA / (V * (KA - K)) * (np.exp(-K * tl) / K - np.exp(-KA * tl) / KA)  # fmt: skip
    assert ex.auc(t, y) == pytest.approx(want, rel=1e-5)
    assert ex.cmax(t, y) == pytest.approx(float(ex.cmax(T_ORAL, _oral(T_ORAL))), rel=1e-5)
    assert np.isfinite(ex.mrt(t, y)) and np.isfinite(ex.auc_inf(t, y))
    grad = jax.grad(lambda y: ex.auc(t, y) + ex.mrt(t, y) + ex.time_above(t, y, 1.0))(jnp.asarray(y))  # fmt: skip
    assert np.all(np.isfinite(grad))
    # all zeros: AUC and Cmax 0; MRT (0/0) and λz (no positive terminal points) NaN
    z = np.zeros((2, t.size))
    np.testing.assert_array_equal(ex.auc(t, z), 0.0)
    np.testing.assert_array_equal(ex.cmax(t, z), 0.0)
    assert np.isnan(ex.mrt(t, z)).all() and np.isnan(ex.lambda_z(t, z)).all()
    assert np.isfinite(jax.grad(lambda y: ex.auc(t, y).sum())(jnp.asarray(z))).all()
    # a curve that ends at zero: AUC finite, λz and AUC∞ NaN
    y_end0 = np.concatenate([_iv(T_IV[:-1]), [0.0]])
    assert np.isfinite(ex.auc(T_IV, y_end0)) and np.isnan(ex.auc_inf(T_IV, y_end0))
