"""Differentiability: jax.grad through simulate() (both kernels) against central finite
differences, jax.jit of the gradient, and jax.vmap over parameter sets against a loop.

Finite differences (the oracle) are computed from plain (untraced) simulate() calls with the
parameters perturbed by +/- h relative, all perturbations in one batched call."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ldpk

#: Relative step of the central differences.
H = 1e-5
#: Agreement of jax.grad with central differences, per parameter, relative.
GRAD_RTOL = 1e-5
#: ODE tolerances tight enough that solver noise / h stays far below GRAD_RTOL.
FD_ODE = ldpk.ODEOptions(rtol=1e-12, atol=1e-12)

TIMES = np.linspace(0.25, 24.25, 49)  # no observation on a dose, lag or infusion-stop time


@pytest.fixture(scope="module")
def linear():
    return ldpk.build_model(
        {
            "name": "oral_iv",
            "compartments": {"depot": {"unit": "mg"}, "central": {"unit": "mg"}},
            "parameters": {
                "CL": {"value": 2.0, "unit": "L/h"},
                "V": {"value": 10.0, "unit": "L"},
                "KA": {"value": 0.8, "unit": "1/h"},
                "ALAG": {"value": 0.6, "unit": "h"},
                "F": {"value": 0.7, "unit": "1"},
                "DUR": {"value": 1.3, "unit": "h"},
            },
            "flows": [
                {"from": "depot", "to": "central", "k": "KA"},
                {"from": "central", "k": "CL / V"},
            ],
            "routes": {
                "oral": {"target": "depot", "lag": "ALAG", "bioavailability": "F"},
                "iv": {"target": "central", "duration": "DUR"},
            },
            "outputs": {"cp": {"expr": "central / V", "unit": "mg/L"}},
        }
    )


LIN_REGIMEN = [
    ldpk.Bolus(100.0, time=0.0, route="oral", every=12.0, count=2),
    ldpk.Infusion(50.0, time=5.0, route="iv"),  # RATE = -2: duration modelled by DUR
]


@pytest.fixture(scope="module")
def mm():
    return ldpk.build_model(
        {
            "name": "mm",
            "compartments": {"central": {"unit": "mg"}},
            "parameters": {
                "VM": {"value": 20.0, "unit": "mg/h"},
                "KM": {"value": 4.0, "unit": "mg/L"},
                "V": {"value": 10.0, "unit": "L"},
            },
            "flows": [{"from": "central", "rate": "VM * central / V / (KM + central / V)"}],
            "routes": {"iv": {"target": "central"}},
            "outputs": {"cp": {"expr": "central / V", "unit": "mg/L"}},
        }
    )


MM_REGIMEN = [
    ldpk.Bolus(150.0, time=0.0, route="iv"),
    ldpk.Infusion(100.0, time=6.0, route="iv", duration=2.0),
]


def objective(model, regimen, method, ode=None):
    def f(p):
        sim = ldpk.simulate(model, p, regimen, TIMES, method=method, ode=ode)
        return jnp.sum(sim["cp"] * jnp.linspace(1.0, 2.0, TIMES.size))

    return f


def central_differences(model, regimen, method, point, ode=None):
    names = list(point)
    batch = {n: [] for n in names}
    for j in range(len(names)):
        for sign in (1.0, -1.0):
            for i, n in enumerate(names):
                batch[n].append(point[n] * (1.0 + sign * H) if i == j else point[n])
    sim = ldpk.simulate(
        model, {n: np.array(v) for n, v in batch.items()}, regimen, TIMES, method=method, ode=ode
    )
    w = np.linspace(1.0, 2.0, TIMES.size)
    vals = (np.asarray(sim["cp"]) * w).sum(axis=-1).reshape(len(names), 2)
    return {n: (vals[j, 0] - vals[j, 1]) / (2 * H * point[n]) for j, n in enumerate(names)}


def assert_grad_matches(grad, fd, rtol=GRAD_RTOL):
    for n, v in fd.items():
        g = float(grad[n])
        assert abs(g - v) <= rtol * abs(v), f"d/d{n}: jax.grad {g!r} vs finite difference {v!r}"


LIN_POINT = {"CL": 2.0, "V": 10.0, "KA": 0.8, "ALAG": 0.6, "DUR": 1.3}


def test_grad_exact_kernel_vs_finite_differences(linear):
    """jax.jit(jax.grad(...)) through the exact kernel, including d/dALAG (lag time moves the
    dose events) and d/dDUR (modelled infusion duration moves the infusion stop)."""
    f = objective(linear, LIN_REGIMEN, "exact")
    point = {n: jnp.asarray(v) for n, v in LIN_POINT.items()}
    grad = jax.jit(jax.grad(f))(point)
    fd = central_differences(linear, LIN_REGIMEN, "exact", LIN_POINT)
    assert_grad_matches(grad, fd)
    # every parameter matters here, so no component is trivially zero
    assert all(abs(v) > 1e-3 for v in fd.values())
    # the jitted value equals the eager one (check=True is skipped under tracing)
    np.testing.assert_allclose(float(jax.jit(f)(point)), float(f(point)), rtol=1e-12)


def test_grad_wrt_bioavailability(linear):
    """d/dF (route bioavailability) is finite although the route has no `rate:`/`duration:`
    (whose defaults fill branches of jnp.where that are masked away)."""
    point = {**LIN_POINT, "F": 0.7}
    f = objective(linear, LIN_REGIMEN, "exact")
    grad = jax.grad(f)({n: jnp.asarray(v) for n, v in point.items()})
    assert np.isfinite(float(grad["F"])), "d/dF is not finite"
    fd = central_differences(linear, LIN_REGIMEN, "exact", {"F": 0.7})
    assert_grad_matches({"F": grad["F"]}, fd)


STATIC_REGIMEN = [
    ldpk.Bolus(100.0, time=0.0, route="cmt:central", every=6.0, count=4),
    ldpk.Infusion(50.0, time=3.0, route="cmt:central", duration=2.0),
]


def test_grad_and_vmap_with_parameter_free_schedule(linear):
    """Doses into a plain route (no lag, F, rate or duration expressions): no event time
    depends on the parameters (the exact kernel may take a static schedule)."""
    point = {"CL": 2.0, "V": 10.0}
    f = objective(linear, STATIC_REGIMEN, "exact")
    grad = jax.grad(f)({n: jnp.asarray(v) for n, v in point.items()})
    fd = central_differences(linear, STATIC_REGIMEN, "exact", point)
    assert_grad_matches(grad, fd)

    def cp(p):
        return ldpk.simulate(linear, p, STATIC_REGIMEN, TIMES)["cp"]

    cls = np.array([0.5, 2.0, 6.0])
    vm = np.asarray(jax.vmap(lambda c: cp({"CL": c}))(jnp.asarray(cls)))
    loop = np.stack([np.asarray(cp({"CL": float(c)})) for c in cls])
    np.testing.assert_allclose(vm, loop, rtol=1e-12, atol=1e-14)
    # and the closed form (one compartment, IV): boluses + infusion, superposed
    k = cls[:, None] / 10.0
    t = TIMES[None, :]
    bol = sum(
        np.where(t >= s, 10.0 * np.exp(-k * np.maximum(t - s, 0.0)), 0.0) for s in (0, 6, 12, 18)
    )
    a = np.clip(t - 3.0, 0.0, 2.0)
    inf = np.where(t >= 3.0, 25.0 / (k * 10.0) * (1 - np.exp(-k * a)), 0.0) * np.exp(
        -k * np.maximum(t - 5.0, 0.0)
    )
    np.testing.assert_allclose(loop, bol + inf, rtol=1e-9)


def test_grad_ode_kernel_vs_finite_differences(mm):
    """Eager jax.grad (simulate's check=True sees JVP tracers) through diffrax."""
    point = {"VM": 20.0, "KM": 4.0, "V": 10.0}
    f = objective(mm, MM_REGIMEN, "ode", FD_ODE)
    grad = jax.grad(f)({n: jnp.asarray(v) for n, v in point.items()})
    fd = central_differences(mm, MM_REGIMEN, "ode", point, FD_ODE)
    assert_grad_matches(grad, fd)


def test_vmap_over_parameter_sets_equals_loop(linear):
    sets = {
        "CL": np.array([1.0, 2.0, 3.5, 0.7]),
        "KA": np.array([0.3, 0.8, 2.0, 1.1]),
        "ALAG": np.array([0.1, 0.6, 0.9, 0.0]),
    }

    def cp(p):
        return ldpk.simulate(linear, p, LIN_REGIMEN, TIMES)["cp"]

    vm = np.asarray(jax.vmap(cp)({n: jnp.asarray(v) for n, v in sets.items()}))
    loop = np.stack([np.asarray(cp({n: float(v[i]) for n, v in sets.items()})) for i in range(4)])
    assert vm.shape == (4, TIMES.size)
    np.testing.assert_allclose(vm, loop, rtol=1e-12, atol=1e-14)


def test_check_raises_eagerly_and_is_skipped_under_jit(linear):
    """check=True (the default) raises SolverError naming the failed set when called eagerly;
    under jax.jit it cannot inspect values and returns the non-finite result instead."""
    bad = {"CL": float("inf")}
    with pytest.raises(ldpk.SolverError, match="CL=inf"):
        ldpk.simulate(linear, bad, LIN_REGIMEN, TIMES)

    @jax.jit
    def cp(cl):
        return ldpk.simulate(linear, {"CL": cl}, LIN_REGIMEN, TIMES)["cp"]

    out = np.asarray(cp(jnp.inf))
    assert not np.all(np.isfinite(out))
    assert np.all(np.isfinite(np.asarray(cp(2.0))))
