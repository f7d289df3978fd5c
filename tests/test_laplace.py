"""The marginal (integrated) Laplace approximation of ``fit(..., method="laplace")``.

- The block-diagonal Hessian in the subject effects from colouring Hessian-vector products
  equals the dense ``jax.hessian`` (theophylline, 12 subjects × 3 effects).
- The marginal objective U_m(theta) against the integral over the subject effects done by
  quadrature (2 theophylline subjects, one effect each): the difference is the Laplace
  approximation's own error, and it equals the leading term of the Laplace expansion.
- Its gradient (one differentiable Newton step) against central differences of U_m.
- Theophylline: Laplace medians against nlmixr2 FOCEi and the between-subject SDs against
  the NUTS posterior (benchmarks/results/theophylline.json).
- A model without between-subject variability goes through the ordinary Laplace at the MAP.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
import scipy.integrate
from jax.flatten_util import ravel_pytree
from numpyro.infer.initialization import init_to_median
from numpyro.infer.util import initialize_model

import ldpk
from ldpk.inference import _Marginal, _Mode
from ldpk.population import PopulationModel, fit_spec

ADDITIVE = {"error": {"cp": {"model": "additive"}}}
#: nlmixr2 FOCEi on theo_sd (typical values).
NLMIXR2 = {"KA": 1.59, "CL": 2.75, "V": 31.8}
#: NUTS posterior medians of the between-subject SDs (benchmarks/results/theophylline.json).
NUTS_OMEGA = {"omega_KA": 0.67, "omega_CL": 0.29, "omega_V": 0.15}


@pytest.fixture(scope="module")
def one_cpt() -> ldpk.Model:
    return ldpk.load_model("one_compartment")


def marginal(model, frame, config) -> tuple[_Marginal, tuple]:
    """The marginal problem at the prior medians (no optimisation), and the fit's data."""
    ds = ldpk.read_data(model, frame)
    pm = PopulationModel(model, ds, fit_spec(model, ds, config))
    data = (jnp.asarray(ds.dv), jnp.asarray(ds.censored))
    init = init_to_median(num_samples=31)
    info = initialize_model(jax.random.PRNGKey(0), pm, model_args=data, init_strategy=init)
    flat, unravel = ravel_pytree(info.param_info.z)
    return _Marginal(pm, _Mode(flat, unravel, {}, None, info.postprocess_fn)), data


def theta_at(m: _Marginal, values: dict) -> jnp.ndarray:
    """Flat unconstrained theta from constrained positive values (logs)."""
    names = m.unravel_theta(m.theta0)
    return ravel_pytree({k: jnp.log(jnp.asarray(float(values[k]))) for k in names})[0]


def test_block_hessian_by_colouring_equals_dense_hessian(one_cpt, reference_data_dir):
    m, data = marginal(one_cpt, reference_data_dir / "theo_sd.csv", ADDITIVE)
    rng = np.random.default_rng(3)
    th = m.theta0 + 0.3 * jnp.asarray(rng.normal(size=m.theta0.size))
    eta = jnp.asarray(rng.normal(size=m.eta0.shape))
    s, n = eta.shape
    assert (s, n) == (12, 3)
    blocks = np.asarray(jax.jit(m.blocks)(th, eta, data))
    dense = jax.jit(jax.hessian(lambda e: m.potential(th, e.reshape(s, n), data)))(eta.reshape(-1))
    dense = np.asarray(dense).reshape(s, n, s, n)
    scale = np.abs(dense).max()
    for i in range(s):
        np.testing.assert_allclose(blocks[i], dense[i, :, i, :], rtol=1e-8, atol=1e-8 * scale)
        off = np.delete(dense[i], i, axis=1)  # other subjects' effects: exactly zero
        assert np.all(off == 0.0)
    # the per-subject terms the inner line search compares are U up to a function of theta
    u = jax.jit(m.potential)
    terms = jax.jit(m.subject_terms)
    const = [float(u(th, e, data)) - float(terms(th, e, data).sum()) for e in (eta, 0 * eta, eta + 1)]  # fmt: skip
    assert np.ptp(const) <= 1e-10 * abs(const[0])


def test_marginal_objective_against_quadrature_over_the_subject_effects(one_cpt, reference_data_dir):  # fmt: skip
    """Two subjects, between-subject variability on CL only, additive error. The exact
    -log of the integral of exp(-U) over eta, by adaptive quadrature (U is separable by subject,
    so the 2-D integral is a product of 1-D ones), against U_m. Laplace is not exact here:
    the integrand in each eta is near-Gaussian, and U_m - exact must be the leading error term
    of the Laplace expansion, u4/(8 u2²) - 5 u3²/(24 u2³) with sign reversed (u_k the k-th
    derivative of U in eta at the mode, by central differences), to 5 % of it (observed
    0.6 %; it is 0.004 nats here, so also |U_m - exact| < 0.01). The gradient of U_m agrees
    with central differences of U_m to 1e-6 relative."""
    frame = pd.read_csv(reference_data_dir / "theo_sd.csv")
    config = {**ADDITIVE, "parameters": {"KA": {"iiv": "none"}, "V": {"iiv": "none"}}}
    m, data = marginal(one_cpt, frame[frame["ID"].isin([1, 2])], config)
    conditional, value_and_grad = jax.jit(m.conditional), jax.jit(m.value_and_grad)
    potential = jax.jit(m.potential)
    th0 = theta_at(m, {**NLMIXR2, "omega_CL": 0.3, "sigma_add_cp": 0.7})
    zero = jnp.zeros_like(m.eta0)
    assert zero.shape == (2, 1)
    for shift in (0.0, 0.3):
        th = th0 + shift * jnp.asarray(np.random.default_rng(1).normal(size=th0.size))
        eta_hat, _, ok = conditional(th, zero, zero, data)
        assert bool(ok)
        um, grad = value_and_grad(th, eta_hat, data)
        log_integral, leading = 0.0, 0.0
        for i in range(2):
            u = partial(lambda x, th, i: float(potential(th, zero.at[i, 0].set(x), data)), th=th, i=i)  # fmt: skip
            li, lead = _quadrature_and_leading_term(u, float(eta_hat[i, 0]))
            log_integral += li
            leading += lead
        # U(eta) = U(eta_1, 0) + U(0, eta_2) - U(0, 0): one U(0, 0) counted twice above
        exact = -(log_integral + float(potential(th, zero, data)))
        err = float(um) - exact
        assert abs(err) < 0.01, (float(um), exact)
        assert abs(err - leading) <= 0.05 * abs(leading), (err, leading)
        um_at = partial(lambda t, e: float(value_and_grad(t, conditional(t, e, zero, data)[0], data)[0]), e=eta_hat)  # fmt: skip
        eye = np.eye(th.size)
        fd = np.array([(um_at(th + 1e-5 * eye[j]) - um_at(th - 1e-5 * eye[j])) / 2e-5 for j in range(th.size)])  # fmt: skip
        np.testing.assert_allclose(np.asarray(grad), fd, rtol=1e-6, atol=1e-6 * np.abs(fd).max())


