"""Solving only the compartments the predicted outputs need (``Model.states_for``,
``simulate(outputs=...)``, and every fit, which passes its observed outputs).

Oracle: the same simulation over every compartment. The dropped compartments cannot change
the kept ones (nothing flows from them into the kept set), so the outputs must agree to
rounding: rtol 1e-12 for the exact kernels; the ODE kernel's steps depend on the error norm
over all states, so there rtol 1e-7 against the full solve at rtol 1e-10."""

from __future__ import annotations

from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

import ldpk
from ldpk.errors import ModelError

T = np.array([0.0, 0.1, 1.0, 4.0, 12.0, 24.0, 48.0])


@pytest.fixture(scope="module")
def mito():
    return ldpk.load_model("mitochondria_iv")


def switching() -> ldpk.Model:
    """Piecewise linear: a -> b at a rate that switches at T1, b -> c; output b only."""
    return ldpk.build_model(
        {
            "name": "switching",
            "compartments": {"a": {}, "b": {}, "c": {}},
            "parameters": {
                "K1": {"value": 0.5, "unit": "1/h"},
                "K2": {"value": 0.1, "unit": "1/h"},
                "T1": {"value": 2.0, "unit": "h"},
            },
            "flows": [
                {"from": "a", "to": "b", "rate": "where(t < T1, K1 * a, K2 * a)"},
                {"from": "b", "to": "c", "k": "K2"},
                {"from": "c", "k": "K1"},
            ],
            "discontinuities": ["T1"],
            "routes": {"iv": {"target": "a"}},
            "outputs": {"b_out": {"expr": "b"}, "c_out": {"expr": "c"}},
        }
    )


def test_states_for_follows_flows_upstream(mito):
    assert mito.states_for(["pct_per_g_liver"]) == (
        "blood", "coronary", "liver_bound", "liver_int", "liver_deg",
    )  # fmt: skip
    # donor mtDNA reads the degradation flux of liver_int (a `rate:` flow into liver_dna)
    assert mito.states_for(["mtdna_liver"]) == (
        "blood", "coronary", "liver_bound", "liver_int", "liver_dna",
    )  # fmt: skip
    # free label comes from every organ's remnant, hence from everything but the sinks
    free = set(mito.states_for(["activity_whole_body"]))
    assert "urine" not in free and "faeces" not in free and "rest_deg" in free
    assert not any(c.endswith("_dna") for c in free)
    with pytest.raises(ModelError, match="no output"):
        mito.states_for(["pct_bone"])
    # simulate checks the names whichever kernel it uses (the closed form solves everything)
    one = ldpk.load_model("one_compartment")
    with pytest.raises(ModelError, match="no output"):
        ldpk.simulate(one, None, [ldpk.Bolus(1.0)], [1.0], method="analytic", outputs=["x"])


@pytest.mark.parametrize(
    ("name", "outputs", "route", "method"),
    [
        ("mitochondria_iv", ["pct_per_g_liver", "pct_per_g_blood"], "iv", "exact"),
        ("mitochondria_iv", ["pct_liver"], "intramyocardial", "exact"),  # dose into a dropped one
        ("mitochondria_iv", ["mtdna_heart"], "intracoronary", "ode"),
        ("ev_iv_saturable", None, None, "ode"),
        ("msc_pbpk", None, None, "exact"),
        ("switching", ["b_out"], "iv", "auto"),  # piecewise linear
    ],
)
def test_restricted_outputs_equal_the_full_solve(name, outputs, route, method):
    model = switching() if name == "switching" else ldpk.load_model(name)
    outputs = outputs or [model.output_names[0]]
    route = route or model.routes[0].name
    need = model.states_for(outputs)
    assert len(need) < len(model.compartments)
    dose = [ldpk.Bolus(100.0, route=route), ldpk.Bolus(50.0, time=6.0, route=route)]
    tight = ldpk.ODEOptions(rtol=1e-10, atol=1e-12)
    full = ldpk.simulate(model, None, dose, T, method=method, ode=tight)
    part = ldpk.simulate(model, None, dose, T, method=method, ode=tight, outputs=outputs)
    assert part.solved == (tuple(outputs), need) and part.kernel == full.kernel
    assert np.asarray(part.states).shape[-1] == len(need)
    rtol = 1e-7 if full.kernel == "ode" else 1e-12
    for o in outputs:
        a, b = np.asarray(part[o]), np.asarray(full[o])
        np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * np.abs(b).max())
    for c in need:
        b = np.asarray(full.state(c))
        np.testing.assert_allclose(part.state(c), b, rtol=rtol, atol=rtol * np.abs(b).max())
    dropped = next(c for c in model.compartment_names if c not in need)
    with pytest.raises(KeyError, match="not solved"):
        part.state(dropped)
    other = next(o for o in model.output_names if o not in outputs)
    with pytest.raises(KeyError, match="not computed"):
        part.output(other)


