"""CAR-T models: the Stein et al. 2019 cellular-kinetic model reproduces the paper's derived
quantities (doubling time 0.78 d, contraction half-life 4.3 d, persistence half-life 220 d),
and the antigen-driven variant behaves as its file documents."""

from __future__ import annotations

import numpy as np
import pytest

import ldpk

LN2 = np.log(2.0)
# Published typical values (Stein et al. 2019, CPT Pharmacometrics Syst Pharmacol 8:285).
DOUBLING_D, HALF_LIFE_ALPHA_D, HALF_LIFE_BETA_D = 0.78, 4.3, 220.0
RTOL = 1e-3  # log-slopes from the ODE kernel (rtol 1e-8) over finite windows


@pytest.fixture(scope="module")
def stein():
    return ldpk.load_model("cart_cellular_kinetics")


def _log_slope(model, t0, t1, what="transgene"):
    sim = ldpk.simulate(model, None, [ldpk.Bolus(1.0, route="iv")], [t0, t1])
    c = np.asarray(sim[what])
    return (np.log(c[1]) - np.log(c[0])) / (t1 - t0)


def test_expansion_doubling_time(stein):
    assert LN2 / _log_slope(stein, 1.0, 9.0) == pytest.approx(DOUBLING_D, rel=RTOL)


def test_rapid_contraction_half_life(stein):
    # After Tmax the transgene is biexponential, Cmax((1 - f) e^{-a t} + f e^{-b t}); the
    # rapid rate a is the effector pool's decline ALPHA + KMEM (its inflow has stopped).
    slope = _log_slope(stein, 10.5, 20.0, "effector")
    assert -LN2 / slope == pytest.approx(HALF_LIFE_ALPHA_D, rel=RTOL)


def test_persistence_half_life(stein):
    slope = _log_slope(stein, 300.0, 700.0)
    assert -LN2 / slope == pytest.approx(HALF_LIFE_BETA_D, rel=RTOL)


def test_peak_at_tmax_and_biphasic_shape(stein):
    t = np.arange(0.0, 366.0, 0.5)
    c = np.asarray(ldpk.simulate(stein, None, [ldpk.Bolus(1.0, route="iv")], t)["transgene"])
    assert t[np.argmax(c)] == pytest.approx(10.0)
    # Cmax = C0 exp(RHO Tmax), closed form
    # tolerance 1e-5: ODE kernel at rtol 1e-8 over ten days of exponential growth
    assert c.max() == pytest.approx(np.exp(LN2 / DOUBLING_D * 10.0), rel=1e-5)
    assert c[-1] / c.max() > 0.01  # a persisting pool remains after a year


def test_antigen_driven_variant_expands_kills_and_persists():
    m = ldpk.load_model("cart_antigen_driven")
    t = np.arange(0.0, 180.5, 0.5)
    sim = ldpk.simulate(m, None, [ldpk.Bolus(1e8, route="iv")], t)
    cart, tumour = np.asarray(sim["cart_cells"]), np.asarray(sim["tumour_burden"])
    assert np.all(np.isfinite(cart)) and cart.min() > 0 and tumour.min() >= 0
    assert 100 <= cart.max() / 1e8 <= 1e4 and 7 <= t[np.argmax(cart)] <= 21
    assert tumour.min() < 1e-6 * tumour[0]
    # no antigen, no expansion: cells only decline
    flat = ldpk.simulate(m, {"B0": 0.0}, [ldpk.Bolus(1e8, route="iv")], t)
    assert np.all(np.diff(np.asarray(flat["cart_cells"])) <= 1e-6)


def test_switch_at_tmax_is_stepped_onto_exactly(stein):
    """Regression: with a large expansion (RHO·TMAX = 28.5) the discontinuous inflow into the
    still-empty memory pool at TMAX stalled the step-size controller below float resolution;
    `discontinuities: [TMAX]` makes diffrax step onto TMAX. Oracle: closed form at Tmax and
    the effector pool's exponential decline after it."""
    p = {"RHO": 2.5622, "TMAX": 11.138, "ALPHA": 0.276787, "KMEM": 0.0067861}
    t = np.array([11.138, 20.0])
    sim = ldpk.simulate(stein, p, [ldpk.Bolus(1.0, route="iv")], t)
    eff = np.asarray(sim.state("effector"))
    cmax = np.exp(2.5622 * 11.138)
    assert eff[0] == pytest.approx(cmax, rel=1e-5)
    assert eff[1] == pytest.approx(
        cmax * np.exp(-(0.276787 + 0.0067861) * (20.0 - 11.138)), rel=1e-5
    )
