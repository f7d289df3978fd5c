"""Piecewise-linear models (`rate:` flows linear in the states, switching at declared
`discontinuities:`): which models qualify, and the exact kernel (matrix exponentials between
switch times) against closed forms, finite differences and the ODE kernel at tight
tolerances. The two kernels share the event timeline but nothing of the dynamics."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ldpk
from ldpk.errors import ModelError
from ldpk.solve import choose_kernel

#: ODE kernel settings for the oracle, and the agreement required: max |exact - ode| over
#: max |exact| per parameter set (the ODE kernel's own error at rtol 1e-10 is below 1e-8).
TIGHT = ldpk.ODEOptions(rtol=1e-10, atol=1e-12)
TOL = 1e-7


def _one_state(rate: str, discontinuities: list | None, extra: tuple = ()) -> ldpk.Model:
    spec = {
        "name": "switch_test",
        "compartments": {"a": {"unit": "mg"}, "b": {"unit": "mg"}},
        "parameters": {
            "K1": {"value": 0.5, "unit": "1/h"},
            "K2": {"value": 0.1, "unit": "1/h"},
            "T1": {"value": 2.0, "unit": "h"},
            "T2": {"value": 6.0, "unit": "h"},
        },
        "flows": [{"from": "a", "to": "b", "rate": rate}, {"from": "b", "k": "K2"}, *extra],
        "outputs": {"total": {"expr": "a + b", "unit": "mg"}},
    }
    if discontinuities is not None:
        spec["discontinuities"] = discontinuities
    return ldpk.build_model(spec)


@pytest.mark.parametrize(
    ("rate", "switches", "expected"),
    [
        ("where(t < T1, K1 * a, K2 * a)", ["T1"], True),
        ("where(t < T1, K1 * a, 0.0)", ["T1"], True),
        ("K1 * a * where(T1 <= t, 1.0, 2.0) / 3", ["T1"], True),
        ("(K1 * a if t >= 4 else 0) - 0", [4], True),  # a numeric switch, int or float
        ("where((t >= T1) and (t < T2), K1 * a, K2 * a)", ["T1", "T2"], True),
        ("where(T1 <= t < T2, K1 * a, 0.0)", ["T1", "T2"], True),
        ("where(T1 <= t < T2, K1 * a, 0.0)", ["T1"], False),
        ("where(t < t, K1 * a, 0.0)", ["T1"], False),
        ("where(t < T1, K1 * a, K2 * a)", None, False),  # switch not declared
        ("where(t < T2, K1 * a, K2 * a)", ["T1"], False),  # a different switch
        ("where(t < T1, K1 * a, K2)", ["T1"], False),  # affine: a constant input after T1
        ("K1 * a / (K2 + a)", ["T1"], False),  # saturable
        ("K1 * a * t", ["T1"], False),  # time as a value
        ("where(a > 1, K1 * a, 0.0)", ["T1"], False),  # switch on a state
        ("K1 * a * a", ["T1"], False),
        ("exp(K1) * a", ["T1"], "system"),  # no switch used: a linear system
        ("exp(K1) * a - K2 * b", None, "system"),
        ("K1 * (a - 2 * b) / 3", [], "system"),
        ("K1 * a + K2", None, False),  # affine: a constant input
        ("exp(K1 * a)", ["T1"], False),
        ("where(t == T1, K1 * a, 0.0)", ["T1"], False),  # not an order comparison
    ],
)
def test_which_models_are_piecewise_linear(rate, switches, expected):
    """Expected: True (piecewise linear), 'system' (a linear system: no switch, constant
    coefficients, Model.is_linear_system) or False (the ODE kernel)."""
    m = _one_state(rate, switches)
    assert not m.is_linear
    assert m.is_piecewise_linear is (expected is True)
    assert m.is_linear_system is (expected == "system")
    kernel = choose_kernel(m, "auto")
    assert kernel == ("exact" if expected else "ode")
    if not expected:
        with pytest.raises(ModelError, match="piecewise-linear"):
            choose_kernel(m, "exact")


def test_linear_system_with_a_tapped_flux_against_bateman_and_its_derivatives():
    """`to: b, rate: K1 * a` counts a's loss into b without taking it from a (as the
    mitochondria model counts degraded donor mtDNA): a = D e^(-K0 t), b = D K1/(K2 - K0)
    (e^(-K0 t) - e^(-K2 t)). The exact kernel (K from the flows' Jacobian) against this
    closed form, values rtol 1e-12, d b/d K1 = b/K1 and d b/d K2 by the closed form's
    derivative, rtol 1e-9; the ODE kernel at rtol 1e-10 within TOL."""
    m = ldpk.build_model(
        {
            "name": "tap_test",
            "compartments": {"a": {"unit": "mg"}, "b": {"unit": "mg"}},
            "parameters": {
                "K0": {"value": 0.3, "unit": "1/h"},
                "K1": {"value": 0.2, "unit": "1/h"},
                "K2": {"value": 0.05, "unit": "1/h"},
            },
            "flows": [
                {"from": "a", "k": "K0"},
                {"to": "b", "rate": "K1 * a"},
                {"from": "b", "k": "K2"},
            ],
            "outputs": {"b_out": {"expr": "b", "unit": "mg"}},
        }
    )
    assert m.is_linear_system and not m.is_linear and not m.is_piecewise_linear
    p = {"K0": 0.3, "K1": 0.2, "K2": 0.05}
    t = np.array([0.25, 1.0, 5.0, 24.0, 96.0])
    dose = [ldpk.Bolus(10.0, route="cmt:a")]
    sim = ldpk.simulate(m, p, dose, t)
    assert sim.kernel == "exact"
    k0, k1, k2 = p["K0"], p["K1"], p["K2"]
    e0, e2 = np.exp(-k0 * t), np.exp(-k2 * t)
    b = 10.0 * k1 / (k2 - k0) * (e0 - e2)
    np.testing.assert_allclose(np.asarray(sim.state("a")), 10.0 * e0, rtol=1e-12)
    np.testing.assert_allclose(np.asarray(sim.state("b")), b, rtol=1e-12)

    def b_of(q):
        return ldpk.simulate(m, q, dose, t, check=False).state("b")

    jac = jax.jacrev(b_of)({k: jnp.asarray(v) for k, v in p.items()})
    db_dk2 = 10.0 * k1 * ((e2 - e0) / (k2 - k0) ** 2 + t * e2 / (k2 - k0))
    np.testing.assert_allclose(np.asarray(jac["K1"]), b / k1, rtol=1e-9)
    np.testing.assert_allclose(np.asarray(jac["K2"]), db_dk2, rtol=1e-9)
    ode = ldpk.simulate(m, p, dose, t, method="ode", ode=TIGHT)
    _assert_agree(sim.states, ode.states)


@pytest.fixture(scope="module")
def stein():
    return ldpk.load_model("cart_cellular_kinetics")


def test_cart_exact_kernel_against_closed_form_and_its_derivatives(stein):
    """After one dose x0 at t = 0 and for t > TMAX: effector = x0 e^{RHO TMAX} e^{-(ALPHA +
    KMEM)(t - TMAX)}, so d log(effector)/d TMAX = RHO + ALPHA + KMEM, /d RHO = TMAX and
    /d ALPHA = -(t - TMAX). Tolerances: values 1e-12 relative, derivatives 1e-9."""
    p = {"RHO": 0.9, "TMAX": 11.3, "ALPHA": 0.15, "KMEM": 0.008, "BETA": 0.003}
    t = np.array([0.5, 11.3, 20.0, 90.0])

    def log_effector(q):
        sim = ldpk.simulate(stein, q, [ldpk.Bolus(2.0, route="iv")], t, check=False)
        return jnp.log(sim.state("effector"))

    sim = ldpk.simulate(stein, p, [ldpk.Bolus(2.0, route="iv")], t)
    assert sim.kernel == "exact"
    eff = np.asarray(sim.state("effector"))
    decline = p["ALPHA"] + p["KMEM"]
    expected = 2.0 * np.where(
        t < p["TMAX"],
        np.exp(p["RHO"] * t),
        np.exp(p["RHO"] * p["TMAX"] - decline * (t - p["TMAX"])),
    )
    np.testing.assert_allclose(eff, expected, rtol=1e-12)
    # the memory pool: KMEM ∫ effector e^{-BETA (t - s)} ds from TMAX, closed form
    s = t[2] - p["TMAX"]
    mem = (
        2.0
        * np.exp(p["RHO"] * p["TMAX"])
        * p["KMEM"]
        / (decline - p["BETA"])
        * (np.exp(-p["BETA"] * s) - np.exp(-decline * s))
    )
    assert float(sim.state("memory")[2]) == pytest.approx(mem, rel=1e-12)

    jac = jax.jacrev(log_effector)({k: jnp.asarray(v) for k, v in p.items()})
    after = t > p["TMAX"]
    np.testing.assert_allclose(np.asarray(jac["TMAX"])[after], p["RHO"] + decline, rtol=1e-9)
    np.testing.assert_allclose(np.asarray(jac["TMAX"])[t < p["TMAX"]], 0.0, atol=1e-12)
    np.testing.assert_allclose(np.asarray(jac["RHO"])[after], p["TMAX"], rtol=1e-9)
    np.testing.assert_allclose(np.asarray(jac["ALPHA"])[after], -(t[after] - p["TMAX"]), rtol=1e-9)
    grad = jax.grad(lambda q: log_effector(q)[-1])({k: jnp.asarray(v) for k, v in p.items()})
    assert float(grad["TMAX"]) == pytest.approx(p["RHO"] + decline, rel=1e-9)


def _assert_agree(exact, ode):
    a, b = np.asarray(exact), np.asarray(ode)
    assert a.shape == b.shape and np.all(np.isfinite(a))
    scale = np.max(np.abs(a), axis=-2, keepdims=True)  # over time, per state
    err = np.max(np.abs(a - b) / np.where(scale > 0, scale, 1.0))
    assert err <= TOL, f"max |exact - ode| / max |exact| = {err:.3g}"


def test_cart_exact_kernel_agrees_with_ode_kernel_over_doses_and_parameter_sets(stein):
    """A batch of parameter sets with TMAX before, between and after the doses (a second
    dose at day 14 and a short infusion at day 30), observed on both sides of every switch."""
    params = {
        "RHO": np.array([0.3, 0.9, 2.5, 1.2]),
        "TMAX": np.array([3.0, 10.0, 11.1, 20.5]),
        "ALPHA": np.array([0.15, 0.3, 0.28, 0.05]),
    }
    regimen = [
        ldpk.Bolus(1.0, route="iv"),
        ldpk.Bolus(0.5, time=14.0, route="iv"),
        ldpk.Infusion(4.0, time=30.0, duration=2.0, route="iv"),
    ]
    t = np.concatenate([np.linspace(0.0, 60.0, 121), [10.0, 11.1, 20.5]])
    t.sort()
    exact = ldpk.simulate(stein, params, regimen, t)
    ode = ldpk.simulate(stein, params, regimen, t, method="ode", ode=TIGHT)
    assert exact.kernel == "exact" and ode.kernel == "ode"
    _assert_agree(exact.states, ode.states)


def test_two_switches_with_infusion_and_steady_state_agree_with_ode_kernel():
    """A transfer that runs only between T1 and T2, an infusion across both switches, and a
    steady-state dose train (SS=1) after both: the fixed point of the period map."""
    # `a` has an outflow of its own, so that a steady state exists
    rate = "where((t >= T1) and (t < T2), K1 * a, 0.0)"
    m = _one_state(rate, ["T1", "T2"], extra=({"from": "a", "k": 0.05},))
    assert m.is_piecewise_linear
    params = {"T1": np.array([1.0, 2.5, 7.0]), "T2": np.array([4.0, 9.0, 7.5])}
    regimens = {
        "infusion": [ldpk.Infusion(10.0, time=0.5, duration=6.0, route="cmt:a")],
        "steady state": [ldpk.Bolus(5.0, time=24.0, route="cmt:a", every=12.0, ss=1)],
    }
    t = np.linspace(0.0, 48.0, 97)
    for name, regimen in regimens.items():
        exact = ldpk.simulate(m, params, regimen, t)
        ode = ldpk.simulate(m, params, regimen, t, method="ode", ode=TIGHT)
        assert exact.kernel == "exact", name
        _assert_agree(exact.states, ode.states)


def test_cart_study_log_density_agrees_with_ode_kernel_and_gradient_with_differences(stein):
    """The CAR-T example study's posterior (40 patients, each with its own TMAX; BLQ rows by
    M3), at the priors' medians and at a point about 0.1 away in every coordinate. Log
    density: the exact kernel against the ODE kernel (rtol 1e-10), 1e-9 relative. Gradient:
    directional derivatives along TMAX and along a random direction against central finite
    differences of the exact kernel (step 1e-5; error about 1e-7 relative), 1e-6 relative.
    (The ODE kernel's derivative with respect to TMAX is 1e-5 off the finite difference:
    the switch time enters it only through where the solver's steps end. And not at random
    points of numpyro's default initialisation: there some predictions are 1e-15
    copies/µg, below the ODE kernel's absolute tolerance.)"""
    import yaml
    from jax.flatten_util import ravel_pytree
    from numpyro.infer import init_to_median
    from numpyro.infer.util import initialize_model, potential_energy

    from ldpk.data import example_data_dir, read_study
    from ldpk.population import PopulationModel, fit_spec

    cfg = yaml.safe_load((example_data_dir() / "cart_qpcr.fit.yaml").read_text())
    ds = read_study(stein, example_data_dir() / "cart_qpcr.csv", **(cfg.get("data") or {}))
    spec = fit_spec(stein, ds, {k: v for k, v in cfg.items() if k not in ("data", "ode")})
    data = (jnp.asarray(ds.dv), jnp.asarray(ds.censored))
    exact = PopulationModel(stein, ds, spec, method="exact")
    ode = PopulationModel(stein, ds, spec, method="ode", ode=TIGHT)
    info = initialize_model(
        jax.random.PRNGKey(0), exact, model_args=data, init_strategy=init_to_median
    )
    flat, unravel = ravel_pytree(info.param_info.z)
    u_exact = jax.jit(lambda v: potential_energy(exact, data, {}, unravel(v)))
    u_ode = jax.jit(lambda v: potential_energy(ode, data, {}, unravel(v)))
    grad = jax.jit(jax.grad(lambda v: potential_energy(exact, data, {}, unravel(v))))
    keys = jax.random.split(jax.random.PRNGKey(1), 2)
    random_direction = jax.random.normal(keys[1], flat.shape)
    along_tmax = ravel_pytree({**jax.tree_util.tree_map(jnp.zeros_like, info.param_info.z), "TMAX": jnp.ones(())})[0]  # fmt: skip
    for x in (flat, flat + 0.1 * jax.random.normal(keys[0], flat.shape)):
        assert np.isfinite(float(u_exact(x)))
        assert float(u_exact(x)) == pytest.approx(float(u_ode(x)), rel=1e-9)
        g = grad(x)
        for d in (along_tmax, random_direction / jnp.linalg.norm(random_direction)):
            h = 1e-5
            fd = (float(u_exact(x + h * d)) - float(u_exact(x - h * d))) / (2 * h)
            assert float(g @ d) == pytest.approx(fd, rel=1e-6)
