"""Mass balance: in a conservative model (every loss goes to the named compartment
'eliminated') the total amount equals the amount dosed so far (times bioavailability).

The oracle is the bookkeeping of the regimen, written here: boluses count in full from their
(lagged) time, an infusion counts rate x elapsed time while it runs."""

from __future__ import annotations

import numpy as np
import pytest

import ldpk

#: Relative tolerance on the total amount, exact kernel (relative to the amount dosed).
RTOL_EXACT = 1e-10
#: Relative tolerance on the total amount, ODE kernel with default ODEOptions.
RTOL_ODE = 1e-7

TIMES = np.linspace(0.0, 30.0, 61)  # step 0.5 h
F = np.array([1.0, 0.6, 0.25])
ALAG = 0.5
INF_START, INF_AMT, INF_DUR = 3.0, 60.0, 5.0  # IV infusion: 12 mg/h from 3 h to 8 h


def conservative_spec(nonlinear: bool) -> dict:
    elim = (
        {"from": "central", "to": "eliminated", "rate": "VM * central / (KM * V + central)"}
        if nonlinear
        else {"from": "central", "to": "eliminated", "k": "CL / V"}
    )
    return {
        "name": "conservative_nl" if nonlinear else "conservative",
        "compartments": {
            "depot": {"unit": "mg"},
            "central": {"unit": "mg"},
            "periph": {"unit": "mg"},
            "eliminated": {"unit": "mg", "description": "cumulative amount eliminated"},
        },
        "parameters": {
            "CL": {"value": 2.0, "unit": "L/h"},
            "V": {"value": 10.0, "unit": "L"},
            "Q": {"value": 3.0, "unit": "L/h"},
            "V2": {"value": 25.0, "unit": "L"},
            "KA": {"value": 1.1, "unit": "1/h"},
            "KDEG": {"value": 0.05, "unit": "1/h"},
            "VM": {"value": 15.0, "unit": "mg/h"},
            "KM": {"value": 2.0, "unit": "mg/L"},
            "F": {"value": 1.0, "unit": "1"},
            "ALAG": {"value": ALAG, "unit": "h"},
        },
        "flows": [
            {"from": "depot", "to": "central", "k": "KA"},
            {"from": "depot", "to": "eliminated", "k": "KDEG"},  # presystemic loss
            elim,
            {"from": "central", "to": "periph", "k": "Q / V"},
            {"from": "periph", "to": "central", "k": "Q / V2"},
        ],
        "routes": {
            "oral": {"target": "depot", "bioavailability": "F", "lag": "ALAG"},
            "iv": {"target": "central"},
        },
    }


REGIMEN = [
    ldpk.Bolus(100.0, time=0.0, route="oral", every=12.0, count=2),
    ldpk.Infusion(INF_AMT, time=INF_START, route="iv", duration=INF_DUR),
]


def dosed_so_far(t, f):
    """Amount that has entered the system by time t (doses at equal times count)."""
    t = np.asarray(t, dtype=float)
    oral = sum(np.where(t >= s + ALAG, f * 100.0, 0.0) for s in (0.0, 12.0))
    infused = INF_AMT / INF_DUR * np.clip(t - INF_START, 0.0, INF_DUR)
    return oral + infused


@pytest.fixture(scope="module")
def linear_sim():
    m = ldpk.build_model(conservative_spec(nonlinear=False))
    sim = ldpk.simulate(m, {"F": F}, REGIMEN, TIMES)
    assert sim.kernel == "exact"
    return sim


def _check(total, expected, rtol, mask=None):
    total = np.asarray(total)
    if mask is not None:
        total, expected = total[mask], expected[mask]
    np.testing.assert_allclose(total, expected, rtol=rtol, atol=rtol * np.max(expected))


def test_total_equals_bolus_doses(linear_sim):
    total = np.asarray(linear_sim.states).sum(axis=-1)
    before_infusion = TIMES < INF_START
    _check(total[0], dosed_so_far(TIMES, 1.0), RTOL_EXACT, before_infusion)
    # nothing before the lagged first dose, the whole dose right at t = ALAG
    assert np.all(total[:, TIMES < ALAG] == 0.0)
    np.testing.assert_allclose(total[:, TIMES == ALAG].ravel(), 100.0 * F, rtol=RTOL_EXACT)


def test_total_during_infusion_is_partial(linear_sim):
    total = np.asarray(linear_sim.states).sum(axis=-1)
    during = (TIMES > INF_START) & (TIMES < INF_START + INF_DUR)
    assert during.sum() >= 8
    for i, f in enumerate(F):
        _check(total[i], dosed_so_far(TIMES, f), RTOL_EXACT, during)


def test_total_equals_bioavailable_dose(linear_sim):
    total = np.asarray(linear_sim.states).sum(axis=-1)
    for i, f in enumerate(F):
        _check(total[i], dosed_so_far(TIMES, f), RTOL_EXACT)
    # after everything: F·oral doses + the (F = 1) infusion
    np.testing.assert_allclose(total[:, -1], 200.0 * F + INF_AMT, rtol=RTOL_EXACT)


def test_amounts_are_non_negative(linear_sim):
    assert np.all(np.asarray(linear_sim.states) >= -1e-12)


def test_nonlinear_total_with_ode_kernel():
    m = ldpk.build_model(conservative_spec(nonlinear=True))
    assert not m.is_linear
    sim = ldpk.simulate(m, {"F": F}, REGIMEN, TIMES)
    assert sim.kernel == "ode"
    total = np.asarray(sim.states).sum(axis=-1)
    for i, f in enumerate(F):
        _check(total[i], dosed_so_far(TIMES, f), RTOL_ODE)
    # the loss really is nonlinear and substantial, so the check is not vacuous
    assert np.asarray(sim["eliminated"])[0, -1] > 0.3 * (200.0 + INF_AMT)
