"""Linear models: the exact kernel (matrix exponential) and the ODE kernel (diffrax) agree.

The two kernels share the event timeline but nothing of the dynamics, so agreement at tight
ODE tolerances checks both (each is also checked against closed forms elsewhere).
"""

from __future__ import annotations

import numpy as np
import pytest

import ldpk

#: Agreement required between kernels: max_t |exact - ode| / max_t |exact|, and pointwise
#: |exact - ode| / |exact| where |exact| > 1e-3 max|exact|.
TOL = 1e-6
TIGHT = ldpk.ODEOptions(rtol=1e-10, atol=1e-12)
TIMES = np.linspace(0.0, 48.0, 97)


def assert_agree(exact, ode, tol=TOL):
    a = np.asarray(exact, dtype=float)
    b = np.asarray(ode, dtype=float)
    assert a.shape == b.shape
    assert np.all(np.isfinite(b))
    # reduce over the time axis (-1) for each parameter set
    scale = np.max(np.abs(a), axis=-1, keepdims=True)
    assert np.all(scale > 0)
    global_err = np.max(np.abs(a - b) / scale)
    assert global_err <= tol, f"max |exact - ode| / max |exact| = {global_err:.3g}"
    big = np.abs(a) > 1e-3 * scale
    point_err = np.max(np.abs(a - b)[big] / np.abs(a)[big])
    assert point_err <= tol, f"pointwise relative difference {point_err:.3g}"


@pytest.fixture(scope="module")
def two_cmt_oral():
    return ldpk.build_model(
        {
            "name": "two_cmt_oral",
            "compartments": {
                "depot": {"unit": "mg"},
                "central": {"unit": "mg"},
                "periph": {"unit": "mg"},
            },
            "parameters": {
                "CL": {"value": 3.0, "unit": "L/h"},
                "V1": {"value": 12.0, "unit": "L"},
                "Q": {"value": 5.0, "unit": "L/h"},
                "V2": {"value": 30.0, "unit": "L"},
                "KA": {"value": 0.9, "unit": "1/h"},
                "ALAG": {"value": 0.75, "unit": "h"},
                "F": {"value": 0.6, "unit": "1"},
            },
            "flows": [
                {"from": "depot", "to": "central", "k": "KA"},
                {"from": "central", "k": "CL / V1"},
                {"from": "central", "to": "periph", "k": "Q / V1"},
                {"from": "periph", "to": "central", "k": "Q / V2"},
            ],
            "routes": {
                "oral": {"target": "depot", "lag": "ALAG", "bioavailability": "F"},
                "iv": {"target": "central"},
            },
            "outputs": {"cp": {"expr": "central / V1", "unit": "mg/L"}},
        }
    )


@pytest.fixture(scope="module")
def three_cmt():
    return ldpk.build_model(
        {
            "name": "three_cmt",
            "compartments": {
                "central": {"unit": "mg"},
                "shallow": {"unit": "mg"},
                "deep": {"unit": "mg"},
            },
            "parameters": {
                "CL": {"value": 4.0, "unit": "L/h"},
                "V1": {"value": 10.0, "unit": "L"},
                "Q2": {"value": 8.0, "unit": "L/h"},
                "V2": {"value": 20.0, "unit": "L"},
                "Q3": {"value": 1.0, "unit": "L/h"},
                "V3": {"value": 80.0, "unit": "L"},
            },
            "derived": {"k10": "CL / V1"},
            "flows": [
                {"from": "central", "k": "k10"},
                {"from": "central", "to": "shallow", "k": "Q2 / V1"},
                {"from": "shallow", "to": "central", "k": "Q2 / V2"},
                {"from": "central", "to": "deep", "k": "Q3 / V1"},
                {"from": "deep", "to": "central", "k": "Q3 / V3"},
            ],
            "routes": {"iv": {"target": "central"}},
            "outputs": {"cp": {"expr": "central / V1", "unit": "mg/L"}},
        }
    )


def _both(model, params, regimen, times=TIMES):
    exact = ldpk.simulate(model, params, regimen, times, method="exact")
    ode = ldpk.simulate(model, params, regimen, times, method="ode", ode=TIGHT)
    assert exact.kernel == "exact" and ode.kernel == "ode"
    return exact, ode


def test_two_cmt_oral_lag_bioavailability_multiple_doses(two_cmt_oral):
    # two parameter sets (one fast, one slow absorption), oral doses every 12 h with lag and F,
    # and an IV infusion overlapping the third oral dose
    params = {"KA": np.array([0.9, 0.25]), "ALAG": np.array([0.75, 1.6]), "F": np.array([0.6, 0.9])}
    regimen = [
        ldpk.Bolus(100.0, time=0.0, route="oral", every=12.0, count=3),
        ldpk.Infusion(50.0, time=23.0, route="iv", duration=2.0),
    ]
    exact, ode = _both(two_cmt_oral, params, regimen)
    assert np.asarray(exact["cp"]).shape == (2, TIMES.size)
    assert_agree(exact["cp"], ode["cp"])
    for j in range(len(two_cmt_oral.compartment_names)):
        assert_agree(np.asarray(exact.states)[..., j], np.asarray(ode.states)[..., j])
    # the lag time holds the first dose back: nothing anywhere before ALAG
    early = TIMES < 0.75
    assert np.all(np.asarray(exact.states)[0, early] == 0.0)
    assert np.all(np.asarray(ode.states)[0, early] == 0.0)


def test_three_cmt_infusions_and_bolus(three_cmt):
    params = {"CL": np.array([4.0, 1.5]), "Q3": np.array([1.0, 3.0])}
    regimen = [
        ldpk.Infusion(300.0, time=0.0, route="iv", duration=1.5, every=8.0, count=3),
        ldpk.Bolus(50.0, time=20.0, route="iv"),
    ]
    exact, ode = _both(three_cmt, params, regimen)
    for j in range(3):
        assert_agree(np.asarray(exact.states)[..., j], np.asarray(ode.states)[..., j])
    assert_agree(exact["cp"], ode["cp"])
