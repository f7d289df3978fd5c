"""NONMEM-style dose records: validation errors name the row and the field; semantics (resets,
EVID 4, ADDL, lag, bioavailability with a fixed rate, modelled rate/duration) against closed
forms written here."""

from __future__ import annotations

import numpy as np
import pytest

import ldpk
from ldpk.dosing import make_records

#: Relative tolerance against closed forms (exact kernel), with an absolute floor of
#: RTOL * 1e-3 * max|reference| for values that are exactly 0.
RTOL = 1e-9
CL, V, KA = 2.0, 10.0, 1.2
K = CL / V
TIMES = np.linspace(0.0, 48.0, 97)


@pytest.fixture(scope="module")
def model():
    return ldpk.build_model(
        {
            "name": "records",
            "compartments": {"depot": {"unit": "mg"}, "central": {"unit": "mg"}},
            "parameters": {
                "CL": {"value": CL, "unit": "L/h"},
                "V": {"value": V, "unit": "L"},
                "KA": {"value": KA, "unit": "1/h"},
                "ALAG": {"value": 0.0, "unit": "h"},
                "F": {"value": 0.8, "unit": "1"},
                "FIV": {"value": 1.0, "unit": "1"},
                "DUR": {"value": 2.0, "unit": "h"},
                "R": {"value": 25.0, "unit": "mg/h"},
            },
            "flows": [
                {"from": "depot", "to": "central", "k": "KA"},
                {"from": "central", "k": "CL / V"},
            ],
            "routes": {
                "oral": {"target": "depot", "lag": "ALAG", "bioavailability": "F"},
                "iv": {"target": "central", "bioavailability": "FIV"},
                "ivd": {"target": "central", "duration": "DUR", "bioavailability": "FIV"},
                "ivr": {"target": "central", "rate": "R"},
            },
            "outputs": {"cp": {"expr": "central / V", "unit": "mg/L"}},
        }
    )


def assert_close(actual, expected, rtol=RTOL):
    actual, expected = np.asarray(actual, dtype=float), np.asarray(expected, dtype=float)
    assert actual.shape == expected.shape
    np.testing.assert_allclose(
        actual, expected, rtol=rtol, atol=rtol * 1e-3 * np.max(np.abs(expected))
    )


def bolus_iv(t, t0, dose):
    s = np.asarray(t) - t0
    return np.where(s >= 0, dose / V * np.exp(-K * np.maximum(s, 0.0)), 0.0)


def infusion_iv(t, t0, rate, dur):
    s = np.asarray(t) - t0
    during = rate / (K * V) * (1 - np.exp(-K * np.clip(s, 0.0, dur)))
    return np.where(s >= 0, during * np.exp(-K * np.maximum(s - dur, 0.0)), 0.0)


def bateman(t, t0, dose):
    s = np.maximum(np.asarray(t) - t0, 0.0)
    c = dose * KA / (V * (KA - K)) * (np.exp(-K * s) - np.exp(-KA * s))
    return np.where(np.asarray(t) >= t0, c, 0.0)


# ---- validation: errors name the row and the field ----------------------------------------------
def dose(**kw):
    row = {"time": 0.0, "evid": 1, "amt": 100.0, "cmt": 2}
    row.update(kw)
    return row


def refused(model, rows, *fragments, **kw):
    with pytest.raises(ldpk.DataError) as info:
        make_records(model, rows, **kw)
    msg = str(info.value)
    for frag in fragments:
        assert frag in msg, f"{frag!r} not in {msg!r}"
    return msg


def test_non_numeric_amt(model):
    refused(model, [dose(amt="ten")], "row 1", "column AMT", "'ten' is not a number")


def test_bad_evid(model):
    msg = refused(model, [dose(), dose(time=1.0, evid=5)], "row 2", "column EVID", "5")
    assert "0 observation" in msg and "4 reset and dose" in msg  # what is valid


def test_bad_rate(model):
    refused(model, [dose(rate=-3)], "row 1", "column RATE", "-3", "use 0, > 0, -1 or -2")


def test_bad_ss(model):
    refused(model, [dose(ss=3, ii=12)], "row 1", "column SS", "use 0, 1 or 2")


def test_addl_without_ii(model):
    refused(model, [dose(addl=3)], "row 1", "ADDL", "II > 0")


def test_unsorted_times(model):
    rows = [dose(time=0.0), {"time": 5.0, "evid": 0}, {"time": 1.0, "evid": 0}]
    refused(model, rows, "row 3", "column TIME", "earlier than the previous record")


def test_unknown_cmt_number_lists_valid(model):
    refused(model, [dose(cmt=5)], "row 1", "CMT 5", "1 to 2", "1=depot", "2=central")
    refused(model, [dose(cmt=1.5)], "row 1", "CMT 1.5")


def test_unknown_cmt_name_lists_valid(model):
    refused(model, [dose(cmt="liver")], "row 1", "CMT 'liver'", "depot, central")


def test_unknown_route_lists_valid(model):
    msg = refused(model, [dose(cmt=None, route="im")], "row 1", "unknown route 'im'")
    assert "oral, iv, ivd, ivr" in msg


def test_modelled_duration_needs_route_duration(model):
    refused(
        model,
        [dose(cmt=None, route="iv", rate=-2)],
        "row 1",
        "column RATE",
        "modelled duration",
        "'iv'",
        "`duration:`",
    )
    refused(model, [dose(cmt=None, route="ivd", rate=-1)], "column RATE", "`rate:`")
    make_records(model, [dose(cmt=None, route="ivd", rate=-2)])  # valid: route has duration


