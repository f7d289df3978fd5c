"""PD building blocks (ldpk.model.pd) against closed forms, and the two worked PK-PD models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import ldpk
from ldpk.dosing import example_regimen
from ldpk.model import pd

MODELS = Path(__file__).resolve().parents[1] / "models"
CL, V = 2.0, 10.0  # L/h, L: k = 0.2 /h
K = CL / V
PK = {
    "name": "pk1",
    "time_unit": "h",
    "compartments": {"central": {"unit": "mg"}},
    "parameters": {
        "CL": {"value": CL, "unit": "L/h", "description": "clearance"},
        "V": {"value": V, "unit": "L", "description": "volume"},
    },
    "flows": [{"from": "central", "k": "CL / V"}],
    "routes": {"iv": {"target": "central"}},
    "outputs": {"cp": {"expr": "central / V", "unit": "mg/L"}},
    "references": ["test model"],
}
TIGHT = ldpk.ODEOptions(solver="tsit5", rtol=1e-10, atol=1e-12)  # non-stiff test models


def _build(*frags):
    return ldpk.build_model(pd.merge(PK, *frags))


def test_hill_function_in_expressions():
    m = _build(pd.direct_emax("central / V", prefix="s_", sigmoid=True, emax=2.0, ec50=3.0))
    m = m.with_values(s_N=2.5)
    t = np.array([0.0, 1.0, 5.0])
    sim = ldpk.simulate(m, None, [ldpk.Bolus(50.0, route="iv")], t)
    c = 5.0 * np.exp(-K * t)
    np.testing.assert_allclose(
        np.asarray(sim["s_effect"]), 2.0 * c**2.5 / (3.0**2.5 + c**2.5), rtol=1e-10
    )


def test_direct_emax_equals_the_formula():
    frag = pd.direct_emax("central / V", prefix="pd_", e0=1.0, emax=4.0, ec50=2.0)
    assert frag["references"] and all(p["unit"] for p in frag["parameters"].values())
    m = _build(frag)
    assert m.is_linear  # no state added
    t = np.linspace(0.0, 24.0, 25)
    sim = ldpk.simulate(m, None, [ldpk.Bolus(100.0, route="iv")], t)
    c = 100.0 / V * np.exp(-K * t)
    np.testing.assert_allclose(np.asarray(sim["pd_effect"]), 1.0 + 4.0 * c / (2.0 + c), rtol=1e-10)


def test_effect_compartment_closed_form():
    ke0, dose = 0.7, 100.0
    m = _build(pd.effect_compartment("central / V", ke0=ke0, ec50=5.0, emax=10.0))
    assert "Ce" in m.compartment_names and not m.is_linear
    t = np.linspace(0.0, 30.0, 31)
    sim = ldpk.simulate(m, None, [ldpk.Bolus(dose, route="iv")], t, ode=TIGHT)
    ce = dose / V * ke0 / (ke0 - K) * (np.exp(-K * t) - np.exp(-ke0 * t))
    np.testing.assert_allclose(np.asarray(sim["Ce"]), ce, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(np.asarray(sim["effect"]), 10.0 * ce / (5.0 + ce), rtol=1e-8)
    # the effect compartment takes no mass from the PK model
    np.testing.assert_allclose(np.asarray(sim["cp"]), dose / V * np.exp(-K * t), rtol=1e-8)


KIN, KOUT, EMAX_IR, C50 = 3.0, 0.25, 0.8, 1.5


@pytest.fixture(scope="module")
def four_kinds():
    """One model with all four indirect-response kinds (prefixes k1_ .. k4_): one compilation."""
    frags = [
        pd.indirect_response(
            "central / V",
            kind,
            prefix=f"k{kind}_",
            kin=KIN,
            kout=KOUT,
            imax=EMAX_IR,
            ic50=C50,
            smax=EMAX_IR,
            sc50=C50,
        )  # fmt: skip
        for kind in (1, 2, 3, 4)
    ]
    return _build(*frags)


def test_indirect_response_baseline_without_drug(four_kinds):
    t = np.array([0.0, 10.0, 100.0])
    sim = ldpk.simulate(four_kinds, None, [], t, ode=TIGHT)
    for kind in (1, 2, 3, 4):
        np.testing.assert_allclose(np.asarray(sim[f"k{kind}_response"]), KIN / KOUT, rtol=1e-10)
        np.testing.assert_allclose(np.asarray(sim[f"k{kind}_response_rel"]), 1.0, rtol=1e-10)


def test_indirect_response_steady_state(four_kinds):
    rate = 4.0  # mg/h: Css = rate / CL = 2 mg/L
    css = rate / CL
    t = np.array([200.0])  # 40 PK and 50 PD time constants
    doses = [ldpk.Infusion(rate * 300.0, route="iv", rate=rate)]
    sim = ldpk.simulate(four_kinds, None, doses, t, ode=TIGHT)
    r0, e = KIN / KOUT, EMAX_IR * css / (C50 + css)
    expected = {1: r0 * (1 - e), 2: r0 / (1 - e), 3: r0 * (1 + e), 4: r0 / (1 + e)}
    assert float(sim["cp"][0]) == pytest.approx(css, rel=1e-6)
    for kind, r_ss in expected.items():
        assert float(sim[f"k{kind}_response"][0]) == pytest.approx(r_ss, rel=1e-6), kind


def test_fragment_errors_and_prefix_clash():
    with pytest.raises(ldpk.ModelError, match="kind"):
        pd.indirect_response("central / V", kind=5)
    with pytest.raises(ldpk.ModelError, match="driver"):
        pd.direct_emax("")
    with pytest.raises(ldpk.ModelError, match="prefix"):
        pd.direct_emax("central", prefix="1x")
    with pytest.raises(ldpk.ModelError, match="already"):
        pd.merge(PK, pd.direct_emax("central / V"), pd.effect_compartment("central / V"))


def _example(name):
    m = ldpk.load_model(MODELS / name)
    doses, t = example_regimen(m)
    sim = ldpk.simulate(m, None, doses, t)
    for k in (*m.compartment_names, *m.output_names):
        assert np.all(np.isfinite(np.asarray(sim[k]))), k
    assert m.references and m.notes
    return m, t, sim


def test_mitochondria_atp_model_restores_atp():
    m, t, sim = _example("mitochondria_atp_pkpd.yaml")
    atp = np.asarray(sim["atp_rel"])
    r0 = m.parameter("KIN").value / m.parameter("KOUT").value
    assert r0 < 1.0 and atp[0] == pytest.approx(r0, rel=1e-10)  # ischaemic baseline
    peak = atp.max()
    assert r0 + 0.1 < peak <= 1.1  # rises toward normal (1)
    assert 0 < t[np.argmax(atp)] < t[-1]
    assert np.all(np.asarray(sim["internalised"]) >= -1e-9)


def test_msc_cytokine_model_suppresses_then_recovers():
    m, t, sim = _example("msc_cytokine_pkpd.yaml")
    tnf, lung = np.asarray(sim["tnf"]), np.asarray(sim["lung_msc"])
    r0 = m.parameter("KIN").value / m.parameter("KOUT").value
    assert tnf[0] == pytest.approx(r0, rel=1e-10)
    assert lung[np.searchsorted(t, 1.0)] > 0.5 * lung.max()  # lung entrapment
    assert tnf.min() < 0.7 * r0  # suppressed while cells are in the lung
    assert np.all(tnf <= r0 * (1 + 1e-9))
    assert tnf[-1] == pytest.approx(r0, rel=0.05)  # returns once the cells are gone
    assert lung[-1] < 0.01 * lung.max()
