"""``Model`` as a pytree: the parameter values are the leaves, the structure is static, so a
new value never retraces and models stack and vmap."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ldpk

TIMES = np.linspace(0.0, 24.0, 13)
DOSE = 100.0  # mg


@pytest.fixture(scope="module")
def model():
    return ldpk.load_model("one_compartment")


def _iv_closed_form(cl, v, t=TIMES):
    return DOSE / v * np.exp(-cl / v * t)


def test_models_differing_in_values_share_a_treedef(model):
    other = model.with_values(CL=5.0, V=40.0)
    leaves_a, tree_a = jax.tree.flatten(model)
    leaves_b, tree_b = jax.tree.flatten(other)
    assert tree_a == tree_b
    assert hash(tree_a) == hash(tree_b)
    assert leaves_a != leaves_b
    assert dict(zip(model.parameter_names, leaves_b, strict=True))["CL"] == 5.0
    # The round trip gives the model back, values included.
    assert jax.tree.unflatten(tree_b, leaves_b) == other


def test_structure_ignores_values_but_not_structure(model):
    assert model.structure == model.with_values(CL=9.0).structure
    assert all(p.value is None for p in model.structure.parameters)
    assert model.structure != ldpk.load_model("two_compartment").structure


def test_jitted_function_of_a_model_traces_once_for_two_value_sets(model):
    traces = []

    @jax.jit
    def cp(m):
        traces.append(1)
        return ldpk.simulate(m, None, [ldpk.Bolus(DOSE, route="iv")], TIMES).output("cp")

    a = cp(model.with_values(CL=2.0, V=30.0))
    b = cp(model.with_values(CL=4.0, V=50.0))
    assert len(traces) == 1
    np.testing.assert_allclose(a, _iv_closed_form(2.0, 30.0), rtol=1e-10)
    np.testing.assert_allclose(b, _iv_closed_form(4.0, 50.0), rtol=1e-10)


def test_stacked_models_vmap_and_equal_the_loop(model):
    values = [(2.0, 30.0), (3.0, 20.0), (5.5, 45.0)]
    models = [model.with_values(CL=cl, V=v) for cl, v in values]
    stacked = jax.tree.map(lambda *xs: jnp.stack([jnp.asarray(x, float) for x in xs]), *models)
    assert stacked.parameter("CL").value.shape == (3,)

    def cp(m):
        return ldpk.simulate(m, None, [ldpk.Bolus(DOSE, route="iv")], TIMES).output("cp")

    batched = jax.vmap(cp)(stacked)
    loop = np.stack([np.asarray(cp(m)) for m in models])
    np.testing.assert_allclose(batched, loop, rtol=1e-12, atol=0)
    for row, (cl, v) in zip(loop, values, strict=True):
        np.testing.assert_allclose(row, _iv_closed_form(cl, v), rtol=1e-10)


def test_gradient_with_respect_to_the_model(model):
    """d cp(t) / d CL through the pytree, against the closed form -t/V · cp(t)."""
    t = 6.0

    def cp(m):
        return ldpk.simulate(m, None, [ldpk.Bolus(DOSE, route="iv")], [t]).output("cp")[0]

    g = jax.grad(cp)(model)
    cl, v = model.parameter("CL").value, model.parameter("V").value
    want = -t / v * _iv_closed_form(cl, v, np.array([t]))[0]
    assert float(g.parameter("CL").value) == pytest.approx(want, rel=1e-9)
