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
