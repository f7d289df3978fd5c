"""Model files bound to the physiology tables (re-parameterised by species) and tracer
outputs predicted decay-corrected or as raw activity."""

from __future__ import annotations

import numpy as np
import pytest

import ldpk
from ldpk.model import physiology

LIVER_SPEC = {
    "name": "liver_uptake",
    "species": "mouse",
    "time_unit": "h",
    "tracer": "18F",
    "compartments": {"blood": {"unit": "%ID"}, "liver": {"unit": "%ID"}},
    "parameters": {
        "QH": {"value": {"physiology": "liver.flow", "factor": 0.06}, "unit": "L/h",
               "description": "hepatic blood flow (mL/min × 0.06)"},
        "VB": {"value": {"physiology": "blood_volume", "factor": 0.001}, "unit": "L"},
        "E": {"value": 0.5, "unit": "1", "description": "hepatic extraction"},
    },
    "flows": [{"from": "blood", "to": "liver", "k": "E * QH / VB"}],
    "routes": {"iv": {"target": "blood"}},
    "outputs": {
        "liver_activity": {"expr": "liver", "unit": "%ID", "decay": True},
        "liver_amount": {"expr": "liver", "unit": "%ID"},
    },
    "references": ["test model"],
}  # fmt: skip


@pytest.fixture(scope="module")
def mouse():
    return ldpk.build_model(LIVER_SPEC)


def test_parameters_take_the_species_table_values(mouse):
    qh = physiology.lookup("mouse", "liver.flow").value * 0.06
    vb = physiology.lookup("mouse", "blood_volume").value * 0.001
    assert mouse.parameter("QH").value == pytest.approx(qh, rel=1e-12)
    assert mouse.parameter("VB").value == pytest.approx(vb, rel=1e-12)


def test_for_species_reparameterises_by_one_field(mouse):
    human = mouse.for_species("human")
    assert human.species == "human" and human.parameter("E").value == 0.5
    assert human.parameter("QH").value == pytest.approx(
        physiology.lookup("human", "liver.flow").value * 0.06, rel=1e-12
    )
    t = np.array([0.1, 1.0])
    k = 0.5 * human.parameter("QH").value / human.parameter("VB").value
    sim = ldpk.simulate(human, None, [ldpk.Bolus(100.0, route="iv")], t)
    np.testing.assert_allclose(
        np.asarray(sim["liver_amount"]), 100 * (1 - np.exp(-k * t)), rtol=1e-10
    )


def test_raw_activity_decays_with_the_nuclide(mouse):
    t = np.array([0.0, 109.77 / 60, 4.0])  # h; one 18F half-life at the second time
    doses = [ldpk.Bolus(100.0, route="iv")]
    corrected = ldpk.simulate(mouse, None, doses, t)
    raw = ldpk.simulate(mouse, None, doses, t, decay_corrected=False)
    factor = np.exp(-np.log(2) * t / (109.77 / 60))  # ICRP 107: 18F 109.77 min
    np.testing.assert_allclose(
        np.asarray(raw["liver_activity"]),
        np.asarray(corrected["liver_activity"]) * factor,
        rtol=1e-12,
    )
    # outputs not marked `decay` are unchanged
    np.testing.assert_allclose(
        np.asarray(raw["liver_amount"]), np.asarray(corrected["liver_amount"]), rtol=0
    )
    assert float(raw["liver_activity"][1]) == pytest.approx(
        0.5 * float(corrected["liver_activity"][1]), rel=1e-12
    )


def test_binding_errors_name_the_fix():
    spec = dict(LIVER_SPEC, species=None)
    with pytest.raises(ldpk.ModelError, match="add `species:`"):
        ldpk.build_model(spec)
    spec = dict(LIVER_SPEC, species="mouse")
    spec["parameters"] = dict(
        spec["parameters"], VB={"value": {"physiology": "liver.colour"}, "unit": "L"}
    )
    with pytest.raises(ldpk.ModelError, match="parameters.VB.value"):
        ldpk.build_model(spec)
    with pytest.raises(ldpk.ModelError, match="tracer"):
        ldpk.build_model(dict(LIVER_SPEC, tracer="222Xx"))
    no_tracer = {k: v for k, v in LIVER_SPEC.items() if k != "tracer"}
    with pytest.raises(ldpk.ModelError, match="declares no `tracer:`"):
        ldpk.build_model(no_tracer)