def test_row_numbers_and_source_in_messages(model):
    rows = [dose(), dose(time=2.0, amt=-5)]
    refused(model, rows, "data.csv: row 11", "column AMT", where="data.csv", row_numbers=[10, 11])


def test_other_fields(model):
    refused(model, [dose(amt=0)], "column AMT", "AMT > 0")
    refused(model, [dose(ii=-1)], "column II")
    refused(model, [dose(addl=1.5, ii=12)], "column ADDL", "whole number")
    refused(model, [dose(time=float("inf"))], "column TIME", "not finite")
    refused(model, [dose(ss=1)], "columns SS/II", "II > 0")


# ---- semantics against closed forms ------------------------------------------------------------
def test_reset_cancels_pending_additional_doses(model):
    """Doses every 12 h from 0 (count 4: 0, 12, 24, 36); a reset at 30 empties the system and
    cancels the dose at 36; a new dose at 40 is given."""
    regimen = [
        ldpk.Bolus(100.0, route="iv", every=12.0, count=4),
        ldpk.Reset(30.0),
        ldpk.Bolus(50.0, time=40.0, route="iv"),
    ]
    sim = ldpk.simulate(model, None, regimen, TIMES)
    before = sum(bolus_iv(TIMES, s, 100.0) for s in (0.0, 12.0, 24.0))
    expected = np.where(TIMES < 30.0, before, 0.0) + bolus_iv(TIMES, 40.0, 50.0)
    assert_close(sim["cp"], expected)
    assert np.all(np.asarray(sim.states)[(TIMES >= 30) & (TIMES < 40)] == 0.0)


def test_evid4_resets_then_doses(model):
    rows = [
        {"time": 0.0, "evid": 1, "amt": 100.0, "route": "iv", "ii": 12.0, "addl": 3},
        {"time": 30.0, "evid": 4, "amt": 50.0, "route": "iv"},
    ]
    sim = ldpk.simulate(model, None, rows, TIMES)
    before = sum(bolus_iv(TIMES, s, 100.0) for s in (0.0, 12.0, 24.0))
    expected = np.where(TIMES < 30.0, before, 0.0) + bolus_iv(TIMES, 30.0, 50.0)
    assert_close(sim["cp"], expected)


def test_addl_equals_explicit_doses(model):
    addl = [{"time": 2.0, "evid": 1, "amt": 80.0, "cmt": 1, "ii": 8.0, "addl": 3}]
    explicit = [{"time": 2.0 + 8.0 * j, "evid": 1, "amt": 80.0, "cmt": 1} for j in range(4)]
    a = ldpk.simulate(model, None, addl, TIMES)
    b = ldpk.simulate(model, None, explicit, TIMES)
    np.testing.assert_allclose(np.asarray(a.states), np.asarray(b.states), rtol=1e-12, atol=1e-12)
    # CMT 1 is the depot; its only declared route is 'oral', so F = 0.8 applies
    expected = sum(bateman(TIMES, 2.0 + 8.0 * j, 0.8 * 80.0) for j in range(4))
    assert_close(a["cp"], expected)


def test_lag_time_shifts_doses(model):
    """ALAG shifts every dose of the train (additional doses included) by the lag."""
    lags = np.array([0.0, 1.7, 3.25])
    regimen = [ldpk.Bolus(100.0, time=1.0, route="oral", every=12.0, count=3)]
    sim = ldpk.simulate(model, {"ALAG": lags}, regimen, TIMES)
    for i, lag in enumerate(lags):
        expected = sum(bateman(TIMES, 1.0 + 12.0 * j + lag, 0.8 * 100.0) for j in range(3))
        assert_close(sim["cp"][i], expected)


def test_bioavailability_with_fixed_rate_changes_duration(model):
    """NONMEM: with RATE > 0 the rate is fixed and F scales the amount, so the infusion lasts
    F·AMT/RATE. Infusion(duration=D) is RATE = AMT/D, so F changes its duration too."""
    fiv = np.array([1.0, 0.6])
    rows = [{"time": 1.0, "evid": 1, "amt": 100.0, "route": "iv", "rate": 20.0}]
    sim = ldpk.simulate(model, {"FIV": fiv}, rows, TIMES)
    sim2 = ldpk.simulate(
        model, {"FIV": fiv}, [ldpk.Infusion(100.0, time=1.0, route="iv", duration=5.0)], TIMES
    )
    for i, f in enumerate(fiv):
        expected = infusion_iv(TIMES, 1.0, 20.0, f * 100.0 / 20.0)  # 5 h, and 3 h for F = 0.6
        assert_close(sim["cp"][i], expected)
        assert_close(sim2["cp"][i], expected)


def test_modelled_duration_and_rate(model):
    """RATE = -2: duration from the route (DUR), rate F·AMT/DUR; RATE = -1: rate from the route
    (R), duration F·AMT/R (F = 1 on ivr)."""
    rows = [
        {"time": 0.0, "evid": 1, "amt": 100.0, "route": "ivd", "rate": -2},
        {"time": 20.0, "evid": 1, "amt": 100.0, "route": "ivr", "rate": -1},
    ]
    fiv = np.array([1.0, 0.5])
    sim = ldpk.simulate(model, {"FIV": fiv, "DUR": 2.5, "R": 40.0}, rows, TIMES)
    for i, f in enumerate(fiv):
        expected = infusion_iv(TIMES, 0.0, f * 100.0 / 2.5, 2.5) + infusion_iv(
            TIMES, 20.0, 40.0, 100.0 / 40.0
        )
        assert_close(sim["cp"][i], expected)
