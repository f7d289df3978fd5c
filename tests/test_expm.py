"""The small-matrix exponential against SciPy, including the hard cases of compartment
models: repeated eigenvalues (defective matrices), singular matrices (sinks), stiff scales,
negative time; and its custom adjoint against finite differences."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from ldpk.solve._expm import expm

RTOL = 1e-12  # relative to max|e^A|; SciPy (same algorithm family) is the oracle


def _cases():
    rng = np.random.default_rng(7)
    yield "random", rng.standard_normal((4, 4))
    yield (
        "defective (jordan block)",
        np.array([[-1.0, 1.0, 0.0], [0.0, -1.0, 1.0], [0.0, 0.0, -1.0]]),
    )
    yield "repeated rates ka == k", np.array([[-0.5, 0.0], [0.5, -0.5]]) * 3.0
    yield "singular (sink)", np.array([[-0.3, 0.0, 0.0], [0.2, -0.1, 0.0], [0.1, 0.1, 0.0]]) * 10
    yield "stiff", np.diag([-1e-3, -1.0, -50.0]) + np.tril(np.full((3, 3), 0.01), -1)
    yield "negative time", -np.array([[-1.5, 0.0], [1.5, -0.055]]) * 20
    yield "large norm", rng.standard_normal((5, 5)) * 20


@pytest.mark.parametrize("name,A", list(_cases()), ids=[c[0] for c in _cases()])
def test_matches_scipy(name, A):
    got = np.asarray(expm(jnp.asarray(A)))
    ref = scipy.linalg.expm(A)
    np.testing.assert_allclose(
        got, ref, rtol=0, atol=RTOL * np.abs(ref).max() * max(1, np.abs(A).sum(0).max())
    )


def test_vmapped_equals_loop():
    A = np.random.default_rng(3).standard_normal((50, 3, 3)) * 2
    batched = np.asarray(jax.vmap(expm)(jnp.asarray(A)))
    for i in range(50):
        np.testing.assert_allclose(batched[i], scipy.linalg.expm(A[i]), rtol=1e-12, atol=1e-12)


def test_adjoint_matches_finite_differences():
    rng = np.random.default_rng(11)
    A = jnp.asarray(rng.standard_normal((3, 3)) * 2)
    W = jnp.asarray(rng.standard_normal((3, 3)))
    g = np.asarray(jax.grad(lambda a: jnp.sum(W * expm(a)))(A))
    h = 1e-6
    fd = np.zeros((3, 3))
    for i in range(3):
        for j in range(3):
            E = np.zeros((3, 3))
            E[i, j] = h
            Wn = np.asarray(W)
            fd[i, j] = (
                np.sum(Wn * scipy.linalg.expm(A + E)) - np.sum(Wn * scipy.linalg.expm(A - E))
            ) / (2 * h)
    np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-8 * np.abs(fd).max())


@pytest.mark.parametrize("scale", [0.5, 40.0, 3e4])  # 0, 3 and 13 squarings
def test_adjoint_matches_frechet_derivative_and_hessian_works(scale):
    # SciPy's Fréchet derivative L(A^T, W) is the exact adjoint of e^A in the direction W.
    rng = np.random.default_rng(5)
    A = rng.standard_normal((4, 4))
    A = A / np.abs(A).sum(axis=0).max() * scale
    A[np.diag_indices(4)] -= scale  # keep e^A finite at large norms
    W = rng.standard_normal((4, 4))
    g = np.asarray(jax.grad(lambda a: jnp.sum(W * expm(a)))(jnp.asarray(A)))
    _, L = scipy.linalg.expm_frechet(A.T, W)
    np.testing.assert_allclose(g, L, rtol=1e-9, atol=1e-12 * np.abs(L).max())
    # Forward-over-reverse (jax.hessian, used for Laplace approximations) goes through.
    t = jnp.asarray(0.7)
    hess = float(jax.hessian(lambda t: jnp.sum(W * expm(jnp.asarray(A) * t)))(t))
    d = 1e-4
    f = lambda t: np.sum(W * scipy.linalg.expm(A * t))  # noqa: E731
    fd = (f(0.7 + d) - 2 * f(0.7) + f(0.7 - d)) / d**2
    assert hess == pytest.approx(fd, rel=1e-5, abs=1e-8 * abs(fd) + 1e-10)
