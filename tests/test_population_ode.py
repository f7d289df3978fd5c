"""The ODE kernel on population tables (several subjects in one event table): when every
dose time is known before tracing, each subject is solved once per interval between doses and
infusion edges, saving at its observations (``_ode_intervals``). Checked against the matrix-
exponential kernel per subject (itself checked against closed forms and NONMEM) for the
dosing features of ``test_superposition``: boluses, infusions with given and modelled rates,
lag times, additional doses, initial amounts, subjects with different numbers of doses and
observations, and dose/observation ties in data order."""

from __future__ import annotations

import copy

import jax
import numpy as np
import pytest
from test_superposition import SPEC, _subjects

import ldpk
from ldpk.dosing import event_table, stack_tables
from ldpk.solve._simulate import _ode_intervals
from ldpk.solve._timeline import ODEIntervals

TIGHT = ldpk.ODEOptions(rtol=1e-10, atol=1e-12)
#: Agreement of the ODE kernel at TIGHT tolerances with the exact kernel (relative to each
#: subject's largest state, and per state where it is above 1e-6 of that).
RTOL = 1e-7

# Dose times that do not depend on parameter values: a constant lag, bioavailability and
# modelled infusion rate (SPEC's are parameters, which the static plan cannot use).
STATIC = copy.deepcopy(SPEC)
STATIC["routes"]["oral"] |= {"lag": 0.3, "bioavailability": 0.7}
STATIC["routes"]["iv"]["rate"] = 25.0

PARAMS = {"CL": np.array([3.0, 2.0, 4.5]), "KA": np.array([1.2, 0.4, 2.0])}


def _table(model):
    return stack_tables([event_table(r) for r in _subjects(model)])


def _assert_close(a, b):
    a, b = np.asarray(a), np.asarray(b)
    scale = np.max(np.abs(b))
    assert np.max(np.abs(a - b)) <= RTOL * scale
    big = np.abs(b) > 1e-6 * scale
    np.testing.assert_allclose(a[big], b[big], rtol=RTOL)


def test_intervals_plan_matches_exact_kernel_per_subject():
    model = ldpk.build_model(STATIC)
    table = _table(model)
    arrays = {k: np.asarray(v) for k, v in table.arrays.items()}
    plan = _ode_intervals(model, table, arrays)
    assert isinstance(plan, ODEIntervals)
    # Subject 0: oral dose + 3 additional doses (4 intervals after the first); subject 1: two
    # infusions (start and stop each); subject 2: two doses. The longest plan is 5 intervals.
    assert len(plan.solve) == 5
    batched = ldpk.simulate(model, PARAMS, table, method="ode", ode=TIGHT)
    assert batched.kernel == "ode"
    for i, rec in enumerate(_subjects(model)):
        one = ldpk.simulate(model, {k: v[i] for k, v in PARAMS.items()}, rec, method="exact")
        n = len(one.times)
        _assert_close(np.asarray(batched.states)[i, :n], one.states)
        _assert_close(np.asarray(batched["cp"])[i, :n], one["cp"])


def test_ties_follow_data_order():
    """An observation before a dose record at the same time does not see the dose; one after
    it does (subject 2: a bolus at 0 between observations at 0)."""
    model = ldpk.build_model(STATIC)
    sim = ldpk.simulate(model, {"A0": np.zeros(3)}, _table(model), method="ode", ode=TIGHT)
    cp = np.asarray(sim["cp"])[2]
    assert cp[0] == 0.0 and cp[1] > 0.0 and cp[1] == cp[2]


def test_parameter_dependent_dose_times_use_the_event_scan():
    model = ldpk.build_model(SPEC)  # lag time LAG and modelled rate R are parameters
    table = _table(model)
    assert _ode_intervals(model, table, dict(table.arrays)) is None
    batched = ldpk.simulate(model, PARAMS, table, method="ode", ode=TIGHT)
    one = ldpk.simulate(model, {k: v[0] for k, v in PARAMS.items()}, _subjects(model)[0], method="exact")  # fmt: skip
    _assert_close(np.asarray(batched.states)[0, : len(one.times)], one.states)


@pytest.mark.parametrize("gradient", ["sensitivity", "reverse"])
def test_gradient_matches_exact_kernel(gradient):
    model = ldpk.build_model(STATIC)
    table = _table(model)
    ode = ldpk.ODEOptions(rtol=1e-10, atol=1e-12, gradient=gradient)

    def total(params, method, **kw):
        sim = ldpk.simulate(model, params, table, method=method, check=False, **kw)
        return (sim.outputs * np.asarray(table["obs_mask"])[..., None]).sum()

    g_ode = jax.grad(lambda p: total(p, "ode", ode=ode))(PARAMS)
    g_exact = jax.grad(lambda p: total(p, "exact"))(PARAMS)
    for k in PARAMS:
        np.testing.assert_allclose(np.asarray(g_ode[k]), np.asarray(g_exact[k]), rtol=1e-6)


def test_a_failing_solve_inside_a_gradient_gives_nan_not_an_exception():
    """The CAR-T example study's posterior at a point far from the mode, with a step limit
    the stiff solver hits: lineax's derivative of a Newton step whose state is no longer
    finite raises an Equinox runtime error unless EQX_ON_ERROR=nan (set by ldpk); the fit
    needs NaN there (a rejected point), as for every other failed solve. (The model is
    piecewise linear, so 'auto' would take the exact kernel: the ODE kernel is asked for.)"""
    import os

    import jax.numpy as jnp
    import yaml
    from jax.flatten_util import ravel_pytree
    from numpyro.infer.util import initialize_model, potential_energy

    from ldpk.data import example_data_dir, read_study
    from ldpk.population import PopulationModel, fit_spec

    assert os.environ["EQX_ON_ERROR"] == "nan"
    model = ldpk.load_model("cart_cellular_kinetics")
    cfg = yaml.safe_load((example_data_dir() / "cart_qpcr.fit.yaml").read_text())
    ds = read_study(model, example_data_dir() / "cart_qpcr.csv", **(cfg.get("data") or {}))
    spec = fit_spec(model, ds, {k: v for k, v in cfg.items() if k != "data"})
    pm = PopulationModel(model, ds, spec, method="ode", ode=ldpk.ODEOptions(max_steps=500))
    data = (jnp.asarray(ds.dv), jnp.asarray(ds.censored))
    info = initialize_model(jax.random.PRNGKey(0), pm, model_args=data, validate_grad=False)
    flat, unravel = ravel_pytree(info.param_info.z)
    x = flat + 2.0 * jax.random.normal(jax.random.PRNGKey(1), flat.shape)
    value, grad = jax.jit(jax.value_and_grad(lambda v: potential_energy(pm, data, {}, unravel(v))))(x)  # fmt: skip
    assert np.isnan(float(value)) or not np.all(np.isfinite(np.asarray(grad)))
