"""Every built-in model loads from the library, documents itself and simulates its example."""

from __future__ import annotations

import numpy as np
import pytest

import ldpk
from ldpk.dosing import example_regimen

NAMES = list(ldpk.builtin_models())


def test_library_has_the_classic_models():
    for name in ("one_compartment", "two_compartment", "three_compartment", "one_compartment_mm"):
        assert name in NAMES


@pytest.mark.parametrize("name", NAMES)
def test_model_is_documented(name):
    m = ldpk.load_model(name)
    assert m.description and m.references and m.notes
    assert all(p.unit and p.description for p in m.parameters)
    assert all(c.unit for c in m.compartments)
    assert all(o.unit for o in m.outputs)


@pytest.mark.parametrize("name", NAMES)
def test_example_regimen_responds_and_stays_finite(name):
    m = ldpk.load_model(name)
    doses, times = example_regimen(m)
    sim = ldpk.simulate(m, None, doses, times)
    x = np.asarray(sim.states)
    assert np.all(np.isfinite(x)) and x.min() > -1e-9 * x.max()
    assert np.asarray(sim[m.output_names[0]]).max() > 0


@pytest.mark.parametrize("name", ["one_compartment", "two_compartment", "three_compartment"])
def test_each_route_delivers_the_dose(name):
    m = ldpk.load_model(name)
    for route in m.route_names:
        sim = ldpk.simulate(m, None, [ldpk.Bolus(10.0, route=route)], [0.0, 1.0])
        assert np.asarray(sim.states)[1].sum() > 0, route
