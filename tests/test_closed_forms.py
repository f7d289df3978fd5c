"""Exact (matrix-exponential) kernel vs textbook closed forms.

Oracles are written here in NumPy/SciPy from Gibaldi & Perrier, *Pharmacokinetics* (2nd ed.,
ch. 1-3) and Rowland & Tozer, *Clinical Pharmacokinetics* (ch. 3, 6, 10-11); no value below
comes from ldpk itself.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg

import ldpk

#: Relative tolerance of the exact kernel against closed forms (pointwise, with an absolute
#: floor of RTOL * 1e-3 * max|reference| so that values that are exactly 0 can be compared).
RTOL = 1e-9

TIMES = np.linspace(0.0, 48.0, 97)


def assert_close(actual, expected, rtol=RTOL):
    actual = np.asarray(actual, dtype=float)
    expected = np.asarray(expected, dtype=float)
    assert actual.shape == expected.shape
    scale = np.max(np.abs(expected))
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * 1e-3 * scale)


# ---- models --------------------------------------------------------------------------------
def _one_cmt_oral():
    return ldpk.build_model(
        {
            "name": "one_cmt_oral",
            "compartments": {"depot": {"unit": "mg"}, "central": {"unit": "mg"}},
            "parameters": {
                "CL": {"value": 2.0, "unit": "L/h"},
                "V": {"value": 10.0, "unit": "L"},
                "KA": {"value": 1.3, "unit": "1/h"},
                "F": {"value": 0.7, "unit": "1"},
            },
            "flows": [
                {"from": "depot", "to": "central", "k": "KA"},
                {"from": "central", "k": "CL / V"},
            ],
            "routes": {
                "oral": {"target": "depot", "bioavailability": "F"},
                "iv": {"target": "central"},
            },
            "outputs": {"cp": {"expr": "central / V", "unit": "mg/L"}},
        }
    )


def _two_cmt():
    return ldpk.build_model(
        {
            "name": "two_cmt",
            "compartments": {"central": {"unit": "mg"}, "periph": {"unit": "mg"}},
            "parameters": {
                "CL": {"value": 3.0, "unit": "L/h"},
                "V1": {"value": 12.0, "unit": "L"},
                "Q": {"value": 5.0, "unit": "L/h"},
                "V2": {"value": 30.0, "unit": "L"},
            },
            "flows": [
                {"from": "central", "k": "CL / V1"},
                {"from": "central", "to": "periph", "k": "Q / V1"},
                {"from": "periph", "to": "central", "k": "Q / V2"},
            ],
            "routes": {"iv": {"target": "central"}},
            "outputs": {"cp": {"expr": "central / V1", "unit": "mg/L"}},
        }
    )


def _three_cmt():
    return ldpk.build_model(
        {
            "name": "three_cmt",
            "compartments": {
                "central": {"unit": "mg"},
                "shallow": {"unit": "mg"},
                "deep": {"unit": "mg"},
            },
            "parameters": {
                "k10": {"value": 0.35, "unit": "1/h"},
                "k12": {"value": 0.9, "unit": "1/h"},
                "k21": {"value": 0.6, "unit": "1/h"},
                "k13": {"value": 0.12, "unit": "1/h"},
                "k31": {"value": 0.02, "unit": "1/h"},
                "V": {"value": 8.0, "unit": "L"},
            },
            "flows": [
                {"from": "central", "k": "k10"},
                {"from": "central", "to": "shallow", "k": "k12"},
                {"from": "shallow", "to": "central", "k": "k21"},
                {"from": "central", "to": "deep", "k": "k13"},
                {"from": "deep", "to": "central", "k": "k31"},
            ],
            "routes": {"iv": {"target": "central"}},
            "outputs": {"cp": {"expr": "central / V", "unit": "mg/L"}},
        }
    )


def _sink():
    return ldpk.build_model(
        {
            "name": "sink",
            "compartments": {"central": {"unit": "mg"}, "eliminated": {"unit": "mg"}},
            "parameters": {"k": {"value": 0.25, "unit": "1/h"}},
            "flows": [{"from": "central", "to": "eliminated", "k": "k"}],
            "routes": {"iv": {"target": "central"}},
        }
    )


@pytest.fixture(scope="module")
def oral():
    return _one_cmt_oral()


@pytest.fixture(scope="module")
def two_cmt():
    return _two_cmt()


@pytest.fixture(scope="module")
def three_cmt():
    return _three_cmt()


# ---- closed forms (NumPy) -------------------------------------------------------------------
def iv_bolus_1cmt(t, dose, k, V):
    """C = D/V e^{-kt} for t >= 0, 0 before the dose."""
    t = np.asarray(t, dtype=float)
    return np.where(t >= 0, dose / V * np.exp(-k * np.maximum(t, 0.0)), 0.0)


def infusion_1cmt(t, rate, dur, k, V):
    """Zero-order input R for T: C = R/(kV)(1 - e^{-kt}) during, C(T) e^{-k(t-T)} after."""
    t = np.asarray(t, dtype=float)
    tc = np.clip(t, 0.0, dur)
    during = rate / (k * V) * (1.0 - np.exp(-k * tc))
    return np.where(t >= 0, during * np.exp(-k * np.maximum(t - dur, 0.0)), 0.0)


def bateman(t, dose, ka, k, V):
    """One compartment, first-order absorption (ka != k): amount F·D already applied."""
    t = np.asarray(t, dtype=float)
    tp = np.maximum(t, 0.0)
    c = dose * ka / (V * (ka - k)) * (np.exp(-k * tp) - np.exp(-ka * tp))
    return np.where(t >= 0, c, 0.0)


# ---- single doses ---------------------------------------------------------------------------
def test_one_cmt_iv_bolus_batched(oral):
    CL = np.array([0.5, 2.0, 7.5])
    V = 10.0
    sim = ldpk.simulate(oral, {"CL": CL}, [ldpk.Bolus(100.0, route="iv")], TIMES, method="exact")
    assert sim.kernel == "exact"
    assert np.asarray(sim["cp"]).shape == (3, TIMES.size)
    for i, cl in enumerate(CL):
        assert_close(sim["cp"][i], iv_bolus_1cmt(TIMES, 100.0, cl / V, V))
    # depot untouched by an IV dose
    assert np.all(np.asarray(sim["depot"]) == 0.0)


def test_one_cmt_iv_infusion_during_and_after(oral):
    # 120 mg over 2.5 h: times inside the infusion (0 < t < 2.5) and after it.
    times = np.array([0.0, 0.3, 1.0, 2.0, 2.5, 2.7, 4.0, 10.0, 30.0])
    sim = ldpk.simulate(oral, {"CL": 1.7}, [ldpk.Infusion(120.0, route="iv", duration=2.5)], times)
    assert_close(sim["cp"], infusion_1cmt(times, 120.0 / 2.5, 2.5, 1.7 / 10.0, 10.0))


def test_bateman_first_order_absorption_including_ka_equal_k(oral):
    """Bateman function for KA != k, and its limit C = F·D·k·t·e^{-kt}/V for KA == k (a
    defective rate matrix: repeated eigenvalue)."""
    k, F, D = 2.0 / 10.0, 0.7, 250.0
    KA = np.array([0.4, 1.3, k])
    sim = ldpk.simulate(oral, {"KA": KA}, [ldpk.Bolus(D, route="oral")], TIMES)
    for i, ka in enumerate(KA[:2]):
        assert_close(sim["cp"][i], bateman(TIMES, F * D, ka, k, 10.0))
        assert_close(sim["depot"][i], F * D * np.exp(-ka * TIMES))  # depot: F·D e^{-ka t}
    assert np.all(np.isfinite(np.asarray(sim["cp"])))
    assert_close(sim["cp"][2], F * D * k * TIMES * np.exp(-k * TIMES) / 10.0)


def test_two_cmt_iv_bolus_biexponential(two_cmt):
    CL, V1, Q, V2 = 3.0, 12.0, 5.0, 30.0
    k10, k12, k21 = CL / V1, Q / V1, Q / V2
    s = k10 + k12 + k21
    disc = np.sqrt(s * s - 4.0 * k10 * k21)
    alpha, beta = (s + disc) / 2.0, (s - disc) / 2.0
    D = 500.0
    A = D / V1 * (alpha - k21) / (alpha - beta)
    B = D / V1 * (k21 - beta) / (alpha - beta)
    expected = A * np.exp(-alpha * TIMES) + B * np.exp(-beta * TIMES)
    sim = ldpk.simulate(two_cmt, None, [ldpk.Bolus(D, route="iv")], TIMES)
    assert_close(sim["cp"], expected)
    # peripheral amount: D k12/(alpha-beta) (e^{-beta t} - e^{-alpha t})
    periph = D * k12 / (alpha - beta) * (np.exp(-beta * TIMES) - np.exp(-alpha * TIMES))
    assert_close(sim["periph"], periph)


def test_three_cmt_iv_bolus_sum_of_exponentials(three_cmt):
    k10, k12, k21, k13, k31, V = 0.35, 0.9, 0.6, 0.12, 0.02, 8.0
    K = np.array(
        [
            [-(k10 + k12 + k13), k21, k31],
            [k12, -k21, 0.0],
            [k13, 0.0, -k31],
        ]
    )
    D = 80.0
    lam, vecs = np.linalg.eig(K)
    assert np.all(np.isreal(lam))
    lam, vecs = lam.real, vecs.real
    coef = np.linalg.solve(vecs, np.array([D, 0.0, 0.0]))
    # x(t) = sum_i c_i v_i e^{lambda_i t}: three exponentials in every compartment
    x_eig = (vecs[None, :, :] * (coef * np.exp(np.outer(TIMES, lam)))[:, None, :]).sum(axis=2)
    x_expm = np.stack([scipy.linalg.expm(K * t) @ np.array([D, 0.0, 0.0]) for t in TIMES])
    np.testing.assert_allclose(x_eig, x_expm, rtol=1e-11, atol=1e-12)  # the two oracles agree
    sim = ldpk.simulate(three_cmt, None, [ldpk.Bolus(D, route="iv")], TIMES)
    assert_close(sim["cp"], x_eig[:, 0] / V)
    for j in range(3):
        assert_close(np.asarray(sim.states)[:, j], x_expm[:, j])


# ---- multiple doses and steady state ---------------------------------------------------------
def test_multiple_oral_doses_superposition(oral):
    tau, n, D = 8.0, 5, 100.0
    ka, k, F, V = 1.3, 0.2, 0.7, 10.0
    sim = ldpk.simulate(
        oral, None, [ldpk.Bolus(D, time=1.0, route="oral", every=tau, count=n)], TIMES
    )
    expected = sum(bateman(TIMES - (1.0 + j * tau), F * D, ka, k, V) for j in range(n))
    assert_close(sim["cp"], expected)


def test_mixed_bolus_and_infusion_superposition(two_cmt):
    """Linearity: an IV bolus plus a later infusion equals the sum of both responses, with the
    two-compartment responses from scipy.linalg.expm (unit impulse response convolved)."""
    CL, V1, Q, V2 = 3.0, 12.0, 5.0, 30.0
    K = np.array([[-(CL + Q) / V1, Q / V2], [Q / V1, -Q / V2]])
    Kinv = np.linalg.inv(K)
    e0 = np.array([1.0, 0.0])

    def bolus(t, t0, D):
        return np.stack(
            [scipy.linalg.expm(K * (s - t0)) @ e0 * D if s >= t0 else np.zeros(2) for s in t]
        )

    def infusion(t, t0, R, T):
        # x(s) = K^{-1}(e^{K s} - I) R e0 during; then free decay
        out = []
        for s in t:
            a = min(max(s - t0, 0.0), T)
            x = Kinv @ (scipy.linalg.expm(K * a) - np.eye(2)) @ e0 * R
            out.append(scipy.linalg.expm(K * max(s - t0 - T, 0.0)) @ x)
        return np.stack(out)

    expected = bolus(TIMES, 0.0, 200.0) + infusion(TIMES, 6.0, 40.0, 3.0)
    sim = ldpk.simulate(
        two_cmt,
        None,
        [ldpk.Bolus(200.0, route="iv"), ldpk.Infusion(120.0, time=6.0, route="iv", rate=40.0)],
        TIMES,
    )
    assert_close(sim["central"], expected[:, 0])
    assert_close(sim["periph"], expected[:, 1])


def test_steady_state_iv_bolus_accumulation(oral):
    """SS bolus every tau (SS = 1) with two additional doses (count=3): the sum over past doses
    at 0, -tau, -2 tau, ... is C(t) = D/V e^{-kt} / (1 - e^{-k tau}) (accumulation factor at
    t = 0), plus single-dose responses to the doses at tau and 2 tau (superposition)."""
    tau, D, V = 12.0, 100.0, 10.0
    CL = np.array([1.0, 2.0, 4.0])
    sim = ldpk.simulate(
        oral, {"CL": CL}, [ldpk.Bolus(D, route="iv", every=tau, count=3, ss=1)], TIMES
    )
    for i, cl in enumerate(CL):
        k = cl / V
        past = D / V * np.exp(-k * TIMES) / (1.0 - np.exp(-k * tau))
        future = iv_bolus_1cmt(TIMES - tau, D, k, V) + iv_bolus_1cmt(TIMES - 2 * tau, D, k, V)
        assert_close(sim["cp"][i], past + future)
        np.testing.assert_allclose(sim["cp"][i][0], D / V / (1 - np.exp(-k * tau)), rtol=RTOL)


def test_steady_state_short_infusion(oral):
    """Rowland & Tozer: SS of an infusion (rate R, duration T) every tau, one compartment:
    during: Css(t) = R/(kV)(1 - e^{-kt}) + Cmin e^{-kt}, Cmin = R/(kV)(1-e^{-kT})e^{-k(tau-T)}
    / (1 - e^{-k tau}); after: Cmax e^{-k(t-T)}, Cmax = R/(kV)(1-e^{-kT})/(1-e^{-k tau})."""
    tau, T, D, V, CL = 12.0, 2.0, 240.0, 10.0, 2.0
    k, R = CL / V, D / T
    times = np.linspace(0.0, tau, 49)
    sim = ldpk.simulate(
        oral, {"CL": CL}, [ldpk.Infusion(D, route="iv", duration=T, every=tau, ss=1)], times
    )
    g = R / (k * V)
    cmax = g * (1 - np.exp(-k * T)) / (1 - np.exp(-k * tau))
    cmin = cmax * np.exp(-k * (tau - T))
    expected = np.where(
        times <= T,
        g * (1 - np.exp(-k * times)) + cmin * np.exp(-k * times),
        cmax * np.exp(-k * (times - T)),
    )
    assert_close(sim["cp"], expected)
    # with no further doses the SS profile is periodic only within the first interval:
    np.testing.assert_allclose(np.asarray(sim["cp"])[0], cmin, rtol=RTOL)


def test_steady_state_constant_infusion_value(oral):
    """AMT = 0, RATE > 0, SS = 1, II = 0: the state at the record is Css = R/CL."""
    R, CL = 15.0, 2.5
    rows = [{"time": 0.0, "evid": 1, "amt": 0.0, "rate": R, "ss": 1, "ii": 0.0, "route": "iv"}]
    sim = ldpk.simulate(oral, {"CL": CL}, rows, np.array([0.0]))
    np.testing.assert_allclose(np.asarray(sim["cp"]), [R / CL], rtol=RTOL)


def test_steady_state_first_order_absorption(oral):
    """C_ss(t) = F D ka / (V (ka - k)) [e^{-kt}/(1 - e^{-k tau}) - e^{-ka t}/(1 - e^{-ka tau})]
    (the sum over past doses), plus Bateman terms for the additional doses at tau and 2 tau.
    For KA == k the sum over past doses of the limit form is
    sum_n (t + n tau) e^{-k(t + n tau)} = e^{-kt} [t/(1-r) + tau r/(1-r)^2], r = e^{-k tau}."""
    tau, D, V, F = 12.0, 300.0, 10.0, 0.7
    k = 2.0 / V
    KA = np.array([0.4, 1.3, k])
    sim = ldpk.simulate(
        oral, {"KA": KA}, [ldpk.Bolus(D, route="oral", every=tau, count=3, ss=1)], TIMES
    )
    t = TIMES
    for i, ka in enumerate(KA[:2]):
        past = (
            F * D * ka / (V * (ka - k))
            * (np.exp(-k * t) / (1 - np.exp(-k * tau)) - np.exp(-ka * t) / (1 - np.exp(-ka * tau)))
        )  # fmt: skip
        future = bateman(t - tau, F * D, ka, k, V) + bateman(t - 2 * tau, F * D, ka, k, V)
        assert_close(sim["cp"][i], past + future)

    def limit(s):  # single dose, KA == k
        return np.where(s >= 0, F * D * k * s * np.exp(-k * np.maximum(s, 0.0)) / V, 0.0)

    r = np.exp(-k * tau)
    past = F * D * k / V * np.exp(-k * t) * (t / (1 - r) + tau * r / (1 - r) ** 2)
    assert_close(sim["cp"][2], past + limit(t - tau) + limit(t - 2 * tau))


# ---- singular rate matrix ---------------------------------------------------------------------
def test_sink_compartment_holds_dose_minus_central():
    m = _sink()
    k = 0.25
    doses = [ldpk.Bolus(100.0, route="iv"), ldpk.Infusion(60.0, time=10.0, route="iv", duration=4)]
    sim = ldpk.simulate(m, None, doses, TIMES, method="exact")
    central = 100.0 * np.exp(-k * TIMES) + infusion_1cmt(TIMES - 10.0, 15.0, 4.0, k, 1.0)
    given = 100.0 + 15.0 * np.clip(TIMES - 10.0, 0.0, 4.0)
    assert_close(sim["central"], central)
    assert_close(sim["eliminated"], given - central)


def test_sink_compartment_refuses_steady_state():
    with pytest.raises(ldpk.DataError, match="eliminated"):
        ldpk.simulate(_sink(), None, [ldpk.Bolus(100.0, every=12, ss=1)], TIMES)