def _quadrature_and_leading_term(u, x0: float) -> tuple[float, float]:
    """log of the integral of exp(-u) (adaptive quadrature, +-12 about the mode x0), and the
    leading error term of its Laplace approximation: U_m - (-log integral) ~ -(u4/(8 u2²) -
    5 u3²/(24 u2³)) with derivatives at x0 by central differences (step 0.01)."""
    c = u(x0)
    val, _ = scipy.integrate.quad(lambda x: np.exp(c - u(x)), x0 - 12, x0 + 12, epsabs=0, epsrel=1e-12, limit=200)  # fmt: skip
    h = 1e-2
    f = [u(x0 + k * h) for k in range(-2, 3)]
    u2 = (f[1] - 2 * f[2] + f[3]) / h**2
    u3 = (-f[0] + 2 * f[1] - 2 * f[3] + f[4]) / (2 * h**3)
    u4 = (f[0] - 4 * f[1] + 6 * f[2] - 4 * f[3] + f[4]) / h**4
    return float(np.log(val) - c), float(-(u4 / (8 * u2**2) - 5 * u3**2 / (24 * u2**3)))


@pytest.fixture(scope="module")
def theo_fit(one_cpt, reference_data_dir) -> ldpk.Fit:
    return ldpk.fit(one_cpt, reference_data_dir / "theo_sd.csv", config=ADDITIVE, method="laplace", draws=1000, seed=1, progress=False)  # fmt: skip


def test_theophylline_typical_values_and_between_subject_sds(theo_fit):
    """Typical values within 10 % of nlmixr2 FOCEi and between-subject SDs within 35 % of the
    NUTS medians (the joint-mode Laplace had omega_CL 0.86-0.99 against 0.29)."""
    for name, ref in NLMIXR2.items():
        med = float(np.median(theo_fit.draws(name)))
        assert abs(med - ref) <= 0.10 * ref, (name, med, ref)
    for name, ref in NUTS_OMEGA.items():
        med = float(np.median(theo_fit.draws(name)))
        assert abs(med - ref) <= 0.35 * ref, (name, med, ref)
        mode = float(theo_fit.map_values[name])
        assert abs(mode - ref) <= 0.35 * ref, (name, mode, ref)
    # the subject effects at the marginal mode are the conditional modes (one per subject)
    assert np.shape(theo_fit.map_values["eta_CL"]) == (12,)
    post = theo_fit.posterior["posterior"]
    assert post["eta_CL"].shape == (1, 1000, 12) and post["CL_i"].shape == (1, 1000, 12)
    assert {"map_s", "laplace_s", "sampling_s"} <= set(theo_fit.timings)


def test_without_between_subject_variability_laplace_is_at_the_map(one_cpt, reference_data_dir):
    config = {**ADDITIVE, "parameters": {p: {"iiv": "none"} for p in ("KA", "CL", "V")}}
    fit = ldpk.fit(one_cpt, reference_data_dir / "theo_sd.csv", config=config, method="laplace", draws=200, progress=False)  # fmt: skip
    post = fit.posterior["posterior"]
    assert not [n for n in post.data_vars if n.startswith("eta_")]
    assert "laplace_s" not in fit.timings
    cl = fit.draws("CL")
    assert cl.shape == (200,) and np.all(np.isfinite(cl))
    assert abs(np.log(np.median(cl) / fit.map_values["CL"])) < 0.05


def test_trouble_names_the_subjects_off_their_conditional_mode(one_cpt, reference_data_dir):
    """The diagnostic behind the marginal Laplace's error and warning: at the conditional
    mode (Newton from the prior medians) no subject is named; with one subject's effects
    moved off it, that subject alone is named, with its gradient."""
    m, data = marginal(one_cpt, reference_data_dir / "theo_sd.csv", ADDITIVE)
    th = m.theta0
    eta, ok = jax.jit(m.newton)(th, m.eta0, data)
    assert bool(ok)
    assert m.trouble(th, eta, data) == ""
    ids = m.pm.dataset.subjects
    moved = eta.at[4].add(0.5)
    msg = m.trouble(th, moved, data)
    assert msg.startswith(f"ID {ids[4]} (largest |dU/d eta| ") and msg.count("ID ") == 1, msg
