"""Time-varying covariates (last value carried forward), padded multi-subject tables (one
compiled kernel for all subjects) and solver failures that name the parameter set."""

from __future__ import annotations

import numpy as np
import pytest

import ldpk
from ldpk.dosing import event_table, make_records, stack_tables

RTOL = 1e-10  # exact kernel vs closed form

SPEC = {
    "name": "cov1",
    "compartments": {"central": {"unit": "mg"}},
    "parameters": {
        "CLs": {"value": 2.0, "unit": "L/h/(mL/min)"},
        "V": {"value": 10.0, "unit": "L"},
    },
    "covariates": {"CRCL": {"unit": "mL/min", "default": 1.0}},
    "flows": [{"from": "central", "k": "CLs * CRCL / V"}],
    "routes": {"iv": {"target": "central"}},
    "outputs": {"cp": {"expr": "central / V", "unit": "mg/L"}},
}


@pytest.fixture(scope="module")
def model():
    return ldpk.build_model(SPEC)


def test_time_varying_covariate_is_carried_forward(model):
    # CRCL is 1 until the record at t = 10, then 0.25: k = 0.2 /h, then 0.05 /h.
    rows = [{"time": 0, "evid": 1, "amt": 100, "route": "iv", "CRCL": 1.0}]
    rows += [{"time": t, "evid": 0, "CRCL": 1.0} for t in (2.0, 6.0)]
    rows += [{"time": 10.0, "evid": 0, "CRCL": 0.25}]
    rows += [{"time": t, "evid": 0} for t in (14.0, 30.0)]  # missing: last value carried
    sim = ldpk.simulate(model, None, make_records(model, rows))
    t = np.array([2.0, 6.0, 10.0, 14.0, 30.0])
    c10 = 10 * np.exp(-0.2 * 10)
    expect = np.where(t <= 10, 10 * np.exp(-0.2 * t), c10 * np.exp(-0.05 * (t - 10)))
    np.testing.assert_allclose(np.asarray(sim["cp"]), expect, rtol=RTOL)


def test_stacked_subjects_equal_separate_runs(model):
    regimens = [
        [ldpk.Bolus(100, route="iv")],
        [
            ldpk.Bolus(50, route="iv", every=6, count=4),
            ldpk.Infusion(30, time=3, route="iv", duration=2),
        ],
        [
            ldpk.Infusion(200, route="iv", rate=50),
            ldpk.Reset(12.0),
            ldpk.Bolus(10, time=13, route="iv"),
        ],
    ]
    grids = [np.linspace(0, 24, 7), np.linspace(0, 30, 31), np.array([1.0, 5.0, 12.0, 13.0, 20.0])]
    crcl = [1.0, 0.5, 2.0]
    recs = [
        ldpk.dosing.regimen_records(model, r, g, {"CRCL": c})
        for r, g, c in zip(regimens, grids, crcl, strict=True)
    ]
    cl = np.array([2.0, 1.5, 3.0])
    batch = ldpk.simulate(model, {"CLs": cl}, stack_tables([event_table(r) for r in recs]))
    for j, (r, g) in enumerate(zip(recs, grids, strict=True)):
        alone = ldpk.simulate(model, {"CLs": cl[j]}, r)
        n = len(g)
        np.testing.assert_allclose(
            np.asarray(batch["cp"])[j, :n], np.asarray(alone["cp"]), rtol=1e-12
        )
        np.testing.assert_allclose(batch.times[j, :n], g)


def test_ode_step_limit_raises_naming_the_parameter_set():
    mm = ldpk.load_model("one_compartment_mm")
    vm = np.array([1000.0, 1000.0, 1e9])  # the last set is stiff beyond 40 steps
    with pytest.raises(ldpk.SolverError) as err:
        ldpk.simulate(
            mm, {"VM": vm}, [ldpk.Bolus(1e4, route="iv")], [1.0, 24.0],
            ode=ldpk.ODEOptions(solver="tsit5", max_steps=40),
        )  # fmt: skip
    msg = str(err.value)
    assert "1 of 3" in msg and "parameter set (2,)" in msg and "VM=1e+09" in msg
    assert "max_steps" in msg


def test_large_batches_split_across_devices_give_the_same_numbers(model):
    import jax

    from ldpk.solve._simulate import MIN_SHARD

    n = MIN_SHARD + 3  # not a multiple of the device count: padding is trimmed
    cl = np.linspace(0.5, 4.0, n)
    big = np.asarray(
        ldpk.simulate(model, {"CLs": cl}, [ldpk.Bolus(100, route="iv")], [1.0, 5.0])["cp"]
    )
    assert big.shape == (n, 2)
    # closed form, 1e-10 relative; holds whether or not the batch was sharded
    np.testing.assert_allclose(big, 10 * np.exp(-np.outer(cl / 10, [1.0, 5.0])), rtol=1e-10)
    assert jax.local_device_count() >= 1
