"""Nonlinear models: the ODE kernel against scipy.integrate.solve_ivp (Radau, rtol 1e-11,
atol 1e-13), integrated piecewise between dose events in this file (a bolus is a jump in the
state, an infusion adds a constant input between its start and stop)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.integrate import solve_ivp

import ldpk

#: Agreement required: max |ldpk - scipy| / max |scipy| over time, and pointwise relative
#: difference where |scipy| > 1e-3 max |scipy|.
TOL = 1e-6
TIGHT = ldpk.ODEOptions(rtol=1e-10, atol=1e-12)
SCIPY_RTOL, SCIPY_ATOL = 1e-11, 1e-13


def assert_agree(actual, expected, tol=TOL):
    a = np.asarray(actual, dtype=float)
    e = np.asarray(expected, dtype=float)
    assert a.shape == e.shape
    scale = np.max(np.abs(e))
    err = np.max(np.abs(a - e)) / scale
    assert err <= tol, f"max |ldpk - scipy| / max |scipy| = {err:.3g}"
    big = np.abs(e) > 1e-3 * scale
    perr = np.max(np.abs(a - e)[big] / np.abs(e)[big])
    assert perr <= tol, f"pointwise relative difference {perr:.3g}"


def piecewise(rhs, x0, events, times, t0=0.0):
    """Integrate x' = rhs(t, x) + u from t0 with SciPy, stopping at every event and time.

    events: (time, 'bolus' | 'rate', compartment index, value); a 'rate' event adds value to
    the input u (amount/time). At equal times events come before the observation, as in ldpk.
    Returns the states at ``times`` (T, n)."""
    x = np.array(x0, dtype=float)
    u = np.zeros_like(x)
    times = np.asarray(times, dtype=float)
    stops = sorted({t0, *(float(e[0]) for e in events), *times.tolist()})
    out = {}
    t = t0
    for b in stops:
        if b > t:
            uu = u.copy()
            sol = solve_ivp(
                lambda s, y, uu=uu: rhs(s, y) + uu,
                (t, b),
                x,
                method="Radau",
                rtol=SCIPY_RTOL,
                atol=SCIPY_ATOL,
            )
            assert sol.success, sol.message
            x = sol.y[:, -1]
            t = b
        for te, kind, i, v in events:
            if te == b:
                if kind == "bolus":
                    x[i] += v
                else:
                    u[i] += v
        out[b] = x.copy()
    return np.stack([out[float(s)] for s in times])


# ---- Michaelis-Menten elimination ----------------------------------------------------------
VM, KM, V = 20.0, 4.0, 10.0  # mg/h, mg/L, L


@pytest.fixture(scope="module")
def mm():
    return ldpk.build_model(
        {
            "name": "mm",
            "compartments": {"central": {"unit": "mg"}},
            "parameters": {
                "VM": {"value": VM, "unit": "mg/h"},
                "KM": {"value": KM, "unit": "mg/L"},
                "V": {"value": V, "unit": "L"},
            },
            "flows": [{"from": "central", "rate": "VM * central / V / (KM + central / V)"}],
            "routes": {"iv": {"target": "central"}},
            "outputs": {"cp": {"expr": "central / V", "unit": "mg/L"}},
        }
    )


def mm_rhs(vm, km, v):
    def rhs(t, x):
        c = x[0] / v
        return np.array([-vm * c / (km + c)])

    return rhs


def test_mm_bolus_repeated_boluses_and_infusion(mm):
    """One regimen, two VM values: a single bolus (first 8 h), repeated boluses (every 8 h,
    3 doses), then an infusion of 300 mg over 4 h from 26 h (mid-infusion and after)."""
    times = np.linspace(0.0, 44.0, 89)
    vms = np.array([20.0, 8.0])
    regimen = [
        ldpk.Bolus(200.0, time=0.0, route="iv", every=8.0, count=3),
        ldpk.Infusion(300.0, time=26.0, route="iv", duration=4.0),
    ]
    sim = ldpk.simulate(mm, {"VM": vms}, regimen, times, ode=TIGHT)
    assert sim.kernel == "ode"
    events = [(8.0 * j, "bolus", 0, 200.0) for j in range(3)]
    events += [(26.0, "rate", 0, 75.0), (30.0, "rate", 0, -75.0)]
    for i, vm in enumerate(vms):
        ref = piecewise(mm_rhs(vm, KM, V), [0.0], events, times)[:, 0]
        for window in (times < 8.0, times < 24.0, (times > 26.0) & (times < 30.0), times >= 30.0):
            assert_agree(np.asarray(sim["central"])[i, window], ref[window])
        assert_agree(sim["cp"][i], ref / V)


def test_mm_steady_state_vs_dosing_to_convergence(mm):
    """Bolus(ss=1): the periodic steady state, against SciPy dosing until the trough changes by
    less than 1e-13 relative between periods."""
    tau, D = 12.0, 150.0
    times = np.linspace(0.0, tau, 25)
    sim = ldpk.simulate(mm, None, [ldpk.Bolus(D, route="iv", every=tau, ss=1)], times, ode=TIGHT)
    rhs = mm_rhs(VM, KM, V)
    trough = np.zeros(1)
    for _ in range(2000):
        new = piecewise(rhs, trough + D, [], [tau])[-1]
        done = abs(new[0] - trough[0]) <= 1e-13 * abs(new[0])
        trough = new
        if done:
            break
    else:
        raise AssertionError("SciPy reference did not converge")
    ref = piecewise(rhs, trough + D, [], times)
    assert_agree(sim["central"], ref[:, 0])


# ---- logistic growth (cells), initial amount from a parameter ------------------------------
def test_logistic_growth_with_initial_amount_and_injection():
    m = ldpk.build_model(
        {
            "name": "logistic",
            "time_unit": "d",
            "compartments": {"cells": {"unit": "cells", "initial": "N0"}},
            "parameters": {
                "r": {"value": 0.6, "unit": "1/d"},
                "K": {"value": 1.0e6, "unit": "cells"},
                "N0": {"value": 1.0e3, "unit": "cells"},
            },
            "flows": [{"to": "cells", "rate": "r * cells * (1 - cells / K)"}],
            "routes": {"inj": {"target": "cells"}},
        }
    )
    assert not m.is_linear
    times = np.linspace(0.0, 30.0, 61)
    regimen = [ldpk.Bolus(5.0e3, time=4.0, route="inj")]
    sim = ldpk.simulate(m, {"N0": np.array([1.0e3, 2.0e4])}, regimen, times, ode=TIGHT)
    for i, n0 in enumerate([1.0e3, 2.0e4]):

        def rhs(t, x):
            return np.array([0.6 * x[0] * (1.0 - x[0] / 1.0e6)])

        ref = piecewise(rhs, [n0], [(4.0, "bolus", 0, 5.0e3)], times)
        assert_agree(sim["cells"][i], ref[:, 0])
        np.testing.assert_allclose(np.asarray(sim["cells"])[i, 0], n0, rtol=1e-14)
