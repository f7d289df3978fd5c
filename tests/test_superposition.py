"""The superposition kernel (batched event tables of linear models without steady-state or
reset records) against the sequential event scan, which is itself checked against closed forms
and NONMEM (tests/test_nmtest.py): boluses, infusions with given and modelled rates, lag times,
bioavailability, additional doses, initial amounts and dose/observation ties."""

from __future__ import annotations

import numpy as np
import pytest

import ldpk
from ldpk.dosing import event_table, make_records, stack_tables
from ldpk.solve._simulate import _superposition_plan

RTOL = 1e-10
ATOL = 1e-12

SPEC = {
    "name": "sup2",
    "time_unit": "h",
    "compartments": {
        "depot": {"unit": "mg"},
        "central": {"unit": "mg", "initial": "A0"},
        "periph": {"unit": "mg"},
    },
    "parameters": {
        "KA": {"value": 1.2, "unit": "1/h"},
        "CL": {"value": 3.0, "unit": "L/h"},
        "V": {"value": 20.0, "unit": "L"},
        "Q": {"value": 2.0, "unit": "L/h"},
        "VP": {"value": 40.0, "unit": "L"},
        "LAG": {"value": 0.3, "unit": "h"},
        "F": {"value": 0.7, "unit": "1"},
        "R": {"value": 25.0, "unit": "mg/h"},
        "A0": {"value": 5.0, "unit": "mg"},
    },
    "flows": [
        {"from": "depot", "to": "central", "k": "KA"},
        {"from": "central", "k": "CL / V"},
        {"from": "central", "to": "periph", "k": "Q / V"},
        {"from": "periph", "to": "central", "k": "Q / VP"},
    ],
    "routes": {
        "oral": {"target": "depot", "lag": "LAG", "bioavailability": "F"},
        "iv": {"target": "central", "rate": "R"},
    },
    "outputs": {"cp": {"expr": "central / V", "unit": "mg/L"}},
}


def _subjects(model):
    rows = [
        # oral, lagged, with additional doses; an observation at a lagged dose's time
        [{"time": 0, "evid": 1, "amt": 100, "route": "oral", "ii": 6, "addl": 3}]
        + [{"time": t, "evid": 0} for t in (0.0, 0.3, 1.0, 6.3, 12.0, 20.0, 30.0)],
        # IV infusions with a given and a modelled rate; an observation before the dose
        # record at the same time (does not see it) and one after (does)
        [{"time": 0.5, "evid": 0}, {"time": 0.5, "evid": 1, "amt": 80, "route": "iv", "rate": 40}]
        + [{"time": 0.5, "evid": 0}]
        + [{"time": t, "evid": 0} for t in (1.0, 2.5, 4.0)]
        + [{"time": 4.0, "evid": 1, "amt": 50, "route": "iv", "rate": -1}]
        + [{"time": t, "evid": 0} for t in (4.5, 6.0, 24.0)],
        # boluses into the central compartment by number, and an oral dose; observations
        # before and after a bolus record at its time, and several at one time (organs)
        [{"time": 0, "evid": 0}, {"time": 0, "evid": 1, "amt": 30, "cmt": 2}]
        + [{"time": t, "evid": 0} for t in (0.0, 0.0, 1.0, 2.0, 2.0, 2.0)]
        + [{"time": 2, "evid": 1, "amt": 60, "route": "oral"}]
        + [{"time": t, "evid": 0} for t in (2.3, 3.0, 10.0)],
    ]
    return [make_records(model, r, where=f"subject {i}") for i, r in enumerate(rows)]


@pytest.mark.parametrize("infusion", [False, True])
def test_superposition_matches_event_scan(infusion):
    model = ldpk.build_model(SPEC)
    recs = _subjects(model)
    if not infusion:
        recs = [recs[0], recs[2]]
    table = stack_tables([event_table(r) for r in recs])
    plan = _superposition_plan(table)
    assert plan == ("superpose_infusion" if infusion else "superpose")
    params = {"CL": np.array([3.0, 2.0, 4.5][: len(recs)]), "KA": np.array([1.2, 0.4, 2.0][: len(recs)])}  # fmt: skip
    batched = ldpk.simulate(model, params, table)
    for i, rec in enumerate(recs):
        one = ldpk.simulate(model, {k: v[i] for k, v in params.items()}, rec)
        n = len(one.times)
        np.testing.assert_allclose(np.asarray(batched.states)[i, :n], np.asarray(one.states), rtol=RTOL, atol=ATOL)  # fmt: skip


def test_tie_order_follows_data_order():
    model = ldpk.build_model(SPEC)
    rec = _subjects(model)[1]
    table = stack_tables([event_table(rec), event_table(rec)])
    sim = ldpk.simulate(model, {"A0": np.array([0.0, 0.0])}, table)
    cp = np.asarray(sim["cp"])[0]
    # First observation at 0.5 h precedes the infusion record: nothing given yet.
    assert cp[0] == 0.0
    # The observation after the record at 0.5 h sees the infusion start (still zero amount).
    assert cp[1] == 0.0 and cp[2] > 0.0


def test_observations_at_one_time_share_a_slot_unless_a_dose_record_separates_them():
    model = ldpk.build_model(SPEC)
    tab = event_table(_subjects(model)[2])
    # times 0 (before the bolus record), 0, 0 (after it), 1, 2, 2, 2 (before the oral dose
    # record at 2), 2.3, 3, 10
    assert tab["obs_slot"].tolist() == [0, 1, 1, 2, 3, 3, 3, 4, 5, 6]
    assert tab["slot_obs"].tolist() == [0, 1, 3, 4, 7, 8, 9]
    sim = ldpk.simulate(model, {"A0": 0.0}, stack_tables([tab]))
    cp = np.asarray(sim["cp"])[0]
    assert cp[0] == 0.0 and cp[1] > 0.0 and cp[1] == cp[2]


def test_resets_or_time_varying_covariates_use_the_event_scan():
    model = ldpk.build_model(SPEC)
    rec = make_records(model, [{"time": 0, "evid": 1, "amt": 10, "cmt": 2}, {"time": 1, "evid": 3}, {"time": 2, "evid": 0}])  # fmt: skip
    assert _superposition_plan(stack_tables([event_table(rec)])) is None


def test_gradient_matches_finite_differences():
    import jax

    model = ldpk.build_model(SPEC)
    table = stack_tables([event_table(r) for r in _subjects(model)])

    def total(cl):
        return ldpk.simulate(model, {"CL": cl}, table, check=False).outputs.sum()

    cl = np.array([3.0, 2.0, 4.5])
    g = np.asarray(jax.grad(total)(cl))
    h = 1e-6
    fd = [(total(cl + h * e) - total(cl - h * e)) / (2 * h) for e in np.eye(3)]
    np.testing.assert_allclose(g, np.asarray(fd), rtol=1e-6)