def test_restriction_at_steady_state_and_with_a_dropped_sink():
    """Oral dosing at steady state and a dose into the dropped metabolite compartment
    (which cannot reach the central one, so the restricted solve drops it), central only,
    against the full solve."""
    m = ldpk.build_model(
        {
            "name": "parent_metabolite",
            "compartments": {"depot": {}, "central": {}, "metab": {}},
            "parameters": {
                "KA": {"value": 1.1, "unit": "1/h"},
                "KE": {"value": 0.2, "unit": "1/h"},
                "KM": {"value": 0.1, "unit": "1/h"},
                "KME": {"value": 0.3, "unit": "1/h"},
            },
            "flows": [
                {"from": "depot", "to": "central", "k": "KA"},
                {"from": "central", "k": "KE"},
                {"from": "central", "to": "metab", "k": "KM"},
                {"from": "metab", "k": "KME"},
            ],
            "routes": {"oral": {"target": "depot"}, "metab_iv": {"target": "metab"}},
            "outputs": {"c": {"expr": "central", "unit": "mg"}, "m": {"expr": "metab"}},
        }
    )
    assert m.states_for(["c"]) == ("depot", "central")
    dose = [ldpk.Bolus(10.0, route="oral", every=12.0, ss=1), ldpk.Bolus(5.0, route="metab_iv")]
    t = np.array([0.5, 2.0, 6.0, 11.9])
    full = ldpk.simulate(m, None, dose, t, method="exact")
    part = ldpk.simulate(m, None, dose, t, method="exact", outputs=["c"])
    np.testing.assert_allclose(np.asarray(part["c"]), np.asarray(full["c"]), rtol=1e-12)


def test_fit_predictions_use_the_restriction_and_equal_the_full_solve():
    """On the mitochondria example study (%ID/g of six organs, read as %ID times 1/weight,
    and of blood: 21 of 34 compartments) the population model's prediction at every observation equals the full
    simulation's (rtol 1e-12)."""
    import yaml

    from ldpk.data import read_study
    from ldpk.population import PopulationModel, fit_spec

    data = Path(__file__).resolve().parents[1] / "examples" / "data"
    name = "mitochondria_iv_biodistribution"
    mito = ldpk.load_model("mitochondria_iv")
    cfg = yaml.safe_load((data / f"{name}.fit.yaml").read_text())
    ds = read_study(mito, data / f"{name}.csv", **(cfg.get("data") or {}))
    assert len(mito.states_for(ds.outputs_observed())) == 21
    pm = PopulationModel(mito, ds, fit_spec(mito, ds, cfg))
    rng = np.random.default_rng(0)
    params = {"KBL": jnp.asarray(rng.lognormal(np.log(6.0), 0.3, ds.n_subjects))}
    pred = np.asarray(pm.predict_observations(params))
    full = ldpk.simulate(mito, params, ds.table, check=False)
    expected = np.asarray(full.outputs)[ds.subject, ds.position, ds.output]
    if ds.scale is not None:
        expected = expected * np.asarray(ds.scale)
    np.testing.assert_allclose(pred, expected, rtol=1e-12)
