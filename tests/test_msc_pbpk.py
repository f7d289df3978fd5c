"""The built-in `msc_pbpk` model: IV mesenchymal stromal cells with pulmonary first pass,
111In label leakage, BLI and Alu qPCR outputs, calibrated to Gholamrezanezhad et al. 2011."""

from __future__ import annotations

import numpy as np
import pytest

import ldpk
from ldpk.model import physiology

DOSE = 100.0  # %ID
TIMES = np.array([0.05, 1.0, 2.0, 6.0, 24.0, 48.0, 168.0, 240.0])  # h
LIVE = ("venous", "arterial", "lung", "liver", "spleen", "kidney", "injury", "rest")
IN111_HALF_LIFE_H = 2.8047 * 24.0  # ICRP 107: 111In 2.8047 d


@pytest.fixture(scope="module")
def model():
    return ldpk.load_model("msc_pbpk")


def run(m, route="iv", times=TIMES, **kw):
    return ldpk.simulate(m, None, [ldpk.Bolus(DOSE, route=route)], times, **kw)


@pytest.fixture(scope="module")
def iv(model):
    return run(model)


def states(sim):
    return np.asarray(sim.states)


def test_model_is_linear_human_and_labelled_with_111in(model):
    assert model.is_linear and model.species == "human" and model.tracer == "111In"
    assert set(model.route_names) == {"iv", "ia", "local"}
    assert all(o.decay for o in model.outputs if o.name.startswith("In111_"))


def test_each_route_responds(model, iv):
    ia = run(model, "ia")
    local = run(model, "local")
    # intra-arterial injection bypasses the lungs on the first pass
    assert float(ia["In111_lung"][0]) < 0.7 * float(iv["In111_lung"][0])
    assert float(ia["In111_lung"][1]) < float(iv["In111_lung"][1])
    # local injection stays mostly at the injury site early
    assert float(local["In111_injury"][1]) > 95.0
    assert float(iv["In111_injury"][1]) < 5.0


@pytest.mark.parametrize("route", ["iv", "ia", "local"])
def test_states_are_finite_and_non_negative(model, route):
    x = states(run(model, route))
    assert np.all(np.isfinite(x))
    assert x.min() >= -1e-9 * DOSE


@pytest.mark.parametrize("route", ["iv", "ia", "local"])
def test_mass_balance_of_the_label(model, route):
    # live cells + debris + dead-cell label + free label (plasma and taken up) + excreted = dose
    x = states(run(model, route))
    np.testing.assert_allclose(x.sum(axis=1), DOSE, rtol=1e-9)


def test_exact_kernel_matches_ode_kernel(model):
    exact = run(model, "iv", method="exact")
    ode = run(model, "iv", method="ode")
    np.testing.assert_allclose(states(ode), states(exact), rtol=1e-6, atol=1e-6 * DOSE)


def test_bli_counts_live_cells_only(model, iv):
    for o in ("bli_total", "bli_lung", "bli_injury", "live_cells"):
        assert model.outputs[model.output_names.index(o)].expr.names <= set(LIVE) | {"BLI_PER_CELL"}
    x = states(iv)
    idx = [model.compartment_names.index(c) for c in LIVE]
    live = x[:, idx].sum(axis=1)
    k = model.parameter("BLI_PER_CELL").value
    np.testing.assert_allclose(np.asarray(iv["bli_total"]), k * live, rtol=1e-12)
    np.testing.assert_allclose(np.asarray(iv["live_cells"]), live, rtol=1e-12)
    # the label outlives the cells; the light does not
    assert float(iv["In111_body"][-1]) > 2 * float(iv["live_cells"][-1])


def test_alu_dna_outlives_cells_briefly(model):
    fast = model.with_values(KD=0.5)  # all cells dead within a day
    sim = run(fast, times=np.array([2.0, 6.0, 12.0, 48.0]))
    alu, live = np.asarray(sim["alu_total"]), np.asarray(sim["live_cells"])
    label = np.asarray(sim["In111_body"])
    assert np.all(alu > live)
    assert alu[0] > 2 * live[0]  # DNA of dead cells still detected
    assert alu[-1] < 0.01 * DOSE  # ... but only briefly (T_HALF_DNA 6 h)
    assert label[-1] > 0.9 * DOSE  # while the label stays


def test_raw_activity_decays_with_111in(model, iv):
    raw = run(model, "iv", decay_corrected=False)
    factor = np.exp(-np.log(2) * TIMES / IN111_HALF_LIFE_H)
    for o in model.outputs:
        got, ref = np.asarray(raw[o.name]), np.asarray(iv[o.name])
        want = ref * factor if o.decay else ref
        np.testing.assert_allclose(got, want, rtol=1e-12, err_msg=o.name)


def test_for_species_mouse_changes_flows_and_volumes(model):
    mouse = model.for_species("mouse")
    assert mouse.species == "mouse"
    for name, path, factor in (
        ("QCO", "cardiac_output", 0.06),
        ("QH", "liver.flow", 0.06),
        ("QS", "spleen.flow", 0.06),
        ("QK", "kidney.flow", 0.06),
        ("VVEN", "blood_volume", 0.000666667),
    ):
        want = physiology.lookup("mouse", path).value * factor
        assert mouse.parameter(name).value == pytest.approx(want, rel=1e-12)
        assert mouse.parameter(name).value < 0.05 * model.parameter(name).value
    assert mouse.parameter("E_LUNG").value == model.parameter("E_LUNG").value
    x = states(run(mouse))
    assert np.all(np.isfinite(x)) and x.min() >= -1e-9 * DOSE
    np.testing.assert_allclose(x.sum(axis=1), DOSE, rtol=1e-9)


def test_gholamrezanezhad_2011_anchors(iv):
    """Decay-corrected 111In %ID after IV infusion in cirrhotic patients (Nucl Med Biol
    2011;38:961): lungs 27.0-33.5 % early, 2.0-5.4 % at day 10; spleen 30.1-42.2 % and liver
    13.0-17.4 % at day 10. Early lung: 30 % ± 30 % relative at 1 and 2 h; day 10: the
    published ranges widened by 20 % beyond each end (lung at most 6 %)."""
    lung = np.asarray(iv["In111_lung"])
    liver = np.asarray(iv["In111_liver"])
    spleen = np.asarray(iv["In111_spleen"])
    assert 21.0 <= lung[1] <= 39.0 and 21.0 <= lung[2] <= 39.0
    assert 2.0 * 0.8 <= lung[-1] <= 6.0
    assert 30.1 * 0.8 <= spleen[-1] <= 42.2 * 1.2
    assert 13.0 * 0.8 <= liver[-1] <= 17.4 * 1.2
    assert spleen[-1] > liver[-1]  # spleen exceeded liver in all patients
    # redistribution: lung falls, liver and spleen rise
    assert np.all(np.diff(lung[1:]) < 0)
    assert np.all(np.diff(liver) > 0) and np.all(np.diff(spleen) > 0)
